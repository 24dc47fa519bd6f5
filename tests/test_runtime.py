"""The runtime: processing kinds, provenance, demand, errors, backpressure, shutdown."""

from __future__ import annotations

import asyncio
import gc
from typing import TYPE_CHECKING, Any

import pytest

import hotplumb as hp
from hotplumb.testing import FakeClock, wait_all_tasks_blocked, wait_until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Hashable, Iterator


def linear(*stages: Any, capacity: int | None = None) -> tuple[hp.Graph, list[hp.Datum]]:
    """Numbers -> s0 -> s1 ... -> out, one stage per callable."""
    received: list[hp.Datum] = []
    nodes: dict[Hashable, hp.Node] = {"numbers": hp.Node(capacity=capacity)}
    previous = "numbers"
    for i, fn in enumerate(stages):
        nodes[f"s{i}"] = hp.Node(fn, inputs=[previous], capacity=capacity)
        previous = f"s{i}"
    nodes["out"] = hp.sink(received.append, inputs=[previous], capacity=capacity)
    return hp.Graph(nodes), received


async def test_contract_example() -> None:
    received: list[hp.Datum] = []
    graph = hp.Graph(
        {
            "numbers": hp.Node(),
            "plus1": hp.Node(lambda x: x + 1, inputs=["numbers"]),
            "out": hp.sink(received.append, inputs=["plus1"]),
        }
    )
    async with hp.run(graph) as topo:
        assert topo.graph is graph
        await topo.inject("numbers", 41)
        await topo.drain()
        assert received[0].value == 42
    assert received[0].origin == 41
    assert received[0].path == ("numbers", "plus1", "out")
    assert received[0].error is None


async def test_plain_async_generator_and_async_generator_callables() -> None:
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    def twice(x: int) -> Iterator[int]:
        yield x
        yield x

    async def plus_minus(x: int) -> AsyncIterator[int]:
        yield x + 1
        await asyncio.sleep(0)
        yield x - 1

    graph, received = linear(lambda x: x + 1, double, twice, plus_minus)
    async with hp.run(graph) as topo:
        await topo.inject_many("numbers", [1, 10])
        await topo.drain()
    # 1 -> 2 -> 4 -> 4,4 -> 5,3,5,3
    assert [d.value for d in received] == [5, 3, 5, 3, 23, 21, 23, 21]
    assert {d.origin for d in received[:4]} == {1}
    stats = topo.statistics()
    assert stats["s2"].received == 2
    assert stats["s2"].emitted == 4


async def test_skip_filters_and_none_is_an_ordinary_value() -> None:
    graph, received = linear(lambda x: hp.SKIP if x % 2 else None)
    async with hp.run(graph) as topo:
        await topo.inject_many("numbers", range(6))
        await topo.drain()
    assert [d.value for d in received] == [None, None, None]
    assert [d.origin for d in received] == [0, 2, 4]
    assert topo.statistics()["s0"].filtered == 3


async def test_generator_yielding_nothing_counts_as_filtered() -> None:
    def keep_big(x: int) -> Iterator[int]:
        if x > 2:
            yield x

    graph, received = linear(keep_big)
    async with hp.run(graph) as topo:
        await topo.inject_many("numbers", range(5))
        await topo.drain()
    assert [d.value for d in received] == [3, 4]
    assert topo.statistics()["s0"].filtered == 3


async def test_context_shows_key_datum_and_readers() -> None:
    seen: list[tuple[Hashable, tuple[Hashable, ...], frozenset[Hashable]]] = []

    def look(value: int, ctx: hp.Context) -> int:
        seen.append((ctx.key, ctx.datum.path, ctx.readers))
        return value

    received: list[hp.Datum] = []
    graph = hp.Graph(
        {
            "in": hp.Node(),
            "look": hp.Node(look, inputs=["in"]),
            "a": hp.sink(received.append, inputs=["look"]),
            "b": hp.sink(received.append, inputs=["look"]),
        }
    )
    async with hp.run(graph) as topo:
        await topo.inject("in", 1)
        await topo.drain()
    assert seen == [("look", ("in", "look"), frozenset({"a", "b"}))]
    assert sorted(str(d.path[-1]) for d in received) == ["a", "b"]  # fan-out to both readers


async def test_stateful_node_keeps_a_running_count() -> None:
    def count(value: Any, ctx: hp.Context) -> int:
        ctx.state += 1
        return int(ctx.state)

    graph, received = linear(count)
    graph = graph.add_node("s0", hp.Node(count, inputs=["numbers"], state=lambda: 0))
    async with hp.run(graph) as topo:
        await topo.inject_many("numbers", "abcd")
        await topo.drain()
    assert [d.value for d in received] == [1, 2, 3, 4]


async def test_multi_input_merge_path_tells_the_input() -> None:
    received: list[hp.Datum] = []
    graph = hp.Graph(
        {
            "left": hp.Node(),
            "right": hp.Node(),
            "merge": hp.Node(inputs=["left", "right"]),
            "out": hp.sink(received.append, inputs=["merge"]),
        }
    )
    async with hp.run(graph) as topo:
        await topo.inject("left", "L")
        await topo.inject("right", "R")
        await topo.drain()
    paths = {d.value: d.path for d in received}
    assert paths == {"L": ("left", "merge", "out"), "R": ("right", "merge", "out")}


async def test_diamond_fan_out_and_fan_in() -> None:
    received: list[hp.Datum] = []
    nodes: dict[Hashable, hp.Node] = {"in": hp.Node()}
    for b in range(4):
        nodes[f"b{b}"] = hp.Node(lambda x, b=b: x * 10 + b, inputs=["in"])
    nodes["out"] = hp.sink(received.append, inputs=[f"b{b}" for b in range(4)])
    async with hp.run(hp.Graph(nodes)) as topo:
        await topo.inject_many("in", [1, 2])
        await topo.drain()
    assert sorted(d.value for d in received) == [10, 11, 12, 13, 20, 21, 22, 23]
    assert {d.path[1] for d in received} == {"b0", "b1", "b2", "b3"}


async def test_provenance_routes_are_shared_not_copied() -> None:
    graph, received = linear(*(lambda x: x + 1 for _ in range(5)))
    async with hp.run(graph) as topo:
        await topo.inject_many("numbers", range(100))
        await topo.drain()
    assert len({id(d.route) for d in received}) == 1
    assert received[0].path == ("numbers", "s0", "s1", "s2", "s3", "s4", "out")


async def test_tracing_records_every_hop() -> None:
    clock = FakeClock(start=10.0)

    def taking(seconds: float, fn: Any) -> Any:
        def stage(x: int) -> int:
            clock.jump(seconds)  # the call "takes" this long
            return int(fn(x))

        return stage

    graph, received = linear(taking(0.25, lambda x: x + 1), taking(0.5, lambda x: x * 2))
    async with hp.run(graph, trace=True, clock=clock) as topo:
        await topo.inject("numbers", 1)
        await topo.drain()
    assert received[0].value == 4
    trace = received[0].trace
    assert trace is not None
    assert [(h.key, h.start, h.end) for h in trace.hops()] == [
        ("numbers", 10.0, 10.0),
        ("s0", 10.0, 10.25),
        ("s1", 10.25, 10.75),
    ]


# -- errors -----------------------------------------------------------------------


def fragile(x: int) -> int:
    if x % 3 == 0:
        raise ValueError(f"bad {x}")
    return x


async def test_a_raising_node_isolates_the_datum_and_keeps_going() -> None:
    graph, received = linear(fragile, lambda x: hp.SKIP if x == 4 else x)
    async with hp.run(graph) as topo:
        injected = await topo.inject_many("numbers", range(10))
        await topo.drain()
        stats = topo.statistics()
    failed = sum(s.failed for s in stats.values())
    filtered = sum(s.filtered for s in stats.values())
    # the counting identity for the entry point (nothing is in flight after drain)
    assert injected == len(received) + filtered + failed == 10
    assert [d.value for d in received] == [1, 2, 5, 7, 8]
    assert len(topo.errors) == failed == 4
    bad = topo.errors[0]
    assert bad.value == 0
    assert bad.origin == 0
    assert bad.path == ("numbers", "s0")
    assert bad.error is not None
    assert bad.error.key == "s0"
    assert isinstance(bad.error.exception, ValueError)
    assert "fragile" in bad.error.traceback
    assert "bad 0" in bad.explain()


async def test_counting_identity_holds_while_data_is_in_flight() -> None:
    gate = asyncio.Event()

    async def held(d: hp.Datum) -> None:
        await gate.wait()

    nodes: dict[Hashable, hp.Node] = {
        "in": hp.Node(),
        "f": hp.Node(fragile, inputs=["in"]),
        "out": hp.sink(held, inputs=["f"]),
    }
    async with hp.run(hp.Graph(nodes), capacity=4) as topo:
        task = asyncio.create_task(topo.inject_many("in", range(30)))
        await wait_until(lambda: topo.statistics()["in"].received >= 12)
        stats = topo.statistics()
        in_flight = sum(s.input_depth + s.in_progress for s in stats.values())
        assert stats["out"].in_progress >= 1  # the batch the sink is blocked in
        settled = stats["out"].emitted + sum(s.failed + s.filtered for s in stats.values())
        injected = stats["in"].received + stats["in"].input_depth  # taken + still waiting
        assert injected == settled + in_flight
        gate.set()
        await task
        await topo.drain()
    stats = topo.statistics()
    assert stats["in"].received == 30 == stats["out"].emitted + stats["f"].failed


async def test_error_handler_replaces_or_swallows() -> None:
    handled: list[hp.Datum] = []

    def handler(d: hp.Datum) -> Any:
        handled.append(d)
        return -1 if d.value == 3 else hp.SKIP

    nodes: dict[Hashable, hp.Node] = {"in": hp.Node()}
    nodes["f"] = hp.Node(fragile, inputs=["in"], on_error=handler)
    received: list[hp.Datum] = []
    nodes["out"] = hp.sink(received.append, inputs=["f"])
    async with hp.run(hp.Graph(nodes)) as topo:
        await topo.inject_many("in", range(7))
        await topo.drain()
    assert [d.value for d in handled] == [0, 3, 6]
    assert [d.value for d in received] == [1, 2, -1, 4, 5]
    assert len(topo.errors) == 0
    assert topo.statistics()["f"].failed == 2


async def test_errors_are_awaitable() -> None:
    graph, _ = linear(fragile)
    async with hp.run(graph) as topo:
        await topo.inject("numbers", 1)
        await topo.inject("numbers", 3)
        failed = await asyncio.wait_for(topo.errors.wait(1), 5)
    assert failed.origin == 3


async def test_a_node_whose_task_dies_is_restarted_and_loses_nothing() -> None:
    def bad_handler(d: hp.Datum) -> Any:
        raise RuntimeError("handler broke")

    received: list[hp.Datum] = []
    nodes: dict[Hashable, hp.Node] = {
        "in": hp.Node(),
        "f": hp.Node(fragile, inputs=["in"], on_error=bad_handler),
        "out": hp.sink(received.append, inputs=["f"]),
    }
    async with hp.run(hp.Graph(nodes), restart=hp.RestartPolicy(max_restarts=5)) as topo:
        await topo.inject_many("in", range(1, 8))
        await topo.drain()
    # 3 and 6 failed (the handler's error is recorded); the rest went through in order
    assert [d.value for d in received] == [1, 2, 4, 5, 7]
    stats = topo.statistics()["f"]
    assert stats.restarts == 2
    assert (stats.received, stats.emitted, stats.failed) == (7, 5, 2)  # nothing counted twice
    assert [d.origin for d in topo.errors] == [3, 6]
    error = topo.errors[0].error
    assert error is not None
    assert isinstance(error.exception, RuntimeError)
    assert isinstance(error.exception.__context__, ValueError)


async def test_past_its_restart_limit_a_failure_propagates_as_an_exception_group() -> None:
    async def flaky(ctx: hp.Context) -> AsyncIterator[int]:
        yield 1
        raise OSError("feed down")

    received: list[hp.Datum] = []
    graph = hp.Graph(
        {
            "feed": hp.source(flaky, restart=hp.RestartPolicy(max_restarts=2)),
            "out": hp.sink(received.append, inputs=["feed"]),
        }
    )
    with pytest.raises(ExceptionGroup) as caught:
        async with hp.run(graph):
            await asyncio.sleep(10)  # cancelled by the failure
    (failure,) = caught.value.exceptions
    assert isinstance(failure, hp.NodeFailedError)
    assert failure.key == "feed"
    assert failure.restarts == 2
    assert isinstance(failure.__cause__, OSError)
    assert "feed" in str(failure)


# -- sources and demand -------------------------------------------------------------


async def test_generator_source_produces_while_it_has_readers() -> None:
    readers: list[frozenset[Hashable]] = []

    async def count_up(ctx: hp.Context) -> AsyncIterator[int]:
        readers.append(ctx.readers)
        await ctx.wait_for_demand()
        for i in range(5):
            yield i

    received: list[hp.Datum] = []
    done = asyncio.Event()

    def collect(d: hp.Datum) -> None:
        received.append(d)
        if len(received) == 5:
            done.set()

    graph = hp.Graph({"feed": hp.source(count_up), "out": hp.sink(collect, inputs=["feed"])})
    async with hp.run(graph):
        await asyncio.wait_for(done.wait(), 5)
    assert readers == [frozenset({"out"})]
    assert [d.value for d in received] == [0, 1, 2, 3, 4]
    assert received[0].path == ("feed", "out")


async def test_a_source_nothing_reads_does_not_run() -> None:
    started = asyncio.Event()

    async def feed(ctx: hp.Context) -> AsyncIterator[int]:
        started.set()
        yield 1

    graph = hp.Graph(
        {
            "unread": hp.source(feed),
            "numbers": hp.Node(),
            "out": hp.sink(lambda d: None, inputs=["numbers"]),
        }
    )
    async with hp.run(graph) as topo:
        await topo.inject("numbers", 1)
        await topo.drain()
        assert "unread" not in topo.running_keys()
    assert not started.is_set()


# -- backpressure --------------------------------------------------------------------


@pytest.mark.slow
async def test_a_million_items_through_a_slow_sink_keep_memory_bounded() -> None:
    capacity = 64
    peak = 0
    count = 0
    topo_ref: list[hp.Topology] = []

    async def slow(d: hp.Datum) -> None:
        nonlocal peak, count
        count += 1
        if count % 1000 == 0:
            await asyncio.sleep(0)
            depth = sum(s.input_depth for s in topo_ref[0].statistics().values())
            peak = max(peak, depth)

    graph = hp.Graph(
        {
            "in": hp.Node(),
            "a": hp.Node(lambda x: x + 1, inputs=["in"]),
            "out": hp.sink(slow, inputs=["a"]),
        }
    )
    async with hp.run(graph, capacity=capacity) as topo:
        topo_ref.append(topo)
        await topo.inject_many("in", range(1_000_000))
        await topo.drain()
    assert count == 1_000_000
    # each of the 3 channels holds less than 2 * capacity items at any time
    assert 0 < peak < 3 * 2 * capacity


async def test_inject_waits_when_the_entry_channel_is_full() -> None:
    gate = asyncio.Event()

    async def blocked(d: hp.Datum) -> None:
        await gate.wait()

    graph = hp.Graph({"in": hp.Node(), "out": hp.sink(blocked, inputs=["in"])})
    async with hp.run(graph, capacity=2) as topo:
        accepted, waiting = await fill(topo, "in")
        # Bounded: 2 in each of the two channels, and a batch in hand at each node
        # (small values injected one at a time may travel as one batch).
        assert 5 <= accepted <= 8
        assert not waiting.done()
        gate.set()
        await asyncio.wait_for(waiting, 5)


async def fill(topo: hp.Topology, key: str, *, most: int = 100) -> tuple[int, asyncio.Task[None]]:
    """Inject 0, 1, 2, ... into ``key`` until an inject waits; return how many went in, and it."""
    for i in range(most):
        task = asyncio.create_task(topo.inject(key, i))
        await wait_all_tasks_blocked()
        if not task.done():
            return i, task
        task.result()
    raise AssertionError(f"{most} injects went in without waiting: the channels are not bounded")


# -- shutdown and bad use ----------------------------------------------------------------


async def test_leaving_the_block_drains_and_leaves_no_task_behind() -> None:
    before = asyncio.all_tasks()

    async def slowly(x: int) -> int:
        await asyncio.sleep(0)
        return x

    graph, received = linear(slowly, slowly)
    async with hp.run(graph) as topo:
        await topo.inject_many("numbers", range(50))
    assert len(received) == 50
    assert topo.closed
    assert asyncio.all_tasks() == before
    gc.collect()


async def test_close_without_drain_reports_what_was_not_delivered() -> None:
    gate = asyncio.Event()

    async def blocked(d: hp.Datum) -> None:
        await gate.wait()

    graph = hp.Graph(
        {
            "in": hp.Node(),
            "a": hp.Node(lambda x: x * 2, inputs=["in"]),
            "out": hp.sink(blocked, inputs=["a"]),
        }
    )
    async with hp.run(graph) as topo:
        await topo.inject_many("in", range(10))
        await wait_until(lambda: topo.statistics()["out"].received >= 1)
        report = await asyncio.wait_for(topo.close(drain=False), 5)
    assert not report.drained
    assert sorted(d.origin for d in report.undelivered) == list(range(10))
    assert {d.path[-1] for d in report.undelivered} <= {"in", "a", "out"}


async def test_cancelling_the_owner_stops_promptly() -> None:
    started = asyncio.Event()

    async def forever(ctx: hp.Context) -> AsyncIterator[int]:
        started.set()
        while True:
            await asyncio.sleep(0)
            yield 1

    graph = hp.Graph({"feed": hp.source(forever), "out": hp.sink(lambda d: None, inputs=["feed"])})

    async def owner() -> None:
        async with hp.run(graph):
            await asyncio.sleep(3600)

    before = asyncio.all_tasks()
    task = asyncio.create_task(owner())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert asyncio.all_tasks() == before


async def test_an_exception_in_the_block_comes_out_unwrapped() -> None:
    graph, _ = linear()
    with pytest.raises(KeyError, match="mine"):
        async with hp.run(graph):
            raise KeyError("mine")


async def test_bad_use_gets_clear_errors() -> None:
    graph, _ = linear(lambda x: x)
    graph = graph.add_node("idle", hp.Node())
    async with hp.run(graph) as topo:
        with pytest.raises(hp.NotAnEntryPointError, match="no such node"):
            await topo.inject("nope", 1)
        with pytest.raises(hp.NotAnEntryPointError, match="not an entry point"):
            await topo.inject("s0", 1)
        with pytest.raises(hp.NotAnEntryPointError, match="not running"):
            await topo.inject("idle", 1)
        with pytest.raises(hp.InvalidKeyError, match="unhashable"):
            await topo.inject(["list"], 1)  # type: ignore[arg-type]
    with pytest.raises(hp.TopologyClosedError):
        await topo.inject("numbers", 1)


async def test_a_callable_with_an_unusable_signature_is_refused_before_start() -> None:
    graph, _ = linear(lambda a, b, c: a)
    with pytest.raises(hp.InvalidNodeCallableError, match=r"s0.*3 required positional"):
        async with hp.run(graph):
            pass  # pragma: no cover


async def test_close_with_a_timeout_stops_a_stuck_drain_and_reports_what_was_left() -> None:
    never = asyncio.Event()

    async def stuck(d: hp.Datum) -> None:
        await never.wait()

    clock = FakeClock()
    graph = hp.Graph({"in": hp.Node(), "out": hp.sink(stuck, inputs=["in"])})
    async with hp.run(graph, clock=clock) as topo:
        await topo.inject_many("in", range(5))
        closing = asyncio.create_task(topo.close(timeout=3))
        await clock.advance(3)
        report = await asyncio.wait_for(closing, 5)
    assert not report.drained
    assert sorted(d.origin for d in report.undelivered) == list(range(5))
