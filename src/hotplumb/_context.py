"""The context a node's code sees: its key, readers, state and current datum."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Hashable

    from hotplumb._clock import Clock
    from hotplumb._datum import Datum

__all__ = ["Context"]


class Context:
    """A running node's view of itself, passed to callables that ask for it.

    A node's ``fn`` gets it as its second argument if it takes two positional
    parameters; a generator source's ``produce`` and ``on_change`` handlers get
    it as their only argument. The runtime owns it: the same object lives as
    long as the node's key runs, across replacements.

    Attributes:
        key: The node's key.
        state: The node's state (``None`` for a stateless node); assign to it
            to change it. It carries over when the node is replaced.
        version: The node's version: the topology generation that last
            (re)defined it.
        readers: The keys currently reading from the node.
        inputs: The keys the node reads, in order.
        clock: The topology's clock.
    """

    __slots__ = (
        "_datum",
        "_demand",
        "_pending",
        "clock",
        "inputs",
        "key",
        "readers",
        "state",
        "version",
    )

    def __init__(
        self,
        key: Hashable,
        version: int,
        inputs: tuple[Hashable, ...],
        readers: frozenset[Hashable],
        clock: Clock,
        state: Any,
    ) -> None:
        self.key = key
        self.version = version
        self.inputs = inputs
        self.readers = readers
        self.clock = clock
        # The node's state (None for a stateless node); node code may reassign it.
        self.state: Any = state
        self._datum: Datum | None = None
        # Arguments of the current datum, built into a Datum only if asked for.
        self._pending: tuple[Any, ...] | None = None
        self._demand: asyncio.Event | None = None  # made when someone waits

    @property
    def datum(self) -> Datum:
        """The datum being processed now, with its provenance.

        Raises:
            LookupError: Outside the processing of a datum (e.g. in a source).
        """
        if self._datum is None and self._pending is not None:
            from hotplumb._datum import Datum

            self._datum = Datum(*self._pending)
        if self._datum is None:
            raise LookupError(f"node {self.key!r} is not processing a datum")
        return self._datum

    @property
    def from_input(self) -> Hashable:
        """The input key the current datum arrived from (its path's next-to-last key).

        Raises:
            LookupError: Outside the processing of a datum, or at an entry point.
        """
        pending = self._pending
        route = pending[2] if pending is not None else None
        if route is None or route.parent is None:
            raise LookupError(f"node {self.key!r} is not processing a datum from an input")
        key: Hashable = route.parent.key
        return key

    @property
    def has_demand(self) -> bool:
        """Whether any node reads from this one."""
        return bool(self.readers)

    async def wait_for_demand(self) -> None:
        """Return once at least one node reads from this one."""
        while not self.readers:
            if self._demand is None:
                self._demand = asyncio.Event()
            self._demand.clear()
            await self._demand.wait()

    def _set_readers(self, readers: frozenset[Hashable]) -> None:
        self.readers = readers
        if readers and self._demand is not None:
            self._demand.set()

    def __repr__(self) -> str:
        readers = sorted(map(repr, self.readers))
        return f"Context(key={self.key!r}, version={self.version}, readers={readers})"
