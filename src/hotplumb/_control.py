"""Control messages: barriers that travel in-band with data.

A :class:`Barrier` is put into the entry channels of a region of the graph and
flows downstream through the same channels as data. A node in the region acts
on it once it has arrived on *all* of the node's input channels (alignment):
it switches to its new version if the barrier's plan has one for it, forwards
the barrier to its readers inside the region, and acknowledges. A barrier with
an empty plan switches nothing; :meth:`Topology.drain` uses one to learn that
everything sent before it has been processed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Mapping

    from hotplumb._channel import Channel
    from hotplumb._node import Node

__all__ = ["Barrier", "Switch"]


@dataclass(frozen=True, slots=True, eq=False)
class Switch:
    """What one running node becomes when the barrier has reached it.

    Attributes:
        node: The new description, or ``None`` if the node is removed.
        version: The new version number.
        inputs: The new input channels, in the new input order.
        outputs: The new output channels (one per reader).
        readers: The new readers' keys.
        kernel: The prepared processing of ``node`` (built before the barrier
            is sent, so a bad callable fails the change before it starts).
    """

    node: Node | None
    version: int
    inputs: list[Channel] = field(default_factory=list)
    outputs: list[Channel] = field(default_factory=list)
    readers: frozenset[Hashable] = frozenset()
    kernel: Any = None


@dataclass(slots=True, eq=False)
class Barrier:
    """A change (or a flush) travelling through a region of the graph.

    Attributes:
        generation: The topology generation this barrier starts.
        region: The running keys the barrier visits; nodes outside it never
            see it.
        plan: Per key, the switch to make when the barrier has arrived.
        pending: The keys that have not acknowledged yet.
        done: Set when every node in the region has acknowledged.
        on_ack: Called with each key as it acknowledges.
        aborted: Set (with ``done``) when the topology stopped before the
            barrier had passed every node.
    """

    generation: int
    region: frozenset[Hashable]
    plan: Mapping[Hashable, Switch]
    pending: set[Hashable] = field(default_factory=set)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    on_ack: Callable[[Hashable], None] | None = None
    aborted: bool = False

    def __post_init__(self) -> None:
        self.pending = set(self.region)
        if not self.pending:
            self.done.set()

    def ack(self, key: Hashable) -> None:
        """Record that ``key`` has acted on the barrier."""
        self.pending.discard(key)
        if self.on_ack is not None:
            self.on_ack(key)
        if not self.pending:
            self.done.set()

    def abort(self) -> None:
        """Release whoever waits for this barrier: it will never complete."""
        if not self.done.is_set():
            self.aborted = True
            self.done.set()

    def __repr__(self) -> str:
        return (
            f"Barrier(generation={self.generation}, region={len(self.region)} nodes, "
            f"switches={len(self.plan)}, pending={len(self.pending)})"
        )
