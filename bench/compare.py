"""Compare two revisions of hotplumb on the same benchmark harness, in one run.

Usage::

    python bench/compare.py BASE_REV [NEW_REV|WORKTREE] [--rounds N] [--bench NAME] -- ARGS

``BASE_REV`` and ``NEW_REV`` are git revisions; ``WORKTREE`` (the default new
side) is the checkout's ``src/`` as it is on disk, uncommitted changes included.
Each revision's ``src/`` is extracted with ``git archive`` into a temporary
directory; the repository itself is not touched.

The benchmark script (``bench_runtime.py``, or ``bench_apply.py`` with
``--bench apply``, or ``bench_concurrency.py`` with ``--bench concurrency``,
which then runs hotplumb's own rows only and reports CPU and wall-clock ns/hop
for each, or ``bench_joins.py`` with ``--bench joins``) always comes from
this checkout, so both revisions run under the same harness. It runs in a
child process per revision and round,
with ``PYTHONPATH`` pointing at that revision's ``src/`` (each child reports
where it imported hotplumb from, and a mismatch is an error), asking for JSON
output (``--json``) and, for ``bench_runtime.py``, for hotplumb alone
(``--contestants hotplumb``, the throughput workloads only), so the peers'
packages need not be installed. ``ARGS`` go to the script as well, e.g.
``--quick``, ``--items 100000``, ``--repeat 3`` or ``--only W1``.

The revisions alternate round by round (old, new, old, new, ...) so that
drift in the machine's speed hits both alike. For every figure (ns/hop per
workload; for ``bench_apply.py`` the apply, switch and pause milliseconds
per change) the report gives each revision's median over the rounds of the
child's own median, the range over the rounds, and the ratio new/old: below
1 the new revision takes less time.

``bench_apply.py`` picks its load from a measurement unless given ``--rate``;
here the first child's choice is passed to every later child, so both
revisions carry the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from _harness import environment, fmt_ratio, markdown_table

if TYPE_CHECKING:
    from collections.abc import Sequence

ROOT: Final = Path(__file__).resolve().parent.parent
BENCH: Final = Path(__file__).resolve().parent
WORKTREE: Final = "WORKTREE"
SCRIPTS: Final = {
    "runtime": "bench_runtime.py",
    "apply": "bench_apply.py",
    "concurrency": "bench_concurrency.py",
    "joins": "bench_joins.py",
}
THROUGHPUT: Final = ("W1", "W2", "W3")


class CompareError(RuntimeError):
    """A revision could not be prepared, or a child did not give a usable answer."""


@dataclass
class Revision:
    """One side of the comparison: where its ``src/`` is, and what it found per figure."""

    spec: str
    label: str
    src: Path
    rounds: list[dict[str, Any]] = field(default_factory=list)


def git(*args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise CompareError(f"git {shlex.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def prepare(spec: str, into: Path) -> Revision:
    """Extract ``spec``'s ``src/`` into ``into`` (or use the checkout's for ``WORKTREE``)."""
    if spec == WORKTREE:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "src")
        label = f"worktree ({head} + uncommitted changes)" if dirty else f"worktree ({head})"
        return Revision(spec, label, ROOT / "src")
    try:
        sha = git("rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}")
    except CompareError:
        raise CompareError(f"{spec!r} is not a commit of {ROOT}") from None
    short = git("rev-parse", "--short", sha)
    into.mkdir(parents=True)
    archive = subprocess.Popen(
        ["git", "-C", str(ROOT), "archive", "--format=tar", sha, "src"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert archive.stdout is not None
    with tarfile.open(fileobj=archive.stdout, mode="r|") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(into, filter="data")
        else:  # Pythons before the extraction filters; it is our own repository's archive
            tar.extractall(into)
    _, err = archive.communicate()
    if archive.returncode != 0:
        raise CompareError(f"git archive {spec}: {err.decode().strip()}")
    src = into / "src"
    if not (src / "hotplumb" / "__init__.py").is_file():
        raise CompareError(f"{spec} ({short}) has no src/hotplumb package")
    return Revision(spec, f"{spec} ({short})", src)


def bench_args(bench: str, passed: Sequence[str]) -> list[str]:
    """``passed`` with what makes the script print JSON for hotplumb alone."""
    args = list(passed)
    if bench == "runtime":
        only = list(THROUGHPUT)
        rest: list[str] = []
        it = iter(args)
        for arg in it:
            if arg == "--only":
                only = [s for s in next(it, "").split(",") if s.strip() in THROUGHPUT]
            elif arg.startswith("--only="):
                only = [s for s in arg.split("=", 1)[1].split(",") if s.strip() in THROUGHPUT]
            else:
                rest.append(arg)
        if not only:
            raise CompareError("--only names no throughput workload (W1, W2, W3)")
        args = [*rest, "--only", ",".join(only), "--contestants", "hotplumb"]
    return [*args, "--json"]


def run_child(script: Path, args: Sequence[str], revision: Revision, timeout: float) -> Any:
    """Run the benchmark for ``revision``; return its JSON answer."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(revision.src), os.environ.get("PYTHONPATH", "")) if p
    )
    command = [sys.executable, str(script), *args]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise CompareError(f"{revision.label}: no answer within {timeout:.0f} s") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        err = done.stderr.strip().splitlines()
        why = err[-1] if err else f"exit status {done.returncode}"
        raise CompareError(f"{revision.label}: {shlex.join(command)} failed: {why}")
    try:
        answer = json.loads(lines[-1])
    except json.JSONDecodeError:
        raise CompareError(f"{revision.label}: no JSON line in {lines[-1]!r}") from None
    imported = Path(answer.get("hotplumb", "?")).resolve()
    expected = (revision.src / "hotplumb").resolve()
    if imported != expected:
        raise CompareError(
            f"{revision.label}: the benchmark imported hotplumb from {imported}, not {expected}"
            " (is another hotplumb first on the path?)"
        )
    return answer


def number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 1 else f"{value:.3g}"


def progress(text: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r\x1b[K{text}")
        sys.stderr.flush()


def summary(revision: Revision, key: str) -> tuple[list[float], list[str]]:
    """The per-round values of one figure, and the errors of rounds that had none."""
    values: list[float] = []
    errors: list[str] = []
    for answer in revision.rounds:
        entry = answer["results"].get(key, {"error": "error: not run"})
        if "error" in entry:
            errors.append(entry["error"])
        else:
            values.append(float(entry["value"]))
    return values, errors


def report(old: Revision, new: Revision, rounds: int) -> str:
    keys = list(dict.fromkeys(k for r in (old, new) for a in r.rounds for k in a["results"]))
    parts: list[str] = []
    for key in keys:
        entry = next(a["results"][key] for r in (old, new) for a in r.rounds if key in a["results"])
        rows: list[list[str]] = []
        medians: list[float | None] = []
        for side, revision in (("old", old), ("new", new)):
            values, errors = summary(revision, key)
            median = statistics.median(values) if values else None
            medians.append(median)
            cells = [f"{side}: {revision.label}"]
            if median is None:
                cells += [errors[0] if errors else "no result", "", ""]
            else:
                spread = f"{number(min(values))} - {number(max(values))}"
                cells += [number(median), spread, f"{len(values)}/{rounds}"]
            rows.append(cells)
        before, after = medians
        ratio = fmt_ratio(after / before) if before and after is not None else ""
        rows[0].append("")
        rows[1].append(ratio)
        metric = entry.get("metric", "")
        headers = ["revision", f"median {metric}", "min - max", "rounds", "new/old"]
        parts.append(f"## {entry.get('title', key)}\n\n{markdown_table(headers, rows)}\n")
    return "\n".join(parts)


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    argv = list(argv)
    passed: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, passed = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(
        prog="compare.py",
        description="Run a benchmark against two revisions of hotplumb, interleaved, and"
        " compare hotplumb's figures. Arguments after -- go to the benchmark script.",
    )
    parser.add_argument("old", metavar="BASE_REV", help=f"git revision, or {WORKTREE}")
    parser.add_argument(
        "new",
        metavar="NEW_REV",
        nargs="?",
        default=WORKTREE,
        help=f"git revision, or {WORKTREE} (the default): the checkout's src/ as it is",
    )
    parser.add_argument("--rounds", type=int, default=3, help="runs of each revision (default 3)")
    parser.add_argument(
        "--bench",
        choices=sorted(SCRIPTS),
        default="runtime",
        help="bench_runtime.py (the default), bench_apply.py, bench_concurrency.py"
        " or bench_joins.py",
    )
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds allowed per child (default 1800)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the extracted revisions")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args, passed


def main(argv: Sequence[str] | None = None) -> int:
    args, passed = parse(sys.argv[1:] if argv is None else argv)
    script = BENCH / SCRIPTS[args.bench]
    tmp = Path(tempfile.mkdtemp(prefix="hotplumb-compare-"))
    try:
        old = prepare(args.old, tmp / "old")
        new = prepare(args.new, tmp / "new")
        child_args = bench_args(args.bench, passed)
        for n in range(args.rounds):
            for revision in (old, new):
                progress(f"round {n + 1}/{args.rounds}: {revision.label}")
                answer = run_child(script, child_args, revision, args.timeout)
                revision.rounds.append(answer)
                fixed = any(a == "--rate" or a.startswith("--rate=") for a in child_args)
                if args.bench == "apply" and not fixed:
                    child_args += ["--rate", str(answer["rate"])]  # the same load for all
        progress("")
    except CompareError as exc:
        progress("")
        print(f"compare.py: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"compare.py: the extracted revisions are in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    shown = shlex.join([f"bench/{script.name}", *child_args])
    print(f"# hotplumb: {old.label} against {new.label}\n")
    print("\n".join(environment()))
    print(f"- benchmark: `{shown}`, with PYTHONPATH at each revision's src/")
    print(f"- rounds: {args.rounds} of each revision, alternating old, new, old, new, ...\n")
    print(
        "median: over the rounds, of each round's own median; min - max: the range over"
        " the rounds; new/old: the new revision's median over the old one's (below 1: the"
        " new revision takes less time).\n"
    )
    print(report(old, new, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
