"""A checker for live changes: versioned nodes that tag data, and the guarantees.

A processor may process several data at once (``Spec.concurrency``, an async
tagger whose delay differs per datum, so calls finish out of order), or run
its tagging in a thread pool (``Spec.executor``: one the test owns, or the
topology's :attr:`hotplumb.Pool.THREADS`).

Every node of a :class:`Plan` tags the value passing through it with
``(key, version)``; sinks log what they receive and their own version. After a
run, :func:`check` finds, for every injected datum, the epochs (graph
versions) it could belong to — those whose change had started no later than
the datum's injection returned and had completed no earlier than the
injection started — and demands that one of them explains *all* copies of the
datum: each copy's path exists in that epoch's graph, every tag matches that
epoch's versions (purity, consistent cut), and the copies are exactly one per
path from the datum's source to a target (no loss, no duplication). Per target
and path, data arrive in injection order.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Hashable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final, Literal

from hypothesis import strategies as st

import hotplumb as hp

if TYPE_CHECKING:
    from concurrent.futures import Executor

Tags = tuple[tuple[Hashable, int], ...]
Where = Literal["own", "pool"] | None
"""Where a processor's tagging runs: the test's thread pool, Pool.THREADS, or the loop."""


@dataclass(frozen=True)
class Spec:
    """One node of a plan: its inputs, version and processing delay."""

    inputs: tuple[str, ...] = ()
    version: int = 0
    delay: int = 0  # event-loop turns the node takes per datum
    target: bool = False
    produces: bool = False  # a generator source, producing on its own
    concurrency: int = 1  # data processed at once
    executor: Where = None  # tag in the test's threads or Pool.THREADS


@dataclass(frozen=True)
class Plan:
    """A versioned graph description: key -> Spec; keys sort in a topological order."""

    specs: dict[str, Spec]

    def sources(self) -> list[str]:
        return [k for k, s in self.specs.items() if not s.inputs]

    def active(self) -> dict[str, Spec]:
        """The specs some target needs."""
        needed: set[str] = set()
        stack = [k for k, s in self.specs.items() if s.target]
        while stack:
            key = stack.pop()
            if key not in needed:
                needed.add(key)
                stack.extend(self.specs[key].inputs)
        return {k: s for k, s in self.specs.items() if k in needed}

    def paths(self, source: str) -> Counter[tuple[str, ...]]:
        """Every path from ``source`` to a target in the active graph."""
        active = self.active()
        readers: dict[str, list[str]] = {k: [] for k in active}
        for key, spec in active.items():
            for i in spec.inputs:
                readers[i].append(key)
        out: Counter[tuple[str, ...]] = Counter()
        if source not in active:
            return out
        stack: list[tuple[str, ...]] = [(source,)]
        while stack:
            path = stack.pop()
            spec = active[path[-1]]
            if spec.target:
                out[path] += 1
            stack.extend((*path, r) for r in readers[path[-1]])
        return out


@dataclass
class Log:
    """What the sinks saw, and when each datum was injected."""

    delivered: list[tuple[str, int, tuple[Hashable, ...], Any]] = field(default_factory=list)
    injected: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)
    started: int = 0  # apply calls made
    completed: int = 0  # apply calls returned
    # One Node object per (key, spec): an unchanged spec is an unchanged node.
    nodes: dict[tuple[str, Spec], hp.Node] = field(default_factory=dict)
    produce: int = 0  # how many values each generator source makes, across its versions
    sequences: dict[str, Iterator[int]] = field(default_factory=dict)
    executor: Executor | None = None  # the thread pool the test owns, for Spec.executor "own"


def _tagger(
    key: str, version: int, delay: int, concurrency: int = 1, executor: bool = False
) -> Any:
    if executor or (not delay and concurrency == 1):

        def tag(value: tuple[Any, Tags]) -> tuple[Any, Tags]:
            return (value[0], (*value[1], (key, version)))

        return tag

    async def slow_tag(value: tuple[Any, Tags]) -> tuple[Any, Tags]:
        # Concurrent: each datum takes its own number of turns (0 to delay + 1),
        # so the calls in flight finish out of order.
        seq = value[0][1]
        turns = delay if concurrency == 1 else (seq * 7 + len(key) + version) % (delay + 2)
        for _ in range(turns):
            await asyncio.sleep(0)
        return (value[0], (*value[1], (key, version)))

    return slow_tag


def build(plan: Plan, log: Log) -> hp.Graph:
    """The hotplumb graph of ``plan``; sinks write into ``log``."""
    nodes: dict[Hashable, hp.Node] = {}
    for key, spec in plan.specs.items():
        if (key, spec) not in log.nodes:
            log.nodes[(key, spec)] = _node(key, spec, log)
        nodes[key] = log.nodes[(key, spec)]
    return hp.Graph(nodes)


def _node(key: str, spec: Spec, log: Log) -> hp.Node:
    if spec.target:

        def record(d: hp.Datum) -> None:
            log.delivered.append((key, spec.version, d.path, d.value))

        return hp.sink(record, inputs=spec.inputs)
    if spec.produces:
        return hp.source(_producer(key, log), fn=lambda v: (v, ((key, spec.version),)))
    if not spec.inputs:
        return hp.Node(lambda v: (v, ((key, spec.version),)))
    executor: Executor | hp.Pool | None = None
    if spec.executor == "own":
        assert log.executor is not None
        executor = log.executor
    elif spec.executor == "pool":
        executor = hp.Pool.THREADS
    fn = _tagger(key, spec.version, spec.delay, spec.concurrency, executor is not None)
    return hp.Node(fn, inputs=spec.inputs, concurrency=spec.concurrency, executor=executor)


_LATER = 1 << 30  # an epoch bound not yet known


def _producer(key: str, log: Log) -> Any:
    """A generator source's values; each version continues the key's numbering."""
    numbers = log.sequences.setdefault(key, itertools.count())

    async def produce(ctx: hp.Context) -> AsyncIterator[tuple[str, int]]:
        while (seq := next(numbers)) < log.produce:
            # A value offered to a full channel when its source stops goes in
            # before the stop: its epoch is then known only to be from `low` on.
            log.injected[(key, seq)] = (log.completed, _LATER)
            yield (key, seq)
            # Resumed once the value is in the entry channel: bound its epoch.
            log.injected[(key, seq)] = (log.injected[(key, seq)][0], log.started)
            await asyncio.sleep(0)

    return produce


async def inject(topo: hp.Topology, log: Log, source: str, seq: int) -> None:
    """Inject ``(source, seq)`` and record the epochs it may belong to."""
    low = log.completed
    await topo.inject(source, (source, seq))
    log.injected[(source, seq)] = (low, log.started)


async def apply(topo: hp.Topology, log: Log, plan: Plan, **options: Any) -> hp.ApplyReport:
    """Apply ``plan``'s graph and count the change for epoch bookkeeping.

    ``options`` go to :meth:`hotplumb.Topology.apply` (an engine's ``placement``).
    """
    log.started += 1
    report = await topo.apply(build(plan, log), **options)
    log.completed += 1
    return report


def check(plans: Sequence[Plan], log: Log) -> list[str]:
    """Every violation of purity, no loss, no duplication and order (empty: none)."""
    problems: list[str] = []
    copies: dict[tuple[str, int], list[tuple[str, int, tuple[Hashable, ...], Tags]]] = {}
    for sink, sink_version, path, (origin, tags) in log.delivered:
        copies.setdefault(origin, []).append((sink, sink_version, path, tags))
    unknown = set(copies) - set(log.injected)
    if unknown:
        problems.append(f"delivered but never injected: {sorted(unknown)[:3]}")
    for origin, (low, high) in log.injected.items():
        high = min(high, len(plans) - 1)
        got = copies.get(origin, [])
        if not any(_explains(plans[e], origin[0], got) for e in range(low, high + 1)):
            problems.append(
                f"{origin} (epochs {low}..{high}) not explained by one version: "
                f"{sorted((s, v, p, t) for s, v, p, t in got)[:4]}"
            )
    last: dict[tuple[str, tuple[Hashable, ...]], int] = {}
    for sink, _, path, (origin, _) in log.delivered:
        seq = origin[1]
        if last.get((sink, path), -1) >= seq:
            problems.append(f"out of order at {sink} via {path}: {seq} after {last[(sink, path)]}")
        last[(sink, path)] = seq
    return problems


def _explains(
    plan: Plan, source: str, got: list[tuple[str, int, tuple[Hashable, ...], Tags]]
) -> bool:
    active = plan.active()
    for sink, sink_version, path, tags in got:
        if sink not in active or active[sink].version != sink_version:
            return False
        keys = path[:-1]
        if tags != tuple((k, active[k].version) for k in keys if k in active):
            return False
        if len(tags) != len(keys):
            return False
    return Counter(p for _, _, p, _ in got) == plan.paths(source)


def bump(plan: Plan, key: str, version: int, **changes: Any) -> Plan:
    """``plan`` with ``key``'s spec given a new version (and other changes)."""
    specs = dict(plan.specs)
    specs[key] = replace(specs[key], version=version, **changes)
    return Plan(specs)


concurrencies: st.SearchStrategy[int] = st.one_of(st.just(1), st.integers(2, 8))
"""How many data a processor takes at once: one, or 2 to 8."""

EXECUTORS: Final[tuple[Where, ...]] = (None, None, "own", "pool")
"""Where a processor tags, half of the time on the event loop."""

executors: st.SearchStrategy[Where] = st.sampled_from(EXECUTORS)
"""Where a processor tags: on the event loop, in the test's thread pool, or Pool.THREADS."""


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    """Random DAGs: 1-3 sources each kept alive by a target, 1-6 processors with
    1-3 inputs (diamonds and joins arise), 1-3 more targets; random delays,
    concurrency and executors.
    """
    specs: dict[str, Spec] = {}
    sources = [f"s{i}" for i in range(draw(st.integers(1, 3)))]
    for s in sources:
        specs[s] = Spec(produces=draw(st.booleans()))
    procs: list[str] = []
    for i in range(draw(st.integers(1, 6))):
        pool = sources + procs
        inputs = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique=True))
        specs[f"p{i}"] = Spec(
            tuple(inputs),
            0,
            draw(st.integers(0, 3)),
            concurrency=draw(concurrencies),
            executor=draw(executors),
        )
        procs.append(f"p{i}")
    for s in sources:
        specs[f"keep/{s}"] = Spec((s,), target=True)
    pool = sources + procs
    for i in range(draw(st.integers(1, 3))):
        inputs = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=2, unique=True))
        specs[f"t{i}"] = Spec(tuple(inputs), target=True)
    return Plan(specs)
