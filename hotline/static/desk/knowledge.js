// The desk's knowledge base panel (知识库): a debounced search in the caller's words, the
// article read out, and "answered with this article", which closes the caller's
// consultation on the live call (首呼解决): a consultation order taken in on the call and
// closed at once, by one request. The call's id comes from the screen pop ("desk:pop"),
// whether the agent is talking from the softphone ("desk:softphone"). Nothing inline.
"use strict";
(function () {
  const root = document.getElementById("knowledge");
  if (!root) return;
  const words = JSON.parse(document.getElementById("knowledge-words").textContent);
  const el = (id) => document.getElementById(id);
  const api = root.dataset.api;
  const input = el("knowledge-q");
  const category = el("knowledge-category");
  const results = el("knowledge-results");
  const status = el("knowledge-status");
  const button = el("knowledge-answer");
  const why = el("knowledge-answer-why");
  const caseLine = el("knowledge-case");
  const DEBOUNCE_MS = 250;
  let timer = null;
  let asked = 0;  // the latest search: an older answer arriving late is dropped
  let shown = null;  // the article on screen
  // the live call: its id (screen pop or softphone) and the softphone's state
  const call = { id: "", state: "idle", answered: "" };

  const say = (key, values) => (words[key] || key).replace(/\{(\w+)\}/g,
    (_, name) => (values && name in values ? String(values[name]) : ""));

  function csrf() {
    try {
      return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || "";
    } catch (_) { return ""; }
  }

  async function getJson(url, options) {
    const reply = await fetch(url, { credentials: "same-origin", ...options,
      headers: { Accept: "application/json", ...(options && options.headers) } });
    let body = null;
    try { body = await reply.json(); } catch (_) { body = null; }
    if (!reply.ok) {
      throw new Error((body && body.detail) || `${reply.status} ${reply.statusText}`);
    }
    return body;
  }

  function fillCategories(names) {
    const chosen = category.value;
    if (category.options.length - 1 === names.length) return;
    while (category.options.length > 1) category.remove(1);
    for (const name of names) category.add(new Option(name, name, false, name === chosen));
  }

  function render(page, query) {
    results.replaceChildren();
    for (const item of page.items) {
      const li = document.createElement("li");
      const open = document.createElement("button");
      open.type = "button";
      open.dataset.article = String(item.id);
      const title = document.createElement("strong");
      title.textContent = item.title;
      const kind = document.createElement("span");
      kind.className = "knowledge-category";
      kind.textContent = ` [${item.category}]`;
      const excerpt = document.createElement("span");
      excerpt.className = "knowledge-excerpt";
      excerpt.textContent = item.excerpt;
      open.append(title, kind, excerpt);
      if (shown && shown.id === item.id) open.setAttribute("aria-current", "true");
      open.addEventListener("click", () => show(item.id));
      li.append(open);
      results.append(li);
    }
    if (!query) status.textContent = say("all", { count: page.total });
    else status.textContent = page.total ? say("found", { count: page.total }) : say("none");
  }

  async function search() {
    const query = input.value.trim();
    const ticket = ++asked;
    const params = new URLSearchParams({ q: query, limit: "20" });
    if (category.value) params.set("category", category.value);
    status.textContent = say("searching");
    try {
      const page = await getJson(`${api}?${params}`);
      if (ticket !== asked) return;
      fillCategories(page.categories);
      render(page, query);
    } catch (error) {
      if (ticket !== asked) return;
      results.replaceChildren();
      status.textContent = `${say("failed")} ${error.message}`;
    }
  }

  function later() {
    clearTimeout(timer);
    timer = setTimeout(search, DEBOUNCE_MS);
  }

  async function show(id) {
    try {
      const article = await getJson(`${api}/${encodeURIComponent(id)}`);
      shown = article;
      el("knowledge-article-title").textContent = article.title;
      el("knowledge-article-meta").textContent = `[${article.category}] ` + say("edited", {
        who: article.updated_by, when: new Date(article.updated_at).toLocaleString() });
      el("knowledge-article-body").textContent = article.body;
      el("knowledge-article").hidden = false;
      el("knowledge-article").dataset.article = String(article.id);
      caseLine.textContent = "";
      delete caseLine.dataset.state;
      for (const open of results.querySelectorAll("button[data-article]")) {
        if (open.dataset.article === String(article.id)) open.setAttribute("aria-current", "true");
        else open.removeAttribute("aria-current");
      }
      update();
    } catch (error) {
      status.textContent = `${say("failed")} ${error.message}`;
    }
  }

  // Whether the button may close a consultation now, and if not, why not.
  function update() {
    let reason = "";
    if (root.dataset.mayAnswer !== "yes") reason = "not_operator";
    else if (call.state === "ringing") reason = "ringing";
    else if (call.state !== "talking" && call.state !== "held") reason = "no_call";
    else if (!call.id) reason = "no_call_id";
    else if (call.answered === call.id) reason = "answered_call";
    button.disabled = reason !== "" || !shown;
    why.textContent = say(reason || "ready");
    root.dataset.call = call.id;
    root.dataset.callState = call.state;
  }

  async function answer() {
    if (button.disabled || !shown) return;
    const callId = call.id;
    button.disabled = true;
    why.textContent = say("answering");
    try {
      const done = await getJson(`${api}/${shown.id}/answers`, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf() },
        body: JSON.stringify({ call_id: callId }),
      });
      call.answered = callId;
      caseLine.dataset.state = "closed";
      caseLine.dataset.case = done.case_number;
      caseLine.textContent = say("closed", { case: done.case_number });
      document.dispatchEvent(new CustomEvent("desk:answered", { detail: {
        call_id: callId, case_number: done.case_number, article_id: shown.id } }));
    } catch (error) {
      caseLine.dataset.state = "refused";
      caseLine.textContent = `${say("refused")} ${error.message}`;
    }
    update();
  }

  document.addEventListener("desk:softphone", (event) => {
    const detail = event.detail || {};
    call.state = detail.state || "idle";
    if (detail.call_id) call.id = String(detail.call_id);
    if (call.state === "idle") call.id = "";
    update();
  });
  document.addEventListener("desk:pop", (event) => {
    const detail = event.detail || {};
    if (detail.call_id) call.id = String(detail.call_id);
    update();
  });
  document.addEventListener("desk:call", (event) => {
    const detail = event.detail || {};
    if (detail.event === "ended" && detail.call_id === call.id) {
      call.id = "";
      call.state = "idle";
      update();
    }
  });

  el("knowledge-form").addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(timer);
    search();
  });
  input.addEventListener("input", later);
  category.addEventListener("change", search);
  button.addEventListener("click", answer);
  update();
  search();
})();
