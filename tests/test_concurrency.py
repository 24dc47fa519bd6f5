"""Concurrent and executor-backed nodes, and outputs sent as they are ready.

Time is a :class:`~hotplumb.testing.FakeClock` wherever a test depends on how
long an item takes: an item "takes" ``d`` seconds by awaiting
``clock.sleep_until(now + d)``, and ``clock.drive(...)`` moves time to the
next deadline whenever every task waits. Work off the event loop (threads,
processes) is synchronised with events, never with timing.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import multiprocessing
import os
import random
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest

import hotplumb as hp
from hotplumb._kernel import LATENCY
from hotplumb.testing import FakeClock, wait_all_tasks_blocked, wait_until
from tests.cpu_work import linger, square_with_pid

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path


def chain(fn: Callable[..., Any], **options: Any) -> tuple[hp.Graph, list[hp.Datum]]:
    """``in -> f -> out``: ``f`` is a node of ``fn`` with ``options``; ``out`` records."""
    received: list[hp.Datum] = []
    graph = hp.Graph(
        {
            "in": hp.Node(),
            "f": hp.Node(fn, inputs=["in"], **options),
            "out": hp.sink(received.append, inputs=["f"]),
        }
    )
    return graph, received


class Gauge:
    """Counts the calls in progress and remembers the most at once."""

    def __init__(self) -> None:
        self.active = 0
        self.peak = 0
        self.lock = threading.Lock()  # calls in threads share it

    def enter(self) -> None:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)

    def leave(self) -> None:
        with self.lock:
            self.active -= 1


def delayed(clock: FakeClock, delays: list[float], gauge: Gauge) -> Callable[[int], Any]:
    """An async callable: item ``x`` takes ``delays[x]`` fake seconds and gives ``10 * x``."""

    async def work(x: int) -> int:
        gauge.enter()
        try:
            await clock.sleep_until(clock.now() + delays[x])
        finally:
            gauge.leave()
        return 10 * x

    return work


# -- order and concurrency -------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 8])
async def test_outputs_leave_in_input_order_whatever_each_item_takes(k: int) -> None:
    clock = FakeClock()
    rng = random.Random(k)
    delays = [rng.uniform(0.1, 5.0) for _ in range(60)]
    gauge = Gauge()
    graph, received = chain(delayed(clock, delays, gauge), concurrency=k)
    async with hp.run(graph, clock=clock) as topo:
        await topo.inject_many("in", range(60))
        await clock.drive(topo.drain())
        stats = topo.statistics()["f"]
    assert [d.value for d in received] == [10 * x for x in range(60)]
    assert [d.origin for d in received] == list(range(60))
    assert gauge.peak == k
    assert gauge.active == 0
    # The items overlapped: one at a time would take the sum of the delays.
    assert max(delays) <= clock.now() < sum(delays) / (k / 2)
    assert (stats.received, stats.emitted, stats.in_progress) == (60, 60, 0)


async def test_concurrency_is_never_exceeded_across_batches_and_inputs() -> None:
    clock = FakeClock()
    rng = random.Random(3)
    delays = [rng.choice([0.0, 0.5, 2.0]) for _ in range(80)]
    gauge = Gauge()
    received: list[hp.Datum] = []
    graph = hp.Graph(
        {
            "a": hp.Node(),
            "b": hp.Node(),
            "f": hp.Node(delayed(clock, delays, gauge), inputs=["a", "b"], concurrency=5),
            "out": hp.sink(received.append, inputs=["f"]),
        }
    )
    async with hp.run(graph, clock=clock, capacity=3) as topo:

        async def feed() -> None:
            for x in range(0, 80, 2):  # small batches from two inputs, interleaved
                await topo.inject("a", x)
                await topo.inject("b", x + 1)

        await clock.drive(feed())
        await clock.drive(topo.drain())
    assert gauge.peak == 5
    # Per input, order is kept (the two inputs interleave in some order).
    from_a = [d.value for d in received if d.path[0] == "a"]
    from_b = [d.value for d in received if d.path[0] == "b"]
    assert from_a == [10 * x for x in range(0, 80, 2)]
    assert from_b == [10 * x for x in range(1, 80, 2)]


async def test_each_item_fails_on_its_own() -> None:
    clock = FakeClock()

    async def fragile(x: int) -> int:
        await clock.sleep_until(clock.now() + (x % 4) + 0.5)
        if x % 5 == 0:
            raise ValueError(f"bad {x}")
        return x

    graph, received = chain(fragile, concurrency=4)
    async with hp.run(graph, clock=clock) as topo:
        await topo.inject_many("in", range(30))
        await clock.drive(topo.drain())
        stats = topo.statistics()["f"]
    assert [d.value for d in received] == [x for x in range(30) if x % 5]
    assert [d.origin for d in topo.errors] == list(range(0, 30, 5))
    for failed in topo.errors:
        assert failed.error is not None
        assert failed.error.key == "f"
        assert isinstance(failed.error.exception, ValueError)
        assert str(failed.error.exception) == f"bad {failed.value}"
        assert failed.path == ("in", "f")
    assert stats.received == 30 == stats.emitted + stats.failed + stats.filtered
    assert (stats.emitted, stats.failed, stats.in_progress) == (24, 6, 0)


async def test_a_cancelled_error_a_concurrent_call_raises_fails_only_its_item() -> None:
    # Not the node's own cancellation: the call's own error, like any other.
    # Some calls end before the runner reaches them, others while it waits.
    clock = FakeClock()
    raised: dict[int, asyncio.CancelledError] = {}

    async def gives_up(x: int) -> int:
        await clock.sleep_until(clock.now() + (x * 7) % 3)
        if x % 3 == 1:
            raised[x] = asyncio.CancelledError(f"gave up on {x}")
            raise raised[x]
        return x

    graph, received = chain(gives_up, concurrency=4)
    async with hp.run(graph, clock=clock) as topo:
        await topo.inject_many("in", range(24))
        await clock.drive(topo.drain())
        stats = topo.statistics()["f"]
    assert [d.value for d in received] == [x for x in range(24) if x % 3 != 1]
    assert [d.origin for d in topo.errors] == list(range(1, 24, 3))
    for failed in topo.errors:
        assert failed.error is not None
        assert failed.error.exception is raised[failed.value]  # the very exception raised
    assert (stats.received, stats.emitted, stats.failed, stats.in_progress) == (24, 16, 8, 0)


class _NoValue:
    """An async callable whose signature says it takes the value, which it does not."""

    __signature__ = inspect.Signature([inspect.Parameter("x", inspect.Parameter.POSITIONAL_ONLY)])

    async def __call__(self) -> int:  # pragma: no cover - calling it with a value fails first
        return 0


async def test_a_concurrent_call_that_fails_before_it_starts_fails_its_item_in_order() -> None:
    graph, received = chain(_NoValue(), concurrency=3)
    async with hp.run(graph) as topo:
        await topo.inject_many("in", range(5))
        await asyncio.wait_for(topo.drain(), 5)
        stats = topo.statistics()["f"]
    assert received == []
    assert [d.origin for d in topo.errors] == list(range(5))
    assert all(
        d.error is not None and isinstance(d.error.exception, TypeError) for d in topo.errors
    )
    assert (stats.received, stats.failed, stats.in_progress) == (5, 5, 0)


async def test_closing_with_a_failed_call_not_yet_settled_leaves_no_unretrieved_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Item 0 never ends; item 1 fails at once, behind it: it is never settled.
    never = asyncio.Event()
    failed = asyncio.Event()

    async def work(x: int) -> int:
        if x == 0:
            await never.wait()
        failed.set()
        raise ValueError(x)

    graph, received = chain(work, concurrency=2)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        async with hp.run(graph) as topo:
            await topo.inject_many("in", range(2))
            await asyncio.wait_for(failed.wait(), 5)
            await wait_all_tasks_blocked()
            report = await asyncio.wait_for(topo.close(drain=False), 5)
        gc.collect()
    assert sorted(d.origin for d in report.undelivered) == [0, 1]
    assert received == []
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


async def test_on_error_replaces_or_swallows_each_item_of_a_concurrent_node() -> None:
    clock = FakeClock()

    async def fragile(x: int) -> int:
        await clock.sleep_until(clock.now() + (7 - x % 7))
        if x % 3 == 0:
            raise ValueError(x)
        return x

    def handler(d: hp.Datum) -> Any:
        return -d.value if d.value % 2 else hp.SKIP

    graph, received = chain(fragile, concurrency=3, on_error=handler)
    async with hp.run(graph, clock=clock) as topo:
        await topo.inject_many("in", range(12))
        await clock.drive(topo.drain())
        stats = topo.statistics()["f"]
    expected = [x if x % 3 else -x for x in range(12) if x % 3 or x % 2]
    assert [d.value for d in received] == expected
    assert len(topo.errors) == 0
    assert stats.received == 12 == stats.emitted + stats.failed + stats.filtered


async def test_each_item_has_its_own_timeout() -> None:
    clock = FakeClock()
    delays = [1.0, 3.0, 0.5, 5.0, 1.5, 2.5, 0.1, 4.0] * 3
    starts: dict[int, float] = {}

    async def slow(x: int) -> int:
        starts[x] = clock.now()
        await clock.sleep_until(clock.now() + delays[x])
        return x

    graph, received = chain(slow, concurrency=4, timeout=2.0)
    async with hp.run(graph, clock=clock) as topo:
        await topo.inject_many("in", range(len(delays)))
        await clock.drive(topo.drain())
    late = [x for x, d in enumerate(delays) if d > 2.0]
    assert [d.value for d in received] == [x for x, d in enumerate(delays) if d <= 2.0]
    assert [d.origin for d in topo.errors] == late
    for failed in topo.errors:
        assert failed.error is not None
        assert isinstance(failed.error.exception, TimeoutError)
    # Items started while others were still waiting: the timeouts overlapped.
    assert len({starts[x] for x in late}) < len(late)
    assert clock.now() < 2.0 * len(late)


async def test_an_async_generator_yields_several_outputs_per_input_in_order() -> None:
    clock = FakeClock()
    rng = random.Random(11)
    delays = [rng.uniform(0.0, 3.0) for _ in range(20)]
    gauge = Gauge()

    async def spread(x: int) -> AsyncIterator[tuple[int, int]]:
        gauge.enter()
        try:
            for part in range(x % 3 + 1):  # 1 to 3 outputs, some after a wait
                await clock.sleep_until(clock.now() + delays[x] / 2)
                yield (x, part)
        finally:
            gauge.leave()

    graph, received = chain(spread, concurrency=6)
    async with hp.run(graph, clock=clock) as topo:
        await topo.inject_many("in", range(20))
        await clock.drive(topo.drain())
        stats = topo.statistics()["f"]
    assert [d.value for d in received] == [(x, p) for x in range(20) for p in range(x % 3 + 1)]
    assert all(d.origin == d.value[0] for d in received)
    assert gauge.peak == 6
    assert stats.received == 20
    assert stats.emitted == len(received)


# -- live changes, drain, close, crash --------------------------------------------------


async def test_a_live_change_switches_only_after_every_item_in_flight_settles() -> None:
    clock = FakeClock()
    rng = random.Random(5)
    delays = [rng.uniform(0.5, 3.0) for _ in range(40)]
    events: list[tuple[str, int, int]] = []  # ("start" | "end", version, item)

    def version(v: int) -> Callable[[int], Any]:
        async def work(x: int) -> tuple[int, int]:
            events.append(("start", v, x))
            await clock.sleep_until(clock.now() + delays[x])
            events.append(("end", v, x))
            return (x, v)

        return work

    received: list[hp.Datum] = []

    def graph(v: int) -> hp.Graph:
        return hp.Graph(
            {
                "in": hp.Node(),
                "f": hp.Node(version(v), inputs=["in"], concurrency=4),
                "out": hp.sink(received.append, inputs=["f"]),
            }
        )

    async with hp.run(graph(1), clock=clock) as topo:
        await topo.inject_many("in", range(20))
        await clock.advance(3.0)
        in_flight = topo.statistics()["f"].in_progress
        assert in_flight > 0  # the change starts with items of version 1 in flight
        assert 0 < len(received) < 20
        report = await clock.drive(topo.apply(graph(2)))
        assert report.changelist.replaced == {"f"}
        await topo.inject_many("in", range(20, 40))
        await clock.drive(topo.drain())
    assert [d.value for d in received] == [(x, 1 if x < 20 else 2) for x in range(40)]
    first_v2 = next(i for i, e in enumerate(events) if e[1] == 2)
    assert all(e[1] == 1 for e in events[:first_v2])
    assert Counter(e[:2] for e in events[:first_v2]) == {("start", 1): 20, ("end", 1): 20}
    assert Counter(e[2] for e in events if e[0] == "start") == dict.fromkeys(range(40), 1)


async def test_a_live_change_with_data_flowing_loses_and_duplicates_nothing() -> None:
    clock = FakeClock()
    rng = random.Random(8)
    delays = [rng.uniform(0.0, 2.0) for _ in range(200)]
    received: list[hp.Datum] = []

    def graph(v: int, k: int) -> hp.Graph:
        async def work(x: int) -> tuple[int, int]:
            await clock.sleep_until(clock.now() + delays[x])
            return (x, v)

        return hp.Graph(
            {
                "in": hp.Node(),
                "f": hp.Node(work, inputs=["in"], concurrency=k),
                "out": hp.sink(received.append, inputs=["f"]),
            }
        )

    async with hp.run(graph(0, 3), clock=clock, capacity=4) as topo:

        async def feed() -> None:
            for x in range(200):
                await topo.inject("in", x)
                if x % 7 == 0:
                    await clock.sleep_until(clock.now() + 0.3)

        async def change() -> None:
            for v, k in enumerate([8, 1, 5, 2], start=1):
                await clock.sleep_until(clock.now() + 4.0)
                await topo.apply(graph(v, k))

        await clock.drive(asyncio.gather(feed(), change()))
        await clock.drive(topo.drain())
    values = [d.value for d in received]
    assert [x for x, _ in values] == list(range(200))
    versions = [v for _, v in values]
    assert versions == sorted(versions)  # every item wholly before or after each switch
    assert set(versions) == {0, 1, 2, 3, 4}


async def test_drain_waits_for_the_items_in_flight() -> None:
    clock = FakeClock()
    gauge = Gauge()
    graph, received = chain(delayed(clock, [5.0] * 10, gauge), concurrency=4)
    async with hp.run(graph, clock=clock) as topo:
        await topo.inject_many("in", range(10))
        draining = asyncio.create_task(topo.drain())
        await clock.advance(4.0)
        assert gauge.active == 4
        assert not draining.done()
        assert received == []
        await clock.advance(6.0)
        assert not draining.done()  # items 8 and 9 are still in flight
        assert gauge.active == 2
        await clock.drive(draining)
    assert [d.value for d in received] == [10 * x for x in range(10)]


async def test_close_without_drain_reports_the_items_in_flight_as_undelivered() -> None:
    never = asyncio.Event()
    cancelled: list[int] = []

    async def stuck(x: int) -> int:
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.append(x)
            raise
        return x  # pragma: no cover

    graph, received = chain(stuck, concurrency=3)
    async with hp.run(graph) as topo:
        await topo.inject_many("in", range(10))
        await wait_until(lambda: topo.statistics()["f"].received == 10)
        await wait_all_tasks_blocked()
        report = await asyncio.wait_for(topo.close(drain=False), 5)
    assert not report.drained
    assert received == []
    assert sorted(d.origin for d in report.undelivered) == list(range(10))
    assert all(d.path == ("in", "f") for d in report.undelivered)
    assert sorted(cancelled) == [0, 1, 2]  # the calls in flight were stopped


async def test_a_crash_with_calls_in_flight_loses_nothing() -> None:
    """``on_error`` raising kills the task; the calls in flight are cancelled, and
    their inputs, put back at the head of the channel, are processed again by
    the restarted task. So an item in flight at the crash is *called* twice,
    but delivered once; the counters count it once.
    """
    clock = FakeClock()
    calls: Counter[int] = Counter()
    started_at_crash: set[int] = set()
    gauge = Gauge()

    async def work(x: int) -> int:
        calls[x] += 1
        gauge.enter()
        try:
            await clock.sleep_until(clock.now() + 1.0 + x % 3)
        finally:
            gauge.leave()
        if x == 5 and calls[x] == 1:
            raise ValueError("first call of 5 fails")
        return x

    def bad_handler(d: hp.Datum) -> Any:
        started_at_crash.update(calls)
        raise RuntimeError("handler broke")

    graph, received = chain(work, concurrency=4, on_error=bad_handler)
    async with hp.run(graph, clock=clock, restart=hp.RestartPolicy(max_restarts=3)) as topo:
        await topo.inject_many("in", range(12))
        await clock.drive(topo.drain())
        stats = topo.statistics()["f"]
    assert [d.value for d in received] == [x for x in range(12) if x != 5]
    assert [d.origin for d in topo.errors] == [5]
    assert stats.restarts == 1
    assert (stats.received, stats.emitted, stats.failed, stats.in_progress) == (12, 11, 1, 0)
    # Items 0-4 were settled in order before 5 failed; the calls started after
    # them were in the window (some had returned, some not): all are called again.
    in_window = started_at_crash - set(range(6))
    assert in_window  # the crash did happen with calls in flight
    assert {x for x, n in calls.items() if n == 2} == in_window
    assert all(n in (1, 2) for n in calls.values())
    assert gauge.peak == 4


async def test_a_crash_while_settling_before_a_barrier_keeps_the_barrier() -> None:
    """The window settles before the node acts on a barrier; if ``on_error``
    raises then, the barrier goes back behind the inputs put back, so the
    restarted task finishes them with the old version and then switches.
    """
    clock = FakeClock()
    received: list[hp.Datum] = []
    starts: list[tuple[int, int]] = []  # (version, item)

    def version(v: int) -> Callable[[int], Any]:
        async def work(x: int) -> tuple[int, int]:
            starts.append((v, x))
            await clock.sleep_until(clock.now() + 1.0 + x % 2)
            if x == 8:
                raise ValueError("8 fails")
            return (x, v)

        return work

    def broken(d: hp.Datum) -> Any:
        raise RuntimeError("handler broke")

    def graph(v: int) -> hp.Graph:
        return hp.Graph(
            {
                "in": hp.Node(),
                "f": hp.Node(version(v), inputs=["in"], concurrency=3, on_error=broken),
                "out": hp.sink(received.append, inputs=["f"]),
            }
        )

    restart = hp.RestartPolicy(max_restarts=3)
    async with asyncio.timeout(30), hp.run(graph(1), clock=clock, restart=restart) as topo:
        # One batch of 0-9: items 7, 8 and 9 are in the window when the barrier
        # is taken, and 8 fails while the window settles.
        await topo.inject_many("in", range(10))
        await clock.drive(topo.apply(graph(2)))
        await topo.inject_many("in", range(10, 14))
        await clock.drive(topo.drain())
        stats = topo.statistics()["f"]
    assert [d.value for d in received] == [(x, 1) for x in range(10) if x != 8] + [
        (x, 2) for x in range(10, 14)
    ]
    assert [d.origin for d in topo.errors] == [8]
    assert stats.restarts == 1
    assert all(v == 1 for v, x in starts if x < 10)
    assert all(v == 2 for v, x in starts if x >= 10)
    assert (stats.received, stats.emitted, stats.failed, stats.in_progress) == (14, 13, 1, 0)


async def test_a_call_that_raises_as_it_is_cancelled_leaves_no_unretrieved_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Item 0 (the oldest, which the node waits for) stops as asked; items 1 and
    # 2, cancelled with it at close, raise instead.
    started: set[int] = set()
    stopped = asyncio.Event()

    async def stubborn(x: int) -> int:
        started.add(x)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if x == 0:
                raise
            stopped.set()
            raise ValueError(f"{x} broke while it was stopped") from None
        return x  # pragma: no cover

    graph, received = chain(stubborn, concurrency=3)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        async with hp.run(graph) as topo:
            await topo.inject_many("in", range(5))
            await wait_until(lambda: len(started) == 3)
            await wait_all_tasks_blocked()
            async with asyncio.timeout(5):
                report = await topo.close(drain=False)
                await stopped.wait()
                await wait_all_tasks_blocked()
        gc.collect()
    assert sorted(d.origin for d in report.undelivered) == list(range(5))
    assert received == []
    assert len(topo.errors) == 0
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


# Python 3.12+: marks a plain callable as an async one (iscoroutinefunction says so).
_mark_async: Callable[[Callable[..., Any]], Callable[..., Any]] | None = getattr(
    inspect, "markcoroutinefunction", None
)
_needs_mark = pytest.mark.skipif(_mark_async is None, reason="inspect.markcoroutinefunction: 3.12+")


class _Later:
    """An awaitable that is not a coroutine: it gives ``value`` after one step."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __await__(self) -> Any:
        yield None
        return self.value


@_needs_mark
async def test_a_concurrent_callable_may_return_any_awaitable() -> None:
    assert _mark_async is not None
    loop = asyncio.get_running_loop()

    def futures(x: int) -> Any:
        if x % 2:
            return _Later(10 * x)
        future = loop.create_future()
        loop.call_soon(future.set_result, 10 * x)
        return future

    graph, received = chain(_mark_async(futures), concurrency=3)
    async with asyncio.timeout(5), hp.run(graph) as topo:
        await topo.inject_many("in", range(8))
        await topo.drain()
        stats = topo.statistics()["f"]
    assert [d.value for d in received] == [10 * x for x in range(8)]
    assert (stats.received, stats.emitted, stats.failed) == (8, 8, 0)


@_needs_mark
async def test_a_concurrent_callable_that_raises_when_called_is_called_once() -> None:
    assert _mark_async is not None
    calls: Counter[int] = Counter()

    async def double(x: int) -> int:
        return 2 * x

    def eager(x: int) -> Any:
        calls[x] += 1
        if x % 3 == 0:
            raise ValueError(f"{x} refused on call {calls[x]}")
        return double(x)

    graph, received = chain(_mark_async(eager), concurrency=2)
    async with asyncio.timeout(5), hp.run(graph) as topo:
        await topo.inject_many("in", range(9))
        await topo.drain()
    assert calls == dict.fromkeys(range(9), 1)
    assert [d.value for d in received] == [2 * x for x in range(9) if x % 3]
    assert [d.origin for d in topo.errors] == [0, 3, 6]
    for failed in topo.errors:
        assert failed.error is not None
        assert str(failed.error.exception) == f"{failed.value} refused on call 1"


async def test_closing_stops_a_node_whose_awaited_call_raises_as_it_is_cancelled() -> None:
    # The node waits for item 0 when the topology closes: the call turns the
    # cancellation into an error of its own, which must not stop the node's
    # task from ending (nor be taken for a failure of item 0).
    started: set[int] = set()

    async def stubborn(x: int) -> int:
        started.add(x)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise ValueError(f"{x} broke while it was stopped") from None
        return x  # pragma: no cover

    graph, received = chain(stubborn, concurrency=3)
    async with hp.run(graph) as topo:
        await topo.inject_many("in", range(5))
        await wait_until(lambda: len(started) == 3)
        await wait_all_tasks_blocked()
        async with asyncio.timeout(5):
            report = await topo.close(drain=False)
    assert sorted(d.origin for d in report.undelivered) == list(range(5))
    assert received == []
    assert len(topo.errors) == 0
    assert started == {0, 1, 2}


async def test_input_arriving_while_a_call_is_in_flight_starts_at_once() -> None:
    clock = FakeClock()
    starts: dict[int, float] = {}
    delays = {0: 10.0, 1: 1.0, 2: 1.0}

    async def work(x: int) -> int:
        starts[x] = clock.now()
        await clock.sleep_until(clock.now() + delays[x])
        return x

    graph, received = chain(work, concurrency=3)
    async with asyncio.timeout(30), hp.run(graph, clock=clock) as topo:
        await topo.inject("in", 0)
        await clock.advance(1.0)
        await topo.inject("in", 1)  # the window has room: 1 starts while 0 runs
        await clock.advance(1.0)
        await topo.inject("in", 2)
        await wait_all_tasks_blocked()
        assert starts == {0: 0.0, 1: 1.0, 2: 2.0}
        await clock.drive(topo.drain())
    assert [d.value for d in received] == [0, 1, 2]  # still in input order
    assert clock.now() == 10.0


async def test_calls_cancelled_by_a_crash_end_before_the_restarted_task_starts_more() -> None:
    clock = FakeClock()
    calls: Counter[int] = Counter()
    gauge = Gauge()

    async def work(x: int) -> int:
        calls[x] += 1
        gauge.enter()
        try:
            await clock.sleep_until(clock.now() + 1.0 + x % 3)
        except asyncio.CancelledError:
            await clock.sleep_until(clock.now() + 0.5)  # tidying up takes a while
            raise
        finally:
            gauge.leave()
        if x == 5 and calls[x] == 1:
            raise ValueError("first call of 5 fails")
        return x

    def broken(d: hp.Datum) -> Any:
        raise RuntimeError("handler broke")

    graph, received = chain(work, concurrency=4, on_error=broken)
    restart = hp.RestartPolicy(max_restarts=3)
    async with asyncio.timeout(30), hp.run(graph, clock=clock, restart=restart) as topo:
        await topo.inject_many("in", range(12))
        await clock.drive(topo.drain())
        stats = topo.statistics()["f"]
    assert stats.restarts == 1
    assert [d.value for d in received] == [x for x in range(12) if x != 5]
    assert gauge.peak == 4


async def test_closing_waits_for_the_cancelled_calls_to_end() -> None:
    clock = FakeClock()
    gauge = Gauge()
    started = asyncio.Event()

    async def work(x: int) -> int:
        gauge.enter()
        try:
            started.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await clock.sleep_until(clock.now() + 0.5)  # tidying up takes a while
            raise
        finally:
            gauge.leave()
        return x  # pragma: no cover

    graph, _ = chain(work, concurrency=3)
    async with asyncio.timeout(30), hp.run(graph, clock=clock) as topo:
        await topo.inject_many("in", range(5))
        await started.wait()
        await wait_all_tasks_blocked()
        assert gauge.active == 3
        report = await clock.drive(topo.close(drain=False))
        assert gauge.active == 0  # the calls had ended when close returned
    assert sorted(d.origin for d in report.undelivered) == list(range(5))


# -- executors -------------------------------------------------------------------------


def _threaded(release: threading.Event, gauge: Gauge, names: list[str]) -> Callable[[int], int]:
    def blocking(x: int) -> int:
        gauge.enter()
        names.append(threading.current_thread().name)
        try:
            while not release.is_set():
                time.sleep(0.001)  # a blocking call: it would stall the loop if run there
        finally:
            gauge.leave()
        return x + 1

    return blocking


@pytest.mark.parametrize("owned", [True, False], ids=["own-executor", "Pool.THREADS"])
async def test_blocking_calls_in_a_thread_pool_do_not_block_the_loop(owned: bool) -> None:
    release = threading.Event()
    gauge = Gauge()
    names: list[str] = []
    fn = _threaded(release, gauge, names)
    with ThreadPoolExecutor(4, thread_name_prefix="mine") as mine:
        executor: Any = mine if owned else hp.Pool.THREADS
        graph, received = chain(fn, executor=executor, concurrency=3)
        async with hp.run(graph) as topo:
            await topo.inject_many("in", range(9))
            # Three calls block in their threads at once, while this coroutine runs.
            await wait_until(lambda: gauge.active == 3, timeout=10)
            progress = asyncio.Event()

            async def other() -> None:
                await asyncio.sleep(0)
                progress.set()

            await asyncio.wait_for(asyncio.create_task(other()), 5)
            assert progress.is_set()
            assert received == []
            release.set()
            await asyncio.wait_for(topo.drain(), 10)
        pool_threads = set(names)
    assert [d.value for d in received] == list(range(1, 10))
    assert gauge.peak == 3
    assert threading.main_thread().name not in pool_threads
    prefix = "mine" if owned else "hotplumb"
    assert all(name.startswith(prefix) for name in pool_threads)
    if not owned:  # the topology shut its own pool down
        alive = {t.name for t in threading.enumerate()}
        assert not pool_threads & alive


async def test_an_executor_call_that_raises_or_times_out_fails_its_item() -> None:
    release = threading.Event()
    entered = threading.Event()

    def fn(x: int) -> int:
        if x == 1:
            raise KeyError("one")
        if x == 2:
            entered.set()
            assert release.wait(10)  # stuck until the test lets it go
        return x

    clock = FakeClock()
    with ThreadPoolExecutor(2) as executor:
        graph, received = chain(fn, executor=executor, timeout=1.0)
        async with hp.run(graph, clock=clock) as topo:
            await topo.inject_many("in", range(4))
            await wait_until(entered.is_set, timeout=10)
            await wait_until(lambda: clock.sleepers > 0, timeout=10)  # 2's deadline
            await clock.advance(1.5)
            release.set()
            await asyncio.wait_for(topo.drain(), 10)
    assert [d.value for d in received] == [0, 3]
    errors = {d.origin: d.error.exception for d in topo.errors if d.error is not None}
    assert isinstance(errors[1], KeyError)
    assert isinstance(errors[2], TimeoutError)


@pytest.mark.slow
async def test_a_process_pool_computes_in_other_processes() -> None:
    graph, received = chain(square_with_pid, executor=hp.Pool.PROCESSES, concurrency=2)
    async with hp.run(graph) as topo:
        await topo.inject_many("in", range(8))
        await asyncio.wait_for(topo.drain(), 60)
    assert [d.value[0] for d in received] == [x * x for x in range(8)]
    assert os.getpid() not in {d.value[1] for d in received}


@pytest.mark.slow
async def test_closing_waits_for_the_workers_of_its_process_pool(tmp_path: Path) -> None:
    started = tmp_path / "started"
    graph, received = chain(linger, executor=hp.Pool.PROCESSES)
    async with hp.run(graph) as topo:
        await topo.inject("in", (str(started), 1.0))  # a call that blocks its worker for 1 s
        await wait_until(started.exists, timeout=60)
        report = await asyncio.wait_for(topo.close(drain=False), 60)
    worker = int(started.read_text())
    assert not report.drained
    assert received == []
    # The call was running: closing waits for it, and for the worker to end.
    assert worker not in {p.pid for p in multiprocessing.active_children()}


@pytest.mark.slow
async def test_a_process_pool_the_user_owns_is_used_and_left_running() -> None:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=context) as executor:
        graph, received = chain(square_with_pid, executor=executor)
        async with hp.run(graph) as topo:
            await topo.inject_many("in", range(4))
            await asyncio.wait_for(topo.drain(), 60)
        # Still usable after the topology closed: it is the user's to shut down.
        assert executor.submit(square_with_pid, 3).result(timeout=60)[0] == 9
    assert [d.value[0] for d in received] == [0, 1, 4, 9]
    assert os.getpid() not in {d.value[1] for d in received}


def _closure() -> Callable[[int], int]:
    offset = 1

    def add(x: int) -> int:
        return x + offset

    return add


@pytest.mark.parametrize("fn", [lambda x: x, _closure()], ids=["lambda", "closure"])
@pytest.mark.parametrize("kind", ["Pool.PROCESSES", "ProcessPoolExecutor"])
async def test_a_callable_that_cannot_go_to_a_process_pool_is_refused_at_run(
    fn: Callable[[int], int], kind: str
) -> None:
    with ProcessPoolExecutor(1) as own:
        executor: Any = hp.Pool.PROCESSES if kind == "Pool.PROCESSES" else own
        graph, _ = chain(fn, executor=executor)
        with pytest.raises(hp.InvalidNodeCallableError, match="process pool") as caught:
            hp.run(graph)
    assert caught.value.key == "f"
    assert "node f" in str(caught.value)
    assert "module level" in str(caught.value)


async def test_a_callable_that_cannot_go_to_a_process_pool_is_refused_at_apply() -> None:
    graph, received = chain(lambda x: x + 1)
    async with hp.run(graph) as topo:
        bad = graph.add_node("f", hp.Node(lambda x: x, inputs=["in"], executor=hp.Pool.PROCESSES))
        with pytest.raises(hp.ApplyError, match="process pool") as caught:
            await asyncio.wait_for(topo.apply(bad), 5)
        assert isinstance(caught.value.__cause__, hp.InvalidNodeCallableError)
        assert topo.graph is graph  # nothing changed
        assert topo.generation == 0
        await topo.inject("in", 1)
        await asyncio.wait_for(topo.drain(), 5)
    assert [d.value for d in received] == [2]


async def _async_ctx(x: int, ctx: hp.Context) -> int:
    return x


async def _async_fn(x: int) -> int:
    return x


def _gen(x: int) -> Any:
    yield x


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"fn": _async_fn, "state": dict}, "cannot share a context or a state"),
        ({"fn": _async_ctx}, "cannot share a context or a state"),
        ({"fn": lambda x: x}, "needs an async callable, or an executor"),
        ({"fn": _gen}, "needs an async callable, or an executor"),
        ({}, "the identity"),
    ],
    ids=["stateful", "context", "sync", "sync-generator", "identity"],
)
async def test_concurrency_above_one_is_refused_where_it_cannot_hold(
    options: dict[str, Any], message: str
) -> None:
    graph = hp.Graph(
        {
            "in": hp.Node(),
            "f": hp.Node(inputs=["in"], concurrency=4, **options),
            "out": hp.sink(lambda d: None, inputs=["f"]),
        }
    )
    with pytest.raises(hp.InvalidNodeCallableError, match=message) as caught:
        hp.run(graph)
    assert caught.value.key == "f"
    assert "concurrency=4" in str(caught.value)


async def test_an_executor_is_refused_for_an_async_callable() -> None:
    graph, _ = chain(_async_fn, executor=hp.Pool.THREADS)
    with pytest.raises(hp.InvalidNodeCallableError, match="an executor runs plain callables"):
        hp.run(graph)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"concurrency": 0}, ValueError),
        ({"concurrency": -3}, ValueError),
        ({"concurrency": True}, TypeError),
        ({"concurrency": 2.0}, TypeError),
        ({"executor": 5}, TypeError),
        ({"executor": "threads"}, TypeError),
    ],
)
def test_bad_concurrency_or_executor_values_are_refused(
    options: dict[str, Any], error: type[Exception]
) -> None:
    name = next(iter(options))
    with pytest.raises(error, match=f"Node {name} must be"):
        hp.Node(_async_fn, inputs=["in"], **options)


# -- outputs as they are ready ------------------------------------------------------------


def _arrivals(clock: FakeClock) -> tuple[list[float], Callable[[hp.Datum], None]]:
    times: list[float] = []

    def record(d: hp.Datum) -> None:
        times.append(clock.now())

    return times, record


def _latency_graph(clock: FakeClock, record: Callable[[hp.Datum], None], k: int) -> hp.Graph:
    async def second(x: int) -> int:
        await clock.sleep_until(clock.now() + 1.0)
        return x

    return hp.Graph(
        {
            "in": hp.Node(),
            "f": hp.Node(second, inputs=["in"], concurrency=k),
            "out": hp.sink(record, inputs=["f"]),
        }
    )


async def test_a_burst_through_a_slow_node_delivers_each_output_when_it_is_ready() -> None:
    clock = FakeClock()
    times, record = _arrivals(clock)
    async with hp.run(_latency_graph(clock, record, 1), clock=clock) as topo:
        await topo.inject_many("in", range(100))  # one batch of 100
        await clock.drive(topo.drain())
    assert times[0] == 1.0  # not 100.0: the batch does not hold its first output back
    assert times == [float(t) for t in range(1, 101)]


async def test_a_burst_through_a_concurrent_slow_node_delivers_its_first_output_early() -> None:
    clock = FakeClock()
    times, record = _arrivals(clock)
    async with hp.run(_latency_graph(clock, record, 4), clock=clock) as topo:
        await topo.inject_many("in", range(100))
        await clock.drive(topo.drain())
    assert len(times) == 100
    assert times[0] == 1.0
    assert times[-1] == 25.0  # four at a time
    # No output waits longer than the next item time after it was ready.
    ready = [1.0 + x // 4 for x in range(100)]
    assert all(r <= t <= r + 1.0 for r, t in zip(ready, times, strict=True))


async def _ready_and_delivered(k: int, delays: list[float]) -> list[tuple[float, float]]:
    """For each input: (when its output was ready, when the sink got it)."""
    clock = FakeClock()
    ready: dict[int, float] = {}
    times: list[tuple[float, float]] = []

    async def work(x: int) -> int:
        await clock.sleep_until(clock.now() + delays[x])
        ready[x] = clock.now()
        return x

    def record(d: hp.Datum) -> None:
        times.append((ready[d.value], clock.now()))

    graph = hp.Graph(
        {
            "in": hp.Node(),
            "f": hp.Node(work, inputs=["in"], concurrency=k),
            "out": hp.sink(record, inputs=["f"]),
        }
    )
    async with hp.run(graph, clock=clock) as topo:
        await topo.inject_many("in", range(len(delays)))
        await clock.drive(topo.drain())
    assert len(times) == len(delays)
    return times


async def test_a_quick_output_waits_at_most_for_the_input_after_it() -> None:
    # Item 0 is ready at once; item 1 takes 5 s. The documented bound for a node
    # that processes one input at a time (call_each): a ready output waits at
    # most LATENCY plus the processing time of the one input after it.
    delays = [0.0, 5.0, 0.0, 5.0]
    times = await _ready_and_delivered(1, delays)
    assert all(got - ready <= LATENCY + max(delays) for ready, got in times)
    assert times[1][1] == times[1][0]  # item 1 is sent as soon as it is ready


async def test_a_concurrent_node_sends_every_ready_output_within_the_latency() -> None:
    # Four items finish together at t=1: all four are sent at 1, before the node
    # waits for the next.
    times = await _ready_and_delivered(4, [1.0] * 12)
    assert all(got - ready <= LATENCY for ready, got in times)
