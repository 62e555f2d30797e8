// The admin console: virtual database "pgsidecar", PgBouncer's commands and columns.
#include <gtest/gtest.h>

#include <thread>

#include "harness.h"

using namespace itest;

namespace {

DaemonConfig admin_config(const std::string& mode = "transaction", int pool_size = 1) {
  DaemonConfig c = base_config();
  c.set("pool_mode", mode).set("default_pool_size", std::to_string(pool_size)).set("admin_users", "[admin]")
      .set("stats_users", "[watcher]");
  return c;
}

std::string admin_conninfo(const Daemon& d, const std::string& user = "admin") {
  return "host=127.0.0.1 port=" + std::to_string(d.port()) + " user=" + user + " dbname=pgsidecar";
}

// SHOW POOLS columns (PgBouncer 1.18 order, then sv_pinned).
enum PoolCol { kDb = 0, kUser, kClActive, kClWaiting, kSvActive = 6, kSvIdle = 9, kSvLogin = 12, kMode = 15, kSvPinned };

std::vector<std::string> pool_row(const ConnPtr& admin, const std::string& db = "app") {
  QResult r = exec(admin, "SHOW POOLS");
  EXPECT_TRUE(r.ok) << r.describe();
  for (auto& row : r.rows)
    if (row.size() == 17 && row[kDb] == db) return row;
  return {};
}

}  // namespace

TEST(Admin, ShowPoolsAndClientsMatchThePools) {
  Daemon d(admin_config("transaction", 2));
  START_DAEMON(d);
  ConnPtr admin = must_connect(admin_conninfo(d));
  ConnPtr a = must_connect(d.conninfo()), b = must_connect(d.conninfo());
  ASSERT_TRUE(admin && a && b);
  ASSERT_TRUE(exec(a, "BEGIN").ok);   // a holds a server
  ASSERT_TRUE(exec(b, "SELECT 1").ok);
  std::vector<std::string> row = pool_row(admin);
  ASSERT_EQ(row.size(), 17u);
  EXPECT_EQ(row[kUser], "app");
  EXPECT_EQ(row[kClActive], "1");
  EXPECT_EQ(row[kClWaiting], "0");
  EXPECT_EQ(row[kSvActive], "1");
  EXPECT_EQ(row[kSvIdle], "1");
  EXPECT_EQ(row[kSvPinned], "0");
  EXPECT_EQ(row[kMode], "transaction");
  QResult clients = exec(admin, "show clients;");
  ASSERT_TRUE(clients.ok) << clients.describe();
  EXPECT_EQ(clients.rows.size(), 2u) << "the admin session itself is not a pool client";
  QResult servers = exec(admin, "SHOW SERVERS");
  ASSERT_TRUE(servers.ok) << servers.describe();
  ASSERT_EQ(servers.rows.size(), 2u);
  int active = 0;
  for (auto& s : servers.rows) active += s[3] == "active";
  EXPECT_EQ(active, 1);
  ASSERT_TRUE(exec(a, "COMMIT").ok);
  for (const char* cmd : {"SHOW STATS", "SHOW DATABASES", "SHOW CONFIG", "SHOW CACHE", "SHOW VERSION", "SHOW HELP"}) {
    QResult r = exec(admin, cmd);
    EXPECT_TRUE(r.ok && !r.rows.empty()) << cmd << ": " << r.describe();
  }
  EXPECT_EQ(exec(admin, "SHOW VERSION").scalar(), "pgsidecar " PGSIDECAR_VERSION);
  QResult config = exec(admin, "SHOW CONFIG");
  bool found = false;
  for (auto& row : config.rows)
    if (row.at(0) == "default_pool_size") {
      found = true;
      EXPECT_EQ(row.at(1), "2");
      EXPECT_EQ(row.at(2), "20");
      EXPECT_EQ(row.at(3), "yes");
    }
  EXPECT_TRUE(found) << config.describe();
  QResult stats = exec(admin, "SHOW STATS");
  ASSERT_FALSE(stats.rows.empty());
  EXPECT_EQ(stats.at(0, 0), "app");
  EXPECT_EQ(stats.at(0, 1), "2") << "transactions: BEGIN..COMMIT and SELECT 1";
}

TEST(Admin, PsqlShowsPoolsAsATable) {
  Daemon d(admin_config());
  START_DAEMON(d);
  ProcResult r = run_process({"psql", "-X", "-h", "127.0.0.1", "-p", std::to_string(d.port()), "-U", "admin",
                              "-d", "pgsidecar", "-c", "SHOW POOLS"},
                             20000, {"PGSSLMODE=disable"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("cl_active"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("pool_mode"), std::string::npos) << r.output;
}

TEST(Admin, UsersNotListedAreRejected) {
  Daemon d(admin_config());
  START_DAEMON(d);
  ConnectResult r = pg_connect(admin_conninfo(d, "app"));
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.sqlstate, "28000") << r.error;
  // Pooled traffic is unaffected.
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  EXPECT_EQ(exec(c, "SELECT 5").scalar(), "5");
}

TEST(Admin, StatsUsersOnlyShow) {
  Daemon d(admin_config());
  START_DAEMON(d);
  ConnPtr w = must_connect(admin_conninfo(d, "watcher"));
  ASSERT_TRUE(w);
  EXPECT_TRUE(exec(w, "SHOW POOLS").ok);
  for (const char* cmd : {"PAUSE", "RESUME", "RECONNECT", "RELOAD", "SHUTDOWN"})
    EXPECT_EQ(exec(w, cmd).sqlstate, "42501") << cmd;
}

TEST(Admin, BadCommandsGetClearErrors) {
  DaemonConfig cfg = admin_config();
  cfg.databases.erase("*");   // so that "nosuchdb" is no database at all
  Daemon d(cfg);
  START_DAEMON(d);
  ConnPtr admin = must_connect(admin_conninfo(d));
  ASSERT_TRUE(admin);
  QResult bad = exec(admin, "SHOW NONSENSE");
  EXPECT_EQ(bad.sqlstate, "08P01");
  EXPECT_EQ(bad.error, "invalid command 'SHOW NONSENSE', use SHOW HELP;");
  EXPECT_EQ(exec(admin, "DROP TABLE x").sqlstate, "08P01");
  EXPECT_EQ(exec(admin, "PAUSE nosuchdb").sqlstate, "08P01");
  EXPECT_EQ(exec(admin, "RESUME").sqlstate, "08P01") << "nothing is paused";
  EXPECT_EQ(exec(admin, "SHOW VERSION").scalar(), "pgsidecar " PGSIDECAR_VERSION) << "the session is still usable";
  // The extended protocol is refused and the session ends.
  QResult ext = exec_params(admin, "SHOW POOLS", {});
  EXPECT_EQ(ext.sqlstate, "08P01") << ext.describe();
}

TEST(Admin, PauseWaitsForBusyServersThenQueuesClientsUntilResume) {
  Daemon d(admin_config("transaction", 1));
  START_DAEMON(d);
  ConnPtr admin = must_connect(admin_conninfo(d));
  ConnPtr a = must_connect(d.conninfo()), b = must_connect(d.conninfo());
  ASSERT_TRUE(admin && a && b);
  ASSERT_TRUE(exec(a, "BEGIN").ok);
  ASSERT_EQ(PQsendQuery(admin.get(), "PAUSE"), 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ASSERT_EQ(PQconsumeInput(admin.get()), 1);
  EXPECT_EQ(PQisBusy(admin.get()), 1) << "PAUSE answered while a transaction held a server";
  ASSERT_TRUE(exec(a, "COMMIT").ok);
  QResult paused = result_of(PQgetResult(admin.get()));
  EXPECT_TRUE(paused.ok) << paused.describe();
  while (PGresult* r = PQgetResult(admin.get())) PQclear(r);
  // Paused: b's query waits.
  ASSERT_EQ(PQsendQuery(b.get(), "SELECT 42"), 1);
  ASSERT_TRUE(eventually([&] { auto row = pool_row(admin); return !row.empty() && row[kClWaiting] == "1"; }, 3000));
  ASSERT_TRUE(exec(admin, "RESUME").ok);
  QResult r = result_of(PQgetResult(b.get()));
  ASSERT_TRUE(r.ok) << r.describe();
  EXPECT_EQ(r.scalar(), "42");
  while (PGresult* rest = PQgetResult(b.get())) PQclear(rest);
}

TEST(Admin, ReconnectReplacesServersAndReloadRereadsTheConfig) {
  Daemon d(admin_config("transaction", 1));
  START_DAEMON(d);
  ConnPtr admin = must_connect(admin_conninfo(d));
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(admin && c);
  std::string before = exec(c, "SELECT pg_backend_pid()").scalar();
  ASSERT_TRUE(exec(admin, "RECONNECT").ok);
  std::string after = exec(c, "SELECT pg_backend_pid()").scalar();
  EXPECT_NE(before, after) << "RECONNECT kept the old server";
  ASSERT_TRUE(exec(admin, "RELOAD").ok);
  EXPECT_TRUE(eventually([&] { return d.log().find("configuration reloaded") != std::string::npos; }, 3000)) << d.log();
  EXPECT_EQ(exec(c, "SELECT 1").scalar(), "1");
}
