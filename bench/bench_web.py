"""Benchmark clients over WebSocket: hotplumb.web against a hand-written Starlette fan-out.

N WebSocket subscribers (1,000 by default, 100 with ``--quick``) on
127.0.0.1, spread round-robin over 50 keys, while a fixed number of items is
injected into those keys at a steady rate. A fraction of the clients
(``--churn``) leave and join again while data flows; the others stay from
before the first item to after the last.

The keys have the seed scenario's shape without its windows: 50 feeds
``key(subscription="source/NN")`` are entry points, and a client asks for
``key(subscription="source/NN", view="live")``, which the factory makes as a
node reading the feed, shared by every client of that feed and removed with
its last client. A rollup window would hold every item for the window's
length and hide the delivery latency this measures, and the seed's feeds are
simulated sources, which cannot be injected into.

Contestants, each served by uvicorn in a child process of its own on the same
kind of pre-bound socket, with the same buffer per subscriber:

- **hotplumb.web**: :func:`hotplumb.web.app` over the graph above, with
  ``overflow=Overflow.BACKPRESSURE``; items go in with ``topo.inject``.
- **starlette fan-out**: a Starlette WebSocket route, a ``dict`` of key to a
  ``set`` of bounded ``asyncio.Queue`` (one per subscriber), the injector
  awaiting ``put`` on each (backpressure too), and a task per socket sending
  what its queue holds. No hotplumb.

Measured per run, in the client process (all clients, one asyncio loop,
``websockets`` without compression): delivered messages per second, from the
first inject to the last delivery; the p50 and p99 latency from inject to
client (each value carries its ``time.monotonic()`` stamp from the injector,
a clock both processes share on Linux); what the stayers missed (each must
receive every item of its key, in order) and gaps or repeats in any
churner's connection. In the server process: resident set size before the
first client and once all have joined (per subscriber: the growth over N,
uvicorn's own cost per connection included), the time for all to join, and
the server's CPU time per delivered message.

Run ``python bench/bench_web.py [--quick] [--clients N] [--items N] [--rate R]
[--repeat R]``; the report is markdown on stdout. It needs the ``web`` extra
and ``websockets`` (both in the ``dev`` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import resource
import socket
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from _harness import (  # noqa: E402
    environment,
    fmt_bytes,
    fmt_count,
    fmt_ratio,
    markdown_table,
    package_version,
    rss_bytes,
)

CONTESTANTS = ("hotplumb.web", "starlette fan-out")
CAPACITY = 1024  # each subscriber's buffer, in both servers


def feed_label(i: int) -> str:
    return f"source/{i:02d}"


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 16384) if hard != resource.RLIM_INFINITY else 16384
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


# -- the servers (child processes) ------------------------------------------------------


class _Injector:
    """What a server does when told to inject: the same schedule for both contestants."""

    def __init__(self, keys: int) -> None:
        self.keys = keys

    async def put(self, i: int, value: dict[str, Any]) -> None:
        raise NotImplementedError

    async def inject(self, items: int, rate: float) -> dict[str, int]:
        seqs = [0] * self.keys
        start = time.monotonic()
        for n in range(items):
            if rate > 0:
                delay = start + n / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif n % self.keys == 0:
                await asyncio.sleep(0)
            i = n % self.keys
            seqs[i] += 1
            await self.put(i, {"s": seqs[i], "t": time.monotonic()})
        return {feed_label(i): seqs[i] for i in range(self.keys)}


def _hotplumb_server(keys: int) -> tuple[Any, _Injector, Any]:
    import hotplumb as hp
    import hotplumb.web

    feeds = [hp.key(subscription=feed_label(i)) for i in range(keys)]

    def factory(k: Any) -> hp.Node | None:
        if isinstance(k, hp.Key) and set(k) == {"subscription", "view"} and k["view"] == "live":
            return hp.Node(inputs=[hp.key(subscription=k["subscription"])])
        return None

    graph = hp.Graph({f: hp.Node() for f in feeds}, factory, max_nodes=100_000)
    web_app = hotplumb.web.app(
        graph, capacity=CAPACITY, overflow=hp.Overflow.BACKPRESSURE, max_new_nodes=10
    )

    class Inject(_Injector):
        async def put(self, i: int, value: dict[str, Any]) -> None:
            await web_app.topology.inject(feeds[i], value)

    def subscribers() -> int:
        return len(web_app.topology.graph) - 2 * keys if web_app.started.is_set() else 0

    return web_app, Inject(keys), subscribers


def _starlette_server(keys: int) -> tuple[Any, _Injector, Any]:
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    subscribers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {}
    labels = [feed_label(i) for i in range(keys)]

    async def subscribe(ws: WebSocket) -> None:
        await ws.accept()
        request = json.loads(await ws.receive_text())
        label = str(request["key"]["subscription"])
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(CAPACITY)
        subscribers.setdefault(label, set()).add(queue)

        async def pump() -> None:
            while True:
                value = await queue.get()
                await ws.send_text(json.dumps({"type": "datum", "key": label, "value": value}))

        await ws.send_text(json.dumps({"type": "subscribed", "key": label}))
        pumping = asyncio.get_running_loop().create_task(pump())
        try:
            await ws.receive_text()  # the client only ever closes
        except WebSocketDisconnect:
            pass
        finally:
            subscribers[label].discard(queue)
            pumping.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pumping

    class Inject(_Injector):
        async def put(self, i: int, value: dict[str, Any]) -> None:
            for queue in list(subscribers.get(labels[i], ())):
                await queue.put(value)

    def count() -> int:
        return sum(len(s) for s in subscribers.values())

    return Starlette(routes=[WebSocketRoute("/api/subscribe", subscribe)]), Inject(keys), count


def serve_child(kind: str, keys: int) -> None:
    """The server process: serve, then obey one command per line of stdin."""
    _raise_fd_limit()
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)

    def say(obj: dict[str, Any]) -> None:
        print(json.dumps(obj), flush=True)

    async def main() -> None:
        make = _hotplumb_server if kind == "hotplumb.web" else _starlette_server
        asgi, injector, subscribers = make(keys)
        config = uvicorn.Config(
            asgi,
            lifespan="on",
            log_level="warning",
            ws="websockets",
            ws_ping_interval=None,
            ws_per_message_deflate=False,
            backlog=4096,
        )
        server = uvicorn.Server(config)
        serving = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        for _ in range(3000):  # uvicorn sets a flag, not an event: poll it, for 30 s at most
            if server.started:
                break
            await asyncio.sleep(0.01)
        else:
            raise TimeoutError("uvicorn did not start within 30 s")
        commands: asyncio.Queue[str] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def read() -> None:
            for line in sys.stdin:
                loop.call_soon_threadsafe(commands.put_nowait, line.strip())
            loop.call_soon_threadsafe(commands.put_nowait, "quit")

        threading.Thread(target=read, daemon=True).start()
        say({"port": sock.getsockname()[1], "rss": rss_bytes()})
        cpu0 = time.process_time()
        while True:
            command, *args = (await commands.get()).split()
            if command == "rss":
                say({"rss": rss_bytes(), "subscribers": subscribers()})
            elif command == "cpu":
                cpu0 = time.process_time()
                say({})
            elif command == "inject":
                injected = await injector.inject(int(args[0]), float(args[1]))
                say({"injected": injected})
            elif command == "stats":
                say({"cpu": time.process_time() - cpu0, "rss": rss_bytes()})
            elif command == "quit":
                break
        server.should_exit = True
        async with asyncio.timeout(15):
            await serving

    asyncio.run(main())


# -- the clients (this process) --------------------------------------------------------------


@dataclass
class _Connection:
    label: str
    stays: bool
    seqs: list[int] = field(default_factory=list)


@dataclass
class _Run:
    """One contestant's run, as the report needs it."""

    delivered: int
    seconds: float
    p50: float
    p99: float
    per_subscriber: float
    join_seconds: float
    cpu_per_message: float
    lost: int
    gaps: int


class _Child:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def ask(self, command: str, timeout: float = 120) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self.read(timeout)

    async def read(self, timeout: float = 60) -> dict[str, Any]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the server process ended early")
        result: dict[str, Any] = json.loads(line)
        return result


async def _run_once(kind: str, opts: argparse.Namespace, rng: random.Random) -> _Run:
    from websockets.asyncio.client import connect

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve",
        kind,
        "--keys",
        str(opts.keys),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    child = _Child(proc)
    latencies: list[float] = []
    connections: list[_Connection] = []
    tasks: list[asyncio.Task[None]] = []
    last_message = [0.0]
    try:
        hello = await child.read()
        url = f"ws://127.0.0.1:{hello['port']}/api/subscribe"
        rss_start = hello["rss"]
        connecting = asyncio.Semaphore(64)

        async def join(label: str, stays: bool) -> tuple[Any, _Connection]:
            async with connecting:
                ws = await connect(url, compression=None, ping_interval=None, open_timeout=60)
                await ws.send(json.dumps({"key": {"subscription": label, "view": "live"}}))
                answer = json.loads(await asyncio.wait_for(ws.recv(), 60))
            if answer.get("type") != "subscribed":
                raise RuntimeError(f"subscription refused: {answer}")
            conn = _Connection(label, stays)
            connections.append(conn)
            return ws, conn

        async def receive(ws: Any, conn: _Connection, limit: int | None) -> None:
            # Bounded: a churner stops after `limit`, everyone is cancelled at the end.
            seqs = conn.seqs
            while limit is None or len(seqs) < limit:
                message = json.loads(await ws.recv())
                now = time.monotonic()
                value = message["value"]
                latencies.append(now - value["t"])
                seqs.append(value["s"])
                last_message[0] = now

        async def stayer(ws: Any, conn: _Connection) -> None:
            with contextlib.suppress(Exception):
                await receive(ws, conn, None)

        async def churner(ws: Any, conn: _Connection) -> None:
            for _ in range(opts.rejoins):
                await receive(ws, conn, rng.randint(5, 50))
                await ws.close()
                await asyncio.sleep(rng.uniform(0.01, 0.2))
                ws, conn = await join(conn.label, False)
            await receive(ws, conn, None)

        churners = int(opts.clients * opts.churn)
        t0 = time.monotonic()
        joined = await asyncio.gather(
            *(join(feed_label(n % opts.keys), n >= churners) for n in range(opts.clients))
        )
        join_seconds = time.monotonic() - t0
        after = await child.ask("rss")
        if after["subscribers"] != opts.clients:
            raise RuntimeError(f"server counts {after['subscribers']} subscribers")
        for ws, conn in joined:
            run = stayer if conn.stays else churner
            tasks.append(asyncio.get_running_loop().create_task(run(ws, conn)))
        await child.ask("cpu")
        start = time.monotonic()
        budget = opts.items / max(opts.rate, 1) + 300
        injected = (await child.ask(f"inject {opts.items} {opts.rate}", timeout=budget))["injected"]
        stayers = [c for c in connections if c.stays]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if all(len(c.seqs) >= injected[c.label] for c in stayers):
                break
            if time.monotonic() - last_message[0] > opts.quiet:
                break
            await asyncio.sleep(0.05)
        seconds = last_message[0] - start
        stats = await child.ask("stats")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await child.ask("quit", timeout=1)
        with contextlib.suppress(ProcessLookupError):
            async with asyncio.timeout(20):
                await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    lost = sum(injected[c.label] - len(c.seqs) for c in stayers)
    lost += sum(1 for c in stayers if c.seqs != list(range(1, len(c.seqs) + 1)))
    gaps = sum(
        sum(1 for a, b in zip(c.seqs, c.seqs[1:], strict=False) if b != a + 1)
        for c in connections
        if not c.stays
    )
    delivered = len(latencies)
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return _Run(
        delivered=delivered,
        seconds=seconds,
        p50=quantiles[49],
        p99=quantiles[98],
        per_subscriber=(after["rss"] - rss_start) / opts.clients,
        join_seconds=join_seconds,
        cpu_per_message=stats["cpu"] / max(delivered, 1),
        lost=lost,
        gaps=gaps,
    )


def _spread(values: list[float]) -> str:
    median = statistics.median(values)
    if len(values) < 2 or median == 0:
        return ""
    return f"±{(max(values) - min(values)) / 2 / median:.0%}"


def report(opts: argparse.Namespace, runs: dict[str, list[_Run]], errors: dict[str, str]) -> str:
    lines = [
        f"# Clients over WebSocket: {opts.clients:,} subscribers on {opts.keys} keys",
        "",
        *environment(),
        f"- starlette {package_version('starlette')}, uvicorn {package_version('uvicorn')}, "
        f"websockets {package_version('websockets')}",
        f"- workload: {opts.items:,} items at {opts.rate:,.0f} items/s"
        if opts.rate > 0
        else f"- workload: {opts.items:,} items, as fast as the server takes them",
        f"  ({opts.churn:.0%} of the clients leave and join again {opts.rejoins} times while "
        f"data flows); buffer {CAPACITY} per subscriber, backpressure; {opts.repeat} runs each, "
        "round-robin, a fresh server process per run",
        "",
    ]
    headers = [
        "server",
        "messages/s",
        "vs anchor",
        "spread",
        "p50 ms",
        "p99 ms",
        "per subscriber",
        "join all s",
        "server CPU µs/msg",
        "lost",
        "runs",
    ]
    rows: list[list[str]] = []
    anchor = runs.get(CONTESTANTS[1])
    anchor_rate = (
        statistics.median(r.delivered / r.seconds for r in anchor) if anchor else float("nan")
    )
    for name in CONTESTANTS:
        got = runs.get(name, [])
        if not got:
            rows.append([name, errors.get(name, "no runs"), *[""] * (len(headers) - 2)])
            continue
        rates = [r.delivered / r.seconds for r in got]
        rate = statistics.median(rates)

        def med(attr: str, got: list[_Run] = got) -> float:
            return statistics.median(getattr(r, attr) for r in got)

        rows.append(
            [
                name,
                fmt_count(rate),
                fmt_ratio(rate / anchor_rate) if anchor else "",
                _spread(rates),
                f"{med('p50') * 1000:.1f}",
                f"{med('p99') * 1000:.1f}",
                fmt_bytes(med("per_subscriber")),
                f"{med('join_seconds'):.2f}",
                f"{med('cpu_per_message') * 1e6:.1f}",
                f"{sum(r.lost + r.gaps for r in got)}",
                str(len(got)),
            ]
        )
    lines.append(markdown_table(headers, rows))
    lines += [
        "",
        "messages/s: messages delivered to all clients from the first inject to the last "
        "delivery, median over the runs (vs anchor: over the Starlette fan-out's). p50/p99: "
        "latency from inject to client over every message of a run, median over the runs. "
        "per subscriber: the server's RSS growth from before the first client to all joined, "
        "over the clients. lost: items a stayer missed or got out of order, plus gaps or "
        "repeats within a churner's connection, summed over the runs (0 is the contract).",
    ]
    for name, text in errors.items():
        lines.append(f"- {name}: {text}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", choices=CONTESTANTS, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="100 clients, fewer items, one run")
    parser.add_argument("--clients", type=int, help="subscribers (default 1,000; quick 100)")
    parser.add_argument("--keys", type=int, default=50, help="keys they spread over (50)")
    parser.add_argument("--items", type=int, help="items injected (default 10,000; quick 2,000)")
    parser.add_argument(
        "--rate", type=float, default=1000, help="items/s injected; 0: as fast as taken (1000)"
    )
    parser.add_argument("--churn", type=float, default=0.2, help="share of clients re-joining")
    parser.add_argument("--rejoins", type=int, default=2, help="times each of those re-joins")
    parser.add_argument("--repeat", type=int, help="runs per contestant (default 3; quick 1)")
    parser.add_argument("--quiet", type=float, default=5.0, help="seconds without data = done")
    opts = parser.parse_args()
    if opts.serve:
        serve_child(opts.serve, opts.keys)
        return 0
    opts.clients = opts.clients or (100 if opts.quick else 1000)
    opts.items = opts.items or (2000 if opts.quick else 10_000)
    opts.repeat = opts.repeat or (1 if opts.quick else 3)
    if opts.clients < opts.keys or opts.items < opts.keys or not 0 <= opts.churn <= 1:
        parser.error("need clients >= keys, items >= keys and 0 <= churn <= 1")
    _raise_fd_limit()
    rng = random.Random(1)
    runs: dict[str, list[_Run]] = {name: [] for name in CONTESTANTS}
    errors: dict[str, str] = {}
    for _ in range(opts.repeat):
        for name in CONTESTANTS:
            try:
                runs[name].append(asyncio.run(_run_once(name, opts, rng)))
            except Exception as exc:
                errors[name] = f"error: {type(exc).__name__}: {exc}"[:200]
            print(f"{name}: {len(runs[name])} run(s) done", file=sys.stderr, flush=True)
    print(report(opts, runs, errors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
