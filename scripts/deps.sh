#!/usr/bin/env bash
# Installs everything needed to build, test and benchmark pgsidecar on Debian 12.
# Skips apt entirely when every package is already installed, so reruns are fast.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libuv1-dev libpq-dev libyaml-cpp-dev libssl-dev
  libgtest-dev libgmock-dev
  systemd postgresql postgresql-contrib pgbouncer
  python3 procps iproute2
)

missing=()
for p in "${packages[@]}"; do
  status="$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)"
  [[ "$status" == installed ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  exit 0
fi

if ((EUID != 0)); then
  echo "deps.sh: missing packages: ${missing[*]}; rerun as root" >&2
  exit 1
fi

echo "deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null

# Installing postgresql creates and may start a "main" cluster; we only use
# throwaway clusters under /tmp, so keep the fresh one from holding port 5432.
if [[ " ${missing[*]} " == *" postgresql "* ]] && command -v pg_ctlcluster >/dev/null; then
  pg_ctlcluster 15 main stop 2>/dev/null || true
fi
