"""Helpers for testing code built on hotplumb: a fake clock and bounded waits.

Pass a :class:`FakeClock` to :func:`hotplumb.run` and time stands still until
the test moves it. Every timer, source and processing timeout in hotplumb reads
time through the topology's clock, so a test can cover minutes of timer ticks
in milliseconds, and the same test gives the same result every time.

How "let the woken tasks run" works. :func:`wait_all_tasks_blocked` yields to
the event loop (``await asyncio.sleep(0)``) pass after pass until two passes in
a row see no task make progress, that is, until every task is waiting for
something. :meth:`FakeClock.advance` does that after each wake-up, so by the
time it moves on to the next deadline, everything the previous one caused has
happened. Nothing here sleeps in real time; every wait is bounded by a number
of event-loop passes or by fake time.

Progress is read through public means only, so the helpers work on any event
loop that runs :class:`asyncio.Task` objects and runs ``call_soon`` callbacks
in the order they were scheduled: asyncio's own loops, uvloop and Pyodide's
``WebLoop`` (each is tested). A pass's mark of a task is its await chain, read
with :func:`asyncio.all_tasks` and the standard introspection attributes
(``cr_await``, ``gi_yieldfrom``, ``ag_await``, each frame's ``f_lasti``, and
:func:`gc.get_referents` to step from ``agen.__anext__()`` into the async
generator): every object on the chain, held for the comparison so that no
identity is reused, and the instruction offset of every frame. A task that runs
at all between two passes leaves another chain (every ``await`` makes a new
awaiting object), a new task or a finished one changes the set, and a task that
waits leaves its chain as it was. The second quiet pass is for wake-ups: a
callback that was ready when a pass began runs during it, and the task wake-up
it schedules runs during the next pass. What this cannot see is a chain of two
or more plain callbacks (``call_soon`` callbacks that reschedule themselves)
before any task wakes; nothing in hotplumb works that way. Loops keep their
ready queues to themselves (uvloop's is not reachable from Python, the
``WebLoop`` leaves them to the JavaScript event loop), which is why these
helpers do not read one.
"""

from __future__ import annotations

import asyncio
import gc
import heapq
import itertools
import math
import types
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["FakeClock", "wait_all_tasks_blocked", "wait_until"]

T = TypeVar("T")

# Quiet passes in a row that mean "every task waits" (see the module docstring).
_QUIET_PASSES = 2
# Await chains deeper than this are compared on their first _MAX_DEPTH links.
_MAX_DEPTH = 64


def _await_chain(task: asyncio.Task[Any]) -> tuple[object, ...]:
    """Where ``task`` stands: each awaiting object from its coroutine inwards, and frame offsets.

    Every object on the chain compares by identity (none of the types walked
    here defines ``__eq__``), the offsets by value.
    """
    marks: list[object] = []
    link: Any = task.get_coro()
    for _ in range(_MAX_DEPTH):
        kind = type(link)
        if kind is types.CoroutineType:
            frame, inner = link.cr_frame, link.cr_await
        elif kind is types.GeneratorType:
            frame, inner = link.gi_frame, link.gi_yieldfrom
        elif kind is types.AsyncGeneratorType:
            frame, inner = link.ag_frame, link.ag_await
        elif link is None:
            break
        else:
            frame = None
            # `agen.__anext__()` and `athrow()` objects do not expose their
            # generator as an attribute; it is among the objects they refer to.
            # Anything else (a future's iterator, say) ends the chain.
            inner = next(
                (r for r in gc.get_referents(link) if type(r) is types.AsyncGeneratorType),
                None,
            )
        marks.append(link)
        marks.append(-1 if frame is None else frame.f_lasti)
        link = inner
    return tuple(marks)


def _marks(me: asyncio.Task[Any] | None) -> dict[asyncio.Task[Any], tuple[object, ...]]:
    return {task: _await_chain(task) for task in asyncio.all_tasks() if task is not me}


async def wait_all_tasks_blocked(*, max_steps: int = 100_000) -> None:
    """Yield to the event loop until every other task is waiting for something.

    It yields pass after pass until two passes in a row see no task make
    progress (the module docstring says how progress is seen, and on which
    event loops).

    Args:
        max_steps: The most event-loop passes to wait.

    Raises:
        RuntimeError: Some task was still making progress after ``max_steps``
            passes (for instance, a loop that never awaits anything but
            ``sleep(0)``).

    Example:
        >>> async def main():
        ...     done = []
        ...     async def work():
        ...         for _ in range(3):
        ...             await asyncio.sleep(0)
        ...         done.append(True)
        ...     task = asyncio.create_task(work())
        ...     await wait_all_tasks_blocked()
        ...     return done
        >>> asyncio.run(main())
        [True]
    """
    me = asyncio.current_task()
    before = _marks(me)
    quiet = 0
    for _ in range(max_steps):
        await asyncio.sleep(0)
        after = _marks(me)
        quiet = quiet + 1 if after == before else 0
        if quiet >= _QUIET_PASSES:
            return
        before = after
    raise RuntimeError(f"tasks were still runnable after {max_steps} event-loop passes")


async def wait_until(predicate: Callable[[], bool], *, timeout: float = 5.0) -> None:
    """Yield to the event loop until ``predicate()`` is true.

    This never advances a :class:`FakeClock`; it lets tasks run. The timeout is
    in real (event-loop) time and is only a safety bound for a test that would
    otherwise hang.

    Args:
        predicate: Checked before each step.
        timeout: Real seconds to wait at most.

    Raises:
        TimeoutError: ``predicate()`` was still false after ``timeout`` seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() >= deadline:
            raise TimeoutError(f"condition still false after {timeout}s")
        await asyncio.sleep(0)


class FakeClock:
    """A clock whose time moves only when told to.

    It implements :class:`hotplumb.Clock`. Sleepers wake in deadline order
    (ties in the order they started sleeping), and after each wake-up every
    task gets to run until it waits again, before time moves on.

    Args:
        start: The initial time.
        epoch_offset: Seconds from the Unix epoch to the clock's time 0: what
            :mod:`hotplumb.otel` adds to :meth:`now` for span timestamps, so
            spans on a fake clock are deterministic.

    Example:
        >>> import hotplumb as hp
        >>> async def main():
        ...     clock = FakeClock()
        ...     seen = []
        ...     graph = hp.Graph({
        ...         "tick": hp.timer(10.0),
        ...         "out": hp.sink(lambda d: seen.append(d.value.index), inputs=["tick"]),
        ...     })
        ...     async with hp.run(graph, clock=clock):
        ...         await clock.advance(35.0)
        ...     return seen
        >>> asyncio.run(main())
        [1, 2, 3]
    """

    __slots__ = ("_advancing", "_now", "_order", "_sleepers", "epoch_offset")

    def __init__(self, start: float = 0.0, *, epoch_offset: float = 0.0) -> None:
        self._now = float(start)
        self.epoch_offset = float(epoch_offset)
        """Seconds from the Unix epoch to the clock's time 0."""
        # Invariant: a heap of (deadline, arrival order, future); futures that
        # are done (cancelled sleepers) are dropped when they reach the top.
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._advancing = False

    def now(self) -> float:
        """Return the current fake time."""
        return self._now

    async def sleep_until(self, deadline: float) -> None:
        """Sleep until the clock is advanced to ``deadline`` (yield once if it has)."""
        if math.isnan(deadline):
            raise ValueError("cannot sleep until NaN")
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline, next(self._order), future))
        await future

    @property
    def next_deadline(self) -> float | None:
        """The earliest deadline anyone sleeps until, or ``None``."""
        self._drop_cancelled()
        return self._sleepers[0][0] if self._sleepers else None

    @property
    def sleepers(self) -> int:
        """How many tasks sleep on this clock."""
        return sum(1 for _, _, f in self._sleepers if not f.done())

    def _drop_cancelled(self) -> None:
        sleepers = self._sleepers
        while sleepers and sleepers[0][2].done():
            heapq.heappop(sleepers)

    def _wake_due(self) -> None:
        sleepers = self._sleepers
        while sleepers and sleepers[0][0] <= self._now:
            future = heapq.heappop(sleepers)[2]
            if not future.done():
                future.set_result(None)

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking sleepers on the way.

        Args:
            seconds: How far to move; not negative.

        Raises:
            ValueError: ``seconds`` is negative.
            RuntimeError: Another ``advance`` is in progress, or tasks never
                settled (see :func:`wait_all_tasks_blocked`).
        """
        if not seconds >= 0:  # also refuses NaN
            raise ValueError(f"cannot move time backwards, or by NaN ({seconds})")
        await self.advance_to(self._now + seconds)

    async def advance_to(self, when: float) -> None:
        """Move time forward to ``when``, waking sleepers in deadline order.

        Before each wake-up and after the last one, every runnable task runs
        until it waits again.

        Args:
            when: The new time; not before :meth:`now`.

        Raises:
            ValueError: ``when`` is in the past.
            RuntimeError: Another ``advance`` is in progress, or tasks never
                settled.
        """
        if not when >= self._now or not math.isfinite(when):  # also refuses NaN
            raise ValueError(
                f"cannot move time backwards, or to NaN or infinity (from {self._now} to {when})"
            )
        if self._advancing:
            raise RuntimeError("FakeClock.advance is already running in another task")
        self._advancing = True
        try:
            await wait_all_tasks_blocked()
            while True:
                deadline = self.next_deadline
                if deadline is None or deadline > when:
                    break
                self._now = max(self._now, deadline)
                self._wake_due()
                await wait_all_tasks_blocked()
            self._now = when
        finally:
            self._advancing = False

    def jump(self, seconds: float) -> None:
        """Move time forward at once, without letting any task run.

        For code that must see time pass during a synchronous call (a plain
        callable that "takes" ``seconds``). Sleepers whose deadline passed are
        made runnable; they run when the caller next awaits.

        Args:
            seconds: How far to move; not negative.

        Raises:
            ValueError: ``seconds`` is negative.
        """
        if not seconds >= 0 or not math.isfinite(seconds):  # also refuses NaN
            raise ValueError(f"cannot move time backwards, or by NaN ({seconds})")
        self._now += seconds
        self._wake_due()

    async def drive(self, awaitable: Awaitable[T], *, max_time: float = 3600.0) -> T:
        """Await ``awaitable``, moving time to the next deadline whenever all tasks wait.

        This is "auto-jump": a test runs a whole timed scenario in fake time
        without choosing how far to advance.

        Args:
            awaitable: What to run (a coroutine or future).
            max_time: Fake seconds to allow at most.

        Returns:
            The result of ``awaitable``.

        Raises:
            TimeoutError: More than ``max_time`` fake seconds would pass.
            RuntimeError: Every task waits and nobody sleeps on the clock, so
                time cannot help (a deadlock).
        """
        task = asyncio.ensure_future(awaitable)
        limit = self._now + max_time
        try:
            while True:
                await wait_all_tasks_blocked()
                if task.done():
                    return task.result()
                deadline = self.next_deadline
                if deadline is None:
                    raise RuntimeError("every task is waiting and none sleeps on the clock")
                if deadline > limit:
                    raise TimeoutError(f"still running after {max_time} fake seconds")
                await self.advance_to(deadline)
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r}, sleepers={self.sleepers})"
