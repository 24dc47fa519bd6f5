"""The ``hotplumb`` command: ``hotplumb demo``, ``hotplumb render`` and ``hotplumb serve``."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["main"]

# Each command's module is imported only when that command runs, so one
# command's optional dependencies never break another. A command's module
# has ``add_arguments(parser)`` and ``main(args) -> int``.
_COMMANDS = {
    "demo": ("hotplumb._demo", "run the feed-rollup scenario live, with live changes"),
    "render": ("hotplumb._cli_render", "draw a Graph from your code as DOT, SVG, PNG or Mermaid"),
    "serve": ("hotplumb._serve", "serve a Graph from your code over HTTP, with a live page"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``hotplumb`` command line.

    Args:
        argv: The arguments (``sys.argv[1:]`` by default).

    Returns:
        The exit status.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="hotplumb", description="Build, inspect and live re-plumb asyncio task topologies."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((a for a in args if not a.startswith("-")), None)
    for name, (module_name, help_text) in _COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(sub)
            sub.set_defaults(handler=module.main)
    parsed = parser.parse_args(args)
    status: int = parsed.handler(parsed)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
