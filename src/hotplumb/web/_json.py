"""Keys and data as JSON: what crosses the wire, in both directions.

Keys arrive from clients as JSON and are untrusted: :func:`default_parse_key`
turns JSON into a key or refuses it with :class:`KeyRefused`. Data leave as
JSON: a value JSON cannot represent (a set, an object, a NaN) is sent in the
fallback form ``{"$type": TYPE NAME, "$repr": SHORT REPR}``, so a client always
gets one well-formed message per datum.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import hotplumb as hp
from hotplumb._format import SafeRepr, exception_message

if TYPE_CHECKING:
    from collections.abc import Hashable

__all__ = ["KeyRefused", "datum_message", "default_parse_key", "dumps", "jsonable"]

_reprs = SafeRepr(200, 3)


class KeyRefused(hp.HotplumbError, ValueError):
    """A client's key was refused by the ``parse_key`` hook; the message says why."""


def default_parse_key(data: Any) -> Hashable:
    """Turn a client's JSON key into a hotplumb key, or refuse it.

    A JSON object becomes ``hotplumb.key(**object)`` (nested objects and lists
    frozen), a string stays a string, a list becomes a tuple, an integer stays
    an integer; ``null``, booleans, other numbers and empty keys are refused.

    Args:
        data: The decoded JSON.

    Returns:
        The key.

    Raises:
        KeyRefused: ``data`` cannot be a key.
    """
    if isinstance(data, dict):
        if not data:
            raise KeyRefused("an empty object is not a key")
        return hp.key(**{name: _field(value) for name, value in data.items()})
    if isinstance(data, str):
        if not data:
            raise KeyRefused("an empty string is not a key")
        return data
    if isinstance(data, list):
        return tuple(_field(v) for v in data)
    if isinstance(data, int) and not isinstance(data, bool):
        return data
    raise KeyRefused(f"a key is a JSON object, string, list or integer, not {_json_type(data)}")


def _field(value: Any) -> Any:
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise KeyRefused("a key cannot hold NaN or infinity")
        return value
    if isinstance(value, list):
        return tuple(_field(v) for v in value)
    if isinstance(value, dict):
        return hp.key(**{name: _field(v) for name, v in value.items()})
    raise KeyRefused(f"a key cannot hold {_json_type(value)}")  # pragma: no cover - not JSON


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return "a non-integer number"
    return type(value).__name__


def fallback(value: Any) -> dict[str, str]:
    """The JSON form of a value JSON cannot represent."""
    return {"$type": type(value).__name__, "$repr": _reprs.repr(value)}


def jsonable(value: Any) -> Any:
    """``value`` if ``json.dumps`` takes it as it is (finite numbers only), else its fallback."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        if isinstance(value, hp.Key):
            return {str(k): jsonable(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [jsonable(v) for v in value]
        if isinstance(value, dict):
            return {str(k): jsonable(v) for k, v in value.items()}
        return fallback(value)
    return value


def dumps(data: Any) -> str:
    """Encode ``data`` as compact JSON, with the fallback for what JSON cannot hold."""
    try:
        return json.dumps(data, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        return json.dumps(jsonable(data), allow_nan=False, separators=(",", ":"))


def datum_message(key: Hashable, datum: hp.Datum) -> dict[str, Any]:
    """The message a subscriber gets for one datum of ``key``.

    ``value`` and ``origin`` as JSON (or their fallback form); ``path`` the
    keys it went through in readable form, the subscriber's own sink left out;
    ``error`` only when the datum carries one.
    """
    path = datum.path
    if path and isinstance(path[-1], hp.SubscriberKey):
        path = path[:-1]
    message: dict[str, Any] = {
        "type": "datum",
        "key": hp.format_key(key),
        "value": datum.value,  # dumps() falls back for what JSON cannot hold
        "origin": datum.origin,
        "path": [hp.format_key(k) for k in path],
    }
    error = datum.error
    if error is not None:
        message["error"] = {
            "key": hp.format_key(error.key),
            "version": error.version,
            "type": type(error.exception).__name__,
            "message": exception_message(error.exception),
        }
    return message
