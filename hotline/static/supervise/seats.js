// The supervisor's seats page: listen / whisper / barge (监听 / 耳语 / 强插) on an agent's
// call through POST /api/v1/seats/<agent>/spy; the supervisor's own phone then rings.
// The rows are live: each board the push server sends ("desk:board", its agents: agent,
// state, reason) redraws them, so a seat going ready, paused or into a call changes its row
// and its buttons (only a talking agent can be listened to) without a reload.
(function () {
  "use strict";
  const form = document.getElementById("supervise-seats");
  if (!form) return;
  const status = document.getElementById("spy-status");
  const csrf = (JSON.parse(document.body.getAttribute("hx-headers") || "{}"))["X-CSRFToken"];
  const words = JSON.parse(document.getElementById("supervise-words").textContent);
  const body = form.querySelector("tbody");
  const none = document.getElementById("supervise-none");

  function rowOf(agent) {
    for (const row of body.querySelectorAll("tr[data-agent]")) {
      if (row.dataset.agent === agent) return row;
    }
    const row = document.createElement("tr");
    row.dataset.agent = agent;
    const name = document.createElement("td");
    name.textContent = agent;
    const state = document.createElement("td");
    state.className = "supervise-state";
    const actions = document.createElement("td");
    for (const mode of ["listen", "whisper", "barge"]) {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.mode = mode;
      button.textContent = words.modes[mode];
      actions.appendChild(button);
      actions.appendChild(document.createTextNode(" "));
    }
    row.append(name, state, actions);
    // in agent order, as the page came
    const after = [...body.querySelectorAll("tr[data-agent]")].find((r) => r.dataset.agent > agent);
    body.insertBefore(row, after || null);
    return row;
  }

  function show(seat) {
    const agent = String(seat.agent);
    const row = rowOf(agent);
    const state = seat.state || "";
    const reason = state === "paused" ? (seat.reason || "") : "";
    row.dataset.state = state;
    const cell = row.querySelector(".supervise-state");
    cell.dataset.reason = reason;
    cell.textContent = (words.states[state] || state) +
      (reason ? ` (${words.reasons[reason] || reason})` : "");
    for (const button of row.querySelectorAll("button[data-mode]")) {
      button.disabled = state !== "talking";
    }
  }

  document.addEventListener("desk:board", (event) => {
    const agents = (event.detail && event.detail.agents) || [];
    agents.forEach(show);
    none.hidden = body.querySelector("tr[data-agent]") !== null;
  });

  form.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-mode]");
    if (!button) return;
    const row = button.closest("tr[data-agent]");
    const agent = row.dataset.agent;
    const mode = button.dataset.mode;
    const device = document.getElementById("spy-device").value;
    status.dataset.state = "waiting";
    status.textContent = "…";
    const reply = await fetch(form.dataset.url.replace("AGENT", encodeURIComponent(agent)), {
      method: "POST", credentials: "same-origin", cache: "no-store",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
      body: JSON.stringify({ mode: mode, device: device }),
    });
    let answer = {};
    try { answer = await reply.json(); } catch (e) { answer = {}; }
    if (reply.status === 202) {
      status.dataset.state = "calling";
      status.dataset.mode = mode;
      status.dataset.callId = answer.call_id || "";
      status.textContent = `${form.dataset.labelCalling} (${agent} · ${mode})`;
    } else {
      status.dataset.state = "refused";
      status.textContent = `${form.dataset.labelFailed} ${answer.detail || reply.status}`;
    }
  });
})();
