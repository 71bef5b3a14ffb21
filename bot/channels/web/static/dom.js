/* supportbot's pages' shared DOM helpers: the chat page (chat.js) and the operator inbox
 * (operator.js) load it first. Plain browser JavaScript, no build step; text is put on the page
 * as text (textContent), never as HTML.
 */
(function () {
  "use strict";

  // A new `tag` element with `className` and `text` (both optional).
  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  }

  // Each element of `ids` ({key: element id}) put on `target` under its key.
  function byIds(target, ids) {
    Object.keys(ids).forEach(function (key) {
      target[key] = document.getElementById(ids[key]);
    });
  }

  window.supportbotDom = { el: el, byIds: byIds };
})();
