"""Readable provenance: a datum's history formatted like a traceback.

:func:`explain` is behind :meth:`Datum.explain <hotplumb.Datum.explain>` and
``str()`` of a failed datum; :func:`explain_dead_letters` behind
:meth:`DeadLetters.explain <hotplumb.DeadLetters.explain>`. The format, for a
datum that failed at ``s0``::

    Datum provenance (entry point first, most recent hop last):
      from       numbers
      failed at  s0  (version 0)
    origin: 3
    value:  3
    Traceback (most recent call last):
      File "app.py", line 7, in fragile
        raise ValueError(f"bad {x}")
    ValueError: bad 3

Tracebacks show the user's frames: frames inside hotplumb itself are left
out (:attr:`NodeError.traceback <hotplumb.NodeError.traceback>` has them all).
"""

from __future__ import annotations

import os
import traceback
from collections import Counter
from typing import TYPE_CHECKING

from hotplumb._format import SafeRepr, format_key

if TYPE_CHECKING:
    from collections.abc import Hashable, Iterable

    from hotplumb._datum import Datum, NodeError

__all__ = ["explain", "explain_dead_letters"]

_MAX_PARENTS = 5
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


_values = SafeRepr(80, 3)


def _short(value: object) -> str:
    return _values.repr(value)


def _path(keys: Iterable[Hashable]) -> str:
    return " -> ".join(format_key(k) for k in keys)


def explain(datum: Datum, *, indent: str = "") -> str:
    """Format ``datum``'s provenance: path, origin, value, parents, error.

    Args:
        datum: The datum to explain.
        indent: A prefix for every line (used when nesting explanations).

    Returns:
        The formatted text, without a trailing newline.
    """
    error = datum.error
    path = datum.path
    timing: dict[Hashable, float] = {}
    if datum.trace is not None:
        timing = {h.key: h.end - h.start for h in datum.trace.hops()}
    lines = [f"{indent}Datum provenance (entry point first, most recent hop last):"]
    last = len(path) - 1
    for i, k in enumerate(path):
        if i == last and error is not None:
            verb, note = "failed at", f"  (version {error.version})"
        else:
            verb, note = ("from" if i == 0 else "through" if i < last else "at"), ""
        if k in timing:
            note += f"  {1e6 * timing[k]:.0f}us"
        lines.append(f"{indent}  {verb:<9}  {format_key(k)}{note}")
    lines.append(f"{indent}origin: {_short(datum.origin)}")
    lines.append(f"{indent}value:  {_short(datum.value)}")
    parents = datum.parents
    if parents:
        # A window of data from one route (the usual rollup) names the route once.
        shared = len({id(p.route) for p in parents}) == 1
        via = f" via {_path(parents[0].path)}" if shared else ""
        lines.append(f"{indent}derived from {len(parents)} datum(s){via}:")
        for parent in parents[:_MAX_PARENTS]:
            more = f", derived from {len(parent.parents)}" if parent.parents else ""
            route = "" if shared else f" via {_path(parent.path)}"
            lines.append(
                f"{indent}  - {_short(parent.value)} (origin {_short(parent.origin)}{more}){route}"
            )
        if len(parents) > _MAX_PARENTS:
            lines.append(f"{indent}  ... and {len(parents) - _MAX_PARENTS} more")
    if error is not None:
        lines.extend(f"{indent}{line}" for line in format_error(error).splitlines())
    return "\n".join(lines)


def format_error(error: NodeError) -> str:
    """Format a node's exception like Python does, leaving out hotplumb's own frames.

    Chained exceptions (``raise ... from``, or raised while handling another)
    are kept. If every frame is hotplumb's, none is shown.

    Args:
        error: The failure.

    Returns:
        The traceback text, without a trailing newline.
    """
    exc = error.exception
    te = traceback.TracebackException.from_exception(exc)
    seen: set[int] = set()
    todo = [te]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        frames = [f for f in current.stack if not f.filename.startswith(_PACKAGE_DIR)]
        current.stack = traceback.StackSummary.from_list(frames)
        todo.extend(t for t in (current.__cause__, current.__context__) if t is not None)
        todo.extend(getattr(current, "exceptions", None) or ())
    return "".join(te.format()).rstrip("\n")


def explain_dead_letters(failures: Iterable[Datum], *, limit: int = 5) -> str:
    """Format a dead-letter record: counts by node and error, then the latest in full.

    Args:
        failures: The failed data, oldest first (a :class:`~hotplumb.DeadLetters`).
        limit: How many of the most recent to explain in full.

    Returns:
        The formatted text, without a trailing newline.
    """
    items = list(failures)
    total = getattr(failures, "total", len(items))
    if not items:
        return f"no failures kept ({total} recorded in all)"
    kept = f"{len(items)} kept" if total == len(items) else f"the last {len(items)} kept"
    lines = [f"{total} failure(s) recorded, {kept}:"]
    counts: Counter[tuple[str, str]] = Counter()
    for d in items:
        if d.error is not None:
            counts[(format_key(d.error.key), type(d.error.exception).__name__)] += 1
    for (where, kind), n in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        lines.append(f"  {n} x {kind} at {where}")
    shown = items[-limit:] if limit > 0 else []
    first = len(items) - len(shown)
    for i, d in enumerate(shown, start=first + 1):
        lines.append("")
        lines.append(f"failure {i} of {len(items)} kept:")
        lines.append(explain(d, indent="  "))
    if first:
        lines.append("")
        lines.append(f"({first} earlier failure(s) not shown in full)")
    return "\n".join(lines)
