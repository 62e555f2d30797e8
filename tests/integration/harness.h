// Integration-test harness: a real PostgreSQL cluster (PgCluster), a throwaway
// Redis (RedisServer), the pgsidecar daemon under test (Daemon), libpq helpers
// that expose SQLSTATEs (also for connection-time errors), a raw wire-protocol
// socket for malformed-input tests, and a subprocess runner (psql, pgbench)
// with a timeout.
//
// One PgCluster is shared by all tests of a process (a GoogleTest global
// environment, see cluster()); a Daemon is started per test. PostgreSQL data
// directories are cloned from a template made once with initdb (cached under
// /tmp, guarded by flock), so each process gets a fresh cluster in well under a
// second and ctest's one-process-per-test mode stays fast.
#pragma once

#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace itest {

using Clock = std::chrono::steady_clock;
using Ms = std::chrono::milliseconds;

// ---------------------------------------------------------------- processes
struct ProcResult {
  int exit_code = -1;     // WEXITSTATUS, or 128+signal, or -1 if it never ran
  bool timed_out = false; // killed after the timeout
  std::string output;     // stdout and stderr interleaved
};

// Runs argv[0] (PATH lookup) with extra "K=V" environment entries, feeding
// stdin_data; kills the process group after timeout_ms.
ProcResult run_process(const std::vector<std::string>& argv, int timeout_ms,
                       const std::vector<std::string>& extra_env = {},
                       const std::string& stdin_data = {});

// Free TCP port on 127.0.0.1 (bound and released; tiny race accepted).
int free_port();
// A listening TCP socket on 127.0.0.1 at a free port (SO_REUSEADDR, close-on-exec), for
// fake servers; sets *port. -1 if bind or listen failed.
int listen_loopback(int* port, int backlog = 16);
// A blocking TCP connection to 127.0.0.1:port (TCP_NODELAY), -1 if refused or not within timeout_ms.
int tcp_connect(int port, int timeout_ms = 5000);
// True if a TCP connect to 127.0.0.1:port succeeds within timeout_ms.
bool port_accepts(int port, int timeout_ms = 200);

std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& data);
std::string tail_lines(const std::string& text, size_t n);
bool is_root();

// ---------------------------------------------------------------- PostgreSQL
// Roles/databases every cluster has:
//   postgres  superuser, local trust only (harness use)
//   app       password 'apppass' stored as SCRAM, owns database app
//   md5user   password 'md5pass' stored as md5 (pg_hba: md5)
//   trustuser no password (pg_hba: trust on 127.0.0.1)
// pg_hba: local trust; host trustuser trust; host md5user md5; host all scram-sha-256.
class PgCluster {
 public:
  enum class StopMode { Fast, Immediate };

  PgCluster() = default;
  ~PgCluster();
  PgCluster(const PgCluster&) = delete;
  PgCluster& operator=(const PgCluster&) = delete;

  // Creates the data directory (from the template) and starts the server.
  // Returns false and fills err on failure.
  bool init(std::string& err);
  bool start(std::string* err = nullptr);
  bool stop(StopMode mode = StopMode::Fast);
  bool restart();
  bool running() const { return running_; }

  int port() const { return port_; }
  const std::string& dir() const { return dir_; }
  const std::string& socket_dir() const { return sock_dir_; }
  std::string log() const;

  // conninfo for the superuser over the unix socket.
  std::string super_conninfo(const std::string& db = "postgres") const;
  // conninfo for a direct TCP connection (bypassing the daemon).
  std::string direct_conninfo(const std::string& user = "app", const std::string& db = "app",
                              const std::string& password = "") const;

  // Runs SQL as superuser through psql (-At, ON_ERROR_STOP). Returns trimmed
  // output; on failure sets *ok=false (if given) and returns psql's output.
  std::string psql(const std::string& sql, const std::string& db = "app", bool* ok = nullptr) const;
  // Same through libpq (faster; for polling loops). Returns the first column of
  // the first row, or nullopt on error.
  std::optional<std::string> scalar(const std::string& sql, const std::string& db = "app") const;

  // Number of client backends of `user` (optionally on `db`) connected over TCP.
  int backend_count(const std::string& user, const std::string& db = "", bool non_idle_only = false) const;
  // Terminates all client backends of `user` (leftovers of earlier tests, e.g. a
  // pg_sleep still running after its client vanished) and waits until they are
  // gone; false on timeout.
  bool terminate_backends(const std::string& user, int timeout_ms = 5000) const;
  // Waits until backend_count(user) <= n; false on timeout.
  bool wait_backends_at_most(const std::string& user, int n, int timeout_ms) const;

 private:
  std::string dir_, data_dir_, sock_dir_, log_path_;
  int port_ = 0;
  bool running_ = false;
};

// SQL counting client backends of `user` over TCP (see PgCluster::backend_count).
std::string backend_count_sql(const std::string& user, const std::string& db = "", bool non_idle_only = false);

// The process-wide cluster (set up by the global environment in harness.cpp).
PgCluster& cluster();

// Path of the pgsidecar binary (compile definition PGSIDECAR_BIN, env override).
std::string daemon_binary();

// ---------------------------------------------------------------- Redis
// A throwaway redis-server on a free loopback port: no persistence, its dir and
// log (redis.log) under /tmp, started per test. start() again after stop() or
// kill() reuses the port, so a client can reconnect to "the same" Redis.
class RedisServer {
 public:
  explicit RedisServer(int port = 0);   // 0: a free port
  ~RedisServer();
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  // Spawns redis-server and waits (5 s) until it accepts connections.
  bool start(std::string* err = nullptr);
  void stop();   // SIGTERM and wait (SIGKILL after 5 s). Idempotent.
  void kill();   // SIGKILL and wait: Redis dying with commands in flight.
  bool running();

  // Before start(): serve TLS only (on port()) with this certificate and key;
  // clients are verified against ca_file when they offer a certificate.
  void use_tls(const std::string& cert_file, const std::string& key_file, const std::string& ca_file);

  int port() const { return port_; }
  // redis://127.0.0.1:PORT, or with TLS rediss://localhost:PORT (the name a test certificate carries).
  std::string url() const;
  // Runs `redis-cli -p PORT ARGS` through sh (so ARGS may be quoted) and returns its trimmed output.
  std::string cli(const std::string& args) const;
  std::string log() const;

 private:
  std::string dir_, log_path_;
  std::string tls_cert_, tls_key_, tls_ca_;   // "" = no TLS
  int port_ = 0;
  pid_t pid_ = -1;
};

// Starts a RedisServer or fails the test with the reason.
#define START_REDIS(r)                             \
  do {                                             \
    std::string start_err_;                        \
    ASSERT_TRUE((r).start(&start_err_)) << start_err_; \
  } while (0)

// ---------------------------------------------------------------- daemon
struct DaemonConfig {
  // Top-level YAML keys -> YAML value text (inserted verbatim, e.g. "2s", "\"\"").
  std::map<std::string, std::string> settings;
  // databases: NAME -> flow mapping text, e.g. "{host: 127.0.0.1, port: 5432}".
  std::map<std::string, std::string> databases;
  // auth_file entries: user -> password (plain, md5..., or SCRAM-SHA-256$...).
  std::map<std::string, std::string> users;
  // Extra YAML text appended verbatim.
  std::string extra;

  DaemonConfig& set(const std::string& k, const std::string& v) { settings[k] = v; return *this; }
  DaemonConfig& db(const std::string& name, const std::string& flow) { databases[name] = flow; return *this; }
  DaemonConfig& user(const std::string& u, const std::string& p) { users[u] = p; return *this; }
  DaemonConfig& erase(const std::string& k) { settings.erase(k); return *this; }

  // Rendered YAML; listen_port / auth_file are filled in by the Daemon, and
  // "@DIR@" anywhere in a value is replaced by the daemon's temp directory.
  std::string yaml() const;
};

// Base config: trust auth, session mode, pool size 5, short timeouts, databases
// app (-> app) and "*" on the shared cluster, auth_file with app/md5user passwords.
DaemonConfig base_config();
// base_config() in transaction pool mode with pool_size servers per pool.
DaemonConfig tx_config(int pool_size = 5);
// Flow mapping for a database entry on the shared cluster; `more` is appended
// inside the braces (e.g. "dbname: app, pool_size: 1").
std::string db_entry(const std::string& more = "");

class Daemon {
 public:
  explicit Daemon(DaemonConfig cfg = base_config());
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Writes the config and auth file without starting (for --check-config).
  void write_config() { write_files(cfg_); }
  // Writes files, spawns, waits (10 s) until the port accepts connections.
  bool start(std::string* err = nullptr);
  // Writes a new config (same port) and sends SIGHUP.
  void reload(const DaemonConfig& cfg);
  void signal(int sig);
  // Waits for the process to exit; returns the raw wait status, nullopt on timeout.
  std::optional<int> wait_exit(int timeout_ms);
  bool running();
  // SIGINT, wait, SIGKILL if needed. Idempotent.
  void stop();

  pid_t pid() const { return pid_; }
  int port() const { return port_; }
  const std::string& dir() const { return dir_; }
  const std::string& config_path() const { return cfg_path_; }
  std::string log() const;
  // Resident set size in kB (from /proc), -1 if unknown.
  long rss_kb() const;
  // Number of open file descriptors (from /proc), -1 if unknown.
  int fd_count() const;

  // libpq conninfo for a client connection through the daemon.
  std::string conninfo(const std::string& user = "app", const std::string& db = "app",
                       const std::string& extra = "") const;

 private:
  void write_files(const DaemonConfig& cfg);

  DaemonConfig cfg_;
  std::string dir_, cfg_path_, auth_path_, log_path_;
  int port_ = 0;
  pid_t pid_ = -1;
  std::optional<int> status_;
};

inline bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// ---------------------------------------------------------------- libpq
// The row of an admin console SHOW (e.g. "SHOW CACHE") whose first column is
// `name`, as column -> value; empty if none, or if the console cannot be reached.
// Logs in as app (the config must list it in stats_users or admin_users).
std::map<std::string, std::string> admin_row(const Daemon& d, const std::string& show, const std::string& name);

struct QResult {
  bool ok = false;              // COMMAND_OK / TUPLES_OK / COPY_*
  ExecStatusType status = PGRES_FATAL_ERROR;
  std::string sqlstate;         // "" if none (e.g. connection lost without ErrorResponse)
  std::string error;            // primary message
  std::vector<std::vector<std::string>> rows;   // NULL -> "<NULL>"

  std::string at(size_t r, size_t c) const { return r < rows.size() && c < rows[r].size() ? rows[r][c] : "<missing>"; }
  std::string scalar() const { return at(0, 0); }
  std::string describe() const;
};

struct ConnDeleter { void operator()(PGconn* c) const { if (c) PQfinish(c); } };
using ConnPtr = std::unique_ptr<PGconn, ConnDeleter>;

struct ConnectResult {
  ConnPtr conn;          // set on success only
  std::string error;     // libpq's message on failure
  std::string sqlstate;  // SQLSTATE of the server's ErrorResponse, if any
  bool ok() const { return conn != nullptr; }
};

// Connects with error verbosity VERBOSE so that a connection-time ErrorResponse's
// SQLSTATE can be recovered. sslmode/gssencmode default to disable unless given.
ConnectResult pg_connect(const std::string& conninfo, int timeout_ms = 10000);
// Connects or records a GoogleTest failure (and returns nullptr).
ConnPtr must_connect(const std::string& conninfo);

QResult exec(PGconn* c, const std::string& sql);
QResult exec_params(PGconn* c, const std::string& sql, const std::vector<std::string>& params);
inline QResult exec(const ConnPtr& c, const std::string& sql) { return exec(c.get(), sql); }
inline QResult exec_params(const ConnPtr& c, const std::string& sql, const std::vector<std::string>& params) {
  return exec_params(c.get(), sql, params);
}
// Runs sql (simple protocol, possibly several statements) and waits at most
// timeout_ms for all its results: a hung daemon fails the test instead of
// hanging it. Returns the first failed result, else the last one; on timeout
// sqlstate is "TIMEOUT".
QResult exec_within(PGconn* c, const std::string& sql, int timeout_ms = 10000);
inline QResult exec_within(const ConnPtr& c, const std::string& sql, int timeout_ms = 10000) {
  return exec_within(c.get(), sql, timeout_ms);
}
// The results of what was sent already (PQsendQuery, PQsendQueryParams ...), as exec_within.
QResult await_results(PGconn* c, int timeout_ms = 10000);
// Takes ownership of r. libpq drops the SQLSTATE of a FATAL ErrorResponse that
// is followed by the connection closing (the result only says "server closed
// the connection unexpectedly"); with c given, the SQLSTATE is then recovered
// from the connection's (verbose) error message.
QResult result_of(PGresult* r, PGconn* c = nullptr);
// Waits up to timeout_ms for a NOTIFY; returns channel:payload or nullopt.
std::optional<std::string> wait_notify(PGconn* c, int timeout_ms);
// Parses "...: 28P01: ..." from a verbose libpq message.
std::string sqlstate_from_message(const std::string& msg);
// "08006" or "57P01" etc: a class-08 error or an admin-shutdown/crash/cannot-connect error.
bool is_connection_failure_state(const std::string& sqlstate);

// ---------------------------------------------------------------- raw wire
namespace wire {
std::string be32(uint32_t v);
std::string be16(uint16_t v);
// Message with a type byte: type + int32 len + payload.
std::string msg(char type, std::string_view payload);
std::string startup(const std::map<std::string, std::string>& params, uint32_t version = 196608);
std::string ssl_request();
std::string gssenc_request();
std::string cancel_request(uint32_t pid, uint32_t key);
std::string query(std::string_view sql);
std::string terminate();
std::map<char, std::string> error_fields(std::string_view payload);
}  // namespace wire

struct BackendMsg {
  char type = 0;
  std::string payload;
};

class RawConn {
 public:
  enum class Status { Ok, Closed, Timeout, Error };
  RawConn() = default;
  ~RawConn();
  RawConn(const RawConn&) = delete;
  RawConn& operator=(const RawConn&) = delete;
  RawConn(RawConn&& o) noexcept { *this = std::move(o); }
  RawConn& operator=(RawConn&& o) noexcept;

  bool connect(int port, int timeout_ms = 3000);
  bool send(std::string_view bytes);   // false if the peer is gone
  Status read_exact(size_t n, std::string& out, int timeout_ms);
  Status read_msg(BackendMsg& m, int timeout_ms);
  // Reads and discards until EOF; Closed on EOF/reset, Timeout otherwise.
  Status wait_closed(int timeout_ms);
  void close();
  void shutdown_write();
  int fd() const { return fd_; }

  // Connects and logs in with a startup packet (no password: trust only).
  // Fills key data. On ErrorResponse returns false with sqlstate set.
  bool login(int port, const std::string& user, const std::string& db, std::string& sqlstate,
             std::string& err);
  // Same on an already connected socket (e.g. after SSLRequest -> 'N').
  bool startup_login(const std::string& user, const std::string& db, std::string& sqlstate, std::string& err);
  // Closes with RST (SO_LINGER 0): an abrupt client death.
  void abort();
  // Runs one simple query; collects DataRow first columns; returns the
  // ErrorResponse SQLSTATE or "" on success. Returns "IO" on I/O failure.
  std::string simple_query(const std::string& sql, std::vector<std::string>* first_col = nullptr,
                           int timeout_ms = 5000);

  uint32_t backend_pid = 0, backend_key = 0;
  std::map<std::string, std::string> params;

 private:
  int fd_ = -1;
  std::string buf_;
};

// Outcome of sending bad input: the first ErrorResponse's SQLSTATE (if any),
// whether the connection was closed, whether we gave up waiting.
struct BadInputOutcome {
  std::string sqlstate;
  bool closed = false;
  bool timed_out = false;
  std::string describe() const;
};
BadInputOutcome await_error_or_close(RawConn& rc, int timeout_ms);

// ---------------------------------------------------------------- misc
// Polls pred every 20 ms until true or timeout.
bool eventually(const std::function<bool()>& pred, int timeout_ms);

// Samples an integer query against the cluster (as superuser) in a thread and
// keeps the maximum seen.
class MaxSampler {
 public:
  MaxSampler(std::string sql, int interval_ms = 20);
  ~MaxSampler();
  void reset();
  int max() const;
  int samples() const;
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The daemon is alive and a brand-new client is served (what: for the message).
void expect_serving(Daemon& d, const char* what);

// Starts a Daemon or fails the test with the reason (and the daemon's stderr).
#define START_DAEMON(d)                             \
  do {                                              \
    std::string start_err_;                         \
    ASSERT_TRUE((d).start(&start_err_)) << start_err_; \
  } while (0)

// Runs SQL as role app (objects owned by app) on database app, via psql.
#define ASSERT_APP_SQL(sql)                                                                  \
  do {                                                                                       \
    bool app_sql_ok_ = false;                                                                \
    std::string app_sql_out_ = ::itest::cluster().psql(std::string("SET ROLE app; ") + (sql), "app", &app_sql_ok_); \
    ASSERT_TRUE(app_sql_ok_) << app_sql_out_;                                                \
  } while (0)

// Time since t0 in ms.
inline long ms_since(Clock::time_point t0) {
  return std::chrono::duration_cast<Ms>(Clock::now() - t0).count();
}

}  // namespace itest
