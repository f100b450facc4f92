// The import job page (/admin/imports/<id>): poll its progress.json once a second and update the
// counts in place while the import runs; reload once when it ends, for the summary and the
// error report link. A file, not an inline script: the console's CSP allows only 'self'.
(function () {
  "use strict";
  var box = document.getElementById("progress");
  if (!box || box.getAttribute("data-finished") === "yes") { return; }
  var url = box.getAttribute("data-url");
  var fields = ["rows_read", "loaded", "created", "updated", "unchanged", "rejected", "suppressed", "rate"];

  function show(data) {
    fields.forEach(function (name) {
      var element = document.getElementById(name.replace("_", "-"));
      if (element) { element.textContent = data[name]; }
    });
    var bar = document.getElementById("job-bar");
    bar.value = data.percent;
    bar.textContent = data.percent + " %";
    var state = document.getElementById("job-state");
    state.textContent = data.state;
    state.className = "state state-" + data.state;
    var waiting = document.getElementById("queued-hint");
    if (waiting && data.state !== "queued") { waiting.hidden = true; }
  }

  function poll() {
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) {
        if (!data) { window.setTimeout(poll, 5000); return; }
        show(data);
        if (data.finished) { window.location.reload(); return; }
        window.setTimeout(poll, 1000);
      })
      .catch(function () { window.setTimeout(poll, 5000); });
  }
  window.setTimeout(poll, 1000);
}());
