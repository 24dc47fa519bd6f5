"""Node keys: freezing, equality, matching, formatting and validation."""

from __future__ import annotations

import pickle
import types
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hotplumb import InvalidKeyError, Key, format_key, key
from hotplumb._format import MAX_DEPTH_SHOWN
from hotplumb._keys import MAX_KEY_DEPTH, check_key, freeze
from tests.strategies import key_fields, keys

if TYPE_CHECKING:
    from collections.abc import Hashable


def test_key_freezes_nested_containers() -> None:
    k = key(a={"b": [1, {2, 3}], "c": {"d": [4]}})
    inner = k["a"]
    assert isinstance(inner, Key)
    assert inner["b"] == (1, frozenset({2, 3}))
    assert inner["c"] == key(d=(4,))
    hash(k)


def test_key_equality_and_hash_ignore_order() -> None:
    a = key(subscriptions={"source/foo", "source/bar"}, rollup_window=10_000)
    b = key(rollup_window=10_000, subscriptions={"source/bar", "source/foo"})
    assert a == b
    assert hash(a) == hash(b)
    assert {a: 1}[b] == 1
    assert a != key(subscriptions={"source/foo"}, rollup_window=10_000)
    assert a != {"subscriptions": frozenset({"source/foo", "source/bar"}), "rollup_window": 10_000}


@pytest.mark.slow
@given(key_fields)
def test_key_is_hashable_and_order_independent(fields: dict[str, Any]) -> None:
    a = key(**fields)
    b = key(**dict(reversed(list(fields.items()))))
    assert a == b
    assert hash(a) == hash(b)
    assert pickle.loads(pickle.dumps(a)) == a


@pytest.mark.slow
@given(keys())
def test_generated_keys_are_valid(k: Hashable) -> None:
    assert check_key(k) is k


def test_key_in_match_statement() -> None:
    k = key(subscription="source/foo", rollup_window=10_000)
    match k:
        case {"subscriptions": _}:
            pytest.fail("matched the wrong pattern")
        case {"subscription": str() as sub, "rollup_window": int() as window}:
            assert (sub, window) == ("source/foo", 10_000)
        case _:
            pytest.fail("no pattern matched")


def test_key_is_immutable() -> None:
    k = key(a=1)
    with pytest.raises(AttributeError, match="Key is immutable"):
        k.x = 1
    with pytest.raises(TypeError):
        k["a"] = 2  # type: ignore[index]


def test_key_repr_is_readable_and_stable() -> None:
    k = key(subscriptions={"source/foo", "source/bar"}, rollup_window=10_000)
    assert repr(k) == "key(subscriptions={'source/bar', 'source/foo'}, rollup_window=10000)"
    assert repr(Key({1: "a"})) == "key({1: 'a'})"
    assert repr(key(s=set())) == "key(s=frozenset())"


def test_format_key() -> None:
    assert format_key("source/foo") == "source/foo"
    assert format_key(3) == "3"
    assert format_key(("a", 1)) == "(a, 1)"
    assert format_key(frozenset({"b", "a"})) == "{a, b}"
    k = key(subscriptions={"source/foo", "source/bar"}, rollup_window=10_000, inner={"x": 1})
    assert format_key(k) == (
        "subscriptions={source/bar, source/foo}, rollup_window=10000, inner={x=1}"
    )


def test_freeze_leaves_other_values_alone() -> None:
    assert freeze(3) == 3
    assert freeze([1, [2]]) == (1, (2,))
    assert freeze({"a": {1}}) == key(a={1})


def test_none_is_not_a_key() -> None:
    with pytest.raises(InvalidKeyError, match="invalid node key None: None cannot be a node key"):
        check_key(None)


def test_unhashable_key_is_rejected_naming_it() -> None:
    with pytest.raises(
        InvalidKeyError, match=r"invalid node key \[1, 2\]: unhashable .*key\("
    ) as e:
        check_key([1, 2])
    assert e.value.key == [1, 2]
    assert isinstance(e.value, TypeError)


def test_key_with_unhashable_field_is_rejected() -> None:
    with pytest.raises(InvalidKeyError, match=r"invalid node key \{'x': bytearray.*unhashable"):
        key(x=bytearray(b"a"))


@given(st.lists(st.integers()))
def test_lists_are_not_keys(value: list[int]) -> None:
    with pytest.raises(InvalidKeyError, match="unhashable"):
        check_key(value)


def test_sets_inside_tuples_print_sorted_too() -> None:
    k = key(windows=({"source/foo", "source/bar"},), pair=("b", frozenset({"z", "y"})))
    assert repr(k) == "key(windows=({'source/bar', 'source/foo'},), pair=('b', {'y', 'z'}))"


def nested_tuple(depth: int) -> tuple[Any, ...]:
    """``((((),),),)``: ``depth`` tuples, each holding the next."""
    value: tuple[Any, ...] = ()
    for _ in range(depth - 1):
        value = (value,)
    return value


def test_format_key_treats_any_mapping_as_fields() -> None:
    assert format_key(types.MappingProxyType({"a": 1, "b": "x"})) == "a=1, b=x"
    assert format_key(("n", types.MappingProxyType({"a": 1}))) == "(n, {a=1})"


def test_format_key_of_a_deeply_nested_key_shows_the_first_levels() -> None:
    deep = nested_tuple(5_000)
    shown = "(" * MAX_DEPTH_SHOWN + "..." + ")" * MAX_DEPTH_SHOWN
    assert format_key(deep) == shown
    assert format_key(nested_tuple(MAX_DEPTH_SHOWN)) == "(" * (MAX_DEPTH_SHOWN - 1) + "()" + ")" * (
        MAX_DEPTH_SHOWN - 1
    )


def test_a_key_as_deep_as_allowed_compares_pickles_and_prints() -> None:
    # The key is the first level, the tuples the other MAX_KEY_DEPTH - 1.
    k = key(a=nested_tuple(MAX_KEY_DEPTH - 1))
    twin = key(a=list(nested_tuple(MAX_KEY_DEPTH - 1)))
    assert k == twin
    assert hash(k) == hash(twin)
    assert pickle.loads(pickle.dumps(k)) == k
    # The key and its field are two levels; the tuples fill the rest.
    assert (
        repr(k)
        == "key(a=" + "(" * (MAX_DEPTH_SHOWN - 1) + "..." + ",)" * (MAX_DEPTH_SHOWN - 1) + ")"
    )
    assert format_key(k) == "a=" + "(" * (MAX_DEPTH_SHOWN - 1) + "..." + ")" * (MAX_DEPTH_SHOWN - 1)


@pytest.mark.parametrize("kind", [dict, list])
def test_a_key_nested_too_deeply_is_refused(kind: type) -> None:
    value: Any = 0
    for _ in range(100_000):
        value = {"a": value} if kind is dict else [value]
    with pytest.raises(
        InvalidKeyError,
        match=rf"^invalid node key .*: nested too deeply \(a key holds at most {MAX_KEY_DEPTH} ",
    ) as e:
        key(x=value)
    assert e.value.key == {"x": value}
    with pytest.raises(InvalidKeyError, match="nested too deeply"):
        freeze(value)


def test_the_depth_limit_counts_the_key_itself() -> None:
    key(a=nested_tuple(MAX_KEY_DEPTH - 1))
    with pytest.raises(InvalidKeyError, match="nested too deeply"):
        key(a=nested_tuple(MAX_KEY_DEPTH))
    with pytest.raises(InvalidKeyError, match="nested too deeply"):
        key(a={"b": nested_tuple(MAX_KEY_DEPTH - 1)})
    freeze(nested_tuple(MAX_KEY_DEPTH))
    with pytest.raises(InvalidKeyError, match="nested too deeply"):
        freeze(nested_tuple(MAX_KEY_DEPTH + 1))
