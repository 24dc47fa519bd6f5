"""The ``hotplumb`` command: ``hotplumb demo`` and ``hotplumb render``."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["main"]

_COMMANDS = {
    "demo": ("hotplumb._demo", "run the feed-rollup scenario live, with live changes"),
    "render": ("hotplumb._render", "draw a Graph from your code as DOT, SVG, PNG or Mermaid"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``hotplumb`` command line.

    Args:
        argv: The arguments (``sys.argv[1:]`` by default).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(
        prog="hotplumb", description="Build, inspect and live re-plumb asyncio task topologies."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in _COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = commands.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    args = parser.parse_args(argv)
    status: int = args.handler(args)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
