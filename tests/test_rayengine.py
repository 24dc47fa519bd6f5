"""A topology spread over Ray host actors: the same API and the same guarantees as in one process.

Every test runs a real topology with ``engine=RayEngine(placement=...)``: its
entry points and targets in the test process (the driver), its other nodes
in host actors, each a process of the session's local Ray (the ``cluster``
fixture). What the hosts run travels by value (lambdas, closures) or by name
(``tests.raynodes``).
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

import pytest

if os.environ.get("HOTPLUMB_REQUIRE_RAY") != "1":
    pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'hotplumb[ray]'")

import ray

import hotplumb as hp
from hotplumb._rayengine import Distributed
from hotplumb.ray import DRIVER, HostDiedError, RayEngine
from hotplumb.testing import wait_until
from tests.rayenginenodes import RefusingHost, SlowToPrepareHost

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Hashable

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("cluster")]

WAIT = 60  # seconds: a bound on every wait (a host actor starts in about a second)


def actors(topo: hp.Topology) -> dict[str, Any]:
    """The host actors of the engine of ``topo``, by name (to kill one)."""
    engine = topo._core.engine
    assert isinstance(engine, Distributed)
    return engine.actors


def chain(received: list[hp.Datum]) -> hp.Graph:
    return hp.Graph(
        {
            "numbers": hp.Node(),
            "double": hp.Node(lambda x: 2 * x, inputs=["numbers"]),
            "plus1": hp.Node(lambda x: x + 1, inputs=["double"]),
            "square": hp.Node(lambda x: x * x, inputs=["plus1"]),
            "out": hp.sink(received.append, inputs=["square"]),
        }
    )


SPREAD = {"double": "h1", "plus1": "h2", "square": "h1"}


async def test_a_chain_over_two_hosts_delivers_everything_in_order_with_its_path() -> None:
    received: list[hp.Datum] = []
    async with asyncio.timeout(WAIT):
        async with hp.run(chain(received), engine=RayEngine(placement=SPREAD)) as topo:
            await topo.inject_many("numbers", range(2_000))
            await topo.drain()
            statistics = topo.statistics()
    assert [d.value for d in received] == [(2 * x + 1) ** 2 for x in range(2_000)]
    assert {d.path for d in received} == {("numbers", "double", "plus1", "square", "out")}
    assert [d.origin for d in received[:3]] == [0, 1, 2]
    # The hosts' counters reach the driver: after a drain they are exact.
    for key in ("double", "plus1", "square"):
        assert statistics[key].received == statistics[key].emitted == 2_000
        assert statistics[key].in_progress == 0


async def test_a_diamond_across_hosts_joins_each_datum_once() -> None:
    received: list[hp.Datum] = []
    graph = hp.Graph(
        {
            "numbers": hp.Node(),
            "left": hp.Node(lambda x: ("left", x), inputs=["numbers"]),
            "right": hp.Node(lambda x: ("right", x), inputs=["numbers"]),
            "join": hp.Node(lambda v: v, inputs=["left", "right"]),
            "out": hp.sink(received.append, inputs=["join"]),
        }
    )
    placement = {"left": "h1", "right": "h2", "join": "h1"}
    async with asyncio.timeout(WAIT):
        async with hp.run(graph, engine=RayEngine(placement=placement)) as topo:
            await topo.inject_many("numbers", range(500))
            await topo.drain()
    lefts = [d.value[1] for d in received if d.value[0] == "left"]
    rights = [d.value[1] for d in received if d.value[0] == "right"]
    assert lefts == rights == list(range(500))


async def test_a_live_change_across_hosts_keeps_order_state_and_loses_nothing() -> None:
    received: list[hp.Datum] = []

    def counting(x: Any, ctx: hp.Context) -> Any:
        ctx.state += 1
        return (x, ctx.state, ctx.version)

    def counting_v2(x: Any, ctx: hp.Context) -> Any:
        ctx.state += 1
        return (x, ctx.state, ctx.version)

    first = hp.Graph(
        {
            "numbers": hp.Node(),
            "count": hp.Node(counting, inputs=["numbers"], state=lambda: 0),
            "out": hp.sink(received.append, inputs=["count"]),
        }
    )
    engine = RayEngine(placement={"count": "h1", "extra": "h2"})
    async with asyncio.timeout(WAIT):
        async with hp.run(first, engine=engine) as topo:
            await topo.inject_many("numbers", range(1_500))
            second = first.add_node(
                "count", hp.Node(counting_v2, inputs=["numbers"], state=lambda: 0)
            ).add_node("extra", hp.Node(lambda v: v, inputs=["count"]))
            second = second.add_node("out2", hp.sink(lambda d: None, inputs=["extra"]))
            report = await topo.apply(second)  # with data in flight on the host
            await topo.inject_many("numbers", range(1_500, 3_000))
            await topo.drain()
            statistics = topo.statistics()
    assert report.generation == 1
    values = [d.value for d in received]
    assert [v[0] for v in values] == list(range(3_000))  # none lost, none twice, in order
    assert [v[1] for v in values] == list(range(1, 3_001))  # the state carried over
    # Before the cut, the old version; after it, the new one, and the new branch.
    assert [v[2] for v in values] == [0] * 1_500 + [1] * 1_500
    assert statistics["extra"].received == 1_500


async def test_removing_a_hosts_node_drops_it_there_and_its_final_counters_come_back() -> None:
    received: list[hp.Datum] = []
    graph = chain(received).add_node("side", hp.Node(lambda x: -x, inputs=["double"]))
    graph = graph.add_node("side_out", hp.sink(lambda d: None, inputs=["side"]))
    async with asyncio.timeout(WAIT):
        async with hp.run(graph, engine=RayEngine(placement={**SPREAD, "side": "h2"})) as topo:
            await topo.inject_many("numbers", range(100))
            report = await topo.apply(graph.remove_node("side_out"))
            assert "side" not in topo.running_keys()
            await topo.inject_many("numbers", range(100, 200))
            await topo.drain()
    assert report.removed["side"].received == 100
    assert [d.origin for d in received] == list(range(200))


async def test_a_failure_on_a_host_is_a_dead_letter_here_with_its_provenance() -> None:
    received: list[hp.Datum] = []
    graph = hp.Graph(
        {
            "numbers": hp.Node(),
            "invert": hp.Node(lambda x: 1 / x, inputs=["numbers"]),
            "out": hp.sink(received.append, inputs=["invert"]),
        }
    )
    async with asyncio.timeout(WAIT):
        async with hp.run(graph, engine=RayEngine(placement={"invert": "h1"})) as topo:
            await topo.inject_many("numbers", [1, 0, 2])
            failed = await topo.errors.wait()
            await topo.drain()
    assert [d.value for d in received] == [1.0, 0.5]
    assert failed.path == ("numbers", "invert")
    assert failed.error is not None
    assert isinstance(failed.error.exception, ZeroDivisionError)
    assert "1 / x" in failed.error.traceback


async def test_close_without_drain_reports_what_the_hosts_held() -> None:
    graph = hp.Graph(
        {
            "numbers": hp.Node(),
            "slow": hp.Node(_slow, inputs=["numbers"]),
            "out": hp.sink(lambda d: None, inputs=["slow"]),
        }
    )
    async with asyncio.timeout(WAIT):
        async with hp.run(graph, engine=RayEngine(placement={"slow": "h1"})) as topo:
            await topo.inject_many("numbers", range(50))
            await wait_until(lambda: topo.statistics()["slow"].received > 0, timeout=WAIT)
            report = await topo.close(drain=False)
            delivered = topo.statistics()["out"].received
    assert not report.drained
    origins = sorted(d.origin for d in report.undelivered)
    assert len(origins) == len(set(origins))  # nothing reported twice
    assert delivered + len(origins) <= 50
    assert origins  # the slow node held most of them


async def _slow(x: Any) -> Any:
    await asyncio.sleep(0.05)
    return x


async def test_an_entry_point_away_from_the_driver_is_refused_naming_it() -> None:
    graph = chain([])
    with pytest.raises(ValueError, match="node numbers is an entry point"):
        async with hp.run(graph, engine=RayEngine(placement={"numbers": "h1"})):
            pass


def _count_where(x: Any, ctx: hp.Context) -> Any:
    ctx.state += 1
    return (x, ctx.state, os.getpid())


async def test_a_node_moves_between_hosts_live_with_its_state() -> None:
    received: list[hp.Datum] = []
    graph = hp.Graph(
        {
            "numbers": hp.Node(),
            "double": hp.Node(lambda x: 2 * x, inputs=["numbers"]),
            "count": hp.Node(_count_where, inputs=["double"], state=lambda: 0),
            "out": hp.sink(received.append, inputs=["count"]),
        }
    )
    before = {"double": "h1", "count": "h1"}
    async with asyncio.timeout(WAIT):
        async with hp.run(graph, engine=RayEngine(placement=before)) as topo:
            await topo.inject_many("numbers", range(1_000))
            report = await topo.apply(graph, placement={"double": "h1", "count": "h2"})
            await topo.inject_many("numbers", range(1_000, 2_000))
            await topo.drain()
            moved_back = await topo.apply(graph, placement=before)
            await topo.inject_many("numbers", range(2_000, 2_500))
            await topo.drain()
    assert report.generation == 1
    assert moved_back.generation == 2
    values = [d.value for d in received]
    assert [v[0] for v in values] == [2 * x for x in range(2_500)]  # none lost or twice, in order
    assert [v[1] for v in values] == list(range(1, 2_501))  # the state went with it, twice
    pids = [v[2] for v in values]
    assert pids[0] == pids[999] == pids[2_000] != pids[1_000] == pids[1_999]
    assert pids[:1_000] == [pids[0]] * 1_000


async def test_a_node_moves_from_the_driver_to_a_host_and_back_live_with_its_state() -> None:
    received: list[hp.Datum] = []
    graph = hp.Graph(
        {
            "numbers": hp.Node(),
            "double": hp.Node(lambda x: 2 * x, inputs=["numbers"]),
            "count": hp.Node(_count_where, inputs=["double"], state=lambda: 0, flush=_last),
            "out": hp.sink(received.append, inputs=["count"]),
        }
    )
    here = {"double": "h1"}
    async with asyncio.timeout(WAIT):
        async with hp.run(graph, engine=RayEngine(placement=here)) as topo:
            await topo.inject_many("numbers", range(500))
            away = await topo.apply(graph, placement={"double": "h1", "count": "h2"})
            await topo.inject_many("numbers", range(500, 1_000))
            back = await topo.apply(graph, placement=here)
            await topo.inject_many("numbers", range(1_000, 1_500))
            await topo.drain()
    assert away.errors == back.errors == ()
    *values, last = [d.value for d in received]
    assert last == ("flushed", 1_500)  # once, as the topology closed: not as it moved
    assert [v[0] for v in values] == [2 * x for x in range(1_500)]  # none lost or twice, in order
    assert [v[1] for v in values] == list(range(1, 1_501))  # the state went there and back
    pids = [v[2] for v in values]
    assert pids[:500] == [os.getpid()] * 500 == pids[1_000:]  # on the driver, then again
    assert os.getpid() not in pids[500:1_000]


def _last(ctx: hp.Context) -> Any:
    return ("flushed", ctx.state)


async def test_moving_and_redefining_a_node_in_one_change_is_refused_before_anything_changes() -> (
    None
):
    received: list[hp.Datum] = []
    graph = chain(received)
    redefined = graph.add_node("plus1", hp.Node(lambda x: x + 2, inputs=["double"]))
    async with asyncio.timeout(WAIT):
        async with hp.run(graph, engine=RayEngine(placement=SPREAD)) as topo:
            with pytest.raises(ValueError, match="node plus1 would move from 'h2' to 'driver'"):
                await topo.apply(redefined, placement={**SPREAD, "plus1": DRIVER})
            assert topo.generation == 0
            await topo.inject("numbers", 1)
            await topo.drain()
    assert [d.value for d in received] == [9]


def _host_of(key: Hashable) -> str:
    return "h1" if key in ("double", "square") else DRIVER


async def test_a_placement_may_be_a_function() -> None:
    received: list[hp.Datum] = []
    async with asyncio.timeout(WAIT):
        async with hp.run(chain(received), engine=RayEngine(placement=_host_of)) as topo:
            await topo.inject_many("numbers", range(10))
            await topo.drain()
    assert [d.value for d in received] == [(2 * x + 1) ** 2 for x in range(10)]


def test_host_died_error_names_the_host_and_its_nodes() -> None:
    error = HostDiedError("h1", ["a", "b"])
    assert str(error) == "host 'h1' died; it ran a, b"


async def test_a_snapshot_shows_the_hosts_nodes_with_their_counters() -> None:
    received: list[hp.Datum] = []
    async with asyncio.timeout(WAIT):
        async with hp.run(chain(received), engine=RayEngine(placement=SPREAD)) as topo:
            await topo.inject_many("numbers", range(30))
            await topo.drain()
            snapshot = topo.snapshot()
    nodes = {n.key: n for n in snapshot.nodes}
    assert list(nodes) == ["numbers", "double", "plus1", "square", "out"]
    counters = nodes["plus1"].counters
    assert counters is not None
    assert counters.received == 30
    assert nodes["plus1"].readers == ("square",)
    assert snapshot.edges == (
        ("numbers", "double"),
        ("double", "plus1"),
        ("plus1", "square"),
        ("square", "out"),
    )


async def _slowly(x: Any) -> Any:
    await asyncio.sleep(0.001)
    return x


async def test_a_host_killed_midstream_starts_again_and_says_what_was_lost() -> None:
    received: list[hp.Datum] = []
    graph = hp.Graph(
        {
            "numbers": hp.Node(),
            "first": hp.Node(lambda x: x, inputs=["numbers"]),
            "second": hp.Node(_slowly, inputs=["first"]),
            "out": hp.sink(received.append, inputs=["second"]),
        }
    )
    engine = RayEngine(placement={"first": "h1", "second": "h2"})
    async with asyncio.timeout(WAIT):
        async with hp.run(graph, engine=engine) as topo:
            await topo.inject_many("numbers", range(2_000))
            await wait_until(lambda: len(received) >= 100, timeout=WAIT)
            hosts = actors(topo)
            killed = hosts["h2"]
            ray.kill(killed)  # mid-stream: "second" has data in hand and in its channel
            await wait_until(lambda: topo.generation == 1, timeout=WAIT)  # the restart's change
            assert hosts["h2"] is not killed
            await topo.inject_many("numbers", range(2_000, 3_000))
            await topo.drain()
            lost = [d for d in topo.errors if isinstance(d.error.exception, HostDiedError)]  # type: ignore[union-attr]
    values = [d.value for d in received]
    assert values == sorted(set(values))  # in order, none twice
    assert set(range(2_000, 3_000)) <= set(values)  # after the restart, nothing lost
    missing = set(range(2_000)) - set(values)
    assert missing  # the dead process took some with it
    assert {d.value for d in lost} <= missing  # what is reported lost was not delivered
    assert all(d.path[-1] == "second" for d in lost)


async def test_a_host_that_dies_past_its_nodes_restart_policy_fails_the_topology() -> None:
    graph = hp.Graph(
        {
            "numbers": hp.Node(),
            "first": hp.Node(lambda x: x, inputs=["numbers"]),
            "out": hp.sink(lambda d: None, inputs=["first"]),
        }
    )
    engine = RayEngine(placement={"first": "h1"})
    policy = hp.RestartPolicy(max_restarts=0)

    async def kill_and_wait() -> None:
        async with hp.run(graph, engine=engine, restart=policy) as topo:
            await topo.inject("numbers", 1)
            await topo.drain()
            ray.kill(actors(topo)["h1"])
            await asyncio.Event().wait()  # the topology fails: this is cancelled

    with pytest.raises(ExceptionGroup) as caught:
        await asyncio.wait_for(kill_and_wait(), WAIT)
    failure = caught.value.exceptions[0]
    assert isinstance(failure, HostDiedError)
    assert failure.host == "h1"
    assert failure.keys == ("first",)


async def test_each_hops_times_say_whose_clock_they_are_on() -> None:
    received: list[hp.Datum] = []
    async with asyncio.timeout(WAIT):
        async with hp.run(chain(received), engine=RayEngine(placement=SPREAD), trace=True) as topo:
            await topo.inject("numbers", 1)
            await topo.drain()
    (datum,) = received
    assert datum.trace is not None
    hops = {hop.key: hop.clock for hop in datum.trace.hops()}
    assert hops == {"numbers": None, "double": "h1", "plus1": "h2", "square": "h1"}


async def test_rewiring_a_hosts_node_to_another_running_producer_across_hosts() -> None:
    # A new channel between two running nodes (here from one on the driver to one
    # on h1) is only in the change's switches until the cut; the engine must keep it.
    received: list[hp.Datum] = []
    first = hp.Graph(
        {
            "numbers": hp.Node(),
            "negate": hp.Node(lambda x: -x, inputs=["numbers"]),
            "double": hp.Node(lambda x: 2 * x, inputs=["numbers"]),
            "out": hp.sink(received.append, inputs=["double"]),
            "side": hp.sink(lambda d: None, inputs=["negate"]),
        }
    )
    second = first.add_node("double", hp.Node(lambda x: 2 * x, inputs=["negate"]))
    async with asyncio.timeout(WAIT):
        async with hp.run(first, engine=RayEngine(placement={"double": "h1"})) as topo:
            await topo.inject_many("numbers", range(10))
            await topo.apply(second)
            await topo.inject_many("numbers", range(10, 20))
            await topo.drain()
    assert [d.value for d in received] == [2 * x for x in range(10)] + [
        -2 * x for x in range(10, 20)
    ]
    assert received[-1].path == ("numbers", "negate", "double", "out")


async def _ten(ctx: hp.Context) -> AsyncIterator[int]:
    for value in range(10):
        yield value


async def test_a_source_a_change_adds_feeds_a_new_node_on_a_host_from_its_first_value() -> None:
    # The new source starts as the driver installs it, before the cut: the
    # host must have made its new reader's end of the channel by then.
    received: list[hp.Datum] = []
    first = chain([])
    second = first.add_nodes_from(
        {
            "ten": hp.source(_ten),
            "tripled": hp.Node(lambda x: 3 * x, inputs=["ten"]),
            "ten_out": hp.sink(received.append, inputs=["tripled"]),
        }
    )
    placement = {**SPREAD, "tripled": "h2"}
    engine = RayEngine(placement=placement, _actor_class=SlowToPrepareHost)
    async with asyncio.timeout(WAIT):
        async with hp.run(first, engine=engine) as topo:
            await topo.apply(second)
            await wait_until(lambda: len(received) == 10, timeout=WAIT)
            await topo.drain()
    assert [d.value for d in received] == [3 * x for x in range(10)]


async def test_a_channel_that_fails_fails_the_topology_rather_than_lose_data_silently() -> None:
    graph = chain([])
    engine = RayEngine(placement=SPREAD, _actor_class=RefusingHost)

    async def feed_one() -> None:
        async with hp.run(graph, engine=engine) as topo:
            await topo.inject("numbers", 1)
            await asyncio.Event().wait()  # the failure cancels the block

    with pytest.raises(ExceptionGroup) as caught:
        await asyncio.wait_for(feed_one(), WAIT)
    (failure,) = caught.value.exceptions
    assert isinstance(failure, hp.TopologyClosedError)
    assert "the channel from 'numbers' to 'double' on 'h1' failed" in str(failure)
