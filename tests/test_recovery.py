"""Crash recovery end to end: a real process SIGKILLed at random moments, restarted from its store.

``tests/crash_child.py`` runs two resumable feeds into windowed rollups, a
merge and an exactly-once SQLite sink, with a checkpoint every few hundred
items and a live change of the merge every 700. Each scenario kills it a few
times (at a random moment, during a chosen checkpoint write, or during a live
change), restarts it from the same SQLite store each time, and lets the last
run finish. The rows the sink committed must be exactly those of an
uninterrupted run: none lost, none twice.

The CI profile runs a handful of seeded scenarios (dozens of kill points);
``slow`` runs many more, and ``HOTPLUMB_PROFILE=thorough`` more still.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hotplumb.examples.exactly_once import read_rows
from tests.crash_child import expected

if TYPE_CHECKING:
    from typing import Any

CHILD = Path(__file__).with_name("crash_child.py")
THOROUGH = os.environ.get("HOTPLUMB_PROFILE") == "thorough"
QUICK_SCENARIOS = 8
SLOW_SCENARIOS = 150 if THOROUGH else 12
RUN_TIMEOUT = 30.0


@dataclass(frozen=True)
class Outcome:
    returncode: int
    output: str


def run_child(where: Path, *options: str, kill_after: float | None = None) -> Outcome:
    """Run the child to its end, or SIGKILL it ``kill_after`` seconds after it is ready."""
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(where), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        if kill_after is not None:
            assert child.stdout is not None
            ready = child.stdout.readline()  # blocks until the topology runs (or the child ends)
            if ready.strip() == "ready":
                time.sleep(kill_after)
                child.send_signal(signal.SIGKILL)
        out, err = child.communicate(timeout=RUN_TIMEOUT)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    if child.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"the child failed ({child.returncode}):\n{err}")
    return Outcome(child.returncode, out)


def expected_rows() -> list[Any]:
    return list(expected())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    where = tmp_path_factory.mktemp("uninterrupted")
    outcome = run_child(where)
    assert (outcome.returncode, outcome.output.split()) == (0, ["ready", "done"])
    rows = read_rows(where / "out.db")
    assert rows == expected_rows()  # the child computes what it should
    return rows


def kills(seed: int) -> list[tuple[str, ...] | float]:
    """The kill points of one scenario: options for a self-kill, or a delay for an outside one.

    The first is a chosen moment of a fresh run (always reached): during a
    checkpoint's write, just after its commit, or during a live change; the
    others are random moments of the runs that recover.
    """
    rng = random.Random(seed)
    first = rng.choice(
        [
            f"write:{rng.randint(1, 2)}:{rng.randint(1, 6)}",
            f"commit:{rng.randint(1, 2)}",
            "change:1",
        ]
    )
    points: list[tuple[str, ...] | float] = [("--kill", first)]
    points += [rng.uniform(0.0, 0.15) for _ in range(3)]
    return points


def scenario(where: Path, seed: int) -> tuple[list[Any], int]:
    """Kill the child at each kill point of ``seed``, then let it finish; return rows and kills."""
    killed = 0
    for point in kills(seed):
        if isinstance(point, float):
            outcome = run_child(where, kill_after=point)
        else:
            outcome = run_child(where, *point)
        killed += outcome.returncode == -signal.SIGKILL
    final = run_child(where)
    assert final.returncode == 0
    return read_rows(where / "out.db"), killed


@pytest.mark.parametrize("seed", range(QUICK_SCENARIOS))
def test_killed_and_restarted_the_sink_gets_every_summary_once(
    tmp_path: Path, uninterrupted: list[Any], seed: int
) -> None:
    rows, killed = scenario(tmp_path, seed)
    assert killed >= 1, "no kill point was reached: the scenario tests nothing"
    assert rows == uninterrupted


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(QUICK_SCENARIOS, QUICK_SCENARIOS + SLOW_SCENARIOS))
def test_many_more_kill_points(tmp_path: Path, uninterrupted: list[Any], seed: int) -> None:
    rows, killed = scenario(tmp_path, seed)
    assert killed >= 1
    assert rows == uninterrupted


def gated(where: Path, *forget: str) -> list[Any]:
    """Checkpoint with an open window in ``roll/a``, die at once, recover, finish."""
    first = run_child(where, "--gate", "130", "--kill", "checkpoint:1", *forget)
    assert first.returncode == -signal.SIGKILL
    assert run_child(where, *forget).returncode == 0
    return read_rows(where / "out.db")


def test_a_checkpoint_holding_an_open_window_recovers_it(
    tmp_path: Path, uninterrupted: list[Any]
) -> None:
    assert gated(tmp_path) == uninterrupted


def test_negative_control_without_the_rollup_state_the_check_fails(
    tmp_path: Path, uninterrupted: list[Any]
) -> None:
    # The same crash, but roll/a's state is not restored: the window open at
    # the checkpoint (events 107 to 159; the feed is held before event 130)
    # loses the 23 events it had, and counts only the 30 after.
    rows = gated(tmp_path, "--forget", "roll/a")
    assert rows != uninterrupted
    differing = [r for r, u in zip(rows, uninterrupted, strict=True) if r != u]
    assert [r[0] for r in differing] == [2]
    assert differing[0][1] == 30
