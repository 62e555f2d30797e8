#!/usr/bin/env bash
# Installs everything needed to build, test, benchmark and package pgsidecar on Debian 12.
# Skips apt entirely when every package is already installed, so reruns are fast.
# Also installs the real drivers that tests/integration/drivers_test.cpp runs
# (psycopg, PostgreSQL JDBC, node-postgres into tests/clients/node_modules).
#   scripts/deps.sh --daemon    only what building the daemon (-DPGSIDECAR_TESTS=OFF)
#                               and the demo's PostgreSQL need (scripts/demo.sh)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

daemon_packages=(
  build-essential cmake pkg-config
  libuv1-dev libpq-dev libyaml-cpp-dev libssl-dev
  prometheus-cpp-dev nlohmann-json3-dev zlib1g-dev libpg-query-dev libzstd-dev
  postgresql
)
packages=(
  build-essential cmake pkg-config
  libuv1-dev libpq-dev libyaml-cpp-dev libssl-dev
  libgtest-dev libgmock-dev
  systemd postgresql postgresql-contrib pgbouncer
  python3 procps iproute2 curl
  python3-psycopg libpostgresql-jdbc-java
  prometheus-cpp-dev prometheus
  nlohmann-json3-dev zlib1g-dev
  libpg-query-dev libzstd-dev redis-server
  valgrind debhelper go-md2man jq
)
daemon_only=0
if [[ "${1:-}" == --daemon ]]; then
  daemon_only=1
  packages=("${daemon_packages[@]}")
elif (($#)); then
  echo "deps.sh: unknown argument $1 (only --daemon)" >&2
  exit 2
else
  # A JDK (java runs JdbcPrepared.java as a source file) and Node, unless already there.
  command -v javac >/dev/null || packages+=(default-jdk-headless)
  command -v node >/dev/null || packages+=(nodejs)
  command -v npm >/dev/null || packages+=(npm)
fi

missing=()
for p in "${packages[@]}"; do
  status="$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)"
  [[ "$status" == installed ]] || missing+=("$p")
done

# node-postgres for tests/clients, from its package-lock.json; redone only when that changes.
install_node_clients() {
  local dir="$root/tests/clients" stamp
  stamp="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
  [[ "$(cat "$dir/node_modules/.deps-stamp" 2>/dev/null)" == "$stamp" ]] && return 0
  echo "deps.sh: npm ci in tests/clients"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$stamp" >"$dir/node_modules/.deps-stamp"
}

if ((${#missing[@]} == 0)); then
  ((daemon_only)) || install_node_clients
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

((daemon_only)) || install_node_clients
