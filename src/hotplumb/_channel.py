"""Channels: bounded FIFO queues of batches and control messages.

Ordering argument. A channel connects one producing node to one consuming node
(or callers of ``inject`` to an entry point). Everything a producer sends —
data batches and control messages alike — goes through the same deque in the
order it was sent, and the consumer takes it out in that order. A control
message therefore splits the channel's traffic into "before" and "after"
without any clock or counter: this is what makes in-band reconfiguration work.

Capacity is counted in items, not batches. ``put`` waits while the channel holds
``capacity`` items or more (backpressure); control messages never wait, so a
barrier can always be sent, even into a full channel. A channel is closed when
its consumer goes away; putting into a closed channel raises rather than
losing the data.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

from hotplumb._errors import TopologyClosedError

if TYPE_CHECKING:
    from collections.abc import Hashable

    from hotplumb._datum import Datum, Route, Trace

__all__ = ["Batch", "Channel", "Consumer"]


class Batch:
    """Data moving together: values from one route, with their origins.

    ``values``, ``origins`` and (if present) ``parents`` have equal lengths and
    are never mutated once the batch is sent, so one batch can be shared by
    every reader of a fan-out.
    """

    __slots__ = ("origins", "parents", "route", "trace", "values")

    def __init__(
        self,
        values: list[Any],
        origins: list[Any],
        route: Route | None,
        parents: list[tuple[Datum, ...]] | None = None,
        trace: Trace | None = None,
    ) -> None:
        self.values = values
        self.origins = origins
        self.route = route
        self.parents = parents
        self.trace = trace

    def __len__(self) -> int:
        return len(self.values)

    def __repr__(self) -> str:
        return f"Batch({len(self.values)} items via {self.route!r})"


class Consumer(Protocol):
    """What a channel needs of the node that reads it."""

    key: Hashable

    def wake(self) -> None:
        """Called when the channel receives something."""


class Channel:
    """A bounded FIFO of batches and control messages into one consumer.

    Attributes:
        producer: The key of the producing node (``None`` for an entry channel).
        consumer: The reading node.
        capacity: Items the channel holds before ``put`` waits.
        size: Items it holds now.
        closed: Whether the consumer has gone; ``put`` then raises.
    """

    __slots__ = ("_buffer", "_space", "capacity", "closed", "consumer", "producer", "size")

    def __init__(self, producer: Hashable | None, consumer: Consumer, capacity: int) -> None:
        self.producer = producer
        self.consumer = consumer
        self.capacity = capacity
        self.size = 0
        self.closed = False
        # Invariant: items are in the order they were put; `size` counts the
        # values of the batches in `_buffer`. An empty channel holds no deque
        # (`None`), so idle channels cost little memory.
        self._buffer: deque[Any] | None = None
        # Putters waiting for space, oldest first (rarely more than one).
        self._space: list[asyncio.Future[None]] = []

    def __len__(self) -> int:
        return len(self._buffer) if self._buffer is not None else 0

    def __bool__(self) -> bool:
        return self._buffer is not None

    def _append(self, message: object) -> None:
        if self._buffer is None:
            self._buffer = deque()
        self._buffer.append(message)

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
        self._append(batch)
        self.size += len(batch.values)
        self.consumer.wake()
        if self._space and self.size < self.capacity:
            self._wake_putters()

    async def _wait_for_space(self) -> None:
        loop = asyncio.get_running_loop()
        while (self.size >= self.capacity or self._space) and not self.closed:
            waiter: asyncio.Future[None] = loop.create_future()
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

    def put_control(self, message: object) -> None:
        """Append a control message; never waits (control is not counted)."""
        self._append(message)
        self.consumer.wake()

    def force_put(self, batch: Batch) -> None:
        """Append ``batch`` now, even past capacity (for data that must precede what follows)."""
        self._append(batch)
        self.size += len(batch.values)
        self.consumer.wake()

    def push_front(self, batch: Batch) -> None:
        """Put ``batch`` back at the head (a restarted consumer takes it first)."""
        if self._buffer is None:
            self._buffer = deque()
        self._buffer.appendleft(batch)
        self.size += len(batch.values)

    def pop(self) -> Any:
        """Remove and return the oldest message; the channel must not be empty."""
        buffer = self._buffer
        assert buffer is not None
        message = buffer.popleft()
        if not buffer:
            self._buffer = None
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
        self.closed = True
        held = list(self._buffer) if self._buffer is not None else []
        self._buffer = None
        self.size = 0
        while self._space:
            waiter = self._space.pop(0)
            if not waiter.done():
                waiter.set_result(None)
        return held

    def __repr__(self) -> str:
        return (
            f"Channel({self.producer!r} -> {self.consumer.key!r}, "
            f"{self.size}/{self.capacity} items, {len(self)} messages)"
        )
