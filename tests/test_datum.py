"""Data and provenance across a process boundary: what pickles, and what it means there.

A route travels as its path, never its cached hash (string hashes differ
between processes); a datum equals its copy; a failure keeps its traceback
text; an exception that will not travel is replaced by a stand-in, not a
message that cannot be read. The last tests unpickle in real child processes
started with other ``PYTHONHASHSEED`` values.
"""

from __future__ import annotations

import copy
import inspect
import os
import pickle
import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest

import hotplumb as hp
from hotplumb._datum import Batch, Datum, NodeError, Route, Trace


def roundtrip(value: Any) -> Any:
    return pickle.loads(pickle.dumps(value))


def route_of(*path: Any) -> Route:
    route = Route(path[0])
    for key in path[1:]:
        route = route.child(key)
    return route


def failure(exc: BaseException, key: str = "node") -> NodeError:
    try:
        raise exc
    except BaseException as raised:
        return NodeError(key, 3, raised)


class NeedsTwo(Exception):
    """An exception whose ``__init__`` does not take its ``args``: it pickles, but will not load."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a} and {b}")


class HoldsALock(Exception):
    """An exception that will not pickle at all."""

    def __init__(self) -> None:
        super().__init__("locked")
        self.lock = threading.Lock()


# routes ------------------------------------------------------------------------------------


def test_a_route_pickles_as_its_path_and_equals_its_copy() -> None:
    route = route_of("in", ("tuple", 1), hp.key(subscription="a/b"), 7)
    copy = roundtrip(route)
    assert copy == route
    assert copy.path == route.path
    assert hash(copy) == hash(route)
    assert copy.parent == route.parent
    assert copy.root == "in"
    assert {route: "here"}[copy] == "here"


def test_a_route_of_ten_thousand_keys_pickles_without_recursion() -> None:
    route = route_of(*range(10_000))
    copy = roundtrip(route)
    assert copy.path == tuple(range(10_000))
    assert copy == route


def test_a_route_pickles_nothing_but_its_path() -> None:
    # The hash is left out: the pickle of a route is that of a call with its path.
    route = route_of("a", "b")
    route_hash = hash(route)
    assert str(route_hash).encode() not in pickle.dumps(route, protocol=0)
    assert route.__reduce__()[1] == (("a", "b"),)


# traces, errors, data, batches --------------------------------------------------------------


def test_a_trace_of_many_hops_pickles_and_equals_its_copy() -> None:
    trace = None
    for hop in range(5_000):
        trace = Trace(hop, float(hop), hop + 0.5, trace, trace_id=9, span_id=hop + 1)
    assert trace is not None
    copy = roundtrip(trace)

    def hops(t: Trace) -> list[tuple[Any, ...]]:
        # Field by field: a dataclass's == recurses through `previous` too.
        return [(h.key, h.start, h.end, h.trace_id, h.span_id) for h in t.hops()]

    assert hops(copy) == hops(trace)
    assert len(copy.hops()) == 5_000
    assert copy.traceparent == trace.traceparent
    short = Trace("b", 1.0, 2.0, Trace("a", 0.0, 1.0))
    assert roundtrip(short) == short


def test_a_node_error_keeps_its_exception_and_its_traceback_text() -> None:
    error = failure(ValueError("boom"))
    copy = roundtrip(error)
    assert copy.key == "node"
    assert copy.version == 3
    assert type(copy.exception) is ValueError
    assert copy.exception.args == ("boom",)
    assert copy.exception.__traceback__ is None  # a traceback does not pickle...
    assert copy.traceback == error.traceback  # ...its text does
    assert "raise exc" in copy.traceback
    assert roundtrip(copy).traceback == error.traceback  # and again from the copy


def test_an_exception_that_will_not_unpickle_is_replaced_by_a_stand_in() -> None:
    error = failure(NeedsTwo(1, 2))
    with pytest.raises(TypeError):
        roundtrip(error.exception)  # the trap: it pickles, but does not load
    copy = roundtrip(error)
    assert type(copy.exception) is RuntimeError
    assert "test_datum.NeedsTwo: 1 and 2" in str(copy.exception)
    assert "could not be unpickled" in str(copy.exception)
    assert "NeedsTwo: 1 and 2" in copy.traceback


def test_an_exception_that_will_not_pickle_is_replaced_by_a_stand_in() -> None:
    error = failure(HoldsALock())
    with pytest.raises(TypeError):
        pickle.dumps(error.exception)
    copy = roundtrip(Datum(1, 1, route_of("a"), error))
    assert type(copy.error.exception) is RuntimeError
    assert "test_datum.HoldsALock: locked" in str(copy.error.exception)
    assert "could not be pickled" in str(copy.error.exception)


def test_a_trace_keeps_the_sampled_flag_of_every_hop_in_its_copy() -> None:
    # A hop the sampler dropped stays dropped on the far side: its traceparent ends in -00.
    dropped = Trace("a", 0.0, 1.0, trace_id=5, span_id=6, sampled=False)
    kept = Trace("b", 1.0, 2.0, dropped, trace_id=7, span_id=8)
    copy = roundtrip(kept)
    assert [h.sampled for h in copy.hops()] == [False, True]
    assert copy.previous is not None
    assert copy.previous.traceparent == dropped.traceparent
    assert copy.previous.traceparent is not None
    assert copy.previous.traceparent.endswith("-00")
    datum = roundtrip(Datum(1, 1, route_of("in", "a"), trace=dropped))
    assert datum.trace == dropped


def test_a_datum_equals_its_copy_with_its_error_parents_and_trace() -> None:
    route = route_of("in", "mid")
    parent = Datum(1, "o1", route_of("in"))
    datum = Datum(
        2, "o2", route, failure(KeyError("k")), (parent,), Trace("mid", 1.0, 2.0, span_id=3)
    )
    copy = roundtrip(datum)
    assert copy == datum
    assert copy.path == ("in", "mid")
    assert copy.parents == (parent,)
    assert copy.trace == datum.trace
    assert copy.error is not datum.error
    assert copy.error is not None
    assert datum.error is not None
    assert copy.error.traceback == datum.error.traceback


def test_data_with_different_errors_are_not_equal() -> None:
    route = route_of("a")
    error = failure(ValueError("one"))
    assert Datum(1, 1, route, error) == Datum(1, 1, route, error)
    assert Datum(1, 1, route, error) != Datum(1, 1, route, failure(ValueError("two")))
    assert Datum(1, 1, route, error) != Datum(1, 1, route, failure(TypeError("one")))
    assert Datum(1, 1, route, error) != Datum(1, 1, route, failure(ValueError("one"), "other"))
    assert Datum(1, 1, route, error) != Datum(1, 1, route)


def test_a_batch_pickles_with_its_route_parents_and_trace() -> None:
    route = route_of("in", "x")
    parents = [(Datum(0, 0, route_of("in")),), ()]
    batch = Batch([1, 2], ["a", "b"], route, parents, Trace("x", 0.0, 1.0))
    copy = roundtrip(batch)
    assert copy.values == [1, 2]
    assert copy.origins == ["a", "b"]
    assert copy.route == route
    assert copy.parents == parents
    assert copy.trace == batch.trace
    assert roundtrip(Batch([3], [3], None)).route is None  # before the entry point


def test_routes_shared_within_one_pickle_stay_one_object() -> None:
    route = route_of("in", "x")
    first, second = roundtrip([Batch([1], [1], route), Batch([2], [2], route)])
    assert first.route is second.route


# other processes ---------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import pickle, sys
    import hotplumb as hp
    from hotplumb._datum import Datum, Route

    batch, datum, path = pickle.loads(sys.stdin.buffer.read())
    fresh = Route(path[0])
    for key in path[1:]:
        fresh = fresh.child(key)
    table = {fresh: "found"}
    result = {
        "seed": hash("a string hashes differently in each process"),
        "same_hash": hash(batch.route) == hash(fresh),
        "lookup": table.get(batch.route),
        "datum_lookup": table.get(datum.route),
        "equal": datum == Datum(datum.value, datum.origin, fresh, datum.error, datum.parents),
        "traceback": datum.error.traceback,
        "route_back": fresh,
    }
    sys.stdout.buffer.write(pickle.dumps(result))
    """
)


def unpickle_in_child(payload: bytes, seed: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONHASHSEED": str(seed)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        input=payload,
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    result: dict[str, Any] = pickle.loads(done.stdout)
    return result


def test_a_child_with_another_hash_seed_rebuilds_routes_data_and_errors() -> None:
    path = ("source", "parse", hp.key(subscription="feed/a", window=("1s", "sum")), "sink")
    route = route_of(*path)
    datum = Datum("v", "o", route, failure(ValueError("boom")))
    payload = pickle.dumps((Batch([1], [1], route), datum, path))
    assert datum.error is not None
    results = [unpickle_in_child(payload, seed) for seed in (1, 2)]
    # The seeds differ, and so do string hashes: at least one child's differs from ours.
    assert results[0]["seed"] != results[1]["seed"]
    for result in results:
        assert result["same_hash"]  # the route was hashed again in the child
        assert result["lookup"] == "found"
        assert result["datum_lookup"] == "found"
        assert result["equal"]
        assert result["traceback"] == datum.error.traceback
        # And back: a route rebuilt in the child is found here.
        assert {route: "here"}.get(result["route_back"]) == "here"


def test_node_errors_are_equal_when_they_say_the_same() -> None:
    a = hp.NodeError("f", 1, ValueError("bad", 3))
    assert a == hp.NodeError("f", 1, ValueError("bad", 3))
    assert hash(a) == hash(hp.NodeError("f", 1, ValueError("bad", 3)))
    assert a != hp.NodeError("f", 2, ValueError("bad", 3))
    assert a != hp.NodeError("g", 1, ValueError("bad", 3))
    assert a != hp.NodeError("f", 1, TypeError("bad", 3))
    assert a != hp.NodeError("f", 1, ValueError("worse", 3))
    assert pickle.loads(pickle.dumps(a)) == a


def test_node_errors_whose_args_do_not_compare_are_compared_by_repr() -> None:
    class Stubborn:
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("no comparing me")

        def __repr__(self) -> str:
            return "Stubborn()"

    a = hp.NodeError("f", 1, ValueError(Stubborn()))
    assert a == hp.NodeError("f", 1, ValueError(Stubborn()))


def test_a_node_error_copies_as_itself() -> None:
    class Unpicklable(Exception):
        def __init__(self) -> None:
            super().__init__("holds a lock")
            self.lock = threading.Lock()

    error = hp.NodeError("f", 1, Unpicklable())
    assert copy.copy(error) is error
    assert copy.deepcopy(error) is error
    assert "_text" not in inspect.signature(hp.NodeError).parameters
