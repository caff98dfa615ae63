// The supervisor's seats page: listen / whisper / barge (监听 / 耳语 / 强插) on an agent's
// call through POST /api/v1/seats/<agent>/spy; the supervisor's own phone then rings.
(function () {
  "use strict";
  const form = document.getElementById("supervise-seats");
  if (!form) return;
  const status = document.getElementById("spy-status");
  const csrf = (JSON.parse(document.body.getAttribute("hx-headers") || "{}"))["X-CSRFToken"];

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
    let body = {};
    try { body = await reply.json(); } catch (e) { body = {}; }
    if (reply.status === 202) {
      status.dataset.state = "calling";
      status.dataset.mode = mode;
      status.dataset.callId = body.call_id || "";
      status.textContent = `${form.dataset.labelCalling} (${agent} · ${mode})`;
    } else {
      status.dataset.state = "refused";
      status.textContent = `${form.dataset.labelFailed} ${body.detail || reply.status}`;
    }
  });
})();
