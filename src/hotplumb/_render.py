"""Pictures of graphs and snapshots: DOT, Mermaid, networkx, SVG and PNG.

Everything here reads a :class:`~hotplumb.Snapshot` (a :class:`~hotplumb.Graph`
or a running :class:`~hotplumb.Topology` is first turned into one), never live
nodes.

Conventions, the same in every format:

* Keys are shown with :func:`~hotplumb.format_key`; a long :class:`~hotplumb.Key`
  is broken into one ``field=value`` per line.
* Shapes tell the kind: entry points are arrows (DOT ``cds``, Mermaid
  ``>...]``), processors boxes, targets double octagons (Mermaid: subroutine
  boxes ``[[...]]``), timers ellipses (Mermaid: circles).
* Nodes the factory generated have dashed borders; provided ones solid.
* Live snapshots add: each edge's queue depth and capacity (orange when
  something waits, red when full), the entry queue and counters in each node,
  failures in red with the last error, sources waiting for demand greyed, and
  nodes a change has yet to reach outlined in blue.

The core needs no third-party package: DOT and Mermaid are plain text. SVG and
PNG need the ``graphviz`` Python package and Graphviz's ``dot`` program;
:func:`to_networkx` needs ``networkx`` (``pip install 'hotplumb[render]'``).
They are imported only when used.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias, overload

from hotplumb._errors import RenderError
from hotplumb._format import exception_text, format_key
from hotplumb._graph import Graph
from hotplumb._keys import Key
from hotplumb._node import NodeKind
from hotplumb._snapshot import NodeSnapshot, Snapshot, graph_snapshot

if TYPE_CHECKING:
    import os
    from collections.abc import Hashable

    from hotplumb._runtime import Topology

__all__ = [
    "FORMATS",
    "ImageFormat",
    "RenderError",
    "TextFormat",
    "format_for",
    "render",
    "to_dot",
    "to_mermaid",
    "to_networkx",
    "write",
]

FORMATS: Final = ("dot", "mermaid", "svg", "png", "json")
"""The formats :func:`render` and ``hotplumb render`` produce."""

TextFormat: TypeAlias = Literal["dot", "mermaid", "json"]
"""The formats :func:`render` returns as ``str``."""

ImageFormat: TypeAlias = Literal["svg", "png"]
"""The formats :func:`render` returns as ``bytes`` (drawn by Graphviz)."""

_SUFFIXES: Final = {
    ".dot": "dot",
    ".gv": "dot",
    ".mmd": "mermaid",
    ".mermaid": "mermaid",
    ".svg": "svg",
    ".png": "png",
    ".json": "json",
}

_PIP: Final = "pip install 'hotplumb[render]'"

_WRAP: Final = 32  # a Key whose readable form is longer gets one field per line

# Per kind: DOT shape, Mermaid opening and closing brackets, fill colour.
_SHAPES: Final = {
    NodeKind.ENTRY: ("cds", '>"', '"]', "#e3eefa"),
    NodeKind.PROCESSOR: ("box", '["', '"]', "#ffffff"),
    NodeKind.TARGET: ("doubleoctagon", '[["', '"]]', "#e4f4e7"),
    NodeKind.TIMER: ("ellipse", '(("', '"))', "#fbf0dc"),
}

_RED: Final = "#c00000"
_ORANGE: Final = "#d97a00"
_BLUE: Final = "#1f5fbf"
_GREY: Final = "#888888"
_GREY_FILL: Final = "#eeeeee"


# -- shared ----------------------------------------------------------------------


def _as_snapshot(obj: Graph | Snapshot | Topology) -> Snapshot:
    if isinstance(obj, Snapshot):
        return obj
    if isinstance(obj, Graph):
        return graph_snapshot(obj)
    from hotplumb._runtime import Topology

    if isinstance(obj, Topology):
        return obj.snapshot()
    raise TypeError(
        f"can only draw a hotplumb Graph, Snapshot or Topology, got {type(obj).__name__}"
    )


def _key_lines(k: Hashable) -> list[str]:
    text = format_key(k)
    if isinstance(k, Key) and len(k) > 1 and len(text) > _WRAP:
        return [format_key(Key({f: v})) for f, v in k.items()]
    return [text]


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _annotations(n: NodeSnapshot) -> list[str]:
    """The lines under the key: queue, counters, state, error, demand."""
    lines: list[str] = []
    c = n.counters
    if c is not None:
        parts = []
        if n.version:
            parts.append(f"v{n.version}")
        entry = [ch for ch in n.channels if ch.producer is None]
        if entry:
            parts.append(f"queue {entry[0].depth}/{entry[0].capacity}")
        parts.append(f"in {c.received}")
        parts.append(f"out {c.emitted}")
        if c.in_progress:
            parts.append(f"busy {c.in_progress}")
        if c.filtered:
            parts.append(f"filtered {c.filtered}")
        if c.failed:
            parts.append(f"failed {c.failed}")
        if c.restarts:
            parts.append(f"restarts {c.restarts}")
        lines.append(", ".join(parts))
    if n.state is not None:
        lines.append("state " + _clip(n.state, 40))
    if n.last_error is not None:
        lines.append(_clip(exception_text(n.last_error.exception), 48))
    if n.waiting_for_demand:
        lines.append("waiting for demand")
    if n.switching:
        lines.append("change pending")
    return lines


def _failing(n: NodeSnapshot) -> bool:
    return n.last_error is not None or (n.counters is not None and n.counters.failed > 0)


def _edge_queue(snap: Snapshot, producer: Hashable, reader: Hashable) -> tuple[int, int] | None:
    for ch in snap[reader].channels:
        if ch.producer == producer:
            return ch.depth, ch.capacity
    return None


def _title(snap: Snapshot) -> str:
    count = len(snap.nodes)
    if not snap.live:
        generated = sum(1 for n in snap.nodes if n.generated)
        return f"{count} nodes: {count - generated} provided, {generated} generated (dashed)"
    title = f"generation {snap.generation}, {count} nodes running, {snap.dead_letters} failure(s)"
    if snap.change is not None:
        ch = snap.change
        title += (
            f"; change to generation {ch.generation} in progress: "
            f"{len(ch.pending)} of {len(ch.region)} nodes pending"
        )
    return title


# -- DOT -------------------------------------------------------------------------


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _dot_quote(text: str) -> str:
    # In a DOT string only the quote and the backslash are special; a real
    # newline becomes the centred line break \n; other control characters,
    # which Graphviz rejects, are shown as escapes.
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\\n")
    text = _CONTROL.sub(lambda m: f"\\\\x{ord(m.group()):02x}", text)
    return f'"{text}"'


def _dot_attrs(attrs: dict[str, str]) -> str:
    return ", ".join(f"{name}={_dot_quote(value)}" for name, value in attrs.items())


def to_dot(obj: Graph | Snapshot | Topology, *, name: str = "hotplumb") -> str:
    """Return a Graphviz DOT description of a graph, snapshot or running topology.

    Args:
        obj: What to draw. A running topology is snapshotted first.
        name: The DOT graph's name.

    Returns:
        The DOT text. Node ids are ``n0``, ``n1``, ... in topological order;
        each node's ``tooltip`` is its key's ``repr``.

    Example:
        >>> from hotplumb import Graph, Node, sink
        >>> text = to_dot(Graph({"in": Node(), "out": sink(print, inputs=["in"])}))
        >>> print(text.splitlines()[4])
          n0 [label="in", shape="cds", style="filled", fillcolor="#e3eefa", tooltip="'in'"];
    """
    snap = _as_snapshot(obj)
    ids = {n.key: f"n{i}" for i, n in enumerate(snap.nodes)}
    lines = [
        f"digraph {_dot_quote(name)} {{",
        "  graph ["
        + _dot_attrs(
            {
                "rankdir": "LR",
                "label": _title(snap),
                "labelloc": "t",
                "fontname": "Helvetica",
                "fontsize": "12",
            }
        )
        + "];",
        '  node [fontname="Helvetica", fontsize="10"];',
        '  edge [fontname="Helvetica", fontsize="9", color="#555555"];',
    ]
    for n in snap.nodes:
        shape, _, _, fill = _SHAPES[n.kind]
        style = ["filled"]
        if n.kind is NodeKind.PROCESSOR:
            style.append("rounded")
        if n.generated:
            style.append("dashed")
        attrs = {
            "label": "\n".join(_key_lines(n.key) + _annotations(n)),
            "shape": shape,
            "style": ",".join(style),
            "fillcolor": fill,
            "tooltip": repr(n.key),
        }
        if n.waiting_for_demand:
            attrs.update(fillcolor=_GREY_FILL, fontcolor=_GREY, color=_GREY)
        if n.switching:
            attrs.update(color=_BLUE, penwidth="2")
        if _failing(n):
            attrs.update(color=_RED, fontcolor=_RED, penwidth="2")
        lines.append(f"  {ids[n.key]} [{_dot_attrs(attrs)}];")
    for a, b in snap.edges:
        queue = _edge_queue(snap, a, b) if snap.live else None
        attrs = {}
        if queue is not None:
            depth, capacity = queue
            attrs["label"] = f"{depth}/{capacity}"
            if depth >= capacity:
                attrs.update(color=_RED, fontcolor=_RED, penwidth="2")
            elif depth:
                attrs.update(color=_ORANGE, fontcolor=_ORANGE)
        suffix = f" [{_dot_attrs(attrs)}]" if attrs else ""
        lines.append(f"  {ids[a]} -> {ids[b]}{suffix};")
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- Mermaid ---------------------------------------------------------------------


def _mermaid_text(text: str) -> str:
    # Inside a quoted Mermaid label, entity codes (#NN;) escape what would
    # end the label or be read as HTML; line breaks are <br>.
    out = []
    for char in text:
        if char in '#"<>&`':
            out.append(f"#{ord(char)};")
        elif char == "\n":
            out.append("<br>")
        elif char in "\r\t" or _CONTROL.match(char):
            out.append(" ")
        else:
            out.append(char)
    return "".join(out)


def to_mermaid(obj: Graph | Snapshot | Topology) -> str:
    """Return a Mermaid flowchart of a graph, snapshot or running topology.

    Paste it into a ```` ```mermaid ```` block of a Markdown file on GitHub.

    Args:
        obj: What to draw. A running topology is snapshotted first.

    Returns:
        The flowchart text. Node ids are ``n0``, ``n1``, ... in topological
        order; labels are quoted, with ``#"<>&`` and backticks as entity codes.

    Example:
        >>> from hotplumb import Graph, Node, sink
        >>> text = to_mermaid(Graph({"in": Node(), "out": sink(print, inputs=["in"])}))
        >>> for line in text.splitlines()[:5]:
        ...     print(line)
        flowchart LR
          %% 2 nodes: 2 provided, 0 generated (dashed)
          n0>"in"]
          n1[["out"]]
          n0 --> n1
    """
    snap = _as_snapshot(obj)
    ids = {n.key: f"n{i}" for i, n in enumerate(snap.nodes)}
    lines = ["flowchart LR", f"  %% {_mermaid_text(_title(snap))}"]
    classes: dict[str, list[str]] = {}
    for n in snap.nodes:
        _, opening, closing, _ = _SHAPES[n.kind]
        label = _mermaid_text("\n".join(_key_lines(n.key) + _annotations(n)))
        lines.append(f"  {ids[n.key]}{opening}{label}{closing}")
        classes.setdefault(n.kind.value, []).append(ids[n.key])
        for flag, on in (
            ("generated", n.generated),
            ("waiting", n.waiting_for_demand),
            ("switching", n.switching),
            ("failing", _failing(n)),
        ):
            if on:
                classes.setdefault(flag, []).append(ids[n.key])
    for a, b in snap.edges:
        queue = _edge_queue(snap, a, b) if snap.live else None
        arrow = "-->" if queue is None else f'-->|"{queue[0]}/{queue[1]}"|'
        lines.append(f"  {ids[a]} {arrow} {ids[b]}")
    styles = {
        "entry": f"fill:{_SHAPES[NodeKind.ENTRY][3]},stroke:#4a6fa5",
        "processor": f"fill:{_SHAPES[NodeKind.PROCESSOR][3]},stroke:#555555",
        "target": f"fill:{_SHAPES[NodeKind.TARGET][3]},stroke:#3c7d4a",
        "timer": f"fill:{_SHAPES[NodeKind.TIMER][3]},stroke:#a87b2d",
        "generated": "stroke-dasharray:4 3",
        "waiting": f"fill:{_GREY_FILL},color:{_GREY},stroke:{_GREY}",
        "switching": f"stroke:{_BLUE},stroke-width:2px",
        "failing": f"stroke:{_RED},stroke-width:2px,color:{_RED}",
    }
    for name, style in styles.items():
        if name in classes:
            lines.append(f"  classDef {name} {style}")
    for name in styles:
        if name in classes:
            lines.append(f"  class {','.join(classes[name])} {name}")
    return "\n".join(lines) + "\n"


# -- networkx --------------------------------------------------------------------


def to_networkx(obj: Graph | Snapshot | Topology) -> Any:
    """Return a :class:`networkx.DiGraph` with the snapshot's data as attributes.

    Nodes are the keys themselves. Node attributes: ``label`` (readable key),
    ``kind`` (``"entry"``, ...), ``generated``, ``version``, ``readers``,
    ``state``, ``last_error`` (text or ``None``), ``waiting_for_demand``,
    ``switching``, and for a live snapshot the counters (``received``,
    ``emitted``, ``filtered``, ``failed``, ``restarts``, ``in_progress``) and
    ``input_depth``/``input_capacity``. Live edges carry ``depth`` and
    ``capacity``. Graph attributes: ``live``, ``generation``, ``dead_letters``.

    Args:
        obj: What to convert. A running topology is snapshotted first.

    Returns:
        A new ``networkx.DiGraph``.

    Raises:
        RenderError: networkx is not installed.
    """
    try:
        import networkx
    except ImportError as exc:
        raise RenderError(f"to_networkx() needs networkx: {_PIP}") from exc
    snap = _as_snapshot(obj)
    g = networkx.DiGraph(live=snap.live, generation=snap.generation, dead_letters=snap.dead_letters)
    for n in snap.nodes:
        attrs: dict[str, Any] = {
            "label": n.label,
            "kind": n.kind.value,
            "generated": n.generated,
            "version": n.version,
            "readers": n.readers,
            "state": n.state,
            "last_error": None if n.last_error is None else exception_text(n.last_error.exception),
            "waiting_for_demand": n.waiting_for_demand,
            "switching": n.switching,
        }
        if n.counters is not None:
            attrs.update(n.counters.to_dict())
            attrs.update(input_depth=n.input_depth, input_capacity=n.input_capacity)
        g.add_node(n.key, **attrs)
    for a, b in snap.edges:
        queue = _edge_queue(snap, a, b) if snap.live else None
        if queue is None:
            g.add_edge(a, b)
        else:
            g.add_edge(a, b, depth=queue[0], capacity=queue[1])
    return g


# -- images and files ------------------------------------------------------------


@overload
def render(obj: Graph | Snapshot | Topology, format: TextFormat) -> str: ...


@overload
def render(obj: Graph | Snapshot | Topology, format: ImageFormat = "svg") -> bytes: ...


@overload
def render(obj: Graph | Snapshot | Topology, format: str) -> str | bytes: ...


def render(obj: Graph | Snapshot | Topology, format: str = "svg") -> str | bytes:
    """Return a picture (or the text) of a graph, snapshot or running topology.

    Args:
        obj: What to draw. A running topology is snapshotted first.
        format: One of :data:`FORMATS`: ``"svg"`` or ``"png"`` (drawn by
            Graphviz), ``"dot"`` or ``"mermaid"`` (text), ``"json"`` (the
            snapshot's :meth:`~hotplumb.Snapshot.to_dict`, as text).

    Returns:
        ``str`` for the text formats ``"dot"``, ``"mermaid"`` and ``"json"``;
        ``bytes`` for the images ``"svg"`` and ``"png"``.

    Raises:
        ValueError: Unknown format.
        RenderError: SVG or PNG was asked for and the ``graphviz`` Python
            package or Graphviz's ``dot`` program is missing.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    if format == "dot":
        return to_dot(obj)
    if format == "mermaid":
        return to_mermaid(obj)
    if format == "json":
        return json.dumps(_as_snapshot(obj).to_dict(), indent=2) + "\n"
    return _graphviz(to_dot(obj), format)


def _graphviz(dot_text: str, format: str) -> bytes:
    try:
        import graphviz
    except ImportError as exc:
        raise RenderError(
            f"rendering {format.upper()} needs the graphviz Python package: {_PIP} "
            "(and Graphviz's dot program); 'dot' and 'mermaid' output need neither"
        ) from exc
    if shutil.which("dot") is None:
        raise RenderError(
            f"rendering {format.upper()} needs Graphviz's 'dot' program, which is not on "
            "PATH: install Graphviz (apt install graphviz, brew install graphviz, or "
            "https://graphviz.org/download/), or render to 'dot' or 'mermaid' text instead"
        )
    try:
        data: bytes = graphviz.Source(dot_text).pipe(format=format)
    except graphviz.ExecutableNotFound as exc:  # pragma: no cover - PATH changed meanwhile
        raise RenderError(f"Graphviz's 'dot' program could not be run: {exc}") from exc
    return data


def format_for(path: str | os.PathLike[str]) -> str:
    """Return the format that ``path``'s suffix asks for.

    Raises:
        ValueError: The suffix is not one of ``.dot .gv .mmd .mermaid .svg .png .json``.
    """
    suffix = Path(path).suffix.lower()
    try:
        return _SUFFIXES[suffix]
    except KeyError:
        known = " ".join(_SUFFIXES)
        raise ValueError(
            f"cannot tell the format from {str(path)!r}: use a suffix among {known}, "
            "or give the format"
        ) from None


def write(
    obj: Graph | Snapshot | Topology,
    path: str | os.PathLike[str],
    format: str | None = None,
) -> Path:
    """Render ``obj`` into the file ``path``.

    Args:
        obj: What to draw. A running topology is snapshotted first.
        path: The file to write (replaced if it exists).
        format: One of :data:`FORMATS`; by default from the suffix (``.dot``,
            ``.gv``, ``.mmd``, ``.mermaid``, ``.svg``, ``.png``, ``.json``).

    Text formats are written as UTF-8.

    Returns:
        The path written.

    Raises:
        ValueError: No format given and the suffix is unknown, or unknown format.
        RenderError: As for :func:`render`.
    """
    path = Path(path)
    data = render(obj, format if format is not None else format_for(path))
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path
