"""The live-change protocol step by step: plan, align and switch, and its seams.

The plan is computed for given graphs with no topology running: fake
participants, wired the way a running topology wires its nodes, and an
``open_channel`` that records what it makes. Alignment and the switch are
driven by hand on one node with two inputs. The negative control plugs an
aligner that does not align into a real topology through the runtime's seam
and shows that the checker of ``tests.reconfig`` sees the mixed versions.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from typing import TYPE_CHECKING, Any

import pytest

import hotplumb as hp
from hotplumb._change import (
    Aligner,
    Barrier,
    Changes,
    Participant,
    Plan,
    Switch,
    cut,
    plan_change,
    receive,
)
from hotplumb._channel import MemoryChannel
from hotplumb._context import Context
from hotplumb._datum import Batch
from hotplumb._kernel import build_kernel
from hotplumb._runtime import _open
from hotplumb.testing import FakeClock
from tests.reconfig import bump
from tests.test_apply import diamond, run_change

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Hashable, Mapping
    from contextlib import AbstractAsyncContextManager

    from hotplumb._channel import Channel
    from hotplumb._graph import Changelist
    from hotplumb._kernel import Kernel
    from hotplumb._observe import Observer
    from hotplumb._snapshot import NodeStatistics


# -- fake participants -----------------------------------------------------------------


class Member:
    """A participant with the fields the protocol reads and writes; it records calls."""

    def __init__(
        self, key: Hashable, node: hp.Node, version: int, readers: frozenset[Hashable]
    ) -> None:
        self.key = key
        self.node = node
        self.kernel: Kernel = build_kernel(key, node)
        self.version = version
        self.inputs: list[Channel] = []
        self.outputs: list[Channel] = []
        self.entry: Channel | None = None
        self.stopped = False
        state = node.state() if node.state is not None else None
        self._ctx = Context(key, version, node.inputs, readers, FakeClock(), state)
        self.calls: list[str] = []
        self.wakes = 0

    @property
    def ctx(self) -> Context:
        return self._ctx

    def start(self) -> None:
        self.calls.append("start")

    def start_producer(self) -> None:
        self.calls.append("start_producer")

    def stop_producer(self) -> None:
        self.calls.append("stop_producer")

    def flush(self) -> None:
        self.calls.append("flush")

    def retire(self) -> None:
        self.calls.append("retire")

    def release(self) -> None:
        self.calls.append("release")

    def wake(self) -> None:
        self.wakes += 1

    @property
    def hungry(self) -> bool:
        return True


def member_of(participant: Participant) -> Member:
    assert isinstance(participant, Member)
    return participant


class Opener:
    """An ``open_channel`` that makes memory channels and records them."""

    def __init__(self) -> None:
        self.opened: list[MemoryChannel] = []

    def __call__(self, producer: Hashable | None, consumer: Participant, capacity: int) -> Channel:
        channel = MemoryChannel(producer, member_of(consumer), capacity)
        self.opened.append(channel)
        return channel


def wire(
    graph: hp.Graph, capacity: int
) -> tuple[dict[Hashable, Participant], dict[Hashable, Channel]]:
    """Members for ``graph``'s active nodes, wired as a running topology wires them."""
    running: dict[Hashable, Participant] = {
        key: Member(key, node, 0, graph.readers_of(key)) for key, node in graph.nodes.items()
    }
    entries: dict[Hashable, Channel] = {}
    for key, member in running.items():
        node = member.node
        if node.inputs:
            member.inputs = [
                MemoryChannel(k, member_of(member), edge(graph.nodes[k], node, capacity))
                for k in node.inputs
            ]
        else:
            member.entry = entries[key] = MemoryChannel(
                None, member_of(member), node.capacity or capacity
            )
            member.inputs = [member.entry]
    for member in running.values():
        for index, k in enumerate(member.node.inputs):
            running[k].outputs.append(member.inputs[index])
    return running, entries


def edge(producer: hp.Node, reader: hp.Node, capacity: int) -> int:
    size = reader.capacity or capacity
    return min(size, producer.output_capacity or size)


def fields(running: Mapping[Hashable, Participant]) -> dict[Hashable, tuple[Any, ...]]:
    """Everything about the members and their channels that a plan must not change."""
    out: dict[Hashable, tuple[Any, ...]] = {}
    for key, p in running.items():
        m = member_of(p)
        ctx = m.ctx
        channels = tuple((c, c.capacity, c.size, c.closed, bool(c)) for c in m.inputs)
        out[key] = (
            (m.node, m.kernel, m.version, tuple(m.inputs), tuple(m.outputs), m.entry, m.stopped),
            (ctx.version, ctx.inputs, ctx.readers, ctx.state),
            (tuple(m.calls), m.wakes),
            channels,
        )
    return out


def channel_into(
    running: Mapping[Hashable, Participant], reader: Hashable, producer: Hashable
) -> Channel:
    [channel] = [c for c in running[reader].inputs if c.producer == producer]
    return channel


class Change:
    """A change from ``old`` to ``new`` planned over fake members, with what it made."""

    def __init__(
        self, old: hp.Graph, new: hp.Graph, *, capacity: int = 8, generation: int = 7
    ) -> None:
        self.running, self.entries = wire(old, capacity)
        self.before = fields(self.running)
        self.changes = old.diff(new)
        self.kernels = {
            k: build_kernel(k, new.nodes[k])
            for k in self.changes.added | self.changes.replaced | self.changes.rewired
        }
        self.added: dict[Hashable, Participant] = {
            k: Member(k, new.nodes[k], generation, new.readers_of(k)) for k in self.changes.added
        }
        self.added_before = fields(self.added)
        self.opener = Opener()
        self.plan = plan_change(
            old,
            new,
            self.changes,
            generation=generation,
            running=self.running,
            entries=self.entries,
            added=self.added,
            kernels=self.kernels,
            capacity=capacity,
            open_channel=self.opener,
        )

    def untouched(self) -> bool:
        """Whether planning left every member and channel as it was."""
        return fields(self.running) == self.before and fields(self.added) == self.added_before

    def opened(self, producer: Hashable | None) -> MemoryChannel:
        [channel] = [c for c in self.opener.opened if c.producer == producer]
        return channel

    def member(self, key: Hashable) -> Member:
        return member_of(self.running[key])

    def into(self, reader: Hashable, producer: Hashable) -> Channel:
        return channel_into(self.running, reader, producer)

    def capacities(self) -> dict[Channel, int]:
        return dict(self.plan.capacities)


def fn(tag: str) -> Callable[[Any], Any]:
    return lambda x: (tag, x)


def chain() -> hp.Graph:
    return hp.Graph(
        {
            "in": hp.Node(),
            "a": hp.Node(fn("a"), inputs=["in"], output_capacity=3),
            "b": hp.Node(fn("b"), inputs=["a"]),
            "out": hp.sink(lambda d: None, inputs=["b"]),
        }
    )


async def never(ctx: hp.Context) -> AsyncIterator[int]:
    await asyncio.Event().wait()
    yield 0  # pragma: no cover


# -- 1. the plan ---------------------------------------------------------------------------


def test_replacing_a_node_in_a_chain_switches_it_and_its_ancestors_only() -> None:
    old = chain()
    b = hp.Node(fn("b2"), inputs=["a"], capacity=5)
    change = Change(old, old.add_node("b", b))
    plan = change.plan
    assert change.untouched()
    assert plan.generation == 7
    assert plan.region == {"in", "a", "b"}  # the replaced node and its ancestors; not "out"
    assert set(plan.switches) == {"b"}
    switch = plan.switches["b"]
    assert switch.node is b
    assert switch.version == 7
    assert switch.kernel is change.kernels["b"]
    assert switch.inputs == (change.into("b", "a"),)  # the kept channel, not a new one
    assert switch.outputs == (change.into("out", "b"),)
    assert switch.readers == {"out"}
    assert change.opener.opened == []
    # The kept channel takes the new edge capacity at the cut: min(5, a's output 3);
    # so does its kept output into "out", which does not switch (the reader's 8).
    assert change.capacities() == {change.into("b", "a"): 3, change.into("out", "b"): 8}
    assert change.into("b", "a").capacity == 3  # (it was 3 already: min(8, 3))
    assert plan.sources == ("in",)
    assert not plan.added
    assert not plan.wiring
    assert not plan.entries
    assert plan.sealed == frozenset()
    assert plan.stopped == frozenset()


def test_replacing_a_join_puts_every_branch_into_the_region() -> None:
    old = hp.Graph(
        {
            "src": hp.Node(),
            "slow": hp.Node(fn("slow"), inputs=["src"]),
            "fast": hp.Node(fn("fast"), inputs=["src"]),
            "join": hp.Node(lambda a, b: (a, b), inputs=["slow", "fast"]),
            "out": hp.sink(lambda d: None, inputs=["join"]),
            "other": hp.Node(),
            "out2": hp.sink(lambda d: None, inputs=["other"]),
        }
    )
    join = hp.Node(lambda a, b: (b, a), inputs=["slow", "fast"])
    change = Change(old, old.add_node("join", join))
    assert change.untouched()
    assert change.plan.region == {"src", "slow", "fast", "join"}  # not "out", "other", "out2"
    assert set(change.plan.switches) == {"join"}
    assert change.plan.switches["join"].inputs == (
        change.into("join", "slow"),
        change.into("join", "fast"),
    )
    assert change.plan.sources == ("src",)


def test_a_kept_channel_takes_the_new_capacity_at_the_cut_not_before() -> None:
    old = chain()
    new = old.add_node("b", hp.Node(fn("b2"), inputs=["a"], capacity=2))
    change = Change(old, new)
    kept = change.into("b", "a")
    assert change.capacities() == {kept: 2, change.into("out", "b"): 8}
    assert kept.capacity == 3  # unchanged until the cut
    assert change.untouched()
    barrier = Barrier(change.plan)
    cut(change.plan, barrier, change.running, change.entries)
    assert kept.capacity == 2
    assert change.entries["in"].take() is barrier  # the region's source got the barrier


def test_a_replaced_producer_s_output_capacity_reaches_its_kept_output_channels() -> None:
    old = chain()
    new = old.add_node("a", hp.Node(fn("a"), inputs=["in"], output_capacity=2))
    change = Change(old, new)
    assert change.changes.replaced == {"a"}
    assert change.capacities().get(change.into("b", "a")) == 2


def test_adding_a_reader_to_a_source_switches_the_source_and_wires_the_new_node() -> None:
    old = chain()
    tap = hp.sink(lambda d: None, inputs=["in"], capacity=4)
    change = Change(old, old.add_node("tap", tap))
    plan = change.plan
    assert change.untouched()
    assert change.changes.added == {"tap"}
    assert change.changes.readers_changed == {"in"}
    assert plan.region == {"in"}
    assert set(plan.switches) == {"in"}
    source = change.running["in"]
    switch = plan.switches["in"]
    # Readers changed only: the same node, version and kernel.
    assert switch.node is source.node
    assert switch.version == 0
    assert switch.kernel is source.kernel
    assert switch.inputs == (source.entry,)
    assert switch.readers == {"a", "tap"}
    [opened] = change.opener.opened
    assert opened.producer == "in"
    assert opened.consumer is member_of(change.added["tap"])
    assert opened.capacity == 4
    assert set(switch.outputs) == {change.into("a", "in"), opened}
    assert len(switch.outputs) == 2
    assert plan.added == {"tap": change.added["tap"]}
    assert plan.wiring == {"tap": ((opened,), ())}
    assert plan.entries == {"in": source.entry}  # the kept entry channel
    assert change.capacities() == {source.entry: 8}
    assert plan.sources == ("in",)
    assert plan.sealed == frozenset()
    assert plan.stopped == frozenset()
    assert member_of(change.added["tap"]).inputs == []  # wired at the cut, not before


def test_removing_branches_removes_their_nodes_and_seals_a_removed_entry_point() -> None:
    old = hp.Graph(
        {
            "in": hp.Node(),
            "a": hp.Node(fn("a"), inputs=["in"]),
            "out": hp.sink(lambda d: None, inputs=["a"]),
            "c": hp.Node(fn("c"), inputs=["in"]),
            "out3": hp.sink(lambda d: None, inputs=["c"]),
            "feed": hp.source(never),
            "f": hp.Node(fn("f"), inputs=["feed"]),
            "out2": hp.sink(lambda d: None, inputs=["f"]),
        }
    )
    change = Change(old, old.remove_nodes_from(["out2", "out3"]))
    plan = change.plan
    assert change.untouched()
    assert change.changes.removed == {"feed", "f", "out2", "c", "out3"}
    assert change.changes.readers_changed == {"in"}
    assert plan.region == {"in", "c", "out3", "feed", "f", "out2"}  # not "a" and "out"
    assert set(plan.switches) == {"in", "c", "out3", "feed", "f", "out2"}
    for key in ("c", "out3", "feed", "f", "out2"):
        assert plan.switches[key].node is None
        assert plan.switches[key].version == 7
    switch = plan.switches["in"]
    assert switch.node is change.running["in"].node
    assert switch.outputs == (change.into("a", "in"),)
    assert switch.readers == {"a"}
    assert plan.sealed == {"feed"}
    assert plan.stopped == {"feed"}
    assert set(plan.sources) == {"feed", "in"}
    assert len(plan.sources) == 2
    assert plan.entries == {"in": change.entries["in"]}
    assert change.opener.opened == []
    assert not plan.added


def test_a_node_that_reads_a_new_input_gets_a_new_channel_from_it() -> None:
    old = chain()
    b = hp.Node(old.nodes["b"].fn, inputs=["a", "in"])
    change = Change(old, old.add_node("b", b))
    plan = change.plan
    assert change.untouched()
    assert change.changes.rewired == {"b"}
    assert change.changes.readers_changed == {"in"}
    assert plan.region == {"in", "a", "b"}
    assert set(plan.switches) == {"in", "b"}
    [opened] = change.opener.opened
    assert (opened.producer, opened.consumer, opened.capacity) == ("in", change.member("b"), 8)
    rewired = plan.switches["b"]
    assert rewired.node is b
    assert rewired.version == 7
    assert rewired.kernel is change.kernels["b"]
    assert rewired.inputs == (change.into("b", "a"), opened)  # in the new input order
    assert rewired.outputs == (change.into("out", "b"),)
    source = plan.switches["in"]
    assert set(source.outputs) == {change.into("a", "in"), opened}  # the same new channel
    assert source.readers == {"a", "b"}
    assert plan.inputs_of("b") == rewired.inputs
    assert plan.inputs_of("out") == ()  # outside the region: no switch


def test_an_entry_point_that_gains_an_input_is_sealed_and_the_new_source_wired() -> None:
    old = hp.Graph({"x": hp.Node(), "out": hp.sink(lambda d: None, inputs=["x"])})
    new = old.add_nodes_from({"y": hp.Node(capacity=2), "x": hp.Node(inputs=["y"])})
    change = Change(old, new)
    plan = change.plan
    assert change.untouched()
    assert change.changes.added == {"y"}
    assert change.changes.rewired == {"x"}
    assert plan.region == {"x"}
    assert plan.sealed == {"x"}  # injected data can no longer go into "x"
    assert plan.stopped == {"x"}
    assert plan.sources == ("x",)
    y = change.added["y"]
    entry, into_x = change.opened(None), change.opened("y")
    assert len(change.opener.opened) == 2
    assert (entry.producer, entry.consumer, entry.capacity) == (None, member_of(y), 2)
    assert (into_x.producer, into_x.consumer) == ("y", change.member("x"))
    assert plan.wiring == {"y": ((entry,), (into_x,))}
    assert plan.entries == {"y": entry}
    assert plan.switches["x"].inputs == (into_x,)
    assert plan.switches["x"].outputs == (change.into("out", "x"),)


def test_the_cut_wires_new_nodes_seals_and_sends_the_barrier_into_the_region() -> None:
    old = hp.Graph({"x": hp.Node(), "out": hp.sink(lambda d: None, inputs=["x"])})
    new = old.add_nodes_from({"y": hp.Node(), "x": hp.Node(inputs=["y"])})
    change = Change(old, new)
    plan = change.plan
    old_entry = change.entries["x"]
    barrier = Barrier(plan)
    cut(plan, barrier, change.running, change.entries)
    y = member_of(change.running["y"])
    entry, into_x = change.opened(None), change.opened("y")
    assert len(change.opener.opened) == 2
    assert (y.inputs, y.outputs, y.entry) == ([entry], [into_x], entry)
    assert y.calls == ["start"]
    assert change.entries == {"y": entry}
    assert old_entry.closed
    assert old_entry.take() is barrier  # the barrier, then nothing: it is sealed
    assert not old_entry
    assert member_of(change.running["x"]).calls == ["stop_producer"]
    assert not barrier.done.is_set()


# -- 2. alignment and the switch of one node ---------------------------------------------


class Join:
    """A node "j" reading "x" and "y", with readers "out" (in the region) and "side" (not)."""

    def __init__(self, node: hp.Node) -> None:
        self.member = Member("j", node, 0, frozenset({"out", "side"}))
        self.x = MemoryChannel("x", self.member, 4)
        self.y = MemoryChannel("y", self.member, 4)
        self.out = MemoryChannel("j", Member("out", hp.Node(inputs=["j"]), 0, frozenset()), 4)
        self.side = MemoryChannel("j", Member("side", hp.Node(inputs=["j"]), 0, frozenset()), 4)
        self.member.inputs = [self.x, self.y]
        self.member.outputs = [self.out, self.side]
        self.aligner = Aligner()
        self.completed: list[Barrier] = []

    def barrier(self, switch: Switch) -> Barrier:
        plan = Plan(1, frozenset({"x", "y", "j", "out"}), {"j": switch})
        barrier = Barrier(plan, self.completed.append)
        barrier.ack("x")
        barrier.ack("y")  # the producers have forwarded it
        return barrier

    def receive(self, barrier: Barrier, channel: Channel) -> bool:
        return receive(self.member, self.aligner, barrier, channel)


def join_node(**options: Any) -> hp.Node:
    return hp.Node(lambda v: v, inputs=["x", "y"], **options)


async def test_a_node_switches_only_once_the_barrier_is_on_every_input() -> None:
    changed: list[frozenset[Hashable]] = []
    join = Join(join_node(state=lambda: 1))
    new = join_node(
        state=lambda: 0, migrate=lambda s: s + 10, on_change=lambda c: changed.append(c.readers)
    )
    kernel = build_kernel("j", new)
    y2 = MemoryChannel("y", join.member, 4)
    switch = Switch(new, 1, kernel, (join.x, y2), (join.out,), frozenset({"out"}))
    barrier = join.barrier(switch)
    old_node, old_kernel, ctx = join.member.node, join.member.kernel, join.member.ctx

    assert join.receive(barrier, join.x) is False
    assert join.aligner.held == {join.x}  # "x" is not read until the barrier is on "y" too
    assert not join.out  # not forwarded yet
    assert join.member.node is old_node
    assert join.member.inputs == [join.x, join.y]
    assert barrier.pending == {"j", "out"}

    assert join.receive(barrier, join.y) is False  # aligned: switched, does not stop
    assert join.aligner.held == set()
    assert join.out.take() is barrier  # forwarded into the region...
    assert not join.out
    assert not join.side  # ...not outside it
    member = join.member
    assert member.node is new
    assert member.kernel is kernel is not old_kernel
    assert member.version == ctx.version == 1
    assert member.inputs == [join.x, y2]
    assert member.outputs == [join.out]
    assert member.entry is None
    assert member.ctx is ctx  # the node outlives its switch
    assert ctx.inputs == ("x", "y")
    assert ctx.state == 11  # migrated from the old state
    assert ctx.readers == {"out"}
    assert changed == [frozenset({"out"})]  # on_change, with the new readers
    assert barrier.errors == []
    assert barrier.pending == {"out"}
    assert not barrier.done.is_set()
    barrier.ack("out")
    assert barrier.done.is_set()
    assert join.completed == [barrier]
    barrier.ack("out")
    barrier.check()
    assert join.completed == [barrier]  # on_done once


async def test_a_failing_migration_is_recorded_and_the_state_starts_afresh() -> None:
    def broken(state: Any) -> Any:
        raise ValueError("cannot migrate")

    join = Join(join_node(state=lambda: 1))
    new = join_node(state=lambda: 100, migrate=broken)
    switch = Switch(
        new,
        1,
        build_kernel("j", new),
        (join.x, join.y),
        (join.out, join.side),
        frozenset({"out", "side"}),
    )
    barrier = join.barrier(switch)
    join.receive(barrier, join.y)
    join.receive(barrier, join.x)
    [(key, error)] = barrier.errors
    assert key == "j"
    assert isinstance(error, ValueError)
    assert join.member.ctx.state == 100  # the new version's initial state
    assert join.member.node is new
    assert barrier.pending == {"out"}  # acknowledged anyway


async def test_a_failing_change_handler_is_recorded_and_only_called_when_readers_change() -> None:
    calls: list[frozenset[Hashable]] = []

    def handler(ctx: hp.Context) -> None:
        calls.append(ctx.readers)
        raise RuntimeError("handler failed")

    join = Join(join_node(on_change=handler))
    node = join.member.node
    same = Switch(
        node,
        0,
        join.member.kernel,
        (join.x, join.y),
        (join.out, join.side),
        frozenset({"out", "side"}),
    )
    first = join.barrier(same)
    join.receive(first, join.x)
    join.receive(first, join.y)
    assert calls == []  # readers unchanged: not called
    assert first.errors == []
    assert join.member.calls == []  # same node: its source is not restarted
    fewer = Switch(node, 0, join.member.kernel, (join.x, join.y), (join.out,), frozenset({"out"}))
    second = join.barrier(fewer)
    join.receive(second, join.x)
    join.receive(second, join.y)
    assert calls == [frozenset({"out"})]
    [(key, error)] = second.errors
    assert (key, type(error)) == ("j", RuntimeError)
    assert join.member.outputs == [join.out]


async def test_a_removed_node_forwards_seals_its_inputs_and_stops() -> None:
    join = Join(join_node())
    barrier = join.barrier(Switch(None, 1))
    assert join.receive(barrier, join.y) is False
    assert join.aligner.held == {join.y}
    assert not join.x.closed
    assert join.receive(barrier, join.x) is True  # it stops
    assert join.out.take() is barrier
    assert not join.side
    assert [join.x.closed, join.y.closed] == [True, True]
    assert join.member.stopped
    assert join.member.calls == ["flush", "stop_producer"]  # its last word goes first
    with pytest.raises(hp.TopologyClosedError):
        await join.x.put(Batch([1], [1], None))
    assert barrier.pending == {"out"}


async def test_a_node_outside_the_switches_forwards_and_acknowledges() -> None:
    join = Join(join_node())
    plan = Plan(1, frozenset({"j", "out"}), {})  # an ancestor, or a drain
    barrier = Barrier(plan, join.completed.append)
    before = (join.member.node, list(join.member.inputs), list(join.member.outputs))
    join.receive(barrier, join.x)
    assert not barrier.done.is_set()
    join.receive(barrier, join.y)
    assert (join.member.node, join.member.inputs, join.member.outputs) == before
    assert join.out.take() is barrier
    assert barrier.pending == {"out"}
    barrier.ack("out")
    assert join.completed == [barrier]


# -- 3. the negative control: an aligner that does not align --------------------------------


class Unaligned(Aligner):
    """Acts on the first arrival of a barrier and ignores its later arrivals; holds nothing."""

    __slots__ = ("_acted",)

    def __init__(self) -> None:
        super().__init__()
        self._acted: Barrier | None = None

    def arrive(self, barrier: Barrier, channel: Channel, inputs: int) -> bool:
        if barrier is self._acted:
            return False
        self._acted = barrier
        return True


def opened_with(
    aligner: Callable[[], Aligner],
) -> Callable[..., AbstractAsyncContextManager[hp.Topology]]:
    """``hp.run`` with another alignment strategy, through the runtime's seam."""

    def open_topology(
        graph: hp.Graph, *, capacity: int
    ) -> AbstractAsyncContextManager[hp.Topology]:
        return _open(
            graph,
            capacity=capacity,
            clock=None,
            restart=None,
            trace=False,
            max_errors=10_000,
            aligner=aligner,
        )

    return open_topology


def test_the_seam_takes_the_keywords_of_run_and_an_aligner() -> None:
    seam = inspect.signature(_open).parameters
    public = inspect.signature(hp.run).parameters
    assert list(seam) == [*public, "aligner"]
    assert all(seam[name].kind is public[name].kind for name in public)


async def test_without_alignment_a_join_mixes_versions_and_the_checker_sees_it() -> None:
    d = diamond(slow=8)
    plans = [d, bump(bump(d, "join", 1), "fast", 1)]
    problems = await run_change(plans, items=120, before=100, open_topology=opened_with(Unaligned))
    assert any("not explained by one version" in p for p in problems)


async def test_with_the_real_aligner_through_the_same_seam_nothing_is_wrong() -> None:
    d = diamond(slow=8)
    plans = [d, bump(bump(d, "join", 1), "fast", 1)]
    assert await run_change(plans, items=120, before=100, open_topology=opened_with(Aligner)) == []


# -- 4. serialising changes -------------------------------------------------------------------


class Host:
    """A change host over fake members."""

    def __init__(self, graph: hp.Graph, capacity: int = 8) -> None:
        self.clock = FakeClock(5.0)
        self.capacity = capacity
        self.closing = False
        self.observer: Observer | None = None
        self.graph = graph
        self.running, self.entries = wire(graph, capacity)
        self.made: list[Hashable] = []
        self.completions: list[tuple[hp.Graph, Changelist]] = []
        self.opener = Opener()

    def new_participant(
        self,
        key: Hashable,
        node: hp.Node,
        kernel: Kernel,
        version: int,
        readers: frozenset[Hashable],
    ) -> Participant:
        self.made.append(key)
        return Member(key, node, version, readers)

    def open_channel(
        self, producer: Hashable | None, consumer: Participant, capacity: int
    ) -> Channel:
        return self.opener(producer, consumer, capacity)

    def calling_node(self) -> Hashable | None:
        return None

    def settle_memory(self) -> None:
        pass

    async def admit(self, graph: hp.Graph) -> frozenset[Hashable]:
        return frozenset()

    async def begin_barrier(self, barrier: Barrier) -> None:
        pass

    def abandon_barrier(self, barrier: Barrier) -> None:
        pass

    def cut_barrier(self, barrier: Barrier) -> None:
        pass

    def completed(self, graph: hp.Graph, changes: Changelist) -> dict[Hashable, NodeStatistics]:
        self.completions.append((graph, changes))
        self.graph = graph
        return {}


def test_a_deadline_is_the_clock_time_that_far_ahead() -> None:
    changes = Changes(Host(chain()))
    assert changes.deadline(None) is None
    assert changes.deadline(0) == 5.0
    assert changes.deadline(2.5) == 7.5
    assert changes.deadline(math.inf) == math.inf


@pytest.mark.parametrize(
    ("timeout", "error", "message"),
    [
        (-1, ValueError, "timeout must be a number of seconds >= 0, got -1"),
        (-0.5, ValueError, ">= 0, got -0.5"),
        (math.nan, ValueError, ">= 0, got nan"),
        (True, TypeError, "timeout must be a number of seconds or None, got True"),
        ("1", TypeError, "got '1'"),
    ],
)
async def test_a_bad_timeout_raises_before_anything_changes(
    timeout: Any, error: type[Exception], message: str
) -> None:
    old = chain()
    host = Host(old)
    before = fields(host.running)
    changes = Changes(host)
    new = old.add_node("b", hp.Node(fn("b2"), inputs=["a"]))
    with pytest.raises(error, match=message):
        changes.deadline(timeout)
    with pytest.raises(error, match=message):
        await changes.apply(new, timeout)
    with pytest.raises(error, match=message):
        await changes.drain(timeout)
    assert host.graph is old
    assert changes.generation == 0
    assert changes.pending is None
    assert host.made == []
    assert host.completions == []
    assert host.opener.opened == []
    assert fields(host.running) == before
    assert all(not c for c in host.entries.values())  # no barrier was sent
    # Nothing is left locked: a good call goes through.
    await asyncio.wait_for(changes.apply(old, None), 5)


async def test_a_drain_with_no_entry_points_completes() -> None:
    host = Host(hp.Graph())
    changes = Changes(host)
    await asyncio.wait_for(changes.drain(None), 5)
    await asyncio.wait_for(changes.drain(0), 5)


async def test_draining_an_empty_topology_completes() -> None:
    async with hp.run(hp.Graph()) as topo:
        await asyncio.wait_for(topo.drain(), 5)


async def test_an_apply_that_changes_nothing_touches_no_node() -> None:
    old = chain()
    host = Host(old)
    before = fields(host.running)
    changes = Changes(host)
    same = old.add_node("unused", hp.Node())  # provided but not active
    report = await asyncio.wait_for(changes.apply(same, None), 5)
    assert not report.changelist
    assert report.visited == 0
    assert report.generation == 0
    assert report.errors == ()
    assert changes.generation == 0
    assert changes.pending is None
    assert host.graph is same
    assert [graph for graph, _ in host.completions] == [same]
    assert host.made == []
    assert host.opener.opened == []
    assert fields(host.running) == before
    assert all(not c for c in host.entries.values())  # no barrier was sent
