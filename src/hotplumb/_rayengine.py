"""The driver's side of a topology spread over Ray host actors.

The driver runs the topology's control as in one process: ``_Core`` and
``_change`` plan every change of the whole graph, hold the topology's barrier
and wait for it. What this module adds is *where*: a node placed on a host is
a :class:`RemoteMember` here (a participant whose task runs in the host's
process), a channel is a :class:`~hotplumb._rayhost.Link` whose ends are made
where its nodes run, and before any barrier enters the topology every host
involved is given its part of it (:meth:`Distributed.begin`). Hosts tell the
driver when their nodes have acted on a barrier, and the driver acknowledges
those nodes in the topology's barrier; it learns of failed data, deaths and
counters the same way (events of the :class:`~hotplumb._raypull.Inbox`).

Every entry point runs on the driver: every cut is then the driver's one
synchronous step, and a barrier reaches a host's nodes through the channels
from the driver, in sequence with the data.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import pickle
from collections import deque
from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, cast

import ray

from hotplumb._change import Switch
from hotplumb._channel import MemoryChannel
from hotplumb._context import Context
from hotplumb._datum import Batch, Datum, NodeError, Route
from hotplumb._errors import ApplyError, HotplumbError, NodeFailedError, TopologyClosedError
from hotplumb._format import format_key
from hotplumb._rayhost import (
    DRIVER,
    BarrierToken,
    EngineHost,
    GuardedSender,
    Link,
    NodeSpec,
    Part,
    SwitchSpec,
    actor_died,
)
from hotplumb._raypull import Inbox
from hotplumb._raywire import Host, _far_error, start_host
from hotplumb._runner import Runner
from hotplumb._snapshot import NodeStatistics

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Iterable, Iterator

    from hotplumb._change import Barrier, Participant, Plan
    from hotplumb._channel import Channel
    from hotplumb._clock import Clock
    from hotplumb._graph import Graph
    from hotplumb._kernel import Kernel
    from hotplumb._node import Node
    from hotplumb._runtime import _Core

_log = logging.getLogger("hotplumb")

__all__ = ["Distributed", "FarChannel", "HostDiedError", "RemoteMember", "as_placement"]


class HostDiedError(HotplumbError, RuntimeError):
    """A host actor of the topology died (its process ended, or it was killed).

    Attributes:
        host: The host's name.
        keys: The nodes it ran.
    """

    def __init__(self, host: str, keys: Iterable[Hashable]) -> None:
        self.host = host
        self.keys = tuple(keys)
        shown = ", ".join(format_key(k) for k in self.keys[:5])
        more = f" and {len(self.keys) - 5} more" if len(self.keys) > 5 else ""
        super().__init__(f"host {host!r} died; it ran {shown or 'no node'}{more}")


class RemoteMember:
    """A node placed on a host, as the driver knows it: its description, wiring and counters.

    It takes part in the driver's plans (its inputs and outputs are the
    driver's objects for its channels) and runs nothing here: its host runs
    the node, and says when it switched and what it counted.
    """

    __slots__ = (
        "counters",
        "ctx",
        "entry",
        "flushed",
        "host",
        "inputs",
        "kernel",
        "key",
        "last_error",
        "node",
        "outputs",
        "stopped",
        "version",
    )

    waiting_for_demand = False  # it is never an entry point

    def __init__(
        self,
        host: str,
        key: Hashable,
        node: Node,
        kernel: Kernel,
        version: int,
        readers: frozenset[Hashable],
        clock: Clock,
    ) -> None:
        self.host = host
        self.key = key
        self.node = node
        self.kernel = kernel
        self.version = version
        self.inputs: list[Channel] = []
        self.outputs: list[Channel] = []
        self.entry: Channel | None = None
        self.ctx = Context(key, version, node.inputs, readers, clock, None)
        self.last_error: NodeError | None = None
        self.counters: NodeStatistics | None = None
        self.stopped = False
        self.flushed = False

    def start(self) -> None:
        pass

    def start_producer(self) -> None:
        pass

    def stop_producer(self) -> None:
        pass

    def flush(self) -> None:
        pass

    def retire(self) -> None:
        self.stopped = True

    def release(self) -> None:
        self.stopped = True
        self.inputs = []
        self.outputs = []

    def statistics(self, input_depth: int, input_capacity: int) -> NodeStatistics:
        """Its counters as its host last reported them (zeros before the first report)."""
        counters = self.counters
        if counters is None:
            return NodeStatistics(self.key, self.version, 0, 0, 0, 0, 0, 0, 0, input_capacity)
        return counters

    def __repr__(self) -> str:
        return f"RemoteMember({self.key!r} on {self.host!r}, version {self.version})"


class FarChannel:
    """A channel between two hosts, as the driver knows it: its link (neither end is here)."""

    __slots__ = ("capacity", "consumer", "link", "producer")

    size = 0
    closed = False
    empty = True

    def __init__(self, link: Link, consumer: Participant) -> None:
        self.link = link
        self.producer = link.producer
        self.consumer = consumer
        self.capacity = link.capacity

    def resize(self, capacity: int) -> None:
        self.capacity = capacity  # the hosts resize their ends (the part's capacities)

    def seal(self) -> None:
        pass

    def close(self) -> list[Any]:
        return []

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        link = self.link
        return f"FarChannel({link.producer!r}@{link.source} -> {link.consumer!r}@{link.target})"


class _FarReader:
    """The reader of a channel leaving the driver: its key."""

    __slots__ = ("key",)

    hungry = False

    def __init__(self, key: Hashable) -> None:
        self.key = key

    def wake(self) -> None:
        pass


def as_placement(placement: Any) -> Callable[[Hashable], str]:
    """A placement as a function: a mapping's keys it does not name run on the driver.

    Raises:
        TypeError: ``placement`` is neither a mapping nor callable.
    """
    if placement is None:
        return _on_driver
    if isinstance(placement, Mapping):
        table = dict(placement)
        return lambda key: table.get(key, DRIVER)
    if callable(placement):
        return placement  # type: ignore[no-any-return]
    raise TypeError(
        "placement must be a mapping of keys to host names or a callable key -> host name, "
        f"got {placement!r}"
    )


def _on_driver(key: Hashable) -> str:
    return DRIVER


class Distributed:
    """The engine of a topology whose nodes run on Ray host actors (see ``hotplumb.ray``).

    Args:
        place: The host of a key (:data:`~hotplumb._rayhost.DRIVER` for the driver).
        resources: Ray actor options per host name.
        actor_class: The hosts' actor class (a seam for tests).
    """

    def __init__(
        self,
        place: Callable[[Hashable], str],
        resources: Mapping[str, Mapping[str, Any]],
        actor_class: type[EngineHost] = EngineHost,
    ) -> None:
        self.place = place
        self.resources = resources
        self.actor_class = actor_class
        self._core: _Core | None = None
        self.actors: dict[str, Any] = {}
        self.where: dict[Hashable, str] = {}  # every running key's host
        self._links: dict[int, tuple[Link, Channel]] = {}  # by id() of the driver's object
        self._link_ids = itertools.count()
        self._serials = itertools.count()
        self._barriers: dict[int, Barrier] = {}
        self._serial_of: dict[int, int] = {}  # id(barrier) -> serial
        self._waiting: dict[int, dict[str, frozenset[Hashable]]] = {}  # serial -> host -> keys
        self._wire: Host | None = None
        self._inbox: Inbox | None = None
        self._dead: set[str] = set()
        # The keys the change being made moves, with the host each leaves.
        self._moving: dict[Hashable, str] = {}
        # A host being restarted: the keys it ran (restarted by the next change,
        # which admit() marks), and the ids of the channels to and from it.
        self._restarting: dict[Hashable, str] = {}
        self._restart_admitted = False
        # Per barrier serial, what its change does once it is cut (a restart's acts).
        self._commits: dict[int, Callable[[], None]] = {}
        # Nodes moving here from a host: made and wired, waiting for their state.
        self._arriving: dict[Hashable, Runner] = {}
        # Nodes moving from here to a host, per barrier serial: where each goes.
        self._leaving: dict[int, dict[Hashable, str]] = {}
        self._dead_links: dict[str, set[Hashable]] = {}  # per dead host, its channels' ids
        # Hosts being started, each with what its starter sets when it is ready.
        self._starting: dict[str, asyncio.Future[None]] = {}
        self._recovering: set[str] = set()
        self._deaths: dict[Hashable, deque[float]] = {}  # per key, its hosts' deaths

    @property
    def core(self) -> _Core:
        assert self._core is not None
        return self._core

    @property
    def wire(self) -> Host:
        assert self._wire is not None
        return self._wire

    @property
    def inbox(self) -> Inbox:
        assert self._inbox is not None
        return self._inbox

    # -- placement ---------------------------------------------------------------------

    def host_for(self, key: Hashable, node: Node) -> str:
        """Where a new node runs, checked.

        Raises:
            ValueError: The placement names no host (not a non-empty str), or
                places an entry point away from the driver.
        """
        host = self.place(key)
        if not isinstance(host, str) or not host:
            raise ValueError(
                f"the placement of node {format_key(key)} must be a host name (a non-empty "
                f"str, or hotplumb.ray.DRIVER), got {host!r}"
            )
        if host != DRIVER and not node.inputs:
            raise ValueError(
                f"node {format_key(key)} is an entry point; entry points run on the driver "
                f"(it is placed on {host!r})"
            )
        return host

    def check(self, graph: Graph) -> tuple[set[str], dict[Hashable, str]]:
        """The hosts ``graph`` needs, and the running keys it moves (to their new host).

        Raises:
            ValueError: A node is misplaced (see :meth:`host_for`), or would
                move and be redefined in one change.
        """
        hosts: set[str] = set()
        moves: dict[Hashable, str] = {}
        running = self.core.running
        for key, node in graph.nodes.items():
            host = self.host_for(key, node)
            now = self.where.get(key)
            if now is not None and now != host:
                if node != running[key].node:
                    raise ValueError(
                        f"node {format_key(key)} would move from {now!r} to {host!r} and be "
                        "redefined in one change: move it in one change, redefine it in another"
                    )
                moves[key] = host
            hosts.add(host)
        return hosts - {DRIVER}, moves

    async def admit(self, graph: Graph) -> frozenset[Hashable]:
        """Before a change: check ``graph``'s placement, start the hosts it needs; what moves.

        A dead host's nodes waiting to restart move too: this change restarts them.
        """
        running = self.core.running
        # A key runs where it was placed while it runs: one removed (or whose
        # change failed before it ran) may come back anywhere.
        self.where = {key: host for key, host in self.where.items() if key in running}
        hosts, moves = self.check(graph)
        await self._start_hosts(hosts)
        restarting = {k: h for k, h in self._restarting.items() if k in graph.nodes}
        self._restart_admitted = bool(self._restarting)
        # Its channels are made where it goes; if the change does not go
        # ahead, it stays where it is (placing() or abandon puts it back).
        self._moving = {key: self.where[key] for key in moves}
        self._moving.update(restarting)  # from the dead host to the new one of its name
        self.where.update(moves)
        core = self.core
        for key, host in moves.items():
            if host == DRIVER:
                # Made now, so that the channels into it are made for it; it
                # starts when its state comes (the event "state").
                member = running[key]
                self._arriving[key] = Runner(
                    core,
                    key,
                    member.node,
                    member.kernel,
                    member.version,
                    member.ctx.readers,
                    core.aligner(),
                )
        return frozenset(self._moving)

    def _unmove(self) -> None:
        moving, self._moving = self._moving, {}
        self.where.update(moving)
        arriving, self._arriving = self._arriving, {}
        for runner in arriving.values():
            runner.retire()

    @contextlib.contextmanager
    def placing(self, placement: Any) -> Iterator[None]:
        """Use ``placement`` for the change made inside; keep it if the change goes ahead."""
        if placement is None:
            yield
            return
        saved = self.place
        self.place = as_placement(placement)
        try:
            yield
        except BaseException:
            self.place = saved
            self._unmove()
            raise
        self._moving = {}

    # -- the engine seam ---------------------------------------------------------------

    async def open(self, core: _Core) -> None:
        """Start the hosts the graph needs; nothing runs yet."""
        self._core = core
        hosts, _ = self.check(core.graph)
        if not ray.is_initialized():
            ray.init(include_dashboard=False, log_to_driver=False)
        self._wire = Host(DRIVER)
        self._wire.codec = (self._token, self._resolve)
        self._inbox = Inbox(
            on_event=self._event, on_failure=self._host_failed, incoming=self._resolve
        )
        await self._start_hosts(hosts)

    async def _start_hosts(self, hosts: Iterable[str]) -> None:
        """Start the hosts of ``hosts`` that are not running; wait for those being started.

        A host is in :attr:`actors` only once it is set up and polled, so a
        change never makes a channel end on a host that cannot take it yet.
        """
        wanted = set(hosts)
        new = sorted(wanted - self.actors.keys() - self._starting.keys())
        if new:
            ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            for name in new:
                self._starting[name] = ready
            try:
                await self._start(new)
            finally:
                for name in new:
                    del self._starting[name]
                ready.set_result(None)
        for name in wanted & self._starting.keys():
            await asyncio.shield(self._starting[name])

    async def _start(self, new: list[str]) -> None:
        started = {
            name: start_host(
                name, actor_class=self.actor_class, **dict(self.resources.get(name, {}))
            )
            for name in new
        }
        actors = {**self.actors, **started}
        core = self.core
        # Every host learns of every other (the new ones at their setup, the others now).
        results = await asyncio.gather(
            *(
                actor.setup.remote(actors, core.restart, core.capacity, core.trace)
                for actor in started.values()
            ),
            *(actor.meet.remote(started) for actor in self.actors.values()),
            return_exceptions=True,
        )
        for result in results:
            # A host that died meanwhile is its own failure's business.
            if isinstance(result, BaseException) and not actor_died(result):
                raise result
        for name, actor in started.items():
            self.actors[name] = actor
            self.inbox.add_host(name, actor)

    def participant(
        self, key: Hashable, node: Node, kernel: Kernel, version: int, readers: frozenset[Hashable]
    ) -> Participant | None:
        """A node placed on a host, or ``None`` for one that runs on the driver."""
        host = self.host_for(key, node)
        self.where[key] = host
        if host == DRIVER:
            return None
        return RemoteMember(host, key, node, kernel, version, readers, self.core.clock)

    def channel(
        self, producer: Hashable | None, consumer: Participant, capacity: int
    ) -> Channel | None:
        """The driver's object for a channel with an end on a host (``None``: both ends here)."""
        source = DRIVER if producer is None else self.where[producer]
        target = self.where[consumer.key]
        arriving = self._arriving.get(consumer.key)
        if arriving is not None:
            consumer = arriving  # its channels are the new node's, here
        if source == DRIVER and target == DRIVER:
            if arriving is not None:
                return MemoryChannel(producer, arriving, capacity)
            return None
        link = Link(next(self._link_ids), producer, consumer.key, source, target, capacity)
        channel: Channel
        if target == DRIVER:
            assert isinstance(consumer, Runner)
            receiver = self.inbox.add_receiver(link.id, source, producer, consumer, capacity)
            channel = receiver.channel
        elif source == DRIVER:
            sender = self.wire.add_sender(
                link.id,
                producer,
                _FarReader(consumer.key),
                capacity,
                self.actors[target],
                on_fail=lambda error: self._sender_failed(link, error),
            )
            channel = cast("Channel", GuardedSender(sender))
        else:
            channel = FarChannel(link, consumer)  # type: ignore[assignment]
        self._links[id(channel)] = (link, channel)
        return channel

    def _forget_unused(self, plan: Plan) -> None:
        """Let go of the driver's ends of channels no node uses, nor will after ``plan``.

        Called as a barrier begins, when every earlier one has passed every
        node: what a channel no node uses was given has been delivered.
        """
        used = {id(c) for m in self.core.running.values() for c in (*m.inputs, *m.outputs)}
        for switch in plan.switches.values():
            used.update(id(c) for c in (*switch.inputs, *switch.outputs))
        for inputs, outputs in plan.wiring.values():
            used.update(id(c) for c in (*inputs, *outputs))
        for key in [k for k in self._links if k not in used]:
            link, _ = self._links.pop(key)
            if link.source == DRIVER and link.id in self.wire.sending:
                self.wire.remove(link.id)
            elif link.target == DRIVER and link.id in self.inbox.receiving:
                self.inbox.remove(link.id)

    def _by_id(self, link_id: Hashable) -> tuple[Link, Any] | tuple[None, None]:
        """A link and the driver's object for it, by the link's id."""
        for link, channel in self._links.values():
            if link.id == link_id:
                return link, channel
        return None, None

    def _link(self, channel: Channel) -> Link:
        return self._links[id(channel)][0]

    def _links_of(self, channels: Iterable[Channel]) -> tuple[Link, ...]:
        return tuple(self._link(c) for c in channels)

    def _remote(self) -> Iterator[RemoteMember]:
        for member in self.core.running.values():
            if isinstance(member, RemoteMember):
                yield member

    async def started(self) -> None:
        """The nodes are made: every host makes its own, wired."""
        parts: dict[str, dict[Hashable, NodeSpec]] = {}
        for member in self._remote():
            parts.setdefault(member.host, {})[member.key] = NodeSpec(
                member.node,
                member.version,
                member.ctx.readers,
                self._links_of(member.inputs),
                self._links_of(member.outputs),
            )
        await self._prepare({host: Part(None, 0, added=added) for host, added in parts.items()})

    async def _prepare(self, parts: Mapping[str, Part]) -> None:
        results = await asyncio.gather(
            *(self.actors[host].prepare.remote(part) for host, part in parts.items()),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise _far_error(result) if isinstance(result, Exception) else result

    async def begin(self, barrier: Barrier) -> None:
        """Give every host involved its part of ``barrier``, before it enters the topology.

        Raises:
            Exception: A host could not make its part (a new node's state
                factory raised there); no host keeps any of it.
        """
        if self._restarting and self.core.closing:
            # The closing drain cannot pass nodes that are not running: it
            # ends as a drain that ran out of time does (what is left is reported).
            raise TimeoutError(
                f"nodes of a dead host are not running: {sorted(map(repr, self._restarting))}"
            )
        if self._restarting and not (self._restart_admitted and barrier.plan.switches):
            # (A drain never restarts them, even after a change that was
            # admitted as the restart failed before it began.)
            host = next(iter(self._restarting.values()))
            failure = HostDiedError(host, self._restarting)
            failure.add_note(
                "its nodes are being started again on a new host; a drain or a change "
                "started meanwhile fails with this error (nothing changed): try it again"
            )
            raise failure
        for done in [s for s, b in self._barriers.items() if b.done.is_set()]:
            # Every node of its region has acted on it: no token of it is left
            # in any channel (a node forwards it only to nodes of the region).
            self._forget(done)
        plan = barrier.plan
        self._forget_unused(plan)
        serial = next(self._serials)
        where = self.where
        moving = self._moving
        restarting = dict(self._restarting)
        local: dict[str, set[Hashable]] = {}
        for key in plan.region:
            if key in restarting:
                continue  # its host died: the driver acknowledges it
            host = moving.get(key, where[key])  # a node that moves acts where it was
            if host != DRIVER:
                local.setdefault(host, set()).add(key)
        switches: dict[str, dict[Hashable, SwitchSpec]] = {}
        added: dict[str, dict[Hashable, NodeSpec]] = {}
        running = self.core.running
        leaving: dict[Hashable, str] = {}
        for key, switch in plan.switches.items():
            host = where[key]
            if key in restarting and key not in moving:
                continue  # a dead node the change removes: nothing left to do
            if key in moving:
                # It stops where it was once it acted on the barrier, and sends
                # its state on; it starts where it goes from that state. (If
                # its host died, it starts again there from a fresh state.)
                assert switch.node is not None
                if moving[key] == DRIVER:
                    leaving[key] = host  # the driver's runner acts (see _left)
                elif key not in restarting:
                    switches.setdefault(moving[key], {})[key] = SwitchSpec(None, moved_to=host)
                if host == DRIVER:
                    continue  # made already (admit); it starts when its state comes
                added.setdefault(host, {})[key] = NodeSpec(
                    switch.node,
                    switch.version,
                    switch.readers,
                    self._links_of(switch.inputs),
                    self._links_of(switch.outputs),
                    moved=key not in restarting,
                )
                continue
            if host == DRIVER:
                continue
            if switch.node is None:
                spec = SwitchSpec(None)
            else:
                spec = SwitchSpec(
                    switch.node,
                    switch.node is not running[key].node,
                    switch.version,
                    self._links_of(switch.inputs),
                    self._links_of(switch.outputs),
                    switch.readers,
                )
            switches.setdefault(host, {})[key] = spec
        for key, member in plan.added.items():
            host = where[key]
            if host == DRIVER:
                continue
            inputs, outputs = plan.wiring[key]
            added.setdefault(host, {})[key] = NodeSpec(
                member.node,
                member.version,
                member.ctx.readers,
                self._links_of(inputs),
                self._links_of(outputs),
            )
        capacities: dict[str, list[tuple[Link, int]]] = {}
        for channel, size in plan.capacities:
            entry = self._links.get(id(channel))
            if entry is None:
                continue  # between two nodes of the driver
            link = entry[0]
            for host in {link.source, link.target} - {DRIVER}:
                capacities.setdefault(host, []).append((link, size))
        feed: dict[str, list[Link]] = {}
        dying = set(restarting.values())
        gone: set[Hashable] = set()
        for name in dying:
            gone |= self._dead_links.get(name, set())
        dead = min(dying) if dying else None
        for link_id in gone:
            fed, _ = self._by_id(link_id)
            if fed is None or fed.source not in dying or fed.consumer not in plan.region:
                continue
            if fed.consumer not in restarting:
                feed.setdefault(where[fed.consumer], []).append(fed)
        hosts = local.keys() | switches.keys() | added.keys() | capacities.keys()
        hosts = hosts - self._dead - {DRIVER}
        if dying:
            hosts |= self.actors.keys() - self._dead  # every live host lets go of the dead
        parts = {
            host: Part(
                serial,
                plan.generation,
                plan.region,
                frozenset(local.get(host, ())),
                switches.get(host, {}),
                added.get(host, {}),
                tuple(capacities.get(host, ())),
                plan.final,
                dead,
                frozenset(gone),
                tuple(feed.get(host, ())),
            )
            for host in hosts
        }
        self._barriers[serial] = barrier
        self._serial_of[id(barrier)] = serial
        self._waiting[serial] = {host: part.local for host, part in parts.items()}
        try:
            await self._prepare(parts)
        except BaseException:
            self._forget(serial)
            await asyncio.gather(
                *(self.actors[host].abandon.remote(serial) for host in parts),
                return_exceptions=True,
            )
            raise
        if restarting:
            self._commits[serial] = lambda: self._restarted(
                serial, barrier, restarting, feed, set(parts)
            )
        if leaving:
            # The driver's runner of a node that moves away stops at the
            # barrier, as a removed node does; as it acknowledges, its state
            # goes to its host, where the node starts from it (_left).
            self._leaving[serial] = leaving
            new = {key: plan.switches[key] for key in leaving}
            for key in leaving:
                member = running[key]
                assert isinstance(member, Runner)
                member.flushed = True  # its state goes on elsewhere: no last word here
            barrier.plan = replace(
                plan,
                switches=MappingProxyType(
                    {**plan.switches, **{k: Switch(None, s.version) for k, s in new.items()}}
                ),
            )
            barrier.on_ack = lambda key: self._left(serial, barrier, key, new)
        self._restart_admitted, self._moving = False, {}

    def cut(self, barrier: Barrier) -> None:
        """``barrier`` has entered the topology: what its change does for dead nodes is done now.

        Not before (in :meth:`begin`): until the cut the change may still be
        abandoned, and must then leave nothing changed.
        """
        serial = self._serial_of.get(id(barrier))
        commit = self._commits.pop(serial, None) if serial is not None else None
        if commit is not None:
            commit()

    def _restarted(
        self,
        serial: int,
        barrier: Barrier,
        restarting: Mapping[Hashable, str],
        feed: Mapping[str, list[Link]],
        hosts: set[str],
    ) -> None:
        """The restart's change is cut: the driver acts on its barrier for the dead nodes."""
        for link in feed.get(DRIVER, ()):
            # The far end died: nothing comes behind what was delivered.
            self.inbox.receiver(link.id).channel.put_control(barrier)
        for host in hosts & feed.keys():
            self.actors[host].feed.remote(serial)
        running, where, plan = self.core.running, self.where, barrier.plan
        for key in restarting:
            # Its host died: it runs where the switch says from the cut on.
            ghost = running.get(key)
            restart = plan.switches.get(key)
            if isinstance(ghost, RemoteMember) and restart is not None:
                ghost.inputs, ghost.outputs = list(restart.inputs), list(restart.outputs)
                ghost.host, ghost.counters = where[key], None
            if self._restarting.get(key) == restarting[key]:
                del self._restarting[key]
            barrier.ack(key)

    def _left(
        self, serial: int, barrier: Barrier, key: Hashable, switches: Mapping[Hashable, Switch]
    ) -> None:
        """A node moving from the driver acted on the barrier: its state goes to its host."""
        to = self._leaving.get(serial, {}).pop(key, None)
        if to is None:
            return
        core = self.core
        runner = core.running[key]
        assert isinstance(runner, Runner)
        try:
            packed: bytes | None = ray.cloudpickle.dumps(runner.ctx.state)
        except Exception as exc:
            packed = None
            barrier.errors.append((key, exc))
        self.actors[to].arrive.remote(serial, key, packed, None)
        switch = switches[key]
        ghost = RemoteMember(
            to, key, runner.node, runner.kernel, runner.version, runner.ctx.readers, core.clock
        )
        ghost.inputs, ghost.outputs = list(switch.inputs), list(switch.outputs)
        core.running[key] = ghost
        runner.release()

    def _arrived(self, serial: int, key: Hashable, packed: bytes | None) -> None:
        """The state of a node moving here came from its old host: it starts from it."""
        runner = self._arriving.pop(key, None)
        barrier = self._barriers.get(serial)
        if runner is None or barrier is None:
            return
        switch = barrier.plan.switches[key]
        runner.inputs, runner.outputs = list(switch.inputs), list(switch.outputs)
        if packed is not None:
            try:
                runner.ctx.state = pickle.loads(packed)
            except Exception as exc:
                barrier.errors.append((key, exc))
        self.core.running[key] = runner
        runner.start()

    def abandon(self, barrier: Barrier) -> None:
        """``barrier`` will not start: the hosts undo their parts.

        If it was the change that restarts a dead host's nodes, and it had
        begun (the driver acted for the dead nodes), nothing undoes that: the
        topology fails rather than wait for nodes that will never run.
        """
        self._unmove()
        serial = self._serial_of.get(id(barrier))
        if serial is None:
            return
        self._commits.pop(serial, None)
        for host in self._waiting.get(serial, {}):
            self.actors[host].abandon.remote(serial)
        self._forget(serial)

    def _forget(self, serial: int) -> None:
        barrier = self._barriers.pop(serial, None)
        if barrier is not None:
            self._serial_of.pop(id(barrier), None)
        self._waiting.pop(serial, None)

    def _token(self, message: Any) -> Any:
        serial = self._serial_of.get(id(message))
        return message if serial is None else BarrierToken(serial)

    def _resolve(self, message: Any) -> Any:
        if type(message) is BarrierToken:
            return self._barriers[message.serial]
        return message

    # -- what the hosts tell -----------------------------------------------------------

    def _event(self, host: str, event: Any) -> None:
        kind = event[0]
        core = self.core
        if kind == "done":
            _, serial, errors, removed, counters = event
            self._update(counters)
            self._update(removed)
            self._switched(host, serial, errors)
        elif kind == "stats":
            self._update(event[1])
        elif kind == "state":
            self._arrived(event[1], event[2], event[3])
        elif kind == "lost":
            self._lost(event[1], event[2])
        elif kind == "errors":
            barrier = self._barriers.get(event[1])
            if barrier is not None:
                barrier.errors.extend(event[2])
        elif kind == "dead":
            datum: Datum = event[1]
            member = core.running.get(datum.path[-1]) if datum.path else None
            if isinstance(member, RemoteMember):
                member.last_error = datum.error
            core.dead_letter(datum)
        elif kind == "died":
            _, key, version, error, fatal = event
            core.task_died(key, version, error, fatal)
        elif kind == "fatal":
            _, key, restarts, cause = event
            failure = NodeFailedError(key, restarts)
            failure.__cause__ = cause
            self._fail(failure)
        elif kind == "crashed":
            self._fail(event[2])

    def _update(self, counters: Mapping[Hashable, NodeStatistics]) -> None:
        running = self.core.running
        for key, statistics in counters.items():
            member = running.get(key)
            if isinstance(member, RemoteMember):
                member.counters = statistics

    def _switched(self, host: str, serial: int, errors: list[tuple[Hashable, Exception]]) -> None:
        barrier = self._barriers.get(serial)
        waiting = self._waiting.get(serial)
        if barrier is None or waiting is None or host not in waiting:
            return
        keys = waiting.pop(host)
        running = self.core.running
        where = self.where
        for key in keys:
            switch = barrier.plan.switches.get(key)
            member = running.get(key)
            if switch is None or not isinstance(member, RemoteMember):
                continue
            if switch.node is None:
                member.stopped = True
                continue
            member.host = where.get(key, member.host)
            member.inputs = list(switch.inputs)
            member.outputs = list(switch.outputs)
            if switch.node is not member.node:
                assert switch.kernel is not None
                member.node, member.kernel = switch.node, switch.kernel
                member.version = member.ctx.version = switch.version
                member.ctx.inputs = switch.node.inputs
            member.ctx._set_readers(switch.readers)
        barrier.errors.extend(errors)
        for key in keys:
            barrier.ack(key)

    def _sender_failed(self, link: Link, error: Exception) -> None:
        """A channel from the driver failed: unless its host died (a restart's business), fail."""
        if self.core.closing or actor_died(error):
            return
        failure = TopologyClosedError(
            f"the channel from {link.producer!r} to {link.consumer!r} on {link.target!r} "
            f"failed: {type(error).__name__}: {error}"
        )
        failure.__cause__ = error
        self._fail(failure)

    def _fail(self, error: BaseException) -> None:
        """Fail the topology with ``error``, as a node past its restart policy does."""

        async def fail() -> None:
            raise error

        self.core.spawn(fail(), "hotplumb host failure")

    def _host_failed(self, host: str, error: BaseException) -> None:
        core = self.core
        if host in self._dead or host in self._recovering or core.closed:
            return
        keys = [m.key for m in self._remote() if m.host == host]
        failure = HostDiedError(host, keys)
        failure.__cause__ = error
        touched = set(keys)
        if (
            core.closing
            or self._recovering
            or any(not b.done.is_set() and touched & b.region for b in self._barriers.values())
        ):
            # A barrier in flight through its nodes can no longer pass them
            # (its frames may have died with them), and a restart under way
            # restarts one host at a time: the topology fails rather than
            # waits for ever.
            self._dead.add(host)
            self._fail(failure)
            return
        now = core.clock.now()
        for key in keys:
            member = core.running[key]
            policy = member.node.restart or core.restart
            deaths = self._deaths.setdefault(key, deque())
            deaths.append(now)
            while deaths and deaths[0] < now - policy.window:
                deaths.popleft()
            if len(deaths) > policy.max_restarts:
                self._dead.add(host)
                core.task_died(key, member.version, failure, True)
                self._fail(failure)
                return
        self._recovering.add(host)
        # From now on nothing is sent to the dead actor, and the next change
        # restarts its nodes (admit); a drain that comes first fails (begin).
        self._dead_links[host] = {
            link.id for link, _ in self._links.values() if host in (link.source, link.target)
        }
        old = self.actors.pop(host)
        self.inbox.forget_host(host)
        with contextlib.suppress(Exception):
            ray.kill(old)
        self._restarting.update(dict.fromkeys(keys, host))
        core.spawn(self._restart(host, failure), f"hotplumb: restarting host {host!r}")

    async def _restart(self, host: str, failure: HostDiedError) -> None:
        """Start host ``host`` again, and its nodes on it, from fresh states, in one change.

        The change is a move of those nodes from the dead host to the new
        one, whose barrier the driver passes on for the dead nodes: it is put
        at the end of every channel from the dead host (nothing comes behind
        what it delivered), the driver acknowledges the dead nodes, and their
        producers switch away from the channels to the dead host, which keep
        what is put into them meanwhile. What those channels had not
        delivered is reported lost (:meth:`_lost`); what the dead process
        held (in its channels and nodes) is lost with it, and counted from its
        last counters.
        """
        core = self.core
        held = 0
        for member in self._remote():
            if member.host == host:
                version = member.version
                core.task_died(member.key, version, failure, False)
                if member.counters is not None:
                    held += member.counters.input_depth + member.counters.in_progress
        _log.warning(
            "%s; its nodes start again from fresh states on a new %r. Lost with it: what it "
            "held, about %d items by its last counters; the data sent to it and not known to "
            "have arrived go to the topology's errors",
            failure,
            host,
            held,
        )
        try:
            await self._start_hosts([host])
            # (A change made meanwhile may have restarted them already: then
            # this one changes nothing.)
            await core.changes.update(lambda graph: graph, None)
        except TopologyClosedError:
            return
        except ApplyError as exc:  # its nodes cannot start again (a state factory raised)
            failure.add_note(f"its nodes could not start again: {exc}")
            self._fail(failure)
            return
        finally:
            self._recovering.discard(host)
        lost: list[tuple[Hashable, list[Datum]]] = []
        if any(h == host for h in self._restarting.values()):
            return  # not restarted yet (a later change will; its task reports then)
        for link_id in self._dead_links.pop(host, set()) & self.wire.sending:
            link, channel = self._by_id(link_id)
            batches = [m for m in self.wire.remove(link_id) if type(m) is Batch]
            if isinstance(channel, GuardedSender):
                batches.extend(channel.lost)
            producer = core.running.get(link.producer) if link is not None else None
            if link is not None and isinstance(producer, Runner):
                data = [d for b in batches for d in b.data(b.route or producer.route_for(None))]
                lost.append((link.consumer, data))
        self._lost(host, lost)

    def _lost(self, host: str, lost: list[tuple[Hashable, list[Datum]]]) -> None:
        """Data sent to nodes of a dead host, not known to have arrived: failed there."""
        core = self.core
        for reader, data in lost:
            member = core.running.get(reader)
            version = member.version if member is not None else 0
            error = NodeError(reader, version, HostDiedError(host, [reader]))
            for datum in data:
                failed = Datum(
                    datum.value,
                    datum.origin,
                    Route(reader, datum.route),
                    error,
                    datum.parents,
                    datum.trace,
                )
                core.dead_letter(failed)

    # -- stopping ----------------------------------------------------------------------

    async def close(self) -> list[Datum]:
        """Stop every host; return what was not delivered, with its provenance."""
        live = {name: actor for name, actor in self.actors.items() if name not in self._dead}
        delivered: dict[Hashable, int] = {}
        stopped = await asyncio.gather(
            *(actor.stop.remote() for actor in live.values()), return_exceptions=True
        )
        for counts in stopped:
            if isinstance(counts, dict):
                delivered.update(counts)
        inbox = self.inbox
        for link_id in inbox.receiving:
            delivered[link_id] = inbox.receiver(link_id).delivered
        undelivered: list[Datum] = []
        running = self.core.running
        by_id: dict[Hashable, Link] = {link.id: link for link, _ in self._links.values()}
        for link_id in self.wire.sending:
            messages = self.wire.remove(link_id, delivered=delivered.get(link_id))
            guard = self._by_id(link_id)[1]
            if isinstance(guard, GuardedSender):
                messages.extend(guard.lost)
            link = by_id.get(link_id)
            producer = running.get(link.producer) if link is not None else None
            for message in messages:
                if type(message) is Batch and producer is not None:
                    route = message.route
                    if route is None:
                        route = producer.route_for(None)  # type: ignore[attr-defined]
                    undelivered.extend(message.data(route))
        finished = await asyncio.gather(
            *(actor.finish.remote(delivered) for actor in live.values()), return_exceptions=True
        )
        for held in finished:
            if isinstance(held, list):
                undelivered.extend(held)
        await inbox.close()
        self._kill()
        return undelivered

    def abort(self) -> None:
        """Stop at once: the hosts are killed, with whatever they held."""
        if self._inbox is not None:
            self._inbox.abort()
        self._kill()

    def _kill(self) -> None:
        actors, self.actors = self.actors, {}
        for actor in actors.values():
            with contextlib.suppress(Exception):
                ray.kill(actor)
