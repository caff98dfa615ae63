// The screen pop (来电弹屏): renders each "desk:pop" event (detail: the pop agent_desk/pop.py
// composed; detail.private only for viewers who may see phone numbers) and greys it out when
// "desk:call" says the call ended. Everything from the server goes in with textContent:
// a caller's name or an order's text is never markup.
"use strict";
(function () {
  const root = document.getElementById("pop");
  if (!root) return;
  const words = JSON.parse(document.getElementById("pop-words").textContent);
  const el = (id) => document.getElementById(id);
  let current = null; // the call id on show
  let rangAt = 0; // when it rang this agent (Unix seconds)

  const text = (value) => (value === null || value === undefined ? "" : String(value));
  const fill = (template, values) =>
    template.replace(/\{(\w+)\}/g, (_m, key) => text(values[key]));

  function node(tag, className, content) {
    const made = document.createElement(tag);
    if (className) made.className = className;
    if (content !== undefined) made.textContent = text(content);
    return made;
  }

  function when(iso) { // "2026-11-24T09:30:00+08:00" -> "11-24 09:30", as the centre's clock
    const m = /^\d{4}-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})/.exec(text(iso));
    return m ? `${m[1]}-${m[2]} ${m[3]}:${m[4]}` : "";
  }

  function clock(iso) {
    const m = /T(\d{2}:\d{2}:\d{2})/.exec(text(iso));
    return m ? m[1] : "";
  }

  function badge(kind, label, title) {
    const made = node("span", `pop-badge pop-badge-${kind}`, label);
    made.dataset.mark = kind;
    if (title) made.title = title;
    return made;
  }

  function row(cells, className) {
    const tr = node("tr", className);
    for (const cell of cells) tr.append(cell instanceof Node ? wrap(cell) : node("td", "", cell));
    if (cells.length === 1) tr.firstChild.colSpan = 4; // "none" across the table
    return tr;
  }

  function wrap(child) {
    const td = node("td");
    td.append(child);
    return td;
  }

  function marks(pop) {
    const box = el("pop-marks");
    box.replaceChildren();
    const m = pop.marks || {};
    const recent = fill(words.recent, { count: m.recent_calls || 0,
                                        hours: m.repeat_window_hours || 0 });
    if (m.vip) box.append(badge("vip", words.vip));
    if (m.blocked) box.append(badge("blocked", words.blocked));
    if (m.repeat) box.append(badge("repeat", `${words.repeat} · ${recent}`, recent));
  }

  function orders(pop) {
    const seen = new Set();
    const list = [];
    for (const order of [...(pop.open_orders || []), ...(pop.orders || [])]) {
      if (!order || seen.has(order.case_number)) continue;
      seen.add(order.case_number);
      list.push(order);
    }
    const body = el("pop-orders").tBodies[0];
    body.replaceChildren();
    for (const order of list) {
      const state = node("span", "pop-state", (words.states || {})[order.state] || order.state);
      state.dataset.state = text(order.state);
      const tr = row([node("span", "pop-case-number", order.case_number), state,
                      order.summary, when(order.created_at)],
                     order.open ? "pop-order pop-order-open" : "pop-order");
      tr.dataset.case = text(order.case_number);
      tr.dataset.open = order.open ? "true" : "false";
      body.append(tr);
    }
    if (!list.length) body.append(row([words.no_orders], "pop-none"));
    el("pop-orders-count").textContent = pop.orders_total
      ? fill(words.total, { count: pop.orders_total }) : "";
  }

  function calls(pop) {
    const body = el("pop-calls").tBodies[0];
    body.replaceChildren();
    for (const call of pop.calls || []) {
      const tr = row([when(call.started_at), (words.outcomes || {})[call.outcome] || call.outcome,
                      call.agent, call.case_number], "pop-call");
      tr.dataset.call = text(call.call_id);
      body.append(tr);
    }
    if (!(pop.calls || []).length) body.append(row([words.no_calls], "pop-none"));
    el("pop-calls-count").textContent = pop.calls_total
      ? fill(words.total, { count: pop.calls_total }) : "";
  }

  function status(state) {
    root.dataset.state = state;
    el("pop-status").textContent = words[state] || "";
  }

  function show(pop) {
    if (!pop || typeof pop !== "object") return;
    current = text(pop.call_id);
    rangAt = Number(pop.at) || 0;
    root.dataset.call = current;
    const full = pop.private && pop.private.caller_number;
    const number = el("pop-number");
    number.textContent = text(full || pop.caller_number || words.none);
    number.dataset.full = full ? "true" : "false";
    el("pop-name").textContent = text(pop.caller_name);
    el("pop-unknown").hidden = Boolean(pop.caller_known);
    marks(pop);
    el("pop-queue").textContent = text(pop.queue_title || pop.queue) || words.none;
    el("pop-queue").title = text(pop.queue);
    const keys = Array.isArray(pop.ivr_keys) ? pop.ivr_keys.map(text).join(" → ") : "";
    el("pop-keys").textContent = keys || words.none;
    const caseBox = el("pop-case");
    caseBox.replaceChildren(node("span", "pop-case-number", pop.case_keyed || words.none));
    if (pop.case_order && pop.case_order.state) {
      const state = node("span", "pop-state",
                         (words.states || {})[pop.case_order.state] || pop.case_order.state);
      state.dataset.state = text(pop.case_order.state);
      caseBox.append(" ", state);
    }
    el("pop-rang").textContent = clock(pop.rang_at);
    orders(pop);
    calls(pop);
    el("pop-empty").hidden = true;
    el("pop-card").hidden = false;
    status("ringing");
  }

  // The caller's words heard live (实时转写): each utterance's final text stays, the partial
  // text of the one under way follows it and is replaced as it grows.
  const finals = new Map(); // utterance -> final text, of the call on show
  document.addEventListener("desk:live", (event) => {
    const live = event.detail || {};
    if (!current || text(live.call_id) !== current) return;
    if (live.final) {
      finals.set(Number(live.utterance), text(live.text));
      el("pop-live-partial").textContent = "";
    } else {
      el("pop-live-partial").textContent = text(live.text);
    }
    el("pop-live-final").textContent = [...finals.entries()].sort((a, b) => a[0] - b[0])
      .map((entry) => entry[1]).join(" ");
  });
  document.addEventListener("desk:pop", (event) => {
    if (text((event.detail || {}).call_id) !== current) {
      finals.clear();
      el("pop-live-final").textContent = "";
      el("pop-live-partial").textContent = "";
    }
    show(event.detail);
  });
  document.addEventListener("desk:call", (event) => {
    const call = event.detail || {};
    if (!current || text(call.call_id) !== current) return;
    if (call.event === "ended") status("ended");
    else if (call.event === "connected") status("connected");
  });
  // A ring this agent never answered (another agent took it, the caller gave up): the seat
  // leaves "ringing" for a state that is not a call, after the ring began.
  document.addEventListener("desk:seat", (event) => {
    const seat = event.detail || {};
    if (root.dataset.state !== "ringing" || !(Number(seat.since) > rangAt)) return;
    if (["ready", "paused", "logged_out"].includes(seat.state)) status("ended");
  });
})();
