"""hotplumb.otel: spans of hops, failures, rollups and changes; sampling; metrics; OTLP; /metrics.

Spans are taken with the SDK's in-memory exporter on a FakeClock (whose
``epoch_offset`` makes every timestamp exact); metrics with the in-memory
metric reader. The OTLP test runs a small OTLP/HTTP receiver on 127.0.0.1
that decodes what the real exporter posts.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import operator
import subprocess
import sys
import textwrap
import threading
from typing import TYPE_CHECKING, Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel tests need the SDK (the dev extra)")

from opentelemetry import trace as otel_trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import StatusCode

import hotplumb as hp
from hotplumb.otel import OtelObserver, _Readings, epoch_offset, format_trace
from hotplumb.testing import FakeClock

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

EPOCH = 1_700_000_000.0
EPOCH_NS = 1_700_000_000 * 10**9


class Spans:
    """A tracer provider writing to memory, and questions about what it holds."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    @property
    def all(self) -> tuple[ReadableSpan, ...]:
        return tuple(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.all if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, (name, [s.name for s in self.all])
        return found[0]


@pytest.fixture
def spans() -> Iterator[Spans]:
    recorded = Spans()
    yield recorded
    recorded.provider.shutdown()


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def ident(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def trace_of(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.trace_id)


def attribute(span: ReadableSpan, name: str) -> Any:
    assert span.attributes is not None
    return span.attributes[name]


def chain(*stages: str) -> hp.Graph:
    nodes: dict[str, hp.Node] = {"in": hp.Node()}
    previous = "in"
    for name in stages:
        nodes[name] = hp.Node(lambda x: x + 1, inputs=[previous])
        previous = name
    nodes["out"] = hp.sink(lambda d: None, inputs=[previous])
    return hp.Graph(nodes)


# -- off ------------------------------------------------------------------------------


def summed_every_ten_seconds(summaries: list[hp.Datum]) -> hp.Graph:
    """``readings`` summed by a rollup every 10 s into ``total``, read by ``out``."""
    return hp.Graph(
        {
            "readings": hp.Node(),
            "tick": hp.timer(10.0),
            "total": hp.rollup(["readings"], "tick", fold=lambda w: sum(w.values)),
            "out": hp.sink(summaries.append, inputs=["total"]),
        }
    )


def test_without_a_provider_nothing_of_opentelemetry_is_imported() -> None:
    script = textwrap.dedent(
        """
        import asyncio, sys
        import hotplumb as hp

        async def main():
            got = []
            graph = hp.Graph({"n": hp.Node(), "out": hp.sink(got.append, inputs=["n"])})
            async with hp.run(graph, trace=True) as topo:
                await topo.inject_many("n", range(10))
            assert len(got) == 10
            hp.Graph({}).diff(graph)

        asyncio.run(main())
        loaded = sorted(m for m in sys.modules if m.startswith(("opentelemetry", "hotplumb.otel")))
        print(loaded)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_bad_options_are_refused_before_anything_runs(spans: Spans) -> None:
    graph = chain("a")
    with pytest.raises(ValueError, match="trace_sampling needs a tracer_provider"):
        hp.run(graph, trace_sampling=0.5)
    for bad in (1.5, -0.1, True, "all", float("nan")):
        with pytest.raises(ValueError, match="trace_sampling must be a ratio"):
            hp.run(graph, tracer_provider=spans.provider, trace_sampling=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="tracer_provider must be an OpenTelemetry"):
        hp.run(graph, tracer_provider=object())
    with pytest.raises(TypeError, match="meter_provider must be an OpenTelemetry"):
        hp.run(graph, meter_provider=spans.provider)


# -- per-batch spans ------------------------------------------------------------------


async def test_a_linear_chain_is_one_trace_of_one_span_per_hop(spans: Spans) -> None:
    clock = FakeClock(10.0, epoch_offset=EPOCH)
    got: list[hp.Datum] = []
    graph = chain("a", "b").add_node("out", hp.sink(got.append, inputs=["b"]))
    async with hp.run(graph, clock=clock, tracer_provider=spans.provider) as topo:
        await topo.inject_many("in", [1, 2, 3])
        await topo.drain()
    by_name = {s.name: s for s in spans.all}
    assert sorted(by_name) == ["a", "b", "in", "out"]
    assert len(spans.all) == 4
    assert parent_of(by_name["in"]) is None
    assert parent_of(by_name["a"]) == ident(by_name["in"])
    assert parent_of(by_name["b"]) == ident(by_name["a"])
    assert parent_of(by_name["out"]) == ident(by_name["b"])
    assert len({trace_of(s) for s in spans.all}) == 1
    b = by_name["b"]
    assert b.attributes is not None
    assert dict(b.attributes) == {
        "hotplumb.node": "b",
        "hotplumb.version": 0,
        "hotplumb.generation": 0,
        "hotplumb.batch.size": 3,
    }
    assert b.start_time == b.end_time == EPOCH_NS + 10 * 10**9
    assert b.status.status_code is StatusCode.UNSET
    # The context travels with the data: the sink's data carry the span of b.
    assert [d.value for d in got] == [3, 4, 5]
    trace = got[0].trace
    assert trace is not None
    assert (trace.trace_id, trace.span_id) == (trace_of(b), ident(b))
    assert trace.traceparent == f"00-{trace_of(b):032x}-{ident(b):016x}-01"


class Decides(Sampler):
    """A sampler that records the spans :meth:`keeps` says, with their attributes."""

    def keeps(self, parent_context: Any, name: str, attributes: Any) -> bool:
        raise NotImplementedError

    def should_sample(
        self,
        parent_context: Any,
        trace_id: int,
        name: str,
        kind: Any = None,
        attributes: Any = None,
        links: Any = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        if self.keeps(parent_context, name, attributes or {}):
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)
        return SamplingResult(Decision.DROP)

    def get_description(self) -> str:
        return type(self).__name__


class DropPairs(Decides):
    """Records the spans of batches of one datum, drops those of more (for a parent-based root)."""

    def keeps(self, parent_context: Any, name: str, attributes: Any) -> bool:
        return bool(attributes.get("hotplumb.batch.size") == 1)


async def test_the_hops_after_a_span_the_sampler_dropped_are_not_recorded() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(DropPairs()))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    got: list[hp.Datum] = []
    graph = chain("a", "b").add_node("out", hp.sink(got.append, inputs=["b"]))
    async with hp.run(graph, clock=FakeClock(), tracer_provider=provider) as topo:
        await topo.inject_many("in", [1, 2])  # the entry's span is dropped: none after it
        await topo.drain()
        await topo.inject("in", 3)  # recorded, and every hop after it
        await topo.drain()
    provider.shutdown()
    recorded = exporter.get_finished_spans()
    assert sorted(s.name for s in recorded) == ["a", "b", "in", "out"]
    assert len({trace_of(s) for s in recorded}) == 1
    dropped, kept = got[0].trace, got[2].trace
    assert dropped is not None
    assert kept is not None
    assert dropped.span_id
    assert not dropped.sampled
    assert dropped.traceparent == f"00-{dropped.trace_id:032x}-{dropped.span_id:016x}-00"
    assert kept.sampled
    assert kept.traceparent == f"00-{kept.trace_id:032x}-{kept.span_id:016x}-01"


class CountedIds(RandomIdGenerator):
    """The SDK's ids, counting the spans they are made for."""

    def __init__(self) -> None:
        self.spans = 0

    def generate_span_id(self) -> int:
        self.spans += 1
        return super().generate_span_id()


class Asked(Sampler):
    """A sampler that notes the spans it is asked about, and leaves the deciding to another."""

    def __init__(self, decides: Sampler) -> None:
        self.decides = decides
        self.asked: list[str] = []

    def should_sample(
        self,
        parent_context: Any,
        trace_id: int,
        name: str,
        kind: Any = None,
        attributes: Any = None,
        links: Any = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        self.asked.append(name)
        return self.decides.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"Asked({self.decides.get_description()})"


class RootsDropped(Decides):
    """Drops every span without a parent and records every other: it ignores its parent's choice."""

    def keeps(self, parent_context: Any, name: str, attributes: Any) -> bool:
        return bool(otel_trace.get_current_span(parent_context).get_span_context().is_valid)


async def test_a_parent_based_sampler_is_not_asked_again_below_a_span_it_dropped() -> None:
    exporter = InMemorySpanExporter()
    ids = CountedIds()  # the SDK makes an id for every span it starts, recorded or not
    provider = TracerProvider(sampler=ParentBased(DropPairs()), id_generator=ids)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    got: list[hp.Datum] = []
    graph = chain("a", "b").add_node("out", hp.sink(got.append, inputs=["b"]))
    async with hp.run(graph, clock=FakeClock(), tracer_provider=provider) as topo:
        await topo.inject_many("in", [1, 2])  # dropped at the entry: no span started after it
        await topo.drain()
        assert ids.spans == 1
        await topo.inject("in", 3)  # recorded, so every hop makes its span
        await topo.drain()
        assert ids.spans == 5
    provider.shutdown()
    assert sorted(s.name for s in exporter.get_finished_spans()) == ["a", "b", "in", "out"]
    dropped = got[0].trace
    assert dropped is not None
    assert not dropped.sampled
    assert [hop.key for hop in dropped.hops()] == ["b"]  # OpenTelemetry alone keeps one hop
    assert dropped.traceparent is not None
    assert dropped.traceparent.endswith("-00")


class ByName(Decides):
    """Records the spans of the nodes named, drops the rest."""

    def __init__(self, *names: str) -> None:
        self.names = names

    def keeps(self, parent_context: Any, name: str, attributes: Any) -> bool:
        return name in self.names


async def test_a_parent_based_sampler_deciding_below_a_dropped_span_is_asked_there() -> None:
    # Its sampler for the children of a dropped span keeps "out": no pruning may lose it.
    exporter = InMemorySpanExporter()
    sampler = Asked(ParentBased(ByName("a"), local_parent_not_sampled=ByName("out")))
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with hp.run(chain("a"), clock=FakeClock(), tracer_provider=provider) as topo:
        await topo.inject("in", 1)
        await topo.drain()
    provider.shutdown()
    assert sampler.asked == ["in", "a", "out"]
    assert [s.name for s in exporter.get_finished_spans()] == ["out"]


async def test_a_sampler_that_ignores_its_parent_decides_on_every_hop() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=RootsDropped())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with hp.run(chain("a", "b"), clock=FakeClock(), tracer_provider=provider) as topo:
        await topo.inject("in", 1)  # the entry's span is dropped; its children are asked, and kept
        await topo.drain()
    provider.shutdown()
    recorded = exporter.get_finished_spans()
    assert sorted(s.name for s in recorded) == ["a", "b", "out"]
    assert len({trace_of(s) for s in recorded}) == 1


async def test_readable_keys_name_the_spans_and_every_hop_is_timed(spans: Spans) -> None:
    clock = FakeClock(0.0, epoch_offset=EPOCH)

    async def slow(x: int) -> int:
        await clock.sleep_until(clock.now() + 0.5)
        return x

    stage = hp.key(kind="stage", n=1)
    graph = hp.Graph(
        {
            "in": hp.Node(),
            stage: hp.Node(slow, inputs=["in"]),
            "out": hp.sink(lambda d: None, inputs=[stage]),
        }
    )
    async with hp.run(graph, clock=clock, tracer_provider=spans.provider) as topo:
        await topo.inject("in", 1)
        await clock.advance(0.5)
        await topo.drain()
    slow_span = spans.one(hp.format_key(stage))
    assert slow_span.end_time is not None
    assert slow_span.start_time == EPOCH_NS
    assert slow_span.end_time - slow_span.start_time == 500_000_000
    sink = spans.one("out")
    assert sink.start_time == sink.end_time == EPOCH_NS + 500_000_000
    assert parent_of(sink) == ident(slow_span)


async def test_a_diamond_is_one_trace_and_the_join_continues_each_branch(spans: Spans) -> None:
    graph = hp.Graph(
        {
            "in": hp.Node(),
            "left": hp.Node(lambda x: x, inputs=["in"]),
            "right": hp.Node(lambda x: -x, inputs=["in"]),
            "join": hp.Node(inputs=["left", "right"]),
            "out": hp.sink(lambda d: None, inputs=["join"]),
        }
    )
    async with hp.run(graph, clock=FakeClock(), tracer_provider=spans.provider) as topo:
        await topo.inject("in", 1)
        await topo.drain()
    entry, left, right = spans.one("in"), spans.one("left"), spans.one("right")
    assert parent_of(left) == parent_of(right) == ident(entry)
    joins = spans.named("join")
    assert sorted(parent_of(j) or 0 for j in joins) == sorted([ident(left), ident(right)])
    outs = spans.named("out")
    assert sorted(parent_of(o) or 0 for o in outs) == sorted(ident(j) for j in joins)
    assert len({trace_of(s) for s in spans.all}) == 1
    assert len(spans.all) == 7


async def test_a_failed_hop_is_an_error_span_with_the_exception_event(spans: Spans) -> None:
    clock = FakeClock(2.0, epoch_offset=EPOCH)
    graph = hp.Graph(
        {
            "in": hp.Node(),
            "invert": hp.Node(lambda x: 1 / x, inputs=["in"]),
            "out": hp.sink(lambda d: None, inputs=["invert"]),
        }
    )
    async with hp.run(graph, clock=clock, tracer_provider=spans.provider) as topo:
        await topo.inject_many("in", [1, 0, 2])
        await topo.drain()
    entry = spans.one("in")
    inverts = spans.named("invert")
    failed = [s for s in inverts if s.status.status_code is StatusCode.ERROR]
    fine = [s for s in inverts if s.status.status_code is not StatusCode.ERROR]
    assert len(failed) == len(fine) == 1
    span = failed[0]
    assert parent_of(span) == ident(entry)
    assert span.status.description == "ZeroDivisionError: division by zero"
    assert span.attributes is not None
    assert span.attributes["hotplumb.origin"] == "0"
    assert span.attributes["hotplumb.batch.size"] == 1
    assert [e.name for e in span.events] == ["exception"]
    event = span.events[0]
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "ZeroDivisionError"
    assert "1 / x" in str(event.attributes["exception.stacktrace"])
    assert event.timestamp == span.end_time == EPOCH_NS + 2 * 10**9
    assert fine[0].attributes is not None
    assert fine[0].attributes["hotplumb.batch.size"] == 2
    assert spans.one("out").status.status_code is StatusCode.UNSET
    assert topo.errors.total == 1


async def test_a_rollup_summary_links_to_the_spans_of_its_parents(spans: Spans) -> None:
    clock = FakeClock(0.0)
    summaries: list[hp.Datum] = []
    graph = summed_every_ten_seconds(summaries)
    async with hp.run(graph, clock=clock, tracer_provider=spans.provider) as topo:
        await topo.inject("readings", 1)
        await topo.drain()
        await topo.inject("readings", 2)
        await topo.drain()
        await clock.advance(10.0)
        await topo.drain()
    assert [d.value for d in summaries] == [3]
    readings = spans.named("readings")
    assert len(readings) == 2
    totals = [s for s in spans.named("total") if s.links]
    assert len(totals) == 1
    linked = {(link.context.trace_id, link.context.span_id) for link in totals[0].links}
    assert linked == {(trace_of(r), ident(r)) for r in readings}
    # The summary's span continues the tick's trace; the hops after it link nothing.
    assert parent_of(totals[0]) == ident(spans.one("tick"))
    (delivered,) = (s for s in spans.named("out") if parent_of(s) == ident(totals[0]))
    assert not delivered.links


async def test_a_link_carries_the_sampled_flag_of_the_span_it_links_to() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(DropPairs()))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    clock = FakeClock(0.0)
    summaries: list[hp.Datum] = []
    graph = summed_every_ten_seconds(summaries)
    async with hp.run(graph, clock=clock, tracer_provider=provider) as topo:
        await topo.inject_many("readings", [1, 2])  # dropped: a pair
        await topo.drain()
        await topo.inject("readings", 3)  # recorded
        await topo.drain()
        await clock.advance(10.0)
        await topo.drain()
    provider.shutdown()
    (summary,) = summaries
    flags = {}
    for parent in summary.parents:
        assert parent.trace is not None
        flags[parent.trace.trace_id, parent.trace.span_id] = parent.trace.sampled
    assert sorted(flags.values()) == [False, True]
    (total,) = (s for s in exporter.get_finished_spans() if s.name == "total" and s.links)
    linked = {
        (link.context.trace_id, link.context.span_id): link.context.trace_flags.sampled
        for link in total.links
    }
    assert linked == flags


# -- per-datum spans and sampling -----------------------------------------------------


async def run_sampled(spans: Spans, ratio: float, values: Sequence[int]) -> list[hp.Datum]:
    got: list[hp.Datum] = []
    graph = chain("a").add_node("out", hp.sink(got.append, inputs=["a"]))
    async with hp.run(
        graph, clock=FakeClock(), tracer_provider=spans.provider, trace_sampling=ratio
    ) as topo:
        await topo.inject_many("in", values)
        await topo.drain()
    return got


async def test_sampling_traces_that_share_of_the_data_by_sequence(spans: Spans) -> None:
    got = await run_sampled(spans, 0.25, range(8))
    assert [d.value for d in got] == list(range(1, 9))  # pieces keep their order
    entries = spans.named("in")
    origins = sorted(str(attribute(s, "hotplumb.origin")) for s in entries)
    assert origins == ["0", "1"]  # the first of the batch: 8 * 0.25 of them
    assert all(s.attributes and s.attributes["hotplumb.batch.size"] == 1 for s in entries)
    for name in ("a", "out"):
        assert len(spans.named(name)) == 2
    traced = [d for d in got if d.trace is not None and d.trace.span_id]
    assert [d.origin for d in traced] == [0, 1]
    # Each traced datum is a trace of its own: in -> a -> out.
    for datum in traced:
        assert datum.trace is not None
        mine = {s.name: s for s in spans.all if trace_of(s) == datum.trace.trace_id}
        assert sorted(mine) == ["a", "in", "out"]
        assert mine["in"].parent is None
        assert parent_of(mine["a"]) == ident(mine["in"])
        assert parent_of(mine["out"]) == ident(mine["a"]) == datum.trace.span_id


async def test_the_share_is_exact_over_the_batches(spans: Spans) -> None:
    got: list[hp.Datum] = []
    graph = chain().add_node("out", hp.sink(got.append, inputs=["in"]))
    async with hp.run(
        graph, clock=FakeClock(), tracer_provider=spans.provider, trace_sampling=0.1
    ) as topo:
        for start in range(0, 50, 5):  # ten batches of five: every other one has a traced datum
            await topo.inject_many("in", range(start, start + 5))
            await topo.drain()
    origins = sorted(int(attribute(s, "hotplumb.origin")) for s in spans.named("in"))
    assert origins == [5, 15, 25, 35, 45]
    assert [d.value for d in got] == list(range(50))


async def test_a_ratio_of_one_traces_every_datum_and_zero_none(spans: Spans) -> None:
    await run_sampled(spans, 1.0, range(5))
    assert len(spans.named("in")) == len(spans.named("out")) == 5
    spans.exporter.clear()
    await run_sampled(spans, 0.0, range(5))
    assert spans.all == ()


async def test_failures_are_traced_even_when_the_datum_is_not_sampled(spans: Spans) -> None:
    graph = hp.Graph(
        {
            "in": hp.Node(),
            "invert": hp.Node(lambda x: 1 / x, inputs=["in"]),
            "out": hp.sink(lambda d: None, inputs=["invert"]),
        }
    )
    async with hp.run(
        graph, clock=FakeClock(), tracer_provider=spans.provider, trace_sampling=0.0
    ) as topo:
        await topo.inject_many("in", [1, 0, 2])
        await topo.drain()
    (span,) = spans.all
    assert span.name == "invert"
    assert span.status.status_code is StatusCode.ERROR
    assert span.parent is None


async def test_a_failure_after_a_dropped_hop_is_recorded_as_a_root_linked_to_it() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(DropPairs()))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    got: list[hp.Datum] = []
    graph = hp.Graph(
        {
            "in": hp.Node(),
            "invert": hp.Node(lambda x: 1 / x, inputs=["in"]),
            "out": hp.sink(got.append, inputs=["invert"]),
        }
    )
    async with hp.run(graph, clock=FakeClock(), tracer_provider=provider, trace=True) as topo:
        await topo.inject_many("in", [1, 0])  # the entry's span is dropped: a pair
        await topo.drain()
    provider.shutdown()
    (span,) = exporter.get_finished_spans()
    assert span.name == "invert"
    assert span.status.status_code is StatusCode.ERROR
    # Not a child of the dropped span, which no backend has: a root, linked to it as it is.
    assert span.parent is None
    (delivered,) = got
    assert delivered.trace is not None
    entry = delivered.trace.previous
    assert entry is not None
    assert entry.key == "in"
    assert not entry.sampled
    (link,) = span.links
    assert (link.context.trace_id, link.context.span_id) == (entry.trace_id, entry.span_id)
    assert not link.context.trace_flags.sampled
    assert trace_of(span) != entry.trace_id


# -- changes --------------------------------------------------------------------------


async def test_every_change_is_a_span_with_its_sizes(spans: Spans) -> None:
    graph = chain("a")
    async with hp.run(
        graph, clock=FakeClock(3.0, epoch_offset=EPOCH), tracer_provider=spans.provider
    ) as topo:
        report = await topo.apply(graph.add_node("more", hp.sink(lambda d: None, inputs=["a"])))
        await topo.update(lambda g: g.remove_node("more"))
    changes = spans.named("hotplumb.apply")
    assert len(changes) == 2
    first, second = sorted(changes, key=lambda s: int(attribute(s, "hotplumb.generation")))
    assert first.attributes is not None
    assert first.attributes["hotplumb.change.kind"] == "apply"
    assert first.attributes["hotplumb.generation"] == report.generation == 1
    assert first.attributes["hotplumb.change.added"] == 1
    assert first.attributes["hotplumb.change.removed"] == 0
    assert first.attributes["hotplumb.change.visited"] == report.visited
    assert first.attributes["hotplumb.change.region"] == report.visited
    assert first.attributes["hotplumb.change.switch_seconds"] == report.seconds
    assert first.start_time == EPOCH_NS + 3 * 10**9
    assert first.parent is None
    assert second.attributes is not None
    assert second.attributes["hotplumb.change.kind"] == "update"
    assert second.attributes["hotplumb.change.removed"] == 1


async def test_a_failed_change_is_an_error_span(spans: Spans) -> None:
    def broken_state() -> Any:
        raise RuntimeError("no state today")

    graph = chain("a")
    async with hp.run(graph, clock=FakeClock(), tracer_provider=spans.provider) as topo:
        with pytest.raises(hp.ApplyError):
            await topo.apply(
                graph.add_node("more", hp.sink(lambda d: None, inputs=["a"], state=broken_state))
            )
    span = spans.one("hotplumb.apply")
    assert span.status.status_code is StatusCode.ERROR
    assert "no state today" in (span.status.description or "")
    assert [e.name for e in span.events] == ["exception"]


async def test_readable_keys_are_kept_only_for_the_nodes_that_run(
    spans: Spans, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[OtelObserver] = []

    class Kept(OtelObserver):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr("hotplumb.otel.OtelObserver", Kept)
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    async with hp.run(
        chain("a"), clock=FakeClock(), tracer_provider=spans.provider, meter_provider=meters
    ) as topo:
        (observer,) = made
        for n in range(40):  # a service whose readers come and go, and whose stage changes
            extra = hp.key(reader=n)

            def more(graph: hp.Graph, n: int = n, extra: hp.Key = extra) -> hp.Graph:
                stage = hp.Node(functools.partial(operator.add, n), inputs=["in"])
                return graph.add_node("a", stage).add_node(
                    extra, hp.sink(lambda d: None, inputs=["a"])
                )

            def fewer(graph: hp.Graph, extra: hp.Key = extra) -> hp.Graph:
                return graph.remove_node(extra)

            await topo.update(more)
            await topo.inject("in", n)
            await topo.drain()
            assert hp.format_key(extra) in points(reader)["hotplumb.node.received"]
            await topo.update(fewer)
        points(reader)
        running = set(topo.statistics())
        assert set(observer._attributes) <= running
        assert set(observer._labels) <= running
        assert len(spans.named(hp.format_key(hp.key(reader=39)))) == 1
    meters.shutdown()


# -- metrics --------------------------------------------------------------------------


def points(reader: InMemoryMetricReader) -> dict[str, dict[str, float]]:
    """Metric name -> readable node key (or "") -> value (a histogram: its count)."""
    data = reader.get_metrics_data()
    found: dict[str, dict[str, float]] = {}
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    node = str((point.attributes or {}).get("hotplumb.node", ""))
                    value = getattr(point, "value", None)
                    if value is None:
                        value = point.count  # type: ignore[union-attr]
                    found.setdefault(metric.name, {})[node] = value
    return found


async def test_metrics_read_the_statistics_of_every_node() -> None:
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    graph = hp.Graph(
        {
            "in": hp.Node(),
            "odd": hp.Node(lambda x: x if x % 2 else hp.SKIP, inputs=["in"]),
            "invert": hp.Node(lambda x: 1 / (x - 3), inputs=["odd"]),
            "out": hp.sink(lambda d: None, inputs=["invert"]),
        }
    )
    async with hp.run(graph, clock=FakeClock(), meter_provider=meters) as topo:
        await topo.inject_many("in", range(10))
        await topo.drain()
        await topo.apply(graph.add_node("more", hp.sink(lambda d: None, inputs=["in"])))
        statistics = topo.statistics()
        found = points(reader)
        # A reader in another thread waits for the event loop.
        in_thread = await asyncio.to_thread(points, reader)
    for field in ("received", "emitted", "filtered", "failed", "restarts"):
        expected = {hp.format_key(k): getattr(s, field) for k, s in statistics.items()}
        assert found[f"hotplumb.node.{field}"] == expected, field
        assert in_thread[f"hotplumb.node.{field}"] == expected, field
    assert found["hotplumb.node.received"]["in"] == 10
    assert found["hotplumb.node.filtered"]["odd"] == 5
    assert found["hotplumb.node.failed"]["invert"] == 1
    assert found["hotplumb.node.input.capacity"]["out"] == topo.capacity
    assert found["hotplumb.node.input.depth"]["out"] == 0
    assert found["hotplumb.dead_letters"] == {"": 1}
    assert found["hotplumb.nodes.running"] == {"": 5}
    assert found["hotplumb.subscribers"] == {"": 0}
    assert found["hotplumb.change.duration"] == {"": 1}
    # Once the topology has stopped, its last readings stay.
    assert points(reader)["hotplumb.node.received"]["in"] == 10
    meters.shutdown()


async def test_metrics_alone_leave_the_batches_unobserved(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []

    def sent(self: OtelObserver, hop: Any, batch: Any, inputs: Any, started: float) -> Any:
        seen.append(batch)
        return (batch,)

    monkeypatch.setattr(OtelObserver, "sent", sent)
    got: list[hp.Datum] = []
    graph = chain("a").add_node("out", hp.sink(got.append, inputs=["a"]))
    meters = MeterProvider(metric_readers=[InMemoryMetricReader()])
    async with hp.run(graph, clock=FakeClock(), meter_provider=meters, trace=True) as topo:
        await topo.inject_many("in", [1, 2])
        await topo.drain()
    meters.shutdown()
    assert seen == []
    assert [d.value for d in got] == [2, 3]
    trace = got[0].trace  # trace=True still times every hop
    assert trace is not None
    assert [t.key for t in trace.hops()] == ["in", "a"]
    assert trace.span_id == 0
    spans = Spans()
    async with hp.run(graph, clock=FakeClock(), tracer_provider=spans.provider) as topo:
        await topo.inject("in", 1)
        await topo.drain()
    spans.provider.shutdown()
    assert len(seen) == 3  # with a tracer, every hop's batch


async def test_subscribers_are_counted() -> None:
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    async with hp.run(chain("a"), meter_provider=meters) as topo, topo.subscribe("a"):
        assert points(reader)["hotplumb.subscribers"] == {"": 1}
    meters.shutdown()


class CountedReads:
    """What metrics read of a topology (one node, ``n``), counting the reads."""

    def __init__(self) -> None:
        self.reads = 0
        self.received = 0
        self.clock = FakeClock()
        self.trace = False
        self.generation = 0

    def node_statistics(self) -> dict[Any, hp.NodeStatistics]:
        self.reads += 1
        return {"n": hp.NodeStatistics("n", 0, self.received, 0, 0, 0, 0, 0, 0, 1)}

    def dead_letter_count(self) -> int:
        return 0

    def subscriber_count(self) -> int:
        return 0


async def test_every_collection_takes_one_reading_of_its_own_however_close_together() -> None:
    watched = CountedReads()
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    OtelObserver(watched, meter_provider=meters)

    def collections() -> list[float]:
        seen = []
        for received in (1, 2, 3):  # back to back: nothing else happens in between
            watched.received = received
            seen.append(points(reader)["hotplumb.node.received"]["n"])
        return seen

    # A reader in another thread: one trip through the loop per collection, each afresh.
    assert await asyncio.to_thread(collections) == [1, 2, 3]
    assert watched.reads == 3
    # In the loop's thread too: one reading per collection, not one per instrument.
    assert collections() == [1, 2, 3]
    assert watched.reads == 6
    meters.shutdown()


async def test_a_reading_serves_each_instrument_once() -> None:
    watched = CountedReads()
    readings = _Readings(watched)
    for name in ("a", "b", "c"):
        readings.expect(name)
    readings.get("a")
    readings.get("b")  # a collection cut short before "c"...
    readings.get("a")  # ...so "a" asking again starts the next one
    assert watched.reads == 2
    readings.get("b")
    readings.get("c")  # that reading has served all three: the collection has ended
    assert watched.reads == 2
    readings.get("c")
    assert watched.reads == 3


# -- the epoch ------------------------------------------------------------------------


def test_the_epoch_comes_from_the_clock_or_from_now() -> None:
    assert epoch_offset(FakeClock(5.0, epoch_offset=EPOCH)) == EPOCH
    assert epoch_offset(FakeClock(5.0)) == 0.0

    class Clock:
        def now(self) -> float:
            return 100.0

    import time

    before = time.time()
    offset = epoch_offset(Clock())
    assert before - 100.0 <= offset <= time.time() - 100.0


def test_format_trace_draws_the_tree(spans: Spans) -> None:
    async def main() -> None:
        async with hp.run(chain("a"), clock=FakeClock(), tracer_provider=spans.provider) as t:
            await t.inject("in", 1)

    asyncio.run(main())
    text = format_trace(spans.all, attributes=["hotplumb.batch.size"])
    assert text.splitlines() == [
        "in  @0.000ms +0.000ms  hotplumb.batch.size=1",
        "└─ a  @0.000ms +0.000ms  hotplumb.batch.size=1",
        "   └─ out  @0.000ms +0.000ms  hotplumb.batch.size=1",
    ]


# -- OTLP over HTTP -------------------------------------------------------------------


class Receiver(http.server.ThreadingHTTPServer):
    """An OTLP/HTTP trace receiver on 127.0.0.1: it keeps every decoded request."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ReceiverHandler)
        self.requests: list[Any] = []
        self.paths: list[str] = []
        self.received = threading.Event()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/v1/traces"


class _ReceiverHandler(http.server.BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.server.requests.append(request)
        self.server.paths.append(self.path)
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)
        self.server.received.set()

    def log_message(self, format: str, *args: Any) -> None:
        pass


async def test_the_otlp_exporter_posts_the_spans_with_their_parents() -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http", reason="needs the OTLP exporter")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    receiver = Receiver()
    server = threading.Thread(target=receiver.serve_forever, daemon=True)
    server.start()
    provider = TracerProvider()
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver.url, timeout=5))
    )
    try:
        async with hp.run(chain("a", "b"), clock=FakeClock(), tracer_provider=provider) as topo:
            await topo.inject("in", 1)
            await topo.drain()
        await asyncio.to_thread(provider.force_flush, 5000)
        assert await asyncio.to_thread(receiver.received.wait, 5)
    finally:
        provider.shutdown()
        receiver.shutdown()
        receiver.server_close()
        server.join(5)
    assert set(receiver.paths) == {"/v1/traces"}
    sent = [
        span
        for request in receiver.requests
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    by_name = {span.name: span for span in sent}
    assert sorted(by_name) == ["a", "b", "in", "out"]
    assert by_name["in"].parent_span_id == b""
    assert by_name["a"].parent_span_id == by_name["in"].span_id
    assert by_name["b"].parent_span_id == by_name["a"].span_id
    assert by_name["out"].parent_span_id == by_name["b"].span_id
    assert len({span.trace_id for span in sent}) == 1
    attributes = {kv.key: kv.value for kv in by_name["b"].attributes}
    assert attributes["hotplumb.node"].string_value == "b"
    assert attributes["hotplumb.batch.size"].int_value == 1


# -- GET /metrics ---------------------------------------------------------------------


async def test_the_metrics_endpoint_serves_the_statistics_as_prometheus_text() -> None:
    pytest.importorskip("starlette", reason="hotplumb.web needs the web extra")
    httpx = pytest.importorskip("httpx", reason="needs httpx (the dev extra)")
    parser = pytest.importorskip("prometheus_client.parser", reason="needs prometheus_client")
    import hotplumb.web

    stage = hp.key(kind="stage", n=1)
    graph = hp.Graph(
        {
            "in": hp.Node(),
            stage: hp.Node(lambda x: 1 / x, inputs=["in"]),
            "out": hp.sink(lambda d: None, inputs=[stage]),
        }
    )
    async with hp.run(graph) as topo:
        await topo.inject_many("in", [1, 0, 2, 4])
        await topo.drain()
        web_app = hotplumb.web.app(topo)
        transport = httpx.ASGITransport(app=web_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            response = await client.get("/metrics")
        statistics = topo.statistics()
        off = hotplumb.web.app(topo, metrics=False)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=off), base_url="http://127.0.0.1"
        ) as client:
            assert (await client.get("/metrics")).status_code == 404
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[tuple[str, str], float] = {}
    for family in parser.text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, sample.labels.get("node", ""))] = sample.value
    for key, s in statistics.items():
        label = hp.format_key(key)
        for field in ("received", "emitted", "filtered", "failed", "restarts"):
            assert samples[(f"hotplumb_node_{field}_total", label)] == getattr(s, field)
        assert samples[("hotplumb_node_input_depth", label)] == s.input_depth
        assert samples[("hotplumb_node_input_capacity", label)] == s.input_capacity
    assert samples[("hotplumb_node_failed_total", hp.format_key(stage))] == 1
    assert samples[("hotplumb_node_received_total", "in")] == 4
    assert samples[("hotplumb_dead_letters_total", "")] == 1
    assert samples[("hotplumb_nodes_running", "")] == 3
    assert samples[("hotplumb_subscribers", "")] == 0
    assert samples[("hotplumb_generation", "")] == 0
