"""The contestants of the runtime benchmark: hotplumb and the ways people already do this.

Every contestant is an ``async def run_<name>(workload, items) -> int`` that pushes
``range(items)`` through the workload's topology and returns how many items its
counting sink saw. The harness checks that count against
:meth:`Workload.expected`, so a contestant that drops items cannot win.

A contestant that has no natural way to express a workload raises
:class:`NotApplicable`; the table shows "n/a" with the reason.

The workloads:

* ``linear``: an entry point, ``width`` stages of ``x + 1``, a counting sink.
* ``diamond``: an entry point fanning out to ``width`` branches of ``x * 2``, all
  read by one counting sink (which sees ``width`` items per input item).
* ``async``: ``width`` stages that ``await asyncio.sleep(0)`` and add 1, a
  counting sink.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Literal

__all__ = [
    "CONTESTANTS",
    "NotApplicable",
    "Workload",
    "burn",
    "run_aiostream",
    "run_hotplumb",
    "run_overlap_floor",
    "run_plain",
    "run_queue_batch",
    "run_queue_item",
    "run_reactivex",
    "run_streamz",
]

Shape = Literal["linear", "diamond", "async"]

QUEUE_SIZE: Final = 1000
"""``maxsize`` of every queue in the task-per-stage contestants."""

BATCH: Final = 256
"""Values per queue item in the batched task-per-stage contestant."""


class NotApplicable(Exception):
    """The contestant has no natural way to run this workload."""


@dataclass(frozen=True, slots=True)
class Workload:
    """One benchmark workload.

    Attributes:
        id: The short name used on the command line, e.g. ``"W1"``.
        name: The descriptive name, e.g. ``"linear-10"``.
        shape: The topology's shape.
        width: Stages (``linear``, ``async``) or branches (``diamond``).
        items: Input items in a default run.
        quick_items: Input items in a ``--quick`` run.
        description: One line for the report.
    """

    id: str
    name: str
    shape: Shape
    width: int
    items: int
    quick_items: int
    description: str

    def expected(self, items: int) -> int:
        """Return the number of items the sink must see for ``items`` inputs."""
        return items * self.width if self.shape == "diamond" else items

    @property
    def hops(self) -> int:
        """Edges each input item crosses: entry to stage, stage to stage, stage to sink."""
        return 2 * self.width if self.shape == "diamond" else self.width + 1


def inc(x: int) -> int:
    return x + 1


def double(x: int) -> int:
    return x * 2


async def async_inc(x: int) -> int:
    await asyncio.sleep(0)
    return x + 1


def burn(x: int) -> int:
    """CPU-bound work (W6): ``sum(range(20000))``, plus ``x``. Module-level, so it pickles."""
    return sum(range(20_000)) + x


def _fns(workload: Workload) -> list[Callable[[int], int]]:
    return [double if workload.shape == "diamond" else inc] * workload.width


def _batches(values: Iterable[int], size: int) -> Iterator[list[int]]:
    it = iter(values)
    while batch := list(itertools.islice(it, size)):
        yield batch


class _End(enum.Enum):
    END = enum.auto()


_END: Final = _End.END


# -- plain nested calls: the floor ---------------------------------------------------------------


async def run_plain(workload: Workload, items: int) -> int:
    """Call the stages directly, one item at a time: no framework, no scheduling."""
    count = 0
    if workload.shape == "async":
        stages = [async_inc] * workload.width
        for x in range(items):
            v = x
            for astage in stages:
                v = await astage(v)
            count += 1
        return count
    fns = _fns(workload)
    if workload.shape == "diamond":
        for x in range(items):
            for fn in fns:
                fn(x)
                count += 1
        return count
    for x in range(items):
        v = x
        for fn in fns:
            v = fn(v)
        count += 1
    return count


async def run_overlap_floor(workload: Workload, items: int) -> int:
    """The floor for W3: every stage in its own task, awaiting its steps with no hand-off.

    Not a pipeline (no value passes between stages): it measures what the
    stages' own awaiting costs when the event loop overlaps them, which no
    pipeline that awaits each item's step in turn can beat.
    """
    if workload.shape != "async":
        raise NotApplicable("only meaningful for awaiting stages")

    async def stage_task() -> None:
        for x in range(items):
            await async_inc(x)

    await asyncio.gather(*(stage_task() for _ in range(workload.width)))
    return items


# -- one asyncio task per stage, connected by bounded asyncio.Queue -------------------------------


async def _pump_sync(
    qin: asyncio.Queue[Any], qout: asyncio.Queue[Any], fn: Callable[[Any], Any]
) -> None:
    get, put = qin.get, qout.put
    while (x := await get()) is not _END:
        await put(fn(x))
    await put(_END)


async def _pump_async(
    qin: asyncio.Queue[Any], qout: asyncio.Queue[Any], fn: Callable[[Any], Awaitable[Any]]
) -> None:
    get, put = qin.get, qout.put
    while (x := await get()) is not _END:
        await put(await fn(x))
    await put(_END)


async def _count_until_ends(qin: asyncio.Queue[Any], ends: int, size: Callable[[Any], int]) -> int:
    count = 0
    get = qin.get
    while ends:
        x = await get()
        if x is _END:
            ends -= 1
        else:
            count += size(x)
    return count


async def _run_queues(workload: Workload, inputs: Iterable[Any], *, batched: bool) -> int:
    width = workload.width
    if workload.shape == "async":

        async def abatch(xs: list[int]) -> list[int]:
            return [await async_inc(x) for x in xs]

        afn: Callable[[Any], Awaitable[Any]] = abatch if batched else async_inc
    else:
        fn = _fns(workload)[0]

        def sbatch(xs: list[int]) -> list[int]:
            return [fn(x) for x in xs]

        sfn: Callable[[Any], Any] = sbatch if batched else fn
    size: Callable[[Any], int] = len if batched else (lambda _: 1)

    async with asyncio.TaskGroup() as tg:
        if workload.shape == "diamond":
            heads: list[asyncio.Queue[Any]] = [asyncio.Queue(QUEUE_SIZE) for _ in range(width)]
            tail: asyncio.Queue[Any] = asyncio.Queue(QUEUE_SIZE)
            for q in heads:
                tg.create_task(_pump_sync(q, tail, sfn))
            sink = tg.create_task(_count_until_ends(tail, width, size))
            for x in inputs:
                for q in heads:
                    await q.put(x)
            for q in heads:
                await q.put(_END)
        else:
            queues: list[asyncio.Queue[Any]] = [asyncio.Queue(QUEUE_SIZE) for _ in range(width + 1)]
            for qin, qout in itertools.pairwise(queues):
                if workload.shape == "async":
                    tg.create_task(_pump_async(qin, qout, afn))
                else:
                    tg.create_task(_pump_sync(qin, qout, sfn))
            sink = tg.create_task(_count_until_ends(queues[-1], 1, size))
            put = queues[0].put
            for x in inputs:
                await put(x)
            await put(_END)
    return sink.result()


async def run_queue_item(workload: Workload, items: int) -> int:
    """One task per stage; ``asyncio.Queue(maxsize=1000)`` between stages, one value per item."""
    return await _run_queues(workload, range(items), batched=False)


async def run_queue_batch(workload: Workload, items: int) -> int:
    """As :func:`run_queue_item`, but each queue item is a list of up to 256 values."""
    return await _run_queues(workload, _batches(range(items), BATCH), batched=True)


# -- streamz --------------------------------------------------------------------------------------


async def run_streamz(workload: Workload, items: int) -> int:
    """A ``Stream()`` with ``.map`` chains and ``.union``; ``emit`` per item.

    The async workload uses ``Stream(asynchronous=True)`` with ``.map_async``
    (parallelism 1, so order is kept) and awaits each ``emit``.
    """
    from streamz import Stream

    count = 0
    done = asyncio.Event()
    expected = workload.expected(items)

    def counter(_x: object) -> None:
        nonlocal count
        count += 1
        if count == expected:
            done.set()

    if workload.shape == "async":
        source = Stream(asynchronous=True)
        node = source
        for _ in range(workload.width):
            node = node.map_async(async_inc)
        node.sink(counter)
        for x in range(items):
            await source.emit(x)
        if expected:
            await done.wait()
        return count

    source = Stream()
    if workload.shape == "diamond":
        branches = [source.map(fn) for fn in _fns(workload)]
        branches[0].union(*branches[1:]).sink(counter)
    else:
        node = source
        for fn in _fns(workload):
            node = node.map(fn)
        node.sink(counter)
    emit = source.emit
    for x in range(items):
        emit(x)
    return count


# -- reactivex ------------------------------------------------------------------------------------


async def run_reactivex(workload: Workload, items: int) -> int:
    """``rx.from_iterable`` through ``ops.map``; the diamond: a ``Subject`` and ``rx.merge``.

    Each is the faster of the two idiomatic drivers for its shape: a cold
    ``from_iterable`` runs the linear chain without ``Subject.on_next``'s lock,
    while for the diamond a ``Subject`` multicasts more cheaply than
    ``from_iterable(...).pipe(ops.publish())``.

    ReactiveX has no awaiting ``map``: the nearest, ``concat_map`` over
    ``rx.from_future``, starts every item's coroutine at once, so the async
    workload is not applicable.
    """
    import reactivex as rx
    from reactivex import operators as ops
    from reactivex.subject import Subject

    if workload.shape == "async":
        raise NotApplicable("no awaiting map operator")
    count = 0

    def counter(_x: object) -> None:
        nonlocal count
        count += 1

    maps = [ops.map(fn) for fn in _fns(workload)]
    if workload.shape == "linear":
        rx.from_iterable(range(items)).pipe(*maps).subscribe(counter)
        return count
    subject: Subject[int] = Subject()
    rx.merge(*(subject.pipe(m) for m in maps)).subscribe(counter)
    on_next = subject.on_next
    for x in range(items):
        on_next(x)
    subject.on_completed()
    return count


# -- aiostream ------------------------------------------------------------------------------------


async def run_aiostream(workload: Workload, items: int) -> int:
    """``stream.iterate`` piped through ``pipe.map``; the sink is an ``async for``.

    aiostream streams are cold and have no multicast, so the diamond merges
    ``width`` copies of the source, each through its own branch
    (``stream.merge``). Async stages use ``pipe.map(..., task_limit=1)``.
    """
    from aiostream import pipe, stream

    # aiostream types map's callable as variadic, which a one-argument function is not.
    map_: Any = pipe.map
    count = 0
    if workload.shape == "diamond":
        xs: Any = stream.merge(*(stream.iterate(range(items)) | map_(fn) for fn in _fns(workload)))
    else:
        stage = map_(async_inc, task_limit=1) if workload.shape == "async" else map_(inc)
        xs = stream.iterate(range(items))
        for _ in range(workload.width):
            xs = xs | stage
    async with xs.stream() as streamer:
        async for _ in streamer:
            count += 1
    return count


# -- hotplumb -------------------------------------------------------------------------------------


def hotplumb_graph(workload: Workload, sink_callback: Callable[[Any], Any]) -> Any:
    """Build the workload's :class:`hotplumb.Graph`; entry ``"in"``, sink ``"out"``."""
    import hotplumb as hp

    nodes: dict[str, Any] = {"in": hp.Node()}
    if workload.shape == "diamond":
        branches = [f"b{i}" for i in range(workload.width)]
        for key in branches:
            nodes[key] = hp.Node(double, inputs=["in"])
        nodes["out"] = hp.sink(sink_callback, inputs=branches)
    else:
        fn = async_inc if workload.shape == "async" else inc
        previous = "in"
        for i in range(1, workload.width + 1):
            nodes[f"s{i}"] = hp.Node(fn, inputs=[previous])
            previous = f"s{i}"
        nodes["out"] = hp.sink(sink_callback, inputs=[previous])
    return hp.Graph(nodes)


async def run_hotplumb(workload: Workload, items: int) -> int:
    """A :class:`hotplumb.Graph` run with ``hp.run``; ``inject_many`` then ``drain``."""
    import hotplumb as hp

    count = 0

    def counting_sink(_datum: object) -> None:
        nonlocal count
        count += 1

    graph = hotplumb_graph(workload, counting_sink)
    async with hp.run(graph) as topo:
        await topo.inject_many("in", range(items))
        await topo.drain()
    return count


Contestant = Callable[[Workload, int], Awaitable[int]]

CONTESTANTS: Final[dict[str, Contestant]] = {
    "hotplumb": run_hotplumb,
    "plain calls": run_plain,
    "overlap floor": run_overlap_floor,
    "asyncio.Queue/item": run_queue_item,
    "asyncio.Queue/batch": run_queue_batch,
    "streamz": run_streamz,
    "reactivex": run_reactivex,
    "aiostream": run_aiostream,
}
"""Every contestant by its name in the table; hotplumb first, the reference for ratios."""
