"""Stopping a topology in awkward moments: nothing accepted goes unreported, nothing hangs."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

import hotplumb as hp
from hotplumb.testing import wait_all_tasks_blocked, wait_until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


def blocking() -> tuple[asyncio.Event, Any]:
    release = asyncio.Event()

    async def slow(x: Any) -> Any:
        await release.wait()
        return x

    return release, slow


async def test_close_during_a_change_reports_data_in_channels_not_attached_yet() -> None:
    _, slow = blocking()
    got: list[hp.Datum] = []
    before = hp.Graph(
        {"x": hp.Node(), "a": hp.Node(slow, inputs=["x"]), "out": hp.sink(got.append, inputs=["a"])}
    )
    after = hp.Graph({"a": hp.Node(), "out": hp.sink(got.append, inputs=["a"])})
    async with hp.run(before) as topo:
        await topo.inject("x", 1)
        await wait_all_tasks_blocked()  # "a" is busy with 1
        change = asyncio.create_task(topo.apply(after))
        await wait_until(lambda: topo.generation == 1)  # cut made; "a" has not switched
        await topo.inject("a", 99)  # accepted: "a" is an entry point of the new graph
        report = await topo.close(drain=False)
        with pytest.raises(hp.TopologyClosedError):
            await change
    assert sorted(d.origin for d in report.undelivered) == [1, 99]
    assert got == []


async def test_close_while_a_source_is_replaced_neither_loses_a_value_nor_hangs() -> None:
    release, slow = blocking()
    produced: list[int] = []
    nothing: asyncio.Queue[int] = asyncio.Queue()

    async def old_feed(ctx: hp.Context) -> AsyncIterator[int]:
        for v in (1, 2, 3):
            produced.append(v)
            yield v

    async def new_feed(ctx: hp.Context) -> AsyncIterator[int]:
        while True:
            yield await nothing.get()  # would wait forever

    got: list[hp.Datum] = []
    before = hp.Graph(
        {
            "src": hp.source(old_feed),
            "a": hp.Node(slow, inputs=["src"]),
            "out": hp.sink(got.append, inputs=["a"]),
        }
    )
    async with hp.run(before, capacity=1) as topo:
        await wait_until(lambda: len(produced) == 3)
        change = asyncio.create_task(topo.apply(before.add_node("src", hp.source(new_feed))))
        await wait_until(lambda: topo.generation == 1)
        closing = asyncio.create_task(topo.close())  # waits for the change, then drains
        await wait_all_tasks_blocked()
        release.set()
        await asyncio.wait_for(change, 5)
        report = await asyncio.wait_for(closing, 5)
    assert report.drained
    assert [d.value for d in got] == produced  # the new feed never started: it was closing


async def test_undelivered_data_have_the_path_they_reached() -> None:
    _, slow = blocking()
    got: list[hp.Datum] = []
    graph = hp.Graph(
        {
            "a": hp.Node(),
            "p": hp.Node(lambda x: x * 10, inputs=["a"]),
            "r": hp.Node(slow, inputs=["p"]),
            "out": hp.sink(got.append, inputs=["r"]),
        }
    )
    async with hp.run(graph, capacity=1) as topo:
        for v in (1, 2, 3):
            await topo.inject("a", v)
            await wait_all_tasks_blocked()
        report = await topo.close(drain=False)
    paths = {d.origin: d.path for d in report.undelivered}
    assert paths == {1: ("a", "p", "r"), 2: ("a", "p", "r"), 3: ("a", "p")}  # 3 waits in p
    assert got == []  # r never finished one: all three are reported, none delivered


async def test_a_node_cancelled_mid_batch_reports_only_what_it_had_not_settled() -> None:
    block = asyncio.Event()

    async def f(x: int, ctx: hp.Context) -> Any:
        if x == 1:
            raise ValueError("bad 1")
        if x == 2:
            return hp.SKIP
        await block.wait()
        return x

    graph = hp.Graph(
        {
            "a": hp.Node(),
            "p": hp.Node(f, inputs=["a"]),
            "out": hp.sink(lambda d: None, inputs=["p"]),
        }
    )
    async with hp.run(graph) as topo:
        await topo.inject_many("a", [1, 2, 3])
        await wait_all_tasks_blocked()
        stats = topo.statistics()["p"]
        report = await topo.close(drain=False)
    assert (stats.failed, stats.filtered, stats.in_progress) == (1, 1, 1)
    assert [d.origin for d in report.undelivered] == [3]


async def test_a_crash_mid_batch_is_neither_double_counted_nor_double_reported() -> None:
    _release, slow = blocking()

    def broken_handler(d: hp.Datum) -> Any:
        raise RuntimeError("handler broke")

    def fragile(x: int) -> int:
        if x == 2:
            raise ValueError(x)
        return x + 100

    graph = hp.Graph(
        {
            "a": hp.Node(),
            "p": hp.Node(fragile, inputs=["a"], on_error=broken_handler),
            "r": hp.Node(slow, inputs=["p"], capacity=1),
            "out": hp.sink(lambda d: None, inputs=["r"]),
        }
    )
    async with hp.run(graph, capacity=1) as topo:
        await topo.inject_many("a", [0, 1, 2, 3, 4])
        await wait_all_tasks_blocked()
        stats = topo.statistics()
        report = await topo.close(drain=False)
    origins = sorted(d.origin for d in report.undelivered)
    assert len(origins) == len(set(origins))  # nothing reported twice
    assert 2 not in origins  # it failed: it is in the dead-letter record instead
    assert [d.origin for d in topo.errors] == [2]
    settled = sum(s.failed + s.filtered for s in stats.values()) + stats["out"].emitted
    in_flight = sum(s.input_depth + s.in_progress for s in stats.values())
    assert stats["a"].received + stats["a"].input_depth == settled + in_flight == 5
