"""Channels into the driver over Ray: the driver pulls its frames from each host.

``_raywire`` carries a channel as calls of the receiving host's actor, so
receiving needs an actor; the driver (the user's program) is none, and no
process can call it. So a channel into the driver is pulled: its sender, on a
host actor (:meth:`Host.add_driver_sender
<hotplumb._raywire.Host.add_driver_sender>`), puts frames into the host's
outbox, and the driver's :class:`Inbox` keeps one call of that host's
:meth:`~hotplumb._raywire.HostActor.collect` always in flight, which returns
what the outbox holds as soon as it holds anything (or empty lists after its
timeout). Importing this module imports Ray; ``import hotplumb`` never does.

One poll loop per host, each a task of the driver's loop that the inbox owns:

1. Call ``collect(credits)``, with Ray's retries off, and await it.
2. Deliver each frame of the reply, in order, to its channel's
   :class:`~hotplumb._wire.WireReceiver` (which re-sequences, holds and drops
   repeats as for any transport).
3. Note the host's wants, and answer those the receiver's credit already
   passes.
4. Pass the reply's events to ``on_event``, in order. They come after the
   frames of the same reply, so an event follows every frame sent before it
   was posted.
5. Loop, with ``credits``: the receiver's credit now for every channel the
   reply had frames of (``None`` for one the driver does not have, which fails
   its sender rather than drop the frames). The next collect resolves those
   frames' sends with them.

Credits between collects. A sender's frames are confirmed by the next collect,
which is enough while frames flow. A consumer that takes after the last
collect gives credit no collect carries (a collect carries credits only for
the channels it brought frames of), so a *starved* sender (a putter waits and
no send is unresolved) leaves a want, ``(channel_id, known)``, in the outbox.
The inbox keeps it until the receiver's credit passes ``known``: its
:class:`~hotplumb._wire.CreditLine` is called on every take (``credit_every``
is 1: the line is local and cheap), and from there one ``grant`` call of the
host's actor is scheduled, never awaited by the consumer. A want the credit
passes when it comes is answered at once.

Failure. A collect that fails (the host died: Ray's ``RayActorError``; or
the host's collect raised) calls ``on_failure(name, error)`` once and ends
that host's loop; the other hosts go on. So does an exception while handling
a reply (``on_event`` raising, say): nothing of a host is handled after
something of it failed. A frame that will not unpickle seals its channel
(its consumer takes what it has; its sender gets the closing credit and
refuses further data) and goes to ``on_failure`` too, and that host's loop
goes on. The receivers of a dead host are not removed: what its consumer has
not taken is still there (the engine removes it, with :meth:`Inbox.remove`).

Sizes. The inbox bounds nothing of its own and needs not: the outbox holds a
frame only while its send is unresolved, and a sender has at most
``in_flight`` of those and ``capacity`` items (plus the last batch, less an
item) between its two ends; each channel has at most one want; events are
what a host posts between two collects.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ray

from hotplumb._clock import SystemClock
from hotplumb._errors import TopologyClosedError
from hotplumb._raywire import _CALL_OPTIONS, _far_error, credit_tuple, unpack_frame
from hotplumb._wire import Credit, WireReceiver

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable
    from types import TracebackType

    from hotplumb._channel import Consumer
    from hotplumb._clock import Clock
    from hotplumb._raywire import CreditTuple
    from hotplumb._wire import ReceiverStatistics

__all__ = ["Inbox", "InboxStatistics", "PollStatistics"]


@dataclass(frozen=True, slots=True)
class PollStatistics:
    """One host's poll loop, as the driver's inbox sees it.

    Attributes:
        collects: Collects that returned so far (empty ones included).
        frames: Frames they brought.
        events: Events they brought.
        grants: Grant calls made to answer wants.
        last_reply: When the last collect returned, on the inbox's clock
            (``None`` before the first).
        failed: Whether the loop ended with a failure.
    """

    collects: int
    frames: int
    events: int
    grants: int
    last_reply: float | None
    failed: bool


@dataclass(frozen=True, slots=True)
class InboxStatistics:
    """The driver's receiving ends and poll loops.

    Attributes:
        receivers: Each channel's receiving end, by channel id.
        hosts: Each host's poll loop, by host name.
    """

    receivers: dict[Hashable, ReceiverStatistics]
    hosts: dict[str, PollStatistics]


class _Poll:
    """One host's poll loop and what the inbox knows of that host."""

    __slots__ = (
        "actor",
        "call",
        "collects",
        "events",
        "failed",
        "frames",
        "grants",
        "last_reply",
        "name",
        "task",
    )

    def __init__(self, name: str, actor: Any) -> None:
        self.name = name
        self.actor = actor
        self.task: asyncio.Task[None] | None = None
        # The collect in flight (an ObjectRef), for ray.cancel when the loop is cancelled.
        self.call: Any = None
        self.collects = 0
        self.frames = 0
        self.events = 0
        self.grants = 0
        self.last_reply: float | None = None
        self.failed = False


class _Line:
    """A driver-side receiver's credit line: answers its host's want, if one waits."""

    __slots__ = ("_channel_id", "_inbox")

    def __init__(self, inbox: Inbox, channel_id: Hashable) -> None:
        self._inbox = inbox
        self._channel_id = channel_id

    def grant(self, credit: Credit) -> None:
        self._inbox._credit_moved(self._channel_id, credit)


def _passes(credit: Credit, known: Credit) -> bool:
    """Whether ``credit`` says more than ``known``: news for a starved sender."""
    return credit.items > known.items or credit.frames > known.frames or credit.closed


class Inbox:
    """The driver's receiving ends of channels from host actors, and a poll loop per host.

    Create it, and use it, in the driver's running event loop; close it with
    :meth:`close` (or use it as ``async with Inbox(...) as inbox:``).

    Args:
        on_event: Called with the host's name and each event the host posted
            (:meth:`Host.post <hotplumb._raywire.Host.post>`), in order; from
            the poll loop, so it must not block. If it raises, that host's
            loop ends and ``on_failure`` is told.
        on_failure: Called with the host's name and the error when its
            collect fails (the host died; then its loop ends) or a frame of
            it will not unpickle (then its channel is sealed). Must not raise.
        clock: The clock of :attr:`PollStatistics.last_reply`.
        incoming: What each control message of a frame becomes as it arrives
            (see :func:`~hotplumb._raywire.unpack_frame`); itself by default.

    Example:
        ::

            def told(host: str, event: object) -> None: ...
            def failed(host: str, error: BaseException) -> None: ...

            east = start_host("east")
            async with Inbox(on_event=told, on_failure=failed) as inbox:
                inbox.add_host("east", east)
                receiver = inbox.add_receiver("out", "east", "source", reader, 64)
                # on east: host.add_driver_sender("out", "source", reader, 64), then puts
                message = receiver.channel.take()  # once reader is woken
    """

    __slots__ = (
        "_clock",
        "_closed",
        "_grants",
        "_hosts",
        "_incoming",
        "_on_event",
        "_on_failure",
        "_receivers",
        "_via",
        "_wants",
    )

    def __init__(
        self,
        *,
        on_event: Callable[[str, Any], None],
        on_failure: Callable[[str, BaseException], None],
        clock: Clock | None = None,
        incoming: Callable[[Any], Any] | None = None,
    ) -> None:
        self._incoming = incoming
        self._on_event = on_event
        self._on_failure = on_failure
        self._clock: Clock = clock if clock is not None else SystemClock()
        # Invariant: every receiver's host is in `_hosts`; `_via` names it, by
        # channel id. `_wants` holds a host's want for a channel of `_receivers`
        # until the receiver's credit passes it (then one grant is scheduled and
        # the want goes). `_grants` holds the grant calls not yet returned.
        self._hosts: dict[str, _Poll] = {}
        self._receivers: dict[Hashable, WireReceiver] = {}
        self._via: dict[Hashable, str] = {}
        self._wants: dict[Hashable, Credit] = {}
        self._grants: set[asyncio.Task[None]] = set()
        self._closed = False

    # -- hosts and channels -------------------------------------------------------------

    def add_host(self, name: str, actor: Any) -> None:
        """Start the poll loop of the host ``name``, whose actor is ``actor``.

        Args:
            name: The host's name, unique in this inbox.
            actor: The host's :class:`~hotplumb._raywire.HostActor` handle.

        Raises:
            ValueError: The inbox has a host of that name already, or is closed.
            RuntimeError: No event loop is running.
        """
        if self._closed:
            raise ValueError(f"the inbox is closed: host {name!r} is not added")
        if name in self._hosts:
            raise ValueError(f"the inbox has a host {name!r} already")
        poll = _Poll(name, actor)
        poll.task = asyncio.get_running_loop().create_task(
            self._poll(poll), name=f"hotplumb inbox: {name}"
        )
        self._hosts[name] = poll

    def forget_host(self, name: str) -> None:
        """Stop polling host ``name`` (it died) and forget it; its receivers stay.

        Raises:
            KeyError: No host of that name was added.
        """
        poll = self._hosts.pop(name)
        if poll.task is not None:
            poll.task.cancel()

    def add_receiver(
        self,
        channel_id: Hashable,
        host: str,
        producer: Hashable | None,
        consumer: Consumer,
        capacity: int,
    ) -> WireReceiver:
        """Hold the receiving end of ``channel_id``, whose sender is on ``host``.

        The consumer reads ``receiver.channel``, a
        :class:`~hotplumb._channel.MemoryChannel`. Add it before the host
        sends (a frame for a channel the driver lacks fails its sender).

        Args:
            channel_id: The channel, as the host's driver-bound sender knows it.
            host: The name of the sender's host, as :meth:`add_host` was given it.
            producer: The producing node's key.
            consumer: The consuming node.
            capacity: The channel's capacity, in items.

        Raises:
            ValueError: The inbox has a channel of that id already.
            KeyError: No host of that name was added.
        """
        if channel_id in self._receivers:
            raise ValueError(f"the inbox has a channel {channel_id!r} already")
        if host not in self._hosts:
            raise KeyError(host)
        receiver = WireReceiver(
            producer, consumer, capacity, _Line(self, channel_id), credit_every=1
        )
        self._receivers[channel_id] = receiver
        self._via[channel_id] = host
        return receiver

    @property
    def receiving(self) -> frozenset[Hashable]:
        """The ids of the channels coming in."""
        return frozenset(self._receivers)

    def receiver(self, channel_id: Hashable) -> WireReceiver:
        """The receiving end of ``channel_id``.

        Raises:
            KeyError: The inbox has no channel of that id.
        """
        return self._receivers[channel_id]

    def remove(self, channel_id: Hashable) -> list[Any]:
        """Close the channel ``channel_id`` and forget it; return what its channel held.

        Its sender learns of it: a want waiting is answered with the closing
        credit, and frames that come for the channel later are refused, so
        the sender fails rather than drops them.

        Raises:
            KeyError: The inbox has no channel of that id.
        """
        receiver = self._receivers[channel_id]
        held = receiver.channel.close()  # its closing credit answers a want waiting
        del self._receivers[channel_id]
        del self._via[channel_id]
        self._wants.pop(channel_id, None)
        return held

    def statistics(self) -> InboxStatistics:
        """The receiving ends' and the poll loops' counters now."""
        return InboxStatistics(
            receivers={cid: receiver.statistics() for cid, receiver in self._receivers.items()},
            hosts={
                name: PollStatistics(
                    collects=poll.collects,
                    frames=poll.frames,
                    events=poll.events,
                    grants=poll.grants,
                    last_reply=poll.last_reply,
                    failed=poll.failed,
                )
                for name, poll in self._hosts.items()
            },
        )

    # -- closing ------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop every poll loop and grant call, and wait for them; the receivers stay.

        A collect in flight is cancelled on its host too (when Ray can). What
        the hosts' outboxes still hold is not collected.
        """
        self._closed = True
        tasks = [poll.task for poll in self._hosts.values() if poll.task is not None]
        tasks.extend(self._grants)
        for task in tasks:
            task.cancel()
        # The loops' and grants' own failures are told (or moot) already.
        await asyncio.gather(*tasks, return_exceptions=True)
        self._grants.clear()

    def abort(self) -> None:
        """Cancel every poll loop and grant call, without waiting for them to end."""
        self._closed = True
        for poll in self._hosts.values():
            if poll.task is not None:
                poll.task.cancel()
        for task in self._grants:
            task.cancel()

    async def __aenter__(self) -> Inbox:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # -- the poll loop ------------------------------------------------------------------

    async def _poll(self, poll: _Poll) -> None:
        collect = poll.actor.collect.options(**_CALL_OPTIONS)
        credits: list[tuple[Hashable, CreditTuple | None]] = []
        while True:
            call = poll.call = collect.remote(credits)
            try:
                reply = await call
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    ray.cancel(call)
                raise
            except ray.exceptions.RayTaskError as exc:  # the host's collect raised
                self._fail(poll, _far_error(exc))
                return
            except Exception as exc:  # the host died
                self._fail(poll, exc)
                return
            finally:
                poll.call = None
            try:
                credits = self._handle(poll, *reply)
            except Exception as exc:
                self._fail(poll, exc)
                return

    def _handle(
        self,
        poll: _Poll,
        frames: list[tuple[Hashable, bytes]],
        wants: list[tuple[Hashable, CreditTuple]],
        events: list[Any],
    ) -> list[tuple[Hashable, CreditTuple | None]]:
        """Deliver a collect's frames, note its wants, pass on its events; the next credits."""
        poll.collects += 1
        poll.frames += len(frames)
        poll.last_reply = self._clock.now()
        touched: dict[Hashable, WireReceiver | None] = {}
        for channel_id, packed in frames:
            receiver = self._receivers.get(channel_id)
            if receiver is None or self._via[channel_id] != poll.name:
                touched[channel_id] = None  # not ours: its sender fails, the frame not lost
                continue
            touched[channel_id] = receiver
            if receiver.channel.closed:
                continue  # sealed: the closing credit below refuses it
            try:
                frame = unpack_frame(packed, self._incoming)
            except Exception as exc:
                receiver.channel.seal()
                error = TopologyClosedError(
                    f"a frame of {channel_id!r} from host {poll.name!r} would not unpickle: "
                    f"{type(exc).__name__}: {exc}; the channel is sealed"
                )
                error.__cause__ = exc
                self._on_failure(poll.name, error)
                continue
            receiver.receive(frame)
        credits: list[tuple[Hashable, CreditTuple | None]] = []
        for channel_id, maybe in touched.items():
            credits.append((channel_id, None if maybe is None else credit_tuple(_now(maybe))))
        for channel_id, known in wants:
            self._want(poll, channel_id, Credit(*known))
        for event in events:
            poll.events += 1
            self._on_event(poll.name, event)
        return credits

    def _want(self, poll: _Poll, channel_id: Hashable, known: Credit) -> None:
        """A starved sender's want: answer it now if the credit passes ``known``, else keep it."""
        receiver = self._receivers.get(channel_id)
        if receiver is None or self._via[channel_id] != poll.name:
            # Gone here: the sender's own credit, closed, stops it.
            self._schedule_grant(poll, channel_id, Credit(known.frames, known.items, True))
            return
        credit = _now(receiver)
        if _passes(credit, known):
            self._schedule_grant(poll, channel_id, credit)
        else:
            self._wants[channel_id] = known

    def _credit_moved(self, channel_id: Hashable, credit: Credit) -> None:
        """A receiver's credit line: answer its host's want once the credit passes it."""
        known = self._wants.get(channel_id)
        if known is None or not _passes(credit, known):
            return
        del self._wants[channel_id]
        poll = self._hosts[self._via[channel_id]]
        self._schedule_grant(poll, channel_id, credit)

    def _schedule_grant(self, poll: _Poll, channel_id: Hashable, credit: Credit) -> None:
        if self._closed or poll.failed:
            return
        poll.grants += 1
        task = asyncio.get_running_loop().create_task(
            self._grant(poll, channel_id, credit_tuple(credit))
        )
        self._grants.add(task)
        task.add_done_callback(self._grants.discard)

    async def _grant(self, poll: _Poll, channel_id: Hashable, credit: CreditTuple) -> None:
        try:
            await poll.actor.grant.options(**_CALL_OPTIONS).remote(channel_id, credit)
        except ray.exceptions.RayTaskError as exc:
            self._fail(poll, _far_error(exc))
        except Exception as exc:  # the host died: its collect fails too; the first tells
            self._fail(poll, exc)

    def _fail(self, poll: _Poll, error: BaseException) -> None:
        """The host ``poll`` failed: tell once, stop its loop, forget its wants."""
        if poll.failed:
            return
        poll.failed = True
        for channel_id in [cid for cid in self._wants if self._via[cid] == poll.name]:
            del self._wants[channel_id]
        task = poll.task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        self._on_failure(poll.name, error)

    def __repr__(self) -> str:
        return f"Inbox({len(self._hosts)} hosts, {len(self._receivers)} channels)"


def _now(receiver: WireReceiver) -> Credit:
    """The receiver's credit now: frames delivered, items taken, closed."""
    statistics = receiver.statistics()
    return Credit(statistics.delivered, statistics.taken, receiver.channel.closed)
