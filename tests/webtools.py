"""Helpers for the web tests: a real uvicorn server on 127.0.0.1, and its clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from typing import TYPE_CHECKING, Any

from hotplumb.testing import wait_until
from hotplumb.web import serve

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import uvicorn
    from websockets.asyncio.client import ClientConnection

    from hotplumb.web import WebApp


@contextlib.asynccontextmanager
async def serving(web_app: WebApp, *, allow_remote: bool = False) -> AsyncIterator[str]:
    """Serve ``web_app`` on a free port of 127.0.0.1 in this event loop; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    servers: list[uvicorn.Server] = []
    task = asyncio.create_task(serve(web_app, sock=sock, log_level="warning", server_hook=servers))
    try:
        await wait_until(lambda: (bool(servers) and servers[0].started) or task.done(), timeout=10)
        if task.done():
            task.result()  # raises what stopped it
        yield f"127.0.0.1:{port}"
    finally:
        if servers:
            servers[0].should_exit = True
        async with asyncio.timeout(15):
            await asyncio.gather(task, return_exceptions=True)
        sock.close()


async def receive_json(ws: ClientConnection, timeout: float = 5.0) -> Any:
    """The next message on ``ws``, decoded."""
    async with asyncio.timeout(timeout):
        return json.loads(await ws.recv())


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, Any]]:
    """``(event, data)`` pairs from the lines of a Server-Sent Events stream."""
    event, data = "message", ""
    async for line in lines:
        if not line:
            if data:
                yield event, json.loads(data)
            event, data = "message", ""
        elif line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data += line.removeprefix("data: ")
