"""Live snapshots: a consistent, frozen view of a running topology.

:func:`take_snapshot` reads a running topology through :class:`LiveView`, a
narrow interface the topology implements, and returns a
:class:`~hotplumb.Snapshot` (the data types are in ``_snapshot``). It is taken
in one go, without awaiting, so no node runs meanwhile and its counters add up
(the identity is in ``_snapshot``'s docstring). During a change it shows every
running node, old and new, with the input channels the change has made but not
attached yet, so no datum in flight is invisible.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from hotplumb._format import SafeRepr
from hotplumb._snapshot import (
    ChangeSnapshot,
    ChannelSnapshot,
    KeyNames,
    NodeSnapshot,
    Snapshot,
    sorted_keys,
)

if TYPE_CHECKING:
    from collections.abc import Hashable, Mapping, Sequence

    from hotplumb._channel import Channel
    from hotplumb._clock import Clock
    from hotplumb._context import Context
    from hotplumb._datum import NodeError
    from hotplumb._graph import Graph
    from hotplumb._node import Node
    from hotplumb._snapshot import NodeStatistics
    from hotplumb._store import Checkpoint

__all__ = ["LiveNode", "LiveView", "take_snapshot"]

_state_repr = SafeRepr(60, 2)


class LiveNode(Protocol):
    """One running node, as a snapshot reads it."""

    @property
    def node(self) -> Node:
        """Its current description."""
        ...

    @property
    def version(self) -> int:
        """Its version."""
        ...

    @property
    def ctx(self) -> Context:
        """Its context (state and readers)."""
        ...

    @property
    def last_error(self) -> NodeError | None:
        """The last failure of its processing."""
        ...

    @property
    def waiting_for_demand(self) -> bool:
        """Whether it is a source nobody reads."""
        ...


class LiveView(Protocol):
    """What a snapshot reads of a running topology."""

    @property
    def graph(self) -> Graph:
        """The graph it runs."""
        ...

    @property
    def generation(self) -> int:
        """Changes started so far."""
        ...

    @property
    def clock(self) -> Clock:
        """Its clock."""
        ...

    def dead_letter_count(self) -> int:
        """Failures recorded in all."""
        ...

    def last_checkpoint(self) -> Checkpoint | None:
        """The last complete checkpoint (taken, or restored), if any."""
        ...

    def live_nodes(self) -> Mapping[Hashable, LiveNode]:
        """The running nodes (during a change, old and new)."""
        ...

    def statistics_of(self, key: Hashable) -> NodeStatistics:
        """A running node's counters."""
        ...

    def input_channels(self, key: Hashable) -> Sequence[Channel]:
        """A running node's input channels, with those a change in flight will attach."""
        ...

    def change_in_flight(self) -> tuple[int, Any, Any, Any] | None:
        """The change propagating: generation, region, pending keys, switching keys."""
        ...


def _order(inputs: dict[Hashable, tuple[Hashable, ...]]) -> list[Hashable]:
    """The keys by depth (longest path from an entry point), stable otherwise.

    During a change the running nodes' current inputs can form a cycle (an
    edge reversed: one end switched, the other not yet); an input already on
    the path being explored is then ignored.
    """
    depth: dict[Hashable, int] = {}
    for start in inputs:
        stack = [start]
        on_path = {start}
        while stack:
            k = stack[-1]
            if k in depth:
                stack.pop()
                on_path.discard(k)
                continue
            todo = [i for i in inputs[k] if i in inputs and i not in depth and i not in on_path]
            if todo:
                stack.append(todo[0])
                on_path.add(todo[0])
                continue
            depth[k] = 1 + max((depth[i] for i in inputs[k] if i in depth), default=-1)
            stack.pop()
            on_path.discard(k)
    return sorted(inputs, key=depth.__getitem__)


def take_snapshot(view: LiveView) -> Snapshot:
    """Return a consistent live view of a running topology.

    Taken without awaiting, so nothing moves meanwhile: counters and queue
    depths add up (see ``_snapshot``).

    Args:
        view: The running (or stopped) topology.

    Returns:
        A snapshot with ``live=True``. During a change, it shows every node
        running (old and new), and the change in :attr:`Snapshot.change`.
    """
    graph = view.graph
    running = view.live_nodes()
    change = view.change_in_flight()
    waiting = change[2] if change is not None else set()
    order = _order({k: r.node.inputs for k, r in running.items()})
    names = KeyNames()
    nodes = []
    for k in order:
        r = running[k]
        node = r.node
        ctx = r.ctx
        stateful = node.state is not None or ctx.state is not None
        nodes.append(
            NodeSnapshot(
                key=k,
                kind=node.effective_kind,
                generated=graph.is_generated(k) if k in graph else None,
                version=r.version,
                inputs=node.inputs,
                readers=sorted_keys(ctx.readers, names),
                counters=view.statistics_of(k),
                channels=tuple(
                    ChannelSnapshot(c.producer, c.size, c.capacity) for c in view.input_channels(k)
                ),
                state=_state_repr.repr(ctx.state) if stateful else None,
                last_error=r.last_error,
                waiting_for_demand=r.waiting_for_demand,
                switching=k in waiting,
            )
        )
    edges = tuple((i, n.key) for n in nodes for i in n.inputs if i in running)
    in_flight = None
    if change is not None:
        generation, region, pending, switches = change
        in_flight = ChangeSnapshot(
            generation=generation,
            region=sorted_keys(region, names),
            pending=sorted_keys(pending, names),
            switches=sorted_keys(set(switches), names),
        )
    return Snapshot(
        tuple(nodes),
        edges,
        live=True,
        generation=view.generation,
        change=in_flight,
        dead_letters=view.dead_letter_count(),
        time=view.clock.now(),
        checkpoint=view.last_checkpoint(),
    )
