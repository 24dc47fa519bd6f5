"""The public namespace: exactly the public names, each documented, examples that run."""

from __future__ import annotations

import doctest
import inspect
import pickle
import subprocess
import sys
import traceback
import types

import pytest

import hotplumb as hp
import hotplumb.testing


def test_all_is_sorted_and_exactly_the_public_names() -> None:
    public = {name for name in vars(hp) if not name.startswith("_")}
    modules = {name for name in public if isinstance(getattr(hp, name), types.ModuleType)}
    assert set(hp.__all__) == public - modules
    assert hp.__all__ == sorted(hp.__all__, key=lambda n: (not n.isupper(), n[0].islower(), n))


def public_classes_and_functions() -> list[str]:
    return [
        name
        for name in hp.__all__
        if isinstance(getattr(hp, name), type) or inspect.isfunction(getattr(hp, name))
    ]


def test_every_public_class_and_function_reports_the_public_module() -> None:
    names = public_classes_and_functions()
    assert {"ApplyError", "Graph", "Key", "Tick", "key", "render", "run"} <= set(names)
    for name in names:
        obj = getattr(hp, name)
        assert obj.__module__ == "hotplumb", (name, obj.__module__)
        assert obj.__qualname__ == name


def test_public_names_print_as_public() -> None:
    assert repr(hp.ApplyError) == "<class 'hotplumb.ApplyError'>"
    assert repr(hp.Graph) == "<class 'hotplumb.Graph'>"
    assert repr(hp.key).startswith("<function key at ")
    try:
        raise hp.ApplyError("timed out", "old")
    except hp.ApplyError as exc:
        shown = traceback.format_exception(exc)
    assert shown[-1] == "hotplumb.ApplyError: timed out; the topology runs the old graph\n"
    assert traceback.format_exception_only(hp.MissingNodeError("x", ["x"])) == [
        "hotplumb.MissingNodeError: no node for key x\n"
    ]


@pytest.mark.parametrize("name", public_classes_and_functions())
def test_public_classes_and_functions_pickle_by_their_public_name(name: str) -> None:
    obj = getattr(hp, name)
    data = pickle.dumps(obj)
    assert b"hotplumb._" not in data
    assert pickle.loads(data) is obj


@pytest.mark.parametrize(
    "value",
    [
        hp.key(subscriptions={"source/foo", "source/bar"}, rollup_window=10_000),
        hp.Tick(scheduled=1.5, index=3, missed=0, period=0.5),
        hp.Window(start=0.0, end=1.0, values=(1, 2), missed=1),
        hp.RestartPolicy(max_restarts=1),
        hp.NodeKind.TIMER,
        hp.SKIP,
    ],
    ids=repr,
)
def test_public_values_still_pickle(value: object) -> None:
    copy = pickle.loads(pickle.dumps(value))
    assert copy == value
    assert type(copy) is type(value)


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
        # module=False: a method's __module__ is still its private module, and
        # the finder would otherwise skip it as foreign to "hotplumb".
        for test in finder.find(obj, name, module=False, globs=dict(globs)):
            seen += len(test.examples)
            runner.run(test)
    testing_globs = {**globs, **vars(hotplumb.testing)}
    for test in finder.find(hotplumb.testing, "hotplumb.testing", globs=testing_globs):
        seen += len(test.examples)
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert seen >= 40
    assert result.failed == 0


def test_importing_hotplumb_never_imports_ray() -> None:
    code = "import sys, hotplumb, hotplumb.testing; assert 'ray' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_without_ray_hotplumb_ray_says_what_to_install() -> None:
    # A None entry in sys.modules makes `import ray` fail, as it does without the extra.
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "try:\n    import hotplumb.ray\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, timeout=60, capture_output=True, text=True
    )
    assert "pip install 'hotplumb[ray]'" in out.stdout
