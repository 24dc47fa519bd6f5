"""Channels between processes: a sending end, a receiving end, and the frames between them.

A channel whose producer and consumer run in different processes is two
objects joined by a transport. The producing node writes to a
:class:`WireSender`, which it uses exactly like a
:class:`~hotplumb._channel.Channel`. The consuming node reads
``receiver.channel``, the :class:`~hotplumb._channel.MemoryChannel` of a
:class:`WireReceiver`, which the receiver fills in order. :class:`Frame`
values travel one way, over a :class:`Transport` (one awaited call per frame);
:class:`Credit` values travel back, in the replies to those calls and over a
:class:`CreditLine` (a call that never waits). Nothing here knows about
processes or actors; it only assumes that a transport may reorder, repeat and
delay whatever it carries, and that what it carries pickles (``_datum`` says
how a batch crosses a process boundary).

Sequence numbers. The sender collects the messages put (batches and control
messages alike, in the order they were put) into an *open frame*, and cuts it
into the next :class:`Frame`, numbered 0, 1, 2, ... A frame is never cut
again, so a sequence number names one list of messages forever. Frames may
arrive in any order (calls to an async actor are not ordered) and more than
once (a retried call). The receiver delivers frame ``n`` only after frame
``n - 1``: it holds a frame that arrives early, and drops one it has delivered
or holds already. So the order of messages in the consumer's channel is the
order of sequence numbers, never the order of arrival, and each message is
delivered once.

The five guarantees of ``_channel``, for the pair:

1. **FIFO between data and control.** A control message is a message of its
   frame like a batch, so its place among the data is its place in the
   sequence; the receiver puts each frame's messages into its channel in
   order, and the frames in sequence order.
2. **Bounded data.** The sender's :attr:`~WireSender.size` counts the items
   put and not yet taken by the far consumer (as far as the latest credit
   says), wherever they are: in the open frame, in a frame in flight, held out
   of order by the receiver, or in the receiving channel. ``put`` waits while
   it is ``capacity`` or more, exactly as :class:`MemoryChannel`'s does, so
   the items between the two nodes are bounded per channel: ``capacity``, plus
   the last batch's items less one, plus what ``force_put`` added. Credit is
   given as the consumer *takes* items, not as they arrive: a reader that stops
   taking gives none, and its producer stops sending data. Credit once given
   is never taken back, so the receiver keeps its own channel bounded too: it
   delivers the next frame with data only while the channel holds fewer than
   ``capacity`` items. A consumer that takes a batch, is credited for it, and
   pushes it back (a restarted task) therefore does not let the channel grow
   by it: the frames behind wait at the receiver, still counted by the
   sender, until the consumer takes again.
3. **Control never waits.** ``put_control`` and ``force_put`` append to the
   open frame and return; control messages are not counted. ``put_control``
   cuts the frame at once, so a barrier never waits for the linger.
4. **No silent loss.** After ``seal`` or ``close``, ``put`` raises
   :class:`~hotplumb.TopologyClosedError` and waiting putters are woken to
   raise. A failed call closes the sender: later puts raise, with the failure
   chained; so does a call cancelled by anything but ``close`` (its frame may
   be lost), and a reply whose credit is not this channel's. A receiver whose
   channel was sealed or closed refuses new frames (the call raises, so the
   sender fails rather than drops them) and sends a closing credit, which
   wakes the sender's putters to raise. A frame stays
   in the sender until a credit says it was delivered, so ``close`` returns
   every message not known to have arrived (see below).
5. **The consumer is told.** Every delivered message is put into the
   receiving :class:`MemoryChannel`, which wakes its consumer.

Credits. A :class:`Credit` is cumulative: ``frames`` says every frame below
that number was delivered in order, ``items`` how many items the consumer has
taken. So credits may be repeated, reordered, or lost when a later one
arrives: the sender keeps the greatest of each, and nothing is counted twice.
The receiver answers every frame with its current credit (the call's reply),
and sends one on the credit line when the consumer has taken ``credit_every``
items since the sender was last told, or when its channel holds no data any
more, so a producer never waits for credit held back.

Batching. A call costs far more than an item, and calls made one at a time
are bounded by the round trip. So the sender cuts the open frame only when it
holds ``frame_items`` items; at once when a control message is put; when a
``put`` must wait for credit (nothing more can join the frame until credit
comes back, so it goes now); and ``linger`` seconds (on the clock) after the
open frame's first message, so a trickle is not held. Cut frames go to the
transport at once, up to ``in_flight`` calls at a time, none awaited by the
producer; the rest wait, in order, for a call to finish.

Close and the report. ``close()`` returns the messages of every frame no
credit has confirmed, and of the open frame. A frame in flight when the sender
closes may have arrived after all: ``close(delivered=n)``, with the
receiver's :attr:`~WireReceiver.delivered`, leaves out what reached the far
side, whose channel reports what it holds (``receiver.channel.close()``, as
for any input channel). Without it a message may be reported by both ends,
never by neither.

Routes. A batch unpickled on the far side has a route rebuilt from its path,
a new object per frame. The receiver re-interns routes (a bounded table), so
batches of one route share one route object again: its channel coalesces
them, and a reader's route table finds them by identity.

A credit line need not call out. It may bring credit only when asked: the
sender calls its ``wants_credit`` hook when it is *starved*, that is when a
putter waits for credit and no call is in flight or waiting, whose reply
could bring it (while frames flow, nothing is asked). ``_raywire`` carries the pair over Ray actor
calls that way: a frame is a call of the receiving host's actor, and a
sender whose putter waits polls that actor for newer credit.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from hotplumb._channel import COALESCE, MemoryChannel
from hotplumb._datum import Batch
from hotplumb._errors import TopologyClosedError

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable

    from hotplumb._channel import Consumer
    from hotplumb._clock import Clock
    from hotplumb._datum import Route

__all__ = [
    "FRAME_ITEMS",
    "IN_FLIGHT",
    "LINGER",
    "ROUTES",
    "Credit",
    "CreditLine",
    "Frame",
    "ReceiverStatistics",
    "SenderStatistics",
    "Transport",
    "WireReceiver",
    "WireSender",
]

FRAME_ITEMS = 100
"""Items a sender collects before it cuts a frame."""

LINGER = 0.001
"""Seconds a sender holds a frame's first message for more to join it."""

IN_FLIGHT = 16
"""Calls a sender keeps in flight at once."""

ROUTES = 1024
"""Routes a receiver remembers for re-interning; it forgets them all when it has more."""


@dataclass(frozen=True, slots=True)
class Frame:
    """Consecutive messages of one channel, as one call carries them.

    Attributes:
        seq: The frame's sequence number: 0 for the channel's first frame, then
            1, 2, ...; the same number always names the same messages.
        messages: Batches and control messages, in the order they were put.
    """

    seq: int
    messages: tuple[Any, ...]

    @property
    def items(self) -> int:
        """The data items of the frame's batches."""
        return sum(len(m.values) for m in self.messages if type(m) is Batch)

    def __reduce__(self) -> tuple[type[Frame], tuple[int, tuple[Any, ...]]]:
        # Its fields, as constructor arguments: what crosses in every call.
        return (Frame, (self.seq, self.messages))


@dataclass(frozen=True, slots=True)
class Credit:
    """What the receiving end has done, so far: cumulative, so any later one supersedes it.

    Attributes:
        frames: Every frame numbered below this was delivered, in order.
        items: How many data items the consumer has taken from the channel.
        closed: Whether the receiving channel was sealed or closed: it takes
            no more frames.
    """

    frames: int
    items: int
    closed: bool = False


class Transport(Protocol):
    """What a sending end needs to deliver frames to the far side."""

    async def send(self, frame: Frame) -> Credit | None:
        """Deliver ``frame`` to the channel's :class:`WireReceiver`.

        Called for several frames at once, and each call may arrive in any
        order, or more than once. Returns when the far side has taken the
        frame.

        Returns:
            The receiver's credit (what :meth:`WireReceiver.receive` returned),
            or ``None`` if the reply carries none.

        Raises:
            Exception: The frame may not have been delivered; the sender
                closes (its puts raise, with this chained).
        """
        ...


class CreditLine(Protocol):
    """What carries credits from a receiving end back to its sender."""

    def grant(self, credit: Credit) -> None:
        """Pass ``credit`` to the channel's :meth:`WireSender.grant`, without waiting.

        Called from the consumer's ``take``, so it must not block; the credit
        may arrive late, out of order, or more than once.
        """


@dataclass(frozen=True, slots=True)
class SenderStatistics:
    """A sending end's counters.

    Attributes:
        frames: Frames cut so far (the next frame's sequence number).
        delivered: Frames a credit confirmed delivered.
        in_flight: Calls to the transport not yet returned.
        waiting: Frames cut and waiting for a call.
        open_items: Items in the open frame.
        outstanding: Items put and not yet taken by the far consumer (``size``).
    """

    frames: int
    delivered: int
    in_flight: int
    waiting: int
    open_items: int
    outstanding: int


@dataclass(frozen=True, slots=True)
class ReceiverStatistics:
    """A receiving end's counters.

    Attributes:
        delivered: Frames delivered into the channel, in order.
        held: Frames held until those before them come, or until the channel
            has room.
        duplicates: Frames dropped because they had arrived before.
        items: Data items delivered into the channel.
        taken: Data items the consumer has taken for good.
    """

    delivered: int
    held: int
    duplicates: int
    items: int
    taken: int


class WireSender:
    """The producing end of a channel to another process.

    The producing node uses it as a :class:`~hotplumb._channel.Channel`
    (``put``, ``put_control``, ``force_put``, ``seal``, ``close``); it is not
    read (``take`` and ``push_front`` raise :class:`TypeError`): the consumer
    reads its :class:`WireReceiver`'s channel.

    Args:
        producer: The key of the producing node (``None`` for an entry channel).
        consumer: The reading node, as this process knows it (its ``key`` is
            used in messages; ``wake`` is not called here: the receiving
            channel wakes the real one).
        capacity: Items between the two nodes before ``put`` waits.
        transport: What delivers the frames.
        clock: The clock the linger is timed by.
        frame_items: Items in a frame before it is cut.
        linger: Seconds the open frame waits for more before it is cut.
        in_flight: Calls to the transport at once.
        wants_credit: Called, never awaited, with the credit the sender has,
            whenever it becomes :attr:`starved`; for a credit line that brings
            credit only when asked (a poll), which asks now. It must not
            block or raise.
        on_fail: Called, never awaited, with the error when the sender
            fails (a call failed, or :meth:`fail`), once: what was put may
            be lost, and whoever owns the sender should hear of it even if
            nothing is put after. It must not block or raise.

    Raises:
        ValueError: ``capacity``, ``frame_items`` or ``in_flight`` is not a
            positive int, or ``linger`` is negative or not finite.

    Attributes:
        producer: The key of the producing node.
        consumer: The reading node.
        capacity: Items between the nodes before ``put`` waits; the live-change
            protocol may change it at a cut.
        size: Items put and not yet taken by the far consumer, as the latest
            credit says.
        closed: Whether it refuses data (sealed, closed, failed, or the far end
            closed).
        error: The exception of the call that failed, or ``None``.
    """

    __slots__ = (
        "_calls",
        "_clock",
        "_delivered",
        "_ended",
        "_far_closed",
        "_frame_items",
        "_frames",
        "_in_flight",
        "_linger",
        "_linger_time",
        "_on_fail",
        "_open",
        "_open_items",
        "_own",
        "_put_items",
        "_ready",
        "_seq",
        "_space",
        "_stopped",
        "_taken",
        "_transport",
        "_wants_credit",
        "capacity",
        "closed",
        "consumer",
        "error",
        "producer",
        "size",
    )

    def __init__(
        self,
        producer: Hashable | None,
        consumer: Consumer,
        capacity: int,
        transport: Transport,
        *,
        clock: Clock,
        frame_items: int = FRAME_ITEMS,
        linger: float = LINGER,
        in_flight: int = IN_FLIGHT,
        wants_credit: Callable[[Credit], None] | None = None,
        on_fail: Callable[[Exception], None] | None = None,
    ) -> None:
        for name, value in (
            ("capacity", capacity),
            ("frame_items", frame_items),
            ("in_flight", in_flight),
        ):
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be a positive int, not {value!r}")
        if not (isinstance(linger, int | float) and math.isfinite(linger) and linger >= 0):
            raise ValueError(f"linger must be a finite number of seconds >= 0, not {linger!r}")
        self.producer = producer
        self.consumer = consumer
        self.capacity = capacity
        self.size = 0
        self.closed = False
        self.error: Exception | None = None
        self._transport = transport
        self._clock = clock
        self._frame_items = frame_items
        self._linger_time = float(linger)
        self._in_flight = in_flight
        self._wants_credit = wants_credit
        self._on_fail = on_fail
        # The open frame: messages put since the last cut, in order;
        # `_open_items` counts their items. `_own` is the batch at its tail
        # that this sender made by merging, and so may extend.
        self._open: list[Any] = []
        self._open_items = 0
        self._own: Batch | None = None
        # Invariant: `_frames` holds every frame cut and not confirmed
        # delivered, by sequence number, in increasing order; `_ready` those
        # of them not yet handed to the transport, in order; `_calls` the
        # calls in flight (never more than `_in_flight`).
        self._seq = 0
        self._frames: dict[int, Frame] = {}
        self._ready: deque[Frame] = deque()
        self._calls: set[asyncio.Task[None]] = set()
        self._linger: asyncio.Task[None] | None = None
        # Invariant: size == _put_items - _taken until close() (then 0);
        # `_taken` and `_delivered` are the greatest credit seen.
        self._put_items = 0
        self._taken = 0
        self._delivered = 0
        # Putters waiting for space, oldest first.
        self._space: list[asyncio.Future[None]] = []
        # Nothing more goes to the transport (closed, failed, far end closed);
        # `_ended`: close() ran; `_far_closed`: the receiver said it closed.
        self._stopped = False
        self._ended = False
        self._far_closed = False

    # -- the producer's side: the Channel interface ----------------------------------

    async def put(self, batch: Batch) -> None:
        """Append ``batch``, waiting while ``capacity`` items or more are between the nodes.

        Raises:
            TopologyClosedError: The sender was sealed or closed, a call
                failed (chained), or the far end closed, before or while it
                waited.
        """
        if self.size >= self.capacity or self._space:
            self._cut()  # nothing more can join the open frame until credit comes: send it
            await self._wait_for_space()
        if self.closed:
            raise self._refusal()
        self._add(batch)
        if self._space and self.size < self.capacity:
            self._wake_putters()  # one credit may make room for several

    def put_control(self, message: object) -> None:
        """Append a control message and cut the frame at once; never waits."""
        self._open.append(message)
        self._own = None
        self._cut()

    def force_put(self, batch: Batch) -> None:
        """Append ``batch`` now, even past capacity (data that must precede what follows)."""
        self._add(batch)

    def take(self) -> NoReturn:
        """Not supported: the consumer takes from the receiving end's channel.

        Raises:
            TypeError: Always.
        """
        raise TypeError(
            f"the sending end of the channel to {self.consumer.key!r} is not read: "
            "the consumer takes from its WireReceiver's channel"
        )

    def push_front(self, message: object) -> NoReturn:
        """Not supported: a message goes back into the receiving end's channel.

        Raises:
            TypeError: Always.
        """
        raise TypeError(
            f"the sending end of the channel to {self.consumer.key!r} is not read: "
            "push a message back into its WireReceiver's channel"
        )

    def __bool__(self) -> bool:
        """Whether anything put has not yet reached the far consumer, as credits say."""
        return self.size > 0 or bool(self._open) or bool(self._frames)

    @property
    def empty(self) -> bool:
        """Whether everything put has reached the far consumer, as credits say."""
        return not self

    @property
    def starved(self) -> bool:
        """Whether a putter waits for credit that no reply to come can bring.

        That is, no call is in flight and no frame waits for one (their
        replies carry credit), and the sender still sends.
        """
        return bool(self._space) and not self._calls and not self._ready and not self._stopped

    @property
    def credit(self) -> Credit:
        """The greatest credit received: frames confirmed delivered, items taken."""
        return Credit(self._delivered, self._taken, self._far_closed)

    def seal(self) -> None:
        """Refuse further data (``put`` raises), but send on what was put."""
        self.closed = True
        self._wake_all()
        self._cut()

    def close(self, *, delivered: int | None = None) -> list[Any]:
        """Stop: refuse data, send nothing more, wake putters (they raise), return what is held.

        Args:
            delivered: The receiver's :attr:`~WireReceiver.delivered`, if
                known: frames numbered below it reached the far side, which
                reports them, and are left out.

        Returns:
            The messages no credit confirmed delivered (of frames in flight,
            waiting, or failed) and those of the open frame, in order.

        Raises:
            ValueError: ``delivered`` is more than the frames cut.
        """
        if delivered is not None and not 0 <= delivered <= self._seq:
            raise ValueError(
                f"delivered={delivered!r}: the channel to {self.consumer.key!r} "
                f"has cut {self._seq} frames"
            )
        self.closed = self._stopped = self._ended = True
        self._cancel_linger()
        for call in self._calls:
            call.cancel()
        self._calls.clear()
        start = self._delivered if delivered is None else max(delivered, self._delivered)
        held = [m for seq, frame in self._frames.items() if seq >= start for m in frame.messages]
        held.extend(self._open)
        self._frames.clear()
        self._ready.clear()
        self._open = []
        self._open_items = 0
        self._own = None
        self.size = 0
        self._wake_all()
        return held

    # -- credits from the far side -----------------------------------------------------

    def grant(self, credit: Credit) -> None:
        """Take a credit from the receiving end (in any order, repeated or late); never waits.

        Raises:
            ValueError: The credit counts more frames or items than were sent
                (it is not this channel's).
        """
        if credit.frames > self._seq or credit.items > self._put_items:
            raise ValueError(
                f"a credit for {credit.frames} frames and {credit.items} items, but the channel "
                f"to {self.consumer.key!r} has cut {self._seq} frames of {self._put_items} items"
            )
        if self._ended:
            return  # closed: nothing is counted any more
        if credit.frames > self._delivered:
            frames = self._frames
            for seq in range(self._delivered, credit.frames):
                frames.pop(seq, None)
            self._delivered = credit.frames
        if credit.items > self._taken:
            self._taken = credit.items
            self.size = self._put_items - self._taken
            if self._space and self.size < self.capacity:
                self._wake_putters()
        if credit.closed and not self._far_closed:
            self._far_closed = self.closed = self._stopped = True
            self._cancel_linger()
            self._wake_all()

    def fail(self, error: Exception) -> None:
        """The far side is gone (``error`` says how): close as a failed call does.

        For what learns of the failure outside a call, such as the path that
        brings credits back. Later puts raise
        :class:`~hotplumb.TopologyClosedError` with ``error`` chained, waiting
        putters are woken to raise, and nothing more is sent; the frames are
        kept for :meth:`close`'s report. Only the first error is kept.
        """
        if not self._ended:
            self._fail(error)

    def statistics(self) -> SenderStatistics:
        """The sending end's counters now."""
        return SenderStatistics(
            frames=self._seq,
            delivered=self._delivered,
            in_flight=len(self._calls),
            waiting=len(self._ready),
            open_items=self._open_items,
            outstanding=self.size,
        )

    # -- the open frame and the calls ----------------------------------------------------

    def _add(self, batch: Batch) -> None:
        """Append ``batch`` to the open frame, merging it into the tail when it can."""
        n = len(batch.values)
        self.size += n
        self._put_items += n
        self._open_items += n
        opened = self._open
        if opened and batch.parents is None and batch.trace is None:
            last = opened[-1]
            if (
                type(last) is Batch
                and last.route is batch.route
                and last.parents is None
                and last.trace is None
                and len(last.values) + n <= COALESCE
            ):
                if last is not self._own:  # the producer's batch (maybe shared): copy it
                    last = Batch(list(last.values), list(last.origins), last.route)
                    opened[-1] = self._own = last
                last.values.extend(batch.values)
                last.origins.extend(batch.origins)
                self._after_add()
                return
        opened.append(batch)
        self._own = None
        self._after_add()

    def _after_add(self) -> None:
        if self._open_items >= self._frame_items:
            self._cut()
        elif self._linger is None and not self._stopped:
            self._linger = asyncio.get_running_loop().create_task(
                self._linger_then_cut(self._clock.now() + self._linger_time)
            )

    async def _linger_then_cut(self, deadline: float) -> None:
        await self._clock.sleep_until(deadline)
        self._linger = None
        self._cut()

    def _cancel_linger(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None

    def _cut(self) -> None:
        """Make the open frame the next frame and send it (or queue it for a call)."""
        if not self._open or self._stopped:
            return
        self._cancel_linger()
        frame = Frame(self._seq, tuple(self._open))
        self._seq += 1
        self._open = []
        self._open_items = 0
        self._own = None
        self._frames[frame.seq] = frame
        self._ready.append(frame)
        self._pump()

    def _pump(self) -> None:
        """Hand waiting frames to the transport, in order, while a call is free."""
        ready = self._ready
        while ready and len(self._calls) < self._in_flight and not self._stopped:
            frame = ready.popleft()
            call = asyncio.get_running_loop().create_task(self._call(frame))
            self._calls.add(call)

    async def _call(self, frame: Frame) -> None:
        me = asyncio.current_task()
        assert me is not None
        try:
            credit = await self._transport.send(frame)
        except Exception as exc:
            self._fail(exc)
            return
        except asyncio.CancelledError as cancelled:
            # close() cancels its calls after `_ended` is set: the report has their
            # frames. Anything else that cancels a call (a transport dropping its
            # requests, a task group around the sender) leaves the frame's fate
            # unknown, so it fails the sender as a failed call does.
            if not self._ended:
                lost = ConnectionAbortedError(
                    f"the call carrying frame {frame.seq} to {self.consumer.key!r} was "
                    "cancelled; the frame may not have been delivered"
                )
                lost.__cause__ = cancelled
                self._fail(lost)
            if self._ended or me.cancelling():
                raise  # our own task was cancelled: let the cancellation through
            return
        finally:
            # Free the call's place here, not in a done callback, so the pump
            # below sees it free.
            self._calls.discard(me)
        if credit is not None:
            try:
                self.grant(credit)
            except ValueError as exc:  # not this channel's credit: nothing it says can be trusted
                self._fail(exc)
                return
        self._pump()
        self._ask_for_credit()  # the last reply came, and a putter still waits

    def _ask_for_credit(self) -> None:
        if self._wants_credit is not None and self.starved:
            self._wants_credit(self.credit)

    def _fail(self, exc: Exception) -> None:
        """A call failed: the frame may be lost, so nothing after it can be delivered in order."""
        first = self.error is None
        if first:
            self.error = exc
        self.closed = self._stopped = True
        self._cancel_linger()
        self._wake_all()
        if first and self._on_fail is not None:
            self._on_fail(exc)

    # -- waiting for credit -------------------------------------------------------------

    def _refusal(self) -> TopologyClosedError:
        key = self.consumer.key
        if self._far_closed:  # calls refused after that are its consequence, not a failure
            return TopologyClosedError(
                f"{key!r} takes no more data: its end of the channel was sealed or closed"
            )
        if self.error is not None:
            error = TopologyClosedError(
                f"the channel to {key!r} failed: {type(self.error).__name__}: {self.error}"
            )
            error.__cause__ = self.error
            return error
        return TopologyClosedError(
            f"{key!r} takes no more data: the topology closed, or a live change removed it "
            "(or its input) while the call waited"
        )

    def resize(self, capacity: int) -> None:
        """Set ``capacity``; a putter waiting for space that there now is goes on."""
        self.capacity = capacity
        if self._space and self.size < capacity:
            self._wake_putters()

    async def _wait_for_space(self) -> None:
        # As MemoryChannel's: waiting putters are served in order.
        loop = asyncio.get_running_loop()
        woken = False
        while (self.size >= self.capacity or self._space) and not self.closed:
            waiter: asyncio.Future[None] = loop.create_future()
            if woken:
                self._space.insert(0, waiter)  # the space went before we ran: keep our place
            else:
                self._space.append(waiter)
            self._ask_for_credit()
            try:
                await waiter
            except BaseException:
                if waiter in self._space:
                    self._space.remove(waiter)
                else:
                    self._wake_putters()  # woken, but will not use the space: pass it on
                raise
            if self.size < self.capacity:
                return
            woken = True

    def _wake_putters(self) -> None:
        while self._space:
            waiter = self._space.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return

    def _wake_all(self) -> None:
        while self._space:
            waiter = self._space.pop(0)
            if not waiter.done():
                waiter.set_result(None)

    def __repr__(self) -> str:
        return (
            f"WireSender({self.producer!r} -> {self.consumer.key!r}, "
            f"{self.size}/{self.capacity} items, {self._seq} frames, "
            f"{len(self._calls)} in flight)"
        )


class _ReceivingChannel(MemoryChannel):
    """The receiving end's channel: a :class:`MemoryChannel` that tells its receiver of takes."""

    __slots__ = ("_receiver",)

    def __init__(
        self, producer: Hashable | None, consumer: Consumer, capacity: int, receiver: WireReceiver
    ) -> None:
        super().__init__(producer, consumer, capacity)
        self._receiver = receiver

    def take(self) -> Any:
        """Remove and return the oldest message; taking data gives credit.

        Raises:
            Exception: What the credit line raised; the batch is back at the
                head of the channel, for the consumer's retry or the
                shutdown report.
        """
        message = super().take()
        if type(message) is Batch:
            try:
                self._receiver._taken()
            except BaseException:
                super().push_front(message)
                raise
        return message

    def resize(self, capacity: int) -> None:
        """Set ``capacity``; a frame that waited for the room there now is goes in."""
        super().resize(capacity)
        self._receiver._resized()

    def seal(self) -> None:
        """Refuse further data; the receiver then refuses frames and tells the sender."""
        first = not self.closed
        super().seal()
        if first:
            self._receiver._sealed()


class WireReceiver:
    """The consuming end of a channel from another process.

    Frames go in through :meth:`receive`, in any order and possibly more than
    once; their messages come out of :attr:`channel`, in sequence order,
    each once. The consuming node reads :attr:`channel` like any input
    channel (and seals or closes it like one).

    Args:
        producer: The key of the producing node (``None`` for an entry channel).
        consumer: The reading node.
        capacity: The channel's capacity (the sender enforces it; the
            receiving channel shows it).
        credits: What carries credits back to the sender.
        credit_every: Items taken before a credit is sent unasked (default: a
            quarter of ``capacity``); one is also sent whenever the channel's
            data run out.

    Raises:
        ValueError: ``credit_every`` is not a positive int.

    Attributes:
        channel: The channel the consumer reads.
        delivered: Frames delivered, in order: the sequence number of the next.
        duplicates: Frames dropped because they had arrived before.
    """

    __slots__ = (
        "_credits",
        "_every",
        "_held",
        "_items",
        "_routes",
        "_told",
        "channel",
        "delivered",
        "duplicates",
    )

    def __init__(
        self,
        producer: Hashable | None,
        consumer: Consumer,
        capacity: int,
        credits: CreditLine,
        *,
        credit_every: int | None = None,
    ) -> None:
        every = max(1, capacity // 4) if credit_every is None else credit_every
        if type(every) is not int or every < 1:
            raise ValueError(f"credit_every must be a positive int, not {credit_every!r}")
        self.channel: MemoryChannel = _ReceivingChannel(producer, consumer, capacity, self)
        self.delivered = 0
        self.duplicates = 0
        self._credits = credits
        self._every = every
        # Invariant: every held frame's number is `delivered` or above; frame
        # `delivered` is held only while the channel holds `capacity` items or
        # more and the frame has data (it goes in when the consumer takes).
        self._held: dict[int, Frame] = {}
        # Items put into the channel; items the sender has been told are taken.
        self._items = 0
        self._told = 0
        self._routes: dict[Route, Route] = {}

    def receive(self, frame: Frame) -> Credit:
        """Take ``frame`` from the transport: deliver it in order, hold it, or drop a repeat.

        Never waits.

        Returns:
            The credit now, for the call's reply.

        Raises:
            TopologyClosedError: The channel was sealed or closed and
                ``frame`` is new: it is not delivered (its sender reports it).
        """
        seq = frame.seq
        if seq < self.delivered or seq in self._held:
            self.duplicates += 1
            return self._credit()
        if self.channel.closed:
            self._held.clear()
            raise TopologyClosedError(
                f"{self.channel.consumer.key!r} takes no more data: its input from "
                f"{self.channel.producer!r} was sealed or closed; frame {seq} is not delivered"
            )
        self._held[seq] = frame
        if seq == self.delivered:
            self._deliver_held()
        return self._credit()

    def statistics(self) -> ReceiverStatistics:
        """The receiving end's counters now."""
        return ReceiverStatistics(
            delivered=self.delivered,
            held=len(self._held),
            duplicates=self.duplicates,
            items=self._items,
            taken=self._released(),
        )

    def _deliver_held(self) -> None:
        """Deliver the held frames that are next in order, while the channel has room."""
        held = self._held
        channel = self.channel
        while held:
            frame = held.get(self.delivered)
            if frame is None:
                break
            if channel.size >= channel.capacity and frame.items:
                break  # full (say, of data pushed back after its credit): wait for a take
            del held[self.delivered]
            self._deliver(frame)

    def _deliver(self, frame: Frame) -> None:
        channel = self.channel
        routes = self._routes
        for message in frame.messages:
            if type(message) is not Batch:
                channel.put_control(message)
                continue
            batch = message
            route = batch.route
            if route is not None:
                known = routes.get(route)
                if known is None:
                    if len(routes) >= ROUTES:
                        routes.clear()
                    routes[route] = route
                elif known is not route:
                    # Never change a batch in place: it may be the sender's own.
                    batch = Batch(batch.values, batch.origins, known, batch.parents, batch.trace)
            channel.force_put(batch)
            self._items += len(batch.values)
        self.delivered += 1

    def _released(self) -> int:
        # What left the channel for good (a batch pushed back is in it again).
        return self._items - self.channel.size

    def _credit(self) -> Credit:
        released = self._released()
        self._told = max(self._told, released)
        return Credit(self.delivered, released, self.channel.closed)

    def _taken(self) -> None:
        """The consumer took data: send credit when enough is due, or when the data ran out."""
        if self.channel.closed:
            return
        if self.delivered in self._held:
            self._deliver_held()  # a frame waited for room
        released = self._released()
        if released - self._told >= self._every or (
            self.channel.size == 0 and released > self._told
        ):
            credit = Credit(self.delivered, released, False)
            self._credits.grant(credit)
            self._told = released  # only once given: a line that raised has told nothing

    def _resized(self) -> None:
        if not self.channel.closed and self.delivered in self._held:
            self._deliver_held()

    def _sealed(self) -> None:
        self._held.clear()
        self._credits.grant(self._credit())

    def __repr__(self) -> str:
        return (
            f"WireReceiver({self.channel.producer!r} -> {self.channel.consumer.key!r}, "
            f"{self.delivered} frames delivered, {len(self._held)} held)"
        )
