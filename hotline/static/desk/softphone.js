// The agent desk's softphone (网页软电话): JsSIP over WSS to Asterisk, the signed-in agent's
// own WebRTC endpoint. Credentials come from the server for this agent only; nothing inline.
"use strict";
(function () {
  const root = document.getElementById("softphone");
  if (!root || typeof JsSIP === "undefined") return;
  const words = JSON.parse(document.getElementById("softphone-words").textContent);
  const el = (id) => document.getElementById(id);
  const audio = el("remote-audio");
  let ua = null;
  let session = null;

  function show(id, state, extra) {
    const node = el(id);
    node.dataset.state = state;
    node.textContent = words[state] || state;
    if (extra) node.textContent += " " + extra;
  }

  function error(text) { el("softphone-error").textContent = text || ""; }

  function buttons() {
    const live = session !== null && !session.isEnded();
    const established = live && session.isEstablished();
    el("answer").disabled = !(live && session.direction === "incoming" && !established);
    el("hangup").disabled = !live;
    for (const id of ["mute", "hold", "transfer"]) el(id).disabled = !established;
    for (const key of document.querySelectorAll(".dtmf")) key.disabled = !established;
    el("mute").setAttribute("aria-pressed", String(established && session.isMuted().audio));
    el("hold").setAttribute("aria-pressed", String(established && session.isOnHold().local));
  }

  function ended() {
    session = null;
    audio.srcObject = null;
    show("call-state", "idle");
    el("caller").textContent = "";
    root.dataset.call = "";
    buttons();
  }

  function take(newSession, request) {
    if (session !== null) {  // one call at a time: the queue never offers a second
      newSession.terminate({ status_code: 486 });
      return;
    }
    session = newSession;
    const number = request.from.uri.user || "";
    const name = request.from.display_name || "";
    el("caller").textContent = name && name !== number ? `${number} (${name})` : number;
    root.dataset.call = number;
    show("call-state", "ringing");
    session.on("peerconnection", (e) => {
      e.peerconnection.addEventListener("track", (t) => { audio.srcObject = t.streams[0]; });
    });
    session.on("confirmed", () => { show("call-state", "talking"); buttons(); });
    session.on("hold", () => { show("call-state", "held"); buttons(); });
    session.on("unhold", () => { show("call-state", "talking"); buttons(); });
    session.on("muted", buttons);
    session.on("unmuted", buttons);
    session.on("ended", ended);
    session.on("failed", ended);
    buttons();
  }

  const options = {
    mediaConstraints: { audio: true, video: false },
    pcConfig: { iceServers: [], rtcpMuxPolicy: "require", bundlePolicy: "max-bundle" },
    sessionTimersExpires: 600,
  };

  el("answer").addEventListener("click", () => {
    if (session) session.answer(options);
  });
  el("hangup").addEventListener("click", () => {
    if (session) session.terminate();
  });
  el("mute").addEventListener("click", () => {
    if (!session) return;
    if (session.isMuted().audio) session.unmute({ audio: true });
    else session.mute({ audio: true });
  });
  el("hold").addEventListener("click", () => {
    if (!session) return;
    if (session.isOnHold().local) session.unhold();
    else session.hold();
  });
  for (const key of document.querySelectorAll(".dtmf")) {
    key.addEventListener("click", () => {
      if (session) session.sendDTMF(key.dataset.key, { transportType: "RFC2833" });
    });
  }
  el("transfer-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const target = el("transfer-to");
    if (!session || !target.checkValidity() || !target.value) return;
    session.refer(target.value);  // Asterisk dials it in from-agents: agent, queue, number
  });

  async function start() {
    let account;
    try {
      const reply = await fetch(root.dataset.credentials, { credentials: "same-origin",
                                                            cache: "no-store" });
      if (!reply.ok) throw new Error(`${reply.status} ${(await reply.json()).detail || ""}`);
      account = await reply.json();
    } catch (e) {
      show("registration", "failed");
      error(String(e.message || e));
      return;
    }
    show("registration", "connecting");
    ua = new JsSIP.UA({
      sockets: [new JsSIP.WebSocketInterface(account.websocket)],
      uri: account.uri,
      authorization_user: account.authorization_user,
      password: account.password,
      display_name: account.display_name,
      session_timers: false,
      register: true,
    });
    ua.on("registered", () => { show("registration", "registered"); error(""); });
    ua.on("unregistered", () => show("registration", "unregistered"));
    ua.on("registrationFailed", (e) => { show("registration", "failed"); error(e.cause); });
    ua.on("disconnected", () => show("registration", "connecting"));
    ua.on("newRTCSession", (e) => { if (e.originator === "remote") take(e.session, e.request); });
    ua.start();
    root.dataset.state = "started";
  }

  window.addEventListener("beforeunload", () => { if (ua) ua.stop(); });
  start();
})();
