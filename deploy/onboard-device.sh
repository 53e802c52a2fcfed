#!/usr/bin/env bash
# Onboard a device: create its MQTT user in the broker's password file (the ACL in
# deploy/mosquitto/acl already confines every user to its own topics) and print the
# patch for the Kubernetes Secret the edge DaemonSet mounts. The password is generated and
# appears only in that patch.
#
#   deploy/onboard-device.sh --passwd deploy/secrets/mosquitto.passwd jetson-01 > patch.json
#
# Also used for the service users: `ingest` and `admin`.
set -euo pipefail
usage() { echo "usage: $0 --passwd FILE [--namespace NS] DEVICE_ID" >&2; exit 2; }
passwd_file="" namespace="earwitness"
while [ $# -gt 0 ]; do
  case "$1" in
    --passwd) passwd_file="$2"; shift 2 ;;
    --namespace) namespace="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) device="$1"; shift ;;
  esac
done
[ -n "$passwd_file" ] && [ -n "${device:-}" ] || usage
if ! [[ "$device" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$ ]]; then
  echo "error: device id '$device' must be 1-64 of A-Z a-z 0-9 _ . - (it becomes an MQTT topic level)" >&2
  exit 2
fi
command -v mosquitto_passwd >/dev/null || { echo "error: mosquitto_passwd not found (apt-get install mosquitto)" >&2; exit 1; }
password="$(head -c 24 /dev/urandom | base64 | tr -d '/+=' | head -c 32)"
mkdir -p "$(dirname "$passwd_file")"
[ -f "$passwd_file" ] || install -m 600 /dev/null "$passwd_file"
mosquitto_passwd -b "$passwd_file" "$device" "$password"
echo "created MQTT user '$device' in $passwd_file" >&2
encoded="$(printf '%s' "$password" | base64 | tr -d '\n')"
# stdout: a JSON merge patch adding this device's key to the fleet's credentials Secret,
# which the edge DaemonSet mounts (each pod reads the key named after its node).
printf '{"data":{"%s":"%s"}}\n' "$device" "$encoded"
cat >&2 <<MSG
apply it with (create the Secret once first:
  kubectl -n ${namespace} create secret generic earwitness-device-credentials):
  kubectl -n ${namespace} patch secret earwitness-device-credentials --type merge -p "\$(cat patch.json)"
then reload the broker's password file (kill -HUP mosquitto, or restart its pod).
MSG
