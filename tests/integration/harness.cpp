#include "harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <regex>
#include <sstream>
#include <thread>

#ifndef PGSIDECAR_BIN
#define PGSIDECAR_BIN "pgsidecar"
#endif

extern char** environ;

namespace fs = std::filesystem;

namespace itest {

// Bump when the template's contents (roles, settings) change.
static constexpr const char* kTemplateVersion = "v3";

// ================================================================ utilities

bool is_root() { return geteuid() == 0; }

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
}

static void append_file(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::app);
  out << data;
}

std::string tail_lines(const std::string& text, size_t n) {
  if (n == 0) return "";
  size_t pos = text.size();
  if (pos > 0 && text[pos - 1] == '\n') --pos;
  size_t count = 0;
  while (pos > 0) {
    size_t nl = text.rfind('\n', pos - 1);
    if (nl == std::string::npos) return text;
    if (++count == n) return text.substr(nl + 1);
    pos = nl;
  }
  return text;
}

static std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  size_t i = 0;
  while (i < s.size() && (s[i] == ' ' || s[i] == '\n')) ++i;
  return s.substr(i);
}

bool eventually(const std::function<bool()>& pred, int timeout_ms) {
  auto t0 = Clock::now();
  for (;;) {
    if (pred()) return true;
    if (ms_since(t0) >= timeout_ms) return false;
    std::this_thread::sleep_for(Ms(20));
  }
}

ProcResult run_process(const std::vector<std::string>& argv, int timeout_ms,
                       const std::vector<std::string>& extra_env, const std::string& stdin_data) {
  ProcResult res;
  if (argv.empty()) return res;

  // Environment: inherited, overridden by extra_env.
  std::vector<std::string> envs;
  for (char** e = environ; *e; ++e) {
    std::string kv = *e;
    std::string key = kv.substr(0, kv.find('='));
    bool overridden = false;
    for (const auto& x : extra_env)
      if (x.substr(0, x.find('=')) == key) overridden = true;
    if (!overridden) envs.push_back(kv);
  }
  for (const auto& x : extra_env) envs.push_back(x);
  std::vector<char*> cargv, cenv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  for (const auto& e : envs) cenv.push_back(const_cast<char*>(e.c_str()));
  cenv.push_back(nullptr);

  int out[2], in[2];
  if (pipe2(out, O_CLOEXEC) != 0) return res;
  if (pipe2(in, O_CLOEXEC) != 0) {
    ::close(out[0]);
    ::close(out[1]);
    return res;
  }
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(out[1], 2);
    execvpe(cargv[0], cargv.data(), cenv.data());
    _exit(127);
  }
  ::close(out[1]);
  ::close(in[0]);
  if (pid < 0) {
    ::close(out[0]);
    ::close(in[1]);
    return res;
  }
  fcntl(in[1], F_SETFL, O_NONBLOCK);
  fcntl(out[0], F_SETFL, O_NONBLOCK);
  size_t in_off = 0;
  int in_fd = in[1];
  if (stdin_data.empty()) {
    ::close(in_fd);
    in_fd = -1;
  }
  auto t0 = Clock::now();
  int status = 0;
  bool exited = false;
  bool out_open = true;
  char buf[65536];
  while (!exited || out_open) {
    if (!res.timed_out && ms_since(t0) > timeout_ms) {
      kill(-pid, SIGKILL);
      kill(pid, SIGKILL);
      res.timed_out = true;
    }
    pollfd pf[2];
    int n = 0;
    if (out_open) pf[n++] = {out[0], POLLIN, 0};
    if (in_fd >= 0) pf[n++] = {in_fd, POLLOUT, 0};
    if (n > 0) poll(pf, n, 20);
    else std::this_thread::sleep_for(Ms(10));
    if (out_open) {
      for (;;) {
        ssize_t r = ::read(out[0], buf, sizeof buf);
        if (r > 0) {
          res.output.append(buf, r);
          continue;
        }
        if (r == 0) out_open = false;
        else if (errno != EAGAIN && errno != EINTR) out_open = false;
        break;
      }
    }
    if (in_fd >= 0) {
      ssize_t w = ::write(in_fd, stdin_data.data() + in_off, stdin_data.size() - in_off);
      if (w > 0) in_off += w;
      if ((w < 0 && errno != EAGAIN && errno != EINTR) || in_off >= stdin_data.size()) {
        ::close(in_fd);
        in_fd = -1;
      }
    }
    if (!exited) {
      pid_t w = waitpid(pid, &status, WNOHANG);
      if (w == pid) exited = true;
    }
    // A daemonized grandchild may keep the pipe open: stop once the child is
    // gone and nothing more is readable.
    if (exited && out_open) {
      ssize_t r = ::read(out[0], buf, sizeof buf);
      if (r > 0) res.output.append(buf, r);
      else break;
    }
  }
  if (in_fd >= 0) ::close(in_fd);
  ::close(out[0]);
  if (WIFEXITED(status)) res.exit_code = WEXITSTATUS(status);
  else if (WIFSIGNALED(status)) res.exit_code = 128 + WTERMSIG(status);
  return res;
}

int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

int listen_loopback(int* port, int backlog) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), len) != 0 || listen(fd, backlog) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    return -1;
  }
  *port = ntohs(a.sin_port);
  return fd;
}

int tcp_connect(int port, int timeout_ms) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  int r = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  if (r != 0 && errno != EINPROGRESS) {
    ::close(fd);
    return -1;
  }
  if (r != 0) {
    pollfd p{fd, POLLOUT, 0};
    if (poll(&p, 1, timeout_ms) != 1) {
      ::close(fd);
      return -1;
    }
    int err = 0;
    socklen_t l = sizeof err;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l);
    if (err != 0) {
      ::close(fd);
      return -1;
    }
  }
  int flags = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

bool port_accepts(int port, int timeout_ms) {
  int fd = tcp_connect(port, timeout_ms);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

// ================================================================ PostgreSQL

static std::string pg_bindir() {
  static std::string dir = [] {
    if (const char* e = getenv("PGSIDECAR_PG_BINDIR")) return std::string(e);
    ProcResult r = run_process({"pg_config", "--bindir"}, 10000);
    std::string d = trim(r.output);
    if (r.exit_code == 0 && fs::exists(d + "/initdb")) return d;
    std::string best;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator("/usr/lib/postgresql", ec)) {
      std::string cand = e.path().string() + "/bin";
      if (fs::exists(cand + "/initdb") && cand > best) best = cand;
    }
    return best.empty() ? std::string("/usr/lib/postgresql/15/bin") : best;
  }();
  return dir;
}

// Prefix for running a PostgreSQL server binary as the postgres user.
static std::vector<std::string> as_postgres(std::vector<std::string> argv) {
  if (!is_root()) return argv;
  std::vector<std::string> v = {"runuser", "-u", "postgres", "--"};
  v.insert(v.end(), argv.begin(), argv.end());
  return v;
}

static void chown_postgres(const std::string& path) {
  if (!is_root()) return;
  passwd* pw = getpwnam("postgres");
  if (pw) {
    if (chown(path.c_str(), pw->pw_uid, pw->pw_gid) != 0) perror("chown");
  }
}

static const char* kPgConf =
    "\n# --- pgsidecar integration tests ---\n"
    "listen_addresses = '127.0.0.1'\n"
    "max_connections = 300\n"
    "shared_buffers = 32MB\n"
    "fsync = off\n"
    "synchronous_commit = off\n"
    "full_page_writes = off\n"
    "password_encryption = 'scram-sha-256'\n"
    "log_min_messages = warning\n"
    "log_connections = off\n"
    "max_wal_size = 1GB\n"
    "autovacuum = off\n";

static const char* kPgHba =
    "local all all trust\n"
    "host all trustuser 127.0.0.1/32 trust\n"
    "host all md5user 127.0.0.1/32 md5\n"
    "host all all 127.0.0.1/32 scram-sha-256\n";

static const char* kSetupSql =
    "CREATE ROLE app LOGIN PASSWORD 'apppass';\n"
    "SET password_encryption = 'md5';\n"
    "CREATE ROLE md5user LOGIN PASSWORD 'md5pass';\n"
    "RESET password_encryption;\n"
    "CREATE ROLE trustuser LOGIN;\n"
    "CREATE DATABASE app OWNER app;\n";

static const char* kSetupAppSql =
    "GRANT ALL ON SCHEMA public TO PUBLIC;\n";

static bool pg_ctl(const std::string& data, const std::string& log, const std::string& action,
                   const std::string& extra_opt, std::string* out) {
  std::vector<std::string> argv = {pg_bindir() + "/pg_ctl", "-D", data, "-w", "-t", "60"};
  if (!log.empty()) {
    argv.push_back("-l");
    argv.push_back(log);
  }
  if (!extra_opt.empty()) {
    argv.push_back("-o");
    argv.push_back(extra_opt);
  }
  if (action == "stop-fast" || action == "stop-immediate") {
    argv.push_back("-m");
    argv.push_back(action == "stop-fast" ? "fast" : "immediate");
    argv.push_back("stop");
  } else {
    argv.push_back(action);
  }
  ProcResult r = run_process(as_postgres(argv), 90000);
  if (out) *out = r.output;
  return r.exit_code == 0;
}

static bool run_psql_socket(const std::string& sockdir, int port, const std::string& db,
                            const std::string& sql, std::string& out) {
  // Through stdin (-f -) so that each statement runs on its own (CREATE DATABASE
  // cannot run in the implicit transaction of a multi-statement -c).
  ProcResult r = run_process({"psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", sockdir,
                              "-p", std::to_string(port), "-U", "postgres", "-d", db, "-f", "-"},
                             60000, {}, sql + "\n");
  out = r.output;
  return r.exit_code == 0 && !r.timed_out;
}

// Stops clusters and removes dirs left behind by test processes that died.
static void cleanup_stale() {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/tmp", ec)) {
    std::string name = e.path().filename().string();
    bool cluster = name.rfind("pgsc-itest-", 0) == 0;
    bool daemon = name.rfind("pgsc-daemon-", 0) == 0 || name.rfind("pgsc-redis-", 0) == 0;
    if (!cluster && !daemon) continue;
    std::string owner = trim(read_file(e.path().string() + "/owner.pid"));
    if (owner.empty()) continue;
    pid_t pid = static_cast<pid_t>(atoi(owner.c_str()));
    if (pid <= 0 || kill(pid, 0) == 0 || errno != ESRCH) continue;
    if (cluster && fs::exists(e.path() / "data" / "postmaster.pid")) {
      pg_ctl((e.path() / "data").string(), "", "stop-immediate", "", nullptr);
    }
    fs::remove_all(e.path(), ec);
  }
}

static std::string template_dir() {
  size_t h = std::hash<std::string>{}(pg_bindir() + kTemplateVersion);
  return "/tmp/pgsidecar-itest-template-" + std::to_string(getuid()) + "-" + std::to_string(h % 1000000007);
}

static bool build_template(const std::string& tdir, std::string& err) {
  std::error_code ec;
  fs::remove_all(tdir, ec);
  if (mkdir(tdir.c_str(), 0700) != 0) {
    err = "mkdir " + tdir + ": " + strerror(errno);
    return false;
  }
  chown_postgres(tdir);
  std::string data = tdir + "/data";
  ProcResult r = run_process(as_postgres({pg_bindir() + "/initdb", "-D", data, "-U", "postgres", "-A", "trust",
                                          "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"}),
                             120000);
  if (r.exit_code != 0) {
    err = "initdb failed: " + r.output;
    return false;
  }
  append_file(data + "/postgresql.conf", kPgConf);
  write_file(data + "/pg_hba.conf", kPgHba);
  int port = free_port();
  std::string out;
  std::string log = tdir + "/template.log";
  if (!pg_ctl(data, log, "start", "-p " + std::to_string(port) + " -k " + tdir, &out)) {
    err = "template start failed: " + out + read_file(log);
    return false;
  }
  bool ok = run_psql_socket(tdir, port, "postgres", kSetupSql, out);
  std::string out2;
  ok = ok && run_psql_socket(tdir, port, "app", kSetupAppSql, out2);
  pg_ctl(data, "", "stop-fast", "", nullptr);
  if (!ok) {
    err = "template setup SQL failed: " + out + out2;
    return false;
  }
  fs::remove(log, ec);
  write_file(tdir + "/READY", "ok\n");
  return true;
}

static bool ensure_template(std::string& tdir, std::string& err) {
  tdir = template_dir();
  std::string lock = tdir + ".lock";
  int fd = open(lock.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) {
    err = "open " + lock + ": " + strerror(errno);
    return false;
  }
  flock(fd, LOCK_EX);
  bool ok = true;
  if (!fs::exists(tdir + "/READY")) ok = build_template(tdir, err);
  flock(fd, LOCK_UN);
  ::close(fd);
  return ok;
}

PgCluster::~PgCluster() {
  if (running_) {
    if (!stop(StopMode::Fast)) stop(StopMode::Immediate);
  }
  if (!dir_.empty()) {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
}

bool PgCluster::init(std::string& err) {
  cleanup_stale();
  std::string tdir;
  if (!ensure_template(tdir, err)) return false;
  char tmpl[] = "/tmp/pgsc-itest-XXXXXX";
  if (!mkdtemp(tmpl)) {
    err = std::string("mkdtemp: ") + strerror(errno);
    return false;
  }
  dir_ = tmpl;
  chmod(dir_.c_str(), 0700);
  write_file(dir_ + "/owner.pid", std::to_string(getpid()) + "\n");
  chown_postgres(dir_);
  data_dir_ = dir_ + "/data";
  sock_dir_ = dir_;
  log_path_ = dir_ + "/postgres.log";
  ProcResult r = run_process({"cp", "-a", tdir + "/data", data_dir_}, 60000);
  if (r.exit_code != 0) {
    err = "copy template: " + r.output;
    return false;
  }
  port_ = free_port();
  append_file(data_dir_ + "/postgresql.conf", "port = " + std::to_string(port_) +
                                                  "\nunix_socket_directories = '" + sock_dir_ + "'\n");
  std::string e;
  if (!start(&e)) {
    err = e;
    return false;
  }
  return true;
}

bool PgCluster::start(std::string* err) {
  std::string out;
  if (!pg_ctl(data_dir_, log_path_, "start", "", &out)) {
    if (err) *err = "pg_ctl start failed: " + out + "\n" + tail_lines(log(), 30);
    return false;
  }
  running_ = true;
  return true;
}

bool PgCluster::stop(StopMode mode) {
  if (!running_) return true;
  bool ok = pg_ctl(data_dir_, "", mode == StopMode::Fast ? "stop-fast" : "stop-immediate", "", nullptr);
  if (ok) running_ = false;
  return ok;
}

bool PgCluster::restart() { return stop(StopMode::Fast) && start(); }

std::string PgCluster::log() const { return read_file(log_path_); }

std::string PgCluster::super_conninfo(const std::string& db) const {
  return "host=" + sock_dir_ + " port=" + std::to_string(port_) + " user=postgres dbname=" + db;
}

std::string PgCluster::direct_conninfo(const std::string& user, const std::string& db,
                                       const std::string& password) const {
  std::string s = "host=127.0.0.1 port=" + std::to_string(port_) + " user=" + user + " dbname=" + db;
  if (!password.empty()) s += " password=" + password;
  return s;
}

std::string PgCluster::psql(const std::string& sql, const std::string& db, bool* ok) const {
  std::string out;
  bool r = run_psql_socket(sock_dir_, port_, db, sql, out);
  if (ok) *ok = r;
  return trim(out);
}

std::optional<std::string> PgCluster::scalar(const std::string& sql, const std::string& db) const {
  ConnectResult cr = pg_connect(super_conninfo(db));
  if (!cr.ok()) return std::nullopt;
  QResult q = exec(cr.conn.get(), sql);
  if (!q.ok || q.rows.empty() || q.rows[0].empty()) return std::nullopt;
  return q.rows[0][0];
}

std::string backend_count_sql(const std::string& user, const std::string& db, bool non_idle_only) {
  std::string sql =
      "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
      "AND client_addr IS NOT NULL AND usename = '" + user + "'";
  if (!db.empty()) sql += " AND datname = '" + db + "'";
  if (non_idle_only) sql += " AND state <> 'idle'";
  return sql;
}

int PgCluster::backend_count(const std::string& user, const std::string& db, bool non_idle_only) const {
  auto v = scalar(backend_count_sql(user, db, non_idle_only), "postgres");
  return v ? atoi(v->c_str()) : -1;
}

bool PgCluster::terminate_backends(const std::string& user, int timeout_ms) const {
  scalar("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE backend_type = 'client backend' "
         "AND usename = '" + user + "' AND pid <> pg_backend_pid()",
         "postgres");
  return wait_backends_at_most(user, 0, timeout_ms);
}

bool PgCluster::wait_backends_at_most(const std::string& user, int n, int timeout_ms) const {
  return eventually([&] {
    int c = backend_count(user);
    return c >= 0 && c <= n;
  }, timeout_ms);
}

// ---------------------------------------------------------------- global env

static PgCluster* g_cluster = nullptr;

class ClusterEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    ::signal(SIGPIPE, SIG_IGN);
    g_cluster = new PgCluster();
    std::string err;
    if (!g_cluster->init(err)) {
      std::cerr << "FATAL: could not start PostgreSQL for the integration tests:\n" << err << std::endl;
      delete g_cluster;
      g_cluster = nullptr;
      std::exit(1);
    }
  }
  void TearDown() override {
    delete g_cluster;
    g_cluster = nullptr;
  }
};

[[maybe_unused]] static ::testing::Environment* const g_env =
    ::testing::AddGlobalTestEnvironment(new ClusterEnvironment);

PgCluster& cluster() {
  if (!g_cluster) {
    std::cerr << "cluster() used outside the test environment" << std::endl;
    std::abort();
  }
  return *g_cluster;
}

std::string daemon_binary() {
  if (const char* e = getenv("PGSIDECAR_BIN")) return e;
  return PGSIDECAR_BIN;
}

// ================================================================ Redis

RedisServer::RedisServer(int port) : port_(port ? port : free_port()) {
  char tmpl[] = "/tmp/pgsc-redis-XXXXXX";
  if (mkdtemp(tmpl)) dir_ = tmpl;
  write_file(dir_ + "/owner.pid", std::to_string(getpid()) + "\n");
  log_path_ = dir_ + "/redis.log";
}

// Forks and execs args[0] (PATH lookup) with stdin from /dev/null and stdout and
// stderr to out_fd, default signal handling, and death with this process.
// Returns the child's pid, or -1 if fork failed.
static pid_t spawn_child(const std::vector<std::string>& args, int out_fd) {
  std::vector<std::string> copy = args;
  std::vector<char*> argv;
  for (auto& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  int nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(126);
    dup2(nullfd, 0);
    dup2(out_fd, 1);
    dup2(out_fd, 2);
    ::signal(SIGPIPE, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execvp(argv[0], argv.data());
    _exit(127);
  }
  ::close(nullfd);
  return pid;
}

RedisServer::~RedisServer() {
  stop();
  if (::testing::Test::HasFailure()) {
    std::cerr << "----- redis-server log (" << log_path_ << ", last 30 lines) -----\n"
              << tail_lines(log(), 30) << "\n----- end of redis-server log -----" << std::endl;
  }
  std::error_code ec;
  if (!dir_.empty()) fs::remove_all(dir_, ec);
}

bool RedisServer::start(std::string* err) {
  if (running()) return true;
  std::vector<std::string> args = {"redis-server", "--bind", "127.0.0.1", "--port", std::to_string(port_),
                                   "--save", "", "--appendonly", "no", "--daemonize", "no",
                                   "--dir", dir_, "--logfile", log_path_};
  if (!tls_cert_.empty()) {
    args[4] = "0";   // no plain TCP
    args.insert(args.end(), {"--tls-port", std::to_string(port_), "--tls-cert-file", tls_cert_, "--tls-key-file",
                             tls_key_, "--tls-ca-cert-file", tls_ca_, "--tls-auth-clients", "optional"});
  }
  int nullfd = open("/dev/null", O_RDWR | O_CLOEXEC);
  pid_t pid = spawn_child(args, nullfd);   // redis-server logs to --logfile
  ::close(nullfd);
  if (pid < 0) {
    if (err) *err = "fork failed";
    return false;
  }
  pid_ = pid;
  auto t0 = Clock::now();
  while (ms_since(t0) < 5000) {
    int st = 0;
    if (waitpid(pid_, &st, WNOHANG) == pid_) {
      pid_ = -1;
      if (err) *err = "redis-server exited during startup (status " + std::to_string(st) + "):\n" + tail_lines(log(), 20);
      return false;
    }
    if (port_accepts(port_, 200)) return true;
    std::this_thread::sleep_for(Ms(10));
  }
  if (err) *err = "redis-server did not accept connections within 5 s:\n" + tail_lines(log(), 20);
  return false;
}

bool RedisServer::running() {
  if (pid_ <= 0) return false;
  int st = 0;
  if (waitpid(pid_, &st, WNOHANG) != pid_) return true;
  pid_ = -1;
  return false;
}

// Waits for the process; SIGKILL if it takes longer than timeout_ms.
static void reap(pid_t pid, int timeout_ms) {
  auto t0 = Clock::now();
  while (waitpid(pid, nullptr, WNOHANG) == 0) {
    if (ms_since(t0) > timeout_ms) {
      ::kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      return;
    }
    std::this_thread::sleep_for(Ms(5));
  }
}

void RedisServer::stop() {
  if (!running()) return;
  ::kill(pid_, SIGTERM);
  reap(pid_, 5000);
  pid_ = -1;
}

void RedisServer::kill() {
  if (!running()) return;
  ::kill(pid_, SIGKILL);
  reap(pid_, 5000);
  pid_ = -1;
}

void RedisServer::use_tls(const std::string& cert_file, const std::string& key_file, const std::string& ca_file) {
  tls_cert_ = cert_file;
  tls_key_ = key_file;
  tls_ca_ = ca_file;
}

std::string RedisServer::url() const {
  return (tls_cert_.empty() ? "redis://127.0.0.1:" : "rediss://localhost:") + std::to_string(port_);
}

std::string RedisServer::cli(const std::string& args) const {
  std::string tls = tls_cert_.empty() ? "" : "--tls --cacert '" + tls_ca_ + "' ";
  return trim(run_process({"sh", "-c", "redis-cli " + tls + "-p " + std::to_string(port_) + " " + args}, 10000).output);
}

std::string RedisServer::log() const { return read_file(log_path_); }

// ================================================================ daemon

std::string DaemonConfig::yaml() const {
  std::string y = "# generated by the pgsidecar integration tests\n";
  for (const auto& [k, v] : settings) y += k + ": " + v + "\n";
  if (!databases.empty()) {
    y += "databases:\n";
    for (const auto& [name, flow] : databases) y += "  \"" + name + "\": " + flow + "\n";
  }
  y += extra;
  return y;
}

std::string db_entry(const std::string& more) {
  std::string s = "{host: 127.0.0.1, port: " + std::to_string(cluster().port());
  if (!more.empty()) s += ", " + more;
  return s + "}";
}

DaemonConfig base_config() {
  DaemonConfig c;
  c.set("listen_addr", "127.0.0.1")
      .set("unix_socket_dir", "\"\"")
      .set("auth_type", "trust")
      .set("pool_mode", "session")
      .set("default_pool_size", "5")
      .set("min_pool_size", "0")
      .set("reserve_pool_size", "0")
      .set("max_client_conn", "400")
      .set("query_wait_timeout", "5s")
      .set("client_login_timeout", "5s")
      .set("shutdown_timeout", "5s")
      .set("server_check_delay", "1s")
      .set("server_login_retry", "500ms")
      .set("server_connect_timeout", "3s")
      .set("metrics", "{listen: \"\"}")   // tests run daemons side by side; metrics_test.cpp picks a port
      .set("lockd", "{socket_path: \"\"}")   // likewise; lockd_test.cpp puts its socket in the daemon's dir
      .set("log_level", getenv("PGSIDECAR_ITEST_LOG_LEVEL") ? getenv("PGSIDECAR_ITEST_LOG_LEVEL") : "info");
  c.db("app", db_entry("dbname: app"));
  c.db("*", db_entry());
  c.user("app", "apppass");
  c.user("md5user", "md5pass");
  return c;
}

DaemonConfig tx_config(int pool_size) {
  DaemonConfig c = base_config();
  c.set("pool_mode", "transaction").set("default_pool_size", std::to_string(pool_size));
  return c;
}

Daemon::Daemon(DaemonConfig cfg) : cfg_(std::move(cfg)) {
  char tmpl[] = "/tmp/pgsc-daemon-XXXXXX";
  if (mkdtemp(tmpl)) dir_ = tmpl;
  write_file(dir_ + "/owner.pid", std::to_string(getpid()) + "\n");
  cfg_path_ = dir_ + "/pgsidecar.yaml";
  auth_path_ = dir_ + "/userlist.txt";
  log_path_ = dir_ + "/stderr.log";
  port_ = free_port();
}

static std::string userlist_quote(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"') o += "\"\"";
    else o += c;
  }
  return o + "\"";
}

void Daemon::write_files(const DaemonConfig& cfg) {
  DaemonConfig c = cfg;
  c.settings["listen_port"] = std::to_string(port_);
  if (!c.settings.count("auth_file")) c.settings["auth_file"] = "\"" + auth_path_ + "\"";
  std::string ul = "; generated by the pgsidecar integration tests\n";
  for (const auto& [u, p] : c.users) ul += userlist_quote(u) + " " + userlist_quote(p) + "\n";
  write_file(auth_path_, ul);
  std::string y = c.yaml();
  for (size_t pos; (pos = y.find("@DIR@")) != std::string::npos;) y.replace(pos, 5, dir_);
  write_file(cfg_path_, y);
  cfg_ = cfg;
}

bool Daemon::start(std::string* err) {
  write_files(cfg_);
  std::string bin = daemon_binary();
  if (access(bin.c_str(), X_OK) != 0) {
    if (err) *err = "daemon binary not found: " + bin;
    return false;
  }
  std::vector<std::string> args = {bin, "-c", cfg_path_};
  int logfd = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
  pid_t pid = spawn_child(args, logfd);
  ::close(logfd);
  if (pid < 0) {
    if (err) *err = "fork failed";
    return false;
  }
  pid_ = pid;
  status_.reset();
  auto t0 = Clock::now();
  while (ms_since(t0) < 10000) {
    int st = 0;
    if (waitpid(pid_, &st, WNOHANG) == pid_) {
      status_ = st;
      if (err) *err = "daemon exited during startup (status " + std::to_string(st) + "):\n" + tail_lines(log(), 50);
      return false;
    }
    if (port_accepts(port_, 200)) return true;
    std::this_thread::sleep_for(Ms(20));
  }
  if (err) *err = "daemon did not accept connections within 10 s:\n" + tail_lines(log(), 50);
  return false;
}

void Daemon::reload(const DaemonConfig& cfg) {
  write_files(cfg);
  signal(SIGHUP);
}

void Daemon::signal(int sig) {
  if (pid_ > 0 && !status_) kill(pid_, sig);
}

std::optional<int> Daemon::wait_exit(int timeout_ms) {
  if (status_) return status_;
  if (pid_ <= 0) return std::nullopt;
  auto t0 = Clock::now();
  for (;;) {
    int st = 0;
    pid_t w = waitpid(pid_, &st, WNOHANG);
    if (w == pid_) {
      status_ = st;
      return status_;
    }
    if (w < 0 && errno == ECHILD) {
      status_ = 0;
      return status_;
    }
    if (ms_since(t0) >= timeout_ms) return std::nullopt;
    std::this_thread::sleep_for(Ms(5));
  }
}

bool Daemon::running() {
  if (pid_ <= 0 || status_) return false;
  return !wait_exit(0).has_value();
}

void Daemon::stop() {
  if (!running()) return;
  signal(SIGINT);
  if (!wait_exit(3000)) {
    std::cerr << "[harness] daemon did not exit 3 s after SIGINT; sending SIGKILL" << std::endl;
    kill(pid_, SIGKILL);
    wait_exit(5000);
  }
}

Daemon::~Daemon() {
  stop();
  if (::testing::Test::HasFailure()) {
    std::cerr << "----- pgsidecar stderr (" << log_path_ << ", last 150 lines) -----\n"
              << tail_lines(log(), 150) << "\n----- end of pgsidecar stderr -----" << std::endl;
    std::cerr << "----- config -----\n" << read_file(cfg_path_) << "----- end of config -----" << std::endl;
  }
  std::error_code ec;
  if (!dir_.empty()) fs::remove_all(dir_, ec);
}

std::string Daemon::log() const { return read_file(log_path_); }

long Daemon::rss_kb() const {
  std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return atol(line.c_str() + 6);
  }
  return -1;
}

int Daemon::fd_count() const {
  std::error_code ec;
  int n = 0;
  for (auto it = fs::directory_iterator("/proc/" + std::to_string(pid_) + "/fd", ec); !ec && it != fs::directory_iterator();
       it.increment(ec))
    ++n;
  return ec ? -1 : n;
}

std::string Daemon::conninfo(const std::string& user, const std::string& db, const std::string& extra) const {
  std::string s = "host=127.0.0.1 port=" + std::to_string(port_) + " user=" + user + " dbname=" + db;
  if (!extra.empty()) s += " " + extra;
  return s;
}

// ================================================================ libpq

std::string sqlstate_from_message(const std::string& msg) {
  static const std::regex re("(FATAL|ERROR|PANIC):  ([0-9A-Z]{5}): ");
  std::smatch m;
  if (std::regex_search(msg, m, re)) return m[2];
  return "";
}

bool is_connection_failure_state(const std::string& s) {
  return s.rfind("08", 0) == 0 || s == "57P01" || s == "57P02" || s == "57P03";
}

std::map<std::string, std::string> admin_row(const Daemon& d, const std::string& show, const std::string& name) {
  std::map<std::string, std::string> out;
  ConnectResult admin = pg_connect(d.conninfo("app", "pgsidecar"), 3000);
  if (!admin.ok()) return out;
  PGresult* res = PQexec(admin.conn.get(), show.c_str());
  for (int row = 0; row < PQntuples(res); row++) {
    if (name != PQgetvalue(res, row, 0)) continue;
    for (int col = 0; col < PQnfields(res); col++) out[PQfname(res, col)] = PQgetvalue(res, row, col);
  }
  PQclear(res);
  return out;
}

ConnectResult pg_connect(const std::string& conninfo, int timeout_ms) {
  ConnectResult res;
  std::string ci = conninfo;
  if (ci.find("sslmode") == std::string::npos) ci += " sslmode=disable";
  if (ci.find("gssencmode") == std::string::npos) ci += " gssencmode=disable";
  PGconn* c = PQconnectStart(ci.c_str());
  if (!c) {
    res.error = "PQconnectStart returned null";
    return res;
  }
  ConnPtr holder(c);
  PQsetErrorVerbosity(c, PQERRORS_VERBOSE);
  if (PQstatus(c) == CONNECTION_BAD) {
    res.error = PQerrorMessage(c);
    res.sqlstate = sqlstate_from_message(res.error);
    return res;
  }
  auto t0 = Clock::now();
  PostgresPollingStatusType st = PGRES_POLLING_WRITING;
  for (;;) {
    if (st == PGRES_POLLING_OK) break;
    if (st == PGRES_POLLING_FAILED) {
      res.error = PQerrorMessage(c);
      res.sqlstate = sqlstate_from_message(res.error);
      return res;
    }
    int left = timeout_ms - static_cast<int>(ms_since(t0));
    if (left <= 0) {
      res.error = "connection attempt timed out after " + std::to_string(timeout_ms) + " ms";
      return res;
    }
    pollfd p{PQsocket(c), static_cast<short>(st == PGRES_POLLING_READING ? POLLIN : POLLOUT), 0};
    poll(&p, 1, left);
    st = PQconnectPoll(c);
  }
  res.conn = std::move(holder);
  return res;
}

ConnPtr must_connect(const std::string& conninfo) {
  ConnectResult r = pg_connect(conninfo);
  if (!r.ok()) {
    ADD_FAILURE() << "connect failed (" << conninfo << "): [" << r.sqlstate << "] " << r.error;
    return nullptr;
  }
  return std::move(r.conn);
}

QResult result_of(PGresult* r, PGconn* c) {
  QResult q;
  if (!r) {
    q.error = "no result";
    if (c) {
      q.error = trim(PQerrorMessage(c));
      q.sqlstate = sqlstate_from_message(q.error);
    }
    return q;
  }
  q.status = PQresultStatus(r);
  q.ok = q.status == PGRES_COMMAND_OK || q.status == PGRES_TUPLES_OK || q.status == PGRES_COPY_IN ||
         q.status == PGRES_COPY_OUT || q.status == PGRES_EMPTY_QUERY;
  if (const char* s = PQresultErrorField(r, PG_DIAG_SQLSTATE)) q.sqlstate = s;
  if (const char* m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY)) q.error = m;
  else if (!q.ok) q.error = trim(PQresultErrorMessage(r));
  if (!q.ok && q.sqlstate.empty() && c) q.sqlstate = sqlstate_from_message(PQerrorMessage(c));
  if (q.status == PGRES_TUPLES_OK) {
    int nr = PQntuples(r), nc = PQnfields(r);
    q.rows.resize(nr);
    for (int i = 0; i < nr; ++i)
      for (int j = 0; j < nc; ++j) q.rows[i].push_back(PQgetisnull(r, i, j) ? "<NULL>" : PQgetvalue(r, i, j));
  }
  PQclear(r);
  return q;
}

std::string QResult::describe() const {
  std::string s = std::string(PQresStatus(status));
  if (!sqlstate.empty() || !error.empty()) s += " [" + sqlstate + "] " + error;
  if (!rows.empty()) s += " rows=" + std::to_string(rows.size()) + " first=" + at(0, 0);
  return s;
}

QResult exec(PGconn* c, const std::string& sql) {
  if (!c) {
    QResult q;
    q.error = "no connection";
    return q;
  }
  return result_of(PQexec(c, sql.c_str()), c);
}

QResult exec_params(PGconn* c, const std::string& sql, const std::vector<std::string>& params) {
  if (!c) {
    QResult q;
    q.error = "no connection";
    return q;
  }
  std::vector<const char*> vals;
  for (const auto& p : params) vals.push_back(p.c_str());
  return result_of(PQexecParams(c, sql.c_str(), static_cast<int>(vals.size()), nullptr, vals.data(), nullptr,
                                nullptr, 0),
                   c);
}

std::optional<std::string> wait_notify(PGconn* c, int timeout_ms) {
  auto t0 = Clock::now();
  for (;;) {
    PQconsumeInput(c);
    if (PGnotify* n = PQnotifies(c)) {
      std::string s = std::string(n->relname) + ":" + n->extra;
      PQfreemem(n);
      return s;
    }
    int left = timeout_ms - static_cast<int>(ms_since(t0));
    if (left <= 0) return std::nullopt;
    pollfd p{PQsocket(c), POLLIN, 0};
    poll(&p, 1, std::min(left, 100));
  }
}

// ================================================================ raw wire

namespace wire {
std::string be32(uint32_t v) {
  std::string s(4, '\0');
  s[0] = static_cast<char>(v >> 24);
  s[1] = static_cast<char>(v >> 16);
  s[2] = static_cast<char>(v >> 8);
  s[3] = static_cast<char>(v);
  return s;
}
std::string be16(uint16_t v) {
  std::string s(2, '\0');
  s[0] = static_cast<char>(v >> 8);
  s[1] = static_cast<char>(v);
  return s;
}
std::string msg(char type, std::string_view payload) {
  return std::string(1, type) + be32(static_cast<uint32_t>(payload.size() + 4)) + std::string(payload);
}
std::string startup(const std::map<std::string, std::string>& params, uint32_t version) {
  std::string body = be32(version);
  for (const auto& [k, v] : params) {
    body += k;
    body.push_back('\0');
    body += v;
    body.push_back('\0');
  }
  body.push_back('\0');
  return be32(static_cast<uint32_t>(body.size() + 4)) + body;
}
std::string ssl_request() { return be32(8) + be32(80877103); }
std::string gssenc_request() { return be32(8) + be32(80877104); }
std::string cancel_request(uint32_t pid, uint32_t key) { return be32(16) + be32(80877102) + be32(pid) + be32(key); }
std::string query(std::string_view sql) {
  std::string p(sql);
  p.push_back('\0');
  return msg('Q', p);
}
std::string terminate() { return msg('X', ""); }
std::map<char, std::string> error_fields(std::string_view payload) {
  std::map<char, std::string> f;
  size_t i = 0;
  while (i < payload.size() && payload[i] != '\0') {
    char code = payload[i++];
    size_t end = payload.find('\0', i);
    if (end == std::string_view::npos) end = payload.size();
    f[code] = std::string(payload.substr(i, end - i));
    i = end + 1;
  }
  return f;
}
}  // namespace wire

static uint32_t get32(const std::string& s, size_t off) {
  if (off + 4 > s.size()) return 0;
  auto b = [&](size_t i) { return static_cast<uint32_t>(static_cast<unsigned char>(s[off + i])); };
  return (b(0) << 24) | (b(1) << 16) | (b(2) << 8) | b(3);
}

RawConn::~RawConn() { close(); }

RawConn& RawConn::operator=(RawConn&& o) noexcept {
  if (this != &o) {
    close();
    fd_ = o.fd_;
    buf_ = std::move(o.buf_);
    backend_pid = o.backend_pid;
    backend_key = o.backend_key;
    params = std::move(o.params);
    o.fd_ = -1;
    o.buf_.clear();
  }
  return *this;
}

void RawConn::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  buf_.clear();
}

void RawConn::shutdown_write() {
  if (fd_ >= 0) ::shutdown(fd_, SHUT_WR);
}

bool RawConn::connect(int port, int timeout_ms) {
  close();
  fd_ = tcp_connect(port, timeout_ms);
  return fd_ >= 0;
}

bool RawConn::send(std::string_view bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t w = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    off += static_cast<size_t>(w);
  }
  return true;
}

RawConn::Status RawConn::read_exact(size_t n, std::string& out, int timeout_ms) {
  auto t0 = Clock::now();
  while (buf_.size() < n) {
    if (fd_ < 0) return Status::Error;
    int left = timeout_ms - static_cast<int>(ms_since(t0));
    if (left <= 0) return Status::Timeout;
    pollfd p{fd_, POLLIN, 0};
    int pr = poll(&p, 1, left);
    if (pr == 0) return Status::Timeout;
    if (pr < 0) {
      if (errno == EINTR) continue;
      return Status::Error;
    }
    char tmp[65536];
    ssize_t r = ::recv(fd_, tmp, sizeof tmp, 0);
    if (r == 0) return Status::Closed;
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      if (errno == ECONNRESET || errno == EPIPE) return Status::Closed;
      return Status::Error;
    }
    buf_.append(tmp, static_cast<size_t>(r));
  }
  out = buf_.substr(0, n);
  buf_.erase(0, n);
  return Status::Ok;
}

RawConn::Status RawConn::read_msg(BackendMsg& m, int timeout_ms) {
  auto t0 = Clock::now();
  std::string hdr;
  Status s = read_exact(5, hdr, timeout_ms);
  if (s != Status::Ok) return s;
  m.type = hdr[0];
  uint32_t len = get32(hdr, 1);
  if (len < 4 || len > (64u << 20)) return Status::Error;
  int left = std::max(1, timeout_ms - static_cast<int>(ms_since(t0)));
  return read_exact(len - 4, m.payload, left);
}

RawConn::Status RawConn::wait_closed(int timeout_ms) {
  auto t0 = Clock::now();
  buf_.clear();
  for (;;) {
    if (fd_ < 0) return Status::Closed;
    int left = timeout_ms - static_cast<int>(ms_since(t0));
    if (left <= 0) return Status::Timeout;
    pollfd p{fd_, POLLIN, 0};
    int pr = poll(&p, 1, left);
    if (pr == 0) return Status::Timeout;
    if (pr < 0) {
      if (errno == EINTR) continue;
      return Status::Error;
    }
    char tmp[65536];
    ssize_t r = ::recv(fd_, tmp, sizeof tmp, 0);
    if (r == 0) return Status::Closed;
    if (r < 0 && (errno == ECONNRESET || errno == EPIPE)) return Status::Closed;
    if (r < 0 && errno != EINTR && errno != EAGAIN) return Status::Error;
  }
}

void RawConn::abort() {
  if (fd_ >= 0) {
    linger l{1, 0};
    setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  }
  close();
}

bool RawConn::login(int port, const std::string& user, const std::string& db, std::string& sqlstate,
                    std::string& err) {
  sqlstate.clear();
  err.clear();
  if (!connect(port)) {
    err = "tcp connect failed";
    return false;
  }
  return startup_login(user, db, sqlstate, err);
}

bool RawConn::startup_login(const std::string& user, const std::string& db, std::string& sqlstate,
                            std::string& err) {
  sqlstate.clear();
  err.clear();
  if (!send(wire::startup({{"user", user}, {"database", db}}))) {
    err = "send failed";
    return false;
  }
  for (;;) {
    BackendMsg m;
    Status s = read_msg(m, 10000);
    if (s != Status::Ok) {
      err = "read failed during login (status " + std::to_string(static_cast<int>(s)) + ")";
      return false;
    }
    switch (m.type) {
      case 'R':
        if (get32(m.payload, 0) != 0) {
          err = "authentication requested (code " + std::to_string(get32(m.payload, 0)) + ")";
          return false;
        }
        break;
      case 'K':
        backend_pid = get32(m.payload, 0);
        backend_key = get32(m.payload, 4);
        break;
      case 'S': {
        size_t z = m.payload.find('\0');
        if (z != std::string::npos) {
          std::string k = m.payload.substr(0, z);
          std::string v = m.payload.substr(z + 1);
          if (!v.empty() && v.back() == '\0') v.pop_back();
          params[k] = v;
        }
        break;
      }
      case 'E': {
        auto f = wire::error_fields(m.payload);
        sqlstate = f['C'];
        err = f['M'];
        return false;
      }
      case 'Z':
        return true;
      default:
        break;
    }
  }
}

std::string RawConn::simple_query(const std::string& sql, std::vector<std::string>* first_col, int timeout_ms) {
  if (!send(wire::query(sql))) return "IO";
  std::string state;
  auto t0 = Clock::now();
  for (;;) {
    BackendMsg m;
    int left = std::max(1, timeout_ms - static_cast<int>(ms_since(t0)));
    if (read_msg(m, left) != Status::Ok) return "IO";
    if (m.type == 'E') {
      if (state.empty()) state = wire::error_fields(m.payload)['C'];
    } else if (m.type == 'D' && first_col) {
      // int16 ncols, int32 len, bytes
      if (m.payload.size() >= 6) {
        int32_t len = static_cast<int32_t>(get32(m.payload, 2));
        first_col->push_back(len < 0 ? "<NULL>" : m.payload.substr(6, static_cast<size_t>(len)));
      }
    } else if (m.type == 'Z') {
      return state;
    }
  }
}

std::string BadInputOutcome::describe() const {
  return "sqlstate='" + sqlstate + "' closed=" + (closed ? "yes" : "no") + " timed_out=" + (timed_out ? "yes" : "no");
}

BadInputOutcome await_error_or_close(RawConn& rc, int timeout_ms) {
  BadInputOutcome o;
  auto t0 = Clock::now();
  for (;;) {
    int left = timeout_ms - static_cast<int>(ms_since(t0));
    if (left <= 0) {
      o.timed_out = true;
      return o;
    }
    BackendMsg m;
    RawConn::Status s = rc.read_msg(m, left);
    if (s == RawConn::Status::Closed || s == RawConn::Status::Error) {
      o.closed = true;
      return o;
    }
    if (s == RawConn::Status::Timeout) {
      o.timed_out = true;
      return o;
    }
    if (m.type == 'E') {
      if (o.sqlstate.empty()) o.sqlstate = wire::error_fields(m.payload)['C'];
      // After an error the connection should be closed soon; give it 2 s.
      RawConn::Status c = rc.wait_closed(std::min(2000, std::max(1, timeout_ms - static_cast<int>(ms_since(t0)))));
      o.closed = c == RawConn::Status::Closed || c == RawConn::Status::Error;
      return o;
    }
  }
}

// ================================================================ sampler

struct MaxSampler::Impl {
  std::string sql;
  int interval_ms;
  std::atomic<int> max{0};
  std::atomic<int> samples{0};
  std::atomic<bool> stop{false};
  std::thread th;
};

MaxSampler::MaxSampler(std::string sql, int interval_ms) : impl_(new Impl) {
  impl_->sql = std::move(sql);
  impl_->interval_ms = interval_ms;
  Impl* im = impl_.get();
  std::string ci = cluster().super_conninfo("postgres");
  im->th = std::thread([im, ci] {
    ConnectResult cr = pg_connect(ci);
    if (!cr.ok()) return;
    while (!im->stop.load()) {
      QResult q = exec(cr.conn.get(), im->sql);
      if (q.ok && !q.rows.empty()) {
        int v = atoi(q.rows[0][0].c_str());
        int cur = im->max.load();
        while (v > cur && !im->max.compare_exchange_weak(cur, v)) {
        }
        im->samples.fetch_add(1);
      }
      std::this_thread::sleep_for(Ms(im->interval_ms));
    }
  });
}

MaxSampler::~MaxSampler() { stop(); }

void MaxSampler::stop() {
  if (impl_ && impl_->th.joinable()) {
    impl_->stop = true;
    impl_->th.join();
  }
}

void MaxSampler::reset() {
  impl_->max = 0;
  impl_->samples = 0;
}

int MaxSampler::max() const { return impl_->max.load(); }
int MaxSampler::samples() const { return impl_->samples.load(); }

QResult exec_within(PGconn* c, const std::string& sql, int timeout_ms) {
  QResult out;
  if (!c) {
    out.error = "no connection";
    return out;
  }
  if (!PQsendQuery(c, sql.c_str())) return result_of(nullptr, c);
  return await_results(c, timeout_ms);
}

QResult await_results(PGconn* c, int timeout_ms) {
  QResult out;
  auto t0 = Clock::now();
  bool have = false, failed = false;
  for (;;) {
    while (!PQisBusy(c)) {
      PGresult* r = PQgetResult(c);
      if (!r) {
        if (!have) out = result_of(nullptr, c);
        return out;
      }
      QResult q = result_of(r, c);
      if (!failed) out = std::move(q);
      failed = failed || !out.ok;
      have = true;
    }
    int left = timeout_ms - static_cast<int>(ms_since(t0));
    if (left <= 0) {
      out = QResult{};
      out.sqlstate = "TIMEOUT";
      out.error = "no answer within " + std::to_string(timeout_ms) + " ms";
      return out;
    }
    pollfd p{PQsocket(c), POLLIN, 0};
    poll(&p, 1, std::min(left, 100));
    if (!PQconsumeInput(c)) {
      if (!have) out = result_of(nullptr, c);
      return out;
    }
  }
}

void expect_serving(Daemon& d, const char* what) {
  ASSERT_TRUE(d.running()) << "daemon died: " << what << "\n" << tail_lines(d.log(), 30);
  ConnectResult fresh = pg_connect(d.conninfo(), 10000);
  ASSERT_TRUE(fresh.ok()) << "new connection failed after " << what << ": " << fresh.error;
  EXPECT_EQ(exec_within(fresh.conn, "SELECT 'fresh'").scalar(), "fresh") << what;
}

}  // namespace itest
