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
mkdir -p "$out/leaflet" "$out/markercluster" "$out/heat" "$out/jquery"
cp node_modules/jquery/dist/jquery.min.js "$out/jquery/"
cp -r node_modules/leaflet/dist/leaflet.js node_modules/leaflet/dist/leaflet.css \
      node_modules/leaflet/dist/images "$out/leaflet/"
cp node_modules/leaflet.markercluster/dist/leaflet.markercluster.js \
   node_modules/leaflet.markercluster/dist/MarkerCluster.css \
   node_modules/leaflet.markercluster/dist/MarkerCluster.Default.css "$out/markercluster/"
cp node_modules/leaflet.heat/dist/leaflet-heat.js "$out/heat/"
echo "web assets installed in $out"
