"""What the Ray tests check with, in the test process: order, completeness, a bounded wait."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    """Wait until ``check()`` is true, asking every 20 ms; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout} s")
        await asyncio.sleep(0.02)


def check_in_order(want: list[Any], got: list[Any]) -> None:
    """Each item and control message once, in order; the first difference is the failure."""
    for index, (expected, taken) in enumerate(zip(want, got, strict=False)):
        if expected != taken:
            raise AssertionError(
                f"message {index}: expected {expected!r}, got {taken!r} "
                f"(then {got[index + 1 : index + 4]!r})"
            )
    if len(got) != len(want):
        raise AssertionError(f"{len(got)} messages taken, {len(want)} put")


def flat(messages: list[Any]) -> list[Any]:
    """Values and control messages in order, from lists of values and control messages."""
    return [v for m in messages for v in (m if isinstance(m, list) else [m])]
