#!/usr/bin/env bash
# Startup time and memory of pgsidecar (and PgBouncer for scale):
#  - ms from exec to the first accepted TCP connection (median of RUNS, 20),
#  - idle RSS (VmRSS) after start,
#  - bytes of RSS per idle client, with 1,000 and 5,000 clients that completed
#    the v3 startup handshake (trust auth), each count on a fresh process.
# Starts a throwaway PostgreSQL 15 under $BENCH_DIR for the pool's database.
# Ports default below the ephemeral range (32768+), where our own client sockets
# could otherwise be sitting on them.
# Env: RUNS (20), CLIENT_COUNTS ("1000 5000"), PORT (25442: PostgreSQL; +1
#      pgsidecar; +2 PgBouncer), TARGETS ("pgsidecar pgbouncer"),
#      PGSIDECAR_BIN (build/app/pgsidecar), BENCH_DIR (/tmp/pgsidecar-startup),
#      PGBOUNCER_BIN (/tmp/pgbouncer-1.25/bin/pgbouncer from bench/build-pgbouncer.sh if built, else /usr/sbin/pgbouncer),
#      TLS (0; 1 = the idle clients connect with TLS: SSLRequest, then a TLS 1.3
#      handshake on a self-signed certificate made here; the poolers answer 'S').
# With TLS=1 the per-client figure is the memory of one idle TLS client connection.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
repo="$PWD"

runs="${RUNS:-20}"
counts="${CLIENT_COUNTS:-1000 5000}"
port="${PORT:-25442}"
targets="${TARGETS:-pgsidecar pgbouncer}"
bin="${PGSIDECAR_BIN:-$repo/build/app/pgsidecar}"
dir="${BENCH_DIR:-/tmp/pgsidecar-startup}"
pgbouncer_bin="${PGBOUNCER_BIN:-$(default_pgbouncer /usr/sbin/pgbouncer)}"
tls="${TLS:-0}"
pgdata="$dir/pgdata"

bench_init  # its ulimit -n: 5,000 clients need 5,000+ descriptors in the daemon and in the load generator
if has_target pgsidecar && [[ ! -x "$bin" ]]; then build_pgsidecar; fi
trap pg_stop EXIT
pg_stop

echo "== PostgreSQL on 127.0.0.1:$port"
make_bench_dir "$dir/pgbouncer"
pg_start_cluster "-c max_connections=100"
pg_add_db bench

# Same shape for both daemons: transaction pooling, trust, no pool warming.
cat >"$dir/pgsidecar.yaml" <<YAML
listen_addr: 127.0.0.1
listen_port: $((port + 1))
auth_type: trust
pool_mode: transaction
default_pool_size: 20
min_pool_size: 0
max_client_conn: 10000
log_level: warn
databases:
  bench: {host: 127.0.0.1, port: $port, dbname: bench}
YAML
tls_settings=()  # KEY=VALUE, for both daemons
if ((tls)); then
  make_cert "$dir/pgbouncer"
  tls_settings=(client_tls_sslmode=prefer "client_tls_key_file=$dir/pgbouncer/key.pem"
    "client_tls_cert_file=$dir/pgbouncer/cert.pem")
  printf '%s\n' "${tls_settings[@]/=/: }" >>"$dir/pgsidecar.yaml"
fi
write_pgbouncer_ini $((port + 2)) 20 10000 "${tls_settings[@]}"

measure() {  # NAME PORT USER -- CMD...
  TLS="$tls" python3 - "$runs" "$counts" "$@" <<'PY'
import os, signal, socket, ssl, statistics, struct, subprocess, sys, time, resource

runs, counts, name, port, user = int(sys.argv[1]), [int(c) for c in sys.argv[2].split()], sys.argv[3], int(sys.argv[4]), sys.argv[5]
cmd = sys.argv[7:]  # argv[6] is "--"
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

def start():
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, user=user or None, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", port))
            return p, (time.perf_counter() - t0) * 1000
        except OSError:
            if p.poll() is not None:
                sys.exit(f"{name}: exited with status {p.returncode} before listening: {' '.join(cmd)}")
            time.sleep(0.0002)
        finally:
            s.close()

def stop(p):
    p.send_signal(signal.SIGINT)
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill(); p.wait()

def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

tls = os.environ.get("TLS") == "1"
tls_ctx = ssl.create_default_context()
tls_ctx.check_hostname = False
tls_ctx.verify_mode = ssl.CERT_NONE

def handshake():
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    if tls:
        s.sendall(struct.pack("!ii", 8, 80877103))
        if s.recv(1) != b"S":
            raise RuntimeError("SSLRequest refused")
        s = tls_ctx.wrap_socket(s)
    body = struct.pack("!i", 196608) + b"user\0bench\0database\0bench\0application_name\0startup-mem\0\0"
    s.sendall(struct.pack("!i", len(body) + 4) + body)
    buf = b""
    while True:  # read messages until ReadyForQuery
        while len(buf) < 5 or len(buf) < 1 + struct.unpack("!i", buf[1:5])[0]:
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("connection closed during startup")
            buf += chunk
        kind, n = buf[0:1], struct.unpack("!i", buf[1:5])[0]
        msg, buf = buf[5:1 + n], buf[1 + n:]
        if kind == b"E":
            raise RuntimeError("ErrorResponse: " + msg.decode(errors="replace"))
        if kind == b"Z":
            return s

times = []
for _ in range(runs):
    p, ms = start()
    times.append(ms)
    stop(p)

p, _ = start()
time.sleep(1)
idle = rss_kb(p.pid)
stop(p)

per_client = {}
for n in counts:
    p, _ = start()
    handshake().close()  # first client: pool/parameter setup, not per-client cost
    time.sleep(0.5)
    before = rss_kb(p.pid)
    try:
        socks = [handshake() for _ in range(n)]
        time.sleep(1)
        per_client[n] = (rss_kb(p.pid) - before) * 1024 / n
        for s in socks:  # RST instead of FIN: no TIME-WAIT pile-up on loopback
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
    except (OSError, RuntimeError) as e:
        print(f"{name}: {n} clients failed: {e}", file=sys.stderr)
        per_client[n] = None
    stop(p)

cells = " ".join(f"{v:>14.0f}" if v is not None else f"{'failed':>14}" for v in per_client.values())
print(f"{name:<10} {statistics.median(times):>11.2f} {min(times):>8.2f} {max(times):>8.2f} {idle:>12} {cells}")
PY
}

echo
header="$(printf '%-10s %11s %8s %8s %12s' target 'startup ms' min max 'idle RSS KB')"
for n in $counts; do header+="$(printf ' %14s' "B/client@$n")"; done
echo "$header   (startup: median of $runs)"
for t in $targets; do
  case "$t" in
    pgsidecar) measure pgsidecar $((port + 1)) "" -- "$bin" -c "$dir/pgsidecar.yaml" ;;
    pgbouncer) measure pgbouncer $((port + 2)) postgres -- "$pgbouncer_bin" -q "$dir/pgbouncer/pgbouncer.ini" ;;
    *) die "unknown target $t" ;;
  esac
done
