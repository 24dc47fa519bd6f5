"""Runtime benchmark: hotplumb and its peers on the same workloads, in one run.

Usage::

    python bench/bench_runtime.py                  # everything, about three minutes on 2 cores
    python bench/bench_runtime.py --quick          # a smoke run in seconds
    python bench/bench_runtime.py --only W1,M1 --repeat 7 --items 100000
    python bench/bench_runtime.py --contestants hotplumb --only W1,W2 --json   # for a script

Sections (``--only`` takes their ids):

* W1 linear-10, W2 diamond-8, W3 async-hop-10: throughput. Every contestant
  (see ``peers.py``) pushes the same items through the same topology; the table
  gives the median items/s over the repetitions (after one warm-up run on a
  tenth of the items), that rate relative to hotplumb's, and the wall-clock
  nanoseconds per hop (an edge crossed by one input item); with ``--cpu``, the
  process's CPU time instead (the contestants are all single-threaded, and a
  shared machine's other load inflates CPU time far less than wall time).
  Repetitions go round-robin over the contestants so that drift in the
  machine's speed hits them alike.
* M1 idle memory: the memory per node of a running, idle hotplumb topology of
  10,000 nodes against 10,000 idle asyncio tasks each awaiting its own queue.
* B1 backpressure: items through a slow sink; the peak memory of hotplumb with a
  small channel capacity against unbounded and bounded queue pipelines.

The memory sections run each measurement in a fresh child process.

``--json`` prints, instead of the report, one JSON line with hotplumb's result
in each throughput workload run (see :func:`json_report`); ``compare.py`` reads
it to compare two revisions of hotplumb.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import importlib.util
import json
import platform
import sys
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from _harness import (
    Failure,
    Footnotes,
    Measurement,
    describe_error,
    environment,
    fmt_bytes,
    fmt_count,
    fmt_ns,
    fmt_rate,
    fmt_ratio,
    markdown_table,
    package_version,
    peak_rss_bytes,
    reset_peak_rss,
    rss_bytes,
    run_child,
    time_run,
)
from peers import CONTESTANTS, NotApplicable, Workload

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

ROOT: Final = Path(__file__).resolve().parent.parent
REFERENCE: Final = "hotplumb"

WORKLOADS: Final = (
    Workload(
        "W1",
        "linear-10",
        "linear",
        10,
        items=200_000,
        quick_items=20_000,
        description="An entry point, 10 stages of `x + 1`, a counting sink",
    ),
    Workload(
        "W2",
        "diamond-8",
        "diamond",
        8,
        items=25_000,
        quick_items=2_500,
        description="An entry point fanning out to 8 branches of `x * 2`, one counting sink"
        " reading all 8 (8 sink items per input item)",
    ),
    Workload(
        "W3",
        "async-hop-10",
        "async",
        10,
        items=20_000,
        quick_items=2_000,
        description="10 stages that `await asyncio.sleep(0)` then add 1, a counting sink",
    ),
)
SECTIONS: Final = (*(w.id for w in WORKLOADS), "M1", "B1")

M1_NODES: Final = 10_000
M1_CHAIN: Final = 10
"""M1's hotplumb topology: chains of an entry point, ``M1_CHAIN - 2`` stages and a sink."""
B1_ITEMS: Final = 1_000_000
B1_TRACED_ITEMS: Final = 100_000
B1_CAPACITY: Final = 64


@dataclass(frozen=True, slots=True)
class Settings:
    items: int | None
    repeat: int
    quick: bool
    sections: tuple[str, ...]
    contestants: tuple[str, ...]
    nodes: int
    b1_items: int
    b1_traced_items: int
    capacity: int
    timeout: float
    budget: float
    json: bool = False
    cpu: bool = False


def hotplumb_status() -> str:
    """Make ``hotplumb`` importable from the checkout if it is not installed; describe it."""
    if importlib.util.find_spec("hotplumb") is None:
        sys.path.insert(0, str(ROOT / "src"))
    try:
        import hotplumb
    except Exception as exc:
        return f"not importable ({describe_error(exc)})"
    where = Path(hotplumb.__file__ or "?").parent
    version = getattr(hotplumb, "__version__", None) or package_version("hotplumb")
    if version == "not installed":
        version = "(checkout)"
    return f"{version} from {where}"


def progress(text: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r\x1b[K{text}")
        sys.stderr.flush()


# -- throughput -----------------------------------------------------------------------------------


def run_workload(
    workload: Workload, items: int, settings: Settings
) -> dict[str, Measurement | Failure]:
    """Time every contestant on ``workload``: one warm-up, then rounds of timed runs.

    A contestant gets ``repeat`` timed runs, or as many as fit in ``budget``
    seconds (judged from its warm-up) but at least three.
    """
    results: dict[str, Measurement | Failure] = {}
    runs: dict[str, int] = {}

    def attempt(name: str, n: int) -> float | None:
        fn = functools.partial(CONTESTANTS[name], workload, n)
        try:
            return time_run(
                fn,
                expected=workload.expected(n),
                timeout=settings.timeout,
                clock=time.process_time if settings.cpu else time.perf_counter,
            )
        except NotApplicable as exc:
            results[name] = Failure(f"n/a: {exc}")
        except Exception as exc:
            results[name] = Failure(describe_error(exc))
        return None

    warm = max(items // 10, 1)
    for name in settings.contestants:
        progress(f"{workload.id}: warming up {name}")
        seconds = attempt(name, warm)
        if seconds is not None:
            estimate = seconds * items / warm
            fit = int(settings.budget // estimate) if estimate > 0 else settings.repeat
            runs[name] = min(settings.repeat, max(fit, 3))
    for rep in range(max(runs.values(), default=0)):
        for name, wanted in runs.items():
            done = results.get(name, Measurement(()))
            if rep >= wanted or isinstance(done, Failure):
                continue
            progress(f"{workload.id}: {name} {rep + 1}/{wanted}")
            seconds = attempt(name, items)
            if seconds is not None:
                results[name] = done.added(seconds)
    progress("")
    return results


def workload_report(
    workload: Workload,
    items: int,
    results: dict[str, Measurement | Failure],
    settings: Settings,
) -> str:
    reference = results.get(REFERENCE)
    ref_rate = reference.rate(items) if isinstance(reference, Measurement) else None
    notes = Footnotes()
    rows: list[list[str]] = []
    for name in settings.contestants:
        result = results.get(name, Failure("error: did not run"))
        if isinstance(result, Failure):
            rows.append([name, notes.cell(result.message), "", "", "", ""])
            continue
        rate = result.rate(items)
        spread = f"±{result.spread * 50:.0f}%" if len(result.seconds) > 1 else ""
        rows.append(
            [
                name,
                fmt_rate(rate),
                fmt_ratio(rate / ref_rate) if ref_rate else "",
                fmt_ns(result.median / (items * workload.hops) * 1e9),
                spread,
                str(len(result.seconds)),
            ]
        )
    about = (
        f"{workload.description}. {fmt_count(items)} input items, {workload.hops} hops per item."
    )
    per_hop = "CPU ns/hop" if settings.cpu else "ns/hop"
    headers = ["contestant", "items/s", "vs hotplumb", per_hop, "spread", "runs"]
    table = markdown_table(headers, rows)
    return _section(f"{workload.id} {workload.name}", about, table, notes)


def _section(title: str, about: str, table: str, notes: Footnotes) -> str:
    parts = [f"## {title}", about, table]
    if notes.notes:
        parts.append(notes.render())
    return "\n\n".join(parts) + "\n"


def json_result(
    workload: Workload, items: int, results: dict[str, Measurement | Failure], cpu: bool = False
) -> dict[str, Any]:
    """The result of hotplumb on ``workload``, for :func:`json_report`."""
    result = results.get(REFERENCE, Failure("error: did not run"))
    entry: dict[str, Any] = {
        "title": f"{workload.id} {workload.name}",
        "metric": "CPU ns/hop" if cpu else "ns/hop",
        "items": items,
    }
    if isinstance(result, Failure):
        entry["error"] = result.message
        return entry
    per_hop = [s / (items * workload.hops) * 1e9 for s in result.seconds]
    entry.update(value=result.median / (items * workload.hops) * 1e9, runs=per_hop)
    return entry


def json_report(results: dict[str, dict[str, Any]]) -> str:
    """The ``--json`` line: where hotplumb came from, and its result per workload.

    ``{"bench": "bench_runtime", "hotplumb": <package directory>, "python": <version>,
    "results": {<workload id>: {"title", "metric": "ns/hop", "items", "value": <median>,
    "runs": [...]} or {"title", "metric", "items", "error": <message>}}}``
    """
    import hotplumb

    where = str(Path(hotplumb.__file__ or "?").parent)
    return json.dumps(
        {
            "bench": "bench_runtime",
            "hotplumb": where,
            "python": platform.python_version(),
            "results": results,
        }
    )


# -- M1: idle memory ------------------------------------------------------------------------------


class Probe:
    """Measures memory growth since :meth:`start`: traced bytes, or resident set size."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.base = 0

    def start(self) -> None:
        if self.kind == "tracemalloc":
            tracemalloc.start()
        self.base = self._now()

    def read(self) -> int:
        return self._now() - self.base

    def _now(self) -> int:
        gc.collect()
        if self.kind == "tracemalloc":
            return tracemalloc.get_traced_memory()[0]
        rss = rss_bytes()
        if rss is None:
            raise RuntimeError("resident set size is not available on this platform")
        return rss


async def _settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def m1_hotplumb(nodes: int, probe: Probe) -> dict[str, Any]:
    import hotplumb as hp

    def nothing(_datum: object) -> None:
        pass

    probe.start()
    spec: dict[tuple[int, int], Any] = {}
    for c in range(nodes // M1_CHAIN):
        spec[(c, 0)] = hp.Node()
        for i in range(1, M1_CHAIN - 1):
            spec[(c, i)] = hp.Node(lambda x: x + 1, inputs=[(c, i - 1)])
        spec[(c, M1_CHAIN - 1)] = hp.sink(nothing, inputs=[(c, M1_CHAIN - 2)])
    graph = hp.Graph(spec)
    described = probe.read()
    async with hp.run(graph):
        await _settle()
        running = probe.read()
    return {"nodes": len(spec), "described": described, "running": running}


async def m1_tasks(nodes: int, probe: Probe) -> dict[str, Any]:
    async def consume(queue: asyncio.Queue[int]) -> None:
        while True:
            await queue.get()

    probe.start()
    queues: list[asyncio.Queue[int]] = [asyncio.Queue() for _ in range(nodes)]
    tasks = [asyncio.create_task(consume(q)) for q in queues]
    await _settle()
    running = probe.read()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"nodes": nodes, "running": running}


def run_m1(settings: Settings) -> str:
    script = str(Path(__file__).resolve())
    # (who, probe kind) -> the child's answer: bytes grown per stage, and the node count.
    got: dict[tuple[str, str], dict[str, Any] | Failure] = {}
    for who in ("hotplumb", "tasks"):
        for kind in ("tracemalloc", "rss"):
            progress(f"M1: {who} {kind}")
            args = ["--child", f"m1:{who}:{kind}", "--nodes", str(settings.nodes)]
            try:
                got[who, kind] = run_child(script, args, timeout=settings.timeout)
            except Exception as exc:
                got[who, kind] = Failure(describe_error(exc))
    progress("")

    notes = Footnotes()

    def per_node(who: str, kind: str, stage: str) -> float | str:
        answer = got[who, kind]
        if isinstance(answer, Failure):
            return notes.cell(answer.message)
        return float(answer[stage]) / int(answer["nodes"])

    reference = per_node("hotplumb", "tracemalloc", "running")
    rows: list[list[str]] = []
    for label, who, stage in (
        ("hotplumb: running topology", "hotplumb", "running"),
        ("hotplumb: its Graph alone", "hotplumb", "described"),
        ("asyncio: task + Queue per node", "tasks", "running"),
    ):
        traced, rss = per_node(who, "tracemalloc", stage), per_node(who, "rss", stage)
        ratio = ""
        if isinstance(traced, float) and isinstance(reference, float) and reference > 0:
            ratio = fmt_ratio(traced / reference)
        rows.append(
            [
                label,
                fmt_bytes(traced) if isinstance(traced, float) else traced,
                fmt_bytes(rss) if isinstance(rss, float) else rss,
                ratio,
            ]
        )
    chains = settings.nodes // M1_CHAIN
    table = markdown_table(["idle, per node", "traced", "RSS", "vs hotplumb"], rows)
    about = (
        f"{fmt_count(chains * M1_CHAIN)} idle nodes. hotplumb: {fmt_count(chains)} chains of an"
        f" entry point, {M1_CHAIN - 2} stages of `x + 1` and a sink, measured after `hp.run`"
        " has started them (the running row includes the Graph). The peer: as many asyncio"
        " tasks, each looping on `await queue.get()` of its own `asyncio.Queue`. traced:"
        " tracemalloc's current size; RSS: the resident set's growth, measured in another"
        " child without tracemalloc; vs hotplumb: traced bytes over hotplumb's. Each"
        " measurement runs in a fresh child process."
    )
    return _section("M1 idle memory", about, table, notes)


# -- B1: backpressure -----------------------------------------------------------------------------


def slow_work(x: int) -> int:
    """About a microsecond of arithmetic: the slow sink's work per item."""
    for _ in range(8):
        x = (x * 31 + 7) % 1_000_003
    return x


async def b1_hotplumb(items: int, capacity: int) -> int:
    import hotplumb as hp

    count = 0

    def slow_sink(datum: Any) -> None:
        nonlocal count
        slow_work(datum.value)
        count += 1

    graph = hp.Graph(
        {
            "in": hp.Node(),
            "stage": hp.Node(lambda x: x + 1, inputs=["in"]),
            "out": hp.sink(slow_sink, inputs=["stage"]),
        }
    )
    async with hp.run(graph, capacity=capacity) as topo:
        await topo.inject_many("in", range(items))
        await topo.drain()
    return count


async def b1_queues(items: int, maxsize: int) -> int:
    async def stage(qin: asyncio.Queue[int | None], qout: asyncio.Queue[int | None]) -> None:
        while (x := await qin.get()) is not None:
            await qout.put(x + 1)
        await qout.put(None)

    async def sink(qin: asyncio.Queue[int | None]) -> int:
        count = 0
        while (x := await qin.get()) is not None:
            slow_work(x)
            count += 1
        return count

    q1: asyncio.Queue[int | None] = asyncio.Queue(maxsize)
    q2: asyncio.Queue[int | None] = asyncio.Queue(maxsize)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(stage(q1, q2))
        counted = tg.create_task(sink(q2))
        for x in range(items):
            await q1.put(x)
        await q1.put(None)
    return counted.result()


B1_CONTESTANTS: Final[dict[str, str]] = {
    "hotplumb": "hotplumb, capacity={capacity}",
    "unbounded": "asyncio.Queue(), unbounded",
    "bounded": "asyncio.Queue(maxsize={capacity})",
}


async def b1_child(who: str, items: int, capacity: int, probe: str) -> dict[str, Any]:
    """Run one B1 pipeline; measure its peak memory above the starting point."""
    gc.collect()
    if probe == "tracemalloc":
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
    else:
        reset_peak_rss()
        base = rss_bytes() or 0
    start = time.perf_counter()
    if who == "hotplumb":
        count = await b1_hotplumb(items, capacity)
    else:
        count = await b1_queues(items, capacity if who == "bounded" else 0)
    seconds = time.perf_counter() - start
    if probe == "tracemalloc":
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
    else:
        high = peak_rss_bytes()
        if high is None or not base:
            raise RuntimeError("the peak resident set size is not available on this platform")
        peak = max(0, high - base)
    if count != items:
        raise RuntimeError(f"sink saw {count:,} items, expected {items:,}")
    return {"peak": peak, "seconds": seconds}


def run_b1(settings: Settings) -> str:
    script = str(Path(__file__).resolve())
    notes = Footnotes()
    rows: list[list[str]] = []
    for who, label in B1_CONTESTANTS.items():
        row = [label.format(capacity=settings.capacity)]
        for probe, items in (("tracemalloc", settings.b1_traced_items), ("rss", settings.b1_items)):
            progress(f"B1: {who} {probe}")
            args = ["--child", f"b1:{who}:{probe}", "--capacity", str(settings.capacity)]
            args += ["--b1-items", str(items)]
            try:
                got = run_child(script, args, timeout=settings.timeout)
            except Exception as exc:
                row += [notes.cell(describe_error(exc))] + [""] * (probe == "rss")
                continue
            row.append(fmt_bytes(got["peak"]))
            if probe == "rss":
                row.append(fmt_rate(items / got["seconds"]))
        rows.append(row)
    progress("")
    headers = [
        "pipeline",
        f"peak traced, {fmt_count(settings.b1_traced_items)} items",
        f"peak RSS growth, {fmt_count(settings.b1_items)} items",
        "items/s",
    ]
    table = markdown_table(headers, rows)
    about = (
        "Items go through entry → `x + 1` → a sink doing about a microsecond of arithmetic"
        " per item, each measurement in a fresh child process. peak traced: tracemalloc's"
        " peak above the starting point; tracemalloc slows these pipelines about tenfold, so"
        f" it traces {fmt_count(settings.b1_traced_items)} items. peak RSS growth and"
        f" items/s: an untraced run of {fmt_count(settings.b1_items)} items; the peak resident"
        " set over the one at the start. An unbounded pipeline grows with the item count;"
        " a bounded one does not."
    )
    return _section("B1 backpressure", about, table, notes)


# -- command line ---------------------------------------------------------------------------------


def child(spec: str, settings: Settings) -> int:
    """Run one memory measurement and print its JSON (the parent reads the last line)."""
    section, who, *rest = spec.split(":")
    if section == "m1":
        probe = Probe(rest[0])
        measure = m1_hotplumb if who == "hotplumb" else m1_tasks
        result = asyncio.run(measure(settings.nodes, probe))
    elif section == "b1":
        result = asyncio.run(b1_child(who, settings.b1_items, settings.capacity, rest[0]))
    else:
        raise SystemExit(f"unknown child {spec!r}")
    print(json.dumps(result))
    return 0


def csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parse(argv: Sequence[str] | None) -> tuple[Settings, str | None]:
    parser = argparse.ArgumentParser(
        prog="bench_runtime.py",
        description="Throughput and memory of hotplumb against its peers.",
    )
    parser.add_argument(
        "--items",
        type=int,
        help="input items for every workload (default: "
        + ", ".join(f"{w.id} {w.items:,}" for w in WORKLOADS)
        + ")",
    )
    parser.add_argument(
        "--repeat", type=int, help="timed runs per contestant (default 5; 1 if --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="few items, one repetition")
    parser.add_argument(
        "--only", type=csv, default=SECTIONS, help=f"sections to run, of {','.join(SECTIONS)}"
    )
    parser.add_argument(
        "--contestants",
        type=csv,
        default=tuple(CONTESTANTS),
        help="throughput contestants to run (default all)",
    )
    parser.add_argument("--nodes", type=int, help=f"M1's node count (default {M1_NODES:,})")
    parser.add_argument("--b1-items", type=int, help=f"B1's item count (default {B1_ITEMS:,})")
    parser.add_argument(
        "--b1-traced-items",
        type=int,
        help=f"B1's item count under tracemalloc (default {B1_TRACED_ITEMS:,})",
    )
    parser.add_argument("--capacity", type=int, default=B1_CAPACITY, help="B1's channel capacity")
    parser.add_argument(
        "--budget",
        type=float,
        default=15.0,
        help="seconds of timed runs per contestant and workload, past which it gets"
        " fewer repetitions (but at least 3)",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds allowed per run")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print only one JSON line: hotplumb's ns/hop in each throughput workload",
    )
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="time the throughput runs in this process's CPU time (time.process_time), which"
        " a shared machine's other load inflates far less than wall-clock time",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = [s for s in args.only if s not in SECTIONS]
    unknown += [c for c in args.contestants if c not in CONTESTANTS]
    if unknown:
        parser.error(f"unknown section or contestant: {', '.join(unknown)}")
    if REFERENCE not in args.contestants:
        args.contestants = (REFERENCE, *args.contestants)
    quick = args.quick
    settings = Settings(
        items=args.items,
        repeat=args.repeat or (1 if quick else 5),
        quick=quick,
        sections=args.only,
        contestants=tuple(c for c in CONTESTANTS if c in args.contestants),
        nodes=args.nodes or (M1_NODES // 10 if quick else M1_NODES),
        b1_items=args.b1_items or (B1_ITEMS // 10 if quick else B1_ITEMS),
        b1_traced_items=args.b1_traced_items
        or (B1_TRACED_ITEMS // 5 if quick else B1_TRACED_ITEMS),
        capacity=args.capacity,
        timeout=args.timeout,
        budget=args.budget,
        json=args.json,
        cpu=args.cpu,
    )
    return settings, args.child


def main(argv: Sequence[str] | None = None) -> int:
    settings, child_spec = parse(argv)
    # Imported before any child measures, so that its memory is not counted as the topology's.
    status = hotplumb_status()
    if child_spec:
        return child(child_spec, settings)
    if settings.json:
        if status.startswith("not importable"):
            raise SystemExit(f"hotplumb is {status}")
        found: dict[str, dict[str, Any]] = {}
        for workload in WORKLOADS:
            if workload.id in settings.sections:
                items = settings.items or (
                    workload.quick_items if settings.quick else workload.items
                )
                found[workload.id] = json_result(
                    workload, items, run_workload(workload, items, settings), settings.cpu
                )
        print(json_report(found))
        return 0

    peers = ", ".join(f"{p} {package_version(p)}" for p in ("streamz", "reactivex", "aiostream"))
    print("# hotplumb runtime benchmark\n")
    print("\n".join(environment()))
    print(f"- hotplumb: {status}")
    print(f"- peers: {peers}\n")
    if any(w.id in settings.sections for w in WORKLOADS):
        runs = f"{settings.repeat} timed runs"
        if settings.repeat > 3:
            runs += f" (fewer, but at least 3, if they would take over {settings.budget:.0f} s)"
        print(
            "Throughput: each contestant gets a warm-up run on a tenth of the items, then"
            f" {runs}, round-robin over the contestants, each in a fresh"
            " event loop. items/s: median input items per second. vs hotplumb: that rate"
            " over hotplumb's (above 1 is faster than hotplumb). ns/hop: median"
            f" {'CPU (time.process_time)' if settings.cpu else 'wall-clock'}"
            " time per input item per edge it crosses. spread: ± half the range of the runs,"
            " over the median.\n"
        )
    sys.stdout.flush()
    started = time.perf_counter()
    sections: dict[str, Callable[[], str]] = {"M1": lambda: run_m1(settings)}
    sections["B1"] = lambda: run_b1(settings)
    for workload in WORKLOADS:
        if workload.id not in settings.sections:
            continue
        items = settings.items or (workload.quick_items if settings.quick else workload.items)
        results = run_workload(workload, items, settings)
        print(workload_report(workload, items, results, settings))
        sys.stdout.flush()
    for sid, run_section in sections.items():
        if sid in settings.sections:
            print(run_section())
            sys.stdout.flush()
    print(f"Total time {time.perf_counter() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
