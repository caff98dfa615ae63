// The desk's order form (工单受理): filled while the citizen talks, bound to the live call the
// pop ("desk:pop") or the softphone ("desk:softphone") announces, saved through
// agent_desk.orders. Category search by code, name or pinyin initials; a map pin (Leaflet,
// tiles optional: with none the city's grids are the ground) resolves live to the grid and
// department; a repeat of an open order nearby is shown while typing. Nothing inline (CSP).
"use strict";
(function () {
  const root = document.getElementById("order");
  if (!root) return;
  const words = JSON.parse(document.getElementById("order-words").textContent);
  const el = (id) => document.getElementById(id);
  const form = el("order-form");
  const csrf = (JSON.parse(document.body.getAttribute("hx-headers") || "{}"))["X-CSRFToken"];
  const FIELDS = {  // what the server names -> the field whose message shows it
    appeal_type: "appeal_type", category_code: "category_code", category_kind: "category_code",
    description: "description", urgency: "urgency", address: "address",
    location: "location", latitude: "location", longitude: "location",
    citizen_phone: "citizen_phone", call_id: "call_id",
  };

  function debounce(fn, ms) {
    let timer = null;
    return function () { clearTimeout(timer); timer = setTimeout(fn, ms); };
  }

  async function getJson(url, params) {
    const query = new URLSearchParams(params);
    const reply = await fetch(url + "?" + query, {credentials: "same-origin",
                                                  headers: {Accept: "application/json"}});
    const body = await reply.json().catch(() => ({}));
    return {ok: reply.ok, status: reply.status, body: body};
  }

  // --- messages next to the fields ------------------------------------------------------

  function clearErrors() {
    for (const node of form.querySelectorAll(".order-error")) node.textContent = "";
  }

  function fieldError(field, text) {
    const node = form.querySelector('.order-error[data-field="' + field + '"]') ||
      el("order-message");
    node.textContent = node.textContent ? node.textContent + "; " + text : text;
  }

  function showProblem(status, detail) {
    if (status === 413) { fieldError("description", words.too_large); return; }
    for (const part of String(detail || words.failed).split("; ")) {
      const colon = part.indexOf(":");
      const name = colon > 0 ? part.slice(0, colon).trim().split(".").pop() : "";
      const field = FIELDS[name];
      if (field) fieldError(field, part.slice(colon + 1).trim());
      else fieldError("", part);
    }
  }

  // --- the call the order is taken in on -----------------------------------------------

  function bindCall(callId, caller) {
    if (!callId) return;
    el("order-call-id").value = callId;
    const shown = el("order-call");
    shown.dataset.callId = callId;
    shown.textContent = caller ? callId + " · " + caller : callId;
    // a number the agent may see in full is the citizen's; a masked one is not typed in
    if (caller && !el("order-phone").value && /^[0-9+\- ]{5,}$/.test(caller)) {
      el("order-phone").value = caller;
    }
  }

  function unbindCall() {
    el("order-call-id").value = "";
    el("order-call").dataset.callId = "";
    el("order-call").textContent = words.no_call;
  }

  document.addEventListener("desk:pop", (event) => {
    const d = event.detail || {};
    // the full number comes in the pop's private part, to viewers who may see numbers
    const full = d.private && typeof d.private.caller_number === "string" ?
      d.private.caller_number : "";
    bindCall(d.call_id, full || d.caller_number);
  });
  document.addEventListener("desk:softphone", (event) => {
    const d = event.detail || {};
    if (d.call_id && (d.state === "ringing" || d.state === "talking" || d.state === "held")) {
      bindCall(d.call_id, d.caller);
    }  // when the call ends the order still belongs to it: the binding stays until saved
  });

  // --- category search -----------------------------------------------------------------

  const search = el("order-category-search");
  const list = el("order-category-list");

  function choose(item) {
    el("order-category-code").value = item.code;
    el("order-category-kind").value = item.kind;
    el("order-category-chosen").textContent = item.code + " " + item.name;
    el("order-category-chosen").dataset.code = item.code;
    list.hidden = true;
    search.setAttribute("aria-expanded", "false");
    refreshPlace();
    checkDuplicate();
  }

  const lookUp = debounce(async () => {
    const text = search.value.trim();
    if (!text) { list.hidden = true; return; }
    const reply = await getJson(root.dataset.categories, {q: text});
    if (search.value.trim() !== text) return;  // typed on meanwhile
    list.replaceChildren();
    list.dataset.query = text;  // what these matches answer
    const items = reply.ok && Array.isArray(reply.body.items) ? reply.body.items : [];
    for (const item of items) {
      const option = document.createElement("li");
      option.setAttribute("role", "option");
      option.className = "order-choice";
      option.dataset.code = item.code;
      option.dataset.kind = item.kind;
      option.tabIndex = -1;
      option.textContent = item.code + " " + item.name + " (" + item.initials + ")";
      option.addEventListener("click", () => choose(item));
      option.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); choose(item); } });
      list.append(option);
    }
    if (!items.length) {
      const none = document.createElement("li");
      none.className = "order-none";
      none.textContent = words.no_match;
      list.append(none);
    }
    list.hidden = false;
    search.setAttribute("aria-expanded", "true");
  }, 200);
  search.addEventListener("input", () => {  // old matches go at once, new ones follow
    list.replaceChildren();
    list.hidden = true;
    list.dataset.query = "";
    lookUp();
  });
  search.addEventListener("keydown", (e) => {
    if (e.key === "Enter") {  // the first match, without leaving the keyboard
      e.preventDefault();
      const first = list.querySelector(".order-choice");
      if (first) first.click();
    }
  });

  // --- the map and its pin -------------------------------------------------------------

  // the map is the shared pin map (map/pin.js): the grids drawn as order-grid-<code>
  const pinMap = window.HotlinePinMap ? window.HotlinePinMap(el("order-map"), {
    grids: root.dataset.grids, tiles: root.dataset.tiles, icons: root.dataset.icons,
    gridClass: "order-grid", tooltips: true, shownOn: root,
    onPin: (lat, lon) => placePin(lat, lon),
  }) : null;

  function placePin(lat, lon) {
    el("order-lat").value = lat;
    el("order-lon").value = lon;
    refreshPlace();
    checkDuplicate();
  }

  function point() {
    const lat = el("order-lat").value.trim(), lon = el("order-lon").value.trim();
    if (!lat && !lon) return null;
    const p = {lat: Number(lat), lon: Number(lon)};
    return lat && lon && Number.isFinite(p.lat) && Number.isFinite(p.lon) ? p : undefined;
  }

  function resolved(grid, department) {
    const g = el("order-grid"), d = el("order-department");
    g.dataset.code = grid ? grid.code : "";
    g.textContent = grid ? (grid.code ? grid.code + " " + grid.name : words.no_grid) : "—";
    d.dataset.code = department ? department.code : "";
    d.textContent = department ? (department.code ? department.name + " (" + department.code + ")"
                                                  : words.no_department) : "—";
  }

  let placeAsked = 0;
  async function refreshPlace() {
    const p = point();
    form.querySelector('.order-error[data-field="location"]').textContent = "";
    if (!p) {
      resolved(null, null);
      if (p === undefined) fieldError("location", words.bad_number);
      return;
    }
    const asked = ++placeAsked;
    const params = {lat: p.lat, lon: p.lon, category_kind: el("order-category-kind").value};
    if (el("order-category-code").value) params.category_code = el("order-category-code").value;
    const reply = await getJson(root.dataset.place, params);
    if (asked !== placeAsked) return;  // the pin moved on meanwhile
    if (!reply.ok || !("grid_code" in reply.body)) {
      resolved(null, null);
      showProblem(reply.status, reply.body.detail);
      return;
    }
    const b = reply.body;
    resolved({code: b.grid_code, name: b.grid_name},
             el("order-category-code").value ? {code: b.department_code, name: b.department_name}
                                              : null);
  }

  const typedPoint = debounce(() => {
    const p = point();
    if (p && pinMap) pinMap.moveTo(p.lat, p.lon);
    refreshPlace();
    checkDuplicate();
  }, 400);
  el("order-lat").addEventListener("input", typedPoint);
  el("order-lon").addEventListener("input", typedPoint);
  el("order-clear-pin").addEventListener("click", () => {
    el("order-lat").value = ""; el("order-lon").value = "";
    if (pinMap) pinMap.clear();
    refreshPlace();
    checkDuplicate();
  });

  // --- a repeat of an open order nearby (疑似重复) ----------------------------------------

  let duplicateAsked = 0;
  const checkDuplicate = debounce(async () => {
    const box = el("order-duplicate");
    const p = point(), code = el("order-category-code").value;
    const asked = ++duplicateAsked;
    if (!p || !code) { box.hidden = true; box.textContent = ""; box.dataset.case = ""; return; }
    const reply = await getJson(root.dataset.duplicate, {
      lat: p.lat, lon: p.lon, category_code: code, category_kind: el("order-category-kind").value});
    if (asked !== duplicateAsked) return;
    const found = reply.ok ? reply.body.duplicate || null : null;
    box.hidden = !found;
    box.dataset.case = found ? found.case_number : "";
    box.textContent = found ? words.duplicate + " " + found.case_number + " · " +
      found.address + " · " + Math.round(found.distance_m) + " " + words.metres : "";
  }, 400);

  // --- saving --------------------------------------------------------------------------

  function body() {
    const data = {
      appeal_type: el("order-appeal-type").value,
      category_code: el("order-category-code").value,
      category_kind: el("order-category-kind").value,
      description: el("order-description").value,
      urgency: el("order-urgency").value,
      address: el("order-address").value,
      citizen_phone: el("order-phone").value.trim(),
      call_id: el("order-call-id").value,
    };
    const p = point();
    if (p) { data.latitude = p.lat; data.longitude = p.lon; }
    return data;
  }

  function missing(data) {  // said at once; the server checks everything again
    let any = false;
    for (const field of ["appeal_type", "category_code"]) {
      if (!data[field]) { fieldError(field, words.required); any = true; }
    }
    if (!data.description.trim()) { fieldError("description", words.required); any = true; }
    if (point() === undefined) { fieldError("location", words.bad_number); any = true; }
    return any;
  }

  let saving = false;
  // one Idempotency-Key per order as filled in: saving it again after a 503 or a lost
  // answer never takes it in twice; changed since, it is another request with a new key
  let requestKey = "", requestBody = "";
  function keyFor(sent) {
    if (sent !== requestBody) {
      requestBody = sent;
      requestKey = "desk-" + Array.from(crypto.getRandomValues(new Uint8Array(16)),
                                        (b) => b.toString(16).padStart(2, "0")).join("");
    }
    return requestKey;
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (saving) return;
    clearErrors();
    el("order-result").textContent = "";
    el("order-result").dataset.case = "";
    const data = body();
    if (missing(data)) return;
    saving = true;
    el("order-save").disabled = true;
    try {
      const sent = JSON.stringify(data);
      const reply = await fetch(root.dataset.save, {
        method: "POST", credentials: "same-origin",
        headers: {"Content-Type": "application/json", Accept: "application/json",
                  "X-CSRFToken": csrf, "Idempotency-Key": keyFor(sent)},
        body: sent});
      const answer = await reply.json().catch(() => ({}));
      // signed out meanwhile, the CSRF token refused: a page comes back, not the order
      if (!reply.ok || !answer.case_number) { showProblem(reply.status, answer.detail); return; }
      requestBody = "";  // taken in: the next order gets a key of its own
      form.reset();
      clearForm(false);
      el("order-result").dataset.case = answer.case_number;
      el("order-result").textContent = words.saved + " " + answer.case_number;
      document.dispatchEvent(new CustomEvent("desk:order", {detail: answer}));
    } catch (error) {
      fieldError("", words.failed);
    } finally {
      saving = false;
      el("order-save").disabled = false;
    }
  });

  function clearForm(keepCall) {
    el("order-category-code").value = "";
    el("order-category-kind").value = "event";
    el("order-category-chosen").textContent = "";
    list.replaceChildren(); list.hidden = true;
    if (pinMap) pinMap.clear();
    resolved(null, null);
    el("order-duplicate").hidden = true;
    el("order-duplicate").textContent = "";
    // a call belongs to one order: once saved, the next order waits for the next call
    if (!keepCall) unbindCall();
  }
  form.addEventListener("reset", () => { setTimeout(() => { clearErrors(); clearForm(true); }); });
})();
