"""Running as a long-lived service: concurrent clients, close and removal, memory, bad calls.

Each test pins one way a service goes wrong: a lost update, state dropped at
close, memory that grows with every client, a failure nobody sees, a call
that corrupts or deadlocks a topology. Every wait is bounded, so a regression
fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
from typing import TYPE_CHECKING, Any

import pytest

import hotplumb as hp
import hotplumb._change
from hotplumb.testing import FakeClock, wait_all_tasks_blocked, wait_until

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable

# Real seconds any single wait may take before the test fails instead of hanging.
BOUND = 5.0


def feed(*clients: str, into: list[tuple[str, Any]] | None = None) -> hp.Graph:
    """An entry point ``feed`` read by a sink per client, each recording ``(client, value)``."""
    got: list[tuple[str, Any]] = into if into is not None else []
    nodes: dict[Hashable, hp.Node] = {"feed": hp.Node()}
    for name in clients:
        nodes[name] = client(name, got)
    return hp.Graph(nodes)


def client(name: str, got: list[tuple[str, Any]]) -> hp.Node:
    """A sink reading ``feed`` that records ``(name, value)``."""
    return hp.sink(lambda d: got.append((name, d.value)), inputs=["feed"])


def joining(name: str, got: list[tuple[str, Any]]) -> Callable[[hp.Graph], hp.Graph]:
    """For ``update``: the running graph with ``name`` joined as a client."""
    return lambda graph: graph.add_node(name, client(name, got))


def leaving(name: str) -> Callable[[hp.Graph], hp.Graph]:
    """For ``update``: the running graph without the client ``name``."""
    return lambda graph: graph.remove_node(name)


def arrived(got: list[tuple[str, Any]], item: tuple[str, Any]) -> Callable[[], bool]:
    """Whether ``item`` is the last thing a client received."""
    return lambda: got[-1:] == [item]


def blocking() -> tuple[asyncio.Event, Callable[[Any], Any]]:
    """An ``async def`` identity that waits for the returned event first."""
    release = asyncio.Event()

    async def slow(x: Any) -> Any:
        await release.wait()
        return x

    return release, slow


# -- 1. no lost updates -------------------------------------------------------------


async def test_concurrent_applies_of_one_derived_graph_never_lose_a_client_silently() -> None:
    async with hp.run(feed("base")) as topo:
        graph = topo.graph
        names = ["alice", "bob"]
        got: list[tuple[str, Any]] = []
        calls = [asyncio.create_task(topo.apply(graph.add_node(n, client(n, got)))) for n in names]
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), BOUND)
        running = topo.running_keys()
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                assert isinstance(result, hp.StaleGraphError), result
                assert result.generation == 0
                assert "generation 0" in str(result)
                assert name not in running
            else:
                assert name in running, f"apply() for {name} returned, but {name} is not running"
                assert name in topo.graph.nodes
        assert sum(isinstance(r, hp.StaleGraphError) for r in results) == 1


async def test_concurrent_updates_compose_and_every_client_joins() -> None:
    got: list[tuple[str, Any]] = []
    names = [f"client-{i}" for i in range(50)]
    async with hp.run(feed("base", into=got)) as topo:
        calls = [asyncio.create_task(topo.update(joining(n, got))) for n in names]
        await asyncio.wait_for(asyncio.gather(*calls), BOUND)
        assert set(names) <= set(topo.graph.nodes)
        assert set(names) <= topo.running_keys()
        await topo.inject("feed", "hello")
        await asyncio.wait_for(topo.drain(), BOUND)
    assert sorted(got) == sorted((n, "hello") for n in ["base", *names])


async def test_a_stale_derived_graph_is_refused_and_a_fresh_one_is_applied() -> None:
    got: list[tuple[str, Any]] = []
    start = feed("base", into=got)
    async with hp.run(start) as topo:
        await topo.apply(start.add_node("alice", client("alice", got)))
        stale = start.add_node("bob", client("bob", got))  # forgets alice
        with pytest.raises(hp.StaleGraphError, match="generation 0") as refused:
            await topo.apply(stale)
        assert (refused.value.generation, refused.value.current) == (0, 1)
        assert topo.running_keys() == {"feed", "base", "alice"}
        fresh = feed("base", "bob", into=got)  # built afresh: applied as it is
        report = await asyncio.wait_for(topo.apply(fresh), BOUND)
        assert report.changelist.removed == {"alice"}
        assert topo.running_keys() == {"feed", "base", "bob"}


async def test_an_update_whose_function_raises_or_returns_no_graph_changes_nothing() -> None:
    class Refused(Exception):
        pass

    def refuse(graph: hp.Graph) -> hp.Graph:
        raise Refused("no")

    def nonsense(graph: hp.Graph) -> Any:
        return {"not": "a graph"}

    got: list[tuple[str, Any]] = []
    async with hp.run(feed("base", into=got)) as topo:
        before = topo.graph
        with pytest.raises(Refused):
            await topo.update(refuse)
        with pytest.raises(TypeError, match="Graph"):
            await topo.update(nonsense)
        assert topo.graph is before
        assert topo.generation == 0
        # The change lock was released: the next update goes through.
        await asyncio.wait_for(topo.update(joining("alice", got)), BOUND)
        assert "alice" in topo.running_keys()


# -- 2. nothing held is lost at close or removal ------------------------------------


def rolled(fold: Callable[[hp.Window], Any] | None = None) -> tuple[hp.Graph, list[hp.Datum]]:
    """``data`` rolled up on a 10s timer into a sink."""
    got: list[hp.Datum] = []
    graph = hp.Graph(
        {
            "data": hp.Node(),
            "tick": hp.timer(10.0),
            "roll": hp.rollup(["data"], "tick", fold),
            "out": hp.sink(got.append, inputs=["roll"]),
        }
    )
    return graph, got


async def test_closing_with_a_drain_flushes_a_rollups_open_window_as_partial() -> None:
    clock = FakeClock()
    graph, got = rolled()
    async with hp.run(graph, clock=clock) as topo:
        await topo.inject_many("data", range(7))
        await clock.advance(3.0)  # within the first window: no tick yet
        report = await asyncio.wait_for(topo.close(), BOUND)
    assert len(got) == 1, "the open window was dropped at close"
    window = got[0].value
    assert isinstance(window, hp.Window)
    assert window.partial
    assert window.values == tuple(range(7))
    assert (window.start, window.end) == (0.0, 3.0)
    assert [p.value for p in got[0].parents] == list(range(7))
    assert report.drained
    assert report.unflushed == ()


async def test_removing_a_rollup_flushes_its_window_through_the_old_versions_first() -> None:
    got: list[tuple[str, Any]] = []

    def output(version: str) -> hp.Node:
        return hp.sink(lambda d: got.append((version, d.value)), inputs=["fmt"])

    def summary(window: hp.Window) -> tuple[bool, tuple[Any, ...]]:
        return window.partial, window.values

    before = hp.Graph(
        {
            "data": hp.Node(),
            "tick": hp.timer(10.0),
            "roll": hp.rollup(["data"], "tick", summary),
            "fmt": hp.Node(lambda s: ("fmt v1", s), inputs=["roll"]),
            "out": output("out v1"),
        }
    )
    after = hp.Graph(
        {
            "data": hp.Node(),
            "fmt": hp.Node(lambda s: ("fmt v2", s), inputs=["data"]),
            "out": output("out v2"),
        }
    )
    async with hp.run(before, clock=FakeClock()) as topo:
        await topo.inject_many("data", range(7))
        await asyncio.wait_for(topo.drain(), BOUND)
        assert got == []  # the window is open
        await asyncio.wait_for(topo.apply(after), BOUND)
        # Before apply() returned, the old versions processed the flushed window.
        assert got == [("out v1", ("fmt v1", (True, tuple(range(7)))))]
        await topo.inject("data", 7)
    assert got[1:] == [("out v2", ("fmt v2", 7))]


async def test_a_flush_that_raises_is_reported_unflushed_and_recorded_as_a_failure() -> None:
    class Broken(Exception):
        pass

    def count(value: Any, ctx: hp.Context) -> Any:
        ctx.state += 1
        return hp.SKIP

    def flush(ctx: hp.Context) -> Any:
        raise Broken(f"cannot flush {ctx.state}")

    graph = hp.Graph(
        {
            "data": hp.Node(),
            "count": hp.Node(count, inputs=["data"], state=int, flush=flush),
            "out": hp.sink(print, inputs=["count"]),
        }
    )
    async with hp.run(graph) as topo:
        await topo.inject_many("data", range(3))
        report = await asyncio.wait_for(topo.close(), BOUND)
        assert report.unflushed == ("count",)
        failures = [d.error for d in topo.errors if d.error is not None]
        assert [f.key for f in failures] == ["count"]
        assert isinstance(failures[0].exception, Broken)
        assert str(failures[0].exception) == "cannot flush 3"


async def test_closing_without_a_drain_reports_every_flushable_node_as_unflushed() -> None:
    graph, got = rolled()
    async with hp.run(graph, clock=FakeClock()) as topo:
        await topo.inject_many("data", range(7))
        await asyncio.wait_for(topo.drain(), BOUND)
        report = await topo.close(drain=False)
    assert not report.drained
    assert report.unflushed == ("roll",)
    assert got == []


# -- 3. memory that stays flat ------------------------------------------------------


def live_routes() -> int:
    gc.collect()
    return sum(isinstance(o, hp.Route) for o in gc.get_objects())


@pytest.mark.slow
@pytest.mark.parametrize(("join", "clients"), [("update", 2000), ("apply", 500)])
async def test_routes_of_departed_clients_are_released(join: str, clients: int) -> None:
    clock = FakeClock()
    got: list[tuple[str, Any]] = []
    graph = hp.Graph(
        {
            "feed": hp.Node(),
            "tick": hp.timer(60.0),
            "roll": hp.rollup(["feed"], "tick", lambda w: w.count),
            "summaries": hp.sink(lambda d: None, inputs=["roll"]),
        }
    )

    async def change(topo: hp.Topology, fn: Callable[[hp.Graph], hp.Graph]) -> None:
        if join == "update":
            await topo.update(fn)
        else:  # a read-modify-write of the running graph, one change at a time
            await topo.apply(fn(topo.graph))

    async with hp.run(graph, clock=clock) as topo:
        await topo.inject("feed", "warm-up")
        await topo.drain()
        baseline = live_routes()
        for i in range(clients):
            name = f"client-{i}"
            await change(topo, joining(name, got))
            await topo.inject("feed", i)
            await wait_until(arrived(got, (name, i)), timeout=BOUND)
            await change(topo, leaving(name))
        assert len(got) == clients
        got.clear()
        await asyncio.wait_for(topo.drain(), BOUND)
        grown = live_routes() - baseline
    assert grown < 100, f"{grown} more Route objects after {clients} clients joined and left"


# -- 4. StopIteration is a data error -----------------------------------------------


async def test_a_node_raising_stop_iteration_fails_those_items_and_delivers_the_rest() -> None:
    def odd_stops(x: int) -> int:
        if x % 2:
            raise StopIteration(x)
        return x

    got: list[hp.Datum] = []
    graph = hp.Graph(
        {
            "numbers": hp.Node(),
            "evens": hp.Node(odd_stops, inputs=["numbers"]),
            "out": hp.sink(got.append, inputs=["evens"]),
        }
    )
    async with hp.run(graph) as topo:
        await topo.inject_many("numbers", range(10))  # one batch: the fast path
        await asyncio.wait_for(topo.drain(), BOUND)
        assert [d.value for d in got] == [0, 2, 4, 6, 8]
        failed = list(topo.errors)
        assert [d.value for d in failed] == [1, 3, 5, 7, 9]
        for d in failed:
            assert d.error is not None
            assert d.error.key == "evens"
            assert isinstance(d.error.exception, StopIteration)
        stats = topo.statistics()["evens"]
        assert (stats.received, stats.emitted, stats.failed, stats.in_progress) == (10, 5, 5, 0)
        await topo.inject_many("numbers", range(10, 14))
        report = await asyncio.wait_for(topo.close(drain=False), BOUND)
    assert not report.drained
    # Every item once: delivered, failed or reported undelivered.
    seen = [d.origin for d in (*got, *topo.errors, *report.undelivered)]
    assert sorted(seen) == list(range(14))


async def test_closing_at_once_after_stop_iteration_reports_every_item() -> None:
    def odd_stops(x: int) -> int:
        if x % 2:
            raise StopIteration(x)
        return x

    _, slow = blocking()
    got: list[hp.Datum] = []
    graph = hp.Graph(
        {
            "numbers": hp.Node(),
            "evens": hp.Node(odd_stops, inputs=["numbers"]),
            "slow": hp.Node(slow, inputs=["evens"]),
            "out": hp.sink(got.append, inputs=["slow"]),
        }
    )
    async with asyncio.timeout(BOUND), hp.run(graph) as topo:
        await topo.inject_many("numbers", range(10))
        await wait_all_tasks_blocked()  # "slow" holds the evens
        report = await topo.close(drain=False)
    assert got == []
    assert sorted(d.origin for d in topo.errors) == [1, 3, 5, 7, 9]
    assert sorted(d.origin for d in report.undelivered) == [0, 2, 4, 6, 8]


# -- 5. a CancelledError that is not the node's own cancellation --------------------


async def test_an_async_node_whose_awaited_future_is_cancelled_fails_that_datum_only() -> None:
    loop = asyncio.get_running_loop()
    pending: list[asyncio.Future[Any]] = []

    async def call(x: Any) -> Any:
        if x == "hang":
            future = loop.create_future()
            pending.append(future)
            return await future  # someone else cancels it
        return x

    got: list[hp.Datum] = []
    graph = hp.Graph(
        {
            "requests": hp.Node(),
            "call": hp.Node(call, inputs=["requests"]),
            "out": hp.sink(got.append, inputs=["call"]),
        }
    )
    async with asyncio.timeout(BOUND):
        async with hp.run(graph) as topo:
            await topo.inject("requests", "hang")
            await wait_until(lambda: bool(pending), timeout=BOUND)
            pending[0].cancel()
            failed = await topo.errors.wait(1)
            assert failed.value == "hang"
            assert failed.error is not None
            assert isinstance(failed.error.exception, asyncio.CancelledError)
            await topo.inject("requests", 1)
            await topo.drain()
            assert [d.value for d in got] == [1]
            await topo.apply(graph.add_node("late", hp.sink(got.append, inputs=["call"])))
            await topo.inject("requests", 2)
            await topo.drain()
            assert topo.statistics()["call"].restarts == 0
    assert [d.value for d in got] == [1, 2, 2]


# -- 6. a cancelled timed apply releases the change lock, whatever the clock --------


def held_up() -> tuple[asyncio.Event, hp.Graph, list[hp.Datum]]:
    """``x -> a -> out`` where ``a`` waits for the event before passing anything on."""
    release, slow = blocking()
    got: list[hp.Datum] = []
    graph = hp.Graph(
        {
            "x": hp.Node(),
            "a": hp.Node(slow, inputs=["x"]),
            "out": hp.sink(got.append, inputs=["a"]),
        }
    )
    return release, graph, got


def replaced(graph: hp.Graph, tag: str) -> hp.Graph:
    """``graph`` with ``a`` replaced by a node tagging its values."""
    return graph.add_node("a", hp.Node(lambda v: (tag, v), inputs=["x"]))


async def still_works(topo: hp.Topology, got: list[hp.Datum]) -> None:
    """A later apply, drain and close complete, and data flows through the new version."""
    await topo.apply(replaced(topo.graph, "later"), timeout=10)
    await topo.inject("x", "after")
    await topo.drain(timeout=10)
    assert got[-1].value == ("later", "after")
    report = await topo.close(timeout=10)
    assert report.drained


async def test_cancelling_a_timed_apply_waiting_for_the_lock_releases_it() -> None:
    clock = FakeClock()
    release, graph, got = held_up()
    async with asyncio.timeout(BOUND), hp.run(graph, clock=clock) as topo:
        await topo.inject("x", "before")
        await wait_all_tasks_blocked()  # "a" holds "before"
        first = asyncio.create_task(topo.apply(replaced(graph, "first")))
        await wait_until(lambda: topo.generation == 1)  # its barrier waits behind "before"
        second = asyncio.create_task(topo.apply(replaced(hp.Graph(graph.nodes), "2"), timeout=10))
        await wait_all_tasks_blocked()  # waiting for the lock
        assert not second.done()
        assert topo.generation == 1
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        assert clock.sleepers == 0  # its deadline went with it
        release.set()
        await first
        assert [d.value for d in got] == ["before"]
        await still_works(topo, got)


async def test_cancelling_a_timed_apply_just_given_the_lock_releases_it() -> None:
    clock = FakeClock()
    release, graph, got = held_up()
    async with asyncio.timeout(BOUND), hp.run(graph, clock=clock) as topo:
        await topo.inject("x", "before")
        await wait_all_tasks_blocked()  # "a" holds "before"
        first = asyncio.create_task(topo.apply(replaced(graph, "first")))
        await wait_until(lambda: topo.generation == 1)  # holds the lock
        second = asyncio.create_task(topo.apply(replaced(hp.Graph(graph.nodes), "2"), timeout=10))
        await wait_all_tasks_blocked()  # waiting for the lock
        release.set()
        await first  # released the lock, which passes to the second at once
        second.cancel()  # before the second has run since
        with pytest.raises(asyncio.CancelledError):
            await second
        assert clock.sleepers == 0
        await still_works(topo, got)


async def test_cancelling_a_timed_apply_holding_the_lock_releases_it() -> None:
    clock = FakeClock()
    release, graph, got = held_up()
    async with asyncio.timeout(BOUND), hp.run(graph, clock=clock) as topo:
        await topo.inject("x", "before")
        await wait_all_tasks_blocked()  # "a" holds "before"
        change = asyncio.create_task(topo.apply(replaced(graph, "first"), timeout=10))
        await wait_until(lambda: topo.generation == 1)  # holds the lock, its barrier waits
        change.cancel()
        with pytest.raises(asyncio.CancelledError):
            await change
        assert clock.sleepers == 0  # its deadline went with it
        release.set()
        await topo.inject("x", "between")  # behind the cut: the change goes on, in order
        await topo.drain(timeout=10)
        assert [d.value for d in got] == ["before", ("first", "between")]
        await still_works(topo, got)


# -- 7. a bad argument to close changes nothing -------------------------------------


@pytest.mark.parametrize("timeout", [math.nan, -1.0])
async def test_close_with_a_bad_timeout_raises_and_leaves_the_topology_running(
    timeout: float,
) -> None:
    got: list[tuple[str, Any]] = []
    async with asyncio.timeout(BOUND), hp.run(feed("base", into=got)) as topo:
        with pytest.raises(ValueError, match="timeout"):
            await topo.close(timeout=timeout)
        assert not topo.closing
        assert not topo.closed
        await topo.inject("feed", 1)
        await topo.drain()
        assert got == [("base", 1)]
        await topo.apply(topo.graph.add_node("alice", client("alice", got)))
        await topo.inject("feed", 2)
        report = await topo.close()
    assert report.drained
    assert sorted(got) == [("alice", 2), ("base", 1), ("base", 2)]


# -- 8. bounds that are bounds: run() refuses bad arguments at once ------------------


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"capacity": math.nan}, ValueError, "capacity"),
        ({"capacity": 2.5}, ValueError, "capacity"),
        ({"capacity": 0}, ValueError, "capacity"),
        ({"clock": 5}, TypeError, "clock"),
        ({"max_errors": -1}, ValueError, "max_errors"),
        ({"on_failure": 5}, TypeError, "on_failure must be callable"),
    ],
)
def test_run_refuses_bad_arguments_before_anything_starts(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        hp.run(feed("base"), **options)  # not entered: it raises here


# -- 9. a snapshot during a change accounts for every item --------------------------


async def test_a_snapshot_during_a_change_sees_data_in_channels_not_attached_yet() -> None:
    release = asyncio.Event()
    got: list[hp.Datum] = []

    async def hold(d: hp.Datum) -> None:
        await release.wait()
        got.append(d)

    before = hp.Graph(
        {
            "x": hp.Node(),
            "p": hp.Node(inputs=["x"]),
            "s": hp.sink(hold, inputs=["p"]),
        }
    )
    # "s" now reads a new node "q": the channel q -> s is made by the change
    # and attached only when the barrier reaches "s", which is busy.
    after = hp.Graph(
        {
            "x": hp.Node(),
            "q": hp.Node(inputs=["x"]),
            "s": hp.sink(hold, inputs=["q"]),
        }
    )
    async with asyncio.timeout(BOUND), hp.run(before) as topo:
        await topo.inject_many("x", range(3))
        await wait_all_tasks_blocked()  # "s" holds the first
        change = asyncio.create_task(topo.apply(after))
        await wait_until(lambda: topo.generation == 1)
        await topo.inject_many("x", range(3, 11))  # after the cut: x -> q -> (q -> s)
        await wait_all_tasks_blocked()
        snap = topo.snapshot()
        assert snap.change is not None
        assert "s" in snap.change.pending
        counters = {n.key: n.counters for n in snap}
        received = counters["x"].received if counters["x"] is not None else -1
        settled = sum(
            c.failed + c.filtered + c.in_progress for c in counters.values() if c is not None
        )
        delivered = sum(
            n.counters.emitted for n in snap if n.kind is hp.NodeKind.TARGET and n.counters
        )
        depths = sum(c.depth for n in snap for c in n.channels if c.producer is not None)
        assert received == 11
        assert settled + delivered + depths == received
        assert [c.depth for c in snap["s"].channels if c.producer == "q"] == [8]
        release.set()
        await change
        await topo.drain()
    assert sorted(d.origin for d in got) == list(range(11))


# -- 10. errors as themselves, at run() ---------------------------------------------


async def test_a_negative_max_errors_is_a_value_error_not_an_exception_group() -> None:
    with pytest.raises(ValueError, match="max_errors"):
        async with hp.run(feed("base"), max_errors=-1):
            pass  # pragma: no cover - never entered


async def test_a_state_factory_taking_an_argument_is_refused_naming_the_node() -> None:
    graph = hp.Graph(
        {
            "feed": hp.Node(),
            "counter": hp.Node(inputs=["feed"], state=lambda x: 0),  # type: ignore[arg-type,misc]
            "out": hp.sink(print, inputs=["counter"]),
        }
    )
    with pytest.raises(hp.InvalidNodeCallableError, match="counter") as refused:
        async with hp.run(graph):
            pass  # pragma: no cover - never entered
    assert refused.value.key == "counter"


async def test_a_state_factory_that_raises_at_run_raises_as_itself_naming_the_node() -> None:
    class NoConfig(LookupError):
        pass

    def load() -> dict[str, int]:
        raise NoConfig("config not found")

    graph = hp.Graph(
        {
            "feed": hp.Node(),
            "counter": hp.Node(inputs=["feed"], state=load),
            "out": hp.sink(print, inputs=["counter"]),
        }
    )
    entered = False
    with pytest.raises(NoConfig, match="config not found") as raised:
        async with hp.run(graph):
            entered = True  # pragma: no cover - never entered
    assert not entered
    assert any("counter" in note for note in getattr(raised.value, "__notes__", []))


# -- 11. failures are seen: the log and the topology's callback ---------------------


def failing(*, fail: Callable[[int], bool] = lambda x: True) -> hp.Graph:
    """``numbers -> check -> out``; ``check`` raises ``ValueError`` where ``fail`` says."""

    def check(x: int) -> int:
        if fail(x):
            raise ValueError(f"bad reading {x}")
        return x

    return hp.Graph(
        {
            "numbers": hp.Node(),
            "check": hp.Node(check, inputs=["numbers"]),
            "out": hp.sink(lambda d: None, inputs=["check"]),
        }
    )


def hotplumb_records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "hotplumb" and r.levelno == level]


async def test_every_failure_is_logged_with_the_node_and_provenance(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="hotplumb")
    async with asyncio.timeout(BOUND), hp.run(failing(fail=lambda x: x % 2 == 1)) as topo:
        await topo.inject_many("numbers", range(6))
        await topo.drain()
    errors = hotplumb_records(caplog, logging.ERROR)
    assert len(errors) == 3
    for record, origin in zip(errors, [1, 3, 5], strict=True):
        text = record.getMessage()
        assert "check" in text
        assert "failed at" in text  # the provenance, hop by hop
        assert "numbers" in text
        assert f"origin: {origin}" in text
        assert f"bad reading {origin}" in text
        assert getattr(record, "hotplumb_key", None) == "check"
        assert getattr(record, "hotplumb_version", None) == 0


async def test_a_failure_storm_is_rate_limited_with_a_count_of_what_was_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="hotplumb")
    clock = FakeClock()
    async with asyncio.timeout(BOUND), hp.run(failing(), clock=clock) as topo:
        await topo.inject_many("numbers", range(1000))
        await topo.drain()
        assert topo.errors.total == 1000
        logged = len(hotplumb_records(caplog, logging.ERROR))
        assert 1 <= logged <= 10
        await clock.advance(1.5)  # past the period: the next failure brings the count
        await topo.inject("numbers", 1000)
        await topo.drain()
        summaries = [r.getMessage() for r in hotplumb_records(caplog, logging.WARNING)]
        assert len(summaries) == 1
        assert summaries[0].startswith(f"{1000 - logged} more node failure(s) not logged")
        assert len(hotplumb_records(caplog, logging.ERROR)) == logged + 1


async def test_the_rest_of_a_storm_is_counted_when_the_topology_closes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="hotplumb")
    async with asyncio.timeout(BOUND), hp.run(failing(), clock=FakeClock()) as topo:
        await topo.inject_many("numbers", range(1000))
    logged = len(hotplumb_records(caplog, logging.ERROR))
    assert 1 <= logged <= 10
    summaries = [r.getMessage() for r in hotplumb_records(caplog, logging.WARNING)]
    assert len(summaries) == 1
    assert summaries[0].startswith(f"{1000 - logged} more node failure(s) not logged")


async def test_on_failure_gets_every_failed_datum() -> None:
    seen: list[hp.Datum] = []
    graph = failing(fail=lambda x: x % 3 == 0)
    async with asyncio.timeout(BOUND), hp.run(graph, on_failure=seen.append) as topo:
        await topo.inject_many("numbers", range(30))
        await topo.drain()
        assert seen == list(topo.errors)
    assert [d.origin for d in seen] == list(range(0, 30, 3))
    assert all(d.error is not None and d.error.key == "check" for d in seen)


async def test_an_on_failure_callback_that_raises_is_logged_not_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="hotplumb")
    calls: list[Any] = []

    def broken(datum: hp.Datum) -> None:
        calls.append(datum.origin)
        raise RuntimeError("alerting is down")

    got: list[int] = []
    graph = failing(fail=lambda x: x < 2).add_node(
        "out", hp.sink(lambda d: got.append(d.value), inputs=["check"])
    )
    async with asyncio.timeout(BOUND), hp.run(graph, on_failure=broken) as topo:
        await topo.inject_many("numbers", range(5))
        await topo.drain()
        assert topo.errors.total == 2
    assert calls == [0, 1]
    assert got == [2, 3, 4]
    raised = [r for r in hotplumb_records(caplog, logging.ERROR) if "on_failure" in r.getMessage()]
    assert len(raised) == 2
    assert all(r.exc_info is not None and r.exc_info[0] is RuntimeError for r in raised)


# -- 12. a node awaiting a change of its own topology -------------------------------


async def test_a_sink_awaiting_a_change_upstream_of_itself_is_refused_at_once() -> None:
    topologies: list[hp.Topology] = []
    spawned: list[asyncio.Task[Any]] = []

    def upstream(graph: hp.Graph) -> hp.Graph:
        return graph.add_node("a", hp.Node(lambda v: ("new", v), inputs=["x"]))

    async def reenter(d: hp.Datum) -> None:
        topo = topologies[0]
        if d.value == "apply":
            await topo.apply(upstream(topo.graph))
        elif d.value == "drain":
            await topo.drain()
        elif d.value == "spawn":
            spawned.append(asyncio.create_task(topo.apply(upstream(topo.graph))))

    graph = hp.Graph(
        {"x": hp.Node(), "a": hp.Node(inputs=["x"]), "out": hp.sink(reenter, inputs=["a"])}
    )
    async with asyncio.timeout(BOUND), hp.run(graph, capacity=1) as topo:
        topologies.append(topo)
        # Backpressure: "a" waits for "out", so a barrier could never pass "out".
        await topo.inject_many("x", ["apply", "drain", 1, 2, 3])
        await topo.drain()
        failed = list(topo.errors)
        assert [d.value for d in failed] == ["apply", "drain"]
        for d in failed:
            assert d.error is not None
            assert d.error.key == "out"
            assert isinstance(d.error.exception, hp.ReentrantCallError)
            assert d.error.exception.key == "out"
        assert topo.generation == 0
        await topo.inject("x", "spawn")
        await wait_until(lambda: bool(spawned))
        report = await spawned[0]
        assert report.changelist.replaced == {"a"}
        assert topo.graph.nodes["a"].fn(1) == ("new", 1)
        assert topo.errors.total == 2


# -- a topology is made by run() and changed by its methods only ---------------------


async def test_topology_has_no_public_constructor_and_read_only_attributes() -> None:
    with pytest.raises(TypeError, match="no public constructor"):
        hp.Topology()  # type: ignore[call-arg]
    graph = feed("base")
    async with hp.run(graph) as topo:
        with pytest.raises(AttributeError):
            topo.graph = graph.add_node("alice", client("alice", []))  # type: ignore[misc]
        with pytest.raises(AttributeError):
            topo.errors = hp.DeadLetters()  # type: ignore[misc]
        with pytest.raises(AttributeError):
            topo.capacity = 1  # type: ignore[misc]
        assert topo.graph is graph


# Found in review -----------------------------------------------------------------------


async def test_an_apply_cancelled_before_its_cut_leaves_no_new_node_behind() -> None:
    got: list[hp.Datum] = []
    graph = hp.Graph({"n": hp.Node(), "out": hp.sink(got.append, inputs=["n"])})
    async with hp.run(graph) as topo:
        big = topo.graph.add_nodes_from(
            {f"s{i}": hp.sink(got.append, inputs=["n"]) for i in range(1000)}
        )
        change = asyncio.create_task(topo.apply(big))
        # Let the change install some of its new nodes (it yields every 256), not all.
        for _ in range(1000):
            await asyncio.sleep(0)
            if 2 < len(topo.running_keys()) < 1002:
                break
        assert 2 < len(topo.running_keys()) < 1002
        change.cancel()
        with pytest.raises(asyncio.CancelledError):
            await change
        assert topo.running_keys() == {"n", "out"}  # the half-installed nodes went again
        assert topo.generation == 0
        await topo.inject("n", 1)
        await asyncio.wait_for(topo.drain(), 5)  # no barrier waits for a node nobody feeds
        assert [d.value for d in got] == [1]
        report = await asyncio.wait_for(topo.apply(big), 5)
        assert report.generation == 1
        await topo.inject("n", 2)
        await asyncio.wait_for(topo.drain(), 5)
    assert len(got) == 1 + 1001


async def test_the_counters_add_up_while_a_batch_is_half_sent() -> None:
    gate = asyncio.Event()
    entered = asyncio.Event()

    async def slow(x: int) -> int:
        if x == 1:
            entered.set()
            await gate.wait()
        return x

    graph = hp.Graph(
        {
            "in": hp.Node(),
            "f": hp.Node(slow, inputs=["in"]),
            "out": hp.sink(lambda d: None, inputs=["f"]),
        }
    )
    async with hp.run(graph) as topo:
        await topo.inject_many("in", [0, 1, 2])
        await asyncio.wait_for(entered.wait(), 5)
        s = topo.statistics()["f"]
        # The output of 0 is made but not sent: it is in progress, not emitted.
        assert s.received == s.emitted + s.filtered + s.failed + s.in_progress == 3
        gate.set()
        await asyncio.wait_for(topo.drain(), 5)
        s = topo.statistics()["f"]
        assert (s.received, s.emitted, s.in_progress) == (3, 3, 0)


async def test_a_close_during_a_changes_install_reports_only_the_nodes_that_ran(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hotplumb._change, "STEP", 1)  # install yields after every node
    graph = hp.Graph({"n": hp.Node(), "out": hp.sink(lambda d: None, inputs=["n"])})
    async with hp.run(graph) as topo:
        new = topo.graph.add_nodes_from(
            {
                "f": hp.Node(lambda x: x, inputs=["n"], state=dict, flush=lambda ctx: hp.SKIP),
                "f_out": hp.sink(lambda d: None, inputs=["f"]),
            }
        )
        change = asyncio.create_task(topo.apply(new))
        await wait_until(lambda: "f" in topo.running_keys())
        report = await topo.close(drain=False)
        with pytest.raises(hp.TopologyClosedError):
            await change
    assert report.unflushed == ()  # "f" never took part: the change was not cut
