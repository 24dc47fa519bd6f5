"""The live-change protocol, end to end: plan, cut, align, switch, acknowledge, complete.

``Topology.apply(new_graph)`` and ``Topology.drain()`` delegate to
:class:`Changes`; each running node calls :func:`receive` when a barrier
reaches it on one of its inputs. Nothing else in the runtime knows how a
change travels.

The steps, each with the code that implements it:

1. **Plan** (:func:`plan_steps`, a pure value). From ``old.diff(new)``:
   the *switching* nodes are the running ones that are removed, replaced,
   rewired or whose readers change; the *region* is them and all their
   ancestors in the running graph. For each switching node the plan holds a
   :class:`Switch`: its new node, version, kernel, input channels (kept where
   the edge survives, new otherwise) and output channels (the readers' input
   channels); for each new node its wiring; the entry channels that open and
   close; the generator sources that stop; the kept channels whose capacity
   changes. New channels are made, but no running node is touched: if
   anything before the cut fails (a bad callable, a failing state factory),
   nothing has changed. Planning yields to the event loop every
   :data:`STEP` nodes, and a big graph is diffed in a worker thread.
2. **Install, then cut.** :func:`install` (yielding too) lets the new nodes
   join the running set, wired and started, and gives kept channels their new
   capacity: harmless before the cut, since only producers that switch feed a
   new node's channels. Then :func:`cut`, one synchronous step with no
   ``await``, as small as the entry points the change touches: the generators
   of sources being removed or redefined stop (a value one was still offering
   to a full entry channel goes in ahead of the barrier); the entry channels
   of removed entry points are sealed (a waiting ``inject`` raises rather than
   landing behind the barrier); the barrier goes into the entry channel of
   every entry point in the region; the new entry channels open. Data put into
   an entry channel before this step is *before the cut*; everything else is
   *after*.
3. **Align** (:class:`Aligner`). A region node that receives the barrier on
   an input stops reading that input until the barrier has arrived on *all*
   its inputs.
4. **Switch** (:func:`receive`, :func:`switch_node`). Once aligned, the node
   forwards the barrier on its output channels whose reader is in the region,
   then applies its switch: new node, kernel and version; state carried over
   (through ``migrate``); new inputs and outputs; new readers (``on_change``).
   A removed node stops after forwarding.
5. **Acknowledge and complete** (:meth:`Barrier.ack`, :meth:`Changes.apply`).
   Whatever happened in the switch, the node acknowledges. When every region
   node has, the host drops the removed nodes, the running graph becomes the
   new graph, and ``apply`` returns an :class:`ApplyReport`.

Changes and drains are serialised by one lock, and at most one barrier travels
at a time: a change waits for any earlier one still propagating (a timed-out
change goes on in the background). A drain is a barrier with no switches sent
through every node.

A checkpoint (:meth:`Changes.checkpoint`) is a drain's barrier whose plan
carries a :class:`Recorder`: each node, once aligned and before forwarding,
has it record a copy of its state (and an entry point its position). The cut
is the same as a change's, so the recorded states are those after exactly the
before-cut data, at every node (``docs/design.md``, "Checkpoints"). Under the
same lock the caller then commits the records to the store: no change starts
between a checkpoint's barrier and its commit.

Why each guarantee holds. Every channel is FIFO between data and control, and
every node processes its messages in order and sends a batch's outputs before
it takes the next message (``_channel``, ``_runner``). So on every channel of
the region the barrier separates data derived from before-cut data (ahead of
it) from data derived from after-cut data (behind it). By induction over the
region in topological order:

* **Version purity.** A region node switches only when the barrier has
  arrived on every input (alignment), and after that reads only what is behind
  it. So it processes exactly the before-cut data with its old version and
  the after-cut data with its new one. New nodes receive data only on channels
  their producers attach at their own switch: after-cut data. Nodes outside
  the region do not change. Hence a datum's whole journey is through old
  versions or through new ones, and since the cut is per injected datum, all
  its fan-out copies fall on the same side: a join never meets an old and a
  new copy of one datum. Without alignment a join would switch on the first
  barrier and process before-cut data from a slower input with its new
  version (``tests/test_change.py`` plugs in an aligner that does not align,
  and the checker sees exactly that).
* **No loss.** A removed node is in the region: it processes everything ahead
  of the barrier before it stops, and its producers stop sending to it at
  their own switch; its remaining readers switch only after its barrier, that
  is after its last output. Injection into a removed entry point raises. A
  stopped generator's offered value goes in ahead of the barrier.
* **No duplication.** Each datum is in one channel position per edge; a switch
  moves a node's outputs from old channels to new ones at one point of its
  stream, so no output goes to both.
* **Order.** Channels are FIFO, a node's outputs follow its inputs' order, and
  a kept channel is the same channel across the switch.
* **State carry-over.** The node outlives its switch: the new version starts
  from the state the old version left after its last before-cut datum.
* **Errored and dead nodes.** Raising on data does not stop a node. A dead
  task is restarted under its policy and finds the barrier waiting in its
  channel. A source whose generator died is replaced by starting the new
  version's generator at the switch.
* **Liveness.** Barriers never wait for capacity and need no data: an idle
  entry point forwards at once. Behind full channels the barrier waits for the
  data ahead of it, and alignment cannot deadlock: every producer in the
  region sends the barrier to all its region outputs before any after-cut
  data, so data ahead of a barrier can always drain.
* **Not disturbed.** Nodes outside the region never see the barrier; inside
  it each node acts on it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from hotplumb._clock import Deadline
from hotplumb._errors import ApplyError, ReentrantCallError, StaleGraphError, TopologyClosedError
from hotplumb._graph import Graph, ancestry
from hotplumb._kernel import build_kernel

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Generator, Hashable, Iterable, Mapping
    from contextlib import AbstractContextManager

    from hotplumb._channel import Channel
    from hotplumb._clock import Clock
    from hotplumb._context import Context
    from hotplumb._graph import Changelist
    from hotplumb._kernel import Kernel
    from hotplumb._node import Node
    from hotplumb._observe import Observer
    from hotplumb._snapshot import NodeStatistics

T = TypeVar("T")

__all__ = [
    "STEP",
    "Aligner",
    "ApplyReport",
    "Barrier",
    "ChangeHost",
    "Changes",
    "Participant",
    "Plan",
    "Recorder",
    "Switch",
    "cut",
    "edge_capacity",
    "input_capacity",
    "install",
    "plan_change",
    "plan_steps",
    "receive",
    "run_steps",
    "run_steps_yielding",
    "switch_node",
    "uninstall",
]


@dataclass(frozen=True, slots=True)
class ApplyReport:
    """What a completed :meth:`Topology.apply` did.

    Attributes:
        changelist: The changes applied.
        generation: The topology generation the change started (node versions
            it defined carry this number).
        visited: How many running nodes the barrier visited.
        seconds: Real time (:func:`time.perf_counter`, whatever the topology's
            clock) from sending the barrier to the last node switching.
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


# How many graphs a topology remembers having run, to refuse stale ones.
_RAN_KEPT = 4096

STEP = 256
"""A big change lets the event loop run after every this many nodes it prepares."""

# Graphs this big are diffed in a worker thread (they are immutable values).
_DIFF_OFF_LOOP = 2048


# -- capacities --------------------------------------------------------------


def input_capacity(node: Node, default: int) -> int:
    """The capacity of each of ``node``'s input channels."""
    return node.capacity if node.capacity is not None else default


def edge_capacity(producer: Node, reader: Node, default: int) -> int:
    """The capacity of the channel from ``producer`` into ``reader``."""
    capacity = input_capacity(reader, default)
    if producer.output_capacity is not None:
        return min(capacity, producer.output_capacity)
    return capacity


# -- what the protocol needs of nodes and of the topology ----------------------


class Participant(Protocol):
    """A running node as the protocol sees it.

    The protocol writes the wiring fields (``node``, ``kernel``, ``version``,
    ``inputs``, ``outputs``, ``entry``) at the cut for a new node and at the
    node's own switch, inside the node's own task; nothing else writes them.
    """

    key: Hashable
    node: Node
    kernel: Kernel
    version: int
    inputs: list[Channel]
    outputs: list[Channel]
    entry: Channel | None
    stopped: bool

    @property
    def ctx(self) -> Context:
        """The node's context (its state and readers)."""
        ...

    def start(self) -> None:
        """Start the node: its task runs when input arrives, its source produces."""

    def start_producer(self) -> None:
        """Start the node's generator source, if it has one."""

    def stop_producer(self) -> None:
        """Stop the generator source; a value it was offering goes in first."""

    def flush(self) -> None:
        """Emit what the node's ``flush`` makes of its state, ahead of what follows."""

    def retire(self) -> None:
        """Stop for good a node that never took part (its change was not cut)."""

    def release(self) -> None:
        """The node has left the topology: let go of its wiring."""


class Recorder(Protocol):
    """What a checkpoint's barrier does at each node: record a copy of its state."""

    def record(self, member: Participant) -> None:
        """Called in ``member``'s task once aligned, before the barrier goes on.

        It must not raise (a failure is kept to fail the checkpoint later):
        the barrier has to reach every node either way.
        """


class ChangeHost(Protocol):
    """What :class:`Changes` needs of the topology it changes."""

    @property
    def clock(self) -> Clock:
        """The topology's clock (for timeouts)."""
        ...

    @property
    def capacity(self) -> int:
        """The default capacity of input channels."""
        ...

    @property
    def observer(self) -> Observer | None:
        """Who is told of every change (``None``: nobody)."""
        ...

    @property
    def closing(self) -> bool:
        """Whether the topology is stopping."""
        ...

    @property
    def graph(self) -> Graph:
        """The graph the topology runs."""
        ...

    @property
    def running(self) -> dict[Hashable, Participant]:
        """The running nodes, by key (the protocol adds new nodes at the cut)."""
        ...

    @property
    def entries(self) -> dict[Hashable, Channel]:
        """The entry channels that take injected data, by key."""
        ...

    def new_participant(
        self, key: Hashable, node: Node, kernel: Kernel, version: int, readers: frozenset[Hashable]
    ) -> Participant:
        """Make a node for a change (not started; its state factory runs here)."""
        ...

    def open_channel(
        self, producer: Hashable | None, consumer: Participant, capacity: int
    ) -> Channel:
        """Make a channel into ``consumer``."""
        ...

    def calling_node(self) -> Hashable | None:
        """The key of the node whose task is running now, if any."""
        ...

    def settle_memory(self) -> None:
        """A change has its new graph in hand, or has installed its new nodes.

        What exists now will live long; a host run with ``gc_freeze`` moves
        it out of the collector's way.
        """

    async def admit(self, graph: Graph) -> frozenset[Hashable]:
        """Before a change is made: raise if ``graph`` cannot run, or ready what it needs.

        Returns:
            The running keys to move to another process (an engine's placement
            changed): they switch, with every channel new.
        """
        ...

    async def begin_barrier(self, barrier: Barrier) -> None:
        """``barrier`` is about to enter the topology: what runs elsewhere gets ready, or raises."""

    def abandon_barrier(self, barrier: Barrier) -> None:
        """``barrier``, announced by :meth:`begin_barrier`, will not enter the topology."""

    def cut_barrier(self, barrier: Barrier) -> None:
        """``barrier`` has entered the topology (the change's cut is made)."""

    def completed(self, graph: Graph, changes: Changelist) -> dict[Hashable, NodeStatistics]:
        """A change has passed every node: drop the removed nodes, run ``graph``.

        Returns:
            The final counters of the removed nodes.
        """
        ...


# -- the plan ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class Switch:
    """What one running node becomes when the barrier has reached it.

    Attributes:
        node: The new description, or ``None`` if the node is removed.
        version: The new version number.
        kernel: The prepared processing of ``node`` (built before the cut, so
            a bad callable fails the change before it starts).
        inputs: The new input channels, in the new input order.
        outputs: The new output channels (one per reader).
        readers: The new readers' keys.
    """

    node: Node | None
    version: int
    kernel: Kernel | None = None
    inputs: tuple[Channel, ...] = ()
    outputs: tuple[Channel, ...] = ()
    readers: frozenset[Hashable] = frozenset()


@dataclass(frozen=True, slots=True, eq=False)
class Plan:
    """A change worked out before anything changes.

    Attributes:
        generation: The generation the change starts.
        region: The running keys the barrier visits.
        switches: Per switching key, what it becomes.
        added: The new nodes (not started).
        wiring: Per new node, its input and output channels.
        entries: The entry channels of new or switching entry points, which
            take injected data from the cut on.
        sealed: Entry points whose channels stop taking injected data.
        stopped: Generator sources stopped at the cut (removed or redefined).
        capacities: Kept channels and the capacity they take at the cut.
        sources: The region's entry points: the barrier starts at them.
        final: Whether this is the drain that closes the topology: every node
            flushes the state it holds (see ``Node.flush``) as it passes.
        checkpoint: For a checkpoint's barrier (which switches nothing): what
            records each node's state as it passes, once aligned.
    """

    generation: int
    region: frozenset[Hashable]
    switches: Mapping[Hashable, Switch]
    added: Mapping[Hashable, Participant] = field(default_factory=dict)
    wiring: Mapping[Hashable, tuple[tuple[Channel, ...], tuple[Channel, ...]]] = field(
        default_factory=dict
    )
    entries: Mapping[Hashable, Channel] = field(default_factory=dict)
    sealed: frozenset[Hashable] = frozenset()
    stopped: frozenset[Hashable] = frozenset()
    capacities: tuple[tuple[Channel, int], ...] = ()
    sources: tuple[Hashable, ...] = ()
    final: bool = False
    checkpoint: Recorder | None = None

    def inputs_of(self, key: Hashable) -> tuple[Channel, ...]:
        """The input channels ``key`` will have after its switch (empty if none)."""
        switch = self.switches.get(key)
        return switch.inputs if switch is not None else ()


def ancestors(graph: Graph, keys: Iterable[Hashable]) -> set[Hashable]:
    """``keys`` and every key they read from, transitively, in ``graph``."""
    return run_steps(ancestor_steps(graph, keys))


def ancestor_steps(graph: Graph, keys: Iterable[Hashable]) -> Generator[None, None, set[Hashable]]:
    """:func:`ancestors` as a generator of steps: it yields every :data:`STEP` keys."""
    seen = set(keys)
    stack = list(seen)
    count = 0
    while stack:
        key = stack.pop()
        count += 1
        if not count % STEP:
            yield
        for parent in graph.inputs_of(key):
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


def plan_change(old: Graph, new: Graph, changes: Changelist, **options: Any) -> Plan:
    """Work out the switches of the change from ``old`` to ``new``; touch no running node.

    :func:`plan_steps` (which takes the same arguments), run to the end at once.
    """
    return run_steps(plan_steps(old, new, changes, **options))


def run_steps(steps: Generator[None, None, T]) -> T:
    """Run a generator of steps (see :func:`plan_steps`) to the end; return its value."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            value: T = done.value
            return value


async def run_steps_yielding(steps: Generator[None, None, T]) -> T:
    """Run a generator of steps, letting the event loop run between two of them."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            value: T = done.value
            return value
        await asyncio.sleep(0)


def plan_steps(
    old: Graph,
    new: Graph,
    changes: Changelist,
    *,
    generation: int,
    running: Mapping[Hashable, Participant],
    entries: Mapping[Hashable, Channel],
    added: Mapping[Hashable, Participant],
    kernels: Mapping[Hashable, Kernel],
    capacity: int,
    open_channel: Callable[[Hashable | None, Participant, int], Channel],
    moved: frozenset[Hashable] = frozenset(),
) -> Generator[None, None, Plan]:
    """Work out the switches of the change from ``old`` to ``new``; touch no running node.

    A generator that yields every :data:`STEP` nodes, so that the caller can
    let the event loop run while a big change is planned (nothing it reads
    changes meanwhile: the change lock is held and no barrier is in flight);
    its return value is the plan.

    Args:
        old: The running graph.
        new: The graph to run.
        changes: ``old.diff(new)``.
        generation: The generation the change starts.
        running: The running nodes.
        entries: The entry channels taking injected data now.
        added: The new nodes, made but not started.
        kernels: The kernels of every added, replaced and rewired key.
        capacity: The default input capacity.
        open_channel: Makes a channel ``(producer, consumer, capacity)``.
        moved: Running keys an engine moves to another process: unchanged,
            but every channel into and out of them is new, so they, their
            producers and their readers switch.

    Returns:
        The plan.
    """
    switching = (changes.changed | changes.readers_changed) & running.keys()
    if moved:
        for key in moved:
            near = {key, *old.inputs_of(key), *new.inputs_of(key), *new.readers_of(key)}
            switching |= near & running.keys()
    yield
    region = frozenset((yield from ancestor_steps(old, switching)))
    yield
    inputs: dict[Hashable, tuple[Channel, ...]] = {}
    opened: dict[Hashable, Channel] = {}
    capacities: list[tuple[Channel, int]] = []
    for count, key in enumerate(added.keys() | (switching - changes.removed), 1):
        if not count % STEP:
            yield
        node = new.nodes[key]
        member = added[key] if key in added else running[key]
        if not node.inputs:
            entry = member.entry if key in running else None
            if entry is None:
                entry = open_channel(None, member, input_capacity(node, capacity))
            else:  # a kept entry channel takes the new node's capacity
                capacities.append((entry, input_capacity(node, capacity)))
            inputs[key] = (entry,)
            opened[key] = entry
            continue
        existing = {c.producer: c for c in member.inputs} if key in running else {}
        if key in moved:
            existing = {}
        channels = []
        for producer in node.inputs:
            size = edge_capacity(new.nodes[producer], node, capacity)
            kept = (
                existing.get(producer) if producer not in added and producer not in moved else None
            )
            if kept is None:
                channels.append(open_channel(producer, member, size))
            else:
                channels.append(kept)
                capacities.append((kept, size))
        inputs[key] = tuple(channels)

    def channel_into(reader: Hashable, producer: Hashable) -> Channel:
        for c in inputs[reader] if reader in inputs else running[reader].inputs:
            if c.producer == producer:
                return c
        raise AssertionError(f"no channel {producer!r} -> {reader!r}")  # pragma: no cover

    def outputs_of(key: Hashable) -> tuple[Channel, ...]:
        return tuple(channel_into(r, key) for r in new.readers_of(key))

    # A redefined producer's output capacity applies to its kept channels into
    # readers that do not switch (those that do got theirs above).
    redefined = changes.removed | changes.replaced | changes.rewired
    for count, key in enumerate((changes.replaced | changes.rewired) & running.keys(), 1):
        if not count % STEP:
            yield
        node = new.nodes[key]
        for reader in new.readers_of(key):
            if reader not in inputs:
                size = edge_capacity(node, new.nodes[reader], capacity)
                capacities.append((channel_into(reader, key), size))

    switches: dict[Hashable, Switch] = {}
    for count, key in enumerate(switching, 1):
        if not count % STEP:
            yield
        if key in changes.removed:
            switches[key] = Switch(None, generation)
            continue
        current = running[key]
        if key in changes.replaced or key in changes.rewired:
            node, version, kernel = new.nodes[key], generation, kernels[key]
        else:
            node, version, kernel = current.node, current.version, current.kernel
        switches[key] = Switch(
            node, version, kernel, inputs[key], outputs_of(key), new.readers_of(key)
        )
    wiring: dict[Hashable, tuple[tuple[Channel, ...], tuple[Channel, ...]]] = {}
    for count, key in enumerate(added, 1):
        if not count % STEP:
            yield
        wiring[key] = (inputs[key], outputs_of(key))
    touched = redefined & entries.keys()
    sources = []
    for count, key in enumerate(region, 1):
        if not count % STEP:
            yield
        if not running[key].node.inputs:
            sources.append(key)
    return Plan(
        generation=generation,
        region=region,
        switches=MappingProxyType(switches),
        added=MappingProxyType(dict(added)),
        wiring=MappingProxyType(wiring),
        entries=MappingProxyType(opened),
        # Only a redefined entry point can stop being one (an unchanged node
        # keeps its inputs), so these look at the change, not at every entry.
        sealed=frozenset(k for k in touched if k in changes.removed or new.nodes[k].inputs),
        stopped=frozenset(k for k in touched if k in running),
        capacities=tuple(capacities),
        sources=tuple(sources),
    )


# -- the barrier -------------------------------------------------------------------


class Barrier:
    """A change (or a drain) travelling through a region of the graph.

    Attributes:
        generation: The topology generation this barrier starts (a drain's is
            the current one).
        plan: The change's plan (a drain's has no switches).
        pending: The region keys that have not acknowledged yet.
        done: Set when every region node has acknowledged, or on abort.
        aborted: Whether the topology stopped before the barrier passed every node.
        errors: Keys whose migration or change handler raised, with the exception.
        removed: The final counters of the nodes the change removed (filled
            when it completes).
    """

    __slots__ = ("aborted", "done", "errors", "on_ack", "on_done", "pending", "plan", "removed")

    def __init__(
        self,
        plan: Plan,
        on_done: Callable[[Barrier], None] | None = None,
        on_ack: Callable[[Hashable], None] | None = None,
    ) -> None:
        self.plan = plan
        self.on_ack = on_ack
        self.pending: set[Hashable] = set(plan.region)
        self.done = asyncio.Event()
        self.aborted = False
        self.errors: list[tuple[Hashable, BaseException]] = []
        self.removed: dict[Hashable, NodeStatistics] = {}
        self.on_done = on_done

    @property
    def generation(self) -> int:
        """The generation the barrier's change starts."""
        return self.plan.generation

    @property
    def region(self) -> frozenset[Hashable]:
        """The running keys the barrier visits; nodes outside never see it."""
        return self.plan.region

    def ack(self, key: Hashable) -> None:
        """Record that ``key`` has acted on the barrier."""
        if self.on_ack is not None:
            self.on_ack(key)
        self.pending.discard(key)
        self.check()

    def check(self) -> None:
        """Complete the barrier if no node is pending any more."""
        if not self.pending and not self.done.is_set():
            if self.on_done is not None:
                self.on_done(self)
            self.done.set()

    def abort(self) -> None:
        """Release whoever waits for this barrier: it will never complete."""
        if not self.done.is_set():
            self.aborted = True
            self.done.set()

    def __repr__(self) -> str:
        return (
            f"Barrier(generation={self.generation}, region={len(self.region)} nodes, "
            f"switches={len(self.plan.switches)}, pending={len(self.pending)})"
        )


def install(plan: Plan, running: dict[Hashable, Participant]) -> Generator[None, None, None]:
    """Before the cut: the new nodes join, wired and started; kept channels take new capacities.

    Nothing a running node does changes: a new node's input channels are fed
    only by producers that attach them at their own switch, after the cut (a
    new source's data can only ever be processed by new versions), and a
    capacity only changes when producers wait. A generator that yields every
    :data:`STEP` nodes.
    """
    for count, (key, member) in enumerate(plan.added.items(), 1):
        if not count % STEP:
            yield
        member.inputs, outputs = (list(c) for c in plan.wiring[key])
        member.outputs = outputs
        if not member.node.inputs:
            member.entry = member.inputs[0]
        running[key] = member
    for count, (channel, capacity) in enumerate(plan.capacities, 1):
        if not count % STEP:
            yield
        channel.resize(capacity)
    for count, member in enumerate(plan.added.values(), 1):
        if not count % STEP:
            yield
        member.start()


def uninstall(plan: Plan, running: dict[Hashable, Participant]) -> None:
    """Undo :func:`install` of a change that will not be cut: its new nodes leave."""
    for key, member in plan.added.items():
        if running.get(key) is member:
            del running[key]
        member.retire()


def cut(
    plan: Plan,
    barrier: Barrier,
    running: dict[Hashable, Participant],
    entries: dict[Hashable, Channel],
    *,
    installed: bool = False,
) -> None:
    """Start the change: one synchronous step, the cut between before and after.

    Its work is proportional to the entry points the change touches, not to
    the size of the change: the new nodes were installed before it
    (``installed``; else :func:`install` runs here first).

    Args:
        plan: The change's plan.
        barrier: Its barrier.
        running: The host's running nodes.
        entries: The host's entry channels (updated here).
        installed: Whether :func:`install` has already run.
    """
    if not installed:
        run_steps(install(plan, running))
    for key in plan.stopped:
        running[key].stop_producer()
    for key in plan.sealed:
        entries.pop(key).seal()
    for key in plan.sources:
        entry = running[key].entry
        assert entry is not None
        entry.put_control(barrier)
    entries.update(plan.entries)
    barrier.check()  # nothing running was affected: done already


# -- alignment and the switch of one node ------------------------------------------


class Aligner:
    """Barrier alignment for one node.

    ``held`` is the set of input channels the node must not read: those the
    pending barrier has arrived on, while it has not arrived on all of them.
    """

    __slots__ = ("_barrier", "held")

    def __init__(self) -> None:
        self._barrier: Barrier | None = None
        self.held: set[Channel] = set()

    def arrive(self, barrier: Barrier, channel: Channel, inputs: int) -> bool:
        """Note ``barrier`` on ``channel``; return whether it is now on all ``inputs``."""
        if self._barrier is not barrier:
            self._barrier = barrier
            self.held = set()
        self.held.add(channel)
        if len(self.held) < inputs:
            return False
        self._barrier = None
        self.held = set()
        return True


def receive(member: Participant, aligner: Aligner, barrier: Barrier, channel: Channel) -> bool:
    """A barrier reached ``member`` on ``channel``: align, forward, switch, acknowledge.

    Called by the node's own task, in order with its data.

    Returns:
        Whether the node stops (the change removed it).
    """
    if not aligner.arrive(barrier, channel, len(member.inputs)):
        return False  # align: wait for the barrier on every input
    plan = barrier.plan
    if plan.checkpoint is not None:
        # Aligned: the state is that after exactly the data ahead of the
        # barrier on every input. Recorded before the barrier goes on.
        plan.checkpoint.record(member)
    switch = plan.switches.get(member.key)
    if plan.final or (switch is not None and switch.node is None):
        # The node's last word, processed by the old versions downstream: it
        # goes ahead of the barrier on every output.
        member.flush()
    region = plan.region
    for out in member.outputs:
        if out.consumer.key in region:
            out.put_control(barrier)
    try:
        return switch is not None and switch_node(member, switch, barrier)
    finally:
        barrier.ack(member.key)  # whatever happened, the change must be able to finish


def switch_node(member: Participant, switch: Switch, barrier: Barrier) -> bool:
    """Make ``member`` what ``switch`` says; return whether it stops."""
    if switch.node is None:
        member.stopped = True
        member.stop_producer()
        # Every producer has switched away from these channels (they sent the
        # barrier); sealing them turns a stray put into an error, not a loss.
        for channel in member.inputs:
            channel.seal()
        return True
    old = member.node
    member.inputs = list(switch.inputs)
    member.outputs = list(switch.outputs)
    ctx = member.ctx
    if switch.node is not old:
        new = switch.node
        assert switch.kernel is not None
        member.node = new
        member.kernel = switch.kernel
        member.version = ctx.version = switch.version
        ctx.inputs = new.inputs
        _migrate(ctx, old, new, barrier)
        member.entry = None if new.inputs else (switch.inputs[0] if switch.inputs else None)
        member.stop_producer()
        member.start_producer()
    if switch.readers != ctx.readers:
        ctx._set_readers(switch.readers)
        if member.node.on_change is not None:
            try:
                member.node.on_change(ctx)
            except Exception as exc:
                barrier.errors.append((member.key, exc))
    return False


def _migrate(ctx: Context, old: Node, new: Node, barrier: Barrier) -> None:
    """Carry the state over to the new version (through ``migrate`` if it has one)."""
    try:
        if new.migrate is not None:
            ctx.state = new.migrate(ctx.state)
        elif old.state is None and new.state is not None:
            ctx.state = new.state()
    except Exception as exc:
        barrier.errors.append((ctx.key, exc))
        try:
            ctx.state = new.state() if new.state is not None else None
        except Exception as state_exc:
            ctx.state = None
            barrier.errors.append((ctx.key, state_exc))


# -- serialising changes -------------------------------------------------------------


class Changes:
    """The changes and drains of one topology: one at a time, one barrier in flight.

    Args:
        host: The topology.
    """

    __slots__ = ("_host", "_in_flight", "_lock", "_ran", "generation", "pending")

    def __init__(self, host: ChangeHost) -> None:
        self._host = host
        self._lock = asyncio.Lock()
        self._in_flight: set[Barrier] = set()  # every barrier not yet done
        self.generation = 0
        self.pending: Barrier | None = None  # the change in flight, if any
        # Serial numbers of the graphs the host ran, with their generations, to
        # refuse a graph derived from one of them once it no longer runs.
        self._ran: OrderedDict[int, int] = OrderedDict()
        self._ran_graph(host.graph)

    def _ran_graph(self, graph: Graph) -> None:
        ran = self._ran
        ran[ancestry(graph)[0]] = self.generation
        while len(ran) > _RAN_KEPT:
            ran.popitem(last=False)

    def refuse_reentry(self, what: str) -> None:
        """Raise :class:`ReentrantCallError` if called from a node's own task."""
        key = self._host.calling_node()
        if key is not None:
            raise ReentrantCallError(key, what)

    def _check_current(self, graph: Graph) -> None:
        """Refuse ``graph`` if it was derived from a graph the host ran before the current one."""
        current = ancestry(self._host.graph)[0]
        for serial in ancestry(graph):
            if serial == current:
                return
            generation = self._ran.get(serial)
            if generation is not None:
                raise StaleGraphError(generation, self.generation)

    def deadline(self, timeout: float | None) -> float | None:
        """The clock time ``timeout`` seconds from now (``None`` for none).

        Raises:
            ValueError: ``timeout`` is negative or NaN.
        """
        if timeout is None:
            return None
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise TypeError(f"timeout must be a number of seconds or None, got {timeout!r}")
        if not timeout >= 0 or math.isnan(timeout):
            raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        return self._host.clock.now() + timeout

    async def apply(
        self, graph: Graph, timeout: float | None, using: AbstractContextManager[None] | None = None
    ) -> ApplyReport:
        """Change the host to ``graph`` (see :meth:`Topology.apply`).

        ``using``, if given, is entered under the lock around the change (an
        engine's placement for it).
        """
        self.refuse_reentry("apply()")
        return await self._observed("apply", lambda _: graph, timeout, using, check=True)

    async def update(
        self,
        fn: Callable[[Graph], Graph],
        timeout: float | None,
        using: AbstractContextManager[None] | None = None,
    ) -> ApplyReport:
        """Change the host to ``fn(running graph)`` under the lock (:meth:`Topology.update`)."""
        self.refuse_reentry("update()")
        return await self._observed("update", fn, timeout, using, check=False)

    async def _observed(
        self,
        kind: str,
        make: Callable[[Graph], Graph],
        timeout: float | None,
        using: AbstractContextManager[None] | None,
        *,
        check: bool,
    ) -> ApplyReport:
        """:meth:`_locked`, told to the host's observer (if any) as it starts and ends."""
        observer = self._host.observer
        if observer is None:
            return await self._locked(make, timeout, using, check=check)
        self.deadline(timeout)  # a bad timeout raises before the change is observed
        token = observer.change_started(kind)
        try:
            report = await self._locked(make, timeout, using, check=check)
        except BaseException as exc:
            observer.change_ended(token, None, exc)
            raise
        observer.change_ended(token, report, None)
        return report

    async def _locked(
        self,
        make: Callable[[Graph], Graph],
        timeout: float | None,
        using: AbstractContextManager[None] | None = None,
        *,
        check: bool,
    ) -> ApplyReport:
        when = self.deadline(timeout)
        clock = self._host.clock
        try:
            async with Deadline(clock, when):
                await self._lock.acquire()
        except TimeoutError:
            raise ApplyError(f"another change held the topology past {timeout}s", "old") from None
        try:
            try:
                async with Deadline(clock, when):
                    await self._settle()
            except TimeoutError:
                raise ApplyError(
                    f"an earlier change did not finish within {timeout}s", "old"
                ) from None
            with using if using is not None else contextlib.nullcontext():
                graph = make(self._host.graph)
                if not isinstance(graph, Graph):
                    raise TypeError(
                        "the update function must return a hotplumb.Graph, got "
                        f"{type(graph).__name__}"
                    )
                return await self._change(graph, when, timeout, check)
        finally:
            self._lock.release()

    async def _change(
        self, graph: Graph, when: float | None, timeout: float | None, check: bool
    ) -> ApplyReport:
        host = self._host
        old = host.graph
        if len(old) + len(graph) >= _DIFF_OFF_LOOP:
            changes = await _off_loop(old.diff, graph)
        else:
            changes = old.diff(graph)
        moved = await host.admit(graph)
        if not changes and not moved:
            host.completed(graph, changes)
            self._ran_graph(graph)
            return ApplyReport(changes, self.generation, 0, 0.0)
        if check:
            self._check_current(graph)
        host.settle_memory()
        generation = self.generation + 1
        kernels: dict[Hashable, Kernel] = {}
        added: dict[Hashable, Participant] = {}
        try:
            for count, k in enumerate(changes.added | changes.replaced | changes.rewired, 1):
                node = graph.nodes[k]
                kernels[k] = build_kernel(k, node)
                if k in changes.added:  # its state factory runs here, so it may fail here
                    added[k] = host.new_participant(
                        k, node, kernels[k], generation, graph.readers_of(k)
                    )
                if not count % STEP:
                    # A big change should not stall the data: nothing is
                    # changed until the cut, and the lock keeps other changes out.
                    await asyncio.sleep(0)
        except Exception as exc:
            raise ApplyError(f"the new graph cannot start: {exc}", "old") from exc
        if host.closing:
            raise TopologyClosedError("the topology closed before the change started")
        steps = plan_steps(
            old,
            graph,
            changes,
            generation=generation,
            running=host.running,
            entries=host.entries,
            added=added,
            kernels=kernels,
            capacity=host.capacity,
            open_channel=host.open_channel,
            moved=moved,
        )
        plan = await run_steps_yielding(steps)
        if host.closing:
            raise TopologyClosedError("the topology closed before the change started")

        def done(barrier: Barrier) -> None:
            barrier.removed.update(host.completed(graph, changes))
            self._ran_graph(graph)
            if self.pending is barrier:
                self.pending = None

        barrier = Barrier(plan, done)
        try:
            # What runs elsewhere gets ready first: a new source installed here
            # starts at once, and its data must find its readers' ends there.
            try:
                await host.begin_barrier(barrier)
            except Exception as exc:
                raise ApplyError(f"the new graph cannot start: {exc}", "old") from exc
            await run_steps_yielding(install(plan, host.running))
            if host.closing:
                raise TopologyClosedError("the topology closed before the change started")
            host.settle_memory()
        except BaseException:
            # Cancelled (or closed) before the cut: nothing has changed but the
            # new nodes, which go again, so no later barrier waits for them.
            host.abandon_barrier(barrier)
            uninstall(plan, host.running)
            raise
        self.generation = generation
        self.pending = barrier
        self._in_flight.add(barrier)
        cut(plan, barrier, host.running, host.entries, installed=True)
        host.cut_barrier(barrier)
        began = time.perf_counter()
        try:
            async with Deadline(host.clock, when):
                await self._complete(barrier)
        except TimeoutError:
            waiting = ", ".join(sorted(map(repr, barrier.pending))[:5])
            raise ApplyError(
                f"the change did not complete within {timeout}s (waiting for {waiting})",
                "switching",
            ) from None
        return ApplyReport(
            changes,
            generation,
            len(plan.region),
            time.perf_counter() - began,
            tuple(barrier.errors),
            MappingProxyType(barrier.removed),
        )

    async def drain(self, timeout: float | None, *, final: bool = False) -> None:
        """Wait until everything sent in so far has been processed (see :meth:`Topology.drain`).

        Args:
            timeout: Seconds to wait at most.
            final: Whether this drain closes the topology (nodes flush their state).

        Raises:
            TimeoutError: The time ran out first.
        """
        self.refuse_reentry("drain()")
        when = self.deadline(timeout)
        async with Deadline(self._host.clock, when):
            await self._lock.acquire()
        try:
            async with Deadline(self._host.clock, when):
                await self._settle()
                await self._flush(final)
        finally:
            self._lock.release()

    async def checkpoint(self, recorder: Recorder, commit: Callable[[], Awaitable[T]]) -> T:
        """Send a checkpoint barrier through every node, then ``commit()``, under the lock.

        Args:
            recorder: Records each node's state as the barrier passes it.
            commit: Called once every node has recorded; its result is returned.
                It runs under the change lock, so no change comes between.

        Raises:
            TopologyClosedError: The topology stopped before the barrier passed.
        """
        self.refuse_reentry("checkpoint()")
        async with self._lock:
            await self._settle()
            await self._flush(False, recorder)
            return await commit()

    async def _settle(self) -> None:
        """Wait for every barrier still in flight (a timed-out change or drain)."""
        for barrier in list(self._in_flight):
            await barrier.done.wait()
            self._in_flight.discard(barrier)

    async def _flush(self, final: bool, checkpoint: Recorder | None = None) -> None:
        host = self._host
        plan = Plan(
            self.generation, frozenset(host.running), {}, final=final, checkpoint=checkpoint
        )
        barrier = Barrier(plan)
        self._in_flight.add(barrier)
        try:
            await host.begin_barrier(barrier)
        except BaseException:
            self._in_flight.discard(barrier)
            host.abandon_barrier(barrier)
            raise
        for channel in host.entries.values():
            channel.put_control(barrier)
        barrier.check()  # nothing runs: done already
        await self._complete(barrier)

    async def _complete(self, barrier: Barrier) -> None:
        """Wait for ``barrier`` (in flight) to pass every node of its region.

        Raises:
            TopologyClosedError: The topology stopped first.
        """
        await barrier.done.wait()
        self._in_flight.discard(barrier)
        if barrier.aborted:
            raise TopologyClosedError("the topology stopped before the barrier passed every node")

    def inputs_to_come(self, key: Hashable) -> tuple[Channel, ...]:
        """The input channels a change in flight will attach to ``key``."""
        pending = self.pending
        return pending.plan.inputs_of(key) if pending is not None else ()

    def abort(self) -> None:
        """The topology stopped: release everyone waiting for a barrier."""
        for barrier in list(self._in_flight):
            barrier.abort()  # nobody is left to pass it on


async def _off_loop(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread, or here where there are no threads (Pyodide)."""
    try:
        return await asyncio.to_thread(fn, *args)
    except RuntimeError as exc:
        if "thread" not in str(exc):
            raise
        return fn(*args)
