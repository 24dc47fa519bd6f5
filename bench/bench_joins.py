"""Many clients joining and leaving at once: the cost of a subscription against the graph's size.

Usage::

    python bench/bench_joins.py                  # 200 clients on 10, 1,000 and 5,000 chains
    python bench/bench_joins.py --quick          # a smoke run in seconds
    python bench/bench_joins.py --clients 500 --chains 20000 --repeat 5
    python bench/bench_joins.py --json           # one JSON line, for compare.py

The topology: ``chains`` targets, each a sink reading ``("square", i)``, which
the factory makes as a plain function of an entry point ``("feed", i)``. Then
``clients`` tasks each enter ``topo.subscribe(("square", chains + j))`` at
once, a key nobody reads yet, so every join adds an entry point, a stage and a
sink, and every leave garbage-collects them again. Joins and leaves that
arrive while a change is under way share the next one. Figures: the time from
the first ``subscribe`` until every client has joined, and from the first
leave until every client has left, each divided by ``clients``: what one join
or leave costs when many arrive together, and how it grows with the graph (a
join should cost what its own region costs, not what the graph costs). Each
repetition runs in a fresh event loop; the report gives the median and the
range.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from typing import Any

import hotplumb as hp


def factory(key: Any) -> hp.Node | None:
    if type(key) is tuple and len(key) == 2:
        kind, i = key
        if kind == "square":
            return hp.Node(lambda x: x * x, inputs=[("feed", i)])
        if kind == "feed":
            return hp.Node()
    return None


async def one_run(chains: int, clients: int) -> tuple[float, float]:
    """Seconds per join and per leave, with ``clients`` arriving at once on ``chains`` chains."""
    targets = {("sink", i): hp.sink(lambda d: None, inputs=[("square", i)]) for i in range(chains)}
    graph = hp.Graph(targets, factory=factory)
    async with hp.run(graph) as topo:
        everyone_in = asyncio.Event()
        go = asyncio.Event()
        joined = 0

        async def client(j: int) -> None:
            nonlocal joined
            async with topo.subscribe(("square", chains + j)):
                joined += 1
                if joined == clients:
                    everyone_in.set()
                await go.wait()

        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for j in range(clients):
                group.create_task(client(j))
            await everyone_in.wait()
            joins = time.perf_counter() - started
            assert len(topo.graph) == 3 * (chains + clients)
            started = time.perf_counter()
            go.set()
        leaves = time.perf_counter() - started
        assert len(topo.graph) == 3 * chains
    return joins / clients, leaves / clients


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument(
        "--chains", type=lambda s: [int(x) for x in s.split(",")], default=[10, 1000, 5000]
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="20 clients, 10 and 500 chains, once")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.chains, args.repeat = 20, [10, 500], 1
    results: dict[str, dict[str, Any]] = {}
    lines = [
        f"{args.clients} clients at once, {args.repeat} runs; ms per join / leave, median (range)",
        "",
        "| chains | graph nodes | join ms | leave ms |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for chains in args.chains:
        runs = [asyncio.run(one_run(chains, args.clients)) for _ in range(args.repeat)]
        cells = []
        for what, values in (("join", [r[0] for r in runs]), ("leave", [r[1] for r in runs])):
            ms = [v * 1000 for v in values]
            median = statistics.median(ms)
            results[f"{what}@{chains}"] = {
                "value": median,
                "metric": "ms",
                "title": f"one {what} among {args.clients} at once, {chains} chains",
            }
            cells.append(f"{median:.2f} ({min(ms):.2f}-{max(ms):.2f})")
        lines.append(f"| {chains:,} | {3 * chains:,} | {cells[0]} | {cells[1]} |")
    if args.json:
        print(json.dumps({"hotplumb": hp.__file__.rsplit("/", 1)[0], "results": results}))
    else:
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
