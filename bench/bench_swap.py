"""A factory swap on a 10,000-node graph under load: how long it holds the event loop.

The graph: 100 entry points, each feeding a chain of 98 generated stages to
its own sink (10,000 nodes). A feeder injects into every entry point at a
steady rate (``--period``: one item into each entry point every 0.5 s by
default, 200 items/s or 20,000 node steps/s, which the graph keeps up with on
a third of a core; the baseline's worst delivery latency shows whether it
did), and every step the event loop runs (each callback, each task step) is
timed in CPU time of the loop's thread (``time.thread_time``), so the longest
synchronous step does not depend on what else the machine runs. The cyclic
garbage collector's pauses are timed too (``gc.callbacks``): a collection
runs inside whichever step allocates when one is due, so each step's time is
also given without the collections inside it. Each case runs in a fresh loop
and a fresh topology:

* ``baseline``: no change, the same load for ``--window`` seconds;
* ``baseline-frozen``: the same on a topology run with ``gc_freeze=True``;
* ``apply``: ``new = graph.with_factory(f2)`` built on the loop, then ``apply``;
* ``off-loop``: ``new = await asyncio.to_thread(graph.with_factory, f2)``, then ``apply``
  (graphs are immutable values, so building one off the loop is safe);
* ``frozen``: as ``off-loop``, on a topology run with ``gc_freeze=True``, so
  the collector's full collections scan only what was made since the last
  freeze (at the start, as the change starts and once its nodes are in place),
  not the whole long-lived graph.

Reported, medians over ``--repeat`` runs with the range: the longest
synchronous step while the change runs (from building the new graph to the
end of ``apply``), the longest step without the collections inside it, the
longest full collection, the longest delivery latency of the fed items (wall
clock, so load shows in it) against the baseline's, and the ``apply`` time.

    python bench/bench_swap.py            # 10,000 nodes, 3 runs per case
    python bench/bench_swap.py --quick    # 1,000 nodes, 1 run
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import time
from typing import Any

import hotplumb as hp

CHAINS = 100


def make_factory(tag: str) -> Any:
    def factory(key: Any) -> hp.Node | None:
        match key:
            case ("stage", chain, 0):
                return hp.Node(lambda x: x, inputs=[("entry", chain)])
            case ("stage", chain, int(i)):
                return hp.Node(lambda x: x, inputs=[("stage", chain, i - 1)])
        return None

    factory.__qualname__ = f"factory_{tag}"
    return factory


def build(nodes: int) -> hp.Graph:
    depth = nodes // CHAINS - 2
    provided: dict[Any, hp.Node] = {}
    for chain in range(CHAINS):
        provided[("entry", chain)] = hp.Node()
        provided[("sink", chain)] = hp.sink(_deliver, inputs=[("stage", chain, depth - 1)])
    return hp.Graph(provided, make_factory("a"))


_latencies: list[float] = []


def _deliver(datum: hp.Datum) -> None:
    _latencies.append(time.perf_counter() - datum.value)


_steps: list[float] = []  # CPU seconds of each step
_own: list[float] = []  # the same, without the collections inside it
_full: list[float] = []  # CPU seconds of each full collection
_measuring = [False]
_collecting = [0.0, 0.0]  # when the running collection began; collection time so far
_run_handle = asyncio.events.Handle._run


def _timed_run(self: asyncio.events.Handle) -> None:
    if not _measuring[0]:
        _run_handle(self)
        return
    collected = _collecting[1]
    start = time.thread_time()
    _run_handle(self)
    took = time.thread_time() - start
    _steps.append(took)
    _own.append(took - (_collecting[1] - collected))


def _on_collection(phase: str, info: dict[str, Any]) -> None:
    now = time.thread_time()
    if phase == "start":
        _collecting[0] = now
        return
    took = now - _collecting[0]
    _collecting[1] += took
    if _measuring[0] and info["generation"] == 2:
        _full.append(took)


asyncio.events.Handle._run = _timed_run  # type: ignore[method-assign]
gc.callbacks.append(_on_collection)


async def one_run(
    case: str, nodes: int, seconds: float, period: float, window: float
) -> dict[str, float]:
    _latencies.clear()
    for measured in (_steps, _own, _full):
        measured.clear()
    graph = build(nodes)

    async with hp.run(graph, capacity=64, gc_freeze=case in ("frozen", "baseline-frozen")) as topo:

        async def feed() -> None:
            chain = 0
            while True:
                await topo.inject(("entry", chain % CHAINS), time.perf_counter())
                chain += 1
                if chain % CHAINS == 0:
                    await asyncio.sleep(period)

        feeder = asyncio.create_task(feed())
        await asyncio.sleep(seconds / 2)  # warm up, reach a steady state
        _latencies.clear()
        _measuring[0] = True
        began = time.perf_counter()
        applied = 0.0
        if case == "apply":
            new = graph.with_factory(make_factory("b"))
            start = time.perf_counter()
            await topo.apply(new)
            applied = time.perf_counter() - start
        elif case in ("off-loop", "frozen"):
            new = await asyncio.to_thread(graph.with_factory, make_factory("b"))
            start = time.perf_counter()
            await topo.apply(new)
            applied = time.perf_counter() - start
        else:
            await asyncio.sleep(window)
        change = time.perf_counter() - began
        _measuring[0] = False
        await asyncio.sleep(0.2)  # let what the change delayed come through
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)
    gc.unfreeze()
    return {
        "stall_ms": 1e3 * max(_steps, default=0.0),
        "own_ms": 1e3 * max(_own, default=0.0),
        "full_gc_ms": 1e3 * max(_full, default=0.0),
        "full_gcs": len(_full),
        "worst_latency_ms": 1e3 * max(_latencies, default=0.0),
        "apply_ms": 1e3 * applied,
        "change_ms": 1e3 * change,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="warm-up time")
    parser.add_argument(
        "--period", type=float, default=0.5, help="seconds between two items into an entry point"
    )
    parser.add_argument("--window", type=float, default=2.0, help="the baseline's measured time")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cases", default="baseline,baseline-frozen,apply,off-loop,frozen")
    args = parser.parse_args()
    if args.quick:
        args.nodes, args.repeat, args.seconds = 1_000, 1, 1.0
    cases = tuple(args.cases.split(","))
    results: dict[str, list[dict[str, float]]] = {c: [] for c in cases}
    for _ in range(args.repeat):
        for case in cases:  # round-robin, so drift hits every case alike
            gc.collect()
            results[case].append(
                asyncio.run(one_run(case, args.nodes, args.seconds, args.period, args.window))
            )
    rate = CHAINS / args.period
    print(
        f"hotplumb from {hp.__file__}; {args.nodes:,} nodes, {rate:,.0f} items/s fed, "
        f"{args.repeat} run(s) per case; load average {os.getloadavg()[0]:.1f}\n"
    )
    print(
        "| case | longest step, CPU ms | without collections | longest full collection "
        "(count) | worst delivery latency, ms | vs baseline | apply, ms |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    reference = "baseline" if "baseline" in results else cases[0]  # the "vs" column's
    base = statistics.median(r["worst_latency_ms"] for r in results[reference])

    def cell(rows: list[dict[str, float]], name: str) -> str:
        values = [r[name] for r in rows]
        return f"{statistics.median(values):,.1f} ({min(values):,.1f}-{max(values):,.1f})"

    for case in cases:
        rows = results[case]
        latency = statistics.median(r["worst_latency_ms"] for r in rows)
        print(
            f"| {case} | {cell(rows, 'stall_ms')} | {cell(rows, 'own_ms')} | "
            f"{cell(rows, 'full_gc_ms')} ({statistics.median(r['full_gcs'] for r in rows):.0f}) | "
            f"{cell(rows, 'worst_latency_ms')} | {latency / base:.2f}x | {cell(rows, 'apply_ms')} |"
        )


if __name__ == "__main__":
    main()
