"""OpenTelemetry overhead: W1 and W2 with tracing off, on in each mode, and metrics on.

One run measures them all.

Usage::

    python bench/bench_otel.py               # about two minutes on 2 cores
    python bench/bench_otel.py --quick       # a smoke run in seconds
    python bench/bench_otel.py --repeat 9 --only W1

Modes (every one runs the same topology as ``bench_runtime.py``'s W1 or W2):

* ``off``: ``hp.run(graph)``, the reference.
* ``per-batch spans``: ``tracer_provider=`` an SDK ``TracerProvider`` whose
  only span processor is a ``SimpleSpanProcessor`` over an exporter that
  discards (so the cost measured is hotplumb's and the SDK's making of
  spans, not an exporter's, and no span is dropped).
* ``1% sampled``: the same, ``trace_sampling=0.01``: one datum in a hundred
  gets a span per hop.
* ``per-batch, SDK 10%`` and ``per-batch, SDK 1%``: per-batch spans with
  the SDK's head sampling, ``sampler=ParentBased(TraceIdRatioBased(r))``:
  one entering batch's tree in ten (a hundred) is recorded; the entry hop of
  every other is a span the sampler drops, and the hops after it make no
  span at all (hotplumb does not ask a parent-based sampler again below a
  span it dropped).
* ``every datum``: ``trace_sampling=1.0``, a span per datum per hop; run on a
  tenth of the items (it is that slow), compared by rate.
* ``metrics``: ``meter_provider=`` an SDK ``MeterProvider`` with a periodic
  reader collecting every 50 ms into an exporter that discards (so metric
  callbacks run from the reader's thread, as in production, while data flow).

``--breakdown`` adds modes that say where the time of the traced modes goes,
and times the SDK's spans alone:

* ``no-op tracer``: per-batch spans through a tracer provider whose spans
  cost next to nothing (a fixed context, no SDK): hotplumb's own work per
  span, in place.
* ``no-op tracer, 1%``: the same with ``trace_sampling=0.01``: hotplumb's
  share of ``1% sampled``, the split batches included.
* ``1% split, no spans``: the batches split as ``1% sampled`` splits them and
  the traced data kept apart hop after hop, but no span made: what the split
  alone costs.
* then, in a tight loop: the SDK's cost of a recorded span
  (``SimpleSpanProcessor``, an exporter that discards, hotplumb's four
  attributes), of the same with no attributes, of the same through a
  ``BatchSpanProcessor`` (its worker thread's export included), of a span
  its parent-based sampler drops, and hotplumb's own work per span (``sent``
  with the no-op tracer).

Repetitions go round-robin over the modes (after one warm-up of each), so
drift in the machine's speed hits them alike; the table gives the median
rate, the spread ``(slowest - fastest) / median``, and the ratio of each
median rate to ``off``'s. Runs are timed in the process's CPU time
(:func:`time.process_time`, every thread of it: a metric reader's included),
not wall-clock time: on a shared machine other processes' load would
otherwise swamp differences of a few percent. ``--wall`` times wall-clock.

Each run gets providers of its own, made before the timing starts and shut
down after it ends: a process makes its providers once, not once per
topology, and their making and shutting down (a meter provider's shutdown
collects and exports one last time) is a fixed cost of the SDK's of about
0.5 ms for a tracer provider and 2 ms for a meter provider here, which on
W2's 30 ms runs alone would be several percent. ``--with-providers`` times
them inside each run instead, as this benchmark first did; the fixed costs
are printed under the tables either way.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from typing import TYPE_CHECKING, Any, Final

from _harness import Measurement, environment, fmt_rate, markdown_table, time_run
from bench_runtime import WORKLOADS, hotplumb_status
from peers import Workload, hotplumb_graph

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

MODES: Final = (
    "off",
    "per-batch spans",
    "per-batch, SDK 10%",
    "per-batch, SDK 1%",
    "1% sampled",
    "every datum",
    "metrics",
)
BREAKDOWN: Final = ("no-op tracer", "no-op tracer, 1%", "1% split, no spans")
"""The modes ``--breakdown`` adds."""
SLOW: Final = {"every datum": 10}
"""Modes run on a fraction of the items: mode -> divisor."""


class _NoopSpan:
    """A span that records nothing, with one fixed, valid, sampled context."""

    __slots__ = ()

    def end(self, end_time: int | None = None) -> None:
        pass

    def get_span_context(self) -> Any:
        return _NOOP_CONTEXT[0]

    def record_exception(self, *args: Any, **kwargs: Any) -> None:
        pass

    def set_status(self, *args: Any, **kwargs: Any) -> None:
        pass


_NOOP_CONTEXT: list[Any] = []
_NOOP_SPAN: Final = _NoopSpan()


class NoopTracerProvider:
    """A tracer provider whose spans cost next to nothing: hotplumb's own cost is what is left."""

    def __init__(self) -> None:
        from opentelemetry.trace import SpanContext, TraceFlags

        if not _NOOP_CONTEXT:
            _NOOP_CONTEXT.append(SpanContext(1, 1, False, TraceFlags(TraceFlags.SAMPLED)))

    def get_tracer(self, *args: Any, **kwargs: Any) -> NoopTracerProvider:
        return self

    def start_span(self, *args: Any, **kwargs: Any) -> _NoopSpan:
        return _NOOP_SPAN

    def shutdown(self) -> None:
        pass


def _split_only() -> Callable[[], None]:
    """Make the observer split and keep apart as ``1% sampled`` does, with no span; the undo."""
    from hotplumb import otel
    from hotplumb._datum import Trace

    marked = Trace("traced", 0.0, 0.0, None, 1, 1)  # a "traced" batch is never coalesced

    class SplitOnly(otel.OtelObserver):
        def _span(self, hop: Any, batch: Any, *args: Any, **kwargs: Any) -> None:
            batch.trace = marked

    real = otel.OtelObserver
    otel.OtelObserver = SplitOnly  # type: ignore[misc]

    def undo() -> None:
        otel.OtelObserver = real  # type: ignore[misc]

    return undo


def providers(mode: str) -> tuple[dict[str, Any], Callable[[], None]]:
    """The ``hp.run`` options of ``mode``, and what shuts its providers down."""
    if mode == "off":
        return {}, lambda: None
    if mode in BREAKDOWN:
        noop = NoopTracerProvider()
        if mode == "no-op tracer":
            return {"tracer_provider": noop}, noop.shutdown
        undo = _split_only() if mode == "1% split, no spans" else noop.shutdown
        return {"tracer_provider": noop, "trace_sampling": 0.01}, undo
    if mode == "metrics":
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import (
            MetricExporter,
            MetricExportResult,
            PeriodicExportingMetricReader,
        )

        class Discard(MetricExporter):
            def export(self, metrics_data: Any, timeout_millis: float = 0, **kw: Any) -> Any:
                return MetricExportResult.SUCCESS

            def force_flush(self, timeout_millis: float = 0) -> bool:
                return True

            def shutdown(self, timeout_millis: float = 0, **kw: Any) -> None:
                pass

        reader = PeriodicExportingMetricReader(Discard(), export_interval_millis=50)
        meters = MeterProvider(metric_readers=[reader])
        return {"meter_provider": meters}, meters.shutdown

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Nowhere(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    if mode.startswith("per-batch, SDK "):
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        ratio = float(mode.removeprefix("per-batch, SDK ").removesuffix("%")) / 100
        tracers = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)))
    else:
        tracers = TracerProvider()
    tracers.add_span_processor(SimpleSpanProcessor(Nowhere()))
    options: dict[str, Any] = {"tracer_provider": tracers}
    if mode == "1% sampled":
        options["trace_sampling"] = 0.01
    elif mode == "every datum":
        options["trace_sampling"] = 1.0
    return options, tracers.shutdown


async def run_mode(workload: Workload, items: int, mode: str, with_providers: bool = True) -> int:
    """Run ``workload`` on ``items`` in ``mode``; its providers made and shut down here if asked."""
    import hotplumb as hp

    count = 0

    def counting_sink(_datum: object) -> None:
        nonlocal count
        count += 1

    graph = hotplumb_graph(workload, counting_sink)
    options, shutdown = providers(mode) if with_providers else PROVIDED[-1]
    try:
        async with hp.run(graph, **options) as topo:
            await topo.inject_many("in", range(items))
            await topo.drain()
    finally:
        if with_providers:
            shutdown()
    return count


PROVIDED: list[tuple[dict[str, Any], Callable[[], None]]] = []
"""The providers of the run under way, when they are made outside its timing."""


def timed(
    workload: Workload, items: int, mode: str, wall: bool, with_providers: bool = False
) -> float:
    """Seconds of one run in a fresh event loop (CPU time unless ``wall``).

    Its providers are made before the timing starts and shut down after it
    ends, unless ``with_providers``.
    """
    if not with_providers:
        PROVIDED.append(providers(mode))
    try:
        if wall:
            return time_run(
                lambda: run_mode(workload, items, mode, with_providers),
                expected=workload.expected(items),
            )
        gc.collect()
        clock = time.process_time
        start = clock()
        got = asyncio.run(run_mode(workload, items, mode, with_providers))
        seconds = clock() - start
    finally:
        if not with_providers:
            PROVIDED.pop()[1]()
    if got != workload.expected(items):
        raise RuntimeError(f"{mode}: the sink saw {got} items, not {workload.expected(items)}")
    return seconds


def provider_costs(workload: Workload, repeat: int = 15) -> dict[str, float]:
    """Median CPU seconds of making a mode's providers and of shutting them down.

    Timed around a run of ten items (not timed), so that a meter provider's
    shutdown collects the topology's instruments as it does after a real run.
    """
    costs: dict[str, float] = {}
    for mode in ("per-batch spans", "metrics"):
        seconds: list[float] = []
        for _ in range(repeat + 1):
            start = time.process_time()
            PROVIDED.append(providers(mode))
            made = time.process_time() - start
            try:
                asyncio.run(run_mode(workload, 10, mode, with_providers=False))
            finally:
                start = time.process_time()
                PROVIDED.pop()[1]()
                seconds.append(made + time.process_time() - start)
        costs[mode] = sorted(seconds[1:])[repeat // 2]
    return costs


def span_costs(spans: int = 20_000, repeat: int = 9) -> dict[str, float]:
    """CPU seconds per span, median of ``repeat`` tight loops on one thread (see the docstring)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    from opentelemetry.trace import SpanKind

    from hotplumb import otel
    from hotplumb._clock import SystemClock
    from hotplumb._datum import Batch, Trace

    class Nowhere(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    recorded = TracerProvider()
    recorded.add_span_processor(SimpleSpanProcessor(Nowhere()))
    batching = TracerProvider()
    batching.add_span_processor(BatchSpanProcessor(Nowhere()))
    dropping = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.01)))
    dropping.add_span_processor(SimpleSpanProcessor(Nowhere()))
    attributes = {
        "hotplumb.node": "s1",
        "hotplumb.version": 0,
        "hotplumb.generation": 0,
        "hotplumb.batch.size": 1024,
    }

    def sdk(provider: Any, sampled: bool, attributes: Any = attributes) -> Callable[[], None]:
        tracer = provider.get_tracer("hotplumb")
        context = otel._parent(Trace("s0", 0.0, 0.0, None, 1, 1, sampled))

        def loop() -> None:
            for _ in range(spans):
                span = tracer.start_span("s1", context, SpanKind.INTERNAL, attributes, None, 1)
                span.end(2)
                span.get_span_context()
            provider.force_flush()

        return loop

    class Topology:
        clock = SystemClock()
        trace = False
        generation = 0

    class Hop:
        key = "s1"
        version = 0

    observer = otel.OtelObserver(Topology(), tracer_provider=NoopTracerProvider())  # type: ignore[arg-type]
    values = list(range(1024))
    inputs = Batch(values, values, None, None, Trace("s0", 0.0, 0.0, None, 1, 1))

    def hotplumb() -> None:
        hop = Hop()
        for _ in range(spans):
            observer.sent(hop, Batch(values, values, None), inputs, 1.0)

    loops = {
        "a recorded span (SDK)": sdk(recorded, True),
        "the same, no attributes": sdk(recorded, True, None),
        "the same, BatchSpanProcessor": sdk(batching, True),
        "a span the sampler drops (SDK)": sdk(dropping, False),
        "hotplumb's own work per span": hotplumb,
    }
    seconds: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(repeat):
        for name, loop in loops.items():
            start = time.process_time()
            loop()
            seconds[name].append((time.process_time() - start) / spans)
    for provider in (recorded, batching, dropping):
        provider.shutdown()
    return {name: sorted(times)[len(times) // 2] for name, times in seconds.items()}


def measure(
    workload: Workload,
    items: int,
    repeat: int,
    wall: bool = False,
    with_providers: bool = False,
    modes: Sequence[str] = MODES,
) -> dict[str, tuple[Measurement, int]]:
    sizes = {mode: max(1, items // SLOW.get(mode, 1)) for mode in modes}
    results = {mode: Measurement(()) for mode in modes}
    for mode in modes:  # warm-up
        timed(workload, max(1, sizes[mode] // 10), mode, wall, with_providers)
    for rep in range(repeat):
        for mode in modes:
            n = sizes[mode]
            if sys.stderr.isatty():
                sys.stderr.write(f"\r\x1b[K{workload.id} {mode} {rep + 1}/{repeat}")
            seconds = timed(workload, n, mode, wall, with_providers)
            results[mode] = results[mode].added(seconds)
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[K")
    return {mode: (results[mode], sizes[mode]) for mode in modes}


def report(workload: Workload, results: dict[str, tuple[Measurement, int]]) -> str:
    off, off_items = results["off"]
    off_rate = off.rate(off_items)
    rows: list[Sequence[str]] = []
    for mode in results:
        measured, n = results[mode]
        rate = measured.rate(n)
        rows.append(
            [
                mode,
                f"{n:,}",
                fmt_rate(rate),
                f"{measured.spread:.0%}",
                f"{rate / off_rate:.2f}",
            ]
        )
    table = markdown_table(["mode", "items", "items/s (median)", "spread", "rate / off"], rows)
    return f"### {workload.id} {workload.name}\n\n{workload.description}.\n\n{table}\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a smoke run on few items")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per mode (default 5)")
    parser.add_argument("--only", default="W1,W2", help="workloads, e.g. W1 (default W1,W2)")
    parser.add_argument("--items", type=int, default=None, help="input items per run")
    parser.add_argument("--wall", action="store_true", help="time wall-clock, not CPU time")
    parser.add_argument(
        "--with-providers",
        action="store_true",
        help="time the making and shutting down of each run's providers too",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="add the modes that say where the time goes, and time the SDK's spans alone",
    )
    args = parser.parse_args(argv)
    modes = (*MODES, *BREAKDOWN) if args.breakdown else MODES
    status = hotplumb_status()
    wanted = [w for w in WORKLOADS if w.id in args.only.split(",")]
    print("# hotplumb with OpenTelemetry: overhead\n")
    print("\n".join(environment()))
    print(f"- hotplumb: {status}")
    timing = "inside" if args.with_providers else "outside"
    print(f"- providers made and shut down {timing} each run's timing\n")
    for workload in wanted:
        items = args.items or (workload.quick_items if args.quick else workload.items // 2)
        repeat = 1 if args.quick else args.repeat
        measured = measure(workload, items, repeat, args.wall, args.with_providers, modes)
        print(report(workload, measured))
    costs = provider_costs(wanted[0], 3 if args.quick else 15) if wanted else {}
    print(
        f"Making and shutting down the providers, around a {wanted[0].id if wanted else ''} run "
        "of 10 items (CPU, median): "
        + ", ".join(f"{mode} {seconds * 1e3:.2f} ms" for mode, seconds in costs.items())
    )
    if args.breakdown:
        each = span_costs(2_000 if args.quick else 20_000, 3 if args.quick else 9)
        print(
            "\nPer span, in a tight loop (CPU, median): "
            + ", ".join(f"{name} {seconds * 1e6:.2f} us" for name, seconds in each.items())
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
