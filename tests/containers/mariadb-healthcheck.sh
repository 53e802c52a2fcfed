#!/bin/bash
# Stand-in for the official image's healthcheck.sh: `--connect` (the server answers on
# TCP) and `--innodb_initialized` (InnoDB is up); other options are not needed here.
set -euo pipefail
query="SELECT 1"
for arg in "$@"; do
  case "$arg" in
    --innodb_initialized)
      query="SELECT 1 FROM information_schema.ENGINES WHERE ENGINE='InnoDB' AND SUPPORT IN ('YES','DEFAULT')" ;;
  esac
done
out="$(mariadb -h127.0.0.1 -uroot -p"${MARIADB_ROOT_PASSWORD:?}" -N -e "$query")"
[ "$out" = 1 ]
