/*
 * supportbot chat widget. Put this one line on any page of your site:
 *
 *   <script src="https://bot.example.com/widget.js" defer></script>
 *
 * (with your bot's address instead of https://bot.example.com). It adds a round chat button
 * in the bottom-right corner that opens and closes the chat, https://bot.example.com/?embed=1,
 * in a panel; Escape closes it too. On a phone the panel fills the screen. The chat is loaded
 * on the first click only, so visitors who never open it start no conversation.
 *
 * Everything lives in one shadow root, so the site's CSS and the widget's cannot clash. The
 * only global is window.SupportbotWidget: {open(), close(), toggle(), isOpen()}.
 */
(function () {
  "use strict";

  if (window.SupportbotWidget) return; // the snippet was included twice

  var script = document.currentScript;
  var src = script && script.src;
  if (!src) {
    // Not run as a classic <script> (e.g. injected by a tag manager): find our own tag.
    var tags = document.querySelectorAll("script[src]");
    for (var i = tags.length - 1; i >= 0 && !src; i--) {
      if (/\/widget\.js(\?|#|$)/.test(tags[i].src)) src = tags[i].src;
    }
  }
  if (!src) return;
  var origin = new URL(src, location.href).origin;
  var chatUrl = origin + "/?embed=1";

  var CSS = [
    ":host { all: initial; }",
    "* { box-sizing: border-box; }",
    ".launcher { position: fixed; right: 20px; bottom: 20px; z-index: 2147483000;",
    "  display: grid; place-items: center; width: 60px; height: 60px; padding: 0; border: 0;",
    "  border-radius: 50%; background: #1f6f5c; color: #fff; cursor: pointer;",
    "  box-shadow: 0 4px 14px rgba(16, 24, 40, .28); transition: transform .15s ease; }",
    ".launcher:hover { transform: scale(1.05); background: #175646; }",
    ".launcher:focus { outline: none; }",
    ".launcher:focus-visible { box-shadow: 0 0 0 3px #fff, 0 0 0 6px #2563eb; }",
    ".launcher svg { width: 28px; height: 28px; }",
    ".launcher .when-open { display: none; }",
    ".open .launcher .when-open { display: block; }",
    ".open .launcher .when-closed { display: none; }",
    ".panel { position: fixed; right: 20px; bottom: 92px; z-index: 2147483000;",
    "  width: 380px; max-width: calc(100vw - 40px);",
    "  height: 640px; max-height: calc(100vh - 116px); max-height: calc(100dvh - 116px);",
    "  overflow: hidden; border-radius: 16px; background: #fff;",
    "  box-shadow: 0 12px 40px rgba(16, 24, 40, .25), 0 2px 6px rgba(16, 24, 40, .12);",
    "  animation: sbw-in .18s ease-out; }",
    ".panel[hidden] { display: none; }",
    ".panel iframe { display: block; width: 100%; height: 100%; border: 0; }",
    "@keyframes sbw-in { from { opacity: 0; transform: translateY(12px); } }",
    "@media (max-width: 480px) {",
    "  .panel { inset: 0; width: 100%; max-width: none; height: 100%; max-height: none;",
    "    border-radius: 0; }",
    "  .open .launcher { display: none; }",
    "}",
    "@media (prefers-reduced-motion: reduce) {",
    "  .panel { animation: none; } .launcher { transition: none; }",
    "}"
  ].join("\n");

  var SVG_NS = "http://www.w3.org/2000/svg";
  var CHAT_PATH = "M12 3C6.5 3 2 6.8 2 11.5c0 2.4 1.2 4.6 3.1 6.1L4.3 21l4-1.9c1.2.3 2.4.5 3.7.5 " +
    "5.5 0 10-3.8 10-8.5S17.5 3 12 3zm-4 9.8a1.3 1.3 0 110-2.6 1.3 1.3 0 010 2.6zm4 0a1.3 1.3 0 " +
    "110-2.6 1.3 1.3 0 010 2.6zm4 0a1.3 1.3 0 110-2.6 1.3 1.3 0 010 2.6z";
  var CLOSE_PATH = "M6 6l12 12M18 6L6 18";

  function icon(className, d, filled) {
    var svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("class", className);
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    var path = document.createElementNS(SVG_NS, "path");
    path.setAttribute("d", d);
    if (filled) {
      path.setAttribute("fill", "currentColor");
    } else {
      path.setAttribute("fill", "none");
      path.setAttribute("stroke", "currentColor");
      path.setAttribute("stroke-width", "2.2");
      path.setAttribute("stroke-linecap", "round");
    }
    svg.appendChild(path);
    return svg;
  }

  var root, launcher, panel, frame, frameLoaded = false, isOpen = false;

  function mount() {
    var host = document.createElement("div");
    host.id = "supportbot-widget";
    host.setAttribute("data-testid", "supportbot-widget");
    root = host.attachShadow({ mode: "open" });

    var style = document.createElement("style");
    style.textContent = CSS;
    var box = document.createElement("div");
    box.className = "box";

    panel = document.createElement("div");
    panel.className = "panel";
    panel.id = "supportbot-panel";
    panel.hidden = true;
    panel.setAttribute("role", "dialog");
    panel.setAttribute("aria-label", "Customer support chat");
    panel.setAttribute("data-testid", "widget-panel");

    launcher = document.createElement("button");
    launcher.type = "button";
    launcher.className = "launcher";
    launcher.setAttribute("data-testid", "widget-button");
    launcher.setAttribute("aria-controls", "supportbot-panel");
    launcher.setAttribute("aria-expanded", "false");
    launcher.setAttribute("aria-label", "Open chat");
    launcher.title = "Open chat";
    launcher.appendChild(icon("when-closed", CHAT_PATH, true));
    launcher.appendChild(icon("when-open", CLOSE_PATH, false));
    launcher.addEventListener("click", toggle);

    box.appendChild(panel);
    box.appendChild(launcher);
    root.appendChild(style);
    root.appendChild(box);
    document.body.appendChild(host);

    document.addEventListener("keydown", function (event) {
      if (isOpen && event.key === "Escape") close();
    });
    // The chat in the iframe asks to be closed (its close button, or Escape inside it).
    window.addEventListener("message", function (event) {
      if (!frame || event.source !== frame.contentWindow || event.origin !== origin) return;
      if (event.data && event.data.type === "supportbot:close") close();
    });
  }

  function focusChat() {
    if (!frame) return;
    frame.focus();
    if (frameLoaded) frame.contentWindow.postMessage({ type: "supportbot:focus" }, origin);
  }

  function open() {
    if (!panel) return;
    if (!frame) {
      frame = document.createElement("iframe");
      frame.title = "Customer support chat";
      frame.setAttribute("data-testid", "widget-frame");
      frame.addEventListener("load", function () {
        frameLoaded = true;
        if (isOpen) focusChat();
      });
      frame.src = chatUrl;
      panel.appendChild(frame);
    }
    show(true);
    focusChat();
  }

  function close() {
    if (!panel || !isOpen) return;
    show(false);
    launcher.focus();
  }

  // The panel shown or hidden, and the launcher saying which (for screen readers too).
  function show(open) {
    var label = open ? "Close chat" : "Open chat";
    isOpen = open;
    panel.hidden = !open;
    root.querySelector(".box").classList.toggle("open", open);
    launcher.setAttribute("aria-expanded", open ? "true" : "false");
    launcher.setAttribute("aria-label", label);
    launcher.title = label;
  }

  function toggle() {
    if (isOpen) {
      close();
    } else {
      open();
    }
  }

  window.SupportbotWidget = {
    open: open,
    close: close,
    toggle: toggle,
    isOpen: function () { return isOpen; }
  };

  if (document.body) {
    mount();
  } else {
    document.addEventListener("DOMContentLoaded", mount);
  }
})();
