"""Run one topology over several processes and machines, on Ray.

Install the extra (``pip install 'hotplumb[ray]'``), start Ray as usual
(``ray.init()`` on a laptop, ``ray.init(address=...)`` on a cluster; if none
is initialised the engine starts a local one), and pass an engine to
:func:`hotplumb.run`::

    import hotplumb as hp
    from hotplumb.ray import DRIVER, RayEngine

    engine = RayEngine(placement={"parse": "cpu-1", "score": "cpu-2"})
    async with hp.run(graph, engine=engine) as topo:
        await topo.inject("lines", "...")

Each host name of the placement is one Ray actor (one process) that the
topology starts and owns; nodes the placement does not name, and every entry
point, run in the calling process (:data:`DRIVER`). See the README, "Past one
machine", for what holds across processes.

Importing this module imports Ray; ``import hotplumb`` never does.
"""

from __future__ import annotations

try:
    import ray as _ray  # noqa: F401  (the extra's presence is checked here)
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "hotplumb.ray needs Ray: install the extra with pip install 'hotplumb[ray]'"
    ) from exc

from typing import TYPE_CHECKING, Any

from hotplumb._rayengine import Distributed, HostDiedError, as_placement
from hotplumb._rayhost import DRIVER, EngineHost

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["DRIVER", "HostDiedError", "RayEngine"]


class RayEngine:
    """Where each node of a topology runs: in the calling process, or in a Ray host actor.

    Args:
        placement: A key's host name: a mapping (keys it does not name run on
            the driver) or a callable ``key -> host name``. :data:`DRIVER` is
            the calling process. Entry points (nodes without inputs) run on
            the driver.
        resources: Ray actor options per host name (``{"gpu-box": {"num_gpus":
            1}}``); a host asks for no CPU unless told.

    Raises:
        TypeError: ``placement`` is neither a mapping nor callable, or
            ``resources`` is not a mapping of mappings.
    """

    def __init__(
        self,
        placement: Mapping[Any, str] | Callable[[Any], str] | None = None,
        *,
        resources: Mapping[str, Mapping[str, Any]] | None = None,
        _actor_class: type[EngineHost] = EngineHost,
    ) -> None:
        self._place = as_placement(placement)
        resources = dict(resources or {})
        for name, options in resources.items():
            if not isinstance(name, str) or not hasattr(options, "items"):
                raise TypeError(
                    f"resources must map host names to Ray actor options, got {name!r}: {options!r}"
                )
        self._resources = resources
        self._actor_class = _actor_class

    def for_topology(self) -> Distributed:
        """A new engine for one run (called by :func:`hotplumb.run`)."""
        return Distributed(self._place, self._resources, self._actor_class)

    def __repr__(self) -> str:
        return f"RayEngine(hosts with options: {sorted(self._resources)})"
