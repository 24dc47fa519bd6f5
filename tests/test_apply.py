"""Live changes: one targeted test per guarantee of ``Topology.apply``."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

import hotplumb as hp
import hotplumb._change
from hotplumb.testing import FakeClock, wait_all_tasks_blocked, wait_until
from tests.reconfig import Log, Plan, Spec, apply, build, bump, check, inject
from tests.test_runtime import fill

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Hashable
    from contextlib import AbstractAsyncContextManager


def chain(delay: int = 0) -> Plan:
    return Plan(
        {
            "src": Spec(),
            "a": Spec(("src",), delay=delay),
            "b": Spec(("a",), delay=delay),
            "out": Spec(("b",), target=True),
        }
    )


def diamond(slow: int = 6) -> Plan:
    return Plan(
        {
            "src": Spec(),
            "slow": Spec(("src",), delay=slow),
            "fast": Spec(("src",)),
            "join": Spec(("slow", "fast"), delay=1),
            "out": Spec(("join",), target=True),
        }
    )


async def run_change(
    plans: list[Plan],
    items: int = 200,
    capacity: int = 8,
    before: int = 50,
    open_topology: Callable[..., AbstractAsyncContextManager[hp.Topology]] = hp.run,
) -> list[str]:
    """Inject ``before`` items, then keep injecting while each plan is applied in turn."""
    log = Log()
    async with open_topology(build(plans[0], log), capacity=capacity) as topo:
        sources = plans[0].sources()
        for seq in range(before):
            for source in sources:
                await inject(topo, log, source, seq)

        async def feed() -> None:
            for seq in range(before, items):
                for source in sources:
                    await inject(topo, log, source, seq)

        feeder = asyncio.create_task(feed())
        for plan in plans[1:]:
            await asyncio.wait_for(apply(topo, log, plan), 10)
        await asyncio.wait_for(feeder, 10)
        await asyncio.wait_for(topo.drain(), 10)
    return check(plans, log)


# 1. version purity, 2. no loss, 3. no duplication, 4. order ---------------------------


async def test_replacing_a_node_mid_stream_keeps_every_guarantee() -> None:
    plans = [chain(delay=1), bump(chain(delay=1), "a", 1)]
    assert await run_change(plans) == []


async def test_a_join_aligns_so_no_datum_mixes_versions() -> None:
    d = diamond()
    plans = [d, bump(bump(d, "join", 1), "fast", 1)]
    assert await run_change(plans) == []


async def test_fan_out_copies_all_take_the_same_version() -> None:
    d = diamond()
    plans = [d, bump(bump(d, "slow", 1), "fast", 1)]
    assert await run_change(plans) == []


async def test_several_changes_in_a_row() -> None:
    d = diamond()
    plans = [d]
    for version in range(1, 6):
        plans.append(bump(plans[-1], ["slow", "fast", "join"][version % 3], version))
    assert await run_change(plans, items=300) == []


# rewiring, adding and removing, factory swap ------------------------------------------


async def test_rewiring_a_node() -> None:
    d = diamond()
    rewired = bump(d, "join", 1, inputs=("fast",))  # drop the slow branch: it is collected
    assert "slow" not in rewired.active()
    plans = [d, rewired, bump(rewired, "join", 2, inputs=("slow", "fast"))]
    assert await run_change(plans) == []


async def test_adding_and_removing_targets_collects_exclusive_nodes() -> None:
    c = chain()
    specs = dict(c.specs)
    specs["extra"] = Spec(("a",), version=1, delay=1)
    specs["out2"] = Spec(("extra",), version=1, target=True)
    grown = Plan(specs)
    plans = [c, grown, c]
    log = Log()
    async with hp.run(build(c, log)) as topo:
        await inject(topo, log, "src", 0)
        await apply(topo, log, grown)
        assert {"extra", "out2"} <= topo.running_keys()
        await inject(topo, log, "src", 1)
        report = await apply(topo, log, c)
        assert report.changelist.removed == {"extra", "out2"}
        assert report.removed["out2"].emitted == 1  # its final counters: it delivered seq 1
        await inject(topo, log, "src", 2)
        await topo.drain()
        assert topo.running_keys() == {"src", "a", "b", "out"}
    assert check(plans, log) == []


def _factory(tag: str) -> Any:
    def factory(key: Hashable) -> hp.Node | None:
        match key:
            case ("double", str(parent)):
                return hp.Node(lambda x: (tag, x * 2), inputs=[parent])
        return None

    return factory


async def test_swapping_the_factory_rebuilds_generated_nodes() -> None:
    got: list[hp.Datum] = []
    graph = hp.Graph(
        {"in": hp.Node(), "out": hp.sink(got.append, inputs=[("double", "in")])},
        factory=_factory("v1"),
    )
    async with hp.run(graph) as topo:
        await topo.inject_many("in", range(100))
        report = await topo.apply(topo.graph.with_factory(_factory("v2")))
        assert report.changelist.replaced == {("double", "in")}
        await topo.inject_many("in", range(100, 200))
        await topo.drain()
    tags = [d.value[0] for d in got]
    assert tags == ["v1"] * 100 + ["v2"] * 100
    assert [d.value[1] for d in got] == [2 * i for i in range(200)]


# 5. state carry-over ------------------------------------------------------------------


def counter(step: int) -> Any:
    def count(value: Any, ctx: hp.Context) -> tuple[int, int]:
        ctx.state += step
        return (value, ctx.state)

    return count


async def test_a_replaced_node_starts_from_the_old_state() -> None:
    got: list[hp.Datum] = []
    graph = hp.Graph(
        {
            "in": hp.Node(),
            "count": hp.Node(counter(1), inputs=["in"], state=lambda: 0),
            "out": hp.sink(got.append, inputs=["count"]),
        }
    )
    async with hp.run(graph, capacity=4) as topo:
        feeder = asyncio.create_task(topo.inject_many("in", range(100)))
        await wait_until(lambda: topo.statistics()["in"].received >= 20)
        new = hp.Node(counter(1000), inputs=["in"], state=lambda: 0)
        await topo.apply(topo.graph.add_node("count", new))
        await feeder
        await topo.drain()
    states = [d.value[1] for d in got]
    switch = next(i for i, s in enumerate(states) if s >= 1000)
    assert states[:switch] == list(range(1, switch + 1))
    assert states[switch:] == [switch + 1000 * k for k in range(1, 100 - switch + 1)]


async def test_a_migration_hook_converts_the_state() -> None:
    got: list[hp.Datum] = []

    def total(value: int, ctx: hp.Context) -> int:
        ctx.state += value
        return int(ctx.state)

    def total_and_count(value: int, ctx: hp.Context) -> tuple[int, int]:
        s, n = ctx.state
        ctx.state = (s + value, n + 1)
        return (s + value, n + 1)

    graph = hp.Graph(
        {
            "in": hp.Node(),
            "agg": hp.Node(total, inputs=["in"], state=lambda: 0),
            "out": hp.sink(got.append, inputs=["agg"]),
        }
    )
    async with hp.run(graph) as topo:
        await topo.inject_many("in", [1, 2, 3])
        new = hp.Node(
            total_and_count, inputs=["in"], state=lambda: (0, 0), migrate=lambda s: (s, 0)
        )
        report = await topo.apply(topo.graph.add_node("agg", new))
        assert report.errors == ()
        await topo.inject("in", 4)
        await topo.drain()
    assert [d.value for d in got] == [1, 3, 6, (10, 1)]


def counting_graph(got: list[hp.Datum]) -> hp.Graph:
    """In -> agg (a running count from 0) -> out, which appends to ``got``."""
    return hp.Graph(
        {
            "in": hp.Node(),
            "agg": hp.Node(counter(1), inputs=["in"], state=lambda: 0),
            "out": hp.sink(got.append, inputs=["agg"]),
        }
    )


async def test_a_failing_migration_starts_fresh_and_says_so() -> None:
    def boom(state: Any) -> Any:
        raise ValueError("cannot migrate")

    got: list[hp.Datum] = []
    async with hp.run(counting_graph(got)) as topo:
        await topo.inject_many("in", ["a", "b", "c"])
        await topo.drain()
        new = hp.Node(counter(2), inputs=["in"], state=lambda: 100, migrate=boom)
        report = await topo.apply(topo.graph.add_node("agg", new))
        await topo.inject("in", "d")
        await topo.drain()
    ((key, error),) = report.errors
    assert key == "agg"
    assert isinstance(error, ValueError)
    assert "cannot migrate" in str(error)
    # The old count (3) is dropped: the new version starts from its own initial state.
    assert [d.value for d in got] == [("a", 1), ("b", 2), ("c", 3), ("d", 102)]


# 6. errored and dead nodes ------------------------------------------------------------


async def test_apply_completes_after_a_node_raised_on_data() -> None:
    got: list[hp.Datum] = []

    def fragile(x: int) -> int:
        if x % 2:
            raise ValueError(x)
        return x

    graph = hp.Graph(
        {
            "in": hp.Node(),
            "f": hp.Node(fragile, inputs=["in"]),
            "out": hp.sink(got.append, inputs=["f"]),
        }
    )
    async with hp.run(graph) as topo:
        await topo.inject_many("in", range(10))
        await topo.apply(topo.graph.add_node("f", hp.Node(lambda x: -x, inputs=["in"])))
        await topo.inject_many("in", range(10, 13))
        await topo.drain()
    assert [d.value for d in got] == [0, 2, 4, 6, 8, -10, -11, -12]
    assert len(topo.errors) == 5


async def test_a_node_whose_task_died_switches_after_its_restart() -> None:
    got: list[hp.Datum] = []

    def crash(d: hp.Datum) -> Any:
        raise RuntimeError("handler died")

    def fragile(x: int) -> int:
        if x == 3:
            raise ValueError(x)
        return x

    graph = hp.Graph(
        {
            "in": hp.Node(),
            "f": hp.Node(fragile, inputs=["in"], on_error=crash),
            "out": hp.sink(got.append, inputs=["f"]),
        }
    )
    async with hp.run(graph) as topo:
        await topo.inject_many("in", range(6))
        await topo.apply(topo.graph.add_node("f", hp.Node(lambda x: x * 10, inputs=["in"])))
        await topo.inject("in", 6)
        await topo.drain()
        assert topo.statistics()["f"].restarts == 1
    assert [d.value for d in got] == [0, 1, 2, 4, 5, 60]


async def test_a_dead_source_is_restarted_in_its_new_version() -> None:
    got: list[hp.Datum] = []
    arrived = asyncio.Event()
    died = asyncio.Event()

    async def broken(ctx: hp.Context) -> AsyncIterator[str]:
        died.set()
        if died.is_set():
            raise OSError("feed down")
        yield "never"

    async def fixed(ctx: hp.Context) -> AsyncIterator[str]:
        yield "fixed"

    def record(d: hp.Datum) -> None:
        got.append(d)
        arrived.set()

    # A long backoff keeps the broken source dead until the change replaces it.
    policy = hp.RestartPolicy(max_restarts=5, backoff=3600)
    graph = hp.Graph(
        {"feed": hp.source(broken, restart=policy), "out": hp.sink(record, inputs=["feed"])}
    )
    async with hp.run(graph) as topo:
        await asyncio.wait_for(died.wait(), 5)
        await asyncio.wait_for(topo.apply(topo.graph.add_node("feed", hp.source(fixed))), 5)
        await asyncio.wait_for(arrived.wait(), 5)
    assert [d.value for d in got] == ["fixed"]


# 7. liveness --------------------------------------------------------------------------


async def test_apply_completes_with_idle_sources() -> None:
    c = chain()
    log = Log()
    async with hp.run(build(c, log)) as topo:
        report = await asyncio.wait_for(apply(topo, log, bump(c, "b", 1)), 5)
    assert report.visited == 3  # src, a, b: the region up to the changed node


def held_pipeline() -> tuple[asyncio.Event, list[Any], hp.Graph]:
    """A pipeline in -> a (tags "old") -> out whose sink waits for the returned gate."""
    gate = asyncio.Event()
    got: list[Any] = []

    async def held(d: hp.Datum) -> None:
        await gate.wait()
        got.append(d.value)

    graph = hp.Graph(
        {
            "in": hp.Node(),
            "a": hp.Node(lambda x: ("old", x), inputs=["in"]),
            "out": hp.sink(held, inputs=["a"]),
        }
    )
    return gate, got, graph


async def test_apply_completes_under_full_backpressure() -> None:
    gate, got, graph = held_pipeline()
    async with hp.run(graph, capacity=2) as topo:
        for i in range(7):  # fill every channel
            await asyncio.wait_for(topo.inject("in", i), 1)
        change = asyncio.create_task(
            topo.apply(topo.graph.add_node("a", hp.Node(lambda x: ("new", x), inputs=["in"])))
        )
        await wait_all_tasks_blocked()
        assert not change.done()  # the barrier waits behind the data, it does not jump it
        gate.set()
        await asyncio.wait_for(change, 5)
        await topo.inject("in", 7)
        await topo.drain()
    assert got == [("old", i) for i in range(7)] + [("new", 7)]


async def test_apply_completes_while_a_source_is_blocked_on_io() -> None:
    never = asyncio.Event()

    async def waiting(ctx: hp.Context) -> AsyncIterator[int]:
        await never.wait()
        yield 1  # pragma: no cover

    graph = hp.Graph(
        {
            "feed": hp.source(waiting),
            "a": hp.Node(inputs=["feed"]),
            "out": hp.sink(lambda d: None, inputs=["a"]),
        }
    )
    async with hp.run(graph) as topo:
        new = hp.Node(lambda x: x, inputs=["feed"])
        report = await asyncio.wait_for(topo.apply(topo.graph.add_node("a", new)), 5)
        assert report.changelist.replaced == {"a"}


async def test_a_timed_out_apply_says_so_and_completes_in_order() -> None:
    gate, got, graph = held_pipeline()
    clock = FakeClock()
    async with hp.run(graph, capacity=2, clock=clock) as topo:
        for i in range(7):
            await topo.inject("in", i)
        new_graph = topo.graph.add_node("a", hp.Node(lambda x: ("new", x), inputs=["in"]))
        change = asyncio.create_task(topo.apply(new_graph, timeout=5))
        await clock.advance(4.9)
        assert not change.done()
        await clock.advance(0.1)
        with pytest.raises(hp.ApplyError, match="did not complete within 5s") as caught:
            await change
        assert caught.value.running == "switching"
        assert "goes on in the background" in str(caught.value)
        gate.set()
        await topo.drain()  # waits for the change to finish first
        assert topo.graph is new_graph
        await topo.inject("in", 7)
        await topo.drain()
    assert got == [("old", i) for i in range(7)] + [("new", 7)]


async def test_a_graph_that_cannot_start_changes_nothing() -> None:
    c = chain()
    log = Log()
    async with hp.run(build(c, log)) as topo:
        before = topo.graph
        bad = before.add_node("b", hp.Node(lambda a, b, c: a, inputs=["a"]))
        with pytest.raises(hp.ApplyError, match="runs the old graph"):
            await topo.apply(bad)
        assert topo.graph is before
        await inject(topo, log, "src", 0)
    assert check([c], log) == []


# 8. serial changes --------------------------------------------------------------------


async def test_concurrent_applies_run_one_after_another() -> None:
    d = diamond()
    plans = [d, bump(d, "join", 1), bump(bump(d, "join", 1), "slow", 2)]
    log = Log()
    async with hp.run(build(d, log)) as topo:
        for seq in range(30):
            await inject(topo, log, "src", seq)
        reports = await asyncio.gather(apply(topo, log, plans[1]), apply(topo, log, plans[2]))
        await topo.drain()
    assert sorted(r.generation for r in reports) == [1, 2]
    assert check(plans, log) == []


async def test_an_apply_that_changes_nothing_touches_nothing() -> None:
    c = chain()
    log = Log()
    async with hp.run(build(c, log)) as topo:
        same = topo.graph.add_node("unused", hp.Node())  # provided but inactive
        report = await topo.apply(same)
        assert not report.changelist
        assert report.visited == 0
        assert report.generation == 0
        assert topo.graph is same
        assert {s.version for s in topo.statistics().values()} == {0}


# 9. demand ----------------------------------------------------------------------------


async def test_a_source_that_loses_its_last_reader_stops_and_one_that_gains_starts() -> None:
    running = asyncio.Event()
    stopped = asyncio.Event()

    async def ticking(ctx: hp.Context) -> AsyncIterator[int]:
        running.set()
        try:
            n = 0
            while True:
                await asyncio.sleep(0)
                n += 1
                yield n
        finally:
            stopped.set()

    numbers = hp.Graph({"in": hp.Node(), "out": hp.sink(lambda d: None, inputs=["in"])})
    with_feed = numbers.add_nodes_from(
        {"feed": hp.source(ticking), "watch": hp.sink(lambda d: None, inputs=["feed"])}
    )
    async with hp.run(numbers) as topo:
        await topo.apply(with_feed)  # gains a reader: starts
        await asyncio.wait_for(running.wait(), 5)
        report = await topo.apply(with_feed.remove_node("watch"))  # loses it: stops
        assert report.changelist.removed == {"feed", "watch"}
        await asyncio.wait_for(stopped.wait(), 5)
        assert "feed" not in topo.running_keys()


async def test_sources_see_their_readers_change() -> None:
    seen: list[frozenset[Hashable]] = []

    def changed(ctx: hp.Context) -> None:
        seen.append(ctx.readers)

    graph = hp.Graph(
        {"in": hp.Node(on_change=changed), "a": hp.sink(lambda d: None, inputs=["in"])}
    )
    async with hp.run(graph) as topo:
        await topo.apply(topo.graph.add_node("b", hp.sink(lambda d: None, inputs=["in"])))
        await topo.apply(topo.graph.remove_node("a"))
    assert seen == [frozenset({"a", "b"}), frozenset({"b"})]


def test_the_checker_counts_paths_through_a_diamond() -> None:
    d = diamond()
    assert d.paths("src") == {("src", "slow", "join", "out"): 1, ("src", "fast", "join", "out"): 1}


async def test_nodes_outside_the_region_are_not_disturbed() -> None:
    gate = asyncio.Event()

    async def stuck(d: hp.Datum) -> None:
        await gate.wait()

    graph = hp.Graph(
        {
            "in_a": hp.Node(),
            "a": hp.Node(lambda x: x, inputs=["in_a"]),
            "out_a": hp.sink(lambda d: None, inputs=["a"]),
            "in_b": hp.Node(),
            "b": hp.Node(lambda x: x, inputs=["in_b"]),
            "out_b": hp.sink(stuck, inputs=["b"]),
        }
    )
    async with hp.run(graph, capacity=2) as topo:
        for i in range(7):  # pipeline b is full and stuck
            await asyncio.wait_for(topo.inject("in_b", i), 1)
        new = topo.graph.add_node("a", hp.Node(lambda x: -x, inputs=["in_a"]))
        report = await asyncio.wait_for(topo.apply(new), 5)  # b's pipeline is not in the way
        assert report.visited == 2  # in_a and a
        assert topo.statistics()["b"].version == 0
        gate.set()


async def test_the_timeout_also_bounds_waiting_for_an_earlier_change() -> None:
    gate, got, graph = held_pipeline()
    clock = FakeClock()
    async with hp.run(graph, capacity=2, clock=clock) as topo:
        for i in range(7):
            await topo.inject("in", i)
        first = topo.graph.add_node("a", hp.Node(lambda x: ("new", x), inputs=["in"]))
        slow = asyncio.create_task(topo.apply(first, timeout=1))
        await clock.advance(1)
        with pytest.raises(hp.ApplyError):
            await slow  # still switching behind the held sink
        second = first.add_node("a", hp.Node(lambda x: ("newer", x), inputs=["in"]))
        blocked = asyncio.create_task(topo.apply(second, timeout=2))
        await clock.advance(2)
        with pytest.raises(hp.ApplyError, match="earlier change did not finish within 2s") as e:
            await blocked
        assert e.value.running == "old"
        gate.set()
        await topo.drain()
        assert topo.graph is first  # the second change never started
    assert got == [("old", i) for i in range(7)]


async def test_a_value_a_replaced_source_was_offering_is_not_lost() -> None:
    gate = asyncio.Event()
    yielded: list[int] = []
    got: list[Any] = []

    async def old_feed(ctx: hp.Context) -> AsyncIterator[int]:
        for i in range(100):
            yielded.append(i)
            yield i

    async def new_feed(ctx: hp.Context) -> AsyncIterator[int]:
        yield -1

    async def held(d: hp.Datum) -> None:
        await gate.wait()
        got.append(d.value)

    graph = hp.Graph({"feed": hp.source(old_feed), "out": hp.sink(held, inputs=["feed"])})
    async with hp.run(graph, capacity=2) as topo:
        await wait_until(lambda: len(yielded) > 4)  # the feed is blocked offering a value
        change = asyncio.create_task(topo.apply(graph.add_node("feed", hp.source(new_feed))))
        await wait_until(lambda: topo.generation == 1)  # the cut is made
        gate.set()
        await change
        await topo.drain()
    assert got == [*yielded, -1]  # every value the old feed yielded, then the new feed's


async def test_an_inject_waiting_on_a_removed_entry_point_raises_instead_of_losing_data() -> None:
    gate, got, graph = held_pipeline()
    graph = graph.add_nodes_from(
        {"other": hp.Node(), "keep": hp.sink(lambda d: None, inputs=["other"])}
    )
    async with hp.run(graph, capacity=2) as topo:
        # Every channel of the pipeline is full, the entry's too, and an inject waits.
        accepted, waiting = await fill(topo, "in")
        change = asyncio.create_task(topo.apply(topo.graph.remove_node("out")))
        with pytest.raises(hp.TopologyClosedError, match="'in' takes no more data"):
            await asyncio.wait_for(waiting, 5)
        gate.set()
        await change
        assert "in" not in topo.running_keys()
    assert got == [("old", i) for i in range(accepted)]  # all accepted data was delivered


async def test_closing_during_a_change_releases_the_apply_with_an_error() -> None:
    _, got, graph = held_pipeline()
    async with hp.run(graph, capacity=2) as topo:
        for i in range(7):
            await topo.inject("in", i)
        new = topo.graph.add_node("a", hp.Node(lambda x: ("new", x), inputs=["in"]))
        change = asyncio.create_task(topo.apply(new))
        await wait_until(lambda: topo.generation == 1)  # the barrier is on its way
        report = await asyncio.wait_for(topo.close(drain=False), 5)
        with pytest.raises(hp.TopologyClosedError, match="stopped before the barrier"):
            await asyncio.wait_for(change, 5)
    assert len(report.undelivered) == 7
    assert got == []  # the sink never got past its gate: all 7 are reported instead


async def test_state_factories_that_fail_during_a_change_are_reported_not_fatal() -> None:
    def broken() -> Any:
        raise RuntimeError("no state for you")

    def boom(state: Any) -> Any:
        raise ValueError("cannot migrate")

    got: list[hp.Datum] = []
    async with hp.run(counting_graph(got)) as topo:
        # A replacement whose migration and then state factory both fail: it runs from None.
        new = hp.Node(counter(2), inputs=["in"], state=broken, migrate=boom)
        report = await topo.apply(topo.graph.add_node("agg", new))
        assert [type(e) for _, e in report.errors] == [ValueError, RuntimeError]
        # A new node whose state factory fails: the change does not start at all.
        extra = hp.Node(counter(1), inputs=["in"], state=broken)
        with pytest.raises(hp.ApplyError, match=r"no state for you.*runs the old graph"):
            await topo.apply(
                topo.graph.add_nodes_from({"x": extra, "y": hp.sink(print, inputs=["x"])})
            )
        assert topo.generation == 1
        assert "x" not in topo.running_keys()
        await topo.inject("in", "a")
        await topo.drain()
    # The replacement's state is None, so its count fails on the first datum.
    assert got == []
    (failed,) = topo.errors
    assert failed.error is not None
    assert isinstance(failed.error.exception, TypeError)
    assert "NoneType" in str(failed.error.exception)


async def test_a_replaced_entry_point_takes_its_new_capacity() -> None:
    graph = hp.Graph({"in": hp.Node(capacity=8), "out": hp.sink(lambda d: None, inputs=["in"])})
    async with hp.run(graph) as topo:
        await topo.apply(graph.add_node("in", hp.Node(lambda x: x, capacity=2)))
        assert topo.snapshot()["in"].channels[0].capacity == 2
        assert topo.statistics()["in"].input_capacity == 2


async def test_injecting_into_an_entry_point_being_removed_says_so() -> None:
    gate, got, graph = held_pipeline()
    async with hp.run(graph, capacity=2) as topo:
        for i in range(7):
            await topo.inject("in", i)
        change = asyncio.create_task(topo.apply(graph.remove_node("out").add_node("k", hp.Node())))
        await wait_until(lambda: topo.generation == 1)
        with pytest.raises(
            hp.NotAnEntryPointError, match="a live change in progress is removing it"
        ):
            await topo.inject("in", 99)
        with pytest.raises(hp.NotAnEntryPointError):
            await topo.inject_many("in", [100])
        gate.set()
        await change
    assert len(got) == 7  # what was accepted before the change was delivered


async def test_injecting_into_an_entry_point_a_change_is_adding_does_not_say_removing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hotplumb._change, "STEP", 1)  # install yields after every node
    graph = hp.Graph({"n": hp.Node(), "out": hp.sink(lambda d: None, inputs=["n"])})
    async with hp.run(graph) as topo:
        new = topo.graph.add_nodes_from(
            {"m": hp.Node(), "m_out": hp.sink(lambda d: None, inputs=["m"])}
        )
        change = asyncio.create_task(topo.apply(new))
        await wait_until(lambda: "m" in topo.running_keys())
        assert topo.generation == 0  # not cut yet: "m" is being added
        with pytest.raises(hp.NotAnEntryPointError) as refused:  # it opens at the cut
            await topo.inject("m", 1)
        assert "removing" not in str(refused.value)
        await asyncio.wait_for(change, 5)


async def test_a_change_that_raises_a_capacity_lets_a_waiting_producer_on_at_once() -> None:
    gate = asyncio.Event()
    got: list[int] = []

    async def held(x: int) -> int:
        await gate.wait()
        return x

    def graph(capacity: int) -> hp.Graph:
        return hp.Graph(
            {
                "in": hp.Node(),
                "f": hp.Node(held, inputs=["in"], capacity=capacity),
                "out": hp.sink(lambda d: got.append(d.value), inputs=["f"]),
            }
        )

    async with hp.run(graph(1)) as topo:
        # One at a time: f holds 0, its channel 1, and "in" waits to send 2.
        await topo.inject("in", 0)
        await wait_until(lambda: topo.statistics()["f"].in_progress == 1)
        await topo.inject("in", 1)
        await wait_until(lambda: topo.statistics()["f"].input_depth == 1)
        await topo.inject("in", 2)
        await wait_until(lambda: topo.statistics()["in"].in_progress == 1)
        change = asyncio.create_task(topo.apply(graph(10)))
        # The kept channel into f takes the new capacity before the cut; "in"
        # sends 2 without f taking anything.
        await wait_until(lambda: topo.statistics()["f"].input_depth == 2)
        gate.set()
        await asyncio.wait_for(change, 5)
        await topo.drain()
    assert got == [0, 1, 2]
