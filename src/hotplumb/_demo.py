"""``hotplumb demo``: the feed-rollup scenario, live, with its verification.

It runs :mod:`hotplumb.examples.feed_rollup` in real time for a few seconds:
clients join and leave while data flows, the factory is swapped, and every
summary a client receives is shown with its provenance. It ends with the
counters and a check that no summary mixed pre- and post-change nodes; the
exit status is 0 only if the check passed.

It draws with ``rich`` when that is installed and stdout is a terminal, and
prints plain lines otherwise (or with ``--plain``). With ``--web`` it also
serves :mod:`hotplumb.web`'s live page of the running topology on 127.0.0.1
while the scenario runs (the ``web`` extra); the socket is bound before the
scenario starts, so the first line printed carries a working address.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from hotplumb.examples.feed_rollup import (
    COUNT_DISTINCT,
    Delivery,
    FeedRollup,
    Note,
    NoteKind,
    Outcome,
    Received,
    Verification,
    describe_key,
    verify,
)

if TYPE_CHECKING:
    from collections.abc import Hashable

    import uvicorn

    from hotplumb._clock import Clock
    from hotplumb._datum import Datum
    from hotplumb._runtime import Topology

__all__ = ["add_arguments", "main", "play"]

VERIFIED = "verification: ok"
"""How the verification line starts when every check passed."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``demo`` command's options to ``parser``.

    Args:
        parser: The ``demo`` subcommand's parser.
    """
    parser.add_argument(
        "--duration",
        type=_positive,
        default=6.0,
        metavar="SECONDS",
        help="how long the scenario runs (default: 6)",
    )
    parser.add_argument(
        "--seed", type=int, default=1, help="seed of the simulated feeds (default: 1)"
    )
    parser.add_argument("--plain", action="store_true", help="print plain lines even on a terminal")
    parser.add_argument(
        "--render",
        type=Path,
        metavar="FILE",
        help="also draw the topology before and after its live changes, as FILE's "
        "suffix says (.dot, .mmd, .svg, ...): writes NAME.before.SUFFIX and NAME.after.SUFFIX",
    )
    parser.add_argument(
        "--web",
        action="store_true",
        help="also serve the live page of the running topology on 127.0.0.1 while the demo "
        "runs (needs the web extra)",
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=8000,
        help="the port of the --web page (default: 8000; 0 for any free one)",
    )


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, got {text}")
    return value


def main(args: argparse.Namespace) -> int:
    """Run the demo as ``add_arguments`` configured it.

    Args:
        args: The parsed options.

    Returns:
        The exit status: 0 if the verification passed, 1 if not, 130 if
        interrupted.
    """
    try:
        return asyncio.run(play(args))
    except KeyboardInterrupt:
        return 130


async def play(
    args: argparse.Namespace, *, clock: Clock | None = None, out: TextIO | None = None
) -> int:
    """Run the scenario and show it; return the exit status.

    Args:
        args: The parsed options.
        clock: The clock to run on (the system clock by default).
        out: Where to write (standard output by default).

    Returns:
        0 if the verification passed, 1 if not, 2 if ``--web`` could not
        serve.
    """
    stream = out if out is not None else sys.stdout
    page: _WebPage | None = None
    if args.web:
        try:
            page = _WebPage(args.port)
        except (ImportError, OSError) as exc:
            print(f"hotplumb demo: error: --web: {exc}", file=sys.stderr)
            return 2
        print(f"hotplumb demo: the live page is at {page.url}", file=stream, flush=True)
    view = _view(stream, plain=args.plain)
    scenario = FeedRollup(seed=args.seed, duration=args.duration, observe=view.show)
    drawings = _Drawings(args.render)
    view.start(scenario)
    try:
        outcome = await scenario.run(
            clock, checkpoint=drawings.draw, started=None if page is None else page.start
        )
    finally:
        view.stop()
        if page is not None:
            await page.stop()
    verification = verify(outcome)
    view.finish(outcome, verification, drawings.lines)
    return 0 if verification.ok else 1


# -- what every view shows --------------------------------------------------------------


def _seqs(numbers: list[int]) -> str:
    """``[1, 2, 3, 5]`` as ``#1-3,#5``."""
    parts: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(f"#{start}" if start == prev else f"#{start}-{prev}")
        if n is not None:
            start = prev = n
    return ",".join(parts)


def provenance(datum: Datum) -> str:
    """Which feed events went into a summary, and the path they took.

    Args:
        datum: A summary a client received.

    Returns:
        E.g. ``source/foo→foo@500ms #6-10``, or ``no events``.
    """
    groups: dict[tuple[Hashable, ...], list[int]] = {}
    for parent in datum.parents:
        groups.setdefault(parent.path, []).append(parent.value.seq)
    if not groups:
        return "none"
    return "; ".join(
        "→".join(describe_key(k) for k in path) + " " + _seqs(seqs) for path, seqs in groups.items()
    )


def _summary_line(received: Received, swap_at: float | None) -> str:
    delivery: Delivery = received.datum.value
    s = delivery.summary
    distinct = f" distinct={s.distinct}" if s.distinct is not None else ""
    carried = ""
    if s.fold == COUNT_DISTINCT and swap_at is not None:
        early = sum(1 for e in s.events if e.at < swap_at)
        if early:
            carried = f" ({early} collected before the change, carried in the rollup's state)"
    path = "→".join(describe_key(k) for k in received.datum.path)
    return (
        f"{received.client:<5} ← {s.subscription.removeprefix('source/')}@{s.window_ms}ms "
        f"({s.start:.2f}, {s.end:.2f}] count={s.count}{distinct} "
        f"[{s.fold}, merge v{delivery.merge_version}]  events {provenance(received.datum)}"
        f"{carried}  path {path}"
    )


_PATHS = "every summary's path: timer → rollup → merge → client"


def _summary_row(received: Received, swap_at: float | None) -> tuple[str, ...]:
    delivery: Delivery = received.datum.value
    s = delivery.summary
    summary = f"count={s.count}" + (f" distinct={s.distinct}" if s.distinct is not None else "")
    seqs = [p.value.seq for p in received.datum.parents]
    events = f"{s.subscription} {_seqs(seqs)}" if seqs else "none"
    if s.fold == COUNT_DISTINCT and swap_at is not None:
        early = sum(1 for e in s.events if e.at < swap_at)
        if early:
            events += f" ({early} carried over the change)"
    return (
        f"{received.at:.2f}s",
        received.client,
        f"{describe_key(received.datum.path[1])} v{delivery.merge_version} {s.fold}",
        f"({s.start:.2f}, {s.end:.2f}]",
        summary,
        events,
    )


def _verdict(outcome: Outcome, verification: Verification) -> list[str]:
    t = outcome.totals
    lines = [
        f"totals: produced {t.produced} feed events and {t.ticks} ticks; delivered "
        f"{t.delivered} summaries; filtered {t.filtered} (feed events taken into windows); "
        f"failed {t.failed}",
    ]
    if verification.ok:
        lines.append(
            f"{VERIFIED}: {verification.checked} summaries checked; none mixed pre- and "
            "post-change nodes, and each one's provenance lists exactly its events"
        )
    else:
        lines.append(f"verification: FAILED with {len(verification.violations)} problems")
        lines.extend(f"  {v}" for v in verification.violations[:20])
    return lines


class _Drawings:
    """Writes the topology before and after its changes, if asked; never fails the run."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.lines: list[str] = []

    def draw(self, label: str, topo: Topology) -> None:
        if self.path is None:
            return
        target = self.path.with_name(f"{self.path.stem}.{label}{self.path.suffix}")
        try:
            from hotplumb import _render

            written = _render.write(topo, target)
        except Exception as exc:  # rendering is optional: say why, carry on
            self.lines.append(f"could not draw {target}: {type(exc).__name__}: {exc}")
        else:
            self.lines.append(f"drew the topology {label} its live changes: {written}")


class _WebPage:
    """The live page of the demo's topology, served on 127.0.0.1 while the scenario runs.

    The socket is bound (and listening) from construction, so the address can
    be shown before the topology exists; requests wait in the backlog until
    :meth:`start` serves them.
    """

    def __init__(self, port: int) -> None:
        import hotplumb.web  # noqa: F401 - fail early, with the extra's own message

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind(("127.0.0.1", port))
            self.sock.listen(128)
        except OSError:
            self.sock.close()
            raise
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        self._servers: list[uvicorn.Server] = []
        self._task: asyncio.Task[None] | None = None

    def start(self, topo: Topology) -> None:
        """Serve the page of ``topo`` (called as the topology starts)."""
        from hotplumb.web import app, serve

        web_app = app(topo)
        self._task = asyncio.get_running_loop().create_task(
            serve(web_app, sock=self.sock, log_level="warning", server_hook=self._servers)
        )

    async def stop(self) -> None:
        """Stop serving; a failure of the server is raised here."""
        task = self._task
        try:
            if task is None:
                return
            if self._servers:
                self._servers[0].should_exit = True
            else:  # it never began
                task.cancel()
            done, _ = await asyncio.wait([task], timeout=10)
            if not done:
                task.cancel()
                raise TimeoutError("the live page's server did not stop within 10 s")
            if not task.cancelled():
                task.result()  # the server's failure, if it failed
        finally:
            self.sock.close()


class _View(Protocol):
    def start(self, scenario: FeedRollup) -> None: ...
    def show(self, event: Note | Received) -> None: ...
    def stop(self) -> None: ...
    def finish(self, outcome: Outcome, verification: Verification, extra: list[str]) -> None: ...


def _view(out: TextIO, *, plain: bool) -> _View:
    if not plain and out.isatty():
        try:
            return _RichView(out)
        except ImportError:
            pass
    return _PlainView(out)


class _PlainView:
    """One line per event."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.swap_at: float | None = None

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def start(self, scenario: FeedRollup) -> None:
        self._print(
            f"hotplumb demo: the feed-rollup scenario for {scenario.duration:g}s "
            f"(seed {scenario.seed})"
        )

    def show(self, event: Note | Received) -> None:
        if isinstance(event, Note):
            if event.kind is NoteKind.FACTORY:
                self.swap_at = event.at
            self._print(f"[{event.at:5.2f}s] {event.kind.value:<7} {event.text}")
        else:
            self._print(f"[{event.at:5.2f}s] got     {_summary_line(event, self.swap_at)}")

    def stop(self) -> None:
        pass

    def finish(self, outcome: Outcome, verification: Verification, extra: list[str]) -> None:
        for line in [*extra, *_verdict(outcome, verification)]:
            self._print(line)


class _RichView:
    """A live table of clients, the latest summaries, and the topology's changes."""

    def __init__(self, out: TextIO) -> None:
        from rich.console import Console

        self.console = Console(file=out)
        self.swap_at: float | None = None
        self.summaries: deque[tuple[str, ...]] = deque(maxlen=10)
        self.notes: deque[str] = deque(maxlen=9)
        self.clients: dict[str, tuple[int, str]] = {}
        self.now = 0.0
        self.duration = 0.0
        self.live: Any = None

    def start(self, scenario: FeedRollup) -> None:
        from rich.live import Live

        self.duration = scenario.duration
        # Redrawn from the event loop on every event, never from a thread: the
        # view's state is only touched by the loop.
        self.live = Live(self._render(), console=self.console, auto_refresh=False)
        self.live.start()

    def show(self, event: Note | Received) -> None:
        self.now = event.at
        if isinstance(event, Note):
            if event.kind is NoteKind.FACTORY:
                self.swap_at = event.at
            style = _STYLES[event.kind]
            self.notes.append(f"[dim]{event.at:5.2f}s[/] [{style}]{_escape(event.text)}[/]")
        else:
            self.summaries.append(_summary_row(event, self.swap_at))
            count, _ = self.clients.get(event.client, (0, ""))
            delivery: Delivery = event.datum.value
            self.clients[event.client] = (count + 1, delivery.summary.fold)
        if self.live is not None:
            self.live.update(self._render(), refresh=True)

    def _render(self) -> Any:
        from rich.console import Group
        from rich.panel import Panel
        from rich.table import Table

        table = Table(expand=True)
        table.add_column("client")
        table.add_column("summaries", justify="right")
        table.add_column("rollup version")
        for name, (count, fold) in sorted(self.clients.items()):
            table.add_row(name, str(count), fold)
        summaries = Table(expand=True, box=None, caption=_PATHS)
        for column in ("at", "client", "rollup", "window", "summary", "feed events in it"):
            summaries.add_column(column, overflow="fold")
        for row in self.summaries:
            summaries.add_row(*map(_escape, row))
        return Group(
            Panel(
                table,
                title=f"hotplumb demo: feed rollup  {self.now:4.1f}s / {self.duration:g}s",
            ),
            Panel(summaries, title="latest summaries, with provenance"),
            Panel("\n".join(self.notes) or "…", title="topology"),
        )

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()

    def finish(self, outcome: Outcome, verification: Verification, extra: list[str]) -> None:
        from rich.panel import Panel

        lines = [*extra, *_verdict(outcome, verification)]
        style = "green" if verification.ok else "red"
        self.console.print(
            Panel("\n".join(_escape(x) for x in lines), title="verification", style=style)
        )


_STYLES = {
    NoteKind.CLIENT: "cyan",
    NoteKind.FACTORY: "bold cyan",
    NoteKind.CHANGE: "magenta",
    NoteKind.FEED: "yellow",
}


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
