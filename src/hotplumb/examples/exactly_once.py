"""An exactly-once sink: rows written to SQLite, committed when a checkpoint completes.

A sink is at-least-once after recovery: what it received between the last
checkpoint and a crash is produced again. This one is exactly-once, with the
protocol of two-phase commit sinks:

* Each datum becomes a row with a sequence number, kept in the node's
  *state* (``pending``): nothing is written to the output yet.
* When a checkpoint's barrier passes the sink, its state, pending rows
  included, is recorded in the checkpoint.
* Once the checkpoint is complete, ``on_checkpoint`` is called with the state
  the sink recorded: in one SQLite transaction it inserts the recorded rows
  that are not in the output yet and moves the high-water mark (``meta``) to
  the last of them; then it drops them from the live state.
* After a crash the topology restarts from the newest complete checkpoint,
  whose recorded state holds every row up to its barrier, and calls
  ``on_checkpoint`` with it again: rows the crash kept from being committed are
  committed now, and the high-water mark keeps any from going in twice. Rows
  after the barrier are produced again by the replay, once.

So every row is in the output table exactly once, and a reader sees only
rows up to a complete checkpoint::

    sink = sqlite_sink("out.db", inputs=["summaries"], row=lambda v: (v.name, v.count))
    async with hp.run(graph.add_node("out", sink), checkpoint=hp.SQLiteStore("ck.db")) as topo:
        ...
        await topo.checkpoint()   # everything before it is now in out.db, once
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hotplumb import SKIP, Node

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Hashable, Iterable

    from hotplumb import Checkpoint, Context

__all__ = ["SinkState", "read_rows", "sqlite_sink"]


@dataclass(slots=True)
class SinkState:
    """What the sink keeps between checkpoints (its node state).

    Attributes:
        seq: The sequence number of the last row made.
        pending: ``(seq, row)`` pairs not yet committed to the output.
    """

    seq: int = 0
    pending: list[tuple[int, str]] = field(default_factory=list)


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(
        """
        CREATE TABLE IF NOT EXISTS rows (seq INTEGER PRIMARY KEY, row TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS meta (id INTEGER PRIMARY KEY CHECK (id = 0), seq INTEGER);
        INSERT OR IGNORE INTO meta VALUES (0, 0);
        """
    )
    return db


def sqlite_sink(
    path: str | os.PathLike[str],
    inputs: Iterable[Hashable],
    *,
    row: Callable[[Any], Any] = lambda value: value,
) -> Node:
    """Build a target that writes ``row(value)`` (as JSON) to ``path``, exactly once.

    Args:
        path: The output database (made if missing): table ``rows(seq, row)``.
        inputs: The keys the sink reads.
        row: Makes the row of a value; it must be JSON-serialisable.

    Returns:
        A stateful target node with an ``on_checkpoint`` hook.
    """
    where = Path(path)

    def write(value: Any, ctx: Context) -> Any:
        state: SinkState = ctx.state
        state.seq += 1
        state.pending.append((state.seq, json.dumps(row(value))))
        return SKIP

    def commit(ctx: Context, checkpoint: Checkpoint, recorded: SinkState) -> None:
        # A connection per commit (once per checkpoint), closed when it is done.
        with contextlib.closing(_connect(where)) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                (done,) = conn.execute("SELECT seq FROM meta").fetchone()
                fresh = [(s, r) for s, r in recorded.pending if s > done]
                conn.executemany("INSERT INTO rows VALUES (?, ?)", fresh)
                if fresh:
                    conn.execute("UPDATE meta SET seq = ?", (fresh[-1][0],))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        # Drop what is committed from the live state (this runs on the event
        # loop, between two of the sink's own calls).
        through = recorded.pending[-1][0] if recorded.pending else 0
        live: SinkState = ctx.state
        live.pending = [(s, r) for s, r in live.pending if s > through]

    return Node(write, inputs=tuple(inputs), target=True, state=SinkState, on_checkpoint=commit)


def read_rows(path: str | os.PathLike[str]) -> list[Any]:
    """Return the committed rows of a :func:`sqlite_sink` output, in order."""
    where = Path(path)
    if not where.exists():
        return []
    conn = sqlite3.connect(where)
    try:
        return [json.loads(r) for (r,) in conn.execute("SELECT row FROM rows ORDER BY seq")]
    finally:
        conn.close()
