"""The seam for observability: what the runtime tells an :class:`Observer`, and when.

A topology runs with an observer only when asked (``run(...,
tracer_provider=..., meter_provider=...)``, implemented by
:mod:`hotplumb.otel`); otherwise the runtime holds ``None`` and the hot path
pays one ``is None`` check per batch sent. The calls, each made in the event
loop's thread, synchronously (an observer must not block or await):

* :meth:`Observer.sent`, by a running node for every output batch it is about
  to send on (a target's batch too: its hop ends there), if the observer's
  :attr:`~Observer.watches_batches` is true (an observer of metrics alone
  sets it false, and batches go as if unobserved). The observer sets
  the batch's :class:`~hotplumb.Trace` (the context the next hop continues)
  and returns the batches to send in its place, in order: the batch itself,
  or its pieces (a sampled datum travels alone, so its context is its own).
  The pieces must hold the batch's items in their order, with their origins
  and parents.
* :meth:`Observer.failed`, by a running node for every datum whose
  processing failed and that nobody's ``on_error`` handled, before it goes
  to the dead-letter record.
* :meth:`Observer.change_started` and :meth:`Observer.change_ended`, by the
  live-change protocol around every ``apply`` and ``update``.
* :meth:`Observer.close`, once, when the topology stops.

What an observer reads of the topology (for metrics) it reads through
:class:`Watched`, never through the runtime's own objects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Hashable, Mapping, Sequence

    from hotplumb._change import ApplyReport
    from hotplumb._clock import Clock
    from hotplumb._datum import Batch, Datum
    from hotplumb._snapshot import NodeStatistics

__all__ = ["Hop", "Observer", "Watched"]


class Hop(Protocol):
    """The running node an observer is told about."""

    @property
    def key(self) -> Hashable:
        """The node's key."""
        ...

    @property
    def version(self) -> int:
        """The node's version (the generation that last defined it)."""
        ...


class Watched(Protocol):
    """What an observer may read of its topology, in the event loop's thread."""

    @property
    def clock(self) -> Clock:
        """The topology's clock."""
        ...

    @property
    def trace(self) -> bool:
        """Whether per-hop timing (``run(..., trace=True)``) is recorded on every batch."""
        ...

    @property
    def generation(self) -> int:
        """How many changes have been started."""
        ...

    def node_statistics(self) -> Mapping[Hashable, NodeStatistics]:
        """Every running node's counters now."""
        ...

    def dead_letter_count(self) -> int:
        """How many failed data were recorded in all."""
        ...

    def subscriber_count(self) -> int:
        """How many clients' subscriptions are running."""
        ...


class Observer:
    """Told of the topology's batches, failures and changes; every method does nothing here.

    Subclass it and override what you watch (see the module's documentation
    for when each method is called).

    Attributes:
        watches_batches: Whether :meth:`sent` is called for every batch sent
            (read by the runtime for each batch; true here).
    """

    __slots__ = ()

    watches_batches: bool = True

    def sent(self, hop: Hop, batch: Batch, inputs: Batch, started: float) -> Sequence[Batch]:
        """``hop`` is about to send ``batch``, made from ``inputs`` from ``started`` on.

        Args:
            hop: The node sending.
            batch: The output batch; its ``trace`` is the observer's to set.
            inputs: The input batch it was made from (read only: readers
                share it); its ``trace`` is the hop before's.
            started: Clock time the node began processing the input batch.

        Returns:
            The batches to send instead, in order (normally ``(batch,)``).
        """
        return (batch,)

    def failed(self, hop: Hop, datum: Datum, started: float) -> None:
        """``datum`` failed at ``hop``, whose processing of it began at ``started``."""

    def change_started(self, kind: str) -> Any:
        """A change (``kind``: ``"apply"`` or ``"update"``) was asked for.

        Returns:
            A token handed back to :meth:`change_ended`.
        """
        return None

    def change_ended(
        self, token: Any, report: ApplyReport | None, error: BaseException | None
    ) -> None:
        """The change of ``token`` completed (``report``) or failed (``error``)."""

    def close(self) -> None:
        """The topology stopped."""
