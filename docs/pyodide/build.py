"""Assemble the in-browser demo page into one directory, ready to serve over HTTP.

    python docs/pyodide/build.py DIR [--wheel WHEEL]

(``scripts/pyodide --page DIR`` runs it after installing Pyodide from npm.)
DIR gets the page (``index.html``, ``index.js``, ``demo.py``), the live page's
drawing code and vendored cytoscape and dagre (``static/``, from
``src/hotplumb/web/static``), Pyodide's own files (``pyodide/``, from the npm
package in ``tests/pyodide/node_modules/pyodide``), hotplumb's wheel
(``wheels/``: WHEEL, or one built from the checkout with ``pip wheel
--no-deps``) and ``manifest.json`` naming the wheels. Nothing in it comes
from a CDN, and nothing large is kept in the repository.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["PYODIDE_FILES", "build", "main"]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
STATIC = ROOT / "src" / "hotplumb" / "web" / "static"
PYODIDE = ROOT / "tests" / "pyodide" / "node_modules" / "pyodide"
PAGE_FILES = ("index.html", "index.js", "demo.py")
STATIC_FILES = ("page.css", "draw.js")
PYODIDE_FILES = (
    "pyodide.js",
    "pyodide.asm.mjs",
    "pyodide.asm.wasm",
    "python_stdlib.zip",
    "pyodide-lock.json",
    "package.json",
)
"""What the page loads of the npm package (the interpreter and the standard library)."""


def build(out: Path, wheel: Path | None = None) -> Path:
    """Assemble the page into ``out`` (made if missing; files already there are replaced).

    Args:
        out: The directory to fill.
        wheel: hotplumb's wheel; by default one is built from the checkout.

    Returns:
        ``out``.

    Raises:
        FileNotFoundError: Pyodide is not installed from npm (run
            ``scripts/pyodide --setup``), or ``wheel`` does not exist.
    """
    missing = [name for name in PYODIDE_FILES if not (PYODIDE / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Pyodide's npm package lacks {', '.join(missing)} in {PYODIDE}: "
            "run `scripts/pyodide --setup`"
        )
    if wheel is not None and not wheel.is_file():
        raise FileNotFoundError(f"no wheel at {wheel}")
    out.mkdir(parents=True, exist_ok=True)
    for name in PAGE_FILES:
        shutil.copy2(HERE / name, out / name)
    (out / "static").mkdir(exist_ok=True)
    for name in STATIC_FILES:
        shutil.copy2(STATIC / name, out / "static" / name)
    shutil.copytree(STATIC / "vendor", out / "static" / "vendor", dirs_exist_ok=True)
    (out / "pyodide").mkdir(exist_ok=True)
    for name in PYODIDE_FILES:
        shutil.copy2(PYODIDE / name, out / "pyodide" / name)
    wheels = out / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir()
    if wheel is not None:
        shutil.copy2(wheel, wheels / wheel.name)
    else:
        with tempfile.TemporaryDirectory() as work:
            pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"]
            subprocess.run([*pip, "--wheel-dir", str(wheels), str(ROOT)], check=True, cwd=work)
    names = sorted(p.name for p in wheels.glob("*.whl"))
    (out / "manifest.json").write_text(json.dumps({"wheels": names}, indent=2) + "\n", "utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    """The command line: ``build.py DIR [--wheel WHEEL]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the directory to fill")
    parser.add_argument("--wheel", type=Path, help="hotplumb's wheel (default: build one)")
    args = parser.parse_args(argv)
    out = build(args.out, args.wheel)
    print(f"the page is in {out}: serve it, e.g. python -m http.server -d {out} 8000")
    return 0


if __name__ == "__main__":
    sys.exit(main())
