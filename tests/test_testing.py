"""hotplumb.testing's waits on every event loop the tests run on (see ``HOTPLUMB_LOOP``).

The waits read task progress through public means only; these tests check
that they wait for every kind of progress a task can make, and no longer.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from hotplumb.testing import FakeClock, wait_all_tasks_blocked

from .conftest import LOOP

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


async def test_the_tests_run_on_the_loop_asked_for() -> None:
    module = {"asyncio": "asyncio", "uvloop": "uvloop", "webloop": "pyodide"}[LOOP]
    assert type(asyncio.get_running_loop()).__module__.split(".")[0] == module
    other = asyncio.new_event_loop()  # what `asyncio.run` in a test would use
    try:
        assert type(other).__module__.split(".")[0] == module
    finally:
        other.close()


async def test_waits_for_a_task_that_yields_many_times() -> None:
    done: list[int] = []

    async def work() -> None:
        for _ in range(500):
            await asyncio.sleep(0)
        done.append(500)

    task = asyncio.create_task(work())
    await wait_all_tasks_blocked()
    assert done == [500]
    assert task.done()


async def test_waits_for_progress_inside_an_async_generator() -> None:
    # The task's own frame stands still on `async for` while the generator runs.
    seen: list[int] = []

    async def numbers() -> AsyncIterator[int]:
        for i in range(3):
            for _ in range(50):
                await asyncio.sleep(0)
            yield i

    async def consume() -> None:
        async for i in numbers():
            seen.append(i)
        await asyncio.Event().wait()

    task = asyncio.create_task(consume())
    try:
        await wait_all_tasks_blocked()
        assert seen == [0, 1, 2]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_waits_for_wake_ups_that_plain_callbacks_cause() -> None:
    event = asyncio.Event()
    woke: list[bool] = []

    async def waiter() -> None:
        await event.wait()
        woke.append(True)

    task = asyncio.create_task(waiter())
    await wait_all_tasks_blocked()
    assert not woke
    asyncio.get_running_loop().call_soon(event.set)
    await wait_all_tasks_blocked()
    assert woke == [True]
    assert task.done()


async def test_waits_for_chains_of_tasks_and_futures() -> None:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[int] = loop.create_future()
    got: list[int] = []

    async def stage(n: int) -> int:
        if n == 0:
            return await future
        return 1 + await asyncio.create_task(stage(n - 1))

    async def top() -> None:
        got.append(sum(await asyncio.gather(stage(10), stage(5))))

    task = asyncio.create_task(top())
    await wait_all_tasks_blocked()
    assert not got
    future.set_result(100)
    await wait_all_tasks_blocked()
    assert got == [215]
    assert task.done()


async def test_returns_while_tasks_wait_and_raises_while_one_never_does() -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    waiting = asyncio.create_task(forever())

    async def busy() -> None:
        while True:  # noqa: ASYNC110 - a task that never blocks is the point
            await asyncio.sleep(0)

    try:
        await wait_all_tasks_blocked(max_steps=10)  # `waiting` waits: this returns
        spinning = asyncio.create_task(busy())
        with pytest.raises(RuntimeError, match="still runnable after 10"):
            await wait_all_tasks_blocked(max_steps=10)
        spinning.cancel()
        await asyncio.gather(spinning, return_exceptions=True)
    finally:
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)


async def test_fake_clock_runs_a_chain_of_timed_steps_to_the_end() -> None:
    clock = FakeClock()
    log: list[float] = []

    async def steps() -> None:
        for _ in range(5):
            await clock.sleep_until(clock.now() + 1.0)
            await asyncio.sleep(0)
            log.append(clock.now())

    task = asyncio.create_task(steps())
    await clock.advance(10.0)
    assert log == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert task.done()
