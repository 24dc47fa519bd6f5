"""The topology's counters in the Prometheus text format, for ``GET /metrics``.

Every scrape reads :meth:`Topology.statistics` (and the dead-letter record,
the generation and the running keys) at that moment, in the event loop, and
renders it with ``prometheus_client`` (in the ``web`` extra; imported on the
first scrape, so the rest of the application runs without it). Samples are
labelled ``node`` with the node's readable key (:func:`~hotplumb.format_key`):

* counters ``hotplumb_node_received_total``, ``hotplumb_node_emitted_total``,
  ``hotplumb_node_filtered_total``, ``hotplumb_node_failed_total``,
  ``hotplumb_node_restarts_total``;
* gauges ``hotplumb_node_input_depth``, ``hotplumb_node_input_capacity``;
* unlabelled: the counter ``hotplumb_dead_letters_total`` and the gauges
  ``hotplumb_nodes_running``, ``hotplumb_subscribers`` and
  ``hotplumb_generation``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import hotplumb as hp

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["Exposition", "MetricsUnavailable"]

_COUNTERS = (
    ("received", "Items taken from the node's inputs"),
    ("emitted", "Items the node sent to its readers (for a target: delivered)"),
    ("filtered", "Items that produced no output"),
    ("failed", "Items whose processing raised and were not replaced"),
    ("restarts", "Times the node's task was restarted"),
)
_GAUGES = (
    ("input_depth", "Items waiting in the node's input channels"),
    ("input_capacity", "The capacity of each of the node's input channels"),
)


class MetricsUnavailable(RuntimeError):
    """``prometheus_client`` is not installed."""


class _Collector:
    """A ``prometheus_client`` collector reading a topology when scraped."""

    def __init__(self, topology: Callable[[], hp.Topology]) -> None:
        self._topology = topology

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        topology = self._topology()
        statistics = topology.statistics()
        labelled = [(hp.format_key(k), s) for k, s in statistics.items()]
        for name, text in _COUNTERS:
            family = CounterMetricFamily(f"hotplumb_node_{name}", text, labels=["node"])
            for label, s in labelled:
                family.add_metric([label], getattr(s, name))
            yield family
        for name, text in _GAUGES:
            gauge = GaugeMetricFamily(f"hotplumb_node_{name}", text, labels=["node"])
            for label, s in labelled:
                gauge.add_metric([label], getattr(s, name))
            yield gauge
        yield CounterMetricFamily(
            "hotplumb_dead_letters", "Failed data recorded in all", value=topology.errors.total
        )
        yield GaugeMetricFamily(
            "hotplumb_nodes_running", "Nodes running (during a change, old and new)", len(labelled)
        )
        subscribers = sum(1 for k in statistics if isinstance(k, hp.SubscriberKey))
        yield GaugeMetricFamily("hotplumb_subscribers", "Clients' subscriptions", subscribers)
        yield GaugeMetricFamily(
            "hotplumb_generation", "Changes started on the topology", topology.generation
        )


class Exposition:
    """The ``/metrics`` text of one topology: a registry holding one collector.

    Args:
        topology: Returns the running topology (read on every scrape).

    Raises:
        MetricsUnavailable: ``prometheus_client`` is not installed.
    """

    def __init__(self, topology: Callable[[], hp.Topology]) -> None:
        try:
            from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        except ImportError as missing:
            raise MetricsUnavailable(
                "GET /metrics needs prometheus_client: pip install 'hotplumb[web]'"
            ) from missing
        self._generate = generate_latest
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(topology))
        self.content_type: str = CONTENT_TYPE_LATEST

    def render(self) -> bytes:
        """The exposition of the topology now."""
        return self._generate(self.registry)
