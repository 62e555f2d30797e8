#!/usr/bin/env bash
# The result cache on a hot-key read workload: one interleaved pgbench run against
# direct PostgreSQL, PgBouncer (transaction mode), pgpool-II with its in-memory
# query cache, and pgsidecar (transaction mode, cache.mode hinted), all on
# loopback, on a throwaway PostgreSQL 15 cluster under $BENCH_DIR. Both poolers
# use the same pool size. The workload is table hot(id int primary key, v text),
# 1,000 rows of ~100 bytes, read by primary key through a cache hint:
#   \set id random(1, 1000)
#   SELECT /* pgsidecar:cache ttl=60s */ v FROM hot WHERE id = :id;
# in -M simple and -M extended. pgbench -M extended turns every ":word" of the
# text into a parameter, the ":cache" of the hint too, so the extended rows send
# the same SELECT without the comment, and pgsidecar caches it by the rule
# cache.rules [{table: hot, ttl: 60s}] (which covers the simple rows as well).
# Each row runs the targets back to back, ROUNDS times; the table shows the
# medians, the ratios to direct, PgBouncer and pgpool, pgsidecar's L1 hit ratio
# (from /metrics, per run), and whether pgsidecar met the goal: tps >= 2x
# direct and p99 below direct's p99. Last, pgsidecar's CPU per query (user + system
# from /proc over the run) and the queries per second one core of it carries.
#
# Env: DURATION (s, 10), ROUNDS (3), CLIENTS ("16 64"; one -M simple and one
#      -M extended row each), POOL_SIZE (20), JOBS (2),
#      PORT (26432: PostgreSQL; +1 PgBouncer; +2 pgsidecar, +3 its /metrics;
#      +4 Redis; +5 pgsidecar-redis, +6 its /metrics; +7 pgpool, +8 its pcp;
#      keep it below the ephemeral range 32768+),
#      TARGETS ("direct pgbouncer pgpool pgsidecar"; add "pgsidecar-redis" for a
#      second pgsidecar with the Redis tier, on a redis-server this script starts),
#      REDIS (0; 1 = add pgsidecar-redis to TARGETS),
#      PGPOOL_CHILDREN (largest of CLIENTS + 6: pgpool's num_init_children),
#      PGSIDECAR_BIN (build/app/pgsidecar), BENCH_DIR (/tmp/pgsidecar-bench-cache).
# pgpool2 (Debian) is installed when missing. A pgpool or pgsidecar that does not
# start is skipped (its log tail is printed); the other targets still run.
# Raw per-run figures go to bench/results/result-cache-<time>.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
repo="$PWD"

duration="${DURATION:-10}"
rounds="${ROUNDS:-3}"
clients_list="${CLIENTS:-16 64}"
pool_size="${POOL_SIZE:-20}"
port="${PORT:-26432}"
jobs="${JOBS:-2}"
targets="${TARGETS:-direct pgbouncer pgpool pgsidecar}"
if [[ "${REDIS:-0}" == 1 && " $targets " != *" pgsidecar-redis "* ]]; then targets+=" pgsidecar-redis"; fi
max_clients="$(tr ' ' '\n' <<<"$clients_list" | sort -n | tail -1)"
pgpool_children="${PGPOOL_CHILDREN:-$((max_clients + 6))}"
bin="${PGSIDECAR_BIN:-$repo/build/app/pgsidecar}"
dir="${BENCH_DIR:-/tmp/pgsidecar-bench-cache}"
pgdata="$dir/pgdata"
declare -A target_port=([direct]=$port [pgbouncer]=$((port + 1)) [pgsidecar]=$((port + 2))
  [pgsidecar-redis]=$((port + 5)) [pgpool]=$((port + 7)))
declare -A metrics_port=([pgsidecar]=$((port + 3)) [pgsidecar-redis]=$((port + 6)))
redis_port=$((port + 4))
pcp_port=$((port + 8))

drop_target() { targets="$(tr ' ' '\n' <<<"$targets" | grep -vx "$1" | tr '\n' ' ')"; }

for t in $targets; do [[ -n "${target_port[$t]:-}" ]] || die "unknown target $t (${!target_port[*]})"; done
bench_init
if has_target pgpool && [[ "$(dpkg-query -W -f='${db:Status-Status}' pgpool2 2>/dev/null || true)" != installed ]]; then
  echo "== installing pgpool2"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq pgpool2 >/dev/null
  # The package may start a system-wide pgpool on 5433; we run our own under $BENCH_DIR.
  systemctl stop pgpool2 >/dev/null 2>&1 || true
fi
if { has_target pgsidecar || has_target pgsidecar-redis; } && [[ ! -x "$bin" ]]; then
  build_pgsidecar --target pgsidecar
fi

declare -A sidecar_pid=()
cleanup() {
  local t
  for t in "${!sidecar_pid[@]}"; do stop_child "${sidecar_pid[$t]}"; done
  sidecar_pid=()
  for t in pgsidecar pgsidecar-redis; do kill_pidfile "$dir/$t.pid" INT; done  # an interrupted earlier run's
  stop_pgbouncer
  kill_pidfile "$dir/pgpool/pgpool.pid" INT  # fast shutdown: pgpool ends its children itself
  kill_pidfile "$dir/redis/redis.pid" TERM
  pg_stop
}
trap cleanup EXIT
cleanup  # leftovers of an interrupted earlier run

ports=()
for t in $targets; do
  ports+=("${target_port[$t]}")
  if [[ -n "${metrics_port[$t]:-}" ]]; then ports+=("${metrics_port[$t]}"); fi
done
if has_target pgsidecar-redis; then ports+=("$redis_port"); fi
if has_target pgpool; then ports+=("$pcp_port"); fi
for p in "${ports[@]}"; do require_free_port "$p"; done

echo "== PostgreSQL on 127.0.0.1:$port (max_connections=400, shared_buffers=128MB)"
make_bench_dir "$dir/pgbouncer" "$dir/pgpool" "$dir/pgpool/oiddir"
pg_start_cluster "-c max_connections=400 -c shared_buffers=128MB -c synchronous_commit=off"
pg_add_db bench SUPERUSER
echo "== table hot: 1,000 rows of ~100 bytes"
psql -h 127.0.0.1 -p "$port" -U bench -X -q -d bench -v ON_ERROR_STOP=1 <<'SQL'
CREATE TABLE hot (id int PRIMARY KEY, v text NOT NULL);
INSERT INTO hot SELECT id, repeat(md5(id::text), 3) FROM generate_series(1, 1000) AS id;
VACUUM ANALYZE hot;
SQL
cat >"$dir/hot-simple.sql" <<'SQL'
\set id random(1, 1000)
SELECT /* pgsidecar:cache ttl=60s */ v FROM hot WHERE id = :id;
SQL
cat >"$dir/hot-extended.sql" <<'SQL'
\set id random(1, 1000)
SELECT v FROM hot WHERE id = :id;
SQL

if has_target pgbouncer; then start_pgbouncer pgbouncer "${target_port[pgbouncer]}" "$pool_size"; fi

if has_target pgpool; then
  echo "== pgpool-II $(pgpool --version 2>&1 | awk '{print $3}') on 127.0.0.1:${target_port[pgpool]}" \
    "(raw mode, query cache shmem 64MB, num_init_children=$pgpool_children, max_pool=1)"
  # Everything not set here keeps pgpool's built-in default (no load balancing in raw mode).
  cat >"$dir/pgpool/pgpool.conf" <<CONF
backend_clustering_mode = 'raw'
listen_addresses = '127.0.0.1'
port = ${target_port[pgpool]}
socket_dir = '$dir/pgpool'
pcp_listen_addresses = '127.0.0.1'
pcp_port = $pcp_port
pcp_socket_dir = '$dir/pgpool'
wd_ipc_socket_dir = '$dir/pgpool'
pid_file_name = '$dir/pgpool/pgpool.pid'
logdir = '$dir/pgpool'
log_destination = 'stderr'
log_min_messages = warning
backend_hostname0 = '127.0.0.1'
backend_port0 = $port
backend_weight0 = 1
backend_flag0 = 'DISALLOW_TO_FAILOVER'
enable_pool_hba = off
pool_passwd = ''
num_init_children = $pgpool_children
max_pool = 1
connection_cache = on
child_life_time = 0
health_check_period = 0
sr_check_period = 0
failover_on_backend_error = off
use_watchdog = off
memory_cache_enabled = on
memqcache_method = 'shmem'
memqcache_total_size = 64MB
memqcache_expire = 60
memqcache_auto_cache_invalidation = on
memqcache_oiddir = '$dir/pgpool/oiddir'
CONF
  : >"$dir/pgpool/pcp.conf"
  : >"$dir/pgpool/pool_hba.conf"
  chown -R postgres:postgres "$dir/pgpool"
  as_postgres setsid pgpool -n -f "$dir/pgpool/pgpool.conf" -F "$dir/pgpool/pcp.conf" -a "$dir/pgpool/pool_hba.conf" \
    >"$dir/pgpool/pgpool.log" 2>&1 &
  if ! wait_port "${target_port[pgpool]}" $! ||
    ! psql -h 127.0.0.1 -p "${target_port[pgpool]}" -U bench -X -q -At -d bench -c "SELECT 1" >/dev/null 2>&1; then
    echo "   pgpool did not start; skipping it. Tail of $dir/pgpool/pgpool.log:" >&2
    tail -20 "$dir/pgpool/pgpool.log" | sed 's/^/   | /' >&2
    kill_pidfile "$dir/pgpool/pgpool.pid" INT
    drop_target pgpool
  fi
fi

if has_target pgsidecar-redis; then
  echo "== redis-server on 127.0.0.1:$redis_port (no persistence)"
  install -d -m 755 "$dir/redis"
  redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no --daemonize no \
    --dir "$dir/redis" --pidfile "$dir/redis/redis.pid" --logfile "$dir/redis/redis.log" &
  wait_port "$redis_port"
fi

# start_sidecar TARGET [KEY=VALUE...]: starts one daemon; drops TARGET if it does not come up.
start_sidecar() {
  local t="$1" conf="$dir/$1.yaml" log="$dir/$1.log"; shift
  echo "== $t on 127.0.0.1:${target_port[$t]}, /metrics on ${metrics_port[$t]} ($bin)"
  write_sidecar_yaml "$conf" "${target_port[$t]}" "$pool_size" "127.0.0.1:${metrics_port[$t]}" "$@"
  setsid "$bin" -c "$conf" 2>"$log" &  # a session of its own: see bench/lib.sh
  sidecar_pid[$t]=$!
  echo "${sidecar_pid[$t]}" >"$dir/$t.pid"
  if ! wait_port "${target_port[$t]}" "${sidecar_pid[$t]}"; then
    echo "   $t did not start; skipping it. Tail of $log:" >&2
    tail -20 "$log" | sed 's/^/   | /' >&2
    stop_child "${sidecar_pid[$t]}"
    unset "sidecar_pid[$t]"
    drop_target "$t"
  fi
}
cache_rules="mode: hinted, max_bytes: 64MB, rules: [{table: hot, ttl: 60s}]"
if has_target pgsidecar; then start_sidecar pgsidecar "cache={$cache_rules}"; fi
if has_target pgsidecar-redis; then
  start_sidecar pgsidecar-redis "cache={$cache_rules, redis: {url: \"redis://127.0.0.1:$redis_port\"}}"
fi

# cache_counters TARGET: "hits misses" of the target's cache so far, or "- -": pgsidecar's
# L1 tier from /metrics; pgpool's SHOW POOL_CACHE (misses = SELECTs sent to PostgreSQL).
cache_counters() {
  if [[ -n "${metrics_port[$1]:-}" ]]; then
    curl -s --max-time 2 "http://127.0.0.1:${metrics_port[$1]}/metrics" 2>/dev/null | awk '
      /^pgsidecar_cache_hits_total\{.*tier="l1"/ { h = $NF }
      /^pgsidecar_cache_misses_total\{.*tier="l1"/ { m = $NF }
      END { if (h == "" || m == "") print "- -"; else printf "%.0f %.0f\n", h, m }'
  elif [[ "$1" == pgpool ]]; then
    psql -h 127.0.0.1 -p "${target_port[pgpool]}" -U bench -X -At -F ' ' -d bench -c "SHOW POOL_CACHE" 2>/dev/null |
      awk 'NR == 1 && NF >= 2 { print $1, $2; ok = 1 } END { if (!ok) print "- -" }'
  else
    echo "- -"
  fi
}

# run_one ROW TARGET ROUND -- PGBENCH_ARGS...: appends one CSV line. The run's cache hit
# ratio goes to the CSV for pgsidecar; pgpool's is only printed.
run_one() {
  local row="$1" target="$2" round="$3"; shift 4
  local h0=- m0=- h1=- m1=- hit="" pid="${sidecar_pid[$target]:-}" cpu0 cpu1 us_tx="-"
  read -r h0 m0 < <(cache_counters "$target")
  cpu0="$(cpu_seconds "$pid")"
  pgbench_run "$target" "${target_port[$target]}" "$@"
  cpu1="$(cpu_seconds "$pid")"
  read -r h1 m1 < <(cache_counters "$target")
  if [[ "$h0$m0$h1$m1" != *-* ]] && (((h1 - h0) + (m1 - m0) > 0)); then
    hit="$(awk -v h=$((h1 - h0)) -v m=$((m1 - m0)) 'BEGIN { printf "%.4f", h / (h + m) }')"
  fi
  pgbench_figures "$target"
  if [[ -n "$pid" ]] && ((pgb_txs > 0)); then
    us_tx="$(awk -v a="$cpu0" -v b="$cpu1" -v n="$pgb_txs" 'BEGIN { printf "%.1f", (b - a) * 1e6 / n }')"
  fi
  printf '   %-15s round %s: tps %s  p50 %s  p95 %s  p99 %s ms%s%s\n' "$target" "$round" "$pgb_tps" \
    "$pgb_p50" "$pgb_p95" "$pgb_p99" "${hit:+  hit ratio $hit}" "${pid:+  cpu $us_tx us/tx}"
  [[ -n "${metrics_port[$target]:-}" ]] || hit=""
  echo "$row,$target,$round,$pgb_tps,$pgb_p50,$pgb_p95,$pgb_p99,$pgb_ok,$hit,$us_tx" >>"$csv"
}

csv="$(results_csv result-cache "row,target,round,tps,p50_ms,p95_ms,p99_ms,ok,hit_ratio,cpu_us_per_tx")"

rows=()
for m in simple extended; do
  for c in $clients_list; do rows+=("hot-$m-c$c|-f $dir/hot-$m.sql -M $m -c $c"); done
done

echo "== warm-up (3 s per target: 2 s -M simple, 1 s -M extended; fills the caches)"
for t in $targets; do
  for m in simple:2 extended:1; do
    pgbench -h 127.0.0.1 -p "${target_port[$t]}" -U bench -n -f "$dir/hot-${m%:*}.sql" -M "${m%:*}" -T "${m#*:}" \
      -c 16 -j "$jobs" bench >/dev/null 2>&1 || true
  done
done

echo "== ${#rows[@]} rows x $rounds rounds x ($(xargs <<<"$targets")), ${duration}s each, pool size $pool_size"
run_rows "${rows[@]}"

if has_target pgpool; then
  read -r h m < <(cache_counters pgpool)
  echo "pgpool query cache, whole run (warm-up included): $h hits, $m SELECTs sent to PostgreSQL"
fi
if has_target pgsidecar-redis; then
  up="$(curl -s --max-time 2 "http://127.0.0.1:${metrics_port[pgsidecar-redis]}/metrics" |
    awk '/^pgsidecar_cache_redis_up/ { print $NF }' || true)"
  echo "pgsidecar-redis: pgsidecar_cache_redis_up ${up:--}, $(redis-cli -p "$redis_port" dbsize 2>/dev/null || echo -) keys in Redis"
fi

echo
echo "raw results: $csv"
summarize_runs "$csv" <<'PY'  # runs, order, med() and fmt() come from bench/lib.sh
targets = ("direct", "pgbouncer", "pgpool", "pgsidecar", "pgsidecar-redis")
sidecars = ("pgsidecar", "pgsidecar-redis")
print(f"{'row':<18} {'target':<16} {'tps':>9} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
      f"{'x direct':>8} {'x pgbouncer':>11} {'x pgpool':>8} {'hit ratio':>9}")
for row in order:
    base = {t: med(runs.get((row, t), []), "tps") for t in ("direct", "pgbouncer", "pgpool")}
    for t in targets:
        rs = runs.get((row, t))
        if not rs:
            continue
        tps = med(rs, "tps")
        failed = sum(r["ok"] != "1" for r in rs)
        ratio = lambda b: fmt(tps / b, ".2f") if tps and b else "-"
        hit = fmt(med(rs, "hit_ratio"), ".4f") if t in sidecars else ""
        note = f"  ({failed}/{len(rs)} runs failed)" if failed else ""
        print(f"{row:<18} {t:<16} {fmt(tps, '.0f'):>9} {fmt(med(rs, 'p50_ms'), '.2f'):>7} "
              f"{fmt(med(rs, 'p95_ms'), '.2f'):>7} {fmt(med(rs, 'p99_ms'), '.2f'):>7} "
              f"{ratio(base['direct']):>8} {ratio(base['pgbouncer']):>11} {ratio(base['pgpool']):>8} {hit:>9}{note}")

# The goal: pgsidecar's cache at least doubles direct's tps and beats direct's p99.
print()
for row in order:
    d_tps, d_p99 = med(runs.get((row, "direct"), []), "tps"), med(runs.get((row, "direct"), []), "p99_ms")
    for t in sidecars:
        rs = runs.get((row, t))
        if not rs:
            continue
        tps, p99 = med(rs, "tps"), med(rs, "p99_ms")
        if not (tps and d_tps and p99 is not None and d_p99 is not None):
            print(f"{row:<18} {t:<16} goal (tps >= 2x direct, p99 < direct's): no figures")
            continue
        met = tps >= 2 * d_tps and p99 < d_p99
        print(f"{row:<18} {t:<16} goal {'MET' if met else 'NOT met'}: tps {tps / d_tps:.2f}x direct (need >= 2), "
              f"p99 {p99:.2f} ms vs direct's {d_p99:.2f} ms")

# What one core of pgsidecar carries: its CPU per transaction (user + system, /proc),
# nearly all of them cache hits, as queries per second of one core's time.
print()
for row in order:
    for t in sidecars:
        us = med(runs.get((row, t), []), "cpu_us_per_tx")
        if us:
            print(f"{row:<18} {t:<16} {us:.1f} us of CPU per query: {1e6 / us:,.0f} queries per core-second")
PY
