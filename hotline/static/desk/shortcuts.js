// The desk's keyboard shortcuts (快捷键), shown on the page (#desk-shortcuts, whose data-keys
// maps a key to the id of the button it presses): F2 answer, F4 hang up (the softphone's
// buttons), F6 ready, F7 pause (the seat panel's, with the reason chosen there). A key does
// nothing while the agent types in a form field, or when its button is disabled.
"use strict";
(function () {
  const list = document.getElementById("desk-shortcuts");
  if (!list) return;
  let keys = {};
  try { keys = JSON.parse(list.dataset.keys || "{}"); } catch (e) { keys = {}; }

  const UNTYPED = ["button", "checkbox", "radio", "submit", "reset", "image", "range",
                   "color", "file"];

  function typing(target) {  // a text field, a list or an editor has the keyboard
    if (!(target instanceof Element)) return false;
    if (target.isContentEditable || target.closest("textarea, select")) return true;
    return target instanceof HTMLInputElement && !UNTYPED.includes(target.type);
  }

  document.addEventListener("keydown", (e) => {
    if (e.altKey || e.ctrlKey || e.metaKey || e.shiftKey || e.repeat) return;
    const id = keys[e.key];
    if (!id || typing(e.target)) return;
    e.preventDefault();  // F6/F7 are the browser's otherwise (address bar, caret browsing)
    const button = document.getElementById(id);
    if (button && !button.disabled) button.click();
  });
})();
