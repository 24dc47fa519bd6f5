"""The feed-rollup service: hotplumb's motivating example, with live changes.

A client asks for ``key(subscriptions={"source/foo", "source/bar"},
rollup_window=500)``: summaries of two feeds every 500 ms. Nothing else is
written down; a factory makes every other node from its key alone:

* ``key(subscriptions=S, rollup_window=W)``: merges the rollups of each
  subscription in ``S``, reading ``key(subscription=s, rollup_window=W)``.
* ``key(subscription=s, rollup_window=W)``: a :func:`~hotplumb.rollup` of the
  raw feed ``key(subscription=s)`` on the timer ``key(timeout=W)``.
* ``key(subscription=s)``: the feed itself, a simulated source.
* ``key(timeout=W)``: a :func:`~hotplumb.timer` with a period of ``W`` ms.

Clients that want the same feed and window share its nodes. The script lets
clients join and leave while data flows, and swaps the factory for one whose
rollups also count distinct words. :func:`verify` then checks every summary a
client received against the change: no summary went through a mix of pre- and
post-change nodes, and each one's provenance names exactly the feed events it
summarises.

The scenario is clock-agnostic: feeds and timers run on the topology's clock,
so it runs in real time for ``hotplumb demo`` and in fake time in tests::

    outcome = await FeedRollup(seed=1).run()
    assert verify(outcome).ok
"""

from __future__ import annotations

import enum
import functools
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from hotplumb import (
    Clock,
    Graph,
    Key,
    Node,
    NodeStatistics,
    SystemClock,
    Topology,
    Window,
    format_key,
    key,
    rollup,
    run,
    sink,
    source,
    timer,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Mapping

    from hotplumb import Context, Datum, Factory

__all__ = [
    "ALICE",
    "BOB",
    "CAROL",
    "COUNT",
    "COUNT_DISTINCT",
    "FEED_RATES",
    "SCRIPT",
    "WORDS",
    "Action",
    "Client",
    "Delivery",
    "FeedEvent",
    "FeedRollup",
    "Note",
    "NoteKind",
    "Outcome",
    "Received",
    "Step",
    "Summary",
    "Totals",
    "Verification",
    "describe_key",
    "feed_events",
    "verify",
]

FEED_RATES: Final[Mapping[str, float]] = {
    "source/foo": 8.0,
    "source/bar": 5.0,
    "source/baz": 3.0,
}
"""The simulated feeds and their mean rates, in events per second."""

WORDS: Final = ("amber", "blue", "green", "red", "teal", "violet")
"""What feed events say (so a rollup has something to count distinct)."""

COUNT: Final = "count"
"""The label of the first factory's rollups: they count events."""

COUNT_DISTINCT: Final = "count+distinct"
"""The label of the second factory's rollups: they also count distinct words."""


# -- values travelling through the topology -----------------------------------------


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """One event of a simulated feed.

    Attributes:
        feed: The feed's name, e.g. ``"source/foo"``.
        seq: Its number in the feed, from 1.
        at: When it was due, in seconds since the scenario started.
        word: What it says.
    """

    feed: str
    seq: int
    at: float
    word: str


@dataclass(frozen=True, slots=True)
class Summary:
    """What a rollup emits for one window of one subscription.

    Attributes:
        subscription: The feed summarised.
        window_ms: The window length, in milliseconds.
        start: When the window opened, in seconds since the scenario started.
        end: When it closed.
        count: How many events it holds.
        distinct: How many distinct words (``None`` from ``count`` rollups).
        fold: Which factory's rollup made it: :data:`COUNT` or
            :data:`COUNT_DISTINCT`.
        events: The events summarised, in order.
        partial: Whether the window was closed early: the rollup flushed it
            because the scenario ended or a change removed the rollup.
    """

    subscription: str
    window_ms: int
    start: float
    end: float
    count: int
    distinct: int | None
    fold: str
    events: tuple[FeedEvent, ...]
    partial: bool = False


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a client receives: a summary, stamped by the merge node it went through.

    Attributes:
        summary: The rollup's summary.
        merged_by: The label of the factory that made the merge node.
        merge_version: The merge node's version when it forwarded the summary.
    """

    summary: Summary
    merged_by: str
    merge_version: int


# -- the script -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Client:
    """A client: a target reading one ``subscriptions=...`` key.

    Attributes:
        name: Its name; its node key is ``"client/<name>"``.
        subscriptions: The feeds it wants.
        window_ms: Its rollup window, in milliseconds.
    """

    name: str
    subscriptions: frozenset[str]
    window_ms: int

    @property
    def key(self) -> str:
        """The client's node key."""
        return f"client/{self.name}"

    @property
    def wants(self) -> Key:
        """The key the client reads."""
        return key(subscriptions=self.subscriptions, rollup_window=self.window_ms)


ALICE: Final = Client("alice", frozenset({"source/foo", "source/bar"}), 500)
BOB: Final = Client("bob", frozenset({"source/bar", "source/baz"}), 500)
CAROL: Final = Client("carol", frozenset({"source/foo"}), 1000)


class Action(enum.Enum):
    """What a step of the script does."""

    JOIN = "join"
    LEAVE = "leave"
    SWAP_FACTORY = "swap factory"


@dataclass(frozen=True, slots=True)
class Step:
    """One step of the script.

    Attributes:
        at: When, as a fraction of the scenario's duration (0 is the start).
        action: What happens.
        client: Who joins or leaves (``None`` for a factory swap).
    """

    at: float
    action: Action
    client: Client | None = None


SCRIPT: Final = (
    Step(0.0, Action.JOIN, ALICE),
    Step(0.0, Action.JOIN, BOB),  # shares source/bar and the 500 ms timer with alice
    Step(0.27, Action.JOIN, CAROL),  # a new window: a new timer and rollup on source/foo
    Step(0.52, Action.SWAP_FACTORY),  # rollups now count distinct words too
    Step(0.72, Action.LEAVE, BOB),  # source/baz loses its last reader and stops
)
"""The default script: two clients, a third joins, the factory changes, one leaves."""


# -- what the scenario reports ------------------------------------------------------


class NoteKind(enum.Enum):
    """What a :class:`Note` is about."""

    CLIENT = "client"
    """A client joined or left."""
    FACTORY = "factory"
    """The factory was swapped."""
    CHANGE = "change"
    """What a live change did to the running nodes."""
    FEED = "feed"
    """A feed started or stopped."""


@dataclass(frozen=True, slots=True)
class Note:
    """Something that happened, for people to read.

    Attributes:
        at: Seconds since the scenario started.
        kind: What it is about.
        text: What happened.
    """

    at: float
    kind: NoteKind
    text: str


@dataclass(frozen=True, slots=True)
class Received:
    """A client received a summary.

    Attributes:
        at: Seconds since the scenario started.
        client: The client's name.
        datum: What it received; ``datum.value`` is a :class:`Delivery`.
    """

    at: float
    client: str
    datum: Datum


@dataclass(frozen=True, slots=True)
class Totals:
    """Counters summed over every node that ran (from ``Topology.statistics()``).

    Attributes:
        produced: Events the feeds produced.
        ticks: Ticks the timers produced.
        delivered: Summaries delivered to clients.
        filtered: Items that produced no output (feed events a rollup took
            into its window count here).
        failed: Items whose processing failed.
    """

    produced: int
    ticks: int
    delivered: int
    filtered: int
    failed: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """Everything a run of the scenario produced.

    Attributes:
        clients: Every client that took part, by name.
        received: What each client received, in order.
        notes: What happened, in order.
        swap_generation: The topology generation of the factory swap (node
            versions from it on are post-change), or ``None`` if none ran.
        totals: Counters over every node that ran.
        errors: The topology's dead-letter record.
        final_statistics: Per-node counters of the nodes running at the end.
    """

    clients: Mapping[str, Client]
    received: Mapping[str, tuple[Datum, ...]]
    notes: tuple[Note, ...]
    swap_generation: int | None
    totals: Totals
    errors: tuple[Datum, ...]
    final_statistics: Mapping[Hashable, NodeStatistics] = field(repr=False)


Event = Note | Received


def describe_key(k: Hashable) -> str:
    """Say what a key of this scenario is, briefly.

    Args:
        k: A node key.

    Returns:
        E.g. ``foo@500ms`` for a rollup, ``timer 500ms``, ``{bar,foo}@500ms``
        for a merge; other keys as :func:`~hotplumb.format_key` shows them.
    """
    if not isinstance(k, Key):
        return format_key(k)
    match k:
        case {"subscriptions": frozenset() as subs, "rollup_window": int() as w} if len(k) == 2:
            return "{" + ",".join(sorted(_short(s) for s in subs)) + f"}}@{w}ms"
        case {"subscription": str() as sub, "rollup_window": int() as w} if len(k) == 2:
            return f"{_short(sub)}@{w}ms"
        case {"subscription": str() as sub} if len(k) == 1:
            return sub
        case {"timeout": int() as w} if len(k) == 1:
            return f"timer {w}ms"
    return format_key(k)


def _short(feed: str) -> str:
    return feed.removeprefix("source/")


# -- the nodes --------------------------------------------------------------------


def feed_events(seed: int, feed: str, rate: float, start: float = 0.0) -> Iterable[FeedEvent]:
    """The events a simulated feed produces, forever: what its source yields.

    Each feed has its own random stream, seeded from ``seed`` and its name, so
    the same seed always gives the same events.

    Args:
        seed: The scenario's seed.
        feed: The feed's name.
        rate: Mean events per second.
        start: When the feed started, in scenario seconds.

    Yields:
        The feed's events, in order.
    """
    rng = random.Random(f"{seed}:{feed}")
    at, seq = start, 0
    while True:
        at += rng.expovariate(rate)
        seq += 1
        yield FeedEvent(feed, seq, at, rng.choice(WORDS))


def _fold(label: str, subscription: str, window_ms: int, t0: float, window: Window) -> Summary:
    events: tuple[FeedEvent, ...] = window.values
    distinct = len({e.word for e in events}) if label == COUNT_DISTINCT else None
    return Summary(
        subscription,
        window_ms,
        window.start - t0,
        window.end - t0,
        len(events),
        distinct,
        label,
        events,
        window.partial,
    )


def _merge(label: str, summary: Summary, ctx: Context) -> Delivery:
    return Delivery(summary, label, ctx.version)


class FeedRollup:
    """The scenario: simulated feeds, the factory, clients following a script.

    Args:
        seed: Seeds every feed's random stream.
        duration: Seconds the scenario runs (on the clock it is given).
        script: The steps; :data:`SCRIPT` by default.
        rates: The feeds and their mean rates; :data:`FEED_RATES` by default.
        observe: Called with each :class:`Note` and :class:`Received` as it
            happens.
    """

    def __init__(
        self,
        *,
        seed: int = 1,
        duration: float = 6.0,
        script: Iterable[Step] = SCRIPT,
        rates: Mapping[str, float] = FEED_RATES,
        observe: Callable[[Event], None] | None = None,
    ) -> None:
        if duration <= 0:
            raise ValueError(f"duration must be positive, got {duration!r}")
        self.seed = seed
        self.duration = duration
        self.script = tuple(sorted(script, key=lambda s: s.at))
        self.rates = dict(rates)
        self._observe = observe
        self._clock: Clock = SystemClock()
        self._t0 = 0.0
        self._closing = False
        self._notes: list[Note] = []
        self._received: dict[str, list[Datum]] = {}
        # One node per feed for the whole run, so both factories return the very
        # same node and a factory swap leaves the feeds running.
        self._feeds: dict[str, Node] = {}
        self._factories: dict[str, Factory] = {}

    # -- observation -------------------------------------------------------------

    def _elapsed(self) -> float:
        return self._clock.now() - self._t0

    def _note(self, kind: NoteKind, text: str) -> None:
        note = Note(self._elapsed(), kind, text)
        self._notes.append(note)
        if self._observe is not None:
            self._observe(note)

    def _deliver(self, name: str, datum: Datum) -> None:
        self._received[name].append(datum)
        if self._observe is not None:
            self._observe(Received(self._elapsed(), name, datum))

    # -- the factory -------------------------------------------------------------

    def factory(self, label: str) -> Factory:
        """The factory whose rollups fold with ``label`` (:data:`COUNT` or :data:`COUNT_DISTINCT`).

        Args:
            label: The fold.

        Returns:
            A factory (the same one for the same label).
        """
        made = self._factories.get(label)
        if made is None:
            made = self._factories[label] = functools.partial(self._make, label)
        return made

    def _make(self, label: str, k: Hashable) -> Node | None:
        if not isinstance(k, Key):
            return None
        match k:
            case {"subscriptions": frozenset() as subs, "rollup_window": int() as w} if (
                len(k) == 2 and subs
            ):
                parts = [key(subscription=s, rollup_window=w) for s in sorted(subs)]
                return Node(functools.partial(_merge, label), inputs=parts)
            case {"subscription": str() as sub, "rollup_window": int() as w} if len(k) == 2:
                fold = functools.partial(_fold, label, sub, w, self._t0)
                return rollup([key(subscription=sub)], key(timeout=w), fold)
            case {"subscription": str() as sub} if len(k) == 1 and sub in self.rates:
                return self._feed(sub)
            case {"timeout": int() as w} if len(k) == 1 and w > 0:
                return timer(w / 1000)
        return None

    def _feed(self, name: str) -> Node:
        node = self._feeds.get(name)
        if node is None:
            node = self._feeds[name] = source(functools.partial(self._produce, name))
        return node

    async def _produce(self, name: str, ctx: Context) -> AsyncIterator[FeedEvent]:
        clock = ctx.clock
        self._note(NoteKind.FEED, f"{name} started: a client reads it")
        try:
            for event in feed_events(self.seed, name, self.rates[name], self._elapsed()):
                await clock.sleep_until(self._t0 + event.at)
                yield event
        finally:
            if not self._closing:
                self._note(NoteKind.FEED, f"{name} stopped: nothing reads it any more")

    def _client(self, client: Client) -> Node:
        self._received.setdefault(client.name, [])
        return sink(functools.partial(self._deliver, client.name), inputs=[client.wants])

    # -- running -------------------------------------------------------------------

    async def run(
        self,
        clock: Clock | None = None,
        *,
        checkpoint: Callable[[str, Topology], None] | None = None,
        run_options: Mapping[str, Any] | None = None,
        started: Callable[[Topology], None] | None = None,
    ) -> Outcome:
        """Run the script once, on ``clock`` (the system clock by default).

        Args:
            clock: The clock for feeds, timers and the script.
            checkpoint: Called with ``("before", topology)`` just before the
                first live change and ``("after", topology)`` after the last.
            run_options: Further keywords for :func:`hotplumb.run` (say,
                ``tracer_provider``).
            started: Called with the topology as soon as it runs, before the
                script's first step (``hotplumb demo --web`` serves it from there).

        Returns:
            What happened.
        """
        self._clock = clock = clock if clock is not None else SystemClock()
        self._t0 = clock.now()
        self._closing = False
        self._notes.clear()
        self._received.clear()
        self._feeds.clear()
        self._factories.clear()
        clients: dict[str, Client] = {}
        first = [s for s in self.script if s.at <= 0 and s.action is Action.JOIN]
        later = [s for s in self.script if s not in first]
        provided: dict[Hashable, Node] = {}
        for step in first:
            assert step.client is not None
            clients[step.client.name] = step.client
            provided[step.client.key] = self._client(step.client)
        graph = Graph(provided, self.factory(COUNT))
        tally = _Tally()
        swap_generation: int | None = None
        async with run(graph, clock=clock, **(run_options or {})) as topo:
            if started is not None:
                started(topo)
            for step in first:
                assert step.client is not None
                self._note(NoteKind.CLIENT, _joined(step.client))
            self._note(NoteKind.CHANGE, f"running {_keys(topo.running_keys())}")
            if checkpoint is not None and later:
                checkpoint("before", topo)
            for step in later:
                await clock.sleep_until(self._t0 + step.at * self.duration)
                if step.action is Action.SWAP_FACTORY:
                    new = topo.graph.with_factory(self.factory(COUNT_DISTINCT))
                    text = f"swapped live: rollups now fold {COUNT_DISTINCT}"
                else:
                    client = step.client
                    assert client is not None
                    if step.action is Action.JOIN:
                        clients[client.name] = client
                        new = topo.graph.add_node(client.key, self._client(client))
                        text = _joined(client)
                    else:
                        new = topo.graph.remove_node(client.key)
                        text = f"{client.name} left"
                tally.sample(topo)
                kind = NoteKind.FACTORY if step.action is Action.SWAP_FACTORY else NoteKind.CLIENT
                self._note(kind, text)
                report = await topo.apply(new)
                tally.sample(topo)
                if step.action is Action.SWAP_FACTORY:
                    swap_generation = report.generation
                change = report.changelist
                parts = [
                    f"{label} {_keys(keys)}"
                    for label, keys in (
                        ("started", change.added),
                        ("replaced", change.replaced | change.rewired),
                        ("garbage-collected", change.removed),
                    )
                    if keys
                ]
                self._note(
                    NoteKind.CHANGE,
                    f"generation {report.generation}: " + "; ".join(parts)
                    if parts
                    else "nothing to change",
                )
            if checkpoint is not None and later:
                checkpoint("after", topo)
            await clock.sleep_until(self._t0 + self.duration)
            self._closing = True
            await topo.close()
            tally.sample(topo)
            final = topo.statistics()
            errors = tuple(topo.errors)
        return Outcome(
            clients=clients,
            received={name: tuple(data) for name, data in self._received.items()},
            notes=tuple(self._notes),
            swap_generation=swap_generation,
            totals=tally.totals(),
            errors=errors,
            final_statistics=final,
        )


def _joined(client: Client) -> str:
    return f"{client.name} joined: wants {describe_key(client.wants)}"


def _keys(keys: Iterable[Hashable]) -> str:
    return ", ".join(sorted(describe_key(k) for k in keys))


class _Tally:
    """Counters of every node that ran, including nodes since removed."""

    def __init__(self) -> None:
        self.last: dict[Hashable, NodeStatistics] = {}
        self.retired: list[NodeStatistics] = []

    def sample(self, topo: Topology) -> None:
        now = topo.statistics()
        self.retired.extend(s for k, s in self.last.items() if k not in now)
        self.last = now

    def totals(self) -> Totals:
        every = [*self.retired, *self.last.values()]
        return Totals(
            produced=sum(s.emitted for s in every if _is_feed(s.key)),
            ticks=sum(s.emitted for s in every if _is_timer(s.key)),
            delivered=sum(s.emitted for s in every if _is_client(s.key)),
            filtered=sum(s.filtered for s in every),
            failed=sum(s.failed for s in every),
        )


def _is_feed(k: Hashable) -> bool:
    return isinstance(k, Key) and set(k) == {"subscription"}


def _is_timer(k: Hashable) -> bool:
    return isinstance(k, Key) and set(k) == {"timeout"}


def _is_client(k: Hashable) -> bool:
    return isinstance(k, str) and k.startswith("client/")


# -- verification -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verification:
    """The result of :func:`verify`.

    Attributes:
        checked: How many delivered summaries were checked.
        violations: What was wrong, one line each.
    """

    checked: int
    violations: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Whether nothing was wrong."""
        return not self.violations


def verify(outcome: Outcome, *, exact_windows: bool = False) -> Verification:
    """Check every summary a client received against the script and the change.

    For each delivered summary: it went through rollup and merge nodes of the
    same factory, and the merge node's version is on the same side of the
    swap as that factory (pre-change versions with :data:`COUNT`, post-change
    with :data:`COUNT_DISTINCT`); each client got every pre-change summary
    before any post-change one; its path is timer, rollup, merge, client; its
    parents are exactly the events it summarises, each with the path feed,
    rollup; no event reached a client twice; the counts agree with the events.
    The run had no failures, and the clients still running were delivered
    what their statistics say.

    Args:
        outcome: What a run produced.
        exact_windows: Also check that every event is due inside its window
            (holds on a fake clock; real-time scheduling may shift an event
            into the next window).

    Returns:
        The verification.
    """
    problems: list[str] = []
    swap = outcome.swap_generation
    checked = 0
    for name, data in outcome.received.items():
        client = outcome.clients[name]
        seen: set[tuple[str, int]] = set()
        post_change = False
        for datum in data:
            checked += 1
            where = f"{name} #{checked}"
            problems.extend(_check_delivery(where, client, datum, swap))
            delivery: Delivery = datum.value
            summary = delivery.summary
            if summary.fold == COUNT_DISTINCT:
                post_change = True
            elif post_change:
                problems.append(f"{where}: a pre-change summary arrived after a post-change one")
            for event in summary.events:
                if (event.feed, event.seq) in seen:
                    problems.append(f"{where}: {event.feed} event {event.seq} delivered twice")
                seen.add((event.feed, event.seq))
                if exact_windows and not summary.start < event.at <= summary.end:
                    problems.append(
                        f"{where}: event at {event.at:.3f}s outside the window "
                        f"({summary.start:.3f}, {summary.end:.3f}]"
                    )
        stats = outcome.final_statistics.get(client.key)
        if stats is not None and stats.emitted != len(data):
            problems.append(
                f"{name}: received {len(data)} summaries but its node delivered {stats.emitted}"
            )
    if outcome.errors:
        problems.append(f"{len(outcome.errors)} items failed: {outcome.errors[0]!r}")
    return Verification(checked, tuple(problems))


def _check_delivery(where: str, client: Client, datum: Datum, swap: int | None) -> list[str]:
    problems: list[str] = []
    delivery = datum.value
    if not isinstance(delivery, Delivery):
        return [f"{where}: received {delivery!r}, not a Delivery"]
    summary = delivery.summary
    if summary.fold != delivery.merged_by:
        problems.append(
            f"{where}: mixed versions: a {summary.fold} rollup's summary went through "
            f"a {delivery.merged_by} merge"
        )
    after_swap = swap is not None and delivery.merge_version >= swap
    if after_swap != (delivery.merged_by == COUNT_DISTINCT):
        problems.append(
            f"{where}: the {delivery.merged_by} merge ran as version {delivery.merge_version}, "
            f"but the factory swap was generation {swap}"
        )
    if summary.subscription not in client.subscriptions or summary.window_ms != client.window_ms:
        problems.append(f"{where}: {summary.subscription} was not subscribed to")
    rolled = key(subscription=summary.subscription, rollup_window=summary.window_ms)
    # A flushed (partial) window starts its own route at the rollup: no tick closed it.
    start = () if summary.partial else (key(timeout=summary.window_ms),)
    path = (*start, rolled, client.wants, client.key)
    if datum.path != path:
        problems.append(f"{where}: path {datum.path} is not {path}")
    feed = key(subscription=summary.subscription)
    for parent in datum.parents:
        if parent.path != (feed, rolled) or parent.value.feed != summary.subscription:
            problems.append(f"{where}: parent {parent!r} did not come from {feed!r}")
    if tuple(p.value for p in datum.parents) != summary.events:
        problems.append(f"{where}: its provenance does not list exactly the events it summarises")
    if summary.count != len(summary.events):
        problems.append(f"{where}: count {summary.count} != {len(summary.events)} events")
    if summary.fold == COUNT_DISTINCT and summary.distinct != len({e.word for e in summary.events}):
        problems.append(f"{where}: wrong distinct count")
    return problems
