"""Data and provenance: :class:`Datum`, its :class:`Route`, errors on the way, and batches.

Provenance costs nothing per hop. A datum's path is a property of the route it
took, and routes are interned by the running nodes: every node keeps, per
incoming route, the one outgoing route it extends it to, so moving a batch of
data one hop costs one dictionary lookup for the whole batch, and no tuple is
built per datum. The path tuple is materialised once per route, the first time
someone asks. Because the node that made a route is the one that remembers it,
the routes of a node that leaves the topology are forgotten with it: a
long-running topology whose readers come and go keeps only the routes of the
nodes that run (and of the data still alive).

A :class:`Batch` is how data move inside the runtime: values from one route,
with their origins, sent as one message.

Crossing a process boundary. Every value here pickles, and what is pickled
means the same in any process. A route travels as its path alone: its cached
hash is this process's (string hashes differ between processes, see
``PYTHONHASHSEED``) and is computed again where the route is rebuilt, and the
parent chain is rebuilt without recursion, however long. The receiving end
of a channel re-interns the rebuilt routes (``_wire``). A trace travels as
its list of hops, for the same reason, each hop with its span's ids and
sampled flag (so the far side continues a trace the sampler dropped as
dropped). A :class:`NodeError` carries its traceback as text (a traceback
object does not pickle), and its exception as bytes pickled on their own, so
an exception that cannot be rebuilt on the far side (its class is not
importable there, or its ``__init__`` does not take its ``args``) is replaced
by a stand-in that names it, rather than making the whole message
unreadable. A datum's equality never depends on object
identity (its error compares by node, version, and the exception's type and
arguments), so a datum equals its copy from another process.
"""

from __future__ import annotations

import pickle
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import TYPE_CHECKING, Any, overload

from hotplumb._format import bounded_repr, format_key

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Iterator

__all__ = ["Batch", "Data", "Datum", "Emission", "NodeError", "Route", "Trace", "emit"]


class Route:
    """A path through the graph: a key and the route before it.

    Routes form a tree rooted at the entry points. A running node interns the
    routes it extends, so data that took the same path share one route object;
    routes compare equal when their paths are equal.
    """

    __slots__ = ("_hash", "_path", "key", "parent")

    _hash: int

    def __init__(self, key: Hashable, parent: Route | None = None) -> None:
        self.key = key
        self.parent = parent
        self._path: tuple[Hashable, ...] | None = None
        # Equal paths hash equally; computed from the parent's, so O(1) here.
        self._hash = hash((parent._hash if parent is not None else 0, key))

    def child(self, key: Hashable) -> Route:
        """Return a route that extends this one by ``key``."""
        return Route(key, self)

    @property
    def root(self) -> Hashable:
        """The entry point this route starts at."""
        route = self
        while route.parent is not None:
            route = route.parent
        return route.key

    @property
    def path(self) -> tuple[Hashable, ...]:
        """The keys on this route, entry point first (computed once)."""
        path = self._path
        if path is None:
            keys = []
            route: Route | None = self
            while route is not None:
                keys.append(route.key)
                route = route.parent
            keys.reverse()
            path = self._path = tuple(keys)
        return path

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Route):
            return NotImplemented
        return self is other or self.path == other.path

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"Route({' -> '.join(format_key(k) for k in self.path)})"

    def __reduce__(self) -> tuple[Callable[[tuple[Hashable, ...]], Route], tuple[Any, ...]]:
        # Only the path travels: never the cached hash (see the module docstring).
        return (_route_from_path, (self.path,))


def _route_from_path(path: tuple[Hashable, ...]) -> Route:
    """Rebuild a route from its path (how a pickled route is unpickled), hashing it here."""
    route: Route | None = None
    for key in path:
        route = Route(key, route)
    if route is None:
        raise ValueError("a route's path has at least one key")
    route._path = path
    return route


@dataclass(frozen=True, slots=True)
class Trace:
    """Per-hop timing of a batch, recorded when tracing is on.

    With OpenTelemetry tracing on (``run(..., tracer_provider=...)``), a traced
    batch's trace also carries the ids of the span its last hop made: that
    pair of numbers, not any object of this process, is the batch's trace
    context, so it can travel wherever the batch does (:attr:`traceparent`
    is its W3C form).

    Attributes:
        key: The node the batch passed.
        start: Clock time when the node started on the batch.
        end: Clock time when it finished.
        previous: The trace of the hop before, or ``None`` at the entry point
            (and with OpenTelemetry tracing alone, without ``trace=True``:
            the backend has the chain).
        trace_id: The OpenTelemetry trace id of the hop's span, or 0.
        span_id: The OpenTelemetry span id of the hop's span, or 0 (no span).
            A hop below a span the sampler dropped may make no span of its
            own (see :mod:`hotplumb.otel`): it carries that span's ids.
        sampled: Whether the tracer provider's sampler recorded the hop's
            span; the hops after an unrecorded one are not recorded either
            (its trace was dropped, not just this span). True without a span.
        clock: Whose clock ``start`` and ``end`` are on: ``None`` for the
            topology's, or the name of the host (a process of the Ray
            engine) whose clock timed the hop. Clocks of two processes have
            unrelated origins: subtract only times of one clock.
    """

    key: Hashable
    start: float
    end: float
    previous: Trace | None = None
    trace_id: int = 0
    span_id: int = 0
    sampled: bool = True
    clock: str | None = None

    @property
    def traceparent(self) -> str | None:
        """The W3C ``traceparent`` header of the hop's span, or ``None`` if it has none."""
        if not self.span_id:
            return None
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-{'01' if self.sampled else '00'}"

    def hops(self) -> tuple[Trace, ...]:
        """Every hop, entry point first."""
        out: list[Trace] = []
        t: Trace | None = self
        while t is not None:
            out.append(t)
            t = t.previous
        out.reverse()
        return tuple(out)

    def __reduce__(self) -> tuple[Callable[[tuple[Any, ...]], Trace], tuple[Any, ...]]:
        # The hops as a flat tuple: a chain of ``previous`` would pickle recursively.
        # Every field of every hop: a hop the sampler dropped must stay dropped over there.
        hops = tuple(
            (t.key, t.start, t.end, t.trace_id, t.span_id, t.sampled, t.clock) for t in self.hops()
        )
        return (_trace_from_hops, (hops,))


def _trace_from_hops(hops: tuple[tuple[Any, ...], ...]) -> Trace:
    """Rebuild a trace from its hops, entry point first (how a pickled trace is unpickled)."""
    trace: Trace | None = None
    for key, start, end, trace_id, span_id, sampled, clock in hops:
        trace = Trace(key, start, end, trace, trace_id, span_id, sampled, clock)
    if trace is None:
        raise ValueError("a trace has at least one hop")
    return trace


@dataclass(frozen=True, slots=True, eq=False)
class NodeError:
    """What went wrong, and where.

    A node error pickles. Its copy in another process has the exception
    without its ``__traceback__`` (a traceback does not pickle), and the
    traceback as it was formatted where the exception was raised. An exception
    that does not survive pickling there, or unpickling here, is replaced by a
    :class:`RuntimeError` naming its type and message.

    Two node errors are equal when they say the same: the same node and
    version, and exceptions of the same type with equal ``args`` (exceptions
    themselves compare by identity, and a copy from another process is a new
    object). A node error is immutable: :func:`copy.copy` and
    :func:`copy.deepcopy` return it as it is.

    Attributes:
        key: The node that failed.
        version: The version of that node.
        exception: The exception raised, with its ``__traceback__``.
    """

    key: Hashable
    version: int
    exception: BaseException = field(repr=False)
    # The formatted traceback, in a copy from another process; else None.
    _text: str | None = field(default=None, init=False, repr=False)

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, NodeError):
            return NotImplemented
        a, b = self.exception, other.exception
        if self.key != other.key or self.version != other.version or type(a) is not type(b):
            return False
        try:
            return bool(a.args == b.args)
        except Exception:  # args whose comparison raises (arrays, say): compare their reprs
            return bounded_repr(a.args) == bounded_repr(b.args)

    def __hash__(self) -> int:
        return hash((self.key, self.version, type(self.exception)))

    def __copy__(self) -> NodeError:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> NodeError:
        return self

    @property
    def traceback(self) -> str:
        """The exception formatted with its traceback, as Python prints it."""
        if self._text is not None:
            return self._text
        return "".join(traceback.format_exception(self.exception))

    def __repr__(self) -> str:
        return (
            f"NodeError(key={self.key!r}, version={self.version}, "
            f"exception={type(self.exception).__name__}({self.exception}))"
        )

    def __reduce__(self) -> tuple[Callable[..., NodeError], tuple[Any, ...]]:
        exc = self.exception
        kind = type(exc)
        summary = f"{kind.__module__}.{kind.__qualname__}: {exc}"
        try:
            carried: bytes | None = pickle.dumps(exc)
        except Exception as problem:  # a lock, a socket, a lambda in its attributes...
            carried = None
            summary = f"{summary} (it could not be pickled: {problem})"
        return (_error_from_parts, (self.key, self.version, carried, summary, self.traceback))


def _error_from_parts(
    key: Hashable, version: int, carried: bytes | None, summary: str, text: str
) -> NodeError:
    """Rebuild a pickled :class:`NodeError`, with a stand-in for an exception that will not."""
    exception: BaseException | None = None
    if carried is not None:
        try:
            exception = pickle.loads(carried)
        except Exception as problem:  # its class is not importable here, or will not rebuild
            summary = f"{summary} (it could not be unpickled: {problem})"
    if exception is None:
        exception = RuntimeError(summary)
    error = NodeError(key, version, exception)
    object.__setattr__(error, "_text", text)
    return error


class Datum:
    """A value travelling through a topology, with its provenance.

    Immutable: its attributes are read-only.

    Attributes:
        value: The value.
        origin: What entered the topology (was injected or produced by a source).
        path: The keys the datum went through, entry point first.
        error: ``None``, or the :class:`NodeError` that stopped it.
        parents: The data this one was derived from, when a node combined
            several into one (a windowed rollup); else empty.
        trace: Per-hop timing when the topology traces, else ``None``.
    """

    __slots__ = ("_error", "_origin", "_parents", "_route", "_trace", "_value")

    def __init__(
        self,
        value: Any,
        origin: Any,
        route: Route,
        error: NodeError | None = None,
        parents: tuple[Datum, ...] = (),
        trace: Trace | None = None,
    ) -> None:
        self._value = value
        self._origin = origin
        self._route = route
        self._error = error
        self._parents = parents
        self._trace = trace

    @property
    def value(self) -> Any:
        """The value."""
        return self._value

    @property
    def origin(self) -> Any:
        """What entered the topology."""
        return self._origin

    @property
    def path(self) -> tuple[Hashable, ...]:
        """The keys the datum went through, entry point first."""
        return self._route.path

    @property
    def route(self) -> Route:
        """The interned route (``path`` is ``route.path``)."""
        return self._route

    @property
    def error(self) -> NodeError | None:
        """``None``, or what went wrong and where."""
        return self._error

    @property
    def parents(self) -> tuple[Datum, ...]:
        """The data this datum was derived from, if a node combined several."""
        return self._parents

    @property
    def trace(self) -> Trace | None:
        """Per-hop timing, when the topology traces."""
        return self._trace

    def explain(self) -> str:
        """Format the datum's provenance like a traceback.

        Returns:
            Several lines: the path of keys, the origin and value, what it was
            derived from, and for an error the exception and its traceback.
        """
        from hotplumb._explain import explain

        return explain(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Datum):
            return NotImplemented
        return (
            self._value == other._value
            and self._origin == other._origin
            and self._route == other._route
            and self._error == other._error
            and self._parents == other._parents
        )

    __hash__ = None  # type: ignore[assignment]

    def __str__(self) -> str:
        # A failed datum prints its provenance and traceback; others their repr.
        return self.explain() if self._error is not None else repr(self)

    def __repr__(self) -> str:
        path = " -> ".join(format_key(k) for k in self.path)
        extra = f", error={self._error!r}" if self._error is not None else ""
        return f"Datum(value={self._value!r}, origin={self._origin!r}, path=[{path}]{extra})"


@dataclass(frozen=True, slots=True)
class Emission:
    """An output together with the data it was derived from.

    Return one from a node whose callable takes a context (see :func:`emit`).

    Attributes:
        value: The output value.
        parents: The data it was derived from.
    """

    value: Any
    parents: tuple[Datum, ...] = ()


def emit(value: Any, *, parents: tuple[Datum, ...] | list[Datum] = ()) -> Emission:
    """Return ``value`` as an output derived from ``parents``.

    A node whose callable takes ``(value, context)`` may return (or yield)
    this to record, in the output's provenance, which data went into it.

    Args:
        value: The output value.
        parents: The data it was derived from.

    Returns:
        An :class:`Emission`.
    """
    return Emission(value, tuple(parents))


class Batch:
    """Data moving together: values from one route, with their origins.

    ``values``, ``origins`` and (if present) ``parents`` have equal lengths and
    are never mutated once the batch is sent, so one batch can be shared by
    every reader of a fan-out.

    Attributes:
        values: The values.
        origins: What entered the topology, one per value.
        route: The route the values took (``None`` before the entry point).
        parents: Per value, the data it was derived from; ``None`` when none is.
        trace: Per-hop timing when the topology traces.
    """

    __slots__ = ("origins", "parents", "route", "trace", "values")

    def __init__(
        self,
        values: list[Any],
        origins: list[Any],
        route: Route | None,
        parents: list[tuple[Datum, ...]] | None = None,
        trace: Trace | None = None,
    ) -> None:
        self.values = values
        self.origins = origins
        self.route = route
        self.parents = parents
        self.trace = trace

    def __len__(self) -> int:
        return len(self.values)

    def head(self, stop: int) -> Batch:
        """The batch of the items before ``stop``."""
        parents = self.parents[:stop] if self.parents is not None else None
        return Batch(self.values[:stop], self.origins[:stop], self.route, parents, self.trace)

    def tail(self, start: int) -> Batch:
        """The batch of the items from ``start`` on."""
        parents = self.parents[start:] if self.parents is not None else None
        return Batch(self.values[start:], self.origins[start:], self.route, parents, self.trace)

    def data(self, route: Route) -> list[Datum]:
        """The items as :class:`Datum` values at ``route``."""
        return list(self.datums(route))

    def datums(self, route: Route) -> Iterator[Datum]:
        """The items as :class:`Datum` values at ``route``, each made when it is reached."""
        parents = self.parents if self.parents is not None else repeat(())
        return map(
            Datum,
            self.values,
            self.origins,
            repeat(route),
            repeat(None),
            parents,
            repeat(self.trace),
        )

    def __reduce__(self) -> tuple[type[Batch], tuple[Any, ...]]:
        # Its constructor's arguments: faster to pickle and unpickle than the
        # slots' state, and a batch crosses a process boundary in every frame.
        return (Batch, (self.values, self.origins, self.route, self.parents, self.trace))

    def __repr__(self) -> str:
        return f"Batch({len(self.values)} items via {self.route!r})"


class Data(Sequence[Datum]):
    """The data of one batch, as a batched sink gets them (see ``hotplumb.sink``).

    A read-only sequence of :class:`Datum`, built only when indexed or
    iterated; ``values`` and ``origins`` are the batch's own lists (do not
    change them), so reading just the values costs nothing per item.

    Attributes:
        values: The values, in order.
        origins: What entered the topology, one per value.
        route: The route all of them took.
    """

    __slots__ = ("_batch", "route")

    def __init__(self, batch: Batch, route: Route) -> None:
        self._batch = batch
        self.route = route

    @property
    def values(self) -> list[Any]:
        """The values, in order (the batch's own list: read it, do not change it)."""
        return self._batch.values

    @property
    def origins(self) -> list[Any]:
        """The origins, one per value."""
        return self._batch.origins

    @property
    def path(self) -> tuple[Hashable, ...]:
        """The keys every datum here went through, entry point first."""
        return self.route.path

    def __len__(self) -> int:
        return len(self._batch.values)

    @overload
    def __getitem__(self, index: int) -> Datum: ...

    @overload
    def __getitem__(self, index: slice) -> list[Datum]: ...

    def __getitem__(self, index: int | slice) -> Datum | list[Datum]:
        if isinstance(index, slice):
            return self._batch.data(self.route)[index]
        batch = self._batch
        parents = batch.parents[index] if batch.parents is not None else ()
        return Datum(
            batch.values[index], batch.origins[index], self.route, None, parents, batch.trace
        )

    def __iter__(self) -> Iterator[Datum]:
        return iter(self._batch.data(self.route))

    def __repr__(self) -> str:
        return f"Data({len(self)} items via {self.route!r})"
