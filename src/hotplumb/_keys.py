"""Node keys: any hashable value but ``None``, and the :class:`Key` mapping.

A :class:`Key` is an immutable, hashable mapping built by :func:`key`. Nested
dicts, sets and lists are frozen recursively (to ``Key``, ``frozenset`` and
``tuple``), so keys that describe the same thing are equal whatever order their
parts were written in. Being a :class:`collections.abc.Mapping`, a ``Key`` works
in ``match`` mapping patterns.

A key nests at most :data:`MAX_KEY_DEPTH` levels of containers (the key
itself is the first). Deeper values are refused with
:class:`~hotplumb.InvalidKeyError` rather than frozen: comparing, pickling and
printing a key all recurse through its levels, and the limit keeps every one
of them far inside Python's recursion limit. Readable forms live in
:mod:`hotplumb._format`.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping
from typing import Any, Final, final

from hotplumb._errors import InvalidKeyError
from hotplumb._format import key_repr

__all__ = ["MAX_KEY_DEPTH", "Key", "check_key", "freeze", "key"]

MAX_KEY_DEPTH: Final = 100
"""How many levels of nested containers a :class:`Key` may hold, itself included."""


class _TooDeep(Exception):
    """Raised inside :func:`_freeze` past :data:`MAX_KEY_DEPTH`; reported by the caller."""


def _too_deep(value: object) -> InvalidKeyError:
    return InvalidKeyError(
        value, f"nested too deeply (a key holds at most {MAX_KEY_DEPTH} levels of containers)"
    )


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
        fields = items or {}
        try:
            frozen = {k: _freeze(v, 2) for k, v in fields.items()}
        except _TooDeep:
            raise _too_deep(dict(fields)) from None
        self._set(fields, frozen)

    def _set(self, fields: Mapping[Any, Any], frozen: dict[Hashable, Any]) -> None:
        # ``frozen`` holds ``fields`` with every value frozen already.
        try:
            h = hash(frozenset(frozen.items()))
        except TypeError as exc:
            raise InvalidKeyError(dict(fields), f"a field is unhashable ({exc})") from None
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
        return key_repr(self._items)

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

    Raises:
        InvalidKeyError: ``value`` nests more than :data:`MAX_KEY_DEPTH`
            levels of containers, or a mapping in it has an unhashable field.
    """
    try:
        return _freeze(value, 1)
    except _TooDeep:
        raise _too_deep(value) from None


def _freeze(value: Any, depth: int) -> Any:
    # ``depth`` is the level ``value`` sits at if it is a container: the
    # recursion stops at MAX_KEY_DEPTH, whatever the input's depth.
    if isinstance(value, Key):
        return value
    container = isinstance(value, Mapping | set | frozenset) or type(value) in (list, tuple)
    if container and depth > MAX_KEY_DEPTH:
        raise _TooDeep
    if isinstance(value, Mapping):
        inner = Key.__new__(Key)
        inner._set(value, {k: _freeze(v, depth + 1) for k, v in value.items()})
        return inner
    if isinstance(value, set | frozenset):
        return frozenset(_freeze(v, depth + 1) for v in value)
    if type(value) in (list, tuple):
        return tuple(_freeze(v, depth + 1) for v in value)
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
