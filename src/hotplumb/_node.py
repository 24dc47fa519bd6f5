"""Node descriptions: what a node computes, what it reads, how it is treated.

A :class:`Node` is a frozen value. It says nothing about where it runs; the
runtime turns it into a task when a :class:`~hotplumb.Graph` that holds it is
run. Creating one is cheap: every field's type and range is checked here, but
the callable's signature is checked when the node is started.

Numbers are checked by two helpers the runtime uses for its own arguments too:
:func:`_check_count` (an ``int``, not a ``bool``, at least some minimum) and
:func:`_check_seconds` (a real number, not a ``bool``, finite, positive or not
negative). A wrong type is a :class:`TypeError`, a wrong value a
:class:`ValueError`; both name the argument and the value, before anything
changes. ``NaN`` is a wrong value: it passes every comparison-based check.
"""

from __future__ import annotations

import enum
import inspect
import math
import numbers
import operator
from collections.abc import AsyncIterator, Callable, Hashable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, SupportsIndex, cast

from hotplumb._errors import InvalidKeyError
from hotplumb._keys import check_key

if TYPE_CHECKING:
    from hotplumb._context import Context
    from hotplumb._store import Checkpoint, Codec

__all__ = [
    "SKIP",
    "Node",
    "NodeKind",
    "Pool",
    "RestartPolicy",
    "identity",
    "resumable_source",
    "sink",
    "source",
]


class _Skip(enum.Enum):
    SKIP = "SKIP"

    def __repr__(self) -> str:
        return "hotplumb.SKIP"


SKIP: Final = _Skip.SKIP
"""Return this from a node's callable to emit nothing for the current datum.

``None`` is an ordinary value; only ``SKIP`` filters.
"""

SkipType = Literal[_Skip.SKIP]


class NodeKind(enum.Enum):
    """What role a node plays, as inspection and rendering show it."""

    ENTRY = "entry"
    """An entry point: no inputs; data is injected or produced by a source."""
    PROCESSOR = "processor"
    """Reads inputs and emits to readers."""
    TARGET = "target"
    """A sink that must exist; the graph is resolved from its targets."""
    TIMER = "timer"
    """A source that emits ticks on a clock."""


class Pool(enum.Enum):
    """An executor the topology owns, for ``Node(executor=...)``.

    The topology makes it when a node first needs it and shuts it down when it
    closes. To size or configure a pool yourself, pass your own
    :class:`concurrent.futures.Executor` instead (you then shut it down).
    """

    THREADS = "threads"
    """A :class:`~concurrent.futures.ThreadPoolExecutor`: for blocking calls."""
    PROCESSES = "processes"
    """A :class:`~concurrent.futures.ProcessPoolExecutor` (spawned workers): for
    CPU-bound calls. The callable and the values must pickle."""

    def __repr__(self) -> str:
        return f"hotplumb.Pool.{self.name}"


def identity(value: Any) -> Any:
    """Return ``value`` unchanged: the default processing of a node."""
    return value


def _check_count(what: str, value: object, minimum: int) -> int:
    """Return ``value`` as an ``int`` if it is a whole count of at least ``minimum``.

    Args:
        what: The argument, as messages name it (``"Node capacity"``).
        value: The value given: an ``int`` or anything with ``__index__``, but
            not a ``bool``.
        minimum: The smallest value allowed.

    Returns:
        ``value`` as a plain ``int``.

    Raises:
        TypeError: ``value`` is not an integer, or is a ``bool``.
        ValueError: ``value`` is below ``minimum``.
    """
    if type(value) is not int:
        if isinstance(value, bool) or not hasattr(type(value), "__index__"):
            raise TypeError(f"{what} must be an int >= {minimum}, got {value!r}")
        value = operator.index(cast("SupportsIndex", value))
    if value < minimum:
        raise ValueError(f"{what} must be an int >= {minimum}, got {value!r}")
    return value


def _check_seconds(what: str, value: object, *, positive: bool = True) -> float:
    """Return ``value`` if it is a finite duration in seconds.

    Args:
        what: The argument, as messages name it (``"Node timeout"``).
        value: The value given: a real number (``int``, ``float``, or any
            :class:`numbers.Real`), not a ``bool``.
        positive: Whether zero is refused too (``> 0``), or only negative
            values (``>= 0``).

    Returns:
        ``value`` itself if it is an ``int`` or ``float``, else as a ``float``.

    Raises:
        TypeError: ``value`` is not a real number, or is a ``bool``.
        ValueError: ``value`` is infinite, ``NaN``, negative, or zero when
            ``positive``.
    """
    bound = "> 0" if positive else ">= 0"
    seconds: float
    if type(value) is float or type(value) is int:  # an int is finite, however large
        seconds = value
        finite = type(value) is int or math.isfinite(value)
    elif isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a finite number of seconds {bound}, got {value!r}")
    else:
        try:
            seconds = float(value)
        except OverflowError:
            seconds, finite = math.inf, False
        else:
            finite = math.isfinite(seconds)
    if not finite or seconds < 0 or (positive and seconds == 0):
        raise ValueError(f"{what} must be a finite number of seconds {bound}, got {value!r}")
    return seconds


def _is_async(fn: Callable[..., Any]) -> bool:
    """Whether calling ``fn`` makes a coroutine or async generator, not a result."""
    call = fn
    if not inspect.isfunction(fn) and not inspect.ismethod(fn):
        # An object whose __call__ is an async def (a partial is unwrapped by inspect).
        dunder = inspect.getattr_static(type(fn), "__call__", None)
        if inspect.isfunction(dunder):
            call = dunder
    return inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call)


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """How often a node whose task dies outright is restarted.

    Attributes:
        max_restarts: Restarts allowed within ``window`` seconds; one more death
            fails the topology with :class:`~hotplumb.NodeFailedError`.
        window: The sliding window, in seconds, over which deaths are counted.
        backoff: Seconds (on the topology's clock) to wait before a restart.
            While it waits the node is dead; a live change that replaces it
            starts the new version instead.

    Raises:
        TypeError: ``max_restarts`` is not an int, or a duration is not a real
            number (a ``bool`` is neither).
        ValueError: ``max_restarts`` is negative, ``window`` is not positive
            and finite, or ``backoff`` is negative or not finite.
    """

    max_restarts: int = 3
    window: float = 60.0
    backoff: float = 0.0

    def __post_init__(self) -> None:
        count = _check_count("restart policy max_restarts", self.max_restarts, 0)
        window = _check_seconds("restart policy window", self.window)
        backoff = _check_seconds("restart policy backoff", self.backoff, positive=False)
        if count is not self.max_restarts:
            object.__setattr__(self, "max_restarts", count)
        if window is not self.window:
            object.__setattr__(self, "window", window)
        if backoff is not self.backoff:
            object.__setattr__(self, "backoff", backoff)


@dataclass(frozen=True, slots=True)
class Node:
    """A frozen description of one node of a graph.

    The callable ``fn`` is called once per datum with the datum's value, or
    with ``(value, context)`` if it takes two positional parameters (see
    :class:`~hotplumb.Context`). It may be a plain function (returns the output),
    an ``async def`` (awaited), a generator or async generator (every yielded
    value is emitted). Returning :data:`SKIP` emits nothing.

    Attributes:
        fn: The processing callable; the identity by default.
        inputs: The keys this node reads, in order, without duplicates. A node
            with no inputs is an entry point.
        target: Whether this node is a target: a sink the graph must contain.
            Resolution starts from targets.
        state: A zero-argument callable giving the initial state for a stateful
            node; the runtime owns the state (``context.state``) and carries it
            into a replacement.
        migrate: ``old state -> new state``, called when this node replaces a
            running node with the same key.
        on_error: Called with the failed :class:`~hotplumb.Datum` when ``fn``
            raises. Its return value is emitted in place of the failed output,
            unless it is :data:`SKIP`. Without it, failures go to the topology's
            dead-letter record.
        on_change: Called with the node's context when its readers change. A
            plain function: an ``async def`` is refused, since nothing would
            await its coroutine.
        source: For a generator source: an async generator function taking the
            node's context and yielding values on its own. It runs only while
            the node is running (that is, while some target reads from it).
        pass_datum: Call ``fn`` with the whole :class:`~hotplumb.Datum` instead
            of its value (sinks built by :func:`sink` do).
        timeout: Seconds ``fn`` may take on one datum; past it the datum fails
            with :class:`TimeoutError`.
        capacity: The capacity of each of this node's input channels, in items;
            the topology's default when ``None``.
        output_capacity: At most this many of this node's outputs wait in
            each reader's input channel (the smaller of this and the reader's
            capacity applies). A timer sets 1, so a slow reader never has more
            than one tick queued and the timer coalesces the rest.
        restart: The restart policy when this node's task dies outright; the
            topology's default when ``None``.
        kind: Overrides the kind shown by inspection (e.g. ``NodeKind.TIMER``).
        flush: For a stateful node: called with the node's context when the
            topology closes with a drain, or when a live change removes the
            node, to emit what its state holds (a value, an
            :class:`~hotplumb.Emission`, or :data:`SKIP` for nothing). Its
            output goes to the readers ahead of the change (or of the close),
            so it is processed by the versions that processed the data it
            summarises. A rollup flushes its open window as a partial summary.
        concurrency: How many inputs the node processes at once (an ``async
            def`` or async generator callable, or a plain one with an
            ``executor``). Outputs still leave in input order, and each input's
            error, timeout and provenance are its own; a live change switches
            the node only once every input in flight has settled. A node that
            takes the context or has a state must keep the default, 1.
        executor: Run the (plain) callable off the event loop: a
            :class:`concurrent.futures.Executor` you own, or :attr:`Pool.THREADS`
            / :attr:`Pool.PROCESSES` for one the topology owns. With
            ``concurrency=k``, up to ``k`` calls are in the executor at once.
            A ``timeout`` stops waiting for a call; it cannot stop the call.
        batched: For a sink: call ``fn`` once per batch with a
            :class:`~hotplumb.Data` (a sequence of the batch's data whose
            ``values`` need no :class:`~hotplumb.Datum` built per item), the
            cheapest way to consume many items. If it raises, every datum of
            the batch fails.

        resumable: For a generator source: ``source(context, offset)`` yields
            ``(value, offset)`` pairs, and a checkpoint records the offset of
            the last value the entry point accepted before it; on recovery (and
            when a change replaces the source) it is called with that offset
            (``None`` the first time). Built by :func:`resumable_source`.
        codec: How a checkpoint encodes this node's state (a
            :class:`~hotplumb.Codec`); :data:`~hotplumb.PICKLE` when ``None``.
        on_checkpoint: Called as ``on_checkpoint(context, checkpoint, state)``
            once a checkpoint is complete (durable in the store), with the
            state this node had when the checkpoint's barrier passed it, and
            once on recovery with the checkpoint restored: everything the node
            processed before that barrier is durable, and nothing after it is.
            A sink commits its output here to be exactly-once (see the README).
            It runs in the topology's task, not the node's (may be ``async``);
            an exception is logged and counted, the checkpoint stands.

    Raises:
        TypeError: A field has the wrong type: ``inputs`` is a string or not
            iterable, a callable field is not callable, ``on_change`` is an
            ``async def``, ``target`` or ``pass_datum`` is not a ``bool``, a
            count is not an ``int`` or a timeout not a real number (a ``bool``
            is neither), ``restart`` or ``kind`` is not of its type, or a
            generator source has inputs.
        ValueError: ``timeout`` is not positive and finite, or ``capacity`` or
            ``output_capacity`` is below 1.
        InvalidKeyError: An input cannot be a key, or is listed twice.

    Example:
        >>> plus1 = Node(lambda x: x + 1, inputs=["numbers"])
        >>> plus1.inputs
        ('numbers',)
    """

    fn: Callable[..., Any] = identity
    inputs: tuple[Hashable, ...] = field(default=())
    target: bool = False
    state: Callable[[], Any] | None = None
    migrate: Callable[[Any], Any] | None = None
    on_error: Callable[..., Any] | None = None
    on_change: Callable[[Context], Any] | None = None
    source: Callable[..., AsyncIterator[Any]] | None = None
    pass_datum: bool = False
    timeout: float | None = None
    capacity: int | None = None
    output_capacity: int | None = None
    restart: RestartPolicy | None = None
    kind: NodeKind | None = None
    flush: Callable[[Context], Any] | None = None
    concurrency: int = 1
    executor: Executor | Pool | None = None
    batched: bool = False
    resumable: bool = False
    codec: Codec | None = None
    on_checkpoint: Callable[[Context, Checkpoint, Any], Any] | None = None

    if TYPE_CHECKING:
        # What type checkers see of the generated __init__: ``inputs`` takes any
        # iterable of keys (``__post_init__`` makes it a tuple).
        def __init__(
            self,
            fn: Callable[..., Any] = identity,
            inputs: Iterable[Hashable] = (),
            target: bool = False,
            state: Callable[[], Any] | None = None,
            migrate: Callable[[Any], Any] | None = None,
            on_error: Callable[..., Any] | None = None,
            on_change: Callable[[Context], Any] | None = None,
            source: Callable[..., AsyncIterator[Any]] | None = None,
            pass_datum: bool = False,
            timeout: float | None = None,
            capacity: int | None = None,
            output_capacity: int | None = None,
            restart: RestartPolicy | None = None,
            kind: NodeKind | None = None,
            flush: Callable[[Context], Any] | None = None,
            concurrency: int = 1,
            executor: Executor | Pool | None = None,
            batched: bool = False,
            resumable: bool = False,
            codec: Codec | None = None,
            on_checkpoint: Callable[[Context, Checkpoint, Any], Any] | None = None,
        ) -> None: ...

    def __post_init__(self) -> None:
        if type(self.concurrency) is not int or self.concurrency != 1:
            _check_count("Node concurrency", self.concurrency, 1)
        if self.executor is not None and not isinstance(self.executor, Executor | Pool):
            raise TypeError(
                "Node executor must be a concurrent.futures.Executor or a hotplumb.Pool, "
                f"got {self.executor!r}"
            )
        inputs: Any = self.inputs  # callers may pass any iterable; normalised here
        if type(inputs) is not tuple:
            if isinstance(inputs, str | bytes) or not isinstance(inputs, Iterable):
                hint = f" (for one key, write inputs=[{inputs!r}])" if inputs else ""
                raise TypeError(f"Node inputs must be a sequence of keys, got {inputs!r}{hint}")
            inputs = tuple(inputs)
            object.__setattr__(self, "inputs", inputs)
        if len(inputs) > 1 and len(set(inputs)) != len(inputs):
            seen: set[Hashable] = set()
            dups = [k for k in inputs if k in seen or seen.add(k)]  # type: ignore[func-returns-value]
            raise InvalidKeyError(dups[0], f"listed twice in Node inputs {inputs!r}")
        for k in inputs:
            check_key(k)
        if not callable(self.fn):
            raise TypeError(f"Node fn must be callable, got {self.fn!r}")
        flags: tuple[object, ...] = (self.target, self.pass_datum, self.batched, self.resumable)
        if any(type(flag) is not bool for flag in flags):
            names = ("target", "pass_datum", "batched", "resumable")
            name = next(n for n, f in zip(names, flags, strict=True) if type(f) is not bool)
            raise TypeError(f"Node {name} must be a bool, got {getattr(self, name)!r}")
        # Most nodes set none of the optional fields: one test skips them all.
        if (
            self.state is not None
            or self.migrate is not None
            or self.on_error is not None
            or self.on_change is not None
            or self.source is not None
            or self.timeout is not None
            or self.capacity is not None
            or self.output_capacity is not None
            or self.restart is not None
            or self.kind is not None
            or self.flush is not None
            or self.resumable
            or self.codec is not None
            or self.on_checkpoint is not None
        ):
            self._check_options(inputs)

    def _check_options(self, inputs: tuple[Hashable, ...]) -> None:
        for name in ("state", "migrate", "on_error", "on_change", "source", "flush"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise TypeError(f"Node {name} must be callable or None, got {value!r}")
        if self.on_change is not None and _is_async(self.on_change):
            raise TypeError(
                f"Node on_change must be a plain function, got {self.on_change!r}: "
                f"it is called, not awaited, when the node's readers change"
            )
        if self.source is not None and inputs:
            raise TypeError("a generator source has no inputs")
        if self.resumable and self.source is None:
            raise TypeError("only a generator source can be resumable (Node(source=..., ...))")
        if self.codec is not None and not (
            callable(getattr(self.codec, "encode", None))
            and callable(getattr(self.codec, "decode", None))
        ):
            raise TypeError(f"Node codec must have encode and decode methods, got {self.codec!r}")
        if self.on_checkpoint is not None and not callable(self.on_checkpoint):
            raise TypeError(f"Node on_checkpoint must be callable, got {self.on_checkpoint!r}")
        if self.timeout is not None:
            timeout = _check_seconds("Node timeout", self.timeout)
            if timeout is not self.timeout:
                object.__setattr__(self, "timeout", timeout)
        for name in ("capacity", "output_capacity"):
            value = getattr(self, name)
            if value is not None:
                count = _check_count(f"Node {name}", value, 1)
                if count is not value:
                    object.__setattr__(self, name, count)
        if self.restart is not None and not isinstance(self.restart, RestartPolicy):
            raise TypeError(f"Node restart must be a RestartPolicy or None, got {self.restart!r}")
        if self.kind is not None and not isinstance(self.kind, NodeKind):
            raise TypeError(f"Node kind must be a NodeKind or None, got {self.kind!r}")

    @property
    def is_entry(self) -> bool:
        """Whether this node has no inputs (data enters the topology here)."""
        return not self.inputs

    @property
    def effective_kind(self) -> NodeKind:
        """The node's kind: ``kind`` if set, else derived from inputs and target."""
        if self.kind is not None:
            return self.kind
        if self.target:
            return NodeKind.TARGET
        if not self.inputs:
            return NodeKind.ENTRY
        return NodeKind.PROCESSOR


def sink(
    callback: Callable[..., Any],
    inputs: Iterable[Hashable],
    *,
    batched: bool = False,
    **options: Any,
) -> Node:
    """Build a target node that calls ``callback`` with each :class:`~hotplumb.Datum`.

    Args:
        callback: Called with every datum that reaches the sink; may be async.
        inputs: The keys the sink reads (a list or tuple of keys, even for
            one key: a string is refused, as by :class:`Node`).
        batched: Call ``callback`` once per batch with a :class:`~hotplumb.Data`
            instead (see ``Node.batched``).
        **options: Further :class:`Node` fields (``on_error``, ``timeout``, ...).

    Returns:
        A target node.

    Raises:
        TypeError: ``inputs`` is a string or not iterable, or an option is
            invalid, as for :class:`Node`.

    Example:
        >>> received = []
        >>> out = sink(received.append, inputs=["plus1"])
        >>> out.target
        True
    """
    return Node(callback, inputs=inputs, target=True, pass_datum=True, batched=batched, **options)


def source(produce: Callable[[Context], AsyncIterator[Any]], **options: Any) -> Node:
    """Build a generator source: an entry point that produces values on its own.

    ``produce(context)`` is an async generator function. It is started when
    the node starts (some target reads from it) and cancelled when the node is
    removed, so a source with no readers produces nothing. Values can still be
    injected into a generator source too.

    Args:
        produce: The async generator function.
        **options: Further :class:`Node` fields (``fn`` to post-process, ...).

    Returns:
        An entry-point node.
    """
    return Node(source=produce, **options)


def resumable_source(
    produce: Callable[[Context, Any], AsyncIterator[tuple[Any, Any]]], **options: Any
) -> Node:
    """Build a generator source that a checkpoint can resume: it reports its offset.

    ``produce(context, offset)`` is an async generator function yielding
    ``(value, offset)`` pairs: ``offset`` says where the source is once
    ``value`` is produced (a file position, a sequence number, a Kafka
    offset: anything the codec of checkpoints, pickle, can encode). It is
    called with ``offset=None`` on a fresh start; after recovery from a
    checkpoint, with the offset of the last value the entry point had
    accepted before the checkpoint's barrier, so the values after it are
    produced again and none is lost. A resumable source takes no injected data.

    Args:
        produce: The async generator function.
        **options: Further :class:`Node` fields.

    Returns:
        An entry-point node with ``resumable=True``.

    Example:
        >>> async def numbers(ctx, offset):
        ...     n = 0 if offset is None else offset
        ...     while True:
        ...         n += 1
        ...         yield n, n
        >>> resumable_source(numbers).resumable
        True
    """
    return Node(source=produce, resumable=True, **options)
