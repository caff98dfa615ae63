// The desk's seat panel (坐席状态): log in (softphone or desk phone), ready, pause with a
// reason, log out, extend the wrap-up once, and the call's disposition (话后小结), all through
// the JSON API with the session's CSRF token. The live state is read once from the API, then
// follows the server's "desk:seat" pushes (detail {agent, state, reason, since, queues,
// wrap_up_until?}); the call to dispose of comes from "desk:call" / "desk:pop". Never polls.
"use strict";
(function () {
  const root = document.getElementById("seat");
  if (!root || !root.dataset.agent) return;
  const agent = root.dataset.agent;
  const words = JSON.parse(document.getElementById("seat-words").textContent);
  const el = (id) => document.getElementById(id);
  const seat = { state: "unknown", reason: "", since: null, until: null, extended: false };
  let callId = "";

  function csrf() {
    try {
      return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || "";
    } catch (e) {
      return "";
    }
  }

  function error(text) { el("seat-error").textContent = text || ""; }

  // seconds since the epoch, from the API's ISO 8601 or a push's number
  function seconds(value) {
    if (value === null || value === undefined || value === "") return null;
    if (typeof value === "number") return value;
    const parsed = Date.parse(value);
    return Number.isNaN(parsed) ? null : parsed / 1000;
  }

  function clock(total) {
    const s = Math.max(0, Math.floor(total));
    const hh = Math.floor(s / 3600), mm = Math.floor((s % 3600) / 60), ss = s % 60;
    const two = (n) => String(n).padStart(2, "0");
    return (hh ? `${two(hh)}:` : "") + `${two(mm)}:${two(ss)}`;
  }

  function tick() {
    const now = Date.now() / 1000;
    el("seat-clock").textContent = seat.since === null ? "00:00" : clock(now - seat.since);
    const wrapping = seat.state === "wrap_up" && seat.until !== null;
    el("seat-wrap-up").hidden = !wrapping;
    if (wrapping) {
      const left = Math.max(0, Math.ceil(seat.until - now));
      el("seat-countdown").textContent = String(left);
      root.dataset.wrapUpLeft = String(left);
    }
  }

  function buttons() {
    const state = seat.state;
    const inQueues = !["logged_out", "unknown"].includes(state);
    el("seat-login-button").disabled = inQueues;
    el("seat-logout").disabled = !inQueues;
    el("seat-ready").disabled = !(state === "paused");
    el("seat-pause").disabled = !inQueues || state === "paused";
    el("seat-extend").disabled = !(state === "wrap_up" && !seat.extended);
    el("seat-extend").setAttribute("aria-pressed", String(seat.extended));
    el("seat-disposition-save").disabled = !callId;
  }

  function show(live) {
    if (!live || (live.agent && String(live.agent) !== agent)) return;
    const state = live.state || "unknown";
    const since = seconds(live.since);
    const sameWrapUp = state === "wrap_up" && seat.state === "wrap_up" && since === seat.since;
    seat.extended = "wrap_up_extended" in live ? Boolean(live.wrap_up_extended)
      : sameWrapUp && seat.extended;  // a push that does not say keeps what the page knows
    seat.state = state;
    seat.reason = live.reason || "";
    seat.since = since;
    seat.until = seconds(live.wrap_up_until);
    const node = el("seat-state");
    node.dataset.state = seat.state;
    node.textContent = words[seat.state] || seat.state;
    el("seat-reason").textContent = seat.state === "paused"
      ? (words.reasons[seat.reason] || seat.reason) : "";
    el("seat-reason").dataset.reason = seat.state === "paused" ? seat.reason : "";
    root.dataset.state = seat.state;
    buttons();
    tick();
  }

  async function send(url, body) {
    const reply = await fetch(url, {
      method: "POST", credentials: "same-origin", cache: "no-store",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf() },
      body: JSON.stringify(body || {}),
    });
    let answer = {};
    try { answer = await reply.json(); } catch (e) { answer = {}; }
    if (!reply.ok) throw new Error(answer.detail || `${reply.status}`);
    return answer;
  }

  async function command(action, body) {
    error("");
    try {
      return await send(`${root.dataset.commands}/${encodeURIComponent(agent)}/${action}`, body);
    } catch (e) {
      error(String(e.message || e));
      return null;
    }
  }

  el("seat-login").addEventListener("submit", (e) => {
    e.preventDefault();
    const device = el("seat-login").querySelector("input[name=device]:checked");
    command("login", { device: device ? device.value : "browser" });
  });
  el("seat-logout").addEventListener("click", () => command("logout"));
  el("seat-ready").addEventListener("click", () => command("resume"));
  el("seat-pause").addEventListener("click", () => {
    command("pause", { reason: el("seat-pause-reason").value });
  });
  el("seat-extend").addEventListener("click", async () => {
    const done = await command("extend_wrap_up");
    if (done && done.wrap_up_until) {  // the state stays wrap_up: only its end moved
      seat.until = seconds(done.wrap_up_until);
      seat.extended = true;
      buttons();
      tick();
    }
  });

  function remember(detail) {
    if (!detail || !detail.call_id) return;
    callId = String(detail.call_id);
    el("seat-disposition-call").textContent = `${words.call} ${callId}`;
    el("seat-disposition-call").dataset.callId = callId;
    el("seat-disposition-done").textContent = "";
    el("seat-disposition-done").dataset.state = "";
    buttons();
  }

  el("seat-disposition").addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!callId) return;
    error("");
    const code = el("seat-disposition-code").value;
    try {
      const done = await send(
        `${root.dataset.calls}/${encodeURIComponent(callId)}/disposition`, { code });
      const state = done.pending ? "pending" : "saved";
      el("seat-disposition-done").dataset.state = state;
      el("seat-disposition-done").textContent = `${words.dispositions[code] || code}: ${words[state]}`;
    } catch (err) {
      error(String(err.message || err));
    }
  });

  document.addEventListener("desk:seat", (e) => show(e.detail));
  document.addEventListener("desk:call", (e) => remember(e.detail));
  document.addEventListener("desk:pop", (e) => remember(e.detail));

  async function start() {
    try {
      const reply = await fetch(root.dataset.seats, { credentials: "same-origin",
                                                      cache: "no-store" });
      if (!reply.ok) throw new Error(`${reply.status}`);
      const own = (await reply.json()).items.find((s) => String(s.agent) === agent);
      // a push may have come first: it is newer than this answer
      if (seat.state === "unknown") show(own || { agent, state: "logged_out", since: null });
    } catch (e) {
      error(String(e.message || e));
    }
  }

  buttons();
  setInterval(tick, 1000);  // the clocks on the page; nothing is asked of the server
  start();
})();
