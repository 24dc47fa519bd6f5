"""A channel between two Ray actors against raw batched actor calls, in the same run.

Usage::

    python bench/bench_ray_wire.py                 # about two minutes on 2 cores
    python bench/bench_ray_wire.py --quick         # a smoke run
    python bench/bench_ray_wire.py --batch 1000 --in-flight 1 16

It needs Ray (``pip install -e '.[ray]'``) and starts a local Ray of its own
(2 CPUs, on 127.0.0.1, its files in a temporary directory); what runs in the
actors is defined here and travels by value, as Ray ships ``__main__``. Two host actors,
``near`` and ``far``, each a process. Both contestants send the same items,
in batches of ``--batch``, from ``near`` to ``far``, with at most
``--in-flight`` calls outstanding, and are timed inside ``near`` from the
first send until everything is confirmed:

- **raw Ray calls**: ``far.sink.remote(values)`` per batch (a list of ints),
  each call's reply awaited by a window of ``in_flight`` tasks; the sink
  counts the values. This is the floor: no sequence numbers, no credits, no
  provenance, no order.
- **hotplumb wire**: a :class:`~hotplumb._wire.WireSender` on ``near``
  (``frame_items`` = the batch, ``in_flight`` the same) and its
  :class:`~hotplumb._wire.WireReceiver` on ``far``, whose consumer task takes
  every batch; the batches are :class:`~hotplumb._datum.Batch` values (values,
  origins, a route), so twice the raw payload. The producer puts each batch
  and the clock stops when credits say the far consumer took the last item
  (``Host.drain``: every frame confirmed, nothing outstanding). Capacity is four
  times ``batch * in_flight``, so credit never holds the sender back while
  the consumer keeps up.

Each repetition runs both, in alternating order, on a fresh channel; the ratio
of a repetition is raw time over wire time (1.0: as fast as raw calls; the
issue's target is at least 0.8). The table gives each contestant's median
items/s, the median ratio, and its spread: ± half the range of the
repetitions' ratios, over their median.
"""

from __future__ import annotations

import os

# Ray binds to the machine's own address rather than 127.0.0.1 unless it runs as on a
# laptop (the name says Windows or macOS; it works on Linux). It reads this on import.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import argparse
import asyncio
import shutil
import statistics
import sys
import time
from typing import TYPE_CHECKING, Any

import ray

from _harness import (
    environment,
    fmt_count,
    fmt_rate,
    markdown_table,
    package_version,
    start_local_ray,
)
from hotplumb._datum import Batch, Route
from hotplumb._raywire import HostActor, start_host

if TYPE_CHECKING:
    from collections.abc import Hashable, Sequence

    from hotplumb._raywire import Host

ROUTE = Route("far", Route("source"))


class BenchHost(HostActor):
    """A host with a bare sink method for the raw contestant."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.received = 0

    async def sink(self, values: list[int]) -> int:
        self.received += len(values)
        return self.received


class _Reader:
    def __init__(self) -> None:
        self.key = "far"
        self.event = asyncio.Event()

    def wake(self) -> None:
        self.event.set()

    @property
    def hungry(self) -> bool:
        return True


def open_receiver(host: Host, channel_id: Hashable, capacity: int) -> None:
    host.add_receiver(channel_id, "source", _Reader(), capacity)


async def take_items(host: Host, channel_id: Hashable, items: int) -> int:
    """The consuming node: take batches until ``items`` items were taken."""
    channel = host.receiver(channel_id).channel
    reader: Any = channel.consumer  # a _Reader
    taken = 0
    while taken < items:
        while not channel:
            reader.event.clear()
            await reader.event.wait()
        message = channel.take()
        if type(message) is Batch:
            taken += len(message.values)
    return taken


def remove(host: Host, channel_id: Hashable) -> None:
    host.remove(channel_id)


async def send_wire(
    host: Host, channel_id: Hashable, to: Any, items: int, batch: int, in_flight: int
) -> float:
    """Put the items through a wire sender; return the seconds until credits confirm all."""
    batches = [
        Batch(list(range(i, i + batch)), list(range(i, i + batch)), ROUTE)
        for i in range(0, items, batch)
    ]
    sender = host.add_sender(
        channel_id,
        "source",
        _Reader(),
        4 * batch * in_flight,
        to,
        frame_items=batch,
        in_flight=in_flight,
    )
    start = time.perf_counter()
    for b in batches:
        await sender.put(b)
    await host.drain(channel_id)  # until credits say the far consumer took the last item
    seconds = time.perf_counter() - start
    host.remove(channel_id)
    return seconds


async def _await(ref: Any) -> Any:
    return await ref


async def send_raw(host: Host, to: Any, items: int, batch: int, in_flight: int) -> float:
    """Send the items as raw actor calls, ``in_flight`` at a time; return the seconds."""
    batches = [list(range(i, i + batch)) for i in range(0, items, batch)]
    sink = to.sink.options(max_task_retries=0, retry_exceptions=False)
    start = time.perf_counter()
    pending: set[asyncio.Task[Any]] = set()
    for values in batches:
        if len(pending) >= in_flight:
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        pending.add(asyncio.ensure_future(_await(sink.remote(values))))
    await asyncio.gather(*pending)
    return time.perf_counter() - start


class Bench:
    def __init__(self, items: int, batch: int) -> None:
        self.items = items
        self.batch = batch
        self.near = start_host("near", actor_class=BenchHost)
        self.far = start_host("far", actor_class=BenchHost)
        self.runs = 0

    def raw(self, in_flight: int) -> float:
        seconds: float = ray.get(
            self.near.run.remote(send_raw, self.far, self.items, self.batch, in_flight)
        )
        return seconds

    def polls(self) -> int:
        polls: int = ray.get(self.far.statistics.remote()).polls
        return polls

    def wire(self, in_flight: int) -> float:
        self.runs += 1
        channel = f"run {self.runs}"
        capacity = 4 * self.batch * in_flight
        ray.get(self.far.run.remote(open_receiver, channel, capacity))
        taking = self.far.run.remote(take_items, channel, self.items)
        seconds: float = ray.get(
            self.near.run.remote(send_wire, channel, self.far, self.items, self.batch, in_flight)
        )
        if ray.get(taking) != self.items:
            raise RuntimeError(f"the far consumer did not take {self.items} items")
        ray.get(self.far.run.remote(remove, channel))
        return seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_ray_wire.py", description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, help="items per run (default 200,000)")
    parser.add_argument("--batch", type=int, default=100, help="items per call (default 100)")
    parser.add_argument("--in-flight", type=int, nargs="*", default=[1, 16])
    parser.add_argument("--repeat", type=int, help="timed runs per contestant (default 5)")
    parser.add_argument("--quick", action="store_true", help="a tenth of the items, two runs")
    args = parser.parse_args(argv)
    items = args.items or (20_000 if args.quick else 200_000)
    repeat = args.repeat or (2 if args.quick else 5)

    print("# A hotplumb wire channel between two Ray actors, against raw batched calls\n")
    print("\n".join(environment()))
    print(f"- cores this process may use: {len(os.sched_getaffinity(0))}")
    print(f"- ray: {package_version('ray')}")
    started = time.perf_counter()
    root = start_local_ray()
    print(f"- ray.init: {time.perf_counter() - started:.1f} s")
    print(f"- node address: {', '.join(n['NodeManagerAddress'] for n in ray.nodes())}")
    bench = Bench(items, args.batch)
    rows: list[list[str]] = []
    loads: list[float] = []
    for in_flight in args.in_flight:
        bench.raw(in_flight)  # a warm-up run of each, not timed
        bench.wire(in_flight)
        raw: list[float] = []
        wire: list[float] = []
        polls = bench.polls()
        for rep in range(repeat):
            loads.append(os.getloadavg()[0])
            if rep % 2 == 0:
                raw.append(bench.raw(in_flight))
                wire.append(bench.wire(in_flight))
            else:
                wire.append(bench.wire(in_flight))
                raw.append(bench.raw(in_flight))
        polls = bench.polls() - polls
        frames = repeat * -(-items // args.batch)
        ratios = [r / w for r, w in zip(raw, wire, strict=True)]
        ratio = statistics.median(ratios)
        spread = (max(ratios) - min(ratios)) / ratio * 50
        rows.append(
            [
                str(in_flight),
                fmt_count(args.batch),
                fmt_count(items),
                fmt_rate(items / statistics.median(raw)),
                fmt_rate(items / statistics.median(wire)),
                f"{ratio:.2f}x",
                f"±{spread:.0f}%",
                f"{polls / frames:.3f}",
                str(repeat),
            ]
        )
    ray.shutdown()
    shutil.rmtree(root, ignore_errors=True)
    print(f"- load average during the runs: {min(loads):.1f}-{max(loads):.1f}\n")
    headers = ["in flight", "batch", "items", "raw Ray calls items/s", "hotplumb wire items/s"]
    print(markdown_table([*headers, "wire vs raw", "spread", "polls per frame", "runs"], rows))
    print(f"\nTotal time {time.perf_counter() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
