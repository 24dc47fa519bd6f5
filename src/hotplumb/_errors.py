"""The exceptions hotplumb raises.

Every exception derives from :class:`HotplumbError`; leaves also inherit the
nearest builtin, so ``except KeyError`` keeps working for callers who do not
know about hotplumb::

    HotplumbError
    ├── InvalidKeyError (TypeError)        a value that cannot be a node key
    ├── InvalidNodeError (TypeError)       a factory or caller gave something that is not a Node
    ├── InvalidNodeCallableError (TypeError) a node's callable cannot be called the way it must be
    ├── MissingNodeError (KeyError)        a key nothing provides, with the chain that asked for it
    ├── CycleError (ValueError)            the graph has a cycle
    ├── GraphTooLargeError (ValueError)    resolution passed ``max_nodes``
    ├── FactoryError (RuntimeError)        the factory raised; its exception is chained
    ├── NotAnEntryPointError (ValueError)  inject into a node that has inputs or is not active
    ├── TopologyClosedError (RuntimeError) use of a topology after close
    ├── ApplyError (RuntimeError)          a live change failed or timed out
    │   └── StaleGraphError                a graph derived from one no longer running
    ├── ReentrantCallError (RuntimeError)  a node awaited a change of its own topology
    ├── NodeFailedError (RuntimeError)     a node's task died past its restart policy
    ├── CheckpointError (RuntimeError)     a checkpoint failed: a state would not encode, a store
    ├── SubscriberOverflowError (RuntimeError) a subscriber fell behind and was disconnected
    └── RenderError (RuntimeError)         a picture needs an optional dependency that is missing

Bad arguments to a function (a negative timeout, a capacity that is not a
positive int, a wrong type) raise the plain builtin :class:`ValueError` or
:class:`TypeError`, as Python's own functions do, before anything changes;
each function's docstring says which.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hotplumb._format import bounded_repr, format_chain, format_key

if TYPE_CHECKING:
    from collections.abc import Hashable, Sequence

__all__ = [
    "ApplyError",
    "CheckpointError",
    "CycleError",
    "FactoryError",
    "GraphTooLargeError",
    "HotplumbError",
    "InvalidKeyError",
    "InvalidNodeCallableError",
    "InvalidNodeError",
    "MissingNodeError",
    "NodeFailedError",
    "NotAnEntryPointError",
    "ReentrantCallError",
    "RenderError",
    "StaleGraphError",
    "SubscriberOverflowError",
    "TopologyClosedError",
]


class HotplumbError(Exception):
    """The root of every exception hotplumb raises."""


class InvalidKeyError(HotplumbError, TypeError):
    """A value that cannot be a node key: ``None`` or unhashable.

    Attributes:
        key: The offending value.
    """

    def __init__(self, key: object, reason: str) -> None:
        self.key = key
        super().__init__(f"invalid node key {bounded_repr(key)}: {reason}")


class InvalidNodeError(HotplumbError, TypeError):
    """Something that should have been a :class:`~hotplumb.Node` is not one.

    Attributes:
        key: The key the value was given or generated for.
        value: The offending value.
    """

    def __init__(self, key: Hashable, value: object, where: str) -> None:
        self.key = key
        self.value = value
        super().__init__(
            f"{where} gave {type(value).__name__} {value!r:.80} for key {format_key(key)}, "
            "expected a hotplumb.Node (or None from a factory)"
        )


class InvalidNodeCallableError(HotplumbError, TypeError):
    """A node's callable cannot be called the way the runtime must call it.

    Attributes:
        key: The node's key.
    """

    def __init__(self, key: Hashable, message: str) -> None:
        self.key = key
        super().__init__(f"node {format_key(key)}: {message}")


class MissingNodeError(HotplumbError, KeyError):
    """A key that no provided node and no factory can supply.

    Attributes:
        key: The missing key.
        chain: The keys that asked for it, the target first and ``key`` last.
        message: The message, when the default one does not fit (e.g. removing
            a key that is not provided); ``None`` for the default.
    """

    def __init__(
        self, key: Hashable, chain: Sequence[Hashable], *, message: str | None = None
    ) -> None:
        self.key = key
        self.chain = tuple(chain)
        self.message = message
        super().__init__(key)

    def __str__(self) -> str:
        if self.message is not None:
            return self.message
        if len(self.chain) > 1:
            return f"no node for key {format_key(self.key)} (needed by {format_chain(self.chain)})"
        return f"no node for key {format_key(self.key)}"


class CycleError(HotplumbError, ValueError):
    """The graph's inputs form a cycle.

    Attributes:
        cycle: The keys on the cycle, in reading order, the first repeated last.
    """

    def __init__(self, cycle: Sequence[Hashable]) -> None:
        self.cycle = tuple(cycle)
        super().__init__(f"cycle in graph: {format_chain(self.cycle)}")


class GraphTooLargeError(HotplumbError, ValueError):
    """Resolution needed more nodes than the graph's ``max_nodes`` allows.

    Attributes:
        max_nodes: The limit that was reached.
        chain: The chain of keys that was being resolved when the limit was hit.
    """

    def __init__(self, max_nodes: int, chain: Sequence[Hashable]) -> None:
        self.max_nodes = max_nodes
        self.chain = tuple(chain)
        tail = self.chain[-4:]
        prefix = "... -> " if len(self.chain) > len(tail) else ""
        super().__init__(
            f"graph resolution exceeded max_nodes={max_nodes} "
            f"(a runaway factory?) while resolving {prefix}{format_chain(tail)}"
        )


class FactoryError(HotplumbError, RuntimeError):
    """The factory raised while generating a node; the original is chained.

    Attributes:
        key: The key the factory was called for.
        chain: The keys that asked for it, the target first and ``key`` last.
    """

    def __init__(self, key: Hashable, chain: Sequence[Hashable], error: BaseException) -> None:
        self.key = key
        self.chain = tuple(chain)
        super().__init__(
            f"factory raised {type(error).__name__}: {error} "
            f"for key {format_key(key)} (needed by {format_chain(self.chain)})"
        )


class NotAnEntryPointError(HotplumbError, ValueError):
    """Data was injected into a key that is not a running entry point.

    Attributes:
        key: The offending key.
    """

    def __init__(self, key: Hashable, reason: str) -> None:
        self.key = key
        super().__init__(f"cannot inject into {format_key(key)}: {reason}")


class TopologyClosedError(HotplumbError, RuntimeError):
    """The topology is closed (or closing) and takes no more data or changes.

    Attributes:
        accepted: For ``inject_many``: how many values went in before this.
    """

    accepted: int | None = None


class ApplyError(HotplumbError, RuntimeError):
    """A live change did not complete.

    Attributes:
        running: What the topology runs now: ``"old"`` (nothing changed) or
            ``"switching"`` (the change goes on in the background, in order:
            each node runs the old version until the barrier reaches it, so
            every datum is still processed by one version; the next change or
            drain waits for it to finish).
    """

    def __init__(self, message: str, running: str) -> None:
        self.running = running
        if running == "old":
            where = "the topology runs the old graph"
        else:
            where = (
                "the change goes on in the background: nodes switch to the new graph as the "
                "barrier reaches them, so every datum is still processed by one version"
            )
        super().__init__(f"{message}; {where}")


class CheckpointError(HotplumbError, RuntimeError):
    """A checkpoint did not complete; the topology keeps running, the previous one stands.

    Attributes:
        keys: The nodes whose state could not be encoded (empty when the
            store failed); each one's exception is in ``errors``.
        errors: ``(key, exception)`` pairs, one per node that failed.
    """

    def __init__(self, message: str, errors: Sequence[tuple[Hashable, BaseException]] = ()) -> None:
        self.errors = tuple(errors)
        self.keys = tuple(k for k, _ in self.errors)
        if self.errors:
            named = "; ".join(
                f"node {format_key(k)}: {type(e).__name__}: {e}" for k, e in self.errors[:5]
            )
            more = f" (and {len(self.errors) - 5} more)" if len(self.errors) > 5 else ""
            message = f"{message}: {named}{more}"
        super().__init__(message)


class NodeFailedError(HotplumbError, RuntimeError):
    """A node's task died more often than its restart policy allows.

    Attributes:
        key: The node's key.
        restarts: How many times it had been restarted.
    """

    def __init__(self, key: Hashable, restarts: int) -> None:
        self.key = key
        self.restarts = restarts
        super().__init__(f"node {format_key(key)} failed after {restarts} restart(s)")


class RenderError(HotplumbError, RuntimeError):
    """A picture could not be made: an optional dependency is missing.

    The message says what to install: the ``graphviz``/``networkx`` Python
    packages (``pip install 'hotplumb[render]'``) or Graphviz's ``dot`` program.
    """


class StaleGraphError(ApplyError):
    """``apply`` was given a graph derived from one the topology no longer runs.

    Applying it would silently undo the changes made since. Derive the new
    graph from ``topology.graph`` again, or use :meth:`Topology.update`, which
    does that under the change lock.

    Attributes:
        generation: The generation of the running graph it was derived from.
        current: The topology's generation now.
    """

    def __init__(self, generation: int, current: int) -> None:
        self.generation = generation
        self.current = current
        super().__init__(
            f"the graph was derived from the running graph of generation {generation}, "
            f"but the topology has changed since (generation {current}); applying it would "
            "undo those changes: derive it from topology.graph again, or use "
            "topology.update(fn)",
            "old",
        )


class ReentrantCallError(HotplumbError, RuntimeError):
    """A node awaited a change or drain of its own topology from inside its processing.

    The change's barrier would have to pass the node, which is busy awaiting
    it: the call could never complete, so it is refused at once. Start the
    call in a separate task (``asyncio.create_task``) instead of awaiting it.

    Attributes:
        key: The node that made the call.
    """

    def __init__(self, key: Hashable, what: str) -> None:
        self.key = key
        super().__init__(
            f"node {format_chain([key])} awaited {what} of its own topology from inside its "
            "processing; the barrier would wait behind the node, so it could never "
            "complete: start it in a separate task (asyncio.create_task) instead"
        )


class SubscriberOverflowError(HotplumbError, RuntimeError):
    """A subscriber fell behind: its buffer was full, so it was disconnected.

    Raised by iterating a :class:`~hotplumb.Subscription` opened with
    ``overflow=Overflow.DISCONNECT``, once the data it had buffered before the
    overflow have been read. What it missed is counted, never silently skipped.

    Attributes:
        key: The key the subscriber read.
        capacity: The size of its buffer.
        delivered: How many data it had received before it was cut off.
        missed: How many data reached it after its buffer was full (up to the
            moment this was raised; :meth:`Subscription.statistics
            <hotplumb.Subscription.statistics>` has the final count).
    """

    def __init__(self, key: Hashable, capacity: int, delivered: int, missed: int) -> None:
        self.key = key
        self.capacity = capacity
        self.delivered = delivered
        self.missed = missed
        super().__init__(
            f"the subscriber to {format_chain([key])} was disconnected: it fell behind and its "
            f"buffer of {capacity} was full; it missed {missed} datum(s) after the "
            f"{delivered} it received (subscribe with a larger capacity, or with "
            "overflow=Overflow.BACKPRESSURE to slow the graph down instead)"
        )
