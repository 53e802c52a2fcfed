#!/usr/bin/env bash
# Install the edge agent into a virtualenv: the core plus the edge and mic extras, no web
# stack. Used by deploy/Dockerfile.edge and run by CI in a fresh virtualenv, so a broken
# install step fails CI even without a Docker engine.
#   usage: install-edge.sh SOURCE_DIR VENV_DIR
set -euo pipefail
src="${1:?source directory}"
venv="${2:?virtualenv directory}"
python3 -m venv "$venv"
"$venv/bin/pip" install --no-cache-dir -q --upgrade pip
"$venv/bin/pip" install --no-cache-dir -q "$src[edge,mic]"
"$venv/bin/earwitness" --version
"$venv/bin/python" -I -c "import earwitness.edge.agent, earwitness.shared.runner"
# One import namespace: the wheel installs no top-level package but `earwitness`.
"$venv/bin/python" -I - <<'PY'
from importlib.metadata import distribution
files = distribution("earwitness").files or []
tops = {f.parts[0] for f in files if f.parts[0] not in ("..",) and not f.parts[0].endswith(".dist-info")}
assert tops == {"earwitness"}, f"unexpected top-level packages: {sorted(tops)}"
PY
# The device image must not carry the web stack.
if "$venv/bin/python" -I -c "import fastapi" 2>/dev/null; then
  echo "error: the edge image pulled in fastapi" >&2
  exit 1
fi
