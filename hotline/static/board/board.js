/* The live wallboard (监控大屏): draws the board (agent_desk.wallboard.compose) from the
 * page's JSON block, then from every "desk:board" event desk/push.js dispatches. Between
 * boards it only counts the longest wait and agents' time in state up, a second at a time,
 * from the moment the server stamped (its clock, not this screen's). */
(function () {
  "use strict";

  var root = document.getElementById("board");
  if (!root) {
    return;
  }
  var words = JSON.parse(document.getElementById("board-words").textContent);
  var board = JSON.parse(document.getElementById("board-data").textContent);
  var offset = 0; // server seconds - this screen's seconds, when the board came

  function nowServer() {
    return Date.now() / 1000 + offset;
  }

  function percent(value) {
    return value === null || value === undefined ? "—" : (value * 100).toFixed(1) + "%";
  }

  function plain(value) {
    return value === null || value === undefined ? "—" : String(value);
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) {
      return "—";
    }
    var whole = Math.max(0, Math.floor(seconds));
    var m = Math.floor(whole / 60), s = whole % 60;
    return m + ":" + (s < 10 ? "0" : "") + s;
  }

  function shown(key, value) {
    if (key === "answer_rate" || key === "abandon_rate" || key === "service_level") {
      return percent(value);
    }
    return plain(value);
  }

  function cell(row, text, name) {
    var td = document.createElement("td");
    td.textContent = text;
    if (name) {
      td.setAttribute("data-field", name);
    }
    row.appendChild(td);
    return td;
  }

  var alertText = window.HotlineAlerts.text; // board/alerts.js: the words shared with the desk

  function draw() {
    offset = board.at_epoch - Date.now() / 1000;
    var centre = board.live[""] || {};
    document.getElementById("board-waiting").textContent = plain(centre.waiting || 0);
    document.getElementById("board-talking").textContent = plain(centre.talking || 0);
    document.getElementById("board-callbacks").textContent = plain(centre.callbacks_pending || 0);
    document.getElementById("board-at").textContent = board.at.slice(11, 19);
    document.getElementById("board-shift").textContent = board.shift_start.slice(0, 16).replace("T", " ");
    var figures = board.figures || {};
    root.querySelectorAll("#board-centre td[data-window]").forEach(function (td) {
      var window = figures[td.getAttribute("data-window")] || {};
      var mine = window[""] || {};
      td.textContent = shown(td.getAttribute("data-figure"), mine[td.getAttribute("data-figure")]);
    });
    var hour = figures["1h"] || {};
    var body = root.querySelector("#board-queues tbody");
    body.textContent = "";
    board.queues.forEach(function (queue) {
      var live = board.live[queue] || {};
      var f = hour[queue] || {};
      var row = document.createElement("tr");
      row.setAttribute("data-queue", queue);
      cell(row, queue, "queue");
      cell(row, plain(live.waiting || 0), "waiting");
      var longest = cell(row, "—", "longest");
      longest.setAttribute("data-since", live.longest_since === null ? "" : plain(live.longest_since));
      ["offered", "answered", "abandoned", "answer_rate", "service_level", "asa_seconds",
        "aht_seconds"].forEach(function (key) {
        cell(row, shown(key, f[key] === undefined ? (key.indexOf("rate") > 0 ? null : 0) : f[key]), key);
      });
      cell(row, plain(live.callbacks_pending || 0), "callbacks_pending");
      body.appendChild(row);
    });
    var agents = root.querySelector("#board-agents tbody");
    agents.textContent = "";
    board.agents.forEach(function (agent) {
      var row = document.createElement("tr");
      row.setAttribute("data-agent", agent.agent);
      row.setAttribute("data-state", agent.state);
      cell(row, agent.agent, "agent");
      cell(row, words.states[agent.state] || agent.state, "state");
      cell(row, "—", "in_state").setAttribute("data-since", agent.since || "");
      cell(row, agent.reason ? (words.reasons[agent.reason] || agent.reason) : "", "reason");
      cell(row, agent.caller || "", "caller");
      agents.appendChild(row);
    });
    var list = document.getElementById("board-alerts");
    list.textContent = "";
    board.alerts.forEach(function (alert) {
      var item = document.createElement("li");
      item.setAttribute("data-kind", alert.kind);
      item.setAttribute("data-key", alert.key);
      item.textContent = alertText(alert);
      list.appendChild(item);
    });
    root.setAttribute("data-at", board.at);
    tick();
  }

  function tick() {
    var now = nowServer();
    var centre = board.live[""] || {};
    var longest = document.getElementById("board-longest");
    if (centre.longest_since) {
      longest.textContent = duration(now - centre.longest_since);
      longest.setAttribute("data-seconds", String(Math.floor(now - centre.longest_since)));
    } else {
      longest.textContent = "—";
      longest.setAttribute("data-seconds", "");
    }
    root.querySelectorAll("td[data-since]").forEach(function (td) {
      var since = Number(td.getAttribute("data-since"));
      td.textContent = since ? duration(now - since) : "—";
    });
  }

  document.addEventListener("desk:board", function (event) {
    board = event.detail;
    draw();
  });
  draw();
  setInterval(tick, 1000);
})();
