// Process lifecycle: --check-config, PostgreSQL restarts and backend deaths,
// SIGHUP reload, SIGTERM/SIGINT shutdown, unix socket listener.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>

#include "harness.h"

using namespace itest;

namespace {

DaemonConfig mode_config(const std::string& mode, int pool_size) {
  DaemonConfig c = base_config();
  c.set("pool_mode", mode).set("default_pool_size", std::to_string(pool_size));
  return c;
}

std::string status_text(std::optional<int> st) {
  if (!st) return "still running";
  if (WIFEXITED(*st)) return "exit " + std::to_string(WEXITSTATUS(*st));
  if (WIFSIGNALED(*st)) return std::string("signal ") + strsignal(WTERMSIG(*st));
  return "status " + std::to_string(*st);
}

ProcResult check_config(const std::string& path) {
  return run_process({daemon_binary(), "-c", path, "--check-config"}, 10000);
}

}  // namespace

// ------------------------------------------------------------ --check-config

TEST(CheckConfig, ValidConfigExitsZero) {
  Daemon d;
  d.write_config();
  ProcResult r = check_config(d.config_path());
  EXPECT_EQ(r.exit_code, 0) << r.output << "\nconfig:\n" << read_file(d.config_path());
  EXPECT_FALSE(d.running());
  EXPECT_FALSE(port_accepts(d.port())) << "--check-config must not start listening";
}

TEST(CheckConfig, UnknownTopLevelKeyReportsFileAndLine) {
  Daemon d;
  std::string path = d.dir() + "/bad.yaml";
  write_file(path,
             "listen_addr: 127.0.0.1\n"
             "listen_port: 6432\n"
             "bogus_key: 1\n"
             "pool_mode: session\n"
             "databases:\n"
             "  app: {host: 127.0.0.1, port: 5432}\n");
  ProcResult r = check_config(path);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(path + ":3: unknown key"), std::string::npos) << r.output;
}

TEST(CheckConfig, UnknownDatabaseKeyReportsItsLine) {
  Daemon d;
  std::string path = d.dir() + "/bad-db.yaml";
  write_file(path,
             "listen_port: 6432\n"
             "databases:\n"
             "  app:\n"
             "    host: 127.0.0.1\n"
             "    prot: 5432\n");
  ProcResult r = check_config(path);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(path + ":5:"), std::string::npos) << r.output;
}

TEST(CheckConfig, BadValueReportsFileAndLine) {
  Daemon d;
  std::string path = d.dir() + "/bad-value.yaml";
  write_file(path,
             "listen_port: 6432\n"
             "pool_mode: sometimes\n");
  ProcResult r = check_config(path);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(path + ":2:"), std::string::npos) << r.output;

  std::string path2 = d.dir() + "/bad-duration.yaml";
  write_file(path2,
             "listen_port: 6432\n"
             "auth_type: trust\n"
             "query_wait_timeout: soon\n");
  ProcResult r2 = check_config(path2);
  EXPECT_EQ(r2.exit_code, 1) << r2.output;
  EXPECT_NE(r2.output.find(path2 + ":3:"), std::string::npos) << r2.output;
}

TEST(CheckConfig, MissingFileFails) {
  ProcResult r = check_config("/nonexistent/pgsidecar-itest.yaml");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("/nonexistent/pgsidecar-itest.yaml"), std::string::npos) << r.output;
}

// ------------------------------------------------------------ server failures

TEST(ServerFailure, BackendTerminatedMidQuery) {
  Daemon d(mode_config("session", 1));
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  std::string pid = exec(c, "SELECT pg_backend_pid()").scalar();
  ASSERT_EQ(PQsendQuery(c.get(), "SELECT pg_sleep(10)"), 1);
  std::this_thread::sleep_for(Ms(300));
  ASSERT_EQ(cluster().scalar("SELECT pg_terminate_backend(" + pid + ")", "postgres").value_or(""), "t");
  auto t0 = Clock::now();
  QResult r = result_of(PQgetResult(c.get()), c.get());
  while (PGresult* extra = PQgetResult(c.get())) PQclear(extra);
  EXPECT_LT(ms_since(t0), 3000);
  EXPECT_FALSE(r.ok);
  EXPECT_TRUE(is_connection_failure_state(r.sqlstate)) << "expected 57P01 or 08xxx, got " << r.describe();
  c.reset();
  // The pool (size 1) recovers with a fresh server connection.
  ConnPtr c2 = must_connect(d.conninfo());
  ASSERT_TRUE(c2);
  QResult q = exec(c2, "SELECT pg_backend_pid()");
  ASSERT_TRUE(q.ok) << q.describe();
  EXPECT_NE(q.scalar(), pid);
}

TEST(ServerFailure, BackendKilledHardMidQuery) {
  // SIGKILL: PostgreSQL sends nothing, so the daemon must produce the error
  // itself; the postmaster then restarts every backend (crash recovery).
  Daemon d(mode_config("session", 2));
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  std::string pid = exec(c, "SELECT pg_backend_pid()").scalar();
  ASSERT_EQ(PQsendQuery(c.get(), "SELECT pg_sleep(10)"), 1);
  std::this_thread::sleep_for(Ms(300));
  ASSERT_EQ(kill(static_cast<pid_t>(std::stol(pid)), SIGKILL), 0);
  auto t0 = Clock::now();
  QResult r = result_of(PQgetResult(c.get()), c.get());
  while (PGresult* extra = PQgetResult(c.get())) PQclear(extra);
  EXPECT_LT(ms_since(t0), 3000);
  EXPECT_FALSE(r.ok);
  EXPECT_TRUE(r.sqlstate.rfind("08", 0) == 0 || r.sqlstate == "57P02")
      << "expected an 08xxx error made by the daemon, got " << r.describe();
  c.reset();
  EXPECT_TRUE(eventually([&] {
    ConnectResult n = pg_connect(d.conninfo(), 5000);
    return n.ok() && exec(n.conn, "SELECT 1").scalar() == "1";
  }, 15000)) << "no recovery after PostgreSQL's crash restart";
}

TEST(ServerFailure, IdlePooledServerKilled) {
  for (const std::string mode : {"session", "transaction"}) {
    Daemon d(mode_config(mode, 1));
    START_DAEMON(d);
    std::string pid;
    {
      ConnPtr a = must_connect(d.conninfo());
      ASSERT_TRUE(a);
      pid = exec(a, "SELECT pg_backend_pid()").scalar();
    }
    // Give session mode time to run its reset query and park the server.
    std::this_thread::sleep_for(Ms(300));
    ASSERT_EQ(cluster().scalar("SELECT pg_terminate_backend(" + pid + ")", "postgres").value_or(""), "t");
    std::this_thread::sleep_for(Ms(300));
    ConnPtr b = must_connect(d.conninfo());
    ASSERT_TRUE(b);
    QResult q = exec(b, "SELECT pg_backend_pid()");
    EXPECT_TRUE(q.ok) << mode << ": a dead pooled server connection was handed to a client: " << q.describe();
    EXPECT_NE(q.scalar(), pid) << mode;
  }
}

TEST(ServerFailure, PostgresRestartUnderLoad) {
  DaemonConfig cfg = mode_config("transaction", 4);
  cfg.set("query_wait_timeout", "5s");
  Daemon d(cfg);
  START_DAEMON(d);

  struct Err {
    int phase;
    std::string state, message;
  };
  std::mutex mu;
  std::vector<Err> errors;
  std::atomic<int> phase{0};  // 0 = up, 1 = stopped, 2 = restarted
  std::atomic<bool> stop{false};
  constexpr int kThreads = 4;
  std::vector<std::atomic<int>> ok_after(kThreads);
  std::vector<std::atomic<int>> ok_before(kThreads);
  auto record = [&](const std::string& state, const std::string& msg) {
    std::lock_guard<std::mutex> lk(mu);
    errors.push_back({phase.load(), state, msg});
  };
  std::vector<std::thread> threads;
  // Joins the load threads and brings PostgreSQL back even if an assertion
  // below returns early (the cluster is shared by the tests of this process).
  struct Guard {
    std::atomic<bool>& stop;
    std::vector<std::thread>& threads;
    ~Guard() {
      stop = true;
      for (auto& t : threads)
        if (t.joinable()) t.join();
      if (!cluster().running()) cluster().start();
    }
  } guard{stop, threads};
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      ConnPtr c;
      while (!stop) {
        if (!c) {
          ConnectResult cr = pg_connect(d.conninfo(), 10000);
          if (!cr.ok()) {
            record(cr.sqlstate, "connect: " + cr.error);
            std::this_thread::sleep_for(Ms(50));
            continue;
          }
          c = std::move(cr.conn);
        }
        QResult q = exec(c, "SELECT count(*) FROM pg_class");
        if (q.ok) {
          (phase == 2 ? ok_after[i] : ok_before[i])++;
        } else {
          record(q.sqlstate, "query: " + q.describe());
          c.reset();
          std::this_thread::sleep_for(Ms(50));
        }
      }
    });
  }
  // A client in the middle of a long query when PostgreSQL goes down.
  ConnPtr sleeper = must_connect(d.conninfo());
  ASSERT_TRUE(sleeper);
  std::this_thread::sleep_for(Ms(1000));
  ASSERT_EQ(PQsendQuery(sleeper.get(), "SELECT pg_sleep(30)"), 1);
  std::this_thread::sleep_for(Ms(200));

  phase = 1;
  ASSERT_TRUE(cluster().stop(PgCluster::StopMode::Fast));
  QResult sr = result_of(PQgetResult(sleeper.get()), sleeper.get());
  while (PGresult* extra = PQgetResult(sleeper.get())) PQclear(extra);
  std::this_thread::sleep_for(Ms(1500));
  ASSERT_TRUE(cluster().start());
  phase = 2;
  auto t_up = Clock::now();
  bool recovered = eventually([&] {
    for (auto& n : ok_after)
      if (n < 5) return false;
    return true;
  }, 15000);
  long recovery_ms = ms_since(t_up);
  stop = true;
  for (auto& t : threads) t.join();
  threads.clear();

  EXPECT_FALSE(sr.ok);
  EXPECT_TRUE(is_connection_failure_state(sr.sqlstate))
      << "client mid-query when PostgreSQL stopped: expected 57P01/08xxx, got " << sr.describe();
  EXPECT_TRUE(recovered) << "not all clients succeeded within 15 s after PostgreSQL came back";
  EXPECT_LT(recovery_ms, 10000);
  int before = 0, empty_state = 0, bad_state = 0;
  std::map<std::string, int> kinds;  // "phase N [STATE] first line of message" -> count
  for (const auto& e : errors) {
    if (e.phase == 0) before++;
    if (e.state.empty()) empty_state++;
    else if (!is_connection_failure_state(e.state)) bad_state++;
    std::string first_line = e.message.substr(0, e.message.find('\n'));
    kinds["phase " + std::to_string(e.phase) + " [" + e.state + "] " + first_line]++;
  }
  std::string listing;
  for (const auto& [k, n] : kinds) listing += "  " + std::to_string(n) + "x " + k + "\n";
  EXPECT_EQ(before, 0) << listing;
  EXPECT_EQ(empty_state, 0) << "errors without SQLSTATE (connection dropped without ErrorResponse):\n" << listing;
  EXPECT_EQ(bad_state, 0) << "errors with an unexpected SQLSTATE:\n" << listing;
  // Fresh connections work.
  ConnPtr fresh = must_connect(d.conninfo());
  ASSERT_TRUE(fresh);
  EXPECT_EQ(exec(fresh, "SELECT 'back'").scalar(), "back");
  std::cerr << "[info] restart: " << errors.size() << " client errors, recovery in " << recovery_ms << " ms\n";
}

TEST(ServerFailure, PostgresDownAtConnect) {
  DaemonConfig cfg = mode_config("session", 2);
  cfg.set("query_wait_timeout", "2s").set("server_connect_timeout", "1s");
  Daemon d(cfg);
  START_DAEMON(d);
  ASSERT_TRUE(cluster().stop(PgCluster::StopMode::Fast));
  auto t0 = Clock::now();
  ConnectResult c = pg_connect(d.conninfo(), 15000);
  std::string state = c.sqlstate;
  if (c.ok()) {
    QResult q = exec(c.conn, "SELECT 1");
    EXPECT_FALSE(q.ok) << "query succeeded with PostgreSQL down?";
    state = q.sqlstate;
  }
  long waited = ms_since(t0);
  std::string err = c.error;
  c.conn.reset();
  ASSERT_TRUE(cluster().start());
  EXPECT_TRUE(is_connection_failure_state(state)) << "got [" << state << "] " << err;
  EXPECT_LT(waited, 8000);
  EXPECT_TRUE(eventually([&] {
    ConnectResult r = pg_connect(d.conninfo(), 5000);
    return r.ok() && exec(r.conn, "SELECT 1").ok;
  }, 10000)) << "daemon did not recover after PostgreSQL came back";
}

// ------------------------------------------------------------ reload

TEST(Reload, PoolSizeChangesWithoutClientErrors) {
  DaemonConfig cfg = mode_config("transaction", 1);
  cfg.set("query_wait_timeout", "30s");
  Daemon d(cfg);
  START_DAEMON(d);
  constexpr int kThreads = 8;
  std::atomic<bool> stop{false};
  std::atomic<int> errors{0}, connects{0};
  std::vector<std::atomic<int>> ok(kThreads);
  std::mutex mu;
  std::string first_error;
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      ConnPtr c;
      while (!stop) {
        if (!c) {
          ConnectResult cr = pg_connect(d.conninfo(), 30000);
          connects++;
          if (!cr.ok()) {
            if (errors++ == 0) {
              std::lock_guard<std::mutex> lk(mu);
              first_error = cr.error;
            }
            std::this_thread::sleep_for(Ms(50));
            continue;
          }
          c = std::move(cr.conn);
        }
        QResult q = exec(c, "SELECT pg_sleep(0.05)");
        if (q.ok) {
          ok[i]++;
        } else {
          if (errors++ == 0) {
            std::lock_guard<std::mutex> lk(mu);
            first_error = q.describe();
          }
          c.reset();
        }
      }
    });
  }
  MaxSampler active(
      "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND state = 'active' "
      "AND query LIKE 'SELECT pg_sleep(0.05)%'",
      10);
  std::this_thread::sleep_for(Ms(1500));
  int max_size1 = active.max();

  d.reload(mode_config("transaction", 4).set("query_wait_timeout", "30s"));
  std::this_thread::sleep_for(Ms(500));
  active.reset();
  std::this_thread::sleep_for(Ms(1500));
  int max_size4 = active.max();

  d.reload(mode_config("transaction", 1).set("query_wait_timeout", "30s"));
  std::this_thread::sleep_for(Ms(1000));
  active.reset();
  std::this_thread::sleep_for(Ms(1500));
  int max_back_to_1 = active.max();

  stop = true;
  for (auto& t : threads) t.join();
  active.stop();

  EXPECT_TRUE(d.running()) << "daemon exited on SIGHUP";
  EXPECT_EQ(errors.load(), 0) << first_error;
  EXPECT_EQ(connects.load(), kThreads) << "clients were disconnected by the reload";
  for (int i = 0; i < kThreads; ++i) EXPECT_GT(ok[i].load(), 0) << "client " << i << " starved";
  EXPECT_EQ(max_size1, 1) << "pool_size 1 before reload";
  EXPECT_GE(max_size4, 2) << "reload to pool_size 4 had no effect";
  EXPECT_LE(max_size4, 4);
  EXPECT_LE(max_back_to_1, 1) << "reload back to pool_size 1 had no effect";
}

TEST(Reload, InvalidConfigKeepsRunningWithOldOne) {
  Daemon d(mode_config("session", 2));
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  write_file(d.config_path(), "listen_port: [this is not valid\n");
  d.signal(SIGHUP);
  std::this_thread::sleep_for(Ms(500));
  ASSERT_TRUE(d.running()) << "daemon exited on an invalid reload";
  EXPECT_EQ(exec(c, "SELECT 'kept'").scalar(), "kept");
  ConnPtr c2 = must_connect(d.conninfo());
  ASSERT_TRUE(c2);
  EXPECT_EQ(exec(c2, "SELECT 'new'").scalar(), "new");
}

// ------------------------------------------------------------ shutdown

TEST(Shutdown, SigtermWaitsForOpenTransaction) {
  ASSERT_APP_SQL("DROP TABLE IF EXISTS shutdown_t; CREATE TABLE shutdown_t(x int)");
  DaemonConfig cfg = mode_config("transaction", 2);
  cfg.set("shutdown_timeout", "20s");
  Daemon d(cfg);
  START_DAEMON(d);
  ConnPtr a = must_connect(d.conninfo());
  ConnPtr idle = must_connect(d.conninfo());
  ASSERT_TRUE(a && idle);
  ASSERT_TRUE(exec(idle, "SELECT 1").ok);
  ASSERT_TRUE(exec(a, "BEGIN").ok);
  ASSERT_TRUE(exec(a, "INSERT INTO shutdown_t VALUES (1)").ok);

  d.signal(SIGTERM);
  std::this_thread::sleep_for(Ms(300));
  EXPECT_TRUE(d.running()) << "exited while a transaction was open";
  ConnectResult late = pg_connect(d.conninfo(), 3000);
  EXPECT_FALSE(late.ok() && exec(late.conn, "SELECT 1").ok) << "new connections must be refused after SIGTERM";

  QResult ins = exec(a, "INSERT INTO shutdown_t VALUES (2)");
  EXPECT_TRUE(ins.ok) << ins.describe();
  QResult commit = exec(a, "COMMIT");
  EXPECT_TRUE(commit.ok) << commit.describe();
  auto t0 = Clock::now();
  std::optional<int> st = d.wait_exit(8000);
  long exit_ms = ms_since(t0);
  ASSERT_TRUE(st.has_value()) << "daemon still running 8 s after the last transaction ended";
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << status_text(st);
  EXPECT_LT(exit_ms, 4000) << "should exit once no transaction is open, not wait for shutdown_timeout (20 s)";
  EXPECT_EQ(cluster().scalar("SELECT string_agg(x::text, ',' ORDER BY x) FROM shutdown_t").value_or("?"), "1,2");
}

TEST(Shutdown, SigtermGivesUpAfterShutdownTimeout) {
  ASSERT_APP_SQL("DROP TABLE IF EXISTS shutdown_t2; CREATE TABLE shutdown_t2(x int)");
  DaemonConfig cfg = mode_config("transaction", 2);
  cfg.set("shutdown_timeout", "1s");
  Daemon d(cfg);
  START_DAEMON(d);
  ConnPtr a = must_connect(d.conninfo());
  ASSERT_TRUE(a);
  ASSERT_TRUE(exec(a, "BEGIN").ok);
  ASSERT_TRUE(exec(a, "INSERT INTO shutdown_t2 VALUES (1)").ok);
  auto t0 = Clock::now();
  d.signal(SIGTERM);
  std::optional<int> st = d.wait_exit(8000);
  long ms = ms_since(t0);
  ASSERT_TRUE(st.has_value()) << "daemon ignored shutdown_timeout";
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << status_text(st);
  EXPECT_GE(ms, 700) << "exited before shutdown_timeout with a transaction open";
  EXPECT_LE(ms, 5000);
  EXPECT_FALSE(exec(a, "COMMIT").ok);
  EXPECT_TRUE(eventually([] { return cluster().scalar("SELECT count(*) FROM shutdown_t2").value_or("?") == "0"; }, 5000))
      << "the abandoned transaction was committed";
}

TEST(Shutdown, SigtermWithoutClientsExitsAtOnce) {
  ASSERT_TRUE(cluster().terminate_backends("app"));
  Daemon d(mode_config("session", 2));
  START_DAEMON(d);
  {
    ConnPtr c = must_connect(d.conninfo());
    ASSERT_TRUE(c);
    ASSERT_TRUE(exec(c, "SELECT 1").ok);
  }
  auto t0 = Clock::now();
  d.signal(SIGTERM);
  std::optional<int> st = d.wait_exit(5000);
  ASSERT_TRUE(st.has_value());
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << status_text(st);
  EXPECT_LT(ms_since(t0), 2000);
  EXPECT_FALSE(port_accepts(d.port()));
  EXPECT_TRUE(cluster().wait_backends_at_most("app", 0, 5000)) << "server connections left open after exit";
}

TEST(Shutdown, SigintExitsPromptly) {
  Daemon d(mode_config("session", 2));
  START_DAEMON(d);
  ConnPtr a = must_connect(d.conninfo());
  ASSERT_TRUE(a);
  ASSERT_TRUE(exec(a, "BEGIN").ok);
  ASSERT_TRUE(exec(a, "SELECT 1").ok);
  auto t0 = Clock::now();
  d.signal(SIGINT);
  std::optional<int> st = d.wait_exit(5000);
  long ms = ms_since(t0);
  ASSERT_TRUE(st.has_value()) << "daemon still running 5 s after SIGINT";
  EXPECT_LT(ms, 2000);
  bool clean = (WIFEXITED(*st) && WEXITSTATUS(*st) == 0) || (WIFSIGNALED(*st) && WTERMSIG(*st) == SIGINT);
  EXPECT_TRUE(clean) << status_text(st);
  EXPECT_FALSE(exec(a, "SELECT 1").ok);
  EXPECT_FALSE(port_accepts(d.port()));
}

// ------------------------------------------------------------ listeners

TEST(Listen, UnixSocketWithPsql) {
  DaemonConfig cfg = mode_config("transaction", 2);
  cfg.set("unix_socket_dir", "\"@DIR@\"");
  Daemon d(cfg);
  START_DAEMON(d);
  ProcResult r = run_process({"psql", "-X", "-At", "-h", d.dir(), "-p", std::to_string(d.port()), "-U", "app", "-d",
                              "app", "-c", "SELECT 'via unix socket', current_user"},
                             20000);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("via unix socket|app"), std::string::npos) << r.output;
  // And TCP still works with the unix socket enabled.
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  EXPECT_EQ(exec(c, "SELECT 1").scalar(), "1");
}

TEST(Listen, PsqlSimpleQueryOverTcp) {
  Daemon d(mode_config("transaction", 2));
  START_DAEMON(d);
  std::string ci = "host=127.0.0.1 port=" + std::to_string(d.port()) + " user=app dbname=app";
  ProcResult r = run_process({"psql", ci, "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c",
                              "SELECT sum(g) FROM generate_series(1, 100) g"},
                             20000, {"PGGSSENCMODE=disable"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "5050\n");
  ProcResult bad = run_process({"psql", ci, "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", "SELECT 1/0"}, 20000,
                               {"PGGSSENCMODE=disable"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("division by zero"), std::string::npos) << bad.output;
}
