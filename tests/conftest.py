"""Shared test configuration: hypothesis profiles and the event loop the tests run on.

``HOTPLUMB_PROFILE=thorough`` runs many more examples; the default is ``ci``.

``HOTPLUMB_LOOP=uvloop`` runs the tests on uvloop instead of asyncio's default
loop: pytest-asyncio's tests get their loops from ``uvloop.new_event_loop``
(through its ``pytest_asyncio_loop_factories`` hook), and the event loop
policy is uvloop's, so tests that call ``asyncio.run`` themselves (the
property tests) run there too. The header of pytest's report names the loop.

Under the thorough profile the slow tests (the property tests among them) get
``THOROUGH_TIMEOUT`` seconds instead of the configured per-test timeout, which
is sized for the ``ci`` profile.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

PROFILE = os.environ.get("HOTPLUMB_PROFILE", "ci")
THOROUGH_TIMEOUT = 3600

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(PROFILE)

LOOPS = ("asyncio", "uvloop")
# Pyodide has one loop, its own WebLoop (tests/pyodide/run_pytest.py runs the tests there).
LOOP = "webloop" if sys.platform == "emscripten" else os.environ.get("HOTPLUMB_LOOP", "asyncio")
if LOOP not in (*LOOPS, "webloop"):
    raise pytest.UsageError(f"HOTPLUMB_LOOP must be one of {', '.join(LOOPS)}, not {LOOP!r}")

if LOOP == "uvloop":
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    def pytest_asyncio_loop_factories(
        config: pytest.Config, item: pytest.Item
    ) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
        """Give every asyncio test a uvloop loop."""
        return {"uvloop": uvloop.new_event_loop}


def pytest_report_header(config: pytest.Config) -> str:
    """Name the event loop in the report's header."""
    return f"event loop: {LOOP} (HOTPLUMB_LOOP)"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if PROFILE != "thorough":
        return
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(pytest.mark.timeout(THOROUGH_TIMEOUT))
