"""Checkpoints under load: the pause they cause, their duration and size, their cost in throughput.

The graph: 1,000 nodes, 10 chains of an entry point, 98 stateful stages (each
counts what it saw and keeps the last value) and a sink.

* **pause**: a feeder sends a steady stream (``--rate`` values/s in chunks of
  8, to each entry point in turn); checkpoints are taken at fixed times. For
  each checkpoint, the largest gap between consecutive deliveries (at any
  sink) and the worst latency (from when the feeder's schedule had a chunk due
  to its delivery) in a window from the checkpoint's start; against the same
  figures in windows of the same run with no checkpoint.
* **duration and size**: the awaited ``topo.checkpoint()``, the barrier's
  part of it (``Checkpoint.duration``) and the bytes recorded, for
  :class:`~hotplumb.SQLiteStore` and :class:`~hotplumb.DirectoryStore`.
* **throughput**: the CPU time per value delivered under the steady stream
  (every thread: the store writes in a worker), with a checkpoint every
  second against none, and the throughput that allows (runs alternate;
  medians). A saturating feeder would measure the wrong thing: an aligned
  barrier waits behind every datum in flight, and with full channels (1,024
  per channel, 100 deep) that is most of a short run.

Run ``python bench/bench_checkpoint.py`` (about a minute) or ``--quick``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hotplumb as hp
from _harness import environment, markdown_table

if TYPE_CHECKING:
    from collections.abc import Sequence

CHAINS = 10
STAGES = 98
CHUNK = 8


def stage(value: int, ctx: hp.Context) -> int:
    state = ctx.state
    state[0] += 1
    state[1] = value
    return value + 1


def fresh() -> list[int]:
    return [0, 0]


@dataclass
class Deliveries:
    times: list[float] = field(default_factory=list)
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (delivered, latency)
    count: int = 0

    def deliver(self, datum: hp.Datum) -> None:
        now = time.perf_counter()
        self.count += 1
        due = datum.origin[1] if isinstance(datum.origin, tuple) else None
        if due is not None:
            self.times.append(now)
            self.latencies.append((now, now - due))


def graph(deliveries: Deliveries) -> hp.Graph:
    nodes: dict[Any, hp.Node] = {}
    for chain in range(CHAINS):
        nodes[("in", chain)] = hp.Node()
        previous: Any = ("in", chain)
        for i in range(STAGES):
            key = ("stage", chain, i)
            first = i == 0
            nodes[key] = hp.Node(
                (lambda v, ctx: stage(v[0], ctx)) if first else stage,
                inputs=[previous],
                state=fresh,
            )
            previous = key
        nodes[("out", chain)] = hp.sink(deliveries.deliver, inputs=[previous])
    return hp.Graph(nodes)


def throughput_graph(deliveries: Deliveries) -> hp.Graph:
    nodes: dict[Any, hp.Node] = {}
    for chain in range(CHAINS):
        nodes[("in", chain)] = hp.Node()
        previous: Any = ("in", chain)
        for i in range(STAGES):
            nodes[("stage", chain, i)] = hp.Node(stage, inputs=[previous], state=fresh)
            previous = ("stage", chain, i)
        nodes[("out", chain)] = hp.sink(deliveries.deliver, inputs=[previous])
    return hp.Graph(nodes)


# -- pause -----------------------------------------------------------------------------


@dataclass
class PauseRun:
    checkpoint_gaps: list[float]
    baseline_gaps: list[float]
    checkpoint_latency: list[float]
    baseline_latency: list[float]
    awaited: list[float]
    barrier: list[float]
    sizes: list[int]


def window_figures(d: Deliveries, start: float, length: float) -> tuple[float, float]:
    times = [t for t in d.times if start <= t <= start + length]
    edges = [start, *times, start + length]
    gap = max(b - a for a, b in itertools.pairwise(edges))
    latency = max((lat for t, lat in d.latencies if start <= t <= start + length), default=0.0)
    return gap, latency


async def pause_run(
    rate: float, seconds: float, every: float, window: float, *, drain: bool = False
) -> PauseRun:
    deliveries = Deliveries()
    with tempfile.TemporaryDirectory() as where:
        store = hp.SQLiteStore(Path(where) / "ck.db")
        async with hp.run(graph(deliveries), checkpoint=store) as topo:
            began = time.perf_counter()
            stop = began + seconds
            interval = CHUNK / rate

            async def feed() -> None:
                n = 0
                due = began
                while due < stop:
                    now = time.perf_counter()
                    if now < due:
                        await asyncio.sleep(due - now)
                    chunk = [(n + i, due) for i in range(CHUNK)]
                    await topo.inject_many(("in", (n // CHUNK) % CHAINS), chunk)
                    n += CHUNK
                    due += interval

            starts: list[float] = []
            awaited: list[float] = []
            barrier: list[float] = []
            sizes: list[int] = []

            async def checkpoints() -> None:
                at = began + every
                while at + window < stop:
                    await asyncio.sleep(max(0.0, at - time.perf_counter()))
                    starts.append(time.perf_counter())
                    if drain:  # the same barrier, recording nothing
                        await topo.drain()
                        awaited.append(time.perf_counter() - starts[-1])
                    else:
                        cp = await topo.checkpoint()
                        awaited.append(time.perf_counter() - starts[-1])
                        barrier.append(cp.duration)
                        sizes.append(cp.size)
                    at += every

            async with asyncio.TaskGroup() as tg:
                tg.create_task(feed())
                tg.create_task(checkpoints())
            await topo.drain()
        store.close()
    # Baseline windows: halfway between checkpoints, in the same run.
    baselines = [s - every / 2 for s in starts if s - every / 2 > began + 0.2]
    cp = [window_figures(deliveries, s, window) for s in starts]
    base = [window_figures(deliveries, s, window) for s in baselines]
    return PauseRun(
        [g for g, _ in cp],
        [g for g, _ in base],
        [lat for _, lat in cp],
        [lat for _, lat in base],
        awaited,
        barrier,
        sizes,
    )


# -- duration by store ---------------------------------------------------------------------


async def store_run(make: Any, repeat: int) -> tuple[list[float], list[float], list[int]]:
    deliveries = Deliveries()
    awaited: list[float] = []
    barrier: list[float] = []
    sizes: list[int] = []
    with tempfile.TemporaryDirectory() as where:
        store = make(Path(where))
        async with hp.run(throughput_graph(deliveries), checkpoint=store) as topo:
            for chain in range(CHAINS):
                await topo.inject_many(("in", chain), range(100))
            await topo.drain()
            for _ in range(repeat):
                t0 = time.perf_counter()
                cp = await topo.checkpoint()
                awaited.append(time.perf_counter() - t0)
                barrier.append(cp.duration)
                sizes.append(cp.size)
        if isinstance(store, hp.SQLiteStore):
            store.close()
    return awaited, barrier, sizes


# -- throughput ---------------------------------------------------------------------------


async def cost_run(rate: float, seconds: float, every: float | None) -> tuple[float, int]:
    """CPU seconds per delivered value under the steady stream, and checkpoints taken."""
    deliveries = Deliveries()
    with tempfile.TemporaryDirectory() as where:
        store = hp.SQLiteStore(Path(where) / "ck.db")
        options: dict[str, Any] = {"checkpoint": store}
        if every is not None:
            options["checkpoint_every"] = every
        async with hp.run(graph(deliveries), **options) as topo:
            cpu = time.process_time()  # this thread and the store's worker threads
            began = time.perf_counter()
            n = 0
            due = began
            while due < began + seconds:
                now = time.perf_counter()
                if now < due:
                    await asyncio.sleep(due - now)
                await topo.inject_many(
                    ("in", (n // CHUNK) % CHAINS), [(n + i, due) for i in range(CHUNK)]
                )
                n += CHUNK
                due += CHUNK / rate
            await topo.drain()
            used = time.process_time() - cpu
            taken = topo.checkpoints.taken
        store.close()
    if deliveries.count != n:
        raise AssertionError(f"delivered {deliveries.count}, sent {n}")
    return used / n, taken


# -- the report ----------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fresh_loop(coro: Any) -> Any:
    gc.collect()
    return asyncio.run(coro)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run: seconds")
    parser.add_argument("--rate", type=float, default=400.0, help="values/s of the steady stream")
    parser.add_argument("--repeat", type=int, default=3, help="throughput runs of each kind")
    args = parser.parse_args(argv)
    seconds, every, window = (3.0, 1.0, 0.3) if args.quick else (12.0, 1.5, 0.5)
    repeat = 1 if args.quick else args.repeat
    started = time.perf_counter()

    out = [*environment(), f"- hotplumb: {hp.__name__} from {Path(hp.__file__).parent}", ""]

    pause = fresh_loop(pause_run(args.rate, seconds, every, window))
    drained = fresh_loop(pause_run(args.rate, seconds, every, window, drain=True))
    out.append(
        f"### Delivery pause\n\n{CHAINS * (STAGES + 2):,} nodes, a steady {args.rate:,.0f} "
        f"values/s for {seconds:g} s, a checkpoint every {every:g} s "
        f"({len(pause.checkpoint_gaps)} checkpoints), SQLite store; windows of "
        f"{window * 1000:.0f} ms from each checkpoint's start, against windows of the same "
        "run halfway between checkpoints. Medians.\n"
    )
    out.append(
        markdown_table(
            ["window", "largest gap, ms", "worst latency, ms"],
            [
                [
                    "no checkpoint (baseline)",
                    ms(median(pause.baseline_gaps)),
                    ms(median(pause.baseline_latency)),
                ],
                [
                    "checkpoint",
                    ms(median(pause.checkpoint_gaps)),
                    ms(median(pause.checkpoint_latency)),
                ],
                [
                    "drain run: no checkpoint (baseline)",
                    ms(median(drained.baseline_gaps)),
                    ms(median(drained.baseline_latency)),
                ],
                [
                    "drain run: a drain, the same barrier recording nothing",
                    ms(median(drained.checkpoint_gaps)),
                    ms(median(drained.checkpoint_latency)),
                ],
            ],
            align=["left", "right", "right"],
        )
    )
    out.append(
        f"\nIn this run: `await topo.checkpoint()` {ms(median(pause.awaited))} ms, of which "
        f"the barrier's journey {ms(median(pause.barrier))} ms (`Checkpoint.duration`); "
        f"`await topo.drain()` in the drain run {ms(median(drained.awaited))} ms; "
        f"{median(pause.sizes) / 1024:.0f} KiB per checkpoint.\n"
    )

    rows = []
    for name, make in [
        ("SQLiteStore", lambda d: hp.SQLiteStore(d / "ck.db")),
        ("DirectoryStore (fsync)", lambda d: hp.DirectoryStore(d / "ck")),
        ("DirectoryStore (no fsync)", lambda d: hp.DirectoryStore(d / "ck", fsync=False)),
    ]:
        awaited, barrier, sizes = fresh_loop(store_run(make, 3 if args.quick else 7))
        rows.append(
            [
                name,
                ms(median(awaited)),
                ms(median(barrier)),
                f"{median(sizes) / 1024:.0f}",
                f"{CHAINS * (STAGES + 2):,}",
            ]
        )
    out.append("### Duration and size, idle topology\n")
    out.append(
        markdown_table(
            ["store", "checkpoint(), ms", "barrier, ms", "size, KiB", "entries"],
            rows,
            align=["left", "right", "right", "right", "right"],
        )
    )

    with_cp: list[float] = []
    without: list[float] = []
    taken: list[int] = []
    for _ in range(repeat):
        cost, _ = fresh_loop(cost_run(args.rate, seconds, None))
        without.append(cost)
        cost, n = fresh_loop(cost_run(args.rate, seconds, 1.0))
        with_cp.append(cost)
        taken.append(n)
    base, checked = median(without), median(with_cp)
    out.append(
        f"\n### Throughput\n\nThe steady stream of {args.rate:,.0f} values/s for {seconds:g} s "
        f"({STAGES + 1} hops per value), {repeat} runs of each, alternating: the CPU time "
        "(`time.process_time`, every thread) per value delivered, and the throughput it "
        "allows (its inverse). Medians.\n"
    )
    out.append(
        markdown_table(
            ["checkpoints", "CPU per value, µs", "values/s it allows", "vs none", "taken per run"],
            [
                ["none", f"{base * 1e6:,.0f}", f"{1 / base:,.0f}", "1.00x", "0"],
                [
                    "every 1 s",
                    f"{checked * 1e6:,.0f}",
                    f"{1 / checked:,.0f}",
                    f"{base / checked:.2f}x",
                    f"{median(taken):g}",
                ],
            ],
            align=["left", "right", "right", "right", "right"],
        )
    )
    out.append(f"\nTotal time {time.perf_counter() - started:.0f} s.")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
