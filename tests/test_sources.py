"""Sources from iterables and queues, batched sinks and freezing the collector."""

from __future__ import annotations

import asyncio
import gc
from typing import TYPE_CHECKING

import pytest

import hotplumb as hp
from hotplumb.testing import wait_until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


async def test_a_source_of_a_plain_iterable_feeds_every_item_in_order() -> None:
    got: list[hp.Datum] = []
    graph = hp.Graph({"in": hp.source_of(range(5)), "out": hp.sink(got.append, inputs=["in"])})
    async with hp.run(graph) as topo:
        await wait_until(lambda: len(got) == 5)
        await topo.drain()
    assert [d.value for d in got] == [0, 1, 2, 3, 4]
    assert all(d.path == ("in", "out") for d in got)


async def test_a_source_of_an_async_iterable_feeds_it_once() -> None:
    async def stream() -> AsyncIterator[str]:
        for word in ("a", "b", "c"):
            await asyncio.sleep(0)
            yield word

    got: list[hp.Datum] = []
    values = stream()
    graph = hp.Graph({"in": hp.source_of(values), "out": hp.sink(got.append, inputs=["in"])})
    assert hp.source_of(values) == graph.nodes["in"]  # the same iterable: an equal node
    async with hp.run(graph) as topo:
        await wait_until(lambda: len(got) == 3)
        await topo.drain()
    assert [d.value for d in got] == ["a", "b", "c"]


async def test_a_queue_source_injects_what_is_put_while_it_has_readers() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=4)
    got: list[hp.Datum] = []
    node = hp.queue_source(queue)
    assert node == hp.queue_source(queue)
    graph = hp.Graph({"in": node, "out": hp.sink(got.append, inputs=["in"])})
    async with hp.run(graph) as topo:
        for i in range(20):
            await asyncio.wait_for(queue.put(i), 5)  # backpressure: at most 4 wait
        await wait_until(lambda: len(got) == 20)
        # Without readers the source stops taking: the queue fills up.
        await topo.update(lambda g: g.remove_node("out"))
        for i in range(4):
            queue.put_nowait(i)
        assert queue.full()
    assert [d.value for d in got] == list(range(20))


def test_a_source_needs_something_to_iterate() -> None:
    with pytest.raises(TypeError, match="needs an iterable"):
        hp.source_of(5)  # type: ignore[arg-type]


async def test_a_batched_sink_gets_each_batch_once_and_values_need_no_datum() -> None:
    calls: list[hp.Data] = []
    graph = hp.Graph(
        {
            "in": hp.Node(),
            "f": hp.Node(lambda x: x * 2, inputs=["in"]),
            "out": hp.sink(calls.append, inputs=["f"], batched=True),
        }
    )
    async with hp.run(graph) as topo:
        await topo.inject_many("in", range(10))
        await topo.drain()
        stats = topo.statistics()["out"]
    assert sum(len(c) for c in calls) == 10
    assert [v for c in calls for v in c.values] == [x * 2 for x in range(10)]
    first = calls[0]
    assert first.path == ("in", "f", "out")
    assert first[0] == hp.Datum(0, 0, hp.Route("in").child("f").child("out"))
    assert [d.origin for d in first] == first.origins
    assert (stats.received, stats.emitted, stats.failed, stats.in_progress) == (10, 10, 0, 0)


async def test_a_batched_sink_that_raises_fails_every_datum_of_the_batch() -> None:
    def broken(data: hp.Data) -> None:
        raise ValueError("disk full")

    graph = hp.Graph({"in": hp.Node(), "out": hp.sink(broken, inputs=["in"], batched=True)})
    async with hp.run(graph) as topo:
        await topo.inject_many("in", range(3))
        await topo.drain()
        stats = topo.statistics()["out"]
    assert [d.origin for d in topo.errors] == [0, 1, 2]
    assert (stats.received, stats.failed, stats.in_progress) == (3, 3, 0)


def test_batched_is_for_sinks_only() -> None:
    graph = hp.Graph(
        {
            "in": hp.Node(),
            "f": hp.Node(lambda d: None, inputs=["in"], batched=True),
            "out": hp.sink(print, inputs=["f"]),
        }
    )
    with pytest.raises(hp.InvalidNodeCallableError, match="batched=True is for sinks"):
        hp.run(graph)


async def test_gc_freeze_moves_the_started_topology_to_the_permanent_generation() -> None:
    got: list[hp.Datum] = []
    graph = hp.Graph({"in": hp.Node(), "out": hp.sink(got.append, inputs=["in"])})
    before = gc.get_freeze_count()
    try:
        async with hp.run(graph, gc_freeze=True) as topo:
            assert gc.get_freeze_count() > before
            await topo.inject("in", 1)
    finally:
        gc.unfreeze()
    assert [d.value for d in got] == [1]
