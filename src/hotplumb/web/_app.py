"""The ASGI application: the live page, the snapshot, the event stream, subscriptions.

:func:`app` builds it around a graph (run for the application's lifetime) or a
running topology (attached to, never closed). Requests pass, in order:

1. **Host** (every request): without a token, only loopback host names are
   served (``localhost``, ``127.x.y.z``, ``[::1]``), so a web page elsewhere
   cannot reach the server through DNS rebinding.
2. **Token** (every request when a token is set, the page and its scripts
   included): an ``Authorization: Bearer TOKEN`` header or a ``?token=TOKEN``
   query parameter, compared in constant time. A refused HTTP request gets
   401; a refused WebSocket is closed before it is accepted (403).
3. **Origin** (WebSockets): a browser's ``Origin`` must be the server's own
   (or listed in ``allowed_origins``), so another site's page cannot
   subscribe on a visitor's behalf.

A subscription (``WebSocket /api/subscribe``): the client sends
``{"key": KEY}`` (more such messages add subscriptions, up to
``max_subscriptions`` per connection); each message is at most
``max_message_bytes``. ``parse_key`` turns KEY into a key, or refuses it;
then the key is resolved against the running graph *without changing it*
(a probe: the factory runs, nothing is applied) and refused if it cannot be
resolved or would bring more than ``max_new_nodes`` nodes into being (the
graph's own ``max_nodes`` applies besides). Only then does the topology
change (:meth:`Topology.subscribe`). The server answers
``{"type": "subscribed", "key": ...}``, then one ``{"type": "datum", ...}``
per datum (see :func:`~hotplumb.web._json.datum_message`); a refusal or an
overflow is one ``{"type": "error", "error": TEXT}`` message and the socket
closes (code 1008, or 1009 for a message too large, 1013 for a subscriber
that fell behind). Nothing a client sends can stop the topology or disturb
other clients: every refusal happens before the topology changes.

The event stream (``GET /api/events``, Server-Sent Events) comes from one
:class:`_Hub` that samples the topology every ``interval`` seconds: an
``event: state`` with the snapshot, the dead letters and notices whenever
anything changed, and an ``event: change`` for every change of the running
graph it sees (changes closer together than ``interval`` come as one). A
snapshot of a big topology is dear (tens of microseconds per node), so the
hub takes one only while a stream is open (it still notes every change of
the graph, for the stream's history), and waits at least nine times as long
as its last snapshot took before the next: the page never takes more than a
tenth of the event loop, however big the graph.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import html
import ipaddress
import json
import logging
import time
import urllib.parse
from collections import deque
from importlib import resources
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

import hotplumb as hp
from hotplumb._explain import explain
from hotplumb.web._json import KeyRefused, datum_message, default_parse_key, dumps
from hotplumb.web._metrics import Exposition, MetricsUnavailable

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Collection, Hashable

    from starlette.requests import Request
    from starlette.types import Receive, Scope, Send

__all__ = ["WebApp", "app"]

logger = logging.getLogger(__package__)  # hotplumb.web

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})
_KEPT_CHANGES = 200
_KEPT_DEAD_LETTERS = 20


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is loopback."""
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(host_header: str) -> str:
    """The name part of a ``Host`` header (``[::1]:8000`` -> ``[::1]``)."""
    if host_header.startswith("["):
        return host_header.split("]", 1)[0] + "]"
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class _Probe:
    """The key of the sink a key is resolved for, to count what it would bring in."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "web probe"


_PROBE = _Probe()


def _discard(datum: hp.Datum) -> None:  # pragma: no cover - a probe never runs
    pass


class _Hub:
    """Samples the topology for the event stream; one for all the stream's clients."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.topology: hp.Topology | None = None
        self.version = 0
        self.changed = asyncio.Event()
        self.state: dict[str, Any] = {}
        self.changes: deque[dict[str, Any]] = deque(maxlen=_KEPT_CHANGES)
        self.notices: deque[dict[str, Any]] = deque(maxlen=20)
        self._seq = 0
        self._graph: hp.Graph | None = None
        self._generation = 0
        self._dead_total = -1
        self._dead: list[dict[str, Any]] = []
        self._seconds: dict[int, float] = {}
        self._last: str = ""
        self.stopped = False
        self.watchers = 0  # open event streams
        self.rounds = 0  # samples taken by run()
        self._cost = 0.0  # seconds the last snapshot took

    def watch(self) -> None:
        """An event stream opens: it needs the state as it is now."""
        self.watchers += 1
        if self.watchers == 1:
            self.sample()

    def unwatch(self) -> None:
        """An event stream closed."""
        self.watchers -= 1

    def attach(self, topology: hp.Topology) -> None:
        self.topology = topology
        self._graph = topology.graph
        self._generation = topology.generation
        self.sample()

    def applied(self, report: hp.ApplyReport) -> None:
        """A change the application made itself: its switch time is known."""
        self._seconds[report.generation] = report.seconds
        for entry in self.changes:
            if entry["generation"] == report.generation:
                entry["seconds"] = report.seconds

    def notice(self, level: str, text: str) -> None:
        """Show ``text`` on the page (``level`` is ``"error"`` or ``"info"``)."""
        self._seq += 1
        self.notices.append({"seq": self._seq, "level": level, "text": text})
        self.sample()

    def sample(self) -> None:
        topo = self.topology
        if topo is None:
            return
        graph = topo.graph
        if self._graph is not None and graph is not self._graph:
            diff = self._graph.diff(graph)
            if diff:
                self._seq += 1
                generation = topo.generation
                self.changes.append(
                    {
                        "seq": self._seq,
                        "generation": generation,
                        "from_generation": self._generation,
                        "time": topo.clock.now(),
                        "seconds": self._seconds.pop(generation, None),
                        "added": sorted(hp.format_key(k) for k in diff.added),
                        "removed": sorted(hp.format_key(k) for k in diff.removed),
                        "replaced": sorted(hp.format_key(k) for k in diff.replaced),
                        "rewired": sorted(hp.format_key(k) for k in diff.rewired),
                    }
                )
            self._generation = topo.generation
        self._graph = graph
        if not self.watchers:
            return  # nobody would see the state: no snapshot
        started = time.perf_counter()
        errors = topo.errors
        if errors.total != self._dead_total:
            self._dead_total = errors.total
            self._dead = [_dead_letter(d) for d in list(errors)[-_KEPT_DEAD_LETTERS:]]
        snapshot = topo.snapshot().to_dict()
        state = {
            "snapshot": snapshot,
            "dead_letters": self._dead,
            "dead_letter_total": errors.total,
            "notices": list(self.notices),
            "changes": list(self.changes),
            "closed": topo.closing,
        }
        text = dumps({**state, "snapshot": {**snapshot, "time": None}})
        if text != self._last:
            self._last = text
            self.state = state
            self.version += 1
            self.changed.set()
        self._cost = time.perf_counter() - started

    async def run(self) -> None:
        while not self.stopped:
            self.sample()
            self.rounds += 1
            # Real time on purpose: this bounds the sampler's share of the loop.
            await asyncio.sleep(max(self.interval, 9 * self._cost))

    async def wait(self, version: int) -> None:
        while self.version == version and not self.stopped:
            self.changed.clear()
            await self.changed.wait()


def _dead_letter(datum: hp.Datum) -> dict[str, Any]:
    error = datum.error
    return {
        "key": None if error is None else hp.format_key(error.key),
        "type": None if error is None else type(error.exception).__name__,
        "path": [hp.format_key(k) for k in datum.path],
        "explain": explain(datum),
    }


class WebApp:
    """The ASGI application :func:`app` returns.

    Call it as any ASGI application (``uvicorn.run(web_app)``).
    """

    def __init__(
        self,
        source: hp.Graph | hp.Topology,
        *,
        token: str | None,
        parse_key: Callable[[Any], Hashable],
        allowed_origins: Collection[str] | None,
        allowed_hosts: Collection[str] | None,
        max_subscriptions: int,
        max_message_bytes: int,
        max_new_nodes: int,
        capacity: int,
        overflow: hp.Overflow,
        interval: float,
        metrics: bool,
        run_options: dict[str, Any],
    ) -> None:
        self._source = source
        self._token = token.encode() if token is not None else None
        self._parse_key = parse_key
        self._allowed_origins = frozenset(allowed_origins) if allowed_origins else frozenset()
        self._allowed_hosts = frozenset(h.lower() for h in allowed_hosts or ())
        self.max_subscriptions = max_subscriptions
        self.max_message_bytes = max_message_bytes
        self.max_new_nodes = max_new_nodes
        self.capacity = capacity
        self.overflow = overflow
        self._run_options = run_options
        self.hub = _Hub(interval)
        self.started = asyncio.Event()
        """Set once the application has started and its topology runs."""
        self._topology: hp.Topology | None = source if isinstance(source, hp.Topology) else None
        self._exposition: Exposition | None = None
        static = StaticFiles(packages=[(__package__ or "", "static")])
        routes: list[Any] = [
            Route("/", self._page),
            Route("/api/snapshot", self._snapshot),
            Route("/api/events", self._events),
            WebSocketRoute("/api/subscribe", self._subscribe),
            Mount("/static", app=static, name="static"),
        ]
        if metrics:
            routes.insert(3, Route("/metrics", self._metrics))
        self._starlette = Starlette(routes=routes, lifespan=self._lifespan)

    @property
    def topology(self) -> hp.Topology:
        """The running topology (once the application has started).

        Raises:
            RuntimeError: The application has not started (or has stopped).
        """
        if self._topology is None:
            raise RuntimeError("the application has not started: its topology is not running")
        return self._topology

    @property
    def has_token(self) -> bool:
        """Whether every request needs a token."""
        return self._token is not None

    def end_streams(self) -> None:
        """End every open event stream (the server is stopping)."""
        self.hub.stopped = True
        self.hub.changed.set()

    # -- lifetime ---------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _lifespan(self, _: Starlette) -> AsyncIterator[None]:
        source = self._source
        async with contextlib.AsyncExitStack() as stack:
            if isinstance(source, hp.Graph):
                self._topology = await stack.enter_async_context(
                    hp.run(source, **self._run_options)
                )
            self.hub.attach(self.topology)
            self.started.set()
            sampler = asyncio.get_running_loop().create_task(self.hub.run())
            try:
                yield
            finally:
                self.started.clear()
                self.end_streams()
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler
        if isinstance(source, hp.Graph):
            self._topology = None

    async def replace(self, graph: hp.Graph) -> hp.ApplyReport:
        """Change the running topology to ``graph``, keeping the clients' subscriptions.

        The new graph's provided nodes and factory replace the running ones;
        every subscriber's sink stays, reading through the new graph.

        Args:
            graph: The new graph.

        Returns:
            The change's report.

        Raises:
            HotplumbError: The new graph cannot serve the current subscribers
                (e.g. a key one reads no longer resolves), or the change
                failed: the old topology runs on.
        """

        def merge(running: hp.Graph) -> hp.Graph:
            kept = {k: n for k, n in running.provided.items() if isinstance(k, hp.SubscriberKey)}
            return hp.Graph({**graph.provided, **kept}, graph.factory, max_nodes=graph.max_nodes)

        report = await self.topology.update(merge)
        self.hub.applied(report)
        self.hub.sample()
        return report

    # -- the gate every request passes -----------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind in ("http", "websocket"):
            refusal = self._refusal(scope)
            if refusal is not None:
                status, text = refusal
                if kind == "websocket":
                    await send({"type": "websocket.close", "code": 1008, "reason": text[:120]})
                else:
                    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
                    response = PlainTextResponse(text, status_code=status, headers=headers)
                    await response(scope, receive, send)
                return
        await self._starlette(scope, receive, send)

    def _refusal(self, scope: Scope) -> tuple[int, str] | None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        host = _host_name(headers.get("host", ""))
        if (
            self._token is None
            and not is_loopback(host)
            and host.lower() not in self._allowed_hosts
        ):
            return 421, f"this server answers only to loopback host names, not {host!r}"
        if self._token is not None:
            given = ""
            auth = headers.get("authorization", "")
            if auth[:7].lower() == "bearer ":
                given = auth[7:].strip()
            else:
                query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
                given = query.get("token", [""])[0]
            if not hmac.compare_digest(given.encode(), self._token):
                return 401, (
                    "a token is needed: send 'Authorization: Bearer TOKEN' or add ?token=TOKEN"
                )
        if scope["type"] == "websocket":
            origin = headers.get("origin")
            if origin is not None and origin not in self._allowed_origins:
                netloc = urllib.parse.urlsplit(origin).netloc
                if netloc.lower() != headers.get("host", "").lower():
                    return 403, f"WebSocket from another origin ({origin}) refused"
        return None

    # -- HTTP ---------------------------------------------------------------------

    async def _page(self, request: Request) -> HTMLResponse:
        page = resources.files(__package__ or "").joinpath("static/index.html").read_text("utf-8")
        token = request.query_params.get("token")
        query = "" if token is None else "?token=" + urllib.parse.quote(token, safe="")
        return HTMLResponse(page.replace("{{QUERY}}", html.escape(query)))

    async def _snapshot(self, request: Request) -> JSONResponse:
        return JSONResponse(self.topology.snapshot().to_dict())

    async def _metrics(self, request: Request) -> Response:
        try:
            if self._exposition is None:
                self._exposition = Exposition(lambda: self.topology)
        except MetricsUnavailable as exc:
            return PlainTextResponse(str(exc), status_code=501)
        exposition = self._exposition
        return Response(exposition.render(), media_type=exposition.content_type)

    async def _events(self, request: Request) -> StreamingResponse:
        hub = self.hub

        async def stream() -> AsyncIterator[str]:
            version = -1
            seen = 0
            hub.watch()
            try:
                yield "retry: 1000\n\n"
                while not hub.stopped:
                    if hub.version != version:
                        version = hub.version
                        state = hub.state
                        for entry in state["changes"]:
                            if entry["seq"] > seen:
                                seen = entry["seq"]
                                yield f"event: change\ndata: {dumps(entry)}\n\n"
                        yield f"event: state\ndata: {dumps(state)}\n\n"
                    await hub.wait(version)
            finally:
                hub.unwatch()

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    # -- WebSocket subscriptions ------------------------------------------------------

    async def _subscribe(self, ws: WebSocket) -> None:
        await ws.accept()
        send_lock = asyncio.Lock()
        pumps: set[asyncio.Task[None]] = set()
        async with contextlib.AsyncExitStack() as stack:
            try:
                await self._serve_socket(ws, send_lock, pumps, stack)
            finally:
                for task in pumps:
                    task.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        # the subscriptions are left: the topology no longer serves this client

    async def _serve_socket(
        self,
        ws: WebSocket,
        send_lock: asyncio.Lock,
        pumps: set[asyncio.Task[None]],
        stack: contextlib.AsyncExitStack,
    ) -> None:
        topo = self.topology
        count = 0
        while True:
            try:
                message = await ws.receive()
            except (WebSocketDisconnect, RuntimeError):
                return
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("text")
            if raw is None:
                raw_bytes = message.get("bytes") or b""
                size = len(raw_bytes)
            else:
                size = len(raw.encode("utf-8", "surrogatepass"))
            if size > self.max_message_bytes:
                await self._refuse(
                    ws,
                    send_lock,
                    f"message of {size} bytes, more than the {self.max_message_bytes} allowed",
                    1009,
                )
                return
            if raw is None:
                raw = raw_bytes.decode("utf-8", "replace")
            try:
                request = json.loads(raw)
            except ValueError:
                request = None
            if not isinstance(request, dict) or set(request) != {"key"}:
                await self._refuse(ws, send_lock, 'expected one JSON object {"key": KEY}')
                return
            if count >= self.max_subscriptions:
                await self._refuse(
                    ws, send_lock, f"at most {self.max_subscriptions} subscriptions per connection"
                )
                return
            try:
                key = self._parse_key(request["key"])
                hp.Node(inputs=[key])  # a key the graph can hold
                self._probe(topo.graph, key)
                subscription = topo.subscribe(key, capacity=self.capacity, overflow=self.overflow)
                await stack.enter_async_context(subscription)
            except (hp.HotplumbError, ValueError, TypeError) as exc:
                await self._refuse(ws, send_lock, f"key refused: {exc}")
                return
            count += 1
            label = hp.format_key(key)
            await self._send(ws, send_lock, {"type": "subscribed", "key": label})
            pumps.add(
                asyncio.get_running_loop().create_task(self._pump(ws, send_lock, subscription))
            )

    def _probe(self, graph: hp.Graph, key: Hashable) -> None:
        """Resolve ``key`` against ``graph``, changing nothing; refuse too many new nodes."""
        probe = graph.add_node(_PROBE, hp.sink(_discard, inputs=[key]))
        new = len(probe) - len(graph) - 1
        if new > self.max_new_nodes:
            raise KeyRefused(
                f"it would bring {new} new nodes into being, more than the "
                f"{self.max_new_nodes} one client key may"
            )

    async def _pump(self, ws: WebSocket, send_lock: asyncio.Lock, sub: hp.Subscription) -> None:
        key = sub.key
        try:
            async for datum in sub:
                await self._send(ws, send_lock, datum_message(key, datum))
        except hp.SubscriberOverflowError as exc:
            await self._refuse(ws, send_lock, str(exc), 1013)
        except (WebSocketDisconnect, RuntimeError, OSError):
            return
        else:  # the topology closed
            await self._refuse(ws, send_lock, "the topology closed", 1001)

    async def _send(self, ws: WebSocket, lock: asyncio.Lock, message: dict[str, Any]) -> None:
        text = dumps(message)
        async with lock:
            await ws.send_text(text)

    async def _refuse(self, ws: WebSocket, lock: asyncio.Lock, text: str, code: int = 1008) -> None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            if ws.application_state is WebSocketState.CONNECTED:
                await self._send(ws, lock, {"type": "error", "error": text})
                async with lock:
                    await ws.close(code=code, reason=text[:120])


def app(
    source: hp.Graph | hp.Topology,
    *,
    token: str | None = None,
    parse_key: Callable[[Any], Hashable] = default_parse_key,
    allowed_origins: Collection[str] | None = None,
    allowed_hosts: Collection[str] | None = None,
    max_subscriptions: int = 16,
    max_message_bytes: int = 16 * 1024,
    max_new_nodes: int = 1000,
    capacity: int = 1024,
    overflow: hp.Overflow = hp.Overflow.DISCONNECT,
    interval: float = 0.25,
    metrics: bool = True,
    **run_options: Any,
) -> WebApp:
    """Build the ASGI application serving a graph (run for its lifetime) or a running topology.

    Routes: ``GET /`` the live page; ``GET /api/snapshot`` the snapshot as
    JSON (:meth:`Snapshot.to_dict`); ``GET /api/events`` Server-Sent Events
    of the page's state and of every change; ``GET /metrics`` the counters in
    the Prometheus text format (see ``hotplumb.web._metrics``); ``WebSocket
    /api/subscribe`` subscriptions to keys (see the module's documentation
    for the protocol).

    Args:
        source: A :class:`~hotplumb.Graph`, run with ``hotplumb.run`` while the
            application runs; or a running :class:`~hotplumb.Topology` on the
            server's event loop (it is left running when the application stops).
        token: If set, every request (the page included) needs it, as
            ``Authorization: Bearer TOKEN`` or ``?token=TOKEN``.
        parse_key: Turns a client's JSON key into a key; raises
            ``ValueError``, ``TypeError`` or a ``HotplumbError`` to refuse it
            (default: :func:`default_parse_key`).
        allowed_origins: WebSocket ``Origin`` values accepted besides the
            server's own (e.g. ``{"https://dashboard.example"}``).
        allowed_hosts: Host names served without a token besides loopback ones.
        max_subscriptions: Subscriptions one WebSocket connection may hold.
        max_message_bytes: The largest message a client may send.
        max_new_nodes: The most nodes one client key may bring into being (the
            graph's ``max_nodes`` applies besides).
        capacity: Each subscription's buffer (see :meth:`Topology.subscribe`).
        overflow: What a subscription does when its client falls behind.
        interval: Seconds between samples of the topology for the event stream.
        metrics: Whether to serve ``GET /metrics`` (behind the same host and
            token checks as everything else).
        **run_options: For a graph: passed to :func:`hotplumb.run`.

    Returns:
        The application.

    Raises:
        TypeError: ``source`` is neither a Graph nor a Topology, or
            ``run_options`` are given with a Topology.
        ValueError: A limit is not a positive int, or the token is empty.
    """
    if not isinstance(source, hp.Graph | hp.Topology):
        raise TypeError(f"app() serves a hotplumb.Graph or Topology, got {type(source).__name__}")
    if isinstance(source, hp.Topology) and run_options:
        raise TypeError(f"run options {sorted(run_options)} apply only to a Graph")
    if token is not None and (not isinstance(token, str) or not token):
        raise ValueError("token must be a non-empty string (or None for no token)")
    for name, value in (
        ("max_subscriptions", max_subscriptions),
        ("max_message_bytes", max_message_bytes),
        ("max_new_nodes", max_new_nodes),
        ("capacity", capacity),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if not callable(parse_key):
        raise TypeError(f"parse_key must be callable, got {parse_key!r}")
    if not isinstance(overflow, hp.Overflow):
        raise TypeError(f"overflow must be a hotplumb.Overflow, got {overflow!r}")
    if not interval > 0:
        raise ValueError(f"interval must be positive, got {interval!r}")
    return WebApp(
        source,
        token=token,
        parse_key=parse_key,
        allowed_origins=allowed_origins,
        allowed_hosts=allowed_hosts,
        max_subscriptions=max_subscriptions,
        max_message_bytes=max_message_bytes,
        max_new_nodes=max_new_nodes,
        capacity=capacity,
        overflow=overflow,
        interval=interval,
        metrics=bool(metrics),
        run_options=run_options,
    )
