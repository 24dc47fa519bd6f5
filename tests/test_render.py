"""Rendering: DOT (parsed back with pydot), Mermaid, networkx, images, files, the CLI."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import sys
import textwrap
import warnings
from typing import TYPE_CHECKING, Any, assert_type

import networkx
import pydot
import pytest

with warnings.catch_warnings():
    # pydot's parser still calls pyparsing's old camelCase names on import.
    warnings.simplefilter("ignore", DeprecationWarning)
    import pydot.dot_parser

import hotplumb as hp
from hotplumb import _cli_render, _loader, _render
from hotplumb.testing import wait_until
from tests.test_inspect import fragile, seed_graph

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None, reason="Graphviz's dot program is not installed"
)


# -- helpers: read DOT and Mermaid back ---------------------------------------------


def unquote(value: str) -> str:
    """A DOT attribute value as Graphviz reads it (quotes off, escapes undone)."""
    if not (value.startswith('"') and value.endswith('"')):
        return value
    out, chars = [], iter(value[1:-1])
    for c in chars:
        if c == "\\":
            nxt = next(chars)
            out.append("\n" if nxt == "n" else nxt)
        else:
            out.append(c)
    return "".join(out)


def parse_dot(text: str) -> tuple[dict[str, dict[str, str]], dict[tuple[str, str], dict[str, str]]]:
    """Nodes (id -> attributes) and edges ((tail, head) -> attributes) of DOT text."""
    graphs = pydot.graph_from_dot_data(text)
    assert graphs is not None
    assert len(graphs) == 1
    graph = graphs[0]
    nodes = {
        n.get_name(): {k: unquote(v) for k, v in n.get_attributes().items()}
        for n in graph.get_nodes()
        if n.get_name() not in ("node", "edge", "graph")
    }
    edges = {
        (str(e.get_source()), str(e.get_destination())): {
            k: unquote(v) for k, v in e.get_attributes().items()
        }
        for e in graph.get_edges()
    }
    return nodes, edges


NODE = re.compile(r'^  (n\d+)(>"|\["|\[\["|\(\(")(.*?)("\]|"\]\]|"\)\))$')
EDGE = re.compile(r'^  (n\d+) -->(?:\|"([^"]*)"\|)? (n\d+)$')
CLASS = re.compile(r"^  class ((?:n\d+,)*n\d+) (\w+)$")
SHAPE_OF = {'>"': "entry", '["': "processor", '[["': "target", '(("': "timer"}


def parse_mermaid(text: str) -> tuple[dict[str, tuple[str, str]], dict[tuple[str, str], str]]:
    """Nodes (id -> (shape, label)) and edges ((from, to) -> label) of a flowchart."""
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    nodes: dict[str, tuple[str, str]] = {}
    edges: dict[tuple[str, str], str] = {}
    for line in lines[1:]:
        if m := NODE.match(line):
            assert '"' not in m[3]  # quotes inside labels are escaped
            nodes[m[1]] = (SHAPE_OF[m[2]], m[3])
        elif m := EDGE.match(line):
            edges[(m[1], m[3])] = m[2] or ""
        elif not (CLASS.match(line) or line.startswith(("  classDef ", "  %% "))):
            raise AssertionError(f"unexpected Mermaid line {line!r}")
    return nodes, edges


def classes_of(text: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for line in text.splitlines():
        if m := CLASS.match(line):
            out[m[2]] = set(m[1].split(","))
    return out


# -- static pictures ----------------------------------------------------------------


def test_dot_of_a_graph_has_every_node_edge_shape_and_readable_label() -> None:
    graph = seed_graph()
    nodes, edges = parse_dot(hp.to_dot(graph))
    by_label = {attrs["label"]: attrs for attrs in nodes.values()}
    ids = {attrs["label"]: name for name, attrs in nodes.items()}
    assert len(nodes) == len(graph)
    assert len(edges) == len(graph.edges)
    entry = by_label["subscription=source/foo"]
    assert entry["shape"] == "cds"
    assert "dashed" in entry["style"]
    assert by_label["timeout=10000"]["shape"] == "ellipse"
    rolled = "subscription=source/foo\nrollup_window=10000"  # a long Key: a field per line
    assert by_label[rolled]["shape"] == "box"
    client = by_label["client/a"]
    assert client["shape"] == "doubleoctagon"
    assert "dashed" not in client["style"]
    assert client["tooltip"] == "'client/a'"
    assert (ids["subscription=source/foo"], ids[rolled]) in edges
    assert (ids["subscriptions={source/foo}\nrollup_window=10000"], ids["client/b"]) in edges
    # every edge of the graph, by label
    labels = {name: attrs["label"] for name, attrs in nodes.items()}
    drawn = {(labels[a], labels[b]) for a, b in edges}
    assert drawn == {
        ("\n".join(_render._key_lines(a)), "\n".join(_render._key_lines(b))) for a, b in graph.edges
    }


def test_dot_escapes_quotes_backslashes_and_newlines_in_keys() -> None:
    weird = 'say "hi" \\N\nnext'
    graph = hp.Graph({weird: hp.Node(), "out": hp.sink(print, inputs=[weird])})
    nodes, edges = parse_dot(hp.to_dot(graph, name='my "graph"'))
    labels = sorted(attrs["label"] for attrs in nodes.values())
    assert labels == ["out", weird]
    assert len(edges) == 1


@needs_dot
def test_graphviz_draws_weird_keys_literally() -> None:
    weird = 'say "hi" & <b>'
    graph = hp.Graph({weird: hp.Node(), "out": hp.sink(print, inputs=[weird])})
    svg = hp.render(graph, "svg").decode()
    assert "say &quot;hi&quot; &amp; &lt;b&gt;" in svg


def test_mermaid_of_a_graph_has_every_node_and_edge_with_shapes() -> None:
    graph = seed_graph()
    text = hp.to_mermaid(graph)
    nodes, edges = parse_mermaid(text)
    by_label = {label: (name, shape) for name, (shape, label) in nodes.items()}
    assert len(nodes) == len(graph)
    assert len(edges) == len(graph.edges)
    assert by_label["subscription=source/foo"][1] == "entry"
    assert by_label["timeout=10000"][1] == "timer"
    assert by_label["client/a"][1] == "target"
    assert by_label["subscription=source/foo<br>rollup_window=10000"][1] == "processor"
    generated = classes_of(text)["generated"]
    assert by_label["client/a"][0] not in generated
    assert by_label["timeout=10000"][0] in generated
    assert (
        by_label["subscription=source/foo"][0],
        by_label["subscription=source/foo<br>rollup_window=10000"][0],
    ) in edges


def test_mermaid_escapes_what_would_break_a_label() -> None:
    weird = 'a "quote" #1 <b> & `tick`'
    graph = hp.Graph({weird: hp.Node(), "out": hp.sink(print, inputs=[weird])})
    nodes, _ = parse_mermaid(hp.to_mermaid(graph))
    labels = sorted(label for _, label in nodes.values())
    assert labels == ["a #34;quote#34; #35;1 #60;b#62; #38; #96;tick#96;", "out"]


def test_networkx_export_keeps_keys_and_attributes() -> None:
    graph = seed_graph()
    g = hp.to_networkx(graph)
    assert isinstance(g, networkx.DiGraph)
    assert set(g.nodes) == set(graph.nodes)
    assert set(g.edges) == set(graph.edges)
    foo = hp.key(subscription="source/foo")
    assert g.nodes[foo]["kind"] == "entry"
    assert g.nodes[foo]["generated"] is True
    assert g.nodes[foo]["label"] == "subscription=source/foo"
    assert g.nodes["client/a"]["kind"] == "target"
    assert g.graph["live"] is False
    assert list(networkx.topological_sort(g))[-1] in graph.targets


def test_drawing_something_else_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="Graph, Snapshot or Topology"):
        hp.to_dot(42)  # type: ignore[arg-type]


# -- live pictures ------------------------------------------------------------------


async def test_live_pictures_show_queues_counts_errors_and_demand() -> None:
    gate = asyncio.Event()
    entered = asyncio.Event()

    async def held(d: hp.Datum) -> None:
        entered.set()
        await gate.wait()

    async def feed(ctx: hp.Context) -> Any:
        await ctx.wait_for_demand()
        yield 1  # pragma: no cover - nobody ever reads

    graph = hp.Graph(
        {
            "in": hp.Node(),
            "f": hp.Node(fragile, inputs=["in"]),
            "out": hp.sink(held, inputs=["f"]),
            "lonely": hp.source(feed, target=True),
        }
    )
    async with hp.run(graph, capacity=2) as topo:
        injecting = asyncio.create_task(topo.inject_many("in", range(20)))
        await asyncio.wait_for(entered.wait(), 5)
        await wait_until(lambda: topo.snapshot()["out"].channels[0].full)
        snap = topo.snapshot()
        dot = hp.to_dot(topo)  # a topology is snapshotted
        mermaid = hp.to_mermaid(snap)
        g = hp.to_networkx(snap)
        gate.set()
        await asyncio.wait_for(injecting, 5)

    nodes, edges = parse_dot(dot)
    first = {attrs["label"].split("\n")[0]: attrs for attrs in nodes.values()}
    ids = {attrs["label"].split("\n")[0]: name for name, attrs in nodes.items()}
    f = first["f"]
    assert f["color"] == "#c00000"
    counters = snap["f"].counters
    assert counters is not None
    failed = counters.failed
    assert failed == len(range(0, counters.received, 3))
    assert f"failed {failed}" in f["label"]
    assert f"ValueError: bad {3 * (failed - 1)}" in f["label"]
    assert first["in"]["label"].split("\n")[1].startswith("queue ")
    assert first["lonely"]["fillcolor"] == "#eeeeee"
    assert "waiting for demand" in first["lonely"]["label"]
    into_out = edges[(ids["f"], ids["out"])]
    depth = snap["out"].channels[0].depth
    assert into_out["label"] == f"{depth}/2"
    assert into_out["color"] == "#c00000"
    assert "generation 0" in dot

    m_nodes, m_edges = parse_mermaid(mermaid)
    m_ids = {label.split("<br>")[0]: name for name, (_, label) in m_nodes.items()}
    assert m_edges[(m_ids["f"], m_ids["out"])] == f"{depth}/2"
    classes = classes_of(mermaid)
    assert m_ids["f"] in classes["failing"]
    assert m_ids["lonely"] in classes["waiting"]

    assert g.nodes["f"]["failed"] == failed
    assert g.nodes["f"]["last_error"].startswith("ValueError: bad")
    assert g.nodes["out"]["input_capacity"] == 2
    assert g.edges["f", "out"] == {"depth": depth, "capacity": 2}
    assert g.graph["live"] is True


# -- images, files, missing dependencies ---------------------------------------------


def test_render_text_formats_without_graphviz(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "graphviz", None)  # importing it now fails
    graph = seed_graph()
    assert hp.render(graph, "dot") == hp.to_dot(graph)
    assert hp.render(graph, "mermaid") == hp.to_mermaid(graph)
    assert '"kind": "timer"' in hp.render(graph, "json")
    with pytest.raises(hp.RenderError, match=r"pip install 'hotplumb\[render\]'"):
        hp.render(graph, "png")
    with pytest.raises(ValueError, match="unknown format 'gif'"):
        hp.render(graph, "gif")


def test_render_returns_text_for_text_formats_and_bytes_for_images(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    graph = seed_graph()
    dot = hp.render(graph, "dot")
    mermaid = hp.render(graph, "mermaid")
    snapshot = hp.render(graph, "json")
    assert_type(dot, str)
    assert_type(mermaid, str)
    assert_type(snapshot, str)
    assert [type(x) for x in (dot, mermaid, snapshot)] == [str, str, str]
    assert json.loads(snapshot) == graph.snapshot().to_dict()
    fmt: str = "mermaid"
    assert_type(hp.render(graph, fmt), str | bytes)
    assert hp.render(graph, fmt) == mermaid
    # Images are bytes; drawing them needs Graphviz, so fake the drawing.
    monkeypatch.setattr(_render, "_graphviz", lambda text, fmt: f"<{fmt}>".encode())
    assert_type(hp.render(graph), bytes)
    assert_type(hp.render(graph, "png"), bytes)
    assert hp.render(graph) == b"<svg>"
    assert hp.render(graph, "png") == b"<png>"


def test_a_missing_dot_program_says_how_to_install_graphviz(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(hp.RenderError, match="install Graphviz") as caught:
        hp.render(seed_graph(), "svg")
    assert isinstance(caught.value, hp.HotplumbError)


def test_a_missing_networkx_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "networkx", None)
    with pytest.raises(hp.RenderError, match="networkx"):
        hp.to_networkx(seed_graph())


@needs_dot
def test_render_png_and_svg() -> None:
    graph = seed_graph()
    assert hp.render(graph, "png").startswith(b"\x89PNG\r\n\x1a\n")
    svg = hp.render(graph, "svg").decode()
    assert "<svg" in svg
    assert "client/a" in svg


def test_write_picks_the_format_from_the_suffix(tmp_path: Path) -> None:
    graph = seed_graph()
    assert hp.write(graph, tmp_path / "g.dot").read_text() == hp.to_dot(graph)
    assert hp.write(graph, tmp_path / "g.mmd").read_text() == hp.to_mermaid(graph)
    assert hp.write(graph, tmp_path / "g.txt", "mermaid").read_text() == hp.to_mermaid(graph)
    with pytest.raises(ValueError, match="cannot tell the format"):
        hp.write(graph, tmp_path / "g.txt")


@needs_dot
def test_write_png(tmp_path: Path) -> None:
    path = hp.write(seed_graph(), tmp_path / "g.png")
    assert path.read_bytes().startswith(b"\x89PNG")


# -- the command line ---------------------------------------------------------------

MODULE = """
import hotplumb as hp

graph = hp.Graph({"in": hp.Node(), "out": hp.sink(print, inputs=["in"])})

def build():
    return graph.add_node("more", hp.sink(print, inputs=["in"]))

def needs_args(x):
    return graph

number = 42
"""


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"user_graph_{abs(hash(tmp_path)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.chdir(tmp_path)
    yield name
    sys.modules.pop(name, None)


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="hotplumb render")
    _cli_render.add_arguments(parser)
    return _cli_render.main(parser.parse_args(argv))


def test_cli_prints_dot_by_default(user_module: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(f"{user_module}:graph") == 0
    nodes, edges = parse_dot(capsys.readouterr().out)
    assert sorted(a["label"] for a in nodes.values()) == ["in", "out"]
    assert len(edges) == 1


def test_cli_mermaid_from_a_callable(user_module: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(f"{user_module}:build", "--format", "mermaid") == 0
    nodes, edges = parse_mermaid(capsys.readouterr().out)
    assert sorted(label for _, label in nodes.values()) == ["in", "more", "out"]
    assert len(edges) == 2


def test_cli_writes_a_file_by_suffix(
    user_module: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(f"{user_module}:graph", "-o", str(tmp_path / "g.mmd")) == 0
    assert (tmp_path / "g.mmd").read_text().startswith("flowchart LR\n")
    assert "wrote" in capsys.readouterr().err


def test_cli_loads_a_file_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "elsewhere.py"
    path.write_text(textwrap.dedent(MODULE))
    assert cli(f"{path}:graph", "-f", "dot") == 0
    assert capsys.readouterr().out.startswith('digraph "hotplumb" {')


@needs_dot
def test_cli_png(user_module: str, tmp_path: Path) -> None:
    assert cli(f"{user_module}:graph", "-o", str(tmp_path / "g.png")) == 0
    assert (tmp_path / "g.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_colon", "expected MODULE:ATTR"),
        ("no_such_module_anywhere:graph", "no module named 'no_such_module_anywhere'"),
        ("{module}:missing", "has no attribute 'missing'"),
        ("{module}:number", "is a int, not a hotplumb.Graph"),
        ("{module}:needs_args", "cannot be called without arguments"),
        ("missing/file.py:graph", "no such file"),
    ],
)
def test_cli_explains_a_bad_target(
    user_module: str, capsys: pytest.CaptureFixture[str], target: str, message: str
) -> None:
    assert cli(target.format(module=user_module)) == 2
    err = capsys.readouterr().err
    assert err.startswith("hotplumb render: error: ")
    assert message in err


def test_cli_reports_a_missing_graphviz(
    user_module: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert cli(f"{user_module}:graph", "-f", "svg") == 1
    assert "install Graphviz" in capsys.readouterr().err


def test_hotplumb_render_command(user_module: str, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("hotplumb._demo", reason="the hotplumb command needs its demo module")
    from hotplumb._cli import main

    assert main(["render", f"{user_module}:graph", "--format", "mermaid"]) == 0
    assert capsys.readouterr().out.startswith("flowchart LR")


def test_load_graph_raises_value_error(user_module: str) -> None:
    graph = _loader.load_graph(f"{user_module}:graph")
    assert isinstance(graph, hp.Graph)
    with pytest.raises(ValueError, match=r"not a hotplumb\.Graph"):
        _loader.load_graph(f"{user_module}:number")


def test_load_object_returns_what_the_spec_names(user_module: str) -> None:
    assert _loader.load_object(f"{user_module}:number") == 42
    build = _loader.load_object(f"{user_module}:build")
    assert callable(build)
    assert (
        _loader.load_object(f"{user_module}:graph.nodes")
        == _loader.load_graph(f"{user_module}:graph").nodes
    )
    with pytest.raises(ValueError, match="has no attribute 'missing'"):
        _loader.load_object(f"{user_module}:missing")
    with pytest.raises(ValueError, match="expected MODULE:ATTR"):
        _loader.load_object("no_colon")


def test_odd_keys_and_unprintable_errors_still_render() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str")

    nul = "source\x00with-nul"
    graph = hp.Graph({nul: hp.Node(), "out": hp.sink(print, inputs=[nul])})
    dot = hp.to_dot(graph)
    assert "\x00" not in dot
    parsed = pydot.graph_from_dot_data(dot)
    assert parsed is not None
    assert len(parsed[0].get_nodes()) >= 2
    assert "\x00" not in hp.to_mermaid(graph)
    from hotplumb._format import exception_text

    assert exception_text(Unprintable()) == "Unprintable: <message cannot be shown>"


def test_render_loader_tells_a_missing_module_from_a_missing_dependency(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hotplumb._loader import load_graph

    monkeypatch.chdir(tmp_path)
    (tmp_path / "zzqapp.py").write_text("import zzq_not_installed\n")
    with pytest.raises(ModuleNotFoundError, match="zzq_not_installed"):
        load_graph("zzqapp:graph")
    with pytest.raises(ValueError, match="no module named 'zzqnope'"):
        load_graph("zzqnope:graph")


def test_render_loader_keeps_the_directory_importable_while_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hotplumb._loader import load_graph

    monkeypatch.chdir(tmp_path)
    (tmp_path / "lazy_parts.py").write_text("import hotplumb as hp\nNODE = hp.Node()\n")
    (tmp_path / "lazy_topology.py").write_text(
        "import hotplumb as hp\n"
        "def build():\n"
        "    import lazy_parts\n"
        "    return hp.Graph({'in': lazy_parts.NODE, 'out': hp.sink(print, inputs=['in'])})\n"
    )
    graph = load_graph("lazy_topology:build")
    assert isinstance(graph, hp.Graph)
    assert set(graph.nodes) == {"in", "out"}
