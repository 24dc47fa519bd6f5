"""hotplumb: build, inspect and live re-plumb topologies of asyncio tasks.

Layering (each layer imports only from the layers above it):

1. ``_errors``, ``_keys``: the exception tree and node keys.
2. ``_node``, ``_graph``: the pure description of a topology. No asyncio.
3. ``_datum``: data and its provenance.
4. ``_clock``, ``_channel``, ``_control``, ``_context``, ``_subscribe``: runtime
   building blocks (a subscription sees the topology through a small protocol,
   so that ``Topology.subscribe`` can delegate to it).
5. ``_runtime``: runs a graph on asyncio, and applies live changes.
6. ``_time``: timers and windowed rollups, built on the runtime's public API.
7. ``_inspect``, ``_render``: snapshots and pictures; rendering reads snapshots
   and graphs, never live nodes.
8. ``testing``, ``_cli``: helpers for tests, and the ``hotplumb`` command.

This module only re-exports.
"""

from hotplumb._change import ApplyReport
from hotplumb._clock import Clock, SystemClock
from hotplumb._context import Context
from hotplumb._datum import Datum, Emission, NodeError, Route, Trace, emit
from hotplumb._errors import (
    ApplyError,
    CycleError,
    FactoryError,
    GraphTooLargeError,
    HotplumbError,
    InvalidKeyError,
    InvalidNodeCallableError,
    InvalidNodeError,
    MissingNodeError,
    NodeFailedError,
    NotAnEntryPointError,
    ReentrantCallError,
    RenderError,
    StaleGraphError,
    SubscriberOverflowError,
    TopologyClosedError,
)
from hotplumb._graph import Changelist, Factory, Graph
from hotplumb._keys import Key, format_key, key
from hotplumb._node import SKIP, Node, NodeKind, RestartPolicy, sink, source
from hotplumb._render import render, to_dot, to_mermaid, to_networkx, write
from hotplumb._runtime import DeadLetters, ShutdownReport, Topology, run
from hotplumb._snapshot import (
    ChangeSnapshot,
    ChannelSnapshot,
    NodeSnapshot,
    NodeStatistics,
    Snapshot,
)
from hotplumb._subscribe import (
    Overflow,
    SubscriberKey,
    Subscription,
    SubscriptionStatistics,
)
from hotplumb._time import Tick, Window, rollup, timer

__all__ = [
    "SKIP",
    "ApplyError",
    "ApplyReport",
    "ChangeSnapshot",
    "Changelist",
    "ChannelSnapshot",
    "Clock",
    "Context",
    "CycleError",
    "Datum",
    "DeadLetters",
    "Emission",
    "Factory",
    "FactoryError",
    "Graph",
    "GraphTooLargeError",
    "HotplumbError",
    "InvalidKeyError",
    "InvalidNodeCallableError",
    "InvalidNodeError",
    "Key",
    "MissingNodeError",
    "Node",
    "NodeError",
    "NodeFailedError",
    "NodeKind",
    "NodeSnapshot",
    "NodeStatistics",
    "NotAnEntryPointError",
    "Overflow",
    "ReentrantCallError",
    "RenderError",
    "RestartPolicy",
    "Route",
    "ShutdownReport",
    "Snapshot",
    "StaleGraphError",
    "SubscriberKey",
    "SubscriberOverflowError",
    "Subscription",
    "SubscriptionStatistics",
    "SystemClock",
    "Tick",
    "Topology",
    "TopologyClosedError",
    "Trace",
    "Window",
    "emit",
    "format_key",
    "key",
    "render",
    "rollup",
    "run",
    "sink",
    "source",
    "timer",
    "to_dot",
    "to_mermaid",
    "to_networkx",
    "write",
]
