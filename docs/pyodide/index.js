// Runs the feed-rollup demo inside Pyodide on this page and draws it with draw.js.
//
// Everything comes from the page's own directory (see index.html): Pyodide's files
// under pyodide/, hotplumb's wheel under wheels/ (named in manifest.json), demo.py.
// ?duration=SECONDS sets the scenario's length (real time; 6 by default).
(function () {
  "use strict";
  const byId = (id) => document.getElementById(id);
  const status = byId("status");
  const verification = byId("verification");
  const params = new URLSearchParams(window.location.search);
  const duration = Number(params.get("duration") || "6");

  async function fetchOk(path) {
    const response = await fetch(path);
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response;
  }

  function draw(text) {
    const state = JSON.parse(text);
    window.hotplumbPage.render(state);
    if (state.verification) {
      verification.textContent = state.verification.lines.join("\n");
      verification.className = state.verification.ok ? "ok" : "failed";
      const t = state.totals;
      status.textContent += ` · finished: ${t.produced} events, ${t.ticks} ticks, ` +
        `${t.delivered} summaries delivered`;
    }
  }

  async function start() {
    if (!(duration > 0)) throw new Error(`?duration must be a positive number of seconds`);
    const manifest = await (await fetchOk("manifest.json")).json();
    const pyodide = await loadPyodide({ indexURL: new URL("pyodide/", window.location.href).href });
    status.textContent = `Pyodide ${pyodide.version} loaded; installing hotplumb…`;
    const sitePackages = pyodide.runPython("import site; site.getsitepackages()[0]");
    for (const wheel of manifest.wheels) {
      const data = await (await fetchOk("wheels/" + wheel)).arrayBuffer();
      pyodide.unpackArchive(data, "wheel", { extractDir: sitePackages });
    }
    pyodide.FS.writeFile(sitePackages + "/hotplumb_page_demo.py", await (await fetchOk("demo.py")).text());
    status.textContent = `running the demo for ${duration} s…`;
    pyodide.globals.set("_draw", draw);
    pyodide.globals.set("_duration", duration);
    await pyodide.runPythonAsync(
      "import hotplumb_page_demo\nawait hotplumb_page_demo.main(_draw, duration=_duration)");
  }

  start().catch((error) => {
    console.error(error);
    status.textContent = "failed";
    verification.className = "failed";
    verification.textContent = `verification: not reached: ${error}`;
  });
})();
