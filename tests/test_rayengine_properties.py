"""Property: the live-change guarantees hold with the topology spread over Ray host actors.

The machinery of ``test_apply_properties`` (random DAGs with joins and
diamonds, data from several sources, random live edits, the checker of
``tests.reconfig``) runs with ``engine=RayEngine(placement=...)``. Processors
are placed at random, per key and for the whole example (a key's host never
changes while it runs), on two host actors ``h1``, ``h2`` or the driver; the
first three of the first version go one to each, so every example with three
processors has nodes on both hosts and on the driver. Sources and targets
stay on the driver (entry points run there, and targets append to the test's
log).

What the engine cannot run on a host is kept on the driver: a processor that
tags in the test's own thread pool (``Spec.executor == "own"``) in any
version, since an executor the test owns does not pickle to another process.
A processor on ``Pool.THREADS`` may be placed on a host (the host makes that
pool). Every other edit of :func:`tests.test_apply_properties.edit` is made.

The negative control delivers the frames of every channel into a host in the
order the calls finish, without re-sequencing (``tests.rayenginenodes``), and
the checker must then find problems; the same example with a host that only
delays, and does re-sequence, must keep every guarantee, and both must see
frames arrive out of order, so the control means something.

A host killed mid-stream whose nodes may not restart (their restart policy
allows none) fails the topology: the ``async with`` ends with a
:class:`~hotplumb.ray.HostDiedError` naming the host and its nodes.
(``tests/test_rayengine.py`` shows the restart.)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

if os.environ.get("HOTPLUMB_REQUIRE_RAY") != "1":
    pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'hotplumb[ray]'")

import ray

import hotplumb as hp
from hotplumb._rayengine import Distributed
from hotplumb.ray import DRIVER, HostDiedError, RayEngine
from hotplumb.testing import wait_until
from tests.rayenginenodes import JitteredEngineHost, StraightEngineHost
from tests.reconfig import Log, Plan, Spec, apply, bump
from tests.reconfig import plans as plan_strategy
from tests.test_apply_properties import edited, scenario

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from hotplumb._rayhost import EngineHost

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("cluster")]

THOROUGH = os.environ.get("HOTPLUMB_PROFILE") == "thorough"
EXAMPLES = 300 if THOROUGH else 30
"""Examples of the property: each starts two host actors, about a second."""
TIMEOUT = 3600 if THOROUGH else 180
"""Seconds the property may take: 30 examples take 25 to 40 s here, past the usual 60 s
per test when the machine is busy (a marker here overrides the thorough profile's, so
that one is repeated)."""

WAIT = 60  # seconds: a bound on every wait

HOSTS = ("h1", "h2", DRIVER)


def placement(plans: Sequence[Plan], seed: int) -> dict[str, str]:
    """Every processor of every version, on a host drawn once per key.

    The first version's processors come first, shuffled: the first three go
    to ``h1``, ``h2`` and the driver, the others (and those later versions
    add) anywhere. One that tags in the test's own executor in any version
    stays on the driver (the mapping does not name it).
    """
    rng = random.Random(seed)
    own = {k for plan in plans for k, s in plan.specs.items() if s.executor == "own"}
    first = [k for k in _processors(plans[0]) if k not in own]
    rng.shuffle(first)
    later = [k for plan in plans[1:] for k in _processors(plan) if k not in own]
    table: dict[str, str] = {}
    for key in (*first, *later):
        if key not in table:
            n = len(table)
            table[key] = HOSTS[n] if n < len(HOSTS) else rng.choice(HOSTS)
    return table


def _processors(plan: Plan) -> list[str]:
    return [k for k, s in plan.specs.items() if s.inputs and not s.target]


@pytest.mark.timeout(TIMEOUT)
@settings(max_examples=EXAMPLES)
@given(
    start=plan_strategy(),
    seed=st.integers(0, 2**32 - 1),
    changes=st.integers(1, 5),
    items=st.integers(1, 40),
    capacity=st.sampled_from([1, 2, 8, 64]),
)
def test_live_changes_over_hosts_keep_every_guarantee(
    start: Plan, seed: int, changes: int, items: int, capacity: int
) -> None:
    plans = edited(start, seed, changes)
    table = placement(plans, seed)
    hosts = {table.get(k, DRIVER) for k in _processors(start)}
    event(f"hosts of the first version's processors: {sorted(hosts)}")
    event(f"executor nodes: {any(s.executor for p in plans for s in p.specs.values())}")
    run = functools.partial(hp.run, engine=RayEngine(placement=table))
    change = Mover(plans[0], table, seed)
    problems = asyncio.run(scenario(plans, items, capacity, seed, run=run, change=change))
    event(f"nodes moved: {change.moves > 0}")
    assert problems == []


class Mover:
    """Each live change of a scenario, which also moves a processor it leaves unchanged.

    The processor moves to another of ``h1``, ``h2`` and the driver (its state
    with it); one that tags in the test's own executor stays on the driver.
    """

    def __init__(self, start: Plan, table: dict[str, str], seed: int) -> None:
        self.table = table
        self.rng = random.Random(seed)
        self.running = start
        self.moves = 0

    async def __call__(self, topo: hp.Topology, log: Log, plan: Plan) -> hp.ApplyReport:
        before, after = self.running.active(), plan.active()
        still = sorted(
            k
            for k in _processors(plan)
            if k in before and before[k] == after.get(k) and k in self.table
        )
        if still and self.rng.random() < 0.7:
            key = self.rng.choice(still)
            here = self.table[key]
            self.table[key] = self.rng.choice([h for h in HOSTS if h != here])
            self.moves += 1
        report = await apply(topo, log, plan, placement=dict(self.table))
        self.running = plan
        return report


# -- the negative control ----------------------------------------------------------------

# A chain, a join and a diamond across h1 and h2, two sources on the driver.
DIAMOND = Plan(
    {
        "s0": Spec(),
        "s1": Spec(),
        "p0": Spec(("s0",)),
        "p1": Spec(("p0", "s1")),
        "p2": Spec(("p0", "p1")),
        "keep/s0": Spec(("s0",), target=True),
        "keep/s1": Spec(("s1",), target=True),
        "t0": Spec(("p2",), target=True),
        "t1": Spec(("p1",), target=True),
    }
)
DIAMOND_PLACEMENT = {"p0": "h1", "p1": "h2", "p2": "h1"}
# Two live changes with data in flight: p1 is replaced, then p0 and p2.
_REPLACED = bump(DIAMOND, "p1", 1)
DIAMOND_PLANS = [DIAMOND, _REPLACED, bump(bump(_REPLACED, "p0", 2), "p2", 2)]


async def _diamond(actor_class: type[EngineHost]) -> tuple[list[str], int]:
    """The fixed example on hosts of ``actor_class``: the checker's problems, and early frames."""
    early: list[int] = []

    @contextlib.asynccontextmanager
    async def run(graph: hp.Graph, **options: Any) -> AsyncIterator[hp.Topology]:
        engine = RayEngine(placement=DIAMOND_PLACEMENT, _actor_class=actor_class)
        async with hp.run(graph, engine=engine, **options) as topo:
            yield topo
            # After the drain, before the hosts stop: each counts the frames that came
            # out of order.
            actors = _actors(topo)
            early.extend(await asyncio.gather(*(a.early_frames.remote() for a in actors.values())))

    async with asyncio.timeout(WAIT):
        problems = await scenario(DIAMOND_PLANS, 500, 64, 0, run=run)
    assert len(early) == 2, early
    return problems, sum(early)


async def test_hosts_that_reorder_frames_keep_every_guarantee() -> None:
    problems, early = await _diamond(JitteredEngineHost)
    assert early > 0, "no frame arrived out of order: the example shows nothing"
    assert problems == []


async def test_without_resequencing_the_checker_finds_problems() -> None:
    problems, early = await _diamond(StraightEngineHost)
    assert early > 0, "no frame arrived out of order: the control shows nothing"
    assert problems, "frames delivered in arrival order went unnoticed"
    assert any("out of order" in p or "not explained" in p for p in problems), problems[:3]


# -- a host dies ----------------------------------------------------------------------------


async def test_a_host_killed_mid_stream_past_the_restart_policy_fails_the_topology() -> None:
    received: list[hp.Datum] = []
    graph = hp.Graph(
        {
            "numbers": hp.Node(),
            "double": hp.Node(lambda x: 2 * x, inputs=["numbers"]),
            "plus1": hp.Node(lambda x: x + 1, inputs=["double"]),
            "out": hp.sink(received.append, inputs=["plus1"]),
        }
    )
    engine = RayEngine(placement={"double": "h1", "plus1": "h2"})

    async def kill_h1_mid_stream() -> None:
        no_restart = hp.RestartPolicy(max_restarts=0)
        async with asyncio.timeout(WAIT), hp.run(graph, engine=engine, restart=no_restart) as topo:

            async def feed() -> None:
                for n in range(1_000_000):
                    await topo.inject("numbers", n)

            feeding = asyncio.create_task(feed())
            try:
                await wait_until(lambda: len(received) >= 100, timeout=WAIT)
                ray.kill(_actors(topo)["h1"])
                await asyncio.Event().wait()  # the topology's failure cancels the block
            finally:
                feeding.cancel()
                await asyncio.gather(feeding, return_exceptions=True)

    # A timeout would end the block with TimeoutError, not a group.
    with pytest.raises(ExceptionGroup) as caught:
        await kill_h1_mid_stream()
    died = [e for e in _leaves(caught.value) if isinstance(e, HostDiedError)]
    assert len(died) == 1, caught.value
    assert died[0].host == "h1"
    assert died[0].keys == ("double",)
    assert "host 'h1' died; it ran double" in str(died[0])


def _actors(topo: hp.Topology) -> dict[str, Any]:
    """The topology's host actors, by name: the test reaches into its engine for them."""
    engine = topo._core.engine
    assert isinstance(engine, Distributed), engine
    return engine.actors


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for e in error.exceptions for leaf in _leaves(e)]
    return [error]
