#!/usr/bin/env bash
# Prepare a Jetson (or any Linux box) as an Earwitness device: install the k3s agent,
# join it to the cluster, label the node, and check the microphone.
#
#   sudo deploy/bootstrap-jetson.sh --server https://k3s.example:6443 --token <node-token> \
#        --credential jetson-01.cred --ca ca.crt [--no-mic-check]
#
# --credential is the file `deploy/onboard-device.sh --out` wrote for this device; it is
# installed as /etc/earwitness-device/mqtt-password (mode 0400, uid 10001) on this node
# only, so a stolen device holds no other device's password. --ca is the broker's CA
# (deploy/make-certs.sh).
set -euo pipefail
server="" token="" mic_check=1 credential="" ca=""
while [ $# -gt 0 ]; do
  case "$1" in
    --server) server="$2"; shift 2 ;;
    --token) token="$2"; shift 2 ;;
    --credential) credential="$2"; shift 2 ;;
    --ca) ca="$2"; shift 2 ;;
    --no-mic-check) mic_check=0; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$server" ] && [ -n "$token" ] && [ -n "$credential" ] && [ -n "$ca" ] || {
  echo "usage: $0 --server URL --token TOKEN --credential FILE --ca FILE" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "error: run as root (sudo)" >&2; exit 1; }
node="$(hostname)"
echo "device id will be the node name: $node"

if [ "$mic_check" -eq 1 ]; then
  command -v arecord >/dev/null || apt-get install -y alsa-utils
  if ! arecord -l | grep -q '^card'; then
    echo "error: no capture device found (arecord -l); plug in a microphone or use --no-mic-check" >&2
    exit 1
  fi
  tmp="$(mktemp --suffix .wav)"
  arecord -q -d 2 -f S16_LE -r 16000 -c 1 "$tmp"
  size=$(stat -c %s "$tmp"); rm -f "$tmp"
  [ "$size" -gt 60000 ] || { echo "error: recording from the microphone failed" >&2; exit 1; }
  echo "microphone OK"
fi

# k3s's installer script comes from the k3s project; review it before piping it to sh
# on production devices, or install the agent from your distribution's package.
curl -sfL https://get.k3s.io | K3S_URL="$server" K3S_TOKEN="$token" sh -s - agent \
  --node-label earwitness.io/device=true
mkdir -p /var/lib/earwitness /var/lib/earwitness-models
chown 10001:10001 /var/lib/earwitness /var/lib/earwitness-models
user="$(sed -n 's/^username=//p' "$credential")"
[ "$user" = "$node" ] || { echo "error: $credential is for '$user', this node is '$node'" >&2; exit 1; }
install -d -m 0500 -o 10001 -g 10001 /etc/earwitness-device
sed -n 's/^password=//p' "$credential" | install -m 0400 -o 10001 -g 10001 /dev/stdin /etc/earwitness-device/mqtt-password
install -m 0444 "$ca" /etc/earwitness-device/ca.crt
echo "credential installed in /etc/earwitness-device (this node only); delete $credential"
echo "node $node joined; add it to k8s/edge/overlays/jetson/devices.yaml (site, location)"
