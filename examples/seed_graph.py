"""Resolve the seed topology from two clients, then remove one of them.

Each client is a target: a sink reading the merged rollup of a few
subscriptions. A factory makes every other node from its key alone. Clients
that share a subscription share its nodes; removing a client removes exactly
the nodes only it needed.

Run it with ``python examples/seed_graph.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hotplumb import Graph, Node, NodeKind, format_key, key, sink

if TYPE_CHECKING:
    from collections.abc import Hashable


def merge(value: Any) -> Any:
    """Merge the rollups of several subscriptions (here: pass them on)."""
    return value


def rollup(value: Any) -> Any:
    """Roll one subscription up over a window (here: pass it on)."""
    return value


def seed_factory(k: Hashable) -> Node | None:
    """Make the node for a key from the key alone, or None if it means nothing."""
    match k:
        case {"subscriptions": frozenset() as subs, "rollup_window": int() as window, **rest}:
            if rest:
                return None
            parts = [key(subscription=s, rollup_window=window) for s in sorted(subs)]
            return Node(merge, inputs=parts)
        case {"subscription": str() as sub, "rollup_window": int() as window, **rest}:
            if rest:
                return None
            return Node(rollup, inputs=[key(subscription=sub), key(timeout=window)])
        case {"subscription": str(), **rest} if not rest:
            return Node()  # an entry point: data for the subscription is injected here
        case {"timeout": int(), **rest} if not rest:
            return Node(kind=NodeKind.TIMER)
    return None


def deliver(value: Any) -> None:
    """Send a datum to the client (here: print it)."""
    print(value)


def client(*subscriptions: str, rollup_window: int = 10_000) -> Node:
    """A client: a sink reading the merged rollup of ``subscriptions``."""
    wanted = key(subscriptions=set(subscriptions), rollup_window=rollup_window)
    return sink(deliver, inputs=[wanted])


def show(graph: Graph) -> None:
    """Print the active nodes, sources first, with what each reads."""
    for k in graph.topological_order():
        node = graph.nodes[k]
        origin = "generated" if graph.is_generated(k) else "provided"
        reads = ", ".join(f"[{format_key(i)}]" for i in node.inputs) or "-"
        print(f"  {node.effective_kind.value:9} {origin:9} [{format_key(k)}] <- {reads}")


def main() -> None:
    """Build the seed graph, print it, remove a client and print the change."""
    graph = Graph(
        {
            "client/a": client("source/foo", "source/bar"),
            "client/b": client("source/foo"),
        },
        seed_factory,
    )
    print(f"seed topology: {len(graph)} active nodes")
    show(graph)

    smaller = graph.remove_node("client/a")
    change = graph.diff(smaller)
    print(f"\nafter removing client/a: {len(smaller)} active nodes")
    show(smaller)
    print("\nremoved:")
    for k in sorted(change.removed, key=format_key):
        print(f"  [{format_key(k)}]")
    print("readers changed:")
    for k in sorted(change.readers_changed, key=format_key):
        print(f"  [{format_key(k)}]")


if __name__ == "__main__":
    main()
