"""Running the application with uvicorn, and the rule on where it may listen."""

from __future__ import annotations

from typing import TYPE_CHECKING

import uvicorn

from hotplumb.web._app import is_loopback

if TYPE_CHECKING:
    import socket

    from hotplumb.web._app import WebApp

__all__ = ["check_bind", "serve"]


class _Server(uvicorn.Server):
    """uvicorn's server, ending the application's event streams first when it shuts down.

    uvicorn waits for open responses before it stops, and an event stream
    never ends by itself.
    """

    def __init__(self, config: uvicorn.Config, web_app: WebApp) -> None:
        super().__init__(config)
        self._web_app = web_app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._web_app.end_streams()
        await super().shutdown(sockets)


def check_bind(host: str, *, token: bool, allow_remote_without_token: bool = False) -> None:
    """Refuse to listen on a non-loopback address without a token, unless told explicitly.

    Clients send keys the factory turns into running nodes, so a server
    reachable from the network without a token lets anyone there run code
    paths of your graph.

    Args:
        host: The address to listen on.
        token: Whether requests need a token.
        allow_remote_without_token: Listen anyway.

    Raises:
        ValueError: ``host`` is not loopback, there is no token, and the
            caller did not allow it.
    """
    if not token and not allow_remote_without_token and not is_loopback(host):
        raise ValueError(
            f"refusing to serve on {host} without a token: anyone who can reach it could "
            "subscribe to keys and make your factory build nodes; set a token "
            "(--token or HOTPLUMB_TOKEN), or allow it explicitly "
            "(--allow-remote-without-token)"
        )


async def serve(
    web_app: WebApp,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    sock: socket.socket | None = None,
    allow_remote_without_token: bool = False,
    log_level: str = "info",
    server_hook: list[uvicorn.Server] | None = None,
) -> None:
    """Serve ``web_app`` with uvicorn until the server is stopped (Ctrl-C, or ``should_exit``).

    Args:
        web_app: From :func:`hotplumb.web.app`.
        host: The address to listen on (loopback by default).
        port: The port (0 for any free one).
        sock: An already-bound socket to serve on instead of ``host``/``port``.
        allow_remote_without_token: Listen on a non-loopback address without a token.
        log_level: uvicorn's log level.
        server_hook: If given, the uvicorn server is appended to it (to stop it
            from elsewhere: ``server.should_exit = True``).

    Raises:
        ValueError: As for :func:`check_bind`.
    """
    if sock is not None:
        host = sock.getsockname()[0]
    check_bind(host, token=web_app.has_token, allow_remote_without_token=allow_remote_without_token)
    config = uvicorn.Config(
        web_app,
        host=host,
        port=port,
        lifespan="on",
        log_level=log_level,
        # The application refuses a message past its limit with a clear error;
        # the protocol drops a connection whose frames are far past it.
        ws_max_size=4 * web_app.max_message_bytes,
        timeout_graceful_shutdown=2,
    )
    server = _Server(config, web_app)
    if server_hook is not None:
        server_hook.append(server)
    await server.serve(sockets=[sock] if sock is not None else None)
