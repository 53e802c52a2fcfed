#!/usr/bin/env bash
# A private CA and the broker's TLS certificate for the device listener (8883), with
# openssl. Devices trust the CA (mqtt.tls_ca_file); the CA key stays with the operator.
#
#   deploy/make-certs.sh --out deploy/secrets/certs --host broker.example.org [--host 10.0.0.5]
#
# Writes ca.crt, ca.key (0600), server.crt and server.key. Mosquitto reads its
# certificates after dropping to its own user (gid 1883 in the eclipse-mosquitto image), so
# the directory is 0755 and server.key is 0640 with group --broker-gid (run as root to set
# it; otherwise it is made 0644 with a warning). Re-running keeps an existing CA and issues
# a new server certificate (e.g. for a new host name).
set -euo pipefail
out="" hosts=() days=825 broker_gid=1883
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --host) hosts+=("$2"); shift 2 ;;
    --days) days="$2"; shift 2 ;;
    --broker-gid) broker_gid="$2"; shift 2 ;;
    *) echo "usage: $0 --out DIR --host NAME [--host NAME...] [--days N]" >&2; exit 2 ;;
  esac
done
[ -n "$out" ] && [ ${#hosts[@]} -gt 0 ] || { echo "usage: $0 --out DIR --host NAME [--host NAME...]" >&2; exit 2; }
command -v openssl >/dev/null || { echo "error: openssl not found" >&2; exit 1; }
mkdir -p "$out"
chmod 755 "$out"
umask 077
if [ ! -f "$out/ca.key" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=Earwitness MQTT CA" -keyout "$out/ca.key" -out "$out/ca.crt" 2>/dev/null
  echo "created CA $out/ca.crt" >&2
fi
san=""
for h in "${hosts[@]}"; do
  if [[ "$h" =~ ^[0-9.]+$ || "$h" == *:* ]]; then san+="IP:$h,"; else san+="DNS:$h,"; fi
done
san="${san%,}"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj "/CN=${hosts[0]}" -keyout "$out/server.key" -out "$out/server.csr" 2>/dev/null
openssl x509 -req -in "$out/server.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
  -CAcreateserial -days "$days" -out "$out/server.crt" \
  -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$san") 2>/dev/null
rm -f "$out/server.csr"
chmod 644 "$out/ca.crt" "$out/server.crt"
if chgrp "$broker_gid" "$out/server.key" 2>/dev/null; then
  chmod 640 "$out/server.key"
else
  chmod 644 "$out/server.key"
  echo "warning: could not give server.key to group $broker_gid (not root?): made it 0644" >&2
fi
echo "server certificate for $san: $out/server.crt (give devices $out/ca.crt)" >&2
