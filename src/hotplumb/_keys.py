"""Node keys: any hashable value but ``None``, and the :class:`Key` mapping.

A :class:`Key` is an immutable, hashable mapping built by :func:`key`. Nested
dicts, sets and lists are frozen recursively (to ``Key``, ``frozenset`` and
``tuple``), so keys that describe the same thing are equal whatever order their
parts were written in. Being a :class:`collections.abc.Mapping`, a ``Key`` works
in ``match`` mapping patterns.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping
from typing import Any, final

from hotplumb._errors import InvalidKeyError

__all__ = ["Key", "check_key", "format_key", "freeze", "key"]


@final
class Key(Mapping[Hashable, Any]):
    """An immutable, hashable mapping used as a node key.

    Build one with :func:`key`. Equality and hash ignore field order; the repr
    keeps it.

    Example:
        >>> k = key(subscriptions={"source/foo", "source/bar"}, rollup_window=10_000)
        >>> k == key(rollup_window=10_000, subscriptions={"source/bar", "source/foo"})
        True
        >>> match k:
        ...     case {"subscriptions": subs, "rollup_window": w}:
        ...         sorted(subs), w
        (['source/bar', 'source/foo'], 10000)
    """

    __slots__ = ("_hash", "_items")

    _items: dict[Hashable, Any]
    _hash: int

    def __init__(self, items: Mapping[Any, Any] | None = None, /) -> None:
        frozen = {k: freeze(v) for k, v in (items or {}).items()}
        try:
            h = hash(frozenset(frozen.items()))
        except TypeError as exc:
            raise InvalidKeyError(dict(items or {}), f"a field is unhashable ({exc})") from None
        object.__setattr__(self, "_items", frozen)
        object.__setattr__(self, "_hash", h)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Key is immutable")

    def __getitem__(self, field: Hashable) -> Any:
        return self._items[field]

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, field: object) -> bool:
        return field in self._items

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Key):
            return self._hash == other._hash and self._items == other._items
        return NotImplemented

    def __repr__(self) -> str:
        if all(isinstance(f, str) and f.isidentifier() for f in self._items):
            body = ", ".join(f"{f}={_repr(v)}" for f, v in self._items.items())
            return f"key({body})"
        body = ", ".join(f"{_repr(f)}: {_repr(v)}" for f, v in self._items.items())
        return f"key({{{body}}})"

    def __reduce__(self) -> tuple[type[Key], tuple[dict[Hashable, Any]]]:
        return (Key, (self._items,))


def key(**fields: Any) -> Key:
    """Build a :class:`Key` from keyword fields, freezing nested containers.

    Args:
        **fields: The key's fields. Dicts become ``Key``, sets ``frozenset`` and
            lists ``tuple``, recursively.

    Returns:
        The frozen key.

    Raises:
        InvalidKeyError: A field holds a value that cannot be frozen into a
            hashable one.

    Example:
        >>> key(subscription="source/foo", rollup_window=10_000)
        key(subscription='source/foo', rollup_window=10000)
    """
    return Key(fields)


def freeze(value: Any) -> Any:
    """Return ``value`` with dicts, sets and lists frozen recursively.

    Args:
        value: Any value.

    Returns:
        ``Key`` for a mapping, ``frozenset`` for a set, ``tuple`` for a list or
        tuple; other values unchanged.
    """
    if isinstance(value, Key):
        return value
    if isinstance(value, Mapping):
        return Key(value)
    if isinstance(value, set | frozenset):
        return frozenset(freeze(v) for v in value)
    if isinstance(value, list | tuple) and type(value) in (list, tuple):
        return tuple(freeze(v) for v in value)
    return value


def check_key(value: object) -> Hashable:
    """Return ``value`` if it can be a node key, else raise.

    Args:
        value: The candidate key.

    Returns:
        The same value.

    Raises:
        InvalidKeyError: ``value`` is ``None`` or unhashable.
    """
    if value is None:
        raise InvalidKeyError(value, "None cannot be a node key")
    try:
        hash(value)
    except TypeError as exc:
        raise InvalidKeyError(value, f"unhashable ({exc}); use hotplumb.key(...)") from None
    return value


def format_key(value: object) -> str:
    """Format a key for people: ``Key`` fields as ``name=value``, strings bare.

    Args:
        value: A node key.

    Returns:
        A short readable form, e.g. ``subscription=source/foo, rollup_window=10000``.
    """
    if isinstance(value, Key):
        return ", ".join(f"{_plain(f)}={_plain(v)}" for f, v in value.items())
    return _plain(value)


def _plain(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Key):
        return "{" + format_key(value) + "}"
    if isinstance(value, frozenset):
        return "{" + ", ".join(sorted(_plain(v) for v in value)) + "}"
    if isinstance(value, tuple):
        return "(" + ", ".join(_plain(v) for v in value) + ")"
    return repr(value)


def _repr(value: object) -> str:
    # Sets print sorted, at any depth, so a key's repr does not depend on hash seeds.
    if isinstance(value, frozenset):
        if not value:
            return "frozenset()"
        return "{" + ", ".join(sorted(_repr(v) for v in value)) + "}"
    if type(value) is tuple:
        if len(value) == 1:
            return f"({_repr(value[0])},)"
        return "(" + ", ".join(_repr(v) for v in value) + ")"
    return repr(value)
