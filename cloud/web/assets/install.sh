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
mkdir -p "$out/leaflet" "$out/markercluster" "$out/heat" "$out/jquery" "$out/swagger" "$out/redoc"
cp node_modules/jquery/dist/jquery.min.js "$out/jquery/"
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
echo "web assets installed in $out"
