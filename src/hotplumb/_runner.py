"""One running node: its task, its processing of batches, its place in a live change.

Concurrency rules, which the rest of the runtime relies on:

* A runner's task is the only code that takes from its input channels, touches
  its state, or changes its version, inputs and outputs. The live-change
  protocol (``_change``) prepares a switch; the runner's task applies it, at
  the point in its input streams where the barrier arrived
  (:func:`~hotplumb._change.receive`).
* A batch is processed and sent on to every reader before the next message is
  taken, so a runner's outputs are in the order of its inputs, and a barrier it
  forwards is behind every output of the data that came before it.
* Alignment: while the node's :class:`~hotplumb._change.Aligner` holds an
  input (the pending barrier arrived on it), that input is not read.
* Nothing is dropped silently: a datum whose processing raised goes to the
  node's ``on_error`` or to the dead-letter record; if the node's task dies,
  what it produced is sent and the rest of its batch is put back at the head
  of its channel for the restarted task. A concurrent node that dies while it
  settles its calls before a barrier puts the barrier back too, behind the
  inputs put back (they came before it): the restarted task processes them
  with the old version, then acts on the barrier.

The runner sees the topology only through :class:`NodeHost`. Its processing
is its kernel's strategy filling one :class:`~hotplumb._kernel.Outputs`
(``_kernel``); the runner moves batches, keeps the totals and supervises.
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import types
from collections import deque
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

from hotplumb._change import Aligner, Barrier, receive
from hotplumb._clock import SystemClock
from hotplumb._context import Context
from hotplumb._datum import Batch, Datum, Emission, NodeError, Route, Trace
from hotplumb._errors import NodeFailedError, TopologyClosedError
from hotplumb._kernel import (
    FAILED,
    LATENCY,
    Mode,
    Outputs,
    await_each,
    awaited,
    call_one,
    ends_task,
    failing,
    prepare_call,
)
from hotplumb._node import SKIP, Pool
from hotplumb._snapshot import NodeStatistics

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Hashable

    from hotplumb._channel import Channel
    from hotplumb._clock import Clock
    from hotplumb._kernel import Kernel
    from hotplumb._node import Node, RestartPolicy
    from hotplumb._observe import Observer

__all__ = ["Crash", "NodeHost", "Runner", "Window"]


# Seconds an idle node's task waits for more input before it ends.
_LINGER = 0.05

# Seconds a node's task waits at most for its cancelled calls to end, after a
# crash or when it is stopped (real time, like _LINGER: a call that ignores its
# cancellation must not hold up a restart or a close for ever).
_UNWIND = 1.0


class NodeHost(Protocol):
    """What a running node needs of its topology."""

    @property
    def clock(self) -> Clock:
        """The topology's clock."""
        ...

    @property
    def trace(self) -> bool:
        """Whether per-hop timing is recorded."""
        ...

    @property
    def clock_name(self) -> str | None:
        """Whose clock times the hops (:attr:`Trace.clock <hotplumb.Trace.clock>`)."""
        ...

    @property
    def observer(self) -> Observer | None:
        """Who is told of every batch sent and every failure (``None``: nobody)."""
        ...

    @property
    def restart(self) -> RestartPolicy:
        """The default restart policy."""
        ...

    @property
    def closing(self) -> bool:
        """Whether the topology is stopping (no source starts)."""
        ...

    @property
    def closed(self) -> bool:
        """Whether the topology has stopped (no task starts)."""
        ...

    def spawn(
        self, coro: Coroutine[Any, Any, None], name: str, node: Hashable | None = None
    ) -> asyncio.Task[None] | None:
        """Start a task the topology owns (``node``: the node it processes for).

        Returns ``None`` if the topology is shutting down.
        """
        ...

    def dead_letter(self, datum: Datum) -> None:
        """Record a failed datum nobody handled."""

    def task_died(self, key: Hashable, version: int, error: BaseException, fatal: bool) -> None:
        """Report that a node's task (or source) died; ``fatal``: past its restart policy."""

    def pool(self, kind: Pool) -> Executor:
        """The executor of that kind the topology owns (made on first use)."""
        ...


def make_pool(kind: Pool) -> Executor:
    """A new executor of that kind (a topology, or a host of one, owns it)."""
    if kind is Pool.PROCESSES:
        # Spawned, not forked: forking a process that runs an event loop
        # (and threads) is unsafe.
        return ProcessPoolExecutor(mp_context=multiprocessing.get_context("spawn"))
    return ThreadPoolExecutor(thread_name_prefix="hotplumb")


class Crash(Exception):
    """The node's own machinery failed (its ``on_error`` raised): its task dies."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


class Window:
    """The calls in flight of a concurrent node, oldest first.

    Each call runs in a task of its own: for an ``async def`` of the value
    with no timeout, the task runs the callable's own coroutine, with nothing
    wrapped around it (or :func:`~hotplumb._kernel.awaited` of another
    awaitable it returned, or :func:`~hotplumb._kernel.failing` of the error
    it raised when called); otherwise it runs :func:`~hotplumb._kernel.call_one`.
    A call's result or exception stays in its task until the runner settles
    it. The runner owns the tasks (it cancels them when its task ends) and
    settles them in the order they started, so the node's outputs leave in
    input order.
    """

    __slots__ = ("calls", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        # Per call: the outputs of its batch, its input's parents, its task.
        self.calls: deque[tuple[Outputs, tuple[Datum, ...], asyncio.Task[Any]]] = deque()

    def cancel(self) -> None:
        """Cancel every call in flight (their inputs are put back or reported).

        Each call's outcome is retrieved, now or when it ends: a call may end
        with an error of its own rather than the cancellation (its coroutine
        catches CancelledError and raises), and nobody settles it any more.
        """
        while self.calls:
            task = self.calls.pop()[2]
            if not task.done():
                task.cancel()
                task.add_done_callback(_retrieve)
            else:
                _retrieve(task)  # its input is put back, not lost

    async def stop(self) -> None:
        """Cancel every call in flight and wait until they have ended.

        A call may take a while to end once cancelled (its coroutine tidies
        up): until it has, it is still in flight, and a restarted task must
        not start more beside it. The wait is bounded by ``_UNWIND`` real
        seconds; cancelling the waiting task ends the wait (the calls stay
        cancelled, and their outcomes are retrieved when they end).
        """
        running = [task for _, _, task in self.calls if not task.done()]
        self.cancel()
        if running:
            await asyncio.wait(running, timeout=_UNWIND)


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark the outcome of a call nobody settles as retrieved."""
    if not task.cancelled():
        task.exception()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _expire_after(waiter: asyncio.Future[None], call: asyncio.Future[Any]) -> None:
    """A call's done callback: ``waiter`` is done too."""
    if not waiter.done():
        waiter.set_result(None)


class Runner:
    """A node of a running topology (internal; see :class:`~hotplumb.Topology`)."""

    __slots__ = (
        "_deaths",
        "_host",
        "_offered",
        "_offsets",
        "_routes",
        "_rr",
        "_waiter",
        "aligner",
        "busy",
        "ctx",
        "emitted",
        "entry",
        "failed",
        "filtered",
        "flushed",
        "gone",
        "hungry",
        "inputs",
        "kernel",
        "key",
        "last_error",
        "node",
        "outputs",
        "position_base",
        "produced",
        "producer",
        "received",
        "restarts",
        "resume_offset",
        "sending",
        "started",
        "stopped",
        "task",
        "version",
        "window",
    )

    def __init__(
        self,
        host: NodeHost,
        key: Hashable,
        node: Node,
        kernel: Kernel,
        version: int,
        readers: frozenset[Hashable],
        aligner: Aligner,
    ) -> None:
        self._host = host
        self.key = key
        self.node = node
        self.kernel = kernel
        self.version = version
        self.aligner = aligner
        self.inputs: list[Channel] = []
        self.outputs: list[Channel] = []
        self.entry: Channel | None = None
        self.ctx = Context(
            key,
            version,
            node.inputs,
            readers,
            host.clock,
            node.state() if node.state is not None else None,
        )
        # Totals of the batches done; the one in hand is in `current`.
        self.received = self.emitted = self.filtered = self.failed = self.restarts = 0
        self.last_error: NodeError | None = None
        # What the node holds, for statistics and the shutdown report: the
        # input batches being processed, oldest first, each with what it
        # produced so far (`busy`: at most one unless the node is concurrent),
        # and an output batch being sent to the readers (`sending`).
        self.busy: deque[Outputs] = deque()
        self.sending: Batch | None = None
        # Whether the node has nothing in hand, no batch being processed or
        # sent: it would take input at once. It sums up `busy` and `sending`
        # (a batch is sent only while its outputs are in `busy`), and changes
        # with `busy`; a producer reads it after each input while it waits to
        # send early (see readers_idle), so it is kept rather than computed.
        self.hungry = True
        # The calls in flight of a concurrent node (None for one at a time).
        self.window: Window | None = Window(kernel.concurrency) if kernel.concurrency > 1 else None
        self.started = False
        self.stopped = False
        self.gone = False  # removed from the topology: let go of its wiring when idle
        self.flushed = False  # whether the node's flush ran (at most once)
        self.task: asyncio.Task[None] | None = None
        self.producer: asyncio.Task[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._rr = 0
        self._offered: Batch | None = None  # what the producer waits to put
        self._deaths: deque[float] | None = None  # times of recent deaths, made on the first
        # Interned routes: per incoming route (None at an entry point), the one
        # this node extends it to. They live as long as the node does.
        self._routes: dict[Route | None, Route] = {}
        # Checkpoints. An entry point's position is `position_base` (restored
        # from a checkpoint) plus what it took in this run (`received`). A
        # resumable source numbers what it produces (`produced`) and keeps
        # `(number, offset)` pairs from the one its entry point took last on
        # (the entry channel is FIFO and only the source feeds it, so the n-th
        # value taken is the n-th produced); `resume_offset` is where it
        # started from (restored, or None).
        self.position_base = 0
        self.produced = 0
        self.resume_offset: Any = None
        self._offsets: deque[tuple[int, Any]] = deque()

    @property
    def clock(self) -> Clock:
        """The topology's clock (for the kernel's strategies)."""
        return self._host.clock

    @property
    def executor(self) -> Executor | None:
        """The executor the node's calls run in, if it has one."""
        executor = self.kernel.executor
        if executor is None or isinstance(executor, Executor):
            return executor
        return self._host.pool(executor)

    def _fit_window(self) -> None:
        """After a switch: a window as wide as the (new) kernel's concurrency."""
        concurrency = self.kernel.concurrency
        if concurrency == 1:
            self.window = None
        elif self.window is None or self.window.size != concurrency:
            self.window = Window(concurrency)

    # -- wiring -----------------------------------------------------------------

    def wake(self) -> None:
        """Make sure the task will look at its inputs (called by channels).

        A node has a task only while it has something to do: an idle node
        costs a few small objects, not a suspended task. A message for an idle
        node starts its task.
        """
        if self.task is None:
            if self.started and not self.stopped and not self._host.closed:
                self.task = self._host.spawn(
                    self.supervise(), f"hotplumb node {self.key!r}", self.key
                )
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def start(self) -> None:
        """Start the node (its task runs when it has input) and its source's producer."""
        self.started = True
        if any(self.inputs):
            self.task = self._host.spawn(self.supervise(), f"hotplumb node {self.key!r}", self.key)
        self.start_producer()

    def start_producer(self) -> None:
        """Start the generator source of this node, if it has one."""
        if self.node.source is not None and self.producer is None and not self._host.closing:
            self.producer = self._host.spawn(self._produce(), f"hotplumb source {self.key!r}")

    def stop_producer(self) -> None:
        """Cancel the generator source, if running (it produces nothing more).

        A value it produced and is still offering to a full entry channel goes
        in anyway: it was produced before the stop, so it goes before whatever
        follows (a change's barrier, or the final drain), and is not lost.
        """
        if self.producer is not None:
            offered = self._offered
            if offered is not None and self.entry is not None and not self.entry.closed:
                self.entry.force_put(offered)
            self._offered = None
            self.producer.cancel()
            self.producer = None

    @property
    def position(self) -> int:
        """For an entry point: the items it has accepted, counting from the restored position."""
        return self.position_base + self.received

    def source_offset(self) -> Any:
        """For a resumable source: the offset of the last value its entry point took.

        Called in the node's task (at a checkpoint's barrier, or at its switch).
        """
        taken = self.received
        for number, offset in self._offsets:
            if number == taken:
                return offset
        return self.resume_offset  # nothing taken in this run yet

    def _offset_to_resume(self) -> Any:
        """Where a restarted generator goes on: after the last value produced."""
        return self._offsets[-1][1] if self._offsets else self.resume_offset

    def retire(self) -> None:
        """Stop for good: the change that made this node was not cut."""
        self.stopped = True
        self.stop_producer()
        if self.task is not None:
            self.task.cancel()
        self.release()

    def release(self) -> None:
        """The node has left the topology: drop its wiring once its task has ended.

        A node and its channels refer to each other; breaking the cycle lets
        reference counting free a removed node at once, even when the
        collector does not scan it (a process that ran with ``gc_freeze``).
        """
        self.stopped = self.gone = True
        if self.task is None:
            self._unlink()

    def _unlink(self) -> None:
        self.inputs = []
        self.outputs = []
        self.entry = None
        self._routes = {}
        # A failure's traceback holds frames that hold this node.
        self.last_error = None

    @property
    def waiting_for_demand(self) -> bool:
        """Whether this is a source with no readers."""
        return self.node.source is not None and not self.ctx.readers

    # -- the task ---------------------------------------------------------------

    async def supervise(self) -> None:
        """Run the node until it is idle, restarting it under the restart policy.

        The node loop is this coroutine itself, not one it awaits: every step
        of an awaiting strategy (each await of an ``async def``, per input)
        passes through each coroutine between it and the task, on the way out
        and on the way back.
        """
        loop = asyncio.get_running_loop()
        real_time = type(self._host.clock) is SystemClock
        lingered = False
        try:
            while True:
                try:
                    message, channel = self._take()
                    if channel is None:
                        window = self.window
                        if window is not None and window.calls:
                            # Nothing new: settle the oldest call if it has
                            # ended, else wait for it or for input, whichever
                            # comes first (the window has room for more).
                            oldest = window.calls[0][2]
                            if oldest.done():
                                await self._settle_oldest()
                            else:
                                await self._wait_for(oldest, wake=True)
                            continue
                        if lingered:
                            return  # idle: the task ends; wake() starts a new one
                        # Linger a little before ending: under a steady trickle of
                        # data the next batch is usually on its way, and starting a
                        # task is dearer than waiting for it. (Real time on purpose:
                        # this is resource management, not behaviour. Under any
                        # other clock the linger is one turn of the loop, so what a
                        # test on a fake clock sees does not depend on how fast
                        # the machine is.)
                        lingered = True
                        waiter = self._waiter = loop.create_future()
                        timer: asyncio.Handle
                        if real_time:
                            timer = loop.call_later(_LINGER, _expire, waiter)
                        else:
                            timer = loop.call_soon(_expire, waiter)
                        try:
                            await waiter
                        finally:
                            self._waiter = None
                            timer.cancel()
                        continue
                    lingered = False
                    if type(message) is Batch:
                        if self.window is not None:
                            await self._submit(message, channel)
                            continue
                        out = self._start(message, channel)
                        kernel = self.kernel
                        if kernel.synchronous:
                            kernel.process(kernel, self, out)
                        else:
                            await kernel.process(kernel, self, out)
                        await self.send(out)
                        self._settle(out)
                    elif type(message) is Barrier:
                        if self.window is not None:
                            # The node switches only once every input in flight
                            # has settled.
                            try:
                                await self._settle_all()
                            except Crash:
                                # The barrier goes back first: the inputs in
                                # flight, put back by _crashed, go ahead of it,
                                # and the restarted task acts on it after them.
                                channel.push_front(message)
                                raise
                        inputs = self.node.inputs
                        if receive(self, self.aligner, message, channel):
                            return
                        if self.node.inputs != inputs:
                            self._forget_routes()
                        self._fit_window()
                    else:  # pragma: no cover - only batches and barriers are ever sent
                        raise AssertionError(f"unexpected message {message!r}")
                except Crash as crash:
                    await self._crashed()
                    await self._record_death(crash.error)
                    lingered = False
        finally:
            try:
                window = self.window
                if window is not None and window.calls:
                    # The task was cancelled or failed (it ends with no call in
                    # flight otherwise): its calls go with it, and have ended
                    # before another task of this node can start.
                    await window.stop()
            finally:
                # Synchronous with the loop's last look at its inputs: a
                # message that arrives after this starts a new task.
                self.task = None
                if self.gone:
                    self._unlink()

    async def _record_death(self, error: BaseException) -> None:
        policy = self.node.restart or self._host.restart
        clock = self._host.clock
        now = clock.now()
        if self._deaths is None:
            self._deaths = deque()
        deaths = self._deaths
        deaths.append(now)
        while deaths and deaths[0] < now - policy.window:
            deaths.popleft()
        fatal = len(deaths) > policy.max_restarts
        self._host.task_died(self.key, self.version, error, fatal)
        if fatal:
            raise NodeFailedError(self.key, self.restarts) from error
        if policy.backoff:
            await clock.sleep_until(now + policy.backoff)
        self.restarts += 1

    def _take(self) -> tuple[Any, Channel | None]:
        inputs = self.inputs
        held = self.aligner.held
        count = len(inputs)
        if count == 1:
            channel = inputs[0]
            if channel and channel not in held:
                return channel.take(), channel
            return None, None
        start = self._rr
        for i in range(count):
            index = (start + i) % count
            channel = inputs[index]
            if channel and channel not in held:
                self._rr = index + 1
                return channel.take(), channel
        return None, None

    # -- data -------------------------------------------------------------------

    def route_for(self, incoming: Route | None) -> Route:
        """The interned route this node extends ``incoming`` to (``None``: its own root)."""
        route = self._routes.get(incoming)
        if route is None:
            route = self._routes[incoming] = Route(self.key, incoming)
        return route

    def _forget_routes(self) -> None:
        """Drop the interned routes of inputs the node no longer reads."""
        inputs = set(self.node.inputs)
        self._routes = {r: out for r, out in self._routes.items() if r is None or r.key in inputs}

    def _start(self, batch: Batch, channel: Channel) -> Outputs:
        """Take ``batch`` in: count it, and make the accumulator of its outputs."""
        self.received += len(batch.values)
        route = self._routes.get(batch.route)
        if route is None:
            route = self.route_for(batch.route)
        started = self._host.clock.now()
        out = Outputs(batch, route, not self.outputs, self._failed, channel, started)
        self.busy.append(out)
        self.hungry = False
        return out

    def readers_idle(self) -> bool:
        """Whether some reader waits for input: nothing in hand, nothing from this node queued."""
        # Asked after every input once LATENCY has passed, for as long as the
        # readers stay busy: a plain loop costs less than any() over a generator.
        for channel in self.outputs:  # noqa: SIM110
            if channel.empty and channel.consumer.hungry:
                return True
        return False

    async def send(self, out: Outputs) -> None:
        """Send on what ``out`` has ready (called by strategies as outputs are produced)."""
        produced = out.take()
        out.sent_at = self._host.clock.now()
        if produced.values:
            await self._send(produced, out.batch, out.started)
        out.in_send = 0
        out.delivered += len(produced.values)

    def _settle(self, out: Outputs) -> None:
        """``out`` is done and sent: fold its counters into the node's totals."""
        self.emitted += out.emitted
        self.filtered += out.filtered
        self.failed += out.failed
        self.busy.remove(out)
        self.hungry = not self.busy and self.sending is None

    async def _crashed(self) -> None:
        """The task dies (a :class:`Crash`): send what was produced, put back what was not settled.

        The restarted task takes the unsettled inputs again (and counts them
        again); inputs whose calls were in flight are processed again.
        """
        window = self.window
        if window is not None:
            await window.stop()  # before the restarted task starts any
        for out in reversed(self.busy):
            rest = out.batch.tail(out.settled)
            if rest.values:
                out.channel.push_front(rest)
                self.received -= len(rest.values)
                out.batch = out.batch.head(out.settled)
        for out in list(self.busy):
            await self.send(out)
            self._settle(out)

    async def _send(self, out: Batch, inputs: Batch, started: float) -> None:
        observer = self._host.observer
        if observer is not None and observer.watches_batches:
            # The observer sets the traces, and may send a batch in pieces.
            for part in observer.sent(self, out, inputs, started):
                self.sending = part
                for channel in self.outputs:
                    await channel.put(part)
            self.sending = None
            return
        if self._host.trace:
            host = self._host
            out.trace = Trace(
                self.key, started, host.clock.now(), inputs.trace, clock=host.clock_name
            )
        # Not cleared if cancelled here: the shutdown report lists it. (With
        # several readers, some may already have it; the report says where it was.)
        self.sending = out
        for channel in self.outputs:
            await channel.put(out)
        self.sending = None

    # -- concurrency -------------------------------------------------------------

    async def _submit(self, batch: Batch, channel: Channel) -> None:
        """Start calls for the inputs of ``batch``, settling the oldest when the window is full."""
        window = self.window
        assert window is not None
        out = self._start(batch, channel)
        kernel = self.kernel
        # The common case: an async def of the value, no timeout. Calling it
        # only makes its coroutine, and the task runs that coroutine as it is.
        # A call that raises at once (a bad argument, or a callable only marked
        # as async that runs code when called) is not made again: its task
        # raises that error, so its input fails in order. A callable only
        # marked as async may return another awaitable: a coroutine awaits it.
        direct = kernel.process is await_each
        coroutine = types.CoroutineType
        fn = kernel.fn
        calls, size = window.calls, window.size
        create_task = asyncio.get_running_loop().create_task
        values, parents_in = batch.values, batch.parents
        for index in range(len(values)):
            while len(calls) >= size:
                await self._settle_oldest()
            if direct:
                parents = parents_in[index] if parents_in is not None else ()
                try:
                    call = fn(values[index])
                except BaseException as exc:
                    if ends_task(exc):
                        raise
                    call = failing(exc)
                else:
                    if type(call) is not coroutine:
                        call = awaited(call)
            else:
                args, parents = prepare_call(kernel, self, out, index)
                call = call_one(kernel, self, args)
            calls.append((out, parents, create_task(call)))

    async def _settle_oldest(self) -> None:
        """Wait for the oldest call in flight, record its outcome, send what is ready."""
        window = self.window
        assert window is not None
        calls = window.calls
        out, parents, task = calls[0]
        if not task.done():
            await self._wait_for(task)
        error: BaseException | None = None
        result: Any = None
        if task.cancelled():
            try:
                task.result()  # the call's own CancelledError: a data error
            except asyncio.CancelledError as exc:
                error = exc
        else:
            error = task.exception()
            if error is None:
                result = task.result()
            elif ends_task(error):
                raise error
        calls.popleft()
        if error is not None:
            out.fail(out.settled, error)  # a Crash here: the node's loop calls _crashed
        elif self.kernel.mode is Mode.ASYNC_GENERATOR:
            out.add_many(result, parents)
        elif result is SKIP or type(result) is Emission:
            out.add(result)
        else:  # a plain output: Outputs.add's common case, inline
            out.results.append(result)
            out.settled += 1
        done = out.settled == len(out.batch.values)
        if (
            done
            or not calls
            or not calls[0][2].done()  # the next would make them wait: send them now
            or self._host.clock.now() - out.sent_at >= LATENCY
        ):
            # In order: every earlier batch is done and sent, or it would be the oldest.
            await self.send(out)
            if done:
                self._settle(out)

    async def _wait_for(self, call: asyncio.Task[Any], wake: bool = False) -> None:
        """Wait until ``call`` has ended (or, with ``wake``, input arrives), without awaiting it.

        Awaiting the task would pass the runner's own cancellation into the
        call, whose coroutine may turn it into a result or an error of its
        own: the runner would take that for the call's outcome and go on,
        its cancellation lost. So the runner waits on a future of its own,
        and its calls are cancelled only by :meth:`Window.cancel`.
        """
        waiter = asyncio.get_running_loop().create_future()
        release = functools.partial(_expire_after, waiter)
        call.add_done_callback(release)
        if wake:
            self._waiter = waiter  # what wake() releases
        try:
            await waiter
        finally:
            if wake:
                self._waiter = None
            call.remove_done_callback(release)

    async def _settle_all(self) -> None:
        """Wait until every call in flight has settled and its outputs are sent."""
        window = self.window
        assert window is not None
        while window.calls:
            await self._settle_oldest()

    def _failed(self, out: Outputs, index: int, error: BaseException) -> Any:
        """Input ``index`` of ``out`` raised: return a replacement or ``FAILED``."""
        batch = out.batch
        parents = batch.parents[index] if batch.parents is not None else ()
        value, origin = batch.values[index], batch.origins[index]
        failure = self.last_error = NodeError(self.key, self.version, error)
        handler = self.node.on_error
        if handler is None:
            datum = Datum(value, origin, out.route, failure, parents, batch.trace)
            self._dead_letter(datum, out.started)
            return FAILED
        try:
            return handler(Datum(value, origin, out.route, failure, parents, batch.trace))
        except BaseException as handler_error:
            if ends_task(handler_error):
                raise
            failure = self.last_error = NodeError(self.key, self.version, handler_error)
            datum = Datum(value, origin, out.route, failure, parents, batch.trace)
            self._dead_letter(datum, out.started)
            raise Crash(handler_error) from handler_error

    def _dead_letter(self, datum: Datum, started: float) -> None:
        """Record ``datum``, failed here in processing begun at ``started``, as a dead letter."""
        observer = self._host.observer
        if observer is not None:
            observer.failed(self, datum, started)
        self._host.dead_letter(datum)

    def flush(self) -> None:
        """Emit what the node's ``flush`` makes of its state, ahead of what follows.

        Called by the live-change protocol in the node's own task, when a
        change removes the node or the topology closes with a drain. The
        output starts a route of its own at this node (origin ``None``) and is
        put past capacity: it must go before the barrier that follows it.
        """
        flush = self.node.flush
        if flush is None or self.flushed:
            return
        self.flushed = True
        route = self.route_for(None)
        try:
            result = flush(self.ctx)
        except Exception as exc:
            failure = self.last_error = NodeError(self.key, self.version, exc)
            self.flushed = False  # reported as not flushed
            self._dead_letter(Datum(None, None, route, failure), self._host.clock.now())
            return
        if result is SKIP or not self.outputs:
            return
        if type(result) is Emission:
            batch = Batch([result.value], [None], route, [result.parents])
        else:
            batch = Batch([result], [None], route)
        self.emitted += 1
        for channel in self.outputs:
            channel.force_put(batch)

    def held(self) -> list[tuple[Batch, bool]]:
        """What this node holds and has not passed on: ``(batch, is_output)`` pairs."""
        held: list[tuple[Batch, bool]] = []
        if self.sending is not None:
            held.append((self.sending, True))
        for out in self.busy:
            rest = out.batch.tail(out.settled) if out.settled else out.batch
            if rest.values:
                held.append((rest, False))
            produced = out.peek()
            if produced.values:
                held.append((produced, True))
        return held

    def statistics(self, input_depth: int, input_capacity: int) -> NodeStatistics:
        """The node's counters now, with the batches in hand."""
        busy = self.busy
        return NodeStatistics(
            key=self.key,
            version=self.version,
            received=self.received,
            emitted=self.emitted + sum(out.emitted for out in busy),
            filtered=self.filtered + sum(out.filtered for out in busy),
            failed=self.failed + sum(out.failed for out in busy),
            restarts=self.restarts,
            in_progress=sum(out.in_progress for out in busy),
            input_depth=input_depth,
            input_capacity=input_capacity,
        )

    # -- sources ----------------------------------------------------------------

    async def _produce(self) -> None:
        produce: Callable[..., Any] | None = self.node.source
        entry = self.entry
        assert produce is not None
        assert entry is not None
        resumable = self.node.resumable
        offsets = self._offsets
        while True:
            stream = produce(self.ctx, self._offset_to_resume()) if resumable else produce(self.ctx)
            try:
                async for value in stream:
                    if resumable:
                        try:
                            value, offset = value
                        except (TypeError, ValueError):
                            raise TypeError(
                                f"resumable source {self.key!r} must yield (value, offset) "
                                f"pairs, got {value!r}"
                            ) from None
                        self.produced += 1
                        offsets.append((self.produced, offset))
                        while len(offsets) > 1 and offsets[0][0] < self.received:
                            offsets.popleft()  # taken before the last one taken
                    values = [value]
                    self._offered = Batch(values, values, None)
                    try:
                        await entry.put(self._offered)
                    finally:
                        self._offered = None
                return
            except TopologyClosedError:
                return
            except Exception as exc:
                self.last_error = NodeError(self.key, self.version, exc)
                await self._record_death(exc)
            finally:
                await stream.aclose()
