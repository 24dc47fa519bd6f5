"""Running a graph: :func:`run`, :class:`Topology`, and live changes with :meth:`Topology.apply`.

How a live change works (the argument for each guarantee is in docs/design.md):

1. ``apply`` diffs the running graph against the new one and prepares
   everything that can fail before anything changes: the new nodes' callables
   are checked, new runners are built, new channels are made. If this fails,
   nothing has changed.
2. The *switching* nodes are the running ones whose version, inputs or readers
   change; the *region* is them and all their ancestors. New runners start now,
   but their input channels are attached to their producers only at those
   producers' switches, so they see nothing from before the change.
3. In one step, without awaiting, a barrier is put into the entry channel of
   every entry point in the region. This is the cut: data injected before it
   is processed by the old versions, data after by the new.
4. Each node in the region aligns the barrier on its inputs, forwards it to its
   readers in the region, switches (new version, state carried over, new
   inputs and outputs) and acknowledges. When all have, the change is done.

Changes are serialised by a lock; ``drain`` sends a barrier with no switches
through every node and waits for it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from hotplumb._channel import Batch, Channel
from hotplumb._clock import Clock, SystemClock, run_with_timeout
from hotplumb._control import Barrier, Switch
from hotplumb._datum import Datum
from hotplumb._errors import ApplyError, NotAnEntryPointError, TopologyClosedError
from hotplumb._graph import Changelist, Graph
from hotplumb._kernel import Kernel, build_kernel
from hotplumb._keys import check_key
from hotplumb._node import Node, RestartPolicy
from hotplumb._runner import Runner

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Coroutine, Hashable, Iterable, Iterator, Mapping

    from hotplumb._inspect import Snapshot

__all__ = [
    "ApplyReport",
    "DeadLetters",
    "NodeStatistics",
    "ShutdownReport",
    "Topology",
    "run",
]

DEFAULT_CAPACITY = 1024


@dataclass(frozen=True, slots=True)
class NodeStatistics:
    """Counters of one running node.

    Attributes:
        key: The node's key.
        version: Its version (the generation that last defined it).
        received: Items taken from its inputs.
        emitted: Items sent to its readers (for a target: delivered).
        filtered: Items that produced no output.
        failed: Items whose processing raised and were not replaced.
        restarts: Times its task was restarted.
        in_progress: Items taken from its inputs and not yet settled (being
            processed, or waiting to be sent on).
        input_depth: Items waiting in its input channels.
        input_capacity: The capacity of each input channel.
    """

    key: Hashable
    version: int
    received: int
    emitted: int
    filtered: int
    failed: int
    restarts: int
    in_progress: int
    input_depth: int
    input_capacity: int


@dataclass(frozen=True, slots=True)
class ApplyReport:
    """What a completed :meth:`Topology.apply` did.

    Attributes:
        changelist: The changes applied.
        generation: The topology generation the change started (node versions
            it defined carry this number).
        visited: How many running nodes the barrier visited.
        seconds: Time from sending the barrier to the last node switching.
        errors: Keys whose state migration or change handler raised, with the
            exception (the node switched anyway, from its initial state).
        removed: The final counters of the nodes the change removed.
    """

    changelist: Changelist
    generation: int
    visited: int
    seconds: float
    errors: tuple[tuple[Hashable, BaseException], ...] = ()
    removed: Mapping[Hashable, NodeStatistics] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ShutdownReport:
    """What a topology held when it stopped.

    Attributes:
        drained: Whether it drained before stopping.
        undelivered: The data still in channels or in processing, each with
            the path it had reached.
    """

    drained: bool
    undelivered: tuple[Datum, ...] = field(default=())


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


class Topology:
    """A graph running on asyncio. Get one from :func:`run`.

    Attributes:
        graph: The graph it runs (the new one once a change has completed).
        errors: The dead-letter record of data whose processing failed.
        clock: The clock used for timers, timeouts and tracing.
        capacity: The default capacity of input channels, in items.
        restart: The default restart policy.
        trace: Whether per-hop timing is recorded.
    """

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
    ) -> None:
        self.graph = graph
        self.clock = clock
        self.capacity = capacity
        self.restart = restart
        self.trace = trace
        self.errors = DeadLetters(max_errors)
        self._task_group = task_group
        self._runners: dict[Hashable, Runner] = {}
        self._entries: dict[Hashable, Channel] = {}
        self._lock = asyncio.Lock()
        self._generation = 0
        self._pending: Barrier | None = None  # the change in flight, if any
        self._in_flight: set[Barrier] = set()  # every barrier not yet done
        self._change_errors: dict[int, list[tuple[Hashable, BaseException]]] = {}
        # Final counters of removed nodes, per generation, until apply reports them.
        self._removed_statistics: dict[int, dict[Hashable, NodeStatistics]] = {}
        self._closing = False
        self._closed = False
        self._report: ShutdownReport | None = None

    # -- starting ---------------------------------------------------------------

    def capacity_for(self, node: Node) -> int:
        """The input-channel capacity for ``node``."""
        return node.capacity if node.capacity is not None else self.capacity

    def edge_capacity(self, producer: Node, reader: Node) -> int:
        """The capacity of the channel from ``producer`` into ``reader``."""
        capacity = self.capacity_for(reader)
        if producer.output_capacity is not None:
            return min(capacity, producer.output_capacity)
        return capacity

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Start a task owned by this topology's task group."""
        return self._task_group.create_task(coro, name=name)

    def _start(self, kernels: Mapping[Hashable, Kernel]) -> None:
        graph = self.graph
        runners = self._runners
        for key, node in graph.nodes.items():
            runners[key] = Runner(self, key, node, kernels[key], 0, graph.readers_of(key))
        for key, runner in runners.items():
            node = runner.node
            if node.inputs:
                runner.inputs = [
                    Channel(k, runner, self.edge_capacity(graph.nodes[k], node))
                    for k in node.inputs
                ]
            else:
                runner.inputs = [runner.make_entry()]
                self._entries[key] = runner.inputs[0]
        for runner in runners.values():
            for index, k in enumerate(runner.node.inputs):
                runners[k].outputs.append(runner.inputs[index])
        for runner in runners.values():
            runner.start()

    # -- data in ----------------------------------------------------------------

    def _entry(self, key: Hashable) -> Channel:
        if self._closing:
            raise TopologyClosedError("the topology is closed; it takes no more data")
        try:
            channel = self._entries.get(key)
        except TypeError:
            check_key(key)
            raise
        if channel is None:
            check_key(key)
            if key in self._runners:
                inputs = self._runners[key].node.inputs
                if not inputs:
                    raise NotAnEntryPointError(key, "a live change in progress is removing it")
                raise NotAnEntryPointError(key, f"it is not an entry point (it reads {inputs!r})")
            if key in self.graph.provided:
                raise NotAnEntryPointError(key, "it is not running: no target reads from it")
            raise NotAnEntryPointError(key, "no such node in the running graph")
        return channel

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
        await self._entry(key).put(Batch(values, values, None))

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
        channel = self._entry(key)
        size = max(1, min(channel.capacity, DEFAULT_CAPACITY))
        sent = 0
        chunk: list[Any] = []
        try:
            for value in values:
                chunk.append(value)
                if len(chunk) >= size:
                    await channel.put(Batch(chunk, chunk, None))
                    sent += len(chunk)
                    chunk = []
            if chunk:
                await channel.put(Batch(chunk, chunk, None))
                sent += len(chunk)
        except TopologyClosedError as exc:
            exc.accepted = sent
            raise
        return sent

    # -- inspection -------------------------------------------------------------

    @property
    def generation(self) -> int:
        """How many changes have been started on this topology."""
        return self._generation

    @property
    def closed(self) -> bool:
        """Whether the topology has stopped."""
        return self._closed

    @property
    def closing(self) -> bool:
        """Whether the topology is stopping (or has stopped): it takes no more data."""
        return self._closing

    def statistics(self) -> dict[Hashable, NodeStatistics]:
        """Return per-node counters and input-channel depths (a copy, not live)."""
        return {key: self._statistics_of(r) for key, r in self._runners.items()}

    def _statistics_of(self, r: Runner) -> NodeStatistics:
        return NodeStatistics(
            key=r.key,
            version=r.version,
            received=r.received,
            emitted=r.emitted,
            filtered=r.filtered,
            failed=r.failed,
            restarts=r.restarts,
            in_progress=r.holding,
            input_depth=sum(c.size for c in r.all_inputs()),
            input_capacity=self.capacity_for(r.node),
        )

    def snapshot(self) -> Snapshot:
        """Return a consistent, frozen view of the running nodes.

        Counters, queue depths and capacities, states, last errors and any
        change still propagating, taken without awaiting (see
        :class:`~hotplumb.Snapshot`); render it with :func:`hotplumb.to_dot`.
        """
        from hotplumb._inspect import take_snapshot

        return take_snapshot(self)

    def running_keys(self) -> frozenset[Hashable]:
        """The keys of the nodes running now (during a change, old and new)."""
        return frozenset(self._runners)

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
        """
        if self._closed:
            raise TopologyClosedError("the topology is closed")
        deadline = self._deadline(timeout)
        await self._within(self._lock.acquire(), deadline)
        try:
            await self._within(self._settle(), deadline)
            await self._within(self._flush(), deadline)
        finally:
            self._lock.release()

    # One deadline bounds every wait of a drain or a change: for the lock (another
    # change in progress), for a previous change still propagating, and for the
    # barrier itself. A flush barrier abandoned by a timeout is harmless: it
    # switches nothing and nobody waits for it.

    def _deadline(self, timeout: float | None) -> float | None:
        if timeout is None:
            return None
        if not timeout >= 0:  # also refuses NaN
            raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        return self.clock.now() + timeout

    async def _within(self, awaitable: Coroutine[Any, Any, Any], deadline: float | None) -> None:
        if deadline is None:
            await awaitable
        else:
            remaining = max(0.0, deadline - self.clock.now())
            await run_with_timeout(self.clock, awaitable, remaining)

    async def _settle(self) -> None:
        """Wait for every barrier still in flight (a timed-out change or drain).

        Only one barrier may travel at a time: a node aligns one at a time, and
        a region is computed against the graph the last barrier left.
        """
        for barrier in list(self._in_flight):
            await barrier.done.wait()
            self._in_flight.discard(barrier)

    async def _flush(self) -> None:
        barrier = Barrier(self._generation, frozenset(self._runners), {})
        self._in_flight.add(barrier)
        for channel in self._entries.values():
            channel.put_control(barrier)
        await self._complete(barrier)

    async def _complete(self, barrier: Barrier) -> None:
        """Wait for ``barrier`` (already in flight) to pass every node of its region.

        Raises:
            TopologyClosedError: The topology stopped first.
        """
        await barrier.done.wait()
        self._in_flight.discard(barrier)
        if barrier.aborted:
            raise TopologyClosedError("the topology stopped before the barrier passed every node")

    async def apply(self, graph: Graph, *, timeout: float | None = None) -> ApplyReport:
        """Change the running topology to ``graph`` while data flows.

        Nodes are added, removed, replaced and rewired as :meth:`Graph.diff`
        says; every datum is processed entirely by the old versions or entirely
        by the new ones; nothing is lost, duplicated or reordered; replaced
        nodes keep their state. Concurrent calls run one after another; a call
        that changes nothing returns at once without touching any node.

        Args:
            graph: The graph to run from now on.
            timeout: Seconds (on the topology's clock) to wait in all: for an
                earlier change to finish, and for this one's switch.

        Returns:
            A report of the change.

        Raises:
            ApplyError: The time ran out (``running`` says whether nothing
                changed, or the switch goes on in the background and completes
                in order), or the new graph's nodes could not be started
                (nothing changed).
            TopologyClosedError: The topology is closed.
        """
        if not isinstance(graph, Graph):
            raise TypeError(f"apply() takes a hotplumb.Graph, got {type(graph).__name__}")
        if self._closing:
            raise TopologyClosedError("the topology is closed; it takes no more changes")
        deadline = self._deadline(timeout)
        try:
            await self._within(self._lock.acquire(), deadline)
        except TimeoutError:
            raise ApplyError(f"another change held the topology past {timeout}s", "old") from None
        try:
            return await self._apply(graph, deadline, timeout)
        finally:
            self._lock.release()

    async def _apply(
        self, graph: Graph, deadline: float | None, timeout: float | None
    ) -> ApplyReport:
        try:
            await self._within(self._settle(), deadline)
        except TimeoutError:
            raise ApplyError(f"an earlier change did not finish within {timeout}s", "old") from None
        old = self.graph
        changes = old.diff(graph)
        if not changes:
            self.graph = graph
            return ApplyReport(changes, self._generation, 0, 0.0)
        generation = self._generation + 1
        kernels: dict[Hashable, Kernel] = {}
        fresh: dict[Hashable, Runner] = {}
        try:
            for count, k in enumerate(changes.added | changes.replaced | changes.rewired, 1):
                kernels[k] = build_kernel(k, graph.nodes[k])
                if k in changes.added:  # its state factory runs here, so it may fail here
                    node = graph.nodes[k]
                    fresh[k] = Runner(self, k, node, kernels[k], generation, graph.readers_of(k))
                if not count % 256:
                    # A big change should not stall the data: nothing is
                    # changed until the cut, and the lock keeps other changes out.
                    await asyncio.sleep(0)
        except Exception as exc:
            raise ApplyError(f"the new graph cannot start: {exc}", "old") from exc
        if self._closing:
            raise TopologyClosedError("the topology closed before the change started")
        self._generation = generation
        barrier = self._launch(graph, changes, kernels, fresh)
        began = time.perf_counter()
        try:
            await self._within(self._complete(barrier), deadline)
        except TimeoutError:
            pending = ", ".join(sorted(map(repr, barrier.pending))[:5])
            raise ApplyError(
                f"the change did not complete within {timeout}s (waiting for {pending})",
                "switching",
            ) from None
        return ApplyReport(
            changes,
            barrier.generation,
            len(barrier.region),
            time.perf_counter() - began,
            tuple(self._change_errors.pop(barrier.generation, ())),
            MappingProxyType(self._removed_statistics.pop(barrier.generation, {})),
        )

    def _launch(
        self,
        graph: Graph,
        changes: Changelist,
        kernels: Mapping[Hashable, Kernel],
        fresh: dict[Hashable, Runner],
    ) -> Barrier:
        """Prepare and start a change; return its barrier (in flight)."""
        generation = self._generation
        runners = self._runners
        old = self.graph
        switching = (changes.changed | changes.readers_changed) & runners.keys()
        region = _ancestors(old, switching)

        def runner_of(key: Hashable) -> Runner:
            return fresh[key] if key in fresh else runners[key]

        # New input channels, per node that is new or switches and still runs.
        inputs: dict[Hashable, list[Channel]] = {}
        new_entries: dict[Hashable, Channel] = {}
        for key in fresh.keys() | (switching - changes.removed):
            runner = runner_of(key)
            node = graph.nodes[key]
            if not node.inputs:
                entry = runner.entry if key in runners and runner.entry is not None else None
                if entry is None:
                    entry = Channel(None, runner, self.capacity_for(node))
                    if key in fresh:
                        runner.entry = entry
                else:
                    entry.capacity = self.capacity_for(node)  # the new node's capacity
                inputs[key] = [entry]
                new_entries[key] = entry
                continue
            existing = {c.producer: c for c in runner.inputs} if key in runners else {}
            inputs[key] = [
                existing[u]
                if u in existing and u not in fresh
                else Channel(u, runner, self.edge_capacity(graph.nodes[u], node))
                for u in node.inputs
            ]
            for channel in inputs[key]:  # kept channels take the new nodes' capacity
                channel.capacity = self.edge_capacity(graph.nodes[channel.producer], node)

        def channel_into(reader: Hashable, producer: Hashable) -> Channel:
            if reader in inputs:
                for c in inputs[reader]:
                    if c.producer == producer:
                        return c
            for c in runners[reader].inputs:
                if c.producer == producer:
                    return c
            raise AssertionError(f"no channel {producer!r} -> {reader!r}")  # pragma: no cover

        plan: dict[Hashable, Switch] = {}
        for key in switching:
            if key in changes.removed:
                plan[key] = Switch(None, generation)
                continue
            node = graph.nodes[key]
            readers = graph.readers_of(key)
            redefined = key in changes.replaced or key in changes.rewired
            plan[key] = Switch(
                node if redefined else runners[key].node,
                generation if redefined else runners[key].version,
                inputs[key],
                [channel_into(r, key) for r in readers],
                readers,
                kernels[key] if redefined else runners[key].kernel,
            )
            runners[key].next_inputs = inputs[key]
        for key, runner in fresh.items():
            runner.inputs = inputs[key]
            runner.outputs = [channel_into(r, key) for r in graph.readers_of(key)]

        barrier = Barrier(generation, frozenset(region), plan)
        barrier.on_ack = lambda key: self._acked(barrier, graph, changes)
        self._pending = barrier
        self._in_flight.add(barrier)

        # Everything below runs without awaiting: it is the cut.
        for key, runner in fresh.items():
            runners[key] = runner
        for key in changes.removed | changes.replaced | changes.rewired:
            if key in self._entries and key in runners:
                runners[key].stop_producer()
        for key in list(self._entries):
            if key in changes.removed or (key in graph.nodes and graph.nodes[key].inputs):
                self._entries.pop(key).seal()
        sources = [k for k in region if not runners[k].node.inputs]
        for key in sources:
            entry = runners[key].entry
            assert entry is not None
            entry.put_control(barrier)
        self._entries.update(new_entries)
        for runner in fresh.values():
            runner.start()
        if not barrier.pending:  # nothing running was affected: done already
            self._acked(barrier, graph, changes)
        return barrier

    def _acked(self, barrier: Barrier, graph: Graph, changes: Changelist) -> None:
        if barrier.pending:
            return
        final = self._removed_statistics.setdefault(barrier.generation, {})
        for key in changes.removed:
            runner = self._runners.pop(key, None)
            if runner is not None:
                runner.stopped = True
                final[key] = self._statistics_of(runner)
        self.graph = graph
        if self._pending is barrier:
            self._pending = None

    def _note_change_error(self, barrier: Barrier, key: Hashable, exc: BaseException) -> None:
        self._change_errors.setdefault(barrier.generation, []).append((key, exc))

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
        """
        if self._report is not None:
            return self._report
        self._closing = True
        for runner in self._runners.values():
            runner.stop_producer()
        for channel in self._entries.values():
            channel.seal()
        drained = False
        if drain:
            deadline = self._deadline(timeout)
            try:
                await self._within(self._lock.acquire(), deadline)
            except TimeoutError:
                pass
            else:
                try:
                    await self._within(self._settle(), deadline)
                    await self._within(self._flush(), deadline)
                    drained = True
                except TimeoutError:
                    pass
                finally:
                    self._lock.release()
        tasks = [r.task for r in self._runners.values() if r.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return self._finish(drained)

    def _abort(self) -> ShutdownReport:
        """Stop at once without awaiting (the task group awaits the tasks)."""
        if self._report is not None:
            return self._report
        self._closing = True
        for runner in self._runners.values():
            runner.stop_producer()
            if runner.task is not None:
                runner.task.cancel()
        return self._finish(False)

    def _finish(self, drained: bool) -> ShutdownReport:
        for barrier in list(self._in_flight):
            barrier.abort()  # nobody is left to pass it on
        undelivered: list[Datum] = []
        for runner in self._runners.values():
            held = runner.held()
            for channel in runner.all_inputs():
                held.extend((m, False) for m in channel.close() if type(m) is Batch)
            for batch, is_output in held:
                if is_output:  # its route already ends at this node
                    route = batch.route if batch.route is not None else runner.root
                else:
                    route = (
                        batch.route.child(runner.key) if batch.route is not None else runner.root
                    )
                parents = batch.parents or [()] * len(batch.values)
                undelivered.extend(
                    Datum(v, o, route, None, p)
                    for v, o, p in zip(batch.values, batch.origins, parents, strict=True)
                )
        self._closed = True
        self._report = ShutdownReport(drained, tuple(undelivered))
        return self._report


def _ancestors(graph: Graph, keys: Iterable[Hashable]) -> set[Hashable]:
    seen = set(keys)
    stack = list(seen)
    while stack:
        key = stack.pop()
        for parent in graph.inputs_of(key):
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


@asynccontextmanager
async def run(
    graph: Graph,
    *,
    capacity: int = DEFAULT_CAPACITY,
    clock: Clock | None = None,
    restart: RestartPolicy | None = None,
    trace: bool = False,
    max_errors: int = 10_000,
) -> AsyncIterator[Topology]:
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

    Yields:
        The running :class:`Topology`.

    Raises:
        InvalidNodeCallableError: A node's callable has an unusable signature
            (raised before anything starts).

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
    if not isinstance(graph, Graph):
        raise TypeError(f"run() takes a hotplumb.Graph, got {type(graph).__name__}")
    if capacity < 1:
        raise ValueError(f"capacity must be at least 1, got {capacity}")
    kernels = {k: build_kernel(k, n) for k, n in graph.nodes.items()}
    body_error: BaseException | None = None
    try:
        async with asyncio.TaskGroup() as task_group:
            topology = Topology(
                graph,
                task_group,
                capacity=capacity,
                clock=clock if clock is not None else SystemClock(),
                restart=restart if restart is not None else RestartPolicy(),
                trace=trace,
                max_errors=max_errors,
            )
            topology._start(kernels)
            try:
                yield topology
            except BaseException as exc:
                body_error = exc
                topology._abort()
                raise
            await topology.close(drain=True)
    except BaseExceptionGroup as group:
        if body_error is not None and list(group.exceptions) == [body_error]:
            raise body_error from None
        raise
