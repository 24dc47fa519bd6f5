"""A host's share of a topology spread over Ray: its nodes, its channels, its part of each barrier.

The driver (``_rayengine``) plans every change of the whole topology, as one
process would; each host actor runs the nodes placed on it, as today's
runners, and is told its *part* of each barrier before the barrier starts
(:class:`Part`): the nodes it adds, the switches of its nodes, the channels
they use. A channel is described by a :class:`Link`, the same on both its
ends: a link whose ends are on one host is a :class:`~hotplumb._channel.MemoryChannel`
there; one that crosses is a :class:`~hotplumb._wire.WireSender` on the
producer's host and a :class:`~hotplumb._wire.WireReceiver` on the
consumer's, by the link's id.

A barrier crosses as a :class:`BarrierToken` (its serial number): the receiving
host turns the token back into its own :class:`~hotplumb._change.Barrier`
for that serial, made from its part before the barrier started. So a
barrier's place among the data is its place in the channel's sequence, and
each host's nodes align, forward, switch and acknowledge exactly as in one
process (``_change``). A host's barrier counts only the host's own nodes:
when they have all acknowledged, the host tells the driver (an event, see
:meth:`~hotplumb._raywire.Host.post`), which acknowledges them in the
topology's barrier.
"""

from __future__ import annotations

import asyncio
import pickle
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import ray

from hotplumb._change import (
    Aligner,
    Barrier,
    Plan,
    Switch,
    input_capacity,
    install,
    run_steps,
    uninstall,
)
from hotplumb._channel import MemoryChannel
from hotplumb._clock import SystemClock
from hotplumb._datum import Batch
from hotplumb._errors import NodeFailedError, TopologyClosedError
from hotplumb._kernel import build_kernel
from hotplumb._raywire import Host, HostActor
from hotplumb._runner import Runner, make_pool

if TYPE_CHECKING:
    from collections.abc import Coroutine, Hashable, Mapping
    from concurrent.futures import Executor

    from hotplumb._change import Participant
    from hotplumb._channel import Channel
    from hotplumb._datum import Datum
    from hotplumb._node import Node, Pool, RestartPolicy
    from hotplumb._observe import Observer
    from hotplumb._snapshot import NodeStatistics
    from hotplumb._wire import WireSender

__all__ = [
    "COUNTERS_EVERY",
    "DRIVER",
    "BarrierToken",
    "EngineHost",
    "GuardedSender",
    "HostCore",
    "Link",
    "NodeSpec",
    "Part",
    "SwitchSpec",
    "actor_died",
]

DRIVER = "driver"
"""The name of the calling process as a host: what no placement names runs there."""

COUNTERS_EVERY = 0.1
"""Real seconds between two reports of a host's counters to the driver, while they change."""


@dataclass(frozen=True, slots=True)
class Link:
    """A channel of the topology, as both its ends know it.

    Attributes:
        id: Unique in the topology (the wire's channel id).
        producer: The producing node's key (``None``: an entry channel).
        consumer: The reading node's key.
        source: The producer's host.
        target: The consumer's host.
        capacity: Its capacity when it is made, in items.
    """

    id: int
    producer: Hashable | None
    consumer: Hashable
    source: str
    target: str
    capacity: int


@dataclass(frozen=True, slots=True)
class BarrierToken:
    """A barrier as it crosses between processes: its serial number in the topology."""

    serial: int


@dataclass(frozen=True, slots=True)
class SwitchSpec:
    """What one of the host's running nodes becomes at a barrier (see ``_change.Switch``).

    ``node`` is ``None`` if the node is removed, or moved to the host
    ``moved_to`` (to which it sends its state once it has acted on the
    barrier); ``redefined`` says whether it is a new description (replaced
    or rewired), whose state migrates.
    """

    node: Node | None
    redefined: bool = False
    version: int = 0
    inputs: tuple[Link, ...] = ()
    outputs: tuple[Link, ...] = ()
    readers: frozenset[Hashable] = frozenset()
    moved_to: str | None = None


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """A node the host adds: its description, version, readers and wiring.

    ``moved`` says that it comes from another host: it starts once its state
    has arrived (:meth:`HostCore.arrive`), and not before.
    """

    node: Node
    version: int
    readers: frozenset[Hashable]
    inputs: tuple[Link, ...]
    outputs: tuple[Link, ...]
    moved: bool = False


@dataclass(frozen=True, slots=True)
class Part:
    """A host's part of one barrier (or of the topology's start, with ``serial`` ``None``).

    Attributes:
        serial: The barrier's serial number.
        generation: The generation it starts (a drain's: the current one).
        region: Every key the barrier visits, on any host (a node forwards
            the barrier to its readers in the region).
        local: The host's keys in the region: what the host's barrier waits for.
        switches: The switches of the host's nodes.
        added: The host's new nodes.
        capacities: Kept channels into the host's nodes, and their new capacity.
        final: Whether this is the closing drain (nodes flush).
        dead: A host that died, whose nodes this barrier restarts.
        gone: The ids of the channels to and from the dead host: once the
            host's nodes have switched away from them, those that start here
            are let go of, and what they had not delivered is reported lost
            (an event, ``lost``).
        feed: Channels from the dead host into the host's nodes of the
            region: nothing comes on them any more, so the barrier is put in
            at their end, behind what they delivered.
    """

    serial: int | None
    generation: int
    region: frozenset[Hashable] = frozenset()
    local: frozenset[Hashable] = frozenset()
    switches: Mapping[Hashable, SwitchSpec] = field(default_factory=dict)
    added: Mapping[Hashable, NodeSpec] = field(default_factory=dict)
    capacities: tuple[tuple[Link, int], ...] = ()
    final: bool = False
    dead: str | None = None
    gone: frozenset[Hashable] = frozenset()
    feed: tuple[Link, ...] = ()


def _far_died(sender: WireSender) -> bool:
    """Whether ``sender`` failed because the process at its far end is gone."""
    return sender.error is not None and actor_died(sender.error)


def actor_died(error: BaseException | None) -> bool:
    """Whether ``error``, or what caused it, says a Ray actor died."""
    while error is not None:
        if isinstance(error, ray.exceptions.RayActorError):
            return True
        error = error.__cause__
    return False


class GuardedSender:
    """A channel to another process that, once that process is dead, keeps what comes as lost.

    A producer whose reader's host died must not die with it: what it sends
    there from then on (and a barrier) is kept here, not raised, until a
    change restarts the reader elsewhere and the producer switches away; the
    engine then reports it lost, with the sender's unconfirmed tail.
    """

    __slots__ = ("lost", "sender")

    def __init__(self, sender: WireSender) -> None:
        self.sender = sender
        self.lost: list[Batch] = []

    @property
    def producer(self) -> Hashable | None:
        return self.sender.producer

    @property
    def consumer(self) -> Any:
        return self.sender.consumer

    @property
    def capacity(self) -> int:
        return self.sender.capacity

    @property
    def size(self) -> int:
        return self.sender.size

    @property
    def closed(self) -> bool:
        return self.sender.closed

    @property
    def empty(self) -> bool:
        return self.sender.empty

    def __bool__(self) -> bool:
        return bool(self.sender)

    def dead(self) -> bool:
        """Whether the far end's process is gone."""
        return _far_died(self.sender)

    async def put(self, batch: Batch) -> None:
        if self.dead():
            self.lost.append(batch)
            return
        try:
            await self.sender.put(batch)
        except TopologyClosedError:
            if not self.dead():
                raise
            self.lost.append(batch)

    def put_control(self, message: object) -> None:
        if self.dead():
            return
        try:
            self.sender.put_control(message)
        except TopologyClosedError:
            if not self.dead():
                raise

    def force_put(self, batch: Batch) -> None:
        if self.dead():
            self.lost.append(batch)
            return
        try:
            self.sender.force_put(batch)
        except TopologyClosedError:
            if not self.dead():
                raise
            self.lost.append(batch)

    def resize(self, capacity: int) -> None:
        self.sender.resize(capacity)

    def take(self) -> Any:
        return self.sender.take()  # raises: the consumer reads the far end

    def push_front(self, message: object) -> None:
        self.sender.push_front(message)  # raises, as take

    def seal(self) -> None:
        self.sender.seal()

    def close(self) -> list[Any]:
        """Close the sender; what it had not delivered, and what was kept as lost."""
        return [*self.sender.close(), *self.lost]

    def __repr__(self) -> str:
        return f"GuardedSender({self.sender!r}, {len(self.lost)} lost)"


class _FarReader:
    """The reader of an outgoing channel, as the sending host knows it: its key."""

    __slots__ = ("key",)

    hungry = False  # whether it waits is known only far away: send by the usual rules

    def __init__(self, key: Hashable) -> None:
        self.key = key

    def wake(self) -> None:
        pass


def portable(error: BaseException) -> BaseException:
    """``error`` if it pickles, else a :class:`RuntimeError` that names it."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__qualname__}: {error}")
    return error


class HostCore:
    """The nodes and channels of one host (the :class:`~hotplumb._runner.NodeHost` of its runners).

    Args:
        wire: The host's ends of the channels that cross.
        actors: Every other host's actor, by name.
        restart: The default restart policy.
        capacity: The default input capacity.
        trace: Whether per-hop timing is recorded.
    """

    def __init__(
        self,
        wire: Host,
        actors: Mapping[str, Any],
        *,
        restart: RestartPolicy,
        capacity: int,
        trace: bool,
    ) -> None:
        self.wire = wire
        self.name = self.clock_name = wire.name
        self.actors = dict(actors)
        self.clock = SystemClock()
        self.restart = restart
        self.capacity = capacity
        self.trace = trace
        self.observer: Observer | None = None
        self.closing = False
        self.closed = False
        self.running: dict[Hashable, Runner] = {}
        # Every channel end on this host, by link id, and the link itself.
        self.channels: dict[Hashable, Channel] = {}
        self.links: dict[Hashable, Link] = {}
        # The barriers under way: per serial, the host's barrier and its plan.
        self.barriers: dict[int, Barrier] = {}
        self.parts: dict[int, Part] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.pools: dict[Pool, Executor] = {}
        # Nodes moved here, made and wired, waiting for their state to start.
        self.arriving: dict[tuple[int, Hashable], Runner] = {}
        self._sends: set[Any] = set()  # the calls carrying a moved node's state

    # -- NodeHost ------------------------------------------------------------------------

    def spawn(
        self, coro: Coroutine[Any, Any, None], name: str, node: Hashable | None = None
    ) -> asyncio.Task[None] | None:
        if self.closed:
            coro.close()
            return None
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            return
        if isinstance(error, NodeFailedError):
            self.wire.post(("fatal", error.key, error.restarts, portable(error.__cause__ or error)))
        else:
            self.wire.post(("crashed", task.get_name(), portable(error)))

    def dead_letter(self, datum: Datum) -> None:
        self.wire.post(("dead", datum))

    def task_died(self, key: Hashable, version: int, error: BaseException, fatal: bool) -> None:
        self.wire.post(("died", key, version, portable(error), fatal))

    def pool(self, kind: Pool) -> Executor:
        executor = self.pools.get(kind)
        if executor is None:
            executor = self.pools[kind] = make_pool(kind)
        return executor

    # -- channels ------------------------------------------------------------------------

    def channel(self, link: Link) -> Channel:
        """This host's end of ``link``, made on first use."""
        known = self.channels.get(link.id)
        if known is not None:
            return known
        channel: Channel
        name = self.name
        if link.source == name and link.target == name:
            channel = MemoryChannel(link.producer, self.running[link.consumer], link.capacity)
        elif link.target == name:
            receiver = self.wire.add_receiver(
                link.id, link.producer, self.running[link.consumer], link.capacity
            )
            channel = receiver.channel
        elif link.target == DRIVER:
            channel = self.wire.add_driver_sender(
                link.id,
                link.producer,
                _FarReader(link.consumer),
                link.capacity,
                on_fail=lambda error: self._sender_failed(link, error),
            )
        else:
            sender = self.wire.add_sender(
                link.id,
                link.producer,
                _FarReader(link.consumer),
                link.capacity,
                self.actors[link.target],
                on_fail=lambda error: self._sender_failed(link, error),
            )
            channel = cast("Channel", GuardedSender(sender))
        self.channels[link.id] = channel
        self.links[link.id] = link
        return channel

    def _sender_failed(self, link: Link, error: Exception) -> None:
        """A channel from here failed: unless its far process died (a restart's business), say so.

        What was put may be lost: the topology fails rather than go on without it.
        """
        if self.closing or actor_died(error):
            return
        failure = TopologyClosedError(
            f"the channel from {link.producer!r} on {self.name!r} to {link.consumer!r} on "
            f"{link.target!r} failed: {type(error).__name__}: {error}"
        )
        self.wire.post(("crashed", "a channel", portable(failure)))

    def _channels(self, links: tuple[Link, ...]) -> tuple[Channel, ...]:
        return tuple(self.channel(link) for link in links)

    def forget_unused(self) -> None:
        """Let go of the channel ends no running node uses any more."""
        used: set[Hashable] = set()
        ids = {id(c): link_id for link_id, c in self.channels.items()}
        for runner in self.running.values():
            for c in (*runner.inputs, *runner.outputs):
                link_id = ids.get(id(c))
                if link_id is not None:
                    used.add(link_id)
        for link_id in list(self.channels):
            if link_id in used:
                continue
            channel = self.channels.pop(link_id)
            self.links.pop(link_id)
            if isinstance(channel, MemoryChannel) and link_id not in self.wire.receiving:
                channel.close()
            else:
                self.wire.remove(link_id)

    # -- parts of barriers -------------------------------------------------------------

    def prepare(self, part: Part) -> None:
        """Make the part's new nodes and channels and, for a barrier, the host's barrier.

        Raises:
            Exception: A new node's state factory or callable failed; nothing
                of the part is left behind.
        """
        if part.serial is not None:
            # Every earlier barrier has passed every node of the topology (the
            # driver starts one only then): what they left unused has delivered
            # all it was given, and their tokens are in no channel any more.
            for serial in [s for s in self.barriers if s < part.serial]:
                del self.barriers[serial]
                self.parts.pop(serial, None)
            self.forget_unused()
        added: dict[Hashable, Participant] = {}
        arriving: dict[Hashable, Runner] = {}
        for key, spec in part.added.items():
            try:
                added[key] = Runner(
                    self,
                    key,
                    spec.node,
                    build_kernel(key, spec.node),
                    spec.version,
                    spec.readers,
                    Aligner(),
                )
            except Exception as exc:
                exc.add_note(f"while making node {key!r} on host {self.name!r}")
                raise
        # The new nodes must be known before their input channels are made.
        known = dict(self.running)
        self.running.update(added)  # type: ignore[arg-type]
        try:
            wiring = {
                key: (self._channels(spec.inputs), self._channels(spec.outputs))
                for key, spec in part.added.items()
            }
            switches: dict[Hashable, Switch] = {}
            for key, change in part.switches.items():
                if change.node is None:
                    switches[key] = Switch(None, part.generation)
                    continue
                runner = self.running[key]
                if change.redefined:
                    node = change.node
                    version, kernel = change.version, build_kernel(key, change.node)
                else:
                    node, version, kernel = runner.node, runner.version, runner.kernel
                switches[key] = Switch(
                    node,
                    version,
                    kernel,
                    self._channels(change.inputs),
                    self._channels(change.outputs),
                    change.readers,
                )
            capacities = tuple((self.channel(link), size) for link, size in part.capacities)
        except BaseException:
            self.running = known
            raise
        self.running = known
        for key, spec in part.added.items():
            if spec.moved:
                # Wired now, started when its state comes (not by install).
                member = added.pop(key)
                assert isinstance(member, Runner)
                member.inputs, member.outputs = (list(c) for c in wiring.pop(key))
                arriving[key] = member
        plan = Plan(
            generation=part.generation,
            region=part.region,
            switches=switches,
            added=added,
            wiring=wiring,
            capacities=capacities,
            final=part.final,
        )
        run_steps(install(plan, self.running))  # type: ignore[arg-type]
        if part.serial is None:
            return
        for key, runner in arriving.items():
            self.running[key] = runner
            self.arriving[part.serial, key] = runner
        serial = part.serial
        leaving = {k: s.moved_to for k, s in part.switches.items() if s.moved_to is not None}
        for key in leaving:
            self.running[key].flushed = True  # its state goes on elsewhere: no last word here

        def acted(key: Hashable) -> None:
            to = leaving.get(key)
            if to is not None:
                # Its last before-cut datum is processed: the state it leaves is
                # the one it starts from on the host it moves to.
                error = self.send_state(serial, key, to)
                if error is not None:
                    barrier.errors.append((key, error))

        barrier = Barrier(plan, lambda b: self._done(part, b), acted if leaving else None)
        barrier.pending = set(part.local)
        self.barriers[part.serial] = barrier
        self.parts[part.serial] = part
        barrier.check()  # none of its nodes here: done at once

    def abandon(self, serial: int) -> None:
        """Undo :meth:`prepare` of a barrier that will not start."""
        barrier = self.barriers.pop(serial, None)
        self.parts.pop(serial, None)
        if barrier is not None:
            uninstall(barrier.plan, self.running)  # type: ignore[arg-type]
        for arrival in [a for a in self.arriving if a[0] == serial]:
            runner = self.arriving.pop(arrival)
            if self.running.get(arrival[1]) is runner:
                del self.running[arrival[1]]
            runner.retire()

    def feed(self, serial: int) -> None:
        """The restart's change is cut: put its barrier in the channels from the dead host.

        Nothing comes on them behind what they delivered.
        """
        part = self.parts.get(serial)
        barrier = self.barriers.get(serial)
        if part is None or barrier is None:
            return
        for link in part.feed:
            self.channels[link.id].put_control(barrier)

    def let_go(self, dead: str, gone: frozenset[Hashable]) -> None:
        """Host ``dead`` died: report what the channels to it (``gone``) had not delivered, as lost.

        They are the channels of the dead host's links that start here (not
        those to the host that replaced it, which has the same name).
        """
        lost: list[tuple[Hashable, list[Datum]]] = []  # per reader that died
        for link_id in gone:
            link = self.links.get(link_id)
            if link is None or link.source != self.name:
                continue
            channel: Any = self.channels.pop(link_id)
            del self.links[link_id]
            producer = self.running.get(link.producer)
            batches = [m for m in self.wire.remove(link_id) if type(m) is Batch]
            if isinstance(channel, GuardedSender):
                batches.extend(channel.lost)
            if producer is not None:
                data: list[Datum] = []
                for batch in batches:
                    route = batch.route if batch.route is not None else producer.route_for(None)
                    data.extend(batch.data(route))
                if data:
                    lost.append((link.consumer, data))
        if lost:
            self.wire.post(("lost", dead, lost))

    def send_state(self, serial: int, key: Hashable, to: str) -> Exception | None:
        """Send the state a node that moves leaves to the host it moves to.

        Returns:
            Why the state could not be sent (it would not pickle: the node
            starts from a fresh one there), or ``None``.
        """
        runner = self.running[key]
        try:
            packed: bytes | None = ray.cloudpickle.dumps(runner.ctx.state)
            error = None
        except Exception as exc:
            packed, error = None, exc
        if to == DRIVER:
            self.wire.post(("state", serial, key, packed))  # ahead of this barrier's "done"
            return error
        call = self.actors[to].arrive.remote(serial, key, packed, None)
        self._sends.add(call)  # held until it returns, so that it is not forgotten
        asyncio.get_running_loop().create_task(self._sent(call))
        return error

    async def _sent(self, call: Any) -> None:
        try:
            await call
        except Exception as exc:  # the host it moves to is gone: the state with it
            self.wire.post(("crashed", "moving a node's state", portable(exc)))
        finally:
            self._sends.discard(call)

    def arrive(self, serial: int, key: Hashable, packed: bytes | None, error: Any) -> None:
        """A moved node's state came: it starts from it (from a fresh one if it did not pickle)."""
        runner = self.arriving.pop((serial, key), None)
        if runner is None:
            return
        if packed is not None:
            try:
                runner.ctx.state = pickle.loads(packed)
            except Exception as exc:
                error = portable(exc)
        if error is not None:
            self.wire.post(("errors", serial, [(key, error)]))
        runner.start()

    def _done(self, part: Part, barrier: Barrier) -> None:
        """Every node of the host acted on the barrier: drop the removed ones, tell the driver."""
        assert part.serial is not None
        removed: dict[Hashable, NodeStatistics] = {}
        for key, switch in barrier.plan.switches.items():
            if switch.node is None:
                runner = self.running.pop(key, None)
                if runner is not None:
                    removed[key] = self.statistics_of(runner)
                    runner.release()
        # The channels its removed nodes and switched producers no longer use
        # stay until the next part (see prepare): a frame of them, this
        # barrier's say, may not have left yet. So does the barrier: its token
        # may still be packed into a frame going out.
        if part.dead is not None:
            self.let_go(part.dead, part.gone)  # every producer here has switched away
        errors = [(key, portable(error)) for key, error in barrier.errors]
        self.wire.post(("done", part.serial, errors, removed, self.node_statistics()))

    def token(self, message: Any) -> Any:
        """A control message as it leaves: a barrier as its token."""
        if isinstance(message, Barrier):
            for serial, barrier in self.barriers.items():
                if barrier is message:
                    return BarrierToken(serial)
        return message

    def resolve(self, message: Any) -> Any:
        """A control message as it arrives: a token as this host's barrier."""
        if type(message) is BarrierToken:
            return self.barriers[message.serial]
        return message

    # -- counters and stopping -----------------------------------------------------------

    async def report_counters(self) -> None:
        """Tell the driver the nodes' counters every :data:`COUNTERS_EVERY` s, when they changed.

        Between two reports the driver's figures lag; a barrier's end
        (``done``) carries exact ones, so they are exact after a drain.
        """
        last: dict[Hashable, NodeStatistics] = {}
        while True:
            await asyncio.sleep(COUNTERS_EVERY)
            now = self.node_statistics()
            if now != last:
                self.wire.post(("stats", now))
                last = now

    def statistics_of(self, runner: Runner) -> NodeStatistics:
        depth = sum(c.size for c in runner.inputs)
        return runner.statistics(depth, input_capacity(runner.node, self.capacity))

    def node_statistics(self) -> dict[Hashable, NodeStatistics]:
        """Every node's counters now."""
        return {key: self.statistics_of(r) for key, r in self.running.items()}

    async def stop(self) -> dict[Hashable, int]:
        """Stop every node; return how many frames each incoming channel delivered."""
        self.closing = True
        for runner in self.running.values():
            runner.stop_producer()
        tasks = list(self.tasks)  # the nodes' and the counters' reports
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.closed = True
        for executor in self.pools.values():
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
        self.pools.clear()
        return {link_id: self.wire.receiver(link_id).delivered for link_id in self.wire.receiving}

    def finish(self, delivered: Mapping[Hashable, int]) -> list[Datum]:
        """After :meth:`stop`: what the host held and did not deliver, as data."""
        undelivered: list[Datum] = []
        for runner in self.running.values():
            held = runner.held()
            for channel in runner.inputs:
                if isinstance(channel, MemoryChannel):
                    held.extend((m, False) for m in channel.close() if type(m) is Batch)
            for batch, is_output in held:
                route = (
                    (batch.route if batch.route is not None else runner.route_for(None))
                    if is_output
                    else runner.route_for(batch.route)
                )
                undelivered.extend(batch.data(route))
        for link_id in list(self.wire.sending):
            link = self.links.get(link_id)
            messages = self.wire.remove(link_id, delivered=delivered.get(link_id))
            guard: Any = self.channels.get(link_id)
            if isinstance(guard, GuardedSender):
                messages.extend(guard.lost)
            producer = self.running.get(link.producer) if link is not None else None
            for message in messages:
                if type(message) is Batch and producer is not None:
                    route = message.route if message.route is not None else producer.route_for(None)
                    undelivered.extend(message.data(route))
        return undelivered


class EngineHost(HostActor):
    """The Ray actor of one host of a topology: its nodes and its ends of the channels.

    Started by the engine (``_rayengine``); every method is what the driver calls.
    """

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._core: HostCore | None = None

    @property
    def core(self) -> HostCore:
        """The host's share of the topology (after :meth:`setup`)."""
        assert self._core is not None, "the host was not set up"
        return self._core

    async def setup(
        self, actors: Mapping[str, Any], restart: RestartPolicy, capacity: int, trace: bool
    ) -> None:
        """Join a topology: the other hosts' actors and the topology's defaults."""
        core = HostCore(self.host, actors, restart=restart, capacity=capacity, trace=trace)
        self.host.codec = (core.token, core.resolve)
        self._core = core
        core.spawn(core.report_counters(), "hotplumb counters")

    async def meet(self, actors: Mapping[str, Any]) -> None:
        """New hosts joined the topology: their actors, by name."""
        self.core.actors.update(actors)

    async def prepare(self, part: Part) -> None:
        """:meth:`HostCore.prepare`."""
        self.core.prepare(part)

    async def abandon(self, serial: int) -> None:
        """:meth:`HostCore.abandon`."""
        self.core.abandon(serial)

    async def feed(self, serial: int) -> None:
        """:meth:`HostCore.feed`."""
        self.core.feed(serial)

    async def arrive(self, serial: int, key: Hashable, packed: bytes | None, error: Any) -> None:
        """:meth:`HostCore.arrive`."""
        self.core.arrive(serial, key, packed, error)

    async def node_statistics(self) -> dict[Hashable, NodeStatistics]:
        """:meth:`HostCore.node_statistics`."""
        return self.core.node_statistics()

    async def stop(self) -> dict[Hashable, int]:
        """:meth:`HostCore.stop`."""
        return await self.core.stop()

    async def finish(self, delivered: Mapping[Hashable, int]) -> list[Datum]:
        """:meth:`HostCore.finish`."""
        return self.core.finish(delivered)
