"""``hotplumb serve MODULE:ATTR``: serve a graph with :mod:`hotplumb.web`, optionally live-reloaded.

``--reload`` is hot re-plumbing, not a process restart. A task on the
topology's own event loop polls the module's file (its modification time and
size, then its contents); when they change, the module is imported afresh
(from source, bypassing any bytecode cache) and the running topology is
*updated* to the new graph through :meth:`WebApp.replace
<hotplumb.web.WebApp.replace>`: the new provided nodes and factory, the
clients' subscriptions kept, with every guarantee of a live change. A module
that fails to import, or a graph that fails to resolve or to start, leaves the
old topology running; the error goes to the log and to the page.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import importlib.util
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse
    import socket
    from collections.abc import Callable

    import uvicorn

    from hotplumb._graph import Graph
    from hotplumb.web import WebApp

__all__ = ["Reloader", "add_arguments", "main", "serve_target"]

logger = logging.getLogger("hotplumb.serve")


def _load_graph(spec: str) -> Any:
    # The loader moves to its own module; use whichever this version has.
    try:
        module = importlib.import_module("hotplumb._loader")
    except ImportError:
        module = importlib.import_module("hotplumb._render")
    return module.load_graph(spec)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``hotplumb serve`` to ``parser``."""
    parser.add_argument(
        "target",
        metavar="MODULE:ATTR",
        help="a Graph in your code, or a zero-argument callable returning one; "
        "MODULE is a dotted name or a path to a .py file",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument(
        "--token",
        default=os.environ.get("HOTPLUMB_TOKEN"),
        help="require this token on every request (default: $HOTPLUMB_TOKEN)",
    )
    parser.add_argument(
        "--reload",
        action="store_true",
        help="when the module changes on disk, update the running topology live",
    )
    parser.add_argument(
        "--allow-remote-without-token",
        action="store_true",
        help="serve on a non-loopback address without a token (anyone reaching it can "
        "make the factory build nodes)",
    )
    parser.add_argument(
        "--poll", type=float, default=0.5, help="seconds between checks of the module (--reload)"
    )


def main(args: argparse.Namespace) -> int:
    """Run ``hotplumb serve`` with parsed arguments.

    Returns:
        The exit status: 0 after a clean stop, 2 if the graph or the web
        extra could not be found, or the address is refused.
    """
    try:
        import hotplumb.web  # noqa: F401
    except ImportError as exc:
        print(f"hotplumb serve: error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(
            serve_target(
                args.target,
                host=args.host,
                port=args.port,
                token=args.token,
                reload=args.reload,
                poll=args.poll,
                allow_remote_without_token=args.allow_remote_without_token,
            )
        )
    except (ValueError, TypeError) as exc:
        print(f"hotplumb serve: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # pragma: no cover - interactive
        pass
    return 0


def _graph_of(spec: str) -> Graph:
    from hotplumb._graph import Graph

    graph = _load_graph(spec)
    if not isinstance(graph, Graph):
        raise TypeError(f"{spec} is a {type(graph).__name__}; hotplumb serve needs a Graph")
    return graph


async def serve_target(
    target: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    sock: socket.socket | None = None,
    token: str | None = None,
    reload: bool = False,
    poll: float = 0.5,
    allow_remote_without_token: bool = False,
    log_level: str = "info",
    hook: Callable[[WebApp, Any], None] | None = None,
) -> None:
    """Serve the graph ``target`` names until the server stops.

    Args:
        target: ``MODULE:ATTR``, as for ``hotplumb render``.
        host: The address to listen on.
        port: The port.
        sock: An already-bound socket instead of ``host`` and ``port``.
        token: The token every request needs, if any.
        reload: Update the topology live when the module changes on disk.
        poll: Seconds between checks of the module's file.
        allow_remote_without_token: Listen beyond loopback without a token.
        log_level: uvicorn's log level.
        hook: Called with the application and the uvicorn server once both
            exist (tests stop the server through it).

    Raises:
        ValueError: ``target`` cannot be loaded, or the address is refused.
        TypeError: ``target`` is not a Graph.
    """
    from hotplumb.web import app, check_bind, serve

    check_bind(
        host if sock is None else sock.getsockname()[0],
        token=token is not None,
        allow_remote_without_token=allow_remote_without_token,
    )
    graph = _graph_of(target)
    web_app = app(graph, token=token)
    servers: list[uvicorn.Server] = []
    server_task = asyncio.create_task(
        serve(
            web_app,
            host=host,
            port=port,
            sock=sock,
            allow_remote_without_token=allow_remote_without_token,
            log_level=log_level,
            server_hook=servers,
        )
    )
    reloader = Reloader(target, web_app) if reload else None
    watcher: asyncio.Task[None] | None = None
    try:
        await asyncio.sleep(0)  # let the server task make its server
        if hook is not None and servers:
            hook(web_app, servers[0])
        shown = "0.0.0.0" if host in ("", "0.0.0.0") else host
        query = "" if token is None else "?token=" + token
        if sock is None:
            print(f"hotplumb serve: http://{shown}:{port}/{query}", file=sys.stderr)
        if reloader is not None:
            watcher = asyncio.create_task(reloader.watch(poll))
        await server_task
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if not server_task.done():
            server_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await server_task


class Reloader:
    """Watches a ``MODULE:ATTR``'s file and updates the running topology when it changes.

    Args:
        target: ``MODULE:ATTR``.
        web_app: The application whose topology it updates.
    """

    def __init__(self, target: str, web_app: WebApp) -> None:
        self.target = target
        self.web_app = web_app
        module_name, _, self.attr = target.rpartition(":")
        self.module_name = module_name
        self.path = _module_file(module_name)
        self._stat = self._stat_now()
        self._digest = self._digest_now()
        self.reloads = 0
        """How many reloads went through."""
        self.failures = 0
        """How many reloads failed (the old topology ran on)."""

    def _stat_now(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _digest_now(self) -> bytes | None:
        try:
            return hashlib.sha256(self.path.read_bytes()).digest()
        except OSError:
            return None

    async def watch(self, poll: float) -> None:
        """Check the file every ``poll`` seconds, for ever (cancel to stop)."""
        await self.web_app.started.wait()
        while True:
            await asyncio.sleep(poll)
            await self.check()

    async def check(self) -> bool:
        """Reload if the file changed; return whether it tried."""
        stat = self._stat_now()
        if stat == self._stat:
            return False
        self._stat = stat
        digest = self._digest_now()
        if digest == self._digest or digest is None:
            return False
        self._digest = digest
        await self.reload()
        return True

    async def reload(self) -> None:
        """Import the module afresh and update the running topology to its graph."""
        hub = self.web_app.hub
        try:
            graph = self._import_afresh()
            report = await self.web_app.replace(graph)
        except Exception as exc:
            self.failures += 1
            text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            logger.error(
                "reloading %s failed; the old topology runs on: %s",
                self.target,
                text,
                exc_info=exc,
            )
            hub.notice(
                "error", f"reloading {self.target} failed; the old topology runs on:\n{text}"
            )
            return
        self.reloads += 1
        changes = report.changelist
        summary = (
            f"reloaded {self.target}: generation {report.generation}, "
            f"{len(changes.added)} added, {len(changes.removed)} removed, "
            f"{len(changes.replaced)} replaced, {len(changes.rewired)} rewired"
        )
        logger.info("%s", summary)
        hub.notice("info", summary)

    def _import_afresh(self) -> Graph:
        from hotplumb._graph import Graph

        source = self.path.read_bytes()
        name = self.module_name
        if name.endswith(".py") or "/" in name or os.sep in name:
            name = f"_hotplumb_serve_{self.path.stem}"
        spec = importlib.util.spec_from_file_location(name, self.path)
        if spec is None:  # pragma: no cover - a file path always gives a spec
            raise ImportError(f"cannot import {self.path}")
        module = importlib.util.module_from_spec(spec)
        code = compile(source, str(self.path), "exec")
        previous = sys.modules.get(name)
        sys.modules[name] = module
        try:
            exec(code, module.__dict__)
        except BaseException:
            if previous is not None:
                sys.modules[name] = previous
            else:
                del sys.modules[name]
            raise
        obj: Any = module
        for part in self.attr.split("."):
            obj = getattr(obj, part)
        if callable(obj) and not isinstance(obj, Graph):
            obj = obj()
        if not isinstance(obj, Graph):
            raise TypeError(f"{self.target} is a {type(obj).__name__}, not a hotplumb.Graph")
        return obj


def _module_file(module_name: str) -> Path:
    if module_name.endswith(".py") or "/" in module_name or os.sep in module_name:
        return Path(module_name).resolve()
    module = sys.modules.get(module_name)
    file = getattr(module, "__file__", None)
    if file is None:
        spec = importlib.util.find_spec(module_name)
        file = spec.origin if spec is not None else None
    if file is None:
        raise ValueError(f"cannot --reload {module_name}: it has no source file")
    return Path(file).resolve()
