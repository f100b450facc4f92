// The newsletter composer's small helpers (issue 14). The page works without this file: saving
// shows the saved version in the preview frames and "Count recipients" recounts on the server.
// With it: the preview follows the typing, the counts follow the audience fields, and the text is
// kept in this browser's localStorage until the server has it, so an expired session or a failed
// save never loses a draft. Loaded as a static file under the console's CSP (script-src 'self':
// no inline code, no eval), plain ES2017, no framework.
(function () {
  "use strict";
  var form = document.getElementById("composer");
  if (!form || form.dataset.editable !== "true") {
    return;
  }
  var storageKey = form.dataset.draftKey;
  var NEW_KEY = form.dataset.newKey;
  var frames = Array.prototype.slice.call(document.querySelectorAll("iframe[data-preview]"));
  var counter = 0;

  // ------------------------------------------------------------------ the fields as data

  // What the person typed or chose: every named control but the tokens and versions (those are
  // the server's), as {name: [values]} so checkboxes and repeated rule rows fit one shape.
  function fields() {
    var out = {};
    Array.prototype.forEach.call(form.elements, function (el) {
      if (!el.name || el.type === "hidden" || el.type === "submit" || el.type === "button") {
        return;
      }
      if ((el.type === "checkbox" || el.type === "radio") && !el.checked) {
        return;
      }
      (out[el.name] = out[el.name] || []).push(el.value);
    });
    return out;
  }

  function restore(saved) {
    var seen = {};
    Array.prototype.forEach.call(form.elements, function (el) {
      if (!el.name || el.type === "hidden" || el.type === "submit" || el.type === "button") {
        return;
      }
      var values = saved[el.name] || [];
      if (el.type === "checkbox" || el.type === "radio") {
        el.checked = values.indexOf(el.value) !== -1;
      } else {
        var i = seen[el.name] || 0;
        el.value = i < values.length ? values[i] : "";
        seen[el.name] = i + 1;
      }
    });
  }

  function same(a, b) {
    return JSON.stringify(sorted(a)) === JSON.stringify(sorted(b));
  }

  // Compared without the short name and the test fields: a new draft's page has the one and
  // not the other, and neither is part of the newsletter.
  var NOT_TEXT = { new_id: true, test_to: true, test_subscriber: true };

  // Filter rows count only when they name an attribute (the server shows them first, and one
  // empty row more): ["", "terrain"] and ["terrain", ""] are the same choice.
  var RULE = ["rule_attribute", "rule_op", "rule_value"];

  function sorted(o) {
    var out = {};
    Object.keys(o).sort().forEach(function (k) {
      if (!NOT_TEXT[k] && RULE.indexOf(k) === -1 && o[k].join("") !== "") {
        out[k] = o[k];
      }
    });
    out.rules = (o.rule_attribute || [])
      .map(function (name, i) {
        return [name, (o.rule_op || [])[i], (o.rule_value || [])[i]].join("\u0000");
      })
      .filter(function (row) {
        return row.charAt(0) !== "\u0000";
      });
    return out;
  }

  // ------------------------------------------------------------------ kept in this browser

  function read(key) {
    try {
      return JSON.parse(window.localStorage.getItem(key) || "null");
    } catch (e) {
      return null;
    }
  }

  function keep() {
    try {
      window.localStorage.setItem(
        storageKey,
        JSON.stringify({ fields: fields(), version: form.elements.expected_version.value, at: Date.now() })
      );
    } catch (e) {
      // Storage full or refused (private window): the server copy is all there is.
    }
  }

  function forget(key) {
    try {
      window.localStorage.removeItem(key);
    } catch (e) {
      // nothing kept, nothing to forget
    }
  }

  // A page the server says is clean shows exactly what it has stored. A copy kept here that
  // matches it is done with; one that differs is text the server never got (a save that failed,
  // a session that expired, a tab closed): it comes back, and the person decides.
  function recover() {
    var current = fields();
    var mine = read(storageKey);
    if (form.dataset.clean !== "true") {
      keep(); // an error or conflict page: it shows the posted text; keep it until it is saved
      return;
    }
    if (NEW_KEY && NEW_KEY !== storageKey) {
      var fresh = read(NEW_KEY);
      if (fresh && same(fresh.fields, current)) {
        forget(NEW_KEY); // the new draft this page was created from
      }
    }
    if (!mine || same(mine.fields, current)) {
      forget(storageKey);
      return;
    }
    restore(mine.fields);
    if (mine.version !== undefined && mine.version !== form.elements.expected_version.value) {
      // Typed over an older version: saving must meet the conflict check, not overwrite.
      form.elements.expected_version.value = mine.version;
    }
    var notice = document.getElementById("restored");
    notice.hidden = false;
    document.getElementById("restored-when").textContent = new Date(mine.at).toLocaleString();
    document.getElementById("discard-restored").addEventListener("click", function () {
      forget(storageKey);
      window.location.reload();
    });
  }

  // ------------------------------------------------------------------ live preview

  // Each update posts the form into a new sandboxed frame (its first navigation replaces the
  // initial about:blank, so the preview adds nothing to the Back button's history). The answer
  // is a page with its own CSP allowing only its own inline styles; the sandbox has neither
  // allow-scripts nor allow-same-origin, so whatever the text holds cannot run or read the console.
  function preview() {
    counter += 1;
    var action = form.getAttribute("action");
    frames = frames.map(function (old) {
      var frame = document.createElement("iframe");
      frame.setAttribute("sandbox", "");
      frame.setAttribute("title", old.getAttribute("title"));
      frame.setAttribute("data-preview", old.getAttribute("data-preview"));
      frame.className = old.className;
      frame.name = "preview-" + old.getAttribute("data-preview") + "-" + counter;
      old.parentNode.replaceChild(frame, old);
      form.setAttribute("action", form.dataset.previewUrl);
      form.setAttribute("target", frame.name);
      form.submit();
      return frame;
    });
    form.setAttribute("action", action);
    form.removeAttribute("target");
  }

  // ------------------------------------------------------------------ live counts

  var countStatus = document.getElementById("count-status");

  function count() {
    var body = new FormData(form);
    fetch(form.dataset.countUrl, {
      method: "POST",
      body: body,
      credentials: "same-origin",
      headers: { Accept: "application/json" }
    })
      .then(function (answer) {
        if (answer.status === 403) {
          throw new Error("Your session has ended: log in again (your text is kept in this browser).");
        }
        return answer.json().then(function (data) {
          if (!answer.ok) {
            throw new Error(data.error || "The count failed.");
          }
          return data;
        });
      })
      .then(function (data) {
        Array.prototype.forEach.call(document.querySelectorAll("[data-count-for]"), function (cell) {
          cell.textContent = "0";
        });
        data.segments.forEach(function (s) {
          var cell = document.querySelector('[data-count-for="' + CSS.escape(s.id) + '"]');
          if (cell) {
            cell.textContent = String(s.recipients);
          }
        });
        document.getElementById("count-total").textContent = String(data.total);
        countStatus.textContent = data.total + " recipient(s) with these choices.";
      })
      .catch(function (error) {
        countStatus.textContent = error.message;
      });
  }

  // ------------------------------------------------------------------ wiring

  function debounce(fn, ms) {
    var timer = null;
    return function () {
      window.clearTimeout(timer);
      timer = window.setTimeout(fn, ms);
    };
  }

  var later = { keep: debounce(keep, 250), preview: debounce(preview, 600), count: debounce(count, 400) };
  recover();
  form.addEventListener("input", function (event) {
    later.keep();
    if (event.target.closest("[data-audience]")) {
      later.count();
    } else if (event.target.closest("[data-content]")) {
      later.preview();
    }
  });
  form.addEventListener("change", function (event) {
    later.keep();
    if (event.target.closest("[data-audience]")) {
      later.count();
    }
  });
  document.documentElement.classList.add("composer-live");
  preview();
  count();
})();
