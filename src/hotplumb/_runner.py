"""One running node: its task, its processing of batches, its switch on a barrier.

Concurrency rules, which the rest of the runtime relies on:

* A runner's task is the only code that pops from its input channels, touches
  its state, or changes its version, inputs and outputs. The topology only
  prepares a :class:`~hotplumb._control.Switch`; the runner applies it, inside
  its own task, at the point in its input streams where the barrier arrived.
* A batch is processed and sent on to every reader before the next message is
  taken, so a runner's outputs are in the order of its inputs, and a barrier it
  forwards is behind every output of the data that came before it.
* Alignment: once the pending barrier has arrived on an input, that input is
  not read again until the barrier has arrived on every input. Data behind a
  barrier therefore never mixes with data before it, whatever the interleaving
  of inputs.
* Nothing is dropped silently: a datum whose processing raised goes to the
  node's ``on_error`` or to the dead-letter record; if the node's task dies,
  the rest of its batch is put back at the head of its channel for the
  restarted task.
"""

from __future__ import annotations

import asyncio
from collections import deque
from itertools import compress, repeat
from typing import TYPE_CHECKING, Any

from hotplumb._channel import Batch, Channel
from hotplumb._clock import run_with_timeout
from hotplumb._context import Context
from hotplumb._control import Barrier, Switch
from hotplumb._datum import Datum, Emission, NodeError, Route, Trace
from hotplumb._errors import NodeFailedError, TopologyClosedError
from hotplumb._kernel import Kernel, Mode
from hotplumb._node import SKIP, Node, RestartPolicy

if TYPE_CHECKING:
    from collections.abc import Hashable

    from hotplumb._runtime import Topology

__all__ = ["Runner"]


# Barrier alignment on; switched off only by a test that shows what goes wrong
# without it (the proof of concept's "multiple sources" bug).
_ALIGN = True


# Seconds an idle node's task waits for more input before it ends.
_LINGER = 0.05


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _Failed:
    """Marks a failed item inside a batch being processed."""

    __slots__ = ()


_FAILED = _Failed()


class _Crash(Exception):
    """The node's task dies: carries what to emit and what to put back."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error
        self.partial: Batch | None = None
        self.rest: Batch | None = None


def _sub_batch(batch: Batch, start: int) -> Batch:
    parents = batch.parents[start:] if batch.parents is not None else None
    return Batch(batch.values[start:], batch.origins[start:], batch.route, parents, batch.trace)


class Runner:
    """A node of a running topology (internal; see :class:`~hotplumb.Topology`)."""

    __slots__ = (
        "_arrived",
        "_barrier",
        "_deaths",
        "_last_barrier",
        "_offered",
        "_rr",
        "_waiter",
        "ctx",
        "current",
        "emitted",
        "entry",
        "failed",
        "filtered",
        "holding",
        "inputs",
        "kernel",
        "key",
        "last_error",
        "next_inputs",
        "node",
        "outputs",
        "partial",
        "producer",
        "progress",
        "received",
        "restarts",
        "root",
        "sending",
        "started",
        "stopped",
        "task",
        "topology",
        "version",
    )

    def __init__(
        self,
        topology: Topology,
        key: Hashable,
        node: Node,
        kernel: Kernel,
        version: int,
        readers: frozenset[Hashable],
    ) -> None:
        self.topology = topology
        self.key = key
        self.node = node
        self.kernel = kernel
        self.version = version
        self.inputs: list[Channel] = []
        self.outputs: list[Channel] = []
        self.entry: Channel | None = None
        self.root = Route(key)
        self.ctx = Context(
            key,
            version,
            node.inputs,
            readers,
            topology.clock,
            node.state() if node.state is not None else None,
        )
        self.received = self.emitted = self.filtered = self.failed = self.restarts = 0
        # Items taken from the inputs and not yet settled: not sent on (or, for a
        # target, delivered), filtered or failed. In flight = channel depths + holding.
        self.holding = 0
        self.last_error: NodeError | None = None
        # What the node holds, for the shutdown report: the input batch being
        # processed (`current`, of which the first `progress` items are settled),
        # the outputs made from it so far (`partial`), or an output batch being
        # sent to the readers (`sending`).
        self.current: Batch | None = None
        self.progress = 0
        self.partial: Batch | None = None
        self.sending: Batch | None = None
        # The input channels of a change in flight, attached when it switches.
        self.next_inputs: list[Channel] | None = None
        self.started = False
        self.stopped = False
        self.task: asyncio.Task[None] | None = None
        self.producer: asyncio.Task[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._rr = 0
        self._barrier: Barrier | None = None
        self._arrived: set[Channel] = set()
        self._last_barrier: Barrier | None = None
        self._offered: Batch | None = None  # what the producer waits to put
        self._deaths: deque[float] | None = None  # times of recent deaths, made on the first

    # -- wiring -----------------------------------------------------------------

    def wake(self) -> None:
        """Make sure the task will look at its inputs (called by channels).

        A node has a task only while it has something to do: an idle node
        costs a few small objects, not a suspended task. A message for an idle
        node starts its task.
        """
        if self.task is None:
            if self.started and not self.stopped and not self.topology.closed:
                self._spawn()
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _spawn(self) -> None:
        try:
            self.task = self.topology.spawn(self.supervise(), f"hotplumb node {self.key!r}")
        except RuntimeError:  # the task group is shutting down: the topology is failing
            self.task = None

    def make_entry(self) -> Channel:
        """Create this entry point's channel (for injected and produced data)."""
        self.entry = Channel(None, self, self.topology.capacity_for(self.node))
        return self.entry

    def start(self) -> None:
        """Start the node (its task runs when it has input) and its source's producer."""
        self.started = True
        if any(self.inputs):
            self._spawn()
        self.start_producer()

    def start_producer(self) -> None:
        """Start the generator source of this node, if it has one."""
        if self.node.source is not None and self.producer is None and not self.topology.closing:
            self.producer = self.topology.spawn(self._produce(), f"hotplumb source {self.key!r}")

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
    def waiting_for_demand(self) -> bool:
        """Whether this is a source with no readers."""
        return self.node.source is not None and not self.ctx.readers

    # -- the task ---------------------------------------------------------------

    async def supervise(self) -> None:
        """Run the node loop until it is idle, restarting it under the restart policy."""
        try:
            while True:
                try:
                    await self._loop()
                    return
                except _Crash as crash:
                    await self._record_death(crash.error)
        finally:
            # Synchronous with the loop's last look at its inputs: a message
            # that arrives after this starts a new task.
            self.task = None

    async def _record_death(self, error: BaseException) -> None:
        policy: RestartPolicy = self.node.restart or self.topology.restart
        now = self.topology.clock.now()
        if self._deaths is None:
            self._deaths = deque()
        deaths = self._deaths
        deaths.append(now)
        while deaths and deaths[0] < now - policy.window:
            deaths.popleft()
        if len(deaths) > policy.max_restarts:
            raise NodeFailedError(self.key, self.restarts) from error
        if policy.backoff:
            await self.topology.clock.sleep_until(now + policy.backoff)
        self.restarts += 1

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        lingered = False
        while True:
            message, channel = self._take()
            if channel is None:
                if lingered:
                    return  # idle: the task ends; wake() starts a new one
                # Linger a little before ending: under a steady trickle of data
                # the next batch is usually on its way, and starting a task is
                # dearer than waiting for it. (Real time on purpose: this is
                # resource management, not behaviour.)
                lingered = True
                waiter = self._waiter = loop.create_future()
                timer = loop.call_later(_LINGER, _expire, waiter)
                try:
                    await waiter
                finally:
                    self._waiter = None
                    timer.cancel()
                continue
            lingered = False
            if type(message) is Batch:
                await self._process(message, channel)
            elif type(message) is Barrier:
                if self._on_barrier(message, channel):
                    return
            else:  # pragma: no cover - only batches and barriers are ever sent
                raise AssertionError(f"unexpected message {message!r}")

    def _take(self) -> tuple[Any, Channel | None]:
        inputs = self.inputs
        count = len(inputs)
        arrived = self._arrived
        if count == 1:
            channel = inputs[0]
            if channel and channel not in arrived:
                return channel.pop(), channel
            return None, None
        start = self._rr
        for i in range(count):
            index = (start + i) % count
            channel = inputs[index]
            if channel and channel not in arrived:
                self._rr = index + 1
                return channel.pop(), channel
        return None, None

    # -- data -------------------------------------------------------------------

    async def _process(self, batch: Batch, channel: Channel) -> None:
        count = len(batch.values)
        self.received += count
        self.holding = count
        route = batch.route
        route_out = self.root if route is None else route.child(self.key)
        kernel = self.kernel
        tracing = self.topology.trace
        started = self.topology.clock.now() if tracing else 0.0
        self.current = batch
        self.progress = 0
        try:
            if kernel.is_identity:
                self.emitted += count
                out: Batch | None = Batch(
                    batch.values, batch.origins, route_out, batch.parents, batch.trace
                )
            elif kernel.fast:
                out = self._process_fast(batch, route_out)
            elif kernel.mode is Mode.ASYNC and kernel.simple:
                out = await self._process_async(batch, route_out)
            else:
                out = await self._process_general(batch, route_out)
        except _Crash as crash:
            self.current = self.partial = None
            if crash.rest is not None and crash.rest.values:
                channel.push_front(crash.rest)  # taken again by the restarted task
                self.received -= len(crash.rest.values)
                self.holding -= len(crash.rest.values)
            if crash.partial is not None and crash.partial.values:
                await self._send(crash.partial, batch, started)
            self.holding = 0
            raise
        self.current = self.partial = None
        if out is not None and out.values:
            await self._send(out, batch, started)
        self.holding = 0

    def held(self) -> list[tuple[Batch, bool]]:
        """What this node holds and has not passed on: ``(batch, is_output)`` pairs."""
        held: list[tuple[Batch, bool]] = []
        if self.sending is not None:
            held.append((self.sending, True))
        if self.current is not None:
            rest = _sub_batch(self.current, self.progress) if self.progress else self.current
            if rest.values:
                held.append((rest, False))
            if self.partial is not None and self.partial.values:
                held.append((self.partial, True))
        return held

    def all_inputs(self) -> list[Channel]:
        """The input channels, with those a change in flight will attach."""
        if not self.next_inputs:
            return self.inputs
        return self.inputs + [c for c in self.next_inputs if c not in self.inputs]

    async def _send(self, out: Batch, batch: Batch, started: float) -> None:
        if self.topology.trace:
            out.trace = Trace(self.key, started, self.topology.clock.now(), batch.trace)
        # Not cleared if cancelled here: the shutdown report lists it. (With
        # several readers, some may already have it; the report says where it was.)
        self.sending = out
        for channel in self.outputs:
            await channel.put(out)
        self.sending = None

    def _process_fast(self, batch: Batch, route_out: Route) -> Batch:
        fn = self.kernel.fn
        values: list[Any] = batch.values
        if self.node.pass_datum:
            parents = batch.parents if batch.parents is not None else repeat(())
            values = list(
                map(
                    Datum,
                    values,
                    batch.origins,
                    repeat(route_out),
                    repeat(None),
                    parents,
                    repeat(batch.trace),
                )
            )
        results: list[Any] = []
        failures = 0
        while True:
            start = len(results)
            try:
                results.extend(map(fn, values if start == 0 else values[start:]))
                break
            except Exception as exc:
                failures += 1
                index = len(results)
                try:
                    results.append(self._fail(batch, index, route_out, exc))
                except _Crash as crash:
                    crash.partial = self._keep(results, batch, route_out)
                    crash.rest = _sub_batch(batch, index + 1)
                    raise
        return self._settle(results, batch, route_out, failures)

    def _settle(self, results: list[Any], batch: Batch, route_out: Route, failures: int) -> Batch:
        """The output batch for per-item ``results`` (a result may be SKIP or _FAILED)."""
        if not failures:
            kept = [r for r in results if r is not SKIP]
            if len(kept) == len(results):  # the common case: one output per input
                self.emitted += len(results)
                return Batch(results, batch.origins, route_out, batch.parents, batch.trace)
        return self._keep(results, batch, route_out)

    async def _process_async(self, batch: Batch, route_out: Route) -> Batch:
        """An ``async def`` taking just the value: awaited in turn, nothing else per item."""
        fn = self.kernel.fn
        origins, parents = batch.origins, batch.parents
        out_values: list[Any] = []
        out_origins: list[Any] = []
        out_parents: list[tuple[Datum, ...]] | None = [] if parents is not None else None
        out = self.partial = Batch(out_values, out_origins, route_out, out_parents, batch.trace)
        target = not self.outputs
        for i, value in enumerate(batch.values):
            try:
                result = await fn(value)
            except Exception as exc:
                try:
                    result = self._fail(batch, i, route_out, exc)
                except _Crash as crash:
                    crash.partial = out
                    crash.rest = _sub_batch(batch, i + 1)
                    raise
            if result is SKIP:
                self.filtered += 1
                self.holding -= 1
            elif result is not _FAILED:
                out_values.append(result)
                out_origins.append(origins[i])
                if out_parents is not None and parents is not None:
                    out_parents.append(parents[i])
                self.emitted += 1
                if target:
                    self.holding -= 1
            self.progress = i + 1
        return out

    def _keep(self, results: list[Any], batch: Batch, route_out: Route) -> Batch:
        mask = [r is not SKIP and r is not _FAILED for r in results]
        values = list(compress(results, mask))
        self.emitted += len(values)
        skipped = sum(1 for r in results if r is SKIP)
        self.filtered += skipped
        self.holding -= skipped
        origins = list(compress(batch.origins, mask))
        parents = list(compress(batch.parents, mask)) if batch.parents is not None else None
        return Batch(values, origins, route_out, parents, batch.trace)

    async def _process_general(self, batch: Batch, route_out: Route) -> Batch:
        kernel = self.kernel
        node = self.node
        ctx = self.ctx
        wants_datum = node.pass_datum
        uses_ctx = kernel.takes_context
        values, origins, parents = batch.values, batch.origins, batch.parents
        out_values: list[Any] = []
        out_origins: list[Any] = []
        out_parents: list[tuple[Datum, ...]] = []
        has_parents = parents is not None
        self.partial = Batch(out_values, out_origins, route_out, out_parents, batch.trace)
        for i, value in enumerate(values):
            origin = origins[i]
            mine: tuple[Datum, ...] = parents[i] if parents is not None else ()
            if uses_ctx:
                ctx._datum = None
                ctx._pending = (value, origin, route_out, None, mine, batch.trace)
            arg = Datum(value, origin, route_out, None, mine, batch.trace) if wants_datum else value
            try:
                results = await self._call(kernel, arg)
            except Exception as exc:
                try:
                    replacement = self._fail(batch, i, route_out, exc)
                except _Crash as crash:
                    crash.partial = Batch(
                        out_values,
                        out_origins,
                        route_out,
                        out_parents if has_parents else None,
                        batch.trace,
                    )
                    crash.rest = _sub_batch(batch, i + 1)
                    raise
                if replacement is _FAILED:
                    self.progress = i + 1
                    continue
                results = [replacement]
            emitted = 0
            for result in results:
                if result is SKIP:
                    continue
                if type(result) is Emission:
                    out_values.append(result.value)
                    out_parents.append(result.parents)
                    has_parents = True
                else:
                    out_values.append(result)
                    out_parents.append(mine)
                out_origins.append(origin)
                emitted += 1
            if emitted:
                self.emitted += emitted
                if not self.outputs:
                    self.holding -= 1  # a target: delivered
            else:
                self.filtered += 1
                self.holding -= 1
            self.progress = i + 1
        if uses_ctx:
            ctx._datum = None
            ctx._pending = None
        return Batch(
            out_values, out_origins, route_out, out_parents if has_parents else None, batch.trace
        )

    async def _call(self, kernel: Kernel, arg: Any) -> list[Any] | tuple[Any, ...]:
        fn = kernel.fn
        args = (arg, self.ctx) if kernel.takes_context else (arg,)
        mode = kernel.mode
        timeout = self.node.timeout
        if mode is Mode.PLAIN:
            if timeout is None:
                return (fn(*args),)
            clock = self.topology.clock
            began = clock.now()
            result = fn(*args)
            if clock.now() - began > timeout:
                raise TimeoutError(f"node {self.key!r} took longer than {timeout}s")
            return (result,)
        if mode is Mode.ASYNC:
            if timeout is None:
                return (await fn(*args),)
            return (await self._timed(fn(*args), timeout),)
        if mode is Mode.GENERATOR:
            return list(fn(*args))
        if timeout is None:
            return [item async for item in fn(*args)]
        return await self._timed(_collect(fn(*args)), timeout)  # type: ignore[no-any-return]

    async def _timed(self, awaitable: Any, timeout: float) -> Any:
        try:
            return await run_with_timeout(self.topology.clock, awaitable, timeout)
        except TimeoutError:
            raise TimeoutError(f"node {self.key!r} took longer than {timeout}s") from None

    def _fail(self, batch: Batch, index: int, route_out: Route, exc: Exception) -> Any:
        """Handle item ``index`` raising ``exc``: return a replacement or ``_FAILED``."""
        mine = batch.parents[index] if batch.parents is not None else ()
        error = NodeError(self.key, self.version, exc)
        datum = Datum(
            batch.values[index], batch.origins[index], route_out, error, mine, batch.trace
        )
        self.last_error = error
        handler = self.node.on_error
        if handler is None:
            self.failed += 1
            self.holding -= 1
            self.topology.errors._record(datum)
            return _FAILED
        try:
            replacement = handler(datum)
        except Exception as handler_exc:
            self.failed += 1
            self.holding -= 1
            error = NodeError(self.key, self.version, handler_exc)
            self.last_error = error
            self.topology.errors._record(
                Datum(batch.values[index], batch.origins[index], route_out, error, mine)
            )
            raise _Crash(handler_exc) from handler_exc
        if replacement is SKIP:
            self.failed += 1
            self.holding -= 1
            return _FAILED
        return replacement

    # -- sources ----------------------------------------------------------------

    async def _produce(self) -> None:
        produce = self.node.source
        entry = self.entry
        assert produce is not None
        assert entry is not None
        while True:
            stream = produce(self.ctx)
            try:
                async for value in stream:
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
                await stream.aclose()  # type: ignore[attr-defined]

    # -- control ----------------------------------------------------------------

    def _on_barrier(self, barrier: Barrier, channel: Channel) -> bool:
        """Act on a barrier from ``channel``; return whether the node stops."""
        if not _ALIGN:
            # Unaligned (test only): act on the first arrival, ignore the others.
            if barrier is self._last_barrier:
                return False
            self._last_barrier = barrier
        else:
            if self._barrier is not barrier:
                self._barrier = barrier
                self._arrived = set()
            self._arrived.add(channel)
            if len(self._arrived) < len(self.inputs):
                return False  # align: wait for the barrier on every input
        self._barrier = None
        self._arrived = set()
        region = barrier.region
        for out in self.outputs:
            if out.consumer.key in region:
                out.put_control(barrier)
        switch = barrier.plan.get(self.key)
        stop = False
        try:
            if switch is not None:
                stop = self._switch(switch, barrier)
        finally:
            barrier.ack(self.key)  # whatever happened, the change must be able to finish
        return stop

    def _switch(self, switch: Switch, barrier: Barrier) -> bool:
        if switch.node is None:
            self.stopped = True
            self.stop_producer()
            # Every producer has switched away from these channels (they sent
            # the barrier); sealing them turns a stray put into an error, not a loss.
            for channel in self.inputs:
                channel.seal()
            return True
        old = self.node
        self.inputs = switch.inputs
        self.next_inputs = None
        self.outputs = switch.outputs
        self._rr = 0
        if switch.node is not old:
            new = switch.node
            self.node = new
            self.kernel = switch.kernel
            self.version = switch.version
            ctx = self.ctx
            ctx.version = switch.version
            ctx.inputs = new.inputs
            self._migrate(old, new, barrier)
            if new.inputs:
                self.entry = None
            elif switch.inputs:
                self.entry = switch.inputs[0]
            self.stop_producer()
            self.start_producer()
        if switch.readers != self.ctx.readers:
            self.ctx._set_readers(switch.readers)
            if self.node.on_change is not None:
                try:
                    self.node.on_change(self.ctx)
                except Exception as exc:
                    self.topology._note_change_error(barrier, self.key, exc)
        return False

    def _migrate(self, old: Node, new: Node, barrier: Barrier) -> None:
        ctx = self.ctx
        try:
            if new.migrate is not None:
                ctx.state = new.migrate(ctx.state)
            elif old.state is None and new.state is not None:
                ctx.state = new.state()
        except Exception as exc:
            self.topology._note_change_error(barrier, self.key, exc)
            try:
                ctx.state = new.state() if new.state is not None else None
            except Exception as state_exc:
                ctx.state = None
                self.topology._note_change_error(barrier, self.key, state_exc)


async def _collect(stream: Any) -> list[Any]:
    return [item async for item in stream]
