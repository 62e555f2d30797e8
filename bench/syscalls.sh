#!/usr/bin/env bash
# System calls per transaction of pgsidecar and PgBouncer, both in transaction mode
# with the same pool, under `strace -c -f` attached for one fixed pgbench run each
# (TXS transactions per client), on a throwaway PostgreSQL 15 cluster. strace slows
# the daemons down many times over, so this counts calls; it does not time them.
#
# Env: TXS (2000 per client), CLIENTS (16), MODES ("simple extended prepared"),
#      POOL_SIZE (20), PORT (25462: PostgreSQL; +1 PgBouncer; +2 pgsidecar),
#      TARGETS ("pgbouncer pgsidecar"), PGSIDECAR_BIN (build/app/pgsidecar),
#      PGBOUNCER_BIN (/tmp/pgbouncer-1.25/bin/pgbouncer if built, else Debian's),
#      BENCH_DIR (/tmp/pgsidecar-syscalls), JOBS (2).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
repo="$PWD"

txs="${TXS:-2000}"
clients="${CLIENTS:-16}"
modes="${MODES:-simple extended prepared}"
pool_size="${POOL_SIZE:-20}"
port="${PORT:-25462}"
jobs="${JOBS:-2}"
targets="${TARGETS:-pgbouncer pgsidecar}"
bin="${PGSIDECAR_BIN:-$repo/build/app/pgsidecar}"
pgbouncer_bin="${PGBOUNCER_BIN:-$(default_pgbouncer pgbouncer)}"
dir="${BENCH_DIR:-/tmp/pgsidecar-syscalls}"
pgdata="$dir/pgdata"
declare -A target_port=([pgbouncer]=$((port + 1)) [pgsidecar]=$((port + 2)))
declare -A target_pid=()

bench_init
command -v strace >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq strace >/dev/null; }
if has_target pgsidecar && [[ ! -x "$bin" ]]; then build_pgsidecar; fi

trap stop_targets EXIT
stop_targets
for t in $targets; do require_free_port "${target_port[$t]}" "$t"; done

echo "== PostgreSQL on 127.0.0.1:$port"
make_bench_dir "$dir/pgbouncer"
pg_start_cluster "-c max_connections=100 -c synchronous_commit=off"
pg_add_db bench SUPERUSER
pgbench -h 127.0.0.1 -p "$port" -U bench -i -s 1 -q bench 2>&1 | tail -1

if has_target pgbouncer; then
  start_pgbouncer "$pgbouncer_bin" "${target_port[pgbouncer]}" "$pool_size"
  target_pid[pgbouncer]="$(cat "$dir/pgbouncer/pgbouncer.pid")"
fi
if has_target pgsidecar; then
  write_sidecar_yaml "$dir/pgsidecar.yaml" "${target_port[pgsidecar]}" "$pool_size" ""
  setsid "$bin" -c "$dir/pgsidecar.yaml" 2>"$dir/pgsidecar.log" &  # a session of its own: see bench/lib.sh
  target_pid[pgsidecar]=$!
  wait_port "${target_port[pgsidecar]}"
fi

# Counts of one run: "name calls" lines in $dir/<target>-<mode>.calls.
for mode in $modes; do
  for t in $targets; do
    # Warm: the pool's servers are open and (prepared) statements known before counting.
    pgbench -h 127.0.0.1 -p "${target_port[$t]}" -U bench -n -S -M "$mode" -c "$clients" -j "$jobs" -t 200 bench >/dev/null
    strace -c -f -q -o "$dir/$t-$mode.strace" -p "${target_pid[$t]}" &
    tracer=$!
    sleep 0.5  # strace -p attaches asynchronously; nothing here to wait on instead
    pgbench -h 127.0.0.1 -p "${target_port[$t]}" -U bench -n -S -M "$mode" -c "$clients" -j "$jobs" -t "$txs" bench >/dev/null
    kill -INT "$tracer"
    wait "$tracer" || true
    # strace -c rows: % time, seconds, usecs/call, calls, [errors,] syscall
    awk '$4 ~ /^[0-9]+$/ && $NF ~ /^[a-z_0-9]+$/ && $NF != "total" { print $NF, $4 }' \
      "$dir/$t-$mode.strace" >"$dir/$t-$mode.calls"
  done
done

python3 - "$dir" "$((txs * clients))" "$targets" "$modes" <<'PY'
import sys
d, txs, targets, modes = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split()
for mode in modes:
    counts = {}
    for t in targets:
        for line in open(f"{d}/{t}-{mode}.calls"):
            name, n = line.split()
            counts.setdefault(name, {})[t] = int(n)
    print(f"\n-S -M {mode}, {txs} transactions: system calls per transaction")
    print(f"{'call':<16}" + "".join(f"{t:>12}" for t in targets))
    rows = sorted(counts, key=lambda c: -max(counts[c].values()))
    for c in rows:
        if max(counts[c].values()) / txs < 0.01:
            continue
        print(f"{c:<16}" + "".join(f"{counts[c].get(t, 0) / txs:>12.2f}" for t in targets))
    print(f"{'total':<16}" + "".join(f"{sum(v.get(t, 0) for v in counts.values()) / txs:>12.2f}" for t in targets))
PY
