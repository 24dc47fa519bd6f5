"""hotplumb serve: the command, and --reload updating the running topology live."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from typing import TYPE_CHECKING, Any

import pytest

pytest.importorskip("starlette", reason="hotplumb serve needs the web extra")
pytest.importorskip("websockets", reason="the serve tests need websockets")

from websockets.asyncio.client import connect

from hotplumb._cli import main
from hotplumb._serve import serve_target
from hotplumb.testing import wait_until
from tests.webtools import receive_json

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    import uvicorn

    from hotplumb.web import WebApp

MODULE = """
import hotplumb as hp

VERSION = {version!r}

def factory(k):
    match k:
        case {{"tagged": str(src)}}:
            return hp.Node(lambda v: [VERSION, v], inputs=[src])
    return None

graph = hp.Graph({{"numbers": hp.Node()}}, factory)
"""


def write(path: Path, text: str) -> None:
    path.write_text(text)


class Served:
    def __init__(self) -> None:
        self.app: WebApp | None = None
        self.server: uvicorn.Server | None = None

    def hook(self, web_app: WebApp, server: Any) -> None:
        self.app, self.server = web_app, server


@contextlib.asynccontextmanager
async def serving(target: str, served: Served) -> AsyncIterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    task = asyncio.create_task(
        serve_target(
            target, sock=sock, reload=True, poll=0.02, log_level="warning", hook=served.hook
        )
    )
    try:
        await wait_until(lambda: served.server is not None and served.server.started, timeout=10)
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        if served.server is not None:
            served.server.should_exit = True
        async with asyncio.timeout(15):
            await asyncio.gather(task, return_exceptions=True)
        sock.close()


async def test_reload_updates_the_running_topology_while_a_subscriber_stays_connected(
    tmp_path: Path,
) -> None:
    module = tmp_path / "live_app.py"
    write(module, MODULE.format(version="v1"))
    served = Served()
    total, cut = 60, 30
    async with serving(f"{module}:graph", served) as url:
        assert served.app is not None
        topo = served.app.topology
        ws = await connect(f"ws://{url}/api/subscribe")
        await ws.send(json.dumps({"key": {"tagged": "numbers"}}))
        assert (await receive_json(ws))["type"] == "subscribed"
        got: list[Any] = []
        for i in range(cut):
            await topo.inject("numbers", i)
        while len(got) < cut:
            got.append((await receive_json(ws))["value"])
        generation = topo.generation
        write(module, MODULE.format(version="version two"))  # a different size
        await wait_until(lambda: topo.generation > generation, timeout=10)
        for i in range(cut, total):
            await topo.inject("numbers", i)
        while len(got) < total:
            got.append((await receive_json(ws))["value"])
        # the same connection, nothing lost, old version's outputs then the new one's
        assert got == [["v1", i] for i in range(cut)] + [
            ["version two", i] for i in range(cut, total)
        ]
        notices = list(served.app.hub.notices)
        assert notices[-1]["level"] == "info"
        assert "reloaded" in notices[-1]["text"]
        await ws.close()


async def test_a_broken_edit_leaves_the_old_topology_running_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    module = tmp_path / "broken_app.py"
    write(module, MODULE.format(version="v1"))
    served = Served()
    async with serving(f"{module}:graph", served) as url:
        assert served.app is not None
        topo = served.app.topology
        ws = await connect(f"ws://{url}/api/subscribe")
        await ws.send(json.dumps({"key": {"tagged": "numbers"}}))
        assert (await receive_json(ws))["type"] == "subscribed"
        generation = topo.generation
        with caplog.at_level(logging.ERROR, logger="hotplumb.serve"):
            write(module, "this is not python (\n")
            await wait_until(lambda: bool(served.app and served.app.hub.notices), timeout=10)
            # a graph that no longer serves the subscriber fails too
            write(module, MODULE.replace('"tagged"', '"renamed"').format(version="v3"))
            await wait_until(lambda: len(served.app.hub.notices) == 2, timeout=10)  # type: ignore[union-attr]
        first, second = served.app.hub.notices
        assert first["level"] == second["level"] == "error"
        assert "SyntaxError" in first["text"]
        assert "old topology runs on" in first["text"]
        assert "no node for key tagged=numbers" in second["text"]
        assert "reloading" in caplog.text
        assert "SyntaxError" in caplog.text
        assert topo.generation == generation
        await topo.inject("numbers", 5)
        assert (await receive_json(ws))["value"] == ["v1", 5]
        await ws.close()


def test_serve_refuses_a_remote_address_without_a_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    module = tmp_path / "remote_app.py"
    write(module, MODULE.format(version="v1"))
    assert main(["serve", f"{module}:graph", "--host", "0.0.0.0"]) == 2
    assert "refusing to serve on 0.0.0.0 without a token" in capsys.readouterr().err


def test_serve_says_when_the_target_is_missing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "no_such_module_here:graph"]) == 2
    assert "no module named" in capsys.readouterr().err
