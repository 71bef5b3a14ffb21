/* supportbot operator inbox: the "Learnt" panel (docs/operators.md, "What the bot learnt").
 *
 * Lists /operator/api/learning while the inbox shows, and approves or removes a wording with
 * one click. Its own file, so operator.js stays one job; it talks to the same API with the
 * same rules: same-origin JSON, the HttpOnly session cookie (a 401 here only stops the panel:
 * operator.js brings the sign-in form back). Text goes on the page as text, never as HTML.
 */
(function () {
  "use strict";

  var API = "/operator/api/learning";
  var REFRESH_MS = 5000;
  var el = window.supportbotDom.el;
  var els = {};
  var busy = false;
  var shownKey = "";

  function request(method, path, body) {
    var options = { method: method, credentials: "same-origin", cache: "no-store",
                    headers: { Accept: "application/json" } };
    if (method !== "GET") {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return fetch(API + path, options).then(function (response) {
      return response.json().catch(function () { return null; }).then(function (data) {
        return { status: response.status, data: data };
      });
    }, function () { return { status: 0, data: null }; });
  }

  function detail(data) {
    if (data && typeof data.detail === "string") return data.detail;
    if (data && Array.isArray(data.detail) && data.detail.length) {
      var first = data.detail[0];
      return (first.loc || []).slice(-1).join("") + ": " + first.msg;
    }
    return "error";
  }

  function visible() {
    return els.inbox && !els.inbox.hidden;
  }

  function load() {
    if (!visible() || busy) return Promise.resolve();
    return request("GET", "").then(function (result) {
      if (result.status === 200 && result.data) render(result.data);
    });
  }

  function render(data) {
    var items = data.items || [];
    var key = JSON.stringify(items.map(function (i) { return [i.wording, i.entry_id, i.state, i.net]; }));
    els.count.textContent = String(items.length);
    els.empty.hidden = items.length !== 0;
    if (key === shownKey) return;
    shownKey = key;
    while (els.list.firstChild) els.list.removeChild(els.list.firstChild);
    items.forEach(function (item) { els.list.appendChild(row(item)); });
  }

  function row(item) {
    var li = el("li", "item learnt-item");
    li.setAttribute("data-testid", "learnt-item");
    li.setAttribute("data-state", item.state);
    li.appendChild(el("span", "learnt-wording", "“" + item.wording + "”"));
    li.appendChild(el("span", "learnt-meta", "→ " + (item.entry_question || item.entry_id) +
      " · " + item.state + " · net " + item.net));
    var by = el("span", "learnt-meta", item.reviewed_by);
    by.setAttribute("data-testid", "learnt-by");
    li.appendChild(by);
    var actions = el("span", "learnt-actions");
    if (item.state !== "learnt") actions.appendChild(button("Approve", "learnt-approve", item, "/approve"));
    if (item.state !== "removed") actions.appendChild(button("Remove", "learnt-remove", item, "/remove"));
    li.appendChild(actions);
    return li;
  }

  function button(label, testid, item, path) {
    var b = el("button", "", label);
    b.type = "button";
    b.setAttribute("data-testid", testid);
    b.setAttribute("aria-label", label + " “" + item.wording + "” as " + item.entry_id);
    b.addEventListener("click", function () {
      if (busy) return;
      busy = true;
      b.disabled = true;
      els.status.textContent = label + "…";
      request("POST", path, { wording: item.wording, entry_id: item.entry_id }).then(function (result) {
        busy = false;
        els.status.textContent = result.status === 200 ?
          (label === "Remove" ? "Removed: the bot no longer answers it from this entry." :
                                "Approved: the bot answers it from this entry.") :
          label + " failed (" + result.status + "): " + detail(result.data);
        shownKey = "";
        return load();
      });
    });
    return b;
  }

  function start() {
    els.inbox = document.getElementById("inbox");
    els.list = document.getElementById("learnt-list");
    els.count = document.getElementById("learnt-count");
    els.empty = document.getElementById("learnt-empty");
    els.status = document.getElementById("learnt-status");
    if (!els.list) return;
    new MutationObserver(function () { shownKey = ""; load(); })
      .observe(els.inbox, { attributes: true, attributeFilter: ["hidden"] });
    setInterval(load, REFRESH_MS);
    load();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
