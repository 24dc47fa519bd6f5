"""How a node's callable is called: its mode and arity, checked once at start.

The runtime calls a node's ``fn`` in one of four modes (plain, ``async def``,
generator, async generator) with one argument (the value, or the datum for
sinks) or two (adding the context). Working this out uses :mod:`inspect`, which
is slow, so it is done once per node when the node starts, never per datum.
"""

from __future__ import annotations

import enum
import functools
import inspect
import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hotplumb._errors import InvalidNodeCallableError
from hotplumb._node import Node, identity

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable

__all__ = ["Kernel", "Mode", "build_kernel"]


class Mode(enum.Enum):
    """How the callable produces its outputs."""

    PLAIN = "plain"
    ASYNC = "async"
    GENERATOR = "generator"
    ASYNC_GENERATOR = "async generator"


@dataclass(frozen=True, slots=True)
class Kernel:
    """A node's callable, classified.

    Attributes:
        fn: The callable.
        mode: How it produces outputs.
        takes_context: Whether it is called as ``fn(value, context)``.
        is_identity: Whether it is the default identity (skipped entirely).
        fast: Whether a whole batch can go through ``map(fn, values)`` (or, for
            sinks, ``map(fn, data)``).
        simple: Whether it takes just the value, with no timeout.
    """

    fn: Callable[..., Any]
    mode: Mode
    takes_context: bool
    is_identity: bool
    fast: bool
    simple: bool


_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _parameters(fn: Callable[..., Any]) -> list[inspect.Parameter] | None:
    """``fn``'s parameters, or None if it has no signature.

    Factories make many closures of one function: they share a code object and
    defaults, hence a signature, so plain functions are looked up by those.
    """
    if inspect.isfunction(fn):
        try:
            kwdefaults = tuple(fn.__kwdefaults__.items()) if fn.__kwdefaults__ else None
            return _function_parameters(fn.__code__, fn.__defaults__, kwdefaults)
        except TypeError:  # unhashable defaults
            pass
    try:
        return list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None


@functools.lru_cache(maxsize=1024)
def _function_parameters(
    code: types.CodeType,
    defaults: tuple[Any, ...] | None,
    kwdefaults: tuple[tuple[str, Any], ...] | None,
) -> list[inspect.Parameter]:
    closure = tuple(types.CellType() for _ in code.co_freevars) or None
    template = types.FunctionType(code, {}, code.co_name, defaults, closure)
    template.__kwdefaults__ = dict(kwdefaults) if kwdefaults else None
    return list(inspect.signature(template).parameters.values())


def _takes_context(key: Hashable, fn: Callable[..., Any], what: str) -> bool:
    params = _parameters(fn)
    if params is None:
        return False  # a builtin without a signature: assume fn(value)
    positional = [p for p in params if p.kind in _POSITIONAL]
    required = [p for p in positional if p.default is p.empty]
    variadic = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
    kw_required = [
        p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is p.empty
    ]
    if kw_required:
        raise InvalidNodeCallableError(
            key, f"{what} {fn!r} has required keyword-only parameters {kw_required}"
        )
    if len(required) > 2:
        raise InvalidNodeCallableError(
            key,
            f"{what} {fn!r} takes {len(required)} required positional parameters; "
            f"it must take (value) or (value, context)",
        )
    if not positional and not variadic:
        raise InvalidNodeCallableError(
            key, f"{what} {fn!r} takes no positional parameter; it must take (value)"
        )
    return len(required) == 2


def _mode(fn: Callable[..., Any]) -> Mode:
    target = fn
    if not inspect.isfunction(fn) and not inspect.ismethod(fn):
        call = inspect.getattr_static(type(fn), "__call__", None)
        if call is not None and (inspect.isfunction(call) or inspect.ismethod(call)):
            target = call
    if inspect.isasyncgenfunction(target):
        return Mode.ASYNC_GENERATOR
    if inspect.isgeneratorfunction(target):
        return Mode.GENERATOR
    if inspect.iscoroutinefunction(target):
        return Mode.ASYNC
    return Mode.PLAIN


def build_kernel(key: Hashable, node: Node) -> Kernel:
    """Classify ``node``'s callables; raise if one cannot be called as needed.

    Args:
        key: The node's key (for error messages).
        node: The node.

    Returns:
        The classified processing callable.

    Raises:
        InvalidNodeCallableError: A callable has an unusable signature.
    """
    fn = node.fn
    is_identity = fn is identity and not node.pass_datum
    takes_context = False if is_identity else _takes_context(key, fn, "callable")
    mode = Mode.PLAIN if is_identity else _mode(fn)
    if node.source is not None:
        if not inspect.isasyncgenfunction(node.source):
            raise InvalidNodeCallableError(
                key,
                f"source {node.source!r} must be an async generator function (async def + yield)",
            )
        _check_one_arg(key, node.source, "source")
    for name in ("on_error", "on_change", "migrate"):
        handler = getattr(node, name)
        if handler is not None:
            _check_one_arg(key, handler, name)
    if node.state is not None and not callable(node.state):
        raise InvalidNodeCallableError(
            key, f"state must be a zero-argument callable, got {node.state!r}"
        )
    simple = not takes_context and not node.pass_datum and node.timeout is None
    # A plain callable runs over a whole batch; sinks get a batch of data.
    fast = mode is Mode.PLAIN and not takes_context and node.timeout is None and not is_identity
    return Kernel(fn, mode, takes_context, is_identity, fast, simple)


def _check_one_arg(key: Hashable, fn: Callable[..., Any], what: str) -> None:
    if not callable(fn):
        raise InvalidNodeCallableError(key, f"{what} must be callable, got {fn!r}")
    if _takes_context(key, fn, what):
        raise InvalidNodeCallableError(key, f"{what} {fn!r} must take exactly one argument")
