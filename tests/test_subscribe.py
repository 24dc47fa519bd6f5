"""Topology.subscribe: joining and leaving atomically, overflow policies, garbage collection."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import TYPE_CHECKING, Any

import pytest

import hotplumb as hp
from hotplumb.testing import wait_all_tasks_blocked, wait_until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Hashable


def doubling(k: Hashable) -> hp.Node | None:
    """``double/x`` doubles the raw feed ``feed/x``; feeds are entry points."""
    match k:
        case str() if k.startswith("double/"):
            return hp.Node(lambda v: 2 * v, inputs=["feed/" + k.removeprefix("double/")])
        case str() if k.startswith("feed/"):
            return hp.Node()
    return None


@contextlib.asynccontextmanager
async def a_drain_holding_the_change_lock() -> AsyncIterator[
    tuple[hp.Topology, asyncio.Event, asyncio.Task[None]]
]:
    """A topology whose drain holds the change lock until ``gate`` is set."""
    gate = asyncio.Event()
    taken = asyncio.Event()

    async def blocked(d: hp.Datum) -> None:
        taken.set()
        await gate.wait()

    graph = hp.Graph({"x": hp.Node(), "out": hp.sink(blocked, inputs=["x"])}, doubling)
    async with hp.run(graph) as topo:
        await topo.inject("x", 1)
        await asyncio.wait_for(taken.wait(), 5)
        draining = asyncio.create_task(topo.drain())
        await wait_all_tasks_blocked()
        yield topo, gate, draining


async def take(subscription: hp.Subscription, count: int) -> list[Any]:
    values = []
    async with asyncio.timeout(10):
        async for datum in subscription:
            values.append(datum.value)
            if len(values) == count:
                break
    return values


async def test_a_subscriber_receives_the_data_of_its_key() -> None:
    async with hp.run(hp.Graph({}, doubling)) as topo, topo.subscribe("double/a") as sub:
        assert topo.graph.has_node("double/a")
        assert sub.sink_key in topo.graph.targets
        await topo.inject("feed/a", 21)
        [datum] = [d async for d in _first(sub)]
        assert datum.value == 42
        assert datum.origin == 21
        assert datum.path == ("feed/a", "double/a", sub.sink_key)
        assert sub.statistics().delivered == 1


async def _first(sub: hp.Subscription) -> AsyncIterator[hp.Datum]:
    async with asyncio.timeout(5):
        yield await anext(sub)


async def test_leaving_collects_what_only_that_subscriber_needed() -> None:
    async with hp.run(hp.Graph({}, doubling)) as topo:
        async with topo.subscribe("double/a"), topo.subscribe("double/b") as b:
            assert topo.running_keys() >= {"double/a", "feed/a", "double/b", "feed/b"}
            async with topo.subscribe("feed/b") as raw_b:
                assert set(topo.graph.readers_of("feed/b")) == {"double/b", raw_b.sink_key}
            # the raw subscriber is gone; feed/b stays: double/b still reads it
            assert set(topo.graph.readers_of("feed/b")) == {"double/b"}
            assert b.sink_key in topo.graph
        assert len(topo.graph) == 0
        assert topo.running_keys() == frozenset()


async def test_a_shared_source_stops_when_its_last_subscriber_leaves() -> None:
    started = asyncio.Event()
    stopped = asyncio.Event()

    async def ticks(ctx: hp.Context) -> AsyncIterator[int]:
        started.set()
        try:
            n = 0
            while True:
                yield n
                n += 1
                await asyncio.sleep(0)
        finally:
            stopped.set()

    graph = hp.Graph({"ticks": hp.source(ticks)})
    async with hp.run(graph) as topo:
        assert "ticks" not in topo.running_keys()  # nobody reads it: it does not run
        async with topo.subscribe("ticks") as first:
            async with topo.subscribe("ticks") as second:
                assert len(await take(second, 3)) == 3
            assert not stopped.is_set()  # the first subscriber still reads it
            assert len(await take(first, 3)) == 3
        async with asyncio.timeout(5):
            await stopped.wait()
        assert started.is_set()
        assert "ticks" not in topo.running_keys()


async def test_an_unresolvable_key_raises_before_anything_changes() -> None:
    async with hp.run(hp.Graph({"feed/a": hp.Node()}, doubling)) as topo:
        before, generation = topo.graph, topo.generation
        with pytest.raises(hp.MissingNodeError, match="nope"):
            async with topo.subscribe("nope"):
                pytest.fail("entered a subscription to a missing key")
        assert topo.graph is before
        assert topo.generation == generation
        with pytest.raises(hp.InvalidKeyError):
            topo.subscribe(["not", "hashable"])  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="capacity"):
            topo.subscribe("feed/a", capacity=0)
        with pytest.raises(TypeError, match="Overflow"):
            topo.subscribe("feed/a", overflow="disconnect")  # type: ignore[arg-type]


async def test_hundreds_of_subscribers_join_and_leave_at_once() -> None:
    count, keys = 300, 10
    seen_own: list[int] = []

    async def client(i: int, topo: hp.Topology) -> None:
        feed = f"feed/{i % keys}"
        async with topo.subscribe(f"double/{i % keys}") as sub:
            # Joined: data injected from now on reaches it.
            await topo.inject(feed, i)
            async with asyncio.timeout(20):
                async for datum in sub:
                    assert datum.path[-1] == sub.sink_key
                    if datum.origin == i:
                        seen_own.append(i)
                        break

    async with hp.run(hp.Graph({}, doubling)) as topo:
        await asyncio.gather(*(client(i, topo) for i in range(count)))
        assert sorted(seen_own) == list(range(count))
        # every join and every leave went through: nothing is left over
        assert len(topo.graph) == 0
        assert topo.running_keys() == frozenset()
        # Joins and leaves that arrive together share changes.
        assert 2 <= topo.generation < count // 10


async def test_subscribers_that_join_at_once_each_receive_their_own_data() -> None:
    joined = asyncio.Event()
    inside = 0

    async def client(i: int, topo: hp.Topology) -> list[Any]:
        nonlocal inside
        async with topo.subscribe(f"double/{i}") as sub:
            inside += 1
            if inside == 50:
                joined.set()
            await joined.wait()
            await topo.inject(f"feed/{i}", i)
            return await take(sub, 1)

    async with hp.run(hp.Graph({}, doubling)) as topo:
        got = await asyncio.gather(*(client(i, topo) for i in range(50)))
        assert got == [[2 * i] for i in range(50)]
        assert topo.graph.targets == frozenset()


async def test_joins_made_together_are_one_generation() -> None:
    async with hp.run(hp.Graph({}, doubling)) as topo:
        subs = [topo.subscribe(f"double/{i}") for i in range(20)]
        await asyncio.gather(*(s.__aenter__() for s in subs))
        assert topo.generation == 1
        assert {s.sink_key for s in subs} == topo.graph.targets
        await asyncio.gather(*(s.__aexit__(None, None, None) for s in subs))
        assert topo.generation == 2
        assert len(topo.graph) == 0


async def test_a_key_nothing_provides_fails_only_its_own_join() -> None:
    async with hp.run(hp.Graph({}, doubling)) as topo:
        good = [topo.subscribe(f"double/{i}") for i in range(5)]
        bad = topo.subscribe("nothing/here")
        outcomes = await asyncio.gather(
            *(s.__aenter__() for s in [*good[:2], bad, *good[2:]]), return_exceptions=True
        )
        assert isinstance(outcomes[2], hp.MissingNodeError)
        assert "nothing/here" in str(outcomes[2])
        assert [o for i, o in enumerate(outcomes) if i != 2] == good[:2] + good[2:]
        assert topo.generation == 1
        assert topo.graph.targets == {s.sink_key for s in good}
        await topo.inject("feed/3", 1)
        assert await take(good[3], 1) == [2]
        for s in good:
            await s.__aexit__(None, None, None)


async def test_a_change_that_cannot_start_fails_only_the_join_it_belongs_to() -> None:
    def broken_state() -> Any:
        raise RuntimeError("no state for you")

    def factory(k: Hashable) -> hp.Node | None:
        if k == "stateful":
            return hp.Node(lambda s, v: (s, v), inputs=["feed/s"], state=broken_state)
        return doubling(k)

    async with hp.run(hp.Graph({}, factory)) as topo:
        good = [topo.subscribe(f"double/{i}") for i in range(3)]
        bad = topo.subscribe("stateful")
        outcomes = await asyncio.gather(
            *(s.__aenter__() for s in [good[0], bad, *good[1:]]), return_exceptions=True
        )
        assert isinstance(outcomes[1], hp.ApplyError)
        assert outcomes[1].running == "old"
        assert "no state for you" in str(outcomes[1])
        assert [outcomes[0], *outcomes[2:]] == good
        assert topo.graph.targets == {s.sink_key for s in good}
        assert not topo.graph.has_node("stateful")
        await topo.inject("feed/1", 5)
        assert await take(good[1], 1) == [10]
        for s in good:
            await s.__aexit__(None, None, None)


async def test_a_join_cancelled_before_its_change_changes_nothing() -> None:
    async with a_drain_holding_the_change_lock() as (topo, gate, draining):
        cancelled = topo.subscribe("double/a")
        kept = topo.subscribe("double/b")
        joining = asyncio.create_task(cancelled.__aenter__())
        keeping = asyncio.create_task(kept.__aenter__())
        await wait_all_tasks_blocked()
        joining.cancel()
        with pytest.raises(asyncio.CancelledError):
            await joining
        gate.set()
        await asyncio.wait_for(draining, 5)
        assert await asyncio.wait_for(keeping, 5) is kept
        assert topo.graph.targets == {"out", kept.sink_key}
        assert not topo.graph.has_node("double/a")
        await kept.__aexit__(None, None, None)


async def test_a_node_cannot_subscribe_from_its_own_task() -> None:
    async def reenter(d: hp.Datum) -> None:
        async with topo.subscribe("double/a"):
            pass

    async with hp.run(hp.Graph({"x": hp.Node(), "out": hp.sink(reenter, inputs=["x"])})) as topo:
        await topo.inject("x", 1)
        await topo.drain()
        [failed] = list(topo.errors)
        assert failed.error is not None
        assert isinstance(failed.error.exception, hp.ReentrantCallError)
        assert topo.generation == 0


async def test_disconnect_cuts_off_a_slow_subscriber_and_counts_what_it_missed() -> None:
    async with (
        hp.run(hp.Graph({"n": hp.Node()})) as topo,
        topo.subscribe("n", capacity=2) as slow,
        topo.subscribe("n", capacity=100) as fast,
    ):
        for i in range(5):
            await topo.inject("n", i)
        await topo.drain()
        # the fast subscriber was not held up by the slow one
        assert await take(fast, 5) == [0, 1, 2, 3, 4]
        # the slow one's sink is taken out of the graph
        await wait_until(lambda: slow.sink_key not in topo.graph)
        got = [(await anext(slow)).value, (await anext(slow)).value]
        with pytest.raises(hp.SubscriberOverflowError) as caught:
            await anext(slow)
        assert got == [0, 1]  # what it had buffered, then the error
        assert caught.value.missed == 3
        assert caught.value.delivered == 2
        assert caught.value.capacity == 2
        assert "missed 3" in str(caught.value)
        assert "BACKPRESSURE" in str(caught.value)
        stats = slow.statistics()
        assert (stats.received, stats.delivered, stats.missed) == (5, 2, 3)
        assert stats.disconnected


async def test_backpressure_loses_nothing_and_slows_the_graph_down() -> None:
    total = 200
    async with (
        hp.run(hp.Graph({"n": hp.Node()}), capacity=4) as topo,
        topo.subscribe("n", capacity=3, overflow=hp.Overflow.BACKPRESSURE) as sub,
    ):
        feeding = asyncio.create_task(topo.inject_many("n", range(total)))
        await wait_all_tasks_blocked()
        # nobody reads: the sink waits for room, the channels fill, the inject waits
        assert not feeding.done()
        assert sub.statistics().buffered == 3
        assert await take(sub, total) == list(range(total))
        assert await feeding == total
        assert sub.statistics().missed == 0


async def test_leaving_works_when_the_body_raises_or_is_cancelled() -> None:
    async with hp.run(hp.Graph({}, doubling)) as topo:
        with pytest.raises(ValueError, match="boom"):
            async with topo.subscribe("double/a"):
                raise ValueError("boom")
        assert len(topo.graph) == 0

        entered = asyncio.Event()

        async def reader() -> None:
            async with topo.subscribe("double/a", overflow=hp.Overflow.BACKPRESSURE) as sub:
                entered.set()
                async for _ in sub:
                    pass

        task = asyncio.create_task(reader())
        async with asyncio.timeout(5):
            await entered.wait()
        assert topo.graph.has_node("double/a")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(topo.graph) == 0
        assert topo.running_keys() == frozenset()


async def test_a_backpressured_subscriber_that_left_never_holds_up_a_change() -> None:
    counted: list[hp.Datum] = []
    graph = hp.Graph({"n": hp.Node(), "count": hp.sink(counted.append, inputs=["n"])})
    async with hp.run(graph, capacity=2) as topo:
        async with topo.subscribe("n", capacity=1, overflow=hp.Overflow.BACKPRESSURE):
            feeding = asyncio.create_task(topo.inject_many("n", range(50)))
            await wait_all_tasks_blocked()
            assert not feeding.done()
        # leaving woke the waiting sink, which dropped the rest: the feed goes through
        async with asyncio.timeout(5):
            assert await feeding == 50
        await topo.drain()
        assert set(topo.graph) == {"n", "count"}
        assert len(counted) == 50


async def test_iteration_ends_when_the_topology_closes_after_everything_delivered() -> None:
    got: list[int] = []
    entered = asyncio.Event()

    async def reader(topo: hp.Topology) -> None:
        async with topo.subscribe("n") as sub:
            entered.set()
            async for datum in sub:
                got.append(datum.value)

    async with hp.run(hp.Graph({"n": hp.Node()})) as topo:
        task = asyncio.create_task(reader(topo))
        async with asyncio.timeout(5):
            await entered.wait()
        for i in range(10):
            await topo.inject("n", i)
    # the block drained and closed: the reader saw everything, then the end
    async with asyncio.timeout(5):
        await task
    assert got == list(range(10))


async def test_a_subscriber_joining_while_data_flows_sees_the_data_from_then_on() -> None:
    total = 2000
    joined = asyncio.Event()
    async with (
        hp.run(hp.Graph({}, doubling), capacity=16) as topo,
        topo.subscribe("double/x", capacity=total) as early,
    ):

        async def feed() -> None:
            for i in range(total):
                if i == total // 2:
                    async with asyncio.timeout(5):
                        await joined.wait()  # the join is through mid-stream
                await topo.inject("feed/x", i)

        feeding = asyncio.create_task(feed())
        await wait_until(lambda: early.statistics().received > 10)
        async with topo.subscribe("double/x", capacity=total) as late:
            joined.set()
            await feeding
            await topo.drain()
            late_values = [d.origin for d in await _buffered(late)]
        early_values = [d.origin for d in await _buffered(early)]
    assert early_values == list(range(total))
    # a contiguous run up to the end: nothing missed once joined
    assert late_values
    assert late_values == list(range(late_values[0], total))
    assert 0 < late_values[0] <= total // 2


async def _buffered(sub: hp.Subscription) -> list[hp.Datum]:
    """Everything the subscription has buffered (reading it never waits)."""
    return [await anext(sub) for _ in range(sub.statistics().buffered)]


def test_a_subscription_has_no_public_constructor() -> None:
    with pytest.raises(TypeError, match="no public constructor"):
        hp.Subscription()  # type: ignore[call-arg]


async def test_joins_that_fail_together_each_raise_an_exception_of_their_own() -> None:
    async with a_drain_holding_the_change_lock() as (topo, gate, draining):
        subs = [topo.subscribe(f"double/{i}") for i in range(3)]
        joins = [asyncio.create_task(s.__aenter__()) for s in subs]
        await wait_all_tasks_blocked()
        closing = asyncio.create_task(topo.close(drain=False))
        await wait_all_tasks_blocked()
        gate.set()
        outcomes = await asyncio.wait_for(asyncio.gather(*joins, return_exceptions=True), 5)
        await asyncio.wait_for(closing, 5)
        await asyncio.wait_for(asyncio.gather(draining, return_exceptions=True), 5)
    assert all(isinstance(o, hp.TopologyClosedError) for o in outcomes)
    assert len({id(o) for o in outcomes}) == len(outcomes)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are new in Python 3.12")
async def test_subscribers_join_and_leave_under_eager_tasks() -> None:
    loop = asyncio.get_running_loop()
    factory = loop.get_task_factory()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
    try:
        async with hp.run(hp.Graph({}, doubling)) as topo:
            async with topo.subscribe("double/a", capacity=1) as cut:
                await topo.inject_many("feed/a", [1, 2, 3])
                # Cut off for falling behind: its sink is taken away at once...
                await wait_until(lambda: cut.sink_key not in topo.graph)
                await wait_all_tasks_blocked()
            # ...so leaving changed nothing. A later subscriber still joins.
            async with asyncio.timeout(5), topo.subscribe("double/b") as sub:
                await topo.inject("feed/b", 4)
                assert await take(sub, 1) == [8]
    finally:
        loop.set_task_factory(factory)
