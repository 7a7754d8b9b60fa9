/* A BX24.js-compatible shim served by the devportal. The page runs in an iframe of a devportal page;
   like the real library it asks the parent frame (postMessage) for auth and frame actions, and calls
   REST on the portal directly. */
(function (window) {
  "use strict";
  var script = document.currentScript;
  var portalOrigin = script ? new URL(script.src, window.location.href).origin : window.location.origin;
  var state = { auth: null, placement: { placement: "DEFAULT", options: {} }, ready: false, queue: [],
                lang: "ru", isAdmin: false };
  var pending = {};
  var seq = 0;

  function ask(cmd, args) {
    return new Promise(function (resolve) {
      var id = "bx" + (++seq);
      pending[id] = resolve;
      window.parent.postMessage({ nz: "bx24", id: id, cmd: cmd, args: args || {} }, "*");
    });
  }

  window.addEventListener("message", function (event) {
    var msg = event.data || {};
    if (msg.nz !== "bx24-reply" || !pending[msg.id]) { return; }
    var resolve = pending[msg.id];
    delete pending[msg.id];
    resolve(msg.result);
  });

  function AjaxError(status, ex) {
    this.status = status;
    this.ex = ex;
  }
  AjaxError.prototype.toString = function () {
    return (this.ex.error || "") + (this.ex.error_description ? ": " + this.ex.error_description : "");
  };
  AjaxError.prototype.getError = function () { return this.ex; };
  AjaxError.prototype.getStatus = function () { return this.status; };

  function AjaxResult(answer, status, query) {
    this.answer = answer;
    this.status = status;
    this.query = query;
  }
  AjaxResult.prototype.data = function () { return this.answer.result; };
  AjaxResult.prototype.error = function () {
    if (this.answer.error !== undefined) {
      return new AjaxError(this.status, { error: this.answer.error, error_description: this.answer.error_description });
    }
    return false;
  };
  AjaxResult.prototype.more = function () { return this.answer.next !== undefined; };
  AjaxResult.prototype.total = function () { return this.answer.total || 0; };
  AjaxResult.prototype.time = function () { return this.answer.time; };
  AjaxResult.prototype.next = function (cb) {
    if (!this.more()) { return false; }
    var params = Object.assign({}, this.query.params, { start: this.answer.next });
    callMethod(this.query.method, params, cb || this.query.callback);
    return true;
  };

  function rest(method, params) {
    var body = Object.assign({}, params || {}, { auth: state.auth && state.auth.access_token });
    return fetch(portalOrigin + "/rest/" + method + ".json", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body)
    }).then(function (response) {
      return response.json().then(function (answer) { return { status: response.status, answer: answer }; });
    }, function () {
      return { status: 0, answer: { error: "NETWORK_ERROR", error_description: "Network error" } };
    });
  }

  function callMethod(method, params, callback) {
    var query = { method: method, params: params || {}, callback: callback };
    var run = function () {
      return rest(method, params).then(function (reply) {
        if (reply.status === 401 && reply.answer.error === "expired_token") {
          return refreshAuth().then(function () { return rest(method, params); });
        }
        return reply;
      }).then(function (reply) {
        var result = new AjaxResult(reply.answer, reply.status, query);
        if (typeof callback === "function") { callback(result); }
        return result;
      });
    };
    return run();
  }

  function encode(prefix, value, out) {
    if (value === null || value === undefined) { out.push(encodeURIComponent(prefix) + "="); return; }
    if (typeof value === "object") {
      var keys = Object.keys(value);
      for (var i = 0; i < keys.length; i++) { encode(prefix + "[" + keys[i] + "]", value[keys[i]], out); }
      return;
    }
    if (value === true) { value = "Y"; } else if (value === false) { value = "N"; }
    out.push(encodeURIComponent(prefix) + "=" + encodeURIComponent(value));
  }

  function buildQuery(params) {
    var out = [];
    Object.keys(params || {}).forEach(function (k) { encode(k, params[k], out); });
    return out.join("&");
  }

  function callBatch(calls, callback, haltOnError) {
    var isArray = Array.isArray(calls);
    var cmd = {};
    var queries = {};
    Object.keys(calls).forEach(function (key) {
      var call = calls[key];
      var method = Array.isArray(call) ? call[0] : call.method;
      var params = Array.isArray(call) ? call[1] : call.params;
      cmd[key] = method + "?" + buildQuery(params);
      queries[key] = { method: method, params: params || {} };
    });
    return rest("batch", { halt: haltOnError ? 1 : 0, cmd: cmd }).then(function (reply) {
      var inner = (reply.answer && reply.answer.result) || {};
      var results = isArray ? [] : {};
      Object.keys(calls).forEach(function (key) {
        var answer;
        var errors = inner.result_error || {};
        if (errors[key] !== undefined) {
          answer = errors[key];
        } else {
          answer = { result: (inner.result || {})[key] };
          if ((inner.result_total || {})[key] !== undefined) { answer.total = inner.result_total[key]; }
          if ((inner.result_next || {})[key] !== undefined) { answer.next = inner.result_next[key]; }
          if ((inner.result_time || {})[key] !== undefined) { answer.time = inner.result_time[key]; }
        }
        results[key] = new AjaxResult(answer, errors[key] !== undefined ? 400 : 200, queries[key]);
      });
      if (typeof callback === "function") { callback(results); }
      return results;
    });
  }

  function refreshAuth(cb) {
    return ask("refreshAuth").then(function (auth) {
      state.auth = auth;
      if (typeof cb === "function") { cb(auth); }
      return auth;
    });
  }

  function init(cb) {
    if (state.ready) { if (typeof cb === "function") { cb(); } return; }
    if (typeof cb === "function") { state.queue.push(cb); }
    if (state.queue.length > 1) { return; }
    ask("init").then(function (info) {
      state.auth = info.auth;
      state.placement = info.placement;
      state.lang = info.lang || "ru";
      state.isAdmin = !!info.isAdmin;
      state.ready = true;
      var queue = state.queue;
      state.queue = [];
      queue.forEach(function (f) { f(); });
    });
  }

  function done(cb, value) { if (typeof cb === "function") { cb(value); } }

  // BX24.getScrollSize: the content's size as the real library measures it (the larger of the
  // document's scroll and offset sizes: never below the frame's own viewport).
  function getScrollSize() {
    var root = document.documentElement;
    return { scrollWidth: Math.max(root.scrollWidth, root.offsetWidth),
             scrollHeight: Math.max(root.scrollHeight, root.offsetHeight) };
  }

  function fitWindow(cb) {
    resizeWindow("100%", getScrollSize().scrollHeight, cb);
  }

  // BX24.resizeWindow(width, height): '100%' stretches the frame, other widths go through parseInt
  // (not a number: 100 px); a height is used only when parseInt gives more than 0.
  function resizeWindow(width, height, cb) {
    var w = width === "100%" ? "100%" : (isNaN(parseInt(width, 10)) ? 100 : parseInt(width, 10));
    var h = parseInt(height, 10);
    ask("resize", { width: w, height: h > 0 ? h : 0 }).then(function () { done(cb); });
  }

  // BX24.scrollParentWindow(scroll): the portal page scrolls to this vertical position; not a
  // number: nothing is sent.
  function scrollParentWindow(scroll, cb) {
    var y = parseInt(scroll, 10);
    if (isNaN(y)) { return; }
    ask("setScroll", { scroll: y }).then(function () { done(cb); });
  }

  // BX24.openPath(path): a page of this portal in a slider; the callback gets {result: "close"}
  // when the slider is closed, or {result: "error", errorCode: "PATH_NOT_AVAILABLE"}.
  function openPath(path, cb) {
    ask("openPath", { path: String(path || "") }).then(function (result) { done(cb, result); });
  }

  window.BX24 = {
    init: init,
    ready: init,
    isAdmin: function () { return state.isAdmin; },
    getLang: function () { return state.lang; },
    getDomain: function () { return state.auth ? state.auth.domain : false; },
    getAuth: function () {
      if (!state.auth) { return false; }
      return { access_token: state.auth.access_token, refresh_token: state.auth.refresh_token,
               expires_in: state.auth.expires_in, domain: state.auth.domain, member_id: state.auth.member_id };
    },
    refreshAuth: refreshAuth,
    callMethod: callMethod,
    callBatch: callBatch,
    getScrollSize: getScrollSize,
    fitWindow: fitWindow,
    resizeWindow: resizeWindow,
    scrollParentWindow: scrollParentWindow,
    openPath: openPath,
    installFinish: function () { ask("installFinish"); },
    reloadWindow: function () { ask("reload"); },
    closeApplication: function () { ask("close"); },
    placement: {
      info: function () { return { placement: state.placement.placement, options: state.placement.options }; },
      getInterface: function (cb) { if (typeof cb === "function") { cb({ command: [], event: [] }); } },
      call: function (command, params, cb) { if (typeof cb === "function") { cb(); } },
      bindEvent: function () {}
    }
  };
})(window);
