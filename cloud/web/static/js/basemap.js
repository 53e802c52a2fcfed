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

  // Leaflet turns every point of a layer into objects and projects it again at each zoom,
  // whether it is on screen or not: 1:50m countries are ~100,000 points. So only what is
  // near the view is built, and more is added as the view moves (nothing is removed).
  var VIEW_PAD = 0.5;  // build what lies within half a screen of the view
  var DETAIL_ZOOM = 4;  // 1:110m below this zoom, 1:50m from it (Natural Earth's own scales)
  var CITY_TIERS = [[3, 60], [5, 400], [7, Infinity]];  // from zoom z, the largest n cities

  function boundsOf(coords) {  // any GeoJSON coordinate nesting -> [[s, w], [n, e]]
    var s = 90, w = 180, n = -90, e = -180;
    (function walk(c) {
      if (typeof c[0] === 'number') {
        if (c[1] < s) s = c[1];
        if (c[1] > n) n = c[1];
        if (c[0] < w) w = c[0];
        if (c[0] > e) e = c[0];
      } else {
        for (var i = 0; i < c.length; i++) walk(c[i]);
      }
    })(coords);
    return L.latLngBounds([s, w], [n, e]);
  }

  // Natural Earth rings that cross the antimeridian jump from 180 to -180; drawn on a flat
  // map, that jump is a stripe across the world. Continuous longitudes (beyond 180) draw
  // the ring whole. A ring around a pole (Antarctica) crosses once and stays as it is.
  function unwrap(ring) {
    var out = [ring[0]], shift = 0;
    for (var i = 1; i < ring.length; i++) {
      var lon = ring[i][0] + shift, prev = out[i - 1][0];
      if (lon - prev > 180) { shift -= 360; lon -= 360; }
      else if (lon - prev < -180) { shift += 360; lon += 360; }
      out.push([lon, ring[i][1]]);
    }
    return shift === 0 || !closed(ring) ? out : ring;
  }
  function closed(ring) {
    var a = ring[0], b = ring[ring.length - 1];
    return a[0] === b[0] && a[1] === b[1];
  }
  function unwrapGeometry(g) {
    if (g.type === 'Polygon') g.coordinates = g.coordinates.map(unwrap);
    else if (g.type === 'MultiPolygon') g.coordinates = g.coordinates.map(function (p) { return p.map(unwrap); });
    return g;
  }

  function countryLevel(topo) {
    var land = topojson.feature(topo, topo.objects.countries).features.map(function (f) {
      if (f.geometry) unwrapGeometry(f.geometry);
      return {geo: f, bounds: boundsOf(f.geometry ? f.geometry.coordinates : [0, 0])};
    });
    var mesh = topojson.mesh(topo, topo.objects.countries, function (a, b) { return a !== b; });
    var borders = mesh.coordinates.map(function (line) {
      line = unwrap(line);
      return {geo: {type: 'LineString', coordinates: line}, bounds: boundsOf(line)};
    });
    return {land: land, borders: borders};
  }

  // Adds to `group`, as one layer per call, the items near the view not yet added.
  function addInView(map, group, items, build) {
    var view = map.getBounds().pad(VIEW_PAD), fresh = [];
    items.forEach(function (item) {
      if (!item.added && view.intersects(item.bounds)) { item.added = true; fresh.push(item); }
    });
    if (fresh.length) group.addLayer(build(fresh.map(function (item) { return item.geo; })));
  }

  // The coarse level (1:110m, ~10,000 points) is drawn first, whatever the zoom: the map
  // is whole at once. From DETAIL_ZOOM the 1:50m level replaces it once built (the mark
  // ew-basemap-detail). Each level keeps its own layers, so zooming back is instant.
  function countries(map, cfg, painted) {
    map.createPane('ew-basemap').style.zIndex = 150;
    var group = L.layerGroup();
    var levels = {}, loading = {}, shown = null;
    var urls = {coarse: cfg.countries, fine: cfg.countries_detail || cfg.countries};
    function build(kind) {
      return function (geos) {
        return kind === 'land'
          ? L.geoJSON({type: 'FeatureCollection', features: geos}, {pane: 'ew-basemap',
            interactive: false, className: 'ew-land',
            style: {color: '#a9a293', weight: 0.6, fillColor: '#f3f1ea', fillOpacity: 1}})
          : L.geoJSON({type: 'GeometryCollection', geometries: geos}, {pane: 'ew-basemap',
            interactive: false, className: 'ew-border',
            style: {color: '#b7ad9c', weight: 0.8, dashArray: '3 2', fill: false}});
      };
    }
    function load(name) {
      loading[name] = loading[name] || EW.getJSON(urls[name]).then(function (topo) {
        levels[name] = countryLevel(topo);
        levels[name].group = L.layerGroup();
      });
      return loading[name];
    }
    function show(name) {  // add what came into view, and make `name` the level shown
      var level = levels[name];
      addInView(map, level.group, level.land, build('land'));
      addInView(map, level.group, level.borders, build('borders'));
      if (shown === name) return;
      if (shown) group.removeLayer(levels[shown].group);
      group.addLayer(level.group);
      shown = name;
      if (name === 'fine') EW.afterPaint().then(function () { performance.mark('ew-basemap-detail'); });
    }
    function update() {
      var want = map.getZoom() >= DETAIL_ZOOM ? 'fine' : 'coarse';
      if (levels[want]) show(want);
      else load(want).then(update);  // meanwhile the level shown stays
      if (want !== shown) show(shown);  // it may need what came into view
    }
    return Promise.all([load('coarse'), painted]).then(function () {
      show('coarse');
      group.addTo(map);
      map.on('moveend', update);
      // The detail after the coarse map is painted, never in its way.
      if (map.getZoom() >= DETAIL_ZOOM) EW.afterPaint().then(update);
      return group;
    });
  }

  function cities(map, url, painted) {
    map.createPane('ew-cities').style.zIndex = 160;
    return Promise.all([EW.getJSON(url), painted]).then(function (got) {
      var items = got[0].map(function (c, i) {  // [name, lat, lon, population], largest first
        var tier = i < CITY_TIERS[0][1] ? 'ew-pop1' : (i < CITY_TIERS[1][1] ? 'ew-pop2' : 'ew-pop3');
        return {geo: {name: String(c[0]), at: [c[1], c[2]], tier: tier},
          bounds: L.latLngBounds([c[1], c[2]], [c[1], c[2]])};
      });
      var layer = L.layerGroup();
      function shownAt(z) {  // how many of the largest cities this zoom shows
        var n = 0;
        CITY_TIERS.forEach(function (t) { if (z >= t[0]) n = t[1]; });
        return n;
      }
      function update() {
        addInView(map, layer, items.slice(0, shownAt(map.getZoom())), function (picked) {
          return L.layerGroup(picked.map(function (c) {
            var m = L.circleMarker(c.at, {pane: 'ew-cities', radius: 2, weight: 1,
              color: '#666', fillColor: '#888', fillOpacity: 1, interactive: false,
              className: 'ew-city ' + c.tier});
            m.bindTooltip(c.name, {permanent: true, direction: 'right', offset: [3, 0],
              className: 'ew-city ' + c.tier, pane: 'ew-cities'});
            return m;
          }));
        });
      }
      layer.addTo(map);
      function zoomClass() {
        var z = map.getZoom(), el = map.getContainer();
        el.classList.toggle('ew-z3', z >= 3);
        el.classList.toggle('ew-z5', z >= 5);
        el.classList.toggle('ew-z7', z >= 7);
      }
      map.on('zoomend', zoomClass);
      map.on('moveend', update);
      zoomClass();
      update();
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
    var archive;
    return EW.loadScripts(EW.VENDOR.pmtiles).then(function () {
      archive = new pmtiles.PMTiles(cfg.pmtiles);
      return archive.getHeader();
    }).then(function (header) {
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

  // Returns the overlays for the layer control once each has loaded (or failed). The
  // vector layers are drawn once `painted` resolves (after the page's own markers).
  EW.basemap = function (map, cfg, painted) {
    var overlays = {};
    painted = painted || Promise.resolve();
    var waits = [
      countries(map, cfg, painted).then(function (l) { overlays['countries'] = l; }),
      cities(map, cfg.cities, painted).then(function (l) { overlays['cities'] = l; })
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
