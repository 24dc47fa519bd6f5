"""The in-process channel against each guarantee of the ``Channel`` interface.

Each test names the guarantee of ``hotplumb._channel`` it checks. Waiting is
observed through the event loop: :func:`wait_all_tasks_blocked` returns once
every task waits for something, so "still waiting" and "has proceeded" are
exact statements, not timing guesses.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

from hotplumb import TopologyClosedError
from hotplumb._channel import COALESCE, MemoryChannel
from hotplumb._datum import Batch, Route
from hotplumb.testing import wait_all_tasks_blocked

if TYPE_CHECKING:
    from collections.abc import Hashable

    from hotplumb._channel import Channel


class Reader:
    """A consumer that counts how often it was woken."""

    def __init__(self, key: Hashable = "reader") -> None:
        self.key = key
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1

    @property
    def hungry(self) -> bool:
        return True


def batch(*values: Any) -> Batch:
    """A batch of its own route, so the channel never merges it with another."""
    items = list(values)
    return Batch(items, items, Route(("route", id(items))))


def channel(capacity: int) -> MemoryChannel:
    return MemoryChannel("producer", Reader(), capacity)


def drain(ch: MemoryChannel) -> list[Any]:
    taken = []
    while ch:
        taken.append(ch.take())
    return taken


def values(messages: list[Any]) -> list[Any]:
    """The values of the batches among ``messages``, and the control messages as they are."""
    return [m.values if type(m) is Batch else m for m in messages]


async def putter(ch: MemoryChannel, b: Batch) -> asyncio.Task[None]:
    """Start ``ch.put(b)`` in a task and let it run until it waits."""
    task = asyncio.create_task(ch.put(b))
    await wait_all_tasks_blocked()
    return task


def test_memory_channel_implements_the_channel_interface() -> None:
    ch: Channel = MemoryChannel(None, Reader(), 4)  # checked by mypy: the protocol, structurally
    ch.force_put(batch(1))
    assert ch.size == 1
    assert ch.producer is None
    assert ch.consumer.key == "reader"


# 1. FIFO between data and control -------------------------------------------------------


async def test_batches_and_control_messages_come_out_in_the_order_they_went_in() -> None:
    ch = channel(10)
    first, mark, later = object(), object(), object()
    await ch.put(batch(1))
    ch.put_control(first)
    ch.force_put(batch(2))
    await ch.put(batch(3, 4))
    ch.put_control(mark)
    ch.force_put(batch(5))
    ch.put_control(later)
    await ch.put(batch(6))
    assert len(ch) == 8
    assert values(drain(ch)) == [[1], first, [2], [3, 4], mark, [5], later, [6]]
    assert not ch
    assert ch.size == 0


# 2. bounded data -----------------------------------------------------------------------------


async def test_put_waits_while_the_channel_is_full_and_proceeds_when_space_is_freed() -> None:
    ch = channel(2)
    await ch.put(batch(1))
    await ch.put(batch(2))
    assert ch.size == 2
    blocked = await putter(ch, batch(3))
    assert not blocked.done()  # size >= capacity: it waits
    assert ch.size == 2
    assert ch.take().values == [1]
    await wait_all_tasks_blocked()
    assert blocked.done()
    await blocked
    assert values(drain(ch)) == [[2], [3]]


async def test_put_goes_in_below_capacity_even_with_a_batch_larger_than_the_space() -> None:
    ch = channel(3)
    await ch.put(batch(1, 2))
    await asyncio.wait_for(ch.put(batch(3, 4, 5)), 1)  # size 2 < 3: it goes in at once
    assert ch.size == 5
    blocked = await putter(ch, batch(6))
    assert not blocked.done()
    blocked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocked


async def test_capacity_counts_items_not_batches() -> None:
    ch = channel(3)
    await ch.put(batch(1, 2, 3))  # one batch, three items: the channel is full
    assert ch.size == 3
    assert len(ch) == 1
    blocked = await putter(ch, batch(4))
    assert not blocked.done()
    ch.take()
    await wait_all_tasks_blocked()
    assert blocked.done()
    assert ch.size == 1


async def test_waiting_putters_are_served_in_the_order_they_started_waiting() -> None:
    ch = channel(1)
    await ch.put(batch("full"))
    waiting = [await putter(ch, batch(name)) for name in ("a", "b", "c")]
    assert not any(t.done() for t in waiting)
    taken = []
    for expected_done in range(1, 4):
        taken.append(ch.take())
        await wait_all_tasks_blocked()
        assert [t.done() for t in waiting] == [i < expected_done for i in range(3)]
    taken.append(ch.take())
    assert values(taken) == [["full"], ["a"], ["b"], ["c"]]


async def test_a_new_putter_queues_behind_waiting_ones_even_when_there_is_space() -> None:
    ch = channel(1)
    await ch.put(batch("full"))
    go = asyncio.Event()

    async def late() -> None:
        await go.wait()
        await ch.put(batch("late"))

    newcomer = asyncio.create_task(late())
    waiting = [await putter(ch, batch(name)) for name in ("a", "b")]
    go.set()  # the newcomer runs before "a", woken next, can use the space...
    taken = [ch.take()]
    await wait_all_tasks_blocked()
    assert not newcomer.done()  # ...but it queues behind "b", which still waits
    for _ in range(3):
        taken.append(ch.take())
        await wait_all_tasks_blocked()
    assert all(t.done() for t in [*waiting, newcomer])
    assert values(taken) == [["full"], ["a"], ["b"], ["late"]]


async def test_a_woken_putter_keeps_its_place_when_force_put_takes_the_space() -> None:
    ch = channel(1)
    await ch.put(batch("full"))
    waiting = [await putter(ch, batch(name)) for name in ("a", "b")]
    ch.take()  # wakes "a"...
    ch.force_put(batch("forced"))  # ...but the space is gone before it runs
    await wait_all_tasks_blocked()
    taken = []
    for _ in range(3):
        taken.append(ch.take())
        await wait_all_tasks_blocked()
    assert all(t.done() for t in waiting)
    assert values(taken) == [["forced"], ["a"], ["b"]]


# 3. control never waits ----------------------------------------------------------------


async def test_control_messages_never_wait_and_do_not_count_against_capacity() -> None:
    ch = channel(1)
    await ch.put(batch(1))
    marks = [object() for _ in range(5)]
    for mark in marks:
        ch.put_control(mark)  # a full channel still takes control at once
    assert ch.size == 1
    assert len(ch) == 6
    assert ch.take().values == [1]
    # Only the control messages are left: the channel has space for data again.
    assert ch.size == 0
    await asyncio.wait_for(ch.put(batch(2)), 1)
    assert ch.take() is marks[0]
    assert ch.size == 1  # taking a control message frees no data space


async def test_force_put_passes_the_capacity_without_waiting() -> None:
    ch = channel(1)
    await ch.put(batch(1))
    ch.force_put(batch(2, 3))
    assert ch.size == 3
    blocked = await putter(ch, batch(4))
    assert not blocked.done()  # force_put's items count: ordinary puts wait
    ch.take()
    ch.take()
    await wait_all_tasks_blocked()
    assert blocked.done()
    assert values(drain(ch)) == [[4]]


async def test_push_front_puts_a_batch_at_the_head_and_counts_it() -> None:
    ch = channel(4)
    mark = object()
    await ch.put(batch(1))
    ch.put_control(mark)
    ch.push_front(batch(0, 0))
    assert ch.size == 3
    assert values(drain(ch)) == [[0, 0], [1], mark]
    ch.push_front(batch(9))  # into an empty channel
    assert ch
    assert ch.size == 1
    assert ch.take().values == [9]


async def test_push_front_puts_a_control_message_back_without_counting_it() -> None:
    ch = channel(4)
    mark = object()
    await ch.put(batch(1))
    ch.push_front(mark)
    ch.push_front(batch(0))  # what came before the message goes back ahead of it
    assert ch.size == 2
    assert values(drain(ch)) == [[0], mark, [1]]
    ch.push_front(mark)  # into an empty channel
    assert not ch.empty
    assert ch.size == 0
    assert ch.take() is mark
    assert ch.empty


# 4. no silent loss ---------------------------------------------------------------------


async def test_a_sealed_channel_refuses_data_but_keeps_what_it_held() -> None:
    ch = channel(4)
    mark = object()
    await ch.put(batch(1))
    ch.put_control(mark)
    ch.seal()
    assert ch.closed
    with pytest.raises(TopologyClosedError, match="'reader' takes no more data"):
        await ch.put(batch(2))
    assert values(drain(ch)) == [[1], mark]


async def test_sealing_wakes_a_putter_waiting_for_space_and_it_raises() -> None:
    ch = channel(1)
    await ch.put(batch(1))
    blocked = await putter(ch, batch(2))
    other = await putter(ch, batch(3))
    assert not blocked.done()
    ch.seal()
    await wait_all_tasks_blocked()
    for task in (blocked, other):
        assert task.done()
        with pytest.raises(TopologyClosedError):
            await task
    assert values(drain(ch)) == [[1]]  # what was held stays for the consumer


async def test_close_returns_what_was_held_and_wakes_putters_to_raise() -> None:
    ch = channel(2)
    mark = object()
    await ch.put(batch(1, 2))
    ch.put_control(mark)
    blocked = await putter(ch, batch(3))
    held = ch.close()
    assert values(held) == [[1, 2], mark]
    assert ch.closed
    assert not ch
    assert ch.size == 0
    await wait_all_tasks_blocked()
    assert blocked.done()
    with pytest.raises(TopologyClosedError):
        await blocked
    with pytest.raises(TopologyClosedError):
        await ch.put(batch(4))
    assert ch.close() == []  # closing again holds nothing


# 5. the consumer is told ---------------------------------------------------------------


async def test_every_message_put_wakes_the_consumer() -> None:
    reader = Reader()
    ch = MemoryChannel("producer", reader, 1)
    await ch.put(batch(1))
    assert reader.wakes == 1
    ch.put_control(object())
    assert reader.wakes == 2
    ch.force_put(batch(2))
    assert reader.wakes == 3
    blocked = await putter(ch, batch(3))
    assert reader.wakes == 3  # a waiting putter has put nothing yet
    ch.take()
    ch.take()
    ch.take()
    await wait_all_tasks_blocked()
    assert blocked.done()
    assert reader.wakes == 4


# cancellation -----------------------------------------------------------------------------


async def test_a_cancelled_waiting_putter_leaves_the_queue() -> None:
    ch = channel(1)
    await ch.put(batch(1))
    first = await putter(ch, batch("first"))
    second = await putter(ch, batch("second"))
    first.cancel()
    await wait_all_tasks_blocked()
    assert first.cancelled()
    assert not second.done()
    ch.take()
    await wait_all_tasks_blocked()
    assert second.done()
    assert values(drain(ch)) == [["second"]]


async def test_a_putter_cancelled_after_being_woken_passes_the_wake_up_on() -> None:
    ch = channel(1)
    await ch.put(batch(1))
    first = await putter(ch, batch("first"))
    second = await putter(ch, batch("second"))
    ch.take()  # wakes `first`...
    first.cancel()  # ...which is cancelled before it runs: it will not use the space
    await wait_all_tasks_blocked()
    assert first.cancelled()
    assert second.done()  # the wake-up was not lost
    assert values(drain(ch)) == [["second"]]


async def test_a_cancelled_putter_does_not_hold_up_a_later_one() -> None:
    ch = channel(1)
    await ch.put(batch(1))
    gone = await putter(ch, batch("gone"))
    gone.cancel()
    await wait_all_tasks_blocked()
    assert gone.cancelled()
    ch.capacity = 2  # as a live change's cut may do: now there is space
    await asyncio.wait_for(ch.put(batch(2)), 1)  # nobody real waits ahead of it
    assert values(drain(ch)) == [[1], [2]]


# coalescing ------------------------------------------------------------------------


def plain(route: Route | None, *values: Any) -> Batch:
    items = list(values)
    return Batch(items, list(items), route)


async def test_consecutive_batches_of_one_route_are_merged_into_one() -> None:
    ch = channel(100)
    route = Route("a")
    shared = plain(route, 1)
    await ch.put(shared)
    await ch.put(plain(route, 2, 3))
    ch.force_put(plain(route, 4))
    assert ch.size == 4
    assert len(ch) == 1
    (merged,) = drain(ch)
    assert merged.values == [1, 2, 3, 4]
    assert merged.origins == [1, 2, 3, 4]
    assert merged.route is route
    assert shared.values == [1]  # a batch put (and maybe shared with other readers) is not changed


async def test_merging_never_crosses_a_control_message() -> None:
    ch = channel(100)
    route = Route("a")
    mark = object()
    await ch.put(plain(route, 1))
    ch.put_control(mark)
    await ch.put(plain(route, 2))
    await ch.put(plain(route, 3))
    assert values(drain(ch)) == [[1], mark, [2, 3]]


async def test_batches_of_other_routes_or_with_parents_or_traces_are_not_merged() -> None:
    ch = channel(100)
    a, b = Route("a"), Route("b")
    await ch.put(plain(a, 1))
    await ch.put(plain(b, 2))
    await ch.put(Batch([3], [3], b, parents=[()]))
    await ch.put(plain(b, 4))
    assert values(drain(ch)) == [[1], [2], [3], [4]]


async def test_a_batch_the_consumer_took_is_not_extended() -> None:
    ch = channel(100)
    route = Route("a")
    await ch.put(plain(route, 1))
    await ch.put(plain(route, 2))
    taken = ch.take()
    await ch.put(plain(route, 3))
    assert taken.values == [1, 2]
    assert values(drain(ch)) == [[3]]


async def test_a_merged_batch_holds_at_most_coalesce_items() -> None:
    ch = channel(10 * COALESCE)
    route = Route("a")
    for i in range(COALESCE + 1):
        await ch.put(plain(route, i))
    sizes = [len(b.values) for b in drain(ch)]
    assert sizes == [COALESCE, 1]
