// The agent desk's softphone (网页软电话): JsSIP over WSS to Asterisk, the signed-in agent's
// own WebRTC endpoint. Credentials come from the server for this agent only; nothing inline.
//
// Attended transfer (咨询转接): the citizen is put on hold, a consultation call goes to the
// target (an agent, a queue or an outside number: Asterisk's from-agents context dials it),
// the agent talks to the target, then completes (REFER with Replaces: Asterisk bridges the
// citizen with the target and hangs up both of this agent's legs) or cancels (the
// consultation hangs up, the citizen is taken off hold).
//
// The softphone's state goes to the other panels as the DOM event "desk:softphone" on
// document, detail {state: "ringing"|"talking"|"held"|"idle", caller, call_id?, consulting}.
// call_id is the X-Hotline-Call-Id header Asterisk puts on the agent's INVITE (the call
// record's call_id); a consultation's own INVITE carries it too, so the target's desk binds
// the citizen's call, not the consultation.
"use strict";
(function () {
  const root = document.getElementById("softphone");
  if (!root || typeof JsSIP === "undefined") return;
  const words = JSON.parse(document.getElementById("softphone-words").textContent);
  const el = (id) => document.getElementById(id);
  const audio = el("remote-audio");
  const CALL_ID = /^[A-Za-z0-9._-]{1,80}$/;  // Asterisk's linkedid: system-epoch.seq
  let ua = null;
  let session = null;  // the call with the citizen (or, on the target's desk, the consultation)
  let callId = "";
  let consult = null;  // this agent's consultation call while the citizen is held
  let handingOver = false;  // the REFER went: both of this agent's legs are about to end
  let lastSent = "";

  // A citizen's number is shown masked as core.phones.mask does (138****8000): the screen
  // pop shows it in full to those allowed, and audits that. Short numbers (an agent's
  // extension, 110, 12319) are no one's personal number and stay readable.
  function masked(number) {
    const digits = number.replace(/^\+86/, "").replace(/^\+/, "00");
    if (!/^[0-9]{7,}$/.test(digits)) return number;
    const [front, back] = digits.length >= 11 ? [3, 4] : digits.length >= 8 ? [1, 4] : [0, 2];
    return digits.slice(0, front) + "*".repeat(digits.length - front - back) +
      digits.slice(-back);
  }

  function show(id, state, extra) {
    const node = el(id);
    node.dataset.state = state;
    node.textContent = words[state] || state;
    if (extra) node.textContent += " " + extra;
  }

  function error(text) { el("softphone-error").textContent = text || ""; }

  function live(s) { return s !== null && !s.isEnded(); }

  function callState() {
    if (!live(session)) return "idle";
    if (!session.isEstablished()) return "ringing";
    return session.isOnHold().local ? "held" : "talking";
  }

  function announce() {
    const detail = { state: callState(), caller: root.dataset.call || "",
                     consulting: live(consult) };
    if (callId) detail.call_id = callId;
    const key = JSON.stringify(detail);
    if (key === lastSent) return;  // the same state twice is not news
    lastSent = key;
    document.dispatchEvent(new CustomEvent("desk:softphone", { detail }));
  }

  function active() {  // the call the agent is talking on: the consultation, while it is up
    return live(consult) && consult.isEstablished() ? consult : session;
  }

  function buttons() {
    const up = live(session);
    const established = up && session.isEstablished();
    const consulting = live(consult);
    el("answer").disabled = !(up && session.direction === "incoming" && !established);
    el("hangup").disabled = !up || consulting;  // while consulting: complete or cancel
    el("mute").disabled = !established;
    el("hold").disabled = !established || consulting;
    el("transfer").disabled = !established || consulting;
    el("consult").disabled = !established || consulting;
    for (const key of document.querySelectorAll(".dtmf")) key.disabled = !established;
    el("mute").setAttribute("aria-pressed", String(established && active().isMuted().audio));
    el("hold").setAttribute("aria-pressed", String(established && session.isOnHold().local));
    const talking = consulting && consult.isEstablished();
    el("consult-box").hidden = !consulting;
    el("consult-complete").disabled = !talking;
    el("consult-cancel").disabled = !consulting;
    announce();
  }

  function showConsult(state) {
    show("consult-state", state);
    el("consult-box").dataset.state = state;
  }

  function hear(s) {  // the far end this agent hears: the citizen, or the consultation
    const receivers = s && s.connection ? s.connection.getReceivers() : [];
    const tracks = receivers.map((r) => r.track).filter((t) => t && t.kind === "audio");
    audio.srcObject = tracks.length ? new MediaStream(tracks) : null;
  }

  function ended() {
    if (live(consult)) consult.terminate();
    consult = null;
    handingOver = false;
    session = null;
    callId = "";
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
    const number = masked(request.from.uri.user || "");
    const name = request.from.display_name || "";
    const header = request.getHeader("X-Hotline-Call-Id") || "";
    callId = CALL_ID.test(header) ? header : "";
    el("caller").textContent = name && name !== number ? `${number} (${name})` : number;
    root.dataset.call = number;
    root.dataset.callId = callId;
    show("call-state", "ringing");
    session.on("peerconnection", (e) => {
      e.peerconnection.addEventListener("track", (t) => {
        if (!live(consult)) audio.srcObject = t.streams[0];
      });
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

  function target() {
    const input = el("transfer-to");
    if (!input.checkValidity() || !input.value) {
      error(words.bad_target);
      return "";
    }
    error("");
    return input.value;
  }

  function consultEnded(cause) {
    consult = null;
    if (cause) error(`${words.consult_failed} ${cause}`);
    showConsult("idle");
    if (!handingOver && live(session) && session.isEstablished()) {
      hear(session);
      if (session.isOnHold().local) session.unhold();  // the citizen is back
    }
    buttons();
  }

  function startConsult(to) {
    if (!live(session) || !session.isEstablished() || live(consult)) return;
    const place = () => {
      const extraHeaders = callId ? [`X-Hotline-Call-Id: ${callId}`] : [];
      try {
        consult = ua.call(to, {
          ...options, extraHeaders,
          eventHandlers: {
            progress: () => showConsult("ringing"),
            confirmed: () => { showConsult("talking"); hear(consult); buttons(); },
            muted: () => buttons(),
            unmuted: () => buttons(),
            ended: () => consultEnded(""),
            failed: (e) => consultEnded(e.cause),
          },
        });
      } catch (e) {
        consultEnded(String(e.message || e));
        return;
      }
      consult.on("peerconnection", (e) => {
        e.peerconnection.addEventListener("track", () => hear(consult));
      });
      showConsult("calling");
      buttons();
    };
    if (session.isOnHold().local) place();
    else {
      session.once("hold", place);  // the citizen hears the hold music first
      session.hold();
    }
  }

  el("answer").addEventListener("click", () => {
    if (session) session.answer(options);
  });
  el("hangup").addEventListener("click", () => {
    if (session) session.terminate();
  });
  el("mute").addEventListener("click", () => {
    if (!session) return;
    const talkingOn = active();
    if (talkingOn.isMuted().audio) talkingOn.unmute({ audio: true });
    else talkingOn.mute({ audio: true });
  });
  el("hold").addEventListener("click", () => {
    if (!session) return;
    if (session.isOnHold().local) session.unhold();
    else session.hold();
  });
  for (const key of document.querySelectorAll(".dtmf")) {
    key.addEventListener("click", () => {
      if (session) active().sendDTMF(key.dataset.key, { transportType: "RFC2833" });
    });
  }
  el("transfer-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const to = target();
    if (!session || !to) return;
    if (e.submitter && e.submitter.id === "consult") startConsult(to);
    else session.refer(to);  // blind: Asterisk dials it in from-agents: agent, queue, number
  });
  el("consult-complete").addEventListener("click", () => {
    if (!live(session) || !live(consult) || !consult.isEstablished()) return;
    showConsult("transferring");
    el("consult-complete").disabled = true;
    handingOver = true;
    const refer = session.refer(consult.remote_identity.uri, { replaces: consult });
    const failed = (reason) => {
      handingOver = false;
      error(`${words.transfer_failed} ${reason || ""}`);
      if (live(consult)) showConsult("talking");
      buttons();
    };
    if (!refer) { failed(""); return; }
    refer.on("requestFailed", (e) => failed(e.cause));
    refer.on("failed", (e) => failed(e.status_line ? e.status_line.reason_phrase : ""));
    refer.on("accepted", () => {  // NOTIFY 200: the citizen and the target are bridged
      if (live(consult)) consult.terminate();
      if (live(session)) session.terminate();
    });
  });
  el("consult-cancel").addEventListener("click", () => {
    if (live(consult)) consult.terminate();
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
    announce();
  }

  window.addEventListener("beforeunload", () => { if (ua) ua.stop(); });
  start();
})();
