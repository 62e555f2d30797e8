#!/usr/bin/env bash
# lockd over its unix socket (docs/lockd-protocol.md), driven by bench/lockd_load.cpp,
# against a throwaway PostgreSQL 15 cluster under $BENCH_DIR:
#  - status answered from the cache: p50/p99 of STATUS_CALLS sequential calls on one
#    connection (target: p99 < 100 µs); for scale, the same client against a trivial
#    server on the daemon's core that answers every line with a fixed status line,
#  - cold status: the first status call right after the daemon starts (lockd has to
#    connect to PostgreSQL and read the history), one per start, COLD_RUNS starts
#    (target: p99 < 20 ms); for scale, the first status after a NOTIFY on
#    pgsidecar_migrations (history re-read on the open connection), and what a plain
#    libpq connect + SELECT 1 costs on this machine (psycopg),
#  - status calls per second, daemon on one core (taskset DAEMON_CPU), load tool on
#    another (LOAD_CPU), with the daemon's CPU use (near 100%: the daemon is the limit),
#  - for each count in STARTERS, that many processes started at once (connect,
#    migrate, status) with one pending migration on a fresh database each round:
#    wall time until all of them saw "current" (the migration must run exactly once),
#  - lock/unlock pairs per second on one name, per CONTENDERS count, with the
#    acquire latency.
# The migrations directory holds PRIOR_MIGRATIONS small files plus the one the
# starters apply; each starters round applies the prior ones first, then adds the
# new file to the watched directory and waits until lockd reports it pending.
# Env: ROUNDS (3), DURATION (5 s per throughput and lock run), STATUS_CALLS (100000),
#      COLD_RUNS (20), STARTERS ("1 500"), PRIOR_MIGRATIONS (10), STATUS_CONNS (16),
#      CONTENDERS ("1 100"), DAEMON_CPU (0), LOAD_CPU (1), PORT (25452: PostgreSQL;
#      +1 pgsidecar's TCP listener; keep it below the ephemeral range 32768+),
#      PGSIDECAR_BIN (default: build/app/pgsidecar, built or brought up to date with
#      cmake first), BENCH_DIR (/tmp/pgsidecar-lockd).
# Raw per-run figures go to bench/results/lockd-<time>.csv (measure,round,field,value).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
repo="$PWD"

rounds="${ROUNDS:-3}"
duration="${DURATION:-5}"
status_calls="${STATUS_CALLS:-100000}"
cold_runs="${COLD_RUNS:-20}"
starters_list="${STARTERS:-1 500}"
prior="${PRIOR_MIGRATIONS:-10}"
status_conns="${STATUS_CONNS:-16}"
contenders_list="${CONTENDERS:-1 100}"
daemon_cpu="${DAEMON_CPU:-0}"
load_cpu="${LOAD_CPU:-1}"
port="${PORT:-25452}"
bin="${PGSIDECAR_BIN:-$repo/build/app/pgsidecar}"
dir="${BENCH_DIR:-/tmp/pgsidecar-lockd}"
pgdata="$dir/pgdata"
sock="$dir/lockd.sock"
mig="$dir/migrations"
load="$dir/lockd_load"
new_version=$((prior + 1))
new_file="$mig/${new_version}_bench_items.up.sql"
load_timeout=180   # seconds one load-tool run may take before it counts as a hang

bench_init  # its ulimit -n: STARTERS connections at once, in the daemon and in the load tool
if [[ -z "${PGSIDECAR_BIN:-}" ]]; then
  # Always brought up to date: an existing binary may predate lockd.
  echo "== building pgsidecar (cmake --build build)"
  [[ -f build/CMakeCache.txt ]] || cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
  if ! out="$(cmake --build build -j "$(nproc)" --target pgsidecar 2>&1)"; then
    tail -40 <<<"$out" >&2
    die "build failed"
  fi
fi

pin_daemon=() pin_load=()
if (($(nproc) >= 2)); then
  pin_daemon=(taskset -c "$daemon_cpu")
  pin_load=(taskset -c "$load_cpu")
else
  echo "$bench_name: one CPU only; daemon and load tool share it" >&2
fi

problems=()
problem() {
  problems+=("$*")
  echo "   PROBLEM: $*" >&2
}
log_tail() { tail -n "${1:-5}" "$dir/pgsidecar.log" 2>/dev/null | sed 's/^/     | /' >&2 || true; }

sidecar_pid=""
start_sidecar() {
  "${pin_daemon[@]}" "$bin" -c "$dir/pgsidecar.yaml" 2>>"$dir/pgsidecar.log" &
  sidecar_pid=$!
}
# SIGINT, as compare.sh does; a daemon that needs more than 10 s, or exits with a
# non-zero status, is a problem.
stop_sidecar() {
  [[ -n "$sidecar_pid" ]] || return 0
  local pid="$sidecar_pid" rc=0
  sidecar_pid=""
  kill -INT "$pid" 2>/dev/null || true
  for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  if kill -0 "$pid" 2>/dev/null; then
    problem "pgsidecar did not exit within 10 s of SIGINT; killed"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || rc=$?
  if ((rc != 0)); then
    problem "pgsidecar exited with status $rc after SIGINT"
    log_tail
  fi
}
# After every load run: a daemon that died on the way is reported and started again.
check_alive() {
  [[ -n "$sidecar_pid" ]] || return 0
  kill -0 "$sidecar_pid" 2>/dev/null && return 0
  local rc=0
  wait "$sidecar_pid" 2>/dev/null || rc=$?
  sidecar_pid=""
  problem "pgsidecar died (exit status $rc) during: $1"
  log_tail 10
  start_sidecar
}

echo_pid=""
cleanup() {
  if [[ -n "$echo_pid" ]]; then kill "$echo_pid" 2>/dev/null || true; fi
  stop_sidecar 2>/dev/null || true
  pg_stop
}
trap cleanup EXIT
cleanup  # leftovers of an interrupted earlier run

for p in "$port" "$((port + 1))"; do require_free_port "$p"; done

echo "== PostgreSQL on 127.0.0.1:$port"
make_bench_dir
install -d -m 755 "$mig"
pg_start_cluster "-c max_connections=100"
pg_add_db app

echo "== lockd_load (g++ -O2)"
g++ -O2 -std=c++20 -pthread bench/lockd_load.cpp -o "$load"
# A private copy: a rebuild of build/ during the run must not change the daemon under test.
orig_bin="$bin"
cp "$bin" "$dir/pgsidecar"
bin="$dir/pgsidecar"

# Migrations: PRIOR_MIGRATIONS small tables, then the file the starters apply. It
# inserts one row, so "applied exactly once" can be checked from the table.
write_prior() {
  for ((i = 1; i <= prior; i++)); do
    printf 'CREATE TABLE bench_t%d (id bigint PRIMARY KEY, note text NOT NULL);\n' "$i" >"$mig/${i}_table_$i.up.sql"
  done
}
write_new() {  # written beside the directory, then renamed in: the watcher sees a whole file
  cat >"$dir/new.sql" <<'SQL'
CREATE TABLE bench_items (id bigserial PRIMARY KEY, payload text NOT NULL, created timestamptz NOT NULL DEFAULT now());
CREATE INDEX bench_items_payload ON bench_items (payload);
INSERT INTO bench_items (payload) VALUES ('applied');
SQL
  mv "$dir/new.sql" "$new_file"
}

# Trust auth on both sides: lockd's libpq connections log in as app without a password.
cat >"$dir/pgsidecar.yaml" <<YAML
listen_addr: 127.0.0.1
listen_port: $((port + 1))
auth_type: trust
pool_mode: transaction
log_level: warn
metrics: {listen: ""}
lockd: {socket_path: "$sock", database: app, user: app}
migrations: {dir: "$mig", database: app, user: app}
databases:
  app: {host: 127.0.0.1, port: $port, dbname: app}
YAML
if ! out="$("$bin" -c "$dir/pgsidecar.yaml" --check-config 2>&1)"; then
  echo "$bench_name: $bin rejects the lockd configuration (built without lockd?):" >&2
  echo "$out" >&2
  exit 1
fi

csv="$(results_csv lockd "measure,round,field,value")"

# run_load MODE ARGS...: runs the load tool on its core; sets $line (its result
# line), $ok (1 if it exited 0) and $dcpu (the daemon's CPU use meanwhile, % of
# one core). A non-zero exit or a timeout is a problem.
line="" ok=0 dcpu=""
run_load() {
  local rc=0 t0 t1 c0 c1
  t0="$EPOCHREALTIME" c0="$(cpu_seconds "$sidecar_pid")"
  line="$(timeout "$load_timeout" "${pin_load[@]}" "$load" "$@")" || rc=$?
  t1="$EPOCHREALTIME" c1="$(cpu_seconds "$sidecar_pid")"
  dcpu="$(awk -v a="$c0" -v b="$c1" -v s="$t0" -v e="$t1" 'BEGIN { printf "%.0f", (b - a) / (e - s) * 100 }')"
  [[ -n "$sidecar_pid" ]] && kill -0 "$sidecar_pid" 2>/dev/null || dcpu="-"
  ok=1
  if ((rc == 124)); then
    ok=0
    problem "lockd_load $1 did not finish within ${load_timeout}s (hang?)"
  elif ((rc != 0)); then
    ok=0
    problem "lockd_load $1 failed (exit $rc): ${line:-no result line}"
  fi
  check_alive "lockd_load $*"
}
# kv KEY: the value of KEY=... in $line (the JSON after answer= is not searched).
kv() { sed -nE "s/^.* $1=([^ ]*).*$/\1/p" <<<" ${line%% answer=*}" | head -1; }
# record MEASURE ROUND KEY...: one CSV row per key of $line, plus ok; a KEY=VALUE
# argument is recorded as given.
record() {
  local measure="$1" round="$2" k v
  shift 2
  for k in "$@"; do
    if [[ "$k" == *=* ]]; then v="${k#*=}" k="${k%%=*}"; else v="$(kv "$k")"; fi
    echo "$measure,$round,$k,${v:--}" >>"$csv"
  done
  echo "$measure,$round,ok,$ok" >>"$csv"
}

build_type="$(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$(dirname "$(dirname "$orig_bin")")/CMakeCache.txt" 2>/dev/null || true)"
echo "== pgsidecar${build_type:+ ($build_type build)} with lockd at $sock (daemon: ${pin_daemon[*]:-unpinned}; load tool: ${pin_load[*]:-unpinned})"
echo "   $prior + 1 migration files in $mig"
write_prior
write_new
start_sidecar
run_load first-status "$sock" 10
echo "   first status after start: $line"
run_load starters "$sock" 1
echo "   migrate: $line"
[[ "$(kv current)" == 1 ]] || problem "one migrate did not reach current: $line"

# For scale, each round also runs the same client against lockd_load echo-server on
# the daemon's core: a server that only answers each line with a fixed status line,
# i.e. what one round trip over a unix socket between the two cores costs here.
echo "== status from cache: $status_calls sequential calls on one connection, $rounds rounds (each: lockd, then echo server)"
"${pin_daemon[@]}" "$load" echo-server "$dir/echo.sock" &
echo_pid=$!
for ((r = 1; r <= rounds; r++)); do
  run_load status-latency "$sock" "$status_calls"
  printf '   round %s lockd: p50 %s  p99 %s  max %s µs  (not cached: %s)\n' "$r" "$(kv p50_us)" "$(kv p99_us)" "$(kv max_us)" "$(kv uncached)"
  record status-cached "$r" p50_us p99_us max_us mean_us uncached errors
  run_load status-latency "$dir/echo.sock" "$status_calls"
  printf '   round %s echo:  p50 %s  p99 %s  max %s µs\n' "$r" "$(kv p50_us)" "$(kv p99_us)" "$(kv max_us)"
  record echo-baseline "$r" p50_us p99_us max_us mean_us errors
done
kill "$echo_pid" 2>/dev/null || true
wait "$echo_pid" 2>/dev/null || true
echo_pid=""

echo "== status calls/s: $status_conns connections, ${duration}s, $rounds rounds"
for ((r = 1; r <= rounds; r++)); do
  run_load status-throughput "$sock" "$status_conns" "$duration"
  printf '   round %s: %s calls/s  (not cached: %s; daemon CPU %s%%)\n' "$r" "$(kv calls_per_s)" "$(kv uncached)" "$dcpu"
  record status-throughput "$r" calls_per_s calls uncached errors "daemon_cpu_pct=$dcpu"
done

for c in $contenders_list; do
  echo "== lock/unlock pairs on one name, $c contender(s), ${duration}s, $rounds rounds"
  for ((r = 1; r <= rounds; r++)); do
    run_load lock-pairs "$sock" "$c" "$duration" bench-lock
    printf '   round %s: %s pairs/s  acquire p50 %s  p99 %s µs  (queued: %s; daemon CPU %s%%)\n' \
      "$r" "$(kv pairs_per_s)" "$(kv acquire_p50_us)" "$(kv acquire_p99_us)" "$(kv queued)" "$dcpu"
    record "lock-c$c" "$r" pairs_per_s acquire_p50_us acquire_p99_us acquire_max_us queued errors "daemon_cpu_pct=$dcpu"
  done
done

echo "== cold status: the first call after a daemon start, $cold_runs starts"
for ((r = 1; r <= cold_runs; r++)); do
  stop_sidecar
  start_sidecar
  run_load first-status "$sock" 10
  printf '   start %2s: %s µs  cached=%s  status=%s  (connect retried for %s ms)\n' \
    "$r" "$(kv us)" "$(kv cached)" "$(kv status)" "$(kv connect_wait_ms)"
  record status-cold "$r" us cached status connect_wait_ms
done

echo "== cold status without the connect: first call after NOTIFY pgsidecar_migrations, $cold_runs times"
for ((r = 1; r <= cold_runs; r++)); do
  pg_psql -d app -c "NOTIFY pgsidecar_migrations, 'lockd.sh'"
  run_load first-uncached "$sock" 5
  printf '   notify %2s: %s µs  status=%s  (%s calls until one was not cached)\n' "$r" "$(kv us)" "$(kv status)" "$(kv calls)"
  record status-notify "$r" us calls status
done

echo "== for scale: libpq connect + SELECT 1 to this PostgreSQL (psycopg), $cold_runs times"
if ! /usr/bin/python3 - "$port" "$cold_runs" >>"$csv" <<'PY'; then
import sys, time
import psycopg
port, runs = sys.argv[1], int(sys.argv[2])
for r in range(1, runs + 1):
    t0 = time.perf_counter()
    with psycopg.connect(f"host=127.0.0.1 port={port} dbname=app user=app") as c:
        c.execute("SELECT 1").fetchone()
    print(f"pg-connect,{r},us,{(time.perf_counter() - t0) * 1e6:.1f}")
    print(f"pg-connect,{r},ok,1")
PY
  problem "the psycopg baseline failed"
fi
awk -F, '$1 == "pg-connect" && $3 == "us" { printf "   %.1f ms", $4 / 1000 } END { print "" }' "$csv"

for starters in $starters_list; do
  echo "== $starters starter(s) at once, one pending migration, fresh database each round, $rounds rounds"
  for ((r = 1; r <= rounds; r++)); do
    stop_sidecar
    pg_psql -d postgres -c "DROP DATABASE app WITH (FORCE)" -c "CREATE DATABASE app OWNER app"
    rm -f "$new_file"
    start_sidecar
    if ((prior > 0)); then
      run_load starters "$sock" 1
      [[ "$(kv current)" == 1 ]] || problem "round $r: migrating the $prior prior files failed: $line"
    fi
    run_load status-until "$sock" current 10
    write_new
    run_load status-until "$sock" pending 10
    notice_ms="$(kv waited_ms)"
    if ((!ok)); then
      problem "round $r: the new file was not reported pending within 10 s; restarting the daemon"
      stop_sidecar
      start_sidecar
      run_load status-until "$sock" pending 10
      notice_ms=-
    fi
    [[ "$line" == *"\"pending\":[\"$new_version\"]"* ]] || problem "round $r: expected exactly version $new_version pending: $line"
    run_load starters "$sock" "$starters"
    applied_rows="$(pg_psql -d app -tA -c "SELECT count(*) FROM bench_items" 2>/dev/null || echo error)"
    [[ "$applied_rows" == 1 ]] || problem "round $r: bench_items has $applied_rows rows (the migration must run exactly once)"
    printf '   round %s: all %s saw current after %s ms (per-starter p50 %s ms); applied in %s answers; rows %s; new file noticed after %s ms\n' \
      "$r" "$(kv current)" "$(kv wall_ms)" "$(kv p50_ms)" "$(kv applied_nonempty)" "$applied_rows" "$notice_ms"
    record "starters-$starters" "$r" wall_ms p50_ms current migrate_current applied_nonempty errors
    echo "starters-$starters,$r,applied_rows,$applied_rows" >>"$csv"
    echo "starters-$starters,$r,notice_ms,$notice_ms" >>"$csv"
  done
done
stop_sidecar

echo
echo "raw results: $csv"
python3 - "$csv" "$rounds" "$status_calls" "$duration" "$cold_runs" "$starters_list" "$status_conns" "$contenders_list" <<'PY'
import csv, math, statistics, sys

path, rounds, calls, duration, cold_runs, starters_list, conns, contenders = sys.argv[1:9]
data = {}  # (measure, field) -> [values in round order]
for r in csv.DictReader(open(path)):
    data.setdefault((r["measure"], r["field"]), []).append(r["value"])

def nums(measure, field, only_ok=True):
    vals = data.get((measure, field), [])
    oks = data.get((measure, "ok"), ["1"] * len(vals))
    out = []
    for v, ok in zip(vals, oks):
        if only_ok and ok != "1":
            continue
        try:
            out.append(float(v))
        except ValueError:
            pass
    return out

def med(measure, field):
    v = nums(measure, field)
    return statistics.median(v) if v else None

def pct(vals, p):  # nearest rank, as lockd_load does
    vals = sorted(vals)
    return vals[max(1, math.ceil(p * len(vals))) - 1] if vals else None

def f(v, spec=".1f"):
    return format(v, spec) if v is not None else "-"

def failed(measure):
    oks = data.get((measure, "ok"), [])
    bad = sum(o != "1" for o in oks)
    return f"  ({bad}/{len(oks)} runs failed)" if bad else ""

def verdict(value, limit):
    if value is None:
        return "no data"
    return "ok" if value < limit else "MISSED"

rows = []
p99 = med("status-cached", "p99_us")
rows.append(("status from cache", f"{rounds} x {calls}",
             f"p50 {f(med('status-cached', 'p50_us'))} µs  p99 {f(p99)} µs  max {f(med('status-cached', 'max_us'))} µs"
             + failed("status-cached"),
             f"p99 < 100 µs: {verdict(p99, 100)}"))

rows.append(("for scale: same client, echo server", f"{rounds} x {calls}",
             f"p50 {f(med('echo-baseline', 'p50_us'))} µs  p99 {f(med('echo-baseline', 'p99_us'))} µs  "
             f"max {f(med('echo-baseline', 'max_us'))} µs" + failed("echo-baseline"), ""))

def over_runs(measure, unit_div=1000):
    v = [x / unit_div for x in nums(measure, "us")]
    return v, f"p50 {f(pct(v, 0.5), '.2f')} ms  p99 {f(pct(v, 0.99), '.2f')} ms  max {f(max(v) if v else None, '.2f')} ms"

cold, text = over_runs("status-cold")
cached = data.get(("status-cold", "cached"), [])
cold_p99 = pct(cold, 0.99)
rows.append(("status, cold: first call after start", f"{cold_runs} starts",
             text + f"  (cached:false in {cached.count('false')}/{len(cached)})" + failed("status-cold"),
             f"p99 < 20 ms: {verdict(cold_p99, 20)}"))
_, text = over_runs("status-notify")
rows.append(("status, first call after a NOTIFY", f"{cold_runs} times", text + failed("status-notify"), ""))
_, text = over_runs("pg-connect")
rows.append(("for scale: libpq connect + SELECT 1", f"{cold_runs} times", text, ""))

rows.append((f"status calls/s (1 core, {conns} conns)", f"{rounds} x {duration} s",
             f"{f(med('status-throughput', 'calls_per_s'), '.0f')} calls/s  (daemon CPU "
             f"{f(med('status-throughput', 'daemon_cpu_pct'), '.0f')}%)" + failed("status-throughput"), ""))

for n in starters_list.split():
    m = f"starters-{n}"
    walls = nums(m, "wall_ms")
    applied = [str(int(v)) for v in nums(m, "applied_nonempty")]
    once = data.get((m, "applied_rows"), []).count("1")
    rows.append((f"{n} starter{'s' if n != '1' else ''} -> all see current", f"{rounds} rounds",
                 f"median {f(statistics.median(walls) if walls else None)} ms (min {f(min(walls) if walls else None)}, "
                 f"max {f(max(walls) if walls else None)}); per-starter p50 {f(med(m, 'p50_ms'))} ms; "
                 f"answers with applied: {'/'.join(applied) or '-'}; migration ran once: {once}/{rounds}" + failed(m),
                 ""))

for c in contenders.split():
    m = f"lock-c{c}"
    rows.append((f"lock+unlock pairs/s, {c} contender{'s' if c != '1' else ''}", f"{rounds} x {duration} s",
                 f"{f(med(m, 'pairs_per_s'), '.0f')} pairs/s  acquire p50 {f(med(m, 'acquire_p50_us'))} µs  "
                 f"p99 {f(med(m, 'acquire_p99_us'))} µs  (daemon CPU {f(med(m, 'daemon_cpu_pct'), '.0f')}%)" + failed(m), ""))

print(f"{'measurement':<40} {'runs':<14} result  [medians of runs; cold, NOTIFY and connect: over all runs]")
for name, runs, result, target in rows:
    print(f"{name:<40} {runs:<14} {result}" + (f"   [{target}]" if target else ""))
PY

if ((${#problems[@]})); then
  echo
  echo "problems (${#problems[@]}):"
  for p in "${problems[@]}"; do echo "  - $p"; done
  echo "daemon log: $dir/pgsidecar.log"
  exit 1
fi
