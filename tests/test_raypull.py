"""Channels into the driver over Ray: host actors send, the driver's Inbox pulls.

The session's local Ray is ``conftest.cluster``. What runs inside the actors
is in ``tests/pullnodes.py`` and ``tests/raynodes.py``: the workers import
them by name. Here, the test process is the driver: its :class:`Inbox` keeps a
collect in flight per host and its consumers take from the receivers'
channels. Every wait is bounded and waits for a count or an event, never for
time to pass.

Without Ray the tests are skipped, unless ``HOTPLUMB_REQUIRE_RAY=1``.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

import pytest

if os.environ.get("HOTPLUMB_REQUIRE_RAY") != "1":
    pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'hotplumb[ray]'")

import ray

from hotplumb import TopologyClosedError
from hotplumb._datum import Batch
from hotplumb._raypull import Inbox
from hotplumb._raywire import start_host
from tests import pullnodes, raynodes
from tests.raychecks import check_in_order, eventually, flat

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from hotplumb._channel import MemoryChannel

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def east(cluster: None) -> Iterator[Any]:
    actor = start_host("east")
    yield actor
    ray.kill(actor)


@pytest.fixture(scope="module")
def west(cluster: None) -> Iterator[Any]:
    actor = start_host("west")
    yield actor
    ray.kill(actor)


class Told:
    """What the inbox told: events and failures, each with its host, and a way to wait for them."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.failures: list[tuple[str, BaseException]] = []
        self.changed = asyncio.Event()
        self.on_event: Callable[[str, Any], None] | None = None  # a check to run on each

    def event(self, host: str, event: Any) -> None:
        if self.on_event is not None:
            self.on_event(host, event)
        self.events.append((host, event))
        self.changed.set()

    def failure(self, host: str, error: BaseException) -> None:
        self.failures.append((host, error))
        self.changed.set()

    async def until(self, check: Callable[[], bool], timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while not check():
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def told(cluster: None) -> Told:
    return Told()


@pytest.fixture
async def inbox(told: Told) -> AsyncIterator[Inbox]:
    async with Inbox(on_event=told.event, on_failure=told.failure) as opened:
        yield opened


async def run(actor: Any, function: Callable[..., Any], *args: Any) -> Any:
    return await actor.run.remote(function, *args)


async def take_until_end(channel: MemoryChannel, taken: list[Any] | None = None) -> list[Any]:
    """Take until END: ints and marks, flattened, in the order taken."""
    reader = channel.consumer
    assert isinstance(reader, raynodes.Reader)
    taken = [] if taken is None else taken
    while True:
        while not channel:
            reader.event.clear()
            await reader.event.wait()
        message = channel.take()
        if type(message) is not Batch:
            if message == raynodes.END:
                return taken
            taken.append(message)
            continue
        taken.extend(message.values)


def single_items(items: int, marks_every: int) -> list[list[Any]]:
    """Puts of one item each, a mark after every ``marks_every``, then END."""
    puts: list[list[Any]] = []
    for i in range(items):
        puts.append([i])
        if (i + 1) % marks_every == 0:
            puts.append([raynodes.Mark(i + 1)])
    puts.append([raynodes.END])
    return puts


async def test_a_stream_crosses_to_the_driver_complete_in_order_and_once(
    east: Any, inbox: Inbox
) -> None:
    puts = raynodes.stream(seed=11, items=3000)
    inbox.add_host("east", east)
    receiver = inbox.add_receiver("to driver", "east", "source", raynodes.Reader("sink"), 64)
    await run(east, pullnodes.open_to_driver, "to driver", 64, {"frame_items": 16})
    consuming = asyncio.create_task(take_until_end(receiver.channel))
    async with asyncio.timeout(30):
        produced = await run(east, raynodes.produce, "to driver", puts, False)
        taken = await consuming
    assert produced.error is None
    check_in_order(raynodes.expected(puts), taken)
    assert inbox.statistics().hosts["east"].collects > 1
    await eventually(lambda: run(east, pullnodes.confirmed, "to driver"))  # the next collect's
    assert await run(east, raynodes.remove, "to driver") == []
    assert inbox.remove("to driver") == []


async def test_several_channels_from_two_hosts_cross_at_once(
    east: Any, west: Any, inbox: Inbox
) -> None:
    inbox.add_host("east", east)
    inbox.add_host("west", west)
    channels = [
        ("east", east, "e1"),
        ("east", east, "e2"),
        ("west", west, "w1"),
        ("west", west, "w2"),
    ]
    streams = {
        cid: raynodes.stream(seed=20 + n, items=2000) for n, (_, _, cid) in enumerate(channels)
    }
    consumers = []
    for name, actor, cid in channels:
        receiver = inbox.add_receiver(cid, name, "source", raynodes.Reader("sink"), 32)
        await run(actor, pullnodes.open_to_driver, cid, 32, {"frame_items": 8})
        consumers.append(asyncio.create_task(take_until_end(receiver.channel)))
    async with asyncio.timeout(60):
        produced = await asyncio.gather(
            *(run(actor, raynodes.produce, cid, streams[cid], False) for _, actor, cid in channels)
        )
        taken = await asyncio.gather(*consumers)
    for (_, actor, cid), done, got in zip(channels, produced, taken, strict=True):
        assert done.error is None, cid
        check_in_order(raynodes.expected(streams[cid]), got)
        await eventually(lambda: run(actor, pullnodes.confirmed, cid))  # noqa: B023 (awaited here)
        assert await run(actor, raynodes.remove, cid) == []
        assert inbox.remove(cid) == []


async def test_a_driver_consumer_that_stops_taking_stops_the_host_producer_at_the_bound(
    east: Any, inbox: Inbox
) -> None:
    inbox.add_host("east", east)
    receiver = inbox.add_receiver("bounded", "east", "source", raynodes.Reader("sink"), 10)
    await run(east, pullnodes.open_to_driver, "bounded", 10, {"frame_items": 4})
    putting = east.run.remote(pullnodes.put_apart, "bounded", 100)
    try:
        # Starved: a put waits for credit, and no frame is unconfirmed whose credit could bring it.
        await eventually(lambda: _starved_at(east, "bounded", 10))
        assert receiver.statistics().items == 10  # all it sent came, and no more
        assert receiver.channel.size == 10
        ready, _ = ray.wait([putting], timeout=0)
        assert not ready
        first = receiver.channel.take()  # one batch of one item: only a grant can say so
        assert first.values == [0]

        # The producer went on by exactly that item, and waits again.
        async def went_on() -> bool:
            return receiver.statistics().items == 11 and await _starved_at(east, "bounded", 10)

        await eventually(went_on)
        assert inbox.statistics().hosts["east"].grants >= 1
        async with asyncio.timeout(30):
            rest = await take_until_end(receiver.channel)
            most = await putting
        assert rest == list(range(1, 100))
        assert most <= 10  # never more than capacity between the nodes
    finally:
        await run(east, raynodes.remove, "bounded")
        inbox.remove("bounded")


async def _starved_at(actor: Any, channel_id: str, items: int) -> bool:
    return bool(await run(actor, pullnodes.starved_at, channel_id) == items)


async def test_events_arrive_in_order_each_after_the_frames_sent_before_it(
    east: Any, inbox: Inbox, told: Told
) -> None:
    puts = single_items(300, marks_every=10)
    inbox.add_host("east", east)
    receiver = inbox.add_receiver("told", "east", "source", raynodes.Reader("sink"), 8)
    delivered_at: list[int] = []

    def check(host: str, event: Any) -> None:  # when each event comes: what had come before it
        assert host == "east"
        delivered_at.append(receiver.statistics().items)

    told.on_event = check
    options = {"frame_items": 4, "in_flight": 10_000}  # a frame cut goes to its call at once
    await run(east, pullnodes.open_to_driver, "told", 8, options)
    consuming = asyncio.create_task(take_until_end(receiver.channel))
    async with asyncio.timeout(30):
        posted = await run(east, pullnodes.produce_posting, "told", puts)
        taken = await consuming
        await told.until(lambda: len(told.events) >= posted)
    check_in_order(raynodes.expected(puts), taken)
    marks = [put[0] for put in puts if type(put[0]) is raynodes.Mark]  # END's event too
    assert [event for _, event in told.events] == [pullnodes.After(m) for m in marks]
    for mark, items in zip(marks, delivered_at, strict=True):
        assert items >= mark.n, f"After({mark}) came with only {items} items delivered"
    assert delivered_at[0] < 300  # interleaved: the stream could not all come first
    await run(east, raynodes.remove, "told")
    inbox.remove("told")


async def test_a_host_killed_midstream_is_told_and_the_other_host_goes_on(
    east: Any, cluster: None
) -> None:
    before = asyncio.all_tasks()
    told = Told()
    inbox = Inbox(on_event=told.event, on_failure=told.failure)
    doomed = start_host("doomed")
    try:
        inbox.add_host("doomed", doomed)
        inbox.add_host("east", east)
        inbox.add_receiver("doomed", "doomed", "source", raynodes.Reader("sink"), 8)
        kept = inbox.add_receiver("kept", "east", "source", raynodes.Reader("sink"), 16)
        await run(doomed, pullnodes.open_to_driver, "doomed", 8, {"frame_items": 2})
        await run(east, pullnodes.open_to_driver, "kept", 16, {"frame_items": 4})
        doomed_putting = doomed.run.remote(pullnodes.put_apart, "doomed", 100)
        await eventually(lambda: _starved_at(doomed, "doomed", 8))  # mid-stream, waiting
        ray.kill(doomed)
        await told.until(lambda: bool(told.failures))
        [(name, error)] = told.failures
        assert name == "doomed"
        assert isinstance(error, ray.exceptions.RayActorError)
        assert inbox.statistics().hosts["doomed"].failed
        with pytest.raises(ray.exceptions.RayActorError):
            await doomed_putting
        # The other host delivers on, after the death.
        puts = raynodes.stream(seed=30, items=1000)
        consuming = asyncio.create_task(take_until_end(kept.channel))
        async with asyncio.timeout(30):
            produced = await run(east, raynodes.produce, "kept", puts, False)
            taken = await consuming
        assert produced.error is None
        check_in_order(raynodes.expected(puts), taken)
        assert len(told.failures) == 1  # told once
        await run(east, raynodes.remove, "kept")
    finally:
        async with asyncio.timeout(10):
            await inbox.close()
        ray.kill(doomed)  # killed already, unless the test failed first
    assert asyncio.all_tasks() - before == set()  # no poll loop, no grant call left


async def test_a_channel_removed_on_the_driver_fails_its_idle_sender(
    east: Any, inbox: Inbox
) -> None:
    inbox.add_host("east", east)
    inbox.add_receiver("gone", "east", "source", raynodes.Reader("sink"), 10)
    await run(east, pullnodes.open_to_driver, "gone", 10, {})
    assert inbox.remove("gone") == []  # the consumer went away before anything came
    puts: list[list[Any]] = [[1], [2]] * 50
    async with asyncio.timeout(30):
        produced = await run(east, raynodes.produce, "gone", puts, True)
    assert produced.error is not None
    assert "the driver has no channel 'gone'" in produced.error
    assert isinstance(produced.cause, TopologyClosedError)
    assert produced.puts < len(puts)
    assert flat(produced.report) == flat(puts[: produced.puts])  # refused, so all reported


async def test_a_channel_removed_on_the_driver_fails_its_starved_sender(
    east: Any, inbox: Inbox
) -> None:
    inbox.add_host("east", east)
    inbox.add_receiver("full", "east", "source", raynodes.Reader("sink"), 4)
    await run(east, pullnodes.open_to_driver, "full", 4, {"frame_items": 2})
    puts = [[i] for i in range(100)]
    producing = east.run.remote(raynodes.produce, "full", puts, True)
    await eventually(lambda: _starved_at(east, "full", 4))  # its want waits at the driver
    held = inbox.remove("full")  # the consumer goes, having taken nothing
    async with asyncio.timeout(30):
        produced = await producing
    assert produced.error is not None
    assert "its end of the channel was sealed or closed" in produced.error
    # Nothing silently dropped: the driver's channel held part, the sender reports the rest.
    got = [v for m in held for v in m.values]
    assert got + flat(produced.report) == flat(puts[: produced.puts])
    assert got == [0, 1, 2, 3]
