// Pool housekeeping: idle timeout, lifetime, min_pool_size warm-up, reserve
// pool, and no leaks under connection churn.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "harness.h"

using namespace itest;

TEST(Pool, IdleServersClosedAfterIdleTimeout) {
  DaemonConfig cfg = base_config();
  cfg.set("pool_mode", "session").set("default_pool_size", "3").set("server_idle_timeout", "1s");
  Daemon d(cfg);
  START_DAEMON(d);
  ASSERT_TRUE(cluster().terminate_backends("app"));
  {
    std::vector<ConnPtr> cs;
    for (int i = 0; i < 3; ++i) {
      cs.push_back(must_connect(d.conninfo()));
      ASSERT_TRUE(cs.back());
      ASSERT_TRUE(exec(cs.back(), "SELECT 1").ok);
    }
    EXPECT_EQ(cluster().backend_count("app", "app"), 3);
  }
  EXPECT_TRUE(cluster().wait_backends_at_most("app", 0, 5000)) << "idle servers not closed after server_idle_timeout";
  // And the pool still works afterwards.
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  EXPECT_EQ(exec(c, "SELECT 1").scalar(), "1");
}

TEST(Pool, ServerLifetimeReplacesOldServers) {
  DaemonConfig cfg = base_config();
  cfg.set("pool_mode", "transaction").set("default_pool_size", "1").set("server_lifetime", "1s");
  Daemon d(cfg);
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  std::string pid1 = exec(c, "SELECT pg_backend_pid()").scalar();
  EXPECT_EQ(exec(c, "SELECT pg_backend_pid()").scalar(), pid1) << "server not reused within its lifetime";
  std::this_thread::sleep_for(Ms(2500));
  QResult q = exec(c, "SELECT pg_backend_pid()");
  ASSERT_TRUE(q.ok) << q.describe();
  EXPECT_NE(q.scalar(), pid1) << "server kept beyond server_lifetime";
}

TEST(Pool, ServerLifetimeNeverInterruptsATransaction) {
  DaemonConfig cfg = base_config();
  cfg.set("pool_mode", "transaction").set("default_pool_size", "1").set("server_lifetime", "500ms");
  Daemon d(cfg);
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  ASSERT_TRUE(exec(c, "BEGIN").ok);
  std::string pid = exec(c, "SELECT pg_backend_pid()").scalar();
  std::this_thread::sleep_for(Ms(1500));
  QResult q = exec(c, "SELECT pg_backend_pid()");
  EXPECT_TRUE(q.ok) << q.describe();
  EXPECT_EQ(q.scalar(), pid);
  EXPECT_TRUE(exec(c, "COMMIT").ok);
}

TEST(Pool, MinPoolSizeWarmsForcedUserDatabase) {
  DaemonConfig cfg = base_config();
  cfg.set("server_idle_timeout", "1s");
  cfg.db("warm", db_entry("dbname: app, user: trustuser, min_pool_size: 2"));
  ASSERT_TRUE(cluster().terminate_backends("trustuser"));
  Daemon d(cfg);
  START_DAEMON(d);
  EXPECT_TRUE(eventually([] { return cluster().backend_count("trustuser", "app") == 2; }, 5000))
      << "min_pool_size 2 not reached without clients; have " << cluster().backend_count("trustuser", "app");
  // Idle timeout does not go below min_pool_size.
  std::this_thread::sleep_for(Ms(2500));
  EXPECT_EQ(cluster().backend_count("trustuser", "app"), 2);
  ConnPtr c = must_connect(d.conninfo("anyone", "warm"));
  ASSERT_TRUE(c);
  EXPECT_EQ(exec(c, "SELECT current_user").scalar(), "trustuser");
}

TEST(Pool, ReservePoolAfterReserveTimeout) {
  DaemonConfig cfg = base_config();
  cfg.set("pool_mode", "transaction")
      .set("default_pool_size", "1")
      .set("reserve_pool_size", "1")
      .set("reserve_pool_timeout", "500ms")
      .set("query_wait_timeout", "5s");
  Daemon d(cfg);
  START_DAEMON(d);
  ConnPtr a = must_connect(d.conninfo());
  ConnPtr b = must_connect(d.conninfo());
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(exec(a, "BEGIN").ok);
  ASSERT_TRUE(exec(a, "SELECT 1").ok);
  auto t0 = Clock::now();
  QResult q = exec(b, "SELECT 'reserve'");
  long ms = ms_since(t0);
  EXPECT_EQ(q.scalar(), "reserve") << q.describe();
  EXPECT_GE(ms, 400) << "reserve server used before reserve_pool_timeout";
  EXPECT_LT(ms, 3000) << "reserve pool not used";
  EXPECT_LE(cluster().backend_count("app", "app"), 2);
  ASSERT_TRUE(exec(a, "COMMIT").ok);
}

TEST(Pool, ConnectionChurnLeaksNothing) {
  for (const std::string mode : {"session", "transaction"}) {
    DaemonConfig cfg = base_config();
    cfg.set("pool_mode", mode).set("default_pool_size", "4");
    Daemon d(cfg);
    START_DAEMON(d);
    {
      ConnPtr warm = must_connect(d.conninfo());
      ASSERT_TRUE(warm);
      ASSERT_TRUE(exec(warm, "SELECT 1").ok);
    }
    std::this_thread::sleep_for(Ms(200));
    int fds_before = d.fd_count();
    std::atomic<int> failures{0};
    std::string first;
    std::mutex mu;
    std::vector<std::thread> ts;
    for (int t = 0; t < 4; ++t) {
      ts.emplace_back([&, t] {
        for (int i = 0; i < 75; ++i) {
          ConnectResult cr = pg_connect(d.conninfo());
          QResult q;
          if (cr.ok()) q = exec(cr.conn, "SELECT " + std::to_string(t * 1000 + i));
          if (!cr.ok() || q.scalar() != std::to_string(t * 1000 + i)) {
            std::lock_guard<std::mutex> lk(mu);
            if (failures++ == 0) first = cr.ok() ? q.describe() : cr.error;
          }
          if (i % 5 == 0 && cr.ok()) {
            // Some clients vanish without Terminate.
            ::shutdown(PQsocket(cr.conn.get()), SHUT_RDWR);
          }
        }
      });
    }
    for (auto& t : ts) t.join();
    EXPECT_EQ(failures.load(), 0) << mode << ": " << first;
    EXPECT_LE(cluster().backend_count("app", "app"), 4) << mode;
    int fds_after = -1;
    bool settled = eventually([&] {
      fds_after = d.fd_count();
      return fds_after >= 0 && fds_after <= fds_before + 4;
    }, 3000);
    EXPECT_TRUE(settled) << mode << ": file descriptors grew from " << fds_before << " to " << fds_after;
    ConnPtr c = must_connect(d.conninfo());
    ASSERT_TRUE(c) << mode;
    EXPECT_EQ(exec(c, "SELECT 'after churn'").scalar(), "after churn");
  }
}
