"""Clocks: every timer and timeout in hotplumb reads time through one.

The runtime never calls :func:`time.monotonic` or :func:`asyncio.sleep` for
time-based behaviour directly; it asks the topology's clock. Tests swap in
:class:`hotplumb.testing.FakeClock` and advance time by hand.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["Clock", "Deadline", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """The time source used by timers and processing timeouts."""

    def now(self) -> float:
        """Return the current time in seconds (monotonic, arbitrary origin)."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Sleep until :meth:`now` reaches ``deadline`` (at once if it has)."""
        ...


class SystemClock:
    """The real clock: the event loop's monotonic time.

    ``now()`` is :func:`time.monotonic`, the clock asyncio's event loops keep
    time by (the default loop's ``time()`` is exactly this; uvloop's is the
    same clock, cached per loop iteration).
    """

    __slots__ = ()

    # Nodes that process one input at a time read the clock once per input, so
    # ``now`` is the builtin itself: no Python frame per reading.
    now = staticmethod(time.monotonic)

    async def sleep_until(self, deadline: float) -> None:
        """Sleep until ``deadline`` in event-loop time."""
        delay = deadline - self.now()
        await asyncio.sleep(max(delay, 0.0))

    def __repr__(self) -> str:
        return "SystemClock()"


class Deadline:
    """Bound the waits inside an ``async with`` block by a deadline on ``clock``.

    Like :func:`asyncio.timeout_at`, but on any :class:`Clock`: when ``clock``
    reaches ``when`` the current task is cancelled, and the block raises
    :class:`TimeoutError` instead of :class:`asyncio.CancelledError`. The
    awaited work runs in the caller's own task, so cancelling the caller
    (or the deadline) leaves nothing behind: a lock acquired in the block is
    the caller's to release, and a lock being waited for is given up. A
    cancellation that comes from elsewhere stays a cancellation.

    Args:
        clock: The clock the deadline is on.
        when: The deadline, or ``None`` for no bound.
    """

    __slots__ = ("_clock", "_done", "_expired", "_native", "_task", "_timer", "_when")

    def __init__(self, clock: Clock, when: float | None) -> None:
        self._clock = clock
        self._when = when
        self._task: asyncio.Task[Any] | None = None
        self._native: asyncio.Timeout | None = None
        self._timer: asyncio.Future[None] | asyncio.Handle | None = None
        self._expired = False
        self._done = False

    async def __aenter__(self) -> Deadline:
        when = self._when
        if when is None:
            return self
        if isinstance(self._clock, SystemClock):
            self._native = asyncio.timeout_at(when)
            await self._native.__aenter__()
            return self
        self._task = asyncio.current_task()
        if self._clock.now() >= when:
            self._timer = asyncio.get_running_loop().call_soon(self._expire)
        else:
            # A sleeper on the clock; this object owns it and cancels it on exit.
            self._timer = asyncio.ensure_future(self._sleep(when))
        return self

    async def _sleep(self, when: float) -> None:
        await self._clock.sleep_until(when)
        self._expire()

    def _expire(self) -> None:
        if not self._done and self._task is not None:
            self._expired = True
            self._task.cancel()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done = True
        if self._native is not None:
            await self._native.__aexit__(exc_type, exc, tb)
            return
        if self._timer is not None:
            self._timer.cancel()
        if (
            self._expired
            and exc_type is not None
            and issubclass(exc_type, asyncio.CancelledError)
            and self._task is not None
            and self._task.uncancel() == 0
        ):
            raise TimeoutError from exc

    @property
    def expired(self) -> bool:
        """Whether the deadline passed while the block ran."""
        if self._native is not None:
            return self._native.expired()
        return self._expired
