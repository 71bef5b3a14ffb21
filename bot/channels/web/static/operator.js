/* supportbot operator inbox: the page's side of /operator/api/ (docs/operators.md).
 *
 * Plain browser JavaScript, no build step. Customer and bot text is put on the page as text
 * (textContent), never as HTML. The session is an HttpOnly cookie this script never sees:
 * any 401 from the API means "signed out", and the sign-in form comes back.
 */
(function () {
  "use strict";

  var API = "/operator/api";
  var POLL_MS = 2000;
  var TYPING_EVERY_MS = 3000;
  // Bot answers an operator can mark wrong (not the handoff and waiting messages, say)
  var TEACHABLE = ["answer", "generate", "clarify", "fallback"];

  var els = {};
  var state = {
    me: null, // the signed-in operator's name; null while signed out
    selected: null, // the open conversation's id
    detail: null, // its last answer from the API
    historyKey: "", // what the history shows (to redraw only when it changed)
    pollTimer: null,
    generation: 0, // bumped on sign-in / sign-out: answers to older requests are dropped
    busy: false, // an action (claim, reply, ...) is under way
    teach: null, // the open correction or FAQ form: {mode, message}
    typingSent: 0 // when the customer was last told the operator is writing
  };

  // --- small helpers -------------------------------------------------------------------------

  var el = window.supportbotDom.el; // dom.js: a new element with a class and text
  var byIds = window.supportbotDom.byIds; // dom.js: elements by id, on an object

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function show(node, visible) {
    node.hidden = !visible;
  }

  function shortId(id) {
    return String(id).slice(0, 8);
  }

  function clock(iso) {
    if (!iso) return "";
    var when = new Date(iso);
    if (isNaN(when.getTime())) return "";
    return when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function ago(iso) {
    if (!iso) return "";
    var seconds = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000));
    if (isNaN(seconds)) return "";
    if (seconds < 60) return seconds + " s";
    var minutes = Math.floor(seconds / 60);
    if (minutes < 60) return minutes + " min";
    var hours = Math.floor(minutes / 60);
    if (hours < 48) return hours + " h " + (minutes % 60) + " min";
    return Math.floor(hours / 24) + " days";
  }

  function score(value) {
    return typeof value === "number" ? value.toFixed(2) : String(value);
  }

  function compact(value) {
    var text;
    try {
      text = typeof value === "string" ? value : JSON.stringify(value);
    } catch (e) {
      text = String(value);
    }
    return text.length > 300 ? text.slice(0, 300) + "…" : text;
  }

  // --- errors --------------------------------------------------------------------------------

  // `source` "poll": the error of a refresh, which the next good refresh takes down.
  function showError(text, source) {
    els.error.textContent = text;
    els.error.setAttribute("data-source", source || "");
    show(els.error, Boolean(text));
  }

  function detailOf(data, fallback) {
    if (data && typeof data.detail === "string") return data.detail;
    if (data && Array.isArray(data.detail) && data.detail.length && data.detail[0].msg) {
      return String(data.detail[0].msg);
    }
    return fallback;
  }

  // --- the API -------------------------------------------------------------------------------

  // Resolves to {status, data}; a network failure resolves to status 0. A 401 on any route
  // but login signs the page out.
  function api(method, path, body) {
    var generation = state.generation;
    var options = { method: method, credentials: "same-origin", cache: "no-store",
                    headers: { Accept: "application/json" } };
    if (method !== "GET") {  // every change is JSON: the server refuses any other body
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body === undefined ? {} : body);
    }
    return fetch(API + path, options).then(function (response) {
      return response.json().catch(function () { return null; }).then(function (data) {
        return { status: response.status, data: data, stale: generation !== state.generation };
      });
    }, function () {
      return { status: 0, data: null, stale: generation !== state.generation };
    }).then(function (result) {
      if (result.status === 401 && path !== "/login" && !result.stale) {
        signedOut(state.me ? "Your session has ended: sign in again." : "");
        result.stale = true;
      }
      return result;
    });
  }

  function failure(result, what) {
    if (result.status === 0) return what + ": the server cannot be reached. Retrying…";
    if (result.status === 409) {
      return what + ": someone else holds this conversation, or it is no longer waiting (" +
        detailOf(result.data, "conflict") + ").";
    }
    if (result.status === 404) return what + ": this conversation no longer exists.";
    if (result.status === 429) return what + ": " + detailOf(result.data, "too many attempts");
    if (result.status === 503) return what + ": the database cannot be reached right now.";
    return what + " failed (" + result.status + "): " + detailOf(result.data, "error");
  }

  // --- signing in and out --------------------------------------------------------------------

  function signedOut(message) {
    state.generation += 1;
    state.me = null;
    state.selected = null;
    state.detail = null;
    state.historyKey = "";
    stopPolling();
    clear(els.waitingList);
    clear(els.claimedList);
    clear(els.history);
    els.replyInput.value = "";
    closeTeach();
    show(els.loading, false);
    show(els.inbox, false);
    show(els.who, false);
    show(els.signOut, false);
    show(els.signIn, true);
    showError(message || "");
    els.loginPassword.value = "";
    (els.loginName.value ? els.loginPassword : els.loginName).focus();
  }

  function signedIn(name) {
    state.generation += 1;
    state.me = name;
    els.who.textContent = "Signed in as " + name;
    show(els.loading, false);
    show(els.signIn, false);
    show(els.who, true);
    show(els.signOut, true);
    show(els.inbox, true);
    showError("");
    showDetail(false);
    poll();
  }

  function onSignIn(event) {
    event.preventDefault();
    var name = els.loginName.value.trim();
    var password = els.loginPassword.value;
    if (!name || !password) {
      showError("Enter your name and password.");
      (name ? els.loginPassword : els.loginName).focus();
      return;
    }
    els.loginButton.disabled = true;
    api("POST", "/login", { name: name, password: password }).then(function (result) {
      els.loginButton.disabled = false;
      if (result.status === 200) {
        els.loginPassword.value = "";
        signedIn(result.data && result.data.name ? result.data.name : name);
      } else if (result.status === 401) {
        showError("Wrong name or password.");
        els.loginPassword.value = "";
        els.loginPassword.focus();
      } else {
        showError(failure(result, "Sign-in"));
      }
    });
  }

  function onSignOut() {
    api("POST", "/logout").then(function (result) {
      if (!result.stale) signedOut(result.status === 200 ? "" : failure(result, "Sign-out"));
    });
  }

  // --- polling -------------------------------------------------------------------------------

  function stopPolling() {
    if (state.pollTimer !== null) window.clearTimeout(state.pollTimer);
    state.pollTimer = null;
  }

  // One round: the lists, and the open conversation; the next round 2 s after this one ends.
  function poll() {
    stopPolling();
    var generation = state.generation;
    var rounds = [api("GET", "/conversations").then(function (result) {
      if (result.stale) return;
      if (result.status === 200) {
        renderLists(result.data);
        if (els.error.getAttribute("data-source") === "poll") showError("");
      } else {
        showError(failure(result, "Loading the conversations"), "poll");
      }
    })];
    if (state.selected) rounds.push(loadDetail());
    Promise.all(rounds).then(function () {
      if (generation === state.generation && state.me) {
        state.pollTimer = window.setTimeout(poll, POLL_MS);
      }
    });
  }

  // --- the lists -----------------------------------------------------------------------------

  function renderLists(data) {
    var waiting = (data && data.waiting) || [];
    var claimed = (data && data.claimed) || [];
    fillList(els.waitingList, waiting, false);
    fillList(els.claimedList, claimed, true);
    els.waitingCount.textContent = String(waiting.length);
    els.claimedCount.textContent = String(claimed.length);
    show(els.waitingEmpty, waiting.length === 0);
    show(els.claimedEmpty, claimed.length === 0);
    els.updated.textContent = "Updated " + new Date().toLocaleTimeString();
  }

  function fillList(list, items, claimed) {
    clear(list);
    items.forEach(function (item) {
      var li = el("li");
      var button = el("button", "item");
      button.type = "button";
      button.setAttribute("data-testid", "conversation-item");
      button.setAttribute("data-conversation-id", item.conversation_id);
      if (item.conversation_id === state.selected) {
        button.classList.add("selected");
        button.setAttribute("aria-current", "true");
      }
      var head = el("span", "item-head");
      head.appendChild(el("span", "item-id", shortId(item.conversation_id)));
      head.appendChild(el("span", "item-channel", item.channel));
      if (claimed) {
        var holder = el("span", "item-holder",
          item.claimed_by === state.me ? "held by you" : "held by " + item.claimed_by);
        holder.setAttribute("data-testid", "held-by");
        head.appendChild(holder);
      }
      button.appendChild(head);
      var since = el("span", "item-since",
        "waiting since " + clock(item.waiting_since) + " (" + ago(item.waiting_since) + ")");
      since.setAttribute("data-testid", "waiting-since");
      button.appendChild(since);
      var last = item.last_customer_message;
      var text = el("span", "item-last", last ? last.text : "(no message)");
      text.setAttribute("data-testid", "last-message");
      button.appendChild(text);
      button.addEventListener("click", function () { open(item.conversation_id); });
      li.appendChild(button);
      list.appendChild(li);
    });
  }

  // --- one conversation ----------------------------------------------------------------------

  function open(id) {
    if (state.selected !== id) {
      state.selected = id;
      state.detail = null;
      state.historyKey = "";
      clear(els.history);
      els.replyInput.value = "";
      closeTeach();
      show(els.teachDone, false);
      showError("");
    }
    els.detailTitle.textContent = "Conversation " + shortId(id);
    showDetail(true);
    var items = document.querySelectorAll("[data-testid=conversation-item]");
    Array.prototype.forEach.call(items, function (item) {
      var on = item.getAttribute("data-conversation-id") === id;
      item.classList.toggle("selected", on);
      if (on) item.setAttribute("aria-current", "true"); else item.removeAttribute("aria-current");
    });
    return loadDetail().then(function () { els.history.focus({ preventScroll: true }); });
  }

  function showDetail(visible) {
    show(els.detail, visible);
    show(els.pick, !visible);
    els.inbox.classList.toggle("reading", visible);
    if (!visible) {
      state.selected = null;
      state.detail = null;
      state.historyKey = "";
    }
  }

  function loadDetail() {
    var id = state.selected;
    return api("GET", "/conversations/" + encodeURIComponent(id)).then(function (result) {
      if (result.stale || id !== state.selected) return;
      if (result.status === 200) {
        renderDetail(result.data);
      } else {
        showError(failure(result, "Loading the conversation"), "poll");
      }
    });
  }

  function holds() {
    var c = state.detail && state.detail.conversation;
    return Boolean(c && c.status === "handoff" && c.claimed_by === state.me);
  }

  function renderDetail(data) {
    state.detail = data;
    var c = data.conversation;
    var status;
    if (c.status === "handoff" && c.claimed_by === state.me) status = "You hold this conversation.";
    else if (c.status === "handoff" && c.claimed_by) status = "Held by " + c.claimed_by + ".";
    else if (c.status === "handoff") status = "Waiting for an operator since " + clock(c.status_changed_at) + ".";
    else if (c.status === "closed") status = "Closed.";
    else status = "With the bot (" + c.status + ").";
    els.status.textContent = status + " Channel: " + c.channel + ".";
    els.status.setAttribute("data-state", c.status === "handoff" ?
      (c.claimed_by ? (c.claimed_by === state.me ? "mine" : "theirs") : "waiting") : c.status);
    var handoff = c.status === "handoff";
    var free = !c.claimed_by || c.claimed_by === state.me;
    els.claim.disabled = state.busy || !handoff || Boolean(c.claimed_by);
    els.release.disabled = state.busy || !handoff || !free;
    els.close.disabled = state.busy || c.status === "closed" || !free;
    var mine = holds();
    els.replyInput.disabled = !mine;
    els.replyButton.disabled = state.busy || !mine;
    els.replyHint.textContent = mine ? "Ctrl+Enter sends. The customer sees your name." :
      "Claim the conversation to reply.";
    renderHistory(data.messages || []);
  }

  function renderHistory(messages) {
    // redrawn when a message comes or a correction is saved
    var key = messages.map(function (m) {
      return m.id + (m.meta && m.meta.correction ? "c" : "");
    }).join(",");
    if (key === state.historyKey) return;
    var atBottom = els.history.scrollHeight - els.history.scrollTop - els.history.clientHeight < 40;
    state.historyKey = key;
    clear(els.history);
    messages.forEach(function (m) { els.history.appendChild(messageItem(m)); });
    if (atBottom || !els.history.dataset.seen) els.history.scrollTop = els.history.scrollHeight;
    els.history.dataset.seen = "1";
  }

  function messageItem(m) {
    var role = m.role === "user" ? "customer" : m.role;
    var li = el("li", "msg " + role);
    li.setAttribute("data-testid", role + "-message");
    li.setAttribute("data-message-id", String(m.id));
    var head = el("div", "msg-head");
    var who = m.role === "user" ? "Customer" : m.role === "bot" ? "Bot" :
      m.role === "operator" ? (m.name || "Operator") : m.role;
    head.appendChild(el("span", "msg-who", who));
    var time = el("time", "msg-time", clock(m.created_at));
    if (m.created_at) time.setAttribute("datetime", m.created_at);
    head.appendChild(time);
    li.appendChild(head);
    var text = el("p", "msg-text", m.text);
    text.setAttribute("data-testid", "message-text");
    li.appendChild(text);
    if (m.role === "user" && m.original) {
      // What the customer typed before redaction: shown to the operator holding the
      // conversation only, for storage.original_text_hours (docs/privacy.md).
      var written = el("p", "msg-original", "As written: " + m.original);
      written.setAttribute("data-testid", "message-original");
      written.title = "Only you see this, while you hold the conversation; it is deleted " +
        "after the retention time. Saved history, exports and training data keep the " +
        "redacted text.";
      li.appendChild(written);
    }
    if (m.role === "user" && m.meta && m.meta.claimed_by) {
      li.appendChild(el("p", "small", "held by " + m.meta.claimed_by + ": no bot reply"));
    }
    if (m.role === "bot") li.appendChild(botDetails(m));
    var correction = m.meta && m.meta.correction;
    if (correction && correction.text) {
      var fixed = el("p", "correction", "Marked wrong by " + (correction.operator || "?") +
        ". Right answer: " + correction.text);
      fixed.setAttribute("data-testid", "correction");
      li.appendChild(fixed);
    }
    var tools = el("div", "msg-tools");
    if (m.role === "bot" && m.text && TEACHABLE.indexOf(m.decision) >= 0) {
      tools.appendChild(tool(correction ? "Correct again" : "Mark wrong", "mark-wrong",
        function () { openTeach("correct", m); }));
    }
    if (m.role === "operator") {
      tools.appendChild(tool("Add to FAQ", "add-to-faq", function () { openTeach("faq", m); }));
    }
    if (m.role === "user" && m.text) {
      tools.appendChild(tool("Not our topic", "not-our-topic", function () {
        openTeach("outside", m);
      }));
    }
    if (tools.firstChild) li.appendChild(tools);
    return li;
  }

  function tool(label, testid, onClick) {
    var button = el("button", "plain", label);
    button.type = "button";
    button.setAttribute("data-testid", testid);
    button.addEventListener("click", onClick);
    return button;
  }

  function botDetails(m) {
    var box = el("div", "small");
    box.setAttribute("data-testid", "bot-details");
    var line = [];
    if (m.decision) line.push("decision: " + m.decision);
    if (typeof m.confidence === "number") line.push("confidence " + score(m.confidence));
    if (typeof m.latency_ms === "number") line.push(Math.round(m.latency_ms) + " ms");
    if (m.feedback) line.push("customer rated " + m.feedback);
    var first = el("p", null, line.join(" · "));
    first.setAttribute("data-testid", "decision");
    box.appendChild(first);
    [["sources", "Sources"], ["suggestions", "Offered"]].forEach(function (pair) {
      var list = m[pair[0]] || [];
      if (!list.length) return;
      var p = el("p", null, pair[1] + ": ");
      p.setAttribute("data-testid", pair[0]);
      list.forEach(function (s, i) {
        if (i) p.appendChild(document.createTextNode("; "));
        p.appendChild(document.createTextNode(s.question + " (" + score(s.score) + ")"));
      });
      box.appendChild(p);
    });
    var meta = m.meta || {};
    var keys = Object.keys(meta);
    if (keys.length || (m.verdicts && Object.keys(m.verdicts).length)) {
      var more = el("details");
      more.appendChild(el("summary", null, "Scores and details"));
      var dl = el("dl");
      keys.forEach(function (key) {
        dl.appendChild(el("dt", null, key));
        dl.appendChild(el("dd", null, compact(meta[key])));
      });
      if (m.verdicts && Object.keys(m.verdicts).length) {
        dl.appendChild(el("dt", null, "verdicts"));
        dl.appendChild(el("dd", null, compact(m.verdicts)));
      }
      more.appendChild(dl);
      box.appendChild(more);
    }
    return box;
  }

  // --- actions -------------------------------------------------------------------------------

  function act(action, body, what) {
    var id = state.selected;
    if (!id || state.busy) return Promise.resolve(null);
    state.busy = true;
    if (state.detail) renderDetail(state.detail);
    return api("POST", "/conversations/" + encodeURIComponent(id) + "/" + action, body)
      .then(function (result) {
        state.busy = false;
        if (result.stale) return null;
        if (result.status === 200) showError("");
        else showError(failure(result, what));
        if (id === state.selected) poll();  // redraws the lists and the conversation now
        return result;
      });
  }

  // While the operator types a reply, the customer sees "<name> is writing…": one POST
  // every TYPING_EVERY_MS at most (the customer's page hides it 6 s after the last).
  function onTyping() {
    if (!holds() || !els.replyInput.value.trim()) return;
    var now = Date.now();
    if (now - state.typingSent < TYPING_EVERY_MS) return;
    state.typingSent = now;
    api("POST", "/conversations/" + encodeURIComponent(state.selected) + "/typing");
  }

  function onReply(event) {
    event.preventDefault();
    var text = els.replyInput.value.trim();
    if (!text) {
      showError("Write a reply first.");
      els.replyInput.focus();
      return;
    }
    act("reply", { text: text }, "Sending the reply").then(function (result) {
      if (result && result.status === 200) {
        els.replyInput.value = "";
        els.replyInput.focus();
      }
    });
  }

  // --- teaching: a correction of a bot answer, or an FAQ addition from an operator answer ------

  // The customer's message before message m, and the FAQ entry the bot last pointed to.
  function contextOf(m) {
    var messages = (state.detail && state.detail.messages) || [];
    var question = "";
    var entry = null;
    for (var i = 0; i < messages.length && messages[i].id !== m.id; i += 1) {
      var item = messages[i];
      if (item.role === "user") question = item.text;
      var cited = (item.sources && item.sources[0]) || (item.suggestions && item.suggestions[0]);
      if (item.role === "bot" && cited) entry = cited.id;
    }
    return { question: question, entry: entry };
  }

  function openTeach(mode, m) {
    state.teach = { mode: mode, message: m };
    show(els.teachDone, false);
    show(els.teachForm, true);
    var outside = mode === "outside";
    var faq = mode === "faq" || outside;
    show(els.teachFaq, faq);
    els.teachTitle.textContent = outside ? "A question we do not answer" :
      faq ? "Add to the FAQ" : "Mark the bot's answer wrong";
    els.teachAnswerLabel.textContent = faq ? "Answer (for a new entry)" :
      "The right answer (training exports use it instead)";
    els.teachAnswer.value = outside ? "" : faq ? m.text : (m.meta && m.meta.correction ?
      m.meta.correction.text : "");
    els.teachHint.textContent = "The customer does not see this; send them a reply to tell them.";
    if (faq) {
      var context = contextOf(m);
      els.teachQuestion.value = outside ? m.text : context.question;
      (outside ? els.teachKindOutside : els.teachKindPhrasing).checked = true;
      kindChanged();
      loadEntries(context.entry);
      els.teachQuestion.focus();
    } else {
      els.teachAnswer.disabled = false;
      els.teachAnswer.focus();
    }
    els.teachForm.scrollIntoView({ block: "nearest" });
  }

  function closeTeach() {
    state.teach = null;
    if (els.teachForm) show(els.teachForm, false);
  }

  function kindChanged() {
    var entry = els.teachKindEntry.checked;
    els.teachEntry.disabled = !els.teachKindPhrasing.checked;
    els.teachAnswer.disabled = !entry;
    els.teachHint.textContent = els.teachKindOutside.checked ?
      "From the next message on, on every channel, the bot stops answering this and questions " +
      "like it from the FAQ, and offers a human instead." :
      "The bot answers this from the next message on, on every channel.";
  }

  function loadEntries(preferred) {
    clear(els.teachEntry);
    els.teachEntry.appendChild(el("option", null, "Loading the FAQ…"));
    api("GET", "/faq").then(function (result) {
      if (result.stale || !state.teach) return;
      clear(els.teachEntry);
      if (result.status !== 200) {
        showError(failure(result, "Loading the FAQ"));
        return;
      }
      (result.data.entries || []).forEach(function (entry) {
        var option = el("option", null, entry.question + " (" + entry.id + ")");
        option.value = entry.id;
        if (entry.id === preferred) option.selected = true;
        els.teachEntry.appendChild(option);
      });
    });
  }

  function onTeach(event) {
    event.preventDefault();
    var teach = state.teach;
    if (!teach || state.busy) return;
    var answer = els.teachAnswer.value.trim();
    var request;
    var done;
    if (teach.mode === "correct") {
      if (!answer) return teachProblem("Write the right answer first.", els.teachAnswer);
      request = api("POST", "/messages/" + teach.message.id + "/correction", { text: answer });
      done = "Correction saved: training exports use it instead of the bot's answer.";
    } else {
      var question = els.teachQuestion.value.trim();
      if (!question) return teachProblem("Write how customers ask it.", els.teachQuestion);
      var body = { question: question, message_id: teach.message.id };
      if (els.teachKindOutside.checked) {
        body.out_of_scope = true;
      } else if (els.teachKindEntry.checked) {
        if (!answer) return teachProblem("Write the new entry's answer.", els.teachAnswer);
        body.answer = answer;
      } else {
        if (!els.teachEntry.value) return teachProblem("Pick an FAQ entry.", els.teachEntry);
        body.entry_id = els.teachEntry.value;
      }
      request = api("POST", "/faq", body);
      done = null;
    }
    state.busy = true;
    els.teachSave.disabled = true;
    request.then(function (result) {
      state.busy = false;
      els.teachSave.disabled = false;
      if (result.stale) return;
      if (result.status !== 200) {
        var what = teach.mode === "correct" ? "Saving the correction" : "Adding to the FAQ";
        showError(result.status === 409 || result.status === 404 || result.status === 422 ?
          what + ": " + detailOf(result.data, "refused") : failure(result, what));
        return;
      }
      showError("");
      closeTeach();
      els.teachDone.textContent = done || (result.data.kind === "out_of_scope" ?
        "Marked as not our topic: the bot no longer answers questions like it from the FAQ." :
        result.data.kind === "entry" ?
        "New FAQ entry “" + result.data.entry_id + "” added: the bot answers it from now on." :
        "Added as another way to ask “" + result.data.entry_id +
        "”: the bot answers it from now on.");
      show(els.teachDone, true);
      poll();
    });
  }

  function teachProblem(text, field) {
    showError(text);
    field.focus();
  }

  // --- start ---------------------------------------------------------------------------------

  function start() {
    ["error", "loading", "who", "detail", "history", "status", "claim", "release", "close",
     "pick", "inbox", "updated", "back"].forEach(function (id) {
      els[id] = document.getElementById(id === "status" ? "detail-status" : id);
    });
    byIds(els, {signIn: "sign-in", signInForm: "sign-in-form", loginName: "login-name",
                loginPassword: "login-password", loginButton: "login-button", signOut: "sign-out",
                waitingList: "waiting-list", claimedList: "claimed-list",
                waitingCount: "waiting-count", claimedCount: "claimed-count",
                waitingEmpty: "waiting-empty", claimedEmpty: "claimed-empty",
                detailTitle: "detail-title", replyForm: "reply-form", replyInput: "reply-input",
                replyButton: "reply-button", replyHint: "reply-hint", teachForm: "teach-form",
                teachTitle: "teach-title", teachFaq: "teach-faq", teachQuestion: "teach-question",
                teachKindPhrasing: "teach-kind-phrasing", teachKindEntry: "teach-kind-entry",
                teachKindOutside: "teach-kind-outside", teachEntry: "teach-entry",
                teachAnswer: "teach-answer", teachAnswerLabel: "teach-answer-label",
                teachHint: "teach-hint", teachSave: "teach-save", teachDone: "teach-done"});

    els.signInForm.addEventListener("submit", onSignIn);
    els.signOut.addEventListener("click", onSignOut);
    els.back.addEventListener("click", function () { showDetail(false); poll(); });
    els.claim.addEventListener("click", function () { act("claim", undefined, "Claiming"); });
    els.release.addEventListener("click", function () {
      act("release", undefined, "Releasing to the bot");
    });
    els.close.addEventListener("click", function () { act("close", undefined, "Closing"); });
    els.replyForm.addEventListener("submit", onReply);
    els.teachForm.addEventListener("submit", onTeach);
    document.getElementById("teach-cancel").addEventListener("click", closeTeach);
    els.teachKindPhrasing.addEventListener("change", kindChanged);
    els.teachKindEntry.addEventListener("change", kindChanged);
    els.teachKindOutside.addEventListener("change", kindChanged);
    els.replyInput.addEventListener("input", onTyping);
    els.replyInput.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) onReply(event);
    });

    api("GET", "/me").then(function (result) {
      if (result.status === 200 && result.data && result.data.name) signedIn(result.data.name);
      else if (result.status !== 401) {
        show(els.loading, false);
        show(els.signIn, true);
        showError(failure(result, "Checking the session"));
      }
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
