#!/bin/bash
# Pod galera-0 with an empty data directory starts a new cluster; every other start joins
# the running one. After a full outage Galera refuses to bootstrap from a node that was
# not the last to leave (safe_to_bootstrap: 0): recover by hand (docs/deploy.md, "Galera").
set -euo pipefail
extra=()
if [[ "${HOSTNAME##*-}" == 0 && ! -d /var/lib/mysql/mysql ]]; then
  extra+=(--wsrep-new-cluster)
fi
exec docker-entrypoint.sh mariadbd \
  --wsrep_node_address="$(hostname -f)" \
  --wsrep_sst_auth="sst:${GALERA_SST_PASSWORD}" "${extra[@]}"
