"""Property: random DAGs, random delays, data flowing, random live changes.

Every guarantee of a live change is checked on every example by
:func:`tests.reconfig.check`: version purity with a consistent cut, no loss, no
duplication and per-path order. The alignment test in ``test_apply.py`` shows
the checker fails when alignment is switched off.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

import hotplumb as hp
from hotplumb.testing import wait_until
from tests.reconfig import EXECUTORS, Log, Plan, Spec, apply, build, check, inject
from tests.reconfig import plans as plan_strategy

Run = Callable[..., AbstractAsyncContextManager[hp.Topology]]
"""What opens a scenario's topology: ``hp.run``, or it with more options."""


def edit(plan: Plan, rng: random.Random, version: int) -> Plan:
    """One random edit of ``plan``.

    Replace, rewire or re-delay a node, change how many data it takes at once
    or where it runs, add or remove a target, add a branch, add or remove a source.
    """
    specs = dict(plan.specs)
    keys = list(specs)
    procs = [k for k in keys if specs[k].inputs and not specs[k].target]
    removable = [k for k in keys if specs[k].target and not k.startswith("keep/")]
    sources = plan.sources()
    choice = rng.choice(
        [
            "replace",
            "rewire",
            "delay",
            "concurrency",
            "add_target",
            "remove_target",
            "branch",
            "add_source",
            "remove_source",
        ]
    )
    if choice == "remove_source" and len(sources) > 1:
        gone = rng.choice(sources)
        for key in [k for k, s in specs.items() if s.target]:
            if gone in _ancestors(specs, key):
                del specs[key]
        specs = Plan(specs).active()  # the source and all that only it fed go
    elif choice == "add_source":
        others = [k for k in keys if not specs[k].target]
        specs[f"s{version}"] = Spec(version=version, produces=rng.random() < 0.5)
        specs[f"keep/s{version}"] = Spec((f"s{version}",), version, target=True)
        specs[f"p{version}"] = Spec((f"s{version}", rng.choice(others)), version, 1)
        specs[f"t{version}"] = Spec((f"p{version}",), version, target=True)
    elif choice == "rewire" and procs:
        key = rng.choice(procs)
        earlier = keys[: keys.index(key)]
        earlier = [k for k in earlier if not specs[k].target]
        inputs = tuple(rng.sample(earlier, rng.randint(1, min(3, len(earlier)))))
        specs[key] = replace(specs[key], inputs=inputs, version=version)
    elif choice == "delay" and procs:
        key = rng.choice(procs)
        specs[key] = replace(specs[key], version=version, delay=rng.randint(0, 3))
    elif choice == "concurrency" and procs:
        key = rng.choice(procs)
        concurrency = rng.choice([1, rng.randint(2, 8)])
        executor = rng.choice(EXECUTORS)
        specs[key] = replace(
            specs[key], version=version, concurrency=concurrency, executor=executor
        )
    elif choice == "add_target":
        readers = [k for k in keys if not specs[k].target]
        inputs = tuple(rng.sample(readers, rng.randint(1, min(2, len(readers)))))
        specs[f"t{version}"] = Spec(inputs, version, target=True)
    elif choice == "remove_target" and removable:
        del specs[rng.choice(removable)]
        # Drop processors nothing reads any more from the description too.
        specs = Plan(specs).active()
    elif choice == "branch":
        readers = [k for k in keys if not specs[k].target]
        inputs = tuple(rng.sample(readers, rng.randint(1, min(3, len(readers)))))
        specs[f"p{version}"] = Spec(
            inputs, version, rng.randint(0, 3), concurrency=rng.choice([1, rng.randint(2, 8)])
        )
        specs[f"t{version}"] = Spec((f"p{version}",), version, target=True)
    else:
        key = rng.choice(keys)
        specs[key] = replace(specs[key], version=version)
    # Keep keys in a topological order: new keys are appended, so it already is.
    return Plan(specs)


def edited(start: Plan, seed: int, changes: int) -> list[Plan]:
    """``start`` and ``changes`` random edits of it, one after the other, from ``seed``."""
    rng = random.Random(seed)
    plans = [start]
    for n in range(changes):
        plans.append(edit(plans[-1], rng, 1000 + n))
    return plans


def _ancestors(specs: dict[str, Spec], key: str) -> set[str]:
    seen: set[str] = set()
    stack = [key]
    while stack:
        k = stack.pop()
        for i in specs[k].inputs:
            if i not in seen:
                seen.add(i)
                stack.append(i)
    return seen


Change = Callable[[hp.Topology, Log, Plan], Awaitable[Any]]
"""What makes each live change of a scenario (``reconfig.apply`` by default)."""


async def scenario(
    plans: list[Plan],
    items: int,
    capacity: int,
    seed: int,
    *,
    run: Run = hp.run,
    change: Change = apply,
) -> list[str]:
    rng = random.Random(seed)
    with ThreadPoolExecutor(2, thread_name_prefix="reconfig") as executor:
        log = Log(produce=items, executor=executor)
        return await _scenario(plans, items, capacity, rng, log, run=run, change=change)


async def _scenario(
    plans: list[Plan],
    items: int,
    capacity: int,
    rng: random.Random,
    log: Log,
    *,
    run: Run = hp.run,
    change: Change = apply,
) -> list[str]:
    """Run ``plans`` in turn with data flowing; what :func:`check` finds.

    ``run`` opens the topology (``hp.run`` by default; the Ray tests pass one
    with an engine), and ``change`` makes each change (the Ray tests move
    nodes as they do).
    """
    async with run(build(plans[0], log), capacity=capacity) as topo:
        # Every source of every version: one not running (yet, or any more) refuses
        # data, which is then not injected and not expected anywhere.
        sources = list(dict.fromkeys(s for plan in plans for s in plan.sources()))
        sources = [s for s in sources if not any(p.specs.get(s, Spec()).produces for p in plans)]

        async def feed(source: str) -> None:
            # A source added by a later version starts once that change is done.
            first = next(i for i, plan in enumerate(plans) if source in plan.sources())
            await wait_until(lambda: log.completed >= first, timeout=10)
            for seq in range(items):
                try:
                    await inject(topo, log, source, seq)
                except (hp.NotAnEntryPointError, hp.TopologyClosedError):
                    await asyncio.sleep(0)
                if rng.random() < 0.3:
                    await asyncio.sleep(0)

        feeders = [asyncio.create_task(feed(s)) for s in sources]
        for plan in plans[1:]:
            for _ in range(rng.randint(0, 6)):
                await asyncio.sleep(0)
            await asyncio.wait_for(change(topo, log, plan), 10)
        await asyncio.wait_for(asyncio.gather(*feeders), 10)
        await asyncio.wait_for(topo.drain(), 10)
    return check(plans, log)


@pytest.mark.slow
@given(
    start=plan_strategy(),
    seed=st.integers(0, 2**32 - 1),
    changes=st.integers(1, 5),
    items=st.integers(1, 40),
    capacity=st.sampled_from([1, 2, 8, 64]),
)
def test_live_changes_keep_every_guarantee(
    start: Plan, seed: int, changes: int, items: int, capacity: int
) -> None:
    plans = edited(start, seed, changes)
    specs = [s for plan in plans for s in plan.specs.values()]
    event(f"concurrent nodes: {any(s.concurrency > 1 for s in specs)}")
    event(f"executor nodes: {any(s.executor is not None for s in specs)}")
    problems = asyncio.run(scenario(plans, items, capacity, seed))
    assert problems == []
