"""What the Ray transport's tests run inside host actors.

Host actors import this module by name (the tests put the repository on the
workers' ``PYTHONPATH``), so what travels between processes here is
pickled by reference: a :class:`Mark` made on one host equals one made on
another. Each function takes the :class:`~hotplumb._raywire.Host` it runs on
first, as :meth:`HostActor.run <hotplumb._raywire.HostActor.run>` calls it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hotplumb import TopologyClosedError
from hotplumb._datum import Batch, Route
from hotplumb._raywire import HostActor
from hotplumb._wire import Credit

if TYPE_CHECKING:
    from collections.abc import Hashable

    from hotplumb._raywire import Host
    from hotplumb._wire import Frame


@dataclass(frozen=True)
class Mark:
    """A control message: its place among the data is what the tests check."""

    n: int


END = Mark(-1)
"""The last message of a stream: the consumer stops when it takes it."""

ROUTE = Route("far", Route("source"))


class Reader:
    """A consuming node: lets a task wait until its channel has something."""

    def __init__(self, key: Hashable = "far") -> None:
        self.key = key
        self.event = asyncio.Event()

    def wake(self) -> None:
        self.event.set()

    @property
    def hungry(self) -> bool:
        return True


def stream(seed: int, items: int, *, marks_every: int = 7) -> list[list[Any]]:
    """The puts of a stream, each a list: data as consecutive ints (batches of 1 to 5), or a Mark.

    Ends with ``[END]``. The same seed gives the same stream on every host.
    """
    rng = random.Random(seed)
    puts: list[list[Any]] = []
    n = 0
    while n < items:
        size = min(rng.randint(1, 5), items - n)
        puts.append(list(range(n, n + size)))
        n += size
        if len(puts) % marks_every == 0:
            puts.append([Mark(n)])
    puts.append([END])
    return puts


def expected(puts: list[list[Any]]) -> list[Any]:
    """What a consumer should take, flattened: the ints and marks in put order, less END."""
    return [m for put in puts for m in put if m != END]


# -- on the receiving host ---------------------------------------------------------------


def open_receiver(host: Host, channel_id: Hashable, capacity: int) -> None:
    host.add_receiver(channel_id, "source", Reader(), capacity)


async def consume(host: Host, channel_id: Hashable, pause: float = 0.0) -> list[Any]:
    """Take until END: ints and marks, flattened, in the order taken."""
    channel = host.receiver(channel_id).channel
    reader = channel.consumer
    assert isinstance(reader, Reader)
    taken: list[Any] = []
    while True:
        while not channel:
            reader.event.clear()
            await reader.event.wait()
        message = channel.take()
        if type(message) is not Batch:
            if message == END:
                return taken
            taken.append(message)
            continue
        taken.extend(message.values)
        if pause:
            await asyncio.sleep(pause)


async def take_batches(host: Host, channel_id: Hashable, count: int) -> list[Batch]:
    """Take ``count`` batches as they are."""
    channel = host.receiver(channel_id).channel
    reader = channel.consumer
    assert isinstance(reader, Reader)
    batches: list[Batch] = []
    while len(batches) < count:
        while not channel:
            reader.event.clear()
            await reader.event.wait()
        message = channel.take()
        assert type(message) is Batch
        batches.append(message)
    return batches


def delivered(host: Host, channel_id: Hashable, frames: int) -> bool:
    """Whether ``frames`` frames or more were delivered."""
    return host.receiver(channel_id).delivered >= frames


def items_in(host: Host, channel_id: Hashable) -> int:
    """Items in the receiving channel and in the frames it holds."""
    receiver = host.receiver(channel_id)
    statistics = receiver.statistics()
    return statistics.items - statistics.taken


def remove(host: Host, channel_id: Hashable) -> list[Any]:
    """Remove the channel's end; what it held, batches as their values."""
    return [m.values if type(m) is Batch else m for m in host.remove(channel_id)]


# -- on the sending host -----------------------------------------------------------------


@dataclass
class Produced:
    """What a producer did: how far it got, how it ended, and the sender's report."""

    puts: int = 0
    error: str | None = None
    cause: BaseException | None = None
    report: list[Any] | None = None
    delivered_frames: int = 0
    outstanding: int = 0


def open_sender(
    host: Host, channel_id: Hashable, to: Any, capacity: int, options: dict[str, Any]
) -> None:
    host.add_sender(channel_id, "source", Reader(), capacity, to, **options)


async def drain(host: Host, channel_id: Hashable) -> int:
    """Wait until credits confirm that everything put was taken; the frames confirmed."""
    await host.drain(channel_id)
    return host.sender(channel_id).statistics().delivered


async def produce(
    host: Host, channel_id: Hashable, puts: list[list[Any]], remove: bool = True
) -> Produced:
    """Put the stream into the channel: data as batches, marks as control messages.

    A put that raises ``TopologyClosedError`` ends it; ``remove`` then closes
    the sender and keeps its report.
    """
    sender = host.sender(channel_id)
    done = Produced()
    try:
        for put in puts:
            if type(put[0]) is Mark:
                sender.put_control(put[0])
            else:
                await sender.put(Batch(list(put), list(put), ROUTE))
            done.puts += 1
    except TopologyClosedError as exc:
        done.error = str(exc)
        done.cause = exc.__cause__
    statistics = sender.statistics()
    done.delivered_frames = statistics.delivered
    done.outstanding = statistics.outstanding
    if remove:
        done.report = [m.values if type(m) is Batch else m for m in host.remove(channel_id)]
    return done


async def put_items(host: Host, channel_id: Hashable, items: int) -> int:
    """Put ``items`` batches of one item each, then END; return the most items outstanding."""
    sender = host.sender(channel_id)
    most = 0
    for i in range(items):
        await sender.put(Batch([i], [i], ROUTE))
        most = max(most, sender.size)
    sender.put_control(END)
    return most


def outstanding(host: Host, channel_id: Hashable, items: int) -> bool:
    """Whether the sender counts ``items`` items put and not yet taken."""
    return host.sender(channel_id).size == items


async def send_batches(host: Host, channel_id: Hashable, batches: list[Batch]) -> None:
    sender = host.sender(channel_id)
    for batch in batches:
        sender.force_put(batch)
    sender.put_control(Mark(0))  # cut the frame now


# -- receivers that reorder, and one that does not re-sequence ---------------------------


class JitteredHost(HostActor):
    """A host whose frames first await a random moment, as a handler doing I/O would.

    So calls finish in any order; ``early`` counts frames that arrived before
    the one due.
    """

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._rng = random.Random(name)
        self.early = 0

    async def deliver_frame(self, channel_id: Hashable, frame: Frame) -> Credit:
        await asyncio.sleep(self._rng.choice((0.0, 0.0005, 0.002)))
        host = self.host
        with contextlib.suppress(KeyError):  # a channel it does not have: deliver() refuses
            if frame.seq != host.receiver(channel_id).delivered:
                self.early += 1
        return host.deliver(channel_id, frame)

    async def early_frames(self) -> int:
        return self.early


class StuckHost(HostActor):
    """A host that delivers its first three frames and never answers for the others."""

    async def deliver_frame(self, channel_id: Hashable, frame: Frame) -> Credit:
        if frame.seq >= 3:
            await asyncio.Event().wait()
        return await super().deliver_frame(channel_id, frame)


class StraightHost(JitteredHost):
    """The negative control: puts each frame's messages into the channel as it arrives.

    Its replies credit nothing, so its channel must be opened with room for
    the whole stream.
    """

    async def deliver_frame(self, channel_id: Hashable, frame: Frame) -> Credit:
        await asyncio.sleep(self._rng.choice((0.0, 0.0005, 0.002)))
        channel = self.host.receiver(channel_id).channel
        for message in frame.messages:
            if type(message) is Batch:
                channel.force_put(message)
            else:
                channel.put_control(message)
        return Credit(0, 0)


class LateHost(HostActor):
    """A host whose frames take a second to deliver: a call that comes after one is there first."""

    async def deliver_frame(self, channel_id: Hashable, frame: Frame) -> Credit:
        await asyncio.sleep(1.0)
        return await super().deliver_frame(channel_id, frame)
