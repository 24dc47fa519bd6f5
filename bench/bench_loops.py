"""hotplumb on asyncio's default event loop and on uvloop: W1, W2 and W3 in one run.

Usage::

    python bench/bench_loops.py                 # about a minute on 2 cores
    python bench/bench_loops.py --quick         # a smoke run in seconds
    python bench/bench_loops.py --repeat 9 --only W3

It needs uvloop (``pip install -e '.[uvloop]'``). The workloads are
``bench_runtime.py``'s, driven the same way (``inject_many`` then ``drain``,
a counting ``hp.sink``). Each repetition times hotplumb once on each loop, in
alternating order, each run in a fresh loop made by that loop's factory after
one warm-up run per loop; the ratio of a repetition is the default loop's time
over uvloop's (above 1: uvloop is faster), so drift in the machine's speed
cancels out of it. The table gives the median items/s per loop and the median
ratio with its spread: ± half the range of the repetitions' ratios, over their
median.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from typing import TYPE_CHECKING, Final

from _harness import environment, fmt_count, fmt_rate, markdown_table, package_version
from bench_runtime import WORKLOADS, hotplumb_status
from peers import run_hotplumb

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from peers import Workload

LOOPS: Final = ("asyncio", "uvloop")


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def time_once(workload: Workload, items: int, loop: str) -> float:
    """Run hotplumb on ``workload`` in a fresh loop of kind ``loop``; return the seconds."""

    async def timed() -> tuple[int, float]:
        start = time.perf_counter()
        got = await run_hotplumb(workload, items)
        return got, time.perf_counter() - start

    gc.collect()
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        got, seconds = runner.run(timed())
    if got != workload.expected(items):
        raise RuntimeError(
            f"{workload.id} on {loop}: the sink saw {got}, not {workload.expected(items)}"
        )
    return seconds


def measure(workload: Workload, items: int, repeat: int) -> dict[str, list[float]]:
    for loop in LOOPS:
        time_once(workload, max(items // 10, 1), loop)
    seconds: dict[str, list[float]] = {loop: [] for loop in LOOPS}
    for rep in range(repeat):
        order = LOOPS if rep % 2 == 0 else LOOPS[::-1]
        for loop in order:
            seconds[loop].append(time_once(workload, items, loop))
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_loops.py", description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, help="timed runs per loop (default 7; 2 if --quick)")
    parser.add_argument("--quick", action="store_true", help="a tenth of the items, two runs")
    parser.add_argument("--only", default="W1,W2,W3", help="workloads to run (default W1,W2,W3)")
    args = parser.parse_args(argv)
    repeat = args.repeat or (2 if args.quick else 7)
    wanted = [w for w in WORKLOADS if w.id in args.only.split(",")]
    status = hotplumb_status()

    print("# hotplumb on the default event loop and on uvloop\n")
    print("\n".join(environment()))
    print(f"- hotplumb: {status}")
    print(f"- uvloop: {package_version('uvloop')}\n")
    started = time.perf_counter()
    rows: list[list[str]] = []
    for workload in wanted:
        items = workload.quick_items if args.quick else workload.items
        seconds = measure(workload, items, repeat)
        ratios = [a / u for a, u in zip(seconds["asyncio"], seconds["uvloop"], strict=True)]
        ratio = statistics.median(ratios)
        spread = (max(ratios) - min(ratios)) / ratio * 50
        rows.append(
            [
                f"{workload.id} {workload.name}",
                fmt_count(items),
                fmt_rate(items / statistics.median(seconds["asyncio"])),
                fmt_rate(items / statistics.median(seconds["uvloop"])),
                f"{ratio:.2f}x",
                f"±{spread:.0f}%",
                str(repeat),
            ]
        )
    headers = ["workload", "items", "asyncio items/s", "uvloop items/s", "uvloop vs asyncio"]
    print(markdown_table([*headers, "spread", "runs"], rows))
    print(f"\nTotal time {time.perf_counter() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
