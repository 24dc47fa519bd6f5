// The live page: streams /api/events and draws each state with draw.js.
(function () {
  "use strict";
  const query = window.location.search.includes("token=")
    ? "?token=" + encodeURIComponent(new URLSearchParams(window.location.search).get("token"))
    : "";
  const status = document.getElementById("status");
  const events = new EventSource("api/events" + query);
  events.addEventListener("state", (event) => window.hotplumbPage.render(JSON.parse(event.data)));
  events.addEventListener("error", () => { status.textContent = "disconnected: retrying…"; });
})();
