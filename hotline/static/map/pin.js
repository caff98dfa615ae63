// A map to put one pin on (Leaflet, no tiles needed: the city's grids are the ground), for
// every page that asks a place: the desk's order form and the citizens' portal.
//   window.HotlinePinMap(element, {grids, tiles, icons, onPin(lat, lon), onClear(),
//                                   gridClass, tooltips, shownOn})
//   -> {map, setPin(lat, lon), moveTo(lat, lon), clear()}
// The grids come as GeoJSON in the map's datum (tickets.maps.grids); each is drawn with the
// classes `<gridClass> <gridClass>-<code>`, and `shownOn` (default: the map's element) gets
// data-grids-shown once they are. setPin is a pin the person put (onPin follows), moveTo a
// pin typed elsewhere (no callback). Nothing inline (CSP).
"use strict";
(function () {
  window.HotlinePinMap = function (element, options) {
    if (typeof L === "undefined" || !element) return null;
    const gridClass = options.gridClass || "pin-grid";
    const shownOn = options.shownOn || element;
    L.Icon.Default.imagePath = options.icons;
    const map = L.map(element, {zoomSnap: 0.25}).setView([35, 105], 4);  // China until grids come
    if (options.tiles) L.tileLayer(options.tiles, {maxZoom: 19}).addTo(map);
    let pin = null;
    function moveTo(lat, lon) {
      if (pin) pin.setLatLng([lat, lon]); else pin = L.marker([lat, lon]).addTo(map);
    }
    function setPin(lat, lon) {
      moveTo(lat, lon);
      if (options.onPin) options.onPin(Math.round(lat * 1e6) / 1e6, Math.round(lon * 1e6) / 1e6);
    }
    fetch(options.grids, {credentials: "same-origin", headers: {Accept: "application/json"}})
      .then((reply) => reply.ok ? reply.json() : null)
      .then((body) => {
        if (!body || !Array.isArray(body.features) || !body.features.length) return;
        const layer = L.geoJSON(body, {
          style: (f) => ({className: gridClass + " " + gridClass + "-" + f.properties.code,
                          weight: 1, fillOpacity: 0.08}),
          onEachFeature: (f, l) => {
            if (options.tooltips) l.bindTooltip(f.properties.code + " " + f.properties.name);
          },
        }).addTo(map);
        layer.on("click", (e) => setPin(e.latlng.lat, e.latlng.lng));
        map.fitBounds(layer.getBounds(), {padding: [10, 10]});
        shownOn.dataset.gridsShown = String(body.features.length);
      })
      .catch(() => {});
    map.on("click", (e) => setPin(e.latlng.lat, e.latlng.lng));
    return {
      map: map,
      setPin: setPin,
      moveTo: moveTo,
      clear: function () {
        if (pin) { pin.remove(); pin = null; }
        if (options.onClear) options.onClear();
      },
    };
  };
})();
