"""Channels between processes over Ray: a host per process, its actor, and the transport.

``_wire`` has the protocol (frames numbered and re-sequenced, credits counting
items taken) and knows nothing of processes; this module carries it over Ray
actor calls. Importing it imports Ray; ``import hotplumb`` never does. It is
the foundation of an engine that places nodes in processes; it places nothing
itself.

Hosts. A :class:`Host` lives in one process and holds the ends there of the
channels that cross: a :class:`~hotplumb._wire.WireReceiver` for each channel
coming in and a :class:`~hotplumb._wire.WireSender` for each going out, by
channel id (any hashable value that pickles, the same on both sides). A
:class:`HostActor` is a Ray async actor hosting one host (:func:`start_host`
starts one); the driver, which is no actor, can hold a host of its own for
the channels it sends on. A host is used only from its event loop: an async
actor runs every method call as a task of one loop in one thread, so the
wire's ends need no locks.

Frames. :class:`RayTransport` sends a frame as one call of the receiving
host's actor, ``deliver(channel_id, frame)``, whose reply is the receiver's
credit. The sender's call tasks await the calls, never its producer, and it
keeps up to ``in_flight`` going. Calls to an async actor run as tasks of its
loop and are not ordered; the receiver delivers by sequence number, so that
costs nothing but frames held early. A frame crosses as bytes
(:func:`pack_frame`) and a credit as a tuple of ints, which Ray sends
without pickling them itself. Ray's retries are off, on the actor
(``max_task_retries=0``, ``max_restarts=0``) and on each call
(``max_task_retries=0``, ``retry_exceptions=False``): a call that failed is a
failed call, the frame may be lost, and the sender closes; a retried call
would be dropped by the receiver, but a restarted actor would have lost its
channels' state, which no retry brings back.

Credits. The reply to every frame carries the receiver's credit, which is
enough while frames flow: a reply lags the consumer by a frame or so, and a
capacity of a few frames covers the lag. A consumer that takes items after
the last reply (it was slow, or had stopped) gives credit that no reply
carries, so there is a second path, used only when it is needed: when the
sender is *starved* (a putter waits for credit and no frame call is in flight
or waiting, whose reply could bring it: the sender's ``wants_credit`` hook),
the sending host starts a *credit poll*, a call of the receiving actor's
``next_credit(channel_id, known)``, which returns as soon as the receiver has
done more than ``known`` (the credit the sender has) says, and polls again
while the sender is still starved. :meth:`Host.drain` polls the same way
until the sender knows that everything it put was taken. On the receiving side the receiver's
:class:`~hotplumb._wire.CreditLine` only wakes the polls waiting there:
granting never blocks and never calls out. Why the sender asks, rather than
the receiver calling the sender's actor with every credit:

- Every call goes from the sending side to the receiving side, so a receiver
  needs no handle of its sender, and a sender can live in a process that is no
  actor (the driver, whose entry points feed the topology).
- Credit costs a call only when nothing else would bring it, and then one per
  round trip, whatever the number of takes: a poll returns the receiver's
  credit as it is when it returns (credits are cumulative). A receiver that
  granted every credit would double the calls of a channel whose consumer
  keeps up (a grant per batch taken, on top of the frame), and a call costs
  far more CPU than the items it carries; so would a poll kept always in
  flight.
- A receiving actor that dies fails the poll as it fails the frame calls, so
  a putter waiting for credit learns of it even when no frame is in flight;
  granted the other way, a dead receiver would only stop granting, and its
  sender would wait for ever.

The poll's cost is a round trip added to a wait for credit that no reply
brought: a producer that waits for its consumer waits that much longer.

Failure. A call to an actor that died raises Ray's error (a
``RayActorError``); the sender closes with it as its error (a failed frame
call, or :meth:`~hotplumb._wire.WireSender.fail` from the poll), so puts raise
:class:`~hotplumb.TopologyClosedError` chained to it and waiting putters wake
to raise; nothing hangs on a dead receiver. :meth:`Host.remove` closes the
sender and returns every message no credit confirmed delivered. What the dead
process had delivered and its consumer had not taken died with it: the
sender's statistics bound it (frames confirmed delivered, ``outstanding``
items not known to be taken). A channel id a host does not have (removed, or
never added) refuses frames with ``TopologyClosedError``: its sender fails
rather than drops them. The sending actor's death needs nothing here: its
frames and polls die with it, and the receiver keeps what it delivered.

Channels to the driver. The driver is no actor, so nothing can call it: a
channel into the driver is pulled. A driver-bound sender
(:meth:`Host.add_driver_sender`) has a transport that puts each packed frame
into the host's *outbox* and awaits a future; the driver keeps one
:meth:`HostActor.collect` call in flight per host (``_raypull``'s
:class:`~hotplumb._raypull.Inbox`), which returns and empties the outbox, and
gives back, in its next call, the credit of every channel it delivered frames
for: that resolves the futures of those frames (or fails them, for a channel
the driver no longer has). A starved sender cannot start a poll of the driver,
so its ``wants_credit`` hook puts a *want* into the outbox; the driver answers
it with :meth:`HostActor.grant` once its consumer has taken more. Events
(:meth:`Host.post`, any picklable value) go in the same outbox. Why one
outbox for all and no bound of its own: a frame is in it only while its
send is unresolved, and a sender has at most ``in_flight`` sends and
``capacity`` items (plus a batch) between the two ends, so the frames held
are bounded per channel already; wants are one per channel; events are what
the host posts, between two collects.

Order: frames are collected in the order they were sent, and the driver
delivers a reply's frames before it passes on its events, so an event reaches
the driver after every frame whose send began before it was posted (a frame
is sent by the sender's call task, after the put that cut it returns: post an
event behind data only once its frame is sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import pickle
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ray

from hotplumb._clock import SystemClock
from hotplumb._datum import Batch
from hotplumb._errors import TopologyClosedError
from hotplumb._wire import FRAME_ITEMS, IN_FLIGHT, LINGER, Credit, Frame, WireReceiver, WireSender

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable

    from hotplumb._channel import Consumer
    from hotplumb._clock import Clock
    from hotplumb._wire import ReceiverStatistics, SenderStatistics

__all__ = [
    "COLLECT_TIMEOUT",
    "CreditTuple",
    "Host",
    "HostActor",
    "HostStatistics",
    "RayTransport",
    "credit_tuple",
    "pack_frame",
    "start_host",
    "unpack_frame",
]

_CALL_OPTIONS: dict[str, Any] = {
    "max_task_retries": 0,
    "retry_exceptions": False,
}
"""Options of every channel call: a call runs once, or fails."""

_FIXED_ACTOR_OPTIONS = ("max_restarts", "max_task_retries")

COLLECT_TIMEOUT = 1.0
"""Seconds a :meth:`HostActor.collect` waits for something before it returns empty lists."""


@dataclass(frozen=True, slots=True)
class HostStatistics:
    """A host's channels and their counters.

    Attributes:
        name: The host's name.
        senders: Each outgoing channel's sending end, by channel id.
        receivers: Each incoming channel's receiving end, by channel id.
        polls: Credit polls this host answered, over all its channels so far.
    """

    name: str
    senders: dict[Hashable, SenderStatistics]
    receivers: dict[Hashable, ReceiverStatistics]
    polls: int


class RayTransport:
    """Frames of one channel as calls of the receiving host's actor (``deliver``).

    Args:
        actor: The receiving host's :class:`HostActor` handle.
        channel_id: The channel, as both hosts know it.
    """

    __slots__ = ("_channel_id", "_deliver", "_outgoing")

    def __init__(
        self, actor: Any, channel_id: Hashable, outgoing: Callable[[Any], Any] | None = None
    ) -> None:
        self._channel_id = channel_id
        self._deliver = actor.deliver.options(**_CALL_OPTIONS)
        self._outgoing = outgoing

    async def send(self, frame: Frame) -> Credit:
        """Deliver ``frame``; return the receiver's credit.

        Raises:
            ray.exceptions.RayActorError: The receiving actor died.
            TopologyClosedError: The receiving channel was sealed, closed or
                removed (raised there; Ray's task error is also one).
        """
        try:
            packed = pack_frame(frame, self._outgoing)
            reply: CreditTuple = await self._deliver.remote(self._channel_id, packed)
        except ray.exceptions.RayTaskError as exc:
            raise _far_error(exc) from exc
        return Credit(*reply)


CreditTuple = tuple[int, int, bool]
"""A credit as it crosses: ``(frames, items, closed)``."""


def pack_frame(frame: Frame, outgoing: Callable[[Any], Any] | None = None) -> bytes:
    """``frame`` pickled for a call: by the C pickler, or by cloudpickle when that fails.

    ``outgoing``, if given, replaces each control message by what crosses
    instead (a barrier by its token: see :attr:`Host.codec`).

    Ray pickles a call's arguments with cloudpickle, in Python, object by
    object; a frame of a hundred items took it five times as long as the
    C pickler does (and ten times a list of as many ints), which on two cores
    is a good part of the cost of the call. Bytes cross as they are. Values
    the standard pickle refuses (a lambda, a class defined in a function) go
    by cloudpickle, as Ray would send them.
    """
    if outgoing is not None and any(type(m) is not Batch for m in frame.messages):
        frame = Frame(
            frame.seq, tuple(m if type(m) is Batch else outgoing(m) for m in frame.messages)
        )
    try:
        packed = pickle.dumps(frame, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError):
        pass
    else:
        # The standard pickle names a class or function of the driver's script
        # (``__main__``) by reference, which a host cannot look up; cloudpickle
        # sends it by value.
        if b"__main__" not in packed:
            return packed
    by_value: bytes = ray.cloudpickle.dumps(frame, protocol=pickle.HIGHEST_PROTOCOL)
    return by_value


def unpack_frame(packed: bytes, incoming: Callable[[Any], Any] | None = None) -> Frame:
    """The frame :func:`pack_frame` packed (``incoming`` undoes its ``outgoing``)."""
    frame: Frame = pickle.loads(packed)
    if incoming is not None and any(type(m) is not Batch for m in frame.messages):
        frame = Frame(
            frame.seq, tuple(m if type(m) is Batch else incoming(m) for m in frame.messages)
        )
    return frame


def credit_tuple(credit: Credit) -> CreditTuple:
    """``credit`` as it crosses (plain ints: Ray sends them without pickling)."""
    return (credit.frames, credit.items, credit.closed)


def _far_error(exc: Exception) -> Exception:
    """What the far side raised, out of Ray's task error (which carries its traceback)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, Exception) else exc


class _CreditBox:
    """A receiver's credit line on its host: it wakes the credit polls waiting there."""

    __slots__ = ("waiters",)

    def __init__(self) -> None:
        self.waiters: list[asyncio.Future[None]] = []

    def grant(self, credit: Credit) -> None:
        # The poll reads the receiver's credit as it is when it returns.
        self.wake()

    def wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


class _PullTransport:
    """Frames of a driver-bound channel: into the host's outbox, each resolved by a collect."""

    __slots__ = ("_channel_id", "_host")

    def __init__(self, host: Host, channel_id: Hashable) -> None:
        self._host = host
        self._channel_id = channel_id

    async def send(self, frame: Frame) -> Credit:
        """Queue ``frame`` for the driver; return its receiver's credit, given in its next collect.

        Raises:
            TopologyClosedError: The driver has no such channel (any more).
            ConnectionAbortedError: The collect that carried the frame
                never came back confirmed (its reply was lost).
        """
        future: asyncio.Future[Credit] = asyncio.get_running_loop().create_future()
        self._host._to_outbox(self._channel_id, pack_frame(frame, self._host._outgoing), future)
        return await future


class Host:
    """One process's ends of the channels that cross to and from it.

    Args:
        name: The host's name (for messages and statistics).
        clock: The clock the senders' linger is timed by.

    Attributes:
        name: The host's name.
    """

    __slots__ = (
        "_actors",
        "_answered",
        "_boxes",
        "_clock",
        "_collectors",
        "_events",
        "_given",
        "_outbox",
        "_polls",
        "_receivers",
        "_senders",
        "_to_driver",
        "_wants",
        "codec",
        "name",
    )

    def __init__(self, name: str, *, clock: Clock | None = None) -> None:
        self.name = name
        self._clock: Clock = clock if clock is not None else SystemClock()
        # Invariant: a channel id is in at most one of `_receivers` and
        # `_senders`; each receiver has its box in `_boxes`, each sender the
        # receiving actor in `_actors`, until remove(). `_polls` holds a
        # sender's credit poll while one runs (at most one per channel).
        self._receivers: dict[Hashable, WireReceiver] = {}
        self._boxes: dict[Hashable, _CreditBox] = {}
        self._senders: dict[Hashable, WireSender] = {}
        self._actors: dict[Hashable, Any] = {}
        self._polls: dict[Hashable, asyncio.Task[None]] = {}
        self._answered = 0
        # What control messages become as they leave and as they arrive
        # (pack_frame's `outgoing`, unpack_frame's `incoming`); None: themselves.
        self.codec: tuple[Callable[[Any], Any], Callable[[Any], Any]] | None = None
        # The driver-bound senders' side (see the module's docstring). Invariant:
        # `_to_driver` holds the ids of `_senders` whose receiver is on the driver;
        # `_outbox` the frames sent and not yet collected, in the order sent, each
        # with the future its send awaits; `_given` the futures of frames the last
        # collect returned, by channel, resolved by the next collect's credits;
        # `_wants` a starved sender's credit, by channel, until collected; `_events`
        # what was posted and not yet collected. `_collectors` wake the collects
        # waiting (one, but for a cancelled one Ray has not ended yet: whichever
        # runs first takes all, and the next collect fails what it returned, lost).
        self._to_driver: set[Hashable] = set()
        self._outbox: list[tuple[Hashable, bytes, asyncio.Future[Credit]]] = []
        self._given: dict[Hashable, list[asyncio.Future[Credit]]] = {}
        self._wants: dict[Hashable, Credit] = {}
        self._events: list[Any] = []
        self._collectors: list[asyncio.Future[None]] = []

    # -- setting channels up ------------------------------------------------------------

    def add_receiver(
        self,
        channel_id: Hashable,
        producer: Hashable | None,
        consumer: Consumer,
        capacity: int,
        *,
        credit_every: int | None = None,
    ) -> WireReceiver:
        """Hold the receiving end of channel ``channel_id``; its consumer reads ``.channel``.

        Args:
            channel_id: The channel's id, unique on this host.
            producer: The producing node's key (``None`` for an entry point).
            consumer: The consuming node.
            capacity: The channel's capacity, in items.
            credit_every: How many items the consumer takes between two wake-ups
                of a waiting credit poll; 1 by default, since a wake-up here is
                local and cheap, and a producer starved of credit must hear of
                every item taken (else a take smaller than this leaves it
                waiting with room free).

        Raises:
            ValueError: The host has a channel of that id already, or
                ``credit_every`` is not a positive int.
        """
        self._check_new(channel_id)
        box = _CreditBox()
        if credit_every is None:
            credit_every = 1
        receiver = WireReceiver(producer, consumer, capacity, box, credit_every=credit_every)
        self._receivers[channel_id] = receiver
        self._boxes[channel_id] = box
        return receiver

    def add_sender(
        self,
        channel_id: Hashable,
        producer: Hashable | None,
        consumer: Consumer,
        capacity: int,
        to: Any,
        *,
        frame_items: int = FRAME_ITEMS,
        linger: float = LINGER,
        in_flight: int = IN_FLIGHT,
        on_fail: Callable[[Exception], None] | None = None,
    ) -> WireSender:
        """Hold the sending end of channel ``channel_id``, whose receiver is on actor ``to``.

        The receiving host must have added the receiver first. Called from
        the host's event loop (the credit polls run there).

        Args:
            channel_id: The channel, as the receiving host knows it.
            producer: The producing node's key.
            consumer: The reading node as this process knows it (its key).
            capacity: Items between the two nodes before ``put`` waits.
            to: The receiving host's :class:`HostActor` handle.
            frame_items: Items in a frame before it is cut.
            linger: Seconds the open frame waits for more.
            in_flight: Frame calls at once.
            on_fail: Told once if the sender fails (see ``WireSender``).

        Raises:
            ValueError: The host has a channel of that id already, or a size
                is not valid (see :class:`~hotplumb._wire.WireSender`).
        """
        sender = self._new_sender(
            channel_id,
            producer,
            consumer,
            capacity,
            RayTransport(to, channel_id, self._outgoing),
            lambda known: self._wants_credit(channel_id, known),
            frame_items=frame_items,
            linger=linger,
            in_flight=in_flight,
            on_fail=on_fail,
        )
        self._actors[channel_id] = to
        return sender

    def _new_sender(
        self,
        channel_id: Hashable,
        producer: Hashable | None,
        consumer: Consumer,
        capacity: int,
        transport: Any,
        wants_credit: Callable[[Credit], None],
        **options: Any,
    ) -> WireSender:
        """A sending end over ``transport``, held as ``channel_id`` (checked new)."""
        self._check_new(channel_id)
        sender = WireSender(
            producer,
            consumer,
            capacity,
            transport,
            clock=self._clock,
            wants_credit=wants_credit,
            **options,
        )
        self._senders[channel_id] = sender
        return sender

    def add_driver_sender(
        self,
        channel_id: Hashable,
        producer: Hashable | None,
        consumer: Consumer,
        capacity: int,
        *,
        frame_items: int = FRAME_ITEMS,
        linger: float = LINGER,
        in_flight: int = IN_FLIGHT,
        on_fail: Callable[[Exception], None] | None = None,
    ) -> WireSender:
        """Hold the sending end of channel ``channel_id``, whose receiver is on the driver.

        As :meth:`add_sender`, but the driver, which cannot be called, pulls
        the frames: each goes into this host's outbox, which the driver's
        :meth:`HostActor.collect` empties, and the driver's next collect
        brings the receiver's credit back. When the sender is starved it
        leaves a want in the outbox, which the driver answers with
        :meth:`HostActor.grant` once its consumer has taken more. The driver
        adds the receiving end (:meth:`Inbox.add_receiver
        <hotplumb._raypull.Inbox.add_receiver>`) under the same id. Called
        from the host's event loop.

        Args:
            channel_id: The channel, as the driver knows it.
            producer: The producing node's key.
            consumer: The reading node as this process knows it (its key).
            capacity: Items between the two nodes before ``put`` waits.
            frame_items: Items in a frame before it is cut.
            linger: Seconds the open frame waits for more.
            in_flight: Frames sent and not yet confirmed, at once.
            on_fail: Told once if the sender fails (see ``WireSender``).

        Raises:
            ValueError: The host has a channel of that id already, or a size
                is not valid (see :class:`~hotplumb._wire.WireSender`).
        """
        sender = self._new_sender(
            channel_id,
            producer,
            consumer,
            capacity,
            _PullTransport(self, channel_id),
            lambda known: self._want(channel_id, known),
            frame_items=frame_items,
            linger=linger,
            in_flight=in_flight,
            on_fail=on_fail,
        )
        self._to_driver.add(channel_id)
        return sender

    def _check_new(self, channel_id: Hashable) -> None:
        if channel_id in self._receivers or channel_id in self._senders:
            raise ValueError(f"host {self.name!r} has a channel {channel_id!r} already")

    def receiver(self, channel_id: Hashable) -> WireReceiver:
        """The receiving end of ``channel_id``.

        Raises:
            KeyError: No channel of that id comes in here.
        """
        return self._receivers[channel_id]

    def sender(self, channel_id: Hashable) -> WireSender:
        """The sending end of ``channel_id``.

        Raises:
            KeyError: No channel of that id goes out from here.
        """
        return self._senders[channel_id]

    def remove(self, channel_id: Hashable, *, delivered: int | None = None) -> list[Any]:
        """Close this host's end of ``channel_id`` and forget it; return what it held.

        A sending end stops its credit poll (a driver-bound one forgets its
        frames not yet collected and its want) and returns, as
        :meth:`WireSender.close <hotplumb._wire.WireSender.close>` does, every
        message no credit confirmed delivered (``delivered``, the receiver's
        count, leaves out what reached it). A receiving end closes its
        channel and returns what the channel held; frames that come for it
        later are refused, so their sender reports them.

        Raises:
            KeyError: The host has no channel of that id.
        """
        if channel_id in self._to_driver:
            sender = self._senders.pop(channel_id)
            self._to_driver.discard(channel_id)
            self._wants.pop(channel_id, None)
            # Closing cancels the sends, and so the futures they await: the frames
            # still in the outbox are not collected (the report has them).
            held = sender.close(delivered=delivered)
            for future in self._given.pop(channel_id, ()):
                future.cancel()
            return held
        if channel_id in self._senders:
            sender = self._senders.pop(channel_id)
            del self._actors[channel_id]
            poll = self._polls.pop(channel_id, None)
            if poll is not None:
                poll.cancel()
            return sender.close(delivered=delivered)
        receiver = self._receivers.pop(channel_id)
        box = self._boxes.pop(channel_id)
        held = receiver.channel.close()
        box.wake()  # closing granted already; a poll waiting now returns the closing credit
        return held

    def _outgoing(self, message: Any) -> Any:
        return message if self.codec is None else self.codec[0](message)

    def incoming(self, message: Any) -> Any:
        """A control message as it arrives, through :attr:`codec`."""
        return message if self.codec is None else self.codec[1](message)

    @property
    def receiving(self) -> frozenset[Hashable]:
        """The ids of the channels coming in."""
        return frozenset(self._receivers)

    @property
    def sending(self) -> frozenset[Hashable]:
        """The ids of the channels going out."""
        return frozenset(self._senders)

    def statistics(self) -> HostStatistics:
        """The host's channels' counters now."""
        return HostStatistics(
            name=self.name,
            senders={cid: sender.statistics() for cid, sender in self._senders.items()},
            receivers={cid: receiver.statistics() for cid, receiver in self._receivers.items()},
            polls=self._answered,
        )

    # -- what the far side calls --------------------------------------------------------

    def deliver(self, channel_id: Hashable, frame: Frame) -> Credit:
        """A frame for ``channel_id`` came: hand it to the receiver; return its credit.

        Raises:
            TopologyClosedError: No channel of that id comes in here (it was
                removed), or its channel was sealed or closed: the frame is
                not delivered.
        """
        receiver = self._receivers.get(channel_id)
        if receiver is None:
            raise self._gone(channel_id, f"frame {frame.seq} is not delivered")
        credit = receiver.receive(frame)
        # A drain's poll waits for delivered frames too (one of control messages only).
        self._boxes[channel_id].wake()
        return credit

    async def next_credit(self, channel_id: Hashable, known: Credit) -> Credit:
        """Wait until the receiver of ``channel_id`` has done more than ``known`` says.

        Returns at once if it has (delivered more frames, or its consumer
        took more items), or if the channel is closed.

        Returns:
            The receiver's credit when it returns (a closing credit if the
            channel was sealed, closed or removed while the poll waited).

        Raises:
            TopologyClosedError: No channel of that id comes in here.
        """
        box = self._boxes.get(channel_id)
        if box is None:
            raise self._gone(channel_id, "no credit will come")
        self._answered += 1
        receiver = self._receivers[channel_id]
        loop = asyncio.get_running_loop()
        while True:
            now = receiver.statistics()
            closed = receiver.channel.closed
            if now.taken > known.items or now.delivered > known.frames or closed:
                return Credit(now.delivered, now.taken, closed)
            waiter: asyncio.Future[None] = loop.create_future()
            box.waiters.append(waiter)
            await waiter

    def post(self, event: Any) -> None:
        """Queue ``event`` (any value that pickles) for the driver's next collect; never waits.

        The driver's :class:`~hotplumb._raypull.Inbox` passes the events of a
        host on in the order they were posted, each after the frames sent
        before it was posted.
        """
        self._events.append(event)
        self._wake_collector()

    async def collect(
        self,
        credits: list[tuple[Hashable, Credit | None]],
        *,
        timeout: float = COLLECT_TIMEOUT,
    ) -> tuple[list[tuple[Hashable, bytes]], list[tuple[Hashable, Credit]], list[Any]]:
        """The driver's long poll: take its credits, then wait for and return the outbox.

        One collect at a time: each confirms what the one before returned.

        Args:
            credits: For every channel the last collect returned frames of,
                the driver's receiver credit after it delivered them, which
                resolves those frames' sends; ``None`` for a channel the
                driver does not have, which fails them with
                :class:`~hotplumb.TopologyClosedError`. Frames of the last
                collect whose channel is not here fail too: the driver never
                had them (that reply was lost).
            timeout: Seconds to wait for something to return.

        Returns:
            ``(frames, wants, events)``, emptied from the outbox: the packed
            frames of the driver-bound channels, ``(channel_id, frame)`` in
            the order they were sent; the starved senders' credits,
            ``(channel_id, known)``; the events posted, in order. All empty
            if nothing came within ``timeout``.
        """
        self._settle(credits)
        if not (self._outbox or self._wants or self._events):
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._collectors.append(waiter)
            try:
                async with asyncio.timeout(timeout):
                    await waiter
            except TimeoutError:
                pass
            finally:
                with contextlib.suppress(ValueError):
                    self._collectors.remove(waiter)
        frames: list[tuple[Hashable, bytes]] = []
        for channel_id, packed, future in self._outbox:
            if future.done():  # its sender closed: the report has the frame
                continue
            frames.append((channel_id, packed))
            self._given.setdefault(channel_id, []).append(future)
        # A want whose sender has had credit since (or closed) is answered already.
        wants = [
            (cid, known)
            for cid, known in self._wants.items()
            if cid in self._to_driver and self._senders[cid].starved
        ]
        events = self._events
        self._outbox = []
        self._wants = {}
        self._events = []
        return frames, wants, events

    def grant(self, channel_id: Hashable, credit: Credit) -> None:
        """Pass the driver's ``credit`` to the driver-bound sender of ``channel_id``.

        An id the host has no driver-bound sender of is ignored (removed
        meanwhile). A sender still starved after it leaves a new want.
        """
        if channel_id not in self._to_driver:
            return
        sender = self._senders[channel_id]
        try:
            sender.grant(credit)
        except ValueError as exc:  # not this channel's credit: trust nothing it says
            sender.fail(exc)
            return
        if sender.starved:
            self._want(channel_id, sender.credit)

    def _to_outbox(
        self, channel_id: Hashable, packed: bytes, future: asyncio.Future[Credit]
    ) -> None:
        self._outbox.append((channel_id, packed, future))
        self._wake_collector()

    def _want(self, channel_id: Hashable, known: Credit) -> None:
        """The driver-bound sender of ``channel_id`` is starved: ask the driver, in the outbox."""
        if channel_id in self._to_driver:
            self._wants[channel_id] = known
            self._wake_collector()

    def _wake_collector(self) -> None:
        waiters, self._collectors = self._collectors, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _settle(self, credits: list[tuple[Hashable, Credit | None]]) -> None:
        """Resolve the sends of the frames the last collect returned, with the driver's credits."""
        given, self._given = self._given, {}
        for channel_id, credit in credits:
            futures = given.pop(channel_id, ())
            for future in futures:
                if future.done():
                    continue
                if credit is None:
                    future.set_exception(
                        TopologyClosedError(
                            f"the driver has no channel {channel_id!r} (removed, or never "
                            "added): its frames are not delivered"
                        )
                    )
                else:
                    future.set_result(credit)
        for channel_id, futures in given.items():
            for future in futures:
                if not future.done():
                    future.set_exception(
                        ConnectionAbortedError(
                            f"the reply carrying frames of {channel_id!r} to the driver was "
                            "lost: they may not have been delivered"
                        )
                    )

    def _gone(self, channel_id: Hashable, what: str) -> TopologyClosedError:
        return TopologyClosedError(
            f"host {self.name!r} has no channel {channel_id!r} coming in (removed, or never "
            f"added): {what}"
        )

    # -- the sending side's credit poll -------------------------------------------------

    async def drain(self, channel_id: Hashable) -> None:
        """Wait until credits confirm that everything put on ``channel_id`` was taken far away.

        Credits come back with the frames' replies, and the last of them may
        predate the consumer's last take; this asks the receiving actor until
        the sender knows (:attr:`WireSender.empty <hotplumb._wire.WireSender.empty>`).

        Raises:
            TopologyClosedError: The sender failed, or the far end closed,
                with something put not taken (the failure chained).
            KeyError: No channel of that id goes out from here.
        """
        sender = self._senders[channel_id]
        next_credit = self._actors[channel_id].next_credit.options(**_CALL_OPTIONS)
        while sender and sender.error is None and not sender.credit.closed:
            try:
                reply = await next_credit.remote(channel_id, credit_tuple(sender.credit))
            except ray.exceptions.RayTaskError as exc:
                sender.fail(_far_error(exc))
                break
            except Exception as exc:
                sender.fail(exc)
                break
            sender.grant(Credit(*reply))
        if sender:
            error = TopologyClosedError(
                f"the channel {channel_id!r} to {sender.consumer.key!r} ended with "
                f"{sender.size} items not known to be taken"
            )
            error.__cause__ = sender.error
            raise error

    def _wants_credit(self, channel_id: Hashable, known: Credit) -> None:
        """The sender of ``channel_id`` is starved: start a poll, unless one runs."""
        if channel_id in self._polls or channel_id not in self._senders:
            return
        poll = asyncio.get_running_loop().create_task(self._poll_credits(channel_id, known))
        self._polls[channel_id] = poll

    async def _poll_credits(self, channel_id: Hashable, known: Credit) -> None:
        """Ask the receiving actor for credit, again and again while the sender is starved."""
        try:
            await self._poll_while_blocked(channel_id, known)
        finally:
            # Gone from `_polls` as it ends, with no loop pass between: a putter
            # that starts to wait from here on starts a new poll.
            if self._polls.get(channel_id) is asyncio.current_task():
                del self._polls[channel_id]

    async def _poll_while_blocked(self, channel_id: Hashable, known: Credit) -> None:
        sender = self._senders[channel_id]
        next_credit = self._actors[channel_id].next_credit.options(**_CALL_OPTIONS)
        while True:
            call = next_credit.remote(channel_id, credit_tuple(known))
            try:
                credit = Credit(*await call)
            except asyncio.CancelledError:
                # The sender closed: end the waiting poll too (if the actor is
                # still there to be told).
                with contextlib.suppress(Exception):
                    ray.cancel(call)
                raise
            except ray.exceptions.RayTaskError as exc:  # the channel went
                sender.fail(_far_error(exc))
                return
            except Exception as exc:  # the receiving actor died
                sender.fail(exc)
                return
            try:
                sender.grant(credit)
            except ValueError as exc:  # not this channel's credit: trust nothing it says
                sender.fail(exc)
                return
            if not sender.starved:
                return  # room, or calls whose replies will bring it; or it stopped
            known = credit

    def __repr__(self) -> str:
        return f"Host({self.name!r}, {len(self._senders)} out, {len(self._receivers)} in)"


class HostActor:
    """The Ray async actor of one :class:`Host`; start it with :func:`start_host`.

    Its methods are what other hosts call (``deliver``, ``next_credit``) and
    what the driver asks (``run``, ``statistics``, and ``collect`` and
    ``grant`` for the channels to the driver). Each runs as a task of
    the actor's one event loop, as do the tasks its channels start.

    Args:
        name: The host's name.
    """

    def __init__(self, name: str) -> None:
        self._host = Host(name)

    @property
    def host(self) -> Host:
        """The host it runs (for subclasses; a Ray handle reaches only the methods)."""
        return self._host

    async def deliver(self, channel_id: Hashable, frame: bytes) -> CreditTuple:
        """:meth:`Host.deliver` of a frame packed by :func:`pack_frame`; the credit as a tuple."""
        return credit_tuple(
            await self.deliver_frame(channel_id, unpack_frame(frame, self._host.incoming))
        )

    async def deliver_frame(self, channel_id: Hashable, frame: Frame) -> Credit:
        """What :meth:`deliver` does with the frame: :meth:`Host.deliver`; subclasses wrap it."""
        return self._host.deliver(channel_id, frame)

    async def next_credit(self, channel_id: Hashable, known: CreditTuple) -> CreditTuple:
        """:meth:`Host.next_credit`, credits as tuples."""
        return credit_tuple(await self._host.next_credit(channel_id, Credit(*known)))

    async def collect(
        self,
        credits: list[tuple[Hashable, CreditTuple | None]],
        *,
        timeout: float = COLLECT_TIMEOUT,
    ) -> tuple[list[tuple[Hashable, bytes]], list[tuple[Hashable, CreditTuple]], list[Any]]:
        """:meth:`Host.collect`, credits as tuples: the driver's long poll."""
        frames, wants, events = await self._host.collect(
            [(cid, None if credit is None else Credit(*credit)) for cid, credit in credits],
            timeout=timeout,
        )
        return frames, [(cid, credit_tuple(known)) for cid, known in wants], events

    async def grant(self, channel_id: Hashable, credit: CreditTuple) -> None:
        """:meth:`Host.grant`, the credit as a tuple."""
        self._host.grant(channel_id, Credit(*credit))

    async def run(self, function: Callable[..., Any], *args: Any) -> Any:
        """Call ``function(host, *args)`` in the actor's process; await it if it is awaitable.

        Returns:
            What it returned (it must pickle).
        """
        result = function(self._host, *args)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def statistics(self) -> HostStatistics:
        """See :meth:`Host.statistics`."""
        return self._host.statistics()


_REMOTE_CLASSES: dict[type[HostActor], Any] = {}
"""Each actor class as a Ray actor class, made once (making one exports the class to Ray)."""


def _remote_class(actor_class: type[HostActor]) -> Any:
    remote = _REMOTE_CLASSES.get(actor_class)
    if remote is None:
        remote = _REMOTE_CLASSES[actor_class] = ray.remote(actor_class)
    return remote


def start_host(name: str, *, actor_class: type[HostActor] = HostActor, **options: Any) -> Any:
    """Start a :class:`HostActor` (a new process) in the Ray that is initialised.

    Ray restarts neither the actor nor its calls: a restarted host would
    have lost its channels' state.

    Args:
        name: The host's name.
        actor_class: :class:`HostActor` or a subclass of it.
        **options: Ray actor options (``num_cpus``, ``resources``, ...);
            ``num_cpus`` is 0 unless given, so hosts do not hold CPUs idle.

    Returns:
        The actor's handle.

    Raises:
        ValueError: ``options`` asks for restarts or retries.
    """
    fixed = [option for option in _FIXED_ACTOR_OPTIONS if option in options]
    if fixed:
        raise ValueError(f"a host is never restarted nor retried; {', '.join(fixed)} is fixed")
    options.setdefault("num_cpus", 0)
    remote = _remote_class(actor_class)
    return remote.options(max_restarts=0, max_task_retries=0, **options).remote(name)
