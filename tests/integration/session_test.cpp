// Session pool mode: a client keeps one server connection for its whole session.
#include <gtest/gtest.h>

#include <thread>

#include "harness.h"

using namespace itest;

namespace {

DaemonConfig session_config(int pool_size = 5) {
  DaemonConfig c = base_config();
  c.set("pool_mode", "session").set("default_pool_size", std::to_string(pool_size));
  return c;
}

}  // namespace

TEST(Session, RowsErrorsAndTransactionStatus) {
  Daemon d(session_config());
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);

  QResult q = exec(c, "SELECT g, g * g, 'row ' || g FROM generate_series(1, 1000) g");
  ASSERT_TRUE(q.ok) << q.describe();
  ASSERT_EQ(q.rows.size(), 1000u);
  EXPECT_EQ(q.at(0, 0), "1");
  EXPECT_EQ(q.at(999, 1), "1000000");
  EXPECT_EQ(q.at(499, 2), "row 500");

  EXPECT_EQ(exec(c, "SELECT current_user, current_database()").rows,
            (std::vector<std::vector<std::string>>{{"app", "app"}}));

  // Extended protocol (unnamed statement) with parameters and a NULL.
  QResult p = exec_params(c, "SELECT $1::int + 1, upper($2::text), $3::text IS NULL", {"41", "abc", "x"});
  ASSERT_TRUE(p.ok) << p.describe();
  EXPECT_EQ(p.at(0, 0), "42");
  EXPECT_EQ(p.at(0, 1), "ABC");
  EXPECT_EQ(p.at(0, 2), "f");

  // Server errors pass through with their SQLSTATE; the session goes on.
  EXPECT_EQ(exec(c, "SELECT 1/0").sqlstate, "22012");
  EXPECT_EQ(exec(c, "SELECT * FROM no_such_table_xyz").sqlstate, "42P01");
  EXPECT_EQ(exec(c, "SELEC 1").sqlstate, "42601");
  EXPECT_EQ(exec(c, "SELECT 7").scalar(), "7");

  // Transaction status tracking (ReadyForQuery status byte).
  EXPECT_EQ(PQtransactionStatus(c.get()), PQTRANS_IDLE);
  ASSERT_TRUE(exec(c, "BEGIN").ok);
  EXPECT_EQ(PQtransactionStatus(c.get()), PQTRANS_INTRANS);
  EXPECT_EQ(exec(c, "SELECT 1/0").sqlstate, "22012");
  EXPECT_EQ(PQtransactionStatus(c.get()), PQTRANS_INERROR);
  EXPECT_EQ(exec(c, "SELECT 1").sqlstate, "25P02");
  ASSERT_TRUE(exec(c, "ROLLBACK").ok);
  EXPECT_EQ(PQtransactionStatus(c.get()), PQTRANS_IDLE);

  // Empty query and a multi-statement simple query.
  EXPECT_EQ(exec(c, "").status, PGRES_EMPTY_QUERY);
  EXPECT_EQ(exec(c, "SELECT 1; SELECT 2; SELECT 3").scalar(), "3");

  // ParameterStatus values from the server reach the client.
  const char* sv = PQparameterStatus(c.get(), "server_version");
  ASSERT_NE(sv, nullptr);
  EXPECT_EQ(std::string(sv).substr(0, 2), exec(c, "SHOW server_version").scalar().substr(0, 2));
  const char* enc = PQparameterStatus(c.get(), "server_encoding");
  ASSERT_NE(enc, nullptr);
  EXPECT_STREQ(enc, "UTF8");
}

TEST(Session, ProxyOwnBackendKeyData) {
  Daemon d(session_config());
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  QResult q = exec(c, "SELECT pg_backend_pid()");
  ASSERT_TRUE(q.ok) << q.describe();
  int client_pid = PQbackendPID(c.get());
  EXPECT_NE(client_pid, 0);
  EXPECT_NE(std::to_string(client_pid), q.scalar())
      << "the client must see the proxy's own BackendKeyData, not the server's";
  // Two clients get distinct keys.
  ConnPtr c2 = must_connect(d.conninfo());
  ASSERT_TRUE(c2);
  EXPECT_NE(PQbackendPID(c2.get()), client_pid);
}

TEST(Session, TempTableSurvivesAcrossStatementsAndIsPrivate) {
  Daemon d(session_config());
  START_DAEMON(d);
  ConnPtr a = must_connect(d.conninfo());
  ConnPtr b = must_connect(d.conninfo());
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(exec(a, "CREATE TEMP TABLE sess_tmp(x int)").ok);
  for (int i = 1; i <= 5; ++i) ASSERT_TRUE(exec(a, "INSERT INTO sess_tmp VALUES (" + std::to_string(i) + ")").ok);
  ASSERT_TRUE(exec(a, "BEGIN").ok);
  ASSERT_TRUE(exec(a, "INSERT INTO sess_tmp VALUES (100)").ok);
  ASSERT_TRUE(exec(a, "COMMIT").ok);
  EXPECT_EQ(exec(a, "SELECT sum(x) FROM sess_tmp").scalar(), "115");
  EXPECT_EQ(exec(b, "SELECT to_regclass('pg_temp.sess_tmp') IS NULL").scalar(), "t");
  // Session-level SET persists across transactions.
  ASSERT_TRUE(exec(a, "SET work_mem = '7MB'").ok);
  ASSERT_TRUE(exec(a, "BEGIN; SELECT 1; COMMIT").ok);
  EXPECT_EQ(exec(a, "SHOW work_mem").scalar(), "7MB");
  EXPECT_EQ(exec(b, "SHOW work_mem").scalar(), "4MB");
}

TEST(Session, ListenNotify) {
  Daemon d(session_config());
  START_DAEMON(d);
  ConnPtr listener = must_connect(d.conninfo());
  ConnPtr sender = must_connect(d.conninfo());
  ASSERT_TRUE(listener && sender);
  ASSERT_TRUE(exec(listener, "LISTEN itest_chan").ok);

  ASSERT_TRUE(exec(sender, "NOTIFY itest_chan, 'via-proxy'").ok);
  auto n = wait_notify(listener.get(), 3000);
  ASSERT_TRUE(n.has_value()) << "notification from another proxied client not delivered";
  EXPECT_EQ(*n, "itest_chan:via-proxy");

  // From a direct connection, while the listener is idle (async delivery).
  ConnPtr direct = must_connect(cluster().direct_conninfo("app", "app", "apppass"));
  ASSERT_TRUE(direct);
  ASSERT_TRUE(exec(direct, "SELECT pg_notify('itest_chan', 'direct')").ok);
  n = wait_notify(listener.get(), 3000);
  ASSERT_TRUE(n.has_value()) << "asynchronous notification not forwarded while the client was idle";
  EXPECT_EQ(*n, "itest_chan:direct");

  // Notification in a transaction is delivered on commit only.
  ASSERT_TRUE(exec(sender, "BEGIN").ok);
  ASSERT_TRUE(exec(sender, "NOTIFY itest_chan, 'tx'").ok);
  EXPECT_FALSE(wait_notify(listener.get(), 300).has_value());
  ASSERT_TRUE(exec(sender, "COMMIT").ok);
  n = wait_notify(listener.get(), 3000);
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(*n, "itest_chan:tx");
  // The listener still runs queries normally.
  EXPECT_EQ(exec(listener, "SELECT 5").scalar(), "5");
}

TEST(Session, PreparedStatementsSqlAndProtocol) {
  Daemon d(session_config());
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  ASSERT_TRUE(exec(c, "PREPARE dbl(int) AS SELECT $1 * 2").ok);
  EXPECT_EQ(exec(c, "EXECUTE dbl(21)").scalar(), "42");
  EXPECT_EQ(exec(c, "EXECUTE dbl(50)").scalar(), "100");
  ASSERT_TRUE(exec(c, "DEALLOCATE dbl").ok);
  EXPECT_EQ(exec(c, "EXECUTE dbl(1)").sqlstate, "26000");

  // Protocol-level named statements (Parse/Bind/Execute).
  QResult prep = result_of(PQprepare(c.get(), "s_add", "SELECT $1::int + $2::int", 2, nullptr));
  ASSERT_TRUE(prep.ok) << prep.describe();
  for (int i = 0; i < 20; ++i) {
    std::string a = std::to_string(i), b = std::to_string(i * 10);
    const char* vals[2] = {a.c_str(), b.c_str()};
    QResult r = result_of(PQexecPrepared(c.get(), "s_add", 2, vals, nullptr, nullptr, 0));
    ASSERT_TRUE(r.ok) << r.describe();
    EXPECT_EQ(r.scalar(), std::to_string(i * 11));
  }
  QResult desc = result_of(PQdescribePrepared(c.get(), "s_add"));
  EXPECT_TRUE(desc.ok) << desc.describe();
}

TEST(Session, StartupOptionsAndReset) {
  Daemon d(session_config());
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo("app", "app", "options='-c statement_timeout=1234' application_name=itest_opts"));
  ASSERT_TRUE(c);
  EXPECT_EQ(exec(c, "SHOW statement_timeout").scalar(), "1234ms");
  EXPECT_EQ(exec(c, "SHOW application_name").scalar(), "itest_opts");
  ASSERT_TRUE(exec(c, "SET statement_timeout = 5000").ok);
  EXPECT_EQ(exec(c, "SHOW statement_timeout").scalar(), "5s");
  ASSERT_TRUE(exec(c, "RESET statement_timeout").ok);
  EXPECT_EQ(exec(c, "SHOW statement_timeout").scalar(), "1234ms")
      << "RESET must return to the connection's startup value";
  // The option is really in force on the server.
  auto t0 = Clock::now();
  QResult q = exec(c, "SELECT pg_sleep(3)");
  EXPECT_EQ(q.sqlstate, "57014") << q.describe();
  EXPECT_LT(ms_since(t0), 2500);
}

TEST(Session, NextClientSeesNoLeftoverState) {
  Daemon d(session_config(1));
  START_DAEMON(d);
  std::string pid_a;
  {
    ConnPtr a = must_connect(d.conninfo());
    ASSERT_TRUE(a);
    pid_a = exec(a, "SELECT pg_backend_pid()").scalar();
    ASSERT_TRUE(exec(a, "CREATE TEMP TABLE leftover(x int)").ok);
    ASSERT_TRUE(exec(a, "INSERT INTO leftover VALUES (1)").ok);
    ASSERT_TRUE(exec(a, "SET work_mem = '7MB'").ok);
    ASSERT_TRUE(exec(a, "PREPARE leftover_stmt AS SELECT 1").ok);
    ASSERT_TRUE(exec(a, "SELECT pg_advisory_lock(424242)").ok);
    ASSERT_TRUE(exec(a, "LISTEN leftover_chan").ok);
  }
  ConnPtr b = must_connect(d.conninfo());
  ASSERT_TRUE(b);
  EXPECT_EQ(exec(b, "SELECT pg_backend_pid()").scalar(), pid_a)
      << "with pool size 1 the second session should reuse the pooled server connection";
  EXPECT_EQ(exec(b, "SELECT to_regclass('pg_temp.leftover') IS NULL").scalar(), "t") << "temp table leaked";
  EXPECT_EQ(exec(b, "SHOW work_mem").scalar(), "4MB") << "SET leaked";
  EXPECT_EQ(exec(b, "SELECT count(*) FROM pg_prepared_statements").scalar(), "0") << "prepared statement leaked";
  EXPECT_EQ(exec(b, "SELECT count(*) FROM pg_listening_channels()").scalar(), "0") << "LISTEN leaked";
  EXPECT_EQ(cluster().scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 424242", "postgres")
                .value_or("?"),
            "0")
      << "advisory lock leaked";
  EXPECT_EQ(PQtransactionStatus(b.get()), PQTRANS_IDLE);
}

TEST(Session, ClientGoneMidTransactionLeavesCleanServer) {
  ASSERT_APP_SQL("DROP TABLE IF EXISTS sess_dirty; CREATE TABLE sess_dirty(x int)");
  Daemon d(session_config(1));
  START_DAEMON(d);
  {
    ConnPtr a = must_connect(d.conninfo());
    ASSERT_TRUE(a);
    ASSERT_TRUE(exec(a, "BEGIN").ok);
    ASSERT_TRUE(exec(a, "CREATE TEMP TABLE dirty_tmp(x int)").ok);
    ASSERT_TRUE(exec(a, "INSERT INTO sess_dirty VALUES (1)").ok);
    ASSERT_TRUE(exec(a, "SET LOCAL work_mem = '9MB'").ok);
    // PQfinish: Terminate in the middle of the transaction.
  }
  ConnPtr b = must_connect(d.conninfo());
  ASSERT_TRUE(b);
  QResult q = exec(b, "SELECT count(*) FROM sess_dirty");
  ASSERT_TRUE(q.ok) << q.describe();
  EXPECT_EQ(q.scalar(), "0");
  EXPECT_EQ(PQtransactionStatus(b.get()), PQTRANS_IDLE);
  EXPECT_EQ(exec(b, "SELECT to_regclass('pg_temp.dirty_tmp') IS NULL").scalar(), "t");
  EXPECT_EQ(exec(b, "SHOW work_mem").scalar(), "4MB");
  ASSERT_TRUE(exec(b, "INSERT INTO sess_dirty VALUES (2)").ok);
  EXPECT_EQ(cluster().scalar("SELECT string_agg(x::text, ',') FROM sess_dirty").value_or("?"), "2");
}

TEST(Session, CancelRunningQuery) {
  Daemon d(session_config());
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  auto t0 = Clock::now();
  ASSERT_EQ(PQsendQuery(c.get(), "SELECT pg_sleep(10)"), 1);
  std::this_thread::sleep_for(Ms(300));
  PGcancel* cn = PQgetCancel(c.get());
  char errbuf[256] = {0};
  EXPECT_EQ(PQcancel(cn, errbuf, sizeof errbuf), 1) << errbuf;
  PQfreeCancel(cn);
  QResult r = result_of(PQgetResult(c.get()), c.get());
  while (PGresult* extra = PQgetResult(c.get())) PQclear(extra);
  EXPECT_EQ(r.sqlstate, "57014") << r.describe();
  EXPECT_LT(ms_since(t0), 3000);
  EXPECT_EQ(exec(c, "SELECT 11").scalar(), "11");
}

TEST(Session, PoolSizeLimitsServerConnections) {
  Daemon d(session_config(2));
  START_DAEMON(d);
  ASSERT_TRUE(cluster().terminate_backends("app"));
  ConnPtr a = must_connect(d.conninfo());
  ConnPtr b = must_connect(d.conninfo());
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(exec(a, "SELECT 1").ok);
  ASSERT_TRUE(exec(b, "SELECT 1").ok);
  // A third session waits for a server: it gets one as soon as a session ends.
  std::atomic<bool> done{false};
  std::string third_result;
  std::thread t([&] {
    ConnectResult cr = pg_connect(d.conninfo());
    if (cr.ok()) third_result = exec(cr.conn, "SELECT 'third'").scalar();
    else third_result = "connect failed: " + cr.error;
    done = true;
  });
  std::this_thread::sleep_for(Ms(500));
  EXPECT_FALSE(done.load()) << "third session should wait while the pool (size 2) is in use";
  EXPECT_LE(cluster().backend_count("app", "app"), 2);
  a.reset();
  t.join();
  EXPECT_EQ(third_result, "third");
  EXPECT_LE(cluster().backend_count("app", "app"), 2);
}
