"""The Ray engine when host actors die: several at once, and a death meeting a change or a close.

Each test runs a real topology over real host actors (the session's local
Ray, the ``cluster`` fixture), as ``tests/test_rayengine.py`` does, and kills
hosts with ``ray.kill``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

import pytest

if os.environ.get("HOTPLUMB_REQUIRE_RAY") != "1":
    pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'hotplumb[ray]'")

import ray

import hotplumb as hp
from hotplumb._rayengine import Distributed
from hotplumb.ray import HostDiedError, RayEngine
from hotplumb.testing import wait_until
from tests.rayenginenodes import SlowToPrepareHost

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("cluster")]

WAIT = 60


def _engine(topo: hp.Topology) -> Distributed:
    engine = topo._core.engine
    assert isinstance(engine, Distributed)
    return engine


def _chain(received: list[hp.Datum]) -> hp.Graph:
    return hp.Graph(
        {
            "numbers": hp.Node(),
            "first": hp.Node(lambda x: x, inputs=["numbers"]),
            "second": hp.Node(lambda x: x, inputs=["first"]),
            "out": hp.sink(received.append, inputs=["second"]),
        }
    )


SPREAD = {"first": "h1", "second": "h2"}


def _raises(ctx: hp.Context) -> Any:
    raise RuntimeError("no state today")


async def test_two_hosts_that_die_together_fail_the_topology_naming_both() -> None:
    # Two actors on one lost machine: one host's restart at a time, so the
    # second death fails the topology rather than leave it waiting.
    received: list[hp.Datum] = []

    async def kill_both() -> None:
        async with hp.run(_chain(received), engine=RayEngine(placement=SPREAD)) as topo:
            await topo.inject_many("numbers", range(100))
            await topo.drain()
            distributed = _engine(topo)
            ray.kill(distributed.actors["h1"])
            ray.kill(distributed.actors["h2"])
            await asyncio.Event().wait()  # the failure cancels the block

    with pytest.raises(ExceptionGroup) as caught:
        await asyncio.wait_for(kill_both(), WAIT)
    died = [e for e in caught.value.exceptions if isinstance(e, HostDiedError)]
    assert died, caught.value
    assert {d.host for d in died} <= {"h1", "h2"}


async def test_a_change_applied_just_after_a_death_restarts_the_nodes_or_says_the_host_died() -> (
    None
):
    received: list[hp.Datum] = []
    graph = _chain(received)
    async with asyncio.timeout(WAIT):
        async with hp.run(graph, engine=RayEngine(placement=SPREAD)) as topo:
            await topo.inject_many("numbers", range(100))
            await topo.drain()
            distributed = _engine(topo)
            ray.kill(distributed.actors["h2"])
            await wait_until(lambda: bool(distributed._recovering), timeout=WAIT)
            # The new actor of that name is starting (it takes about a second).
            await wait_until(lambda: "h2" in distributed.actors, timeout=WAIT)
            # The same graph: the change only restarts the dead host's nodes.
            with contextlib.suppress(HostDiedError):  # the README's promise for a change meanwhile
                await topo.apply(graph)
            await wait_until(lambda: not distributed._recovering, timeout=WAIT)
            await topo.inject_many("numbers", range(100, 200))
            await topo.drain()
    assert [d.value for d in received][-100:] == list(range(100, 200))


async def test_a_drain_after_a_change_that_failed_during_a_restart_lets_the_nodes_restart() -> None:
    received: list[hp.Datum] = []
    graph = _chain(received)
    broken = graph.add_node("broken", hp.sink(lambda d: None, inputs=["first"], state=_raises))
    async with asyncio.timeout(WAIT):
        async with hp.run(graph, engine=RayEngine(placement=SPREAD)) as topo:
            await topo.inject_many("numbers", range(100))
            await topo.drain()
            distributed = _engine(topo)
            ray.kill(distributed.actors["h2"])
            await wait_until(lambda: bool(distributed._recovering), timeout=WAIT)
            # The new actor of that name is starting (it takes about a second).
            await wait_until(lambda: "h2" in distributed.actors, timeout=WAIT)
            with pytest.raises(hp.ApplyError):
                await topo.apply(broken)  # its state factory raises: nothing changes
            with contextlib.suppress(HostDiedError):  # refused while the restart is under way
                await topo.drain()
            await wait_until(lambda: not distributed._recovering, timeout=WAIT)
            await topo.inject_many("numbers", range(100, 200))
            await asyncio.wait_for(topo.drain(), 20)
            running_on_h2 = await distributed.actors["h2"].node_statistics.remote()
    assert "second" in running_on_h2  # the dead host's node runs again on the new actor
    assert [d.value for d in received][-100:] == list(range(100, 200))


async def test_closing_while_the_restart_change_is_being_prepared_finishes() -> None:
    received: list[hp.Datum] = []
    engine = RayEngine(placement=SPREAD, _actor_class=SlowToPrepareHost)
    async with asyncio.timeout(WAIT):
        async with hp.run(_chain(received), engine=engine) as topo:
            await topo.inject_many("numbers", range(100))
            await topo.drain()
            distributed = _engine(topo)
            before = max(distributed._barriers)
            ray.kill(distributed.actors["h2"])
            # The restart's change is giving the hosts their parts (0.3 s each).
            await wait_until(lambda: max(distributed._barriers) > before, timeout=WAIT)
            report = await asyncio.wait_for(topo.close(), 20)
    assert report is not None
    assert [d.value for d in received] == list(range(100))
