#!/usr/bin/env bash
# One interleaved pgbench run against direct PostgreSQL, PgBouncer and pgsidecar
# (both poolers in transaction mode with the same pool size), all on loopback,
# on a throwaway PostgreSQL 15 cluster under $BENCH_DIR. Each row runs the three
# targets back to back, ROUNDS times; the table shows the medians, and the
# highest maximum latency of any round.
#
# Env: DURATION (s, 10), ROUNDS (3), CLIENTS ("16 64 256", select-only rows),
#      PREPARED_CLIENTS ("16 64", select-only -M prepared rows; PgBouncer 1.18
#      fails them in transaction mode), TPCB_CLIENTS (16), POOL_SIZE (20), PORT (25432: PostgreSQL; +1 PgBouncer;
#      +2 pgsidecar; keep it below the ephemeral range 32768+), SCALE (10),
#      JOBS (2), TARGETS ("direct pgbouncer pgsidecar"; add "pgsidecar-scraped" for
#      pgsidecar with its /metrics scraped every second during the run, and
#      "pgsidecar-base" for a second pgsidecar binary, PGSIDECAR_BASE_BIN, on PORT+4:
#      a change against its parent in one interleaved run),
#      PGSIDECAR_BIN (build/app/pgsidecar), BENCH_DIR (/tmp/pgsidecar-bench),
#      PGBOUNCER_BIN (/tmp/pgbouncer-1.25/bin/pgbouncer, made by bench/build-pgbouncer.sh,
#      when it exists; else Debian's pgbouncer on PATH),
#      TLS (0; 1 = TLS on every hop: pgbench with sslmode=require to each target, and
#      both poolers to PostgreSQL with server_tls_sslmode require, on a self-signed
#      certificate made here), SIDECAR_YAML / BASE_YAML (lines appended to the
#      pgsidecar / pgsidecar-base config, e.g. a cache: section; BASE_YAML defaults
#      to SIDECAR_YAML, so one binary can run against itself with other settings),
#      LATENCY_LOGS (a directory: keep each run's pgbench -l lines there as
#      ROW-TARGET-ROUND.log: client, transaction, latency us, script, epoch s, us).
# Raw per-run figures go to bench/results/compare-<time>.csv, with the proxy's CPU
# time per transaction (user+system from /proc over the run / transactions).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
repo="$PWD"

duration="${DURATION:-10}"
rounds="${ROUNDS:-3}"
clients_list="${CLIENTS:-16 64 256}"
prepared_clients="${PREPARED_CLIENTS:-16 64}"
tpcb_clients="${TPCB_CLIENTS:-16}"
pool_size="${POOL_SIZE:-20}"
port="${PORT:-25432}"
scale="${SCALE:-10}"
jobs="${JOBS:-2}"
targets="${TARGETS:-direct pgbouncer pgsidecar}"
bin="${PGSIDECAR_BIN:-$repo/build/app/pgsidecar}"
base_bin="${PGSIDECAR_BASE_BIN:-}"
dir="${BENCH_DIR:-/tmp/pgsidecar-bench}"
pgbouncer_bin="${PGBOUNCER_BIN:-$(default_pgbouncer pgbouncer)}"
tls="${TLS:-0}"
latency_logs="${LATENCY_LOGS:-}"
pgdata="$dir/pgdata"
declare -A target_port=([direct]=$port [pgbouncer]=$((port + 1)) [pgsidecar]=$((port + 2)) [pgsidecar-scraped]=$((port + 2))
  [pgsidecar-base]=$((port + 4)))
declare -A target_pid=()
metrics_port=$((port + 3))

bench_init
if has_target pgsidecar && [[ ! -x "$bin" ]]; then build_pgsidecar; fi

trap stop_targets EXIT
stop_targets  # leftovers of an interrupted earlier run

for t in $targets; do require_free_port "${target_port[$t]}" "$t"; done

echo "== PostgreSQL on 127.0.0.1:$port (max_connections=400, shared_buffers=128MB)"
make_bench_dir "$dir/pgbouncer"
ssl_opts=""
tls_settings=()  # for both poolers, as KEY=VALUE
if ((tls)); then
  echo "== TLS on every hop (self-signed certificate for 127.0.0.1)"
  install -d -o postgres -g postgres -m 700 "$dir/tls"
  make_cert "$dir/tls"
  ssl_opts="-c ssl=on -c ssl_cert_file=$dir/tls/cert.pem -c ssl_key_file=$dir/tls/key.pem"
  export PGSSLMODE=require
  tls_settings=(client_tls_sslmode=require "client_tls_key_file=$dir/tls/key.pem"
    "client_tls_cert_file=$dir/tls/cert.pem" server_tls_sslmode=require)
fi
# synchronous_commit=off: TPC-B would otherwise measure this disk's fsync, not the pools.
pg_start_cluster "-c max_connections=400 -c shared_buffers=128MB -c synchronous_commit=off $ssl_opts"
pg_add_db bench SUPERUSER
echo "== pgbench -i -s $scale"
pgbench -h 127.0.0.1 -p "$port" -U bench -i -s "$scale" -q bench 2>&1 | tail -1

if has_target pgbouncer; then
  start_pgbouncer "$pgbouncer_bin" "${target_port[pgbouncer]}" "$pool_size" "${tls_settings[@]}"
  target_pid[pgbouncer]="$(cat "$dir/pgbouncer/pgbouncer.pid")"
fi

# start_sidecar NAME BINARY PORT METRICS_LISTEN EXTRA_YAML
start_sidecar() {
  local name="$1" binary="$2" listen="$3" metrics="$4" extra="$5"
  echo "== $name on 127.0.0.1:$listen ($binary)"
  write_sidecar_yaml "$dir/$name.yaml" "$listen" "$pool_size" "$metrics" "${tls_settings[@]}"
  if [[ -n "$extra" ]]; then printf '%s\n' "$extra" >>"$dir/$name.yaml"; fi
  setsid "$binary" -c "$dir/$name.yaml" 2>"$dir/$name.log" &  # a session of its own: see bench/lib.sh
  target_pid[$name]=$!
  wait_port "$listen"
}
if has_target pgsidecar || has_target pgsidecar-scraped; then
  start_sidecar pgsidecar "$bin" "${target_port[pgsidecar]}" "127.0.0.1:$metrics_port" "${SIDECAR_YAML:-}"
  target_pid[pgsidecar-scraped]="${target_pid[pgsidecar]}"
fi
if has_target pgsidecar-base; then
  [[ -x "$base_bin" ]] || die "pgsidecar-base needs PGSIDECAR_BASE_BIN"
  start_sidecar pgsidecar-base "$base_bin" "${target_port[pgsidecar-base]}" "" "${BASE_YAML-${SIDECAR_YAML:-}}"
fi

# run_one ROW TARGET ROUND -- PGBENCH_ARGS...: appends one CSV line.
run_one() {
  local row="$1" target="$2" round="$3"; shift 4
  local pid="${target_pid[$target]:-}" scraper="" cpu0 cpu1 us_tx="-"
  if [[ "$target" == pgsidecar-scraped ]]; then
    (while :; do curl -s -o /dev/null "http://127.0.0.1:$metrics_port/metrics"; sleep 1; done) &
    scraper=$!
  fi
  cpu0="$(cpu_seconds "$pid")"
  pgbench_run "$target" "${target_port[$target]}" "$@"
  if [[ -n "$scraper" ]]; then
    kill "$scraper" 2>/dev/null || true
    wait "$scraper" 2>/dev/null || true
  fi
  cpu1="$(cpu_seconds "$pid")"
  pgbench_figures "$target"
  if [[ -n "$latency_logs" ]]; then
    mkdir -p "$latency_logs"
    cat "$dir/run"/lat.* >"$latency_logs/$row-$target-$round.log" 2>/dev/null || true
  fi
  if [[ -n "$pid" ]] && ((pgb_txs > 0)); then
    us_tx="$(awk -v a="$cpu0" -v b="$cpu1" -v n="$pgb_txs" 'BEGIN { printf "%.1f", (b - a) * 1e6 / n }')"
  fi
  printf '   %-14s round %s: tps %s  p50 %s  p95 %s  p99 %s  max %s ms  cpu %s us/tx\n' "$target" "$round" \
    "$pgb_tps" "$pgb_p50" "$pgb_p95" "$pgb_p99" "$pgb_max" "$us_tx"
  echo "$row,$target,$round,$pgb_tps,$pgb_p50,$pgb_p95,$pgb_p99,$pgb_max,$pgb_ok,$us_tx" >>"$csv"
}

csv="$(results_csv compare "row,target,round,tps,p50_ms,p95_ms,p99_ms,max_ms,ok,cpu_us_per_tx")"

rows=()
for c in $clients_list; do rows+=("select-simple-c$c|-S -M simple -c $c"); done
for c in $clients_list; do rows+=("select-extended-c$c|-S -M extended -c $c"); done
for c in $prepared_clients; do rows+=("select-prepared-c$c|-S -M prepared -c $c"); done
for c in $tpcb_clients; do rows+=("tpcb-c$c|-M simple -c $c"); done

echo "== warm-up (3 s per target)"
for t in $targets; do
  pgbench -h 127.0.0.1 -p "${target_port[$t]}" -U bench -n -S -T 3 -c 16 -j "$jobs" bench >/dev/null 2>&1 || true
done

echo "== ${#rows[@]} rows x $rounds rounds x ($targets), ${duration}s each, pool size $pool_size"
run_rows "${rows[@]}"

echo
echo "raw results: $csv"
summarize_runs "$csv" <<'PY'  # runs, order, med(), top() and fmt() come from bench/lib.sh
print(f"{'row':<22} {'target':<18} {'tps':>10} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} {'us/tx':>7} {'x direct':>9} {'x pgbouncer':>12}")
for row in order:
    base = {t: med(runs.get((row, t), []), "tps") for t in ("direct", "pgbouncer")}
    for t in ("direct", "pgbouncer", "pgsidecar", "pgsidecar-scraped", "pgsidecar-base"):
        rs = runs.get((row, t))
        if not rs:
            continue
        tps = med(rs, "tps")
        failed = sum(r["ok"] != "1" for r in rs)
        ratio = lambda b: fmt(tps / b, ".2f") if tps and b else "-"
        note = f"  ({failed}/{len(rs)} runs failed)" if failed else ""
        print(f"{row:<22} {t:<18} {fmt(tps, '.0f'):>10} {fmt(med(rs, 'p50_ms'), '.2f'):>8} "
              f"{fmt(med(rs, 'p95_ms'), '.2f'):>8} {fmt(med(rs, 'p99_ms'), '.2f'):>8} "
              f"{fmt(top(rs, 'max_ms'), '.1f'):>8} "
              f"{fmt(med(rs, 'cpu_us_per_tx'), '.1f'):>7} "
              f"{ratio(base['direct']):>9} {ratio(base['pgbouncer']):>12}{note}")

# What scraping /metrics every second costs.
for row in order:
    plain = med(runs.get((row, "pgsidecar"), []), "tps")
    scraped = med(runs.get((row, "pgsidecar-scraped"), []), "tps")
    if plain and scraped:
        print(f"pgsidecar scraped every second / not scraped, {row}: {scraped / plain:.3f}")

# A change against its parent (pgsidecar-base), same run: tps and CPU per transaction.
for row in order:
    new, old = runs.get((row, "pgsidecar"), []), runs.get((row, "pgsidecar-base"), [])
    if new and old and med(old, "tps"):
        cpu_new, cpu_old = med(new, "cpu_us_per_tx"), med(old, "cpu_us_per_tx")
        cpu = f", cpu/tx {cpu_new / cpu_old:.3f}" if cpu_new and cpu_old else ""
        print(f"pgsidecar / pgsidecar-base, {row}: tps {med(new, 'tps') / med(old, 'tps'):.3f}{cpu}")

# The plan cache's gain: pgsidecar's prepared-mode tps over its own extended-mode tps.
for row in order:
    if row.startswith("select-prepared-"):
        clients = row.rsplit("-", 1)[1]
        prepared = med(runs.get((row, "pgsidecar"), []), "tps")
        extended = med(runs.get(("select-extended-" + clients, "pgsidecar"), []), "tps")
        if prepared and extended:
            print(f"pgsidecar -M prepared / -M extended at {clients}: {prepared / extended:.2f}")
PY
