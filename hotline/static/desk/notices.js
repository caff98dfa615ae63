/* The supervisors' notices panel (告警通知): the board's alerts on the desk, in words
 * (board/alerts.js, the wallboard's own), newest first, each with the time it was raised.
 * It starts from the alerts standing when the page came (#notices-data), then follows the
 * server's "desk:notice" pushes: {source: "board", alert, at} raises one, the same with
 * "cleared": true takes it off. A notice with no alert but a text is shown as it is. */
(function () {
  "use strict";

  var root = document.getElementById("notices");
  if (!root) {
    return;
  }
  var list = document.getElementById("notices-list");
  var none = document.getElementById("notices-none");
  var standing = JSON.parse(document.getElementById("notices-data").textContent);

  function clock(at) {
    // the board's time is the centre's own ISO time: its HH:MM:SS as the hall reads it
    return typeof at === "string" && at.length >= 19 ? at.slice(11, 19) : "";
  }

  function empty() {
    none.hidden = list.children.length > 0;
    root.setAttribute("data-count", String(list.children.length));
  }

  function find(key) {
    var found = null;
    list.querySelectorAll("li[data-key]").forEach(function (item) {
      if (item.getAttribute("data-key") === key) {
        found = item;
      }
    });
    return found;
  }

  function raise(key, kind, text, at) {
    var old = key ? find(key) : null;
    if (old) {
      old.remove(); // raised again: it moves to the top with its new time
    }
    var item = document.createElement("li");
    if (key) {
      item.setAttribute("data-key", key);
    }
    item.setAttribute("data-kind", kind);
    var time = document.createElement("time");
    time.textContent = clock(at);
    if (at) {
      time.setAttribute("datetime", at);
    }
    var words = document.createElement("span");
    words.className = "notices-text";
    words.textContent = text;
    item.appendChild(time);
    item.appendChild(words);
    list.insertBefore(item, list.firstChild); // newest first
    empty();
  }

  function hear(notice) {
    if (!notice) {
      return;
    }
    if (notice.alert) {
      var key = String(notice.alert.key || "");
      if (notice.cleared) {
        var item = find(key);
        if (item) {
          item.remove();
        }
        empty();
        return;
      }
      raise(key, notice.alert.kind || "", window.HotlineAlerts.text(notice.alert), notice.at);
    } else if (notice.text) {
      raise("", "text", String(notice.text), notice.at || "");
    }
  }

  (standing.alerts || []).forEach(function (alert) {
    hear({ alert: alert, at: standing.at });
  });
  empty();
  document.addEventListener("desk:notice", function (event) {
    hear(event.detail);
  });
})();
