# shellcheck shell=bash disable=SC2154  # globals the script sets
# Plumbing shared by the bench scripts, sourced from the repo root:
#   set -euo pipefail; cd "$(dirname "$0")/.."; source bench/lib.sh
# Globals read, set by the script: dir (BENCH_DIR), pgdata ($dir/pgdata), port (PostgreSQL's),
# and for pgbench_*, run_rows and has_target: duration, jobs, rounds, targets.
# Set here: bench_name (the script's file name), pgbin (PostgreSQL 15), pgb_* (pgbench_* results).
#
#   die MESSAGE...                    "$bench_name: MESSAGE" on stderr; exit 1
#   bench_init                        root check, scripts/deps.sh, ulimit -n 65536 (or the hard limit)
#   build_pgsidecar [ARG...]          Release build in build/; ARGs go to cmake --build
#   has_target NAME                   NAME is one of $targets
#   as_postgres CMD...                CMD as user postgres
#   port_busy PORT                    something listens on 127.0.0.1:PORT
#   require_free_port PORT [WHAT]     dies if PORT is taken
#   wait_port PORT [PID]              up to 10 s for a listener on PORT; gives up once PID has exited
#   kill_pidfile FILE SIGNAL          signals FILE's pid if ours (names or runs in $dir); up to 10 s, then KILL
#   stop_child PID                    SIGINT to a background child, then waits for it
#   stop_targets                      stop_child for each pid in the script's target_pid array (emptied),
#                                     then stop_pgbouncer and pg_stop: the EXIT trap of compare.sh and syscalls.sh
#   cpu_seconds PID                   user + system CPU seconds PID has used so far (/proc); 0 if none
#   make_bench_dir [DIR...]           empties $dir; creates it, and $pgdata and DIRs owned by postgres
#   make_cert DIR                     self-signed DIR/{cert,key}.pem for 127.0.0.1, owned by postgres
#   pg_start_cluster PG_OPTIONS       initdb $pgdata (UTF8, C, trust), start on 127.0.0.1:$port with PG_OPTIONS
#   pg_psql PSQL_ARG...               psql as postgres over the socket in $pgdata, ON_ERROR_STOP
#   pg_add_db NAME [ATTR...]          CREATE ROLE NAME LOGIN [ATTR...]; CREATE DATABASE NAME OWNER NAME
#   pg_stop                           stops $pgdata's cluster (immediate) if it runs
#   write_pgbouncer_ini PORT POOL_SIZE MAX_CLIENT_CONN [KEY=VALUE...]
#                                     $dir/pgbouncer/: transaction pool of bench on $port, trust, extra settings
#   start_pgbouncer BIN PORT POOL_SIZE [KEY=VALUE...]
#                                     that ini (1000 clients, log and pid file), BIN as a daemon; waits for PORT
#   stop_pgbouncer                    SIGTERM to $dir/pgbouncer's PgBouncer
#   default_pgbouncer FALLBACK        /tmp/pgbouncer-1.25/bin/pgbouncer (bench/build-pgbouncer.sh) if built, else FALLBACK
#   write_sidecar_yaml FILE PORT POOL_SIZE METRICS_LISTEN [KEY=VALUE...]   the same for pgsidecar, lockd off
#   results_csv NAME HEADER           new bench/results/NAME-<time>.csv with HEADER; prints its path
#   pgbench_run NAME PORT [ARG...]    pgbench -T $duration -j $jobs -l, as bench on bench, logs in a fresh
#                                     $dir/run; sets pgb_out, pgb_ok (0: failed, said on stderr)
#   pgbench_figures NAME              of that run: pgb_tps, pgb_txs, pgb_p50/95/99 and pgb_max (ms; "-" without logs);
#                                     pgb_ok=0 if no transaction completed (said)
#   run_rows ROW...                   ROW "NAME|PGBENCH ARGS": prints it, calls the script's
#                                     run_one NAME TARGET ROUND -- ARGS... for each of $rounds and $targets
#   summarize_runs CSV <<'PY'         the Python on stdin, after a prelude reading CSV (row,target,...,ok)
#                                     into runs {(row, target): [rows]}, order (of rows), med(rs, field)
#                                     (median over ok runs, or None), top(rs, field) (their maximum) and fmt(v, spec)
#
# Every pooler under test runs in a session of its own: PgBouncer through -d,
# pgsidecar and pgpool-II through setsid, as a systemd unit or a container would
# run them. With the kernel's autogroup scheduling (sched_autogroup_enabled, on in
# Debian), CPU is shared between sessions first. A daemon left in the script's
# session shares one group with pgbench and anything else started from that shell;
# with two nice-19 fuzzers there, the PostgreSQL backends it served stalled for
# 0.3-2.8 s (64 clients; 53-287 ms in its own session).

bench_name="${0##*/}"
pgbin=/usr/lib/postgresql/15/bin
pgb_out="" pgb_ok=0 pgb_tps=0 pgb_txs=0 pgb_p50=- pgb_p95=- pgb_p99=- pgb_max=-

die() { echo "$bench_name: $*" >&2; exit 1; }

bench_init() {
  ((EUID == 0)) || die "run as root (PostgreSQL runs as user postgres)"
  scripts/deps.sh
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
}

# shellcheck disable=SC2120  # arguments are optional
build_pgsidecar() {
  echo "== building pgsidecar (Release)"
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build -j "$(nproc)" "$@"
}

has_target() { [[ " $targets " == *" $1 "* ]]; }
as_postgres() { runuser -u postgres -- "$@"; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
require_free_port() {
  if port_busy "$1"; then die "port $1${2:+ ($2)} is taken; set PORT"; fi
}

wait_port() {
  for _ in $(seq 100); do
    port_busy "$1" && return 0
    if [[ -n "${2:-}" ]] && ! kill -0 "$2" 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "$bench_name: nothing listening on port $1" >&2
  return 1
}

# Checking the process keeps a stale pid file from hitting another process.
kill_pidfile() {
  local pid
  pid="$(tr -dc 0-9 2>/dev/null <"$1")" || return 0  # gone (the daemon removed it); pgpool pads it with NULs
  [[ -n "$pid" && -d "/proc/$pid" ]] || return 0
  if ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$dir" &&
    [[ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" != "$dir"* ]]; then
    return 0
  fi
  kill "-$2" "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

stop_child() {
  kill -INT "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

stop_targets() {
  local pid
  for pid in "${target_pid[@]}"; do stop_child "$pid"; done
  target_pid=()
  stop_pgbouncer
  pg_stop
}

cpu_seconds() {
  [[ -n "${1:-}" && -r "/proc/$1/stat" ]] || { echo 0; return 0; }
  # Fields after "(comm) ": utime and stime are the 12th and 13th, in clock ticks.
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.6f\n", ($12 + $13) / hz }' "/proc/$1/stat" \
    2>/dev/null || echo 0
}

# shellcheck disable=SC2120  # arguments are optional
make_bench_dir() {
  rm -rf "$dir"
  install -d -m 755 "$dir"
  install -d -o postgres -g postgres -m 700 "$pgdata" "$@"
}

make_cert() {
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" \
    -keyout "$1/key.pem" -out "$1/cert.pem" 2>/dev/null
  chown postgres:postgres "$1/key.pem" "$1/cert.pem"
  chmod 600 "$1/key.pem"
}

pg_start_cluster() {
  as_postgres "$pgbin/initdb" -D "$pgdata" -U postgres -E UTF8 --locale=C --auth=trust >/dev/null
  as_postgres "$pgbin/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -w \
    -o "-p $port -k $pgdata -c listen_addresses=127.0.0.1 $1" start >/dev/null
}

pg_psql() { as_postgres psql -h "$pgdata" -p "$port" -U postgres -X -q -v ON_ERROR_STOP=1 "$@"; }
pg_add_db() {
  local name="$1"; shift
  pg_psql -d postgres -c "CREATE ROLE $name LOGIN${*:+ $*}" -c "CREATE DATABASE $name OWNER $name"
}

pg_stop() { as_postgres "$pgbin/pg_ctl" -D "$pgdata" -m immediate -w stop >/dev/null 2>&1 || true; }

# KEY=VALUE settings become "KEY = VALUE" lines here, "KEY: VALUE" in write_sidecar_yaml.
write_pgbouncer_ini() {
  local listen="$1" pool="$2" max_conn="$3"; shift 3
  echo '"bench" ""' >"$dir/pgbouncer/userlist.txt"
  {
    cat <<INI
[databases]
bench = host=127.0.0.1 port=$port dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $listen
unix_socket_dir =
auth_type = trust
auth_file = $dir/pgbouncer/userlist.txt
pool_mode = transaction
default_pool_size = $pool
max_client_conn = $max_conn
log_connections = 0
log_disconnections = 0
INI
    if (($#)); then printf '%s\n' "${@/=/ = }"; fi
  } >"$dir/pgbouncer/pgbouncer.ini"
  chown -R postgres:postgres "$dir/pgbouncer"
}

start_pgbouncer() {
  local bin="$1" listen="$2" pool="$3"; shift 3
  echo "== PgBouncer $("$bin" --version | head -1 | awk '{print $2}') on 127.0.0.1:$listen"
  write_pgbouncer_ini "$listen" "$pool" 1000 \
    "logfile=$dir/pgbouncer/pgbouncer.log" "pidfile=$dir/pgbouncer/pgbouncer.pid" "$@"
  as_postgres "$bin" -d -q "$dir/pgbouncer/pgbouncer.ini"
  wait_port "$listen"
}

stop_pgbouncer() { kill_pidfile "$dir/pgbouncer/pgbouncer.pid" TERM; }
default_pgbouncer() {
  if [[ -x /tmp/pgbouncer-1.25/bin/pgbouncer ]]; then echo /tmp/pgbouncer-1.25/bin/pgbouncer; else echo "$1"; fi
}

write_sidecar_yaml() {
  local file="$1" listen="$2" pool="$3" metrics="$4"; shift 4
  {
    cat <<YAML
listen_addr: 127.0.0.1
listen_port: $listen
auth_type: trust
pool_mode: transaction
default_pool_size: $pool
max_client_conn: 1000
log_level: warn
metrics: {listen: "$metrics"}
lockd: {socket_path: ""}
databases:
  bench: {host: 127.0.0.1, port: $port, dbname: bench}
YAML
    if (($#)); then printf '%s\n' "${@/=/: }"; fi
  } >"$file"
}

results_csv() {
  local file
  file="bench/results/$1-$(date +%Y%m%d-%H%M%S).csv"
  mkdir -p bench/results
  echo "$2" >"$file"
  echo "$file"
}

pgbench_run() {
  local name="$1" listen="$2"; shift 2
  rm -rf "$dir/run"
  mkdir -p "$dir/run"
  pgb_ok=1
  if ! pgb_out="$(pgbench -h 127.0.0.1 -p "$listen" -U bench -n -T "$duration" -j "$jobs" \
      -l --log-prefix="$dir/run/lat" "$@" bench 2>&1)"; then
    pgb_ok=0
    echo "   $name failed: $(grep -m1 -iE 'error|abort' <<<"$pgb_out" || tail -1 <<<"$pgb_out")" >&2
  fi
}

pgbench_figures() {
  pgb_tps="$(sed -nE 's/^tps = ([0-9.]+) .*/\1/p' <<<"$pgb_out" | head -1)"
  pgb_tps="${pgb_tps:-0}"
  pgb_txs="$(sed -nE 's/^number of transactions actually processed: ([0-9]+).*/\1/p' <<<"$pgb_out" | head -1)"
  pgb_txs="${pgb_txs:-0}"
  if ((pgb_ok)) && grep -q 'actually processed: 0$' <<<"$pgb_out"; then
    pgb_ok=0  # e.g. connecting 256 clients took the whole DURATION
    echo "   $1: no transactions in ${duration}s ($(grep -m1 'initial connection time' <<<"$pgb_out"))" >&2
  fi
  # pgbench -l: one line per transaction, field 3 = latency in microseconds.
  # shellcheck disable=SC2034  # pgb_p*, pgb_max: for the script
  read -r pgb_p50 pgb_p95 pgb_p99 pgb_max < <(cat "$dir/run"/lat.* 2>/dev/null | awk '{print $3}' | sort -n | awk '
    { v[NR] = $1 }
    function pct(p,  i) { i = int(NR * p + 0.999999); if (i < 1) i = 1; return v[i] / 1000 }
    END { if (NR) printf "%.3f %.3f %.3f %.3f\n", pct(0.50), pct(0.95), pct(0.99), v[NR] / 1000; else print "- - - -" }')
}

run_rows() {
  local r name round t
  local -a args
  for r in "$@"; do
    name="${r%%|*}"
    read -ra args <<<"${r#*|}"
    echo "-- $name: pgbench ${args[*]#"$dir/"}"
    for ((round = 1; round <= rounds; round++)); do
      for t in $targets; do run_one "$name" "$t" "$round" -- "${args[@]}"; done
    done
  done
}

summarize_runs() {
  local prelude
  prelude="$(cat <<'PY'
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

def top(rs, field):
    vals = [float(r[field]) for r in rs if r["ok"] == "1" and r[field] not in ("", "-")]
    return max(vals) if vals else None

def fmt(v, spec):
    return format(v, spec) if v is not None else "-"
PY
)"
  python3 -c "$prelude"$'\n'"$(cat)" "$1"
}
