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
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import ray

from hotplumb._context import Context
from hotplumb._datum import Batch
from hotplumb._errors import HotplumbError, NodeFailedError
from hotplumb._format import format_key
from hotplumb._rayhost import DRIVER, BarrierToken, EngineHost, Link, NodeSpec, Part, SwitchSpec
from hotplumb._raypull import Inbox
from hotplumb._raywire import Host, _far_error, start_host
from hotplumb._runner import Runner
from hotplumb._snapshot import NodeStatistics

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Iterable, Iterator

    from hotplumb._change import Barrier, Participant, Plan
    from hotplumb._channel import Channel
    from hotplumb._clock import Clock
    from hotplumb._datum import Datum, NodeError
    from hotplumb._graph import Graph
    from hotplumb._kernel import Kernel
    from hotplumb._node import Node
    from hotplumb._runtime import _Core

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

    def check(self, graph: Graph, place: Callable[[Hashable], str] | None = None) -> set[str]:
        """The hosts ``graph`` needs under ``place``; raise if a running node would move."""
        saved = self.place
        if place is not None:
            self.place = place
        try:
            hosts: set[str] = set()
            for key, node in graph.nodes.items():
                host = self.host_for(key, node)
                running = self.where.get(key)
                if running is not None and running != host:
                    raise ValueError(
                        f"node {format_key(key)} runs on {running!r}; moving a running node to "
                        f"{host!r} is not supported yet (remove it, then add it there)"
                    )
                hosts.add(host)
        finally:
            self.place = saved
        return hosts - {DRIVER}

    async def admit(self, graph: Graph) -> None:
        """Before a change: check ``graph``'s placement, and start the hosts it needs."""
        await self._start_hosts(self.check(graph))

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
            raise

    # -- the engine seam ---------------------------------------------------------------

    async def open(self, core: _Core) -> None:
        """Start the hosts the graph needs; nothing runs yet."""
        self._core = core
        hosts = self.check(core.graph)
        if not ray.is_initialized():
            ray.init(include_dashboard=False, log_to_driver=False)
        self._wire = Host(DRIVER)
        self._wire.codec = (self._token, self._resolve)
        self._inbox = Inbox(
            on_event=self._event, on_failure=self._host_failed, incoming=self._resolve
        )
        await self._start_hosts(hosts)

    async def _start_hosts(self, hosts: Iterable[str]) -> None:
        new = sorted(set(hosts) - self.actors.keys())
        if not new:
            return
        for name in new:
            options = dict(self.resources.get(name, {}))
            self.actors[name] = start_host(name, actor_class=self.actor_class, **options)
        core = self.core
        # Every host learns of every other (the new ones at their setup, the others now).
        await asyncio.gather(
            *(
                self.actors[name].setup.remote(self.actors, core.restart, core.capacity, core.trace)
                for name in new
            ),
            *(
                actor.meet.remote({name: self.actors[name] for name in new})
                for name, actor in self.actors.items()
                if name not in new
            ),
        )
        for name in new:
            self.inbox.add_host(name, self.actors[name])

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
        if source == DRIVER and target == DRIVER:
            return None
        link = Link(next(self._link_ids), producer, consumer.key, source, target, capacity)
        channel: Channel
        if target == DRIVER:
            assert isinstance(consumer, Runner)
            receiver = self.inbox.add_receiver(link.id, source, producer, consumer, capacity)
            channel = receiver.channel
        elif source == DRIVER:
            channel = self.wire.add_sender(
                link.id, producer, _FarReader(consumer.key), capacity, self.actors[target]
            )
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
        for done in [s for s, b in self._barriers.items() if b.done.is_set()]:
            # Every node of its region has acted on it: no token of it is left
            # in any channel (a node forwards it only to nodes of the region).
            self._forget(done)
        plan = barrier.plan
        self._forget_unused(plan)
        serial = next(self._serials)
        where = self.where
        local: dict[str, set[Hashable]] = {}
        for key in plan.region:
            host = where[key]
            if host != DRIVER:
                local.setdefault(host, set()).add(key)
        switches: dict[str, dict[Hashable, SwitchSpec]] = {}
        running = self.core.running
        for key, switch in plan.switches.items():
            host = where[key]
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
        added: dict[str, dict[Hashable, NodeSpec]] = {}
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
        hosts = (local.keys() | switches.keys() | added.keys() | capacities.keys()) - self._dead
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

    def abandon(self, barrier: Barrier) -> None:
        """``barrier`` will not start: the hosts undo their parts."""
        serial = self._serial_of.get(id(barrier))
        if serial is None:
            return
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
        for key in keys:
            switch = barrier.plan.switches.get(key)
            member = running.get(key)
            if switch is None or not isinstance(member, RemoteMember):
                continue
            if switch.node is None:
                member.stopped = True
                continue
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

    def _fail(self, error: BaseException) -> None:
        """Fail the topology with ``error``, as a node past its restart policy does."""

        async def fail() -> None:
            raise error

        self.core.spawn(fail(), "hotplumb host failure")

    def _host_failed(self, host: str, error: BaseException) -> None:
        if host in self._dead or self.core.closed:
            return
        self._dead.add(host)
        keys = [m.key for m in self._remote() if m.host == host]
        failure = HostDiedError(host, keys)
        failure.__cause__ = error
        self._fail(failure)

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
