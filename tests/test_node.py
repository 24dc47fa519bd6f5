"""Node descriptions: normalisation, validation, builders, equality."""

from __future__ import annotations

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
    with pytest.raises(ValueError, match="Node timeout must be positive and finite, got 0"):
        Node(timeout=0)
    with pytest.raises(ValueError, match="Node capacity must be at least 1, got 0"):
        Node(capacity=0)
    with pytest.raises(ValueError, match="invalid restart policy"):
        RestartPolicy(max_restarts=-1)


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
