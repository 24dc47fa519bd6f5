"""Print the trace of one summary through the seed scenario, as the README shows it.

Runs ``examples/feed_rollup.py``'s scenario (seed 1) on a fake clock with
OpenTelemetry's in-memory span exporter, takes the first summary the client
alice received, and renders its trace, then the spans its rollup's span links
to (the hops of the feed events it summarises), with
:func:`hotplumb.otel.format_trace`::

    python docs/trace_seed.py
"""

from __future__ import annotations

import asyncio

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from hotplumb.examples.feed_rollup import FeedRollup
from hotplumb.otel import format_trace
from hotplumb.testing import FakeClock

SHOWN = ("hotplumb.version", "hotplumb.batch.size")


async def main() -> str:
    """Run the scenario and return the rendering."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    clock = FakeClock(epoch_offset=1_700_000_000.0)
    scenario = FeedRollup(seed=1)
    outcome = await clock.drive(scenario.run(clock, run_options={"tracer_provider": provider}))
    datum = outcome.received["alice"][0]
    assert datum.trace is not None
    spans = exporter.get_finished_spans()
    mine = [
        s for s in spans if s.context is not None and s.context.trace_id == datum.trace.trace_id
    ]
    linked = {(link.context.trace_id, link.context.span_id) for s in mine for link in s.links}
    feeds = [
        s
        for s in spans
        if s.context is not None
        and any(s.context.trace_id == t and s.context.span_id == i for t, i in linked)
    ]
    summary = datum.value.summary
    lines = [
        f"# alice's first summary: {summary.subscription}, {summary.count} events"
        f" in [{summary.start:.3f}s, {summary.end:.3f}s)",
        format_trace(mine, attributes=SHOWN),
        "",
        f"# the {len(feeds)} spans its rollup links to (one per feed batch)",
        format_trace(feeds, attributes=SHOWN),
    ]
    provider.shutdown()
    return "\n".join(lines)


if __name__ == "__main__":
    print(asyncio.run(main()))
