#!/bin/sh
# As the official image's entrypoint: own the data directory, then run the broker (which
# drops to the mosquitto user itself).
set -e
if [ "$(id -u)" = 0 ]; then chown -R mosquitto:mosquitto /mosquitto/data 2>/dev/null || true; fi
exec "$@"
