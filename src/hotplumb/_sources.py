"""Sources from what programs already have: an (async) iterable, or an :class:`asyncio.Queue`.

Both are ordinary generator sources (see :func:`~hotplumb.source`): they run
only while some target reads them, and they follow the topology's demand
rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterable, Iterable
from typing import TYPE_CHECKING, Any

from hotplumb._node import Node, source

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from hotplumb._context import Context

__all__ = ["queue_source", "source_of"]


def source_of(values: AsyncIterable[Any] | Iterable[Any], **options: Any) -> Node:
    """Build a source that feeds the items of an (async) iterable into the topology.

    The iterable is iterated once, while the node runs (so only while some
    target reads it); when it is exhausted the source is done, and a restart
    or a replacement does not start it again. Equal iterables (the same
    object) give equal nodes, so a graph rebuilt around the same iterable
    leaves the running source alone.

    Args:
        values: An async iterable (an async generator, a stream) or a plain iterable.
        **options: Further :class:`Node` fields.

    Returns:
        An entry-point node.

    Example:
        >>> node = source_of(range(3))
        >>> node.is_entry
        True
    """
    return source(_produce_from(values), **options)


def queue_source(queue: asyncio.Queue[Any], **options: Any) -> Node:
    """Build a source fed by an :class:`asyncio.Queue`: each item put is injected.

    The node takes from the queue only while it runs (while some target reads
    it), so a queue without readers just fills up (bound it with ``maxsize``
    and the putters wait: backpressure reaches them). Equal queues give equal
    nodes.

    Args:
        queue: The queue to take items from.
        **options: Further :class:`Node` fields.

    Returns:
        An entry-point node.
    """
    return source(_produce_from(queue), **options)


# One producer per iterable or queue, so sources of the same object are equal nodes.
_PRODUCERS: weakref.WeakKeyDictionary[Any, Callable[[Context], AsyncIterator[Any]]] = (
    weakref.WeakKeyDictionary()
)


def _produce_from(values: Any) -> Callable[[Context], AsyncIterator[Any]]:
    try:
        produce = _PRODUCERS.get(values)
    except TypeError:  # not weakly referable (a list, a range): a producer of its own
        produce = None
    if produce is not None:
        return produce
    if isinstance(values, asyncio.Queue):

        async def produce(ctx: Context) -> AsyncIterator[Any]:
            while True:
                yield await values.get()

    elif isinstance(values, AsyncIterable):

        async def produce(ctx: Context) -> AsyncIterator[Any]:
            async for value in values:
                yield value

    elif isinstance(values, Iterable):

        async def produce(ctx: Context) -> AsyncIterator[Any]:
            for value in values:
                yield value

    else:
        raise TypeError(f"a source needs an iterable, an async iterable or a queue, got {values!r}")
    with contextlib.suppress(TypeError):
        _PRODUCERS[values] = produce
    return produce
