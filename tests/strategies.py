"""Hypothesis strategies and reference checks for keys and graphs.

Graph strategies use int keys. Factories are frozen dataclasses (equal by
value, deterministic), and node callables are module-level functions, so two
independently built graphs over the same description compare equal.
"""

from __future__ import annotations

import importlib.util
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hypothesis import strategies as st

from hotplumb import Graph, HotplumbError, Node, key
from hotplumb._graph import Changelist, Factory

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Mapping

# -- keys ---------------------------------------------------------------------

_scalars = st.one_of(
    st.integers(-5, 5), st.text("abc/", max_size=3), st.booleans(), st.floats(0, 1)
)

key_values: st.SearchStrategy[Any] = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.sets(_scalars, max_size=3),
        st.dictionaries(st.text("xyz", min_size=1, max_size=2), inner, max_size=3),
    ),
    max_leaves=8,
)
"""Values a key field may hold: scalars and nested lists, sets and dicts."""

key_fields: st.SearchStrategy[dict[str, Any]] = st.dictionaries(
    st.sampled_from(["subscription", "subscriptions", "rollup_window", "timeout", "x"]),
    key_values,
    max_size=4,
)
"""Keyword fields for :func:`hotplumb.key`."""


def keys() -> st.SearchStrategy[Hashable]:
    """Any valid node key: scalars, tuples and :class:`hotplumb.Key` mappings."""
    return st.one_of(
        st.integers(),
        st.text(max_size=5),
        st.tuples(st.integers(0, 3), st.text("ab", max_size=2)),
        key_fields.map(lambda fields: key(**fields)),
    )


# -- node callables -----------------------------------------------------------


def double(value: Any) -> Any:
    return value * 2


def negate(value: Any) -> Any:
    return -value


FNS: tuple[Callable[[Any], Any], ...] = (double, negate)


# -- factories ------------------------------------------------------------------


@dataclass(frozen=True)
class DagFactory:
    """A deterministic factory over non-negative int keys.

    Key ``k`` reads up to ``fanout`` keys below ``k``, so generated nodes never
    form a cycle among themselves. With ``missing_every`` set, some keys have
    no node (the factory returns ``None``).
    """

    seed: int
    fanout: int = 2
    missing_every: int = 0

    def __call__(self, k: Hashable) -> Node | None:
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            return None
        if self.missing_every and (k * 7 + self.seed) % self.missing_every == 0:
            return None
        rng = random.Random(self.seed * 1_000_003 + k)
        inputs = rng.sample(range(k), rng.randint(0, min(self.fanout, k)))
        return Node(FNS[rng.randrange(len(FNS))], inputs=inputs)


TOTAL_FACTORIES: tuple[Factory, ...] = (DagFactory(1), DagFactory(2, fanout=3))
"""Factories that make a node for every non-negative int."""

FACTORIES: tuple[Factory | None, ...] = (None, *TOTAL_FACTORIES, DagFactory(3, missing_every=5))
"""A few fixed factories, some partial, for edit sequences."""


# -- graphs ---------------------------------------------------------------------


@st.composite
def int_nodes(draw: st.DrawFn, k: int, universe: int, acyclic: bool = True) -> Node:
    """A node for int key ``k`` reading other int keys (below ``k`` if acyclic)."""
    pool = list(range(k)) if acyclic else [i for i in range(universe) if i != k]
    inputs = draw(st.lists(st.sampled_from(pool), max_size=3, unique=True)) if pool else []
    return Node(draw(st.sampled_from(FNS)), inputs=inputs, target=draw(st.booleans()))


@dataclass(frozen=True)
class GraphSpec:
    """What a graph is built from."""

    provided: Mapping[Any, Node]
    factory: Factory | None

    def build(self, max_nodes: int = 1_000_000) -> Graph:
        return Graph(self.provided, self.factory, max_nodes=max_nodes)


@st.composite
def graph_specs(
    draw: st.DrawFn, universe: int = 30, acyclic: bool = True, partial: bool = False
) -> GraphSpec:
    """Provided nodes over int keys ``0..universe-1`` and a factory.

    Args:
        draw: Hypothesis' draw.
        universe: How many int keys there are.
        acyclic: Provided nodes read only lower keys (else cycles may occur).
        partial: Allow factories that miss keys, and no factory at all (the
            graph may then fail to resolve).
    """
    factory = draw(st.sampled_from(FACTORIES if partial else TOTAL_FACTORIES))
    provided_keys = draw(st.lists(st.integers(0, universe - 1), unique=True, max_size=12))
    provided = {k: draw(int_nodes(k, universe, acyclic)) for k in provided_keys}
    return GraphSpec(provided, factory)


def graphs(universe: int = 30) -> st.SearchStrategy[Graph]:
    """Valid graphs: acyclic provided nodes over int keys and a total factory."""
    return graph_specs(universe).map(GraphSpec.build)


# -- edits ----------------------------------------------------------------------


@dataclass(frozen=True)
class AddNode:
    key: Hashable
    node: Node

    def apply(self, graph: Graph) -> Graph:
        return graph.add_node(self.key, self.node)

    def apply_spec(self, spec: GraphSpec) -> GraphSpec:
        return GraphSpec({**spec.provided, self.key: self.node}, spec.factory)


@dataclass(frozen=True)
class RemoveNode:
    key: Hashable

    def apply(self, graph: Graph) -> Graph:
        return graph.remove_node(self.key)

    def apply_spec(self, spec: GraphSpec) -> GraphSpec:
        return GraphSpec({k: n for k, n in spec.provided.items() if k != self.key}, spec.factory)


@dataclass(frozen=True)
class SwapFactory:
    factory: Factory | None

    def apply(self, graph: Graph) -> Graph:
        return graph.with_factory(self.factory)

    def apply_spec(self, spec: GraphSpec) -> GraphSpec:
        return GraphSpec(spec.provided, self.factory)


@dataclass(frozen=True)
class Retouch:
    """Replace a provided node by one that reads the same inputs (if the key is provided)."""

    key: Hashable
    fn: Any
    target: bool

    def _new(self, provided: Mapping[Any, Node]) -> Node | None:
        old = provided.get(self.key)
        return None if old is None else Node(self.fn, inputs=old.inputs, target=self.target)

    def apply(self, graph: Graph) -> Graph:
        node = self._new(graph.provided)
        return graph if node is None else graph.add_node(self.key, node)

    def apply_spec(self, spec: GraphSpec) -> GraphSpec:
        node = self._new(spec.provided)
        if node is None:
            return spec
        return GraphSpec({**spec.provided, self.key: node}, spec.factory)


Edit = AddNode | RemoveNode | SwapFactory | Retouch


@st.composite
def edits(draw: st.DrawFn, universe: int = 30, acyclic: bool = True, partial: bool = False) -> Edit:
    """One edit: add or replace a node, remove a key (provided or not), swap factory.

    A replacement may keep the inputs of the node it replaces ("retouch"), the
    case an edit resolves without walking what the node reads.
    """
    kind = draw(st.sampled_from(["add", "add", "retouch", "remove", "factory"]))
    if kind == "retouch":
        k = draw(st.integers(0, universe - 1))
        return Retouch(k, draw(st.sampled_from(FNS)), draw(st.booleans()))
    if kind == "add":
        k = draw(st.integers(0, universe - 1))
        return AddNode(k, draw(int_nodes(k, universe, acyclic)))
    if kind == "remove":
        return RemoveNode(draw(st.integers(0, universe - 1)))
    return SwapFactory(draw(st.sampled_from(FACTORIES if partial else TOTAL_FACTORIES)))


# -- the seed scenario ----------------------------------------------------------
# The tests use the example's own factory and clients, so the example is what
# they check.

_SEED_PATH = Path(__file__).resolve().parent.parent / "examples" / "seed_graph.py"
_seed_spec = importlib.util.spec_from_file_location("seed_graph_example", _SEED_PATH)
assert _seed_spec is not None
assert _seed_spec.loader is not None
_seed = importlib.util.module_from_spec(_seed_spec)
_seed_spec.loader.exec_module(_seed)

seed_factory: Factory = _seed.seed_factory
"""Make rollups of subscriptions (``examples/seed_graph.py``'s factory)."""
client: Callable[..., Node] = _seed.client
"""A seed client: a sink reading the merged rollup of some subscriptions."""


# -- reference checks -------------------------------------------------------------


def reference_nodes(spec: GraphSpec) -> dict[Hashable, Node] | None:
    """Resolve ``spec`` the naive way: the active nodes, or None if it cannot resolve."""
    resolved: dict[Hashable, Node] = {}
    todo = [k for k, n in spec.provided.items() if n.target]
    while todo:
        k = todo.pop()
        if k in resolved:
            continue
        node = spec.provided.get(k)
        if node is None and spec.factory is not None:
            node = spec.factory(k)
        if node is None:
            return None
        resolved[k] = node
        todo.extend(node.inputs)
    # Kahn's algorithm finds cycles.
    waiting = {k: len(n.inputs) for k, n in resolved.items()}
    ready = [k for k, count in waiting.items() if not count]
    seen = 0
    while ready:
        k = ready.pop()
        seen += 1
        for r, n in resolved.items():
            if k in n.inputs:
                waiting[r] -= 1
                if not waiting[r]:
                    ready.append(r)
    return resolved if seen == len(resolved) else None


def try_build(spec: GraphSpec) -> Graph | None:
    """``spec.build()``, or None if it raises a HotplumbError."""
    try:
        return spec.build()
    except HotplumbError:
        return None


def readers_from(nodes: Mapping[Hashable, Node]) -> dict[Hashable, frozenset[Hashable]]:
    """Every key's readers, computed from scratch."""
    readers: dict[Hashable, set[Hashable]] = {k: set() for k in nodes}
    for r, node in nodes.items():
        for i in node.inputs:
            readers[i].add(r)
    return {k: frozenset(s) for k, s in readers.items()}


def reference_diff(old: Graph, new: Graph) -> Changelist:
    """The changelist from ``old`` to ``new``, computed from scratch."""
    a, b = dict(old.nodes), dict(new.nodes)
    ra, rb = readers_from(a), readers_from(b)
    both = a.keys() & b.keys()
    replaced = {
        k for k in both if a[k] != b[k] and Node(**{**_fields(a[k]), "inputs": b[k].inputs}) != b[k]
    }
    rewired = {k for k in both if a[k] != b[k]} - replaced
    return Changelist(
        added=frozenset(b.keys() - a.keys()),
        removed=frozenset(a.keys() - b.keys()),
        replaced=frozenset(replaced),
        rewired=frozenset(rewired),
        readers_changed=frozenset(k for k in both if a[k] == b[k] and ra[k] != rb[k]),
        nodes={k: b[k] for k in (b.keys() - a.keys()) | replaced | rewired},
    )


def _fields(node: Node) -> dict[str, Any]:
    return {name: getattr(node, name) for name in Node.__dataclass_fields__}


def assert_consistent(graph: Graph) -> None:
    """Check a graph's views against each other and against a naive resolution."""
    nodes = dict(graph.nodes)
    expected = reference_nodes(GraphSpec(dict(graph.provided), graph.factory))
    assert expected == nodes
    assert len(graph) == len(nodes)
    assert graph.targets == {k for k, n in graph.provided.items() if n.target}
    assert graph.targets <= nodes.keys()
    assert graph.sources == {k for k, n in nodes.items() if not n.inputs}
    readers = readers_from(nodes)
    for k, node in nodes.items():
        assert graph.has_node(k)
        assert k in graph
        assert graph.inputs_of(k) == node.inputs
        assert graph.readers_of(k) == readers[k]
        assert graph.is_generated(k) == (k not in graph.provided)
        assert readers[k] or k in graph.targets
    edges = {(i, r) for r, node in nodes.items() for i in node.inputs}
    assert set(graph.edges) == edges
    assert len(graph.edges) == len(edges)
    assert all(e in graph.edges for e in edges)
    order = graph.topological_order()
    assert sorted(map(repr, order)) == sorted(map(repr, nodes))
    position = {k: n for n, k in enumerate(order)}
    assert all(position[i] < position[r] for i, r in edges)
