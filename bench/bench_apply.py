"""Reconfiguration benchmark: live changes to a 1,000-node topology under a steady load.

Usage::

    python bench/bench_apply.py                 # everything, about 70 s on 2 cores
    python bench/bench_apply.py --quick         # a smoke run in seconds
    python bench/bench_apply.py --repeat 7 --rate 1500 --profile
    python bench/bench_apply.py --quick --rate 1500 --json   # one JSON line, for a script

The topology: 10 entry points, each feeding a chain of 98 plain-function stages
(14 blocks of three ``x + 1`` stages and a diamond: a split, two branches that
each pass one parity of the value, a join reading both) and a sink; 1,000 nodes.
The sinks are the graph's targets; the stages come from a factory over keys
``("stage", chain, i)``. A feeder injects chunks of 8 values into the entry
points in turn at a steady rate for the whole run: by default half of what the
event loop could take, estimated first from the CPU share of a light load.

Changes, each in its own fresh event loop:

* ``none``: ``apply`` of the running graph (an empty change): the baseline.
* ``one``: one join in the middle of a chain replaced by a new node.
* ``tenth``: 100 stages (10 per chain) replaced by new nodes.
* ``factory``: ``graph.with_factory(f2)``, which regenerates all 980 stages.

Every change is made live (``await topo.apply(new)``) and, for comparison, the
naive way: stop the feeder, leave ``async with hp.run(old)`` (drain and stop),
enter ``hp.run(new)``, resume feeding. Each sink records when every datum
arrives; the pause a change causes is the largest gap between consecutive
deliveries in a window around it, compared with the same window of the
baseline. After the run the feeder stops, the topology drains, and every sink
must have received exactly what its entry point was sent, each datum once and
with the value the chain computes; a run that does not is an error.

``--json`` makes the live changes only (no restarts) and prints, instead of
the report, one JSON line with their medians (see :func:`json_report`);
``compare.py`` reads it to compare two revisions of hotplumb.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import dataclasses
import gc
import heapq
import itertools
import json
import os
import platform
import pstats
import statistics
import sys
import time
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from _harness import (
    Footnotes,
    describe_error,
    environment,
    fmt_count,
    fmt_rate,
    fmt_ratio,
    markdown_table,
)
from bench_runtime import hotplumb_status, progress

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import hotplumb as hp

CHAINS: Final = 10
STAGES: Final = 98
"""Stages per chain: 14 blocks of ``BLOCK``."""
BLOCK: Final = 7
"""A block: three ``x + 1`` stages, a split, an even and an odd branch, a join."""
SHIFT: Final = (STAGES // BLOCK) * 6
"""What a chain adds to a value: six ``+ 1`` on every path through a block."""
NODES: Final = CHAINS * (STAGES + 2)
CHUNK: Final = 8
"""Values per ``inject_many`` call; the feeder sends chunks to the entry points in turn."""

ONE_REPLACED: Final = ("stage", 0, 48)
"""The node ``one`` replaces: the join in the middle of chain 0."""
TENTH_STEP: Final = 10
"""``tenth`` replaces every stage ``i`` with ``i % TENTH_STEP == 5``: 10 per chain."""

PROBE_RATE: Final = 1000.0
"""Values per second sent while measuring the CPU share of the load."""
LOAD: Final = 0.5
"""The default rate, as a share of the estimated most the topology takes."""

PRE: Final = 0.05
"""Seconds of the pause window before the change starts."""


# -- the graph ------------------------------------------------------------------------------------


def stage_fn(position: int) -> Callable[[int], Any]:
    """A new function object for a stage at ``position`` in its block (fresh on every call)."""
    import hotplumb as hp

    skip = hp.SKIP
    if position == 4:

        def even(x: int) -> Any:
            return skip if x & 1 else x + 1

        return even
    if position == 5:

        def odd(x: int) -> Any:
            return x + 1 if x & 1 else skip

        return odd

    def plus1(x: int) -> int:
        return x + 1

    return plus1


def stage_inputs(chain: int, i: int) -> tuple[Any, ...]:
    position = i % BLOCK
    if i == 0:
        return (("in", chain),)
    if position == 5:
        return (("stage", chain, i - 2),)  # the odd branch reads the split
    if position == 6:
        return (("stage", chain, i - 2), ("stage", chain, i - 1))  # the join reads both branches
    return (("stage", chain, i - 1),)


def stage_node(chain: int, i: int) -> hp.Node:
    import hotplumb as hp

    return hp.Node(stage_fn(i % BLOCK), inputs=stage_inputs(chain, i))


def factory(key: Any) -> hp.Node | None:
    """The stages, made from their keys."""
    match key:
        case ("stage", int(chain), int(i)) if 0 <= chain < CHAINS and 0 <= i < STAGES:
            return stage_node(chain, i)
    return None


def factory2(key: Any) -> hp.Node | None:
    """The same stages with new callables: every generated node is replaced."""
    return factory(key)


class Sink:
    """What one sink saw: delivery times, the sum of origins, wrong values, chunks' arrivals."""

    __slots__ = ("bad", "first_after", "last", "origins", "times", "watch")

    def __init__(self) -> None:
        self.times: list[float] = []
        self.origins = 0
        self.bad = 0
        self.watch = float("inf")
        """Origins from here on were injected after the change started."""
        self.first_after: float | None = None
        self.last: dict[int, float] = {}
        """Per chunk (``origin // CHUNK``), when its last datum was delivered."""

    def callback(self) -> Callable[[hp.Datum], None]:
        append = self.times.append
        last = self.last
        clock = time.perf_counter

        def deliver(datum: hp.Datum) -> None:
            now = clock()
            append(now)
            origin = datum.origin
            self.origins += origin
            last[origin // CHUNK] = now
            if datum.value - origin != SHIFT:
                self.bad += 1
            if origin >= self.watch and self.first_after is None:
                self.first_after = now

        return deliver


def base_graph(sinks: Sequence[Sink]) -> hp.Graph:
    import hotplumb as hp

    provided: dict[Any, hp.Node] = {}
    for chain, sink in enumerate(sinks):
        provided["in", chain] = hp.Node()
        provided["out", chain] = hp.sink(sink.callback(), inputs=[("stage", chain, STAGES - 1)])
    return hp.Graph(provided, factory)


# -- the changes ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    id: str
    label: str
    make: Callable[[hp.Graph], hp.Graph]
    chains: tuple[int, ...]
    """The chains the change reaches (where the first chunk due after it is followed)."""


def _replace(graph: hp.Graph, keys: Sequence[tuple[str, int, int]]) -> hp.Graph:
    return graph.add_nodes_from({k: stage_node(k[1], k[2]) for k in keys})


ALL: Final = tuple(range(CHAINS))
CHANGES: Final = (
    Change("none", "no change (baseline)", lambda g: g, ALL),
    Change("one", "replace 1 node", lambda g: _replace(g, [ONE_REPLACED]), (ONE_REPLACED[1],)),
    Change(
        "tenth",
        "replace 100 nodes (10%)",
        lambda g: _replace(
            g,
            [("stage", c, i) for c in range(CHAINS) for i in range(5, STAGES, TENTH_STEP)],
        ),
        ALL,
    ),
    Change("factory", "swap the factory (980 nodes)", lambda g: g.with_factory(factory2), ALL),
)
BASELINE: Final = "none"


# -- the load -------------------------------------------------------------------------------------


class Feeder:
    """Injects ``CHUNK`` values at a time, ``rate`` values a second, into each entry point in turn.

    Chunks that fall due while the feeder waits (on ``gate``, or behind a full
    channel) are sent as soon as it can: the load keeps arriving, as from an
    upstream queue.
    """

    def __init__(self, topo: hp.Topology, rate: float) -> None:
        self.topo = topo
        self.rate = rate
        self.injected = [0] * CHAINS
        self.gate = asyncio.Lock()
        self.due: list[list[float]] = [[] for _ in range(CHAINS)]
        """Per chain, when each chunk sent into it was due."""
        self._stop = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop = True
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        period = CHUNK / self.rate
        start = time.perf_counter()
        sent = 0  # chunks
        injected = self.injected
        while not self._stop:
            due = int((time.perf_counter() - start) / period) + 1
            if due <= sent:
                await asyncio.sleep(start + sent * period - time.perf_counter())
                continue
            async with self.gate:
                while sent < due and not self._stop:
                    chain = sent % CHAINS
                    first = injected[chain]
                    self.due[chain].append(start + sent * period)
                    await self.topo.inject_many(("in", chain), range(first, first + CHUNK))
                    injected[chain] = first + CHUNK
                    sent += 1

    def mark_cut(self, sinks: Sequence[Sink], chains: Sequence[int]) -> None:
        """On ``chains``, watch for the first delivery of data injected from now on."""
        for chain in chains:
            sinks[chain].watch = self.injected[chain]


# -- one run --------------------------------------------------------------------------------------


@dataclass(slots=True)
class Run:
    """What one run measured (seconds)."""

    changed: int = 0
    visited: int = 0
    build: float = 0.0
    """Making the new graph (pure, before the change starts)."""
    wall: float = 0.0
    """``apply``: the awaited call. Restart: leaving the old ``hp.run`` and entering the new."""
    switch: float = 0.0
    """``apply``: ``ApplyReport.seconds``. Restart: entering the new ``hp.run``."""
    stop: float = 0.0
    """Restart: leaving the old ``hp.run`` (drain and stop)."""
    first: float = 0.0
    """From the change's start to the first delivery of data injected after it started."""
    latency: float = 0.0
    """The longest a chunk due in the window took from when it was due to its delivery."""
    pause: float = 0.0
    """The largest gap between consecutive deliveries (at any sink) in the window."""
    delivered: int = 0
    extra: dict[str, float] = field(default_factory=dict)


class CheckFailed(AssertionError):
    """The sinks did not see exactly what was injected."""


def check(sinks: Sequence[Sink], feeder: Feeder, errors: int) -> int:
    """Raise unless every sink got every datum injected into its chain once, correctly computed."""
    problems: list[str] = []
    for chain, sink in enumerate(sinks):
        sent = feeder.injected[chain]
        if len(sink.times) != sent:
            problems.append(f"sink {chain} saw {len(sink.times):,} of {sent:,}")
        elif sink.origins != sent * (sent - 1) // 2:
            problems.append(f"sink {chain} saw some data twice and missed others")
        if sink.bad:
            problems.append(f"sink {chain} saw {sink.bad:,} wrong values")
    if errors:
        problems.append(f"{errors:,} data failed")
    if problems:
        raise CheckFailed("; ".join(problems[:3]))
    return sum(feeder.injected)


def largest_gap(sinks: Sequence[Sink], start: float, end: float) -> float:
    """The largest gap between consecutive deliveries, at any sink, in ``[start, end]``."""
    slices: list[list[float]] = []
    for sink in sinks:
        times = sink.times
        # One delivery either side of the window, so a pause across its edge counts.
        lo = max(bisect_left(times, start) - 1, 0)
        hi = min(bisect_right(times, end) + 1, len(times))
        slices.append(times[lo:hi])
    merged = list(heapq.merge(*slices))
    return max((b - a for a, b in itertools.pairwise(merged)), default=0.0)


@dataclass(frozen=True, slots=True)
class Settings:
    repeat: int
    rate: float
    warmup: float
    window: float
    changes: tuple[Change, ...]
    timeout: float
    profile: bool
    quick: bool
    restarts: bool = True
    """Also make each change the naive way, for comparison (not with ``--json``)."""


async def live_run(change: Change, settings: Settings) -> Run:
    """Make ``change`` with ``apply`` while the feeder runs."""
    import hotplumb as hp

    sinks = [Sink() for _ in range(CHAINS)]
    graph = base_graph(sinks)
    result = Run()
    async with hp.run(graph) as topo:
        feeder = Feeder(topo, settings.rate)
        feeder.start()
        await asyncio.sleep(settings.warmup)
        began = time.perf_counter()
        new = change.make(graph)
        result.build = time.perf_counter() - began
        await asyncio.sleep(0.1)  # keep the graph building out of the window

        began = time.perf_counter()
        feeder.mark_cut(sinks, change.chains)
        report = await topo.apply(new)
        result.wall = time.perf_counter() - began
        result.switch = report.seconds
        result.visited = report.visited
        result.changed = len(report.changelist.changed)
        await asyncio.sleep(
            max(began + settings.window, time.perf_counter() + 0.1) - time.perf_counter()
        )

        await feeder.stop()
        await topo.drain()
        if topo.graph is not new:
            raise CheckFailed("the topology does not run the new graph")
        versions = sum(s.version == report.generation for s in topo.statistics().values())
        if change.id != BASELINE and versions != result.changed:
            raise CheckFailed(f"{versions} nodes at the new version, {result.changed} changed")
        result.delivered = check(sinks, feeder, topo.errors.total)
    finish(result, sinks, feeder, change.chains, began, settings)
    return result


async def restart_run(change: Change, settings: Settings) -> Run:
    """Make ``change`` the naive way: stop the topology, start one running the new graph."""
    import hotplumb as hp

    sinks = [Sink() for _ in range(CHAINS)]
    graph = base_graph(sinks)
    result = Run()
    errors = 0
    async with contextlib.AsyncExitStack() as stack:
        topo = await stack.enter_async_context(hp.run(graph))
        feeder = Feeder(topo, settings.rate)
        feeder.start()
        await asyncio.sleep(settings.warmup)
        began = time.perf_counter()
        new = change.make(graph)
        result.build = time.perf_counter() - began
        await asyncio.sleep(0.1)

        async with feeder.gate:  # the feeder waits; what falls due meanwhile is sent after
            began = time.perf_counter()
            feeder.mark_cut(sinks, ALL)  # a restart reaches every chain
            await stack.aclose()  # leave `async with hp.run(graph)`: drain and stop
            stopped = time.perf_counter()
            errors += topo.errors.total
            topo = await stack.enter_async_context(hp.run(new))
            result.wall = time.perf_counter() - began
            result.stop = stopped - began
            result.switch = result.wall - result.stop
            feeder.topo = topo
        result.visited = NODES
        result.changed = len(graph.diff(new).changed)
        await asyncio.sleep(
            max(began + settings.window, time.perf_counter() + 0.1) - time.perf_counter()
        )

        await feeder.stop()
        await topo.drain()
        result.delivered = check(sinks, feeder, errors + topo.errors.total)
    finish(result, sinks, feeder, ALL, began, settings)
    return result


def finish(
    result: Run,
    sinks: Sequence[Sink],
    feeder: Feeder,
    chains: Sequence[int],
    began: float,
    settings: Settings,
) -> None:
    end = began - PRE + settings.window
    firsts = [sinks[c].first_after for c in chains]
    if any(f is None for f in firsts):
        raise CheckFailed("no datum injected after the change was delivered")
    result.first = min(f for f in firsts if f is not None) - began
    latency = 0.0
    for chain in chains:
        dues, last = feeder.due[chain], sinks[chain].last
        for index in range(bisect_left(dues, began), bisect_left(dues, end)):
            latency = max(latency, last[index] - dues[index])
    result.latency = latency
    result.pause = largest_gap(sinks, began - PRE, end)


def in_fresh_loop(make: Callable[[], Any], timeout: float) -> Any:
    """Run ``make()`` in a new event loop after a ``gc.collect()``, within ``timeout`` seconds."""

    async def bounded() -> Any:
        async with asyncio.timeout(timeout):
            return await make()

    gc.collect()
    return asyncio.run(bounded())


# -- calibration and profile ----------------------------------------------------------------------


async def capacity(seconds: float) -> float:
    """Estimate the values per second the loop could take: ``PROBE_RATE`` over its CPU share.

    The feeder sends ``PROBE_RATE`` values/s; the share of the wall-clock time
    the process spends on the CPU meanwhile is the load it puts on the event
    loop. Sending values back to back would overstate what a paced stream can
    have: a burst fills the channels and amortises each hop over many batches,
    while a steady stream wakes every node for every chunk.
    """
    import hotplumb as hp

    sinks = [Sink() for _ in range(CHAINS)]
    async with hp.run(base_graph(sinks)) as topo:
        feeder = Feeder(topo, PROBE_RATE)
        feeder.start()
        await asyncio.sleep(0.3)
        wall, cpu = time.perf_counter(), time.process_time()
        await asyncio.sleep(seconds)
        share = (time.process_time() - cpu) / (time.perf_counter() - wall)
        await feeder.stop()
    return PROBE_RATE / max(share, 1e-3)


async def profile_factory_swap(settings: Settings) -> pstats.Stats:
    """Profile one ``apply`` of the factory swap on a warmed-up, idle topology."""
    import hotplumb as hp

    sinks = [Sink() for _ in range(CHAINS)]
    graph = base_graph(sinks)
    async with hp.run(graph) as topo:
        feeder = Feeder(topo, settings.rate)
        feeder.start()
        await asyncio.sleep(settings.warmup)
        await feeder.stop()
        await topo.drain()
        new = graph.with_factory(factory2)
        profiler = cProfile.Profile()
        profiler.enable()
        await topo.apply(new)
        profiler.disable()
    return pstats.Stats(profiler)


def breakdown(graph_pair: tuple[hp.Graph, hp.Graph]) -> dict[str, float]:
    """Time the pure parts of an ``apply`` outside the loop: the diff and the kernels."""
    old, new = graph_pair
    began = time.perf_counter()
    changes = old.diff(new)
    diff = time.perf_counter() - began
    try:
        from hotplumb._kernel import build_kernel
    except ImportError:  # pragma: no cover - internal API moved
        return {"diff": diff}
    keys = changes.added | changes.replaced | changes.rewired
    began = time.perf_counter()
    for k in keys:
        build_kernel(k, new.nodes[k])
    return {"diff": diff, "kernels": time.perf_counter() - began}


# -- the report -----------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    value = seconds * 1e3
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 1 else f"{value:.2f}"


Key = tuple[str, str]  # (change id, "apply" | "restart")


def median_of(runs: Sequence[Run], attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in runs)


def report(
    results: dict[Key, list[Run]], failures: dict[Key, list[str]], settings: Settings
) -> str:
    notes = Footnotes()
    base = results.get((BASELINE, "apply"), [])
    base_latency = median_of(base, "latency") if base else None
    base_pause = median_of(base, "pause") if base else None

    def ratio(value: float, reference: float | None) -> str:
        return fmt_ratio(value / reference) if reference else ""

    def status(key: Key) -> str | None:
        if failures.get(key):
            return notes.cell(failures[key][0])
        if not results.get(key):
            return "not run"
        return None

    live_rows: list[list[str]] = []
    restart_rows: list[list[str]] = []
    for change in settings.changes:
        for how, rows in (("apply", live_rows), ("restart", restart_rows)):
            if how == "restart" and change.id == BASELINE:
                continue
            key = (change.id, how)
            runs = results.get(key, [])
            bad = status(key)
            if not runs:
                rows.append([change.label, "", "", "", "", "", "", "", "", "", bad or ""])
                continue
            latency, pause = median_of(runs, "latency"), median_of(runs, "pause")
            common = [
                ms(median_of(runs, "first")),
                ms(latency),
                ratio(latency, base_latency),
                ms(pause),
                ratio(pause, base_pause),
                bad or f"ok, {len(runs)} runs",
            ]
            if how == "apply":
                rows.append(
                    [
                        change.label,
                        fmt_count(runs[0].changed),
                        fmt_count(runs[0].visited),
                        ms(median_of(runs, "wall")),
                        ms(median_of(runs, "switch")),
                        *common,
                    ]
                )
            else:
                rows.append(
                    [
                        change.label,
                        fmt_count(runs[0].changed),
                        ms(median_of(runs, "wall")),
                        ms(median_of(runs, "stop")),
                        ms(median_of(runs, "switch")),
                        *common,
                    ]
                )
    tail = [
        "first new delivery, ms",
        "worst latency, ms",
        "vs baseline",
        "pause, ms",
        "vs baseline",
        "check",
    ]
    live = markdown_table(
        ["live change", "nodes changed", "visited", "apply, ms", "switch, ms", *tail],
        live_rows,
    )
    restart = markdown_table(
        ["restart", "nodes changed", "stop+start, ms", "stop, ms", "start, ms", *tail],
        restart_rows,
    )

    pure: list[list[str]] = []
    for change in settings.changes:
        runs = results.get((change.id, "apply"), [])
        if change.id == BASELINE or not runs:
            continue
        wall, switch = median_of(runs, "wall"), median_of(runs, "switch")
        diff = statistics.median(r.extra.get("diff", 0.0) for r in runs)
        kernels = statistics.median(r.extra.get("kernels", 0.0) for r in runs)
        pure.append(
            [
                change.label,
                ms(median_of(runs, "build")),
                ms(diff),
                ms(kernels),
                ms(max(wall - switch - diff - kernels, 0.0)),
                ms(switch),
                ms(wall),
            ]
        )
    parts = [
        "## Live change against restart\n",
        f"{fmt_count(NODES)} nodes: {CHAINS} chains of an entry point, {STAGES} stages"
        f" ({STAGES // BLOCK} blocks of three `x + 1` and a diamond that splits by parity and"
        f" joins) and a sink. A feeder sends {fmt_rate(settings.rate)} values/s in chunks of"
        f" {CHUNK}, to each entry point in turn, for the whole run. Each run gets a fresh"
        f" event loop; the tables give the median of {settings.repeat} runs.\n",
        live,
        "",
        restart,
        "",
        "- nodes changed: added, removed, replaced or rewired; visited: running nodes the"
        " barrier went through (`ApplyReport.visited`).",
        "- apply: the awaited `topo.apply(new)` call; switch: from sending the barrier to the"
        " last node switching (`ApplyReport.seconds`).",
        "- stop: leaving `async with hp.run(old)` (drain, then stop every task); start:"
        " entering `hp.run(new)`. The feeder waits meanwhile, then sends what fell due.",
        "- first new delivery: from the change's start to the first delivery of a datum"
        " injected after it started, on a chain the change reaches (a restart reaches all ten;"
        " replacing one node, one: this includes waiting for that chain's next chunk, up to"
        f" {ms(CHAINS * CHUNK / settings.rate)} ms).",
        f"- the window: {ms(settings.window)} ms from {ms(PRE)} ms before the change. worst"
        " latency: the longest any chunk due in the window took from when the feeder's"
        " schedule had it due to its delivery, on the chains the change reaches. pause: the"
        " largest gap between consecutive deliveries (at any sink) in the window. vs"
        " baseline: over the same figure for no change.",
        "- check: after the run the feeder stops and the topology drains; every sink must have"
        " seen each datum injected into its chain exactly once, with the value the chain"
        " computes.",
    ]
    if notes.notes:
        parts += ["", notes.render()]
    if pure:
        parts += [
            "",
            "## Where the time of a live change goes\n",
            "Medians, ms. new graph: making the new graph value (before `apply`). diff and"
            " kernels: `old.diff(new)` and preparing the changed nodes' callables, timed"
            " again outside the loop. launch: the rest of `apply` before the barrier leaves"
            " (new runners, channels, the switch plan, the cut). switch: the barrier's"
            " journey (`ApplyReport.seconds`).\n",
            markdown_table(
                ["live change", "new graph", "diff", "kernels", "launch", "switch", "apply"],
                pure,
            ),
        ]
    return "\n".join(parts) + "\n"


def profile_report(stats: pstats.Stats, limit: int = 15) -> str:
    entries: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = max((ct for _cc, _nc, _tt, ct, _callers in entries.values()), default=0.0)
    rows: list[list[str]] = []
    ranked = sorted(entries.items(), key=lambda kv: kv[1][2], reverse=True)
    for (filename, line, name), (_cc, nc, tt, ct, _callers) in ranked[:limit]:
        where = name if filename == "~" else f"{os.path.basename(filename)}:{line} {name}"
        rows.append([where, fmt_count(nc), ms(tt), ms(ct)])
    return "\n".join(
        [
            "## Profile: one factory swap\n",
            f"cProfile of one `apply` swapping the factory on a warmed-up, idle topology"
            f" ({ms(total)} ms under the profiler). Top {limit} by own time.\n",
            markdown_table(["function", "calls", "own, ms", "cumulative, ms"], rows),
        ]
    )


# -- command line ---------------------------------------------------------------------------------


def measure(settings: Settings) -> tuple[dict[Key, list[Run]], dict[Key, list[str]]]:
    results: dict[Key, list[Run]] = {}
    failures: dict[Key, list[str]] = {}
    plan: list[tuple[Change, str]] = [(c, "apply") for c in settings.changes]
    if settings.restarts:
        plan += [(c, "restart") for c in settings.changes if c.id != BASELINE]
    # Round-robin over the changes, so that drift in the machine's speed hits them alike.
    for rep in range(settings.repeat):
        for change, how in plan:
            key = (change.id, how)
            progress(f"{how} {change.id} {rep + 1}/{settings.repeat}")
            runner = live_run if how == "apply" else restart_run
            try:
                run = in_fresh_loop(lambda c=change, r=runner: r(c, settings), settings.timeout)
            except Exception as exc:
                failures.setdefault(key, []).append(describe_error(exc))
                continue
            if how == "apply" and change.id != BASELINE:
                sinks = [Sink() for _ in range(CHAINS)]
                old = base_graph(sinks)
                run.extra.update(breakdown((old, change.make(old))))
            results.setdefault(key, []).append(run)
    progress("")
    return results, failures


JSON_FIGURES: Final = (("apply", "wall"), ("switch", "switch"), ("pause", "pause"))
"""What ``--json`` reports of each live change: (name, :class:`Run` attribute)."""


def json_report(
    results: dict[Key, list[Run]], failures: dict[Key, list[str]], settings: Settings
) -> str:
    """The ``--json`` line: where hotplumb came from, the load, and each live change's medians.

    ``{"bench": "bench_apply", "hotplumb": <package directory>, "python": <version>,
    "rate": <values/s>, "results": {"<change>: <figure>": {"title", "metric": "ms",
    "value": <median>, "runs": [...]} or {"title", "metric", "error": <message>}}}``,
    with figures ``apply`` (the awaited call), ``switch`` (the barrier's journey) and
    ``pause`` (the largest gap between deliveries around the change).
    """
    import hotplumb

    found: dict[str, dict[str, Any]] = {}
    for change in settings.changes:
        runs = results.get((change.id, "apply"), [])
        errors = failures.get((change.id, "apply"), [])
        for figure, attr in JSON_FIGURES:
            entry: dict[str, Any] = {"title": f"{change.label}: {figure}", "metric": "ms"}
            if errors or not runs:
                entry["error"] = errors[0] if errors else "error: did not run"
            else:
                values = [getattr(r, attr) * 1e3 for r in runs]
                entry.update(value=statistics.median(values), runs=values)
            found[f"{change.id}: {figure}"] = entry
    return json.dumps(
        {
            "bench": "bench_apply",
            "hotplumb": os.path.dirname(hotplumb.__file__ or "?"),
            "python": platform.python_version(),
            "rate": settings.rate,
            "results": found,
        }
    )


def csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parse(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="bench_apply.py",
        description="Live changes to a 1,000-node topology under load, against restarting it.",
    )
    parser.add_argument("--repeat", type=int, help="runs per change and method (default 5)")
    parser.add_argument("--quick", action="store_true", help="one short run of each")
    parser.add_argument(
        "--rate",
        type=float,
        help="values per second the feeder sends (default: half the estimated most it takes)",
    )
    parser.add_argument(
        "--window", type=float, help="seconds of the pause window (default 1.0; 0.3 if --quick)"
    )
    parser.add_argument(
        "--only",
        type=csv,
        default=tuple(c.id for c in CHANGES),
        help=f"changes to run, of {','.join(c.id for c in CHANGES)} (the baseline always runs)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also profile one factory swap with cProfile"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds allowed per run")
    parser.add_argument(
        "--json",
        action="store_true",
        help="make the live changes only and print one JSON line of their medians",
    )
    args = parser.parse_args(argv)
    known = {c.id for c in CHANGES}
    unknown = [c for c in args.only if c not in known]
    if unknown:
        parser.error(f"unknown change: {', '.join(unknown)}")
    wanted = {*args.only, BASELINE}
    quick = args.quick
    return Settings(
        repeat=args.repeat or (1 if quick else 5),
        rate=args.rate or 0.0,
        warmup=0.3 if quick else 0.7,
        window=args.window or (0.3 if quick else 1.0),
        changes=tuple(c for c in CHANGES if c.id in wanted),
        timeout=args.timeout,
        profile=args.profile and not args.json,
        quick=quick,
        restarts=not args.json,
    )


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse(argv)
    status = hotplumb_status()
    if not settings.restarts:  # --json
        if status.startswith("not importable"):
            raise SystemExit(f"hotplumb is {status}")
        if not settings.rate:
            most = in_fresh_loop(lambda: capacity(0.5 if settings.quick else 1.0), 60)
            settings = dataclasses.replace(settings, rate=max(round(most * LOAD, -2), 100.0))
        print(json_report(*measure(settings), settings))
        return 0
    print("# hotplumb live-change benchmark\n")
    print("\n".join(environment()))
    print(f"- hotplumb: {status}")
    sys.stdout.flush()
    started = time.perf_counter()
    if not settings.rate:
        progress("measuring the load the topology takes")
        most = in_fresh_loop(lambda: capacity(0.5 if settings.quick else 1.0), 60)
        rate = max(round(most * LOAD, -2), 100.0)
        print(
            f"- load: {fmt_rate(rate)} values/s, {LOAD:.0%} of the about {fmt_rate(most)} the"
            f" event loop could take (at {fmt_rate(PROBE_RATE)} values/s the process used"
            f" {PROBE_RATE / most:.0%} of a CPU)"
        )
        settings = dataclasses.replace(settings, rate=rate)
    else:
        print(f"- load: {fmt_rate(settings.rate)} values/s (--rate)")
    print()
    results, failures = measure(settings)
    print(report(results, failures, settings))
    if settings.profile:
        progress("profiling")
        stats = in_fresh_loop(lambda: profile_factory_swap(settings), settings.timeout)
        progress("")
        print(profile_report(stats))
        print()
    print(f"Total time {time.perf_counter() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
