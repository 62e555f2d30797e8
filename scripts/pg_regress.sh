#!/usr/bin/env bash
# Runs PostgreSQL 15's own regression suite (src/test/regress, parallel_schedule)
# THROUGH pgsidecar, to see which session semantics the pooler keeps and which it
# loses. Builds regress.so and contrib/spi's autoinc.so/refint.so into a temp dir,
# starts a throwaway PostgreSQL 15 cluster (initdb, loopback only, free port,
# C locale, UTF8, max_prepared_transactions=2 as `make check` sets it), starts
# pgsidecar on another free port in front of it (trust, wildcard "*" database,
# the given pool_mode), creates the `regression` database directly on the server
# (as pg_regress's create_database() would) and runs
# `pg_regress --use-existing` against pgsidecar's port.
# Prints the summary line and the failed tests; the output dir keeps
# regression.diffs, regression.out, results/, pg_regress.out, pgsidecar.log,
# pgsidecar.yaml and postgresql.log. Everything it started is stopped on exit.
#
# Usage (as root, or as a user that can run initdb; root installs
# postgresql-server-dev-15 with apt-get if pg_config's server headers are missing):
#
#   PG_SRC=/tmp/pgsrc/postgresql-15.18 ./scripts/pg_regress.sh                      # transaction mode
#   PG_SRC=/tmp/pgsrc/postgresql-15.18 POOL_MODE=session ./scripts/pg_regress.sh    # session mode (control)
#   PG_SRC=/tmp/pgsrc/postgresql-15.18 TARGET=direct ./scripts/pg_regress.sh        # no proxy (baseline)
#
# Env:
#   PG_SRC         PostgreSQL source tree of the installed server's version (required)
#   POOL_MODE      transaction (default) | session
#   TARGET         proxy (default) | direct (pg_regress straight to PostgreSQL)
#   OUT_DIR        where results go (default: a new /tmp/pgsidecar-regress.<mode>.XXXXXX, kept)
#   TESTS          space-separated test names to run instead of the schedule
#                  (test_setup is prepended when missing; most tests need it)
#   POOL_SIZE      default_pool_size (40: 20 concurrent tests + psql \c and pg_regress)
#   MAX_CONCURRENT pg_regress --max-concurrent-tests (0 = the schedule's groups as they are)
#   LOG_LEVEL      pgsidecar log_level (info); PINNED_LOG_AFTER (1s): log clients pinned this long
#   PGSIDECAR_BIN  (build/app/pgsidecar), PG_BIN (/usr/lib/postgresql/15/bin),
#   PG_REGRESS     ($PG_BIN/../lib/pgxs/src/test/regress/pg_regress)
#   KEEP_WORK=1    keep the cluster's data dir and the built modules (removed by default)
#
# Exit status: pg_regress's (0 all passed, 1 some failed, 2 could not run).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
pool_mode="${POOL_MODE:-transaction}"
target="${TARGET:-proxy}"
pool_size="${POOL_SIZE:-40}"
max_concurrent="${MAX_CONCURRENT:-0}"
log_level="${LOG_LEVEL:-info}"
pinned_log_after="${PINNED_LOG_AFTER:-1s}"
pg_bin="${PG_BIN:-/usr/lib/postgresql/15/bin}"
pg_config="$pg_bin/pg_config"
pgsidecar_bin="${PGSIDECAR_BIN:-$repo/build/app/pgsidecar}"

die() { echo "pg_regress.sh: $*" >&2; exit 2; }

case "$pool_mode" in transaction | session) ;; *) die "POOL_MODE must be transaction or session, got '$pool_mode'" ;; esac
case "$target" in proxy | direct) ;; *) die "TARGET must be proxy or direct, got '$target'" ;; esac
[[ -x "$pg_bin/initdb" ]] || die "no PostgreSQL server binaries in $pg_bin (set PG_BIN)"
[[ "$target" == direct || -x "$pgsidecar_bin" ]] ||
  die "no pgsidecar binary at $pgsidecar_bin (build it: cmake -S . -B build && cmake --build build, or set PGSIDECAR_BIN)"

server_version="$("$pg_bin/postgres" --version | sed -E 's/^[^0-9]*([0-9]+(\.[0-9]+)?).*/\1/')"   # e.g. 15.18
if [[ -z "${PG_SRC:-}" ]]; then
  die "PG_SRC is required: the PostgreSQL $server_version source tree (same version as the server). Get it with:
  curl -O http://deb.debian.org/debian/pool/main/p/postgresql-${server_version%%.*}/postgresql-${server_version%%.*}_${server_version}.orig.tar.bz2
  tar xjf postgresql-${server_version%%.*}_${server_version}.orig.tar.bz2 && PG_SRC=\$PWD/postgresql-${server_version} $0"
fi
pg_src="$(cd "$PG_SRC" && pwd)"
regress_src="$pg_src/src/test/regress"
[[ -f "$regress_src/parallel_schedule" && -f "$regress_src/regress.c" ]] ||
  die "$PG_SRC is not a PostgreSQL source tree (no src/test/regress/parallel_schedule)"
src_version="$(sed -n "s/^PACKAGE_VERSION='\(.*\)'/\1/p" "$pg_src/configure" 2>/dev/null || true)"
if [[ -n "$src_version" && "$src_version" != "$server_version" ]]; then
  echo "pg_regress.sh: warning: source tree is $src_version, server is $server_version; expect spurious diffs" >&2
fi

# Server headers for building regress.so.
if [[ ! -x "$pg_config" || ! -f "$("$pg_config" --includedir-server 2>/dev/null)/postgres.h" ]]; then
  if ((EUID == 0)); then
    # Pinned to the server package's version: the newest server-dev would pull a
    # newer server (and libpq) along, and the source tree would no longer match.
    major="${server_version%%.*}"
    deb_version="$(dpkg-query -W -f='${Version}' "postgresql-$major" 2>/dev/null || true)"
    pkg="postgresql-server-dev-$major${deb_version:+=$deb_version}"
    echo "== installing $pkg"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" >/dev/null ||
      { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" >/dev/null; }
  else
    die "server headers missing: apt-get install postgresql-server-dev-${server_version%%.*} (as root)"
  fi
fi
pg_regress="${PG_REGRESS:-$("$pg_config" --pkglibdir)/pgxs/src/test/regress/pg_regress}"
[[ -x "$pg_regress" ]] || die "no pg_regress at $pg_regress (postgresql-server-dev-${server_version%%.*} has it; or set PG_REGRESS)"

# PostgreSQL refuses to run as root: as root, everything of the cluster (and
# pg_regress, whose output dir the server writes COPY files into) runs as postgres.
if ((EUID == 0)); then
  run_user=postgres
  as_pg() { runuser -u postgres -- "$@"; }
else
  run_user="$(id -un)"
  as_pg() { "$@"; }
fi
as_pg test -r "$regress_src/sql/test_setup.sql" || die "$run_user cannot read $regress_src"

label="$target"; [[ "$target" == proxy ]] && label="$pool_mode"
out_dir="${OUT_DIR:-$(mktemp -d "/tmp/pgsidecar-regress.$label.XXXXXX")}"
mkdir -p "$out_dir"
out_dir="$(cd "$out_dir" && pwd)"
work="$(mktemp -d /tmp/pgsidecar-regress-work.XXXXXX)"
chmod 755 "$work" "$out_dir"
((EUID == 0)) && chown "$run_user" "$work" "$out_dir"

pg_data="$work/pgdata"
pg_started=0
sidecar_pid=""
cleanup() {
  local rc=$?
  if [[ -n "$sidecar_pid" ]] && kill -0 "$sidecar_pid" 2>/dev/null; then
    kill -INT "$sidecar_pid" 2>/dev/null || true   # fast shutdown
    for _ in $(seq 50); do kill -0 "$sidecar_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$sidecar_pid" 2>/dev/null || true
  fi
  if ((pg_started)); then
    as_pg "$pg_bin/pg_ctl" -D "$pg_data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  [[ -f "$pg_data/postgresql.log" ]] && cp "$pg_data/postgresql.log" "$out_dir/postgresql.log" 2>/dev/null || true
  if [[ "${KEEP_WORK:-0}" == 1 ]]; then
    echo "== work dir kept: $work"
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
  local p=$((20000 + RANDOM % 20000))
  while port_busy "$p"; do p=$((p + 1)); done
  echo "$p"
}

# 1. The C modules the suite loads: regress.so, and autoinc.so/refint.so from
#    contrib/spi (built with -DREFINT_VERBOSE, as contrib/spi/Makefile does: the
#    triggers test expects its NOTICEs).
echo "== building regress.so, autoinc.so, refint.so into $work/lib"
mkdir -p "$work/lib"
cflags=(-O2 -shared -fPIC -I"$("$pg_config" --includedir-server)")
gcc "${cflags[@]}" -o "$work/lib/regress.so" "$regress_src/regress.c"
gcc "${cflags[@]}" -o "$work/lib/autoinc.so" "$pg_src/contrib/spi/autoinc.c"
gcc "${cflags[@]}" -DREFINT_VERBOSE -o "$work/lib/refint.so" "$pg_src/contrib/spi/refint.c"
chmod -R a+rX "$work/lib"

# 2. A throwaway cluster: C locale, UTF8, trust on loopback, the settings
#    pg_regress's temp instance gets (max_prepared_transactions = 2 for
#    prepared_xacts, its logging), and room for the pools.
pg_port="$(free_port)"
echo "== initdb $pg_data; PostgreSQL on 127.0.0.1:$pg_port"
as_pg "$pg_bin/initdb" -D "$pg_data" -U postgres -E UTF8 --locale=C --auth=trust --no-sync >"$out_dir/initdb.log" 2>&1 ||
  { cat "$out_dir/initdb.log" >&2; die "initdb failed"; }
as_pg tee -a "$pg_data/postgresql.conf" >/dev/null <<CONF

# Added by scripts/pg_regress.sh (as pg_regress does for its temp instance)
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$work'
max_connections = 300
max_prepared_transactions = 2
fsync = off
log_autovacuum_min_duration = 0
log_checkpoints = on
log_line_prefix = '%m %b[%p] %q%a '
log_lock_waits = on
log_temp_files = 128kB
CONF
as_pg "$pg_bin/pg_ctl" -D "$pg_data" -l "$pg_data/postgresql.log" -w -t 60 start >/dev/null ||
  { cat "$pg_data/postgresql.log" >&2; die "PostgreSQL did not start"; }
pg_started=1

# 3. The database, made directly on the server as pg_regress's create_database() does.
as_pg "$pg_bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$work" -p "$pg_port" -U postgres -d postgres <<'SQL'
CREATE DATABASE "regression" TEMPLATE=template0;
ALTER DATABASE "regression" SET lc_messages TO 'C';
ALTER DATABASE "regression" SET lc_monetary TO 'C';
ALTER DATABASE "regression" SET lc_numeric TO 'C';
ALTER DATABASE "regression" SET lc_time TO 'C';
ALTER DATABASE "regression" SET bytea_output TO 'hex';
ALTER DATABASE "regression" SET timezone_abbreviations TO 'Default';
SQL

# 4. pgsidecar in front: every database name goes to the same name on the server.
test_port="$pg_port"
if [[ "$target" == proxy ]]; then
  sidecar_port="$(free_port)"
  while [[ "$sidecar_port" == "$pg_port" ]]; do sidecar_port="$(free_port)"; done
  cat >"$out_dir/pgsidecar.yaml" <<YAML
# Written by scripts/pg_regress.sh
listen_addr: 127.0.0.1
listen_port: $sidecar_port
auth_type: trust
pool_mode: $pool_mode
default_pool_size: $pool_size
max_client_conn: 500
pinned_log_after: $pinned_log_after
server_tls_sslmode: disable
log_level: $log_level
metrics: {listen: ""}
lockd: {socket_path: ""}
databases:
  "*": {host: 127.0.0.1, port: $pg_port}
YAML
  chmod 644 "$out_dir/pgsidecar.yaml"
  # A private copy: a rebuild of build/ during the run must not change the binary under test.
  cp "$pgsidecar_bin" "$work/pgsidecar"
  echo "== pgsidecar binary: $pgsidecar_bin ($(sha1sum "$work/pgsidecar" | cut -c1-12), built $(date -r "$pgsidecar_bin" '+%F %T'))"
  "$work/pgsidecar" -c "$out_dir/pgsidecar.yaml" --check-config
  echo "== pgsidecar ($pool_mode mode, pool size $pool_size) on 127.0.0.1:$sidecar_port -> PostgreSQL :$pg_port"
  "$work/pgsidecar" -c "$out_dir/pgsidecar.yaml" 2>"$out_dir/pgsidecar.log" &
  sidecar_pid=$!
  ok=0
  for _ in $(seq 100); do
    kill -0 "$sidecar_pid" 2>/dev/null || break
    if as_pg "$pg_bin/psql" -X -A -t -h 127.0.0.1 -p "$sidecar_port" -U postgres -d regression -c 'SELECT 1' >/dev/null 2>&1; then
      ok=1; break
    fi
    sleep 0.1
  done
  ((ok)) || { tail -20 "$out_dir/pgsidecar.log" >&2; die "pgsidecar did not come up"; }
  test_port="$sidecar_port"
fi

# 5. The suite.
regress_args=(--use-existing --host=127.0.0.1 --port="$test_port" --user=postgres
  --inputdir="$regress_src" --outputdir="$out_dir" --dlpath="$work/lib" --bindir="$pg_bin"
  --max-concurrent-tests="$max_concurrent")
if [[ -n "${TESTS:-}" ]]; then
  read -r -a tests <<<"$TESTS"
  [[ " ${tests[*]} " == *" test_setup "* ]] || tests=(test_setup "${tests[@]}")
  regress_args+=("${tests[@]}")
else
  regress_args+=(--schedule="$regress_src/parallel_schedule")
fi
echo "== pg_regress against 127.0.0.1:$test_port ($label); output in $out_dir"
start=$SECONDS
set +e
as_pg "$pg_regress" "${regress_args[@]}" 2>&1 | tee "$out_dir/pg_regress.out"
rc=${PIPESTATUS[0]}
set -e
elapsed=$((SECONDS - start))

# 6. Summary.
echo
echo "== summary ($label, ${elapsed}s, pg_regress exit $rc)"
grep -E '^ *(All [0-9]+ tests passed|[0-9]+ of [0-9]+ tests (failed|passed))' "$out_dir/pg_regress.out" || true
failed="$(awk '/\.\.\. FAILED|\.\.\. failed/ { for (i = 1; i <= NF; i++) if ($i == "...") { print $(i-1); break } }' "$out_dir/pg_regress.out" | sort -u | tr '\n' ' ')"
echo "failed: ${failed:-none}"
echo "$failed" | tr ' ' '\n' | sed '/^$/d' >"$out_dir/failed_tests.txt"
if [[ "$target" == proxy ]]; then
  if ! kill -0 "$sidecar_pid" 2>/dev/null; then
    echo "!! pgsidecar is no longer running (see $out_dir/pgsidecar.log)"
  fi
  echo "pgsidecar log: $out_dir/pgsidecar.log ($(grep -c 'pinned to its server' "$out_dir/pgsidecar.log" || true) pinned-client lines," \
    "$(grep -ciE 'warn|error' "$out_dir/pgsidecar.log" || true) warn/error lines)"
fi
[[ -f "$out_dir/regression.diffs" ]] && echo "diffs: $out_dir/regression.diffs"
exit "$rc"
