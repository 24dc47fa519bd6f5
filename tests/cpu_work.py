"""Module-level callables for process-pool tests: a worker process imports them by name.

A lambda or a closure cannot be sent to a process pool; these can.
"""

from __future__ import annotations

import os
import time


def square_with_pid(value: int) -> tuple[int, int]:
    """``(value squared, the pid of the process that computed it)``."""
    return value * value, os.getpid()


def burn(value: int) -> int:
    """CPU-bound work: ``sum(range(20000))``, plus ``value`` so results differ."""
    return sum(range(20_000)) + value


def linger(job: tuple[str, float]) -> int:
    """Write this worker's pid to the file ``job[0]``, then block ``job[1]`` seconds."""
    path, seconds = job
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(seconds)
    return os.getpid()
