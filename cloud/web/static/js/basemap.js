// The basemap. An offline world map is always drawn first (Natural Earth countries from
// world-atlas, the larger GeoNames cities), so the map is never a blank canvas. Above it,
// when configured: OpenStreetMap's raster tiles (dropped after repeated load errors, e.g.
// on an air-gapped site) and a self-hosted PMTiles archive (raster or vector).
(function () {
  'use strict';
  var EW = window.EW = window.EW || {};
  var TILE_ERRORS_BEFORE_GIVING_UP = 6;

  function attributionText(text) {
    // Leaflet puts attributions in as HTML; ours are settings, shown as text.
    var span = document.createElement('span');
    span.textContent = text;
    return span.innerHTML;
  }

  function countries(map, url) {
    map.createPane('ew-basemap').style.zIndex = 150;
    return EW.getJSON(url).then(function (topo) {
      var land = topojson.feature(topo, topo.objects.countries);
      var borders = topojson.mesh(topo, topo.objects.countries, function (a, b) { return a !== b; });
      var layer = L.layerGroup([
        L.geoJSON(land, {pane: 'ew-basemap', interactive: false, className: 'ew-land',
          style: {color: '#a9a293', weight: 0.6, fillColor: '#f3f1ea', fillOpacity: 1}}),
        L.geoJSON(borders, {pane: 'ew-basemap', interactive: false, className: 'ew-border',
          style: {color: '#b7ad9c', weight: 0.8, dashArray: '3 2', fill: false}})
      ]);
      layer.addTo(map);
      return layer;
    });
  }

  function cities(map, url) {
    map.createPane('ew-cities').style.zIndex = 160;
    return EW.getJSON(url).then(function (rows) {
      var layer = L.layerGroup();
      rows.forEach(function (c, i) {
        var tier = i < 60 ? 'ew-pop1' : (i < 400 ? 'ew-pop2' : 'ew-pop3');
        var m = L.circleMarker([c[1], c[2]], {pane: 'ew-cities', radius: 2, weight: 1,
          color: '#666', fillColor: '#888', fillOpacity: 1, interactive: false,
          className: 'ew-city ' + tier});
        m.bindTooltip(String(c[0]), {permanent: true, direction: 'right', offset: [3, 0],
          className: 'ew-city ' + tier, pane: 'ew-cities'});
        layer.addLayer(m);
      });
      layer.addTo(map);
      function zoomClass() {
        var z = map.getZoom(), el = map.getContainer();
        el.classList.toggle('ew-z3', z >= 3);
        el.classList.toggle('ew-z5', z >= 5);
        el.classList.toggle('ew-z7', z >= 7);
      }
      map.on('zoomend', zoomClass);
      zoomClass();
      return layer;
    });
  }

  // One probe tile first: offline, that is one failed request instead of a screenful.
  function osm(map, cfg, overlays) {
    var probe = new Image();
    probe.onload = function () { overlays['online map'] = onlineTiles(map, cfg); };
    probe.onerror = function () { console.info('online tiles unreachable; showing the offline basemap'); };
    probe.src = L.Util.template(cfg.tile_url, {s: 'a', z: 0, x: 0, y: 0, r: ''});
  }

  function onlineTiles(map, cfg) {
    var errors = 0;
    var layer = L.tileLayer(cfg.tile_url, {maxZoom: 19,
      attribution: attributionText(cfg.tile_attribution)});
    layer.on('tileerror', function () {
      errors += 1;
      if (errors === TILE_ERRORS_BEFORE_GIVING_UP && map.hasLayer(layer)) {
        map.removeLayer(layer);  // offline: the Natural Earth map underneath stays
        console.info('online tiles unreachable; showing the offline basemap');
      }
    });
    layer.on('tileload', function () { errors = 0; });
    layer.addTo(map);
    return layer;
  }

  function localTiles(map, cfg) {
    var archive = new pmtiles.PMTiles(cfg.pmtiles);
    return archive.getHeader().then(function (header) {
      var attribution = attributionText(cfg.pmtiles_attribution);
      var layer;
      if (header.tileType === pmtiles.TileType.Mvt) {
        layer = protomapsL.leafletLayer({url: cfg.pmtiles, flavor: 'light', attribution: attribution,
          maxDataZoom: header.maxZoom});
      } else {
        layer = pmtiles.leafletRasterLayer(archive, {attribution: attribution,
          maxNativeZoom: header.maxZoom, maxZoom: 19, className: 'ew-pmtiles'});
      }
      layer.addTo(map);
      return layer;
    });
  }

  // Returns the overlays for the layer control once each has loaded (or failed).
  EW.basemap = function (map, cfg) {
    var overlays = {};
    var waits = [
      countries(map, cfg.countries).then(function (l) { overlays['countries'] = l; }),
      cities(map, cfg.cities).then(function (l) { overlays['cities'] = l; })
    ];
    if (cfg.tile_url) osm(map, cfg, overlays);
    if (cfg.pmtiles) {
      waits.push(localTiles(map, cfg).then(function (l) { overlays['local tiles'] = l; }));
    }
    return Promise.all(waits.map(function (p) {
      return p.catch(function (err) { console.warn('basemap layer failed', err); });
    })).then(function () { return overlays; });
  };
})();
