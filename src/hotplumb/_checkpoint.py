"""Checkpoints of a running topology, and recovery from them.

A checkpoint is taken in three steps, all under the change lock
(:meth:`~hotplumb._change.Changes.checkpoint`), so no live change comes
between them:

1. **Record.** A barrier that switches nothing goes in at every entry point.
   Each node, once the barrier has arrived on all its inputs, has
   :class:`Capture` encode its state (with the node's codec, pickle by
   default) before it forwards the barrier; an entry point also records its
   position (items accepted) and a resumable source its offset. Encoding is
   the copy: the node's later processing cannot change what was recorded. A
   node whose state cannot be encoded is noted, not raised: the barrier must
   pass every node either way. Nothing else happens in the node's task.
2. **Encode and check.** In a worker thread, the keys, fingerprints and
   entries are encoded (they are immutable). If any node failed, here or at
   the barrier, the checkpoint fails with :class:`~hotplumb.CheckpointError`
   naming them; nothing was written.
3. **Write.** In a worker thread: ``begin``, the entries (``put``, or
   ``put_many`` if the store has it), ``commit`` (or ``abort`` if a step
   raised), then ``prune``. The checkpoint exists once ``commit`` has
   returned; the store guarantees it is never seen in part.

Then, outside the lock, the nodes that asked (``Node.on_checkpoint``) are
told, with the state each had recorded.

Each entry is keyed by the pickled node key and holds ``(version,
fingerprint, state, position, offset)``: the fingerprint describes the node's
code (its callables' names and bytecode, and its inputs), so that recovery
into a graph whose node under that key is different calls the new node's
``migrate``, as a live change would. The header holds the
:class:`~hotplumb.Checkpoint` record.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import logging
import pickle
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, cast

from hotplumb._change import Participant
from hotplumb._errors import CheckpointError, TopologyClosedError
from hotplumb._format import exception_text, format_key
from hotplumb._store import PICKLE, Checkpoint

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Mapping

    from hotplumb._change import Changes
    from hotplumb._clock import Clock
    from hotplumb._graph import Graph
    from hotplumb._node import Node
    from hotplumb._store import CheckpointStore, Codec, StoredCheckpoint

__all__ = [
    "Capture",
    "CheckpointHost",
    "CheckpointStatistics",
    "Checkpoints",
    "Recovery",
    "Restorable",
    "fingerprint",
]

logger = logging.getLogger("hotplumb")

_FORMAT = 1  # the layout of headers and entries


@dataclass(frozen=True, slots=True)
class Recovery:
    """What a topology restored from a checkpoint when it started (``Topology.recovered``).

    Attributes:
        checkpoint: The checkpoint restored (the newest complete one).
        restored: Keys whose recorded state (or position) was restored.
        migrated: Restored keys whose node differs from the one recorded:
            their state went through the new node's ``migrate``.
        removed: Keys recorded in the checkpoint that the graph no longer has.
        fresh: Keys of the graph the checkpoint does not hold: they start fresh.
        positions: Per entry point, how many items it had accepted before the
            checkpoint: replay what you ``inject`` from there.
        offsets: Per resumable source, the offset it resumed from.
        errors: Keys whose state could not be decoded or migrated, with the
            exception (they start from their initial state).
    """

    checkpoint: Checkpoint
    restored: tuple[Hashable, ...] = ()
    migrated: tuple[Hashable, ...] = ()
    removed: tuple[Hashable, ...] = ()
    fresh: tuple[Hashable, ...] = ()
    positions: Mapping[Hashable, int] = field(default_factory=dict)
    offsets: Mapping[Hashable, Any] = field(default_factory=dict)
    errors: tuple[tuple[Hashable, BaseException], ...] = ()


@dataclass(frozen=True, slots=True)
class CheckpointStatistics:
    """A topology's checkpoints so far (``Topology.checkpoints``).

    Attributes:
        taken: Checkpoints completed by this topology.
        failed: Checkpoints that failed (each logged to the ``hotplumb`` logger).
        hook_failures: ``on_checkpoint`` calls that raised (logged too).
        last: The last complete checkpoint: taken here, or the one restored.
    """

    taken: int = 0
    failed: int = 0
    hook_failures: int = 0
    last: Checkpoint | None = None


# -- fingerprints ------------------------------------------------------------------


def _describe(fn: Any, depth: int = 0) -> str:
    """A description of a callable that is the same in every process running the same code."""
    if fn is None:
        return "-"
    code = getattr(fn, "__code__", None)
    name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"
    if code is None:
        return name
    parts = [name, hashlib.sha256(code.co_code).hexdigest()[:16]]
    for const in code.co_consts:
        if isinstance(const, str | int | float | bytes | bool) or const is None:
            parts.append(repr(const))
    if depth < 3:
        for cell in getattr(fn, "__closure__", None) or ():
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if callable(value):
                parts.append(_describe(value, depth + 1))
            elif isinstance(value, str | int | float | bytes | bool | tuple) or value is None:
                parts.append(repr(value))
    return "(" + " ".join(parts) + ")"


def fingerprint(node: Node) -> str:
    """A digest of what ``node`` computes: its callables' code and its inputs.

    Equal nodes in two processes running the same code have equal
    fingerprints; changing a node's code or wiring changes it.
    """
    described = [
        _describe(node.fn),
        _describe(node.state),
        _describe(node.source),
        _describe(node.flush),
        repr(node.inputs),
    ]
    return hashlib.sha256("\n".join(described).encode()).hexdigest()


# -- recording ---------------------------------------------------------------------


class Capture:
    """What a checkpoint's barrier does at each node (a :class:`~hotplumb._change.Recorder`).

    ``record`` runs in each node's task and does only what must happen there:
    encode the state (the copy) and read the position and offset. Keys,
    fingerprints and the entries' framing are encoded afterwards, off the
    event loop (:meth:`encode`): they are immutable.
    """

    __slots__ = ("failures", "hooks", "prints", "records")

    def __init__(self, prints: dict[Hashable, tuple[Node, str]]) -> None:
        self.prints = prints  # fingerprints by key, with the node they are of
        # (key, node, version, state bytes, position, offset bytes), one per node.
        self.records: list[tuple[Hashable, Node, int, bytes | None, int | None, bytes | None]] = []
        self.failures: list[tuple[Hashable, BaseException]] = []
        self.hooks: list[tuple[Participant, bytes | None]] = []

    def record(self, participant: Participant) -> None:
        """Encode the node's state (and read its position) now; note a failure, never raise."""
        member = cast("Restorable", participant)
        node = member.node
        try:
            state = member.ctx.state
            data: bytes | None = None
            if state is not None or node.state is not None:
                codec: Codec = node.codec if node.codec is not None else PICKLE
                data = codec.encode(state)
                if not isinstance(data, bytes):
                    raise TypeError(f"its codec returned {type(data).__name__}, not bytes")
            position = None if node.inputs else member.position
            offset = pickle.dumps(member.source_offset()) if node.resumable else None
        except Exception as exc:
            self.failures.append((member.key, exc))
            return
        self.records.append((member.key, node, member.version, data, position, offset))
        if node.on_checkpoint is not None:
            self.hooks.append((member, data))

    def _fingerprint(self, key: Hashable, node: Node) -> str:
        known = self.prints.get(key)
        if known is not None and known[0] is node:
            return known[1]
        digest = fingerprint(node)
        self.prints[key] = (node, digest)
        return digest

    def encode(self) -> tuple[list[tuple[bytes, bytes]], int]:
        """The store's entries and their total size (in a worker thread); note failures."""
        entries = []
        size = 0
        for key, node, version, data, position, offset in self.records:
            try:
                value = pickle.dumps(
                    (version, self._fingerprint(key, node), data, position, offset),
                    protocol=pickle.HIGHEST_PROTOCOL,
                )
                raw_key = pickle.dumps(key, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                self.failures.append((key, exc))
                continue
            entries.append((raw_key, value))
            size += len(raw_key) + len(value)
        return entries, size


# -- the topology's checkpoints ----------------------------------------------------------


class Restorable(Participant, Protocol):
    """A node as checkpoints see it: its position and its source's offset."""

    position_base: int
    resume_offset: Any

    @property
    def position(self) -> int:
        """For an entry point: how many items it has accepted (from the restored position)."""
        ...

    def source_offset(self) -> Any:
        """For a resumable source: the offset of the last value its entry point accepted."""
        ...


def _decode(node: Node, data: bytes | None) -> Any:
    codec: Codec = node.codec if node.codec is not None else PICKLE
    return codec.decode(data) if data is not None else None


class CheckpointHost(Protocol):
    """What :class:`Checkpoints` needs of the topology."""

    @property
    def clock(self) -> Clock:
        """The topology's clock."""
        ...

    @property
    def closing(self) -> bool:
        """Whether the topology is stopping."""
        ...

    @property
    def changes(self) -> Changes:
        """The topology's changes (their lock serialises checkpoints too)."""
        ...

    @property
    def running(self) -> dict[Hashable, Participant]:
        """The running nodes."""
        ...

    @property
    def graph(self) -> Graph:
        """The graph it runs."""
        ...


def _write(
    store: CheckpointStore, checkpoint: Checkpoint, entries: list[tuple[bytes, bytes]], keep: int
) -> None:
    """Write one checkpoint to ``store`` (in a worker thread): all of it, or nothing."""
    checkpoint_id = checkpoint.id
    try:
        store.begin(checkpoint_id)
        put_many = getattr(store, "put_many", None)
        if put_many is not None:
            put_many(checkpoint_id, entries)
        else:
            for key, value in entries:
                store.put(checkpoint_id, key, value)
        store.commit(checkpoint_id, _header(checkpoint))
    except BaseException:
        try:
            store.abort(checkpoint_id)
        except Exception:
            logger.exception("the checkpoint store failed to abort checkpoint %d", checkpoint_id)
        raise
    try:
        store.prune(keep)
    except Exception:
        logger.exception("the checkpoint store failed to prune old checkpoints")


def _header(checkpoint: Checkpoint) -> bytes:
    c = checkpoint
    fields = (_FORMAT, c.id, c.generation, c.time, c.size, c.duration, c.nodes)
    return pickle.dumps(fields, protocol=pickle.HIGHEST_PROTOCOL)


def _read_header(checkpoint_id: int, header: bytes) -> Checkpoint:
    layout, _, generation, at, size, duration, nodes = pickle.loads(header)
    if layout != _FORMAT:
        raise CheckpointError(f"checkpoint {checkpoint_id} has an unknown layout {layout!r}")
    return Checkpoint(checkpoint_id, generation, at, size, duration, nodes)


async def _off_loop(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` in a worker thread, or here where there are no threads (Pyodide)."""
    try:
        return await asyncio.to_thread(fn, *args)
    except RuntimeError as exc:
        if "thread" not in str(exc):
            raise
        return fn(*args)


class Checkpoints:
    """The checkpoints of one topology: taking them, periodically too, and recovering.

    Args:
        host: The topology.
        store: Where checkpoints go (``None``: the topology takes none).
        every: Seconds between periodic checkpoints on the topology's clock.
        keep: How many complete checkpoints the store keeps.
    """

    __slots__ = (
        "_host",
        "_next_id",
        "_prints",
        "busy",
        "every",
        "failed",
        "hook_failures",
        "keep",
        "last",
        "recovered",
        "store",
        "taken",
    )

    def __init__(
        self, host: CheckpointHost, store: CheckpointStore | None, every: float | None, keep: int
    ) -> None:
        self._host = host
        self.store = store
        self.every = every
        self.keep = keep
        self.taken = self.failed = self.hook_failures = 0
        self.last: Checkpoint | None = None
        self.recovered: Recovery | None = None
        self._next_id = 1
        self._prints: dict[Hashable, tuple[Node, str]] = {}
        self.busy = False  # a periodic checkpoint is being taken

    def statistics(self) -> CheckpointStatistics:
        """The counters now."""
        return CheckpointStatistics(self.taken, self.failed, self.hook_failures, self.last)

    # -- taking -----------------------------------------------------------------

    async def take(self) -> Checkpoint:
        """Take a checkpoint (see :meth:`Topology.checkpoint <hotplumb.Topology.checkpoint>`)."""
        store = self.store
        if store is None:
            raise CheckpointError("the topology has no store: run it with checkpoint=store")
        host = self._host
        if host.closing:
            raise TopologyClosedError("the topology is closed; it takes no more checkpoints")
        capture = Capture(self._prints)
        changes = host.changes
        at = host.clock.now()
        began = time.perf_counter()

        async def commit() -> Checkpoint:
            recorded = time.perf_counter()
            entries, size = await _off_loop(capture.encode)
            if capture.failures:
                raise CheckpointError(
                    "the checkpoint failed: a node's state could not be encoded", capture.failures
                )
            checkpoint = Checkpoint(
                self._next_id, changes.generation, at, size, recorded - began, len(entries)
            )
            try:
                await _off_loop(_write, store, checkpoint, entries, self.keep)
            except Exception as exc:
                raise CheckpointError(
                    f"the checkpoint store failed to write checkpoint {checkpoint.id}: "
                    f"{exception_text(exc)}"
                ) from exc
            self._next_id += 1
            return checkpoint

        try:
            checkpoint = await changes.checkpoint(capture, commit)
        except CheckpointError:
            self.failed += 1
            raise
        self.taken += 1
        self.last = checkpoint
        for member, data in capture.hooks:
            await self._tell(member, checkpoint, functools.partial(_decode, member.node, data))
        return checkpoint

    async def _tell(
        self, member: Participant, checkpoint: Checkpoint, state: Callable[[], Any]
    ) -> None:
        """Call ``member``'s ``on_checkpoint`` with the state it recorded (``state()``)."""
        hook = member.node.on_checkpoint
        if hook is None:
            return
        try:
            result = hook(member.ctx, checkpoint, state())
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            self.hook_failures += 1
            logger.error(
                "on_checkpoint of node %s raised for checkpoint %d: %s",
                format_key(member.key),
                checkpoint.id,
                exception_text(exc),
                exc_info=exc,
                extra={"hotplumb_key": member.key},
            )

    async def periodic(self) -> None:
        """Take a checkpoint every :attr:`every` seconds until the topology closes."""
        every = self.every
        assert every is not None
        clock = self._host.clock
        due = clock.now() + every
        host = self._host
        while True:
            await clock.sleep_until(due)
            if host.closing:
                return
            self.busy = True
            try:
                await self.take()
            except TopologyClosedError:
                return
            except CheckpointError as exc:
                logger.error("a periodic checkpoint failed (%d so far): %s", self.failed, exc)
            finally:
                self.busy = False
            due = max(due + every, clock.now())

    # -- recovering ---------------------------------------------------------------

    async def read_latest(self) -> StoredCheckpoint | None:
        """Read the newest complete checkpoint from the store (in a worker thread)."""
        if self.store is None:
            return None
        stored: StoredCheckpoint | None = await _off_loop(self.store.latest)
        return stored

    def restore(self, stored: StoredCheckpoint) -> Recovery:
        """Put the recorded state and positions into the nodes (made, not started)."""
        checkpoint = _read_header(stored.id, stored.header)
        running = self._host.running
        restored: list[Hashable] = []
        migrated: list[Hashable] = []
        removed: list[Hashable] = []
        errors: list[tuple[Hashable, BaseException]] = []
        positions: dict[Hashable, int] = {}
        offsets: dict[Hashable, Any] = {}
        for raw_key, raw in stored.entries.items():
            key = pickle.loads(raw_key)
            _version, digest, data, position, offset = pickle.loads(raw)
            found = running.get(key)
            if found is None:
                removed.append(key)
                continue
            member = cast("Restorable", found)
            node = member.node
            if data is not None:
                try:
                    codec: Codec = node.codec if node.codec is not None else PICKLE
                    state = codec.decode(data)
                    if node.migrate is not None and digest != fingerprint(node):
                        state = node.migrate(state)
                        migrated.append(key)
                    member.ctx.state = state
                except Exception as exc:
                    errors.append((key, exc))
            if position is not None and not node.inputs:
                member.position_base = positions[key] = position
            if offset is not None and node.resumable:
                member.resume_offset = offsets[key] = pickle.loads(offset)
            restored.append(key)
        self.last = checkpoint
        self._next_id = checkpoint.id + 1
        done, changed = set(restored), set(migrated)
        order = [k for k in self._host.graph.topological_order() if k in running]
        self.recovered = Recovery(
            checkpoint,
            tuple(k for k in order if k in done),  # inputs before their readers
            tuple(k for k in order if k in changed),
            tuple(removed),
            tuple(k for k in order if k not in done),
            MappingProxyType(positions),
            MappingProxyType(offsets),
            tuple(errors),
        )
        for key, error in errors:
            logger.error(
                "node %s could not restore its state from checkpoint %d: %s",
                format_key(key),
                checkpoint.id,
                exception_text(error),
            )
        return self.recovered

    async def tell_recovered(self) -> None:
        """Tell the nodes with an ``on_checkpoint`` which checkpoint they start from.

        Called before any node starts, so each is given the state it restored.
        """
        recovered = self.recovered
        if recovered is None:
            return
        for key in recovered.restored:
            member = self._host.running.get(key)
            if member is not None and member.node.on_checkpoint is not None:
                ctx = member.ctx
                await self._tell(member, recovered.checkpoint, lambda: ctx.state)  # noqa: B023
