"""Benchmark the memory of a graph lineage whose clients keep inventing keys.

A service's clients join (a target reading keys nobody used before) and leave
(the target is removed), one after another, on one lineage of graphs. Every
join makes new generated nodes; every leave makes them inactive. The factory
cache (``Graph(..., factory_cache=N)``) keeps at most ``N`` results for
inactive keys, so memory should stay flat once it is full.

Run ``python bench/bench_memory.py [--joins 100000]``; it prints a markdown
table. Each configuration runs in a fresh child process under ``tracemalloc``
(which slows Python down several times; nothing here is timed). "unbounded"
sets ``factory_cache`` above the number of keys: the cache then keeps every
result, as it did before it was bounded.

Two workloads:

- **seed**: clients of ``examples/seed_graph.py``, each subscribing to
  ``source/foo`` with its own rollup window: three new keys per join (the
  merge, the rollup, the window's timer).
- **one key**: each client reads one new generated key, which reads a shared
  entry point: the smallest join there is.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "examples"))

from _harness import environment, fmt_bytes, fmt_count, markdown_table, run_child  # noqa: E402
from hotplumb import Graph, Node, sink  # noqa: E402
from seed_graph import client, seed_factory  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable

CHECKPOINTS = 10  # traced memory is read this many times over the run
CONFIGS: dict[str, int | None] = {
    "unbounded (as before)": None,  # set above the number of keys
    "factory_cache=4096 (default)": 4096,
    "factory_cache=0": 0,
}


def _deliver(datum: Any) -> None:
    pass


def _summarise(value: Any) -> Any:
    return value


def one_key_factory(k: Hashable) -> Node | None:
    if isinstance(k, tuple) and k[0] == "window":
        return Node(_summarise, inputs=["feed"])
    return None


def seed_workload(cache: int) -> tuple[Graph, Callable[[int], Node]]:
    graph = Graph({"archive": client("source/foo")}, seed_factory, factory_cache=cache)
    return graph, lambda i: client("source/foo", rollup_window=i + 1)


def one_key_workload(cache: int) -> tuple[Graph, Callable[[int], Node]]:
    provided = {"feed": Node(), "archive": sink(_deliver, inputs=["feed"])}
    graph = Graph(provided, one_key_factory, factory_cache=cache)
    return graph, lambda i: sink(_deliver, inputs=[("window", i)])


WORKLOADS = {"seed": seed_workload, "one key": one_key_workload}


def measure(workload: str, cache: int, joins: int) -> dict[str, Any]:
    """Run ``joins`` joins and leaves under tracemalloc; return the figures."""
    gc.collect()
    tracemalloc.start()
    try:
        graph, make_client = WORKLOADS[workload](cache)
        size = len(graph)
        memory: list[int] = []
        step = joins // CHECKPOINTS
        for i in range(joins):
            joined = graph.add_node(("client", i), make_client(i))
            graph = joined.remove_node(("client", i))
            if (i + 1) % step == 0:
                del joined
                gc.collect()
                memory.append(tracemalloc.get_traced_memory()[0])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(graph) == size, "every client left"
    return {"memory": memory, "peak": peak, "cache": len(graph._cache), "step": step}


def child(args: argparse.Namespace) -> None:
    cache = args.cache if args.cache >= 0 else args.joins * 10
    print(json.dumps(measure(args.workload, cache, args.joins)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--joins", type=int, default=100_000, help="clients joining and leaving")
    parser.add_argument("--jobs", type=int, default=1, help="child processes at a time")
    parser.add_argument("--workload", choices=sorted(WORKLOADS), help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.workload is not None:
        child(args)
        return
    if args.joins < CHECKPOINTS or args.joins % CHECKPOINTS:
        parser.error(f"--joins must be a positive multiple of {CHECKPOINTS}")
    print("\n".join(environment()))
    print()
    runs = [(workload, name, cache) for workload in WORKLOADS for name, cache in CONFIGS.items()]

    def run(workload: str, cache: int | None) -> dict[str, Any]:
        argv = ["--workload", workload, "--cache", str(-1 if cache is None else cache)]
        return run_child(__file__, [*argv, "--joins", str(args.joins)], timeout=7200)

    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda r: run(r[0], r[2]), runs))
    rows: list[list[str]] = []
    for (workload, name, _), got in zip(runs, results, strict=True):
        memory, step = got["memory"], got["step"]
        # Growth per 1,000 joins over the last nine tenths: the first tenth
        # fills a bounded cache.
        per_1000 = (memory[-1] - memory[0]) / (len(memory) - 1) / step * 1000
        rows.append(
            [
                workload,
                name,
                fmt_count(args.joins),
                fmt_count(got["cache"]),
                fmt_bytes(memory[0]),
                fmt_bytes(memory[-1]),
                fmt_bytes(per_1000),
            ]
        )
    headers = [
        "workload",
        "factory cache",
        "joins",
        "cache entries at the end",
        f"traced after {fmt_count(args.joins // CHECKPOINTS)}",
        "traced at the end",
        "growth per 1,000 joins after that",
    ]
    print(markdown_table(headers, rows, ["left", "left", *["right"] * 5]))


if __name__ == "__main__":
    main()
