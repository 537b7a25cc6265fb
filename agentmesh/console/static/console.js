// The live task timeline: Server-Sent Events from the console, each an HTML fragment the
// server rendered and escaped (WatchTask). No inline script, no eval: the CSP forbids both.
(function () {
  "use strict";
  var FINAL = ["COMPLETED", "FAILED", "CANCELED", "REJECTED"];
  function start() {
    var list = document.getElementById("timeline");
    if (!list || !window.EventSource) { return; }
    var status = document.getElementById("timeline-status");
    var source = new EventSource(list.getAttribute("data-events"));
    source.addEventListener("open", function () { status.textContent = "live"; });
    source.addEventListener("timeline", function (e) {
      list.insertAdjacentHTML("beforeend", e.data);
      var item = list.lastElementChild;
      var state = item && item.querySelector(".what .state");
      var shown = document.getElementById("task-state");
      if (state && shown) { shown.textContent = state.textContent; shown.className = "state " + state.textContent; }
      if (state && FINAL.indexOf(state.textContent) >= 0) {
        ["pending", "cancel"].forEach(function (id) {
          var form = document.getElementById(id);
          if (form) { form.hidden = true; }
        });
      }
    });
    source.addEventListener("problem", function (e) {
      status.textContent = e.data;
      status.className = "error";
    });
    source.addEventListener("end", function () {
      source.close();
      if (status.className !== "error") { status.textContent = "finished"; }
      status.setAttribute("data-done", "yes");
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
