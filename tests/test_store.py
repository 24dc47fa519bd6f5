"""Checkpoint stores: the contract, and a write torn at every step never yields a partial one."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

import hotplumb as hp

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


def sqlite_store(where: Path) -> hp.CheckpointStore:
    return hp.SQLiteStore(where / "ck.db")


def directory_store(where: Path) -> hp.CheckpointStore:
    return hp.DirectoryStore(where / "ck", fsync=False)


STORES = [pytest.param(sqlite_store, id="sqlite"), pytest.param(directory_store, id="directory")]


def write(store: hp.CheckpointStore, checkpoint_id: int, entries: dict[bytes, bytes]) -> None:
    store.begin(checkpoint_id)
    for key, value in entries.items():
        store.put(checkpoint_id, key, value)
    store.commit(checkpoint_id, b"header %d" % checkpoint_id)


@pytest.mark.parametrize("make", STORES)
def test_a_store_returns_the_newest_complete_checkpoint(
    tmp_path: Path, make: Callable[[Path], hp.CheckpointStore]
) -> None:
    store = make(tmp_path)
    assert isinstance(store, hp.CheckpointStore)
    assert store.latest() is None
    write(store, 1, {b"a": b"1", b"b": b"2"})
    write(store, 2, {b"a": b"3"})
    latest = store.latest()
    assert latest is not None
    assert (latest.id, latest.header, dict(latest.entries)) == (2, b"header 2", {b"a": b"3"})
    again = make(tmp_path).latest()  # another connection, or another process, sees it too
    assert again is not None
    assert again.id == 2


@pytest.mark.parametrize("make", STORES)
def test_prune_keeps_the_newest(tmp_path: Path, make: Callable[[Path], hp.CheckpointStore]) -> None:
    store = make(tmp_path)
    for n in range(1, 6):
        write(store, n, {b"k": b"%d" % n})
    store.prune(2)
    assert store.ids() == [4, 5]  # type: ignore[attr-defined]
    latest = store.latest()
    assert latest is not None
    assert latest.entries[b"k"] == b"5"
    with pytest.raises(ValueError, match="keeps an int >= 1"):
        store.prune(0)


class Torn:
    """A store that fails (raises) at its ``fail_at``-th operation."""

    def __init__(self, inner: hp.CheckpointStore, fail_at: int) -> None:
        self.inner = inner
        self.fail_at = fail_at
        self.operations = 0

    def _step(self) -> None:
        self.operations += 1
        if self.operations == self.fail_at:
            raise OSError(f"torn at operation {self.fail_at}")

    def begin(self, checkpoint_id: int) -> None:
        self._step()
        self.inner.begin(checkpoint_id)

    def put(self, checkpoint_id: int, key: bytes, value: bytes) -> None:
        self._step()
        self.inner.put(checkpoint_id, key, value)

    def commit(self, checkpoint_id: int, header: bytes) -> None:
        self._step()
        self.inner.commit(checkpoint_id, header)

    def abort(self, checkpoint_id: int) -> None:
        self.inner.abort(checkpoint_id)

    def latest(self) -> hp.StoredCheckpoint | None:
        return self.inner.latest()

    def prune(self, keep: int) -> None:
        self.inner.prune(keep)


def counting_graph() -> hp.Graph:
    def count(value: int, ctx: hp.Context) -> int:
        ctx.state += value
        return int(ctx.state)

    return hp.Graph(
        {
            "in": hp.Node(),
            "a": hp.Node(count, inputs=["in"], state=int),
            "b": hp.Node(count, inputs=["a"], state=int),
            "out": hp.sink(lambda d: None, inputs=["b"]),
        }
    )


@pytest.mark.parametrize("make", STORES)
async def test_a_write_torn_at_every_step_leaves_the_previous_checkpoint(
    tmp_path: Path, make: Callable[[Path], hp.CheckpointStore]
) -> None:
    # The write of the second checkpoint is: begin, one put per node (4), commit.
    operations = 1 + 4 + 1
    for fail_at in range(1, operations + 1):
        where = tmp_path / str(fail_at)
        where.mkdir()
        store = Torn(make(where), fail_at=operations + fail_at)  # the first write goes through
        async with hp.run(counting_graph(), checkpoint=store) as topo:
            await topo.inject("in", 1)
            first = await topo.checkpoint()
            await topo.inject("in", 1)
            with pytest.raises(hp.CheckpointError, match="store failed") as failed:
                await topo.checkpoint()
            assert isinstance(failed.value.__cause__, OSError)
            assert topo.checkpoints.failed == 1
            assert topo.checkpoints.last == first
        latest = make(where).latest()
        assert latest is not None
        assert latest.id == first.id, f"torn at operation {fail_at}"
        async with hp.run(counting_graph(), checkpoint=make(where)) as topo:
            recovered = topo.recovered
            assert recovered is not None
            assert recovered.positions == {"in": 1}
            assert topo.snapshot()["b"].state == "1"


def test_sqlite_a_write_stopped_at_every_step_without_abort_is_invisible(tmp_path: Path) -> None:
    # A crash: the writer stops after k operations and never aborts or commits.
    entries = {b"k%d" % i: b"v%d" % i for i in range(3)}
    for stop_after in range(1 + len(entries) + 1):
        path = tmp_path / f"{stop_after}.db"
        write(hp.SQLiteStore(path), 1, {b"k0": b"old"})
        writer = hp.SQLiteStore(path)
        steps: list[tuple[Any, ...]] = [(writer.begin, 2)]
        steps += [(writer.put, 2, k, v) for k, v in entries.items()]
        for step, *args in steps[:stop_after]:
            step(*args)
        reader = hp.SQLiteStore(path).latest()  # another process's view, mid-write
        assert reader is not None
        assert (reader.id, dict(reader.entries)) == (1, {b"k0": b"old"})
        writer.close()  # the process dies: its transaction is rolled back
        after = hp.SQLiteStore(path).latest()
        assert after is not None
        assert (after.id, dict(after.entries)) == (1, {b"k0": b"old"})


def test_directory_store_ignores_torn_and_damaged_checkpoints(tmp_path: Path) -> None:
    store = hp.DirectoryStore(tmp_path, fsync=False)
    write(store, 1, {b"a": b"1"})
    # Entries written, no manifest: not a checkpoint.
    store.begin(2)
    store.put(2, b"a", b"2")
    latest = store.latest()
    assert latest is not None
    assert latest.id == 1
    # A manifest cut short: not a checkpoint.
    (tmp_path / "2.manifest").write_text('{"id": 2, "head')
    latest = store.latest()
    assert latest is not None
    assert latest.id == 1
    # A complete manifest naming a damaged entry: not a checkpoint.
    store.commit(2, b"h")
    latest = store.latest()
    assert latest is not None
    assert latest.id == 2
    manifest = json.loads((tmp_path / "2.manifest").read_text())
    (entry,) = manifest["entries"]
    (tmp_path / "2" / entry).write_bytes(b"garbage")
    latest = store.latest()
    assert latest is not None
    assert latest.id == 1


def test_directory_store_takes_entries_from_several_writers(tmp_path: Path) -> None:
    # Two store objects stand for two processes putting their nodes' entries.
    one, two = hp.DirectoryStore(tmp_path), hp.DirectoryStore(tmp_path)
    one.begin(1)
    one.put(1, b"a", b"from one")
    two.put(1, b"b", b"from two")
    one.commit(1, b"h")
    latest = two.latest()
    assert latest is not None
    assert dict(latest.entries) == {b"a": b"from one", b"b": b"from two"}


def test_stores_refuse_what_is_not_a_path() -> None:
    with pytest.raises(TypeError, match="SQLiteStore takes a path"):
        hp.SQLiteStore(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="DirectoryStore takes a path"):
        hp.DirectoryStore(None)  # type: ignore[arg-type]
