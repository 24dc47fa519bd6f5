"""What the tests of channels into the driver run inside host actors.

Host actors import this module by name, as they do ``tests/raynodes.py``
(whose stream, reader and producer these tests reuse). Each function takes
the :class:`~hotplumb._raywire.Host` it runs on first, as
:meth:`HostActor.run <hotplumb._raywire.HostActor.run>` calls it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hotplumb._datum import Batch, Route
from tests.raynodes import END, ROUTE, Mark, Reader

if TYPE_CHECKING:
    from collections.abc import Hashable

    from hotplumb._raywire import Host


@dataclass(frozen=True)
class After:
    """An event posted once the frame of ``mark`` was sent to the driver."""

    mark: Mark


def open_to_driver(
    host: Host, channel_id: Hashable, capacity: int, options: dict[str, Any]
) -> None:
    host.add_driver_sender(channel_id, "source", Reader("driver"), capacity, **options)


async def produce_posting(host: Host, channel_id: Hashable, puts: list[list[Any]]) -> int:
    """Put the stream; after each mark's frame is sent, post ``After(mark)``; the events posted.

    The sender must have calls to spare (a large ``in_flight``), so that a
    frame cut goes to its call at once: then one pass of the loop sends it.
    """
    sender = host.sender(channel_id)
    posted = 0
    for put in puts:
        if type(put[0]) is Mark:
            sender.put_control(put[0])
            assert sender.statistics().waiting == 0, "the mark's frame waits for a call"
            await asyncio.sleep(0)  # the call task runs: the frame is in the outbox
            host.post(After(put[0]))
            posted += 1
        else:
            await sender.put(Batch(list(put), list(put), ROUTE))
    return posted


async def put_apart(host: Host, channel_id: Hashable, items: int) -> int:
    """Put ``items`` batches of one item, each its own route (nothing merges), then END.

    Returns:
        The most items the sender ever had outstanding.
    """
    sender = host.sender(channel_id)
    most = 0
    for i in range(items):
        await sender.put(Batch([i], [i], Route("driver", Route(f"s{i}"))))
        most = max(most, sender.size)
    sender.put_control(END)
    return most


def starved_at(host: Host, channel_id: Hashable) -> int | None:
    """The sender's outstanding items if it is starved (a putter waits for asked credit)."""
    sender = host.sender(channel_id)
    return sender.size if sender.starved else None


def confirmed(host: Host, channel_id: Hashable) -> bool:
    """Whether a credit confirmed every frame the sender cut."""
    statistics = host.sender(channel_id).statistics()
    return statistics.delivered == statistics.frames
