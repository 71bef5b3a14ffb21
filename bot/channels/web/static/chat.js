/* supportbot web chat: the page's side of the /ws protocol in docs/web.md.
 *
 * Plain browser JavaScript, no build step, no external assets. All server text is put on the
 * page as text (textContent / text nodes), never as HTML.
 */
(function () {
  "use strict";

  var STORAGE_KEY = "supportbot.conversation";
  var MAX_BACKOFF_MS = 15000;
  var NOTICE_MS = 7000;
  var OPERATOR_TYPING_MS = 6000; // the operator page says "typing" every 3 s while they type
  var SVG_NS = "http://www.w3.org/2000/svg";

  var params = new URLSearchParams(location.search);
  var embedded = params.get("embed") === "1";
  var inFrame = window.parent !== window;
  if (embedded) document.documentElement.classList.add("embed");

  var els = {};
  var state = {
    ws: null, // the current socket; frames of any other (older) socket are ignored
    ready: false, // the current socket has said hello
    conversation: null, // {conversation_id, token}
    maxChars: 2000,
    botName: "",
    heartbeatMs: 20000,
    attempts: 0,
    stopped: false, // the server refused this page for good (bad_origin): no more reconnects
    reconnectTimer: null,
    reconnectAt: 0,
    watchdog: null,
    noticeTimer: null,
    operatorTypingTimer: null,
    atBottom: true, // the customer reads the newest messages (has not scrolled up)
    countdownTimer: null,
    // Turns sent (or to be sent) that have no reply yet, in the order they were written:
    // client_id -> {text, sentOn: socket it was sent on}. Re-sent after a reconnect; the
    // server answers a client_id it has seen with the stored reply, so nothing is doubled.
    outbox: new Map(),
    pending: new Map(), // client_id -> the bot bubble being written for that turn
    users: new Map(), // client_id -> the customer's bubble
    messages: new Map() // message_id -> the bot bubble holding it
  };

  // --- conversation storage ------------------------------------------------------------------

  function loadConversation() {
    try {
      var raw = window.localStorage.getItem(STORAGE_KEY);
      var value = raw ? JSON.parse(raw) : null;
      if (value && typeof value.conversation_id === "string" && typeof value.token === "string") {
        return { conversation_id: value.conversation_id, token: value.token };
      }
    } catch (e) { /* storage blocked or corrupt: start a new conversation */ }
    return null;
  }

  function saveConversation(conversation) {
    state.conversation = conversation;
    try {
      window.localStorage.setItem(STORAGE_KEY, JSON.stringify(conversation));
    } catch (e) { /* storage blocked: the conversation lasts as long as the page */ }
  }

  function forgetConversation() {
    state.conversation = null;
    try {
      window.localStorage.removeItem(STORAGE_KEY);
    } catch (e) { /* nothing stored */ }
  }

  // --- small DOM helpers ---------------------------------------------------------------------

  var el = window.supportbotDom.el; // dom.js: a new element with a class and text
  var byIds = window.supportbotDom.byIds; // dom.js: elements by id, on an object

  function icon(paths) {
    var svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("width", "16");
    svg.setAttribute("height", "16");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    paths.forEach(function (d) {
      var path = document.createElementNS(SVG_NS, "path");
      path.setAttribute("d", d);
      svg.appendChild(path);
    });
    return svg;
  }

  var THUMB_UP = ["M7 10v11H3V10h4z", "M7 10l4-8c1.7 0 3 1.3 3 3v3h5.5a2 2 0 012 2.3l-1.4 8.5a2 2 " +
    "0 01-2 1.7H7"];
  var THUMB_DOWN = ["M17 14V3h4v11h-4z", "M17 14l-4 8c-1.7 0-3-1.3-3-3v-3H4.5a2 2 0 01-2-2.3l1.4-" +
    "8.5a2 2 0 012-1.7H17"];
  var LINK_ICON = ["M14 4h6v6", "M20 4l-9 9", "M18 14v5a1 1 0 01-1 1H5a1 1 0 01-1-1V7a1 1 0 011-1h5"];

  function isWebLink(href) {
    return typeof href === "string" && /^https?:\/\/[^\s]+$/i.test(href);
  }

  function link(href, label) {
    var a = el("a", "", label);
    a.href = href;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    return a;
  }

  // Text with its http(s) addresses as links; everything else stays plain text.
  function appendRichText(parent, text) {
    var pattern = /\bhttps?:\/\/[^\s<>"']+/gi;
    var last = 0;
    var match;
    while ((match = pattern.exec(text)) !== null) {
      var url = match[0].replace(/[.,;:!?)\]}]+$/, "");
      parent.appendChild(document.createTextNode(text.slice(last, match.index)));
      parent.appendChild(link(url, url));
      last = match.index + url.length;
      pattern.lastIndex = last;
    }
    parent.appendChild(document.createTextNode(text.slice(last)));
  }

  function nearBottom() {
    var log = els.log;
    return log.scrollHeight - log.scrollTop - log.clientHeight < 96;
  }

  function scrollToBottom() {
    els.log.scrollTop = els.log.scrollHeight;
    state.atBottom = true;
  }

  // Runs fn (which changes the log) and keeps the newest message in view unless the customer
  // has scrolled up to read something older.
  function changeLog(fn, force) {
    var stick = force || nearBottom();
    var result = fn();
    if (stick) scrollToBottom();
    return result;
  }

  // `node` in the log right after `anchor` when that is still there, else at the end.
  function placeAfter(node, anchor) {
    if (anchor && anchor.parentNode === els.log) {
      els.log.insertBefore(node, anchor.nextSibling);
    } else {
      els.log.appendChild(node);
    }
  }

  function timeTitle(node, created) {
    if (!created) return;
    var when = new Date(created);
    if (!isNaN(when.getTime())) node.title = when.toLocaleString();
  }

  // --- messages ------------------------------------------------------------------------------

  function addGreeting(text) {
    var wrap = el("div", "msg bot greeting");
    wrap.setAttribute("data-testid", "greeting");
    var bubble = el("div", "bubble");
    var body = el("div", "text");
    appendRichText(body, text);
    bubble.appendChild(body);
    wrap.appendChild(bubble);
    els.log.appendChild(wrap);
  }

  function addUserMessage(text, clientId, created, after) {
    var wrap = el("div", "msg user");
    wrap.setAttribute("data-testid", "user-message");
    if (clientId) wrap.setAttribute("data-client-id", clientId);
    var bubble = el("div", "bubble");
    bubble.appendChild(el("div", "text", text));
    wrap.appendChild(bubble);
    timeTitle(bubble, created);
    placeAfter(wrap, after);
    if (clientId) state.users.set(clientId, wrap);
    return wrap;
  }

  // A human colleague's message (live "operator" frame or a history item), with their name;
  // plain text, no feedback buttons: the customer rates the bot's answers only.
  function addOperatorMessage(message, live) {
    var wrap = el("div", "msg bot agent");
    wrap.setAttribute("data-testid", "operator-message");
    var bubble = el("div", "bubble");
    if (typeof message.name === "string" && message.name) {
      bubble.appendChild(el("div", "agent-name", message.name));
    }
    var body = el("div", "text");
    appendRichText(body, String(message.text || ""));
    bubble.appendChild(body);
    wrap.appendChild(bubble);
    timeTitle(bubble, message.created_at);
    if (message.message_id != null) wrap.setAttribute("data-message-id", String(message.message_id));
    els.log.appendChild(wrap);
    if (live) announce((message.name ? message.name + ": " : "") + String(message.text || ""));
    return wrap;
  }

  // Three animated dots: someone is writing.
  function typingDots(label) {
    var dots = el("div", "dots");
    dots.setAttribute("role", "img");
    dots.setAttribute("aria-label", label);
    dots.appendChild(el("span"));
    dots.appendChild(el("span"));
    dots.appendChild(el("span"));
    return dots;
  }

  // "anna is writing…" while an operator types (a "typing" frame every few seconds); gone when
  // their message comes, or when no frame came for OPERATOR_TYPING_MS.
  function showOperatorTyping(name) {
    var wrap = els.log.querySelector("[data-testid=operator-typing]");
    if (!wrap) {
      wrap = el("div", "msg bot agent operator-typing");
      wrap.setAttribute("data-testid", "operator-typing");
      var bubble = el("div", "bubble");
      bubble.appendChild(el("div", "agent-name"));
      bubble.appendChild(typingDots(""));
      wrap.appendChild(bubble);
    }
    els.log.appendChild(wrap); // (back) at the end: below anything the customer wrote since
    var label = (typeof name === "string" && name ? name : "A colleague") + " is writing…";
    wrap.querySelector(".agent-name").textContent = label;
    wrap.querySelector(".dots").setAttribute("aria-label", label);
    window.clearTimeout(state.operatorTypingTimer);
    state.operatorTypingTimer = window.setTimeout(hideOperatorTyping, OPERATOR_TYPING_MS);
  }

  function hideOperatorTyping() {
    window.clearTimeout(state.operatorTypingTimer);
    var wrap = els.log.querySelector("[data-testid=operator-typing]");
    if (wrap) wrap.parentNode.removeChild(wrap);
  }

  // The bubble a turn's reply will be written into; shows "typing" until its first token.
  function addPendingBot(clientId) {
    var wrap = el("div", "msg bot typing");
    wrap.setAttribute("data-testid", "bot-typing");
    var bubble = el("div", "bubble");
    bubble.appendChild(typingDots("typing"));
    wrap.appendChild(bubble);
    // Right after the customer's message (and any earlier turns' bubbles after it), so the
    // page shows the same order as the stored history does after a reload.
    placeAfter(wrap, clientId ? state.users.get(clientId) : null);
    if (clientId) state.pending.set(clientId, wrap);
    return wrap;
  }

  function streamInto(wrap, text) {
    if (wrap.classList.contains("typing")) {
      wrap.classList.remove("typing");
      wrap.setAttribute("data-testid", "bot-message");
      wrap.setAttribute("aria-busy", "true");
      var bubble = wrap.querySelector(".bubble");
      bubble.textContent = "";
      var body = el("div", "text");
      body.appendChild(document.createTextNode(""));
      bubble.appendChild(body);
    }
    var node = wrap.querySelector(".text").lastChild;
    node.appendData(text);
  }

  // The reply's text as shown: a trailing "More: <link>" line that only repeats a source's link
  // is left out (the source is shown as a link below the answer).
  function displayLines(message, sources) {
    var lines = String(message.text || "").split("\n");
    var links = sources.map(function (s) { return s.link; }).filter(isWebLink);
    return lines.filter(function (line) {
      var m = /^More:\s*(\S+)\s*$/.exec(line);
      return !(m && links.indexOf(m[1]) !== -1);
    });
  }

  function suggestionButton(suggestion, number) {
    var button = el("button", "suggestion");
    button.type = "button";
    button.setAttribute("data-testid", "suggestion");
    if (number) button.appendChild(el("span", "number", number + "."));
    button.appendChild(el("span", "label", suggestion.question));
    button.addEventListener("click", function () {
      submitText(suggestion.question);
      els.input.focus();
    });
    return button;
  }

  // Fills a bot bubble from a reply frame or a history item.
  function renderBot(wrap, message, live) {
    var sources = Array.isArray(message.sources) ? message.sources.filter(validSource) : [];
    var suggestions = Array.isArray(message.suggestions) ?
      message.suggestions.filter(validSource) : [];
    var decision = typeof message.decision === "string" ? message.decision : "";

    wrap.className = "msg bot";
    wrap.removeAttribute("aria-busy");
    wrap.setAttribute("data-testid", "bot-message");
    if (decision) wrap.setAttribute("data-decision", decision);
    wrap.textContent = "";
    var bubble = el("div", "bubble");
    wrap.appendChild(bubble);
    timeTitle(bubble, message.created_at);

    // "Did you mean": the numbered lines that name a suggestion become buttons in place.
    var lines = displayLines(message, sources);
    var byLine = {};
    suggestions.forEach(function (s, i) { byLine[(i + 1) + ". " + s.question] = i; });
    var used = {};
    var segments = [];
    lines.forEach(function (line) {
      var index = byLine[line.trim()];
      var last = segments[segments.length - 1];
      if (index !== undefined && !used[index]) {
        used[index] = true;
        if (!last || last.kind !== "choices") segments.push(last = { kind: "choices", items: [] });
        last.items.push(index);
      } else {
        if (!last || last.kind !== "text") segments.push(last = { kind: "text", lines: [] });
        last.lines.push(line);
      }
    });
    var rest = suggestions.map(function (_, i) { return i; }).filter(function (i) { return !used[i]; });
    var group = null;
    segments.forEach(function (segment) {
      if (segment.kind === "text") {
        var text = segment.lines.join("\n").replace(/^\n+|\n+$/g, "");
        if (!text) return;
        var body = el("div", "text");
        appendRichText(body, text);
        bubble.appendChild(body);
      } else {
        group = choiceGroup();
        segment.items.forEach(function (i) {
          group.appendChild(suggestionButton(suggestions[i], i + 1));
        });
        bubble.appendChild(group);
      }
    });
    if (rest.length) {
      var extra = choiceGroup();
      rest.forEach(function (i) { extra.appendChild(suggestionButton(suggestions[i], 0)); });
      bubble.appendChild(extra);
    }

    if (sources.length) {
      var box = el("div", "sources");
      box.appendChild(el("span", "sources-label", sources.length > 1 ? "Sources" : "Source"));
      var list = el("ul");
      sources.forEach(function (s) {
        var item = el("li");
        if (isWebLink(s.link)) {
          var a = link(s.link, s.question);
          a.setAttribute("data-testid", "source-link");
          a.appendChild(icon(LINK_ICON));
          a.lastChild.setAttribute("class", "external");
          var hint = el("span", "visually-hidden", " (opens in a new tab)");
          a.appendChild(hint);
          item.appendChild(a);
        } else {
          item.appendChild(el("span", "source-text", s.question)).setAttribute(
            "data-testid", "source-text");
        }
        list.appendChild(item);
      });
      box.appendChild(list);
      bubble.appendChild(box);
    }

    var id = message.message_id;
    if (typeof id === "number" || (typeof id === "string" && id)) {
      wrap.setAttribute("data-message-id", String(id));
      state.messages.set(String(id), wrap);
      wrap.appendChild(feedbackButtons(id, message.feedback));
    } else if (message.stored === false) {
      // The server could not save this turn (docs/web.md: "stored"): it cannot be rated.
      var note = el("div", "unrated", "This answer couldn't be saved, so rating is unavailable for it.");
      note.setAttribute("data-testid", "rating-unavailable");
      wrap.appendChild(note);
    }

    if (live) announce(lines.join("\n"));
  }

  function choiceGroup() {
    var group = el("div", "suggestions");
    group.setAttribute("role", "group");
    group.setAttribute("aria-label", "Suggested questions");
    return group;
  }

  function validSource(s) {
    return s && typeof s === "object" && typeof s.question === "string" && s.question;
  }

  function feedbackButtons(messageId, current) {
    var box = el("div", "feedback");
    box.setAttribute("role", "group");
    box.setAttribute("aria-label", "Was this answer helpful?");
    [["up", "Helpful", THUMB_UP], ["down", "Not helpful", THUMB_DOWN]].forEach(function (spec) {
      var button = el("button", "thumb " + spec[0]);
      button.type = "button";
      button.setAttribute("data-testid", "thumbs-" + spec[0]);
      button.setAttribute("data-rating", spec[0]);
      button.setAttribute("aria-label", spec[1]);
      button.title = spec[1];
      button.setAttribute("aria-pressed", current === spec[0] ? "true" : "false");
      button.appendChild(icon(spec[2]));
      button.addEventListener("click", function () {
        if (send({ type: "feedback", message_id: messageId, rating: spec[0] })) {
          box.setAttribute("data-pending", spec[0]);
        } else {
          showNotice("You're offline, so your feedback wasn't sent. Please try again in a moment.");
        }
      });
      box.appendChild(button);
    });
    var thanks = el("span", "thanks", current ? "Thanks for your feedback" : "");
    thanks.setAttribute("data-testid", "feedback-state");
    box.appendChild(thanks);
    return box;
  }

  function showFeedback(messageId, rating) {
    var wrap = state.messages.get(String(messageId));
    if (!wrap) return;
    var box = wrap.querySelector(".feedback");
    if (!box) return;
    box.removeAttribute("data-pending");
    box.querySelectorAll("button.thumb").forEach(function (button) {
      button.setAttribute("aria-pressed",
        button.getAttribute("data-rating") === rating ? "true" : "false");
    });
    box.querySelector(".thanks").textContent = "Thanks for your feedback";
  }

  function markFailed(clientId) {
    var wrap = state.users.get(clientId);
    if (!wrap || wrap.querySelector(".failed")) return;
    wrap.classList.add("not-sent");
    var row = el("div", "failed");
    row.appendChild(el("span", "", "Not sent."));
    var retry = el("button", "retry", "Retry");
    retry.type = "button";
    retry.setAttribute("data-testid", "retry");
    retry.addEventListener("click", function () {
      var text = wrap.querySelector(".text").textContent;
      wrap.classList.remove("not-sent");
      row.remove();
      queueTurn(clientId, text);
    });
    row.appendChild(retry);
    wrap.appendChild(row);
  }

  function announce(text) {
    els.announcer.textContent = "";
    window.setTimeout(function () {
      els.announcer.textContent = (state.botName ? state.botName + ": " : "") + text;
    }, 50);
  }

  function showNotice(text, lasting) {
    els.notice.textContent = text;
    els.notice.hidden = false;
    window.clearTimeout(state.noticeTimer);
    if (!lasting) {
      state.noticeTimer = window.setTimeout(function () { els.notice.hidden = true; }, NOTICE_MS);
    }
  }

  function setHandoff(on) {
    els.banner.hidden = !on;
    document.documentElement.classList.toggle("handoff", on);
  }

  function setConnection(kind) {
    window.clearInterval(state.countdownTimer);
    els.connection.setAttribute("data-state", kind);
    els.connection.title = kind === "online" ? "Connected" : "Not connected";
    if (kind === "online") {
      els.connectionText.textContent = "Online";
    } else if (kind === "connecting") {
      els.connectionText.textContent = "Connecting…";
    } else if (kind === "stopped") {
      els.connectionText.textContent = "Unavailable";
    } else {
      var tick = function () {
        var seconds = Math.max(1, Math.ceil((state.reconnectAt - Date.now()) / 1000));
        els.connectionText.textContent = "Offline · retrying in " + seconds + " s";
      };
      tick();
      state.countdownTimer = window.setInterval(tick, 1000);
    }
  }

  function setIdentity(botName, companyName) {
    state.botName = typeof botName === "string" ? botName : "";
    var company = typeof companyName === "string" ? companyName : "";
    if (state.botName) {
      els.botName.textContent = state.botName;
      els.avatar.textContent = state.botName.charAt(0).toUpperCase();
      document.title = "Chat with " + state.botName + (company ? " · " + company : "");
    }
    els.company.textContent = company;
  }

  // --- the socket ----------------------------------------------------------------------------

  function socketUrl() {
    var scheme = location.protocol === "https:" ? "wss:" : "ws:";
    var url = scheme + "//" + location.host + "/ws";
    var c = state.conversation;
    if (c) {
      url += "?conversation_id=" + encodeURIComponent(c.conversation_id) +
        "&token=" + encodeURIComponent(c.token);
    }
    return url;
  }

  function connect() {
    window.clearTimeout(state.reconnectTimer);
    state.reconnectTimer = null;
    setConnection("connecting");
    var ws;
    try {
      ws = new WebSocket(socketUrl());
    } catch (e) {
      scheduleReconnect();
      return;
    }
    state.ws = ws;
    state.ready = false;
    var resuming = !!state.conversation;
    ws.onmessage = function (event) {
      if (ws === state.ws) onFrame(event.data, resuming);
    };
    ws.onclose = function () {
      if (ws !== state.ws) return;
      drop(ws);
      // Close code 4403 alone says little (bad_token and bad_origin share it); the error
      // frame before it has already been handled.
      if (!state.stopped) scheduleReconnect();
    };
  }

  // Stops listening to a socket (and closes it); its late frames and events are ignored.
  function drop(ws) {
    if (state.ws === ws) {
      state.ws = null;
      state.ready = false;
    }
    window.clearTimeout(state.watchdog);
    try {
      ws.close();
    } catch (e) { /* already closed */ }
    updateComposer();
  }

  function scheduleReconnect() {
    window.clearTimeout(state.reconnectTimer);
    var delay = Math.min(MAX_BACKOFF_MS, 500 * Math.pow(2, state.attempts));
    delay = Math.round(delay * (0.75 + Math.random() * 0.5));
    state.attempts += 1;
    state.reconnectAt = Date.now() + delay;
    state.reconnectTimer = window.setTimeout(connect, delay);
    setConnection("offline");
  }

  function reconnectNow() {
    if (state.reconnectTimer !== null && !state.stopped) connect();
  }

  // The stored conversation is not accepted (bad_token): forget it and start a new one.
  function startFresh() {
    forgetConversation();
    if (state.ws) drop(state.ws);
    connect();
  }

  // No frame for a while (the server pings every heartbeat_seconds): the link is dead.
  function armWatchdog() {
    window.clearTimeout(state.watchdog);
    var ws = state.ws;
    state.watchdog = window.setTimeout(function () {
      if (ws !== state.ws) return;
      drop(ws);
      scheduleReconnect();
    }, state.heartbeatMs * 2.5 + 5000);
  }

  function send(frame) {
    var ws = state.ws;
    if (!ws || !state.ready || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  function onFrame(data, resuming) {
    var frame;
    try {
      frame = JSON.parse(data);
    } catch (e) {
      return;
    }
    if (!frame || typeof frame.type !== "string") return;
    armWatchdog();
    switch (frame.type) {
      case "hello": onHello(frame); break;
      case "token": onToken(frame); break;
      case "working": onWorking(frame); break;
      case "reply": onReply(frame); break;
      case "feedback": showFeedback(frame.message_id, frame.rating); break;
      case "error": onError(frame, resuming); break;
      case "ping": send({ type: "pong" }); break;
      case "operator":
        changeLog(function () { hideOperatorTyping(); addOperatorMessage(frame, true); });
        break;
      case "typing": changeLog(function () { showOperatorTyping(frame.name); }); break;
      case "status": setHandoff(frame.status === "handoff"); break;
      default: break; // "pong", and frame types added later
    }
  }

  function onHello(frame) {
    state.ready = true;
    state.attempts = 0;
    if (typeof frame.conversation_id === "string" && typeof frame.token === "string") {
      saveConversation({ conversation_id: frame.conversation_id, token: frame.token });
    }
    if (typeof frame.max_text_chars === "number" && frame.max_text_chars > 0) {
      state.maxChars = frame.max_text_chars;
    }
    if (typeof frame.heartbeat_seconds === "number" && frame.heartbeat_seconds > 0) {
      state.heartbeatMs = frame.heartbeat_seconds * 1000;
    }
    armWatchdog();
    setIdentity(frame.bot_name, frame.company_name);
    renderConversation(frame);
    setHandoff(frame.status === "handoff");
    setConnection("online");
    flushOutbox();
    updateComposer();
  }

  // The whole log from the hello frame: greeting, stored history, then the turns still waiting
  // for a reply (re-sent by flushOutbox). Rebuilt on every hello, so a reconnect shows exactly
  // what the server has.
  function renderConversation(frame) {
    var history = Array.isArray(frame.history) ? frame.history : [];
    var answered = {};
    var open = null;
    history.forEach(function (m) {
      if (!m) return;
      if (m.role === "user" && m.held) {
        // Stored for the operator holding the conversation: no bot reply will follow.
        if (m.client_id) answered[m.client_id] = true;
        open = null;
      } else if (m.role === "user") {
        open = m.client_id || null;
      } else {
        if (m.client_id) answered[m.client_id] = true;
        if (open) answered[open] = true;
        open = null;
      }
    });
    state.outbox.forEach(function (_, id) { if (answered[id]) state.outbox.delete(id); });

    els.log.textContent = "";
    state.pending.clear();
    state.users.clear();
    state.messages.clear();
    if (typeof frame.greeting === "string" && frame.greeting) addGreeting(frame.greeting);
    history.forEach(function (m) {
      if (!m || typeof m.text !== "string") return;
      if (m.role === "user") {
        addUserMessage(m.text, m.client_id || null, m.created_at);
      } else if (m.role === "operator") {
        addOperatorMessage(m, false);
      } else {
        var wrap = el("div", "msg bot");
        els.log.appendChild(wrap);
        renderBot(wrap, m, false);
      }
    });
    state.outbox.forEach(function (entry, id) {
      entry.sentOn = null;
      if (!state.users.has(id)) addUserMessage(entry.text, id);
      addPendingBot(id);
    });
    scrollToBottom();
  }

  function flushOutbox() {
    state.outbox.forEach(function (entry, id) {
      if (entry.sentOn === state.ws) return;
      if (send({ type: "message", text: entry.text, client_id: id })) entry.sentOn = state.ws;
    });
  }

  function onToken(frame) {
    if (typeof frame.text !== "string") return;
    changeLog(function () {
      var wrap = state.pending.get(frame.client_id) || addPendingBot(frame.client_id || null);
      streamInto(wrap, frame.text);
    });
  }

  // An action's call runs ("One moment, I'm looking that up..."): said in the pending bubble,
  // next to its dots, until the reply replaces it.
  function onWorking(frame) {
    if (typeof frame.text !== "string") return;
    changeLog(function () {
      var wrap = state.pending.get(frame.client_id) || addPendingBot(frame.client_id || null);
      if (!wrap.classList.contains("typing")) return;
      var bubble = wrap.querySelector(".bubble");
      var note = bubble.querySelector(".working");
      if (!note) {
        note = el("span", "working");
        note.setAttribute("data-testid", "bot-working");
        bubble.appendChild(note);
      }
      note.textContent = frame.text.slice(0, 200);
    });
  }

  function onReply(frame) {
    var id = frame.client_id;
    var wrap = id ? state.pending.get(id) : null;
    var known = frame.message_id != null && state.messages.has(String(frame.message_id));
    if (id) {
      state.pending.delete(id);
      state.outbox.delete(id);
    }
    if (known || frame.decision === "held") {
      // A duplicate of a reply already on the page (a re-sent turn), or a message an operator
      // holds the conversation for (the bot stays silent; the operator answers): no bubble.
      if (wrap) wrap.remove();
    } else {
      changeLog(function () {
        if (!wrap) wrap = addPendingBot(null);
        renderBot(wrap, frame, true);
      });
    }
    if (frame.decision === "handoff" || frame.decision === "waiting" ||
      frame.status === "handoff") {
      setHandoff(true);
    } else if (frame.status === "bot") {
      setHandoff(false);
    }
  }

  var ERROR_TEXT = {
    rate_limited: "You're sending messages a little too quickly. Please wait a moment and retry.",
    text_too_long: "That message is too long. Please shorten it and try again.",
    empty_text: "Please type a message first.",
    frame_too_large: "That message is too long. Please shorten it and try again.",
    unknown_message: "Sorry, your feedback couldn't be saved for that message.",
    unavailable: "The chat service is restarting. Reconnecting…",
    internal: "Sorry, something went wrong on our side. Please try again."
  };

  function onError(frame, resuming) {
    var code = typeof frame.code === "string" ? frame.code : "";
    if (code === "bad_origin") {
      // This page's origin may not use the chat (web.cors_origins): retrying cannot help.
      state.stopped = true;
      if (state.ws) drop(state.ws);
      window.clearTimeout(state.reconnectTimer);
      setConnection("stopped");
      showNotice("The chat isn't available on this site.", true);
      return;
    }
    if (code === "bad_token") {
      // The stored conversation isn't accepted (new server secret, or it was removed).
      if (resuming) {
        startFresh();
      } else {
        showNotice("The chat couldn't start. Please reload the page.");
      }
      return;
    }
    var id = frame.client_id;
    if (id && state.outbox.has(id) && code !== "unavailable") {
      state.outbox.delete(id);
      var wrap = state.pending.get(id);
      if (wrap) wrap.remove();
      state.pending.delete(id);
      markFailed(id);
    }
    if (!id) {
      // Not about a message: it may be about a rating just sent (refused or rate-limited).
      document.querySelectorAll(".feedback[data-pending]").forEach(function (box) {
        box.removeAttribute("data-pending");
      });
    }
    showNotice(ERROR_TEXT[code] ||
      (typeof frame.message === "string" && frame.message ? frame.message :
        "Something went wrong. Please try again."));
  }

  // --- the composer --------------------------------------------------------------------------

  function newClientId() {
    var random = "";
    if (window.crypto && window.crypto.getRandomValues) {
      var bytes = new Uint8Array(8);
      window.crypto.getRandomValues(bytes);
      bytes.forEach(function (b) { random += (b + 256).toString(16).slice(1); });
    } else {
      random = Math.random().toString(16).slice(2);
    }
    return "w" + Date.now().toString(36) + "-" + random;
  }

  function charCount(text) {
    return Array.from(text).length; // characters as the server counts them, not UTF-16 units
  }

  function queueTurn(clientId, text) {
    state.outbox.set(clientId, { text: text, sentOn: null });
    changeLog(function () {
      if (!state.users.has(clientId)) addUserMessage(text, clientId);
      addPendingBot(clientId);
    }, true);
    flushOutbox();
    if (!state.ready) {
      showNotice("You're offline. Your message will be sent when the connection is back.");
    }
  }

  function submitText(raw) {
    var text = raw.trim();
    if (!text || charCount(text) > state.maxChars) return false;
    queueTurn(newClientId(), text);
    return true;
  }

  function updateComposer() {
    var value = els.input.value.trim();
    var count = charCount(value);
    var over = count > state.maxChars;
    els.send.disabled = count === 0 || over;
    els.input.setAttribute("aria-invalid", over ? "true" : "false");
    els.counter.textContent = count ? count + " / " + state.maxChars : "";
    els.counter.classList.toggle("over", over);
    els.counter.classList.toggle("near", !over && count >= state.maxChars * 0.9);
  }

  function autosize() {
    var input = els.input;
    input.style.height = "auto";
    input.style.height = Math.min(input.scrollHeight, 160) + "px";
  }

  function onSubmit(event) {
    event.preventDefault();
    if (submitText(els.input.value)) {
      els.input.value = "";
      autosize();
      updateComposer();
    } else if (charCount(els.input.value.trim()) > state.maxChars) {
      showNotice("Your message is " + charCount(els.input.value.trim()) + " characters long; " +
        "the limit is " + state.maxChars + ".");
    }
    els.input.focus();
  }

  function onKeydown(event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing &&
      !event.altKey && !event.ctrlKey && !event.metaKey) {
      event.preventDefault();
      onSubmit(event);
    }
  }

  // --- embedding in the widget ---------------------------------------------------------------

  function closeEmbed() {
    if (inFrame) window.parent.postMessage({ type: "supportbot:close" }, "*");
  }

  function setupEmbed() {
    if (!embedded || !inFrame) return;
    els.closeEmbed.hidden = false;
    els.closeEmbed.addEventListener("click", closeEmbed);
    document.addEventListener("keydown", function (event) {
      if (event.key === "Escape") closeEmbed();
    });
    window.addEventListener("message", function (event) {
      if (event.source !== window.parent || !event.data) return;
      if (event.data.type === "supportbot:focus") els.input.focus();
    });
  }

  function start() {
    ["log", "notice", "composer", "announcer", "avatar", "connection"].forEach(function (id) {
      els[id] = document.getElementById(id);
    });
    byIds(els, {input: "message-input", send: "send-button", counter: "char-counter",
                banner: "handoff-banner", botName: "bot-name", company: "company-name",
                connectionText: "connection-text", closeEmbed: "close-embed"});

    els.composer.addEventListener("submit", onSubmit);
    els.input.addEventListener("keydown", onKeydown);
    els.input.addEventListener("input", function () {
      autosize();
      updateComposer();
    });
    window.addEventListener("online", reconnectNow);
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "visible") reconnectNow();
    });
    // Whatever changes the log's height (banner, notice, a growing input, a phone's keyboard)
    // keeps the newest message in view for a customer who was reading it.
    els.log.addEventListener("scroll", function () { state.atBottom = nearBottom(); },
      { passive: true });
    if (window.ResizeObserver) {
      new window.ResizeObserver(function () {
        if (state.atBottom) scrollToBottom();
      }).observe(els.log);
    }
    setupEmbed();
    updateComposer();
    state.conversation = loadConversation();
    connect();
    // Straight into the input with a mouse and keyboard; not on a phone, where focus would
    // pop the on-screen keyboard over the greeting.
    if (!embedded && window.matchMedia && window.matchMedia("(pointer: fine)").matches) {
      els.input.focus();
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
