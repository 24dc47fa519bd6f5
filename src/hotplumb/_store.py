"""Checkpoint stores: where a topology's consistent cuts are kept, and how state is encoded.

A store holds checkpoints, each a set of opaque entries (one per node: its
encoded state, version and, for an entry point, its position) and a small
opaque header. The runtime (``_checkpoint``) decides what the bytes mean; a
store only has to make a checkpoint appear whole or not at all.

The protocol, :class:`CheckpointStore`, is a handful of plain (blocking)
methods; the runtime calls them in a worker thread, one checkpoint at a time:

1. ``begin(id)``: start checkpoint ``id`` (larger than any committed before);
   whatever a torn earlier attempt left under that id is discarded.
2. ``put(id, key, value)``: one entry (or, if the store has it,
   ``put_many(id, entries)``: all of them in one call).
3. ``commit(id, header)``: make the checkpoint complete, atomically. Before
   this returns, :meth:`~CheckpointStore.latest` must not see ``id``; after,
   it must (unless a newer one is committed).
4. ``abort(id)``: give up an uncommitted checkpoint (the runtime calls it when
   a step raised).

``latest()`` returns the newest complete checkpoint, and ``prune(keep)``
deletes all but the newest ``keep`` complete ones (and any torn attempt).

Two stores ship:

* :class:`SQLiteStore`, on the standard library's :mod:`sqlite3` in WAL mode:
  ``begin`` opens one transaction, ``commit`` commits it. SQLite's
  transactions are atomic through a crash at any point, so a checkpoint is in
  the file entirely or not at all.
* :class:`DirectoryStore`, files in a directory, usable from several
  processes: each entry is written to a file of its own (write a temporary,
  then rename), and ``commit`` writes a manifest naming every entry with its
  checksum and renames it into place. The rename is the commit: a checkpoint
  whose manifest is not there, or names a file missing or damaged, does not
  exist. Entries of one checkpoint may be put by different processes.

Codecs. A node's state is encoded by its ``codec`` (a :class:`Codec`:
``encode`` and ``decode``), :data:`PICKLE` by default.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import sqlite3
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from types import TracebackType

__all__ = [
    "PICKLE",
    "Checkpoint",
    "CheckpointStore",
    "Codec",
    "DirectoryStore",
    "PickleCodec",
    "SQLiteStore",
    "StoredCheckpoint",
]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A complete checkpoint of a running topology.

    Attributes:
        id: Its number in the store; later checkpoints have larger ones.
        generation: The topology's generation (changes started) when it was taken.
        time: The topology clock's time when its barrier left the entry points.
        size: Bytes of encoded state and positions it holds.
        duration: Real seconds (:func:`time.perf_counter`) from the barrier
            leaving the entry points to the last node recording: the
            barrier's journey, during which data behind it waits. Writing to
            the store comes after, off the event loop, and is not counted.
        nodes: How many nodes it recorded.
    """

    id: int
    generation: int
    time: float
    size: int
    duration: float
    nodes: int

    def to_dict(self) -> dict[str, Any]:
        """Return plain JSON-compatible data."""
        return {
            "id": self.id,
            "generation": self.generation,
            "time": self.time,
            "size": self.size,
            "duration": self.duration,
            "nodes": self.nodes,
        }


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """A complete checkpoint as a store returns it: its id, header and entries, all bytes.

    Attributes:
        id: The checkpoint's id.
        header: What was given to ``commit``.
        entries: Every entry put, by key.
    """

    id: int
    header: bytes
    entries: Mapping[bytes, bytes] = field(default_factory=dict)


@runtime_checkable
class CheckpointStore(Protocol):
    """Where checkpoints are kept (see the module documentation for the contract).

    The methods block; the runtime calls them from a worker thread, never two
    at once for one topology.
    """

    def begin(self, checkpoint_id: int) -> None:
        """Start checkpoint ``checkpoint_id``, discarding any torn attempt under that id."""
        ...

    def put(self, checkpoint_id: int, key: bytes, value: bytes) -> None:
        """Add one entry to the checkpoint being written."""
        ...

    def commit(self, checkpoint_id: int, header: bytes) -> None:
        """Make the checkpoint complete, atomically."""
        ...

    def abort(self, checkpoint_id: int) -> None:
        """Give up the checkpoint being written (nothing of it remains visible)."""
        ...

    def latest(self) -> StoredCheckpoint | None:
        """Return the newest complete checkpoint, or ``None`` if there is none."""
        ...

    def prune(self, keep: int) -> None:
        """Delete all but the newest ``keep`` complete checkpoints."""
        ...


@runtime_checkable
class Codec(Protocol):
    """How a node's state becomes bytes and back (``Node(codec=...)``)."""

    def encode(self, state: Any) -> bytes:
        """Return the bytes of ``state``; raise if it cannot be encoded."""
        ...

    def decode(self, data: bytes) -> Any:
        """Return the state ``data`` encodes."""
        ...


class PickleCodec:
    """The default codec: :mod:`pickle` at its highest protocol."""

    __slots__ = ()

    def encode(self, state: Any) -> bytes:
        """Pickle ``state``."""
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    def decode(self, data: bytes) -> Any:
        """Unpickle ``data`` (only from a store you trust, as with any pickle)."""
        return pickle.loads(data)

    def __repr__(self) -> str:
        return "hotplumb.PICKLE"


PICKLE = PickleCodec()
"""The default codec of node state (:class:`PickleCodec`)."""


def _check_keep(keep: int) -> None:
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"prune() keeps an int >= 1 checkpoints, got {keep!r}")


class SQLiteStore:
    """Checkpoints in one SQLite file (WAL mode), one transaction per checkpoint.

    A checkpoint is written inside a single transaction from :meth:`begin` to
    :meth:`commit`, so a crash at any point of the write (or an exception, on
    which the runtime calls :meth:`abort`) leaves the file with the previous
    complete checkpoints only. Readers in other processes see committed
    checkpoints only.

    Args:
        path: The database file (``str`` or path-like); made if missing.
        synchronous: SQLite's ``synchronous`` setting. ``"NORMAL"`` (the
            default, with WAL) survives a crash of the process at any point;
            ``"FULL"`` also survives losing power, at an ``fsync`` per commit.

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as d:
        ...     with SQLiteStore(pathlib.Path(d) / "ck.db") as store:
        ...         store.begin(1); store.put(1, b"k", b"v"); store.commit(1, b"h")
        ...         print(store.latest().entries[b"k"])
        b'v'
    """

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "NORMAL") -> None:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"SQLiteStore takes a path (str or path-like), got {path!r}")
        if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, got {synchronous!r}")
        self.path = Path(path)
        # Used from worker threads, one call at a time (the lock makes sure).
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        # A store nobody closed closes its database when it is collected (an
        # open write is rolled back, as if the process had died).
        weakref.finalize(self, self._db.close)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS checkpoints (
                id INTEGER PRIMARY KEY, header BLOB NOT NULL
            );
            CREATE TABLE IF NOT EXISTS entries (
                checkpoint INTEGER NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL,
                PRIMARY KEY (checkpoint, key)
            );
            """
        )
        self._writing: int | None = None  # the checkpoint whose transaction is open

    def begin(self, checkpoint_id: int) -> None:
        """Open the checkpoint's transaction."""
        with self._lock:
            if self._writing is not None:
                raise RuntimeError(f"checkpoint {self._writing} is still being written")
            self._db.execute("BEGIN IMMEDIATE")
            self._writing = checkpoint_id
            self._db.execute("DELETE FROM entries WHERE checkpoint >= ?", (checkpoint_id,))
            self._db.execute("DELETE FROM checkpoints WHERE id >= ?", (checkpoint_id,))

    def put(self, checkpoint_id: int, key: bytes, value: bytes) -> None:
        """Add one entry inside the open transaction."""
        with self._lock:
            self._check_writing(checkpoint_id)
            self._db.execute(
                "INSERT OR REPLACE INTO entries VALUES (?, ?, ?)", (checkpoint_id, key, value)
            )

    def put_many(self, checkpoint_id: int, entries: Iterable[tuple[bytes, bytes]]) -> None:
        """Add many entries inside the open transaction, in one statement.

        Optional in the protocol: the runtime uses it when a store has it. Here
        it keeps the worker thread in SQLite's C code, not in Python, so it
        hardly holds the interpreter lock the event loop needs.
        """
        with self._lock:
            self._check_writing(checkpoint_id)
            self._db.executemany(
                "INSERT OR REPLACE INTO entries VALUES (?, ?, ?)",
                ((checkpoint_id, key, value) for key, value in entries),
            )

    def commit(self, checkpoint_id: int, header: bytes) -> None:
        """Record the header and commit the transaction: the checkpoint is complete."""
        with self._lock:
            self._check_writing(checkpoint_id)
            self._db.execute("INSERT INTO checkpoints VALUES (?, ?)", (checkpoint_id, header))
            self._db.execute("COMMIT")
            self._writing = None

    def abort(self, checkpoint_id: int) -> None:
        """Roll the open transaction back."""
        with self._lock:
            if self._writing == checkpoint_id:
                self._db.execute("ROLLBACK")
                self._writing = None

    def _check_writing(self, checkpoint_id: int) -> None:
        if self._writing != checkpoint_id:
            raise RuntimeError(f"checkpoint {checkpoint_id} is not being written")

    def latest(self) -> StoredCheckpoint | None:
        """Return the newest committed checkpoint."""
        with self._lock:
            row = self._db.execute(
                "SELECT id, header FROM checkpoints ORDER BY id DESC LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            entries = dict(
                self._db.execute("SELECT key, value FROM entries WHERE checkpoint = ?", (row[0],))
            )
            return StoredCheckpoint(row[0], row[1], entries)

    def ids(self) -> list[int]:
        """The ids of the complete checkpoints, oldest first."""
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT id FROM checkpoints ORDER BY id")]

    def prune(self, keep: int) -> None:
        """Delete all but the newest ``keep`` complete checkpoints, in one transaction."""
        _check_keep(keep)
        with self._lock:
            if self._writing is not None:
                return  # never inside a write; the next prune does it
            rows = self._db.execute(
                "SELECT id FROM checkpoints ORDER BY id DESC LIMIT 1 OFFSET ?", (keep - 1,)
            ).fetchone()
            if rows is None:
                return
            oldest = rows[0]
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM entries WHERE checkpoint < ?", (oldest,))
                self._db.execute("DELETE FROM checkpoints WHERE id < ?", (oldest,))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        """Close the database (an open write is rolled back)."""
        with self._lock:
            self._db.close()
            self._writing = None

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"hotplumb.SQLiteStore({str(self.path)!r})"


_MANIFEST = ".manifest"


class DirectoryStore:
    """Checkpoints as files in a directory, written by one or several processes.

    Layout: checkpoint ``n`` keeps its entries in ``<dir>/<n>/`` (one file
    per entry, named by the SHA-256 of its key) and is complete once
    ``<dir>/<n>.manifest`` exists: a JSON document naming every entry with its
    checksum, written to a temporary file, flushed to disk and renamed into
    place. Any process may :meth:`put` entries of the checkpoint being written;
    the one that calls :meth:`commit` lists what the directory holds.

    Args:
        path: The directory (made if missing).
        fsync: Flush every file to disk before renaming it (survives power
            loss; a crash of the process is survived either way).
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"DirectoryStore takes a path (str or path-like), got {path!r}")
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync

    def _write(self, target: Path, data: bytes) -> None:
        temporary = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(temporary, "wb") as f:
            f.write(data)
            if self.fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(temporary, target)

    def _parts(self, checkpoint_id: int) -> Path:
        return self.path / str(checkpoint_id)

    def begin(self, checkpoint_id: int) -> None:
        """Make the checkpoint's entry directory, emptying what a torn attempt left."""
        parts = self._parts(checkpoint_id)
        (self.path / f"{checkpoint_id}{_MANIFEST}").unlink(missing_ok=True)
        if parts.exists():
            for leftover in parts.iterdir():
                leftover.unlink(missing_ok=True)
        parts.mkdir(exist_ok=True)

    def put(self, checkpoint_id: int, key: bytes, value: bytes) -> None:
        """Write one entry (key and value in one file) atomically."""
        name = hashlib.sha256(key).hexdigest()
        body = len(key).to_bytes(8, "big") + key + value
        self._write(self._parts(checkpoint_id) / name, body)

    def commit(self, checkpoint_id: int, header: bytes) -> None:
        """Write the manifest of what the entry directory holds and rename it into place."""
        parts = self._parts(checkpoint_id)
        files = {}
        for entry in sorted(parts.iterdir()):
            if entry.name.startswith("."):
                continue  # a temporary being written by someone
            files[entry.name] = hashlib.sha256(entry.read_bytes()).hexdigest()
        manifest = {"id": checkpoint_id, "header": header.hex(), "entries": files}
        self._write(self.path / f"{checkpoint_id}{_MANIFEST}", json.dumps(manifest).encode("utf-8"))

    def abort(self, checkpoint_id: int) -> None:
        """Remove the entry directory of an uncommitted checkpoint."""
        if not (self.path / f"{checkpoint_id}{_MANIFEST}").exists():
            self._remove(checkpoint_id)

    def _remove(self, checkpoint_id: int) -> None:
        (self.path / f"{checkpoint_id}{_MANIFEST}").unlink(missing_ok=True)
        parts = self._parts(checkpoint_id)
        if parts.exists():
            for entry in parts.iterdir():
                entry.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                parts.rmdir()

    def ids(self) -> list[int]:
        """The ids of the checkpoints with a manifest, oldest first."""
        found = []
        for entry in self.path.iterdir():
            stem = entry.name.removesuffix(_MANIFEST)
            if entry.name.endswith(_MANIFEST) and stem.isdigit():
                found.append(int(stem))
        return sorted(found)

    def _load(self, checkpoint_id: int) -> StoredCheckpoint | None:
        try:
            manifest = json.loads((self.path / f"{checkpoint_id}{_MANIFEST}").read_bytes())
            entries = {}
            for name, digest in manifest["entries"].items():
                body = (self._parts(checkpoint_id) / name).read_bytes()
                if hashlib.sha256(body).hexdigest() != digest:
                    return None
                size = int.from_bytes(body[:8], "big")
                entries[body[8 : 8 + size]] = body[8 + size :]
            return StoredCheckpoint(checkpoint_id, bytes.fromhex(manifest["header"]), entries)
        except (OSError, ValueError, KeyError, TypeError):
            return None  # torn or damaged: not a complete checkpoint

    def latest(self) -> StoredCheckpoint | None:
        """Return the newest checkpoint whose manifest and entries are intact."""
        for checkpoint_id in reversed(self.ids()):
            stored = self._load(checkpoint_id)
            if stored is not None:
                return stored
        return None

    def prune(self, keep: int) -> None:
        """Delete all but the newest ``keep`` complete checkpoints (and older torn attempts)."""
        _check_keep(keep)
        ids = self.ids()
        if len(ids) <= keep:
            return
        oldest = ids[-keep]
        for checkpoint_id in ids[:-keep]:
            self._remove(checkpoint_id)
        for entry in self.path.iterdir():
            if entry.is_dir() and entry.name.isdigit() and int(entry.name) < oldest:
                self._remove(int(entry.name))

    def __repr__(self) -> str:
        return f"hotplumb.DirectoryStore({str(self.path)!r})"
