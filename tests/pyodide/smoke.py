"""The Pyodide smoke test: hotplumb's main paths on Pyodide's event loop, in seconds.

Run by ``scripts/pyodide --smoke`` (and so by CI every time) inside Pyodide
under Node, with the project's wheel installed. It checks that it is running
on Pyodide's ``WebLoop``, then runs the README's worked example (inject,
drain, a live replacement) and checks what it prints, makes a live change
while data flows (nothing lost, nothing delivered twice, each datum processed
by one version), and drives timers and a rollup on a ``FakeClock``. It prints
one line per check and ``N passed, N failed`` at the end; the exit status is
the number of failed checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hotplumb as hp
from hotplumb.testing import FakeClock, wait_all_tasks_blocked

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

ROOT = Path(__file__).resolve().parent.parent.parent
CHECKS: list[Callable[[], Awaitable[None]]] = []


def check(fn: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    CHECKS.append(fn)
    return fn


@check
async def the_loop_is_pyodides_webloop() -> None:
    loop = type(asyncio.get_running_loop())
    assert sys.platform == "emscripten", sys.platform
    assert loop.__name__ == "WebLoop", loop


@check
async def the_readme_example_prints_what_it_says() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.findall(r"```python\n(.*?)```", readme, flags=re.S)[0]
    # The example ends with `asyncio.run(main())`; here a loop is running already.
    assert block.rstrip().endswith("asyncio.run(main())"), block[-80:]
    namespace: dict[str, Any] = {"__name__": "readme"}
    exec(
        compile(block.rstrip().removesuffix("asyncio.run(main())"), "README.md", "exec"), namespace
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        await namespace["main"]()
    expected = [
        line.split("# ", 1)[1].strip()
        for line in block.splitlines()
        if line.lstrip().startswith("print(") and "# " in line
    ]
    assert out.getvalue().splitlines() == expected, out.getvalue()


@check
async def a_live_change_under_load_loses_nothing() -> None:
    got: list[hp.Datum] = []
    graph = hp.Graph(
        {
            "in": hp.Node(),
            "a": hp.Node(lambda x: ("old", x), inputs=["in"]),
            "out": hp.sink(got.append, inputs=["a"]),
        }
    )
    async with hp.run(graph, capacity=8) as topo:
        feeding = asyncio.create_task(topo.inject_many("in", range(500)))
        await asyncio.sleep(0)
        report = await topo.apply(
            topo.graph.add_node("a", hp.Node(lambda x: ("new", x), inputs=["in"]))
        )
        await feeding
        await topo.inject_many("in", range(500, 600))
        await topo.drain()
    assert report.changelist.replaced == {"a"}
    values = [d.value for d in got]
    assert [x for _, x in values] == list(range(600)), "lost, repeated or reordered data"
    versions = [v for v, _ in values]
    switch = versions.index("new")
    assert set(versions[:switch]) <= {"old"}, versions
    assert set(versions[switch:]) == {"new"}, versions
    assert all(d.path == ("in", "a", "out") for d in got)


@check
async def timers_and_rollups_run_on_a_fake_clock() -> None:
    clock = FakeClock()
    ticks: list[hp.Tick] = []
    summaries: list[hp.Datum] = []
    graph = hp.Graph(
        {
            "tick": hp.timer(10.0),
            "numbers": hp.Node(),
            "window": hp.rollup(["numbers"], "tick"),
            "ticks": hp.sink(lambda d: ticks.append(d.value), inputs=["tick"]),
            "out": hp.sink(summaries.append, inputs=["window"]),
        }
    )
    async with hp.run(graph, clock=clock) as topo:
        await topo.inject_many("numbers", [1, 2, 3])
        await clock.advance(10.0)
        await topo.inject("numbers", 4)
        await clock.advance(25.0)
    assert [(t.scheduled, t.index) for t in ticks] == [(10.0, 1), (20.0, 2), (30.0, 3)], ticks
    parents = [[p.value for p in d.parents] for d in summaries]
    assert parents[:2] == [[1, 2, 3], [4]], parents


@check
async def the_test_helpers_see_busy_and_waiting_tasks() -> None:
    done: list[int] = []

    async def work() -> None:
        for _ in range(200):
            await asyncio.sleep(0)
        done.append(1)

    task = asyncio.create_task(work())
    await wait_all_tasks_blocked()
    assert done == [1]
    assert task.done()

    async def busy() -> None:
        while True:  # noqa: ASYNC110 - a task that never blocks is the point
            await asyncio.sleep(0)

    spinning = asyncio.create_task(busy())
    try:
        await wait_all_tasks_blocked(max_steps=20)
    except RuntimeError:
        pass
    else:
        raise AssertionError("a task that never waits went unnoticed")
    finally:
        spinning.cancel()
        await asyncio.gather(spinning, return_exceptions=True)


async def main() -> int:
    where = Path(hp.__file__).parent
    print(f"hotplumb from {where} on Python {sys.version.split()[0]} ({sys.platform})")
    failed = 0
    for fn in CHECKS:
        try:
            await asyncio.wait_for(fn(), timeout=30)
        except Exception:
            failed += 1
            print(f"FAILED {fn.__name__}")
            traceback.print_exc()
        else:
            print(f"ok     {fn.__name__}")
    print(f"pyodide smoke: {len(CHECKS) - failed} passed, {failed} failed")
    return failed


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
