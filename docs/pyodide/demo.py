"""The feed-rollup demo for the in-browser page: runs it and reports what to draw.

Runs inside Pyodide (``index.js`` imports it), and on CPython too (the tests
drive it on a ``FakeClock``). :func:`main` runs
:class:`hotplumb.examples.feed_rollup.FeedRollup` on the running event loop
(Pyodide's ``WebLoop`` in the browser) and, every ``interval`` seconds of the
scenario's clock, hands ``draw`` one JSON text: the state the live page of
``hotplumb.web`` draws (``snapshot``, ``changes``, ``notices``,
``dead_letters``, ``dead_letter_total``, ``closed``). The last text also
carries ``verification``: what :func:`~hotplumb.examples.feed_rollup.verify`
found.

Only the standard library and hotplumb: Pyodide has nothing else installed.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import hotplumb as hp
from hotplumb.examples.feed_rollup import FeedRollup, Note, verify

if TYPE_CHECKING:
    from collections.abc import Callable

    from hotplumb.examples.feed_rollup import Event

__all__ = ["Sampler", "main"]


class Sampler:
    """Turns a running topology into the live page's state, as the web hub does.

    Args:
        draw: Called with each new state, as JSON text.
    """

    def __init__(self, draw: Callable[[str], object]) -> None:
        self._draw = draw
        self.topology: hp.Topology | None = None
        self._graph: hp.Graph | None = None
        self._generation = 0
        self._seq = 0
        self.changes: list[dict[str, Any]] = []
        self.notices: list[dict[str, Any]] = []
        self.snapshot: dict[str, Any] | None = None
        self.drawn = 0

    def observe(self, event: Event) -> None:
        """Keep what the scenario tells (its notes) as the page's notices."""
        if isinstance(event, Note):
            self._seq += 1
            text = f"{event.at:5.2f}s  {event.kind.value}: {event.text}"
            self.notices.append({"seq": self._seq, "level": "info", "text": text})

    def checkpoint(self, when: str, topology: hp.Topology) -> None:
        """Attach to the topology (the scenario calls this around its live changes)."""
        if self.topology is None:
            self.topology = topology
            self._graph = topology.graph
            self._generation = topology.generation
        self.sample()

    def sample(self) -> None:
        """Take a snapshot and draw it, with the changes seen since the last one."""
        topo = self.topology
        if topo is None:
            return
        graph = topo.graph
        if self._graph is not None and graph is not self._graph:
            diff = self._graph.diff(graph)
            if diff:
                self._seq += 1
                self.changes.append(
                    {
                        "seq": self._seq,
                        "generation": topo.generation,
                        "seconds": None,
                        "added": sorted(hp.format_key(k) for k in diff.added),
                        "removed": sorted(hp.format_key(k) for k in diff.removed),
                        "replaced": sorted(hp.format_key(k) for k in diff.replaced),
                        "rewired": sorted(hp.format_key(k) for k in diff.rewired),
                    }
                )
        self._graph = graph
        self._generation = topo.generation
        self.snapshot = topo.snapshot().to_dict()
        self.send(closed=topo.closing)

    def send(self, *, closed: bool, **extra: Any) -> None:
        """Draw the last snapshot taken, with ``extra`` fields."""
        if self.snapshot is None:
            return
        state = {
            "snapshot": self.snapshot,
            "changes": self.changes,
            "notices": self.notices,
            "dead_letters": [],
            "dead_letter_total": 0 if self.topology is None else self.topology.errors.total,
            "closed": closed,
            **extra,
        }
        self.drawn += 1
        self._draw(json.dumps(state))


async def main(
    draw: Callable[[str], object],
    *,
    duration: float = 6.0,
    seed: int = 1,
    interval: float = 0.25,
    clock: hp.Clock | None = None,
) -> bool:
    """Run the feed-rollup scenario, drawing its topology every ``interval`` seconds.

    Args:
        draw: Called with each state, as JSON text.
        duration: The scenario's length, in seconds of ``clock``.
        seed: The feeds' random seed.
        interval: How often to draw, in seconds of ``clock``.
        clock: The clock (the system clock by default: real time).

    Returns:
        Whether the verification found nothing wrong.
    """
    clock = clock if clock is not None else hp.SystemClock()
    sampler = Sampler(draw)
    scenario = FeedRollup(seed=seed, duration=duration, observe=sampler.observe)

    async def sample_often() -> None:
        while True:
            await clock.sleep_until(clock.now() + interval)
            sampler.sample()

    sampling = asyncio.ensure_future(sample_often())
    try:
        outcome = await scenario.run(clock, checkpoint=sampler.checkpoint)
    finally:
        sampling.cancel()
    result = verify(outcome)
    totals = outcome.totals
    lines = [
        f"verification: {'ok' if result.ok else 'FAILED'} ({result.checked} summaries checked)",
        *result.violations[:10],
    ]
    sampler.send(
        closed=True,
        verification={"ok": result.ok, "checked": result.checked, "lines": lines},
        totals={
            "produced": totals.produced,
            "ticks": totals.ticks,
            "delivered": totals.delivered,
            "failed": totals.failed,
        },
    )
    return result.ok
