"""How a node's callables are classified: mode, arity, identity, and what is refused."""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any

import pytest

import hotplumb as hp
from hotplumb._kernel import Kernel, Mode, build_kernel
from hotplumb._node import identity

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator


def classify(fn: Callable[..., Any], **options: Any) -> tuple[Mode, bool, bool]:
    """``(mode, takes_context, is_identity)`` of a node calling ``fn``."""
    kernel = build_kernel("n", hp.Node(fn, **options))
    assert isinstance(kernel, Kernel)
    return kernel.mode, kernel.takes_context, kernel.is_identity


def refused(node: hp.Node) -> str:
    """The message of the error ``build_kernel`` raises for ``node``."""
    with pytest.raises(hp.InvalidNodeCallableError) as caught:
        build_kernel(("stage", 3), node)
    assert caught.value.key == ("stage", 3)
    message = str(caught.value)
    assert message.startswith("node (stage, 3): ")
    return message


# -- callables of every kind, with (value) and with (value, context) -------------


def plain(value: int) -> int:
    return value + 1


def plain_ctx(value: int, ctx: hp.Context) -> int:
    return value + 1


async def coroutine(value: int) -> int:
    return value + 1


async def coroutine_ctx(value: int, ctx: hp.Context) -> int:
    return value + 1


def generator(value: int) -> Iterator[int]:
    yield value


def generator_ctx(value: int, ctx: Any) -> Iterator[int]:
    yield value


async def async_generator(value: int) -> AsyncIterator[int]:
    yield value


async def async_generator_ctx(value: int, ctx: hp.Context) -> AsyncIterator[int]:
    yield value


@pytest.mark.parametrize(
    ("fn", "mode", "takes_context"),
    [
        (plain, Mode.PLAIN, False),
        (plain_ctx, Mode.PLAIN, True),
        (lambda v: v, Mode.PLAIN, False),
        (lambda v, ctx: v, Mode.PLAIN, True),
        (coroutine, Mode.ASYNC, False),
        (coroutine_ctx, Mode.ASYNC, True),
        (generator, Mode.GENERATOR, False),
        (generator_ctx, Mode.GENERATOR, True),
        (async_generator, Mode.ASYNC_GENERATOR, False),
        (async_generator_ctx, Mode.ASYNC_GENERATOR, True),
    ],
)
def test_functions_are_classified_by_kind_and_arity(
    fn: Callable[..., Any], mode: Mode, takes_context: bool
) -> None:
    assert classify(fn) == (mode, takes_context, False)


class Plain:
    def __call__(self, value: int) -> int:
        return value


class AsyncWithContext:
    async def __call__(self, value: int, ctx: hp.Context) -> int:
        return value


class Generating:
    def __call__(self, value: int) -> Iterator[int]:
        yield value


class AsyncGeneratingWithContext:
    async def __call__(self, value: int, ctx: hp.Context) -> AsyncIterator[int]:
        yield value


@pytest.mark.parametrize(
    ("fn", "mode", "takes_context"),
    [
        (Plain(), Mode.PLAIN, False),
        (AsyncWithContext(), Mode.ASYNC, True),
        (Generating(), Mode.GENERATOR, False),
        (AsyncGeneratingWithContext(), Mode.ASYNC_GENERATOR, True),
    ],
)
def test_callable_objects_are_classified_by_their_call_method(
    fn: Callable[..., Any], mode: Mode, takes_context: bool
) -> None:
    # ``self`` is not counted: the object is called with the value (and context).
    assert classify(fn) == (mode, takes_context, False)


class Stage:
    def __init__(self, step: int) -> None:
        self.step = step

    def add(self, value: int) -> int:
        return value + self.step

    def add_ctx(self, value: int, ctx: hp.Context) -> int:
        return value + self.step

    async def later(self, value: int) -> int:
        return value + self.step

    def spread(self, value: int) -> Iterator[int]:
        yield value


def test_bound_methods_do_not_count_self() -> None:
    stage = Stage(2)
    assert classify(stage.add) == (Mode.PLAIN, False, False)
    assert classify(stage.add_ctx) == (Mode.PLAIN, True, False)
    assert classify(stage.later) == (Mode.ASYNC, False, False)
    assert classify(stage.spread) == (Mode.GENERATOR, False, False)


def add(step: int, value: int, ctx: hp.Context | None = None) -> int:
    return value + step


def add_ctx(step: int, value: int, ctx: hp.Context) -> int:
    return value + step


def test_partials_count_only_the_parameters_left_open() -> None:
    assert classify(functools.partial(add, 1)) == (Mode.PLAIN, False, False)
    assert classify(functools.partial(add_ctx, 1)) == (Mode.PLAIN, True, False)
    # Binding the context by keyword leaves one positional parameter.
    assert classify(functools.partial(generator_ctx, ctx=None)) == (Mode.GENERATOR, False, False)
    # The mode of the wrapped function shows through the partial.
    assert classify(functools.partial(coroutine_ctx)) == (Mode.ASYNC, True, False)
    assert classify(functools.partial(async_generator)) == (Mode.ASYNC_GENERATOR, False, False)
    message = refused(hp.Node(functools.partial(add_ctx)))
    assert "takes 3 required positional parameters" in message


@pytest.mark.parametrize("fn", [max, int, str])
def test_a_builtin_without_a_signature_is_called_with_the_value(fn: Callable[..., Any]) -> None:
    with pytest.raises(ValueError, match="signature"):
        inspect.signature(fn)  # what makes this case: inspect cannot tell its arity
    assert classify(fn) == (Mode.PLAIN, False, False)


@pytest.mark.parametrize("fn", [len, print, abs])
def test_a_builtin_with_a_signature_is_read_like_a_function(fn: Callable[..., Any]) -> None:
    inspect.signature(fn)
    assert classify(fn) == (Mode.PLAIN, False, False)


# -- signatures -----------------------------------------------------------------


def with_default(value: int, extra: int = 1) -> int:
    return value + extra


def with_context_and_default(value: int, ctx: hp.Context, extra: int = 1) -> int:
    return value + extra


def varargs(*args: Any) -> Any:
    return args[0]


def value_and_varargs(value: int, *rest: Any) -> int:
    return value


def optional_keyword(value: int, *, scale: int = 2) -> int:
    return value * scale


def test_only_required_positional_parameters_count() -> None:
    # A defaulted second parameter is not the context: the callable gets the value only.
    assert classify(with_default) == (Mode.PLAIN, False, False)
    assert classify(with_context_and_default) == (Mode.PLAIN, True, False)
    assert classify(varargs) == (Mode.PLAIN, False, False)
    assert classify(value_and_varargs) == (Mode.PLAIN, False, False)
    assert classify(optional_keyword) == (Mode.PLAIN, False, False)


def needs_keyword(value: int, *, scale: int, offset: int) -> int:
    return value * scale + offset


def three(value: int, ctx: hp.Context, more: int) -> int:
    return value


def nothing() -> int:
    return 0


def only_keywords(*, value: int = 0) -> int:
    return value


def test_a_required_keyword_only_parameter_is_refused_by_name() -> None:
    message = refused(hp.Node(needs_keyword))
    assert "callable" in message
    assert "needs_keyword" in message
    assert "has required keyword-only parameters ['scale', 'offset']" in message


def test_three_required_positional_parameters_are_refused() -> None:
    message = refused(hp.Node(three))
    assert "takes 3 required positional parameters" in message
    assert "it must take (value) or (value, context)" in message
    assert "takes 3 required positional" in refused(hp.Node(lambda a, b, c: a))


def test_no_positional_parameter_is_refused() -> None:
    for fn in (nothing, only_keywords, lambda: 0):
        message = refused(hp.Node(fn))
        assert "takes no positional parameter; it must take (value)" in message


# -- the identity and sinks ---------------------------------------------------------


def test_the_default_callable_is_the_identity() -> None:
    assert classify(identity) == (Mode.PLAIN, False, True)
    kernel = build_kernel("n", hp.Node())
    assert kernel.is_identity
    assert not build_kernel("n", hp.Node(lambda v: v)).is_identity  # equal, but not it


def test_a_sink_gets_the_datum_and_is_never_the_identity() -> None:
    received: list[hp.Datum] = []
    kernel = build_kernel("out", hp.sink(received.append, inputs=["a"]))
    assert (kernel.mode, kernel.takes_context, kernel.is_identity) == (Mode.PLAIN, False, False)
    # Even the identity is called when it is given the datum: it is not skipped.
    assert classify(identity, pass_datum=True) == (Mode.PLAIN, False, False)
    assert classify(plain_ctx, pass_datum=True) == (Mode.PLAIN, True, False)
    assert classify(async_generator, pass_datum=True) == (Mode.ASYNC_GENERATOR, False, False)
    assert build_kernel("out", hp.sink(coroutine_ctx, inputs=["a"])).mode is Mode.ASYNC


# -- sources, handlers and state -----------------------------------------------------


async def feed(ctx: hp.Context) -> AsyncIterator[int]:
    yield 1


async def feed_two(ctx: hp.Context, other: int) -> AsyncIterator[int]:
    yield other


def sync_feed(ctx: hp.Context) -> Iterator[int]:
    yield 1


async def not_a_generator(ctx: hp.Context) -> int:
    return 1


def test_a_source_is_an_async_generator_function_of_the_context() -> None:
    kernel = build_kernel("feed", hp.source(feed))
    assert kernel.is_identity  # its values pass through the default fn
    processed = build_kernel("feed", hp.source(feed, fn=coroutine))
    assert (processed.mode, processed.takes_context) == (Mode.ASYNC, False)


@pytest.mark.parametrize("produce", [sync_feed, not_a_generator, plain, lambda ctx: iter(())])
def test_a_source_that_is_not_an_async_generator_function_is_refused(
    produce: Callable[..., Any],
) -> None:
    message = refused(hp.source(produce))
    assert "must be an async generator function (async def + yield)" in message
    assert message.startswith("node (stage, 3): source ")


def test_a_source_taking_more_than_the_context_is_refused() -> None:
    message = refused(hp.source(feed_two))  # type: ignore[arg-type]
    assert "source" in message
    assert "must take exactly one argument" in message


def two_args(a: Any, b: Any) -> Any:
    return a


def with_handler(handler: str, fn: Any) -> hp.Node:
    options: dict[str, Any] = {handler: fn}
    return hp.Node(**options)


@pytest.mark.parametrize("handler", ["on_error", "on_change", "migrate"])
def test_handlers_take_exactly_one_argument(handler: str) -> None:
    assert build_kernel("n", with_handler(handler, plain)).is_identity  # one: accepted
    assert build_kernel("n", with_handler(handler, max)).is_identity  # no signature: accepted
    message = refused(with_handler(handler, two_args))
    assert f"{handler} " in message
    assert "two_args" in message
    assert "must take exactly one argument" in message
    with pytest.raises(TypeError, match=f"Node {handler} must be callable or None, got 3"):
        with_handler(handler, 3)  # refused by Node itself, before any kernel


def test_handlers_are_checked_like_callables() -> None:
    message = refused(with_handler("on_error", needs_keyword))
    assert "on_error" in message
    assert "has required keyword-only parameters ['scale', 'offset']" in message
    assert "takes 3 required positional" in refused(with_handler("migrate", three))
    assert "takes no positional parameter" in refused(with_handler("on_change", nothing))


def test_state_must_be_callable() -> None:
    assert build_kernel("n", hp.Node(state=list)).is_identity
    assert build_kernel("n", hp.Node(state=lambda: 0)).is_identity
    with pytest.raises(TypeError, match=r"Node state must be callable or None, got \[\]"):
        hp.Node(state=[])  # type: ignore[arg-type]
    message = refused(hp.Node(state=lambda seed: seed))  # type: ignore[arg-type,misc]
    assert "state" in message
    assert "must take no arguments, but requires ['seed']" in message
