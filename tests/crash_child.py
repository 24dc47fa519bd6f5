"""The process ``tests/test_recovery.py`` kills: two feeds, windowed rollups, a merge, a sink.

Run as ``python tests/crash_child.py DIR [options]``. The topology:

* ``feed/a``, ``feed/b``: resumable, deterministic feeds of ``EVENTS`` events
  each (the offset is the last sequence number produced);
* ``roll/a``, ``roll/b``: a rollup of every ``WINDOW`` events of its feed into
  ``(feed, window, count, sum)`` (state: the open window);
* ``merge``: joins the two feeds' summaries of each window (state: the
  summaries waiting for their other half);
* ``out``: the exactly-once SQLite sink (``DIR/out.db``).

Checkpoints go to ``DIR/ck.db`` every ``--every`` items. Every ``CHANGE_EVERY``
items the merge is replaced, live, by an equivalent version (its state is
carried over through ``migrate``). Once both feeds are exhausted it drains,
takes a last checkpoint and exits 0; ``out.db`` then holds the summaries.

``--kill`` makes it SIGKILL itself at a chosen moment: ``write:C:J`` (during
the J-th put of this run's C-th checkpoint write), ``commit:C`` (once the
store has committed this run's C-th checkpoint, before the sink is told),
``change:C`` (while this run's C-th live change switches the merge),
``checkpoint:C`` (just after this run's C-th checkpoint). ``--gate S`` holds
``feed/a`` at event ``S`` until a checkpoint is taken, so that checkpoint
holds an open window; ``--forget KEY`` drops that node's restored state (the
negative control).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hotplumb as hp
from hotplumb.examples.exactly_once import sqlite_sink

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

EVENTS = 1000
WINDOW = 53
CHANGE_EVERY = 700


def value_of(feed: str, seq: int) -> int:
    """The deterministic value of event ``seq`` of ``feed``."""
    return (seq * 7919 + (13 if feed == "a" else 29)) % 101


def expected() -> list[list[Any]]:
    """The rows an uninterrupted run delivers, computed directly."""
    rows = []
    for window in range(EVENTS // WINDOW):
        seqs = range(window * WINDOW + 1, (window + 1) * WINDOW + 1)
        a = sum(value_of("a", s) for s in seqs)
        b = sum(value_of("b", s) for s in seqs)
        rows.append([window, WINDOW, a, WINDOW, b])
    return rows


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class Gate:
    """Holds a feed at one event until released."""

    def __init__(self, at: int | None) -> None:
        self.at = at
        self.reached = asyncio.Event()
        self.open = asyncio.Event()


def feed(name: str, gate: Gate) -> hp.Node:
    async def produce(ctx: hp.Context, offset: int | None) -> AsyncIterator[tuple[Any, int]]:
        seq = 0 if offset is None else offset
        while seq < EVENTS:
            seq += 1
            if gate.at == seq:
                gate.reached.set()
                await gate.open.wait()
            if not seq % 25:
                await asyncio.sleep(0.001)  # a feed that takes its time
            yield (name, seq, value_of(name, seq)), seq

    return hp.resumable_source(produce)


class Window:
    def __init__(self) -> None:
        self.count = 0
        self.total = 0


def roll(event: tuple[str, int, int], ctx: hp.Context) -> Any:
    name, seq, value = event
    state: Window = ctx.state
    state.count += 1
    state.total += value
    if seq % WINDOW:
        return hp.SKIP
    summary = (name, seq // WINDOW - 1, state.count, state.total)
    ctx.state = Window()
    return summary


class Forget:
    """A codec that restores nothing: the node starts fresh (the negative control)."""

    def encode(self, state: Any) -> bytes:
        return hp.PICKLE.encode(state)

    def decode(self, data: bytes) -> Any:
        return Window()


def merge_version(variant: int, kill_change: int | None, changes: list[int]) -> hp.Node:
    def merge(summary: tuple[str, int, int, int], ctx: hp.Context) -> Any:
        name, window, count, total = summary
        halves: dict[int, dict[str, tuple[int, int]]] = ctx.state
        half = halves.setdefault(window, {})
        half[name] = (count, total)
        if len(half) < 2:
            return hp.SKIP
        del halves[window]
        return [window, *half["a"], *half["b"]]  # the same in either variant

    def migrate(old: dict[int, Any]) -> dict[int, Any]:
        changes.append(variant)
        if kill_change is not None and len(changes) == kill_change:
            die()  # in the middle of the live change
        return old

    return hp.Node(merge, inputs=["roll/a", "roll/b"], state=dict, migrate=migrate)


class KillingStore:
    """A store that kills the process during the j-th put of its c-th write, or after a commit."""

    def __init__(
        self, inner: hp.SQLiteStore, at: tuple[int, int] | None, after_commit: int | None
    ) -> None:
        self.inner = inner
        self.at = at
        self.after_commit = after_commit
        self.writes = 0
        self.puts = 0

    def begin(self, checkpoint_id: int) -> None:
        self.writes += 1
        self.puts = 0
        self.inner.begin(checkpoint_id)

    def put(self, checkpoint_id: int, key: bytes, value: bytes) -> None:
        self.puts += 1
        if self.at == (self.writes, self.puts):
            die()
        self.inner.put(checkpoint_id, key, value)

    def commit(self, checkpoint_id: int, header: bytes) -> None:
        self.inner.commit(checkpoint_id, header)
        if self.after_commit == self.writes:
            die()  # complete in the store, but the sink has not been told

    def abort(self, checkpoint_id: int) -> None:
        self.inner.abort(checkpoint_id)

    def latest(self) -> hp.StoredCheckpoint | None:
        return self.inner.latest()

    def prune(self, keep: int) -> None:
        self.inner.prune(keep)


def graph(
    where: Path,
    gate: Gate,
    forget: str | None,
    variant: int,
    kill_change: int | None,
    changes: list[int],
) -> hp.Graph:
    nodes: dict[str, hp.Node] = {}
    for name in ("a", "b"):
        nodes[f"feed/{name}"] = feed(name, gate if name == "a" else Gate(None))
        codec = Forget() if forget == f"roll/{name}" else None
        nodes[f"roll/{name}"] = hp.Node(roll, inputs=[f"feed/{name}"], state=Window, codec=codec)
    nodes["merge"] = merge_version(variant, kill_change, changes)
    nodes["out"] = sqlite_sink(where / "out.db", inputs=["merge"])
    return hp.Graph(nodes)


async def main(args: argparse.Namespace) -> None:
    where = Path(args.dir)
    kind, *numbers = args.kill.split(":") if args.kill else ("",)
    counts = [int(n) for n in numbers]
    write_at = (counts[0], counts[1]) if kind == "write" else None
    kill_change = counts[0] if kind == "change" else None
    kill_checkpoint = counts[0] if kind == "checkpoint" else None
    kill_commit = counts[0] if kind == "commit" else None
    gate = Gate(args.gate)
    changes: list[int] = []
    store = KillingStore(hp.SQLiteStore(where / "ck.db"), write_at, kill_commit)
    variant = 0
    async with hp.run(
        graph(where, gate, args.forget, variant, kill_change, changes), checkpoint=store
    ) as topo:
        recovered = topo.recovered
        start = (
            {k: recovered.offsets.get(k) or 0 for k in ("feed/a", "feed/b")}
            if recovered
            else {"feed/a": 0, "feed/b": 0}
        )
        print("ready", flush=True)
        taken = 0

        def position() -> int:
            stats = topo.statistics()
            return sum(start[k] + stats[k].received for k in start)

        async def checkpoint() -> None:
            nonlocal taken
            await topo.checkpoint()
            taken += 1
            if taken == kill_checkpoint:
                die()

        if args.gate is not None and start["feed/a"] < args.gate:
            await gate.reached.wait()
            await asyncio.sleep(0.01)  # let what is before the gate reach the rollup
            await topo.drain()
            await checkpoint()
            gate.open.set()
        else:
            gate.open.set()
        last_checkpoint = last_change = position()
        while position() < 2 * EVENTS:
            await asyncio.sleep(0.002)
            now = position()
            if now - last_checkpoint >= args.every:
                last_checkpoint = now
                await checkpoint()
            if now - last_change >= CHANGE_EVERY:
                last_change = now
                variant = 1 - variant
                new = graph(where, gate, args.forget, variant, kill_change, changes)
                await topo.apply(new)
        await topo.drain()
        await checkpoint()
    print("done", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dir")
    parser.add_argument("--every", type=int, default=300)
    parser.add_argument("--kill", default="")
    parser.add_argument("--gate", type=int, default=None)
    parser.add_argument("--forget", default=None)
    asyncio.run(main(parser.parse_args()))
