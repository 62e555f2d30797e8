// Faults around the daemon: PostgreSQL restarted under load, a stuck backend,
// a client dying mid-COPY, Redis killed or frozen under cached load. Each test
// waits on state with bounded waits and ends by checking that the daemon still
// serves a fresh client.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>

#include "harness.h"

using namespace itest;

namespace {

// A fresh client through the daemon answers within its timeouts.
bool daemon_answers(Daemon& d) {
  ConnectResult cr = pg_connect(d.conninfo(), 3000);
  return cr.ok() && exec_within(cr.conn, "SELECT 42", 3000).scalar() == "42";
}

// Sends SIGCONT on scope exit, so that a failed assertion never leaves a
// process stopped.
struct ContinueOnExit {
  pid_t pid;
  ~ContinueOnExit() {
    if (pid > 0) kill(pid, SIGCONT);
  }
};

}  // namespace

// ------------------------------------------------------------------ 13
TEST(Fault, PostgresRestartedUnderPgbenchLoad) {
  // pgbench tables, owned by app, created directly on the cluster.
  ProcResult init = run_process({"pgbench", "-i", "-s", "1", "-q", "-h", "127.0.0.1", "-p",
                                 std::to_string(cluster().port()), "-U", "app", "app"},
                                60000, {"PGPASSWORD=apppass", "PGSSLMODE=disable", "PGGSSENCMODE=disable"});
  ASSERT_EQ(init.exit_code, 0) << init.output;
  DaemonConfig cfg = tx_config(4);
  cfg.set("query_wait_timeout", "10s");
  Daemon d(cfg);
  START_DAEMON(d);
  ASSERT_TRUE(daemon_answers(d));

  ProcResult bench;
  std::atomic<bool> bench_done{false};
  std::thread runner([&] {
    bench = run_process({"pgbench", "-n", "-c", "8", "-j", "2", "-T", "6", "-S", "-h", "127.0.0.1", "-p",
                         std::to_string(d.port()), "-U", "app", "app"},
                        30000, {"PGSSLMODE=disable", "PGGSSENCMODE=disable", "PGCONNECT_TIMEOUT=10", "PGPASSWORD="});
    bench_done = true;
  });
  // Mid-run: once the daemon's servers are busy.
  bool loaded = eventually([&] { return bench_done || cluster().backend_count("app", "app") >= 2; }, 10000);
  EXPECT_TRUE(loaded);
  EXPECT_FALSE(bench_done.load()) << "pgbench ended before the restart: " << bench.output;
  ASSERT_TRUE(cluster().stop(PgCluster::StopMode::Immediate));
  std::string err;
  bool started = cluster().start(&err);
  runner.join();
  ASSERT_TRUE(started) << err;
  EXPECT_FALSE(bench.timed_out) << "pgbench hung after the restart:\n" << tail_lines(bench.output, 20);
  EXPECT_GE(bench.exit_code, 0) << bench.output;
  ASSERT_TRUE(d.running()) << tail_lines(d.log(), 30);
  EXPECT_TRUE(eventually([&] { return daemon_answers(d); }, 15000))
      << "no client served after the restart\n" << tail_lines(d.log(), 30);
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  EXPECT_EQ(exec_within(c, "SELECT count(*) FROM pgbench_branches").scalar(), "1");
  expect_serving(d, "PostgreSQL restart under load");
}

// ------------------------------------------------------------------ 14
TEST(Fault, StoppedBackendIsDetectedByTheHealthCheck) {
  ASSERT_TRUE(cluster().terminate_backends("app"));
  DaemonConfig cfg = tx_config(1);
  cfg.set("server_check_delay", "0").set("server_check_timeout", "1s").set("query_wait_timeout", "10s");
  Daemon d(cfg);
  START_DAEMON(d);
  ConnPtr a = must_connect(d.conninfo());
  ASSERT_TRUE(a);
  std::string pid = exec_within(a, "SELECT pg_backend_pid()").scalar();
  ASSERT_EQ(cluster().scalar("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND datname = 'app' "
                             "AND backend_type = 'client backend'"),
            "1");
  ASSERT_EQ(cluster().scalar("SELECT pid FROM pg_stat_activity WHERE usename = 'app' AND datname = 'app' "
                             "AND backend_type = 'client backend'"),
            pid);
  pid_t backend = static_cast<pid_t>(std::stol(pid));
  ASSERT_EQ(kill(backend, SIGSTOP), 0);
  ContinueOnExit cont{backend};
  QResult r = exec_within(a, "SELECT 'after stop'", 10000);
  EXPECT_EQ(r.scalar(), "after stop") << r.describe();
  ConnectResult b = pg_connect(d.conninfo(), 10000);
  ASSERT_TRUE(b.ok()) << b.error;
  QResult rb = exec_within(b.conn, "SELECT pg_backend_pid()", 10000);
  ASSERT_TRUE(rb.ok) << rb.describe();
  EXPECT_NE(rb.scalar(), pid) << "still on the stopped backend?";
  kill(backend, SIGCONT);
  EXPECT_TRUE(eventually([&] {
    return cluster().scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = " + pid) == "0";
  }, 5000)) << "the stuck server was not closed";
  expect_serving(d, "stopped backend");
}

// ------------------------------------------------------------------ 15
TEST(Fault, ClientKilledMidCopyFromStdin) {
  ASSERT_APP_SQL("DROP TABLE IF EXISTS hf_copy; CREATE TABLE hf_copy(v int)");
  Daemon d(tx_config(1));
  START_DAEMON(d);
  RawConn a;
  std::string state, err;
  ASSERT_TRUE(a.login(d.port(), "app", "app", state, err)) << state << " " << err;
  std::vector<std::string> col;
  ASSERT_EQ(a.simple_query("SELECT pg_backend_pid()", &col), "");
  ASSERT_EQ(col.size(), 1u);
  std::string pid = col[0];
  ASSERT_TRUE(a.send(wire::query("COPY hf_copy FROM STDIN")));
  BackendMsg m;
  ASSERT_EQ(a.read_msg(m, 5000), RawConn::Status::Ok);
  ASSERT_EQ(m.type, 'G') << "expected CopyInResponse";
  for (int i = 1; i <= 100; ++i) ASSERT_TRUE(a.send(wire::msg('d', std::to_string(i) + "\n")));
  ASSERT_TRUE(eventually([&] {
    return cluster().scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = " + pid +
                            " AND query LIKE 'COPY hf_copy%' AND state = 'active'") == "1";
  }, 5000));
  a.abort();
  EXPECT_TRUE(eventually([&] {
    return cluster().scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = " + pid) == "0";
  }, 5000)) << "the server in COPY was not closed";
  ConnectResult b = pg_connect(d.conninfo(), 10000);
  ASSERT_TRUE(b.ok()) << b.error;
  EXPECT_EQ(exec_within(b.conn, "SELECT count(*) FROM hf_copy").scalar(), "0");
  EXPECT_NE(exec_within(b.conn, "SELECT pg_backend_pid()").scalar(), pid);
  ASSERT_TRUE(exec_within(b.conn, "INSERT INTO hf_copy VALUES (7)").ok);
  EXPECT_EQ(exec_within(b.conn, "SELECT sum(v) FROM hf_copy").scalar(), "7");
  EXPECT_EQ(cluster().scalar("SELECT count(*) FROM hf_copy"), "1");
  expect_serving(d, "client killed mid-COPY");
}

// ------------------------------------------------------------------ 16
namespace {

bool l2_up(const Daemon& d) { return admin_row(d, "SHOW CACHE", "result_l2")["state"] == "up"; }

}  // namespace

TEST(Fault, RedisKilledOrFrozenUnderCachedLoad) {
  ASSERT_APP_SQL(
      "DROP TABLE IF EXISTS hf_items, hf_writes; CREATE TABLE hf_items (id int PRIMARY KEY, v text);"
      "INSERT INTO hf_items SELECT g, 'v' || g FROM generate_series(1, 100) g;"
      "CREATE TABLE hf_writes (n int);");
  RedisServer redis;
  START_REDIS(redis);
  DaemonConfig cfg = tx_config(3);
  cfg.set("stats_users", "[app]")
      .set("cache", "{mode: all, admission: always, redis: {url: \"" + redis.url() + "\", timeout_ms: 100}}");
  Daemon d(cfg);
  START_DAEMON(d);
  ASSERT_TRUE(eventually([&] { return l2_up(d); }, 5000));
  auto l2 = [&](const char* col) {
    std::string v = admin_row(d, "SHOW CACHE", "result_l2")[col];
    return v.empty() ? -1L : std::stol(v);
  };

  std::atomic<bool> stop{false};
  std::atomic<int> queries{0}, errors{0};
  std::mutex mu;
  std::string first_error;
  auto fail = [&](const std::string& e) {
    if (errors++ == 0) {
      std::lock_guard<std::mutex> lk(mu);
      first_error = e;
    }
  };
  std::vector<std::thread> threads;
  // Readers: half the statements are new texts (L1 miss: a Redis lookup and a
  // store), half repeat (L1 or L2 hits).
  for (int t = 0; t < 4; t++) {
    threads.emplace_back([&, t] {
      ConnectResult cr = pg_connect(d.conninfo(), 10000);
      if (!cr.ok()) return fail("connect: " + cr.error);
      for (int i = 0; i < 200000 && !stop; i++) {
        int id = 1 + (i * 7 + t) % 60;
        std::string sql = "SELECT v FROM hf_items WHERE id = " + std::to_string(id);
        if (i % 2) sql += " AND " + std::to_string(t * 1000000 + i) + " > 0";
        QResult r = exec_within(cr.conn, sql, 5000);
        if (r.scalar() == "v" + std::to_string(id)) queries++;
        else fail(sql + ": " + r.describe());
      }
    });
  }
  // A writer: invalidations published through Redis.
  threads.emplace_back([&] {
    ConnectResult cr = pg_connect(d.conninfo(), 10000);
    if (!cr.ok()) return fail("connect: " + cr.error);
    for (int i = 0; i < 200000 && !stop; i++) {
      QResult r = exec_within(cr.conn, "INSERT INTO hf_writes VALUES (" + std::to_string(i) + ")", 5000);
      if (!r.ok) fail("insert: " + r.describe());
      QResult c = exec_within(cr.conn, "SELECT count(*) FROM hf_writes WHERE n = " + std::to_string(i), 5000);
      if (c.scalar() != "1") fail("count after insert: " + c.describe());
    }
  });
  auto progressed = [&](int by, int timeout_ms) {
    int base = queries;
    return eventually([&] { return queries - base >= by || stop; }, timeout_ms);
  };
  EXPECT_TRUE(progressed(300, 10000)) << "no load";
  EXPECT_GT(l2("stores"), 0) << "the load does not reach Redis";
  redis.kill();
  EXPECT_TRUE(eventually([&] { return !l2_up(d); }, 3000));
  EXPECT_TRUE(progressed(300, 10000)) << "queries stalled with Redis dead";
  START_REDIS(redis);   // same port: the daemon reconnects by itself
  EXPECT_TRUE(eventually([&] { return l2_up(d); }, 8000));
  EXPECT_TRUE(progressed(300, 10000)) << "queries stalled after Redis came back";

  // Redis frozen: connected but silent. Its requests time out (errors counted).
  pid_t rpid = 0;
  {
    std::string info = redis.cli("INFO server");
    size_t p = info.find("process_id:");
    ASSERT_NE(p, std::string::npos) << info;
    rpid = static_cast<pid_t>(std::stol(info.substr(p + 11)));
  }
  ASSERT_GT(rpid, 0);
  long errors_before = l2("errors");
  ASSERT_EQ(kill(rpid, SIGSTOP), 0);
  {
    ContinueOnExit cont{rpid};
    EXPECT_TRUE(eventually([&] { return l2("errors") > errors_before || !l2_up(d); }, 5000))
        << "the daemon never noticed the frozen Redis";
    EXPECT_TRUE(progressed(300, 10000)) << "queries stalled with Redis stopped";
    kill(rpid, SIGCONT);
  }
  EXPECT_TRUE(eventually([&] { return l2_up(d); }, 8000));
  EXPECT_TRUE(progressed(300, 10000)) << "queries stalled after Redis resumed";
  stop = true;
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0) << first_error;
  EXPECT_GT(queries.load(), 1500);
  expect_serving(d, "Redis killed / stopped");
}
