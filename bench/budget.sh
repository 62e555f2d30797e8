#!/usr/bin/env bash
# The instruction budget: instructions the daemon executes per transaction,
# counted by valgrind (cachegrind, no cache simulation) on a fixed pgbench
# workload, and checked against bench/budgets.json. A row fails when its count
# is more than `tolerance` (10%) over its baseline. Time on this shared 2-core
# machine is too noisy to gate on; instruction counts are not.
#
# Rows, transaction mode, pool of CLIENTS, pgbench -c CLIENTS -j 1 on scale 1. One
# client by default: each transaction is then one read and one write each way,
# so the count does not move with how the kernel batches bytes (with 4 clients
# runs differed by up to 10%; with one, by under 3%).
#   simple, extended, prepared   -S in that -M mode
#   cached                       a cache-hinted read of 100 keys (all hits once stored)
# Each row runs the daemon twice under valgrind, for TXS and for 3 x TXS
# transactions per client, and divides the difference in instructions by the
# difference in transactions: start-up, logins and the first misses cancel out.
#
#   bench/budget.sh               measure and check (exit 1 if a row is over budget)
#   UPDATE=1 bench/budget.sh      measure and write the counts as the new baselines
#
# Env: PGSIDECAR_BIN (build/app/pgsidecar: baselines are taken with the RelWithDebInfo
#      build scripts/test.sh makes, as CI runs it), CLIENTS (1), TXS (400), PORT (26460: PostgreSQL; +1 pgsidecar), BENCH_DIR (/tmp/pgsidecar-budget).
# Lowering a baseline is a commit of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
repo="$PWD"

bin="${PGSIDECAR_BIN:-$repo/build/app/pgsidecar}"
clients="${CLIENTS:-1}"
txs="${TXS:-400}"
port="${PORT:-26460}"
listen=$((port + 1))
dir="${BENCH_DIR:-/tmp/pgsidecar-budget}"
pgdata="$dir/pgdata"
budgets="$repo/bench/budgets.json"

[[ -x "$bin" ]] || die "no daemon at $bin (build it, or set PGSIDECAR_BIN)"
bench_init
command -v valgrind >/dev/null || die "valgrind is missing (scripts/deps.sh installs it)"
require_free_port "$port" PostgreSQL
require_free_port "$listen" pgsidecar

cleanup() { pg_stop; }
trap cleanup EXIT
make_bench_dir
pg_start_cluster "-c max_connections=50 -c shared_buffers=64MB -c fsync=off -c synchronous_commit=off"
pg_add_db bench
as_postgres pgbench -h "$pgdata" -p "$port" -U bench -i -s 1 -q bench >/dev/null 2>&1 || die "pgbench -i failed"
cat >"$dir/cached.sql" <<'SQL'
\set aid random(1, 100)
/* pgsidecar:cache ttl=600s */ SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
SQL

# instructions ROW TXS [KEY=VALUE...] -- PGBENCH_ARG...: the daemon's instructions over
# its whole life (start, CLIENTS logins, TXS transactions each, shutdown).
instructions() {
  local row="$1" n="$2" pid out
  shift 2
  local -a extra=()
  while [[ "$1" != -- ]]; do extra+=("$1"); shift; done
  shift
  write_sidecar_yaml "$dir/$row.yaml" "$listen" "$clients" "" "${extra[@]}"
  out="$dir/$row-$n.cachegrind"
  valgrind --tool=cachegrind --cache-sim=no --branch-sim=no --cachegrind-out-file="$out" \
    "$bin" -c "$dir/$row.yaml" >"$dir/$row-$n.log" 2>&1 &
  pid=$!
  wait_port "$listen" "$pid" || { tail -20 "$dir/$row-$n.log" >&2; return 1; }
  if ! pgbench -h 127.0.0.1 -p "$listen" -U bench -n -c "$clients" -j 1 -t "$n" "$@" bench >"$dir/$row-$n.pgbench" 2>&1 ||
    ! grep -q "actually processed: $((clients * n))" "$dir/$row-$n.pgbench"; then
    echo "$bench_name: $row: pgbench failed:" >&2
    tail -5 "$dir/$row-$n.pgbench" >&2
    stop_child "$pid"
    return 1
  fi
  stop_child "$pid"
  sed -nE 's/^summary: ([0-9]+).*/\1/p' "$out"
}

results="$dir/results.txt"
: >"$results"
measure() {
  local row="$1" short long
  shift
  short="$(instructions "$row" "$txs" "$@")" || die "$row: the short run failed"
  long="$(instructions "$row" $((3 * txs)) "$@")" || die "$row: the long run failed"
  echo "$row $(((long - short) / (clients * 2 * txs)))" | tee -a "$results"
}

echo "== instructions per transaction ($clients clients, $txs and $((3 * txs)) transactions each, $(basename "$bin"))"
measure simple -- -S -M simple
measure extended -- -S -M extended
measure prepared -- -S -M prepared
measure cached "cache={mode: hinted, admission: always}" -- -M simple -f "$dir/cached.sql"

python3 - "$budgets" "$results" "${UPDATE:-0}" <<'PY'
import json, sys
path, results, update = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
measured = {row: int(n) for row, n in (line.split() for line in open(results) if line.strip())}
try:
    data = json.load(open(path))
except FileNotFoundError:
    data = {"tolerance": 0.10, "rows": {}}
tol = data["tolerance"]
if update:
    data["rows"] = {row: {"instructions_per_tx": n} for row, n in measured.items()}
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    print(f"== wrote {path}")
    sys.exit(0)
over = []
print(f"{'row':<10} {'baseline':>10} {'measured':>10} {'ratio':>7}")
for row, n in measured.items():
    base = data["rows"].get(row, {}).get("instructions_per_tx")
    ratio = n / base if base else None
    bad = ratio is not None and ratio > 1 + tol
    if bad or base is None:
        over.append(row)
    print(f"{row:<10} {base or '-':>10} {n:>10} {format(ratio, '.3f') if ratio else '-':>7}{'  OVER BUDGET' if bad else ''}")
if over:
    print(f"== over budget (> {1 + tol:.2f}x) or without a baseline: {' '.join(over)}", file=sys.stderr)
    sys.exit(1)
print(f"== every row within {1 + tol:.2f}x its baseline")
PY
