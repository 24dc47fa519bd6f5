"""Snapshots of graphs and of running topologies."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import TYPE_CHECKING, Any

import pytest

import hotplumb as hp
from hotplumb._snapshot import graph_snapshot
from hotplumb.testing import FakeClock, wait_until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Hashable


def fragile(x: int) -> int:
    if x % 3 == 0:
        raise ValueError(f"bad {x}")
    return x


def seed_factory(k: Hashable) -> hp.Node | None:
    match k:
        case {"subscriptions": frozenset() as subs, "rollup_window": int() as window}:
            return hp.Node(inputs=[hp.key(subscription=s, rollup_window=window) for s in subs])
        case {"subscription": str() as sub, "rollup_window": int() as window}:
            return hp.Node(inputs=[hp.key(subscription=sub), hp.key(timeout=window)])
        case {"subscription": str()}:
            return hp.Node()
        case {"timeout": int()}:
            return hp.Node(kind=hp.NodeKind.TIMER)
    return None


def seed_graph() -> hp.Graph:
    def client(*subs: str) -> hp.Node:
        wanted = hp.key(subscriptions=set(subs), rollup_window=10_000)
        return hp.sink(lambda d: None, inputs=[wanted])

    return hp.Graph(
        {"client/a": client("source/foo", "source/bar"), "client/b": client("source/foo")},
        seed_factory,
    )


# -- static snapshots ---------------------------------------------------------------


def test_graph_snapshot_shows_kinds_origins_inputs_and_readers() -> None:
    graph = seed_graph()
    snap = graph.snapshot()
    assert snap == graph_snapshot(graph)
    assert not snap.live
    assert snap.generation is None
    assert snap.change is None
    assert [n.key for n in snap.nodes] == list(graph.topological_order())
    assert set(snap.edges) == set(graph.edges)
    foo = hp.key(subscription="source/foo")
    assert snap[foo].kind is hp.NodeKind.ENTRY
    assert snap[hp.key(timeout=10_000)].kind is hp.NodeKind.TIMER
    assert snap["client/a"].kind is hp.NodeKind.TARGET
    assert snap["client/a"].generated is False
    assert snap[foo].generated is True
    rolled = hp.key(subscription="source/foo", rollup_window=10_000)
    assert snap[rolled].kind is hp.NodeKind.PROCESSOR
    assert snap[rolled].inputs == (foo, hp.key(timeout=10_000))
    assert set(snap[rolled].readers) == set(graph.readers_of(rolled))
    assert snap[rolled].generated_for == snap[rolled].readers
    assert snap["client/a"].generated_for == ()
    for n in snap:
        assert n.counters is None
        assert n.version is None
        assert n.channels == ()
        assert n.input_capacity is None
        assert n.input_depth == 0
    assert "client/a" in snap
    assert "nope" not in snap
    assert ["unhashable"] not in snap
    assert len(snap) == len(graph)


def test_snapshots_are_frozen_and_hashable() -> None:
    snap = seed_graph().snapshot()
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.live = True  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.nodes[0].version = 3  # type: ignore[misc]
    assert hash(snap) == hash(seed_graph().snapshot())


def test_to_dict_is_plain_json_with_readable_keys() -> None:
    snap = seed_graph().snapshot()
    data = snap.to_dict()
    assert json.loads(json.dumps(data)) == data
    by_key = {n["key"]: n for n in data["nodes"]}
    node = by_key["subscription=source/foo, rollup_window=10000"]
    assert node["key_repr"] == "key(subscription='source/foo', rollup_window=10000)"
    assert node["kind"] == "processor"
    assert node["generated"] is True
    assert node["inputs"] == ["subscription=source/foo", "timeout=10000"]
    assert ["subscriptions={source/foo}, rollup_window=10000", "client/b"] in data["edges"]


# -- live snapshots -----------------------------------------------------------------


async def test_snapshot_under_load_adds_up() -> None:
    gate = asyncio.Event()
    entered = asyncio.Event()

    async def held(d: hp.Datum) -> None:
        entered.set()
        await gate.wait()

    capacity = 4
    graph = hp.Graph(
        {
            "in": hp.Node(),
            "f": hp.Node(fragile, inputs=["in"]),
            "out": hp.sink(held, inputs=["f"]),
        }
    )
    clock = FakeClock(start=5.0)
    async with hp.run(graph, capacity=capacity, clock=clock) as topo:
        injecting = asyncio.create_task(topo.inject_many("in", range(30)))
        await asyncio.wait_for(entered.wait(), 5)

        def backed_up() -> bool:
            snap = topo.snapshot()
            return snap["in"].channels[0].full and snap["out"].channels[0].full

        await wait_until(backed_up)
        snap = topo.snapshot()
        assert not injecting.done()
        assert snap.live
        assert snap.generation == 0
        assert snap.change is None
        counters = {n.key: n.counters for n in snap}
        c_in, c_f, c_out = counters["in"], counters["f"], counters["out"]
        assert c_in is not None
        assert c_f is not None
        assert c_out is not None
        # The sink is stuck in its first datum: nothing delivered, its batch in progress.
        assert c_out.emitted == 0
        assert c_out.in_progress >= 1
        # Everything that entered is settled or still somewhere in the topology.
        settled = c_out.emitted + sum(c.failed + c.filtered for c in counters.values() if c)
        queued = sum(c.depth for n in snap for c in n.channels if c.producer is not None)
        in_flight = queued + sum(c.in_progress for c in counters.values() if c)
        assert c_in.received == settled + in_flight
        # inject_many sends chunks of `capacity`: what it sent is received or queued.
        sent = c_in.received + snap["in"].input_depth
        assert sent % capacity == 0
        assert sent < 30
        # Every channel is bounded, and reports its producer and capacity.
        assert [c.producer for c in snap["in"].channels] == [None]
        assert [c.producer for c in snap["out"].channels] == ["f"]
        for n in snap:
            assert n.input_capacity == capacity
            assert all(c.depth < 2 * capacity for c in n.channels)
        # The fragile node failed on every multiple of 3 it received.
        assert c_f.failed == len(range(0, c_f.received, 3)) == snap.dead_letters
        error = snap["f"].last_error
        assert error is not None
        assert isinstance(error.exception, ValueError)
        assert str(error.exception) == f"bad {3 * (c_f.failed - 1)}"
        assert snap["out"].last_error is None
        gate.set()
        await asyncio.wait_for(injecting, 5)
        await asyncio.wait_for(topo.drain(), 5)
        clock.jump(2.0)
        final = topo.snapshot()
    c_out = final["out"].counters
    c_f = final["f"].counters
    assert c_out is not None
    assert c_f is not None
    assert c_f.failed == 10
    assert c_out.emitted == 20
    assert all(n.input_depth == 0 and n.counters and n.counters.in_progress == 0 for n in final)
    assert (snap.time, final.time) == (5.0, 7.0)  # the topology clock's time when taken


async def test_snapshot_shows_versions_state_and_json() -> None:
    def count(value: Any, ctx: hp.Context) -> Any:
        ctx.state.append(value)
        return value

    received: list[hp.Datum] = []
    nodes: dict[Hashable, hp.Node] = {
        "in": hp.Node(),
        "f": hp.Node(count, inputs=["in"], state=list),
        "out": hp.sink(received.append, inputs=["f"]),
    }
    graph = hp.Graph(nodes)
    async with hp.run(graph) as topo:
        await topo.inject_many("in", ["a", "b"])
        await asyncio.wait_for(topo.drain(), 5)
        assert topo.snapshot()["f"].state == "['a', 'b']"
        assert topo.snapshot()["in"].state is None
        changed = graph.add_node("f", hp.Node(count, inputs=["in"], state=list, timeout=5))
        await asyncio.wait_for(topo.apply(changed), 5)
        snap = topo.snapshot()
    assert snap.generation == 1
    assert snap.change is None
    assert {n.key: n.version for n in snap} == {"in": 0, "f": 1, "out": 0}
    assert snap["f"].state == "['a', 'b']"  # carried over into the new version
    assert all(n.generated is False for n in snap)
    data = snap.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["nodes"][1]["counters"]["received"] == 2


async def test_a_change_in_progress_is_visible_while_a_sink_holds_it() -> None:
    gate = asyncio.Event()
    entered = asyncio.Event()

    async def held(d: hp.Datum) -> None:
        entered.set()
        await gate.wait()

    graph = hp.Graph(
        {
            "in": hp.Node(),
            "f": hp.Node(lambda x: x + 1, inputs=["in"]),
            "out": hp.sink(held, inputs=["f"]),
        }
    )
    extra: list[hp.Datum] = []
    changed = graph.add_nodes_from(
        {
            "out": hp.sink(held, inputs=["f"], timeout=30),  # replaced: must wait for the sink
            "extra": hp.sink(extra.append, inputs=["in"]),  # added
        }
    )
    async with hp.run(graph) as topo:
        await topo.inject("in", 1)
        await asyncio.wait_for(entered.wait(), 5)
        applying = asyncio.create_task(topo.apply(changed))

        def only_the_sink_pending() -> bool:
            change = topo.snapshot().change
            return change is not None and change.pending == ("out",)

        await wait_until(only_the_sink_pending)
        snap = topo.snapshot()
        change = snap.change
        assert change is not None
        assert change.generation == 1 == snap.generation
        assert change.region == ("f", "in", "out")
        assert set(change.switches) == {"in", "out"}  # in gains a reader; out is replaced
        assert snap["out"].switching
        assert not snap["in"].switching
        assert snap["out"].version == 0  # not switched yet
        assert snap["extra"].generated is None  # the running graph does not have it yet
        assert snap["extra"].version == 1
        assert snap.to_dict()["change"] == {
            "generation": 1,
            "region": ["f", "in", "out"],
            "pending": ["out"],
            "switches": ["in", "out"],
        }
        assert not applying.done()
        gate.set()
        report = await asyncio.wait_for(applying, 5)
        after = topo.snapshot()
    assert report.generation == 1
    assert after.change is None
    assert after["out"].version == 1
    assert not after["out"].switching
    assert after["extra"].generated is False


async def test_a_source_nobody_reads_is_waiting_for_demand() -> None:
    started = asyncio.Event()

    async def feed(ctx: hp.Context) -> AsyncIterator[int]:
        started.set()
        await ctx.wait_for_demand()
        yield 1  # pragma: no cover - nobody ever reads

    graph = hp.Graph(
        {
            "lonely": hp.source(feed, target=True),
            "in": hp.Node(),
            "out": hp.sink(lambda d: None, inputs=["in"]),
        }
    )
    async with hp.run(graph) as topo:
        await asyncio.wait_for(started.wait(), 5)
        snap = topo.snapshot()
    assert snap["lonely"].waiting_for_demand
    assert not snap["in"].waiting_for_demand
    nodes = {n["key"]: n for n in snap.to_dict()["nodes"]}
    assert nodes["lonely"]["waiting_for_demand"] is True
    assert nodes["lonely"]["kind"] == "target"


async def test_a_snapshot_during_a_change_that_reverses_an_edge_returns() -> None:
    release = asyncio.Event()

    async def slow(x: Any) -> Any:
        await release.wait()
        return x

    old = hp.Graph(
        {"B": hp.Node(), "A": hp.Node(slow, inputs=["B"]), "T": hp.sink(print, inputs=["A"])}
    )
    new = hp.Graph(
        {"A": hp.Node(slow), "B": hp.Node(inputs=["A"]), "T": hp.sink(print, inputs=["B"])}
    )
    async with hp.run(old) as topo:
        await topo.inject("B", 1)
        await wait_until(lambda: topo.statistics()["A"].in_progress == 1)
        change = asyncio.create_task(topo.apply(new))
        await wait_until(lambda: topo.statistics()["B"].version == 1)
        # B reads A now; A, busy, still reads B: the current inputs form a cycle.
        snap = topo.snapshot()
        assert {n.key for n in snap.nodes} == {"A", "B", "T"}
        assert "A" in hp.to_dot(topo)
        release.set()
        await asyncio.wait_for(change, 5)
