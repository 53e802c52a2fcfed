// The map page: devices (coloured by the group they heard most, with their detection
// count), clusters coloured the same way, a heatmap, each device's latest event, alerts on
// top; live updates without a reload; a timeline to play the range back.
// Data comes from the page's JSON block (#ew-map-data) and the JSON API; every string
// from a device is shown through textContent (EW.el), never as HTML.
(function () {
  'use strict';
  var EW = window.EW;

  function start() {
    var data = JSON.parse(document.getElementById('ew-map-data').textContent);
    var map = window[data.map];
    document.body.classList.add('ew-map-page');
    EW.fitLayout();
    map.invalidateSize();
    window.addEventListener('resize', function () { map.invalidateSize(); });
    // The heavy part (devices' counts, events, alerts) comes from /map/data, which the head
    // preloads. The basemap waits for the devices: on a busy machine drawing it sooner
    // only slows the server's answer (measured, docs/benchmarks.md).
    EW.getJSON(data.data_url).then(function (more) {
      draw(map, Object.assign(data, more));
    }).catch(function (err) {
      var error = document.getElementById('ew-form-error');
      error.hidden = false;
      error.textContent = 'could not load the map data: ' + err.message;
    });
  }

  function draw(map, data) {
    document.getElementById('ew-count').textContent = String(data.total);
    data.devices.forEach(function (row) { row.counts = data.counts[row.id] || {}; });
    var colorOf = function (g) { return EW.colorOf(data.colors, data.other, g); };
    EW.page = {map: map, data: data, colorOf: colorOf};

    // Panes, bottom to top: basemap 150-160, tiles 200, heat 400, events 630, devices 640,
    // tooltips 650 (Leaflet's), alerts 700, popups 700+.
    map.createPane('ew-devices').style.zIndex = 640;
    map.createPane('ew-events').style.zIndex = 630;  // under devices: a long tag never hides one
    map.createPane('ew-alerts').style.zIndex = 700;

    // -- devices ------------------------------------------------------------------------
    var devices = {};  // id -> {row, marker, counts, shown}
    function dominant(counts) {
      var best = null, n = -1;
      Object.keys(counts).forEach(function (g) { if (counts[g] > n) { best = g; n = counts[g]; } });
      return best;
    }
    function total(counts) {
      return Object.keys(counts).reduce(function (s, g) { return s + counts[g]; }, 0);
    }
    function deviceIcon(dev, counts, quiet) {
      var n = total(counts), top = dominant(counts);
      var color = !dev.row.online ? data.offline : (top ? colorOf(top) : data.other);
      var size = Math.round(20 + Math.min(14, 4 * Math.log10(1 + n)));
      var cls = 'ew-dev' + (dev.row.online ? '' : ' ew-off') + (quiet ? ' ew-quiet' : '');
      var dot = EW.el('div', {'class': cls, style: {'--c': color}, 'data-color': color},
        [n ? EW.el('span', {'class': 'ew-dev-count', text: n > 9999 ? Math.round(n / 1000) + 'k' : n}) : null]);
      return L.divIcon({html: dot, iconSize: [size, size],
        className: 'ew-dev-icon ew-device ew-device-' + dev.row.id});  // ids: [A-Za-z0-9_.-]
    }
    var cluster = L.markerClusterGroup({
      maxClusterRadius: 45, disableClusteringAtZoom: 11, showCoverageOnHover: false,
      clusterPane: 'ew-devices',
      iconCreateFunction: function (c) {
        var counts = {}, online = 0, members = c.getAllChildMarkers();
        members.forEach(function (m) {
          var dev = devices[m.options.ewId];
          if (dev.row.online) online += 1;
          Object.keys(dev.shown).forEach(function (g) { counts[g] = (counts[g] || 0) + dev.shown[g]; });
        });
        var n = total(counts), top = dominant(counts);
        var color = top ? colorOf(top) : (online ? data.other : data.offline);
        var size = Math.round(30 + Math.min(20, 5 * Math.log10(1 + n)));
        var icon = EW.el('div', {'class': 'ew-cluster', style: {'--c': color},
          title: members.length + ' devices, ' + n + ' detections'},
          [EW.el('span', {text: n ? (n > 9999 ? Math.round(n / 1000) + 'k' : n) : members.length})]);
        return L.divIcon({html: icon, className: 'ew-cluster-icon', iconSize: L.point(size, size)});
      }
    });
    function addDevice(row) {
      if (row.lat === null || row.lon === null) return;
      var dev = {row: row, counts: row.counts || {}, shown: row.counts || {}};
      devices[row.id] = dev;
      dev.marker = L.marker([row.lat, row.lon], {icon: deviceIcon(dev, dev.counts),
        pane: 'ew-devices', ewId: row.id, riseOnHover: true});
      dev.marker.bindTooltip(EW.el('span', {text: row.name}), {direction: 'top', offset: [0, -10]});
      var loading = EW.el('i', {text: 'loading ' + row.name});
      dev.marker.bindPopup(loading, {maxWidth: 480, minWidth: 300, maxHeight: 460, autoPanPadding: [70, 70]});
      dev.marker.on('popupopen', function (e) {
        fetch('/devices/' + encodeURIComponent(row.id) + '/popup', {credentials: 'same-origin'})
          .then(function (resp) { return resp.ok ? resp.text() : null; })
          .then(function (html) {
            // The popup is the server's own template (autoescaped); on error, plain text.
            e.popup.setContent(html === null ? EW.el('span', {text: 'could not load'}) : html);
            EW.localizeTimes(e.popup.getElement());
          });
      });
      cluster.addLayer(dev.marker);
    }
    function redraw(dev, counts, quiet) {
      dev.shown = counts;
      dev.marker.setIcon(deviceIcon(dev, counts, quiet));
      cluster.refreshClusters(dev.marker);
    }
    data.devices.forEach(addDevice);
    cluster.addTo(map);
    if (data.devices.length) {  // start with every device in view
      map.fitBounds(cluster.getBounds(), {padding: [40, 40], maxZoom: 12, animate: false});
    }
    // The side panel and the timeline start their work after the devices are painted (the
    // marks are what bench/bench_web.py reads).
    var painted = EW.afterPaint().then(function () { performance.mark('ew-devices-drawn'); });
    var base = EW.basemap(map, data.basemap, painted);
    var basemapDrawn = base.then(EW.afterPaint).then(function () { performance.mark('ew-basemap-drawn'); });

    // -- heatmap, events, alerts ---------------------------------------------------------
    var heat = L.heatLayer(data.heat, {radius: 18});
    var eventTags = {};
    var eventsLayer = L.layerGroup();
    function tagEvent(ev) {
      var dev = devices[ev.device];
      if (!dev) return;
      var old = eventTags[ev.device];
      if (old) eventsLayer.removeLayer(old);
      var color = colorOf(ev.label);
      var tag = EW.el('div', {'class': 'ew-ev', style: {'--c': color}},
        [EW.el('span', {text: ev.label}), ev.count > 1 ? EW.el('b', {text: ' \u00d7' + ev.count}) : null]);
      var m = L.marker(dev.marker.getLatLng(), {pane: 'ew-events', interactive: true,
        icon: L.divIcon({html: tag, className: 'ew-ev-icon', iconSize: null, iconAnchor: [-14, 24]})});
      m.bindTooltip(EW.el('span', {text: 'latest event ' + ev.label + ' at ' + EW.localTime(ev.at, true) +
        ', peak ' + Number(ev.score).toFixed(2) + ' (' + ev.count + ' in range)'}));
      eventTags[ev.device] = m;
      eventsLayer.addLayer(m);
    }
    data.events.forEach(tagEvent);
    eventsLayer.addTo(map);
    EW.page.tagEvent = function (item) {
      var prev = eventTags[item.device_id];
      var count = prev ? (prev.ewCount || 1) : 0;
      if (item.phase === 'start') count += 1;
      tagEvent({device: item.device_id, label: item.label, at: item.at, score: item.score,
        count: Math.max(1, count)});
      if (eventTags[item.device_id]) eventTags[item.device_id].ewCount = Math.max(1, count);
    };
    data.events.forEach(function (ev) { if (eventTags[ev.device]) eventTags[ev.device].ewCount = ev.count; });

    // Alerts: one marker per place (upper left of the device), showing the newest alert
    // that still needs someone (open, then acknowledged, then any) and how many are open.
    var alertsById = {}, alertSpots = {};
    var alertsLayer = L.layerGroup().addTo(map);
    var RANK = {open: 0, acknowledged: 1, resolved: 2, false_alarm: 3};
    function alertIcon(a, open) {
      var icon = EW.el('div', {'class': 'ew-alert ew-state-' + a.state + ' ew-sev-' + a.severity,
        title: a.rule + ' (' + a.state + ')' + (open > 1 ? ', ' + open + ' open here' : '')},
        ['!', open > 1 ? EW.el('span', {'class': 'ew-alert-n', text: open}) : null]);
      return L.divIcon({html: icon, className: 'ew-alert-icon ew-alert-' + a.id, iconSize: [24, 24],
        iconAnchor: [30, 30]});
    }
    function placeAlert(a) {
      var where = (a.lat !== null && a.lon !== null) ? L.latLng(a.lat, a.lon)
        : (devices[a.device] ? devices[a.device].marker.getLatLng() : null);
      if (!where) return;
      alertsById[a.id] = a;
      var key = where.lat.toFixed(5) + ',' + where.lng.toFixed(5);
      var spot = alertSpots[key] = alertSpots[key] || {ids: {}, where: where};
      spot.ids[a.id] = true;
      var members = Object.keys(spot.ids).map(function (id) { return alertsById[id]; });
      members.sort(function (x, y) { return (RANK[x.state] - RANK[y.state]) || (y.id - x.id); });
      var top = members[0];
      var open = members.filter(function (x) { return x.state === 'open'; }).length;
      // The icon is rebuilt only when what it shows changes: the alert list refreshes every
      // few seconds, and replacing the element under a pointer would swallow that click.
      var look = top.id + '/' + top.state + '/' + top.severity + '/' + open;
      if (!spot.marker) {
        spot.marker = L.marker(where, {pane: 'ew-alerts', zIndexOffset: 1000, icon: alertIcon(top, open)});
        spot.marker.bindPopup(EW.el('i', {text: 'loading alert'}), {maxWidth: 480, minWidth: 320, maxHeight: 460, autoPanPadding: [70, 70]});
        spot.marker.on('popupopen', function (e) { EW.alertPopup(e.popup, spot.marker.ewAlertId); });
        alertsLayer.addLayer(spot.marker);
      } else if (spot.look !== look) {
        spot.marker.setIcon(alertIcon(top, open));
      }
      spot.look = look;
      spot.marker.ewAlertId = spot.marker.ewPinned || top.id;
      spot.key = key;
      a.spot = spot;
    }
    data.alerts.forEach(placeAlert);
    EW.page.placeAlert = placeAlert;
    EW.page.openAlert = function (id) {
      var a = alertsById[id];
      if (!a || !a.spot) return;
      var m = a.spot.marker;
      m.ewPinned = id;  // this alert, not the spot's newest
      m.ewAlertId = id;
      map.flyTo(m.getLatLng(), Math.max(map.getZoom(), 12), {duration: 0.6});
      setTimeout(function () { m.openPopup(); m.ewPinned = null; }, 650);
    };
    EW.page.focusDevice = function (id) {
      var dev = devices[id];
      if (!dev) return;
      cluster.zoomToShowLayer(dev.marker, function () { dev.marker.openPopup(); });
    };

    // The alert popup: evidence with clips (spectrogram and player), lifecycle buttons
    // for admin tokens only.
    EW.alertPopup = function (popup, id) {
      EW.getJSON('/api/v1/alerts/' + id).then(function (a) {
        var rows = a.evidence.map(function (ev) {
          var dev = devices[ev.device_id];
          var media = ev.clip_ids.map(function (cid) {
            return EW.el('div', {'class': 'ew-clip'}, [
              EW.el('img', {'class': 'ew-spectrogram', loading: 'lazy', alt: 'spectrogram of clip ' + cid,
                src: '/api/v1/clips/' + cid + '/spectrogram.png'}),
              EW.el('audio', {controls: true, preload: 'none', src: '/api/v1/clips/' + cid + '/audio'})]);
          });
          return EW.el('li', {}, [
            EW.el('b', {text: ev.label}), ' ' + Number(ev.score).toFixed(2) + ' at ',
            EW.timeEl(ev.at, true), ' on ', EW.el('span', {text: dev ? dev.row.name : ev.device_id})
          ].concat(media.length ? media : [EW.el('div', {'class': 'ew-empty', text: 'no clip of this event'})]));
        });
        var actions = EW.el('div', {'class': 'ew-actions'});
        if (data.can_write) {
          [['acknowledged', 'acknowledge'], ['resolved', 'resolve'], ['false_alarm', 'false alarm'],
            ['open', 'reopen']].forEach(function (s) {
            if (s[0] === a.state) return;
            actions.appendChild(EW.el('button', {type: 'button', 'class': 'ew-set-state',
              'data-state': s[0], text: s[1], onclick: function () {
                EW.postJSON('/api/v1/alerts/' + id + '/state', {state: s[0]}).then(function (updated) {
                  EW.alertChanged(updated);
                  EW.alertPopup(popup, id);
                }).catch(function (err) {
                  actions.appendChild(EW.el('span', {'class': 'ew-error', text: ' not saved (' + err.message + ')'}));
                });
              }}));
          });
        }
        popup.setContent(EW.el('div', {'class': 'ew-alert-popup'}, [
          EW.el('b', {text: a.rule}), ' ', EW.el('span', {'class': 'ew-pill ew-state-' + a.state, text: a.state}),
          ' ', EW.el('span', {'class': 'ew-pill', text: a.severity}),
          EW.el('div', {'class': 'ew-item-meta'}, ['started ', EW.timeEl(a.started_at, true),
            a.updated_by ? ' \u00b7 ' + a.state + ' by ' + a.updated_by : '']),
          EW.el('ol', {'class': 'ew-evidence'}, rows),
          actions]));
      }).catch(function (err) {
        popup.setContent(EW.el('span', {text: 'could not load alert: ' + err.message}));
      });
    };
    EW.alertChanged = function (a) {
      placeAlert({id: a.id, rule: a.rule, severity: a.severity, state: a.state, lat: a.lat,
        lon: a.lon, device: a.device_id, labels: a.labels, at: a.started_at});
      (EW.alertListeners || []).forEach(function (fn) { fn(a); });
    };

    base.then(function (overlays) {
      overlays = Object.assign({}, overlays, {devices: cluster, heatmap: heat, events: eventsLayer,
        alerts: alertsLayer});
      L.control.layers({}, overlays, {collapsed: true, position: 'topright'}).addTo(map);
      map.getContainer().dataset.basemap = 'ready';
    });

    // -- live ---------------------------------------------------------------------------
    var lastId = data.after_id, since = data.since, added = 0, playing = false;
    var liveCount = document.getElementById('ew-live');
    var totalCount = document.getElementById('ew-count');
    function poll() {
      var url = '/api/v1/map/updates?after_id=' + lastId + '&since=' + encodeURIComponent(since) +
        (data.live.query ? '&' + data.live.query : '');
      EW.getJSON(url).then(function (updates) {
        updates.devices.forEach(function (row) {
          var dev = devices[row.id];
          if (!dev) {
            addDevice({id: row.id, name: row.name || row.id, site: row.site, lat: row.lat,
              lon: row.lon, online: row.online, counts: {}});
            return;
          }
          var moved = row.lat !== null && (row.lat !== dev.row.lat || row.lon !== dev.row.lon);
          dev.row.online = row.online;
          dev.row.name = row.name || row.id;
          if (moved) { dev.row.lat = row.lat; dev.row.lon = row.lon; dev.marker.setLatLng([row.lat, row.lon]); }
          dev.marker.setTooltipContent(EW.el('span', {text: dev.row.name}));
          if (!playing) redraw(dev, dev.counts);
        });
        updates.items.forEach(function (d) {
          var dev = devices[d.device_id];
          if (dev) dev.counts[d.group] = (dev.counts[d.group] || 0) + 1;
          heat.addLatLng([d.lat, d.lon, 0.5]);
          added += 1;
        });
        if (!playing) {
          var touched = {};
          updates.items.forEach(function (d) { touched[d.device_id] = true; });
          Object.keys(touched).forEach(function (id) { if (devices[id]) redraw(devices[id], devices[id].counts); });
        }
        lastId = updates.last_id;
        since = updates.now;
        liveCount.textContent = String(added);
        if (totalCount && updates.items.length) {
          totalCount.textContent = String(Number(totalCount.textContent) + updates.items.length);
        }
      }).catch(function (err) { console.warn('live update failed', err.message); });
    }
    setInterval(poll, data.live.poll_ms);

    // -- timeline -----------------------------------------------------------------------
    var slider = document.getElementById('ew-slider');
    var label = document.getElementById('ew-slider-label');
    var play = document.getElementById('ew-play');
    var timeline = null, timer = null;
    // Playback needs per-device counts per bucket (the largest response of the page):
    // fetched once the map is drawn, not in its way.
    Promise.all([painted, basemapDrawn]).then(function () {
      return EW.getJSON('/api/v1/stats/activity?per_device=true&' + data.live.query + '&end=' +
        encodeURIComponent(data.range.end));
    }).then(function (t) {
      timeline = t;
      slider.max = String(t.buckets);
      slider.value = String(t.buckets);
    }).catch(function (err) { label.textContent = 'timeline unavailable'; console.warn(err.message); });
    function showBucket(b) {
      if (!timeline || b >= timeline.buckets) {
        playing = false;
        label.textContent = 'whole range';
        Object.keys(devices).forEach(function (id) { redraw(devices[id], devices[id].counts); });
        return;
      }
      playing = true;
      var from = new Date(new Date(timeline.start).getTime() + b * timeline.bucket_s * 1000);
      var to = new Date(from.getTime() + timeline.bucket_s * 1000);
      label.textContent = EW.localTime(from.toISOString(), true) + ' \u2013 ' + EW.localTime(to.toISOString());
      var per = {};
      timeline.cells.forEach(function (c) {
        if (c[2] !== b) return;
        per[c[0]] = per[c[0]] || {};
        per[c[0]][c[1]] = c[3];
      });
      Object.keys(devices).forEach(function (id) { redraw(devices[id], per[id] || {}, !per[id]); });
    }
    slider.addEventListener('input', function () { showBucket(Number(slider.value)); });
    play.addEventListener('click', function () {
      if (timer) { clearInterval(timer); timer = null; play.textContent = '\u25b6'; return; }
      if (!timeline) return;
      if (Number(slider.value) >= timeline.buckets) slider.value = '0';
      play.textContent = '\u275a\u275a';
      timer = setInterval(function () {
        var next = Number(slider.value) + 1;
        slider.value = String(next);
        showBucket(next);
        if (next >= timeline.buckets) { clearInterval(timer); timer = null; play.textContent = '\u25b6'; }
      }, 600);
      showBucket(Number(slider.value));
    });
    if (EW.startSide) painted.then(EW.startSide);
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
})();
