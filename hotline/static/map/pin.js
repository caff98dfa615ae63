// A map to put one pin on (Leaflet, no tiles needed: the city's grids are the ground), for
// any page that asks a place: the citizens' portal today. window.HotlinePinMap(element,
// {grids, tiles, icons, onPin(lat, lon), onClear()}) -> {clear(), setPin(lat, lon)}.
// The grids come as GeoJSON in the map's datum (tickets.maps.grids). Nothing inline (CSP).
"use strict";
(function () {
  window.HotlinePinMap = function (element, options) {
    if (typeof L === "undefined" || !element) return null;
    L.Icon.Default.imagePath = options.icons;
    const map = L.map(element, {zoomSnap: 0.25}).setView([35, 105], 4);  // China until grids come
    if (options.tiles) L.tileLayer(options.tiles, {maxZoom: 19}).addTo(map);
    let pin = null;
    function setPin(lat, lon) {
      if (pin) pin.setLatLng([lat, lon]); else pin = L.marker([lat, lon]).addTo(map);
      if (options.onPin) options.onPin(Math.round(lat * 1e6) / 1e6, Math.round(lon * 1e6) / 1e6);
    }
    fetch(options.grids, {credentials: "same-origin", headers: {Accept: "application/json"}})
      .then((reply) => reply.ok ? reply.json() : null)
      .then((body) => {
        if (!body || !Array.isArray(body.features) || !body.features.length) return;
        const layer = L.geoJSON(body, {
          style: (f) => ({className: "pin-grid pin-grid-" + f.properties.code,
                          weight: 1, fillOpacity: 0.08}),
        }).addTo(map);
        layer.on("click", (e) => setPin(e.latlng.lat, e.latlng.lng));
        map.fitBounds(layer.getBounds(), {padding: [10, 10]});
        element.dataset.gridsShown = String(body.features.length);
      })
      .catch(() => {});
    map.on("click", (e) => setPin(e.latlng.lat, e.latlng.lng));
    return {
      map: map,
      setPin: setPin,
      clear: function () { if (pin) { pin.remove(); pin = null; } if (options.onClear) options.onClear(); },
    };
  };
})();
