#!/usr/bin/env bash
# One command from a fresh Debian 12 machine (as root) to a running pgsidecar:
# installs what the daemon needs (scripts/deps.sh --daemon), builds the daemon
# alone (Release, no tests) into build-demo/, starts a throwaway PostgreSQL 15 under
# /tmp/pgsidecar-demo, writes a config and runs the daemon in the foreground.
# Ctrl-C stops pgsidecar, then PostgreSQL. Rerunning reuses the cluster.
#
# Env: PG_PORT (default 54320, next free one is used), LISTEN_PORT (6432), METRICS_PORT (9127),
#      DEMO_DIR (/tmp/pgsidecar-demo), APP_PASSWORD (app-demo-password).
set -euo pipefail
cd "$(dirname "$0")/.."

demo_dir="${DEMO_DIR:-/tmp/pgsidecar-demo}"
pg_port="${PG_PORT:-54320}"
listen_port="${LISTEN_PORT:-6432}"
metrics_port="${METRICS_PORT:-9127}"
app_password="${APP_PASSWORD:-app-demo-password}"
pgbin=/usr/lib/postgresql/15/bin
pgdata="$demo_dir/pgdata"

if ((EUID != 0)); then
  echo "demo.sh: run as root (it installs packages and runs PostgreSQL as user postgres)" >&2
  exit 1
fi

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
as_postgres() { runuser -u postgres -- "$@"; }

started=$SECONDS
scripts/deps.sh --daemon

echo "== building the daemon (Release) into build-demo/"
cmake -S . -B build-demo -DCMAKE_BUILD_TYPE=Release -DPGSIDECAR_TESTS=OFF >/dev/null
cmake --build build-demo -j "$(nproc)" --target pgsidecar
bin="$PWD/build-demo/app/pgsidecar"
echo "== packages and build took $((SECONDS - started)) s"

# Throwaway cluster: PostgreSQL itself asks for passwords on TCP (scram), so the
# pool logs in with the password from the auth_file, like a real deployment.
mkdir -p "$demo_dir"
chmod 755 "$demo_dir"
if as_postgres "$pgbin/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; then
  echo "== stopping the PostgreSQL left over from an earlier run"
  as_postgres "$pgbin/pg_ctl" -D "$pgdata" -m fast -w stop >/dev/null
fi
if [[ ! -f "$pgdata/PG_VERSION" ]]; then
  echo "== initdb $pgdata"
  rm -rf "$pgdata"
  install -d -o postgres -g postgres -m 700 "$pgdata"
  as_postgres "$pgbin/initdb" -D "$pgdata" -U postgres -E UTF8 --locale=C \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
fi
while port_busy "$pg_port"; do pg_port=$((pg_port + 1)); done

echo "== starting PostgreSQL on 127.0.0.1:$pg_port"
as_postgres "$pgbin/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -w -o \
  "-p $pg_port -k $pgdata -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null

stop_postgres() {
  echo "== stopping PostgreSQL"
  as_postgres "$pgbin/pg_ctl" -D "$pgdata" -m fast -w stop >/dev/null 2>&1 || true
}
trap stop_postgres EXIT

psql_admin() { as_postgres psql -h "$pgdata" -p "$pg_port" -U postgres -X -q -v ON_ERROR_STOP=1 "$@"; }
psql_admin -d postgres <<SQL
SELECT format('CREATE ROLE app LOGIN PASSWORD %L', '$app_password')
  WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'app') \gexec
ALTER ROLE app PASSWORD '$app_password';
SELECT 'CREATE DATABASE app OWNER app'
  WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'app') \gexec
SQL

# Clients: trust. Server login: the password from the PgBouncer-style userlist.
cat >"$demo_dir/userlist.txt" <<USERS
"app" "$app_password"
USERS
chmod 600 "$demo_dir/userlist.txt"
# One example migration for lockd (kept if already there, so edits show as checksum-mismatch).
mkdir -p "$demo_dir/migrations"
[[ -e "$demo_dir/migrations/1_create_notes.up.sql" ]] ||
  echo "CREATE TABLE notes (id bigserial PRIMARY KEY, body text NOT NULL);" >"$demo_dir/migrations/1_create_notes.up.sql"
cat >"$demo_dir/pgsidecar.yaml" <<YAML
# Written by scripts/demo.sh
listen_addr: 127.0.0.1
listen_port: $listen_port
auth_type: trust
auth_file: $demo_dir/userlist.txt
pool_mode: transaction
default_pool_size: 20
max_client_conn: 1000
log_level: info
metrics: {listen: "127.0.0.1:$metrics_port"}
databases:
  app: {host: 127.0.0.1, port: $pg_port, dbname: app}
lockd: {socket_path: $demo_dir/lockd.sock}
migrations: {dir: $demo_dir/migrations, database: app, user: app}
YAML

"$bin" -c "$demo_dir/pgsidecar.yaml" --check-config

if port_busy "$listen_port"; then
  echo "demo.sh: port $listen_port is taken; set LISTEN_PORT" >&2
  exit 1
fi
if port_busy "$metrics_port"; then
  echo "demo.sh: port $metrics_port is taken; set METRICS_PORT" >&2
  exit 1
fi

cat <<EOF2

pgsidecar is starting on 127.0.0.1:$listen_port (transaction pooling, trust auth).
Connect from another terminal:

  psql -h 127.0.0.1 -p $listen_port -U app app
  pgbench -h 127.0.0.1 -p $listen_port -U app -i app && pgbench -h 127.0.0.1 -p $listen_port -U app -c 8 -T 10 app
  curl -s 127.0.0.1:$metrics_port/metrics
  $bin ctl --socket $demo_dir/lockd.sock status     # then: migrate, lock acquire n -- sleep 1

Config: $demo_dir/pgsidecar.yaml   PostgreSQL log: $pgdata/server.log
Ctrl-C stops pgsidecar and PostgreSQL.

EOF2
"$bin" -c "$demo_dir/pgsidecar.yaml"
