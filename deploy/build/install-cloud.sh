#!/usr/bin/env bash
# Install the cloud services (ingest, second opinion, web) into a virtualenv, with the
# web's Leaflet assets fetched from the npm registry. Used by deploy/Dockerfile.cloud and
# by CI in a fresh virtualenv.
#   usage: install-cloud.sh SOURCE_DIR VENV_DIR
set -euo pipefail
src="$(cd "${1:?source directory}" && pwd)"
venv="${2:?virtualenv directory}"
"$src/cloud/web/assets/install.sh"
python3 -m venv "$venv"
"$venv/bin/pip" install --no-cache-dir -q --upgrade pip
"$venv/bin/pip" install --no-cache-dir -q "$src[cloud,s3]"
"$venv/bin/earwitness" --version
"$venv/bin/python" -I -c "import earwitness.cloud.web.app, earwitness.cloud.ingest.consumer, earwitness.cloud.secondopinion.worker"
# One import namespace: the wheel installs no top-level package but `earwitness`.
"$venv/bin/python" -I - <<'PY'
from importlib.metadata import distribution
files = distribution("earwitness").files or []
tops = {f.parts[0] for f in files if f.parts[0] not in ("..",) and not f.parts[0].endswith(".dist-info")}
assert tops == {"earwitness"}, f"unexpected top-level packages: {sorted(tops)}"
PY
"$venv/bin/python" -I - <<'PY'
from pathlib import Path
import earwitness.cloud.web.app as app
assert (Path(app.__file__).parent / "static/vendor/leaflet/leaflet.js").is_file(), "assets missing"
PY
