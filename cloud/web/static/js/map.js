// The map's layers, built from the page's JSON data block (#ew-map-data). Every string
// that came from a device (ids, names, labels, groups) is shown through textContent,
// never as HTML: a label like <img onerror=...> or ${...} is just text here.
(function () {
  'use strict';

  function text(value) {
    var span = document.createElement('span');
    span.textContent = String(value);
    return span;
  }

  function start() {
    var data = JSON.parse(document.getElementById('ew-map-data').textContent);
    var map = window[data.map];
    var colors = data.colors;
    function colorOf(group) {
      return Object.prototype.hasOwnProperty.call(colors, group) ? colors[group] : data.other;
    }

    // Devices: one circle each, above the detections, with a popup fetched when opened.
    map.createPane('ew-devices').style.zIndex = 650;
    var devices = L.layerGroup();
    data.devices.forEach(function (r) {
      var m = L.circleMarker([r[0], r[1]], {radius: 9, color: '#222', weight: 1, fill: true,
        fillColor: r[2], fillOpacity: 0.9, pane: 'ew-devices',
        className: 'ew-device ew-device-' + r[3]});  // ids match [A-Za-z0-9_.-]+
      m.bindTooltip(text(r[4]));
      var loading = document.createElement('i');
      loading.textContent = 'loading ' + r[4];
      m.bindPopup(loading, {maxWidth: 460});
      m.on('popupopen', function (e) {
        fetch('/devices/' + encodeURIComponent(r[3]) + '/popup', {credentials: 'same-origin'})
          .then(function (resp) { return resp.ok ? resp.text() : null; })
          .then(function (html) {
            // The popup is the server's own template (autoescaped); on error, plain text.
            e.popup.setContent(html === null ? text('could not load') : html);
          });
      });
      devices.addLayer(m);
    });

    // Detections: one marker per (device, place, group) carrying a count; clusters add
    // their markers' counts.
    var cluster = L.markerClusterGroup({
      iconCreateFunction: function (c) {
        var n = 0;
        c.getAllChildMarkers().forEach(function (m) { n += m.options.count || 1; });
        var size = n < 100 ? 'small' : (n < 1000 ? 'medium' : 'large');
        var icon = document.createElement('div');
        icon.appendChild(text(n));
        return L.divIcon({html: icon, className: 'marker-cluster marker-cluster-' + size,
          iconSize: L.point(40, 40)});
      }
    });
    function detection(lat, lon, count, group, label) {
      var m = L.circleMarker([lat, lon], {radius: 4 + Math.min(8, Math.log10(count) * 3),
        color: colorOf(group), count: count});
      m.bindTooltip(text(label));
      return m;
    }
    data.spots.forEach(function (s) {
      cluster.addLayer(detection(s[0], s[1], s[2], s[3],
        s[2] + ' ' + s[3] + ' (max ' + Number(s[4]).toFixed(2) + ')'));
    });

    var heat = L.heatLayer(data.heat, {radius: 18});

    var events = L.layerGroup();
    data.events.forEach(function (ev) {
      var ring = L.circleMarker([ev[0], ev[1]], {radius: 14, color: colorOf(ev[2]),
        fill: false, weight: 2});
      ring.bindTooltip(text(ev[2] + ' ' + Number(ev[3]).toFixed(1) + 's peak '
        + Number(ev[4]).toFixed(2)));
      events.addLayer(ring);
    });

    devices.addTo(map);
    cluster.addTo(map);
    L.control.layers({}, {devices: devices, detections: cluster, heatmap: heat, events: events},
      {collapsed: false}).addTo(map);

    // Live: detections newer than the page, every few seconds.
    var lastId = data.live.after_id, added = 0;
    var liveCount = document.getElementById('ew-live');
    function poll() {
      var url = '/api/v1/map/updates?after_id=' + lastId + (data.live.query ? '&' + data.live.query : '');
      fetch(url, {credentials: 'same-origin'})
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (updates) {
          if (!updates) return;
          updates.items.forEach(function (d) {
            cluster.addLayer(detection(d.lat, d.lon, 1, d.group,
              d.label + ' ' + Number(d.score).toFixed(2)));
            added += 1;
          });
          lastId = updates.last_id;
          liveCount.textContent = String(added);
        })
        .catch(function (err) { console.warn('live update failed', err); });
    }
    setInterval(poll, data.live.poll_ms);
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
})();
