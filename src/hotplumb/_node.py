"""Node descriptions: what a node computes, what it reads, how it is treated.

A :class:`Node` is a frozen value. It says nothing about where it runs; the
runtime turns it into a task when a :class:`~hotplumb.Graph` that holds it is
run. Creating one is cheap: the callable's signature is checked when the node
is started, not here.
"""

from __future__ import annotations

import enum
import math
from collections.abc import AsyncIterator, Callable, Hashable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

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
    """

    max_restarts: int = 3
    window: float = 60.0
    backoff: float = 0.0

    def __post_init__(self) -> None:
        numbers = (self.window, self.backoff)
        if self.max_restarts < 0 or not all(math.isfinite(n) for n in numbers):
            raise ValueError(f"invalid restart policy {self!r}")
        if self.window <= 0 or self.backoff < 0:
            raise ValueError(f"invalid restart policy {self!r}")


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
        on_change: Called with the node's context when its readers change.
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
            resumable: bool = False,
            codec: Codec | None = None,
            on_checkpoint: Callable[[Context, Checkpoint, Any], Any] | None = None,
        ) -> None: ...

    def __post_init__(self) -> None:
        if isinstance(self.concurrency, bool) or not isinstance(self.concurrency, int):
            raise TypeError(f"Node concurrency must be an int >= 1, got {self.concurrency!r}")
        if self.concurrency < 1:
            raise ValueError(f"Node concurrency must be an int >= 1, got {self.concurrency!r}")
        if self.executor is not None and not isinstance(self.executor, Executor | Pool):
            raise TypeError(
                "Node executor must be a concurrent.futures.Executor or a hotplumb.Pool, "
                f"got {self.executor!r}"
            )
        inputs: Any = self.inputs  # callers may pass any iterable; normalised here
        if type(inputs) is not tuple:
            if isinstance(inputs, str | bytes) or not isinstance(inputs, Iterable):
                raise TypeError(f"Node inputs must be a sequence of keys, got {inputs!r}")
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
        if self.timeout is not None and not (self.timeout > 0 and math.isfinite(self.timeout)):
            raise ValueError(f"Node timeout must be positive and finite, got {self.timeout!r}")
        if self.capacity is not None and self.capacity < 1:
            raise ValueError(f"Node capacity must be at least 1, got {self.capacity!r}")
        if self.output_capacity is not None and self.output_capacity < 1:
            raise ValueError(
                f"Node output_capacity must be at least 1, got {self.output_capacity!r}"
            )

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


def sink(callback: Callable[..., Any], inputs: Iterable[Hashable], **options: Any) -> Node:
    """Build a target node that calls ``callback`` with each :class:`~hotplumb.Datum`.

    Args:
        callback: Called with every datum that reaches the sink; may be async.
        inputs: The keys the sink reads.
        **options: Further :class:`Node` fields (``on_error``, ``timeout``, ...).

    Returns:
        A target node.

    Example:
        >>> received = []
        >>> out = sink(received.append, inputs=["plus1"])
        >>> out.target
        True
    """
    return Node(callback, inputs=tuple(inputs), target=True, pass_datum=True, **options)


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
