"""Host actors of the Ray engine that reorder the frames they are given, for its tests.

Ray workers import this module by name (the ``cluster`` fixture puts the
repository on their ``PYTHONPATH``), as the engine's ``_actor_class``.

:class:`JitteredEngineHost` makes each delivered frame await a random moment
first, as a handler doing I/O would, so the calls of one channel finish in
any order; the receiver re-sequences them. :class:`StraightEngineHost` is the
negative control: it also delays, then hands each frame to the receiver as
the next one due, in arrival order, so nothing is re-sequenced. Both count
the frames that arrived with a sequence number other than the next expected
one (:meth:`~JitteredEngineHost.early_frames`): a test that needs frames out of
order checks that there were some.
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING

from hotplumb._errors import TopologyClosedError
from hotplumb._rayhost import EngineHost, Part
from hotplumb._wire import Frame

if TYPE_CHECKING:
    from collections.abc import Hashable

    from hotplumb._wire import Credit

DELAYS = (0.0, 0.0, 0.001, 0.005, 0.02)
"""Seconds a frame may wait before it is delivered, drawn at random per frame."""


class JitteredEngineHost(EngineHost):
    """A host whose frames first await a random moment; the receiver puts them back in order."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._rng = random.Random(name)
        self._expected: dict[Hashable, int] = {}  # per channel: the next seq in arrival order
        self.early = 0

    def _arrived(self, channel_id: Hashable, frame: Frame) -> int:
        """Count ``frame`` if it is not the one due; return the seq due in arrival order."""
        due = self._expected.get(channel_id, 0)
        if frame.seq != due:
            self.early += 1
        self._expected[channel_id] = due + 1
        return due

    async def deliver_frame(self, channel_id: Hashable, frame: Frame) -> Credit:
        await asyncio.sleep(self._rng.choice(DELAYS))
        self._arrived(channel_id, frame)
        return await super().deliver_frame(channel_id, frame)

    async def early_frames(self) -> int:
        """Frames that arrived with a sequence number other than the next expected one."""
        return self.early


class StraightEngineHost(JitteredEngineHost):
    """The negative control: each frame, once it arrives, is delivered as the next one due.

    It renumbers the frame to the channel's next sequence number in arrival
    order, so the receiver's hold-back never reorders anything: the messages
    enter the channel in the order the calls finished.
    """

    async def deliver_frame(self, channel_id: Hashable, frame: Frame) -> Credit:
        await asyncio.sleep(self._rng.choice(DELAYS))
        due = self._arrived(channel_id, frame)
        return self.host.deliver(channel_id, Frame(due, frame.messages))


class SlowToPrepareHost(EngineHost):
    """A host slow to make its part of each barrier (a busy process, a slow machine)."""

    async def prepare(self, part: Part) -> None:
        await asyncio.sleep(0.3)
        await super().prepare(part)


class RefusingHost(EngineHost):
    """A host whose every channel in refuses every frame (as one whose end is gone would)."""

    async def deliver_frame(self, channel_id: Hashable, frame: Frame) -> Credit:
        raise TopologyClosedError(f"no channel {channel_id!r} here")
