"""The public namespace: exactly the public names, each documented, examples that run."""

from __future__ import annotations

import doctest
import inspect
import types

import pytest

import hotplumb as hp
import hotplumb.testing


def test_all_is_sorted_and_exactly_the_public_names() -> None:
    public = {name for name in vars(hp) if not name.startswith("_")}
    modules = {name for name in public if isinstance(getattr(hp, name), types.ModuleType)}
    assert set(hp.__all__) == public - modules
    assert hp.__all__ == sorted(hp.__all__, key=lambda n: (not n.isupper(), n[0].islower(), n))


def test_every_public_name_comes_from_a_private_module() -> None:
    for name in hp.__all__:
        obj = getattr(hp, name)
        if isinstance(obj, type) or inspect.isfunction(obj):
            assert obj.__module__.startswith("hotplumb._"), (name, obj.__module__)


@pytest.mark.parametrize("name", hp.__all__)
def test_every_public_name_is_documented(name: str) -> None:
    obj = getattr(hp, name)
    if isinstance(obj, type) or inspect.isfunction(obj):
        assert inspect.getdoc(obj), f"hotplumb.{name} has no docstring"
    if isinstance(obj, type):
        for attr, member in vars(obj).items():
            if attr.startswith("_") or not (
                inspect.isfunction(member) or isinstance(member, property)
            ):
                continue
            assert inspect.getdoc(member), f"hotplumb.{name}.{attr} has no docstring"


def test_the_examples_in_docstrings_run() -> None:
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    globs = {**vars(hp), "hp": hp, "asyncio": __import__("asyncio")}
    seen = 0
    for name in hp.__all__:
        obj = getattr(hp, name)
        for test in finder.find(obj, name, globs=dict(globs)):
            seen += len(test.examples)
            runner.run(test)
    testing_globs = {**globs, **vars(hotplumb.testing)}
    for test in finder.find(hotplumb.testing, "hotplumb.testing", globs=testing_globs):
        seen += len(test.examples)
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert seen > 10
    assert result.failed == 0
