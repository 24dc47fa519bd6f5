// Draws a state of the page (the "state" events of /api/events) as a picture
// (cytoscape, laid out by dagre) and as text (tables and lists in the DOM).
// Used by the live page (app.js) and by the in-browser demo (docs/pyodide/), which
// computes the same state inside Pyodide. Exposes window.hotplumbPage.render(state).
(function () {
  "use strict";
  const byId = (id) => document.getElementById(id);
  const COLOURS = { entry: "#188038", processor: "#1a73e8", target: "#8430ce", timer: "#e37400" };
  const SHAPES = { entry: "triangle", processor: "round-rectangle", target: "octagon", timer: "ellipse" };
  let nodesByKey = new Map();
  let selected = null;
  let shownChanges = 0;
  let cy = null;

  function makeGraph() {
    if (typeof cytoscape === "undefined") return null;
    if (typeof cytoscapeDagre !== "undefined") cytoscape.use(cytoscapeDagre);
    const graph = cytoscape({
      container: byId("graph"),
      wheelSensitivity: 0.3,
      style: [
        { selector: "node", style: {
          "label": "data(label)", "text-wrap": "wrap", "font-size": 10, "text-valign": "center",
          "shape": "data(shape)", "background-color": "#fff", "border-width": 2,
          "border-color": "data(colour)", "width": "label", "height": "label", "padding": 8 } },
        { selector: "node.generated", style: { "border-style": "dashed" } },
        { selector: "node.failing", style: { "background-color": "#f28b82" } },
        { selector: "node.full", style: { "border-color": "#f9ab00", "border-width": 5 } },
        { selector: "node.switching", style: { "background-color": "#fdd663" } },
        { selector: "node:selected", style: { "overlay-opacity": 0.15, "overlay-color": "#1a73e8" } },
        { selector: "edge", style: {
          "width": 1.5, "line-color": "#9aa0a6", "target-arrow-color": "#9aa0a6",
          "target-arrow-shape": "triangle", "curve-style": "bezier" } },
      ],
    });
    graph.on("tap", "node", (event) => select(event.target.id()));
    window.hotplumbGraph = graph; // for debugging and tests
    return graph;
  }

  function label(node) {
    const c = node.counters;
    const depth = node.channels.reduce((sum, ch) => sum + ch.depth, 0);
    const counts = c ? `\n${c.received} in · ${c.emitted} out${c.failed ? " · " + c.failed + " failed" : ""}` : "";
    return node.key + counts + (node.channels.length ? `\ndepth ${depth}` : "");
  }

  function isFull(node) { return node.channels.some((ch) => ch.depth >= ch.capacity); }
  function isFailing(node) { return node.last_error !== null || (node.counters && node.counters.failed > 0); }

  function drawGraph(snapshot) {
    if (cy === null) cy = makeGraph();
    if (cy === null) return;
    const keys = new Set(snapshot.nodes.map((n) => n.key));
    let structural = false;
    cy.batch(() => {
      cy.nodes().forEach((el) => { if (!keys.has(el.id())) { el.remove(); structural = true; } });
      for (const node of snapshot.nodes) {
        let el = cy.getElementById(node.key);
        if (el.empty()) {
          el = cy.add({ group: "nodes", data: { id: node.key } });
          structural = true;
        }
        el.data({ label: label(node), shape: SHAPES[node.kind] || "rectangle", colour: COLOURS[node.kind] || "#555" });
        el.toggleClass("generated", node.generated === true);
        el.toggleClass("failing", isFailing(node));
        el.toggleClass("full", isFull(node));
        el.toggleClass("switching", node.switching);
      }
      const edges = new Set(snapshot.edges.map(([a, b]) => a + "\u0000" + b));
      cy.edges().forEach((el) => { if (!edges.has(el.id())) { el.remove(); structural = true; } });
      for (const [a, b] of snapshot.edges) {
        const id = a + "\u0000" + b;
        if (cy.getElementById(id).empty()) {
          cy.add({ group: "edges", data: { id: id, source: a, target: b } });
          structural = true;
        }
      }
    });
    if (structural) {
      // dagre is deterministic: the parts of the graph that did not change keep their places.
      const name = typeof cytoscapeDagre !== "undefined" ? "dagre" : "breadthfirst";
      cy.layout({ name: name, rankDir: "LR", nodeSep: 12, rankSep: 60, animate: false, fit: true, directed: true }).run();
    }
  }

  function cell(row, text) {
    const td = document.createElement("td");
    td.textContent = text;
    row.appendChild(td);
  }

  function drawTable(snapshot) {
    const body = byId("nodes").tBodies[0];
    const rows = document.createDocumentFragment();
    for (const node of snapshot.nodes) {
      const row = document.createElement("tr");
      row.dataset.key = node.key;
      row.dataset.kind = node.kind;
      const c = node.counters || {};
      const depth = node.channels.reduce((sum, ch) => sum + ch.depth, 0);
      const capacity = node.channels.length ? node.channels[0].capacity : "";
      cell(row, node.key);
      cell(row, node.kind);
      cell(row, node.generated === null ? "(joining)" : node.generated ? "yes" : "no");
      cell(row, node.version === null ? "" : String(node.version));
      cell(row, String(c.received ?? ""));
      cell(row, String(c.emitted ?? ""));
      cell(row, String(c.failed ?? ""));
      cell(row, node.channels.length ? `${depth}/${capacity}` : "");
      cell(row, node.readers.join(", "));
      cell(row, node.last_error ? `${node.last_error.type}: ${node.last_error.message}` : "");
      row.classList.toggle("failing", isFailing(node));
      row.classList.toggle("full", isFull(node));
      row.classList.toggle("selected", node.key === selected);
      row.addEventListener("click", () => select(node.key));
      rows.appendChild(row);
    }
    body.replaceChildren(rows);
  }

  function drawChanges(changes) {
    const list = byId("changes");
    for (const change of changes) {
      if (change.seq <= shownChanges) continue;
      shownChanges = change.seq;
      const item = document.createElement("li");
      item.dataset.generation = change.generation;
      const parts = [];
      for (const what of ["added", "removed", "replaced", "rewired"]) {
        if (change[what].length) parts.push(`${what} ${change[what].join(", ")}`);
      }
      const seconds = change.seconds === null ? "" : ` in ${(change.seconds * 1000).toFixed(1)} ms`;
      item.textContent = `generation ${change.generation}${seconds}: ${parts.join("; ") || "readers changed"}`;
      list.prepend(item);
    }
    while (list.children.length > 200) list.lastChild.remove();
  }

  function drawDeadLetters(letters, total) {
    byId("dead-total").textContent = `(${total})`;
    const box = byId("dead-letters");
    box.replaceChildren(...letters.slice().reverse().map((letter) => {
      const pre = document.createElement("pre");
      pre.className = "dead-letter";
      pre.dataset.key = letter.key || "";
      pre.textContent = letter.explain;
      return pre;
    }));
  }

  function drawNotices(notices) {
    byId("notices").replaceChildren(...notices.slice(-5).reverse().map((notice) => {
      const p = document.createElement("p");
      p.className = "notice " + notice.level;
      p.setAttribute("role", notice.level === "error" ? "alert" : "status");
      p.textContent = notice.text;
      return p;
    }));
  }

  function drawInFlight(change) {
    byId("in-flight").textContent = change === null ? "" :
      `change to generation ${change.generation} travelling: waiting for ${change.pending.join(", ")}`;
  }

  function select(key) {
    selected = key;
    const node = nodesByKey.get(key);
    byId("details").textContent = node ? JSON.stringify(node, null, 2) : `${key}: no longer running`;
    for (const row of byId("nodes").tBodies[0].rows) row.classList.toggle("selected", row.dataset.key === key);
  }

  function render(state) {
    const snapshot = state.snapshot;
    nodesByKey = new Map(snapshot.nodes.map((n) => [n.key, n]));
    const checkpoint = snapshot.checkpoint;
    const checkpointText = checkpoint
      ? ` · checkpoint ${checkpoint.id} at ${checkpoint.time.toFixed(1)}s ` +
        `(${(checkpoint.size / 1024).toFixed(0)} KiB, ${(checkpoint.duration * 1000).toFixed(1)} ms)`
      : "";
    byId("status").textContent =
      `${state.closed ? "closed" : "running"} · generation ${snapshot.generation} · ` +
      `${snapshot.nodes.length} nodes · ${state.dead_letter_total} dead letters${checkpointText}`;
    drawTable(snapshot);
    drawChanges(state.changes);
    drawDeadLetters(state.dead_letters, state.dead_letter_total);
    drawNotices(state.notices);
    drawInFlight(snapshot.change);
    if (selected !== null) select(selected);
    try { drawGraph(snapshot); } catch (error) { console.error(error); }
  }

  window.hotplumbPage = { render: render };
})();
