"""The live page in a real headless Chromium (Debian's), driven by Playwright."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

pytest.importorskip("starlette", reason="the live page needs the web extra")

import hotplumb as hp
import hotplumb.web
from tests.browsertools import SKIP_REASON, launch
from tests.webtools import serving

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from playwright.async_api import Browser, Page

# One browser for the module: the tests share its event loop, each with a page of its own.
pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

try:
    from playwright.async_api import async_playwright, expect
except ImportError:  # pragma: no cover - the dev extra has it
    async_playwright = expect = None  # type: ignore[assignment]

if SKIP_REASON is not None or async_playwright is None:
    pytest.skip(SKIP_REASON or "no playwright", allow_module_level=True)


def fragile(x: int) -> int:
    if x < 0:
        raise ValueError(f"negative: {x}")
    return x


def graph() -> hp.Graph:
    return hp.Graph(
        {
            "numbers": hp.Node(),
            "checked": hp.Node(fragile, inputs=["numbers"]),
            "out": hp.sink(lambda d: None, inputs=["checked"]),
        }
    )


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Browser]:
    assert async_playwright is not None
    async with async_playwright() as p:
        chromium = await launch(p)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest_asyncio.fixture(loop_scope="module")
async def browser_page(browser: Browser) -> AsyncIterator[Page]:
    page = await browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(10_000)
    try:
        yield page
    finally:
        await page.close()


async def row_text(page: Page, key: str, column: int) -> str:
    cell = page.locator(f'#nodes tbody tr[data-key="{key}"] td').nth(column)
    return await cell.inner_text()


async def test_the_page_shows_the_graph_and_counters_increase(browser_page: Page) -> None:
    page = browser_page
    async with hp.run(graph()) as topo, serving(hotplumb.web.app(topo, interval=0.05)) as url:
        await page.goto(f"http://{url}/")
        await page.locator('#nodes tbody tr[data-key="checked"]').wait_for()
        assert await row_text(page, "numbers", 1) == "entry"
        assert await row_text(page, "out", 1) == "target"
        assert await page.evaluate("window.hotplumbGraph.nodes().length") == 3
        for i in range(5):
            await topo.inject("numbers", i)
        received = page.locator('#nodes tbody tr[data-key="out"] td').nth(4)
        await expect(received).to_have_text("5")  # waits at most 5 s (expect's own bound)
        await page.locator('#nodes tbody tr[data-key="checked"]').click()
        assert '"key": "checked"' in await page.locator("#details").inner_text()


async def test_a_live_change_shows_up_without_a_reload(browser_page: Page) -> None:
    page = browser_page
    async with hp.run(graph()) as topo, serving(hotplumb.web.app(topo, interval=0.05)) as url:
        await page.goto(f"http://{url}/")
        await page.locator('#nodes tbody tr[data-key="out"]').wait_for()
        await page.evaluate("window.notReloaded = true")
        await topo.update(lambda g: g.add_node("audit", hp.sink(print, inputs=["numbers"])))
        await page.locator('#nodes tbody tr[data-key="audit"]').wait_for()
        assert await page.evaluate("window.hotplumbGraph.getElementById('audit').nonempty()")
        assert "added audit" in await page.locator("#changes").inner_text()
        await topo.update(lambda g: g.remove_node("out"))
        await page.locator('#nodes tbody tr[data-key="out"]').wait_for(state="detached")
        await page.locator('#nodes tbody tr[data-key="checked"]').wait_for(state="detached")
        assert await page.evaluate("window.notReloaded === true")
        assert "removed checked, out" in await page.locator("#changes").inner_text()


async def test_a_failing_node_turns_red_with_its_dead_letter_explained(
    browser_page: Page,
) -> None:
    page = browser_page
    async with hp.run(graph()) as topo, serving(hotplumb.web.app(topo, interval=0.05)) as url:
        await page.goto(f"http://{url}/")
        await page.locator('#nodes tbody tr[data-key="checked"]').wait_for()
        row = page.locator('#nodes tbody tr[data-key="checked"]')
        assert "failing" not in (await row.get_attribute("class") or "")
        await topo.inject("numbers", -3)
        await page.locator('#nodes tbody tr.failing[data-key="checked"]').wait_for()
        assert "ValueError: negative: -3" in await row_text(page, "checked", 9)
        assert await page.evaluate(
            "window.hotplumbGraph.getElementById('checked').hasClass('failing')"
        )
        colour = await row.locator("td").first.evaluate(
            "td => getComputedStyle(td).backgroundColor"
        )
        assert colour == "rgb(253, 226, 225)"
        letter = await page.locator("#dead-letters pre.dead-letter").first.inner_text()
        assert "failed at  checked" in letter
        assert "ValueError: negative: -3" in letter


async def test_the_page_works_with_a_token(browser_page: Page) -> None:
    page = browser_page
    web_app = hotplumb.web.app(graph(), token="t0ken", interval=0.05)
    async with serving(web_app) as url:
        refused = await page.goto(f"http://{url}/")
        assert refused is not None
        assert refused.status == 401
        await page.goto(f"http://{url}/?token=t0ken")
        await page.locator('#nodes tbody tr[data-key="checked"]').wait_for()
        assert "running" in await page.locator("#status").inner_text()
        assert await page.evaluate("window.hotplumbGraph.nodes().length") == 3
