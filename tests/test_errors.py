"""The exception tree: every error's base classes, attributes and message."""

from __future__ import annotations

from typing import Any

import pytest

from hotplumb import (
    ApplyError,
    CycleError,
    FactoryError,
    GraphTooLargeError,
    HotplumbError,
    InvalidKeyError,
    InvalidNodeCallableError,
    InvalidNodeError,
    MissingNodeError,
    NodeFailedError,
    NotAnEntryPointError,
    TopologyClosedError,
    key,
)
from hotplumb._format import MAX_DEPTH_SHOWN

TARGET = "client/a"
SUB = key(subscription="source/foo", rollup_window=10_000)


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (InvalidKeyError, TypeError),
        (InvalidNodeError, TypeError),
        (InvalidNodeCallableError, TypeError),
        (MissingNodeError, KeyError),
        (CycleError, ValueError),
        (GraphTooLargeError, ValueError),
        (FactoryError, RuntimeError),
        (NotAnEntryPointError, ValueError),
        (TopologyClosedError, RuntimeError),
        (ApplyError, RuntimeError),
        (NodeFailedError, RuntimeError),
    ],
)
def test_every_error_is_a_hotplumb_error_and_a_builtin(
    error: type[HotplumbError], builtin: type[Exception]
) -> None:
    assert issubclass(error, HotplumbError)
    assert issubclass(error, builtin)


def test_invalid_key_error() -> None:
    with pytest.raises(InvalidKeyError, match=r"^invalid node key \[1\]: unhashable$") as e:
        raise InvalidKeyError([1], "unhashable")
    assert e.value.key == [1]


def test_invalid_node_error() -> None:
    message = (
        r"^the factory gave str 'nope' for key subscription=source/foo, rollup_window=10000, "
        r"expected a hotplumb.Node \(or None from a factory\)$"
    )
    with pytest.raises(InvalidNodeError, match=message) as e:
        raise InvalidNodeError(SUB, "nope", "the factory")
    assert (e.value.key, e.value.value) == (SUB, "nope")


def test_invalid_node_callable_error() -> None:
    with pytest.raises(InvalidNodeCallableError, match=r"^node a: takes 3 arguments$") as e:
        raise InvalidNodeCallableError("a", "takes 3 arguments")
    assert e.value.key == "a"


def test_missing_node_error() -> None:
    with pytest.raises(MissingNodeError, match=r"^no node for key x$"):
        raise MissingNodeError("x", ["x"])
    message = (
        r"^no node for key subscription=source/foo, rollup_window=10000 "
        r"\(needed by client/a -> subscription=source/foo, rollup_window=10000\)$"
    )
    with pytest.raises(MissingNodeError, match=message) as e:
        raise MissingNodeError(SUB, [TARGET, SUB])
    assert e.value.key == SUB
    assert e.value.chain == (TARGET, SUB)
    with pytest.raises(MissingNodeError, match=r"^cannot remove x$") as e:
        raise MissingNodeError("x", ["x"], message="cannot remove x")
    assert e.value.message == "cannot remove x"


def test_long_chains_are_shortened_in_messages() -> None:
    chain = list(range(100))
    with pytest.raises(
        MissingNodeError,
        match=r"\(needed by 0 -> 1 -> 2 -> \.\.\. \(93 more\) -> 96 -> 97 -> 98 -> 99\)$",
    ) as e:
        raise MissingNodeError(99, chain)
    assert e.value.chain == tuple(chain)


def test_cycle_error() -> None:
    with pytest.raises(CycleError, match=r"^cycle in graph: a -> b -> a$") as e:
        raise CycleError(["a", "b", "a"])
    assert e.value.cycle == ("a", "b", "a")


def test_graph_too_large_error() -> None:
    message = (
        r"^graph resolution exceeded max_nodes=10 \(a runaway factory\?\) "
        r"while resolving \.\.\. -> 2 -> 3 -> 4 -> 5$"
    )
    with pytest.raises(GraphTooLargeError, match=message) as e:
        raise GraphTooLargeError(10, [0, 1, 2, 3, 4, 5])
    assert (e.value.max_nodes, e.value.chain) == (10, (0, 1, 2, 3, 4, 5))
    with pytest.raises(GraphTooLargeError, match=r"while resolving 0 -> 1$"):
        raise GraphTooLargeError(10, [0, 1])


def test_factory_error() -> None:
    cause = ZeroDivisionError("division by zero")
    message = r"^factory raised ZeroDivisionError: division by zero for key b \(needed by a -> b\)$"
    with pytest.raises(FactoryError, match=message) as e:
        raise FactoryError("b", ["a", "b"], cause) from cause
    assert (e.value.key, e.value.chain) == ("b", ("a", "b"))
    assert e.value.__cause__ is cause


def test_not_an_entry_point_error() -> None:
    with pytest.raises(NotAnEntryPointError, match=r"^cannot inject into a: it has inputs$") as e:
        raise NotAnEntryPointError("a", "it has inputs")
    assert e.value.key == "a"


def test_apply_error() -> None:
    with pytest.raises(ApplyError, match=r"^timed out; the topology runs the old graph$") as e:
        raise ApplyError("timed out", "old")
    assert e.value.running == "old"


def test_node_failed_error() -> None:
    with pytest.raises(NodeFailedError, match=r"^node a failed after 3 restart\(s\)$") as e:
        raise NodeFailedError("a", 3)
    assert (e.value.key, e.value.restarts) == ("a", 3)


def test_topology_closed_error() -> None:
    with pytest.raises(TopologyClosedError, match=r"^closed$"):
        raise TopologyClosedError("closed")


def test_messages_about_deeply_nested_keys_can_be_built() -> None:
    deep: Any = ()
    for _ in range(5_000):
        deep = (deep,)
    shown = "(" * MAX_DEPTH_SHOWN + "..." + ")" * MAX_DEPTH_SHOWN
    assert str(MissingNodeError(deep, [deep])) == f"no node for key {shown}"
    assert str(MissingNodeError(deep, ["a", deep])) == (
        f"no node for key {shown} (needed by a -> {shown})"
    )
    assert str(CycleError([deep, "b", deep])) == f"cycle in graph: {shown} -> b -> {shown}"
    # Python's own repr gives up on such a value; the message shows its first levels.
    message = str(InvalidKeyError([deep], "unhashable"))
    try:
        shown_by_python = repr([deep])  # Python 3.13 prints it; earlier versions give up
    except RecursionError:
        assert message == "invalid node key [((((((...),),),),),)]: unhashable"
    else:
        assert message == f"invalid node key {shown_by_python}: unhashable"
