"""The graph description: resolution, errors, edits, garbage collection, diffs."""

from __future__ import annotations

import doctest
import runpy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

import hotplumb._graph
from hotplumb import (
    Changelist,
    CycleError,
    FactoryError,
    Graph,
    GraphTooLargeError,
    HotplumbError,
    InvalidKeyError,
    InvalidNodeError,
    MissingNodeError,
    Node,
    key,
    sink,
)
from tests.strategies import (
    TOTAL_FACTORIES,
    AddNode,
    DagFactory,
    Edit,
    GraphSpec,
    RemoveNode,
    SwapFactory,
    client,
    edits,
    graph_specs,
    graphs,
    reference_diff,
    reference_nodes,
    seed_factory,
    try_build,
)
from tests.strategies import assert_consistent as check

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable
    from collections.abc import Set as AbstractSet

    from hotplumb._graph import Factory

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
WINDOW = 10_000
FOO = key(subscription="source/foo", rollup_window=WINDOW)
BAR = key(subscription="source/bar", rollup_window=WINDOW)
BOTH = key(subscriptions={"source/foo", "source/bar"}, rollup_window=WINDOW)
JUST_FOO = key(subscriptions={"source/foo"}, rollup_window=WINDOW)
TIMEOUT = key(timeout=WINDOW)
RAW_FOO = key(subscription="source/foo")
RAW_BAR = key(subscription="source/bar")


def seed() -> Graph:
    return Graph(
        {"client/a": client("source/foo", "source/bar"), "client/b": client("source/foo")},
        seed_factory,
    )


def chain_factory(k: Hashable) -> Node | None:
    """Key ``k`` reads ``k + 1`` up to 100,000, which is an entry point."""
    if isinstance(k, int) and 0 <= k < 100_000:
        return Node(inputs=(k + 1,))
    return Node() if k == 100_000 or isinstance(k, str) else None


def step_up_to(limit: int) -> Factory:
    """Key ``k`` reads ``k + 1`` while ``k <= limit``; nothing above."""

    def factory(k: Hashable) -> Node | None:
        assert isinstance(k, int)
        return Node(inputs=[k + 1]) if k <= limit else None

    return factory


def step_modulo(modulo: int) -> Factory:
    """Key ``k`` reads ``(k + 1) % modulo``: a cycle."""

    def factory(k: Hashable) -> Node | None:
        assert isinstance(k, int)
        return Node(inputs=[(k + 1) % modulo])

    return factory


class CountingFactory:
    def __init__(self, factory: Any) -> None:
        self.factory = factory
        self.calls: list[Hashable] = []

    def __call__(self, k: Hashable) -> Node | None:
        self.calls.append(k)
        result: Node | None = self.factory(k)
        return result


def test_docstring_examples() -> None:
    assert doctest.testmod(hotplumb._graph).failed == 0


# -- the seed scenario -----------------------------------------------------------


def test_seed_resolution() -> None:
    graph = seed()
    check(graph)
    expected: set[Hashable] = {
        "client/a",
        "client/b",
        BOTH,
        JUST_FOO,
        FOO,
        BAR,
        RAW_FOO,
        RAW_BAR,
        TIMEOUT,
    }
    assert set(graph.nodes) == expected
    assert graph.targets == {"client/a", "client/b"}
    assert graph.sources == {RAW_FOO, RAW_BAR, TIMEOUT}
    assert graph.inputs_of(BOTH) == (BAR, FOO)
    assert graph.inputs_of(FOO) == (RAW_FOO, TIMEOUT)
    assert graph.readers_of(FOO) == {BOTH, JUST_FOO}
    assert graph.readers_of(TIMEOUT) == {FOO, BAR}
    assert graph.is_generated(FOO)
    assert not graph.is_generated("client/a")
    assert not graph.is_generated("client/zzz")
    order = graph.topological_order()
    assert set(order[:3]) == graph.sources
    assert set(order[-2:]) == graph.targets


def test_removing_a_client_removes_exactly_what_only_it_needed() -> None:
    graph = seed()
    smaller = graph.remove_node("client/a")
    check(smaller)
    gone: set[Hashable] = {"client/a", BOTH, BAR, RAW_BAR}
    kept: set[Hashable] = {"client/b", JUST_FOO, FOO, RAW_FOO, TIMEOUT}
    assert set(graph.nodes) - set(smaller.nodes) == gone
    assert set(smaller.nodes) == kept
    change = graph.diff(smaller)
    assert change == Changelist(
        removed=frozenset({"client/a", BOTH, BAR, RAW_BAR}),
        readers_changed=frozenset({FOO, TIMEOUT}),
    )
    assert change.changed == change.removed
    assert smaller == Graph({"client/b": client("source/foo")}, seed_factory)
    # The old graph is unchanged.
    assert len(graph) == 9
    check(graph)


def test_example_script_matches_the_tests(capsys: pytest.CaptureFixture[str]) -> None:
    namespace = runpy.run_path(str(ROOT / "examples" / "seed_graph.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "seed topology: 9 active nodes" in out
    assert "after removing client/a: 5 active nodes" in out
    example = Graph(
        {"client/a": namespace["client"]("source/foo", "source/bar")}, namespace["seed_factory"]
    )
    ours = Graph({"client/a": client("source/foo", "source/bar")}, seed_factory)
    assert {k: n.inputs for k, n in example.nodes.items()} == {
        k: n.inputs for k, n in ours.nodes.items()
    }


# -- construction and reading ------------------------------------------------------


def test_empty_graph() -> None:
    graph = Graph()
    assert len(graph) == 0
    assert graph.nodes == {}
    assert graph.targets == frozenset()
    assert graph.topological_order() == ()
    assert graph.diff(Graph()) == Changelist()
    assert not Changelist()
    assert repr(graph) == "<Graph: 0 active nodes, 0 targets, 0 provided, factory=None>"


def test_unneeded_provided_nodes_are_not_active() -> None:
    graph = Graph({"out": Node(inputs=["a"], target=True), "a": Node(), "b": Node()})
    assert set(graph.nodes) == {"out", "a"}
    assert set(graph.provided) == {"out", "a", "b"}
    assert "b" not in graph
    assert not graph.has_node("b")
    with pytest.raises(MissingNodeError, match=r"^b is not an active node$"):
        graph.readers_of("b")
    with pytest.raises(MissingNodeError, match=r"^b is not an active node$"):
        graph.inputs_of("b")


def test_views_are_read_only() -> None:
    graph = seed()
    with pytest.raises(TypeError):
        graph.nodes["x"] = Node()  # type: ignore[index]
    with pytest.raises(TypeError):
        graph.provided["x"] = Node()  # type: ignore[index]
    with pytest.raises(AttributeError):
        graph.factory = None  # type: ignore[misc]
    assert (RAW_FOO, FOO) in graph.edges
    assert (FOO, RAW_FOO) not in graph.edges
    edges: AbstractSet[object] = graph.edges
    assert "nonsense" not in edges
    assert ([1], 2) not in edges
    assert len(graph.edges & {(RAW_FOO, FOO)}) == 1


def test_graphs_are_unhashable_and_compare_by_value() -> None:
    with pytest.raises(TypeError, match="unhashable"):
        hash(seed())
    assert seed() == seed()
    assert seed() != Graph({"client/b": client("source/foo")}, seed_factory)
    assert seed() != seed().with_factory(lambda k: seed_factory(k))
    assert Graph({"a": Node()}) != Graph({"b": Node()})
    assert seed().__eq__(3) is NotImplemented
    assert Graph(factory=DagFactory(1)) == Graph(factory=DagFactory(1))


def test_repr_and_iteration() -> None:
    graph = seed()
    assert repr(graph) == "<Graph: 9 active nodes, 2 targets, 2 provided, factory=seed_factory>"
    assert list(graph) == list(graph.nodes)
    assert graph.max_nodes == 1_000_000
    assert graph.factory is seed_factory


def test_factory_node_marked_target_is_not_a_target() -> None:
    graph = Graph({"out": Node(inputs=["a"], target=True)}, lambda k: Node(target=True))
    assert graph.targets == {"out"}
    assert "a" in graph
    assert len(graph.remove_node("out")) == 0


# -- errors ------------------------------------------------------------------------


def test_invalid_keys_are_rejected() -> None:
    with pytest.raises(InvalidKeyError, match="None cannot be a node key"):
        Graph({None: Node()})
    with pytest.raises(InvalidKeyError, match=r"invalid node key \['a'\]: unhashable"):
        seed().add_node(["a"], Node())  # type: ignore[arg-type]
    with pytest.raises(InvalidKeyError, match="None cannot be a node key"):
        seed().remove_node(None)
    with pytest.raises(InvalidKeyError, match="None cannot be a node key"):
        seed().has_node(None)
    with pytest.raises(InvalidKeyError, match="unhashable"):
        [1] in seed()  # noqa: B015


def test_invalid_nodes_are_rejected() -> None:
    message = r"^Graph gave str 'x' for key a, expected a hotplumb.Node"
    with pytest.raises(InvalidNodeError, match=message):
        Graph({"a": "x"})  # type: ignore[dict-item]
    with pytest.raises(InvalidNodeError, match=r"^add_node gave int 3 for key a"):
        seed().add_node("a", 3)  # type: ignore[arg-type]
    with pytest.raises(InvalidNodeError, match=r"^add_nodes_from gave NoneType None for key a"):
        seed().add_nodes_from({"a": None})  # type: ignore[dict-item]
    with pytest.raises(
        TypeError, match="add_nodes_from takes a mapping of keys to nodes, got list"
    ):
        seed().add_nodes_from([("a", Node())])  # type: ignore[arg-type]


def test_factory_returning_a_non_node() -> None:
    message = r"^the factory gave str 'oops' for key a, expected a hotplumb.Node \(or None"
    with pytest.raises(InvalidNodeError, match=message) as e:
        Graph({"out": Node(inputs=["a"], target=True)}, lambda k: "oops")  # type: ignore[arg-type,return-value]
    assert e.value.key == "a"


def test_other_arguments_are_checked() -> None:
    with pytest.raises(TypeError, match="a graph's factory must be callable or None, got 3"):
        Graph(factory=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="a graph's factory must be callable or None, got 3"):
        Graph().with_factory(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_nodes must be a positive int, got 0"):
        Graph(max_nodes=0)
    with pytest.raises(TypeError, match="can only diff a Graph with a Graph, got dict"):
        Graph().diff({})  # type: ignore[arg-type]


def test_missing_node_names_the_chain() -> None:
    nodes = {"client/a": client("source/nope", rollup_window=5)}
    missing = key(subscription="source/nope", rollup_window=5)

    def factory(k: Hashable) -> Node | None:
        return None if k == missing else seed_factory(k)

    message = (
        r"^no node for key subscription=source/nope, rollup_window=5 \(needed by client/a -> "
        r"subscriptions=\{source/nope\}, rollup_window=5 -> "
        r"subscription=source/nope, rollup_window=5\)$"
    )
    with pytest.raises(MissingNodeError, match=message) as e:
        Graph(nodes, factory)
    assert e.value.key == missing
    assert e.value.chain == (
        "client/a",
        key(subscriptions={"source/nope"}, rollup_window=5),
        missing,
    )


def test_missing_node_without_factory() -> None:
    with pytest.raises(MissingNodeError, match=r"^no node for key a \(needed by out -> a\)$"):
        Graph({"out": Node(inputs=["a"], target=True)})


def test_factory_error_is_chained() -> None:
    def factory(k: Hashable) -> Node | None:
        raise ZeroDivisionError("boom")

    message = r"^factory raised ZeroDivisionError: boom for key a \(needed by out -> a\)$"
    with pytest.raises(FactoryError, match=message) as e:
        Graph({"out": Node(inputs=["a"], target=True)}, factory)
    assert isinstance(e.value.__cause__, ZeroDivisionError)
    assert e.value.chain == ("out", "a")


def test_cycle_is_named() -> None:
    nodes = {
        "out": Node(inputs=["a"], target=True),
        "a": Node(inputs=["b"]),
        "b": Node(inputs=["c"]),
        "c": Node(inputs=["a"]),
    }
    with pytest.raises(CycleError, match=r"^cycle in graph: a -> b -> c -> a$") as e:
        Graph(nodes)
    assert e.value.cycle == ("a", "b", "c", "a")
    with pytest.raises(CycleError, match=r"^cycle in graph: out -> out$"):
        Graph({"out": Node(inputs=["out"], target=True)})


def test_cycle_made_by_an_edit() -> None:
    graph = Graph({"out": Node(inputs=["a"], target=True), "a": Node(inputs=["b"]), "b": Node()})
    with pytest.raises(CycleError, match=r"^cycle in graph: (b -> a -> b|a -> b -> a)$"):
        graph.add_node("b", Node(inputs=["a"]))
    check(graph)  # unchanged


def test_cycle_through_the_factory() -> None:
    with pytest.raises(CycleError, match=r"cycle in graph: 0 -> 1 -> 2 -> 0"):
        Graph({"out": Node(inputs=[0], target=True)}, step_modulo(3))


def test_runaway_factory_hits_max_nodes() -> None:
    message = (
        r"^graph resolution exceeded max_nodes=100 \(a runaway factory\?\) "
        r"while resolving \.\.\. -> 97 -> 98 -> 99 -> 100$"
    )
    with pytest.raises(GraphTooLargeError, match=message) as e:
        Graph({"out": Node(inputs=[1], target=True)}, step_up_to(10**9), max_nodes=100)
    assert e.value.max_nodes == 100
    assert e.value.chain[0] == "out"
    assert len(e.value.chain) == 101


def test_max_nodes_applies_to_edits() -> None:
    graph = Graph({"out": Node(inputs=["a"], target=True), "a": Node()}, max_nodes=3)
    bigger = graph.add_node("x", Node(target=True))
    assert bigger.max_nodes == 3
    message = r"^graph resolution exceeded max_nodes=3 \(a runaway factory\?\) while resolving y$"
    with pytest.raises(GraphTooLargeError, match=message):
        bigger.add_node("y", Node(target=True))
    # Replacing within the limit is fine, even if old and new nodes together exceed it.
    swapped = bigger.add_nodes_from({"out": Node(inputs=["b"], target=True), "b": Node()})
    assert set(swapped.nodes) == {"out", "b", "x"}


def test_removing_what_is_not_provided() -> None:
    graph = seed()
    with pytest.raises(
        MissingNodeError,
        match=r"^cannot remove client/z: nothing provides it, not a provided node$",
    ):
        graph.remove_node("client/z")
    with pytest.raises(
        KeyError,
        match=(
            r"cannot remove subscription=source/foo, rollup_window=10000: "
            r"it is generated, not a provided node"
        ),
    ):
        graph.remove_nodes_from(["client/a", FOO])
    assert graph == seed()
    assert graph.remove_nodes_from([]) is graph


# -- scale ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_chain_100_000_deep_resolves_and_collects() -> None:
    factory = CountingFactory(chain_factory)
    graph = Graph({"out": Node(inputs=[0], target=True)}, factory)
    assert len(graph) == 100_002
    assert len(factory.calls) == 100_001
    order = graph.topological_order()
    assert order[0] == 100_000
    assert order[-1] == "out"
    assert len(graph.remove_node("out")) == 0
    with pytest.raises(
        MissingNodeError,
        match=(
            r"\(needed by out -> 0 -> 1 -> \.\.\. \(99997 more\) "
            r"-> 99999 -> 100000 -> 100001 -> 100002\)$"
        ),
    ):
        Graph({"out": Node(inputs=[0], target=True)}, step_up_to(100_001))
    with pytest.raises(
        CycleError,
        match=(
            r"^cycle in graph: 0 -> 1 -> 2 -> \.\.\. \(99994 more\) "
            r"-> 99997 -> 99998 -> 99999 -> 0$"
        ),
    ):
        Graph({"out": Node(inputs=[0], target=True)}, step_modulo(100_000))


class Hashed(int):
    """An int key that counts every hash of it, that is every dict or set operation on it.

    Copying a dict or a set reuses the stored hashes, so the count measures the
    work an edit does key by key, whatever the machine's load; the O(n) copying
    an edit is allowed does not show in it.
    """

    __slots__ = ()
    count: ClassVar[int] = 0

    def __hash__(self) -> int:
        Hashed.count += 1
        return int.__hash__(self)


@dataclass(frozen=True)
class HashedChain:
    """Key ``k`` reads ``k + 1`` up to ``length``, an entry point; all keys are Hashed."""

    length: int

    def __call__(self, k: Hashable) -> Node | None:
        if isinstance(k, int) and 0 <= k < self.length:
            return Node(inputs=(Hashed(k + 1),))
        return Node() if k == self.length or isinstance(k, str) else None


def hashes(edit: Callable[[], T]) -> tuple[T, int]:
    """``edit()``'s result and how many times it hashed a Hashed key."""
    Hashed.count = 0
    result = edit()
    return result, Hashed.count


def test_edits_are_incremental() -> None:
    factory = CountingFactory(HashedChain(10_000))
    graph, full = hashes(lambda: Graph({"out": Node(inputs=[Hashed(0)], target=True)}, factory))
    per_key = full / len(graph)
    assert per_key >= 1  # every key is hashed when the graph is built: the count sees the work
    factory.calls.clear()
    # A new target reading deep into the chain: no factory calls, a few keys touched.
    more, work = hashes(lambda: graph.add_node("more", Node(inputs=[Hashed(5_000)], target=True)))
    assert work < 100
    assert factory.calls == []
    change, work = hashes(lambda: graph.diff(more))
    assert work < 100
    assert change == Changelist(
        added=frozenset({"more"}),
        readers_changed=frozenset({5_000}),
        nodes={"more": more.nodes["more"]},
    )
    assert len(more._lineage[0][1]) <= 2
    # Replace a node in the middle: its old input chain stays (another target needs it).
    # (How much work this does: see the test after this one.)
    replaced = more.add_node(Hashed(7_000), Node(negate_, inputs=[Hashed(7_001)]))
    assert factory.calls == []
    change = more.diff(replaced)
    assert change.replaced == {7_000}
    assert not change.added
    assert not change.removed
    # Removing the first target collects the top of the chain: work in proportion to it.
    less, work = hashes(lambda: replaced.remove_node("out"))
    assert factory.calls == []
    change, diff_work = hashes(lambda: replaced.diff(less))
    assert change.removed == {"out", *range(5_000)}
    assert work + diff_work <= 2 * per_key * len(change.removed)
    # A node below the new target gets a new input: only the new key is made.
    rewired, work = hashes(lambda: less.add_node(Hashed(9_999), Node(inputs=[10_000, "extra"])))
    assert work < 100
    assert factory.calls == ["extra"]
    change, work = hashes(lambda: less.diff(rewired))
    assert work < 100
    assert change == Changelist(
        added=frozenset({"extra"}),
        rewired=frozenset({9_999}),
        nodes={9_999: rewired.nodes[9_999], "extra": rewired.nodes["extra"]},
    )


def test_replacing_a_node_with_the_same_inputs_does_not_walk_what_it_reads() -> None:
    graph = Graph({"out": Node(inputs=[Hashed(0)], target=True)}, HashedChain(1_000))
    replaced, work = hashes(lambda: graph.add_node(Hashed(10), Node(negate_, inputs=[Hashed(11)])))
    change, diff_work = hashes(lambda: graph.diff(replaced))
    assert change == Changelist(replaced=frozenset({10}), nodes={10: replaced.nodes[10]})
    assert work < 100
    assert diff_work < 100


def test_a_kept_input_does_not_make_what_it_reads_look_needed() -> None:
    # One edit: T stops reading X; X is replaced by a node with the same
    # inputs (so its input P is held while X may be resolved again); Y, below
    # P, now reads a long chain. X turns out unneeded, so P and Y are garbage:
    # the edit must not resolve Y's chain (and hit max_nodes) on the way.
    def chain(k: Hashable) -> Node | None:
        if isinstance(k, int):
            return Node(inputs=[k + 1]) if k < 50 else Node()
        return None

    provided = {
        "T": Node(inputs=["X"], target=True),
        "X": Node(inputs=["P"]),
        "P": Node(inputs=["Y"]),
        "Y": Node(),
    }
    graph = Graph(provided, chain, max_nodes=10)
    edited = graph.add_nodes_from(
        {"T": Node(target=True), "X": Node(negate_, inputs=["P"]), "Y": Node(inputs=[0])}
    )
    assert set(edited.nodes) == {"T"}


def negate_(value: Any) -> Any:
    return -value


def test_factory_is_called_once_per_key_per_lineage() -> None:
    factory = CountingFactory(seed_factory)
    graph = Graph({"client/a": client("source/foo")}, factory)
    first = len(factory.calls)
    g2 = graph.remove_node("client/a").add_node("client/a", client("source/foo"))
    g3 = g2.add_node("client/b", client("source/foo"))
    assert len(factory.calls) == first
    assert g3.nodes[FOO] is graph.nodes[FOO]  # generated nodes are reused
    g4 = g3.with_factory(factory)
    assert len(factory.calls) == 2 * first  # a new lineage cache
    assert g4 == g3


def test_removed_provided_node_is_regenerated() -> None:
    graph = seed().add_node(FOO, Node(negate_, inputs=[RAW_FOO]))
    assert graph.inputs_of(FOO) == (RAW_FOO,)
    assert not graph.is_generated(FOO)
    back = graph.remove_node(FOO)
    assert back.is_generated(FOO)
    assert back == seed()
    change = graph.diff(back)
    assert change.replaced == {FOO}
    assert change.readers_changed == {TIMEOUT}


def test_edit_that_changes_nothing_returns_the_same_graph() -> None:
    graph = seed()
    assert graph.add_node("client/a", client("source/foo", "source/bar")) is graph
    assert graph.add_nodes_from({}) is graph


def test_rewired_versus_replaced() -> None:
    graph = Graph({"out": Node(inputs=["a"], target=True), "a": Node(), "b": Node()})
    rewired = graph.add_node("out", Node(inputs=["b"], target=True))
    change = graph.diff(rewired)
    assert change.rewired == {"out"}
    assert change.added == {"b"}
    assert change.removed == {"a"}
    assert change.nodes == {"out": rewired.nodes["out"], "b": rewired.nodes["b"]}
    replaced = graph.add_node("out", Node(negate_, inputs=["a"], target=True))
    assert graph.diff(replaced).replaced == {"out"}


def test_changelist_validation_and_apply_errors() -> None:
    with pytest.raises(ValueError, match="a key is in more than one set of a Changelist"):
        Changelist(added=frozenset({"a"}), removed=frozenset({"a"}), nodes={"a": Node()})
    with pytest.raises(ValueError, match=r"Changelist\.nodes must hold exactly"):
        Changelist(added=frozenset({"a"}))
    with pytest.raises(ValueError, match="cannot apply Changelist: removed key a is absent"):
        Changelist(removed=frozenset({"a"})).apply({})
    with pytest.raises(ValueError, match="cannot apply Changelist: added key a is present"):
        Changelist(added=frozenset({"a"}), nodes={"a": Node()}).apply({"a": Node()})
    with pytest.raises(ValueError, match="cannot apply Changelist: changed key a is absent"):
        Changelist(rewired=frozenset({"a"}), nodes={"a": Node()}).apply({})
    loose = Changelist(added={"a"}, nodes={"a": Node()})  # type: ignore[arg-type]
    assert hash(loose) == hash(Changelist(added=frozenset({"a"}), nodes={"a": Node()}))
    assert loose.added == frozenset({"a"})


# -- properties ----------------------------------------------------------------------


@pytest.mark.slow
@given(graph_specs(partial=True, acyclic=False))
def test_fresh_resolution_matches_the_reference(spec: GraphSpec) -> None:
    expected = reference_nodes(spec)
    graph = try_build(spec)
    if expected is None:
        assert graph is None
    else:
        assert graph is not None
        check(graph)


@pytest.mark.slow
@given(
    graph_specs(partial=True, acyclic=False),
    st.lists(edits(partial=True, acyclic=False), max_size=12),
)
def test_edited_equals_fresh(spec: GraphSpec, steps: list[Edit]) -> None:
    graph = try_build(spec)
    if graph is None:
        return
    history = [graph]
    for step in steps:
        if isinstance(step, RemoveNode) and step.key not in spec.provided:
            with pytest.raises(MissingNodeError, match="cannot remove"):
                step.apply(graph)
            continue
        new_spec = step.apply_spec(spec)
        fresh = try_build(new_spec)
        try:
            edited = step.apply(graph)
        except HotplumbError:
            assert fresh is None
            continue
        assert fresh is not None
        assert edited == fresh
        check(edited)
        assert graph.diff(edited) == reference_diff(graph, edited)
        graph, spec = edited, new_spec
        history.append(graph)
    # Diffs across the lineage, both ways, are exact too.
    for old in history[::3]:
        assert old.diff(graph) == reference_diff(old, graph)
        assert graph.diff(old) == reference_diff(graph, old)


@pytest.mark.slow
@given(
    graphs(), st.lists(edits(), min_size=1, max_size=8), st.lists(edits(), min_size=1, max_size=8)
)
def test_diff_between_siblings_is_exact(graph: Graph, left: list[Edit], right: list[Edit]) -> None:
    def run(steps: list[Edit]) -> Graph:
        g = graph
        for step in steps:
            if (
                isinstance(step, AddNode)
                or not isinstance(step, RemoveNode)
                or step.key in g.provided
            ):
                g = step.apply(g)
        return g

    a, b = run(left), run(right)
    assert a.diff(b) == reference_diff(a, b)
    assert a.diff(b) == a._compare(b, a.nodes.keys() | b.nodes.keys())


@pytest.mark.slow
@given(graphs(), graphs())
def test_diff_applied_yields_the_second_graph(a: Graph, b: Graph) -> None:
    change = a.diff(b)
    assert change == reference_diff(a, b)
    assert change.apply(a.nodes) == b.nodes
    assert bool(change) == (
        a.nodes != b.nodes
        or any(a.readers_of(k) != b.readers_of(k) for k in a.nodes if k in b.nodes)
    )
    assert change.nodes.keys() == change.added | change.replaced | change.rewired


@pytest.mark.slow
@given(graphs())
def test_diff_with_itself_is_empty(graph: Graph) -> None:
    assert not graph.diff(graph)
    assert graph.diff(graph) == Changelist()
    twin = Graph(graph.provided, graph.factory)
    assert twin == graph
    assert not graph.diff(twin)
    assert not graph.with_factory(graph.factory).diff(graph)


@pytest.mark.slow
@given(graphs(), st.sampled_from(TOTAL_FACTORIES))
def test_with_factory_equals_fresh(graph: Graph, factory: Any) -> None:
    swapped = graph.with_factory(factory)
    assert swapped == Graph(graph.provided, factory)
    assert graph.diff(swapped) == reference_diff(graph, swapped)


def test_sink_targets_share_nodes() -> None:
    received: list[Any] = []
    graph = Graph(
        {"x": sink(received.append, [FOO]), "y": sink(received.append, [FOO])}, seed_factory
    )
    assert graph.readers_of(FOO) == {"x", "y"}
    assert len(graph) == 5


def test_an_edit_collects_a_cycle_no_target_reaches() -> None:
    # y is still read (by w) when the edit re-resolves it into a cycle with z;
    # then w goes, and the cycle is garbage: fresh resolution never sees it.
    graph = Graph(
        {
            "t": Node(inputs=["x"], target=True),
            "x": Node(inputs=["w"]),
            "w": Node(inputs=["y"]),
            "y": Node(),
            "z": Node(inputs=["y"]),
        }
    )
    change = {"x": Node(), "y": Node(inputs=["z", "missing"])}
    edited = graph.add_nodes_from(change)
    assert set(edited.nodes) == {"t", "x"}
    assert edited == Graph({**graph.provided, **change})
    check(edited)
    # The same cycle, still read by a target, is an error.
    with pytest.raises(CycleError, match=r"^cycle in graph: (y -> z -> y|z -> y -> z)$"):
        graph.add_nodes_from({"y": Node(inputs=["z"])})


def test_an_edit_does_not_count_what_it_makes_garbage_against_max_nodes() -> None:
    def f1(k: Hashable) -> Node | None:
        if k == "X":
            return Node(inputs=["P"])
        return Node() if k == "Y" else None

    def f2(k: Hashable) -> Node | None:
        if k == "X":
            return Node()  # X no longer reads P: P and Y become garbage
        if k == "Y":
            return Node(inputs=[0])  # ... while Y would now need a long chain
        if isinstance(k, int):
            return Node(inputs=[k + 1]) if k < 50 else Node()
        return None

    provided = {"T": Node(inputs=["X"], target=True), "P": Node(inputs=["Y"])}
    edited = Graph(provided, f1, max_nodes=10).with_factory(f2)
    assert edited == Graph(provided, f2, max_nodes=10)
    assert set(edited.nodes) == {"T", "X"}


# -- the factory cache ---------------------------------------------------------------


def _window(i: int) -> Hashable:
    return ("window", i)


def _client(i: int) -> Node:
    return Node(inputs=[_window(i)], target=True)


def window_factory(k: Hashable) -> Node | None:
    if isinstance(k, tuple) and k[0] == "window":
        return Node(negate_, inputs=["feed"])
    return None


def test_factory_cache_is_checked_and_kept_by_the_lineage() -> None:
    with pytest.raises(ValueError, match=r"^Graph factory_cache must be an int >= 0, got -1$"):
        Graph(factory_cache=-1)
    with pytest.raises(TypeError, match=r"^Graph factory_cache must be an int >= 0, got True$"):
        Graph(factory_cache=True)
    with pytest.raises(TypeError, match=r"^Graph factory_cache must be an int >= 0, got 2.5$"):
        Graph(factory_cache=2.5)  # type: ignore[arg-type]
    assert Graph().factory_cache == 4096
    graph = Graph({"feed": Node()}, window_factory, factory_cache=3)
    assert graph.add_node(0, _client(0)).factory_cache == 3
    assert graph.with_factory(seed_factory).factory_cache == 3


def test_factory_cache_remembers_the_most_recent_inactive_keys() -> None:
    factory = CountingFactory(window_factory)
    graph = Graph({"feed": Node()}, factory, factory_cache=2)
    for i in range(4):
        graph = graph.add_node(i, _client(i)).remove_node(i)
    assert factory.calls == [_window(i) for i in range(4)]
    assert len(graph._cache) == 2  # windows 2 and 3; 0 and 1 are forgotten
    factory.calls.clear()
    graph = graph.add_node(3, _client(3)).add_node(0, _client(0))
    assert factory.calls == [_window(0)]
    # Active results are the graph's own, not the cache's: 3 and 0 left it.
    assert len(graph._cache) == 1
    # A failed result is remembered like any other.
    factory.calls.clear()
    for _ in range(2):
        with pytest.raises(MissingNodeError):
            graph.add_node("bad", Node(inputs=["nothing"], target=True))
    assert factory.calls == ["nothing"]


def test_active_generated_nodes_stay_the_same_objects_with_no_cache() -> None:
    factory = CountingFactory(seed_factory)
    graph = Graph({"client/a": client("source/foo")}, factory, factory_cache=0)
    kept = dict(graph.nodes)
    first = len(factory.calls)
    # Other clients come and go, over the same keys and new ones.
    for i in range(20):
        graph = graph.add_node(f"client/{i}", client("source/foo", "source/bar"))
        graph = graph.remove_node(f"client/{i}")
    assert len(graph._cache) == 0
    for k, node in kept.items():
        assert graph.nodes[k] is node
    # Replacing the only reader collects its inputs and resolves them again in
    # one edit: they come back as the same objects, cache or no cache.
    calls = len(factory.calls)
    replaced = graph.add_node("client/a", Node(inputs=graph.inputs_of("client/a"), target=True))
    assert len(factory.calls) == calls
    assert graph.diff(replaced).changed == {"client/a"}
    for k, node in kept.items():
        if k != "client/a":
            assert replaced.nodes[k] is node
    # What left is forgotten: the factory is asked again when it comes back.
    assert len(factory.calls) > first
    assert graph.remove_node("client/a").add_node("client/a", client("source/foo")) == graph


def test_an_older_graph_may_ask_the_factory_again_for_a_forgotten_key() -> None:
    factory = CountingFactory(window_factory)
    start = Graph({"feed": Node()}, factory, factory_cache=0)
    joined = start.add_node(0, _client(0))
    joined.remove_node(0)  # window 0 leaves; a cache of 0 forgets it at once
    assert len(factory.calls) == 1
    # The graph where it is active still holds it, and keeps it.
    again = joined.add_node(1, Node(inputs=[_window(0)], target=True))
    assert again.nodes[_window(0)] is joined.nodes[_window(0)]
    assert len(factory.calls) == 1
    # The graph where it never was active makes it anew: equal, not identical.
    other = start.add_node(0, _client(0))
    assert factory.calls == [_window(0), _window(0)]
    assert other == joined
    assert other.nodes[_window(0)] is not joined.nodes[_window(0)]


@given(
    graph_specs(partial=True, acyclic=False),
    st.lists(st.tuples(st.integers(0, 11), edits(partial=True, acyclic=False)), max_size=12),
    st.integers(0, 2),
)
def test_a_small_factory_cache_changes_no_graph(
    spec: GraphSpec, steps: list[tuple[int, Edit]], size: int
) -> None:
    # Edits of graphs anywhere in the lineage, with a cache too small to
    # remember much, give the graphs a fresh build gives, and keep every
    # generated node that stays active.
    try:
        graph = Graph(spec.provided, spec.factory, factory_cache=size)
    except HotplumbError:
        return
    history = [(graph, spec)]
    for which, step in steps:
        graph, spec = history[which % len(history)]
        if isinstance(step, RemoveNode) and step.key not in spec.provided:
            continue
        new_spec = step.apply_spec(spec)
        fresh = try_build(new_spec)
        try:
            edited = step.apply(graph)
        except HotplumbError:
            assert fresh is None
            continue
        assert edited == fresh
        check(edited)
        assert len(edited._cache) <= size
        if not isinstance(step, SwapFactory):
            for k, node in edited.nodes.items():
                if graph.is_generated(k) and edited.is_generated(k):
                    assert node is graph.nodes[k]
        history.append((edited, new_spec))
