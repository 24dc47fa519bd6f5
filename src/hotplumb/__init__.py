"""hotplumb: build, inspect and live re-plumb topologies of asyncio tasks.

Layering (each layer imports only from the layers above it):

1. ``_errors``, ``_keys``: the exception tree and node keys.
2. ``_node``, ``_graph``: the pure description of a topology. No asyncio.
3. ``_datum``: data and its provenance.
4. ``_clock``, ``_channel``, ``_control``, ``_context``: runtime building blocks.
5. ``_runtime``: runs a graph on asyncio, and applies live changes.
6. ``_time``: timers and windowed rollups, built on the runtime's public API.
7. ``_inspect``, ``_render``: snapshots and pictures; rendering reads snapshots
   and graphs, never live nodes.
8. ``testing``, ``_cli``: helpers for tests, and the ``hotplumb`` command.

This module only re-exports.
"""

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
    RenderError,
    TopologyClosedError,
)
from hotplumb._format import format_key
from hotplumb._graph import Changelist, Factory, Graph
from hotplumb._inspect import ChangeSnapshot, ChannelSnapshot, NodeCounters, NodeSnapshot, Snapshot
from hotplumb._keys import Key, key
from hotplumb._node import SKIP, Node, NodeKind, RestartPolicy, sink, source
from hotplumb._render import render, to_dot, to_mermaid, to_networkx, write
from hotplumb._runtime import (
    ApplyReport,
    DeadLetters,
    NodeStatistics,
    ShutdownReport,
    Topology,
    run,
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
    "NodeCounters",
    "NodeError",
    "NodeFailedError",
    "NodeKind",
    "NodeSnapshot",
    "NodeStatistics",
    "NotAnEntryPointError",
    "RenderError",
    "RestartPolicy",
    "Route",
    "ShutdownReport",
    "Snapshot",
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

# Public names print as public: reprs, tracebacks and pickles say
# ``hotplumb.Key``, not the private module that defines it. (A typing alias
# such as ``Factory`` has a read-only ``__module__`` and is left alone.)
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) or callable(_obj):
        try:
            _obj.__module__ = __name__
        except (AttributeError, TypeError):
            pass
del _name, _obj
