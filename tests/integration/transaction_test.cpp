// Transaction pool mode: a server is held only for the duration of a transaction.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <set>
#include <thread>

#include "harness.h"

using namespace itest;

namespace {

std::vector<std::string> pgbench_env() {
  return {"PGSSLMODE=disable", "PGGSSENCMODE=disable", "PGCONNECT_TIMEOUT=10", "PGPASSWORD="};
}

// Runs pgbench through the daemon; returns output, asserting exit 0.
void run_pgbench(const Daemon& d, const std::vector<std::string>& extra, ProcResult& out, int timeout_ms = 120000) {
  std::vector<std::string> argv = {"pgbench", "-h", "127.0.0.1", "-p", std::to_string(d.port()), "-U", "app"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  argv.push_back("app");
  out = run_process(argv, timeout_ms, pgbench_env());
}

bool has_error_text(const std::string& s) {
  return s.find("error:") != std::string::npos || s.find("ERROR") != std::string::npos ||
         s.find("FATAL") != std::string::npos || s.find("aborted") != std::string::npos;
}

}  // namespace

TEST(Transaction, BasicQueriesAndBackendKey) {
  Daemon d(tx_config());
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  QResult q = exec(c, "SELECT g FROM generate_series(1, 500) g");
  ASSERT_TRUE(q.ok) << q.describe();
  EXPECT_EQ(q.rows.size(), 500u);
  EXPECT_EQ(exec_params(c, "SELECT $1::text || '!'", {"hi"}).scalar(), "hi!");
  EXPECT_EQ(exec(c, "SELECT 1/0").sqlstate, "22012");
  EXPECT_EQ(exec(c, "SELECT 3").scalar(), "3");
  QResult pid = exec(c, "SELECT pg_backend_pid()");
  ASSERT_TRUE(pid.ok);
  EXPECT_NE(std::to_string(PQbackendPID(c.get())), pid.scalar());
  // Failed transaction: status INERROR until ROLLBACK, then the client continues.
  ASSERT_TRUE(exec(c, "BEGIN").ok);
  EXPECT_EQ(exec(c, "SELECT * FROM no_such_tbl").sqlstate, "42P01");
  EXPECT_EQ(PQtransactionStatus(c.get()), PQTRANS_INERROR);
  EXPECT_EQ(exec(c, "SELECT 1").sqlstate, "25P02");
  ASSERT_TRUE(exec(c, "ROLLBACK").ok);
  EXPECT_EQ(PQtransactionStatus(c.get()), PQTRANS_IDLE);
  EXPECT_EQ(exec(c, "SELECT 4").scalar(), "4");
}

TEST(Transaction, TwoHundredClientsExactCountsBoundedServers) {
  ASSERT_APP_SQL(
      "DROP TABLE IF EXISTS tx_counter, tx_log; "
      "CREATE TABLE tx_counter(id int PRIMARY KEY, n bigint NOT NULL); "
      "INSERT INTO tx_counter VALUES (1, 0); "
      "CREATE TABLE tx_log(client int NOT NULL, seq int NOT NULL)");
  DaemonConfig cfg = tx_config(5);
  cfg.set("reserve_pool_size", "0").set("max_client_conn", "400").set("query_wait_timeout", "60s");
  Daemon d(cfg);
  START_DAEMON(d);
  ASSERT_TRUE(cluster().terminate_backends("app"));

  constexpr int kClients = 200;
  constexpr int kTx = 20;
  MaxSampler sampler(backend_count_sql("app", "app"), 10);
  std::atomic<int> failures{0};
  std::atomic<int> committed{0};
  std::mutex mu;
  std::string first_error;
  auto fail = [&](const std::string& e) {
    failures++;
    std::lock_guard<std::mutex> lk(mu);
    if (first_error.empty()) first_error = e;
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      ConnectResult cr = pg_connect(d.conninfo(), 30000);
      if (!cr.ok()) return fail("connect: [" + cr.sqlstate + "] " + cr.error);
      for (int t = 0; t < kTx; ++t) {
        for (const std::string& sql :
             {std::string("BEGIN"), std::string("UPDATE tx_counter SET n = n + 1 WHERE id = 1"),
              "INSERT INTO tx_log VALUES (" + std::to_string(i) + ", " + std::to_string(t) + ")",
              std::string("COMMIT")}) {
          QResult q = exec(cr.conn, sql);
          if (!q.ok) return fail(sql + ": " + q.describe());
        }
        committed++;
      }
    });
  }
  for (auto& t : threads) t.join();
  sampler.stop();
  ASSERT_EQ(failures.load(), 0) << first_error;
  EXPECT_EQ(committed.load(), kClients * kTx);
  EXPECT_EQ(cluster().scalar("SELECT n FROM tx_counter WHERE id = 1").value_or("?"), std::to_string(kClients * kTx));
  EXPECT_EQ(cluster().scalar("SELECT count(*) FROM tx_log").value_or("?"), std::to_string(kClients * kTx));
  EXPECT_EQ(cluster().scalar("SELECT count(DISTINCT (client, seq)) FROM tx_log").value_or("?"),
            std::to_string(kClients * kTx));
  EXPECT_GT(sampler.samples(), 0);
  EXPECT_GE(sampler.max(), 1);
  EXPECT_LE(sampler.max(), 5) << "pool_size 5 (reserve 0) but PostgreSQL saw more server connections";
}

TEST(Transaction, PgbenchSimpleProtocol) {
  DaemonConfig cfg = tx_config(5);
  cfg.set("query_wait_timeout", "60s");
  Daemon d(cfg);
  START_DAEMON(d);
  ProcResult init;
  run_pgbench(d, {"-i", "-s", "1", "-q"}, init);
  ASSERT_EQ(init.exit_code, 0) << init.output;
  ASSERT_NE(init.output.find("done"), std::string::npos) << init.output;
  ProcResult r;
  run_pgbench(d, {"-M", "simple", "-c", "32", "-j", "2", "-t", "200"}, r);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FALSE(r.timed_out);
  EXPECT_NE(r.output.find("number of transactions actually processed: 6400/6400"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("number of failed transactions: 0 "), std::string::npos) << r.output;
  EXPECT_FALSE(has_error_text(r.output)) << r.output;
  // tpcb invariant: the balances add up.
  auto tb = cluster().scalar("SELECT sum(tbalance) FROM pgbench_tellers");
  auto bb = cluster().scalar("SELECT sum(bbalance) FROM pgbench_branches");
  auto ab = cluster().scalar("SELECT sum(abalance) FROM pgbench_accounts");
  ASSERT_TRUE(tb && bb && ab);
  EXPECT_EQ(*tb, *bb);
  EXPECT_EQ(*tb, *ab);
  EXPECT_EQ(cluster().scalar("SELECT count(*) FROM pgbench_history").value_or("?"), "6400");
}

TEST(Transaction, PgbenchExtendedProtocol) {
  DaemonConfig cfg = tx_config(5);
  cfg.set("query_wait_timeout", "60s");
  Daemon d(cfg);
  START_DAEMON(d);
  ProcResult init;
  run_pgbench(d, {"-i", "-s", "1", "-q"}, init);
  ASSERT_EQ(init.exit_code, 0) << init.output;
  ProcResult r;
  run_pgbench(d, {"-M", "extended", "-c", "32", "-j", "2", "-t", "200"}, r);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("number of transactions actually processed: 6400/6400"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("number of failed transactions: 0 "), std::string::npos) << r.output;
  EXPECT_FALSE(has_error_text(r.output)) << r.output;
  EXPECT_EQ(cluster().scalar("SELECT count(*) FROM pgbench_history").value_or("?"), "6400");
}

// Named prepared statements in transaction mode: plan_cache_test.cpp.

namespace {
// Ordered pairs of three clients, so that with a pool of two servers every
// client has to share, and at some point change, servers.
const std::vector<std::pair<int, int>> kPairs = {{0, 1}, {1, 2}, {2, 0}, {1, 0}, {2, 1}, {0, 2}};
}  // namespace

TEST(Transaction, SessionParametersFollowTheClient) {
  Daemon d(tx_config(2));
  START_DAEMON(d);
  struct Want {
    std::string app, datestyle, tz, intervalstyle, encoding, scs;
  };
  const std::vector<Want> wants = {
      {"client_a", "ISO, DMY", "UTC", "postgres", "UTF8", "on"},
      {"client_b", "SQL, MDY", "America/New_York", "iso_8601", "LATIN1", "off"},
      {"client_c", "German, DMY", "Asia/Tokyo", "sql_standard", "WIN1252", "on"},
  };
  std::vector<ConnPtr> cs;
  for (const auto& w : wants) {
    cs.push_back(must_connect(d.conninfo()));
    ConnPtr& c = cs.back();
    ASSERT_TRUE(c);
    // Each SET is its own transaction and may land on any server.
    for (const std::string& sql :
         {"SET application_name = '" + w.app + "'", "SET DateStyle = '" + w.datestyle + "'",
          "SET TimeZone = '" + w.tz + "'", "SET IntervalStyle = '" + w.intervalstyle + "'",
          "SET client_encoding = '" + w.encoding + "'", "SET standard_conforming_strings = " + w.scs}) {
      QResult r = exec(c, sql);
      ASSERT_TRUE(r.ok) << sql << ": " << r.describe();
    }
  }
  std::vector<std::set<std::string>> pids(3);
  int checks = 0;
  auto check = [&](int i, const char* where) {
    const Want& w = wants[i];
    QResult r = exec(cs[i],
                     "SELECT current_setting('application_name'), current_setting('DateStyle'), "
                     "current_setting('TimeZone'), current_setting('IntervalStyle'), "
                     "current_setting('client_encoding'), current_setting('standard_conforming_strings'), "
                     "pg_backend_pid()");
    ASSERT_TRUE(r.ok) << r.describe();
    std::vector<std::string> expect = {w.app, w.datestyle, w.tz, w.intervalstyle, w.encoding, w.scs};
    for (size_t k = 0; k < expect.size(); ++k)
      EXPECT_EQ(r.at(0, k), expect[k]) << "client " << i << " (" << where << "), column " << k << ", backend "
                                       << r.at(0, 6);
    pids[i].insert(r.at(0, 6));
    EXPECT_EQ(exec(cs[i], "SHOW DateStyle").scalar(), w.datestyle) << "client " << i << " (" << where << ")";
    const char* ps = PQparameterStatus(cs[i].get(), "DateStyle");
    EXPECT_EQ(ps ? std::string(ps) : "<none>", w.datestyle) << "ParameterStatus seen by client " << i;
    const char* enc = PQparameterStatus(cs[i].get(), "client_encoding");
    EXPECT_EQ(enc ? std::string(enc) : "<none>", w.encoding) << "ParameterStatus seen by client " << i;
    ++checks;
  };
  for (int round = 0; round < 12; ++round) {
    auto [p, q] = kPairs[round % kPairs.size()];
    ASSERT_TRUE(exec(cs[p], "BEGIN").ok);
    check(p, "in transaction, first");
    ASSERT_TRUE(exec(cs[q], "BEGIN").ok);
    check(q, "in transaction, second");
    ASSERT_TRUE(exec(cs[p], "COMMIT").ok);
    ASSERT_TRUE(exec(cs[q], "COMMIT").ok);
    check(p, "autocommit");
    check(q, "autocommit");
  }
  EXPECT_EQ(checks, 48);
  size_t max_servers = 0;
  std::set<std::string> all;
  for (auto& s : pids) {
    max_servers = std::max(max_servers, s.size());
    all.insert(s.begin(), s.end());
  }
  EXPECT_GE(max_servers, 2u) << "no client ever changed server; parameter re-application was not exercised";
  EXPECT_LE(all.size(), 2u) << "pool_size 2 but more server backends were used";
  // RESET goes back to the default, also after moving between servers.
  ASSERT_TRUE(exec(cs[1], "RESET DateStyle").ok);
  for (int k = 0; k < 4; ++k) {
    ASSERT_TRUE(exec(cs[0], "BEGIN").ok);
    EXPECT_EQ(exec(cs[1], "SHOW DateStyle").scalar(), "ISO, MDY");
    ASSERT_TRUE(exec(cs[0], "COMMIT").ok);
  }
}

TEST(Transaction, CancelRunningQuery) {
  Daemon d(tx_config(2));
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  ASSERT_TRUE(exec(c, "SELECT 1").ok);
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
  EXPECT_EQ(exec(c, "SELECT 12").scalar(), "12");

  // Cancel inside an explicit transaction: the transaction is aborted.
  ASSERT_TRUE(exec(c, "BEGIN").ok);
  ASSERT_EQ(PQsendQuery(c.get(), "SELECT pg_sleep(10)"), 1);
  std::this_thread::sleep_for(Ms(300));
  cn = PQgetCancel(c.get());
  EXPECT_EQ(PQcancel(cn, errbuf, sizeof errbuf), 1) << errbuf;
  PQfreeCancel(cn);
  r = result_of(PQgetResult(c.get()), c.get());
  while (PGresult* extra = PQgetResult(c.get())) PQclear(extra);
  EXPECT_EQ(r.sqlstate, "57014") << r.describe();
  EXPECT_EQ(PQtransactionStatus(c.get()), PQTRANS_INERROR);
  QResult rb = exec(c, "ROLLBACK");
  ASSERT_TRUE(rb.ok) << rb.describe();
  EXPECT_EQ(exec(c, "SELECT 13").scalar(), "13");
}

TEST(Transaction, IdleClientCancelDoesNotHitOtherClients) {
  Daemon d(tx_config(1));
  START_DAEMON(d);
  ConnPtr a = must_connect(d.conninfo());
  ConnPtr b = must_connect(d.conninfo());
  ASSERT_TRUE(a && b);
  // a used the only server before; now b runs on it.
  QResult pa = exec(a, "SELECT pg_backend_pid()");
  ASSERT_TRUE(pa.ok);
  ASSERT_EQ(PQsendQuery(b.get(), "SELECT pg_sleep(1.5), pg_backend_pid()"), 1);
  std::this_thread::sleep_for(Ms(300));
  PGcancel* cn = PQgetCancel(a.get());
  char errbuf[256] = {0};
  PQcancel(cn, errbuf, sizeof errbuf);
  PQfreeCancel(cn);
  QResult r = result_of(PQgetResult(b.get()), b.get());
  while (PGresult* extra = PQgetResult(b.get())) PQclear(extra);
  EXPECT_TRUE(r.ok) << "a cancel request with idle client a's key cancelled client b's query: " << r.describe();
  EXPECT_EQ(r.at(0, 1), pa.scalar()) << "pool size 1: both clients should have used the same server";
}

TEST(Transaction, QueryWaitTimeout) {
  DaemonConfig cfg = tx_config(1);
  cfg.set("query_wait_timeout", "1s").set("reserve_pool_size", "0");
  Daemon d(cfg);
  START_DAEMON(d);
  ConnPtr holder = must_connect(d.conninfo());
  ASSERT_TRUE(holder);
  ASSERT_TRUE(exec(holder, "BEGIN").ok);
  ASSERT_TRUE(exec(holder, "SELECT 1").ok);

  auto t0 = Clock::now();
  std::string state;
  ConnectResult waiter = pg_connect(d.conninfo());
  ConnPtr waiter_conn;
  if (!waiter.ok()) {
    state = waiter.sqlstate;  // the daemon may need a server to complete the login
  } else {
    waiter_conn = std::move(waiter.conn);
    QResult q = exec(waiter_conn, "SELECT 1");
    EXPECT_FALSE(q.ok) << q.describe();
    state = q.sqlstate;
  }
  long waited = ms_since(t0);
  EXPECT_EQ(state, "08P01") << waiter.error;
  EXPECT_GE(waited, 800);
  EXPECT_LE(waited, 4000);
  if (waiter_conn) {
    // Then the connection is closed.
    QResult again = exec(waiter_conn, "SELECT 1");
    EXPECT_FALSE(again.ok) << "connection should be closed after query_wait_timeout";
  }
  // The holder is unaffected and, once it commits, new clients get served.
  EXPECT_EQ(exec(holder, "SELECT 2").scalar(), "2");
  ASSERT_TRUE(exec(holder, "COMMIT").ok);
  ConnPtr later = must_connect(d.conninfo());
  ASSERT_TRUE(later);
  EXPECT_EQ(exec(later, "SELECT 3").scalar(), "3");
}

TEST(Transaction, ClientGoneMidTransactionLeavesCleanServer) {
  ASSERT_APP_SQL("DROP TABLE IF EXISTS tx_dirty; CREATE TABLE tx_dirty(x int)");
  Daemon d(tx_config(1));
  START_DAEMON(d);
  auto verify = [&](const char* how) {
    ConnPtr b = must_connect(d.conninfo());
    ASSERT_TRUE(b) << how;
    auto t0 = Clock::now();
    QResult q = exec(b, "SELECT count(*) FROM tx_dirty");
    ASSERT_TRUE(q.ok) << how << ": " << q.describe();
    EXPECT_LT(ms_since(t0), 3000) << how << ": the next client waited for the abandoned server";
    EXPECT_EQ(q.scalar(), "0") << how << ": uncommitted row visible";
    EXPECT_EQ(PQtransactionStatus(b.get()), PQTRANS_IDLE) << how;
    QResult st = exec(b, "SELECT current_setting('work_mem'), now() = statement_timestamp()");
    EXPECT_EQ(st.at(0, 0), "4MB") << how << ": SET LOCAL from the abandoned transaction is in force";
    EXPECT_EQ(st.at(0, 1), "t") << how << ": still inside the abandoned transaction";
    ASSERT_TRUE(exec(b, "BEGIN").ok);
    ASSERT_TRUE(exec(b, "INSERT INTO tx_dirty VALUES (0)").ok);
    ASSERT_TRUE(exec(b, "ROLLBACK").ok);
  };
  {
    // 1. PQfinish (Terminate) inside a transaction.
    ConnPtr a = must_connect(d.conninfo());
    ASSERT_TRUE(a);
    ASSERT_TRUE(exec(a, "BEGIN").ok);
    ASSERT_TRUE(exec(a, "INSERT INTO tx_dirty VALUES (1)").ok);
    ASSERT_TRUE(exec(a, "SET LOCAL work_mem = '9MB'").ok);
  }
  verify("Terminate mid-transaction");
  {
    // 2. Abrupt close (RST, no Terminate) inside a transaction.
    RawConn a;
    std::string state, err;
    ASSERT_TRUE(a.login(d.port(), "app", "app", state, err)) << state << " " << err;
    ASSERT_EQ(a.simple_query("BEGIN"), "");
    ASSERT_EQ(a.simple_query("INSERT INTO tx_dirty VALUES (2)"), "");
    ASSERT_EQ(a.simple_query("SET LOCAL work_mem = '9MB'"), "");
    a.abort();
  }
  verify("connection reset mid-transaction");
  {
    // 3. Gone in the middle of COPY FROM STDIN.
    RawConn a;
    std::string state, err;
    ASSERT_TRUE(a.login(d.port(), "app", "app", state, err)) << state << " " << err;
    ASSERT_TRUE(a.send(wire::query("COPY tx_dirty FROM STDIN")));
    BackendMsg m;
    ASSERT_EQ(a.read_msg(m, 3000), RawConn::Status::Ok);
    ASSERT_EQ(m.type, 'G') << "expected CopyInResponse";
    ASSERT_TRUE(a.send(wire::msg('d', "3\n4\n")));
    std::this_thread::sleep_for(Ms(100));
    a.close();
  }
  verify("gone during COPY FROM STDIN");
  {
    // 4. Gone with an extended-protocol batch half sent (Parse/Bind, no Sync).
    RawConn a;
    std::string state, err;
    ASSERT_TRUE(a.login(d.port(), "app", "app", state, err)) << state << " " << err;
    ASSERT_EQ(a.simple_query("BEGIN"), "");
    std::string parse = std::string("\0INSERT INTO tx_dirty VALUES (5)\0", 33) + wire::be16(0);
    ASSERT_TRUE(a.send(wire::msg('P', parse)));
    a.close();
  }
  verify("gone mid extended-protocol batch");
}

// Stricter: a client that disconnects while its query is still running must
// not pin the (only) server until the query ends.
TEST(Transaction, ClientGoneDuringLongQueryFreesPool) {
  Daemon d(tx_config(1));
  START_DAEMON(d);
  {
    RawConn a;
    std::string state, err;
    ASSERT_TRUE(a.login(d.port(), "app", "app", state, err)) << state << " " << err;
    ASSERT_TRUE(a.send(wire::query("SELECT pg_sleep(8)")));
    std::this_thread::sleep_for(Ms(300));
    a.abort();
  }
  ConnPtr b = must_connect(d.conninfo());
  ASSERT_TRUE(b);
  auto t0 = Clock::now();
  QResult q = exec(b, "SELECT 'free'");
  EXPECT_TRUE(q.ok) << q.describe();
  EXPECT_EQ(q.scalar(), "free");
  EXPECT_LT(ms_since(t0), 4000) << "the pool stayed blocked by the abandoned pg_sleep(8)";
  // The abandoned pg_sleep may still run on PostgreSQL: do not leave it to later tests.
  b.reset();
  d.stop();
  cluster().terminate_backends("app");
}

TEST(Transaction, PipelineMode) {
  Daemon d(tx_config(2));
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  ASSERT_EQ(PQenterPipelineMode(c.get()), 1);
  for (int i = 0; i < 10; ++i) {
    std::string v = std::to_string(i);
    const char* vals[1] = {v.c_str()};
    ASSERT_EQ(PQsendQueryParams(c.get(), "SELECT $1::int * 3", 1, nullptr, vals, nullptr, nullptr, 0), 1);
  }
  ASSERT_EQ(PQpipelineSync(c.get()), 1);
  for (int i = 0; i < 10; ++i) {
    QResult r = result_of(PQgetResult(c.get()), c.get());
    EXPECT_TRUE(r.ok) << r.describe();
    EXPECT_EQ(r.scalar(), std::to_string(i * 3));
    EXPECT_EQ(PQgetResult(c.get()), nullptr);
  }
  PGresult* sync = PQgetResult(c.get());
  ASSERT_NE(sync, nullptr);
  EXPECT_EQ(PQresultStatus(sync), PGRES_PIPELINE_SYNC);
  PQclear(sync);
  ASSERT_EQ(PQexitPipelineMode(c.get()), 1);
  EXPECT_EQ(exec(c, "SELECT 'after pipeline'").scalar(), "after pipeline");
}

// A client that vanishes while its query runs: the query is cancelled on the
// server, not left running (holding locks) until it finishes on its own.
TEST(Transaction, ClientGoneMidQueryCancelsTheQuery) {
  for (const char* mode : {"transaction", "session"}) {
    SCOPED_TRACE(mode);
    Daemon d(base_config().set("pool_mode", mode));
    START_DAEMON(d);
    RawConn a;
    std::string state, err;
    ASSERT_TRUE(a.login(d.port(), "app", "app", state, err)) << state << " " << err;
    ASSERT_TRUE(a.send(wire::query("SELECT pg_sleep(60) /* gone-mid-query */")));
    auto running = [] {
      return cluster().scalar("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%gone-mid-query%' AND "
                              "state = 'active' AND pid <> pg_backend_pid()");
    };
    ASSERT_TRUE(eventually([&] { return running() == std::optional<std::string>("1"); }, 5000));
    a.abort();
    EXPECT_TRUE(eventually([&] { return running() == std::optional<std::string>("0"); }, 3000))
        << "the query still runs after its client left";
  }
}
