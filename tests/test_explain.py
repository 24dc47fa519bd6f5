"""Readable provenance: ``Datum.explain()``, ``str()`` of failures and of dead letters."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import hotplumb as hp
from hotplumb._explain import explain, explain_dead_letters, format_error
from hotplumb.testing import FakeClock

if TYPE_CHECKING:
    from collections.abc import Hashable


def fragile(x: int) -> int:
    if x % 3 == 0:
        raise ValueError(f"bad {x}")
    return x


def linear(*stages: Any) -> tuple[hp.Graph, list[hp.Datum]]:
    received: list[hp.Datum] = []
    nodes: dict[Hashable, hp.Node] = {"numbers": hp.Node()}
    previous = "numbers"
    for i, fn in enumerate(stages):
        nodes[f"s{i}"] = hp.Node(fn, inputs=[previous])
        previous = f"s{i}"
    nodes["out"] = hp.sink(received.append, inputs=[previous])
    return hp.Graph(nodes), received


async def failures_of(graph: hp.Graph, values: list[Any], **options: Any) -> hp.DeadLetters:
    async with hp.run(graph, **options) as topo:
        await topo.inject_many("numbers", values)
        await asyncio.wait_for(topo.drain(), 5)
    return topo.errors


async def test_an_errored_datum_reads_like_a_traceback() -> None:
    graph, _ = linear(lambda x: x + 1, fragile)
    errors = await failures_of(graph, [2])
    (failed,) = errors
    text = failed.explain()
    lines = text.splitlines()
    assert lines[:6] == [
        "Datum provenance (entry point first, most recent hop last):",
        "  from       numbers",
        "  through    s0",
        "  failed at  s1  (version 0)",
        "origin: 2",
        "value:  3",
    ]
    assert lines[6] == "Traceback (most recent call last):"
    assert "in fragile" in text
    assert 'raise ValueError(f"bad {x}")' in text
    assert lines[-1] == "ValueError: bad 3"
    # The user's frames only: hotplumb's own are left out.
    assert "_kernel.py" not in text
    assert "_kernel.py" in failed.error.traceback  # type: ignore[union-attr]
    assert str(failed) == text


def test_a_datum_without_error_prints_as_its_repr() -> None:
    datum = hp.Datum(1, 1, hp.Route("numbers"))
    assert str(datum) == repr(datum)
    assert datum.explain().splitlines() == [
        "Datum provenance (entry point first, most recent hop last):",
        "  from       numbers",
        "origin: 1",
        "value:  1",
    ]


def test_keys_are_readable_and_long_values_are_cut() -> None:
    route = hp.Route(hp.key(subscription="source/foo")).child(
        hp.key(subscription="source/foo", rollup_window=10_000)
    )
    datum = hp.Datum("x" * 500, {"a": list(range(100))}, route)
    lines = datum.explain().splitlines()
    assert lines[1] == "  from       subscription=source/foo"
    assert lines[2] == "  at         subscription=source/foo, rollup_window=10000"
    assert len(lines[3]) < 120
    assert len(lines[4]) < 120
    assert "..." in lines[4]


async def test_a_handler_that_raises_shows_both_exceptions() -> None:
    def bad_handler(d: hp.Datum) -> Any:
        raise RuntimeError("handler broke")

    received: list[hp.Datum] = []
    graph = hp.Graph(
        {
            "numbers": hp.Node(),
            "f": hp.Node(fragile, inputs=["numbers"], on_error=bad_handler),
            "out": hp.sink(received.append, inputs=["f"]),
        }
    )
    errors = await failures_of(graph, [3])
    text = str(errors[0])
    assert "ValueError: bad 3" in text
    assert "During handling of the above exception, another exception occurred:" in text
    assert text.endswith("RuntimeError: handler broke")
    assert "in bad_handler" in text


def test_an_error_raised_inside_hotplumb_keeps_its_message() -> None:
    error = hp.NodeError("s0", 2, TimeoutError("node 's0' took longer than 1s"))
    assert format_error(error) == "TimeoutError: node 's0' took longer than 1s"


def rollup(value: Any, ctx: hp.Context) -> Any:
    """Emit the sum of every 3 values, derived from the 3 data."""
    ctx.state.append(ctx.datum)
    if len(ctx.state) < 3:
        return hp.SKIP
    parents = tuple(ctx.state)
    ctx.state.clear()
    return hp.emit(sum(p.value for p in parents), parents=parents)


async def test_a_rollup_lists_the_data_it_was_derived_from() -> None:
    received: list[hp.Datum] = []
    graph = hp.Graph(
        {
            "numbers": hp.Node(),
            "window": hp.Node(rollup, inputs=["numbers"], state=list),
            "out": hp.sink(received.append, inputs=["window"]),
        }
    )
    async with hp.run(graph) as topo:
        await topo.inject_many("numbers", [1, 2, 4])
        await asyncio.wait_for(topo.drain(), 5)
    (total,) = received
    assert total.value == 7
    assert total.explain().splitlines() == [
        "Datum provenance (entry point first, most recent hop last):",
        "  from       numbers",
        "  through    window",
        "  at         out",
        "origin: 4",
        "value:  7",
        "derived from 3 datum(s) via numbers -> window:",
        "  - 1 (origin 1)",
        "  - 2 (origin 2)",
        "  - 4 (origin 4)",
    ]


def test_many_parents_are_summarised() -> None:
    route = hp.Route("numbers")
    parents = tuple(hp.Datum(i, i, route) for i in range(8))
    nested = hp.Datum(99, 0, route.child("window"), parents=parents)
    datum = hp.Datum(100, 0, route.child("window").child("total"), parents=(nested, *parents))
    lines = datum.explain().splitlines()
    assert "derived from 9 datum(s):" in lines
    assert "  - 99 (origin 0, derived from 8) via numbers -> window" in lines
    assert "  - 0 (origin 0) via numbers" in lines
    assert lines[-1] == "  ... and 4 more"


async def test_tracing_adds_time_per_hop() -> None:
    clock = FakeClock()

    def plus1(x: int) -> int:
        clock.jump(0.25)  # the call "takes" this long
        return x + 1

    graph, received = linear(plus1)
    async with hp.run(graph, trace=True, clock=clock) as topo:
        await topo.inject("numbers", 1)
        await asyncio.wait_for(topo.drain(), 5)
    lines = received[0].explain().splitlines()
    assert lines[1:4] == [
        "  from       numbers  0us",
        "  through    s0  250000us",
        "  at         out",
    ]


async def test_dead_letters_print_counts_then_the_latest_in_full() -> None:
    graph, _ = linear(fragile)
    errors = await failures_of(graph, list(range(10)))
    text = str(errors)
    assert text == errors.explain()
    lines = text.splitlines()
    assert lines[0] == "4 failure(s) recorded, 4 kept:"
    assert lines[1] == "  4 x ValueError at s0"
    assert "failure 4 of 4 kept:" in lines
    assert "failure 1 of 4 kept:" in lines  # the last 5 by default: all 4 here
    assert text.count("Traceback (most recent call last):") == 4
    assert "  ValueError: bad 9" in lines
    short = errors.explain(limit=1)
    assert short.count("Traceback") == 1
    assert short.endswith("(3 earlier failure(s) not shown in full)")
    assert repr(errors) == "DeadLetters(4 kept, 4 in all)"


async def test_dead_letters_beyond_what_is_kept() -> None:
    graph, _ = linear(fragile)
    errors = await failures_of(graph, list(range(10)), max_errors=2)
    assert errors.explain(limit=0).splitlines() == [
        "4 failure(s) recorded, the last 2 kept:",
        "  2 x ValueError at s0",
        "",
        "(2 earlier failure(s) not shown in full)",
    ]


def test_no_dead_letters() -> None:
    assert str(hp.DeadLetters()) == "no failures kept (0 recorded in all)"
    assert explain_dead_letters([]) == "no failures kept (0 recorded in all)"


def test_nested_explanations_indent_every_line() -> None:
    datum = hp.Datum(1, 1, hp.Route("a"), hp.NodeError("a", 0, ValueError("x")))
    assert all(line.startswith("    ") for line in explain(datum, indent="    ").splitlines())


def test_explain_shows_values_that_cannot_be_printed() -> None:
    class Unprintable:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    route = hp.Route("in").child("out")
    huge = 10**5000  # more digits than Python 3.11 will print
    text = hp.Datum(huge, Unprintable(), route).explain()
    # Up to 3.13 reprlib raises on such an int and hotplumb names its size; from 3.14
    # reprlib says it itself (python/cpython#135487).
    assert "<int of" in text or "<int instance with roughly 5001 digits" in text
    assert "Unprintable instance" in text  # reprlib names what it cannot print
