"""hotplumb.web: serve a topology over HTTP and WebSocket, with a live page of the graph.

Needs the ``web`` extra (Starlette and uvicorn): ``pip install 'hotplumb[web]'``.

* :func:`app` builds the ASGI application around a graph or a running
  topology: ``GET /`` (the live page), ``GET /api/snapshot``,
  ``GET /api/events`` (Server-Sent Events), ``GET /metrics`` (Prometheus
  text) and ``WebSocket /api/subscribe``.
* :func:`serve` runs it with uvicorn, refusing a non-loopback address without
  a token unless told explicitly.
* :func:`default_parse_key` is how client keys (JSON) become keys by default.

This module only re-exports.
"""

from __future__ import annotations

try:
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as _missing:  # pragma: no cover - tested in a subprocess
    raise ImportError(
        f"hotplumb.web needs Starlette and uvicorn ({_missing.name} is missing): "
        "pip install 'hotplumb[web]'"
    ) from _missing

from hotplumb.web._app import WebApp, app
from hotplumb.web._json import KeyRefused, default_parse_key
from hotplumb.web._serve import check_bind, serve

__all__ = ["KeyRefused", "WebApp", "app", "check_bind", "default_parse_key", "serve"]
