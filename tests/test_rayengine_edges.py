"""The Ray engine's edges: nodes that leave and come back, failed changes, moves, closing.

Each test runs a real topology over real host actors (the session's local
Ray, the ``cluster`` fixture), as ``tests/test_rayengine.py`` does.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import pytest

if os.environ.get("HOTPLUMB_REQUIRE_RAY") != "1":
    pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'hotplumb[ray]'")

import ray

import hotplumb as hp
from hotplumb._rayengine import Distributed
from hotplumb.ray import DRIVER, HostDiedError, RayEngine
from hotplumb.testing import wait_until

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("cluster")]

WAIT = 60


def _graph(received: list[hp.Datum]) -> hp.Graph:
    return hp.Graph(
        {
            "numbers": hp.Node(),
            "double": hp.Node(lambda x: 2 * x, inputs=["numbers"]),
            "out": hp.sink(received.append, inputs=["double"]),
        }
    )


def _with_side(graph: hp.Graph, side_out: list[hp.Datum]) -> hp.Graph:
    graph = graph.add_node("side", hp.Node(lambda x: -x, inputs=["double"]))
    return graph.add_node("side_out", hp.sink(side_out.append, inputs=["side"]))


def _without_side(graph: hp.Graph) -> hp.Graph:
    return graph.remove_node("side_out")  # "side", read by nothing, goes with it


async def test_a_node_removed_from_a_host_can_be_added_again_on_the_driver() -> None:
    # The README: "A node moves between host actors, not to or from the driver
    # (remove it, then add it there)".
    received: list[hp.Datum] = []
    side_out: list[hp.Datum] = []
    base = _graph(received)
    async with asyncio.timeout(WAIT):
        engine = RayEngine(placement={"double": "h1", "side": "h1"})
        async with hp.run(_with_side(base, side_out), engine=engine) as topo:
            await topo.inject("numbers", 1)
            await topo.drain()
            await topo.apply(_without_side(_with_side(base, side_out)))
            assert "side" not in topo.running_keys()
            await topo.apply(_with_side(base, side_out), placement={"double": "h1", "side": DRIVER})
            await topo.inject("numbers", 2)
            await topo.drain()
    assert [d.value for d in side_out] == [-2, -4]


async def test_a_node_removed_from_a_host_can_be_added_again_on_another_host() -> None:
    received: list[hp.Datum] = []
    side_out: list[hp.Datum] = []
    base = _graph(received)
    async with asyncio.timeout(WAIT):
        engine = RayEngine(placement={"double": "h1", "side": "h1"})
        async with hp.run(_with_side(base, side_out), engine=engine) as topo:
            await topo.inject("numbers", 1)
            await topo.drain()
            await topo.apply(_without_side(_with_side(base, side_out)))
            await topo.apply(_with_side(base, side_out), placement={"double": "h1", "side": "h2"})
            await topo.inject("numbers", 2)
            await topo.drain()
    assert [d.value for d in side_out] == [-2, -4]


def _failing_state() -> Any:
    raise RuntimeError("no state today")


async def test_a_state_factory_raising_on_a_host_leaves_the_node_free_to_be_added_elsewhere() -> (
    None
):
    received: list[hp.Datum] = []
    side_out: list[hp.Datum] = []
    base = _graph(received)
    broken = base.add_node(
        "side", hp.Node(lambda x: -x, inputs=["double"], state=_failing_state)
    ).add_node("side_out", hp.sink(side_out.append, inputs=["side"]))
    async with asyncio.timeout(WAIT):
        async with hp.run(base, engine=RayEngine(placement={"double": "h1"})) as topo:
            with pytest.raises(hp.ApplyError):
                await topo.apply(broken, placement={"double": "h1", "side": "h1"})
            assert topo.generation == 0
            # Nothing changed: the same node, working now, may go anywhere.
            await topo.apply(_with_side(base, side_out), placement={"double": "h1", "side": DRIVER})
            await topo.inject("numbers", 3)
            await topo.drain()
    assert [d.value for d in side_out] == [-6]


def _locked_state() -> Any:
    return {"count": 0, "lock": threading.Lock()}  # a lock does not pickle


def _count(x: Any, ctx: hp.Context) -> Any:
    ctx.state["count"] += 1
    return x


async def test_a_moved_nodes_state_that_does_not_pickle_is_in_the_changes_errors() -> None:
    # The design: "a state that does not pickle is reported in the change's errors".
    received: list[hp.Datum] = []
    graph = hp.Graph(
        {
            "numbers": hp.Node(),
            "double": hp.Node(lambda x: 2 * x, inputs=["numbers"]),
            "count": hp.Node(_count, inputs=["double"], state=_locked_state),
            "out": hp.sink(received.append, inputs=["count"]),
        }
    )
    async with asyncio.timeout(WAIT):
        engine = RayEngine(placement={"double": "h1", "count": "h1"})
        async with hp.run(graph, engine=engine) as topo:
            await topo.inject_many("numbers", range(10))
            report = await topo.apply(graph, placement={"double": "h1", "count": "h2"})
            await topo.inject_many("numbers", range(10, 20))
            await topo.drain()
    assert [d.value for d in received] == [2 * x for x in range(20)]
    assert [key for key, _ in report.errors] == ["count"]


async def test_a_drain_as_a_host_dies_fails_cleanly_and_nothing_after_the_restart_is_lost() -> None:
    received: list[hp.Datum] = []
    graph = hp.Graph(
        {
            "numbers": hp.Node(),
            "first": hp.Node(lambda x: x, inputs=["numbers"]),
            "second": hp.Node(lambda x: x, inputs=["first"]),
            "out": hp.sink(received.append, inputs=["second"]),
        }
    )
    engine = RayEngine(placement={"first": "h1", "second": "h2"})
    async with asyncio.timeout(WAIT):
        async with hp.run(graph, engine=engine) as topo:
            await topo.inject_many("numbers", range(100))
            await topo.drain()
            distributed = topo._core.engine
            assert isinstance(distributed, Distributed)
            ray.kill(distributed.actors["h2"])
            # The driver has heard of the death (asked every ms, to drain at once).
            await wait_until(lambda: bool(distributed._recovering), timeout=WAIT)
            # Before the restart's change: refused with the engine's error, nothing changed.
            with pytest.raises(HostDiedError, match="try it again"):
                await topo.drain()
            await wait_until(lambda: topo.generation >= 1, timeout=WAIT)
            await topo.inject_many("numbers", range(100, 200))
            await topo.drain()
    assert [d.value for d in received][-100:] == list(range(100, 200))
