"""Concurrency benchmark: concurrent and executor-backed nodes, and per-item input.

Usage::

    python bench/bench_concurrency.py              # everything: 3 to 6 minutes on 2 cores
    python bench/bench_concurrency.py --quick      # a smoke run: seconds
    python bench/bench_concurrency.py --only W5,W6 --repeat 7

Sections (``--only`` takes their ids):

* W5 I/O-bound: one stage that does ``await asyncio.sleep(0.001)`` per item.
  hotplumb with ``concurrency=64`` against aiostream's
  ``map(task_limit=64, ordered=True)`` and a hand-written ordered window of
  64 tasks; hotplumb with the default concurrency (one at a time) for scale.
* W6 CPU-bound: one stage computing ``sum(range(20000))`` per item. hotplumb
  on the event loop, with ``executor=hp.Pool.PROCESSES`` (the topology's own
  pool: its start and shutdown are in the time), and with a process pool the
  benchmark keeps warm across runs; ``executor.map`` by hand as the floor of
  sending work to those processes. The CPU column is the CPU time of this
  process and its workers over the wall time: the cores the run really used.
* I1 per-item input on W1 (10 stages of ``x + 1``): ``inject()`` per item and
  a generator source against ``inject_many`` and against a task-per-stage
  ``asyncio.Queue`` pipeline fed one item at a time.
* W3c W3 (10 stages awaiting ``asyncio.sleep(0)``) with ``concurrency`` set on
  every stage, against the default and the per-item ``asyncio.Queue``
  pipeline.

``--json`` prints, instead of the report, one JSON line with the results of
hotplumb's own contestants only (the peers are not run): per section and
contestant, the median CPU ns/hop and the wall-clock ns/hop, in the shape of
``bench_runtime.py --json``; ``compare.py --bench concurrency`` reads it.
``--reference-only`` keeps only each section's reference row.

Timing follows ``bench_runtime.py``: a fresh event loop per run after
``gc.collect()``, one warm-up run on a tenth of the items, then ``--repeat``
runs round-robin over the contestants (fewer, but at least three, when they
would take over ``--budget`` seconds); medians, spread, and rates relative to
each section's reference row. Every contestant returns how many items its
sink saw; a wrong count is an error.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from _harness import (
    Failure,
    Footnotes,
    Measurement,
    WrongCount,
    describe_error,
    environment,
    fmt_count,
    fmt_ns,
    fmt_rate,
    fmt_ratio,
    markdown_table,
    package_version,
)
from bench_runtime import WORKLOADS, hotplumb_status, progress
from peers import async_inc, burn, inc, run_overlap_floor, run_queue_item

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

    Run = Callable[[int], Awaitable[int]]
    """A contestant: pushes that many items through, returns how many its sink saw."""

CORES: Final = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
WINDOW: Final = 64
"""W5's concurrency: hotplumb's ``concurrency``, aiostream's ``task_limit``, the window."""
SLEEP: Final = 0.001
"""W5's per-item wait, in seconds."""

WORKLOADS_BY_ID: Final = {w.id: w for w in WORKLOADS}


@dataclass(frozen=True, slots=True)
class Section:
    id: str
    title: str
    description: str
    items: int
    quick_items: int
    hops: int
    reference: str
    contestants: dict[str, Run]


@dataclass(frozen=True, slots=True)
class Timed:
    """A contestant's runs: wall seconds and CPU seconds (this process and its workers)."""

    wall: Measurement
    cpu: tuple[float, ...]

    def added(self, wall: float, cpu: float) -> Timed:
        return Timed(self.wall.added(wall), (*self.cpu, cpu))

    @property
    def cpu_share(self) -> float:
        """Median of CPU over wall time, per run."""
        shares = sorted(c / w for c, w in zip(self.cpu, self.wall.seconds, strict=True))
        return shares[len(shares) // 2]


# -- the CPU time of worker processes -------------------------------------------------------------

_TICK: Final = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _process_cpu(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux ``/proc``), 0 if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


class WarmPool:
    """A process pool kept across runs, so a run's time is the work, not the spawn."""

    executor: ProcessPoolExecutor | None = None

    @classmethod
    def get(cls) -> ProcessPoolExecutor:
        if cls.executor is None:
            context = multiprocessing.get_context("spawn")
            cls.executor = ProcessPoolExecutor(CORES, mp_context=context)
            for future in [cls.executor.submit(burn, i) for i in range(4 * (CORES or 1))]:
                future.result()  # every worker started and warm
        return cls.executor

    @classmethod
    def cpu(cls) -> float:
        """CPU seconds the warm pool's workers have used so far."""
        processes: dict[int, Any] = getattr(cls.executor, "_processes", None) or {}
        return sum(_process_cpu(pid) for pid in processes)

    @classmethod
    def shutdown(cls) -> None:
        if cls.executor is not None:
            cls.executor.shutdown(wait=True)
            cls.executor = None


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _reap_workers() -> None:
    """Wait for the worker processes a run left (a pool the topology shut down)."""
    warm = set(getattr(WarmPool.executor, "_processes", None) or {})
    for child in multiprocessing.active_children():
        if child.pid not in warm:
            child.join(30)


def time_cpu_run(make: Callable[[], Awaitable[int]], expected: int, timeout: float) -> Timed:
    """Like ``_harness.time_run``, also taking the CPU time of the run and its workers.

    CPU: this process's (every thread) plus, for processes that ended during
    the run and were reaped after it, theirs (``RUSAGE_CHILDREN``), plus what
    the warm pool's workers used meanwhile.
    """

    async def timed() -> tuple[int, float, float]:
        async with asyncio.timeout(timeout):
            warm = WarmPool.cpu()
            cpu, start = time.process_time(), time.perf_counter()
            got = await make()
            wall = time.perf_counter() - start
            return got, wall, time.process_time() - cpu + WarmPool.cpu() - warm

    gc.collect()
    children = _children_cpu()
    got, wall, cpu = asyncio.run(timed())
    _reap_workers()
    cpu += _children_cpu() - children
    if got != expected:
        raise WrongCount(got, expected)
    return Timed(Measurement((wall,)), (cpu,))


# -- W5: I/O-bound --------------------------------------------------------------------------------


async def io_item(x: int) -> int:
    await asyncio.sleep(SLEEP)
    return x


def _one_stage(fn: Callable[[int], Any], **options: Any) -> tuple[Any, list[int]]:
    """An entry point, one stage of ``fn``, a counting sink; the sink's count in a list."""
    import hotplumb as hp

    count = [0]

    def counting(_datum: object) -> None:
        count[0] += 1

    graph = hp.Graph(
        {
            "in": hp.Node(),
            "f": hp.Node(fn, inputs=["in"], **options),
            "out": hp.sink(counting, inputs=["f"]),
        }
    )
    return graph, count


async def _inject_and_drain(graph: Any, count: list[int], items: int) -> int:
    import hotplumb as hp

    async with hp.run(graph) as topo:
        await topo.inject_many("in", range(items))
        await topo.drain()
    return count[0]


async def w5_hotplumb(items: int, concurrency: int = WINDOW) -> int:
    graph, count = _one_stage(io_item, concurrency=concurrency)
    return await _inject_and_drain(graph, count, items)


async def w5_aiostream(items: int) -> int:
    from aiostream import pipe, stream

    map_: Any = pipe.map  # typed as variadic; a one-argument function is not
    count = 0
    xs = stream.iterate(range(items)) | map_(io_item, task_limit=WINDOW, ordered=True)
    async with xs.stream() as streamer:
        async for _ in streamer:
            count += 1
    return count


async def w5_window(items: int) -> int:
    """An ordered window by hand: up to 64 tasks, results taken oldest first."""
    window: collections.deque[asyncio.Task[int]] = collections.deque()
    count = 0
    for x in range(items):
        if len(window) >= WINDOW:
            await window.popleft()
            count += 1
        window.append(asyncio.ensure_future(io_item(x)))
    while window:
        await window.popleft()
        count += 1
    return count


# -- W6: CPU-bound --------------------------------------------------------------------------------


async def w6_loop(items: int) -> int:
    graph, count = _one_stage(burn)
    return await _inject_and_drain(graph, count, items)


async def w6_pool(items: int) -> int:
    import hotplumb as hp

    graph, count = _one_stage(burn, executor=hp.Pool.PROCESSES, concurrency=CORES)
    return await _inject_and_drain(graph, count, items)


async def w6_warm(items: int) -> int:
    graph, count = _one_stage(burn, executor=WarmPool.get(), concurrency=CORES)
    return await _inject_and_drain(graph, count, items)


async def w6_warm_window(items: int) -> int:
    """The warm pool with a deeper window (2 calls per core): workers never wait for a call."""
    graph, count = _one_stage(burn, executor=WarmPool.get(), concurrency=2 * (CORES or 1))
    return await _inject_and_drain(graph, count, items)


async def w6_map(items: int) -> int:
    """``executor.map`` in chunks by hand, off the loop: the floor of using those processes."""
    executor = WarmPool.get()
    chunks = max(items // (4 * (CORES or 1)), 1)
    results = await asyncio.to_thread(
        lambda: list(executor.map(burn, range(items), chunksize=chunks))
    )
    return len(results)


# -- I1: per-item input on W1 ---------------------------------------------------------------------


def _linear(counting: Callable[[Any], None], entry: Any = None) -> Any:
    import hotplumb as hp

    nodes: dict[str, Any] = {"in": entry if entry is not None else hp.Node()}
    previous = "in"
    for i in range(1, 11):
        nodes[f"s{i}"] = hp.Node(inc, inputs=[previous])
        previous = f"s{i}"
    nodes["out"] = hp.sink(counting, inputs=[previous])
    return hp.Graph(nodes)


async def i1_inject_many(items: int) -> int:
    import hotplumb as hp

    count = 0

    def counting(_datum: object) -> None:
        nonlocal count
        count += 1

    async with hp.run(_linear(counting)) as topo:
        await topo.inject_many("in", range(items))
        await topo.drain()
    return count


async def i1_inject(items: int) -> int:
    import hotplumb as hp

    count = 0

    def counting(_datum: object) -> None:
        nonlocal count
        count += 1

    async with hp.run(_linear(counting)) as topo:
        inject = topo.inject
        for x in range(items):
            await inject("in", x)
        await topo.drain()
    return count


async def i1_source(items: int) -> int:
    import hotplumb as hp

    count = 0
    done = asyncio.Event()

    def counting(_datum: object) -> None:
        nonlocal count
        count += 1
        if count == items:
            done.set()

    async def numbers(ctx: hp.Context) -> AsyncIterator[int]:
        for x in range(items):
            yield x

    async with hp.run(_linear(counting, hp.source(numbers))):
        if items:
            await done.wait()
    return count


async def i1_queue_item(items: int) -> int:
    return await run_queue_item(WORKLOADS_BY_ID["W1"], items)


# -- W3c: W3 with concurrency ----------------------------------------------------------------------


async def w3_hotplumb(items: int, concurrency: int = 1) -> int:
    import hotplumb as hp

    count = 0

    def counting(_datum: object) -> None:
        nonlocal count
        count += 1

    nodes: dict[str, Any] = {"in": hp.Node()}
    previous = "in"
    for i in range(1, 11):
        nodes[f"s{i}"] = hp.Node(async_inc, inputs=[previous], concurrency=concurrency)
        previous = f"s{i}"
    nodes["out"] = hp.sink(counting, inputs=[previous])
    async with hp.run(hp.Graph(nodes)) as topo:
        await topo.inject_many("in", range(items))
        await topo.drain()
    return count


async def w3_queue_item(items: int) -> int:
    return await run_queue_item(WORKLOADS_BY_ID["W3"], items)


async def w3_floor(items: int) -> int:
    return await run_overlap_floor(WORKLOADS_BY_ID["W3"], items)


def _bind(fn: Callable[..., Awaitable[int]], **kwargs: Any) -> Run:
    async def run(items: int) -> int:
        return await fn(items, **kwargs)

    return run


SECTIONS: Final = (
    Section(
        "W5",
        "I/O-bound, one stage",
        f"One stage awaiting `asyncio.sleep({SLEEP})` per item, its outputs in input order",
        items=5_000,
        quick_items=1_000,
        hops=2,
        reference=f"hotplumb, concurrency={WINDOW}",
        contestants={
            f"hotplumb, concurrency={WINDOW}": w5_hotplumb,
            f"aiostream map(task_limit={WINDOW}, ordered=True)": w5_aiostream,
            f"ordered window of {WINDOW} tasks by hand": w5_window,
            "hotplumb, concurrency=1": _bind(w5_hotplumb, concurrency=1),
        },
    ),
    Section(
        "W6",
        "CPU-bound, one stage",
        f"One stage computing `sum(range(20000))` per item; {CORES} cores available",
        items=2_000,
        quick_items=400,
        hops=2,
        reference="hotplumb, on the event loop",
        contestants={
            "hotplumb, on the event loop": w6_loop,
            f"hotplumb, Pool.PROCESSES, concurrency={CORES}": w6_pool,
            f"hotplumb, warm process pool, concurrency={CORES}": w6_warm,
            f"hotplumb, warm process pool, concurrency={2 * (CORES or 1)}": w6_warm_window,
            "executor.map by hand, warm pool": w6_map,
        },
    ),
    Section(
        "I1",
        "per-item input on W1",
        "An entry point, 10 stages of `x + 1`, a counting sink; items given one at a time",
        items=50_000,
        quick_items=5_000,
        hops=11,
        reference="hotplumb, inject() per item",
        contestants={
            "hotplumb, inject() per item": i1_inject,
            "hotplumb, generator source": i1_source,
            "hotplumb, inject_many": i1_inject_many,
            "asyncio.Queue/item, fed per item": i1_queue_item,
        },
    ),
    Section(
        "W3c",
        "async-hop-10 with concurrency",
        "10 stages that `await asyncio.sleep(0)` then add 1, each with `concurrency` set",
        items=20_000,
        quick_items=2_000,
        hops=11,
        reference="hotplumb, concurrency=1",
        contestants={
            "hotplumb, concurrency=1": w3_hotplumb,
            "hotplumb, concurrency=8": _bind(w3_hotplumb, concurrency=8),
            "hotplumb, concurrency=64": _bind(w3_hotplumb, concurrency=64),
            "asyncio.Queue/item": w3_queue_item,
            "overlap floor": w3_floor,
        },
    ),
)


# -- running and reporting ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    items: int | None
    repeat: int
    quick: bool
    sections: tuple[str, ...]
    timeout: float
    budget: float
    json: bool = False
    reference_only: bool = False


def run_section(section: Section, items: int, settings: Settings) -> dict[str, Timed | Failure]:
    """One warm-up per contestant, then timed runs round-robin (see the module docstring)."""
    results: dict[str, Timed | Failure] = {}
    runs: dict[str, int] = {}

    def attempt(name: str, n: int) -> Timed | None:
        run = section.contestants[name]
        try:
            return time_cpu_run(lambda: run(n), n, settings.timeout)
        except Exception as exc:
            results[name] = Failure(describe_error(exc))
        return None

    warm = max(items // 10, 1)
    for name in section.contestants:
        progress(f"{section.id}: warming up {name}")
        got = attempt(name, warm)
        if got is not None:
            estimate = got.wall.median * items / warm
            fit = int(settings.budget // estimate) if estimate > 0 else settings.repeat
            runs[name] = min(settings.repeat, max(fit, 3))
    for rep in range(max(runs.values(), default=0)):
        for name, wanted in runs.items():
            done = results.get(name, Timed(Measurement(()), ()))
            if rep >= wanted or isinstance(done, Failure):
                continue
            progress(f"{section.id}: {name} {rep + 1}/{wanted}")
            got = attempt(name, items)
            if got is not None:
                results[name] = done.added(got.wall.seconds[0], got.cpu[0])
    progress("")
    return results


def section_report(section: Section, items: int, results: dict[str, Timed | Failure]) -> str:
    reference = results.get(section.reference)
    ref_rate = reference.wall.rate(items) if isinstance(reference, Timed) else None
    notes = Footnotes()
    rows: list[list[str]] = []
    for name in section.contestants:
        result = results.get(name, Failure("error: did not run"))
        if isinstance(result, Failure):
            rows.append([name, notes.cell(result.message), "", "", "", "", "", ""])
            continue
        wall = result.wall
        rate = wall.rate(items)
        rows.append(
            [
                name,
                fmt_rate(rate),
                fmt_ratio(rate / ref_rate) if ref_rate else "",
                fmt_ns(wall.median / (items * section.hops) * 1e9),
                fmt_ns(statistics.median(result.cpu) / (items * section.hops) * 1e9),
                f"{result.cpu_share:.2f}",
                f"±{wall.spread * 50:.0f}%" if len(wall.seconds) > 1 else "",
                str(len(wall.seconds)),
            ]
        )
    headers = [
        "contestant",
        "items/s",
        "vs ref",
        "ns/hop",
        "CPU ns/hop",
        "CPU/wall",
        "spread",
        "runs",
    ]
    about = (
        f"{section.description}. {fmt_count(items)} input items, {section.hops} hops per item."
        f" vs ref: the rate over that of `{section.reference}`."
    )
    parts = [f"## {section.id} {section.title}", about, markdown_table(headers, rows)]
    if notes.notes:
        parts.append(notes.render())
    return "\n\n".join(parts) + "\n"


def json_results(
    section: Section, items: int, results: dict[str, Timed | Failure]
) -> dict[str, dict[str, Any]]:
    """Per contestant run, for :func:`json_report`: CPU and wall-clock ns/hop."""
    found: dict[str, dict[str, Any]] = {}
    for name in section.contestants:
        result = results.get(name, Failure("error: did not run"))
        for metric in ("CPU ns/hop", "ns/hop"):
            entry: dict[str, Any] = {
                "title": f"{section.id} {name}: {metric}",
                "metric": metric,
                "items": items,
            }
            if isinstance(result, Failure):
                entry["error"] = result.message
            else:
                seconds = result.cpu if metric == "CPU ns/hop" else result.wall.seconds
                runs = [s / (items * section.hops) * 1e9 for s in seconds]
                entry.update(value=statistics.median(runs), runs=runs)
            found[f"{section.id} {name}: {metric}"] = entry
    return found


def json_report(results: dict[str, dict[str, Any]]) -> str:
    """The ``--json`` line, shaped like ``bench_runtime.py``'s (see its ``json_report``)."""
    import hotplumb

    where = str(Path(hotplumb.__file__ or "?").parent)
    return json.dumps(
        {
            "bench": "bench_concurrency",
            "hotplumb": where,
            "python": platform.python_version(),
            "results": results,
        }
    )


def csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parse(argv: Sequence[str] | None) -> Settings:
    ids = tuple(s.id for s in SECTIONS)
    parser = argparse.ArgumentParser(
        prog="bench_concurrency.py",
        description="Concurrent and executor-backed nodes, and per-item input, against peers.",
    )
    parser.add_argument("--items", type=int, help="input items for every section")
    parser.add_argument("--repeat", type=int, help="timed runs per contestant (default 5)")
    parser.add_argument("--quick", action="store_true", help="few items, one repetition")
    parser.add_argument("--only", type=csv, default=ids, help=f"sections, of {','.join(ids)}")
    parser.add_argument(
        "--budget",
        type=float,
        default=15.0,
        help="seconds of timed runs per contestant and section, past which it gets"
        " fewer repetitions (but at least 3)",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds allowed per run")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON line with hotplumb's own rows only (for compare.py)",
    )
    parser.add_argument(
        "--reference-only",
        action="store_true",
        help="run only each section's reference row (with --json)",
    )
    args = parser.parse_args(argv)
    unknown = [s for s in args.only if s not in ids]
    if unknown:
        parser.error(f"unknown section: {', '.join(unknown)}")
    return Settings(
        items=args.items,
        repeat=args.repeat or (1 if args.quick else 5),
        quick=args.quick,
        sections=args.only,
        timeout=args.timeout,
        budget=args.budget,
        json=args.json,
        reference_only=args.reference_only,
    )


def main_json(settings: Settings) -> int:
    """Run hotplumb's own contestants of each section; print :func:`json_report`'s line."""
    hotplumb_status()
    found: dict[str, dict[str, Any]] = {}
    try:
        for section in SECTIONS:
            if section.id not in settings.sections:
                continue
            ours = {
                name: run
                for name, run in section.contestants.items()
                if name.startswith("hotplumb")
                and (name == section.reference or not settings.reference_only)
            }
            section = replace(section, contestants=ours)
            items = settings.items or (section.quick_items if settings.quick else section.items)
            found.update(json_results(section, items, run_section(section, items, settings)))
    finally:
        WarmPool.shutdown()
    print(json_report(found))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse(argv)
    if settings.json:
        return main_json(settings)
    status = hotplumb_status()
    print("# hotplumb concurrency benchmark\n")
    print("\n".join(environment()))
    print(f"- cores this process may use: {CORES}")
    print(f"- hotplumb: {status}")
    print(f"- peers: aiostream {package_version('aiostream')}\n")
    print(
        "Each contestant gets a warm-up run on a tenth of the items, then"
        f" {settings.repeat} timed runs (fewer, but at least 3, if they would take over"
        f" {settings.budget:.0f} s), round-robin, each in a fresh event loop. items/s: median"
        " input items per second. ns/hop: median wall-clock time per input item per edge"
        " it crosses. CPU ns/hop: the same in CPU time (this process and its workers), which"
        " a busy machine inflates less than wall time. CPU/wall: those CPU seconds over"
        " the wall-clock seconds (median over the runs; 2.0 is two cores busy). spread:"
        " ± half the range of the runs, over the median.\n"
    )
    sys.stdout.flush()
    started = time.perf_counter()
    try:
        for section in SECTIONS:
            if section.id not in settings.sections:
                continue
            items = settings.items or (section.quick_items if settings.quick else section.items)
            print(section_report(section, items, run_section(section, items, settings)))
            sys.stdout.flush()
    finally:
        WarmPool.shutdown()
    print(f"Total time {time.perf_counter() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
