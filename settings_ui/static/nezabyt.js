// Nezabyt's settings page: tabs, the status list editor, live template previews, the what-if
// preview, progress bars fed by the worker's JobRun progress, the debug lookup. No cookies: the
// signed page token goes with every request (header X-Nezabyt-Token / hidden field "t").
(function () {
  "use strict";
  var token = document.body.dataset.token || "";
  var textsNode = document.getElementById("ui-texts");
  var texts = textsNode ? JSON.parse(textsNode.textContent) : {};
  function say(key) { return texts[key] || key; }

  // The frame takes the height of what the tab shows. BX24.fitWindow measures the document's
  // scroll height, which is never less than the frame itself, so it can only grow the frame:
  // the content's own height goes to BX24.resizeWindow instead.
  var lastHeight = 0;
  function fit(then) {
    var after = typeof then === "function" ? then : function () {};
    if (!(window.BX24 && BX24.resizeWindow)) { after(); return; }
    var height = Math.ceil(document.body.getBoundingClientRect().height);
    if (height === lastHeight) { after(); return; }
    lastHeight = height;
    try { BX24.resizeWindow("100%", height, after); } catch (e) { after(); /* outside a portal */ }
  }
  if (window.BX24 && BX24.init) { BX24.init(fit); }
  window.addEventListener("load", fit);

  // --- the page token: renewed through BX24 when it expires, so no typed value is lost -------------
  var renewing = null;
  function renewToken() {
    if (renewing) { return renewing; }
    renewing = new Promise(function (resolve, reject) {
      if (!(window.BX24 && BX24.refreshAuth)) { reject(new Error("no BX24")); return; }
      var timer = setTimeout(function () { reject(new Error("timeout")); }, 15000);
      BX24.refreshAuth(function (auth) {
        clearTimeout(timer);
        var body = new FormData();
        body.append("member_id", (auth && auth.member_id) || "");
        body.append("AUTH_ID", (auth && auth.access_token) || "");
        body.append("LANG", document.body.dataset.lang || "ru");
        fetch("/ui/token", { method: "POST", body: body, headers: { "Accept": "application/json" } })
          .then(function (r) { return r.json().then(function (data) { data._status = r.status; return data; }); })
          .then(function (data) {
            if (data._status !== 200 || !data.token) { reject(data); return; }
            token = data.token;
            document.querySelectorAll('input[name="t"]').forEach(function (input) { input.value = token; });
            document.querySelectorAll("a[href*='t=']").forEach(function (a) {
              var url = new URL(a.href, window.location.href);
              if (url.searchParams.has("t")) { url.searchParams.set("t", token); a.href = url.toString(); }
            });
            resolve(token);
          }, reject);
      });
    });
    renewing.then(function () { renewing = null; }, function () { renewing = null; });
    return renewing;
  }

  // Where the page could not go on (the server's own words and the way forward), at the top and
  // in the place the admin acted in (`where`, optional).
  function problem(data, where) {
    var text = (data && (data.error_description || data.message)) || say("reopen_app");
    if (data && data.error === "expired") { text += " " + say("reopen_app"); }
    var top = document.getElementById("page-problem");
    if (top) { top.textContent = text; top.hidden = false; }
    if (where) { where.textContent = text; where.classList.add("field-error"); where.hidden = false; }
    fit();
  }

  function send(method, url, body) {
    return fetch(url, { method: method, body: body,
                        headers: { "X-Nezabyt-Token": token, "Accept": "application/json" } })
      .then(function (r) {
        return r.json().catch(function () { return { error: "http", error_description: r.status + " " + r.statusText }; })
          .then(function (data) { data._status = r.status; return data; });
      });
  }

  function request(method, url, body) {
    return send(method, url, body).then(function (data) {
      if (data._status === 403 && data.error === "expired") {
        return renewToken().then(function () { return send(method, url, body); }, function () { return data; });
      }
      return data;
    });
  }
  function post(url, body) { return request("POST", url, body); }

  // Forms that reload the page (absences, upload, ranking month) first make sure the token serves.
  document.querySelectorAll("form").forEach(function (form) {
    if (form.id === "settings-form" || !form.querySelector('input[name="t"]')) { return; }
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      post("/ui/token/check", new FormData()).then(function (data) {
        if (data._status === 200) { form.submit(); } else { problem(data); }
      }, function () { problem(null); });
    });
  });

  // --- links to the portal's own pages: opened by the portal (BX24.openPath) -----------------------
  document.addEventListener("click", function (ev) {
    var link = ev.target.closest ? ev.target.closest("a[data-open-path]") : null;
    if (!link || !(window.BX24 && BX24.openPath)) { return; }
    ev.preventDefault();
    BX24.openPath(link.dataset.openPath, function (result) {
      if (result && result.result === "error") { window.open(link.href, "_top"); }
    });
  });

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
          showFieldErrors(data.errors, data.labels || {}, target);
        }
        else { target.innerHTML = ""; problem(data, target); }
        fit();
      }).catch(function () { whatif.disabled = false; problem(null, document.getElementById("whatif")); });
    });
  }

  // --- progress bars (re-index, bulk load) ------------------------------------------------------
  function follow(runId, bar, text, done) {
    bar.hidden = false;
    var lang = document.body.dataset.lang;
    function tick() {
      request("GET", "/ui/jobs/" + runId)
        .then(function (p) {
          if (p._status === 403) { problem(p, text); return; }
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
        if (!data.run_id) { indexBtn.disabled = false; problem(data, text); return; }
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
        if (!data.run_id) { applyBtn.disabled = false; problem(data, itext); return; }
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

  // --- the journal: an entry's drill-down (by manager, refused clients) and its undo -----------------
  var detail = document.getElementById("journal-detail");
  function openEntry(runId, filter) {
    var body = new FormData();
    Object.keys(filter || {}).forEach(function (k) { body.append(k, filter[k]); });
    return post("/ui/journal/" + runId, body).then(function (data) {
      detail.hidden = false;
      if (data.html === undefined) { detail.textContent = ""; problem(data, detail); return; }
      detail.innerHTML = data.html;
      detail.dataset.run = runId;
      var bar = document.getElementById("undo-progress");
      if (bar && bar.dataset.run) { followUndo(runId, bar.dataset.run); }
      fit(function () { reveal(detail); });
    }, function () { problem(null, detail); });
  }
  function followUndo(entryId, undoRunId) {
    follow(undoRunId, document.getElementById("undo-progress"), document.getElementById("undo-progress-text"),
           function () { openEntry(entryId); });
  }
  if (detail) {
    document.querySelectorAll("[data-journal-run]").forEach(function (button) {
      button.addEventListener("click", function () { openEntry(button.dataset.journalRun); });
    });
    detail.addEventListener("click", function (ev) {
      var target = ev.target.closest ? ev.target.closest("button") : null;
      if (!target) { return; }
      var runId = detail.dataset.run;
      if (target.hasAttribute("data-journal-filter")) {
        var filter = {};
        if (target.dataset.manager !== undefined) { filter.manager = target.dataset.manager; }
        if (target.dataset.state) { filter.state = target.dataset.state; }
        openEntry(runId, filter);
      } else if (target.id === "undo-btn") {
        document.getElementById("undo-confirm").hidden = false;
        target.disabled = true;
        fit();
      } else if (target.id === "undo-cancel") {
        document.getElementById("undo-confirm").hidden = true;
        document.getElementById("undo-btn").disabled = false;
        fit();
      } else if (target.id === "undo-go") {
        target.disabled = true;
        var text = document.getElementById("undo-progress-text");
        post("/ui/journal/" + runId + "/undo", new FormData()).then(function (data) {
          if (!data.run_id) { target.disabled = false; problem(data, text); return; }
          document.getElementById("undo-confirm").hidden = true;
          followUndo(runId, data.run_id);
        }, function () { target.disabled = false; problem(null, text); });
      }
    });
  }

  // --- saving the settings: the result next to the button, the admin's place kept ------------------
  function fieldFor(key) {
    var form = document.getElementById("settings-form");
    var parts = key.split(".");
    if (parts[0] === "statuses" && parts.length === 3) {
      var list = form.querySelectorAll('[name="st_' + (parts[2] === "reasons" ? "reasons" : parts[2]) + '"]');
      var field = list[parseInt(parts[1], 10)];
      if (field && field.type === "hidden") { field = field.closest("td"); }
      return field || document.getElementById("statuses");
    }
    if (parts[0] === "statuses") { return document.getElementById("statuses"); }
    if (parts[0] === "templates") { return form.querySelector('[name="tpl_' + parts[1] + '"]'); }
    if (key === "entity_types") { return document.getElementById("et-contact"); }
    return form.querySelector('[name="' + key + '"]');
  }

  function clearFieldErrors() {
    document.querySelectorAll("#settings-form [data-error-for]").forEach(function (el) { el.remove(); });
    document.querySelectorAll("#settings-form .has-error").forEach(function (el) { el.classList.remove("has-error"); });
  }

  // Each error beside its field (named as on the form), and a list of links to them in `summary`.
  function showFieldErrors(errors, labels, summary) {
    var list = document.createElement("ul");
    list.className = "error-list";
    Object.keys(errors).forEach(function (key) {
      var field = fieldFor(key);
      if (field) {
        var holder = field.closest("td, label") || field.parentNode;
        holder.classList.add("has-error");
        var note = document.createElement("span");
        note.className = "field-error";
        note.dataset.errorFor = key;
        note.textContent = errors[key];
        if (field.nextSibling) { field.parentNode.insertBefore(note, field.nextSibling); } else { field.parentNode.appendChild(note); }
      }
      var item = document.createElement("li");
      var link = document.createElement("a");
      link.href = "#";
      link.textContent = labels[key] || key;
      link.addEventListener("click", function (ev) {
        ev.preventDefault();
        if (field && field.focus) { field.focus(); }
      });
      item.appendChild(link);
      item.appendChild(document.createTextNode(": " + errors[key]));
      list.appendChild(item);
    });
    if (summary) {
      var head = document.createElement("p");
      head.textContent = say("fix_fields");
      summary.appendChild(head);
      summary.appendChild(list);
    }
  }

  // Bring an element onto the admin's screen: the frame has no scroll of its own, so the portal
  // page is the one that scrolls (the browser carries scrollIntoView up to it).
  function reveal(el) {
    if (el && el.scrollIntoView) { el.scrollIntoView({ block: "nearest" }); }
  }

  var settingsForm = document.getElementById("settings-form");
  var saveBtn = document.getElementById("save-btn");
  if (settingsForm && saveBtn) {
    settingsForm.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var result = document.getElementById("save-result");
      saveBtn.disabled = true;
      result.hidden = false;
      result.className = "flash";
      result.textContent = say("saving");
      post(settingsForm.action, new FormData(settingsForm)).then(function (data) {
        saveBtn.disabled = false;
        clearFieldErrors();
        result.textContent = "";
        if (data._status === 200 && data.ok) {
          result.className = "flash";
          result.textContent = data.message;
          (data.warnings || []).forEach(function (w) {
            var p = document.createElement("p"); p.className = "warning"; p.textContent = w; result.appendChild(p);
          });
          // The codes the server gave new statuses: a second save keeps them instead of adding more.
          var codes = settingsForm.querySelectorAll('input[name="st_code"]');
          (data.codes || []).forEach(function (code, i) {
            if (!codes[i] || codes[i].value) { return; }
            codes[i].value = code;
            var row = codes[i].closest("tr");
            row.dataset.code = code;
            var shown = row.querySelector(".code .muted");
            if (shown) { shown.textContent = code; shown.classList.remove("muted"); }
          });
        } else if (data.errors) {
          result.className = "flash error";
          result.appendChild(document.createTextNode(data.message || ""));
          showFieldErrors(data.errors, data.labels || {}, result);
        } else {
          result.className = "flash error";
          problem(data, result);
        }
        fit(function () { reveal(result); });
      }, function () { saveBtn.disabled = false; problem(null, result); });
    });
  }

  // --- debug lookup --------------------------------------------------------------------------------
  var debugForm = document.getElementById("debug-form");
  if (debugForm) {
    debugForm.addEventListener("submit", function (ev) {
      ev.preventDefault();
      post("/ui/debug", new FormData(debugForm)).then(function (data) {
        var out = document.getElementById("debug-result");
        out.innerHTML = data.html || "";
        if (data.html === undefined) { problem(data, out); }
        fit();
      });
    });
  }
  fit();
})();
