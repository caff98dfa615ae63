// The case map (案件地图): open orders as circles coloured by deadline (green, yellow, red),
// the hotspots (热点) as dashed circles, the city's grids as the ground (Leaflet; tiles
// optional). Data from agent_desk.casemap as JSON; reloaded when the category or the view
// changes, and when the push server says an order was opened, moved or closed ("desk:map",
// from desk/push.js; a burst of them is one reload). Nothing inline (CSP).
"use strict";
(function () {
  const root = document.getElementById("casemap");
  if (!root || typeof L === "undefined") return;
  const words = JSON.parse(document.getElementById("casemap-words").textContent);
  const el = (id) => document.getElementById(id);
  const COLOURS = {green: "#2da44e", yellow: "#f2c12e", red: "#cf222e"};

  async function getJson(url, params) {
    const reply = await fetch(url + "?" + new URLSearchParams(params),
                              {credentials: "same-origin", headers: {Accept: "application/json"}});
    const body = await reply.json().catch(() => ({}));
    return {ok: reply.ok, status: reply.status, body: body};
  }

  const map = L.map("casemap-map", {zoomSnap: 0.25}).setView([35, 105], 4);  // China until grids come
  if (root.dataset.tiles) L.tileLayer(root.dataset.tiles, {maxZoom: 19}).addTo(map);
  const ordersLayer = L.layerGroup().addTo(map);
  const hotspotsLayer = L.layerGroup().addTo(map);
  let ready = false;
  let asked = 0;

  function params() {
    const p = {limit: "2000"};
    const chosen = el("casemap-category").value;
    if (chosen) {
      const [kind, code] = chosen.split(":");
      p.kind = kind;
      p.category = code;
    }
    if (ready) {
      const b = map.getBounds();
      const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v)).toFixed(6);
      p.bbox = [clamp(b.getWest(), -180, 180), clamp(b.getSouth(), -90, 90),
                clamp(b.getEast(), -180, 180), clamp(b.getNorth(), -90, 90)].join(",");
    }
    return p;
  }

  function text(value) { return String(value == null ? "" : value); }

  function drawOrders(body) {
    ordersLayer.clearLayers();
    for (const o of body.items) {
      const marker = L.circleMarker([o.latitude, o.longitude], {
        radius: 7, weight: 2, color: "#24292f", fillColor: COLOURS[o.colour] || "#8c959f",
        fillOpacity: 0.9,
        className: "casemap-order casemap-order-" + o.colour + " casemap-case-" + o.case_number,
      });
      const lines = [o.case_number, o.category_code + " " + o.category_name,
                     words[o.colour] + (o.due_at ? " · " + words.due + " " + o.due_at : ""),
                     o.address];
      marker.bindTooltip(lines.filter(Boolean).map(text).join("\n"));
      marker.addTo(ordersLayer);
    }
    el("casemap-count").textContent = body.items.length + " " + words.shown + " (" +
      words.of + " " + body.total + ")";
    root.dataset.ordersShown = String(body.items.length);
  }

  function drawHotspots(body) {
    hotspotsLayer.clearLayers();
    const list = el("casemap-hotspots");
    list.replaceChildren();
    const shown = el("casemap-show-hotspots").checked;
    for (const h of body.items) {
      if (shown) {
        L.circle([h.latitude, h.longitude], {
          radius: Math.max(h.radius_m, 10) + 15, weight: 2, fillOpacity: 0.12,
          className: "casemap-hotspot",
        }).bindTooltip(h.category_code + " " + h.category_name + ": " + h.count + " " +
                       words.orders).addTo(hotspotsLayer);
      }
      const item = document.createElement("li");
      item.className = "casemap-hotspot-item";
      item.dataset.category = h.category_code;
      item.dataset.count = String(h.count);
      item.textContent = h.category_code + " " + h.category_name + ": " + h.count + " " +
        words.orders + " " + words.within + " " + Math.round(h.radius_m) + " m (" +
        h.case_numbers.join(", ") + ")";
      list.append(item);
    }
    if (!body.items.length) {
      const none = document.createElement("li");
      none.className = "casemap-none";
      none.textContent = words.none;
      list.append(none);
    }
  }

  async function load() {
    const mine = ++asked;
    const p = params();
    const [orders, spots] = await Promise.all([getJson(root.dataset.orders, p),
                                               getJson(root.dataset.hotspots, p)]);
    if (mine !== asked) return;  // a newer view was asked for meanwhile
    if (!orders.ok || !spots.ok) {
      el("casemap-count").textContent = words.failed;
      return;
    }
    drawOrders(orders.body);
    drawHotspots(spots.body);
    root.dataset.shown = el("casemap-category").value;  // what is drawn: "" all, kind:code
    root.dataset.loaded = String(mine);
  }

  getJson(root.dataset.grids, {}).then((reply) => {
    if (reply.ok && Array.isArray(reply.body.features) && reply.body.features.length) {
      const layer = L.geoJSON(reply.body, {
        style: (f) => ({className: "casemap-grid casemap-grid-" + f.properties.code,
                        weight: 1, fillOpacity: 0.05}),
        onEachFeature: (f, l) => l.bindTooltip(f.properties.code + " " + f.properties.name),
      }).addTo(map);
      layer.bringToBack();
      map.fitBounds(layer.getBounds(), {padding: [10, 10]});
      root.dataset.gridsShown = String(reply.body.features.length);
    }
    ready = true;
    load();
    map.on("moveend", load);
  });
  let pushed = null;
  document.addEventListener("desk:map", (event) => {
    root.dataset.lastPushed = String((event.detail || {}).case_number || "");
    if (!ready) return;  // the first load is still to come, and will show it
    clearTimeout(pushed);
    pushed = setTimeout(load, 100);
  });
  el("casemap-category").addEventListener("change", load);
  el("casemap-show-hotspots").addEventListener("change", load);
})();
