"""Time as nodes: :func:`timer` sources and windowed :func:`rollup` nodes.

Timers are ordinary generator sources (kind :attr:`~hotplumb.NodeKind.TIMER`),
so they follow the runtime's demand rules: a timer ticks only while it is
active, that is, while something reads it, and its generator is cancelled when
the node is removed. Every timer reads time through the topology's clock
(``context.clock``), so tests drive them with
:class:`hotplumb.testing.FakeClock`.

The missed-tick policy. A timer with period ``p`` started at time ``t0`` has
boundaries ``t0 + p``, ``t0 + 2p``, ... At each boundary it makes one
:class:`Tick` and hands it to its entry channel, which holds one tick (the
node's capacity is 1); each reader's channel from the timer holds one tick too
(``output_capacity=1``), whatever the reader's own capacity. If a reader is
slow, backpressure reaches the timer at once and
the hand-over waits; meanwhile no further ticks are made. When the hand-over
completes and boundaries have passed, the timer emits one tick for the latest
passed boundary, with ``missed`` set to the number of boundaries it skipped.
So a slow reader never has more than one tick waiting for it, and what it gets
next is recent, and no tick is silently lost:
``index`` counts boundaries and ``missed`` says how many had no tick of their
own.

Checkpoints. A timer is a resumable source whose offset is its phase (its
start and the index of its last tick), and a rollup's open window is its
state: both are recorded by a checkpoint and recovered with it. A timer
recovered onto a clock that reads earlier than its last tick (a new process
whose monotonic clock has another origin) keeps its index and period and
starts its next period from now.

Rollups. :func:`rollup` collects what arrives on its data inputs and, on each
tick from its timer input, emits one summary of the window and starts a new
one. The summary is derived from the data of the window: its provenance
(:attr:`~hotplumb.Datum.parents`) holds exactly those data, each with its own
path. Windows are in processing order: a datum belongs to the window that is
open when the rollup processes it.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hotplumb._datum import Datum, emit
from hotplumb._node import SKIP, Node, NodeKind, resumable_source

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Hashable, Iterable

    from hotplumb._context import Context

__all__ = ["Tick", "Window", "rollup", "timer"]


@dataclass(frozen=True, slots=True)
class Tick:
    """One tick of a :func:`timer`.

    Attributes:
        scheduled: The clock time the tick was due (``start + index * period``),
            not the time it was emitted.
        index: Which boundary of the timer's schedule this is: the first tick
            is 1. Indices only grow; a gap is reported in ``missed``.
        missed: How many boundaries just before this one got no tick because
            readers were behind (they are coalesced into this tick).
        period: The timer's period in seconds.
    """

    scheduled: float
    index: int
    missed: int
    period: float


@dataclass(frozen=True, slots=True)
class Window:
    """One closed window of a :func:`rollup`: what its ``fold`` is given.

    Attributes:
        start: When the window opened: the scheduled time of the tick that
            closed the previous window (for the first window, the timer's start).
        end: The scheduled time of the tick that closed it.
        values: The data values the rollup processed in the window, in order.
        missed: Timer boundaries coalesced into the closing tick (see
            :class:`Tick`); the window then spans several periods.
        partial: Whether the window was closed early, not by a tick: the
            rollup was flushed because the topology closed or a change
            removed it. ``end`` is then the clock time of the flush.
    """

    start: float
    end: float
    values: tuple[Any, ...]
    missed: int = 0
    partial: bool = False

    @property
    def count(self) -> int:
        """How many values the window holds."""
        return len(self.values)


def timer(period: float) -> Node:
    """Build a timer: a source that emits a :class:`Tick` every ``period`` seconds.

    The timer ticks on the topology's clock while something reads it, starting
    one period after it starts. Timers with the same period are equal nodes, so
    regenerating one (for instance, from a new factory) does not restart it.
    See the module documentation for the missed-tick policy.

    Args:
        period: Seconds between ticks; positive and finite.

    Returns:
        A node of kind :attr:`~hotplumb.NodeKind.TIMER`.

    Raises:
        ValueError: ``period`` is not a positive finite number.

    Example:
        >>> t = timer(10.0)
        >>> t.effective_kind, t == timer(10)
        (<NodeKind.TIMER: 'timer'>, True)
    """
    if isinstance(period, bool) or not isinstance(period, int | float):
        raise TypeError(f"timer period must be a number of seconds, got {period!r}")
    if not math.isfinite(period) or period <= 0:
        raise ValueError(f"timer period must be positive and finite, got {period!r}")
    period = float(period)
    produce = _TICKS.get(period)
    if produce is None:
        produce = _TICKS[period] = _ticks(period)
    return resumable_source(produce, kind=NodeKind.TIMER, capacity=1, output_capacity=1)


# One generator function per period, so timers of equal period are equal nodes.
# It lives as long as some node refers to it: however many periods come and go,
# two live timers of one period share it.
_TICKS: weakref.WeakValueDictionary[float, Callable[..., AsyncIterator[Any]]] = (
    weakref.WeakValueDictionary()
)


def _ticks(period: float) -> Callable[..., AsyncIterator[Any]]:
    async def ticks(
        ctx: Context, phase: tuple[float, int] | None
    ) -> AsyncIterator[tuple[Tick, tuple[float, int]]]:
        clock = ctx.clock
        await ctx.wait_for_demand()
        if phase is None:
            start, due = clock.now(), 1  # due: the next boundary that has no tick yet
        else:
            start, last = phase
            due = last + 1
            if clock.now() < start + last * period:
                # The clock has another origin (a new process): keep the index,
                # and put the last tick's boundary at now.
                start = clock.now() - last * period
        while True:
            await clock.sleep_until(start + due * period)
            index = _latest_boundary(start, period, due, clock.now())
            yield Tick(start + index * period, index, index - due, period), (start, index)
            due = index + 1

    ticks.__qualname__ = ticks.__name__ = f"timer_{period:g}s"
    return ticks


def _latest_boundary(start: float, period: float, due: int, now: float) -> int:
    """The largest ``n >= due`` with ``start + n * period <= now`` (``due`` if none)."""
    n = max(due, int((now - start) // period))
    # Division may be off by one; settle on the same arithmetic as the deadlines.
    while n > due and start + n * period > now:
        n -= 1
    while start + (n + 1) * period <= now:
        n += 1
    return n


@dataclass(slots=True)
class _RollupState:
    """The open window of a rollup (owned by the runtime as the node's state)."""

    data: list[Datum] = field(default_factory=list)
    # The scheduled time of the tick that closed the last window, if any.
    end: float | None = None
    # When the first datum arrived, before any tick (a flush's window start).
    opened: float | None = None


def rollup(
    data_inputs: Iterable[Hashable],
    timer_input: Hashable,
    fold: Callable[[Window], Any] | None = None,
    *,
    emit_empty: bool = True,
    **options: Any,
) -> Node:
    """Build a windowed rollup: collect data, emit one summary per tick.

    Everything that arrives on ``data_inputs`` joins the open window. Each
    :class:`Tick` from ``timer_input`` closes it: ``fold(window)`` is emitted,
    with the window's data as its provenance (``datum.parents``), and a new
    window opens. The node is stateful; if it replaces a running rollup (for
    instance, a new factory changes ``fold``), the open window carries over
    and the new version summarises it.

    Empty windows produce a summary too, by default: a regular "nothing
    arrived" tells readers the feed is quiet rather than stalled, and keeps
    downstream merges ticking. Pass ``emit_empty=False`` to skip them.

    If ``fold`` raises, the tick fails (see ``Node.on_error``) and the window
    stays open: its data go into the next summary.

    When the topology closes with a drain, or a live change removes the
    rollup, its open window is flushed: if it holds data, ``fold`` gets it as
    a :class:`Window` with ``partial=True`` (ending at the clock's time) and
    the summary goes to the readers like any other.

    Args:
        data_inputs: The keys whose data are rolled up.
        timer_input: The key of a timer (see :func:`timer`).
        fold: Makes the summary from a :class:`Window`; by default the summary
            is the window itself (its ``count`` and ``values``).
        emit_empty: Whether an empty window is summarised.
        **options: Further :class:`~hotplumb.Node` fields (``on_error``, ...).

    Returns:
        A stateful node reading ``(*data_inputs, timer_input)``.

    Raises:
        ValueError: There are no data inputs, or the timer is one of them.

    Example:
        >>> node = rollup(["clicks"], "every 10s", fold=lambda w: w.count)
        >>> node.inputs
        ('clicks', 'every 10s')
    """
    data = tuple(data_inputs)
    if not data:
        raise ValueError("a rollup needs at least one data input")
    if timer_input in data:
        raise ValueError(f"the timer input {timer_input!r} is also a data input")
    summarise: Callable[[Window], Any] = fold if fold is not None else _window

    def roll(value: Any, ctx: Context) -> Any:
        state: _RollupState = ctx.state
        if ctx.from_input != timer_input:
            if state.end is None and state.opened is None:
                state.opened = ctx.clock.now()
            state.data.append(ctx.datum)
            return SKIP
        if not isinstance(value, Tick):
            raise TypeError(f"rollup timer input {timer_input!r} sent {value!r}, not a Tick")
        start = state.end
        if start is None:
            start = value.scheduled - (value.missed + 1) * value.period
        parents = tuple(state.data)
        if not parents and not emit_empty:
            state.end = value.scheduled
            return SKIP
        window = Window(start, value.scheduled, tuple(d.value for d in parents), value.missed)
        summary = summarise(window)  # may raise: the window then stays open
        state.data.clear()
        state.end = value.scheduled
        return emit(summary, parents=parents)

    def flush(ctx: Context) -> Any:
        state: _RollupState = ctx.state
        parents = tuple(state.data)
        if not parents:
            return SKIP  # an empty open window says nothing a tick would not
        now = ctx.clock.now()
        start = state.end if state.end is not None else state.opened
        assert start is not None  # set when the first datum arrived
        window = Window(start, now, tuple(d.value for d in parents), 0, partial=True)
        summary = summarise(window)
        state.data.clear()
        state.end = now
        return emit(summary, parents=parents)

    options.setdefault("flush", flush)
    return Node(roll, inputs=(*data, timer_input), state=_RollupState, **options)


def _window(window: Window) -> Window:
    return window
