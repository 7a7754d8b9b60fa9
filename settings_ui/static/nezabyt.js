// Nezabyt's settings page: tabs, the status list editor, live template previews, the what-if
// preview, progress bars fed by the worker's JobRun progress, the debug lookup. No cookies: the
// signed page token goes with every request (header X-Nezabyt-Token / hidden field "t").
(function () {
  "use strict";
  var token = document.body.dataset.token || "";

  function fit() {
    if (window.BX24 && BX24.fitWindow) { try { BX24.fitWindow(); } catch (e) { /* outside a portal */ } }
  }
  if (window.BX24 && BX24.init) { BX24.init(fit); }

  function post(url, body) {
    return fetch(url, { method: "POST", body: body, headers: { "X-Nezabyt-Token": token, "Accept": "application/json" } })
      .then(function (r) { return r.json().then(function (data) { data._status = r.status; return data; }); });
  }

  // --- tabs -------------------------------------------------------------------------------------
  document.querySelectorAll("#tabs button").forEach(function (button) {
    button.addEventListener("click", function () {
      document.querySelectorAll("#tabs button").forEach(function (b) { b.classList.toggle("active", b === button); });
      document.querySelectorAll(".pane").forEach(function (pane) {
        pane.classList.toggle("active", pane.id === "pane-" + button.dataset.tab);
      });
      fit();
    });
  });

  // --- the status list: add, reorder and delete custom statuses --------------------------------
  var tbody = document.querySelector("#statuses tbody");
  function customRows() { return Array.prototype.slice.call(tbody.querySelectorAll("tr.custom")); }
  function lostRow() { return tbody.querySelector('tr[data-code="LOST"]'); }
  function wireRow(row) {
    row.querySelectorAll("[data-move]").forEach(function (b) {
      b.addEventListener("click", function () {
        var rows = customRows(), i = rows.indexOf(row);
        if (b.dataset.move === "up" && i > 0) { tbody.insertBefore(row, rows[i - 1]); }
        if (b.dataset.move === "down" && i < rows.length - 1) { tbody.insertBefore(rows[i + 1], row); }
      });
    });
    var del = row.querySelector("[data-delete]");
    if (del) { del.addEventListener("click", function () { row.remove(); fit(); }); }
  }
  if (tbody) {
    customRows().forEach(wireRow);
    var add = document.getElementById("add-status");
    if (add) {
      add.addEventListener("click", function () {
        var row = document.getElementById("status-row-template").content.firstElementChild.cloneNode(true);
        tbody.insertBefore(row, lostRow());
        wireRow(row);
        row.querySelector('input[name="st_name"]').focus();
        fit();
      });
    }
  }

  // --- transfer on loss: show the picker the mode needs -----------------------------------------
  function showTransfer() {
    var checked = document.querySelector('input[name="transfer_mode"]:checked');
    var mode = checked ? checked.value : "none";
    document.querySelectorAll("[data-show-for]").forEach(function (el) { el.hidden = el.dataset.showFor !== mode; });
    fit();
  }
  document.querySelectorAll('input[name="transfer_mode"]').forEach(function (r) { r.addEventListener("change", showTransfer); });
  showTransfer();

  // --- live previews of the message templates ---------------------------------------------------
  var samplesNode = document.getElementById("template-samples");
  var samples = samplesNode ? JSON.parse(samplesNode.textContent) : {};
  function renderTemplate(area) {
    var out = document.querySelector('[data-preview-for="' + area.dataset.template + '"]');
    if (!out) { return; }
    var bad = null;
    var text = area.value.replace(/\{([^{}]*)\}/g, function (all, name) {
      if (!(name in samples)) { bad = name; return all; }
      return samples[name];
    });
    if (bad === null && /[{}]/.test(text)) { bad = "{ }"; }
    out.classList.toggle("bad", bad !== null);
    out.textContent = bad !== null ? "⚠ {" + bad.replace(/[{} ]/g, "") + "}" : text;
  }
  document.querySelectorAll("textarea[data-template]").forEach(function (area) {
    area.addEventListener("input", function () { renderTemplate(area); });
    renderTemplate(area);
  });

  // --- what-if preview ---------------------------------------------------------------------------
  var whatif = document.getElementById("whatif-btn");
  if (whatif) {
    whatif.addEventListener("click", function () {
      var target = document.getElementById("whatif");
      whatif.disabled = true;
      post("/ui/settings/preview", new FormData(document.getElementById("settings-form"))).then(function (data) {
        whatif.disabled = false;
        if (data.html) { target.innerHTML = data.html; }
        else if (data.errors) {
          target.innerHTML = "";
          Object.keys(data.errors).forEach(function (k) {
            var p = document.createElement("p"); p.className = "field-error"; p.textContent = k + ": " + data.errors[k];
            target.appendChild(p);
          });
        }
        fit();
      }).catch(function () { whatif.disabled = false; });
    });
  }

  // --- progress bars (re-index, bulk load) ------------------------------------------------------
  function follow(runId, bar, text, done) {
    bar.hidden = false;
    var lang = document.body.dataset.lang;
    function tick() {
      fetch("/ui/jobs/" + runId, { headers: { "X-Nezabyt-Token": token, "Accept": "application/json" } })
        .then(function (r) { return r.json(); })
        .then(function (p) {
          bar.firstElementChild.style.width = p.percent + "%";
          bar.dataset.percent = p.percent;
          bar.dataset.status = p.status;
          if (p.status === "done") {
            bar.classList.add("done");
            var s = p.summary || {};
            text.textContent = (lang === "en" ? "Done: " : "Готово: ") + p.percent + "%" +
              (s.applied !== undefined ? (lang === "en" ? " · applied " + s.applied + ", failed " + s.failed
                                                         : " · загружено " + s.applied + ", не удалось " + s.failed) : "");
            if (done) { done(p); }
            return;
          }
          if (p.status === "failed") { text.textContent = (lang === "en" ? "Failed: " : "Ошибка: ") + (p.error || ""); return; }
          text.textContent = p.status === "queued" ? (lang === "en" ? "Queued…" : "В очереди…")
            : p.done + " / " + p.total + " (" + p.percent + "%)";
          setTimeout(tick, 700);
        })
        .catch(function () { setTimeout(tick, 2000); });
    }
    tick();
    fit();
  }

  var indexBtn = document.getElementById("index-btn");
  if (indexBtn) {
    var bar = document.getElementById("index-progress"), text = document.getElementById("index-progress-text");
    if (indexBtn.dataset.run) { follow(indexBtn.dataset.run, bar, text); }
    indexBtn.addEventListener("click", function () {
      indexBtn.disabled = true;
      post("/ui/index", new FormData()).then(function (data) {
        follow(data.run_id, bar, text, function () { indexBtn.disabled = false; });
      });
    });
  }

  var applyBtn = document.getElementById("import-apply");
  if (applyBtn) {
    var ibar = document.getElementById("import-progress"), itext = document.getElementById("import-progress-text");
    if (applyBtn.dataset.run) { follow(applyBtn.dataset.run, ibar, itext); }
    applyBtn.addEventListener("click", function () {
      applyBtn.disabled = true;
      post("/ui/import/" + applyBtn.dataset.job + "/apply", new FormData()).then(function (data) {
        follow(data.run_id, ibar, itext);
      });
    });
  }

  // A large file is matched to the portal's clients by the worker first; its preview follows.
  var matching = document.getElementById("import-matching");
  if (matching && matching.dataset.run) {
    follow(matching.dataset.run, document.getElementById("match-progress"),
           document.getElementById("match-progress-text"),
           function () { document.getElementById("match-done-form").submit(); });
  }

  // --- debug lookup --------------------------------------------------------------------------------
  var debugForm = document.getElementById("debug-form");
  if (debugForm) {
    debugForm.addEventListener("submit", function (ev) {
      ev.preventDefault();
      post("/ui/debug", new FormData(debugForm)).then(function (data) {
        document.getElementById("debug-result").innerHTML = data.html || "";
        fit();
      });
    });
  }
  fit();
})();
