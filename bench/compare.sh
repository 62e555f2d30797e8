#!/usr/bin/env bash
# One interleaved pgbench run against direct PostgreSQL, PgBouncer and pgsidecar
# (both poolers in transaction mode with the same pool size), all on loopback,
# on a throwaway PostgreSQL 15 cluster under $BENCH_DIR. Each row runs the three
# targets back to back, ROUNDS times; the table shows the medians.
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
#      PGBOUNCER_BIN (pgbouncer on PATH; e.g. /tmp/pgbouncer-1.25/bin/pgbouncer),
#      TLS (0; 1 = TLS on every hop: pgbench with sslmode=require to each target, and
#      both poolers to PostgreSQL with server_tls_sslmode require, on a self-signed
#      certificate made here).
# Raw per-run figures go to bench/results/compare-<time>.csv, with the proxy's CPU
# time per transaction (user+system from /proc over the run / transactions).
set -euo pipefail
cd "$(dirname "$0")/.."
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
pgbouncer_bin="${PGBOUNCER_BIN:-pgbouncer}"
tls="${TLS:-0}"
pgbin=/usr/lib/postgresql/15/bin
pgdata="$dir/pgdata"
declare -A target_port=([direct]=$port [pgbouncer]=$((port + 1)) [pgsidecar]=$((port + 2)) [pgsidecar-scraped]=$((port + 2))
  [pgsidecar-base]=$((port + 4)))
declare -A target_pid=()
metrics_port=$((port + 3))

((EUID == 0)) || { echo "compare.sh: run as root (PostgreSQL runs as user postgres)" >&2; exit 1; }
scripts/deps.sh
if [[ " $targets " == *" pgsidecar "* && ! -x "$bin" ]]; then
  echo "== building pgsidecar (Release)"
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build -j "$(nproc)"
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

as_postgres() { runuser -u postgres -- "$@"; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  for _ in $(seq 100); do port_busy "$1" && return 0; sleep 0.1; done
  echo "compare.sh: nothing listening on port $1" >&2; return 1
}

cleanup() {
  for pid in "${target_pid[@]}"; do kill -INT "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  target_pid=()
  if [[ -f "$dir/pgbouncer/pgbouncer.pid" ]]; then kill "$(cat "$dir/pgbouncer/pgbouncer.pid" 2>/dev/null)" 2>/dev/null || true; fi
  as_postgres "$pgbin/pg_ctl" -D "$pgdata" -m immediate -w stop >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup  # leftovers of an interrupted earlier run

for t in $targets; do
  if port_busy "${target_port[$t]}"; then
    echo "compare.sh: port ${target_port[$t]} ($t) is taken; set PORT" >&2; exit 1
  fi
done

echo "== PostgreSQL on 127.0.0.1:$port (max_connections=400, shared_buffers=128MB)"
rm -rf "$dir"
install -d -m 755 "$dir"
install -d -o postgres -g postgres -m 700 "$pgdata" "$dir/pgbouncer"
as_postgres "$pgbin/initdb" -D "$pgdata" -U postgres -E UTF8 --locale=C --auth=trust >/dev/null
ssl_opts=""
if ((tls)); then
  echo "== TLS on every hop (self-signed certificate for 127.0.0.1)"
  install -d -o postgres -g postgres -m 700 "$dir/tls"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" \
    -keyout "$dir/tls/key.pem" -out "$dir/tls/cert.pem" 2>/dev/null
  chown postgres:postgres "$dir/tls"/*.pem
  chmod 600 "$dir/tls/key.pem"
  ssl_opts="-c ssl=on -c ssl_cert_file=$dir/tls/cert.pem -c ssl_key_file=$dir/tls/key.pem"
  export PGSSLMODE=require
fi
# synchronous_commit=off: TPC-B would otherwise measure this disk's fsync, not the pools.
as_postgres "$pgbin/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -w -o "-p $port -k $pgdata \
  -c listen_addresses=127.0.0.1 -c max_connections=400 -c shared_buffers=128MB \
  -c synchronous_commit=off $ssl_opts" start >/dev/null
as_postgres psql -h "$pgdata" -p "$port" -U postgres -X -q -d postgres \
  -c "CREATE ROLE bench LOGIN SUPERUSER" -c "CREATE DATABASE bench OWNER bench"
echo "== pgbench -i -s $scale"
pgbench -h 127.0.0.1 -p "$port" -U bench -i -s "$scale" -q bench 2>&1 | tail -1

if [[ " $targets " == *" pgbouncer "* ]]; then
  echo "== PgBouncer $("$pgbouncer_bin" --version | head -1 | awk '{print $2}') on 127.0.0.1:${target_port[pgbouncer]}"
  echo '"bench" ""' >"$dir/pgbouncer/userlist.txt"
  cat >"$dir/pgbouncer/pgbouncer.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$port dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${target_port[pgbouncer]}
unix_socket_dir =
auth_type = trust
auth_file = $dir/pgbouncer/userlist.txt
pool_mode = transaction
default_pool_size = $pool_size
max_client_conn = 1000
logfile = $dir/pgbouncer/pgbouncer.log
pidfile = $dir/pgbouncer/pgbouncer.pid
log_connections = 0
log_disconnections = 0
INI
  if ((tls)); then
    printf 'client_tls_sslmode = require\nclient_tls_key_file = %s\nclient_tls_cert_file = %s\nserver_tls_sslmode = require\n' \
      "$dir/tls/key.pem" "$dir/tls/cert.pem" >>"$dir/pgbouncer/pgbouncer.ini"
  fi
  chown -R postgres:postgres "$dir/pgbouncer"
  as_postgres "$pgbouncer_bin" -d -q "$dir/pgbouncer/pgbouncer.ini"
  wait_port "${target_port[pgbouncer]}"
  target_pid[pgbouncer]="$(cat "$dir/pgbouncer/pgbouncer.pid")"
fi

# start_sidecar NAME BINARY PORT METRICS_LISTEN
start_sidecar() {
  local name="$1" binary="$2" listen="$3" metrics="$4"
  echo "== $name on 127.0.0.1:$listen ($binary)"
  cat >"$dir/$name.yaml" <<YAML
listen_addr: 127.0.0.1
listen_port: $listen
auth_type: trust
pool_mode: transaction
default_pool_size: $pool_size
max_client_conn: 1000
log_level: warn
metrics: {listen: "$metrics"}
lockd: {socket_path: ""}
databases:
  bench: {host: 127.0.0.1, port: $port, dbname: bench}
YAML
  if ((tls)); then
    printf 'client_tls_sslmode: require\nclient_tls_key_file: %s\nclient_tls_cert_file: %s\nserver_tls_sslmode: require\n' \
      "$dir/tls/key.pem" "$dir/tls/cert.pem" >>"$dir/$name.yaml"
  fi
  "$binary" -c "$dir/$name.yaml" 2>"$dir/$name.log" &
  target_pid[$name]=$!
  wait_port "$listen"
}
if [[ " $targets " == *" pgsidecar "* || " $targets " == *" pgsidecar-scraped "* ]]; then
  start_sidecar pgsidecar "$bin" "${target_port[pgsidecar]}" "127.0.0.1:$metrics_port"
  target_pid[pgsidecar-scraped]="${target_pid[pgsidecar]}"
fi
if [[ " $targets " == *" pgsidecar-base "* ]]; then
  [[ -x "$base_bin" ]] || { echo "compare.sh: pgsidecar-base needs PGSIDECAR_BASE_BIN" >&2; exit 1; }
  start_sidecar pgsidecar-base "$base_bin" "${target_port[pgsidecar-base]}" ""
fi

# CPU seconds (user + system) a process has used so far, from /proc; 0 if none.
cpu_seconds() {
  local pid="$1"
  [[ -n "$pid" && -r "/proc/$pid/stat" ]] || { echo 0; return; }
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13) / hz }' "/proc/$pid/stat"
}

# run_one ROW TARGET ROUND -- PGBENCH_ARGS...: appends one CSV line.
run_one() {
  local row="$1" target="$2" round="$3"; shift 4
  local logdir="$dir/run" out tps=0 p50="" p95="" p99="" ok=1 cpu0 cpu1 txs us_tx="-"
  rm -rf "$logdir"; mkdir -p "$logdir"
  local scraper=""
  if [[ "$target" == pgsidecar-scraped ]]; then
    (while :; do curl -s -o /dev/null "http://127.0.0.1:$metrics_port/metrics"; sleep 1; done) &
    scraper=$!
  fi
  cpu0="$(cpu_seconds "${target_pid[$target]:-}")"
  if ! out="$(pgbench -h 127.0.0.1 -p "${target_port[$target]}" -U bench -n -T "$duration" -j "$jobs" \
      -l --log-prefix="$logdir/lat" "$@" bench 2>&1)"; then
    ok=0
    echo "   $target failed: $(grep -m1 -iE 'error|abort' <<<"$out" || tail -1 <<<"$out")" >&2
  fi
  if [[ -n "$scraper" ]]; then
    kill "$scraper" 2>/dev/null || true
    wait "$scraper" 2>/dev/null || true
  fi
  cpu1="$(cpu_seconds "${target_pid[$target]:-}")"
  tps="$(sed -nE 's/^tps = ([0-9.]+) .*/\1/p' <<<"$out" | head -1)"
  txs="$(sed -nE 's/^number of transactions actually processed: ([0-9]+).*/\1/p' <<<"$out" | head -1)"
  if [[ -n "${target_pid[$target]:-}" && "${txs:-0}" -gt 0 ]]; then
    us_tx="$(awk -v a="$cpu0" -v b="$cpu1" -v n="$txs" 'BEGIN { printf "%.1f", (b - a) * 1e6 / n }')"
  fi
  if ((ok)) && grep -q 'actually processed: 0$' <<<"$out"; then
    ok=0  # e.g. connecting 256 clients took the whole DURATION
    echo "   $target: no transactions in ${duration}s ($(grep -m1 'initial connection time' <<<"$out"))" >&2
  fi
  # pgbench -l: one line per transaction, field 3 = latency in microseconds.
  read -r p50 p95 p99 < <(cat "$logdir"/lat.* 2>/dev/null | awk '{print $3}' | sort -n | awk '
    { v[NR] = $1 }
    function pct(p,  i) { i = int(NR * p + 0.999999); if (i < 1) i = 1; return v[i] / 1000 }
    END { if (NR) printf "%.3f %.3f %.3f\n", pct(0.50), pct(0.95), pct(0.99); else print "- - -" }')
  printf '   %-14s round %s: tps %s  p50 %s  p95 %s  p99 %s ms  cpu %s us/tx\n' "$target" "$round" "${tps:-0}" \
    "$p50" "$p95" "$p99" "$us_tx"
  echo "$row,$target,$round,${tps:-0},$p50,$p95,$p99,$ok,$us_tx" >>"$csv"
}

mkdir -p bench/results
csv="bench/results/compare-$(date +%Y%m%d-%H%M%S).csv"
echo "row,target,round,tps,p50_ms,p95_ms,p99_ms,ok,cpu_us_per_tx" >"$csv"

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
for r in "${rows[@]}"; do
  name="${r%%|*}"
  read -ra args <<<"${r#*|}"
  echo "-- $name: pgbench ${args[*]}"
  for ((round = 1; round <= rounds; round++)); do
    for t in $targets; do run_one "$name" "$t" "$round" -- "${args[@]}"; done
  done
done

echo
echo "raw results: $csv"
python3 - "$csv" <<'PY'
import csv, statistics, sys
runs = {}
order = []
for r in csv.DictReader(open(sys.argv[1])):
    key = (r["row"], r["target"])
    if r["row"] not in order:
        order.append(r["row"])
    runs.setdefault(key, []).append(r)

def med(rs, field):
    vals = [float(r[field]) for r in rs if r["ok"] == "1" and r[field] not in ("", "-")]
    return statistics.median(vals) if vals else None

def fmt(v, spec):
    return format(v, spec) if v is not None else "-"

print(f"{'row':<22} {'target':<18} {'tps':>10} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'us/tx':>7} {'x direct':>9} {'x pgbouncer':>12}")
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
              f"{fmt(med(rs, 'p95_ms'), '.2f'):>8} {fmt(med(rs, 'p99_ms'), '.2f'):>8} {fmt(med(rs, 'cpu_us_per_tx'), '.1f'):>7} "
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
