"""Benchmark graph resolution, incremental edits and diffs.

Run ``python bench/bench_graph.py``; it prints a markdown table. Times are the
median of a few runs; peak memory is measured by ``tracemalloc`` in a separate
run (tracing slows Python down, so it is not timed).
"""

from __future__ import annotations

import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from hotplumb import Graph, Node

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable

COMMAND = "python bench/bench_graph.py"
CLIENTS = 1_000
LAYERS = 99  # 1,000 clients x 99 layers of shared chains + 1,000 targets = 100,000 nodes
DEPTH = 100_000
RUNS = 3


def stage(value: Any) -> Any:
    return value


def other_stage(value: Any) -> Any:
    return value


def lattice_factory(k: Hashable) -> Node | None:
    """Layer ``d`` node ``i`` reads nodes ``i`` and ``i + 1`` of layer ``d + 1``."""
    if not (isinstance(k, tuple) and len(k) == 2):
        return None
    layer, i = k
    if layer == LAYERS - 1:
        return Node()
    return Node(stage, inputs=[(layer + 1, i), (layer + 1, (i + 1) % CLIENTS)])


def chain_factory(k: Hashable) -> Node | None:
    if isinstance(k, int) and 0 <= k < DEPTH - 1:
        return Node(stage, inputs=[k + 1])
    return Node() if k == DEPTH - 1 else None


def clients(n: int = CLIENTS) -> dict[Hashable, Node]:
    return {f"client/{i}": Node(stage, inputs=[(0, i)], target=True) for i in range(n)}


def median_time(fn: Callable[[], object], runs: int = RUNS) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_memory(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del result
    return peak


def main() -> None:
    base = Graph(clients(), lattice_factory)
    assert len(base) == CLIENTS * (LAYERS + 1), len(base)

    def add_target() -> object:
        new = base.add_node("client/new", Node(stage, inputs=[(5, 17)], target=True))
        return base.diff(new)

    def remove_target() -> object:
        return base.diff(base.remove_node("client/0"))

    def replace_node() -> object:
        return base.diff(base.add_node((50, 500), Node(other_stage, inputs=[(51, 500)])))

    edited_add = base.add_node("client/new", Node(stage, inputs=[(5, 17)], target=True))
    edited_remove = base.remove_node("client/0")
    edited_replace = base.add_node((50, 500), Node(other_stage, inputs=[(51, 500)]))

    rows: list[tuple[str, Callable[[], object], Callable[[], object] | None]] = [
        (
            "resolve 100,000 nodes (1,000 targets over shared chains)",
            lambda: Graph(clients(), lattice_factory),
            None,
        ),
        (
            "resolve a chain 100,000 deep",
            lambda: Graph({"out": Node(inputs=[0], target=True)}, chain_factory),
            None,
        ),
        (
            "add one target + diff (100k graph)",
            add_target,
            lambda: Graph(edited_add.provided, lattice_factory),
        ),
        (
            "remove one target + diff (100k graph)",
            remove_target,
            lambda: Graph(edited_remove.provided, lattice_factory),
        ),
        (
            "replace one node + diff (100k graph)",
            replace_node,
            lambda: Graph(edited_replace.provided, lattice_factory),
        ),
    ]

    print(f"Command: `{COMMAND}` (Python {sys.version.split()[0]}, median of {RUNS} runs)\n")
    print("| operation | time | peak memory | fresh resolution of the result | edit / fresh |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, run, fresh in rows:
        seconds = median_time(run)
        peak = peak_memory(run)
        if fresh is None:
            print(f"| {name} | {seconds * 1e3:.1f} ms | {peak / 2**20:.1f} MiB | | |")
        else:
            fresh_seconds = median_time(fresh, runs=1)
            print(
                f"| {name} | {seconds * 1e3:.1f} ms | {peak / 2**20:.1f} MiB "
                f"| {fresh_seconds * 1e3:.0f} ms | {seconds / fresh_seconds:.1%} |"
            )


if __name__ == "__main__":
    main()
