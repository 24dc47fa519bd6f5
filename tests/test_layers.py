"""The layers of ``src/hotplumb``, enforced: no module imports from its own or a later layer.

:data:`LAYERS` is the table drawn at the top of ``hotplumb/__init__.py``,
earliest first. A module may import hotplumb modules from strictly earlier
layers only. Every module under ``src/hotplumb`` (subpackages such as
``examples`` included) must be in the table; names in the table that do not
exist (yet) are skipped.

What counts as an import, read from the source with :mod:`ast` (nothing is
imported to check it): ``import hotplumb.x``, ``from hotplumb.x import y``,
``from hotplumb import x``, relative imports, at module level or inside a
function; ``importlib.import_module("hotplumb.x")`` and any other string
literal that is exactly a hotplumb module's dotted name (that is how a
command table names the modules it imports on demand). Importing the package
itself (``import hotplumb``, or a name it re-exports) counts as importing every
module ``hotplumb/__init__.py`` imports.

Imports inside ``if TYPE_CHECKING:`` blocks are exempt: they exist only for
annotations, which ``from __future__ import annotations`` never evaluates, so
they create no dependency at run time.

``hotplumb/__init__.py`` may import every layer, since it only re-exports; it
is checked instead to hold nothing but imports, ``__all__`` and the loop that
sets ``__module__`` on the exported names.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest

import hotplumb

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

PACKAGE_DIR: Final = Path(hotplumb.__file__).parent

LAYERS: Final[tuple[tuple[str, ...], ...]] = (
    ("_format",),
    ("_errors",),
    ("_store",),
    ("_keys",),
    ("_node",),
    ("_snapshot",),
    ("_graph",),
    ("_explain",),
    ("_datum",),
    ("_clock", "_context"),
    ("_sources",),
    ("_channel",),
    ("_wire",),
    ("_raywire",),
    ("_raypull",),
    ("_kernel",),
    ("_observe",),
    ("_change",),
    ("_inspect",),
    ("_runner",),
    ("_checkpoint",),
    ("_subscribe",),
    ("otel",),
    ("_runtime",),
    ("_time",),
    ("_render",),
    ("_loader",),
    ("testing",),
    ("examples.*",),
    ("web._json",),
    ("web._metrics",),
    ("web._app",),
    ("web._serve",),
    ("web",),
    ("_demo", "_cli_render", "_serve"),
    ("_cli",),
)
"""Module names relative to the package, earliest layer first; ``x.*`` is a subpackage."""

UNLISTED: Final = "<not in the layer table>"
"""The second half of a violation that is a module missing from the table."""

PENDING: Final[frozenset[tuple[str, str]]] = frozenset()
"""Known violations, as (importer, imported) pairs, allowed until the runtime is reworked."""


@dataclass(frozen=True, slots=True)
class Import:
    """One import of a hotplumb module found in a module's source."""

    module: str
    line: int
    via: str = ""


@dataclass(frozen=True, slots=True)
class Violation:
    """An import against the layering, or a module the table does not list."""

    importer: str
    imported: str
    text: str

    @property
    def pair(self) -> tuple[str, str]:
        return (self.importer, self.imported)


# -- reading the source --------------------------------------------------------------


def module_name(path: Path, root: Path) -> str:
    """The name relative to the package: ``_keys``, ``examples`` (a package), ``""`` (the root)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def discover(root: Path) -> dict[str, ast.Module]:
    """Parse every module under ``root``, by :func:`module_name`."""
    return {
        module_name(path, root): ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for path in sorted(root.rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterable[ast.AST]:
    """Every node of ``tree``, in source order, but the bodies of ``if TYPE_CHECKING:`` blocks."""
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(reversed(node.orelse))
            continue
        todo.extend(reversed(list(ast.iter_child_nodes(node))))


def imports_of(
    tree: ast.Module, name: str, modules: Iterable[str], *, is_package: bool = False
) -> list[Import]:
    """The hotplumb modules that module ``name`` imports, outside ``if TYPE_CHECKING:``.

    Args:
        tree: The module's parsed source.
        name: Its name relative to the package (``""`` for ``hotplumb`` itself).
        modules: Every module's name, to tell ``from hotplumb.x import y`` (a
            submodule ``y``) from a name ``y`` defined in ``x``.
        is_package: Whether ``name`` is a package (an ``__init__.py``), which
            relative imports start from.

    Returns:
        The imports, with ``""`` standing for the package ``hotplumb`` itself.
    """
    known = set(modules)
    package = name if is_package else name.rpartition(".")[0]

    def resolve(dotted: str) -> str | None:
        # "hotplumb.a.b" -> "a.b"; None for anything outside hotplumb.
        if dotted == "hotplumb":
            return ""
        if dotted.startswith("hotplumb."):
            return dotted.removeprefix("hotplumb.")
        return None

    def nearest(relative: str) -> str:
        # The longest prefix that is a module: "_keys.Key" -> "_keys".
        while relative and relative not in known:
            relative = relative.rpartition(".")[0]
        return relative

    found: list[Import] = []
    for node in _runtime_nodes(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [t for alias in node.names if (t := resolve(alias.name)) is not None]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                parent: str | None = ".".join([*base, *(node.module or "").split(".")]).strip(".")
            else:
                parent = resolve(node.module or "")
            if parent is not None:
                for alias in node.names:
                    sub = f"{parent}.{alias.name}" if parent else alias.name
                    targets.append(sub if sub in known else parent)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            target = resolve(node.value)
            if target and target in known:
                targets = [target]
        for target in targets:
            found.append(Import(nearest(target), getattr(node, "lineno", 0)))
    return found


# -- checking ------------------------------------------------------------------------


def layer_of(table: Sequence[Sequence[str]], module: str) -> int | None:
    """The index of ``module``'s layer in ``table``, or ``None`` if it is not listed."""
    for index, layer in enumerate(table):
        for entry in layer:
            if entry == module or (
                entry.endswith(".*") and (module == entry[:-2] or module.startswith(entry[:-1]))
            ):
                return index
    return None


def check(
    table: Sequence[Sequence[str]], imports: Mapping[str, Sequence[Import]]
) -> list[Violation]:
    """Every violation of ``table`` by ``imports`` (module -> what it imports).

    ``imports[""]`` are the imports of ``hotplumb/__init__.py``: exempt
    itself, and what any module importing ``hotplumb`` imports through it.
    """
    violations: list[Violation] = []
    for importer in sorted(imports):
        if importer == "":
            continue
        mine = layer_of(table, importer)
        if mine is None:
            violations.append(
                Violation(importer, UNLISTED, f"hotplumb.{importer} is not in the layer table")
            )
            continue
        seen: set[str] = set()
        for imp in _through_package(imports[importer], imports.get("", ())):
            theirs = layer_of(table, imp.module)
            if imp.module == importer or imp.module in seen or theirs is None:
                continue  # itself (a package's own name), a repeat, or reported as unlisted
            if theirs >= mine:
                seen.add(imp.module)
                where = "its own" if theirs == mine else "a later"
                violations.append(
                    Violation(
                        importer,
                        imp.module,
                        f"hotplumb.{importer} (line {imp.line}{imp.via}) imports "
                        f"hotplumb.{imp.module}, from {where} layer",
                    )
                )
    return violations


def _through_package(imports: Sequence[Import], package: Sequence[Import]) -> Iterable[Import]:
    for imp in imports:
        if imp.module == "":
            for inner in package:
                yield Import(inner.module, imp.line, ", through hotplumb/__init__.py")
        else:
            yield imp


def package_imports(root: Path) -> dict[str, list[Import]]:
    """What every module under ``root`` imports, by :func:`module_name`."""
    trees = discover(root)
    names = [n for n in trees if n]
    packages = {module_name(p, root) for p in root.rglob("__init__.py")}
    return {
        name: imports_of(tree, name, names, is_package=name in packages)
        for name, tree in trees.items()
    }


# -- the package ---------------------------------------------------------------------


def test_no_module_imports_from_its_own_or_a_later_layer() -> None:
    violations = [v for v in check(LAYERS, package_imports(PACKAGE_DIR)) if v.pair not in PENDING]
    assert not violations, "\n".join(v.text for v in violations)


def test_pending_violations_still_occur() -> None:
    # When a pending violation is fixed, remove it from PENDING.
    found = {v.pair for v in check(LAYERS, package_imports(PACKAGE_DIR))}
    assert found >= PENDING, f"fixed, remove from PENDING: {sorted(PENDING - found)}"


def test_the_table_is_the_one_in_the_package_docstring() -> None:
    doc = hotplumb.__doc__ or ""
    existing = {name for name in package_imports(PACKAGE_DIR) if name}
    listed = [
        entry
        for layer in LAYERS
        for entry in layer
        if entry in existing or (entry.endswith(".*") and entry[:-2] in existing)
    ]
    positions = [doc.find(f"``{entry}``") for entry in listed]
    assert all(p >= 0 for p in positions), [
        e for e, p in zip(listed, positions, strict=True) if p < 0
    ]
    assert positions == sorted(positions)


def test_the_package_init_only_reexports() -> None:
    tree = ast.parse((PACKAGE_DIR / "__init__.py").read_text(encoding="utf-8"))
    body = list(tree.body)
    assert isinstance(body[0], ast.Expr)
    assert isinstance(body[0].value, ast.Constant)  # the docstring
    loops = 0
    for stmt in body[1:]:
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            continue
        if isinstance(stmt, ast.Assign) and [ast.unparse(t) for t in stmt.targets] == ["__all__"]:
            assert isinstance(stmt.value, ast.List)
            assert all(isinstance(e, ast.Constant) for e in stmt.value.elts)
            continue
        if isinstance(stmt, ast.For) and ast.unparse(stmt.iter) == "__all__":
            loops += 1
            _check_module_loop(stmt)
            continue
        if isinstance(stmt, ast.Delete):
            assert all(ast.unparse(t).startswith("_") for t in stmt.targets)
            continue
        pytest.fail(f"hotplumb/__init__.py line {stmt.lineno}: {ast.unparse(stmt)[:60]!r}")
    assert loops == 1


def _check_module_loop(loop: ast.For) -> None:
    # It may only bind private names and set __module__.
    assert ast.unparse(loop.target).startswith("_")
    sets_module = False
    for node in ast.walk(loop):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Attribute):
                    assert target.attr == "__module__", ast.unparse(node)
                    sets_module = True
                else:
                    assert ast.unparse(target).startswith("_"), ast.unparse(node)
        if isinstance(node, ast.Call):
            assert ast.unparse(node.func) in {"globals", "isinstance", "callable"}
        assert not isinstance(node, ast.FunctionDef | ast.ClassDef | ast.Import | ast.ImportFrom)
    assert sets_module


# -- the checker itself --------------------------------------------------------------


def parse(source: str, name: str, modules: Iterable[str], *, is_package: bool = False) -> list[str]:
    tree = ast.parse(textwrap.dedent(source))
    return [i.module for i in imports_of(tree, name, modules, is_package=is_package)]


def test_every_form_of_import_is_found() -> None:
    modules = ["_a", "_b", "_c", "_d", "_e", "_f", "_g", "sub", "sub.x"]
    found = parse(
        """
        import os
        import hotplumb._a
        from hotplumb._b import thing
        from hotplumb import _c, Name
        from . import _d
        from ._e import other
        import importlib
        from typing import TYPE_CHECKING

        if TYPE_CHECKING:
            from hotplumb._g import Annotation
        else:
            from hotplumb._f import Fallback

        def later():
            from hotplumb.sub import x
            return importlib.import_module("hotplumb._g")
        """,
        "_z",
        modules,
    )
    assert sorted(found) == ["", "_a", "_b", "_c", "_d", "_e", "_f", "_g", "sub.x"]


def test_relative_imports_start_from_the_right_package() -> None:
    modules = ["_a", "sub", "sub.x", "sub.y"]
    assert parse("from . import y\nfrom .. import _a", "sub.x", modules) == ["sub.y", "_a"]
    assert parse("from . import y\nfrom .x import z", "sub", modules, is_package=True) == [
        "sub.y",
        "sub.x",
    ]


def test_the_checker_reports_upward_and_sideways_imports_and_unlisted_modules() -> None:
    table = (("_low",), ("_mid", "_mid2"), ("_high",), ("pkg.*",))
    imports = {
        "": [Import("_high", 1)],
        "_low": [Import("_mid", 3)],
        "_mid": [Import("_low", 1), Import("_mid2", 2)],
        "_mid2": [],
        "_high": [Import("_mid", 1), Import("_stray", 2)],
        "_stray": [Import("_high", 1)],
        "pkg": [],
        "pkg.example": [Import("", 4)],
        "_early": [Import("", 5)],
    }
    table_with_early = (("_early",), *table)
    found = {v.pair: v.text for v in check(table_with_early, imports)}
    assert set(found) == {
        ("_low", "_mid"),
        ("_mid", "_mid2"),
        ("_stray", UNLISTED),
        ("_early", "_high"),
    }
    assert found[("_low", "_mid")] == (
        "hotplumb._low (line 3) imports hotplumb._mid, from a later layer"
    )
    assert found[("_mid", "_mid2")].endswith("from its own layer")
    assert found[("_early", "_high")] == (
        "hotplumb._early (line 5, through hotplumb/__init__.py) imports hotplumb._high, "
        "from a later layer"
    )
    assert check(table, {"_low": [], "_mid": [Import("_low", 1)]}) == []


def test_layer_of_reads_subpackage_patterns() -> None:
    table = (("_a",), ("examples.*",))
    assert layer_of(table, "examples") == 1
    assert layer_of(table, "examples.feed_rollup") == 1
    assert layer_of(table, "examples_other") is None
    assert layer_of(table, "_b") is None
