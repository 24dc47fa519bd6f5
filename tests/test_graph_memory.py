"""The graph's memory over a long life: clients that keep inventing keys."""

from __future__ import annotations

import gc
import tracemalloc
from typing import TYPE_CHECKING, Any

from hotplumb import Graph, Node, sink

if TYPE_CHECKING:
    from collections.abc import Hashable


def _deliver(datum: Any) -> None:
    pass


def _summarise(value: Any) -> Any:
    return value


def window_factory(k: Hashable) -> Node | None:
    """A node per client key: what a service makes for each new subscription."""
    if isinstance(k, tuple) and k[0] == "window":
        return Node(_summarise, inputs=["feed"])
    return None


def join_and_leave(graph: Graph, first: int, count: int) -> Graph:
    """Clients ``first..first+count-1`` each join (reading a new key) and leave."""
    for i in range(first, first + count):
        graph = graph.add_node(("client", i), sink(_deliver, inputs=[("window", i)]))
        graph = graph.remove_node(("client", i))
    return graph


def start() -> dict[Hashable, Node]:
    return {"feed": Node(), "archive": sink(_deliver, inputs=["feed"])}


def test_the_factory_cache_stays_bounded_by_default() -> None:
    graph = join_and_leave(Graph(start(), window_factory), 0, 20_000)
    assert set(graph.nodes) == {"feed", "archive"}
    assert len(graph._cache) == 4096  # the default; 20,000 left inactive


def test_memory_stays_flat_while_clients_join_and_leave() -> None:
    # Tracing is slow, so the cache is small and the traced run short: 4,000
    # joins, each leaving a window behind, which an unbounded cache keeps
    # (some 300 bytes each: over 1 MB). A bounded one holds 64 at the end.
    graph = join_and_leave(Graph(start(), window_factory, factory_cache=64), 0, 500)
    gc.collect()
    tracemalloc.start()
    try:
        graph = join_and_leave(graph, 500, 4000)
        gc.collect()
        grown, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(graph._cache) == 64
    assert grown < 256 * 1024, grown
