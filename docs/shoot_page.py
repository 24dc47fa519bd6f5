"""Take docs/live-page.png: the live page of a small running topology, in headless Chromium.

Run from ``docs/`` with the dev extra installed and Debian's chromium:
``python shoot_page.py`` (tracebacks on the page then show a short file name).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from pathlib import Path

from playwright.async_api import async_playwright

import hotplumb as hp
import hotplumb.web
from hotplumb.web import serve

FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# Compiled under a short name, so the page's traceback reads as an application's would.
_namespace: dict[str, object] = {}
exec(compile("def parse(raw):\n    return int(raw)\n", "app.py", "exec"), _namespace)
parse = _namespace["parse"]


def factory(k: object) -> hp.Node | None:
    match k:
        case {"subscriptions": subs}:
            return hp.Node(inputs=[hp.key(parsed=s) for s in sorted(subs)])
        case {"parsed": s}:
            return hp.Node(parse, inputs=[hp.key(subscription=s)])
        case {"subscription": _}:
            return hp.Node()
    return None


async def main() -> None:
    graph = hp.Graph(
        {
            "client/alice": hp.sink(lambda d: None, inputs=[hp.key(subscriptions={"foo", "bar"})]),
            "client/bob": hp.sink(lambda d: None, inputs=[hp.key(subscriptions={"foo"})]),
        },
        factory,
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    async with hp.run(graph) as topo:
        web_app = hotplumb.web.app(topo, interval=0.1)
        servers: list = []
        task = asyncio.create_task(
            serve(web_app, sock=sock, log_level="warning", server_hook=servers)
        )
        while not (servers and servers[0].started):
            await asyncio.sleep(0.05)
        for i in range(40):
            await topo.inject(hp.key(subscription="foo"), str(i))
            await topo.inject(hp.key(subscription="bar"), "oops" if i == 7 else str(i))
        await topo.update(
            lambda g: g.add_node("client/carol", hp.sink(print, inputs=[hp.key(parsed="bar")]))
        )
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=shutil.which("chromium"), args=FLAGS)
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            await page.goto(f"http://127.0.0.1:{port}/")
            await page.locator('#nodes tbody tr[data-key="client/carol"]').wait_for()
            await page.locator("#dead-letters pre").first.wait_for()
            await page.locator('#nodes tbody tr[data-key="parsed=bar"]').click()
            await asyncio.sleep(0.5)
            out = Path(__file__).resolve().parent / "live-page.png"
            await page.screenshot(path=str(out), full_page=True)
            await browser.close()
        servers[0].should_exit = True
        await task


if __name__ == "__main__":
    asyncio.run(main())
