#!/bin/bash
# Runs once, when galera-1 initialises its data directory (docker-entrypoint-initdb.d):
# the user the other nodes' state transfers (mariabackup) log in as. Joiners receive it,
# with everything else, in their first state transfer.
set -euo pipefail
: "${GALERA_SST_PASSWORD:?set GALERA_SST_PASSWORD}"
mariadb -uroot -p"${MARIADB_ROOT_PASSWORD}" <<SQL
CREATE USER 'sst'@'localhost' IDENTIFIED BY '${GALERA_SST_PASSWORD}';
GRANT RELOAD, PROCESS, LOCK TABLES, BINLOG MONITOR ON *.* TO 'sst'@'localhost';
SQL
