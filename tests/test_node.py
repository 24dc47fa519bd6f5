"""Node descriptions: normalisation, validation, builders, equality."""

from __future__ import annotations

import functools
import math
import re
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import pytest

from hotplumb import InvalidKeyError, Node, NodeKind, RestartPolicy, key, sink, source
from hotplumb._node import identity

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


def test_inputs_are_normalised_to_a_tuple() -> None:
    assert Node(inputs=["a", "b"]).inputs == ("a", "b")
    assert Node(inputs=(k for k in ["a"])).inputs == ("a",)
    assert Node(inputs=[key(a={1})]).inputs == (key(a=frozenset({1})),)


def test_string_inputs_are_rejected() -> None:
    with pytest.raises(TypeError, match="Node inputs must be a sequence of keys, got 'ab'"):
        Node(inputs="ab")


def test_sink_rejects_string_inputs_as_node_does() -> None:
    # Not read as the keys "l", "o", "g", "s".
    with pytest.raises(
        TypeError,
        match=re.escape(
            "Node inputs must be a sequence of keys, got 'logs' "
            "(for one key, write inputs=['logs'])"
        ),
    ):
        sink(print, inputs="logs")
    with pytest.raises(
        TypeError, match=re.escape("got b'logs' (for one key, write inputs=[b'logs'])")
    ):
        sink(print, inputs=b"logs")
    assert sink(print, inputs=(k for k in ["logs"])).inputs == ("logs",)


def test_duplicate_inputs_are_rejected() -> None:
    with pytest.raises(InvalidKeyError, match=r"invalid node key 'a': listed twice in Node inputs"):
        Node(inputs=["a", "b", "a"])


def test_invalid_input_keys_are_rejected() -> None:
    with pytest.raises(InvalidKeyError, match="None cannot be a node key"):
        Node(inputs=["a", None])
    with pytest.raises(InvalidKeyError, match="unhashable"):
        Node(inputs=[["a"]])  # type: ignore[list-item]


def test_other_fields_are_validated() -> None:
    with pytest.raises(TypeError, match="Node fn must be callable, got 3"):
        Node(3)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"Node timeout must be a finite number of seconds > 0, got 0"
    ):
        Node(timeout=0)
    with pytest.raises(ValueError, match=r"Node capacity must be an int >= 1, got 0"):
        Node(capacity=0)
    with pytest.raises(
        ValueError, match=r"restart policy max_restarts must be an int >= 0, got -1"
    ):
        RestartPolicy(max_restarts=-1)


NAN = math.nan


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"capacity": NAN}, TypeError, "Node capacity must be an int >= 1, got nan"),
        ({"capacity": 2.5}, TypeError, "Node capacity must be an int >= 1, got 2.5"),
        ({"capacity": True}, TypeError, "Node capacity must be an int >= 1, got True"),
        ({"capacity": "8"}, TypeError, "Node capacity must be an int >= 1, got '8'"),
        ({"capacity": -3}, ValueError, "Node capacity must be an int >= 1, got -3"),
        ({"output_capacity": NAN}, TypeError, "Node output_capacity must be an int >= 1, got nan"),
        ({"output_capacity": 0}, ValueError, "Node output_capacity must be an int >= 1, got 0"),
        (
            {"timeout": True},
            TypeError,
            "Node timeout must be a finite number of seconds > 0, got True",
        ),
        (
            {"timeout": "1"},
            TypeError,
            "Node timeout must be a finite number of seconds > 0, got '1'",
        ),
        (
            {"timeout": NAN},
            ValueError,
            "Node timeout must be a finite number of seconds > 0, got nan",
        ),
        (
            {"timeout": math.inf},
            ValueError,
            "Node timeout must be a finite number of seconds > 0, got inf",
        ),
        (
            {"timeout": -1.0},
            ValueError,
            "Node timeout must be a finite number of seconds > 0, got -1.0",
        ),
    ],
)
def test_numeric_fields_are_checked(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        Node(**options)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"max_restarts": NAN}, TypeError, "max_restarts must be an int >= 0, got nan"),
        ({"max_restarts": 2.5}, TypeError, "max_restarts must be an int >= 0, got 2.5"),
        ({"max_restarts": True}, TypeError, "max_restarts must be an int >= 0, got True"),
        ({"window": True}, TypeError, "window must be a finite number of seconds > 0, got True"),
        ({"window": NAN}, ValueError, "window must be a finite number of seconds > 0, got nan"),
        ({"window": 0}, ValueError, "window must be a finite number of seconds > 0, got 0"),
        (
            {"backoff": False},
            TypeError,
            "backoff must be a finite number of seconds >= 0, got False",
        ),
        ({"backoff": NAN}, ValueError, "backoff must be a finite number of seconds >= 0, got nan"),
        (
            {"backoff": -0.5},
            ValueError,
            "backoff must be a finite number of seconds >= 0, got -0.5",
        ),
    ],
)
def test_restart_policy_numbers_are_checked(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^restart policy {re.escape(message)}$"):
        RestartPolicy(**options)


class _Index:
    """An integer that is not an int, as numpy's are."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value


def test_numbers_in_range_are_kept_as_plain_numbers() -> None:
    node = Node(capacity=_Index(4), output_capacity=1, timeout=Fraction(1, 2))  # type: ignore[arg-type]
    assert (node.capacity, node.output_capacity, node.timeout) == (4, 1, 0.5)
    assert type(node.capacity) is int
    assert type(node.timeout) is float
    assert Node(timeout=2).timeout == 2
    policy = RestartPolicy(max_restarts=_Index(0), window=1, backoff=0)  # type: ignore[arg-type]
    assert policy == RestartPolicy(max_restarts=0, window=1.0, backoff=0.0)
    assert type(policy.max_restarts) is int


def _on_change(context: Any) -> None:
    pass


async def _async_on_change(context: Any) -> None:
    pass


class _AsyncCallable:
    async def __call__(self, context: Any) -> None:
        pass


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"target": 1}, "Node target must be a bool, got 1"),
        ({"pass_datum": "yes"}, "Node pass_datum must be a bool, got 'yes'"),
        ({"kind": "timer"}, "Node kind must be a NodeKind or None, got 'timer'"),
        ({"restart": 3}, "Node restart must be a RestartPolicy or None, got 3"),
        ({"state": {}}, "Node state must be callable or None, got {}"),
        ({"migrate": 1}, "Node migrate must be callable or None, got 1"),
        ({"on_error": "skip"}, "Node on_error must be callable or None, got 'skip'"),
        ({"on_change": 2}, "Node on_change must be callable or None, got 2"),
        ({"source": 0}, "Node source must be callable or None, got 0"),
    ],
)
def test_field_types_are_checked(options: dict[str, Any], message: str) -> None:
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        Node(**options)


@pytest.mark.parametrize(
    "on_change", [_async_on_change, functools.partial(_async_on_change), _AsyncCallable()]
)
def test_async_on_change_is_rejected(on_change: Any) -> None:
    # Its coroutine would be created when the readers change and never awaited.
    with pytest.raises(TypeError, match=r"^Node on_change must be a plain function, got .*awaited"):
        Node(on_change=on_change)
    assert Node(on_change=_on_change).on_change is _on_change


async def _produce(context: Any) -> AsyncIterator[int]:
    yield 1


def test_source_has_no_inputs() -> None:
    node = source(_produce)
    assert node.source is _produce
    assert node.is_entry
    assert node.effective_kind is NodeKind.ENTRY
    with pytest.raises(TypeError, match="a generator source has no inputs"):
        Node(source=_produce, inputs=["a"])


def test_sink_is_a_target_reading_datums() -> None:
    received: list[Any] = []
    node = sink(received.append, inputs=["a", "b"], timeout=1.0)
    assert node.target
    assert node.pass_datum
    assert node.inputs == ("a", "b")
    assert node.timeout == 1.0
    assert node.effective_kind is NodeKind.TARGET


def test_kinds() -> None:
    assert Node().effective_kind is NodeKind.ENTRY
    assert Node(inputs=["a"]).effective_kind is NodeKind.PROCESSOR
    assert Node(kind=NodeKind.TIMER).effective_kind is NodeKind.TIMER
    assert Node().fn is identity
    assert identity(3) == 3


def test_nodes_compare_by_value() -> None:
    assert Node(inputs=["a"]) == Node(inputs=("a",))
    assert hash(Node(inputs=["a"])) == hash(Node(inputs=("a",)))
    assert Node(inputs=["a"]) != Node(inputs=["b"])
    assert Node(inputs=["a", "b"]) != Node(inputs=["b", "a"])
    assert Node(identity, target=True) != Node(identity)
    received: list[Any] = []
    assert sink(received.append, ["a"]) == sink(received.append, ["a"])
    assert Node(lambda x: x) != Node(lambda x: x)
