"""The in-browser demo (docs/pyodide/): the feed-rollup scenario inside Pyodide, in Chromium.

``docs/pyodide/build.py`` assembles the page (the page, Pyodide's files from the
npm package, hotplumb's wheel built from the checkout, the vendored JS) into a
temporary directory; a thread serves it on 127.0.0.1 with ``http.server``; Debian's
headless chromium, driven by Playwright as in ``tests/test_page.py``, opens it.
The page's Python half (``docs/pyodide/demo.py``) also runs here on CPython, on a
``FakeClock``.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import importlib.util
import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import hotplumb as hp
from hotplumb.examples.feed_rollup import FeedRollup
from hotplumb.testing import FakeClock
from tests.browsertools import SKIP_REASON, launch

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import ModuleType

PAGE = Path(__file__).resolve().parents[1] / "docs" / "pyodide"
DURATION = 3.0  # seconds of the scenario, in real time in the browser


def load(name: str) -> ModuleType:
    """Import ``docs/pyodide/<name>.py`` (the directory is not a package)."""
    spec = importlib.util.spec_from_file_location(f"pyodide_page_{name}", PAGE / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def expected_keys() -> set[str]:
    """The keys running at the end of the scenario, from a run on a fake clock."""
    clock = FakeClock()
    final: list[set[str]] = []

    def after(when: str, topo: hp.Topology) -> None:
        if when == "after":
            final.append({hp.format_key(k) for k in topo.running_keys()})

    await clock.drive(FeedRollup(seed=1, duration=DURATION).run(clock, checkpoint=after))
    return final[0]


async def test_the_demo_draws_every_change_and_ends_verified() -> None:
    demo = load("demo")
    states: list[dict[str, Any]] = []
    clock = FakeClock()
    ok = await clock.drive(
        demo.main(lambda text: states.append(json.loads(text)), duration=DURATION, clock=clock)
    )
    assert ok is True
    last = states[-1]
    assert last["verification"]["ok"] is True
    assert last["verification"]["lines"][0].startswith("verification: ok (")
    assert last["closed"] is True
    assert {n["key"] for n in last["snapshot"]["nodes"]} == await expected_keys()
    assert len(states) >= DURATION / 0.25  # one state every 250 ms of the scenario
    changes = last["changes"]
    assert [c["added"] for c in changes if "client/carol" in c["added"]]
    assert [c["removed"] for c in changes if "client/bob" in c["removed"]]
    assert any(c["replaced"] for c in changes)  # the factory swap
    delivered = [
        sum(n["counters"]["emitted"] for n in s["snapshot"]["nodes"] if n["key"] == "client/alice")
        for s in states
    ]
    assert delivered == sorted(delivered)
    assert delivered[-1] > delivered[0]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def http_serving(directory: Path) -> Iterator[str]:
    """Serve ``directory`` on a free port of 127.0.0.1 from a thread; yield its base URL."""
    handler = functools.partial(_Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        assert not thread.is_alive()


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.timeout(180)  # builds a wheel (about 15 s here) and starts Pyodide
async def test_the_page_runs_the_demo_in_pyodide_and_draws_it_live(tmp_path: Path) -> None:
    if SKIP_REASON is not None:
        pytest.skip(SKIP_REASON)
    from playwright.async_api import async_playwright, expect

    build = load("build")
    missing = [n for n in build.PYODIDE_FILES if not (build.PYODIDE / n).is_file()]
    if missing:
        pytest.skip(f"Pyodide is not installed from npm ({build.PYODIDE}): scripts/pyodide --setup")
    site = build.build(tmp_path / "site")
    expected = await expected_keys()
    with http_serving(site) as url:
        async with async_playwright() as p:
            chromium = await launch(p)
            try:
                page = await chromium.new_page(viewport={"width": 1400, "height": 900})
                page.set_default_timeout(60_000)  # Pyodide starts in seconds; be generous
                elsewhere: list[str] = []
                page.on(
                    "request",
                    lambda r: None if r.url.startswith(url) else elsewhere.append(r.url),
                )
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                await page.goto(f"{url}/?duration={DURATION}")
                alice = page.locator('#nodes tbody tr[data-key="client/alice"] td').nth(5)
                await alice.wait_for()
                first = int(await alice.inner_text())
                verification = page.locator("#verification")
                await expect(verification).to_contain_text("verification:", timeout=60_000)
                assert (await verification.inner_text()).startswith("verification: ok"), errors
                last = int(await alice.inner_text())
                assert last > first
                drawn = await page.evaluate("window.hotplumbGraph.nodes().map(n => n.id())")
                assert set(drawn) == expected
                rows = await page.locator("#nodes tbody tr").evaluate_all(
                    "rows => rows.map(r => r.dataset.key)"
                )
                assert set(rows) == expected
                assert "removed client/bob" in await page.locator("#changes").inner_text()
                assert elsewhere == []
                assert errors == []
            finally:
                await chromium.close()
