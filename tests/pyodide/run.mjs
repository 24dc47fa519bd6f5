// Run Python under Pyodide in Node with hotplumb's wheel installed.
//
//   node --experimental-wasm-stack-switching tests/pyodide/run.mjs \
//       --wheels DIR [--wheels DIR...] [--mount ROOT] -- SCRIPT.py [ARGS...]
//
// Every *.whl in each DIR is unpacked into Pyodide's site-packages (nothing is
// fetched from the network: the wheels come from the project's own build and,
// for the test suite, from `pip download`). ROOT (the checkout) is mounted at
// /repo and becomes the working directory, and SCRIPT.py (a path relative to ROOT)
// runs as __main__ with sys.argv = [SCRIPT.py, ARGS...]. The exit code is the
// script's SystemExit code, 1 on an uncaught exception.
import { readFileSync, readdirSync } from "node:fs";
import { isAbsolute, join, relative, resolve } from "node:path";
import { loadPyodide } from "pyodide";

const argv = process.argv.slice(2);
const sep = argv.indexOf("--");
const opts = sep < 0 ? argv : argv.slice(0, sep);
const [script, ...args] = sep < 0 ? [] : argv.slice(sep + 1);
const values = (name) => opts.flatMap((o, i) => (o === name ? [opts[i + 1]] : []));
const wheels = values("--wheels");
const root = resolve(values("--mount").at(-1) ?? ".");
if (wheels.length === 0 || !script) {
  console.error("usage: run.mjs --wheels DIR [--mount ROOT] -- SCRIPT.py [ARGS...]");
  process.exit(2);
}

const t0 = Date.now();
const pyodide = await loadPyodide();
// Raw writes, so that pytest's progress dots stay on one line.
const writer = (stream) => ({ write: (buf) => (stream.write(buf), buf.length) });
pyodide.setStdout(writer(process.stdout));
pyodide.setStderr(writer(process.stderr));
const extractDir = pyodide.runPython("import site; site.getsitepackages()[0]");
for (const dir of wheels) {
  for (const name of readdirSync(dir).filter((n) => n.endsWith(".whl")).sort()) {
    pyodide.unpackArchive(new Uint8Array(readFileSync(join(dir, name))), "wheel", { extractDir });
  }
}
if (process.env.HOTPLUMB_PYODIDE_TIMING) console.error(`pyodide ready in ${Date.now() - t0} ms`);
pyodide.FS.mkdirTree("/repo");
pyodide.FS.mount(pyodide.FS.filesystems.NODEFS, { root }, "/repo");

const main = join("/repo", isAbsolute(script) ? relative(root, script) : script);
pyodide.globals.set("_argv", pyodide.toPy([main, ...args]));
const code = await pyodide.runPythonAsync(`
import os, runpy, sys
os.chdir("/repo")
sys.argv = list(_argv)
del _argv
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
    _code = 0
except SystemExit as exc:
    _code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
except BaseException:
    import traceback
    traceback.print_exc()
    _code = 1
_code
`);
process.exit(code);
