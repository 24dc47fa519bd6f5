"""The Ray engine against one process: a chain over hosts, a CPU-bound stage spread, a live change.

Usage::

    python bench/bench_ray_engine.py               # about 90-100 s on 2 cores
    python bench/bench_ray_engine.py --quick       # a smoke run
    python bench/bench_ray_engine.py --only W1,CPU --repeat 7 --json results.jsonl

It needs Ray (``pip install -e '.[ray]'``) and starts a local Ray of its own
(2 CPUs, on 127.0.0.1, its files in a temporary directory, no auth token),
shut down at the end. The same graph runs with no engine (one process) and
with ``engine=RayEngine(placement=...)``; the contestants of a section
alternate round by round (the order rotates), each run a fresh topology.
Every run of a Ray contestant starts its host actors (one process per host
name) as the topology opens; that start-up is never timed.

Sections (``--only`` takes their ids):

* W1: ``bench_runtime.py``'s W1, an entry point, 10 stages of ``x + 1`` and a
  counting sink. In one process; split (``s1..s5`` on ``h1``, ``s6..s10`` on
  ``h2``); and all ten stages on ``h1``. The entry point and the sink are on
  the driver in every case. A run opens the topology, injects and drains a
  warm-up (a tenth of the items), then times ``inject_many`` and ``drain`` of
  the measured items.
* CPU: an entry point fanning out to two branches, ``even`` and ``odd``, each
  a pure-Python loop of about 1 ms (calibrated here) on the values of its
  parity, returning ``SKIP`` for the others; one sink reading both. In one
  process, and with ``even`` on ``h1`` and ``odd`` on ``h2``. Timed as W1.
* LIVE: a feeder task on the driver injects ``--rate`` values/s (the values
  falling due every millisecond, ``inject_many``) into a chain ``s1 -> s2 ->
  s3 -> s4`` and a sink on the driver; ``s2`` counts in its state. While it
  flows, ``topo.apply`` replaces ``s2`` with a new version (state carried)
  and adds a branch ``extra`` reading ``s2`` with a sink of its own. With the
  engine, ``s1, s2`` run on ``h1`` and ``s3, s4, extra`` on ``h2``. Measured:
  the ``apply`` call's wall time and ``ApplyReport.seconds``; the pause, the
  largest gap between consecutive arrivals at the sink (``time.perf_counter``
  in the sink's callback, on the driver) in a window from 50 ms before the
  change to 950 ms after it (or 500 ms after ``apply`` returned, if later),
  against the largest gap in a window as long with no change, before it;
  and the worst latency of a value (arrival minus the time the feeder's
  schedule had it due) in each window, and the median one with no change.
  After the change the feeder runs on, then stops; the topology drains, and
  the sink must have seen every value once, in order, with ``s2``'s count
  carried across the versions.

Each timed run also records the driver's CPU time (``time.process_time``);
the hosts' processes are not in it. The cores this process may use and the
load average before and after every round are printed, since the machine
may be shared.
"""

from __future__ import annotations

import os

# Ray binds to the machine's own address rather than 127.0.0.1 unless it runs as on a
# laptop (the name says Windows or macOS; it works on Linux). It reads this on import.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import argparse
import asyncio
import gc
import itertools
import json
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import ray

import hotplumb as hp
from _harness import (
    environment,
    fmt_count,
    fmt_rate,
    markdown_table,
    package_version,
    start_local_ray,
)
from hotplumb.ray import RayEngine

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

SECTIONS: Final = ("W1", "CPU", "LIVE")
W1_STAGES: Final = 10
W1_SPLIT: Final = {f"s{i}": "h1" if i <= W1_STAGES // 2 else "h2" for i in range(1, 11)}
W1_ONE_HOST: Final = {f"s{i}": "h1" for i in range(1, 11)}
CPU_SPREAD: Final = {"even": "h1", "odd": "h2"}
LIVE_PLACEMENT: Final = {"s1": "h1", "s2": "h1", "s3": "h2", "s4": "h2", "extra": "h2"}
IN_PROCESS: Final = "one process"


# -- what the nodes run (travels to the hosts by value, as Ray ships __main__) -------------------


def inc(x: int) -> int:
    return x + 1


def identity(v: Any) -> Any:
    return v


def make_burn(parity: int, loops: int) -> Callable[[int], Any]:
    """A node taking the values of one parity and spinning ``loops`` times on each."""

    def burn(x: int) -> Any:
        if x % 2 != parity:
            return hp.SKIP
        acc = 0
        for i in range(loops):
            acc += i
        return x

    return burn


def count_v1(x: int, ctx: hp.Context) -> tuple[int, int, int]:
    ctx.state += 1
    return (x, ctx.state, ctx.version)


def count_v2(x: int, ctx: hp.Context) -> tuple[int, int, int]:
    ctx.state += 1
    return (x, ctx.state, ctx.version)


def calibrate(target: float = 0.001) -> int:
    """The loop count of ``make_burn`` that takes about ``target`` seconds here."""
    loops = 10_000
    while True:
        burn = make_burn(0, loops)
        start = time.perf_counter()
        for _ in range(20):
            burn(0)
        took = (time.perf_counter() - start) / 20
        if took > target / 4:
            return max(int(loops * target / took), 1)
        loops *= 4


# -- results --------------------------------------------------------------------------------------


@dataclass(slots=True)
class Runs:
    """The figures of one contestant's runs: wall seconds, driver CPU seconds, extras."""

    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    extra: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def add(self, name: str, value: float) -> None:
        self.extra.setdefault(name, []).append(value)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float]) -> str:
    """± half the range over the median, in percent."""
    if len(values) < 2:
        return "-"
    m = statistics.median(values)
    return f"±{(max(values) - min(values)) / m * 50:.0f}%" if m else "-"


def span(values: Sequence[float], scale: float = 1.0) -> str:
    if not values:
        return "-"
    return f"{min(values) * scale:,.1f}-{max(values) * scale:,.1f}"


class Loads:
    """The one-minute load average before and after every round."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def note(self) -> None:
        self.values.append(os.getloadavg()[0])

    def __str__(self) -> str:
        if not self.values:
            return "-"
        return f"{min(self.values):.1f}-{max(self.values):.1f}"


# -- throughput: W1 and CPU -----------------------------------------------------------------------


def w1_graph(sink: Callable[[hp.Datum], None]) -> hp.Graph:
    nodes: dict[str, hp.Node] = {"in": hp.Node()}
    previous = "in"
    for i in range(1, W1_STAGES + 1):
        nodes[f"s{i}"] = hp.Node(inc, inputs=[previous])
        previous = f"s{i}"
    nodes["out"] = hp.sink(sink, inputs=[previous])
    return hp.Graph(nodes)


def cpu_graph(sink: Callable[[hp.Datum], None], loops: int) -> hp.Graph:
    return hp.Graph(
        {
            "in": hp.Node(),
            "even": hp.Node(make_burn(0, loops), inputs=["in"]),
            "odd": hp.Node(make_burn(1, loops), inputs=["in"]),
            "out": hp.sink(sink, inputs=["even", "odd"]),
        }
    )


def engine_for(placement: Mapping[str, str] | None) -> RayEngine | None:
    return None if placement is None else RayEngine(placement=placement)


async def timed_flow(
    make_graph: Callable[[Callable[[hp.Datum], None]], hp.Graph],
    placement: Mapping[str, str] | None,
    items: int,
    warm: int,
) -> tuple[float, float]:
    """Open the topology, warm it up, then time inject-and-drain of ``items``: (wall, CPU)."""
    seen = 0

    def count(_datum: hp.Datum) -> None:
        nonlocal seen
        seen += 1

    async with hp.run(make_graph(count), engine=engine_for(placement)) as topo:
        await topo.inject_many("in", range(warm))
        await topo.drain()
        gc.collect()
        cpu = time.process_time()
        start = time.perf_counter()
        await topo.inject_many("in", range(warm, warm + items))
        await topo.drain()
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu
    if seen != warm + items:
        raise AssertionError(f"the sink saw {seen:,} items, expected {warm + items:,}")
    return seconds, cpu


async def throughput(
    contestants: Mapping[str, Mapping[str, str] | None],
    make_graph: Callable[[Callable[[hp.Datum], None]], hp.Graph],
    items: int,
    repeat: int,
    loads: Loads,
    timeout: float,
) -> dict[str, Runs]:
    results = {name: Runs() for name in contestants}
    names = list(contestants)
    warm = max(items // 10, 1)
    for rep in range(repeat):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        loads.note()
        for name in order:
            progress(f"{name} {rep + 1}/{repeat}")
            runs = results[name]
            try:
                async with asyncio.timeout(timeout):
                    seconds, cpu = await timed_flow(make_graph, contestants[name], items, warm)
            except Exception as exc:
                runs.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            runs.seconds.append(seconds)
            runs.cpu.append(cpu)
        loads.note()
    progress("")
    return results


def throughput_table(results: Mapping[str, Runs], items: int) -> str:
    reference = median(results[IN_PROCESS].seconds)
    rows = []
    for name, runs in results.items():
        if not runs.seconds:
            rows.append([name, "error", "-", "-", "-", "-", "-", str(len(runs.errors))])
            continue
        wall = median(runs.seconds)
        ratios = [reference / s for s in runs.seconds]
        rows.append(
            [
                name,
                fmt_rate(items / wall),
                f"{reference / wall:.2f}x",
                spread(runs.seconds),
                f"{median(ratios):.2f}x" if name != IN_PROCESS else "1.00x",
                f"{median(runs.cpu) / items * 1e6:,.1f}",
                f"{median(runs.cpu) / wall:.2f}",
                f"{len(runs.seconds)}" + (f" ({len(runs.errors)} failed)" if runs.errors else ""),
            ]
        )
    headers = [
        "contestant",
        "items/s",
        "vs one process",
        "spread",
        "median of run ratios",
        "driver CPU µs/item",
        "driver CPU/wall",
        "runs",
    ]
    return markdown_table(headers, rows)


# -- a live change under load ---------------------------------------------------------------------


SETTLE: Final = 0.5
WINDOW: Final = 1.0
BEFORE: Final = 0.05
AFTER_APPLY: Final = 0.5


def live_graphs(sink: Callable[[hp.Datum], None]) -> tuple[hp.Graph, hp.Graph]:
    first = hp.Graph(
        {
            "in": hp.Node(),
            "s1": hp.Node(identity, inputs=["in"]),
            "s2": hp.Node(count_v1, inputs=["s1"], state=lambda: 0),
            "s3": hp.Node(identity, inputs=["s2"]),
            "s4": hp.Node(identity, inputs=["s3"]),
            "out": hp.sink(sink, inputs=["s4"]),
        }
    )
    second = (
        first.add_node("s2", hp.Node(count_v2, inputs=["s1"], state=lambda: 0))
        .add_node("extra", hp.Node(identity, inputs=["s2"]))
        .add_node("out2", hp.sink(lambda _d: None, inputs=["extra"]))
    )
    return first, second


def worst_gap(arrivals: Sequence[tuple[float, int]], lo: float, hi: float) -> float:
    """The largest gap between consecutive arrivals whose later one is in ``(lo, hi]``."""
    gap = 0.0
    for (t0, _), (t1, _) in itertools.pairwise(arrivals):
        if lo < t1 <= hi:
            gap = max(gap, t1 - t0)
    return gap


def latencies(
    arrivals: Sequence[tuple[float, int]], lo: float, hi: float, start: float, rate: float
) -> list[float]:
    """Arrival minus due time of every value the feeder's schedule had due in ``[lo, hi]``."""
    return [t - (start + x / rate) for t, x in arrivals if lo <= start + x / rate <= hi]


async def live_run(placement: Mapping[str, str] | None, rate: float, runs: Runs) -> None:
    arrivals: list[tuple[float, int]] = []
    values: list[tuple[int, int, int]] = []
    clock = time.perf_counter

    def arrive(datum: hp.Datum) -> None:
        arrivals.append((clock(), datum.value[0]))
        values.append(datum.value)

    first, second = live_graphs(arrive)
    stop = asyncio.Event()
    sent = 0
    async with hp.run(first, engine=engine_for(placement)) as topo:
        await topo.inject_many("in", range(100))  # warm-up: hosts connected, paths interned
        await topo.drain()
        arrivals.clear()
        values.clear()
        base = 100
        start = clock()

        async def feed() -> None:
            nonlocal sent
            while not stop.is_set():
                due = int((clock() - start) * rate)
                if due > sent:
                    await topo.inject_many("in", range(base + sent, base + due))
                    sent = due
                await asyncio.sleep(0.001)

        feeder = asyncio.create_task(feed())
        await asyncio.sleep(SETTLE + WINDOW)
        changed = clock()
        report = await topo.apply(second)
        applied = clock()
        hi = max(changed - BEFORE + WINDOW, applied + AFTER_APPLY)
        await asyncio.sleep(hi - clock() + 0.1)
        stop.set()
        await feeder
        await topo.drain()
    # Every value once, in order; the count carried across the versions.
    expected = list(range(100 + sent))
    got = [v[0] for v in values]
    if got != expected[100:] or [v[1] for v in values] != list(range(101, 101 + sent)):
        raise AssertionError("the sink did not see every value once, in order, counted on")
    if values[-1][2] != report.generation:
        raise AssertionError("the last values did not come through the new version")
    arrivals = [(t, x - base) for t, x in arrivals]
    lo = changed - BEFORE
    base_lo = start + SETTLE
    runs.seconds.append(applied - changed)
    runs.add("switch", report.seconds)
    runs.add("pause", worst_gap(arrivals, lo, hi))
    runs.add("pause_base", worst_gap(arrivals, base_lo, base_lo + (hi - lo)))
    during = latencies(arrivals, lo, hi, start, rate)
    steady = latencies(arrivals, base_lo, base_lo + (hi - lo), start, rate)
    runs.add("latency", max(during))
    runs.add("latency_base", max(steady))
    runs.add("latency_p50_base", statistics.median(steady))
    runs.add("window", hi - lo)


async def live(
    contestants: Mapping[str, Mapping[str, str] | None],
    rate: float,
    repeat: int,
    loads: Loads,
    timeout: float,
) -> dict[str, Runs]:
    results = {name: Runs() for name in contestants}
    names = list(contestants)
    for rep in range(repeat):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        loads.note()
        for name in order:
            progress(f"live change, {name} {rep + 1}/{repeat}")
            try:
                async with asyncio.timeout(timeout):
                    await live_run(contestants[name], rate, results[name])
            except Exception as exc:
                results[name].errors.append(f"{type(exc).__name__}: {exc}")
        loads.note()
    progress("")
    return results


def live_table(results: Mapping[str, Runs]) -> str:
    rows = []
    for name, runs in results.items():
        if not runs.seconds:
            rows.append([name, *["-"] * 9, f"0 ({len(runs.errors)} failed)"])
            continue
        x = runs.extra
        pause, base = median(x["pause"]), median(x["pause_base"])
        rows.append(
            [
                name,
                f"{median(runs.seconds) * 1e3:,.1f}",
                f"{median(x['switch']) * 1e3:,.1f}",
                f"{pause * 1e3:,.1f}",
                f"{base * 1e3:,.1f}",
                f"{pause / base:.2f}x" if base else "-",
                f"{median(x['latency']) * 1e3:,.1f}",
                f"{median(x['latency_base']) * 1e3:,.1f}",
                f"{median(x['latency_p50_base']) * 1e3:,.1f}",
                span(runs.seconds, 1e3),
                f"{len(runs.seconds)}" + (f" ({len(runs.errors)} failed)" if runs.errors else ""),
            ]
        )
    headers = [
        "live change",
        "apply, ms",
        "switch, ms",
        "pause, ms",
        "pause, no change, ms",
        "pause vs no change",
        "worst latency, ms",
        "worst latency, no change, ms",
        "median latency, no change, ms",
        "apply range, ms",
        "runs",
    ]
    return markdown_table(headers, rows)


# -- Ray ------------------------------------------------------------------------------------------


def progress(text: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r\x1b[K{text}")
        sys.stderr.flush()


def errors_of(results: Mapping[str, Runs]) -> list[str]:
    return [f"- {name}: {e}" for name, runs in results.items() for e in runs.errors]


def as_json(results: Mapping[str, Runs]) -> dict[str, Any]:
    return {
        name: {"seconds": r.seconds, "cpu": r.cpu, **r.extra, "errors": r.errors}
        for name, r in results.items()
    }


async def bench(args: argparse.Namespace, report: dict[str, Any]) -> None:
    sections = args.only
    loads = Loads()
    if "W1" in sections:
        items = args.items
        contestants = {IN_PROCESS: None, "split over h1, h2": W1_SPLIT, "all on h1": W1_ONE_HOST}
        results = await throughput(contestants, w1_graph, items, args.repeat, loads, args.timeout)
        print(f"\n## W1 linear-10: {fmt_count(items)} items (warm-up {fmt_count(items // 10)})\n")
        print(f"- load average before/after the rounds: {loads}")
        print(throughput_table(results, items))
        print("\n".join(errors_of(results)))
        report["W1"] = {"items": items, "load": loads.values, "runs": as_json(results)}
    if "CPU" in sections:
        loads = Loads()
        loops = calibrate()
        one = min(timeit_burn(loops) for _ in range(5))
        items = args.cpu_items

        def graph(sink: Callable[[hp.Datum], None]) -> hp.Graph:
            return cpu_graph(sink, loops)

        contestants = {IN_PROCESS: None, "even on h1, odd on h2": CPU_SPREAD}
        results = await throughput(contestants, graph, items, args.repeat, loads, args.timeout)
        print(
            f"\n## CPU-bound stage in two branches: {fmt_count(items)} items, "
            f"{loops:,} loop turns = {one * 1e3:.2f} ms per item here\n"
        )
        print(f"- load average before/after the rounds: {loads}")
        print(throughput_table(results, items))
        print("\n".join(errors_of(results)))
        report["CPU"] = {
            "items": items,
            "loops": loops,
            "ms_per_item": one * 1e3,
            "load": loads.values,
            "runs": as_json(results),
        }
    if "LIVE" in sections:
        loads = Loads()
        contestants = {IN_PROCESS: None, "s1, s2 on h1; s3, s4, extra on h2": LIVE_PLACEMENT}
        results = await live(contestants, args.rate, args.repeat, loads, args.timeout)
        print(f"\n## A live change under {fmt_count(args.rate)} values/s\n")
        print(f"- load average before/after the rounds: {loads}")
        print(live_table(results))
        print("\n".join(errors_of(results)))
        report["LIVE"] = {"rate": args.rate, "load": loads.values, "runs": as_json(results)}


def timeit_burn(loops: int) -> float:
    burn = make_burn(0, loops)
    start = time.perf_counter()
    burn(0)
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench_ray_engine.py", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--only", default=",".join(SECTIONS), help="sections: W1,CPU,LIVE")
    parser.add_argument("--items", type=int, help="W1 items per run (default 200,000)")
    parser.add_argument("--cpu-items", type=int, help="CPU items per run (default 2,000)")
    parser.add_argument("--rate", type=float, default=5_000, help="LIVE values/s (5,000)")
    parser.add_argument("--repeat", type=int, help="runs per contestant (default 5)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per run")
    parser.add_argument("--quick", action="store_true", help="a tenth of the items, two runs")
    parser.add_argument("--json", help="append the raw figures as one JSON line to this file")
    args = parser.parse_args(argv)
    args.only = tuple(s.strip().upper() for s in args.only.split(",") if s.strip())
    unknown = set(args.only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    args.items = args.items or (20_000 if args.quick else 200_000)
    args.cpu_items = args.cpu_items or (200 if args.quick else 2_000)
    args.repeat = args.repeat or (2 if args.quick else 5)

    print("# The Ray engine against one process\n")
    print("\n".join(environment()))
    cores = len(os.sched_getaffinity(0))
    print(f"- cores this process may use: {cores}")
    print(f"- ray: {package_version('ray')}, hotplumb from {Path(hp.__file__ or '?').parent}")
    print(f"- load average at the start: {os.getloadavg()[0]:.1f}")
    started = time.perf_counter()
    root = start_local_ray()
    print(f"- ray.init: {time.perf_counter() - started:.1f} s")
    print(f"- node address: {', '.join(n['NodeManagerAddress'] for n in ray.nodes())}")
    report: dict[str, Any] = {"cores": cores, "argv": sys.argv[1:]}
    try:
        asyncio.run(bench(args, report))
    finally:
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    total = time.perf_counter() - started
    report["seconds"] = total
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(report) + "\n")
    print(f"\nTotal time {total:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
