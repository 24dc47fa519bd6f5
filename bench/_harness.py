"""Shared helpers for the benchmarks: timing runs, child processes, reports.

Timing: every run gets a fresh event loop (``asyncio.run``) after a
``gc.collect()``, and is timed with :func:`time.perf_counter` from inside the
loop, so loop creation and teardown are not counted. A run's failure is caught
and becomes a :class:`Failure` for the report instead of ending the benchmark.

Memory: measurements that need a clean heap (resident set size especially) run
in a child process (:func:`run_child`) that prints one JSON object as its last
line of output.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

__all__ = [
    "ChildFailed",
    "Failure",
    "Footnotes",
    "Measurement",
    "WrongCount",
    "command_line",
    "describe_error",
    "environment",
    "fmt_bytes",
    "fmt_count",
    "fmt_ns",
    "fmt_rate",
    "fmt_ratio",
    "markdown_table",
    "package_version",
    "peak_rss_bytes",
    "reset_peak_rss",
    "rss_bytes",
    "run_child",
    "time_run",
]

Align = Literal["left", "right"]


class WrongCount(AssertionError):
    """A contestant's sink saw a different number of items than the workload produces."""

    def __init__(self, got: int, expected: int) -> None:
        super().__init__(f"sink saw {got:,} items, expected {expected:,}")
        self.got = got
        self.expected = expected


class ChildFailed(RuntimeError):
    """A child process failed; the message is the last line of its stderr."""


@dataclass(frozen=True, slots=True)
class Failure:
    """A run that raised, or that could not run the workload.

    Attributes:
        message: What the report shows, e.g. ``"error: TimeoutError"`` or ``"n/a: ..."``.
    """

    message: str


@dataclass(frozen=True, slots=True)
class Measurement:
    """The wall-clock seconds of each timed repetition of one contestant on one workload."""

    seconds: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def spread(self) -> float:
        """``(slowest - fastest) / median``: how noisy the repetitions were."""
        return (max(self.seconds) - min(self.seconds)) / self.median

    def rate(self, items: int) -> float:
        """Items per second at the median time."""
        return items / self.median

    def added(self, seconds: float) -> Measurement:
        return Measurement((*self.seconds, seconds))


class Footnotes:
    """Keeps long messages out of table cells: a cell reads ``error [1]``, the note follows."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def cell(self, message: str) -> str:
        """Return a short cell for ``message`` (``"kind: detail"``) and keep its detail."""
        kind, _, detail = message.partition(": ")
        self.notes.append(detail or kind)
        return f"{kind} [{len(self.notes)}]"

    def render(self) -> str:
        """The notes as a markdown list, or ``""`` if there are none."""
        return "\n".join(f"- [{i}] {note}" for i, note in enumerate(self.notes, 1))


def time_run(
    make: Callable[[], Awaitable[int]],
    *,
    expected: int | None = None,
    timeout: float = 300.0,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Run ``make()`` in a fresh event loop and return the seconds it took.

    Args:
        make: Returns the awaitable to time (called inside the new loop); it
            evaluates to the number of items the contestant's sink saw.
        expected: The count the awaitable must return, if checked.
        timeout: Seconds before the run is abandoned with :class:`TimeoutError`.
        clock: What the seconds are read from: wall-clock time by default,
            or e.g. :func:`time.process_time` for the process's CPU time.

    Returns:
        The elapsed seconds, measured inside the loop.

    Raises:
        WrongCount: The awaitable returned another count than ``expected``.
        Exception: Whatever the run raised.
    """

    async def timed() -> tuple[int, float]:
        scope = asyncio.timeout(timeout)
        try:
            async with scope:
                start = clock()
                got = await make()
                return got, clock() - start
        except TimeoutError:
            if scope.expired():
                raise TimeoutError(f"no result within {timeout:g} s") from None
            raise

    gc.collect()
    got, seconds = asyncio.run(timed())
    if expected is not None and got != expected:
        raise WrongCount(got, expected)
    return seconds


def describe_error(exc: BaseException, limit: int = 160) -> str:
    """Return ``"error: Type: message"`` for a report, shortened to about ``limit`` characters."""
    if isinstance(exc, ChildFailed) or not str(exc):
        text = str(exc) or type(exc).__name__
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"error: {text}"


def run_child(script: str, args: Sequence[str], *, timeout: float = 300.0) -> dict[str, Any]:
    """Run ``python script *args`` and return the JSON object on its last line of stdout.

    Raises:
        ChildFailed: The child failed, timed out or printed no JSON; the
            message carries the last line of its stderr.
    """
    try:
        done = subprocess.run(
            [sys.executable, script, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ChildFailed(f"child timed out after {timeout:.0f} s") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        err = done.stderr.strip().splitlines()
        raise ChildFailed(err[-1] if err else f"child exited with {done.returncode}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def rss_bytes() -> int | None:
    """Return this process's current resident set size, or ``None`` where unknown."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def peak_rss_bytes() -> int | None:
    """Return this process's peak resident set size since the last :func:`reset_peak_rss`.

    Reads ``VmHWM`` from ``/proc/self/status`` (Linux). ``getrusage``'s
    ``ru_maxrss`` is no substitute: it survives ``exec``, so a child process
    inherits its parent's peak. Returns ``None`` where unknown.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_peak_rss() -> None:
    """Restart :func:`peak_rss_bytes` from the current resident set size, where possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def command_line() -> str:
    """The command that reproduces this run, relative to the current directory."""
    script = os.path.relpath(sys.argv[0]) if sys.argv else "?"
    return shlex.join(["python", script, *sys.argv[1:]])


def environment() -> list[str]:
    """Lines describing the interpreter and machine, for the top of a report."""
    return [
        f"- command: `{command_line()}`",
        f"- python: {platform.python_implementation()} {platform.python_version()}"
        f" ({sys.executable})",
        f"- platform: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs",
    ]


def markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[Align] | None = None
) -> str:
    """Format a markdown table with padded columns (readable as plain text too)."""
    if align is None:
        right: list[Align] = ["right"] * (len(headers) - 1)
        align = ["left", *right]
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    widths = [max(w, 3) for w in widths]

    def line(cells: Sequence[str]) -> str:
        padded = [
            c.ljust(w) if a == "left" else c.rjust(w)
            for c, w, a in zip(cells, widths, align, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = [
        ("-" * (w - 1) + ":") if a == "right" else "-" * w
        for w, a in zip(widths, align, strict=True)
    ]
    return "\n".join([line(headers), line(rule), *(line(r) for r in rows)])


def fmt_count(n: float) -> str:
    return f"{n:,.0f}"


def fmt_rate(items_per_second: float) -> str:
    return f"{items_per_second:,.0f}"


def fmt_ns(ns: float) -> str:
    return f"{ns:,.0f}" if ns >= 10 else f"{ns:.1f}"


def fmt_ratio(ratio: float) -> str:
    return f"{ratio:.2f}x" if ratio < 10 else f"{ratio:.1f}x"


def fmt_bytes(n: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n:,.0f} B"


def start_local_ray() -> str:
    """Start a local Ray on 127.0.0.1; return the temporary directory its files are in.

    Its hosts import the same hotplumb as this process; no authentication
    token is read from or written to the home directory.
    """
    import tempfile
    from pathlib import Path

    import ray

    import hotplumb

    root = tempfile.mkdtemp(prefix="hp-ray-")
    where = str(Path(hotplumb.__file__ or ".").resolve().parent.parent)
    paths = [where, *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
    os.environ.update(
        {
            "RAY_TMPDIR": root,
            "TMPDIR": root,
            "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0",
            # Else Ray binds to the machine's own address instead of 127.0.0.1.
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "PYTHONPATH": os.pathsep.join(dict.fromkeys(os.path.abspath(p) for p in paths)),
        }
    )
    for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        os.environ.pop(name, None)
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        _temp_dir=root,
        log_to_driver=False,
    )
    return root
