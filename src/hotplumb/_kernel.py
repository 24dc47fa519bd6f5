"""How a node's callable is called: its classification, and the strategies that process a batch.

Classification. The runtime calls a node's ``fn`` in one of four modes (plain,
``async def``, generator, async generator) with one argument (the value, or the
datum for sinks) or two (adding the context). Working this out uses
:mod:`inspect`, which is slow, so :func:`build_kernel` does it once per node
when the node starts or a change brings it in, never per datum. A bad
signature fails ``run()``/``apply()`` before anything starts.

Processing. A runner hands each input batch to its kernel's *strategy*, which
fills one :class:`Outputs`: the single accumulator of a batch's processing.
``Outputs`` owns the accounting: which inputs are settled, how many were
filtered or failed, what is still in progress, and the output batch they make.
The counting identity every node keeps, at every moment, is::

    received == emitted-and-settled + filtered + failed + in_progress

where an input is *settled* once it produced its outputs (for a target: they
were delivered), was filtered (``SKIP``) or failed. Strategies:

* :func:`pass_through`: the identity; the batch goes on as it is.
* :func:`map_each`: a plain callable of the value (or of the datum, for a
  sink) with no timeout, called over the whole batch in one loop.
* :func:`await_each`: an ``async def`` of the value with no timeout, awaited
  for one input at a time.
* :func:`call_each`: everything else, one input at a time: other ``async
  def`` callables, generators, callables taking the context, timeouts.

A node's exception is a data error whatever its type (``StopIteration``
included, and a :class:`asyncio.CancelledError` that is not the cancellation
of the node's own task): the input fails, goes to ``on_error`` or the
dead-letter record, and the rest of the batch goes on. Only what must end the
task by the language's rules propagates: ``KeyboardInterrupt``,
``SystemExit``, and the cancellation of the task itself.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import inspect
import math
import pickle
import types
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from hotplumb._clock import Deadline
from hotplumb._datum import Batch, Data, Datum, Emission
from hotplumb._errors import InvalidNodeCallableError
from hotplumb._format import exception_text
from hotplumb._node import SKIP, Node, Pool, identity

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Hashable, Iterator, Sequence

    from hotplumb._channel import Channel
    from hotplumb._clock import Clock
    from hotplumb._context import Context
    from hotplumb._datum import Route

__all__ = [
    "FAILED",
    "LATENCY",
    "Kernel",
    "Mode",
    "Outputs",
    "Processor",
    "await_each",
    "awaited",
    "build_kernel",
    "call_each",
    "call_one",
    "deliver_batch",
    "deliver_batch_async",
    "ends_task",
    "failing",
    "map_each",
    "pass_through",
    "prepare_call",
]


class Mode(enum.Enum):
    """How the callable produces its outputs."""

    PLAIN = "plain"
    ASYNC = "async"
    GENERATOR = "generator"
    ASYNC_GENERATOR = "async generator"


class _Failed:
    """Marks an input whose processing failed, in :attr:`Outputs.results`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "FAILED"


FAILED: Final = _Failed()


class _Several:
    """Marks an input that produced other than one plain output (a generator, an Emission)."""

    __slots__ = ("parents", "values")

    def __init__(self, values: list[Any], parents: list[tuple[Datum, ...]]) -> None:
        self.values = values
        self.parents = parents


class Outputs:
    """What one input batch has produced so far: the accumulator strategies fill.

    ``results`` has one entry per settled input, in input order: the output
    value, :data:`~hotplumb.SKIP` (filtered), :data:`FAILED`, or a marker for
    an input with several outputs or explicit parents. The runner reads the
    counters for statistics and the shutdown report at any moment.

    Args:
        batch: The input batch.
        route: The route of the outputs (the input's, extended by the node).
        target: Whether the node is a target (its outputs are delivered as
            they are produced, so a produced input is settled at once).
        on_failure: The runner's handling of an input that raised: returns the
            replacement output or :data:`FAILED`, or raises if the node's task
            must die.
    """

    __slots__ = (
        "_dropped_sent",
        "batch",
        "channel",
        "delivered",
        "extra",
        "failed",
        "filtered",
        "in_send",
        "on_failure",
        "results",
        "route",
        "sent",
        "sent_at",
        "settled",
        "several",
        "started",
        "target",
    )

    def __init__(
        self,
        batch: Batch,
        route: Route,
        target: bool,
        on_failure: Callable[[Outputs, int, BaseException], Any],
        channel: Any = None,
        started: float = 0.0,
    ) -> None:
        self.batch = batch
        self.route = route
        self.target = target
        self.on_failure = on_failure
        self.channel = channel  # where the batch came from (to put back what is unsettled)
        self.started = started  # clock time processing began (for traces)
        self.sent_at = started  # clock time outputs were last sent on (for latency)
        self.results: list[Any] = []
        # Invariant: settled == len(results) whenever a strategy awaits or returns.
        self.settled = 0
        self.filtered = 0
        self.failed = 0
        self.several = 0  # entries that are _Several markers
        self.extra = 0  # outputs beyond one per produced input (negative: none)
        # results[:sent] have been taken (sent on); filtered + failed among them.
        self.sent = 0
        self._dropped_sent = 0
        # Produced inputs whose outputs were taken but are still being sent.
        self.in_send = 0
        # Outputs the readers have (sent in full): what ``emitted`` counts.
        self.delivered = 0

    @property
    def emitted(self) -> int:
        """Outputs passed on so far: sent to the readers (a target's: delivered)."""
        if self.target:
            return self.settled - self.filtered - self.failed + self.extra
        return self.delivered

    @property
    def in_progress(self) -> int:
        """Inputs taken and not settled; for a non-target, produced inputs count until sent."""
        unsettled = len(self.batch.values) - self.settled
        if self.target:
            return unsettled
        produced = self.settled - self.filtered - self.failed
        return unsettled + produced - (self.sent - self._dropped_sent) + self.in_send

    @property
    def done(self) -> bool:
        """Whether every input is settled."""
        return self.settled == len(self.batch.values)

    def fail(self, index: int, error: BaseException) -> None:
        """Record that input ``index`` (the next one) raised ``error``."""
        try:
            replacement = self.on_failure(self, index, error)
        except BaseException:
            # The node's task dies (its handler raised): the input is failed,
            # and the rest of the batch waits for the restarted task.
            self.failed += 1
            self.results.append(FAILED)
            self.settled += 1
            raise
        if replacement is FAILED or replacement is SKIP:
            self.failed += 1
            self.results.append(FAILED)
        else:
            self.add(replacement)
            return
        self.settled += 1

    def add(self, result: Any) -> None:
        """Record the result of the next input: a value, ``SKIP`` or an :class:`Emission`."""
        if result is SKIP:
            self.filtered += 1
        elif type(result) is Emission:
            result = _Several([result.value], [result.parents])
            self.several += 1
        self.results.append(result)
        self.settled += 1

    def add_many(self, results: list[Any] | tuple[Any, ...], parents: tuple[Datum, ...]) -> None:
        """Record every output the next input produced (a generator's yields)."""
        values: list[Any] = []
        value_parents: list[tuple[Datum, ...]] = []
        for result in results:
            if result is SKIP:
                continue
            if type(result) is Emission:
                values.append(result.value)
                value_parents.append(result.parents)
            else:
                values.append(result)
                value_parents.append(parents)
        if not values:
            self.filtered += 1
            self.results.append(SKIP)
        else:
            self.several += 1
            self.extra += len(values) - 1
            self.results.append(_Several(values, value_parents))
        self.settled += 1

    def take(self) -> Batch:
        """The output batch of the inputs settled since the last ``take``.

        Its inputs count as in progress until the runner has sent it and
        cleared ``in_send``.
        """
        results, batch = self.results, self.batch
        start, count = self.sent, len(results)
        dropped = self.filtered + self.failed
        self.in_send = (count - start) - (dropped - self._dropped_sent)
        self.sent = count
        self._dropped_sent = dropped
        if not (self.filtered or self.failed or self.several):
            # One plain output per input: the common case shares the input's lists.
            if not start and count == len(batch.values):
                return Batch(results, batch.origins, self.route, batch.parents, batch.trace)
            parents = batch.parents[start:count] if batch.parents is not None else None
            return Batch(
                results[start:count], batch.origins[start:count], self.route, parents, batch.trace
            )
        origins_in, parents_in = batch.origins, batch.parents
        has_parents = parents_in is not None or self.several > 0
        values: list[Any] = []
        origins: list[Any] = []
        parents_out: list[tuple[Datum, ...]] = []
        for i in range(start, count):
            result = results[i]
            if result is SKIP or result is FAILED:
                continue
            origin = origins_in[i]
            if type(result) is _Several:
                values.extend(result.values)
                origins.extend([origin] * len(result.values))
                parents_out.extend(result.parents)
            else:
                values.append(result)
                origins.append(origin)
                if has_parents:
                    parents_out.append(parents_in[i] if parents_in is not None else ())
        return Batch(values, origins, self.route, parents_out if has_parents else None, batch.trace)

    def peek(self) -> Batch:
        """What ``take`` would return, without taking it (for the shutdown report)."""
        sent, dropped, in_send = self.sent, self._dropped_sent, self.in_send
        try:
            return self.take()
        finally:
            self.sent, self._dropped_sent, self.in_send = sent, dropped, in_send


class Processor(Protocol):
    """What a strategy needs of the running node."""

    @property
    def key(self) -> Hashable:
        """The node's key."""
        ...

    @property
    def node(self) -> Node:
        """The node's current description."""
        ...

    @property
    def ctx(self) -> Context:
        """The node's context."""
        ...

    @property
    def clock(self) -> Clock:
        """The topology's clock."""
        ...

    @property
    def executor(self) -> Executor | None:
        """The executor the node's calls run in, if it has one."""
        ...

    @property
    def outputs(self) -> Sequence[Channel]:
        """The channels to the node's readers (one per reader)."""
        ...

    async def send(self, out: Outputs) -> None:
        """Send on what ``out`` has ready (see :meth:`Outputs.take`)."""

    def readers_idle(self) -> bool:
        """Whether some reader waits for input: nothing in hand, nothing from this node queued."""
        ...


def ends_task(error: BaseException) -> bool:
    """Whether ``error`` must end the node's task rather than fail one input."""
    if isinstance(error, KeyboardInterrupt | SystemExit):
        return True
    if isinstance(error, asyncio.CancelledError):
        task = asyncio.current_task()
        return task is not None and task.cancelling() > 0
    return False


def pass_through(kernel: Kernel, node: Processor, out: Outputs) -> None:
    """The identity: every input is its own output."""
    out.results = out.batch.values  # never mutated: shared, like the batch itself
    out.settled = len(out.results)


def deliver_batch(kernel: Kernel, node: Processor, out: Outputs) -> None:
    """A batched sink: one call with the whole batch as :class:`~hotplumb.Data`."""
    batch = out.batch
    try:
        kernel.fn(Data(batch, out.route))
    except BaseException as exc:
        if ends_task(exc):
            raise
        for index in range(len(batch.values)):
            out.fail(index, exc)
        return
    out.results = batch.values  # delivered: one "output" per input, as for any sink
    out.settled = len(batch.values)


async def deliver_batch_async(kernel: Kernel, node: Processor, out: Outputs) -> None:
    """A batched ``async def`` sink: one awaited call with the whole batch."""
    batch = out.batch
    try:
        await kernel.fn(Data(batch, out.route))
    except BaseException as exc:
        if ends_task(exc):
            raise
        for index in range(len(batch.values)):
            out.fail(index, exc)
        return
    out.results = batch.values
    out.settled = len(batch.values)


def map_each(kernel: Kernel, node: Processor, out: Outputs) -> None:
    """Call a plain callable over the whole batch in one loop (sinks get data).

    A sink's :class:`Datum` objects are made one at a time, as it is called
    (``Batch.datums``), not as a list first: one the callable does not keep is
    freed before the next is made, so a batch of them costs the cyclic
    collector nothing (a list of a thousand would trigger a collection or two).
    """
    fn = kernel.fn
    batch = out.batch
    values: Iterator[Any] = batch.datums(out.route) if node.node.pass_datum else iter(batch.values)
    results = out.results
    append = results.append
    skipped = 0
    while True:
        try:
            # After a failure the same iterator goes on with the next input.
            for value in values:
                result = fn(value)
                if result is SKIP:
                    skipped += 1
                append(result)
            break
        except BaseException as exc:
            if ends_task(exc):
                raise
            out.settled = len(results)
            out.filtered += skipped
            skipped = 0
            out.fail(len(results), exc)
    out.settled = len(results)
    out.filtered += skipped


# Outputs ready in the middle of a batch are sent on once this long has passed
# (on the topology's clock) since the last send, if a reader has nothing to do:
# see call_each for the bound this gives.
LATENCY: Final = 0.01


def prepare_call(
    kernel: Kernel, node: Processor, out: Outputs, index: int
) -> tuple[tuple[Any, ...], tuple[Datum, ...]]:
    """The arguments of the call for input ``index`` of ``out``, and that input's parents."""
    batch = out.batch
    value = batch.values[index]
    parents = batch.parents[index] if batch.parents is not None else ()
    if node.node.pass_datum:
        value = Datum(value, batch.origins[index], out.route, None, parents, batch.trace)
    if kernel.takes_context:
        ctx = node.ctx
        ctx._datum = None
        ctx._pending = (
            batch.values[index],
            batch.origins[index],
            out.route,
            None,
            parents,
            batch.trace,
        )
        return (value, ctx), parents
    return (value,), parents


async def call_each(kernel: Kernel, node: Processor, out: Outputs) -> None:
    """Call the callable for one input at a time, in order.

    Outputs are sent on as they are ready: after an input, if :data:`LATENCY`
    has passed on the topology's clock since the last send and a reader is
    waiting for input (nothing in hand, nothing from this node queued), what is
    ready goes before the next input is processed. So a ready output waits at
    most ``LATENCY`` plus the processing time of the one input after it; a slow
    batch never holds back what it has already produced, and while readers are
    busy, outputs keep travelling in big batches.
    """
    many = kernel.mode is Mode.GENERATOR or kernel.mode is Mode.ASYNC_GENERATOR
    values = out.batch.values
    results = out.results
    now = node.clock.now
    early = not out.target  # a target delivers as it goes: nothing to send early
    last = len(values) - 1
    try:
        for i in range(out.settled, last + 1):
            try:
                args, parents = prepare_call(kernel, node, out, i)
                result = await call_one(kernel, node, args)
            except BaseException as exc:
                if ends_task(exc):
                    raise
                out.fail(i, exc)
            else:
                if many:
                    out.add_many(result, parents)
                elif result is SKIP or type(result) is Emission:
                    out.add(result)
                else:  # a plain output: Outputs.add's common case, inline
                    results.append(result)
                    out.settled += 1
            if early and i < last and now() - out.sent_at >= LATENCY and node.readers_idle():
                await node.send(out)
    finally:
        if kernel.takes_context:
            ctx = node.ctx
            ctx._datum = None
            ctx._pending = None


async def await_each(kernel: Kernel, node: Processor, out: Outputs) -> None:
    """:func:`call_each` for its common case: an ``async def`` of the value, no timeout.

    The same loop and the same latency bound, with nothing per input that this
    case does not need: no arguments to prepare, no mode to test, and the
    bound's deadline computed once per send instead of a subtraction per input.
    """
    fn = kernel.fn
    values = out.batch.values
    append = out.results.append
    now = node.clock.now
    skip, emission = SKIP, Emission
    last = len(values) - 1
    # A target delivers as it goes: nothing to send early.
    due = math.inf if out.target else out.sent_at + LATENCY
    # The outputs do not change during a batch (only the node's own task
    # changes them, at a barrier, between batches).
    readers = node.outputs
    for i in range(out.settled, last + 1):
        try:
            result = await fn(values[i])
        except BaseException as exc:
            if ends_task(exc):
                raise
            out.fail(i, exc)
        else:
            if result is skip or type(result) is emission:
                out.add(result)
            else:  # a plain output: Outputs.add's common case, inline
                append(result)
                out.settled = i + 1
        # Is a reader waiting (node.readers_idle, inline), and has LATENCY
        # passed? Asked in that order: the clock is dearer to read.
        for channel in readers:
            if channel.empty and channel.consumer.hungry:
                if now() >= due and i < last:
                    await node.send(out)
                    due = out.sent_at + LATENCY
                break


async def awaited(awaitable: Awaitable[Any]) -> Any:
    """Await ``awaitable``: a coroutine for a task to run, made of any awaitable.

    An ``async def`` callable's call is a coroutine, but a callable marked as
    one (``inspect.markcoroutinefunction``) may return a future or any other
    awaitable; what is not awaitable raises :class:`TypeError` here, as the
    error of that input.
    """
    return await awaitable


async def failing(error: BaseException) -> Any:
    """Raise ``error``: a call that failed when it was made, as a coroutine for its task.

    A concurrent node settles its calls in order through their tasks; a call
    that raised before returning its awaitable fails its input in that order
    too, with its own error, without being called again.
    """
    raise error


async def call_one(kernel: Kernel, node: Processor, args: tuple[Any, ...]) -> Any:
    """Call the callable once: its result, or a generator's list of yields."""
    timeout = node.node.timeout
    if timeout is None:
        return await _call(kernel, node, args)
    clock = node.clock
    began = clock.now()
    if (kernel.mode is Mode.PLAIN and kernel.executor is None) or kernel.mode is Mode.GENERATOR:
        # A synchronous call cannot be interrupted: it fails after it returns late.
        result = await _call(kernel, node, args)
        if clock.now() - began > timeout:
            raise TimeoutError(f"node {node.key!r} took longer than {timeout}s")
        return result
    # Awaited work (a coroutine, or a call in an executor, which is abandoned) is cut off.
    bound = Deadline(clock, began + timeout)
    try:
        async with bound:
            return await _call(kernel, node, args)
    except TimeoutError:
        if not bound.expired:
            raise  # the callable's own TimeoutError
    raise TimeoutError(f"node {node.key!r} took longer than {timeout}s")


async def _call(kernel: Kernel, node: Processor, args: tuple[Any, ...]) -> Any:
    fn, mode = kernel.fn, kernel.mode
    if mode is Mode.PLAIN:
        if kernel.executor is not None:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(node.executor, functools.partial(fn, *args))
        return fn(*args)
    if mode is Mode.ASYNC:
        return await fn(*args)
    if mode is Mode.GENERATOR:
        return list(fn(*args))
    return [item async for item in fn(*args)]


@dataclass(frozen=True, slots=True)
class Kernel:
    """A node's callable, classified, with the strategy that processes its batches.

    Attributes:
        fn: The callable.
        mode: How it produces outputs.
        takes_context: Whether it is called as ``fn(value, context)``.
        is_identity: Whether it is the default identity (skipped entirely).
        process: The strategy: fills an :class:`Outputs` from its batch.
        synchronous: Whether ``process`` is a plain function (else it is awaited).
        concurrency: How many inputs may be processed at once (see
            ``Node.concurrency``); above 1 the runner keeps a window of calls
            in flight instead of calling ``process``.
        executor: The node's ``executor`` (an executor or a :class:`Pool`).
    """

    fn: Callable[..., Any]
    mode: Mode
    takes_context: bool
    is_identity: bool
    process: Callable[[Kernel, Processor, Outputs], Any]
    synchronous: bool
    concurrency: int = 1
    executor: Executor | Pool | None = None


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
    """Classify ``node``'s callables and choose its strategy; raise if one is unusable.

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
        if not node.resumable:
            _check_one_arg(key, node.source, "source")
        elif not _takes_context(key, node.source, "source"):
            raise InvalidNodeCallableError(
                key, f"resumable source {node.source!r} must take (context, offset)"
            )
    for name in ("on_error", "on_change", "migrate", "flush"):
        handler = getattr(node, name)
        if handler is not None:
            _check_one_arg(key, handler, name)
    if node.state is not None:
        _check_no_args(key, node.state, "state")
    concurrency, executor = node.concurrency, node.executor
    if executor is not None:
        if mode is not Mode.PLAIN or is_identity:
            raise InvalidNodeCallableError(
                key, f"an executor runs plain callables; {fn!r} is {mode.value}"
            )
        if executor is Pool.PROCESSES or isinstance(executor, ProcessPoolExecutor):
            _check_picklable(key, fn)
    if concurrency > 1:
        if takes_context or node.state is not None:
            raise InvalidNodeCallableError(
                key,
                f"concurrency={concurrency} needs a callable that takes just the value: "
                "inputs processed at once cannot share a context or a state",
            )
        if executor is None and mode not in (Mode.ASYNC, Mode.ASYNC_GENERATOR):
            raise InvalidNodeCallableError(
                key,
                f"concurrency={concurrency} needs an async callable, or an executor for a "
                f"plain one; {fn!r} is {'the identity' if is_identity else mode.value}",
            )
    if node.batched:
        if not node.target or mode not in (Mode.PLAIN, Mode.ASYNC) or concurrency > 1:
            raise InvalidNodeCallableError(
                key,
                "batched=True is for sinks (targets) with a plain or async def callable "
                "taking the batch's Data, one at a time",
            )
        if node.timeout is not None or node.executor is not None:
            raise InvalidNodeCallableError(key, "a batched sink takes no timeout or executor")
        batched = deliver_batch if mode is Mode.PLAIN else deliver_batch_async
        return Kernel(
            fn, mode, takes_context, False, batched, mode is Mode.PLAIN, concurrency, executor
        )
    process: Callable[[Kernel, Processor, Outputs], Any]
    if is_identity:
        process, synchronous = pass_through, True
    elif mode is Mode.PLAIN and not takes_context and node.timeout is None and executor is None:
        process, synchronous = map_each, True
    elif mode is Mode.ASYNC and not takes_context and node.timeout is None and not node.pass_datum:
        process, synchronous = await_each, False
    else:
        process, synchronous = call_each, False
    return Kernel(fn, mode, takes_context, is_identity, process, synchronous, concurrency, executor)


def _check_picklable(key: Hashable, fn: Callable[..., Any]) -> None:
    try:
        pickle.dumps(fn)
    except Exception as exc:
        raise InvalidNodeCallableError(
            key,
            f"{fn!r} cannot be sent to a process pool ({exception_text(exc)}); "
            "define it at module level, not as a lambda or closure",
        ) from None


def _check_no_args(key: Hashable, fn: Callable[..., Any], what: str) -> None:
    if not callable(fn):
        raise InvalidNodeCallableError(key, f"{what} must be a zero-argument callable, got {fn!r}")
    params = _parameters(fn)
    if params is None:
        return  # a builtin without a signature: assume it can be called so
    required = [
        p.name
        for p in params
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if required:
        raise InvalidNodeCallableError(
            key, f"{what} {fn!r} must take no arguments, but requires {required}"
        )


def _check_one_arg(key: Hashable, fn: Callable[..., Any], what: str) -> None:
    if not callable(fn):
        raise InvalidNodeCallableError(key, f"{what} must be callable, got {fn!r}")
    if _takes_context(key, fn, what):
        raise InvalidNodeCallableError(key, f"{what} {fn!r} must take exactly one argument")
