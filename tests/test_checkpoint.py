"""Checkpoints: the barrier records a consistent cut, failures are named, recovery restores it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import TYPE_CHECKING, Any

import pytest

import hotplumb as hp
from hotplumb.examples.exactly_once import read_rows, sqlite_sink
from hotplumb.testing import FakeClock, wait_all_tasks_blocked, wait_until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path


@pytest.fixture
def store(tmp_path: Path) -> Iterator[hp.SQLiteStore]:
    with hp.SQLiteStore(tmp_path / "ck.db") as opened:
        yield opened


class Crash(Exception):
    """Leaves a run block at once: the topology stops without draining, like a crash."""


@contextlib.asynccontextmanager
async def crash_after(graph: hp.Graph, **options: Any) -> AsyncIterator[hp.Topology]:
    """Run ``graph``; at the end of the block, stop at once as if the process died."""
    try:
        async with hp.run(graph, **options) as topo:
            yield topo
            raise Crash
    except Crash:
        pass


def count(value: int, ctx: hp.Context) -> int:
    ctx.state += 1
    return value


def diamond(got: list[Any]) -> hp.Graph:
    """A diamond, ``in -> a, b -> join -> out``: every node counts what it processed."""
    return hp.Graph(
        {
            "in": hp.Node(),
            "a": hp.Node(count, inputs=["in"], state=int),
            "b": hp.Node(count, inputs=["in"], state=int),
            "join": hp.Node(count, inputs=["a", "b"], state=int),
            "out": hp.sink(got.append, inputs=["join"]),
        }
    )


def states(topo: hp.Topology) -> dict[Any, str | None]:
    return {n.key: n.state for n in topo.snapshot()}


async def test_a_checkpoint_records_every_node_and_recovery_restores_it(
    store: hp.SQLiteStore,
) -> None:
    got: list[Any] = []
    async with hp.run(diamond(got), checkpoint=store) as topo:
        assert topo.recovered is None  # an empty store: a fresh start
        await topo.inject_many("in", range(10))
        checkpoint = await topo.checkpoint()
        assert (checkpoint.id, checkpoint.generation, checkpoint.nodes) == (1, 0, 5)
        assert checkpoint.size > 0
        assert topo.checkpoints == hp.CheckpointStatistics(taken=1, last=checkpoint)
        snapshot = topo.snapshot()
        assert snapshot.checkpoint == checkpoint
        assert snapshot.to_dict()["checkpoint"]["id"] == 1
        await topo.inject_many("in", range(5))  # after the checkpoint: not in it
        await topo.drain()
    async with hp.run(diamond(got), checkpoint=store) as topo:
        recovered = topo.recovered
        assert recovered is not None
        assert recovered.checkpoint == checkpoint
        assert set(recovered.restored) == {"in", "a", "b", "join", "out"}
        assert recovered.positions == {"in": 10}
        assert (recovered.removed, recovered.fresh, recovered.migrated) == ((), (), ())
        assert states(topo) == {"in": None, "a": "10", "b": "10", "join": "20", "out": None}
        assert topo.snapshot().checkpoint == checkpoint
        await topo.inject("in", 1)
        second = await topo.checkpoint()
        assert second.id == 2
    async with hp.run(diamond(got), checkpoint=store) as topo:
        assert topo.recovered is not None
        assert topo.recovered.positions == {"in": 11}  # positions count across runs


async def test_the_states_recorded_are_a_consistent_cut_while_data_flows(
    store: hp.SQLiteStore,
) -> None:
    # Data keeps flowing into both branches while checkpoints are taken: each
    # one must hold, at every node, the state after exactly the same inputs.
    got: list[Any] = []
    async with hp.run(diamond(got), checkpoint=store, capacity=4) as topo:

        async def feed() -> None:
            for n in range(3000):
                await topo.inject("in", n)

        async with asyncio.TaskGroup() as tg:
            tg.create_task(feed())
            for _ in range(5):
                await asyncio.sleep(0)
                await topo.checkpoint()
                with other_store(store) as reader:
                    async with hp.run(diamond([]), checkpoint=reader) as probe:
                        recovered = probe.recovered
                        assert recovered is not None
                        position = recovered.positions["in"]
                        assert states(probe)["a"] == states(probe)["b"] == str(position)
                        assert states(probe)["join"] == str(2 * position)
        assert topo.checkpoints.taken == 5


def other_store(store: hp.SQLiteStore) -> hp.SQLiteStore:
    return hp.SQLiteStore(store.path)


async def test_a_state_that_cannot_be_encoded_fails_the_checkpoint_naming_the_node(
    store: hp.SQLiteStore,
) -> None:
    got: list[Any] = []

    def remember(value: int, ctx: hp.Context) -> int:
        ctx.state["lock"] = threading.Lock()  # cannot be pickled
        return value

    graph = diamond(got).add_node("a", hp.Node(remember, inputs=["in"], state=dict))
    async with hp.run(graph, checkpoint=store) as topo:
        first = await topo.checkpoint()  # nothing unpicklable yet
        await topo.inject("in", 1)
        with pytest.raises(hp.CheckpointError, match=r"node a: TypeError: cannot pickle") as failed:
            await topo.checkpoint()
        assert failed.value.keys == ("a",)
        assert topo.checkpoints.failed == 1
        assert topo.checkpoints.last == first
        await topo.inject("in", 2)  # the topology keeps running
        await topo.drain()
        assert [d.value for d in got] == [1, 1, 2, 2]
    latest = store.latest()
    assert latest is not None
    assert latest.id == first.id


async def test_checkpoints_are_taken_every_period_on_the_topology_clock(
    store: hp.SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    got: list[Any] = []
    async with hp.run(diamond(got), clock=clock, checkpoint=store, checkpoint_every=10) as topo:
        await topo.inject("in", 1)
        for _ in range(3):
            await clock.advance(10)
            await wait_until(lambda: topo.checkpoints.taken + topo.checkpoints.failed >= 1)
        await wait_until(lambda: topo.checkpoints.taken == 3)
        last = topo.checkpoints.last
        assert last is not None
        assert (last.id, last.time) == (3, 30.0)
    assert store.ids() == [1, 2, 3]


async def test_periodic_failures_are_logged_and_counted(
    store: hp.SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    graph = hp.Graph(
        {
            "in": hp.Node(),
            "bad": hp.Node(lambda v: v, inputs=["in"], state=threading.Lock),
            "out": hp.sink(lambda d: None, inputs=["bad"]),
        }
    )
    with caplog.at_level(logging.ERROR, logger="hotplumb"):
        async with hp.run(graph, clock=clock, checkpoint=store, checkpoint_every=5) as topo:
            await clock.advance(5)
            await wait_until(lambda: topo.checkpoints.failed == 1)
            await clock.advance(5)
            await wait_until(lambda: topo.checkpoints.failed == 2)
            await topo.inject("in", 1)
            await topo.drain()
    assert topo.checkpoints.taken == 0
    messages = [r.getMessage() for r in caplog.records if "periodic checkpoint" in r.getMessage()]
    assert len(messages) == 2
    assert "node bad: TypeError" in messages[0]


async def test_a_resumable_source_continues_from_its_offset(store: hp.SQLiteStore) -> None:
    started: list[Any] = []

    async def numbers(ctx: hp.Context, offset: int | None) -> AsyncIterator[tuple[int, int]]:
        started.append(offset)
        n = 0 if offset is None else offset
        while n < 100:
            n += 1
            yield n, n

    first: list[int] = []

    def collect(datum: hp.Datum) -> None:
        first.append(datum.value)

    graph = hp.Graph(
        {
            "numbers": hp.resumable_source(numbers),
            "out": hp.sink(collect, inputs=["numbers"], state=int),
        }
    )
    async with crash_after(graph, checkpoint=store, capacity=2) as topo:
        await wait_until(lambda: len(first) >= 20)
        checkpoint = await topo.checkpoint()
        with pytest.raises(hp.NotAnEntryPointError, match="resumable source"):
            await topo.inject("numbers", 0)
    assert checkpoint.id == 1
    latest = store.latest()
    assert latest is not None
    second: list[int] = []
    graph = graph.add_node("out", hp.sink(lambda d: second.append(d.value), inputs=["numbers"]))
    async with hp.run(graph, checkpoint=store) as topo:
        recovered = topo.recovered
        assert recovered is not None
        offset = recovered.offsets["numbers"]
        assert recovered.positions["numbers"] == offset
        await wait_until(lambda: len(second) == 100 - offset)
    assert started == [None, offset]
    assert second == list(range(offset + 1, 101))
    # At-least-once at the sink: what it got after the checkpoint, it gets again.
    assert first[offset:] == second[: len(first) - offset]


async def test_a_rollup_window_and_its_timer_phase_recover(store: hp.SQLiteStore) -> None:
    def graph(summaries: list[hp.Window]) -> hp.Graph:
        return hp.Graph(
            {
                "data": hp.Node(),
                "tick": hp.timer(10),
                "roll": hp.rollup(["data"], "tick"),
                "out": hp.sink(lambda d: summaries.append(d.value), inputs=["roll"]),
            }
        )

    before: list[hp.Window] = []
    clock = FakeClock()
    async with crash_after(graph(before), clock=clock, checkpoint=store) as topo:
        await wait_all_tasks_blocked()
        await topo.inject_many("data", [1, 2, 3])
        await topo.drain()
        await clock.advance(10)
        await wait_until(lambda: len(before) == 1)
        await clock.advance(4)
        await topo.inject_many("data", [4, 5])
        await topo.drain()
        await topo.checkpoint()
        await topo.inject("data", 99)  # after the checkpoint: lost with the crash
        await topo.drain()
    assert [w.values for w in before] == [(1, 2, 3)]
    after: list[hp.Window] = []
    clock = FakeClock(start=14.0)  # a clock that goes on from where the other stopped
    async with hp.run(graph(after), clock=clock, checkpoint=store) as topo:
        assert topo.recovered is not None
        assert topo.recovered.positions["data"] == 5
        await wait_all_tasks_blocked()
        await topo.inject("data", 6)
        await topo.drain()
        await clock.advance(6)  # the timer's next boundary is still 20
        await wait_until(lambda: len(after) == 1)
        (window,) = after
        assert (window.start, window.end, window.values) == (10.0, 20.0, (4, 5, 6))


async def test_recovery_into_a_changed_graph_migrates_and_reports(store: hp.SQLiteStore) -> None:
    got: list[Any] = []
    async with hp.run(diamond(got), checkpoint=store) as topo:
        await topo.inject_many("in", range(4))
        await topo.checkpoint()

    def count_in_dict(value: int, ctx: hp.Context) -> int:
        ctx.state["count"] += 1
        return value

    changed = (
        diamond(got)
        .add_node(
            "a",
            hp.Node(
                count_in_dict,
                inputs=["in"],
                state=lambda: {"count": 0},
                migrate=lambda old: {"count": old},
            ),
        )
        .add_node("c", hp.Node(count, inputs=["in"], state=int))
        .add_node("join", hp.Node(count, inputs=["a", "c"], state=int))
    )
    async with hp.run(changed, checkpoint=store) as topo:
        recovered = topo.recovered
        assert recovered is not None
        assert recovered.migrated == ("a",)
        assert recovered.removed == ("b",)
        assert recovered.fresh == ("c",)
        assert states(topo)["a"] == "{'count': 4}"
        assert states(topo)["c"] == "0"
        assert states(topo)["join"] == "8"


async def test_a_node_is_told_when_a_checkpoint_completes(store: hp.SQLiteStore) -> None:
    told: list[tuple[int, Any, Any]] = []

    def done(ctx: hp.Context, checkpoint: hp.Checkpoint, state: Any) -> None:
        told.append((checkpoint.id, state, ctx.state))

    graph = hp.Graph(
        {
            "in": hp.Node(),
            "out": hp.Node(count, inputs=["in"], target=True, state=int, on_checkpoint=done),
        }
    )
    async with hp.run(graph, checkpoint=store) as topo:
        await topo.inject_many("in", range(3))
        await topo.checkpoint()
    assert told == [(1, 3, 3)]
    async with hp.run(graph, checkpoint=store) as topo:
        pass  # told on recovery which checkpoint it starts from
    assert told[1] == (1, 3, 3)


async def test_an_exactly_once_sink_commits_each_row_once_across_a_crash(
    store: hp.SQLiteStore, tmp_path: Path
) -> None:
    out = tmp_path / "out.db"

    def graph() -> hp.Graph:
        return hp.Graph(
            {
                "in": hp.Node(),
                "double": hp.Node(lambda v: 2 * v, inputs=["in"]),
                "out": sqlite_sink(out, inputs=["double"]),
            }
        )

    async with crash_after(graph(), checkpoint=store) as topo:
        await topo.inject_many("in", range(10))
        await topo.checkpoint()
        assert read_rows(out) == [2 * n for n in range(10)]
        await topo.inject_many("in", range(10, 15))
        await topo.drain()
        assert len(read_rows(out)) == 10  # not durable yet: not committed
    async with hp.run(graph(), checkpoint=store) as topo:
        recovered = topo.recovered
        assert recovered is not None
        await topo.inject_many("in", range(recovered.positions["in"], 20))  # replay
        await topo.checkpoint()
    assert read_rows(out) == [2 * n for n in range(20)]


async def test_checkpoints_and_changes_are_serialised(store: hp.SQLiteStore) -> None:
    got: list[Any] = []
    async with hp.run(diamond(got), checkpoint=store) as topo:
        await topo.inject_many("in", range(5))
        new = topo.graph.add_node("b", hp.Node(lambda v, ctx: v, inputs=["in"], state=int))
        change, checkpoint = await asyncio.gather(topo.apply(new), topo.checkpoint())
        assert checkpoint.generation == change.generation == 1
        assert states(topo)["b"] == "5"


async def test_run_refuses_bad_checkpoint_arguments(store: hp.SQLiteStore) -> None:
    graph = diamond([])
    with pytest.raises(TypeError, match="checkpoint must be a checkpoint store"):
        hp.run(graph, checkpoint=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="checkpoint_every needs a store"):
        hp.run(graph, checkpoint_every=1)
    with pytest.raises(ValueError, match="checkpoint_every must be a positive"):
        hp.run(graph, checkpoint=store, checkpoint_every=0)
    with pytest.raises(ValueError, match="checkpoint_keep"):
        hp.run(graph, checkpoint=store, checkpoint_keep=0)
    async with hp.run(graph) as topo:
        with pytest.raises(hp.CheckpointError, match="no store"):
            await topo.checkpoint()
    with pytest.raises(TypeError, match="only a generator source can be resumable"):
        hp.Node(resumable=True)
    with pytest.raises(TypeError, match="codec must have encode and decode"):
        hp.Node(codec=object())  # type: ignore[arg-type]


async def test_a_node_may_declare_its_codec(store: hp.SQLiteStore) -> None:
    class Text:
        def encode(self, state: Any) -> bytes:
            return str(state).encode()

        def decode(self, data: bytes) -> Any:
            return int(data.decode())

    graph = hp.Graph(
        {
            "in": hp.Node(),
            "n": hp.Node(count, inputs=["in"], state=int, codec=Text()),
            "out": hp.sink(lambda d: None, inputs=["n"]),
        }
    )
    async with hp.run(graph, checkpoint=store) as topo:
        await topo.inject_many("in", range(7))
        await topo.checkpoint()
    latest = store.latest()
    assert latest is not None
    assert any(b"7" in v for v in latest.entries.values())
    async with hp.run(graph, checkpoint=store) as topo:
        assert states(topo)["n"] == "7"


async def test_a_timer_recovered_onto_a_clock_of_another_origin_keeps_its_index(
    store: hp.SQLiteStore,
) -> None:
    def graph(ticks: list[hp.Tick]) -> hp.Graph:
        return hp.Graph(
            {
                "tick": hp.timer(10),
                "out": hp.sink(lambda d: ticks.append(d.value), inputs=["tick"]),
            }
        )

    before: list[hp.Tick] = []
    clock = FakeClock(start=1000.0)
    async with crash_after(graph(before), clock=clock, checkpoint=store) as topo:
        await wait_all_tasks_blocked()
        await clock.advance(30)
        await wait_until(lambda: len(before) == 3)
        await topo.checkpoint()
    after: list[hp.Tick] = []
    clock = FakeClock()  # a new process: its clock starts from 0
    async with hp.run(graph(after), clock=clock, checkpoint=store) as topo:
        await wait_all_tasks_blocked()
        await clock.advance(10)
        await wait_until(lambda: len(after) == 1)
    assert [t.index for t in before] == [1, 2, 3]
    assert (after[0].index, after[0].missed, after[0].scheduled) == (4, 0, 10.0)


def slow_diamond() -> hp.Graph:
    """The diamond with a slow branch ``a``: the barrier reaches ``join`` from ``b`` first."""

    async def slowly(value: int, ctx: hp.Context) -> int:
        for _ in range(5):
            await asyncio.sleep(0)
        ctx.state += 1
        return value

    return diamond([]).add_node("a", hp.Node(slowly, inputs=["in"], state=int))


@pytest.mark.parametrize("aligned", [True, False])
async def test_negative_control_without_alignment_the_cut_is_not_consistent(
    tmp_path: Path, aligned: bool
) -> None:
    from hotplumb._change import Aligner
    from hotplumb._runtime import _open
    from tests.test_change import Unaligned

    with hp.SQLiteStore(tmp_path / "ck.db") as store:
        async with _open(
            slow_diamond(),
            capacity=1024,
            clock=None,
            restart=None,
            trace=False,
            max_errors=10_000,
            checkpoint=store,
            aligner=Aligner if aligned else Unaligned,
        ) as topo:
            await topo.inject_many("in", range(50))
            await topo.checkpoint()  # while a's data are still on their way
        async with hp.run(slow_diamond(), checkpoint=store) as probe:
            assert probe.recovered is not None
            assert probe.recovered.positions["in"] == 50
            recorded = states(probe)
    consistent = recorded["a"] == recorded["b"] == "50" and recorded["join"] == "100"
    assert consistent is aligned, recorded
