"""``hotplumb render``: draw a graph from the user's code.

``hotplumb render MODULE:ATTR [-o FILE] [-f FORMAT]`` loads the graph with
:func:`hotplumb._loader.load_graph` and draws it with
:func:`hotplumb.render`. Without ``-o`` it prints to standard output (binary
formats go to ``sys.stdout.buffer``); with ``-o`` the format defaults to the
file's suffix, else to ``dot``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from hotplumb._errors import RenderError
from hotplumb._loader import load_graph
from hotplumb._render import FORMATS, format_for, render

if TYPE_CHECKING:
    import argparse

__all__ = ["add_arguments", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``hotplumb render`` to ``parser``.

    Args:
        parser: The ``render`` subcommand's parser.
    """
    parser.add_argument(
        "target",
        metavar="MODULE:ATTR",
        help="a Graph in your code, or a zero-argument callable returning one; "
        "MODULE is a dotted name (found on sys.path or in the current directory) "
        "or a path to a .py file",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write to FILE instead of standard output",
    )
    parser.add_argument(
        "-f",
        "--format",
        choices=FORMATS,
        help="output format (default: from FILE's suffix, else dot); "
        "svg and png need Graphviz installed",
    )


def main(args: argparse.Namespace) -> int:
    """Run ``hotplumb render`` with parsed arguments.

    Args:
        args: From a parser set up by :func:`add_arguments`.

    Returns:
        The exit status: 0 on success, 1 if rendering failed, 2 if the graph
        could not be found or the format not chosen.
    """
    output: str | None = args.output
    try:
        graph = load_graph(args.target)
        fmt: str = args.format or (format_for(output) if output is not None else "dot")
    except ValueError as exc:
        print(f"hotplumb render: error: {exc}", file=sys.stderr)
        return 2
    try:
        data = render(graph, fmt)
    except RenderError as exc:
        print(f"hotplumb render: error: {exc}", file=sys.stderr)
        return 1
    if output is not None:
        Path(output).write_bytes(data.encode() if isinstance(data, str) else data)
        print(f"hotplumb render: wrote {output} ({fmt})", file=sys.stderr)
    elif isinstance(data, bytes):
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        sys.stdout.write(data)
        sys.stdout.flush()
    return 0
