"""Running a graph: :func:`run` and :class:`Topology`.

A running topology has two faces. :class:`Topology` is the public one: data
in (``inject``), changes (``apply``, ``drain``), inspection and ``close``; it
has no public constructor and its attributes are read-only. Behind it,
``_Core`` holds the running state and is what the other rooms of the runtime
see, each through its own small interface:

* the running nodes (``_runner.Runner``) through :class:`~hotplumb._runner.NodeHost`:
  the clock, tracing, the observer, the restart policy, spawning tasks, the
  dead-letter record;
* the live-change protocol (``_change.Changes``) through
  :class:`~hotplumb._change.ChangeHost`: the running nodes and entry
  channels, making nodes and channels, and completing a change;
* snapshots (``_inspect``) through :class:`~hotplumb._inspect.LiveView`;
* an observer (``_observe``; :mod:`hotplumb.otel` when OpenTelemetry is asked
  for, imported only then) through :class:`~hotplumb._observe.Watched`.
* checkpoints (``_checkpoint.Checkpoints``) through
  :class:`~hotplumb._checkpoint.CheckpointHost`: the clock, the running nodes
  and the change lock. Recovery restores the nodes after they are made and
  before any starts.

Every task belongs to the task group that :func:`run` opens: leaving the
``async with`` block drains (or, on an error, stops at once) and ends them all.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import itertools
import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from hotplumb._change import Aligner, Changes, edge_capacity, input_capacity
from hotplumb._channel import MemoryChannel
from hotplumb._checkpoint import Checkpoints
from hotplumb._clock import Clock, SystemClock
from hotplumb._datum import Batch, Datum
from hotplumb._errors import NotAnEntryPointError, TopologyClosedError
from hotplumb._explain import explain
from hotplumb._format import exception_text, format_key
from hotplumb._graph import Graph
from hotplumb._inspect import take_snapshot
from hotplumb._kernel import build_kernel
from hotplumb._keys import check_key
from hotplumb._node import Pool, RestartPolicy
from hotplumb._runner import Runner, make_pool
from hotplumb._store import CheckpointStore
from hotplumb._subscribe import Overflow, SubscriberEdits, SubscriberKey, open_subscription

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Hashable, Iterable, Iterator, Mapping
    from concurrent.futures import Executor
    from contextlib import AbstractAsyncContextManager, AbstractContextManager
    from types import TracebackType

    from hotplumb._change import ApplyReport, Barrier, Participant
    from hotplumb._channel import Channel
    from hotplumb._checkpoint import CheckpointStatistics, Recovery
    from hotplumb._engine import Engine, EngineFactory
    from hotplumb._graph import Changelist
    from hotplumb._inspect import LiveNode
    from hotplumb._kernel import Kernel
    from hotplumb._node import Node
    from hotplumb._observe import Observer
    from hotplumb._snapshot import NodeStatistics, Snapshot
    from hotplumb._store import Checkpoint
    from hotplumb._subscribe import Subscription

__all__ = ["DeadLetters", "ShutdownReport", "Topology", "run"]

DEFAULT_CAPACITY = 1024

logger = logging.getLogger("hotplumb")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ShutdownReport:
    """What a topology held when it stopped.

    Attributes:
        drained: Whether it drained before stopping.
        undelivered: The data still in channels or in processing, each with
            the path it had reached.
        unflushed: The nodes declaring a ``flush`` whose state was not
            flushed (the topology stopped without draining, or the flush
            raised: the failure is in the dead-letter record).
    """

    drained: bool
    undelivered: tuple[Datum, ...] = field(default=())
    unflushed: tuple[Hashable, ...] = field(default=())


class DeadLetters:
    """The topology's record of data whose processing failed.

    It keeps the most recent ``maxlen`` failed data (each a
    :class:`~hotplumb.Datum` with ``error`` set) and counts them all. Iterate it
    to inspect, or ``await errors.wait(n)`` to wait for the n-th failure.
    """

    __slots__ = ("_changed", "_items", "total")

    def __init__(self, maxlen: int = 10_000) -> None:
        self._items: deque[Datum] = deque(maxlen=maxlen)
        self._changed: asyncio.Event | None = None
        self.total = 0
        """How many failures were recorded in all (including any no longer kept)."""

    def _record(self, datum: Datum) -> None:
        self._items.append(datum)
        self.total += 1
        if self._changed is not None:
            self._changed.set()

    async def wait(self, count: int = 1) -> Datum:
        """Wait until ``count`` failures have been recorded in all; return the latest.

        Args:
            count: The total to wait for.

        Returns:
            The most recently recorded failed datum.
        """
        while self.total < count:
            if self._changed is None:
                self._changed = asyncio.Event()
            self._changed.clear()
            await self._changed.wait()
        return self._items[-1]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Datum]:
        return iter(tuple(self._items))

    def __getitem__(self, index: int) -> Datum:
        return self._items[index]

    def explain(self, limit: int = 5) -> str:
        """Format the kept failures for people: a summary, then the latest in full.

        Args:
            limit: How many of the most recent failures to show in full.

        Returns:
            Failures counted by node and exception type, then each of the last
            ``limit`` explained like a traceback (see :meth:`Datum.explain`).
        """
        from hotplumb._explain import explain_dead_letters

        return explain_dead_letters(self, limit=limit)

    def __str__(self) -> str:
        return self.explain()

    def __repr__(self) -> str:
        return f"DeadLetters({len(self._items)} kept, {self.total} in all)"


class _FailureLog:
    """Failures to the ``hotplumb`` logger, rate-limited, and to the topology's callback.

    At most ``burst`` records per ``period`` seconds of the topology's clock;
    past that, failures are counted, and the next record after the period (or
    the topology's close) says how many were not logged.
    """

    __slots__ = ("_callback", "_clock", "_count", "_since", "_suppressed", "burst", "period")

    def __init__(
        self,
        clock: Clock,
        callback: Callable[[Datum], Any] | None,
        burst: int = 10,
        period: float = 1.0,
    ) -> None:
        self._clock = clock
        self._callback = callback
        self.burst = burst
        self.period = period
        self._since = clock.now()
        self._count = 0
        self._suppressed = 0

    def _admit(self) -> bool:
        now = self._clock.now()
        if now - self._since >= self.period:
            self.summarise()
            self._since = now
            self._count = 0
        self._count += 1
        if self._count > self.burst:
            self._suppressed += 1
            return False
        return True

    def summarise(self) -> None:
        """Log how many failures were not logged, if any."""
        if self._suppressed:
            logger.warning(
                "%d more node failure(s) not logged (at most %d per %gs)",
                self._suppressed,
                self.burst,
                self.period,
            )
            self._suppressed = 0

    def failed(self, datum: Datum) -> None:
        """A datum failed and nobody handled it."""
        error = datum.error
        if error is not None and self._admit():
            logger.error(
                "node %s (version %d) failed on a datum\n%s",
                format_key(error.key),
                error.version,
                explain(datum),
                extra={"hotplumb_key": error.key, "hotplumb_version": error.version},
            )
        if self._callback is not None:
            try:
                self._callback(datum)
            except Exception:
                logger.exception("the topology's on_failure callback raised")

    def died(self, key: Hashable, version: int, error: BaseException, fatal: bool) -> None:
        """A node's task died: restarted, or (``fatal``) past its restart policy."""
        if fatal:
            logger.error(
                "node %s (version %d) died past its restart policy: %s",
                format_key(key),
                version,
                exception_text(error),
                exc_info=error,
                extra={"hotplumb_key": key, "hotplumb_version": version},
            )
        elif self._admit():
            logger.warning(
                "node %s (version %d) died and is restarted: %s",
                format_key(key),
                version,
                exception_text(error),
                exc_info=error,
                extra={"hotplumb_key": key, "hotplumb_version": version},
            )


class _NoPublicConstructor(type):
    """A metaclass for classes the library makes: calling the class raises."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"hotplumb.{cls.__qualname__} has no public constructor; "
            "get a running topology from hotplumb.run(graph)"
        )

    def _create(cls: type[T], *args: Any, **kwargs: Any) -> T:
        return super().__call__(*args, **kwargs)  # type: ignore[misc,no-any-return]


class _Core:
    """The running state of a topology, behind :class:`Topology`."""

    clock_name = None  # the hops of its nodes are timed on the topology's clock

    def __init__(
        self,
        graph: Graph,
        task_group: asyncio.TaskGroup,
        *,
        capacity: int,
        clock: Clock,
        restart: RestartPolicy,
        trace: bool,
        max_errors: int,
        aligner: Callable[[], Aligner],
        on_failure: Callable[[Datum], Any] | None,
        observe: Callable[[_Core], Observer] | None = None,
        checkpoint: CheckpointStore | None = None,
        checkpoint_every: float | None = None,
        checkpoint_keep: int = 3,
        gc_freeze: bool = False,
        engine: Engine | None = None,
    ) -> None:
        self.graph = graph
        # Where nodes run, if not all here (None: every node runs in this process).
        self.engine = engine
        self.gc_freeze = gc_freeze
        self.clock = clock
        self.capacity = capacity
        self.restart = restart
        self.trace = trace
        self.errors = DeadLetters(max_errors)
        self.failures = _FailureLog(clock, on_failure)
        self.aligner = aligner
        self.task_group = task_group
        self.running: dict[Hashable, Participant] = {}
        self.entries: dict[Hashable, Channel] = {}
        self.changes = Changes(self)
        self.checkpoints = Checkpoints(self, checkpoint, checkpoint_every, checkpoint_keep)
        self.checkpointing: asyncio.Task[None] | None = None  # the periodic checkpoints
        self.node_tasks: dict[asyncio.Task[None], Hashable] = {}  # a node's task -> its key
        self.pools: dict[Pool, Executor] = {}  # the executors the topology owns
        self.closing = False
        self.closed = False
        self.report: ShutdownReport | None = None
        # Called once when the topology stops (subscriptions end their streams).
        self.closers: dict[int, Callable[[], None]] = {}
        self._closer_serials = itertools.count()
        # The subscribers' joins and leaves, made on the first subscribe().
        self.subscriber_edits: SubscriberEdits | None = None
        # Told of batches, failures and changes; None (the hot path's one check) if unobserved.
        self.observer: Observer | None = observe(self) if observe is not None else None

    def runners(self) -> Iterator[Runner]:
        """The nodes that run in this process (an engine's run elsewhere)."""
        for runner in self.running.values():
            if isinstance(runner, Runner):
                yield runner

    # -- for the nodes (NodeHost) ------------------------------------------------

    def spawn(
        self, coro: Coroutine[Any, Any, None], name: str, node: Hashable | None = None
    ) -> asyncio.Task[None] | None:
        try:
            task = self.task_group.create_task(coro, name=name)
        except RuntimeError:  # the task group is shutting down: the topology is failing
            coro.close()
            return None
        if node is not None:
            self.node_tasks[task] = node
            task.add_done_callback(self.node_tasks.pop)
        return task

    def dead_letter(self, datum: Datum) -> None:
        self.errors._record(datum)
        self.failures.failed(datum)

    def task_died(self, key: Hashable, version: int, error: BaseException, fatal: bool) -> None:
        self.failures.died(key, version, error, fatal)

    def pool(self, kind: Pool) -> Executor:
        executor = self.pools.get(kind)
        if executor is None:
            executor = self.pools[kind] = make_pool(kind)
        return executor

    def _shut_pools(self) -> None:
        """Stop the pools without waiting for their workers (an abort cannot wait)."""
        pools = list(self.pools.values())
        self.pools.clear()
        for executor in pools:
            executor.shutdown(wait=False, cancel_futures=True)

    # -- for changes (ChangeHost) ------------------------------------------------

    def new_participant(
        self, key: Hashable, node: Node, kernel: Kernel, version: int, readers: frozenset[Hashable]
    ) -> Participant:
        if self.engine is not None:
            member = self.engine.participant(key, node, kernel, version, readers)
            if member is not None:
                return member
        return Runner(self, key, node, kernel, version, readers, self.aligner())

    def open_channel(
        self, producer: Hashable | None, consumer: Participant, capacity: int
    ) -> Channel:
        if self.engine is not None:
            channel = self.engine.channel(producer, consumer, capacity)
            if channel is not None:
                return channel
        assert isinstance(consumer, Runner)
        return MemoryChannel(producer, consumer, capacity)

    async def admit(self, graph: Graph) -> frozenset[Hashable]:
        if self.engine is None:
            return frozenset()
        return await self.engine.admit(graph)

    async def begin_barrier(self, barrier: Barrier) -> None:
        if self.engine is not None:
            await self.engine.begin(barrier)

    def abandon_barrier(self, barrier: Barrier) -> None:
        if self.engine is not None:
            self.engine.abandon(barrier)

    def cut_barrier(self, barrier: Barrier) -> None:
        if self.engine is not None:
            self.engine.cut(barrier)

    def calling_node(self) -> Hashable | None:
        task = asyncio.current_task()
        return self.node_tasks.get(task) if task is not None else None

    def settle_memory(self) -> None:
        if self.gc_freeze:
            # A change's new graph and nodes are long-lived: the collector
            # should not scan them again and again while the change runs. A
            # full collection first, so that no garbage is frozen with them:
            # it scans only what is not frozen yet (what was made since the
            # last freeze), once.
            gc.collect()
            gc.freeze()

    def completed(self, graph: Graph, changes: Changelist) -> dict[Hashable, NodeStatistics]:
        final: dict[Hashable, NodeStatistics] = {}
        for key in changes.removed:
            member = self.running.get(key)
            if member is not None:
                final[key] = self._statistics(member)
                del self.running[key]
                member.release()
        self.graph = graph
        return final

    # -- for snapshots (LiveView) ------------------------------------------------

    @property
    def generation(self) -> int:
        return self.changes.generation

    def dead_letter_count(self) -> int:
        return self.errors.total

    def last_checkpoint(self) -> Checkpoint | None:
        return self.checkpoints.last

    def live_nodes(self) -> Mapping[Hashable, LiveNode]:
        return cast("Mapping[Hashable, LiveNode]", self.running)

    def statistics_of(self, key: Hashable) -> NodeStatistics:
        return self._statistics(self.running[key])

    def input_channels(self, key: Hashable) -> list[Channel]:
        runner = self.running[key]
        coming = self.changes.inputs_to_come(key)
        if not coming:
            return runner.inputs
        return runner.inputs + [c for c in coming if c not in runner.inputs]

    def change_in_flight(self) -> tuple[int, Any, Any, Any] | None:
        barrier = self.changes.pending
        if barrier is None:
            return None
        return (barrier.generation, barrier.region, barrier.pending, barrier.plan.switches)

    # -- for an observer (Watched) -------------------------------------------------

    def node_statistics(self) -> dict[Hashable, NodeStatistics]:
        return {key: self.statistics_of(key) for key in self.running}

    def subscriber_count(self) -> int:
        return sum(1 for key in self.running if type(key) is SubscriberKey)

    def _statistics(self, member: Participant) -> NodeStatistics:
        depth = sum(c.size for c in self.input_channels(member.key))
        statistics: NodeStatistics = member.statistics(  # type: ignore[attr-defined]
            depth, input_capacity(member.node, self.capacity)
        )
        return statistics

    # -- starting and data in ----------------------------------------------------

    def prepare(self, kernels: Mapping[Hashable, Kernel]) -> None:
        """Make every node and channel; nothing runs yet (a state factory may raise here)."""
        graph = self.graph
        running = self.running
        for key, node in graph.nodes.items():
            try:
                member = self.new_participant(key, node, kernels[key], 0, graph.readers_of(key))
            except Exception as exc:
                exc.add_note(f"while making the initial state of node {format_key(key)}")
                raise
            running[key] = member
        for key, member in running.items():
            node = member.node
            if node.inputs:
                member.inputs = [
                    self.open_channel(k, member, edge_capacity(graph.nodes[k], node, self.capacity))
                    for k in node.inputs
                ]
            else:
                member.entry = self.open_channel(None, member, input_capacity(node, self.capacity))
                member.inputs = [member.entry]
                self.entries[key] = member.entry
        for member in running.values():
            for index, k in enumerate(member.node.inputs):
                running[k].outputs.append(member.inputs[index])

    def start(self) -> None:
        """Start every node, and the periodic checkpoints."""
        for member in self.running.values():
            member.start()
        if self.checkpoints.every is not None:
            self.checkpointing = self.spawn(self.checkpoints.periodic(), "hotplumb checkpoints")

    async def stop_checkpoints(self) -> None:
        """Stop the periodic checkpoints (one being taken finishes first)."""
        task, self.checkpointing = self.checkpointing, None
        if task is None:
            return
        if not self.checkpoints.busy:
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    def entry(self, key: Hashable) -> Channel:
        if self.closing:
            raise TopologyClosedError("the topology is closed; it takes no more data")
        try:
            channel = self.entries.get(key)
        except TypeError:
            check_key(key)
            raise
        if channel is None:
            check_key(key)
            if key in self.running:
                inputs = self.running[key].node.inputs
                if not inputs and key not in self.graph.nodes:
                    raise NotAnEntryPointError(
                        key,
                        "a live change in progress is adding it: it opens when the change starts",
                    )
                if not inputs:
                    raise NotAnEntryPointError(key, "a live change in progress is removing it")
                raise NotAnEntryPointError(key, f"it is not an entry point (it reads {inputs!r})")
            if key in self.graph.provided:
                raise NotAnEntryPointError(key, "it is not running: no target reads from it")
            raise NotAnEntryPointError(key, "no such node in the running graph")
        if self.running[key].node.resumable:
            # Its checkpointed offset counts what the source produced only.
            raise NotAnEntryPointError(key, "it is a resumable source: it takes no injected data")
        return channel

    # -- stopping ----------------------------------------------------------------

    async def close(self, *, drain: bool, timeout: float | None) -> ShutdownReport:
        if self.report is not None:
            return self.report
        when = self.changes.deadline(timeout)  # a bad timeout raises before anything changes
        self.closing = True
        await self.stop_checkpoints()
        for runner in self.runners():
            runner.stop_producer()
        for channel in self.entries.values():
            channel.seal()
        drained = False
        if drain:
            remaining = None if when is None else max(0.0, when - self.clock.now())
            try:
                await self.changes.drain(remaining, final=True)
                drained = True
            except TimeoutError:
                pass
        tasks = [r.task for r in self.runners() if r.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        pools = list(self.pools.values())
        self.pools.clear()
        for executor in pools:
            # Waiting for the workers to end blocks: do it off the event loop.
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
        elsewhere = await self.engine.close() if self.engine is not None else []
        return self.finish(drained, elsewhere)

    def abort(self) -> ShutdownReport:
        """Stop at once without awaiting (the task group awaits the tasks)."""
        if self.report is not None:
            return self.report
        self.closing = True
        if self.checkpointing is not None:
            self.checkpointing.cancel()
        for runner in self.runners():
            runner.stop_producer()
            if runner.task is not None:
                runner.task.cancel()
        self._shut_pools()
        if self.engine is not None:
            self.engine.abort()
        return self.finish(False)

    def finish(self, drained: bool, elsewhere: Iterable[Datum] = ()) -> ShutdownReport:
        """Stop: the report of what was not delivered (``elsewhere``: the engine's)."""
        self.changes.abort()
        undelivered: list[Datum] = list(elsewhere)
        for runner in self.runners():
            held = runner.held()
            for channel in self.input_channels(runner.key):
                held.extend((m, False) for m in channel.close() if type(m) is Batch)
            for batch, is_output in held:
                if is_output:  # its route already ends at this node
                    route = batch.route if batch.route is not None else runner.route_for(None)
                else:
                    route = runner.route_for(batch.route)
                undelivered.extend(batch.data(route))
        generation = self.changes.generation
        unflushed = tuple(
            r.key
            for r in self.runners()
            # A node of a change that was never cut (its version is ahead) did not run.
            if r.node.flush is not None and not r.flushed and r.version <= generation
        )
        self.failures.summarise()
        self.closed = True
        if self.observer is not None:
            self.observer.close()
        self.report = ShutdownReport(drained, tuple(undelivered), unflushed)
        closers, self.closers = self.closers, {}
        for closer in closers.values():
            closer()
        return self.report

    def watch_close(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` when the topology stops; return what unregisters it."""
        if self.report is not None:
            callback()
            return _nothing
        token = next(self._closer_serials)
        self.closers[token] = callback

        def unwatch() -> None:
            self.closers.pop(token, None)

        return unwatch


def _nothing() -> None:
    pass


class Topology(metaclass=_NoPublicConstructor):
    """A graph running on asyncio. Get one from :func:`run`.

    Its attributes are read-only; change what runs with :meth:`apply`.
    """

    __slots__ = ("_core",)

    def __init__(self, core: _Core) -> None:
        self._core = core

    @property
    def graph(self) -> Graph:
        """The graph it runs (the new one once a change has completed)."""
        return self._core.graph

    @property
    def errors(self) -> DeadLetters:
        """The dead-letter record of data whose processing failed."""
        return self._core.errors

    @property
    def clock(self) -> Clock:
        """The clock used for timers, timeouts and tracing."""
        return self._core.clock

    @property
    def capacity(self) -> int:
        """The default capacity of input channels, in items."""
        return self._core.capacity

    @property
    def restart(self) -> RestartPolicy:
        """The default restart policy."""
        return self._core.restart

    @property
    def trace(self) -> bool:
        """Whether per-hop timing is recorded."""
        return self._core.trace

    @property
    def generation(self) -> int:
        """How many changes have been started on this topology."""
        return self._core.changes.generation

    @property
    def closed(self) -> bool:
        """Whether the topology has stopped."""
        return self._core.closed

    @property
    def closing(self) -> bool:
        """Whether the topology is stopping (or has stopped): it takes no more data."""
        return self._core.closing

    # -- data in ----------------------------------------------------------------

    async def inject(self, key: Hashable, value: Any) -> None:
        """Send ``value`` into the entry point ``key``.

        Waits while the entry point's channel is full (backpressure).

        Args:
            key: A running entry point (a node with no inputs).
            value: The value; it is also the datum's ``origin``.

        Raises:
            NotAnEntryPointError: ``key`` is unknown, not running or has inputs.
            TopologyClosedError: The topology is closed, or ``key`` was removed
                by a change while the call waited.

        Example:
            >>> async def main():
            ...     got = []
            ...     graph = Graph({"n": Node(), "out": sink(got.append, inputs=["n"])})
            ...     async with run(graph) as topo:
            ...         await topo.inject("n", 1)
            ...     return [d.value for d in got]
            >>> asyncio.run(main())
            [1]
        """
        values = [value]
        await self._core.entry(key).put(Batch(values, values, None))

    async def inject_many(self, key: Hashable, values: Iterable[Any]) -> int:
        """Send every value of ``values`` into the entry point ``key``, in batches.

        Args:
            key: A running entry point.
            values: The values, in order.

        Returns:
            How many values were sent.

        Raises:
            NotAnEntryPointError: As for :meth:`inject`.
            TopologyClosedError: As for :meth:`inject`; its ``accepted`` says how
                many of the values went in before.
        """
        channel = self._core.entry(key)
        size = max(1, min(channel.capacity, DEFAULT_CAPACITY))
        sent = 0
        it = iter(values)
        try:
            # The chunks are cut by itertools.islice, not by a loop over the values: per
            # value this costs nothing in Python.
            while chunk := list(itertools.islice(it, size)):
                await channel.put(Batch(chunk, chunk, None))
                sent += len(chunk)
        except TopologyClosedError as exc:
            exc.accepted = sent
            raise
        return sent

    # -- inspection -------------------------------------------------------------

    def statistics(self) -> dict[Hashable, NodeStatistics]:
        """Return per-node counters and input-channel depths (a copy, not live)."""
        return self._core.node_statistics()

    def snapshot(self) -> Snapshot:
        """Return a consistent, frozen view of the running nodes.

        Counters, queue depths and capacities, states, last errors and any
        change still propagating, taken without awaiting (see
        :class:`~hotplumb.Snapshot`); render it with :func:`hotplumb.to_dot`.
        """
        return take_snapshot(self._core)

    def running_keys(self) -> frozenset[Hashable]:
        """The keys of the nodes running now (during a change, old and new)."""
        return frozenset(self._core.running)

    # -- checkpoints ------------------------------------------------------------

    async def checkpoint(self) -> Checkpoint:
        """Take a checkpoint now: every node's state and every entry point's position.

        A barrier that switches nothing goes through every node; each records
        a copy of its state once the barrier has arrived on all its inputs, so
        the states are a consistent cut: each reflects exactly the data that
        entered before the barrier did. Checkpoints and live changes are
        serialised. Returns once the store has committed it, after telling the
        nodes with an ``on_checkpoint`` hook.

        Returns:
            The complete checkpoint.

        Raises:
            CheckpointError: A node's state could not be encoded (the error
                names it) or the store failed; the topology keeps running and
                the previous checkpoint stands. Also when the topology was run
                without a store.
            ReentrantCallError: Awaited from inside one of the topology's own nodes.
            TopologyClosedError: The topology is closed.
        """
        return await self._core.checkpoints.take()

    @property
    def recovered(self) -> Recovery | None:
        """What was restored from a checkpoint at start, or ``None`` (a fresh start)."""
        return self._core.checkpoints.recovered

    @property
    def checkpoints(self) -> CheckpointStatistics:
        """Checkpoints taken and failed so far, and the last complete one."""
        return self._core.checkpoints.statistics()

    # -- changes ----------------------------------------------------------------

    async def drain(self, *, timeout: float | None = None) -> None:
        """Return once everything sent in so far is delivered, filtered or failed.

        A barrier that switches nothing is sent through every node; when it has
        passed them all, everything before it has been processed.

        Args:
            timeout: Seconds (on the topology's clock) to wait at most.

        Raises:
            TimeoutError: The timeout passed first.
            TopologyClosedError: The topology is closed.
            ValueError: ``timeout`` is negative or NaN.
        """
        if self._core.closed:
            raise TopologyClosedError("the topology is closed")
        await self._core.changes.drain(timeout)

    async def apply(
        self, graph: Graph, *, timeout: float | None = None, placement: Any = None
    ) -> ApplyReport:
        """Change the running topology to ``graph`` while data flows.

        Nodes are added, removed, replaced and rewired as :meth:`Graph.diff`
        says; every datum is processed entirely by the old versions or entirely
        by the new ones; nothing is lost, duplicated or reordered; replaced
        nodes keep their state. Concurrent calls run one after another; a call
        that changes nothing returns at once without touching any node. The
        protocol is described in ``docs/design.md``.

        Args:
            graph: The graph to run from now on.
            timeout: Seconds (on the topology's clock) to wait in all: for an
                earlier change to finish, and for this one's switch.
            placement: With an engine (``run(..., engine=...)``): where the
                change's new nodes run, from now on (see
                :class:`hotplumb.ray.RayEngine`); ``None`` keeps the current one.

        Returns:
            A report of the change.

        A graph *derived* (by edits) from a graph this topology ran before the
        one it runs now is refused with :class:`~hotplumb.StaleGraphError`:
        applying it would silently undo the changes made since (two clients
        each doing ``apply(topo.graph.add_node(...))`` at once). Use
        :meth:`update` for read-modify-write changes. A graph built afresh is
        applied as it is.

        Raises:
            ApplyError: The time ran out (``running`` says whether nothing
                changed, or the switch goes on in the background and completes
                in order), or the new graph's nodes could not be started
                (nothing changed).
            StaleGraphError: ``graph`` was derived from a graph no longer running.
            ReentrantCallError: Awaited from inside one of the topology's own
                nodes (it could never complete).
            TopologyClosedError: The topology is closed.
            TypeError: ``graph`` is not a Graph.
            ValueError: ``timeout`` is negative or NaN, or ``placement`` is
                given without an engine or would move a running node.
        """
        if not isinstance(graph, Graph):
            raise TypeError(f"apply() takes a hotplumb.Graph, got {type(graph).__name__}")
        if self._core.closing:
            raise TopologyClosedError("the topology is closed; it takes no more changes")
        return await self._core.changes.apply(graph, timeout, self._placing(placement))

    def _placing(self, placement: Any) -> AbstractContextManager[None] | None:
        if placement is None:
            return None
        engine = self._core.engine
        if engine is None:
            raise ValueError("placement is for a topology run with an engine (run(..., engine=))")
        return engine.placing(placement)

    async def update(
        self, fn: Callable[[Graph], Graph], *, timeout: float | None = None, placement: Any = None
    ) -> ApplyReport:
        """Change the running topology to ``fn(topology.graph)``, atomically.

        ``fn`` is called under the change lock with the graph running at that
        moment, so concurrent updates compose: each sees the result of the
        one before, and none is lost. This is the way for clients to join and
        leave::

            await topo.update(lambda g: g.add_node(name, hp.sink(send, inputs=[wanted])))
            ...
            await topo.update(lambda g: g.remove_node(name))

        Args:
            fn: Makes the new graph from the running one; plain (not async),
                and quick: other changes wait while it runs. If it raises,
                nothing changes and the exception propagates.
            timeout: As for :meth:`apply`.
            placement: As for :meth:`apply`.

        Returns:
            A report of the change.

        Raises:
            ApplyError: As for :meth:`apply`.
            TopologyClosedError: The topology is closed.
            TypeError: ``fn`` did not return a Graph.
            ValueError: ``timeout`` is negative or NaN, or ``placement`` is as
                :meth:`apply` refuses it.
        """
        if not callable(fn):
            raise TypeError(f"update() takes a function of the running graph, got {fn!r}")
        if self._core.closing:
            raise TopologyClosedError("the topology is closed; it takes no more changes")
        return await self._core.changes.update(fn, timeout, self._placing(placement))

    # -- clients ----------------------------------------------------------------

    def subscribe(
        self,
        key: Hashable,
        *,
        capacity: int = DEFAULT_CAPACITY,
        overflow: Overflow = Overflow.DISCONNECT,
    ) -> Subscription:
        """Receive the data of ``key`` for the duration of an ``async with`` block.

        Entering adds a target reading ``key`` to the running graph (through
        :meth:`update`, so atomically with respect to other changes; the
        factory resolves ``key`` and what it needs); leaving removes it and
        garbage-collects what only it needed, whatever ended the block. The
        subscription is an async iterator of :class:`~hotplumb.Datum`: the data
        that reach ``key`` from the moment the change that added it went
        through; it ends when the topology closes.

        Args:
            key: The key to read: any key the graph provides or its factory makes.
            capacity: How many data may wait for the subscriber.
            overflow: When that many wait: :attr:`Overflow.DISCONNECT` (the
                default) cuts the subscriber off, and iterating raises
                :class:`~hotplumb.SubscriberOverflowError` with the count it
                missed, so a slow subscriber never slows anyone else;
                :attr:`Overflow.BACKPRESSURE` waits for room, so nothing is
                lost and the graph slows down to the subscriber.

        Returns:
            The subscription, to enter with ``async with``.

        Raises:
            InvalidKeyError: ``key`` cannot be a key (at once).
            ValueError: ``capacity`` is not an int >= 1 (at once).
            TypeError: ``overflow`` is not an :class:`Overflow` (at once).
            MissingNodeError: On entering: nothing provides ``key`` and the
                factory makes nothing for it (or for a key it needs); the
                graph's other resolution errors (``FactoryError``,
                ``CycleError``, ``GraphTooLargeError``) likewise. Nothing changes.
            ApplyError: On entering: as for :meth:`apply`.
            TopologyClosedError: On entering: the topology is closed.
            ReentrantCallError: On entering from a node's own task.

        Subscribers that join (or leave) while a change is under way share the
        next change: a burst of clients makes a few changes, not one each, and
        an error (a key nothing provides, say) is still the subscriber's own.

        Example:
            >>> async def main():
            ...     graph = Graph({"numbers": Node()})
            ...     async with run(graph) as topo:
            ...         async with topo.subscribe("numbers") as numbers:
            ...             await topo.inject("numbers", 1)
            ...             async for datum in numbers:
            ...                 return datum.value, datum.path
            >>> asyncio.run(main())
            (1, ('numbers', subscriber #... of numbers))
        """
        core = self._core
        edits = core.subscriber_edits
        if edits is None:
            edits = core.subscriber_edits = SubscriberEdits(self, core.changes.refuse_reentry)
        return open_subscription(edits, key, capacity, overflow, core.watch_close)

    # -- stopping ---------------------------------------------------------------

    async def close(self, *, drain: bool = True, timeout: float | None = None) -> ShutdownReport:
        """Stop the topology: sources first, then (optionally) drain, then every task.

        Calling it again returns the same report.

        Args:
            drain: Whether to wait until everything in flight is processed. With
                ``False`` the topology stops at once and the report lists what
                was not delivered.
            timeout: Seconds (on the topology's clock) the drain may take; past
                it the topology stops anyway and reports what was not delivered.

        Returns:
            What was not delivered (nothing, after a complete drain).

        Raises:
            ValueError: ``timeout`` is negative or NaN (nothing is changed).
        """
        return await self._core.close(drain=drain, timeout=timeout)

    def __repr__(self) -> str:
        core = self._core
        state = "closed" if core.closed else "closing" if core.closing else "running"
        return (
            f"<hotplumb.Topology {state}: {len(core.running)} nodes, "
            f"generation {core.changes.generation}>"
        )


class _Run:
    """The ``async with`` block of :func:`run` (a class, so it needs no async generator)."""

    __slots__ = ("_core", "_graph", "_group", "_kernels", "_options")

    def __init__(
        self,
        graph: Graph,
        kernels: Mapping[Hashable, Kernel],
        options: dict[str, Any],
    ) -> None:
        self._graph = graph
        self._kernels = kernels
        self._options = options
        self._group: asyncio.TaskGroup | None = None
        self._core: _Core | None = None

    async def __aenter__(self) -> Topology:
        if self._group is not None:
            raise RuntimeError("a hotplumb.run(...) block can be entered only once")
        group = self._group = asyncio.TaskGroup()
        core = self._core = _Core(self._graph, group, **self._options)
        stored = await core.checkpoints.read_latest()
        engine = core.engine
        if engine is None:
            core.prepare(self._kernels)  # state factories run here: errors raise as they are
        else:
            try:
                await engine.open(core)
                core.prepare(self._kernels)
                await engine.started()  # the nodes placed elsewhere are made there
            except BaseException:
                engine.abort()
                raise
        if stored is not None:
            core.checkpoints.restore(stored)  # before any node starts
            await core.checkpoints.tell_recovered()  # with the state each node starts from
        await group.__aenter__()
        core.start()
        if core.gc_freeze:
            gc.collect()
            gc.freeze()
        return Topology._create(core)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        group, core = self._group, self._core
        assert group is not None
        assert core is not None
        try:
            await self._exit(group, core, exc_type, exc, tb)
        finally:
            if core.gc_freeze:
                # What was frozen may be collected again: the closed topology
                # (its nodes and channels refer to each other) included.
                gc.unfreeze()

    async def _exit(
        self,
        group: asyncio.TaskGroup,
        core: _Core,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        body_failed = exc is not None
        if exc is None:
            try:
                await core.close(drain=True, timeout=None)
            except BaseException as close_error:
                core.abort()
                exc_type, exc, tb = type(close_error), close_error, close_error.__traceback__
        else:
            core.abort()
        try:
            await group.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as errors:
            if exc is not None and list(errors.exceptions) == [exc]:
                if body_failed:
                    return  # the body's own exception propagates as it is
                raise exc from None
            raise
        if exc is not None and not body_failed:
            raise exc


def run(
    graph: Graph,
    *,
    capacity: int = DEFAULT_CAPACITY,
    clock: Clock | None = None,
    restart: RestartPolicy | None = None,
    trace: bool = False,
    max_errors: int = 10_000,
    on_failure: Callable[[Datum], Any] | None = None,
    gc_freeze: bool = False,
    tracer_provider: Any = None,
    meter_provider: Any = None,
    trace_sampling: float | None = None,
    checkpoint: CheckpointStore | None = None,
    checkpoint_every: float | None = None,
    checkpoint_keep: int = 3,
    engine: EngineFactory | None = None,
) -> AbstractAsyncContextManager[Topology]:
    """Run ``graph`` on asyncio for the duration of an ``async with`` block.

    Leaving the block drains everything in flight, then stops every task. If
    the block raises or is cancelled, the topology stops at once. If a node
    fails past its restart policy, the block is cancelled and the failure
    propagates as an :class:`ExceptionGroup` of :class:`NodeFailedError`.

    Args:
        graph: The graph to run.
        capacity: Default capacity of each input channel, in items.
        clock: The clock for timers, timeouts and tracing (the event loop's
            by default; tests pass :class:`hotplumb.testing.FakeClock`).
        restart: Default restart policy for nodes whose task dies.
        trace: Record per-hop timing on every datum.
        max_errors: How many failed data the dead-letter record keeps.
        on_failure: Called with every failed datum nobody's ``on_error``
            handled (as it is recorded in ``topology.errors``). Failures also
            go to the ``hotplumb`` logger (see the README), rate-limited.
        gc_freeze: Once every node has started, and again when a change
            starts and when its new nodes are in place, collect garbage once
            and move everything the process holds to the garbage collector's
            permanent generation (:func:`gc.freeze`), so the collector does
            not scan the long-lived topology again and again: full
            collections of a big graph no longer pause the data. Frozen
            objects are still freed when nothing refers to them (a node a
            change removes is, and so is an old graph nobody holds), but a
            frozen object that becomes part of garbage *cycles* stays until
            the topology closes, which unfreezes everything
            (:func:`gc.unfreeze`). Process-wide: use it where the topology is
            most of what the process keeps.
        tracer_provider: An OpenTelemetry ``TracerProvider``: data become
            traces, hops spans, changes ``hotplumb.apply`` spans (see
            :mod:`hotplumb.otel`; needs the ``otel`` extra). Without it and
            ``meter_provider``, nothing of OpenTelemetry is imported.
        meter_provider: An OpenTelemetry ``MeterProvider``: per-node counters,
            input depths, dead letters and change durations as metrics.
        trace_sampling: ``None`` (the default, and the cheap mode): one span
            per batch per hop. A ratio in ``[0, 1]``: that share of the data
            entering the topology is traced, one span per datum per hop
            (``1.0``: every datum); failed data are traced whatever it is.
        checkpoint: A checkpoint store (:class:`~hotplumb.SQLiteStore`,
            :class:`~hotplumb.DirectoryStore`, or any
            :class:`~hotplumb.CheckpointStore`). If it holds a complete
            checkpoint, the topology starts from the newest one (see
            :attr:`Topology.recovered`); :meth:`Topology.checkpoint` writes to it.
        checkpoint_every: Take a checkpoint every this many seconds of the
            topology's clock (failures are logged and counted, not raised).
        checkpoint_keep: How many complete checkpoints the store keeps.
        engine: Where the nodes run, if not all in this process:
            :class:`hotplumb.ray.RayEngine` spreads them over Ray actors
            (needs the ``ray`` extra). The topology's API is the same.

    Yields:
        The running :class:`Topology`.

    Raises:
        InvalidNodeCallableError: A node's callable has an unusable signature
            (raised before anything starts).
        TypeError: A provider is not an OpenTelemetry provider.
        ValueError: ``trace_sampling`` is not a ratio in ``[0, 1]``, or is
            given without a ``tracer_provider``.

    Example:
        >>> async def main():
        ...     received = []
        ...     graph = Graph({
        ...         "numbers": Node(),
        ...         "plus1": Node(lambda x: x + 1, inputs=["numbers"]),
        ...         "out": sink(received.append, inputs=["plus1"]),
        ...     })
        ...     async with run(graph) as topo:
        ...         await topo.inject("numbers", 41)
        ...         await topo.drain()
        ...     return received[0].value, received[0].path
        >>> asyncio.run(main())
        (42, ('numbers', 'plus1', 'out'))
    """
    return _open(
        graph,
        capacity=capacity,
        clock=clock,
        restart=restart,
        trace=trace,
        max_errors=max_errors,
        on_failure=on_failure,
        gc_freeze=gc_freeze,
        aligner=Aligner,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        trace_sampling=trace_sampling,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        checkpoint_keep=checkpoint_keep,
        engine=engine,
    )


def _open(
    graph: Graph,
    *,
    capacity: int,
    clock: Clock | None,
    restart: RestartPolicy | None,
    trace: bool,
    max_errors: int,
    on_failure: Callable[[Datum], Any] | None = None,
    gc_freeze: bool = False,
    tracer_provider: Any = None,
    meter_provider: Any = None,
    trace_sampling: float | None = None,
    checkpoint: CheckpointStore | None = None,
    checkpoint_every: float | None = None,
    checkpoint_keep: int = 3,
    engine: EngineFactory | None = None,
    aligner: Callable[[], Aligner] = Aligner,
) -> _Run:
    """:func:`run`, with the alignment strategy as a seam for the protocol's tests."""
    if not isinstance(graph, Graph):
        raise TypeError(f"run() takes a hotplumb.Graph, got {type(graph).__name__}")
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
        raise ValueError(f"capacity must be an int >= 1, got {capacity!r}")
    if clock is not None and not isinstance(clock, Clock):
        raise TypeError(f"clock must be a hotplumb.Clock (now, sleep_until), got {clock!r}")
    if restart is not None and not isinstance(restart, RestartPolicy):
        raise TypeError(f"restart must be a hotplumb.RestartPolicy, got {restart!r}")
    if isinstance(max_errors, bool) or not isinstance(max_errors, int) or max_errors < 0:
        raise ValueError(f"max_errors must be an int >= 0, got {max_errors!r}")
    if on_failure is not None and not callable(on_failure):
        raise TypeError(f"on_failure must be callable or None, got {on_failure!r}")
    observe = _observer_factory(tracer_provider, meter_provider, trace_sampling)
    if checkpoint is not None and not isinstance(checkpoint, CheckpointStore):
        raise TypeError(
            "checkpoint must be a checkpoint store (hotplumb.SQLiteStore, DirectoryStore, or "
            f"one with begin, put, commit, abort, latest, prune), got {checkpoint!r}"
        )
    if checkpoint_every is not None:
        if checkpoint is None:
            raise ValueError("checkpoint_every needs a store: pass checkpoint=store")
        if (
            isinstance(checkpoint_every, bool)
            or not isinstance(checkpoint_every, int | float)
            or not 0 < checkpoint_every < math.inf
        ):
            raise ValueError(
                f"checkpoint_every must be a positive number of seconds, got {checkpoint_every!r}"
            )
    if isinstance(checkpoint_keep, bool) or not isinstance(checkpoint_keep, int):
        raise ValueError(f"checkpoint_keep must be an int >= 1, got {checkpoint_keep!r}")
    if checkpoint_keep < 1:
        raise ValueError(f"checkpoint_keep must be an int >= 1, got {checkpoint_keep!r}")
    if engine is not None:
        if not callable(getattr(engine, "for_topology", None)):
            raise TypeError(
                f"engine must be an engine such as hotplumb.ray.RayEngine, got {engine!r}"
            )
        if checkpoint is not None:
            raise ValueError("checkpoints are not supported with an engine yet")
    # Every node's callables are checked before anything starts.
    kernels = {key: build_kernel(key, node) for key, node in graph.nodes.items()}
    return _Run(
        graph,
        kernels,
        {
            "gc_freeze": bool(gc_freeze),
            "capacity": capacity,
            "clock": clock if clock is not None else SystemClock(),
            "restart": restart if restart is not None else RestartPolicy(),
            "trace": bool(trace),
            "max_errors": max_errors,
            "aligner": aligner,
            "on_failure": on_failure,
            "observe": observe,
            "checkpoint": checkpoint,
            "checkpoint_every": checkpoint_every,
            "checkpoint_keep": checkpoint_keep,
            "engine": engine.for_topology() if engine is not None else None,
        },
    )


def _observer_factory(
    tracer_provider: Any, meter_provider: Any, trace_sampling: float | None
) -> Callable[[_Core], Observer] | None:
    """What makes the topology's observer, or ``None``: nothing of OpenTelemetry is imported."""
    if trace_sampling is not None:
        if (
            isinstance(trace_sampling, bool)
            or not isinstance(trace_sampling, int | float)
            or not 0.0 <= trace_sampling <= 1.0
        ):
            raise ValueError(
                f"trace_sampling must be a ratio in [0, 1] or None, got {trace_sampling!r}"
            )
        if tracer_provider is None:
            raise ValueError("trace_sampling needs a tracer_provider")
    if tracer_provider is not None and not callable(getattr(tracer_provider, "get_tracer", None)):
        raise TypeError(
            f"tracer_provider must be an OpenTelemetry TracerProvider, got {tracer_provider!r}"
        )
    if meter_provider is not None and not callable(getattr(meter_provider, "get_meter", None)):
        raise TypeError(
            f"meter_provider must be an OpenTelemetry MeterProvider, got {meter_provider!r}"
        )
    if tracer_provider is None and meter_provider is None:
        return None
    from hotplumb import otel  # needs the otel extra; imported only when asked for

    return functools.partial(
        otel.OtelObserver,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        trace_sampling=None if trace_sampling is None else float(trace_sampling),
    )
