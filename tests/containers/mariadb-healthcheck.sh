#!/bin/bash
# Stand-in for the official image's healthcheck.sh: `--connect` (the server answers on
# TCP), `--innodb_initialized` (InnoDB is up) and `--galera_online` (a Galera node that is
# synced with its cluster: wsrep_local_state 4); other options are not needed here.
set -euo pipefail
q() { mariadb -h127.0.0.1 -uroot -p"${MARIADB_ROOT_PASSWORD:?}" -N -e "$1"; }
for arg in "${@:---connect}"; do
  case "$arg" in
    --connect) [ "$(q 'SELECT 1')" = 1 ] ;;
    --innodb_initialized)
      [ "$(q "SELECT 1 FROM information_schema.ENGINES WHERE ENGINE='InnoDB' AND SUPPORT IN ('YES','DEFAULT')")" = 1 ] ;;
    --galera_online)
      [ "$(q "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME='WSREP_LOCAL_STATE'")" = 4 ] ;;
    *) echo "healthcheck.sh stand-in: unsupported option $arg" >&2; exit 2 ;;
  esac
done
