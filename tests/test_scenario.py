"""The feed-rollup scenario end to end, in fake time: exact summaries, provenance, checks."""

from __future__ import annotations

import dataclasses
import itertools

import hotplumb as hp
from hotplumb.examples.feed_rollup import (
    COUNT,
    COUNT_DISTINCT,
    FEED_RATES,
    Delivery,
    FeedRollup,
    Outcome,
    describe_key,
    feed_events,
    verify,
)
from hotplumb.testing import FakeClock


async def run_scenario(seed: int = 1, duration: float = 6.0) -> Outcome:
    clock = FakeClock()
    return await clock.drive(FeedRollup(seed=seed, duration=duration).run(clock))


def seqs(numbers: list[int]) -> str:
    if not numbers:
        return "-"
    runs = []
    for _, group in itertools.groupby(enumerate(numbers), lambda p: p[1] - p[0]):
        run = [n for _, n in group]
        runs.append(f"#{run[0]}" if len(run) == 1 else f"#{run[0]}-{run[-1]}")
    return ",".join(runs)


def line(datum: hp.Datum) -> str:
    delivery: Delivery = datum.value
    s = delivery.summary
    return (
        f"{describe_key(datum.path[-3])} ({s.start:.2f}, {s.end:.2f}] {s.fold} "
        f"v{delivery.merge_version} n={s.count} d={s.distinct} {seqs([e.seq for e in s.events])}"
        + (" partial" if s.partial else "")
    )


# Seed 1, six seconds: alice and bob join at 0, carol at 1.62, the factory is
# swapped at 3.12 (generation 2) and bob leaves at 4.32.
EXPECTED = {
    "alice": [
        "bar@500ms (0.00, 0.50] count v0 n=3 d=None #1-3",
        "foo@500ms (0.00, 0.50] count v0 n=5 d=None #1-5",
        "bar@500ms (0.50, 1.00] count v0 n=1 d=None #4",
        "foo@500ms (0.50, 1.00] count v0 n=5 d=None #6-10",
        "bar@500ms (1.00, 1.50] count v0 n=2 d=None #5-6",
        "foo@500ms (1.00, 1.50] count v0 n=3 d=None #11-13",
        "bar@500ms (1.50, 2.00] count v0 n=1 d=None #7",
        "foo@500ms (1.50, 2.00] count v0 n=5 d=None #14-18",
        "bar@500ms (2.00, 2.50] count v0 n=0 d=None -",
        "foo@500ms (2.00, 2.50] count v0 n=3 d=None #19-21",
        "bar@500ms (2.50, 3.00] count v0 n=1 d=None #8",
        "foo@500ms (2.50, 3.00] count v0 n=4 d=None #22-25",
        "bar@500ms (3.00, 3.50] count+distinct v2 n=3 d=3 #9-11",
        "foo@500ms (3.00, 3.50] count+distinct v2 n=1 d=1 #26",
        "bar@500ms (3.50, 4.00] count+distinct v2 n=0 d=0 -",
        "foo@500ms (3.50, 4.00] count+distinct v2 n=5 d=3 #27-31",
        "bar@500ms (4.00, 4.50] count+distinct v2 n=0 d=0 -",
        "foo@500ms (4.00, 4.50] count+distinct v2 n=14 d=6 #32-45",
        "bar@500ms (4.50, 5.00] count+distinct v2 n=2 d=2 #12-13",
        "foo@500ms (4.50, 5.00] count+distinct v2 n=4 d=4 #46-49",
        "bar@500ms (5.00, 5.50] count+distinct v2 n=1 d=1 #14",
        "foo@500ms (5.00, 5.50] count+distinct v2 n=2 d=2 #50-51",
        # At the close, each rollup's open window is flushed as a partial summary.
        "bar@500ms (5.50, 6.00] count+distinct v2 n=5 d=3 #15-19 partial",
        "foo@500ms (5.50, 6.00] count+distinct v2 n=4 d=3 #52-55 partial",
    ],
    "bob": [
        "bar@500ms (0.00, 0.50] count v0 n=3 d=None #1-3",
        "baz@500ms (0.00, 0.50] count v0 n=1 d=None #1",
        "bar@500ms (0.50, 1.00] count v0 n=1 d=None #4",
        "baz@500ms (0.50, 1.00] count v0 n=1 d=None #2",
        "bar@500ms (1.00, 1.50] count v0 n=2 d=None #5-6",
        "baz@500ms (1.00, 1.50] count v0 n=1 d=None #3",
        "bar@500ms (1.50, 2.00] count v0 n=1 d=None #7",
        "baz@500ms (1.50, 2.00] count v0 n=2 d=None #4-5",
        "bar@500ms (2.00, 2.50] count v0 n=0 d=None -",
        "baz@500ms (2.00, 2.50] count v0 n=0 d=None -",
        "bar@500ms (2.50, 3.00] count v0 n=1 d=None #8",
        "baz@500ms (2.50, 3.00] count v0 n=0 d=None -",
        "bar@500ms (3.00, 3.50] count+distinct v2 n=3 d=3 #9-11",
        "baz@500ms (3.00, 3.50] count+distinct v2 n=0 d=0 -",
        "bar@500ms (3.50, 4.00] count+distinct v2 n=0 d=0 -",
        "baz@500ms (3.50, 4.00] count+distinct v2 n=2 d=2 #6-7",
    ],
    "carol": [
        "foo@1000ms (1.62, 2.62] count v1 n=9 d=None #14-22",
        "foo@1000ms (2.62, 3.62] count+distinct v2 n=5 d=5 #23-27",
        "foo@1000ms (3.62, 4.62] count+distinct v2 n=19 d=6 #28-46",
        "foo@1000ms (4.62, 5.62] count+distinct v2 n=6 d=5 #47-52",
        "foo@1000ms (5.62, 6.00] count+distinct v2 n=3 d=2 #53-55 partial",
    ],
}


async def test_the_clients_receive_exactly_these_summaries() -> None:
    outcome = await run_scenario()
    assert {name: [line(d) for d in data] for name, data in outcome.received.items()} == EXPECTED
    assert outcome.swap_generation == 2
    assert outcome.totals == outcome.totals.__class__(
        produced=81, ticks=15, delivered=45, filtered=123, failed=0
    )
    verification = verify(outcome, exact_windows=True)
    assert verification.ok, verification.violations
    assert verification.checked == 45


async def test_what_happened_is_told_in_order() -> None:
    outcome = await run_scenario()
    notes = [(round(n.at, 2), n.text) for n in outcome.notes if n.kind.value != "feed"]
    assert notes == [
        (0.0, "alice joined: wants {bar,foo}@500ms"),
        (0.0, "bob joined: wants {bar,baz}@500ms"),
        (
            0.0,
            "running bar@500ms, baz@500ms, client/alice, client/bob, foo@500ms, source/bar, "
            "source/baz, source/foo, timer 500ms, {bar,baz}@500ms, {bar,foo}@500ms",
        ),
        (1.62, "carol joined: wants {foo}@1000ms"),
        (1.62, "generation 1: started client/carol, foo@1000ms, timer 1000ms, {foo}@1000ms"),
        (3.12, "swapped live: rollups now fold count+distinct"),
        (
            3.12,
            "generation 2: replaced bar@500ms, baz@500ms, foo@1000ms, foo@500ms, "
            "{bar,baz}@500ms, {bar,foo}@500ms, {foo}@1000ms",
        ),
        (4.32, "bob left"),
        (
            4.32,
            "generation 3: garbage-collected baz@500ms, client/bob, source/baz, {bar,baz}@500ms",
        ),
    ]
    feeds = [(round(n.at, 2), n.text) for n in outcome.notes if n.kind.value == "feed"]
    assert sorted(feeds) == [
        (0.0, "source/bar started: a client reads it"),
        (0.0, "source/baz started: a client reads it"),
        (0.0, "source/foo started: a client reads it"),
        (4.32, "source/baz stopped: nothing reads it any more"),
    ]
    # The source nobody reads any more stopped: it is not running at the end.
    assert hp.key(subscription="source/baz") not in outcome.final_statistics


async def test_every_window_holds_exactly_the_events_due_in_it() -> None:
    # Recomputed from the feeds' random streams, independently of the runtime.
    outcome = await run_scenario()
    for data in outcome.received.values():
        for datum in data:
            s = datum.value.summary
            stream = feed_events(1, s.subscription, FEED_RATES[s.subscription])
            expected = []
            for event in stream:
                if event.at > s.end:
                    break
                if event.at > s.start:
                    expected.append(event)
            assert s.events == tuple(expected)
            assert [p.path for p in datum.parents] == [
                (hp.key(subscription=s.subscription), datum.path[-3])
            ] * s.count


async def test_other_seeds_and_durations_verify_too() -> None:
    for seed, duration in [(2, 6.0), (3, 2.0), (4, 11.0)]:
        outcome = await run_scenario(seed, duration)
        verification = verify(outcome, exact_windows=True)
        assert verification.ok, (seed, verification.violations)
        folds = {d.value.summary.fold for data in outcome.received.values() for d in data}
        assert folds == {COUNT, COUNT_DISTINCT}


async def test_verify_catches_a_summary_that_crossed_the_change() -> None:
    outcome = await run_scenario(duration=3.0)
    alice = list(outcome.received["alice"])

    def forged(datum: hp.Datum, value: Delivery, parents: tuple[hp.Datum, ...]) -> hp.Datum:
        return hp.Datum(value, datum.origin, datum.route, None, parents)

    first, third = alice[0], alice[2]
    # A pre-change summary that went through a post-change merge node.
    alice[0] = forged(first, dataclasses.replace(first.value, merged_by=COUNT_DISTINCT), ())
    # A post-change summary made by a pre-change merge, before pre-change ones.
    early = dataclasses.replace(third.value.summary, fold=COUNT_DISTINCT, distinct=1)
    alice[2] = forged(
        third, Delivery(early, COUNT_DISTINCT, third.value.merge_version), third.parents
    )
    tampered = dataclasses.replace(
        outcome, received={**outcome.received, "alice": tuple(alice[:-1])}
    )
    problems = verify(tampered).violations
    assert any("mixed versions" in p for p in problems)
    assert any("provenance does not list exactly" in p for p in problems)
    assert any("but the factory swap was generation 2" in p for p in problems)
    assert any("pre-change summary arrived after a post-change one" in p for p in problems)
    assert any(f"received {len(alice) - 1} summaries but" in p for p in problems)
    assert verify(outcome).ok


def test_the_factory_makes_the_nodes_the_design_describes() -> None:
    scenario = FeedRollup()
    factory = scenario.factory(COUNT)
    assert scenario.factory(COUNT) is factory
    wanted = hp.key(subscriptions={"source/foo", "source/bar"}, rollup_window=10_000)
    merge = factory(wanted)
    assert merge is not None
    assert merge.inputs == (
        hp.key(subscription="source/bar", rollup_window=10_000),
        hp.key(subscription="source/foo", rollup_window=10_000),
    )
    rolled = factory(hp.key(subscription="source/foo", rollup_window=10_000))
    assert rolled is not None
    assert rolled.state is not None
    assert rolled.inputs == (hp.key(subscription="source/foo"), hp.key(timeout=10_000))
    ticks = factory(hp.key(timeout=10_000))
    assert ticks == hp.timer(10.0)
    assert ticks.effective_kind is hp.NodeKind.TIMER
    feed = factory(hp.key(subscription="source/foo"))
    assert feed is not None
    assert feed.is_entry
    for nothing in (
        hp.key(subscription="source/nope"),
        hp.key(subscription="source/foo", rollup_window=10, extra=1),
        hp.key(timeout=0),
        "client/alice",
    ):
        assert factory(nothing) is None
    # The swap remakes rollups and merges; feeds and timers are the same nodes.
    other = scenario.factory(COUNT_DISTINCT)
    assert other(hp.key(subscription="source/foo")) is feed
    assert other(hp.key(timeout=10_000)) == ticks
    assert other(wanted) != merge
