#!/usr/bin/env bash
# Checks systemd/pgsidecar.service with `systemd-analyze verify`.
# verify insists that ExecStart's binary exists, and we do not install into
# /usr/bin here: the unit is copied into a temp dir with /usr/bin/pgsidecar
# rewritten to the built binary (arg 1, default build/app/pgsidecar).
set -euo pipefail
cd "$(dirname "$0")/.."

bin="$(realpath -m "${1:-build/app/pgsidecar}")"
if [[ ! -x "$bin" ]]; then
  echo "verify.sh: $bin is missing; build first (or pass the binary as arg 1)" >&2
  exit 1
fi
command -v systemd-analyze >/dev/null || { echo "verify.sh: systemd-analyze not found" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
sed "s|/usr/bin/pgsidecar|$bin|g" systemd/pgsidecar.service >"$tmp/pgsidecar.service"

# verify prints warnings on stderr but only some make it exit non-zero; treat any
# line that mentions our unit as a failure so hardening typos do not slip through.
out="$(systemd-analyze verify --man=no "$tmp/pgsidecar.service" 2>&1)" || { echo "$out" >&2; exit 1; }
if grep -q 'pgsidecar.service' <<<"$out"; then
  echo "$out" >&2
  exit 1
fi
[[ -n "$out" ]] && echo "$out"
echo "systemd/pgsidecar.service: verify OK"
