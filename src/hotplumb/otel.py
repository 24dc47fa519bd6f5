"""hotplumb.otel: a topology's provenance as OpenTelemetry traces, its counters as metrics.

Needs the ``otel`` extra (``pip install 'hotplumb[otel]'``: the OpenTelemetry
API; the SDK and exporters are yours to choose). It is switched on by
``hotplumb.run(graph, tracer_provider=..., meter_provider=...,
trace_sampling=...)``, which imports this module only then: without a
provider nothing of OpenTelemetry is imported, and the runtime's hot path
checks one ``None`` per batch.

Traces. A datum's journey is a trace and each hop a span, named by the node's
readable key (:func:`~hotplumb.format_key`), child of the span of the hop
before. Attributes: ``hotplumb.node``, ``hotplumb.version`` (the node's),
``hotplumb.generation`` (the topology's), ``hotplumb.batch.size``, and for a
per-datum span ``hotplumb.origin``. Two modes:

* **Per batch** (the default when a ``tracer_provider`` is given): one span
  per batch per hop. Batches fan out and merge, so a trace is the tree of one
  entering batch's descendants; a batch made of data from several (a
  rollup's summary) is a span of its own trace, linked to the spans of its
  parents.
* **Per datum** (``trace_sampling=r``): the share ``r`` of the data entering
  the topology is traced, chosen by sequence: of a batch of ``N`` data
  leaving an entry point after ``n`` others, the first ``floor((n + N) * r)
  - floor(n * r)`` are (so over any run of batches the count is exact, and
  ``1.0`` traces every datum). A traced datum leaves its entry point in a
  batch of its own, ahead of the rest of its batch, and gets one span per
  hop. A rollup summary of traced data is traced too (its span links to
  theirs). At ``0.01`` a batch of 1,024 entering data makes about ten spans
  per hop, ten times per-batch mode's one, and those spans are most of the
  cost; the traced data travelling as batches of their own are about an
  eighth of it (see ``docs/benchmarks.md``).

A datum whose processing failed (and that no ``on_error`` handled) always
gets a span at the failing hop, whatever the mode: error status, the
exception as the standard ``exception`` event, timed from when the node began
on its batch to the failure. It is the child of the hop before's span when
that span was recorded; when the sampler dropped it, the failure's span
starts a trace of its own, linked to the dropped span (the link's flags say
it was not sampled), so the parent's decision does not drop the failure with
it. The sampler then decides on it as on any root: the SDK's default
(``ParentBased(ALWAYS_ON)``) records it. The sink's hop is a span like any
other.

The tracer provider's sampler has the last word on every span, as it has on
any: with the SDK's default, parent-based one, a hop is recorded when the hop
before it was, so ``ParentBased(TraceIdRatioBased(r))`` records the share
``r`` of the entering batches' trees, whole, and the hops of the rest are
spans that record nothing: the cheap way to trace a busy topology in
per-batch mode. When the sampler is the SDK's ``ParentBased`` with its
default for a dropped parent (``ALWAYS_OFF``; the SDK's default sampler is
one), hotplumb does not ask it again below a span it dropped: the hops after
it make no span at all, and their batches carry the dropped span's context
on (``Trace.sampled`` false). So a tree the sampler did not choose costs one
dropped span at its entry point; at a ratio of 10% per-batch tracing costs a
few percent (``docs/benchmarks.md``). Any other sampler is asked about every
hop, as it may decide on a dropped span's children by their names,
attributes or links.

The trace context travels with the batch as the trace and span ids and the
sampled flag on its :class:`~hotplumb.Trace` (``Datum.trace``), not as an
object of this process, so it can cross processes (``Trace.traceparent`` is
its W3C form).

Timestamps are wall-clock epoch nanoseconds derived from the topology's
clock: ``epoch_offset + clock.now()``, where ``epoch_offset`` is the clock's
attribute of that name if it has one (:class:`hotplumb.testing.FakeClock`:
its ``epoch_offset`` argument, ``0.0`` by default, so spans in tests are
deterministic), else ``time.time() - clock.now()`` measured once, when the
topology starts.

Changes. Every ``apply`` and ``update`` is a span ``hotplumb.apply`` (a
trace of its own) from the call to its completion, with
``hotplumb.change.kind`` (``apply``/``update``), ``hotplumb.generation``,
``hotplumb.change.added``/``removed``/``replaced``/``rewired`` (changelist
sizes), ``hotplumb.change.region`` and ``hotplumb.change.visited`` (the nodes
the barrier visited: the region), ``hotplumb.change.switch_seconds`` and
``hotplumb.change.errors``; a change that fails or times out has error status
and the exception event.

Metrics, read from ``Topology.statistics()`` once per collection of the
meter provider (one reading serves every instrument of that collection and
no other; it is taken in the event loop's thread, and a reader in another
thread waits for the loop once per collection, not once per instrument):
observable counters ``hotplumb.node.received``, ``.emitted``,
``.filtered``, ``.failed``, ``.restarts`` and gauges
``hotplumb.node.input.depth`` and ``.capacity``, each with the attribute
``hotplumb.node``; the counter ``hotplumb.dead_letters``; the gauges
``hotplumb.nodes.running`` and ``hotplumb.subscribers``; and the histogram
``hotplumb.change.duration`` (seconds on the topology's clock).

:func:`format_trace` renders finished spans (of the SDK's in-memory exporter,
say) as text, one line per span.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Final

try:
    from opentelemetry import trace as trace_api
    from opentelemetry.context import Context
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.trace import (
        Link,
        NonRecordingSpan,
        SpanContext,
        SpanKind,
        Status,
        StatusCode,
        TraceFlags,
    )
except ImportError as _missing:  # pragma: no cover - tested in a subprocess
    raise ImportError(
        f"hotplumb.otel needs the OpenTelemetry API ({_missing.name} is missing): "
        "pip install 'hotplumb[otel]'"
    ) from _missing

from hotplumb._datum import Batch, Trace
from hotplumb._format import bounded_repr, exception_text, format_key
from hotplumb._observe import Observer

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence

    from hotplumb._change import ApplyReport
    from hotplumb._datum import Datum
    from hotplumb._observe import Hop, Watched
    from hotplumb._snapshot import NodeStatistics

__all__ = ["OtelObserver", "epoch_offset", "format_trace"]

INSTRUMENTATION: Final = "hotplumb"
"""The instrumentation scope's name, for tracers and meters."""

MAX_LINKS: Final = 128
"""At most this many parents' spans are linked from one span (the SDK's default limit)."""

_ORIGIN_CHARS: Final = 200
_SAMPLED: Final = TraceFlags(TraceFlags.SAMPLED)
_UNSAMPLED: Final = TraceFlags(TraceFlags.DEFAULT)
_INTERNAL: Final = SpanKind.INTERNAL
_ROOT: Final = Context()  # an explicit root: never the ambient span of whoever started the task


def epoch_offset(clock: Any) -> float:
    """Seconds to add to ``clock.now()`` to get Unix time (see the module's documentation).

    Args:
        clock: A :class:`~hotplumb.Clock`.

    Returns:
        The clock's ``epoch_offset`` attribute if it has one, else
        ``time.time() - clock.now()`` now.
    """
    offset = getattr(clock, "epoch_offset", None)
    if isinstance(offset, int | float) and not isinstance(offset, bool):
        return float(offset)
    return time.time() - float(clock.now())


def _span_context(trace: Trace) -> SpanContext:
    """The context of the span ``trace`` names, with its real sampled flag."""
    flags = _SAMPLED if trace.sampled else _UNSAMPLED
    return SpanContext(trace.trace_id, trace.span_id, False, flags)


def _parent(trace: Trace | None) -> Context:
    """The context to start a span in: the span ``trace`` names, or a new trace."""
    if trace is None or not trace.span_id:
        return _ROOT
    # _span_context, inline: this is on every hop's span.
    flags = _SAMPLED if trace.sampled else _UNSAMPLED
    span = NonRecordingSpan(SpanContext(trace.trace_id, trace.span_id, False, flags))
    return trace_api.set_span_in_context(span, _ROOT)


def _links(parents: Iterable[tuple[Datum, ...]], inherited: Any = None) -> list[Link]:
    """Links to the spans of the traced data among ``parents`` (each once, at most MAX_LINKS).

    A link to a span the sampler dropped says so (its context is not
    sampled): a backend is not sent looking for a span it never got.

    Only parents made at this hop are linked: a group that is one of the
    ``inherited`` (the input batch's parents, passed on unchanged) was linked
    where it was made.
    """
    seen: set[tuple[int, int]] = set()
    links: list[Link] = []
    passed_on = {id(group) for group in inherited} if inherited else ()
    for group in parents:
        if passed_on and id(group) in passed_on:
            continue
        for datum in group:
            trace = datum.trace
            if trace is None or not trace.span_id:
                continue
            ids = (trace.trace_id, trace.span_id)
            if ids in seen:
                continue
            seen.add(ids)
            links.append(Link(_span_context(trace)))  # with its flags: dropped or not
            if len(links) >= MAX_LINKS:
                return links
    return links


def _drops_after_dropped(provider: Any) -> bool:
    """Whether ``provider``'s sampler is known to drop every child of a span it dropped.

    Only two samplers are: the SDK's ``ParentBased`` (itself, not a subclass)
    with its default for a dropped local parent (``ALWAYS_OFF``), which is the
    SDK's default sampler, and ``ALWAYS_OFF``. Any other (one that decides on
    a dropped span's children by their names, attributes, links or chance; a
    provider that is not the SDK's) is asked about every hop. The sampler is
    looked at, never called: a stateful one's budget is its own.
    """
    sampling = sys.modules.get("opentelemetry.sdk.trace.sampling")
    sampler = getattr(provider, "sampler", None)
    if sampling is None or sampler is None:
        return False
    if sampler is getattr(sampling, "ALWAYS_OFF", None):
        return True
    return type(sampler) is getattr(sampling, "ParentBased", None) and getattr(
        sampler, "_local_parent_not_sampled", None
    ) is getattr(sampling, "ALWAYS_OFF", None)


def _piece(batch: Batch, start: int, stop: int) -> Batch:
    parents = batch.parents[start:stop] if batch.parents is not None else None
    return Batch(batch.values[start:stop], batch.origins[start:stop], batch.route, parents)


class OtelObserver(Observer):
    """The :class:`~hotplumb._observe.Observer` that ``run(..., tracer_provider=...)`` installs.

    Made by the runtime; see the module's documentation for what it records.

    Args:
        watched: The topology, as an observer may read it.
        tracer_provider: An OpenTelemetry ``TracerProvider``, or ``None``.
        meter_provider: An OpenTelemetry ``MeterProvider``, or ``None``.
        trace_sampling: ``None`` for per-batch spans, else the ratio of data
            traced per datum.
    """

    def __init__(
        self,
        watched: Watched,
        *,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        trace_sampling: float | None = None,
    ) -> None:
        self._watched = watched
        self._clock = watched.clock
        self._timing = watched.trace
        self._offset_ns = round(epoch_offset(self._clock) * 1e9)
        self._tracer = (
            tracer_provider.get_tracer(INSTRUMENTATION) if tracer_provider is not None else None
        )
        # Metrics alone need nothing of the batches: the runtime sends them unobserved.
        self.watches_batches = self._tracer is not None
        self._prunes = self._tracer is not None and _drops_after_dropped(tracer_provider)
        self._ratio = trace_sampling
        self._entered = 0  # data that left an entry point (for sampling by sequence)
        # Per key: the version and the attributes of its spans, made once per version. A
        # key leaves when a change removes its node (or, after a change that failed, when
        # it is not running), so this holds the running nodes' keys, not every key seen.
        self._attributes: dict[Hashable, tuple[int, dict[str, Any]]] = {}
        self._readings = _Readings(watched) if meter_provider is not None else None
        self._labels = _Labels()
        self._durations: Any = None
        if meter_provider is not None:
            assert self._readings is not None
            self._durations = _instruments(
                meter_provider.get_meter(INSTRUMENTATION), self._readings, self._labels
            )

    # -- time ---------------------------------------------------------------------

    def epoch_ns(self, clock_time: float) -> int:
        """The Unix time in nanoseconds of ``clock_time`` on the topology's clock."""
        return self._offset_ns + round(clock_time * 1e9)

    # -- data ---------------------------------------------------------------------

    def _node_attributes(self, hop: Hop) -> dict[str, Any]:
        key = hop.key
        version = hop.version
        cached = self._attributes.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        attributes = {"hotplumb.node": format_key(key), "hotplumb.version": version}
        self._attributes[key] = (version, attributes)
        return attributes

    def _forget_removed(self, report: ApplyReport | None) -> None:
        """Forget the nodes a change removed (after a failed one: all but those running)."""
        cached = self._attributes
        if not cached:
            return
        if report is not None:
            for key in report.changelist.removed:
                cached.pop(key, None)
            return
        running = self._watched.node_statistics()  # rare: a change failed part of the way
        for key in [key for key in cached if key not in running]:
            del cached[key]

    def _span(
        self,
        hop: Hop,
        batch: Batch,
        previous: Trace | None,
        started: float,
        now: float,
        per_datum: bool,
        inherited: Any = None,
    ) -> None:
        """Record the hop of ``batch`` as a span; give the batch its trace."""
        if previous is not None and not previous.sampled and self._prunes:
            # The sampler would drop this span too: no span, the dropped one's context on.
            trace_id, span_id, sampled = previous.trace_id, previous.span_id, False
        else:
            trace_id, span_id, sampled = self._start(
                hop, batch, previous, started, now, per_datum, inherited
            )
        batch.trace = Trace(
            hop.key,
            started,
            now,
            previous if self._timing else None,
            trace_id,
            span_id,
            sampled,
        )

    def _start(
        self,
        hop: Hop,
        batch: Batch,
        previous: Trace | None,
        started: float,
        now: float,
        per_datum: bool,
        inherited: Any,
    ) -> tuple[int, int, bool]:
        """Make and end the span of ``batch``'s hop; its trace id, span id and sampled flag."""
        tracer = self._tracer
        assert tracer is not None
        attributes = self._node_attributes(hop).copy()
        attributes["hotplumb.generation"] = self._watched.generation
        attributes["hotplumb.batch.size"] = len(batch.values)
        if per_datum and batch.origins:
            attributes["hotplumb.origin"] = bounded_repr(batch.origins[0])[:_ORIGIN_CHARS]
        links = _links(batch.parents, inherited) if batch.parents is not None else None
        offset = self._offset_ns
        span = tracer.start_span(
            attributes["hotplumb.node"],
            _parent(previous),
            _INTERNAL,
            attributes,
            links,
            offset + round(started * 1e9),
        )
        span.end(offset + round(now * 1e9))
        ids = span.get_span_context()
        return ids.trace_id, ids.span_id, ids.trace_flags.sampled

    def _untraced(
        self, hop: Hop, batch: Batch, previous: Trace | None, started: float, now: float
    ) -> Batch:
        batch.trace = Trace(hop.key, started, now, previous) if self._timing else None
        return batch

    def sent(self, hop: Hop, batch: Batch, inputs: Batch, started: float) -> Sequence[Batch]:
        """Trace ``batch``'s hop as the mode says; split it where sampled data leave an entry."""
        now = self._clock.now()
        previous = inputs.trace
        if self._tracer is None:
            return (self._untraced(hop, batch, previous, started, now),)
        ratio = self._ratio
        inherited = inputs.parents
        if ratio is None:
            self._span(hop, batch, previous, started, now, False, inherited)
            return (batch,)
        if previous is not None and previous.span_id:
            self._span(hop, batch, previous, started, now, True, inherited)
            return (batch,)
        route = batch.route
        if route is not None and route.parent is None:
            return self._sample(hop, batch, started, now, ratio)
        if batch.parents is not None and _links(batch.parents, inherited):
            self._span(hop, batch, None, started, now, True, inherited)
            return (batch,)
        return (self._untraced(hop, batch, previous, started, now),)

    def _sample(
        self, hop: Hop, batch: Batch, started: float, now: float, ratio: float
    ) -> Sequence[Batch]:
        """At an entry point: the batch in pieces, each traced datum alone."""
        first = self._entered
        count = len(batch.values)
        self._entered = first + count
        # The first ones of the batch: their count keeps the share exact over any run of
        # batches, and the rest of the batch stays whole (small batches are dear).
        chosen = range(math.floor((first + count) * ratio) - math.floor(first * ratio))
        if not chosen:
            return (self._untraced(hop, batch, None, started, now),)
        pieces: list[Batch] = []
        start = 0
        for index in chosen:
            if index > start:
                pieces.append(self._untraced(hop, _piece(batch, start, index), None, started, now))
            piece = _piece(batch, index, index + 1)
            self._span(hop, piece, None, started, now, per_datum=True)
            pieces.append(piece)
            start = index + 1
        if start < count:
            pieces.append(self._untraced(hop, _piece(batch, start, count), None, started, now))
        return pieces

    def failed(self, hop: Hop, datum: Datum, started: float) -> None:
        """Record the failed hop of ``datum``: error status and the exception event."""
        tracer = self._tracer
        error = datum.error
        if tracer is None or error is None:
            return
        now = self._clock.now()
        attributes = dict(self._node_attributes(hop))
        attributes["hotplumb.generation"] = self._watched.generation
        attributes["hotplumb.batch.size"] = 1
        attributes["hotplumb.origin"] = bounded_repr(datum.origin)[:_ORIGIN_CHARS]
        links = _links((datum.parents,)) if datum.parents else None
        trace = datum.trace
        if trace is not None and trace.span_id and not trace.sampled:
            # The hop before was sampled out: as its child the failure would be dropped
            # too (a parent-based sampler), so it starts a trace of its own, linked to
            # that hop's span as it is (unsampled), and the sampler decides as for a root.
            links = [Link(_span_context(trace)), *(links or ())][:MAX_LINKS]
            trace = None
        span = tracer.start_span(
            attributes["hotplumb.node"],
            _parent(trace),
            SpanKind.INTERNAL,
            attributes,
            links,
            self.epoch_ns(started),
        )
        exception = error.exception
        span.record_exception(exception, timestamp=self.epoch_ns(now))
        span.set_status(Status(StatusCode.ERROR, exception_text(exception)))
        span.end(self.epoch_ns(now))

    # -- changes ------------------------------------------------------------------

    def change_started(self, kind: str) -> Any:
        """Note when the change was asked for."""
        return (kind, self._clock.now())

    def change_ended(
        self, token: Any, report: ApplyReport | None, error: BaseException | None
    ) -> None:
        """Record the change as a ``hotplumb.apply`` span, and its duration."""
        self._forget_removed(report)
        kind, began = token
        now = self._clock.now()
        if self._durations is not None:
            outcome = "failed" if error is not None else "completed"
            self._durations.record(
                max(0.0, now - began), {"hotplumb.change.kind": kind, "outcome": outcome}
            )
        tracer = self._tracer
        if tracer is None:
            return
        attributes: dict[str, Any] = {"hotplumb.change.kind": kind}
        if report is not None:
            changes = report.changelist
            attributes.update(
                {
                    "hotplumb.generation": report.generation,
                    "hotplumb.change.added": len(changes.added),
                    "hotplumb.change.removed": len(changes.removed),
                    "hotplumb.change.replaced": len(changes.replaced),
                    "hotplumb.change.rewired": len(changes.rewired),
                    "hotplumb.change.region": report.visited,
                    "hotplumb.change.visited": report.visited,
                    "hotplumb.change.switch_seconds": report.seconds,
                    "hotplumb.change.errors": len(report.errors),
                }
            )
        else:
            attributes["hotplumb.generation"] = self._watched.generation
        span = tracer.start_span(
            "hotplumb.apply", _ROOT, SpanKind.INTERNAL, attributes, None, self.epoch_ns(began)
        )
        if error is not None:
            span.record_exception(error, timestamp=self.epoch_ns(now))
            span.set_status(Status(StatusCode.ERROR, exception_text(error)))
        span.end(self.epoch_ns(now))

    def close(self) -> None:
        """The topology stopped: metrics keep its last readings."""
        if self._readings is not None:
            self._readings.freeze()


# -- metrics --------------------------------------------------------------------------


_Reading = tuple["Mapping[Hashable, NodeStatistics]", int, int]


class _Readings:
    """The topology's counters for metric callbacks: one reading per collection.

    A collection calls every instrument's callback once, in turn. The first
    callback to ask takes a reading and the others of the collection are
    handed the same one; the reading serves each instrument once, and when
    it has served them all the collection has ended and the next call reads
    afresh. An instrument asking again before that starts a new collection
    (one that ended early, or a reader that calls only some instruments), so
    a reading is never served to one instrument twice: however close
    together two collections come, the second sees figures of its own.

    Statistics are read in the event loop's thread. A reader in another
    thread (a periodic exporter) asks the loop and waits at most a second,
    once per collection, not once per instrument (each trip wakes the loop
    and hands the interpreter between threads twice). Once the topology has
    stopped, the last reading stays.

    Args:
        watched: The topology.
    """

    def __init__(self, watched: Watched) -> None:
        self._watched = watched
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - the runtime makes observers in its loop
            self._loop = None
        self._thread = threading.get_ident()
        self._instruments: set[str] = set()  # the instruments one collection asks for
        # The current collection's reading, and the instruments it has served (guarded by
        # _lock): None once it has served every instrument.
        self._current: _Reading | None = None
        self._served: set[str] = set()
        self._frozen: _Reading | None = None
        self._last: _Reading = ({}, 0, 0)
        # Readers in other threads waiting for the loop; answered at once by freeze().
        self._waiting: set[concurrent.futures.Future[Any]] = set()
        self._lock = threading.Lock()

    def expect(self, instrument: str) -> None:
        """Count ``instrument`` among those every collection asks (before any collection)."""
        self._instruments.add(instrument)

    def _read(self) -> _Reading:
        watched = self._watched
        return (watched.node_statistics(), watched.dead_letter_count(), watched.subscriber_count())

    def freeze(self) -> None:
        """Keep the readings as they are now, for good; answer every waiting reader.

        Called in the loop as the topology stops: a reader waiting for the
        loop could otherwise wait for a loop that is blocked (a provider's
        ``shutdown`` joining that reader's thread).
        """
        frozen = self._read()
        with self._lock:
            self._frozen = self._last = frozen
            self._current = None
            waiting, self._waiting = self._waiting, set()
        for future in waiting:
            if future.set_running_or_notify_cancel():
                future.set_result(frozen)

    def frozen(self) -> _Reading | None:
        """The readings kept since the topology stopped, or ``None`` while it runs."""
        return self._frozen

    def get(self, instrument: str) -> _Reading:
        """Per-node statistics, the dead-letter count and the subscriber count, for ``instrument``.

        Args:
            instrument: The name of the instrument whose callback asks.

        Returns:
            The current collection's reading, taken now if this is its first call.
        """
        with self._lock:
            if self._frozen is not None:
                return self._frozen
            current = self._current
            if current is not None and instrument not in self._served:
                self._served.add(instrument)
                if self._served >= self._instruments:
                    self._current = None  # the collection has ended
                return current
        reading = self._fetch()
        with self._lock:
            frozen = self.frozen()  # it may have frozen since (in the loop)
            if frozen is not None:
                return frozen
            self._served = {instrument}
            # Even a reading that came too late (the last one) serves the rest of the
            # collection: a loop too busy to answer one callback makes it wait once.
            self._current = None if self._served >= self._instruments else reading
        return reading

    def _fetch(self) -> _Reading:
        """Read the statistics now: here in the loop's thread, else through the loop."""
        if threading.get_ident() == self._thread:
            self._last = self._read()
            return self._last
        loop = self._loop
        if loop is None or loop.is_closed():
            return self._last
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            frozen = self._frozen
            if frozen is not None:
                return frozen
            self._waiting.add(future)

        def read() -> None:
            with self._lock:
                if future not in self._waiting:
                    return  # answered by freeze(), or abandoned
                self._waiting.discard(future)
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(self._read())
                except BaseException as exc:  # handed to the waiting thread
                    future.set_exception(exc)

        try:
            loop.call_soon_threadsafe(read)
            self._last = future.result(timeout=1.0)
        except (RuntimeError, concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
            with self._lock:
                self._waiting.discard(future)
            future.cancel()
        return self._last


_COUNTERS: Final = (
    ("received", "Items taken from the node's inputs"),
    ("emitted", "Items the node sent to its readers (for a target: delivered)"),
    ("filtered", "Items that produced no output"),
    ("failed", "Items whose processing raised and were not replaced"),
    ("restarts", "Times the node's task was restarted"),
)


class _Labels:
    """The ``hotplumb.node`` attribute of every running node, for metric observations.

    Each made once per key and kept while its node runs: a new reading keeps
    the labels of the nodes in it and drops the others (one pass over the
    nodes per collection, which observes every node anyway).
    """

    __slots__ = ("_labels", "_of")

    def __init__(self) -> None:
        self._of: Mapping[Hashable, NodeStatistics] | None = None  # the reading labelled
        self._labels: dict[Hashable, dict[str, str]] = {}

    def of(
        self, statistics: Mapping[Hashable, NodeStatistics]
    ) -> Mapping[Hashable, dict[str, str]]:
        """The label of every node in ``statistics`` (a reading's first mapping)."""
        if statistics is not self._of:
            known = self._labels
            self._labels = {
                key: known.get(key) or {"hotplumb.node": format_key(key)} for key in statistics
            }
            self._of = statistics
        return self._labels

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._labels)


def _instruments(meter: Any, readings: _Readings, labels: _Labels) -> Any:
    """Register the topology's metrics on ``meter``; return the change-duration histogram."""

    def per_node(name: str, field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        readings.expect(name)

        def observe(options: CallbackOptions) -> Iterable[Observation]:
            statistics = readings.get(name)[0]
            label = labels.of(statistics)
            return [Observation(getattr(s, field), label[k]) for k, s in statistics.items()]

        return observe

    def overall(
        name: str, value: Callable[[_Reading], int]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        readings.expect(name)

        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(value(readings.get(name)))]

        return observe

    for field, description in _COUNTERS:
        name = f"hotplumb.node.{field}"
        meter.create_observable_counter(name, [per_node(name, field)], "{item}", description)
    meter.create_observable_gauge(
        "hotplumb.node.input.depth",
        [per_node("hotplumb.node.input.depth", "input_depth")],
        "{item}",
        "Items waiting in the node's input channels",
    )
    meter.create_observable_gauge(
        "hotplumb.node.input.capacity",
        [per_node("hotplumb.node.input.capacity", "input_capacity")],
        "{item}",
        "The capacity of each of the node's input channels",
    )
    meter.create_observable_counter(
        "hotplumb.dead_letters",
        [overall("hotplumb.dead_letters", lambda r: r[1])],
        "{datum}",
        "Failed data recorded in all",
    )
    meter.create_observable_gauge(
        "hotplumb.nodes.running",
        [overall("hotplumb.nodes.running", lambda r: len(r[0]))],
        "{node}",
        "Nodes running (during a change, old and new)",
    )
    meter.create_observable_gauge(
        "hotplumb.subscribers",
        [overall("hotplumb.subscribers", lambda r: r[2])],
        "{subscriber}",
        "Clients' subscriptions running",
    )
    return meter.create_histogram(
        "hotplumb.change.duration",
        "s",
        "Seconds (on the topology's clock) from asking for a change to its completion",
    )


# -- text -----------------------------------------------------------------------------


def format_trace(spans: Iterable[Any], *, attributes: Sequence[str] = ()) -> str:
    """Render finished spans as text: one line per span, children under their parents.

    Each line shows the span's name, its start (milliseconds since the
    earliest span shown) and duration, the named ``attributes`` it has, its
    links and its error status.

    Args:
        spans: Finished spans (``ReadableSpan`` of the SDK, or anything with
            ``name``, ``context``, ``parent``, ``start_time``, ``end_time``,
            ``attributes``, ``links`` and ``status``).
        attributes: The attributes to show, in order.

    Returns:
        The text, spans of one trace together, in start order.
    """
    spans = sorted(spans, key=lambda s: (s.start_time or 0, s.context.span_id))
    if not spans:
        return ""
    ids = {s.context.span_id for s in spans}
    children: dict[int | None, list[Any]] = {}
    for s in spans:
        parent = s.parent.span_id if s.parent is not None else None
        children.setdefault(parent if parent in ids else None, []).append(s)
    first = spans[0].start_time or 0
    lines: list[str] = []

    def line(s: Any, prefix: str, branch: str) -> None:
        start = ((s.start_time or 0) - first) / 1e6
        took = ((s.end_time or 0) - (s.start_time or 0)) / 1e6
        shown = [f"{a}={s.attributes[a]!r}" for a in attributes if a in (s.attributes or {})]
        text = f"{prefix}{branch}{s.name}  @{start:.3f}ms +{took:.3f}ms"
        if shown:
            text += "  " + " ".join(shown)
        if s.links:
            text += f"  links={len(s.links)}"
        if s.status is not None and s.status.status_code is StatusCode.ERROR:
            text += f"  ERROR: {s.status.description}"
        lines.append(text)

    def walk(s: Any, prefix: str, last: bool, top: bool) -> None:
        line(s, prefix, "" if top else ("└─ " if last else "├─ "))
        below = children.get(s.context.span_id, [])
        inner = prefix if top else prefix + ("   " if last else "│  ")
        for i, child in enumerate(below):
            walk(child, inner, i == len(below) - 1, False)

    for root in children.get(None, []):
        walk(root, "", True, True)
    return "\n".join(lines)
