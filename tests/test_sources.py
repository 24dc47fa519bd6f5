"""Sources from iterables and queues, batched sinks and freezing the collector."""

from __future__ import annotations

import asyncio
import functools
import gc
import weakref
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


def _grow_and_shrink(graph: hp.Graph, n: int) -> hp.Graph:
    return graph.add_node(("out", n), hp.sink(lambda d: None, inputs=[("stage", n)]))


def _shrink(graph: hp.Graph, n: int) -> hp.Graph:
    return graph.remove_node(("out", n))


def _stage_factory(key: object) -> hp.Node | None:
    match key:
        case ("stage", int(n)):
            return hp.Node(lambda x: x + n, inputs=["in"])
    return None


async def test_gc_freeze_freezes_what_a_change_makes_before_its_cut() -> None:
    graph = hp.Graph({"in": hp.Node()}, _stage_factory)
    try:
        async with hp.run(graph, gc_freeze=True) as topo:
            before = gc.get_freeze_count()
            await topo.update(lambda g: _grow_and_shrink(g, 1))
            frozen = gc.get_freeze_count()
            assert frozen > before
    finally:
        gc.unfreeze()


async def test_a_removed_node_is_freed_without_the_cyclic_collector() -> None:
    # Nodes and their channels refer to each other; a node the topology lets
    # go must not be kept by that cycle, or a process running with gc_freeze
    # (whose collector never scans frozen objects) would keep every node that
    # any change removed.
    graph = hp.Graph({"in": hp.Node()}, _stage_factory)
    async with hp.run(graph) as topo:
        gc.collect()
        gc.disable()
        try:
            for n in range(3):
                await topo.update(functools.partial(_grow_and_shrink, n=n))
                await topo.inject("in", n)
                await topo.drain()
                await topo.update(functools.partial(_shrink, n=n))
            await topo.drain()
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            kept = sorted({type(o).__qualname__ for o in gc.garbage if _ours(o)})
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert kept == []


def _ours(obj: object) -> bool:
    return type(obj).__module__.startswith("hotplumb")


def _failing_stage_factory(key: object) -> hp.Node | None:
    match key:
        case ("stage", int()):
            return hp.Node(_refuse_negatives, inputs=["in"], on_error=lambda d: hp.SKIP)
    return None


def _refuse_negatives(x: int) -> int:
    if x < 0:
        raise ValueError(f"{x} is negative")
    return x


async def test_a_removed_node_that_failed_is_freed_without_the_cyclic_collector() -> None:
    graph = hp.Graph({"in": hp.Node()}, _failing_stage_factory)
    async with hp.run(graph) as topo:
        gc.collect()
        gc.disable()
        try:
            await topo.update(functools.partial(_grow_and_shrink, n=1))
            await topo.inject("in", -1)  # fails; its on_error skips it
            await topo.drain()
            assert topo.statistics()[("stage", 1)].failed == 1
            await topo.update(functools.partial(_shrink, n=1))
            await topo.drain()
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            kept = sorted({type(o).__qualname__ for o in gc.garbage if _ours(o)})
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert kept == []


class _Blob:
    """An object in a reference cycle with itself: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


async def test_gc_freeze_at_a_change_does_not_freeze_old_garbage() -> None:
    graph = hp.Graph({"in": hp.Node()}, _stage_factory)
    try:
        async with hp.run(graph, gc_freeze=True) as topo:
            gc.disable()  # no collection of its own between the steps below
            try:
                blob = _Blob()
                gone = weakref.ref(blob)
                gc.collect()  # the blob is alive: it moves to the oldest generation
                del blob  # ... and is cyclic garbage from now on
                await topo.update(lambda g: _grow_and_shrink(g, 1))
                gc.collect()  # a full collection frees every unfrozen cycle
            finally:
                gc.enable()
            assert gone() is None
    finally:
        gc.unfreeze()


class _State(dict[str, int]):
    """A node's state that a weak reference can watch."""


async def _run_frozen_and_close(states: list[weakref.ref[_State]]) -> None:
    def make() -> _State:
        state = _State()
        states.append(weakref.ref(state))
        return state

    graph = hp.Graph(
        {
            "in": hp.Node(),
            "f": hp.Node(lambda x, ctx: x, inputs=["in"], state=make),
            "out": hp.sink(lambda d: None, inputs=["f"]),
        }
    )
    async with hp.run(graph, gc_freeze=True) as topo:
        await topo.inject("in", 1)


async def test_a_closed_gc_freeze_topology_is_freed() -> None:
    states: list[weakref.ref[_State]] = []
    try:
        await _run_frozen_and_close(states)
        for _ in range(2):  # the last cancelled task's exception goes with the loop's next pass
            await asyncio.sleep(0)
        gc.collect()
        assert [ref() for ref in states] == [None]
    finally:
        gc.unfreeze()
