"""Property: a chain of random processing kinds computes what a plain loop computes.

Each stage is drawn from: plain function, ``async def``, generator (zero, one
or two outputs), filter (``SKIP``), and a function that raises on some values.
Whatever the batch sizes and channel capacities, the sink must receive exactly
what running the stages one value at a time gives, in order, and for the entry
point received = delivered + filtered + failed.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import hotplumb as hp

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Hashable, Iterator

Stage = tuple[str, int]  # (kind, parameter)


def reference(stages: list[Stage], value: int) -> tuple[list[int], int, int]:
    """Outputs of ``value`` through the stages, and how many were filtered / failed."""
    values = [value]
    filtered = failed = 0
    for kind, n in stages:
        out: list[int] = []
        for v in values:
            if kind in ("plain", "async"):
                out.append(v * 3 + n)
            elif kind == "filter":
                if v % n:
                    out.append(v)
                else:
                    filtered += 1
            elif kind == "raise":
                if v % n == 0:
                    failed += 1
                else:
                    out.append(v + 1)
            elif kind == "gen":
                produced = [v + i for i in range(v % n)]
                out.extend(produced)
                filtered += not produced
            else:  # "agen"
                out.extend([v, -v])
        values = out
    return values, filtered, failed


def make(kind: str, n: int) -> Callable[..., Any]:
    if kind == "plain":
        return lambda v: v * 3 + n
    if kind == "async":

        async def triple(v: int) -> int:
            await asyncio.sleep(0)
            return v * 3 + n

        return triple
    if kind == "filter":
        return lambda v: v if v % n else hp.SKIP
    if kind == "raise":

        def fragile(v: int) -> int:
            if v % n == 0:
                raise ValueError(v)
            return v + 1

        return fragile
    if kind == "gen":

        def spread(v: int) -> Iterator[int]:
            for i in range(v % n):
                yield v + i

        return spread

    async def both(v: int) -> AsyncIterator[int]:
        yield v
        await asyncio.sleep(0)
        yield -v

    return both


stages_strategy = st.lists(
    st.tuples(
        st.sampled_from(["plain", "async", "filter", "raise", "gen", "agen"]),
        st.integers(2, 4),
    ),
    min_size=1,
    max_size=5,
)


@pytest.mark.slow
@given(
    stages=stages_strategy,
    values=st.lists(st.integers(-50, 50), max_size=40),
    capacity=st.sampled_from([1, 2, 3, 16, 1024]),
    bulk=st.booleans(),
)
def test_a_chain_computes_what_a_loop_computes(
    stages: list[Stage], values: list[int], capacity: int, bulk: bool
) -> None:
    expected: list[int] = []
    filtered = failed = 0
    for v in values:
        out, f, x = reference(stages, v)
        expected.extend(out)
        filtered += f
        failed += x

    async def scenario() -> tuple[list[hp.Datum], dict[Hashable, hp.NodeStatistics], int]:
        received: list[hp.Datum] = []
        nodes: dict[Hashable, hp.Node] = {"in": hp.Node()}
        previous = "in"
        for i, (kind, n) in enumerate(stages):
            nodes[i] = hp.Node(make(kind, n), inputs=[previous])
            previous = i  # type: ignore[assignment]
        nodes["out"] = hp.sink(received.append, inputs=[previous])
        async with hp.run(hp.Graph(nodes), capacity=capacity) as topo:
            if bulk:
                await topo.inject_many("in", values)
            else:
                for v in values:
                    await topo.inject("in", v)
            await asyncio.wait_for(topo.drain(), 10)
            return received, topo.statistics(), topo.errors.total

    received, stats, errors = asyncio.run(scenario())
    assert [d.value for d in received] == expected
    assert all(d.path == ("in", *range(len(stages)), "out") for d in received)
    assert sum(s.filtered for s in stats.values()) == filtered
    assert sum(s.failed for s in stats.values()) == failed == errors
    assert stats["in"].received == len(values)
    assert all(s.in_progress == 0 and s.input_depth == 0 for s in stats.values())
