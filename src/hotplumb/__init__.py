"""hotplumb: build, inspect and live re-plumb topologies of asyncio tasks.

Layering, earliest first. A module imports hotplumb modules only from
earlier lines (``tests/test_layers.py`` checks it; imports under
``if TYPE_CHECKING:``, for annotations only, are exempt):

``_format``                   readable forms of keys, values and exceptions; imports no hotplumb
``_errors``                   the exception tree, rooted at ``HotplumbError``
``_store``                    checkpoint stores (SQLite, files), codecs, the ``Checkpoint`` record
``_keys``                     node keys: validation and the frozen ``Key`` mapping
``_node``                     ``Node``: one node's callable, inputs and kind; no asyncio
``_snapshot``                 the snapshot value types, and a graph's static snapshot
``_graph``                    ``Graph``, ``Changelist``: the pure description; no asyncio
``_explain``                  a datum's provenance, formatted like a traceback
``_datum``                    ``Datum``, ``Route``, ``NodeError``; ``Batch``, data moving together
``_clock``, ``_context``      clocks and ``Deadline``; the context a node's callable is given
``_sources``                  sources from an (async) iterable or an ``asyncio.Queue``
``_channel``                  the ``Channel`` interface and its in-memory implementation
``_wire``                     channels between processes: frames, credits, the two ends
``_raywire``                  the wire over Ray actor calls: hosts, their actor, the transport
``_raypull``                  channels into the driver over Ray: the inbox that polls the hosts
``_kernel``                   how a node's callable is called: strategies filling ``Outputs``
``_observe``                  the ``Observer`` seam: batches, failures and changes told
``_change``                   the live-change protocol: plan, cut, align, switch, complete
``_inspect``                  live snapshots, read through a narrow view of the topology
``_runner``                   one running node: its task, batches, restarts
``_checkpoint``               taking checkpoints on the change barrier, and recovering from them
``_subscribe``                clients: a target for the length of an ``async with`` block
``otel``                      OpenTelemetry traces and metrics; ``run()`` imports it only if asked
``_engine``                   the ``Engine`` seam: where nodes run, if not all in this process
``_runtime``                  ``run()``, ``Topology`` and the running state behind it
``_rayhost``                  a Ray host's share of a topology: its nodes, its part of each barrier
``_rayengine``                the driver's side of a topology over Ray: placement, parts, events
``ray``                       ``RayEngine``, ``DRIVER``: the public face of the Ray engine
``_time``                     timers and windowed rollups, built on the public API
``_render``                   pictures (DOT, Mermaid, networkx, SVG, PNG) of snapshots
``_loader``                   finding a graph in the user's code from ``MODULE:ATTR``
``testing``                   ``FakeClock`` and other helpers for tests
``examples.*``                the shipped examples, written against the public API
``web._json``, ``web._metrics``, ``web._app``, ``web._serve``, ``web``   the web application
``_demo``, ``_cli_render``, ``_serve``   the ``demo``, ``render`` and ``serve`` commands
``_cli``                      the ``hotplumb`` command line

This module only re-exports, and makes the exported names report
``hotplumb`` as their module.
"""

from hotplumb._change import ApplyReport
from hotplumb._checkpoint import CheckpointStatistics, Recovery
from hotplumb._clock import Clock, SystemClock
from hotplumb._context import Context
from hotplumb._datum import Data, Datum, Emission, NodeError, Route, Trace, emit
from hotplumb._errors import (
    ApplyError,
    CheckpointError,
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
from hotplumb._format import format_key
from hotplumb._graph import Changelist, Factory, Graph
from hotplumb._keys import Key, key
from hotplumb._node import SKIP, Node, NodeKind, Pool, RestartPolicy, resumable_source, sink, source
from hotplumb._render import render, to_dot, to_mermaid, to_networkx, write
from hotplumb._runtime import DeadLetters, ShutdownReport, Topology, run
from hotplumb._snapshot import (
    ChangeSnapshot,
    ChannelSnapshot,
    NodeSnapshot,
    NodeStatistics,
    Snapshot,
)
from hotplumb._sources import queue_source, source_of
from hotplumb._store import (
    PICKLE,
    Checkpoint,
    CheckpointStore,
    Codec,
    DirectoryStore,
    PickleCodec,
    SQLiteStore,
    StoredCheckpoint,
)
from hotplumb._subscribe import (
    Overflow,
    SubscriberKey,
    Subscription,
    SubscriptionStatistics,
)
from hotplumb._time import Tick, Window, rollup, timer

__all__ = [
    "PICKLE",
    "SKIP",
    "ApplyError",
    "ApplyReport",
    "ChangeSnapshot",
    "Changelist",
    "ChannelSnapshot",
    "Checkpoint",
    "CheckpointError",
    "CheckpointStatistics",
    "CheckpointStore",
    "Clock",
    "Codec",
    "Context",
    "CycleError",
    "Data",
    "Datum",
    "DeadLetters",
    "DirectoryStore",
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
    "PickleCodec",
    "Pool",
    "Recovery",
    "ReentrantCallError",
    "RenderError",
    "RestartPolicy",
    "Route",
    "SQLiteStore",
    "ShutdownReport",
    "Snapshot",
    "StaleGraphError",
    "StoredCheckpoint",
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
    "queue_source",
    "render",
    "resumable_source",
    "rollup",
    "run",
    "sink",
    "source",
    "source_of",
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
        try:  # noqa: SIM105 - contextlib.suppress would need an import here
            _obj.__module__ = __name__
        except (AttributeError, TypeError):
            pass
del _name, _obj
