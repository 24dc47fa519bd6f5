"""Finding the user's objects from a ``MODULE:ATTR`` spec, for the commands.

``hotplumb render`` takes a spec like ``myapp.topology:graph``:

* ``MODULE`` is a dotted module name, found on ``sys.path`` or in the current
  directory, or a path to a ``.py`` file.
* ``ATTR`` is an attribute of that module, dotted for nested names.

:func:`load_object` returns what the spec names; :func:`load_graph` also
calls a zero-argument callable and checks that the result is a graph. Both
raise :class:`ValueError` saying what was wrong, for a malformed spec, a
missing module, file or attribute, or something that is not a graph. An
import error inside the user's module (a dependency it needs) is not
converted: it propagates as raised, so it is not mistaken for a bad spec.

The current directory is put on ``sys.path`` while loading (unless it is
there already) and taken off afterwards; for :func:`load_graph` it stays
until the graph is built, since a callable (or a factory it runs) may import
lazily.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hotplumb._graph import Graph
from hotplumb._snapshot import Snapshot

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["load_graph", "load_object"]


def load_object(spec: str) -> Any:
    """Import ``MODULE:ATTR`` and return the object it names.

    Args:
        spec: ``MODULE:ATTR``; ``ATTR`` may be dotted for nested names.

    Returns:
        The object, as found (a callable is not called).

    Raises:
        ValueError: ``spec`` is malformed, or the module, file or attribute
            is missing.
    """
    with _current_directory_importable():
        return _load_object(spec)


def load_graph(spec: str) -> Graph | Snapshot:
    """Import ``MODULE:ATTR`` and return the graph it names.

    ``ATTR`` is a :class:`~hotplumb.Graph` or :class:`~hotplumb.Snapshot`, or
    a zero-argument callable returning one.

    Args:
        spec: ``MODULE:ATTR``.

    Returns:
        The graph (or snapshot).

    Raises:
        ValueError: ``spec`` is malformed, the module or attribute is missing,
            or it is not a graph.
    """
    with _current_directory_importable():
        obj = _load_object(spec)
        if callable(obj) and not isinstance(obj, Graph | Snapshot):
            try:
                inspect.signature(obj).bind()
            except TypeError as exc:
                raise ValueError(f"{spec} cannot be called without arguments: {exc}") from None
            except ValueError:  # pragma: no cover - a builtin without a signature: just try
                pass
            obj = obj()
    if not isinstance(obj, Graph | Snapshot):
        raise ValueError(
            f"{spec} is a {type(obj).__name__}, not a hotplumb.Graph "
            "(or a zero-argument callable returning one)"
        )
    return obj


@contextlib.contextmanager
def _current_directory_importable() -> Iterator[None]:
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added:
            sys.path.remove(cwd)


def _load_object(spec: str) -> Any:
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected MODULE:ATTR (e.g. myapp.topology:graph), got {spec!r}")
    module = _import(module_name)
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{module_name!r} has no attribute {attr!r}") from None
    return obj


def _import(module_name: str) -> Any:
    if module_name.endswith(".py") or os.sep in module_name or "/" in module_name:
        path = Path(module_name)
        if not path.is_file():
            raise ValueError(f"no such file: {module_name}")
        name = f"_hotplumb_render_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:  # pragma: no cover - a .py file always loads
            raise ValueError(f"cannot import {module_name}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        return module
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # The module itself (or a package on its way) is missing, not something it imports.
        if exc.name is not None and (
            exc.name == module_name or module_name.startswith(exc.name + ".")
        ):
            raise ValueError(
                f"no module named {module_name!r} (looked on sys.path and in {os.getcwd()})"
            ) from exc
        raise
