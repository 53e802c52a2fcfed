#!/usr/bin/env bash
# Add (or revoke) a device or a service on the broker: its user in the listener's password
# file and, for a device, its own block in devices.acl (its site and id, nothing else).
# The generated password is shown once: on the terminal, or in --out FILE (mode 0600).
#
#   deploy/onboard-device.sh --broker-dir deploy/secrets/broker --site vienna jetson-01
#   deploy/onboard-device.sh --broker-dir deploy/secrets/broker --site vienna --out jetson-01.cred jetson-01
#   deploy/onboard-device.sh --broker-dir deploy/secrets/broker --revoke jetson-01
#   deploy/onboard-device.sh --broker-dir deploy/secrets/broker --service ingest
#
# --broker-dir holds devices.passwd, devices.acl, services.passwd and services.acl (the
# last two start as copies of deploy/mosquitto/). With --k8s-secret NAME it also prints a
# kubectl command that stores the device's credential in a Secret of its own (mounted only
# by that device's pod, see docs/deploy.md). Reload the broker afterwards (kill -HUP).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
usage() {
  echo "usage: $0 --broker-dir DIR (--site SITE DEVICE | --revoke DEVICE | --service NAME) [--out FILE] [--k8s-secret NAME] [--namespace NS]" >&2
  exit 2
}
dir="" site="" out="" secret="" namespace="earwitness-edge" revoke=0 service="" name=""
while [ $# -gt 0 ]; do
  case "$1" in
    --broker-dir) dir="$2"; shift 2 ;;
    --site) site="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --k8s-secret) secret="$2"; shift 2 ;;
    --namespace) namespace="$2"; shift 2 ;;
    --revoke) revoke=1; name="$2"; shift 2 ;;
    --service) service="$2"; name="$2"; shift 2 ;;
    -h|--help) usage ;;
    -*) echo "error: unknown option $1" >&2; usage ;;
    *) name="$1"; shift ;;
  esac
done
[ -n "$dir" ] && [ -n "$name" ] || usage
id_re='^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'
if ! [[ "$name" =~ $id_re ]]; then
  echo "error: '$name' must be 1-64 of A-Z a-z 0-9 _ . - (it becomes an MQTT topic level)" >&2
  exit 2
fi
command -v mosquitto_passwd >/dev/null || { echo "error: mosquitto_passwd not found (apt-get install mosquitto)" >&2; exit 1; }
mkdir -p "$dir"
chmod 700 "$dir"
# The password files hold only salted PBKDF2 hashes; they must be readable by the broker,
# which drops to its own user (uid 1883) after reading its config, so 0644 inside a 0700
# directory (bind-mounted file by file into the container).
for f in devices.passwd services.passwd; do
  [ -f "$dir/$f" ] || install -m 644 /dev/null "$dir/$f"
done
[ -f "$dir/devices.acl" ] || install -m 644 "$here/mosquitto/devices.acl" "$dir/devices.acl"
[ -f "$dir/services.acl" ] || install -m 644 "$here/mosquitto/services.acl" "$dir/services.acl"

remove_acl_block() {  # drop the "user NAME" block (up to the next blank line) from devices.acl
  awk -v u="user $1" '
    $0 == u {skip=1; next}
    skip && /^$/ {skip=0; next}
    !skip {print}' "$dir/devices.acl" > "$dir/devices.acl.tmp"
  mv "$dir/devices.acl.tmp" "$dir/devices.acl"
}

if [ "$revoke" = 1 ]; then
  mosquitto_passwd -D "$dir/devices.passwd" "$name" 2>/dev/null || true
  remove_acl_block "$name"
  echo "revoked device '$name': reload the broker (kill -HUP) and delete its Secret" >&2
  exit 0
fi

if [ -n "$service" ]; then
  case "$service" in
    ingest|config|health) ;;
    *) echo "error: services are ingest, config and health (deploy/mosquitto/services.acl)" >&2; exit 2 ;;
  esac
  file="$dir/services.passwd"
else
  [ -n "$site" ] || { echo "error: a device needs --site (its ACL names the site)" >&2; exit 2; }
  if ! [[ "$site" =~ $id_re ]]; then
    echo "error: site '$site' must be 1-64 of A-Z a-z 0-9 _ . -" >&2
    exit 2
  fi
  # Service names are reserved: on the device listener the client id is the username, and
  # a device named like a service's client id could otherwise take over its session.
  case "$name" in
    ingest*|config*|health*|earwitness*) echo "error: '$name' is reserved for services" >&2; exit 2 ;;
  esac
  file="$dir/devices.passwd"
fi

password="$(head -c 32 /dev/urandom | base64 | tr -d '/+=\n' | head -c 32)"
mosquitto_passwd -b "$file" "$name" "$password"
chmod 644 "$file"
if [ -z "$service" ]; then
  remove_acl_block "$name"
  {
    echo "user $name"
    for kind in inference event clip heartbeat status; do
      echo "topic write earwitness/v1/$site/$name/$kind"
    done
    echo "topic read earwitness/v1/$site/$name/ack"
    echo "topic read earwitness/v1/$site/$name/config"
    echo
  } >> "$dir/devices.acl"
fi
kind="device"; [ -n "$service" ] && kind="service"
echo "created MQTT $kind user '$name' in $file; reload the broker (kill -HUP)" >&2

if [ -n "$out" ]; then
  umask 077
  printf 'username=%s\npassword=%s\n' "$name" "$password" > "$out"
  chmod 600 "$out"
  echo "credential written to $out (mode 0600): the only copy" >&2
else
  echo "username: $name"
  echo "password: $password"
  echo "(shown once: store it now)" >&2
fi
if [ -n "$secret" ] && [ -z "$service" ]; then
  cat >&2 <<MSG
store it in the device's own Secret (only that device's pod mounts it):
  kubectl -n $namespace create secret generic $secret \\
    --from-literal=username=$name --from-literal=password='<the password above>'
MSG
fi
