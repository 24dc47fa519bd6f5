"""Channels: bounded FIFO queues of batches and control messages into one node.

A channel connects one producing node to one consuming node (or the callers
of ``inject`` to an entry point). :class:`Channel` is the interface the rest
of the runtime uses; :class:`MemoryChannel` is the in-process implementation.
A channel to another process implements the same interface.

What an implementation must guarantee (the live-change protocol in
``_change`` rests on these and nothing else):

1. **FIFO between data and control.** Batches and control messages come out of
   :meth:`Channel.take` in the order they were put, whichever of ``put``,
   ``put_control`` or ``force_put`` put them. A control message therefore splits
   the channel's traffic into "before" and "after" without any clock or
   counter: this is what makes in-band reconfiguration work.
2. **Bounded data.** :meth:`Channel.put` waits while the channel holds
   ``capacity`` items or more (backpressure; capacity counts items, not
   batches). Waiting putters are served in order.
3. **Control never waits.** :meth:`Channel.put_control` returns at once and
   control messages are not counted against the capacity, so a barrier can
   always be sent, even into a full channel. :meth:`Channel.force_put` (data
   that must precede what follows, such as the value a stopped source was
   offering) also never waits.
4. **No silent loss.** Once sealed (its consumer is going away) or closed,
   ``put`` raises :class:`~hotplumb.TopologyClosedError` rather than dropping
   the batch, and putters waiting for space are woken to raise. ``close``
   returns what the channel still held, for the shutdown report.
5. **The consumer is told.** Every message put wakes the consumer
   (:meth:`Consumer.wake`), so an idle node starts when input arrives.

Only the consumer's task calls ``take`` and ``push_front``.

Coalescing. :class:`MemoryChannel` merges a batch put right behind another
batch from the same route (plain data: no parents, no trace) into it, up to
:data:`COALESCE` items, so values injected one at a time, or produced one at a
time by a source, travel onwards as one batch. It only ever merges with the
message at the tail, so it never merges across a control message; the merged
batch is the channel's own copy until the consumer takes it, so a batch
shared by several readers is never changed.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

from hotplumb._datum import Batch
from hotplumb._errors import TopologyClosedError

if TYPE_CHECKING:
    from collections.abc import Hashable

__all__ = ["COALESCE", "Channel", "Consumer", "MemoryChannel"]

COALESCE = 1024
"""The most items a channel merges consecutive small batches into."""


class Consumer(Protocol):
    """What a channel needs of the node that reads it."""

    @property
    def key(self) -> Hashable:
        """The consuming node's key (for messages)."""
        ...

    def wake(self) -> None:
        """Called when the channel receives something."""

    @property
    def hungry(self) -> bool:
        """Whether the consumer has nothing in hand (a producer may then send early)."""
        ...


class Channel(Protocol):
    """A bounded FIFO of batches and control messages into one consumer.

    Attributes:
        producer: The key of the producing node (``None`` for an entry channel).
        consumer: The reading node.
        capacity: Items the channel holds before ``put`` waits; the live-change
            protocol changes it (:meth:`resize`) when it installs a change.
        size: Items it holds now.
        closed: Whether it refuses data (sealed or closed).
        empty: Whether no message waits (``not channel``): a read-only
            property, which :class:`MemoryChannel` keeps as a plain attribute
            (a producer asks after every input while it waits to send early).
    """

    producer: Hashable | None
    consumer: Consumer
    capacity: int
    size: int
    closed: bool

    @property
    def empty(self) -> bool:
        """Whether no message waits (``not channel``)."""
        ...

    async def put(self, batch: Batch) -> None:
        """Append ``batch``, waiting while the channel is full.

        Raises:
            TopologyClosedError: The channel was sealed or closed (before or
                while waiting).
        """
        ...

    def put_control(self, message: object) -> None:
        """Append a control message; never waits (control is not counted)."""

    def force_put(self, batch: Batch) -> None:
        """Append ``batch`` now, even past capacity."""

    def resize(self, capacity: int) -> None:
        """Set ``capacity``; a putter waiting for space that there now is goes on."""

    def take(self) -> Any:
        """Remove and return the oldest message; the channel must not be empty."""

    def push_front(self, message: object) -> None:
        """Put ``message``, a batch or a control message, back at the head.

        A restarted consumer takes it first.
        """

    def __bool__(self) -> bool:
        """Whether a message waits to be taken."""
        ...

    def seal(self) -> None:
        """Refuse further data but keep what is held for the consumer."""

    def close(self) -> list[Any]:
        """Refuse further data, wake waiting putters (they raise), return what was held."""
        ...


class MemoryChannel:
    """The in-process :class:`Channel`: a deque and a list of waiting putters.

    Attributes:
        producer: The key of the producing node (``None`` for an entry channel).
        consumer: The reading node.
        capacity: Items the channel holds before ``put`` waits.
        size: Items it holds now.
        closed: Whether it refuses data.
        empty: Whether no message waits.
    """

    __slots__ = (
        "_buffer",
        "_own",
        "_space",
        "capacity",
        "closed",
        "consumer",
        "empty",
        "producer",
        "size",
    )

    def __init__(self, producer: Hashable | None, consumer: Consumer, capacity: int) -> None:
        self.producer = producer
        self.consumer = consumer
        self.capacity = capacity
        self.size = 0
        self.closed = False
        # Invariant: messages are in the order they were put; `size` counts the
        # values of the batches in `_buffer`. An empty channel holds no deque
        # (`None`), so idle channels cost little memory; `empty` is
        # `_buffer is None`, kept where `_buffer` changes.
        self._buffer: deque[Any] | None = None
        self.empty = True
        # Putters waiting for space, oldest first (rarely more than one).
        self._space: list[asyncio.Future[None]] = []
        # The batch at the tail that this channel made by merging, and so may
        # extend; None once the consumer has taken it (or any other put).
        self._own: Batch | None = None

    def __len__(self) -> int:
        return len(self._buffer) if self._buffer is not None else 0

    def __bool__(self) -> bool:
        return self._buffer is not None

    def _append(self, message: object) -> None:
        if self._buffer is None:
            self._buffer = deque()
            self.empty = False
        self._buffer.append(message)
        self._own = None

    def _append_batch(self, batch: Batch) -> None:
        buffer = self._buffer
        if buffer is not None and batch.parents is None and batch.trace is None:
            last = buffer[-1]
            if (
                type(last) is Batch
                and last.route is batch.route
                and last.parents is None
                and last.trace is None
                and len(last.values) + len(batch.values) <= COALESCE
            ):
                if last is not self._own:
                    last = Batch(list(last.values), list(last.origins), last.route)
                    buffer[-1] = self._own = last
                last.values.extend(batch.values)
                last.origins.extend(batch.origins)
                return
        self._append(batch)

    async def put(self, batch: Batch) -> None:
        """Append ``batch``, waiting while the channel is full.

        Raises:
            TopologyClosedError: The channel was closed (before or while waiting).
        """
        if self.size >= self.capacity or self._space:
            await self._wait_for_space()
        if self.closed:
            raise TopologyClosedError(
                f"{self.consumer.key!r} takes no more data: the topology closed, or a live "
                "change removed it (or its input) while the call waited"
            )
        self._append_batch(batch)
        self.size += len(batch.values)
        self.consumer.wake()
        if self._space and self.size < self.capacity:
            self._wake_putters()

    async def _wait_for_space(self) -> None:
        loop = asyncio.get_running_loop()
        woken = False
        while (self.size >= self.capacity or self._space) and not self.closed:
            waiter: asyncio.Future[None] = loop.create_future()
            if woken:
                self._space.insert(0, waiter)  # the space went before we ran: keep our place
            else:
                self._space.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter in self._space:
                    self._space.remove(waiter)
                else:
                    # We were woken but will not use the space: pass it on.
                    self._wake_putters()
                raise
            if self.size < self.capacity:
                return
            woken = True

    def put_control(self, message: object) -> None:
        """Append a control message; never waits (control is not counted)."""
        self._append(message)
        self.consumer.wake()

    def force_put(self, batch: Batch) -> None:
        """Append ``batch`` now, even past capacity (for data that must precede what follows)."""
        self._append_batch(batch)
        self.size += len(batch.values)
        self.consumer.wake()

    def resize(self, capacity: int) -> None:
        """Set ``capacity``; a putter waiting for space that there now is goes on."""
        self.capacity = capacity
        if self._space and self.size < capacity:
            self._wake_putters()

    def push_front(self, message: object) -> None:
        """Put ``message``, a batch or a control message, back at the head.

        A restarted consumer takes it first.
        """
        if self._buffer is None:
            self._buffer = deque()
            self.empty = False
            self._own = None
        self._buffer.appendleft(message)
        if type(message) is Batch:
            self.size += len(message.values)

    def take(self) -> Any:
        """Remove and return the oldest message; the channel must not be empty."""
        buffer = self._buffer
        assert buffer is not None
        message = buffer.popleft()
        if not buffer:
            self._buffer = None
            self.empty = True
            self._own = None  # it was the tail: the consumer has it now
        if type(message) is Batch:
            self.size -= len(message.values)
            if self._space and self.size < self.capacity:
                self._wake_putters()
        return message

    def _wake_putters(self) -> None:
        while self._space:
            waiter = self._space.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return

    def seal(self) -> None:
        """Refuse further data (``put`` raises) but keep what is held for the consumer."""
        self.closed = True
        while self._space:
            waiter = self._space.pop(0)
            if not waiter.done():
                waiter.set_result(None)

    def close(self) -> list[Any]:
        """Close the channel, wake waiting putters (they raise) and return what it held."""
        held = list(self._buffer) if self._buffer is not None else []
        self._buffer = None
        self.empty = True
        self.size = 0
        self.seal()
        return held

    def __repr__(self) -> str:
        return (
            f"MemoryChannel({self.producer!r} -> {self.consumer.key!r}, "
            f"{self.size}/{self.capacity} items, {len(self)} messages)"
        )
