"""Render the seed topology (examples/seed_graph.py) for the docs.

Writes ``docs/seed-topology.dot``, ``docs/seed-topology.mmd`` and, when
Graphviz's ``dot`` program is installed, ``docs/seed-topology.png``::

    python docs/render_seed.py

The same graph renders from the command line too::

    hotplumb render docs/render_seed.py:seed_graph -o seed.svg
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import hotplumb as hp

if TYPE_CHECKING:
    from types import ModuleType

DOCS = Path(__file__).resolve().parent
EXAMPLE = DOCS.parent / "examples" / "seed_graph.py"


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("seed_graph", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def seed_graph() -> hp.Graph:
    """The feed-rollup seed: two clients over shared subscriptions, a factory for the rest."""
    example = _example()
    return hp.Graph(
        {
            "client/a": example.client("source/foo", "source/bar"),
            "client/b": example.client("source/foo"),
        },
        example.seed_factory,
    )


def main() -> None:
    """Write the DOT and Mermaid sources, and the PNG if Graphviz is installed."""
    graph = seed_graph()
    for suffix in (".dot", ".mmd"):
        print("wrote", hp.write(graph, DOCS / f"seed-topology{suffix}"))
    if shutil.which("dot") is None:
        print("Graphviz's dot program is not installed: skipped seed-topology.png")
        return
    print("wrote", hp.write(graph, DOCS / "seed-topology.png"))


if __name__ == "__main__":
    main()
