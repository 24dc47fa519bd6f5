"""Where a topology's nodes run: the seam between the core and an engine that places them.

Without an engine every node runs in the calling process, on its event loop.
An engine (``hotplumb.ray.RayEngine``) decides, node by node, whether a node
runs here or elsewhere, makes the participants and channels for those that
do not, and takes part in every barrier: it is told of each before it enters
the topology (:meth:`Engine.begin`), so that the processes it runs nodes in
are ready for it. The change protocol itself (``_change``) is the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Hashable
    from contextlib import AbstractContextManager

    from hotplumb._change import Barrier, Participant
    from hotplumb._channel import Channel
    from hotplumb._datum import Datum
    from hotplumb._graph import Graph
    from hotplumb._kernel import Kernel
    from hotplumb._node import Node

__all__ = ["Engine", "EngineFactory"]


class Engine(Protocol):
    """One topology's engine (internal). Every method is called from the topology's event loop."""

    async def open(self, core: Any) -> None:
        """Before any node is made: start what the graph needs (``core``: the topology's core)."""

    def participant(
        self, key: Hashable, node: Node, kernel: Kernel, version: int, readers: frozenset[Hashable]
    ) -> Participant | None:
        """The participant of a node that runs elsewhere; ``None`` for one that runs here."""

    def channel(
        self, producer: Hashable | None, consumer: Participant, capacity: int
    ) -> Channel | None:
        """A channel with an end elsewhere; ``None`` for one whose two ends are here."""

    async def started(self) -> None:
        """Every node is made: what runs elsewhere is made there."""

    async def admit(self, graph: Graph) -> frozenset[Hashable]:
        """Before a change to ``graph``: raise if it cannot run, or ready what it needs.

        Returns:
            The running keys the change moves elsewhere.
        """
        ...

    def placing(self, placement: Any) -> AbstractContextManager[None]:
        """The placement the change made inside uses (``None``: the current one)."""
        ...

    async def begin(self, barrier: Barrier) -> None:
        """``barrier`` is about to enter the topology: be ready for it, or raise."""

    def abandon(self, barrier: Barrier) -> None:
        """``barrier``, announced by :meth:`begin`, will not enter the topology."""

    def cut(self, barrier: Barrier) -> None:
        """``barrier`` has entered the topology."""

    async def close(self) -> list[Datum]:
        """After every node here stopped: stop the rest; return what was not delivered."""
        ...

    def abort(self) -> None:
        """Stop at once, without waiting."""


class EngineFactory(Protocol):
    """What :func:`hotplumb.run` takes as ``engine``: it makes one topology's engine."""

    def for_topology(self) -> Engine:
        """A new engine for one run."""
        ...
