"""Time: the fake clock, timers and the missed-tick policy, rollups, processing timeouts.

Every test runs on :class:`hotplumb.testing.FakeClock`; nothing sleeps in real time.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING, Any

import pytest

import hotplumb as hp
from hotplumb.testing import FakeClock, wait_all_tasks_blocked, wait_until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Hashable

# -- the fake clock -------------------------------------------------------------------


async def test_fake_clock_wakes_sleepers_in_deadline_order() -> None:
    clock = FakeClock(start=100.0)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, deadline: float) -> None:
        await clock.sleep_until(deadline)
        woke.append((name, clock.now()))

    async with asyncio.TaskGroup() as tg:
        for name, deadline in [("c", 103.0), ("a", 101.0), ("b1", 102.0), ("b2", 102.0)]:
            tg.create_task(sleeper(name, deadline))
        await wait_all_tasks_blocked()
        assert clock.sleepers == 4
        assert clock.next_deadline == 101.0
        await clock.advance(2.5)
        assert woke == [("a", 101.0), ("b1", 102.0), ("b2", 102.0)]
        assert clock.now() == 102.5
        await clock.advance_to(103.0)
    assert woke[-1] == ("c", 103.0)
    assert clock.sleepers == 0
    assert clock.next_deadline is None


async def test_fake_clock_lets_woken_tasks_run_before_moving_on() -> None:
    clock = FakeClock()
    seen: list[float] = []

    async def chain() -> None:
        # Each wake-up schedules the next sleep; all fall inside one advance.
        for step in (1.0, 0.5, 0.25):
            await clock.sleep_until(clock.now() + step)
            seen.append(clock.now())

    task = asyncio.create_task(chain())
    await clock.advance(2.0)
    assert task.done()
    assert seen == [1.0, 1.5, 1.75]


async def test_fake_clock_skips_cancelled_sleepers_and_refuses_bad_moves() -> None:
    clock = FakeClock()
    task = asyncio.create_task(clock.sleep_until(5.0))
    await wait_all_tasks_blocked()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert clock.sleepers == 0
    assert clock.next_deadline is None
    with pytest.raises(ValueError, match="backwards"):
        await clock.advance(-1)
    with pytest.raises(ValueError, match="backwards"):
        await clock.advance_to(-1)
    with pytest.raises(ValueError, match="backwards"):
        clock.jump(-1)
    other = asyncio.create_task(clock.advance(1))
    await asyncio.sleep(0)  # `other` is now inside advance
    with pytest.raises(RuntimeError, match="already running"):
        await clock.advance(1)
    await other
    assert clock.now() == 1.0


async def test_a_sleep_until_the_past_returns_at_once() -> None:
    clock = FakeClock(start=10.0)
    await clock.sleep_until(3.0)
    assert clock.now() == 10.0
    assert clock.sleepers == 0


async def test_jump_makes_due_sleepers_runnable() -> None:
    clock = FakeClock()
    task = asyncio.create_task(clock.sleep_until(1.0))
    await wait_all_tasks_blocked()
    clock.jump(1.5)
    await wait_all_tasks_blocked()
    assert task.done()
    assert clock.now() == 1.5


async def test_drive_runs_a_timed_coroutine_in_fake_time() -> None:
    clock = FakeClock()

    async def work() -> float:
        for _ in range(10):
            await clock.sleep_until(clock.now() + 60.0)
        return clock.now()

    assert await clock.drive(work()) == 600.0
    with pytest.raises(TimeoutError, match="fake seconds"):
        await clock.drive(work(), max_time=100.0)
    assert clock.sleepers == 0  # the unfinished coroutine was cancelled

    async def stuck() -> None:
        await asyncio.Event().wait()

    with pytest.raises(RuntimeError, match="none sleeps on the clock"):
        await clock.drive(stuck())


async def test_the_waits_are_bounded() -> None:
    async def busy() -> None:
        while True:  # noqa: ASYNC110 - a task that never blocks is the point
            await asyncio.sleep(0)

    task = asyncio.create_task(busy())
    try:
        with pytest.raises(RuntimeError, match="still runnable"):
            await wait_all_tasks_blocked(max_steps=10)
    finally:
        task.cancel()
    with pytest.raises(TimeoutError, match="still false"):
        await wait_until(lambda: False, timeout=0)
    flag: list[int] = []
    asyncio.get_running_loop().call_soon(flag.append, 1)
    await wait_until(lambda: bool(flag))


# -- timers ----------------------------------------------------------------------------


def ticks_into(received: list[hp.Tick], **options: Any) -> hp.Node:
    return hp.sink(lambda d: received.append(d.value), inputs=["tick"], **options)


async def test_on_a_fake_clock_an_idle_node_ends_without_real_time_passing() -> None:
    # In real time an idle node's task lingers 50 ms for more input; on any other
    # clock it ends at the loop's next turn, so which tasks exist (and so the order
    # in which the loop runs them) never depends on how fast the machine is.
    def node_tasks() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if t.get_name().startswith("hotplumb node ")]

    received: list[int] = []
    graph = hp.Graph(
        {
            "in": hp.Node(),
            "double": hp.Node(lambda x: x * 2, inputs=["in"]),
            "out": hp.sink(lambda d: received.append(d.value), inputs=["double"]),
        }
    )
    async with hp.run(graph, clock=FakeClock()) as topo:
        await topo.inject_many("in", [1, 2, 3])
        await wait_until(lambda: len(received) == 3)
        await wait_all_tasks_blocked()
        assert node_tasks() == []
        await topo.inject("in", 4)
        await wait_until(lambda: received == [2, 4, 6, 8])
        await wait_all_tasks_blocked()
        assert node_tasks() == []


async def test_a_timer_ticks_every_period_on_the_topology_clock() -> None:
    clock = FakeClock(start=7.0)
    received: list[hp.Datum] = []
    graph = hp.Graph({"tick": hp.timer(1.0), "out": hp.sink(received.append, inputs=["tick"])})
    async with hp.run(graph, clock=clock):
        await clock.advance(3.5)
    assert [d.value for d in received] == [
        hp.Tick(8.0, 1, 0, 1.0),
        hp.Tick(9.0, 2, 0, 1.0),
        hp.Tick(10.0, 3, 0, 1.0),
    ]
    assert received[0].path == ("tick", "out")
    assert graph.nodes["tick"].effective_kind is hp.NodeKind.TIMER


async def test_a_timer_ticks_only_while_it_has_readers() -> None:
    clock = FakeClock()
    received: list[hp.Tick] = []
    idle = hp.Graph(
        {"tick": hp.timer(1.0), "numbers": hp.Node(), "out": hp.sink(print, inputs=["numbers"])}
    )
    async with hp.run(idle, clock=clock) as topo:
        await clock.advance(10.0)
        assert "tick" not in topo.running_keys()
        assert clock.sleepers == 0  # nothing reads the timer: it does not run

        await topo.apply(topo.graph.add_node("ticks", ticks_into(received)))
        await clock.advance(2.5)
        # It started when a reader came, at t=10, so it ticks at 11 and 12.
        assert [(t.scheduled, t.index) for t in received] == [(11.0, 1), (12.0, 2)]

        await topo.apply(topo.graph.remove_node("ticks"))
        assert "tick" not in topo.running_keys()
        await wait_all_tasks_blocked()
        assert clock.sleepers == 0  # its generator was cancelled
        await clock.advance(10.0)
    assert len(received) == 2


async def test_timers_of_equal_period_are_equal_nodes() -> None:
    assert hp.timer(10) == hp.timer(10.0)
    assert hp.timer(10) != hp.timer(5)
    for bad in (0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="positive and finite"):
            hp.timer(bad)
    with pytest.raises(TypeError, match="number of seconds"):
        hp.timer("10")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="number of seconds"):
        hp.timer(True)


async def test_missed_ticks_are_coalesced_into_the_next_one() -> None:
    clock = FakeClock()
    received: list[hp.Tick] = []
    release = asyncio.Event()

    async def stuck_then_quick(datum: hp.Datum) -> None:
        if not received:
            await release.wait()
        received.append(datum.value)

    graph = hp.Graph({"tick": hp.timer(1.0), "out": hp.sink(stuck_then_quick, inputs=["tick"])})
    graph = graph.add_node("out", hp.sink(stuck_then_quick, inputs=["tick"], capacity=1))
    async with hp.run(graph, clock=clock) as topo:
        await clock.advance(10.5)
        # The reader holds tick 1; tick 2 waits in its channel, tick 3 in the
        # timer's hands, tick 4 in the timer's entry channel, and tick 5 could
        # not be handed over: the timer makes no more ticks until it is.
        stats = topo.statistics()
        assert stats["out"].input_depth == 1
        assert stats["tick"].input_depth == 1
        release.set()
        await clock.advance(1.0)
    # Boundaries 6..9 passed while the timer waited: tick 10 carries them.
    assert [(t.index, t.missed) for t in received] == [
        (1, 0),
        (2, 0),
        (3, 0),
        (4, 0),
        (5, 0),
        (10, 4),
        (11, 0),
    ]
    assert [t.scheduled for t in received] == [1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 11.0]


async def test_a_slow_reader_gets_fewer_ticks_but_no_backlog() -> None:
    clock = FakeClock()
    received: list[hp.Tick] = []
    depths: list[int] = []
    topo_ref: list[hp.Topology] = []

    async def slow(datum: hp.Datum) -> None:
        depths.append(topo_ref[0].statistics()["out"].input_depth)
        await clock.sleep_until(clock.now() + 2.5)  # each tick takes 2.5 periods
        received.append(datum.value)

    graph = hp.Graph({"tick": hp.timer(1.0), "out": hp.sink(slow, inputs=["tick"], capacity=2)})
    async with hp.run(graph, clock=clock) as topo:
        topo_ref.append(topo)
        await clock.advance(1000.0)
        now, count = clock.now(), len(received)
        await clock.drive(topo.close())  # the slow reader finishes in fake time
    assert count == 399  # done at 3.5, 6.0, ... 998.5: one per 2.5 s, not one per second
    # At close at most 6 more: one being read, two in the reader's channel, one
    # held by the timer node waiting to send, one in its entry channel, and the
    # one the timer was offering when it stopped (put in, not dropped).
    assert len(received) <= count + 6
    assert max(depths) <= 2  # never more waiting than the reader's capacity
    indices = [t.index for t in received]
    assert indices == sorted(set(indices))
    for before, after in itertools.pairwise(received):
        assert after.index == before.index + after.missed + 1  # every boundary accounted for
    assert sum(t.missed for t in received) > 500
    # What arrives is recent: only the few ticks the channels hold wait ahead of it.
    assert now - received[count - 1].scheduled < 20


# -- rollups ---------------------------------------------------------------------------


def rollup_graph(
    received: list[hp.Datum], **options: Any
) -> tuple[hp.Graph, dict[Hashable, hp.Node]]:
    nodes: dict[Hashable, hp.Node] = {
        "clicks": hp.Node(),
        "views": hp.Node(),
        "every 10s": hp.timer(10.0),
        "roll": hp.rollup(["clicks", "views"], "every 10s", **options),
        "out": hp.sink(received.append, inputs=["roll"]),
    }
    return hp.Graph(nodes), nodes


async def test_a_rollup_summarises_each_window_with_its_provenance() -> None:
    clock = FakeClock()
    received: list[hp.Datum] = []
    graph, _ = rollup_graph(received)
    async with hp.run(graph, clock=clock) as topo:
        await topo.inject("clicks", "a")
        await topo.inject("views", "b")
        await clock.advance(10.0)
        await clock.advance(2.0)
        await topo.inject("clicks", "c")
        await clock.advance(18.0)
    assert [d.value for d in received] == [
        hp.Window(0.0, 10.0, ("a", "b"), 0),
        hp.Window(10.0, 20.0, ("c",), 0),
        hp.Window(20.0, 30.0, (), 0),  # empty windows are summarised too
    ]
    first = received[0]
    assert first.value.count == 2
    assert first.path == ("every 10s", "roll", "out")
    assert first.origin == hp.Tick(10.0, 1, 0, 10.0)
    assert [(p.value, p.path) for p in first.parents] == [
        ("a", ("clicks", "roll")),
        ("b", ("views", "roll")),
    ]
    assert [p.value for p in received[1].parents] == ["c"]
    assert received[2].parents == ()
    stats = topo.statistics()["roll"]
    assert (stats.received, stats.emitted, stats.filtered) == (6, 3, 3)


async def test_a_rollup_folds_and_can_skip_empty_windows() -> None:
    clock = FakeClock()
    received: list[hp.Datum] = []
    graph, _ = rollup_graph(received, fold=lambda w: (w.end, sum(w.values)), emit_empty=False)
    async with hp.run(graph, clock=clock) as topo:
        await topo.inject_many("clicks", [1, 2, 3])
        await clock.advance(20.0)
        await topo.inject("views", 10)
        await clock.advance(10.0)
    assert [d.value for d in received] == [(10.0, 6), (30.0, 10)]
    assert [p.value for p in received[1].parents] == [10]


async def test_a_rollup_window_spans_the_missed_ticks() -> None:
    clock = FakeClock(start=5.0)
    received: list[hp.Datum] = []
    graph, nodes = rollup_graph(received)
    # The first window starts when the timer starts, even if its first tick is late.
    async with hp.run(graph, clock=clock) as topo:
        await topo.inject("clicks", "x")
        await clock.advance(10.0)
    assert [d.value for d in received] == [hp.Window(5.0, 15.0, ("x",), 0)]
    assert nodes["roll"].state is not None


async def test_a_failing_fold_keeps_the_window_open() -> None:
    clock = FakeClock()
    received: list[hp.Datum] = []

    def fold(window: hp.Window) -> int:
        if window.end == 10.0:
            raise ValueError("not now")
        return window.count

    graph, _ = rollup_graph(received, fold=fold)
    async with hp.run(graph, clock=clock) as topo:
        await topo.inject_many("clicks", [1, 2])
        await clock.advance(10.0)
        await topo.inject("clicks", 3)
        await clock.advance(10.0)
    assert topo.errors.total == 1
    failed = topo.errors[0]
    assert isinstance(failed.value, hp.Tick)
    assert failed.value.index == 1
    assert failed.error is not None
    assert isinstance(failed.error.exception, ValueError)
    assert [d.value for d in received] == [3]
    assert [p.value for p in received[0].parents] == [1, 2, 3]


async def test_a_replaced_rollup_keeps_its_open_window() -> None:
    clock = FakeClock()
    received: list[hp.Datum] = []
    graph, _ = rollup_graph(received, fold=lambda w: ("v1", w.count))
    async with hp.run(graph, clock=clock) as topo:
        await topo.inject_many("clicks", [1, 2])
        await clock.advance(10.0)
        await topo.inject("clicks", 3)
        v2 = hp.rollup(["clicks", "views"], "every 10s", fold=lambda w: ("v2", w.count))
        await topo.apply(topo.graph.add_node("roll", v2))
        await topo.inject("views", 4)
        await clock.advance(10.0)
    assert [d.value for d in received] == [("v1", 2), ("v2", 2)]
    assert [p.value for p in received[1].parents] == [3, 4]


async def test_a_rollup_refuses_bad_wiring_and_bad_ticks() -> None:
    with pytest.raises(ValueError, match="at least one data input"):
        hp.rollup([], "t")
    with pytest.raises(ValueError, match="also a data input"):
        hp.rollup(["a", "t"], "t")
    received: list[hp.Datum] = []
    graph = hp.Graph(
        {
            "data": hp.Node(),
            "fake timer": hp.Node(),
            "roll": hp.rollup(["data"], "fake timer"),
            "out": hp.sink(received.append, inputs=["roll"]),
        }
    )
    async with hp.run(graph, clock=FakeClock()) as topo:
        await topo.inject("fake timer", "not a tick")
        await topo.drain()
    assert not received
    error = topo.errors[0].error
    assert error is not None
    assert isinstance(error.exception, TypeError)
    assert "not a Tick" in str(error.exception)


# -- processing timeouts ---------------------------------------------------------------


async def test_an_async_callable_is_cancelled_at_its_timeout() -> None:
    clock = FakeClock()
    cancelled: list[int] = []

    async def work(seconds: int) -> int:
        try:
            await clock.sleep_until(clock.now() + seconds)
        except asyncio.CancelledError:
            cancelled.append(seconds)
            raise
        return seconds

    received: list[hp.Datum] = []
    graph = hp.Graph(
        {
            "in": hp.Node(),
            "work": hp.Node(work, inputs=["in"], timeout=2.0),
            "out": hp.sink(received.append, inputs=["work"]),
        }
    )
    async with hp.run(graph, clock=clock) as topo:
        for seconds in [1, 5, 2]:
            await topo.inject("in", seconds)  # one batch each: delivered one by one
        await clock.advance(1.0)
        assert [d.value for d in received] == [1]
        await clock.advance(1.0)
        assert not cancelled
        await clock.advance(1.0)
        # At t=3, two seconds into the second item: cancelled, failed, moved on.
        assert cancelled == [5]
        assert topo.errors.total == 1
        await clock.advance(1.9)
        assert [d.value for d in received] == [1]
        await clock.advance(0.1)
    assert [d.value for d in received] == [1, 2]
    failed = topo.errors[0]
    assert failed.value == 5
    assert failed.path == ("in", "work")
    assert failed.error is not None
    assert isinstance(failed.error.exception, TimeoutError)
    assert "took longer than 2.0s" in str(failed.error.exception)
    assert topo.statistics()["work"].failed == 1


async def test_a_plain_callable_that_returns_late_fails() -> None:
    clock = FakeClock()

    def work(seconds: float) -> float:
        clock.jump(seconds)  # the call "takes" this long
        return seconds

    received: list[hp.Datum] = []
    graph = hp.Graph(
        {
            "in": hp.Node(),
            "work": hp.Node(work, inputs=["in"], timeout=1.0),
            "out": hp.sink(received.append, inputs=["work"]),
        }
    )
    async with hp.run(graph, clock=clock) as topo:
        await topo.inject_many("in", [0.5, 3.0, 1.0])
        await topo.drain()
    assert [d.value for d in received] == [0.5, 1.0]
    assert [d.value for d in topo.errors] == [3.0]
    error = topo.errors[0].error
    assert error is not None
    assert isinstance(error.exception, TimeoutError)


async def test_a_timed_out_datum_goes_to_on_error() -> None:
    clock = FakeClock()

    async def chunks(n: int) -> AsyncIterator[int]:
        for i in range(n):
            await clock.sleep_until(clock.now() + 1.0)
            yield i

    handled: list[hp.Datum] = []

    def fallback(datum: hp.Datum) -> str:
        handled.append(datum)
        return "gave up"

    received: list[hp.Datum] = []
    graph = hp.Graph(
        {
            "in": hp.Node(),
            "work": hp.Node(chunks, inputs=["in"], timeout=2.5, on_error=fallback),
            "out": hp.sink(received.append, inputs=["work"]),
        }
    )
    async with hp.run(graph, clock=clock) as topo:
        await topo.inject_many("in", [2, 10])
        await clock.advance(10.0)
    assert [d.value for d in received] == [0, 1, "gave up"]
    assert [d.value for d in handled] == [10]
    assert handled[0].error is not None
    assert isinstance(handled[0].error.exception, TimeoutError)
    assert topo.errors.total == 0


async def test_a_slow_reader_never_has_more_than_one_tick_waiting() -> None:
    clock = FakeClock()
    depths: list[int] = []
    received: list[hp.Tick] = []
    topo_ref: list[hp.Topology] = []

    async def slow(datum: hp.Datum) -> None:
        depths.append(topo_ref[0].statistics()["out"].input_depth)
        await clock.sleep_until(clock.now() + 3.5)
        received.append(datum.value)

    # The reader's own capacity is large: the timer's output capacity bounds it.
    graph = hp.Graph({"tick": hp.timer(1.0), "out": hp.sink(slow, inputs=["tick"], capacity=1024)})
    async with hp.run(graph, clock=clock) as topo:
        topo_ref.append(topo)
        await clock.advance(200.0)
        await clock.drive(topo.close())
    assert max(depths) <= 1
    assert sum(t.missed for t in received) > 100  # coalesced at the timer, not queued


def test_timers_of_one_period_stay_equal_however_many_periods_there_are() -> None:
    first = hp.timer(10.0)
    periods = [1.0 + i / 1000 for i in range(600)]
    others = [hp.timer(period) for period in periods]
    assert hp.timer(10) == first
    # Every live timer still equals a new one of its period, and no two periods share one.
    assert all(hp.timer(period) == other for period, other in zip(periods, others, strict=True))
    assert len({other.source for other in others}) == 600
    assert first not in others


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_times_that_are_not_finite_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        hp.Node(timeout=bad)
    with pytest.raises(ValueError, match="restart policy"):
        hp.RestartPolicy(backoff=bad)
    clock = FakeClock()
    with pytest.raises(ValueError, match="backwards, or"):
        clock.jump(bad)
