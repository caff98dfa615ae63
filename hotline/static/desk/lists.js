// The agent's own lists on the desk (我的待办): today's figures, the surveys waiting for an
// agent's call with a click-to-call, and the orders returned for more information. Data
// from agent_desk/lists.py; refreshed every minute and when a call of this agent ends
// ("desk:call" {event: "ended"}) or the softphone goes idle ("desk:softphone").
"use strict";
(function () {
  const root = document.getElementById("lists");
  if (!root) return;
  const words = JSON.parse(document.getElementById("lists-words").textContent);
  const csrf = (JSON.parse(document.body.getAttribute("hx-headers") || "{}"))["X-CSRFToken"];
  const el = (id) => document.getElementById(id);
  const REFRESH_MS = 60_000;
  const dialling = new Set();  // survey ids this page asked to dial, until the server says

  function node(tag, text, cls) {
    const made = document.createElement(tag);
    if (text !== undefined) made.textContent = text;
    if (cls) made.className = cls;
    return made;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 120) return `${Math.round(seconds)} ${words.seconds}`;
    return `${Math.round(seconds / 60)} ${words.minutes}`;
  }

  function localTime(iso) {
    const when = new Date(iso);
    return Number.isNaN(when.getTime()) ? "" : when.toLocaleString();
  }

  async function read(url) {
    const reply = await fetch(url, { credentials: "same-origin", cache: "no-store",
                                     headers: { Accept: "application/json" } });
    if (!reply.ok) throw new Error(`${reply.status}`);
    return reply.json();
  }

  function fill(list, countId, items, row) {
    list.replaceChildren();
    el(countId).textContent = items.length ? `(${items.length})` : "";
    if (!items.length) list.append(node("li", words.none, "lists-empty"));
    for (const item of items) list.append(row(item));
  }

  function surveyRow(item) {
    const li = node("li");
    li.dataset.survey = String(item.survey_id);
    li.append(node("strong", item.case_number), node("span", item.phone),
              node("span", `${words.attempts} ${item.call_attempts}`));
    const button = node("button", dialling.has(item.survey_id) ? words.dialling : words.call);
    button.type = "button";
    button.className = "lists-call";
    button.disabled = dialling.has(item.survey_id);
    button.addEventListener("click", () => call(item.survey_id, button,
      root.dataset.call.replace("/0/", `/${item.survey_id}/`)));
    li.append(button, resultForm(item));
    return li;
  }

  function resultForm(item) {  // after the call: the citizen's rating, or unreachable
    const form = node("form", undefined, "lists-result");
    const choice = node("select");
    choice.name = "rating";
    choice.setAttribute("aria-label", words.choose);
    choice.append(new Option(words.choose, ""));
    for (const [value, label] of Object.entries(words.ratings)) {
      choice.append(new Option(label, value));
    }
    choice.append(new Option(words.unreachable, "unreachable"));
    const save = node("button", words.save);
    save.type = "submit";
    form.append(choice, save);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      if (!choice.value || save.disabled) return;
      save.disabled = true;
      const rating = choice.value === "unreachable" ? null : Number(choice.value);
      try {
        const reply = await fetch(root.dataset.result.replace("/0/", `/${item.survey_id}/`), {
          method: "POST", credentials: "same-origin",
          headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
          body: JSON.stringify({ rating }) });
        if (!reply.ok) {
          const body = await reply.json().catch(() => ({}));
          el("lists-error").dataset.kind = "call";
          el("lists-error").textContent = `${words.not_saved} ${body.detail || reply.status}`;
        }
      } finally {
        save.disabled = false;
        refresh();
      }
    });
    return form;
  }

  function returnedRow(item) {
    const li = node("li");
    li.dataset.case = item.case_number;
    li.append(node("strong", item.case_number), node("span", item.citizen_phone),
              node("span", `${words.returned_by} ${item.returned_by} ${localTime(item.returned_at)}`),
              node("span", item.note, "lists-note"), node("span", item.description, "lists-note"));
    return li;
  }

  function callbackRow(item) {
    const li = node("li");
    li.dataset.callback = item.request_id;
    li.append(node("strong", item.phone), node("span", item.queue),
              node("span", localTime(item.requested_at)),
              node("span", item.detail, "lists-note"));
    const key = item.request_id;
    const button = node("button", dialling.has(key) ? words.dialling : words.call);
    button.type = "button";
    button.className = "lists-call";
    button.disabled = dialling.has(key);
    button.addEventListener("click", () => call(key, button,
      root.dataset.callbackCall.replace("/cb-0/", `/${key}/`)));
    const done = node("button", words.done);
    done.type = "button";
    done.className = "lists-done";
    done.addEventListener("click", async () => {
      done.disabled = true;
      try {
        await post(root.dataset.callbackDone.replace("/cb-0/", `/${key}/`), words.not_saved);
      } finally {
        refresh();
      }
    });
    li.append(button, done);
    return li;
  }

  async function post(url, failedWord, body) {
    const reply = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
      body: JSON.stringify(body || {}) });
    if (!reply.ok) {
      const answer = await reply.json().catch(() => ({}));
      el("lists-error").dataset.kind = "call";
      el("lists-error").textContent = `${failedWord} ${answer.detail || reply.status}`;
    }
    return reply.ok;
  }

  async function call(key, button, url) {
    if (dialling.has(key)) return;  // a double click: one request only
    dialling.add(key);
    button.disabled = true;
    button.textContent = words.dialling;
    el("lists-error").textContent = "";
    try {
      const reply = await fetch(url, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf }, body: "{}" });
      if (!reply.ok) {
        const body = await reply.json().catch(() => ({}));
        el("lists-error").dataset.kind = "call";
        el("lists-error").textContent = `${words.refused} ${body.detail || reply.status}`;
      }
    } catch (e) {
      el("lists-error").dataset.kind = "call";
      el("lists-error").textContent = `${words.refused} ${e.message || e}`;
    } finally {
      // the server keeps a second dial out while the call is up; the button comes back
      // for a later try (busy, no answer) after a short pause
      setTimeout(() => { dialling.delete(key); refresh(); }, 10_000);
    }
  }

  async function refresh() {
    try {
      const [today, surveys, callbacks, returned] = await Promise.all([
        read(root.dataset.today).catch(() => null), read(root.dataset.surveys),
        read(root.dataset.callbacks), read(root.dataset.returned)]);
      if (today) {
        el("lists-day").textContent = today.day;
        el("today-answered").textContent = String(today.calls_answered);
        el("today-talk").textContent = duration(today.average_talk_seconds);
        el("today-orders").textContent = String(today.orders_taken_in);
        el("today-paused").textContent = duration(today.pause_seconds);
      }
      fill(el("surveys"), "surveys-count", surveys.items, surveyRow);
      fill(el("callbacks"), "callbacks-count", callbacks.items, callbackRow);
      fill(el("returned"), "returned-count", returned.items, returnedRow);
      root.dataset.state = "ready";
      if (el("lists-error").dataset.kind === "load") el("lists-error").textContent = "";
    } catch (e) {
      root.dataset.state = "failed";
      el("lists-error").textContent = words.failed;
      el("lists-error").dataset.kind = "load";
    }
  }

  document.addEventListener("desk:call", (e) => {
    if (e.detail && e.detail.event === "ended") refresh();
  });
  document.addEventListener("desk:softphone", (e) => {
    if (e.detail && e.detail.state === "idle") refresh();
  });
  setInterval(refresh, REFRESH_MS);
  refresh();
})();
