"""The README's worked examples run and print what the README says."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_worked_example_runs_and_prints_what_it_says() -> None:
    block = python_blocks()[0]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    expected = [
        c.split("# ", 1)[1].strip()
        for c in block.splitlines()
        if c.lstrip().startswith("print(") and "# " in c
    ]
    assert out.getvalue().splitlines() == expected


def test_the_factory_example_resolves_and_collects() -> None:
    namespace: dict[str, object] = {}
    exec(compile("import hotplumb as hp\n" + python_blocks()[1], "README.md", "exec"), namespace)
    graph = namespace["graph"]
    import hotplumb as hp

    assert isinstance(graph, hp.Graph)
    alice_only = graph.remove_node("client/bob")
    bob_merge = hp.key(subscriptions={"source/foo"}, rollup_window=10_000)
    assert bob_merge in graph.nodes
    assert bob_merge not in alice_only.nodes
    shared = hp.key(subscription="source/foo", rollup_window=10_000)
    assert graph.readers_of(shared) == {
        bob_merge,
        hp.key(subscriptions={"source/foo", "source/bar"}, rollup_window=10_000),
    }
    assert graph.readers_of(hp.key(timeout=10_000)) == {
        shared,
        hp.key(subscription="source/bar", rollup_window=10_000),
    }


def test_the_checkpoint_example_runs_and_prints_what_it_says() -> None:
    (block,) = [b for b in python_blocks() if "hp.SQLiteStore" in b]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    expected = [
        c.split("# ", 1)[1].strip()
        for c in block.splitlines()
        if c.lstrip().startswith("print(") and "# " in c
    ]
    assert out.getvalue().splitlines() == expected
