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

The Ray tests (``tests/test_raywire.py``, ``tests/test_raypull.py``) share the
session fixture :func:`cluster`: one local Ray for the whole session
(``ray.init`` costs seconds), on 127.0.0.1, its files under a pytest
temporary directory, with no authentication token read from or written to
the home directory. Ray is imported only when a test asks for it.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

# Ray "resolves" 127.0.0.1 to the machine's own address, and binds there, unless it runs
# as on a laptop (the name says Windows or macOS; it works on Linux). Ray reads it as it
# is imported, so it is set before any test module imports Ray.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

REPOSITORY = Path(__file__).resolve().parent.parent

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


_RAY_SET = {
    "RAY_AUTH_MODE": "disabled",  # no token read from or written to ~/.ray
    "RAY_USAGE_STATS_ENABLED": "0",
}
_RAY_UNSET = ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A local Ray for the session: its files in a temporary directory, no auth token."""
    import ray

    # Short: Ray's socket paths under it must stay within the 107 bytes of a Unix socket.
    root = tmp_path_factory.mktemp("ray")
    names = (*_RAY_SET, *_RAY_UNSET, "RAY_TMPDIR", "TMPDIR", "PYTHONPATH")
    saved = {name: os.environ.get(name) for name in names}
    for name in _RAY_UNSET:
        os.environ.pop(name, None)
    os.environ.update(_RAY_SET)
    os.environ["RAY_TMPDIR"] = os.environ["TMPDIR"] = str(root)
    # The workers import the test modules they run (tests.raynodes, ...) by name.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPOSITORY), saved["PYTHONPATH"]) if p
    )
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        _temp_dir=str(root),
        log_to_driver=False,
    )
    try:
        yield
    finally:
        ray.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
