"""Snapshots: frozen, plain-data views of a graph or of a running topology.

These are values only: :func:`graph_snapshot` builds the static view of a
graph here, and ``_inspect.take_snapshot`` the live view of a topology.
Rendering (``_render``) reads only snapshots, never live nodes.

A live snapshot is consistent: it is taken in one go, without awaiting, so no
node runs while it is taken and its counters add up. For every entry point
``e``, at any moment::

    received(e) == sum over nodes of (failed + filtered + in_progress)
                   + emitted by the targets (delivered)
                   + depth of every channel between nodes

when ``e`` is the only entry point and no node fans out or emits several
outputs for one input (those multiply the counts downstream). Data injected
but not yet received waits in ``e``'s own channel (``producer`` ``None``).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hotplumb._format import exception_message, format_key

if TYPE_CHECKING:
    from collections.abc import Iterator

    from hotplumb._datum import NodeError
    from hotplumb._graph import Graph
    from hotplumb._node import NodeKind
    from hotplumb._store import Checkpoint

__all__ = [
    "ChangeSnapshot",
    "ChannelSnapshot",
    "NodeSnapshot",
    "NodeStatistics",
    "Snapshot",
    "graph_snapshot",
    "sorted_keys",
]


class KeyNames(dict[Hashable, str]):
    """The readable forms of one snapshot's keys, each key formatted once.

    A snapshot names each key several times (as a node, as an input, as a
    reader, as a channel's producer), and formatting is most of what a big
    snapshot costs. Within one topology's keys, equal keys are one node, so
    they may share one name.
    """

    def __missing__(self, key: Hashable) -> str:
        name = self[key] = format_key(key)
        return name


def sorted_keys(
    keys: frozenset[Hashable] | set[Hashable], names: Mapping[Hashable, str] | None = None
) -> tuple[Hashable, ...]:
    """Sets of keys in a stable order, for people and for diffs of snapshots.

    Args:
        keys: The keys.
        names: Their readable forms, if already known (formatted otherwise).
    """
    if names is None:
        names = KeyNames()
    return tuple(sorted(keys, key=lambda k: (names[k], repr(k))))


@dataclass(frozen=True, slots=True)
class ChannelSnapshot:
    """One input channel of a running node.

    Attributes:
        producer: The key of the node writing into it, or ``None`` for an entry
            point's channel (injected or produced data).
        depth: Items waiting in it.
        capacity: Items it holds before writers wait.
    """

    producer: Hashable | None
    depth: int
    capacity: int

    @property
    def full(self) -> bool:
        """Whether writers into it wait (backpressure)."""
        return self.depth >= self.capacity

    def to_dict(self) -> dict[str, Any]:
        """Return plain JSON-compatible data."""
        return self._to_dict(KeyNames())

    def _to_dict(self, names: KeyNames) -> dict[str, Any]:
        producer = None if self.producer is None else names[self.producer]
        return {"producer": producer, "depth": self.depth, "capacity": self.capacity}


@dataclass(frozen=True, slots=True)
class NodeStatistics:
    """Counters of one running node: what :meth:`Topology.statistics` and snapshots show.

    For every node, at every moment: ``received == emitted-and-settled +
    filtered + failed + in_progress`` (see :class:`~hotplumb.Snapshot` for the
    identity across a topology).

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

    def to_dict(self) -> dict[str, Any]:
        """Return plain JSON-compatible data (the key in readable form)."""
        return self._to_dict(KeyNames())

    def _to_dict(self, names: KeyNames) -> dict[str, Any]:
        return {
            "key": names[self.key],
            "version": self.version,
            "received": self.received,
            "emitted": self.emitted,
            "filtered": self.filtered,
            "failed": self.failed,
            "restarts": self.restarts,
            "in_progress": self.in_progress,
            "input_depth": self.input_depth,
            "input_capacity": self.input_capacity,
        }


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    """One node, as a snapshot saw it.

    Attributes:
        key: The node's key.
        kind: Its role (entry point, processor, target, timer).
        generated: Whether the factory made it (``False``: it was provided);
            ``None`` for a node an in-progress change is adding, whose graph
            the topology does not run yet.
        version: The topology generation that last defined it; ``None`` in a
            graph's snapshot.
        inputs: The keys it reads, in order.
        readers: The keys reading it, sorted by their readable form.
        counters: Its counters; ``None`` in a graph's snapshot.
        channels: Its input channels (an entry point has one, fed by
            injection or its source); empty in a graph's snapshot.
        state: A short repr of its state; ``None`` for a stateless node.
        last_error: The last failure of its processing, if any.
        waiting_for_demand: Whether it is a source that no node reads, so it
            produces nothing.
        switching: Whether the in-progress change has yet to reach it.
    """

    key: Hashable
    kind: NodeKind
    generated: bool | None
    version: int | None = None
    inputs: tuple[Hashable, ...] = ()
    readers: tuple[Hashable, ...] = ()
    counters: NodeStatistics | None = None
    channels: tuple[ChannelSnapshot, ...] = ()
    state: str | None = None
    last_error: NodeError | None = None
    waiting_for_demand: bool = False
    switching: bool = False

    @property
    def label(self) -> str:
        """The key in readable form (:func:`~hotplumb.format_key`)."""
        return format_key(self.key)

    @property
    def generated_for(self) -> tuple[Hashable, ...]:
        """For a generated node, the readers it exists for; else empty."""
        return self.readers if self.generated else ()

    @property
    def input_depth(self) -> int:
        """Items waiting in all of its input channels."""
        return sum(c.depth for c in self.channels)

    @property
    def input_capacity(self) -> int | None:
        """The capacity of each of its input channels; ``None`` without channels."""
        return self.channels[0].capacity if self.channels else None

    def to_dict(self) -> dict[str, Any]:
        """Return plain JSON-compatible data; keys are in readable form."""
        return self._to_dict(KeyNames())

    def _to_dict(self, names: KeyNames) -> dict[str, Any]:
        error = self.last_error
        return {
            "key": names[self.key],
            "key_repr": repr(self.key),
            "kind": self.kind.value,
            "generated": self.generated,
            "version": self.version,
            "inputs": [names[k] for k in self.inputs],
            "readers": [names[k] for k in self.readers],
            "counters": None if self.counters is None else self.counters._to_dict(names),
            "channels": [c._to_dict(names) for c in self.channels],
            "state": self.state,
            "last_error": None
            if error is None
            else {
                "key": names[error.key],
                "version": error.version,
                "type": type(error.exception).__name__,
                "message": exception_message(error.exception),
            },
            "waiting_for_demand": self.waiting_for_demand,
            "switching": self.switching,
        }


@dataclass(frozen=True, slots=True)
class ChangeSnapshot:
    """A live change (:meth:`~hotplumb.Topology.apply`) still propagating.

    Attributes:
        generation: The generation it starts.
        region: The running keys its barrier visits.
        pending: The keys in the region that have not switched yet.
        switches: The keys it changes (new version, inputs or readers, or removal).
    """

    generation: int
    region: tuple[Hashable, ...]
    pending: tuple[Hashable, ...]
    switches: tuple[Hashable, ...]

    def to_dict(self) -> dict[str, Any]:
        """Return plain JSON-compatible data; keys are in readable form."""
        return self._to_dict(KeyNames())

    def _to_dict(self, names: KeyNames) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "region": [names[k] for k in self.region],
            "pending": [names[k] for k in self.pending],
            "switches": [names[k] for k in self.switches],
        }


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A frozen view of a graph or of a running topology.

    Get one from :meth:`Topology.snapshot <hotplumb.Topology.snapshot>` (live:
    counters, queue depths, errors) or :meth:`Graph.snapshot
    <hotplumb.Graph.snapshot>` (static: no counters). Index it by key.

    Attributes:
        nodes: Every node, each after all of its inputs.
        edges: The ``(input, reader)`` pairs.
        live: Whether it was taken from a running topology.
        generation: How many changes had been started (live only).
        change: The change still propagating, if any (live only).
        dead_letters: How many failures the topology had recorded in all
            (live only).
        time: The topology clock's time when it was taken (live only);
            snapshots showing the same thing compare equal whatever their times.
        checkpoint: The last complete checkpoint (taken by the topology, or
            restored when it started), if any (live only).

    Example:
        >>> from hotplumb import Graph, Node, sink
        >>> snap = Graph({"in": Node(), "out": sink(print, inputs=["in"])}).snapshot()
        >>> [(n.label, n.kind.value) for n in snap.nodes]
        [('in', 'entry'), ('out', 'target')]
        >>> snap["in"].readers
        ('out',)
    """

    nodes: tuple[NodeSnapshot, ...]
    edges: tuple[tuple[Hashable, Hashable], ...]
    live: bool = False
    generation: int | None = None
    change: ChangeSnapshot | None = None
    dead_letters: int | None = None
    time: float | None = field(default=None, compare=False)
    checkpoint: Checkpoint | None = field(default=None, compare=False)
    _index: dict[Hashable, NodeSnapshot] = field(
        init=False, repr=False, compare=False, hash=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        self._index.update((n.key, n) for n in self.nodes)

    def __getitem__(self, key: Hashable) -> NodeSnapshot:
        return self._index[key]

    def __contains__(self, key: object) -> bool:
        try:
            return key in self._index
        except TypeError:
            return False

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[NodeSnapshot]:
        return iter(self.nodes)

    def to_dict(self) -> dict[str, Any]:
        """Return plain JSON-compatible data (``json.dumps`` takes it as is).

        Keys appear in readable form (``format_key``), with their ``repr`` as
        ``key_repr`` in each node.
        """
        names = KeyNames()
        return {
            "live": self.live,
            "generation": self.generation,
            "time": self.time,
            "dead_letters": self.dead_letters,
            "checkpoint": None if self.checkpoint is None else self.checkpoint.to_dict(),
            "change": None if self.change is None else self.change._to_dict(names),
            "nodes": [n._to_dict(names) for n in self.nodes],
            "edges": [[names[a], names[b]] for a, b in self.edges],
        }


def graph_snapshot(graph: Graph) -> Snapshot:
    """Return the static view of ``graph``'s active nodes (no counters).

    Args:
        graph: The graph.

    Returns:
        A snapshot with ``live=False``: kinds, provided or generated, inputs
        and readers; versions, counters and channels are absent.
    """
    nodes = []
    names = KeyNames()
    for k in graph.topological_order():
        node = graph.nodes[k]
        nodes.append(
            NodeSnapshot(
                key=k,
                kind=node.effective_kind,
                generated=graph.is_generated(k),
                inputs=node.inputs,
                readers=sorted_keys(graph.readers_of(k), names),
            )
        )
    edges = tuple((i, n.key) for n in nodes for i in n.inputs)
    return Snapshot(tuple(nodes), edges)
