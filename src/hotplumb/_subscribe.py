"""Subscribing to a key of a running topology: :meth:`Topology.subscribe`.

A subscription is a target added to the running graph for as long as an
``async with`` block lasts: entering adds a sink reading the wanted key under
a unique private key (a :class:`SubscriberKey`), leaving removes it. Both go
through :meth:`Topology.update`, so they are atomic with respect to every
other change, and the factory resolves the wanted key (and garbage-collects
what only this subscriber needed) exactly as for any target.

Hundreds of subscribers can join and leave at once. Their edits go through
one :class:`SubscriberEdits` per topology, which makes every edit asked for
while a change is under way in the next change, together, in the order they
were asked for: a thousand clients arriving at once make a handful of
changes, not a thousand, each costing about what one would. An edit that
cannot be made (a key nothing provides) fails alone: the others of its change
go ahead. If the change itself fails before anything changed (a new node's
state factory raised), each of its edits is tried again in a change of its
own, so that the error reaches only the subscriber it belongs to.

Between the sink (in the topology's task) and the subscriber (in the caller's
task) sits a bounded buffer, the only state both ends touch. Its invariants,
all kept without a lock because both ends run on one event loop and never
await while they touch it:

* ``len(buffer) <= capacity``;
* every datum the sink took is in exactly one of: the buffer, ``delivered``
  (handed to the subscriber), ``missed`` (arrived once the buffer was full,
  with ``Overflow.DISCONNECT``) or dropped after the subscriber left (it asked
  for nothing more);
* once ``overflowed`` is set it stays set, nothing more is buffered, and the
  subscriber reads what was buffered before, then gets
  :class:`~hotplumb.SubscriberOverflowError` with the count it missed.

With ``Overflow.BACKPRESSURE`` the sink awaits space instead: nothing is lost,
and the sink's input channel fills, then its producers wait, and so on up to
the entry points, as for any slow node. Leaving (or the topology closing)
wakes a waiting sink, so a subscriber that stopped reading never holds up a
removal, a drain or a close.

Leaving must happen whatever ended the block: an exception, a cancellation,
the topology closing. The removal runs in a task of its own that the leaving
task awaits through :func:`asyncio.shield`, so a second cancellation of the
leaving task cannot stop it half-way; once the topology is closing there is
nothing to remove (the sink stops with everything else).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import enum
import functools
import itertools
import logging
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from hotplumb._errors import ApplyError, SubscriberOverflowError, TopologyClosedError
from hotplumb._format import format_key
from hotplumb._keys import check_key
from hotplumb._node import Node, sink

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable
    from types import TracebackType

    from hotplumb._change import ApplyReport
    from hotplumb._datum import Datum
    from hotplumb._graph import Graph

__all__ = [
    "Overflow",
    "SubscriberEdits",
    "SubscriberKey",
    "Subscription",
    "SubscriptionHost",
    "SubscriptionStatistics",
    "open_subscription",
]

logger = logging.getLogger("hotplumb")

_serials = itertools.count(1)

# Removals still running after the task that started them was cancelled:
# kept here so they are not garbage-collected before they finish.
_leaving: set[asyncio.Task[None]] = set()


class SubscriptionHost(Protocol):
    """What a subscription needs of the running topology: its public change API.

    The runtime imports this module (``Topology.subscribe`` delegates here),
    so this module knows the topology only through this interface.
    """

    @property
    def closing(self) -> bool:
        """Whether the topology is stopping (or has stopped)."""

    async def update(
        self, fn: Callable[[Graph], Graph], *, timeout: float | None = None
    ) -> ApplyReport:
        """Change the running graph to ``fn(graph)`` under the change lock."""


@dataclass(eq=False, slots=True)
class _Edit:
    """One subscriber's edit of the running graph: its sink added, or removed."""

    key: SubscriberKey
    sink: Node | None  # None: remove the sink
    done: asyncio.Future[None]
    error: Exception | None = None

    def apply(self, graph: Graph) -> Graph:
        if self.sink is not None:
            return graph.add_node(self.key, self.sink)
        # Idempotent: a cut-off subscriber's sink may already be gone when it leaves.
        return graph.remove_node(self.key) if self.key in graph.provided else graph


def _edit_all(graph: Graph, edits: list[_Edit]) -> Graph:
    """``graph`` with every edit that can be made, in order; the others keep their error."""
    for edit in edits:
        edit.error = None
    start = graph
    try:
        # Runs of adds and of removes, each one edit of the graph.
        for adding, run in itertools.groupby(edits, key=lambda e: e.sink is not None):
            if adding:
                graph = graph.add_nodes_from({e.key: e.sink for e in run if e.sink is not None})
            else:
                graph = graph.remove_nodes_from([e.key for e in run if e.key in graph.provided])
    except Exception:
        pass  # one of them cannot be made: find which, one at a time
    else:
        return graph
    graph = start
    for edit in edits:
        try:
            graph = edit.apply(graph)
        except Exception as exc:
            edit.error = exc
    return graph


class SubscriberEdits:
    """The joins and leaves of one topology's subscribers, made in as few changes as they allow.

    :meth:`make` queues an edit and waits for the change that makes it. While
    no change of this queue is under way, the first edit starts one; the
    edits queued until that change's function runs (under the change lock,
    so possibly long after) all go into it. The change runs in a task of the
    queue's own, so a subscriber cancelled while it waits cancels only its
    own edit (or, if its change already started, nothing: it then takes its
    sink out again, as after any cancelled join).

    Args:
        host: The topology.
        refuse_reentry: Raises :class:`~hotplumb.ReentrantCallError` when
            called from a node's own task (whose change could never pass it).
    """

    __slots__ = ("_host", "_pump", "_queue", "_refuse_reentry")

    def __init__(self, host: SubscriptionHost, refuse_reentry: Callable[[str], None]) -> None:
        self._host = host
        self._refuse_reentry = refuse_reentry
        self._queue: list[_Edit] = []
        self._pump: asyncio.Task[None] | None = None

    @property
    def closing(self) -> bool:
        """Whether the topology is stopping (or has stopped)."""
        return self._host.closing

    async def make(self, key: SubscriberKey, sink: Node | None) -> None:
        """Add ``sink`` under ``key`` (or, with ``None``, remove ``key``); wait until done.

        Raises:
            ApplyError: As for :meth:`Topology.update`.
            TopologyClosedError: The topology closed first.
            ReentrantCallError: Called from a node's own task.
            Exception: What the graph raised for this edit alone (a
                :class:`~hotplumb.MissingNodeError`, say); nothing changed.
        """
        what = "subscribe()" if sink is not None else "leaving a subscription"
        self._refuse_reentry(what)
        if self._host.closing:
            raise TopologyClosedError("the topology is closed; it takes no more changes")
        edit = _Edit(key, sink, asyncio.get_running_loop().create_future())
        self._queue.append(edit)
        if self._pump is None:
            self._start()
        # Cancelling the waiting task cancels `done`: the pump skips a cancelled
        # edit it has not taken yet, and sets nothing on one it has.
        await edit.done

    def _start(self) -> None:
        task = asyncio.get_running_loop().create_task(
            self._run(), name="hotplumb: subscribers join and leave"
        )
        # An eager task (Python 3.12's eager_task_factory) may have run to its
        # end already, every queued edit made: there is nothing to keep.
        if not task.done():
            self._pump = task
            task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if self._pump is task:
            self._pump = None
        if not self._queue:
            return
        if task.cancelled():  # cancelled before it took them (the loop is stopping)
            _settle(self._take_all(), asyncio.CancelledError())
        else:  # queued after its last look at the queue
            self._start()

    async def _run(self) -> None:
        batch: list[_Edit] = []  # the edits of the change under way

        def edit(graph: Graph) -> Graph:  # under the change lock
            batch.extend(e for e in self._queue if not e.done.done())
            self._queue.clear()
            return _edit_all(graph, batch)

        try:
            while self._queue:
                batch.clear()
                try:
                    await self._host.update(edit)
                except ApplyError as exc:
                    if exc.running == "old" and len(batch) > 1:
                        await self._one_by_one(batch)
                    else:
                        _settle(batch, exc)
                except Exception as exc:
                    _settle(batch or self._take_all(), exc)
                else:
                    _settle(batch, None)
        except BaseException as exc:  # cancelled (the loop is stopping)
            _settle(batch + self._take_all(), exc)
            raise

    async def _one_by_one(self, batch: list[_Edit]) -> None:
        """Make each edit of a failed change in a change of its own."""
        for one in batch:
            if one.done.done():
                continue
            try:
                await self._host.update(functools.partial(_edit_all, edits=[one]))
            except Exception as exc:
                _settle([one], exc)
            else:
                _settle([one], None)

    def _take_all(self) -> list[_Edit]:
        taken, self._queue = self._queue, []
        return taken

    def __repr__(self) -> str:
        return f"<SubscriberEdits: {len(self._queue)} waiting>"


def _settle(edits: list[_Edit], error: BaseException | None) -> None:
    """Tell each edit's subscriber (if it still waits) how its edit went.

    An ``error`` of the whole change reaches each subscriber as an exception
    of its own (a copy), since raising one changes its traceback and context.
    """
    shared = error
    for e in edits:
        if e.done.done():
            continue
        failure = e.error if error is None else shared
        if failure is None:
            e.done.set_result(None)
        elif isinstance(failure, asyncio.CancelledError):
            e.done.cancel()
        else:
            e.done.set_exception(failure)
            if error is not None:
                shared = _copy_of(error)


def _copy_of(error: BaseException) -> BaseException:
    """Another exception saying what ``error`` says, with its cause and traceback."""
    try:
        twin = copy.copy(error)
    except Exception:  # an exception that cannot be rebuilt from its arguments
        return error
    twin.__cause__ = error.__cause__
    twin.__context__ = error.__context__
    twin.__suppress_context__ = error.__suppress_context__
    twin.__traceback__ = error.__traceback__
    notes = getattr(error, "__notes__", None)
    if notes is not None:
        twin.__notes__ = list(notes)
    return twin


class Overflow(enum.Enum):
    """What a subscription does when its subscriber falls behind and its buffer is full."""

    DISCONNECT = "disconnect"
    """Cut the subscriber off: iterating raises :class:`~hotplumb.SubscriberOverflowError`
    (after what was buffered), with the count of what it missed. Nobody else slows down."""
    BACKPRESSURE = "backpressure"
    """Wait for room: nothing is lost, and the graph upstream slows down to the subscriber."""


@dataclass(frozen=True, slots=True)
class SubscriberKey:
    """The key of a subscription's sink in the running graph.

    Each subscription has its own; it prints as ``subscriber #N of KEY``.

    Attributes:
        serial: A number unique within the process.
        reads: The key the subscription reads.
    """

    serial: int
    reads: Hashable

    def __repr__(self) -> str:
        return f"subscriber #{self.serial} of {format_key(self.reads)}"


@dataclass(frozen=True, slots=True)
class SubscriptionStatistics:
    """Counters of one subscription (see :meth:`Subscription.statistics`).

    Attributes:
        key: The key it reads.
        capacity: The size of its buffer.
        overflow: Its overflow policy.
        buffered: Data waiting in its buffer.
        received: Data its sink took from the graph.
        delivered: Data handed to the subscriber.
        missed: Data that arrived while its buffer was full (disconnect policy),
            never delivered.
        disconnected: Whether it was cut off for falling behind.
    """

    key: Hashable
    capacity: int
    overflow: Overflow
    buffered: int
    received: int
    delivered: int
    missed: int
    disconnected: bool


class _NoPublicConstructor(type):
    """A metaclass for classes the library makes: calling the class raises."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"hotplumb.{cls.__qualname__} has no public constructor; "
            "get one from topology.subscribe(key)"
        )

    def _create(cls, *args: Any, **kwargs: Any) -> Any:
        return super().__call__(*args, **kwargs)


class Subscription(metaclass=_NoPublicConstructor):
    """The data of one key of a running topology, as an async iterator of :class:`~hotplumb.Datum`.

    Get one from :meth:`Topology.subscribe <hotplumb.Topology.subscribe>`;
    iterate it inside the ``async with`` block. Iteration ends when the
    topology closes (after everything it delivered before closing) and
    raises :class:`~hotplumb.SubscriberOverflowError` if the subscriber fell
    behind with ``Overflow.DISCONNECT``.
    """

    __slots__ = (
        "_buffer",
        "_capacity",
        "_delivered",
        "_edits",
        "_ended",
        "_entered",
        "_key",
        "_left",
        "_missed",
        "_overflow",
        "_overflowed",
        "_readable",
        "_received",
        "_sink_key",
        "_space",
        "_unwatch",
        "_watch_close",
    )

    def __init__(
        self,
        edits: SubscriberEdits,
        key: Hashable,
        capacity: int,
        overflow: Overflow,
        watch_close: Callable[[Callable[[], None]], Callable[[], None]],
    ) -> None:
        self._edits = edits
        self._key = key
        self._capacity = capacity
        self._overflow = overflow
        self._watch_close = watch_close
        self._unwatch: Callable[[], None] | None = None
        self._sink_key = SubscriberKey(next(_serials), key)
        self._buffer: deque[Datum] = deque()
        self._readable = asyncio.Event()  # set when the buffer is not empty or the stream ended
        self._space = asyncio.Event()  # set when the buffer has room or the subscriber left
        self._space.set()
        self._received = 0
        self._delivered = 0
        self._missed = 0
        self._overflowed = False
        self._entered = False
        self._left = False  # the subscriber left: the sink drops what still comes
        self._ended = False  # the topology closed: nothing more will come

    # -- what the subscriber sees ------------------------------------------------

    @property
    def key(self) -> Hashable:
        """The key this subscription reads."""
        return self._key

    @property
    def sink_key(self) -> SubscriberKey:
        """The key of this subscription's sink in the running graph."""
        return self._sink_key

    @property
    def capacity(self) -> int:
        """The size of its buffer, in data."""
        return self._capacity

    @property
    def overflow(self) -> Overflow:
        """What happens when its buffer is full."""
        return self._overflow

    def statistics(self) -> SubscriptionStatistics:
        """Return its counters (a frozen copy)."""
        return SubscriptionStatistics(
            key=self._key,
            capacity=self._capacity,
            overflow=self._overflow,
            buffered=len(self._buffer),
            received=self._received,
            delivered=self._delivered,
            missed=self._missed,
            disconnected=self._overflowed,
        )

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Datum:
        if not self._entered:
            raise RuntimeError("iterate a subscription inside its `async with` block")
        buffer = self._buffer
        while not buffer:
            if self._left:
                raise StopAsyncIteration
            if self._overflowed:
                raise SubscriberOverflowError(
                    self._key, self._capacity, self._delivered, self._missed
                )
            if self._ended:
                raise StopAsyncIteration
            self._readable.clear()
            await self._readable.wait()
        datum = buffer.popleft()
        self._delivered += 1
        self._space.set()
        return datum

    def __repr__(self) -> str:
        state = (
            "left"
            if self._left
            else "disconnected"
            if self._overflowed
            else "ended"
            if self._ended
            else "open"
            if self._entered
            else "not entered"
        )
        return (
            f"<hotplumb.Subscription to {format_key(self._key)}: {state}, "
            f"{len(self._buffer)}/{self._capacity} buffered, {self._overflow.name}>"
        )

    # -- the sink's side ---------------------------------------------------------

    def _offer(self, datum: Datum) -> None:
        """The sink, with ``Overflow.DISCONNECT``: buffer, or count as missed."""
        self._received += 1
        if self._left:
            return
        if self._overflowed or len(self._buffer) >= self._capacity:
            self._missed += 1
            if not self._overflowed:
                self._overflowed = True
                self._readable.set()
                self._start_leaving()  # nothing more is for it: take its sink away
            return
        self._buffer.append(datum)
        self._readable.set()

    async def _put(self, datum: Datum) -> None:
        """The sink, with ``Overflow.BACKPRESSURE``: wait for room; drop once it left."""
        self._received += 1
        while len(self._buffer) >= self._capacity and not self._left:
            self._space.clear()
            await self._space.wait()
        if self._left:
            return
        self._buffer.append(datum)
        self._readable.set()

    def _closed(self) -> None:
        """The topology stopped: the stream ends once the buffer is read."""
        self._ended = True
        self._readable.set()
        self._space.set()

    # -- joining and leaving -----------------------------------------------------

    async def __aenter__(self) -> Subscription:
        if self._entered:
            raise RuntimeError("a subscription can be entered only once")
        self._entered = True
        self._unwatch = self._watch_close(self._closed)
        try:
            callback: Callable[[Datum], Any] = (
                self._put if self._overflow is Overflow.BACKPRESSURE else self._offer
            )
            await self._edits.make(self._sink_key, sink(callback, inputs=[self._key]))
        except BaseException as exc:
            self._left = True
            self._stop_watching()
            if isinstance(exc, asyncio.CancelledError) or (
                isinstance(exc, ApplyError) and exc.running != "old"
            ):
                # The change may have gone ahead (or may yet): take the sink out again.
                self._start_leaving()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._left = True
        self._buffer.clear()
        self._space.set()  # a sink waiting for room drops what it holds and goes on
        self._stop_watching()
        task = self._start_leaving()
        if task is not None:
            await asyncio.shield(task)

    def _stop_watching(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None

    def _start_leaving(self) -> asyncio.Task[None] | None:
        """Remove the sink in a task of its own; ``None`` if the topology is closing."""
        if self._edits.closing:
            return None
        task = asyncio.get_running_loop().create_task(
            self._leave(), name=f"hotplumb: {self._sink_key!r} leaves"
        )
        _leaving.add(task)
        task.add_done_callback(_left)
        return task

    async def _leave(self) -> None:
        # If it closed meanwhile, the sink stopped with everything else.
        with contextlib.suppress(TopologyClosedError):
            await self._edits.make(self._sink_key, None)


def _left(task: asyncio.Task[None]) -> None:
    _leaving.discard(task)
    if not task.cancelled() and (error := task.exception()) is not None:
        # Also raised to the leaving subscriber, if it still waits for it.
        logger.error("a subscriber's sink could not be removed", exc_info=error)


def open_subscription(
    edits: SubscriberEdits,
    key: Hashable,
    capacity: int,
    overflow: Overflow,
    watch_close: Callable[[Callable[[], None]], Callable[[], None]],
) -> Subscription:
    """Check the arguments of :meth:`Topology.subscribe` and make the subscription.

    Args:
        edits: The topology's joins and leaves.
        key: The key to read.
        capacity: The buffer's size.
        overflow: The overflow policy.
        watch_close: Registers a callback for when the topology stops; returns
            the function that unregisters it.

    Returns:
        The subscription, not yet entered.

    Raises:
        InvalidKeyError: ``key`` cannot be a key.
        TypeError: ``overflow`` is not an :class:`Overflow`.
        ValueError: ``capacity`` is not an int >= 1.
    """
    check_key(key)
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
        raise ValueError(f"capacity must be an int >= 1, got {capacity!r}")
    if not isinstance(overflow, Overflow):
        raise TypeError(
            f"overflow must be hotplumb.Overflow.DISCONNECT or .BACKPRESSURE, got {overflow!r}"
        )
    subscription: Subscription = Subscription._create(edits, key, capacity, overflow, watch_close)
    return subscription
