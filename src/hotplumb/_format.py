"""Readable forms: keys, chains of keys, values and exceptions, for people.

This module imports nothing from hotplumb, so every other module (the
exceptions first) can format with it.

* :func:`format_key` is the short form used in messages and pictures:
  ``subscription=source/foo, rollup_window=10000``.
* :func:`key_repr` is the ``repr`` of a :class:`~hotplumb.Key`:
  ``key(subscription='source/foo', rollup_window=10000)``.
* :func:`format_chain` joins keys with ``->``, keeping both ends of a long chain.
* :class:`SafeRepr`, :func:`bounded_repr`, :func:`exception_message` and
  :func:`exception_text` never raise, whatever the value or exception.

Depth: a key can nest containers without bound (a tuple of a tuple of ...),
and formatting recursively would then exceed Python's recursion limit.
:func:`format_key` and :func:`key_repr` show :data:`MAX_DEPTH_SHOWN` levels of
containers and write ``...`` for anything deeper, as :mod:`reprlib` does.
Every form stays short enough to read, and formatting never recurses more
than that many levels, so a message about a deep key can always be built.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Hashable, Sequence

__all__ = [
    "MAX_DEPTH_SHOWN",
    "SafeRepr",
    "bounded_repr",
    "exception_message",
    "exception_text",
    "format_chain",
    "format_key",
    "key_repr",
]

MAX_DEPTH_SHOWN: Final = 20
"""How many levels of nested containers :func:`format_key` and :func:`key_repr` show.

Deeper containers are written ``...``.
"""

_ELLIPSIS: Final = "..."


# -- keys --------------------------------------------------------------------------


def format_key(value: object) -> str:
    """Format a key for people: mapping fields as ``name=value``, strings bare.

    A :class:`~hotplumb.Key` (or any other mapping) prints as its fields,
    nested mappings in braces, sets sorted in braces, tuples in parentheses.
    Containers nested more than :data:`MAX_DEPTH_SHOWN` levels deep print as
    ``...``.

    Args:
        value: A node key.

    Returns:
        A short readable form, e.g. ``subscription=source/foo, rollup_window=10000``.

    Example:
        >>> format_key(key(subscriptions={"source/foo", "source/bar"}, rollup_window=10_000))
        'subscriptions={source/bar, source/foo}, rollup_window=10000'
        >>> format_key(("source/foo", 3))
        '(source/foo, 3)'
    """
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return _plain_fields(value, 1)
    return _plain(value, 0)


def _plain_fields(fields: Mapping[object, object], depth: int) -> str:
    return ", ".join(f"{_plain(f, depth)}={_plain(v, depth)}" for f, v in fields.items())


def _plain(value: object, depth: int) -> str:
    # ``depth`` counts the containers around ``value``; each branch below that
    # opens a container recurses with ``depth + 1``, and stops at the limit.
    # Concrete types come first: the Mapping check is the slow one.
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple):
        if depth >= MAX_DEPTH_SHOWN:
            return _ELLIPSIS
        return "(" + ", ".join(_plain(v, depth + 1) for v in value) + ")"
    if isinstance(value, frozenset):
        if depth >= MAX_DEPTH_SHOWN:
            return _ELLIPSIS
        return "{" + ", ".join(sorted(_plain(v, depth + 1) for v in value)) + "}"
    if isinstance(value, Mapping):
        if depth >= MAX_DEPTH_SHOWN:
            return _ELLIPSIS
        return "{" + _plain_fields(value, depth + 1) + "}"
    return repr(value)


def key_repr(fields: Mapping[Hashable, object]) -> str:
    """The ``repr`` of a :class:`~hotplumb.Key` with these fields.

    Identifier fields print as keyword arguments (``key(a=1)``), others as a
    dict (``key({1: 'a'})``). Sets print sorted at any depth, so the repr does
    not depend on hash seeds. Containers nested more than
    :data:`MAX_DEPTH_SHOWN` levels deep print as ``...``.

    Args:
        fields: The key's fields, already frozen.

    Returns:
        The repr text.
    """
    return _key_repr(fields, 1)


def _key_repr(fields: Mapping[Hashable, object], depth: int) -> str:
    if all(isinstance(f, str) and f.isidentifier() for f in fields):
        body = ", ".join(f"{f}={_repr(v, depth)}" for f, v in fields.items())
        return f"key({body})"
    body = ", ".join(f"{_repr(f, depth)}: {_repr(v, depth)}" for f, v in fields.items())
    return f"key({{{body}}})"


def _repr(value: object, depth: int) -> str:
    # As _plain: concrete types first. A Key's values are frozen, so every
    # mapping met here is a Key.
    if isinstance(value, str | int | float):
        return repr(value)
    if type(value) is tuple:
        if depth >= MAX_DEPTH_SHOWN:
            return _ELLIPSIS
        if len(value) == 1:
            return f"({_repr(value[0], depth + 1)},)"
        return "(" + ", ".join(_repr(v, depth + 1) for v in value) + ")"
    if isinstance(value, frozenset):
        if depth >= MAX_DEPTH_SHOWN:
            return _ELLIPSIS
        if not value:
            return "frozenset()"
        return "{" + ", ".join(sorted(_repr(v, depth + 1) for v in value)) + "}"
    if isinstance(value, Mapping):
        if depth >= MAX_DEPTH_SHOWN:
            return _ELLIPSIS
        return _key_repr(value, depth + 1)
    return repr(value)


def format_chain(keys: Sequence[Hashable]) -> str:
    """Join keys with ``->`` for a message, keeping both ends of a long chain.

    A chain can be a hundred thousand keys deep; past eight keys the middle
    is replaced by ``... (N more)``.

    Args:
        keys: The keys, in the order they asked for each other.

    Returns:
        The readable chain, e.g. ``client/a -> subscription=source/foo``.
    """
    if len(keys) > 8:
        head = " -> ".join(format_key(k) for k in keys[:3])
        tail = " -> ".join(format_key(k) for k in keys[-4:])
        return f"{head} -> ... ({len(keys) - 7} more) -> {tail}"
    return " -> ".join(format_key(k) for k in keys)


# -- values and exceptions -----------------------------------------------------------


class SafeRepr(reprlib.Repr):
    """A :class:`reprlib.Repr` that never raises: it shows what it cannot print."""

    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        self.maxstring = self.maxother = width
        self.maxlevel = depth

    def repr1(self, x: object, level: int) -> str:
        """Like :meth:`reprlib.Repr.repr1`, naming the type of what cannot be shown."""
        try:
            return super().repr1(x, level)
        except Exception:
            return f"<{type(x).__name__} that cannot be shown>"

    def repr_int(self, x: int, level: int) -> str:
        """Like :meth:`reprlib.Repr.repr_int`, naming the size of an int too long to print."""
        try:
            return super().repr_int(x, level)
        except ValueError:  # too many digits to print
            return f"<int of {x.bit_length()} bits>"


_nested = SafeRepr(80, 6)


def bounded_repr(value: object) -> str:
    """``repr(value)``, or a shortened form when ``value`` is nested too deeply for it.

    Python's ``repr`` of containers nested about a thousand levels deep raises
    :class:`RecursionError`; this shows the first levels instead (see
    :class:`SafeRepr`). Other values print exactly as ``repr`` prints them.

    Args:
        value: Any value.

    Returns:
        The repr text.
    """
    try:
        return repr(value)
    except RecursionError:
        return _nested.repr(value)


def exception_message(exc: BaseException) -> str:
    """``str(exc)``, even if that raises."""
    try:
        return str(exc)
    except Exception:
        return "<message cannot be shown>"


def exception_text(exc: BaseException) -> str:
    """``Type: message`` for ``exc``, even if its ``str()`` raises."""
    message = exception_message(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
