// The citizens' portal (公众服务门户): the report form (with its map pin, shared
// map/pin.js), the code page and the tracking page's two forms. Each form is sent as
// multipart with the page's CSRF token to /api/v1/portal; a refusal's "field: reason" is
// shown next to the field it names. Nothing inline (CSP).
"use strict";
(function () {
  const el = (id) => document.getElementById(id);

  function wordsOf(root) { return JSON.parse(root.dataset.words || "{}"); }

  async function send(url, form, data) {
    const reply = await fetch(url, {
      method: "POST", credentials: "same-origin", body: data,
      headers: {Accept: "application/json", "X-CSRFToken": form.dataset.csrf}});
    const body = await reply.json().catch(() => ({}));
    return {ok: reply.ok, status: reply.status, body: body};
  }

  function clearErrors(form) {
    for (const node of form.querySelectorAll(".portal-error")) node.textContent = "";
  }

  function showProblem(form, words, reply) {
    const general = form.querySelector("#portal-message");
    if (reply.status === 413) { general.textContent = words.too_large; return; }
    if (reply.status === 429) { general.textContent = words.too_many; return; }
    const detail = String((reply.body && reply.body.detail) || words.failed);
    const colon = detail.indexOf(":");
    let name = colon > 0 ? detail.slice(0, colon).trim() : "";
    if (/^photo \d+$/.test(name)) name = "photos";
    if (name === "latitude" || name === "longitude" || name === "address") name = "location";
    const node = form.querySelector('.portal-error[data-field="' + name + '"]') || general;
    node.textContent = detail;
  }

  // --- report a problem ----------------------------------------------------------------

  const report = el("portal-report");
  if (report) {
    const words = wordsOf(report);
    const form = el("portal-form");
    const place = el("portal-place");
    let asked = 0;
    async function lookUp(lat, lon) {
      const mine = ++asked;
      const reply = await fetch(report.dataset.place + "?" + new URLSearchParams({lat: lat, lon: lon}),
                                {headers: {Accept: "application/json"}});
      const body = await reply.json().catch(() => ({}));
      if (mine !== asked) return;
      form.querySelector('.portal-error[data-field="location"]').textContent = "";
      if (reply.ok && body.grid_code) {
        place.dataset.code = body.grid_code;
        place.textContent = body.grid_name;
      } else {
        place.dataset.code = "";
        place.textContent = "—";
        form.querySelector('.portal-error[data-field="location"]').textContent =
          reply.ok ? words.no_grid : String(body.detail || words.no_grid);
      }
    }
    const pinMap = window.HotlinePinMap ? window.HotlinePinMap(el("portal-map"), {
      grids: report.dataset.grids, tiles: report.dataset.tiles, icons: report.dataset.icons,
      onPin: (lat, lon) => { el("portal-lat").value = lat; el("portal-lon").value = lon; lookUp(lat, lon); },
      onClear: () => { el("portal-lat").value = ""; el("portal-lon").value = "";
                       place.dataset.code = ""; place.textContent = "—"; },
    }) : null;
    el("portal-clear-pin").addEventListener("click", () => { if (pinMap) pinMap.clear(); });

    const photos = el("portal-photos");
    photos.addEventListener("change", () => {
      const count = photos.files.length;
      el("portal-photo-count").textContent = count ? words.photos.replace("{n}", count) : "";
      form.querySelector('.portal-error[data-field="photos"]').textContent =
        count > Number(report.dataset.maxPhotos) ? words.too_many_photos : "";
    });

    let sending = false;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (sending) return;
      clearErrors(form);
      let missing = false;
      for (const [id, field] of [["portal-category", "category"], ["portal-description", "description"],
                                 ["portal-phone", "phone"]]) {
        if (!el(id).value.trim()) {
          form.querySelector('.portal-error[data-field="' + field + '"]').textContent = words.required;
          missing = true;
        }
      }
      if (missing) return;
      sending = true;
      el("portal-submit").disabled = true;
      el("portal-message").textContent = words.sending;
      try {
        const reply = await send(report.dataset.submit, form, new FormData(form));
        el("portal-message").textContent = "";
        if (reply.ok && reply.body.confirm_url) { window.location.assign(reply.body.confirm_url); return; }
        showProblem(form, words, reply);
      } catch (error) {
        el("portal-message").textContent = words.failed;
      } finally {
        sending = false;
        el("portal-submit").disabled = false;
      }
    });
  }

  // --- the code ------------------------------------------------------------------------

  const confirmRoot = el("portal-confirm");
  if (confirmRoot) {
    const words = wordsOf(confirmRoot);
    const form = el("portal-code-form");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearErrors(form);
      el("portal-confirm-button").disabled = true;
      try {
        const reply = await send(confirmRoot.dataset.code, form, new FormData(form));
        if (reply.ok && reply.body.tracking_url) { window.location.assign(reply.body.tracking_url); return; }
        showProblem(form, words, reply);
      } catch (error) {
        el("portal-message").textContent = words.failed;
      } finally {
        el("portal-confirm-button").disabled = false;
      }
    });
    el("portal-resend").addEventListener("click", async () => {
      clearErrors(form);
      const reply = await send(confirmRoot.dataset.resend, form, new FormData());
      if (reply.ok) el("portal-message").textContent = words.resent;
      else showProblem(form, words, reply);
    });
  }

  // --- following the order -------------------------------------------------------------

  const track = el("portal-track");
  if (track) {
    const words = wordsOf(track);
    for (const [id, url] of [["portal-info-form", track.dataset.info],
                             ["portal-rating-form", track.dataset.rating]]) {
      const form = el(id);
      if (!form) continue;
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        clearErrors(form);
        try {
          const reply = await send(url, form, new FormData(form));
          if (reply.ok) { window.location.reload(); return; }
          showProblem(form, words, reply);
        } catch (error) {
          form.querySelector("#portal-message").textContent = words.failed;
        }
      });
    }
  }
})();
