"""The graph description: resolution, garbage collection, edits and diffs.

A :class:`Graph` is an immutable value. It holds the nodes given explicitly
(``provided``) and an optional *factory* that makes a node for any other key.
Resolution starts from the targets (provided nodes with ``target=True``) and
follows inputs: each key is taken from the provided nodes, else from the
factory, until every needed key resolves. The *active* nodes are exactly the
ones some target needs; nothing else runs.

Invariants of every Graph (the ``_active`` and ``_readers`` fields):

* ``_active`` is closed under inputs and every key in it is a target or has at
  least one reader in ``_active``; the inputs form no cycle. Because the graph
  is acyclic, "has a reader" is a reference count that collects garbage
  exactly: a node that loses its last reader and is not a target goes, and its
  inputs are checked in turn.
* ``_readers[k]`` is the non-empty frozenset of active keys whose node reads
  ``k``; keys without readers have no entry.
* ``_cache`` remembers what the factory returned for keys that edits left
  inactive, least recently used first out, at most ``factory_cache`` of them.
  It is shared by every graph derived from this one with the same factory (a
  *lineage*). A generated node that is active needs no cache entry: it is in
  ``_active``, and an edit keeps it (the same object) unless it collects the
  key, which puts the node in the cache before anything could ask for it
  again. So the factory is called again for a key only if it was inactive and
  then forgotten, and memory stays bounded however many keys a lineage ever
  sees. :meth:`Graph.with_factory` starts a new cache.

An edit (:meth:`Graph.add_nodes_from`, :meth:`Graph.remove_nodes_from`,
:meth:`Graph.with_factory`) copies the parent's dicts and replays only what the
changed keys reach, in three passes over a working copy:

1. *Unlink* every changed key that was active: drop its out-edges, remember
   inputs left without readers.
2. *Resolve* the changed keys still needed (targets, or read by someone) and,
   depth first, every input not already active. A key the factory cannot make
   is recorded, not raised: it may turn out to be garbage.
3. *Collect* the keys left without readers, cascading to their inputs.

Then cycles are looked for. Only new edges can close one, so the search runs
from the nodes that gained inputs, within the smaller of their upward and
downward closures. Reference counts cannot collect a cycle, and an edit can
leave one behind as garbage (a node re-resolved while still read, whose
readers then went): a cycle that no target reaches is collected with all that
reads it; one that a target reaches is a :class:`~hotplumb.CycleError`.
Finally an error is raised if a key that failed to resolve is still needed, or
if the result has more than ``max_nodes`` nodes. Then the cache forgets the
keys the new graph holds as generated nodes and, whether the edit succeeded or
not, drops its least recently used entries past ``factory_cache``. The cost of
an edit is ``O(n)`` dict copying plus work proportional to the nodes it adds,
removes or re-resolves and the readers of the keys they touch; the factory is
called only for keys the lineage has not seen or has forgotten.

Every derived graph remembers the keys its edit touched, and the union of
touched keys since each of its last few ancestors. :meth:`Graph.diff` of two
graphs with a common recent ancestor compares only those keys; unrelated
graphs are compared in full. Either way the result is exact.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from hotplumb._errors import (
    CycleError,
    FactoryError,
    GraphTooLargeError,
    HotplumbError,
    InvalidNodeError,
    MissingNodeError,
)
from hotplumb._format import format_key
from hotplumb._keys import check_key
from hotplumb._node import Node, _check_count
from hotplumb._snapshot import graph_snapshot

if TYPE_CHECKING:
    from hotplumb._snapshot import Snapshot

__all__ = ["Changelist", "Factory", "Graph", "ancestry"]

Factory: TypeAlias = Callable[[Hashable], Node | None]
"""Makes the node for a key no provided node covers, or returns ``None``."""

_EMPTY: Final[frozenset[Hashable]] = frozenset()
_NO_NODES: Final[Mapping[Hashable, Node]] = MappingProxyType({})

# Serial numbers identify graphs in lineages without keeping them alive.
_serials = itertools.count(1)

# How many ancestors a graph remembers for diffs; beyond it, diffs compare in full.
_LINEAGE_DEPTH: Final = 8

_FIELDS_BUT_INPUTS: Final = tuple(f.name for f in dataclasses.fields(Node) if f.name != "inputs")


def _same_but_inputs(a: Node, b: Node) -> bool:
    return all(getattr(a, name) == getattr(b, name) for name in _FIELDS_BUT_INPUTS)


@dataclass(frozen=True, slots=True)
class Changelist:
    """The difference between the active nodes of two graphs.

    Every active key of either graph whose node or readers differ is in
    exactly one of the five sets. :meth:`Graph.diff` makes changelists; the
    runtime applies them to running topologies.

    Attributes:
        added: Keys active in the new graph only.
        removed: Keys active in the old graph only.
        replaced: Keys active in both whose nodes differ in something other
            than their inputs (the inputs may differ too).
        rewired: Keys active in both whose nodes differ only in their inputs.
        readers_changed: Keys active in both, with equal nodes, whose readers
            differ.
        nodes: The new node of every added, replaced and rewired key.

    Example:
        >>> old = Graph({"out": Node(inputs=["a"], target=True), "a": Node()})
        >>> change = old.diff(old.add_node("b", Node(inputs=["a"], target=True)))
        >>> sorted(change.added), sorted(change.readers_changed)
        (['b'], ['a'])
    """

    added: frozenset[Hashable] = _EMPTY
    removed: frozenset[Hashable] = _EMPTY
    replaced: frozenset[Hashable] = _EMPTY
    rewired: frozenset[Hashable] = _EMPTY
    readers_changed: frozenset[Hashable] = _EMPTY
    nodes: Mapping[Hashable, Node] = field(default_factory=lambda: _NO_NODES, hash=False)

    def __post_init__(self) -> None:
        sets = (self.added, self.removed, self.replaced, self.rewired, self.readers_changed)
        names = ("added", "removed", "replaced", "rewired", "readers_changed")
        for name, value in zip(names, sets, strict=True):
            if type(value) is not frozenset:
                object.__setattr__(self, name, frozenset(value))
        if type(self.nodes) is not MappingProxyType:
            object.__setattr__(self, "nodes", MappingProxyType(dict(self.nodes)))
        sets = (self.added, self.removed, self.replaced, self.rewired, self.readers_changed)
        if sum(map(len, sets)) != len(frozenset().union(*sets)):
            raise ValueError("a key is in more than one set of a Changelist")
        if self.nodes.keys() != self.added | self.replaced | self.rewired:
            raise ValueError(
                "Changelist.nodes must hold exactly the added, replaced and rewired keys"
            )

    @property
    def changed(self) -> frozenset[Hashable]:
        """The keys whose running version must change: added, removed, replaced, rewired."""
        return self.added | self.removed | self.replaced | self.rewired

    def __bool__(self) -> bool:
        return bool(
            self.added or self.removed or self.replaced or self.rewired or self.readers_changed
        )

    def apply(self, nodes: Mapping[Hashable, Node]) -> dict[Hashable, Node]:
        """Return the active nodes of the new graph, given those of the old one.

        ``old.diff(new).apply(old.nodes) == new.nodes`` for any two graphs.

        Args:
            nodes: The old graph's active nodes.

        Returns:
            A new dict: ``nodes`` without the removed keys, with the new nodes.

        Raises:
            ValueError: ``nodes`` is not what this change was made from: a
                removed, replaced or rewired key is missing, or an added key is
                already there.
        """
        result = dict(nodes)
        for k in self.removed:
            if result.pop(k, None) is None:
                raise ValueError(f"cannot apply Changelist: removed key {format_key(k)} is absent")
        for k in self.added:
            if k in result:
                raise ValueError(f"cannot apply Changelist: added key {format_key(k)} is present")
        for k in self.replaced | self.rewired | self.readers_changed:
            if k not in result:
                raise ValueError(f"cannot apply Changelist: changed key {format_key(k)} is absent")
        result.update(self.nodes)
        return result


class _FactoryCache(OrderedDict[Hashable, object]):
    """A lineage's memory of factory results for inactive keys, least recent first.

    A result is a ``Node``, or ``None`` or whatever else the factory returned
    (remembered as failures). Edits read and write it as an ordered dict and
    call :meth:`trim` when done.
    """

    __slots__ = ("limit",)

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def trim(self) -> None:
        """Forget the least recently used results past ``limit``."""
        excess = len(self) - self.limit
        if excess <= 0:
            return
        if excess > self.limit:  # after a large collection: keep the tail
            kept = list(itertools.islice(self.items(), excess, None))
            self.clear()
            self.update(kept)
        else:
            for _ in range(excess):
                self.popitem(last=False)


@dataclass(slots=True)
class _Failure:
    """A key that did not resolve, and how to say so once its chain is known."""

    error: Callable[[tuple[Hashable, ...]], HotplumbError]
    cause: BaseException | None = None


class _Resolution:
    """One edit's working state; thrown away if the edit raises."""

    __slots__ = (
        "active",
        "base",
        "base_readers",
        "cache",
        "candidates",
        "factory",
        "failed",
        "last",
        "max_nodes",
        "new_edges",
        "parent",
        "provided",
        "resolved",
        "touched",
        "work",
    )

    def __init__(
        self,
        base: dict[Hashable, Node],
        base_readers: dict[Hashable, frozenset[Hashable]],
        provided: dict[Hashable, Node],
        factory: Factory | None,
        cache: _FactoryCache,
        max_nodes: int,
    ) -> None:
        self.base = base
        self.base_readers = base_readers
        self.provided = provided
        self.factory = factory
        self.cache = cache
        self.max_nodes = max_nodes
        self.active = dict(base)
        # Readers sets this edit changed, copied on first change; others are base_readers'.
        self.work: dict[Hashable, set[Hashable]] = {}
        self.touched: set[Hashable] = set()  # keys added to or removed from `active`
        self.candidates: list[Hashable] = []  # keys that may have lost their last reader
        self.failed: dict[Hashable, _Failure] = {}
        self.parent: dict[Hashable, Hashable] = {}  # who first asked for a key, for chains
        self.new_edges: list[Hashable] = []  # resolved keys that read something new
        self.resolved = 0
        self.last: Hashable = None

    def readers_of(self, k: Hashable) -> AbstractSet[Hashable]:
        s = self.work.get(k)
        return s if s is not None else self.base_readers.get(k, _EMPTY)

    def mutable_readers(self, k: Hashable) -> set[Hashable]:
        s = self.work.get(k)
        if s is None:
            s = self.work[k] = set(self.base_readers.get(k, _EMPTY))
        return s

    def is_target(self, k: Hashable) -> bool:
        node = self.provided.get(k)
        return node is not None and node.target

    def needed(self, k: Hashable) -> bool:
        """Whether ``k`` belongs in the graph as things stand: a target, or read."""
        return self.is_target(k) or bool(self.readers_of(k))

    def run(self, changed: Iterable[Hashable]) -> None:
        try:
            self.replay(list(changed))
        finally:
            # Within an edit nothing is forgotten: a node collected and then
            # needed again comes back from the cache as the same object.
            self.cache.trim()

    def replay(self, changed: list[Hashable]) -> None:
        active = self.active
        # A provided node replaced by one with the same inputs reads what the
        # old one read: its inputs are held back from collection until it has
        # been resolved again (if it still is needed), so that replacing a node
        # does not collect and re-resolve everything below it. Nothing else is
        # held: inputs that are no longer read must not make what they read
        # look needed (see below).
        held: dict[Hashable, tuple[Hashable, ...]] = {}
        provided = self.provided
        for k in changed:
            node, new = active.get(k), provided.get(k)
            if node is not None and node.inputs and new is not None and new.inputs == node.inputs:
                held[k] = node.inputs
                self.unlink(k, hold=True)
            else:
                self.unlink(k)
        # Collect first: a node this edit leaves unread must not make its inputs
        # look needed, or the edit would resolve (and count against max_nodes)
        # what the final graph does not have. Anything collected that turns out
        # to be needed is resolved again, from the same provided node or cache.
        self.collect()
        while released := [k for k in held if not self.needed(k)]:
            for k in released:  # its readers went: it is not needed after all
                self.candidates.extend(held.pop(k))
            self.collect()
        self.resolve([k for k in changed if self.needed(k)])
        for inputs in held.values():
            self.candidates.extend(inputs)
        self.collect()
        # Reference counting cannot collect a cycle, and an edit can leave one
        # behind as garbage (nodes re-resolved while still read, whose readers
        # then went). A cycle no target reaches is collected; one it reaches
        # is an error.
        while (cycle := self.find_cycle()) is not None:
            if not self.collect_unreachable(cycle):
                raise CycleError(cycle)
        for k, failure in self.failed.items():
            if self.readers_of(k) or self.is_target(k):
                raise failure.error(self.chain(k)) from failure.cause
        if len(active) > self.max_nodes:
            raise GraphTooLargeError(self.max_nodes, self.chain(self.last))
        cache, provided = self.cache, self.provided
        if cache:
            for k in self.touched:
                if k in active and k not in provided:
                    cache.pop(k, None)  # the new graph holds it

    def resolve(self, roots: list[Hashable]) -> None:
        active, failed, base, parent = self.active, self.failed, self.base, self.parent
        stack = roots[::-1]
        while stack:
            k = stack.pop()
            if k in active or k in failed:
                continue
            if self.resolved >= self.max_nodes:
                # Bounds the work of a runaway factory; see Graph's docstring.
                raise GraphTooLargeError(self.max_nodes, self.chain(k))
            node = self.lookup(k)
            if node is None:
                continue
            self.resolved += 1
            self.last = k
            active[k] = node
            self.touched.add(k)
            inputs = node.inputs
            if inputs:
                old = base.get(k)
                if old is None or (old.inputs != inputs and not set(inputs) <= set(old.inputs)):
                    self.new_edges.append(k)
            for i in reversed(inputs):
                self.mutable_readers(i).add(k)
                if i not in active:
                    parent.setdefault(i, k)
                    stack.append(i)

    def lookup(self, k: Hashable) -> Node | None:
        node = self.provided.get(k)
        if node is not None:
            return node
        factory = self.factory
        if factory is None:
            self.failed[k] = _Failure(functools.partial(MissingNodeError, k))
            return None
        try:
            made = self.cache[k]
            self.cache.move_to_end(k)
        except KeyError:
            try:
                made = factory(k)
            except Exception as exc:
                self.failed[k] = _Failure(functools.partial(FactoryError, k, error=exc), exc)
                return None
            self.cache[k] = made
        if isinstance(made, Node):
            return made
        if made is None:
            self.failed[k] = _Failure(functools.partial(MissingNodeError, k))
        else:
            self.failed[k] = _Failure(lambda chain: InvalidNodeError(k, made, "the factory"))
        return None

    def collect(self) -> None:
        active, stack, cache, provided = self.active, self.candidates, self.cache, self.provided
        while stack:
            k = stack.pop()
            if k not in active or self.readers_of(k) or self.is_target(k):
                continue
            node = active.pop(k)
            self.touched.add(k)
            if k not in provided:
                # Generated (a key whose provided node changed was unlinked,
                # not collected): the factory's result, for this key's next use.
                if k in cache:
                    cache.move_to_end(k)
                cache[k] = node
            for i in node.inputs:
                s = self.mutable_readers(i)
                s.discard(k)
                if not s:
                    stack.append(i)

    def chain(self, k: Hashable) -> tuple[Hashable, ...]:
        """The keys from a target down to ``k``, each reading the next."""
        chain, seen, current = [k], {k}, k
        while not self.is_target(current):
            readers = self.readers_of(current)
            up = self.parent.get(current)
            if up not in readers or up in seen:
                up = next((r for r in readers if r not in seen), None)
            if up is None:
                break
            chain.append(up)
            seen.add(up)
            current = up
        chain.reverse()
        return tuple(chain)

    def find_cycle(self) -> list[Hashable] | None:
        """A cycle through a node with new inputs, in reading order, or None."""
        active = self.active
        starts = [k for k in self.new_edges if k in active]
        if not starts:
            return None
        scope = self.cycle_scope(starts)
        on_path: dict[Hashable, bool] = {}  # True while on the DFS path, False when done
        for start in starts:
            if start in on_path:
                continue
            on_path[start] = True
            path, inputs = [start], [iter(active[start].inputs)]
            while inputs:
                for i in inputs[-1]:
                    if (scope is not None and i not in scope) or i not in active:
                        continue
                    state = on_path.get(i)
                    if state is None:
                        on_path[i] = True
                        path.append(i)
                        inputs.append(iter(active[i].inputs))
                        break
                    if state:
                        return [*path[path.index(i) :], i]
                else:
                    on_path[path.pop()] = False
                    inputs.pop()
        return None

    def collect_unreachable(self, cycle: list[Hashable]) -> bool:
        """Collect ``cycle`` and all that reads it if no target does; say if it did."""
        above, todo = set(cycle), list(cycle)
        while todo:
            k = todo.pop()
            if self.is_target(k):
                return False
            for r in self.readers_of(k):
                if r not in above:
                    above.add(r)
                    todo.append(r)
        for k in above:
            self.unlink(k)
        self.collect()
        return True

    def unlink(self, k: Hashable, *, hold: bool = False) -> None:
        """Take ``k`` out of the active nodes and out of its inputs' readers.

        Inputs left without a reader become candidates for collection, unless
        ``hold`` (the caller makes them candidates later).
        """
        node = self.active.pop(k, None)
        if node is None:
            return
        self.touched.add(k)
        for i in node.inputs:
            s = self.mutable_readers(i)
            s.discard(k)
            if not s and not hold:
                self.candidates.append(i)  # may have lost its last reader

    def cycle_scope(self, starts: list[Hashable]) -> set[Hashable] | None:
        """The keys a cycle through ``starts`` can use, or None for "all"."""
        # A cycle through a start lies in both its upward (readers) and its
        # downward (inputs) closure; grow both in lockstep and keep the first
        # that completes, so the search costs the smaller one.
        if 2 * len(starts) >= len(self.active):
            return None
        up, down = set(starts), set(starts)
        up_todo, down_todo = list(starts), list(starts)
        while up_todo and down_todo:
            for r in self.readers_of(up_todo.pop()):
                if r not in up:
                    up.add(r)
                    up_todo.append(r)
            node = self.active.get(down_todo.pop())
            for i in node.inputs if node is not None else ():
                if i not in down:
                    down.add(i)
                    down_todo.append(i)
        return up if not up_todo else None

    def finish(self) -> tuple[dict[Hashable, frozenset[Hashable]], frozenset[Hashable]]:
        readers = dict(self.base_readers)
        active = self.active
        for k, s in self.work.items():
            if s and k in active:
                readers[k] = frozenset(s)
            else:
                readers.pop(k, None)
        return readers, frozenset(self.touched.union(self.work))


class _EdgeView(AbstractSet[tuple[Hashable, Hashable]]):
    """The ``(input, reader)`` pairs of a graph's active nodes, as a set."""

    __slots__ = ("_active", "_len")

    def __init__(self, active: Mapping[Hashable, Node]) -> None:
        self._active = active
        self._len: int | None = None

    @classmethod
    def _from_iterable(cls, it: Iterable[Any]) -> frozenset[Any]:
        return frozenset(it)

    def __contains__(self, edge: object) -> bool:
        if not isinstance(edge, tuple) or len(edge) != 2:
            return False
        try:
            node = self._active.get(edge[1])
        except TypeError:
            return False
        return node is not None and edge[0] in node.inputs

    def __iter__(self) -> Iterator[tuple[Hashable, Hashable]]:
        for reader, node in self._active.items():
            for i in node.inputs:
                yield (i, reader)

    def __len__(self) -> int:
        if self._len is None:
            self._len = sum(len(node.inputs) for node in self._active.values())
        return self._len

    def __repr__(self) -> str:
        return f"<edges: {len(self)} (input, reader) pairs>"


def _check_nodes(nodes: Mapping[Any, Node], where: str) -> dict[Hashable, Node]:
    if not isinstance(nodes, Mapping):
        raise TypeError(f"{where} takes a mapping of keys to nodes, got {type(nodes).__name__}")
    checked: dict[Hashable, Node] = {}
    for k, node in nodes.items():
        check_key(k)
        if not isinstance(node, Node):
            raise InvalidNodeError(k, node, where)
        checked[k] = node
    return checked


def _check_factory(factory: object) -> None:
    if factory is not None and not callable(factory):
        raise TypeError(f"a graph's factory must be callable or None, got {factory!r}")


def _same_factory(a: Factory | None, b: Factory | None) -> bool:
    return a is b or (a is not None and b is not None and bool(a == b))


class Graph:
    """An immutable topology description: provided nodes, a factory, active nodes.

    The active nodes are the ones resolved from the targets.
    Edits return new graphs; the old one stays valid and unchanged, and shares
    the factory's results with the new one. A graph reached by any sequence of
    edits equals the graph built afresh from the same provided nodes and
    factory.

    An edit keeps every generated node that stays active: the same object, so
    a running topology leaves it alone. The factory's results for keys an edit
    leaves inactive are remembered for the next edit that needs them, up to
    ``factory_cache`` of them, the least recently used forgotten first, so a
    service whose clients keep inventing keys does not grow without bound. The
    memory is shared by the lineage (this graph, the graph it was derived from
    and those derived from it, until :meth:`with_factory`): an older graph's
    edit may ask the factory again for a key that a newer graph's edits made
    forgotten, and gets an equal node if the factory is deterministic.

    Graphs compare equal when their provided nodes, factories (by identity or
    ``==``) and active nodes are equal. They are not hashable: equality looks
    at every node.

    Args:
        nodes: The provided nodes, by key. Those with ``target=True`` are the
            targets; the others are used where something reads them.
        factory: Called with a key nothing provides, returns its node or
            ``None``. It should be deterministic: a lineage of graphs calls it
            once for a key while it remembers the result, and again after it
            forgot it.
        max_nodes: The most active nodes the graph may have. Resolution stops
            with :class:`~hotplumb.GraphTooLargeError` past it; an edit also
            stops when it resolves more than ``max_nodes`` nodes in one go.
        factory_cache: The most factory results the lineage remembers for
            inactive keys; ``0`` remembers none (active generated nodes are
            kept all the same).

    Raises:
        InvalidKeyError: A key is ``None`` or unhashable.
        InvalidNodeError: A value of ``nodes``, or something the factory
            returned, is not a :class:`~hotplumb.Node`.
        MissingNodeError: A needed key is neither provided nor made by the
            factory.
        FactoryError: The factory raised.
        CycleError: The active nodes' inputs form a cycle.
        GraphTooLargeError: More than ``max_nodes`` nodes are needed.
        TypeError: ``factory_cache`` is not an int.
        ValueError: ``factory_cache`` is negative.

    A node the factory makes is never a target, even if it says
    ``target=True``: it is active only while something reads it.

    Example:
        >>> def factory(k):
        ...     return Node(inputs=[k - 1]) if isinstance(k, int) and k > 0 else Node()
        >>> g = Graph({"out": Node(inputs=[3], target=True)}, factory)
        >>> g.topological_order()
        (0, 1, 2, 3, 'out')
        >>> g.is_generated(2), sorted(g.readers_of(3))
        (True, ['out'])
        >>> len(g.remove_node("out"))
        0
    """

    __slots__ = (
        "_active",
        "_cache",
        "_factory",
        "_lineage",
        "_max_nodes",
        "_nodes_view",
        "_order",
        "_provided",
        "_provided_view",
        "_readers",
        "_serial",
        "_sources",
        "_targets",
    )

    _active: dict[Hashable, Node]
    _readers: dict[Hashable, frozenset[Hashable]]
    _provided: dict[Hashable, Node]
    _factory: Factory | None
    _cache: _FactoryCache  # shared by the lineage
    _max_nodes: int
    _serial: int
    # (ancestor serial, keys whose node or readers may differ since), nearest first.
    _lineage: tuple[tuple[int, frozenset[Hashable]], ...]
    _nodes_view: Mapping[Hashable, Node]
    _provided_view: Mapping[Hashable, Node]
    # Computed on first use.
    _order: tuple[Hashable, ...] | None
    _sources: frozenset[Hashable] | None
    _targets: frozenset[Hashable] | None

    def __init__(
        self,
        nodes: Mapping[Any, Node] | None = None,
        factory: Factory | None = None,
        *,
        max_nodes: int = 1_000_000,
        factory_cache: int = 4096,
    ) -> None:
        provided = _check_nodes(nodes if nodes is not None else {}, "Graph")
        _check_factory(factory)
        if isinstance(max_nodes, bool) or not isinstance(max_nodes, int) or max_nodes < 1:
            raise ValueError(f"max_nodes must be a positive int, got {max_nodes!r}")
        cache = _FactoryCache(_check_count("Graph factory_cache", factory_cache, 0))
        resolution = _Resolution({}, {}, provided, factory, cache, max_nodes)
        resolution.run(provided)
        readers, _ = resolution.finish()
        self._init(provided, factory, cache, max_nodes, resolution.active, readers, ())

    def _init(
        self,
        provided: dict[Hashable, Node],
        factory: Factory | None,
        cache: _FactoryCache,
        max_nodes: int,
        active: dict[Hashable, Node],
        readers: dict[Hashable, frozenset[Hashable]],
        lineage: tuple[tuple[int, frozenset[Hashable]], ...],
    ) -> None:
        self._provided = provided
        self._factory = factory
        self._cache = cache
        self._max_nodes = max_nodes
        self._active = active
        self._readers = readers
        self._serial = next(_serials)
        self._lineage = lineage
        self._nodes_view = MappingProxyType(active)
        self._provided_view = MappingProxyType(provided)
        self._order = None
        self._sources = None
        self._targets = None

    def _derive(
        self,
        provided: dict[Hashable, Node],
        changed: Iterable[Hashable],
        factory: Factory | None,
        cache: _FactoryCache,
    ) -> Graph:
        resolution = _Resolution(
            self._active, self._readers, provided, factory, cache, self._max_nodes
        )
        resolution.run(changed)
        readers, touched = resolution.finish()
        # Remember the touched keys since each recent ancestor while that stays
        # well below a full comparison; older ancestors only touched more.
        limit = max(64, len(resolution.active) // 8)
        lineage: list[tuple[int, frozenset[Hashable]]] = []
        if len(touched) <= limit:
            lineage.append((self._serial, touched))
            for serial, since in self._lineage[: _LINEAGE_DEPTH - 1]:
                since = since | touched
                if len(since) > limit:
                    break
                lineage.append((serial, since))
        graph = Graph.__new__(Graph)
        graph._init(
            provided, factory, cache, self._max_nodes, resolution.active, readers, tuple(lineage)
        )
        return graph

    # -- reading -----------------------------------------------------------

    @property
    def provided(self) -> Mapping[Hashable, Node]:
        """The nodes given explicitly, active or not (a read-only view)."""
        return self._provided_view

    @property
    def factory(self) -> Factory | None:
        """The factory that makes nodes for keys nothing provides, if any."""
        return self._factory

    @property
    def max_nodes(self) -> int:
        """The most active nodes this graph (and every graph derived from it) may have."""
        return self._max_nodes

    @property
    def factory_cache(self) -> int:
        """The most factory results for inactive keys this graph's lineage remembers."""
        return self._cache.limit

    @property
    def nodes(self) -> Mapping[Hashable, Node]:
        """The active nodes, provided or generated, by key (a read-only view)."""
        return self._nodes_view

    @property
    def edges(self) -> AbstractSet[tuple[Hashable, Hashable]]:
        """The ``(input, reader)`` pairs between active nodes (a read-only set view)."""
        return _EdgeView(self._active)

    @property
    def targets(self) -> frozenset[Hashable]:
        """The targets: provided nodes with ``target=True``, all of them active."""
        if self._targets is None:
            self._targets = frozenset(k for k, n in self._provided.items() if n.target)
        return self._targets

    @property
    def sources(self) -> frozenset[Hashable]:
        """The active entry points: active nodes without inputs."""
        if self._sources is None:
            self._sources = frozenset(k for k, n in self._active.items() if not n.inputs)
        return self._sources

    def _active_node(self, key: object) -> Node:
        k = check_key(key)
        node = self._active.get(k)
        if node is None:
            raise MissingNodeError(k, (k,), message=f"{format_key(k)} is not an active node")
        return node

    def inputs_of(self, key: Hashable) -> tuple[Hashable, ...]:
        """Return the keys an active node reads, in order.

        Args:
            key: An active key.

        Returns:
            The node's inputs.

        Raises:
            InvalidKeyError: ``key`` cannot be a key.
            MissingNodeError: ``key`` is not active.
        """
        return self._active_node(key).inputs

    def readers_of(self, key: Hashable) -> frozenset[Hashable]:
        """Return the active keys that read an active key.

        Args:
            key: An active key.

        Returns:
            The keys whose nodes list ``key`` among their inputs.

        Raises:
            InvalidKeyError: ``key`` cannot be a key.
            MissingNodeError: ``key`` is not active.
        """
        self._active_node(key)
        return self._readers.get(key, _EMPTY)

    def has_node(self, key: Hashable) -> bool:
        """Return whether ``key`` is active.

        Raises:
            InvalidKeyError: ``key`` is ``None`` or unhashable.
        """
        return check_key(key) in self._active

    def is_generated(self, key: Hashable) -> bool:
        """Return whether ``key`` is active and its node came from the factory.

        Raises:
            InvalidKeyError: ``key`` is ``None`` or unhashable.
        """
        return check_key(key) in self._active and key not in self._provided

    def snapshot(self) -> Snapshot:
        """Return the static view of the active nodes, as rendering reads it.

        Kinds, provided or generated, inputs and readers; no counters (see
        :class:`~hotplumb.Snapshot`).
        """
        return graph_snapshot(self)

    def topological_order(self) -> tuple[Hashable, ...]:
        """Return the active keys, every key after all of its inputs.

        Keys come by depth (the longest path from a source to them), so sources
        come first; keys of equal depth keep the order of :attr:`nodes`.
        """
        if self._order is None:
            active, readers = self._active, self._readers
            # Kahn's algorithm gives some order, in which depths are computed...
            waiting = {k: len(n.inputs) for k, n in active.items() if n.inputs}
            kahn = [k for k, n in active.items() if not n.inputs]
            for k in kahn:  # `kahn` grows while we walk it
                for r in readers.get(k, _EMPTY):
                    waiting[r] -= 1
                    if not waiting[r]:
                        kahn.append(r)
            depth: dict[Hashable, int] = {}
            for k in kahn:
                depth[k] = 1 + max((depth[i] for i in active[k].inputs), default=-1)
            # ... that give an order independent of how sets happen to iterate.
            self._order = tuple(sorted(active, key=depth.__getitem__))
        return self._order

    def __len__(self) -> int:
        return len(self._active)

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._active)

    def __contains__(self, key: object) -> bool:
        return check_key(key) in self._active

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented
        return self is other or (
            _same_factory(self._factory, other._factory)
            and self._provided == other._provided
            and self._active == other._active
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        factory = self._factory
        name = "None" if factory is None else getattr(factory, "__qualname__", repr(factory))
        return (
            f"<Graph: {len(self._active)} active nodes, {len(self.targets)} targets, "
            f"{len(self._provided)} provided, factory={name}>"
        )

    # -- editing -----------------------------------------------------------

    def add_node(self, key: Hashable, node: Node) -> Graph:
        """Return a graph with ``node`` provided for ``key`` (added or replaced).

        Args:
            key: The node's key.
            node: The node.

        Returns:
            The new graph, or this one if ``key`` already has an equal node.

        Raises:
            InvalidKeyError: ``key`` cannot be a key.
            InvalidNodeError: ``node`` is not a Node.
            HotplumbError: Resolution failed, as for :class:`Graph`.
        """
        return self._add(_check_nodes({check_key(key): node}, "add_node"))

    def add_nodes_from(self, nodes: Mapping[Any, Node]) -> Graph:
        """Return a graph with all of ``nodes`` provided (added or replaced).

        Args:
            nodes: Nodes by key.

        Returns:
            The new graph, or this one if nothing changes.

        Raises:
            InvalidKeyError: A key cannot be a key.
            InvalidNodeError: A value is not a Node.
            HotplumbError: Resolution failed, as for :class:`Graph`.
        """
        return self._add(_check_nodes(nodes, "add_nodes_from"))

    def _add(self, nodes: dict[Hashable, Node]) -> Graph:
        old = self._provided
        changed = [k for k, n in nodes.items() if old.get(k) != n]
        if not changed:
            return self
        provided = dict(old)
        provided.update((k, nodes[k]) for k in changed)
        return self._derive(provided, changed, self._factory, self._cache)

    def remove_node(self, key: Hashable) -> Graph:
        """Return a graph without the provided node for ``key``.

        Nodes only it needed are collected. If something else still reads
        ``key``, the factory makes its node instead.

        Args:
            key: A provided key.

        Returns:
            The new graph.

        Raises:
            InvalidKeyError: ``key`` cannot be a key.
            MissingNodeError: ``key`` is not provided.
            HotplumbError: Resolution failed, as for :class:`Graph`.
        """
        return self.remove_nodes_from((key,))

    def remove_nodes_from(self, keys: Iterable[Hashable]) -> Graph:
        """Return a graph without the provided nodes for ``keys``.

        Args:
            keys: Provided keys; repeats are ignored.

        Returns:
            The new graph, or this one if ``keys`` is empty.

        Raises:
            InvalidKeyError: A key cannot be a key.
            MissingNodeError: A key is not provided; nothing is removed.
            HotplumbError: Resolution failed, as for :class:`Graph`.
        """
        removed = list(dict.fromkeys(check_key(k) for k in keys))
        for k in removed:
            if k not in self._provided:
                why = "it is generated" if k in self._active else "nothing provides it"
                raise MissingNodeError(
                    k, (k,), message=f"cannot remove {format_key(k)}: {why}, not a provided node"
                )
        if not removed:
            return self
        provided = dict(self._provided)
        for k in removed:
            del provided[k]
        return self._derive(provided, removed, self._factory, self._cache)

    def with_factory(self, factory: Factory | None) -> Graph:
        """Return a graph with another factory; every generated node is made anew.

        Provided nodes stay. The new graph starts a new lineage cache, of the
        same ``factory_cache`` size, even if ``factory`` is this graph's
        factory, which is also how to let go of the remembered results for
        keys no longer active.

        Args:
            factory: The new factory, or ``None``.

        Returns:
            The new graph.

        Raises:
            TypeError: ``factory`` is not callable.
            HotplumbError: Resolution failed, as for :class:`Graph`.
        """
        _check_factory(factory)
        generated = [k for k in self._active if k not in self._provided]
        return self._derive(self._provided, generated, factory, _FactoryCache(self._cache.limit))

    # -- comparing ---------------------------------------------------------

    def diff(self, new: Graph) -> Changelist:
        """Return what changes from this graph's active nodes to ``new``'s.

        Cheap when one graph was derived from the other, or both from a common
        recent ancestor, by a few edits; a full comparison otherwise.

        Args:
            new: The graph to change to.

        Returns:
            The exact difference; ``old.diff(new).apply(old.nodes) == new.nodes``.
        """
        if not isinstance(new, Graph):
            raise TypeError(f"can only diff a Graph with a Graph, got {type(new).__name__}")
        if new is self:
            return Changelist()
        keys = self._touched_since_common_ancestor(new)
        if keys is None:
            return self._compare(new, self._active.keys() | new._active.keys())
        return self._compare(new, keys)

    def _touched_since_common_ancestor(self, new: Graph) -> frozenset[Hashable] | None:
        mine = {self._serial: _EMPTY, **dict(self._lineage)}
        for serial, since in ((new._serial, _EMPTY), *new._lineage):
            if serial in mine:
                return since | mine[serial]
        return None

    def _compare(self, new: Graph, keys: Iterable[Hashable]) -> Changelist:
        old_active, new_active = self._active, new._active
        old_readers, new_readers = self._readers, new._readers
        added: list[Hashable] = []
        removed: list[Hashable] = []
        replaced: list[Hashable] = []
        rewired: list[Hashable] = []
        readers_changed: list[Hashable] = []
        nodes: dict[Hashable, Node] = {}
        for k in keys:
            a = old_active.get(k)
            b = new_active.get(k)
            if a is None:
                if b is not None:
                    added.append(k)
                    nodes[k] = b
            elif b is None:
                removed.append(k)
            elif a is b or a == b:
                ra, rb = old_readers.get(k, _EMPTY), new_readers.get(k, _EMPTY)
                if ra is not rb and ra != rb:
                    readers_changed.append(k)
            else:
                (rewired if _same_but_inputs(a, b) else replaced).append(k)
                nodes[k] = b
        return Changelist(
            frozenset(added),
            frozenset(removed),
            frozenset(replaced),
            frozenset(rewired),
            frozenset(readers_changed),
            MappingProxyType(nodes),
        )


def ancestry(graph: Graph) -> tuple[int, ...]:
    """The serial numbers of ``graph`` and of the recent ancestors it remembers, nearest first.

    For the runtime, which uses them to tell whether a graph was derived by
    edits from a graph it ran. Only the ancestors within the graph's lineage
    (see :meth:`Graph.diff`) are known.
    """
    return (graph._serial, *(serial for serial, _ in graph._lineage))
