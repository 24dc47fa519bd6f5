"""Clocks: every timer and timeout in hotplumb reads time through one.

The runtime never calls :func:`time.monotonic` or :func:`asyncio.sleep` for
time-based behaviour directly; it asks the topology's clock. Tests swap in
:class:`hotplumb.testing.FakeClock` and advance time by hand.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol, TypeVar, runtime_checkable

__all__ = ["Clock", "SystemClock", "run_with_timeout"]

T = TypeVar("T")


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
    """The real clock: the event loop's monotonic time."""

    __slots__ = ()

    def now(self) -> float:
        """Return the event loop's time when inside one, else :func:`time.monotonic`."""
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return time.monotonic()

    async def sleep_until(self, deadline: float) -> None:
        """Sleep until ``deadline`` in event-loop time."""
        delay = deadline - self.now()
        await asyncio.sleep(max(delay, 0.0))

    def __repr__(self) -> str:
        return "SystemClock()"


async def run_with_timeout(clock: Clock, coro: asyncio.Future[T] | object, seconds: float) -> T:
    """Await ``coro`` but raise :class:`TimeoutError` after ``seconds`` on ``clock``.

    Args:
        clock: The clock that measures the timeout.
        coro: A coroutine or future.
        seconds: The allowed time.

    Returns:
        The coroutine's result.

    Raises:
        TimeoutError: The time ran out first; the coroutine is cancelled.
    """
    if isinstance(clock, SystemClock):
        async with asyncio.timeout(seconds):
            return await coro  # type: ignore[no-any-return,misc]
    work: asyncio.Future[T] = asyncio.ensure_future(coro)  # type: ignore[arg-type]
    timer = asyncio.ensure_future(clock.sleep_until(clock.now() + seconds))
    try:
        await asyncio.wait((work, timer), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        work.cancel()
        timer.cancel()
        raise
    if work.done():
        timer.cancel()
        await asyncio.wait((timer,))
        return work.result()
    work.cancel()
    # Whatever the cancelled work ends with (its cancellation, or an error
    # raised while it unwound), the outcome is the timeout.
    await asyncio.wait((work,))
    if not work.cancelled() and work.exception() is not None:
        raise TimeoutError(f"took longer than {seconds}s") from work.exception()
    raise TimeoutError(f"took longer than {seconds}s")
