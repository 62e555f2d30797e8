// Plan cache (transaction mode): named prepared statements follow their client
// across servers, are shared by clients that prepare the same text, survive
// eviction and DDL, and fail exactly as PostgreSQL fails them.
#include <gtest/gtest.h>

#include <chrono>
#include <set>
#include <thread>

#include "harness.h"

using namespace itest;

namespace {

QResult prepare(const ConnPtr& c, const char* name, const char* sql, int nparams = 1) {
  return result_of(PQprepare(c.get(), name, sql, nparams, nullptr));
}

QResult run(const ConnPtr& c, const char* name, const std::vector<std::string>& args) {
  std::vector<const char*> vals;
  for (auto& a : args) vals.push_back(a.c_str());
  return result_of(PQexecPrepared(c.get(), name, int(vals.size()), vals.data(), nullptr, nullptr, 0));
}

// The next n results of a pipeline: the first value of a row set, or what it was.
std::vector<std::string> pipeline_results(const ConnPtr& c, int n) {
  std::vector<std::string> got;
  for (int results = 0, nulls = 0; results < n && nulls < 20;) {
    PGresult* r = PQgetResult(c.get());
    if (!r) {   // end of one query's results
      nulls++;
      continue;
    }
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_TUPLES_OK) got.push_back(PQgetvalue(r, 0, 0));
    else if (st == PGRES_COMMAND_OK) got.push_back("prepared");
    else if (st == PGRES_PIPELINE_SYNC) got.push_back("sync");
    else if (st == PGRES_PIPELINE_ABORTED) got.push_back("aborted");
    else got.push_back(std::string("error ") + (PQresultErrorField(r, PG_DIAG_SQLSTATE) ?: "?"));
    PQclear(r);
    results++;
  }
  return got;
}

// Statements the plan cache holds on the server this (pool of one) client reaches.
std::string server_statement_count(const ConnPtr& c) {
  return exec(c, "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'pgsidecar%'").scalar();
}

}  // namespace

TEST(PlanCache, PgbenchPreparedManyClientsFewServers) {
  DaemonConfig cfg = tx_config(5);
  cfg.set("query_wait_timeout", "60s");
  Daemon d(cfg);
  START_DAEMON(d);
  std::vector<std::string> env = {"PGSSLMODE=disable", "PGGSSENCMODE=disable", "PGCONNECT_TIMEOUT=10"};
  auto pgbench = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = {"pgbench", "-h", "127.0.0.1", "-p", std::to_string(d.port()), "-U", "app"};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.push_back("app");
    return run_process(argv, 120000, env);
  };
  ProcResult init = pgbench({"-i", "-s", "1", "-q"});
  ASSERT_EQ(init.exit_code, 0) << init.output;
  // 64 clients on 5 servers, two threads: pgbench waits for each Parse with the
  // thread's other clients stalled, some of them holding servers in a transaction.
  ProcResult r = pgbench({"-M", "prepared", "-c", "64", "-j", "2", "-t", "50"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("number of transactions actually processed: 3200/3200"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("error"), std::string::npos) << r.output;
  // Every transaction's three updates and insert happened, once.
  EXPECT_EQ(cluster().scalar("SELECT count(*) FROM pgbench_history").value_or("?"), "3200");
  EXPECT_EQ(cluster().scalar("SELECT (SELECT sum(abalance) FROM pgbench_accounts) = (SELECT sum(delta) FROM "
                             "pgbench_history) AND (SELECT sum(bbalance) FROM pgbench_branches) = (SELECT "
                             "sum(delta) FROM pgbench_history)")
                .value_or("?"),
            "t");
}

TEST(PlanCache, SameNameDifferentTextFollowsEachClientAcrossServers) {
  Daemon d(tx_config(2));
  START_DAEMON(d);
  std::vector<ConnPtr> cs;
  for (int i = 0; i < 3; ++i) {
    cs.push_back(must_connect(d.conninfo()));
    ASSERT_TRUE(cs.back());
    std::string sql = "SELECT $1::int * " + std::to_string(i + 2) + ", pg_backend_pid()";
    QResult p = prepare(cs.back(), "mul", sql.c_str());
    ASSERT_TRUE(p.ok) << "client " << i << ": " << p.describe();
  }
  std::vector<std::set<std::string>> pids(3);
  auto check = [&](int i, int x) {
    QResult r = run(cs[i], "mul", {std::to_string(x)});
    ASSERT_TRUE(r.ok) << "client " << i << ": " << r.describe();
    EXPECT_EQ(r.at(0, 0), std::to_string(x * (i + 2))) << "client " << i << " ran another client's statement";
    pids[i].insert(r.at(0, 1));
  };
  // Two clients hold both servers in transactions, so the third one's turn comes
  // on whichever server is free next.
  const std::vector<std::pair<int, int>> pairs = {{0, 1}, {1, 2}, {2, 0}, {1, 0}, {2, 1}, {0, 2}};
  for (int round = 0; round < 12; ++round) {
    auto [p, q] = pairs[round % pairs.size()];
    ASSERT_TRUE(exec(cs[p], "BEGIN").ok);
    check(p, round);
    ASSERT_TRUE(exec(cs[q], "BEGIN").ok);
    check(q, round + 100);
    ASSERT_TRUE(exec(cs[p], "COMMIT").ok);
    ASSERT_TRUE(exec(cs[q], "COMMIT").ok);
    check(p, round + 1000);
  }
  size_t most = 0;
  for (auto& s : pids) most = std::max(most, s.size());
  EXPECT_GE(most, 2u) << "no client changed server; the test did not exercise preparing on another server";
}

TEST(PlanCache, ClientsShareOneServerStatement) {
  Daemon d(tx_config(1));
  START_DAEMON(d);
  ConnPtr a = must_connect(d.conninfo()), b = must_connect(d.conninfo());
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(prepare(a, "by_a", "SELECT $1::int + 40").ok);
  ASSERT_TRUE(prepare(b, "by_b", "SELECT $1::int + 40").ok);
  EXPECT_EQ(run(a, "by_a", {"2"}).scalar(), "42");
  EXPECT_EQ(run(b, "by_b", {"1"}).scalar(), "41");
  EXPECT_EQ(server_statement_count(a), "1");
  // The client's own name is not visible to the server, only the shared one.
  EXPECT_EQ(exec(a, "SELECT count(*) FROM pg_prepared_statements WHERE name IN ('by_a', 'by_b')").scalar(), "0");
}

TEST(PlanCache, ErrorsAreThoseOfPostgreSQL) {
  Daemon d(tx_config(2));
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  ASSERT_TRUE(prepare(c, "s", "SELECT $1::int * 10").ok);
  QResult dup = prepare(c, "s", "SELECT 'other'", 0);
  EXPECT_EQ(dup.sqlstate, "42P05") << dup.describe();
  EXPECT_EQ(dup.error, "prepared statement \"s\" already exists");
  EXPECT_EQ(run(c, "s", {"4"}).scalar(), "40") << "the duplicate replaced the original";
  QResult unknown = run(c, "nope", {});
  EXPECT_EQ(unknown.sqlstate, "26000") << unknown.describe();
  EXPECT_EQ(unknown.error, "prepared statement \"nope\" does not exist");
  QResult desc = result_of(PQdescribePrepared(c.get(), "nope"));
  EXPECT_EQ(desc.sqlstate, "26000") << desc.describe();
  QResult bad = prepare(c, "broken", "SELEC 1", 0);
  EXPECT_EQ(bad.sqlstate, "42601") << bad.describe();
  EXPECT_EQ(run(c, "broken", {}).sqlstate, "26000") << "a failed Parse left a statement behind";
  QResult count = run(c, "s", {"1", "2"});   // wrong parameter count: the server's own error
  EXPECT_EQ(count.sqlstate, "08P01") << count.describe();
  EXPECT_EQ(run(c, "s", {"5"}).scalar(), "50");
}

TEST(PlanCache, PipelineWithoutIntermediateSync) {
  Daemon d(tx_config(1));
  START_DAEMON(d);
  ConnPtr other = must_connect(d.conninfo()), c = must_connect(d.conninfo());
  ASSERT_TRUE(other && c);
  // "p2" is already on the server (prepared by the other client): its Parse is answered without a second prepare.
  ASSERT_TRUE(prepare(other, "x", "SELECT $1::int + 2").ok);
  ASSERT_EQ(PQenterPipelineMode(c.get()), 1);
  const char* one[1] = {"1"};
  ASSERT_EQ(PQsendPrepare(c.get(), "p1", "SELECT $1::int + 1", 1, nullptr), 1);
  ASSERT_EQ(PQsendQueryPrepared(c.get(), "p1", 1, one, nullptr, nullptr, 0), 1);
  ASSERT_EQ(PQsendPrepare(c.get(), "p2", "SELECT $1::int + 2", 1, nullptr), 1);
  ASSERT_EQ(PQsendQueryPrepared(c.get(), "p2", 1, one, nullptr, nullptr, 0), 1);
  ASSERT_EQ(PQsendQueryPrepared(c.get(), "p1", 1, one, nullptr, nullptr, 0), 1);
  ASSERT_EQ(PQpipelineSync(c.get()), 1);
  // A failing Parse mid-pipeline: what follows it up to the Sync is skipped, and undone.
  ASSERT_EQ(PQsendPrepare(c.get(), "bad", "SELEC", 0, nullptr), 1);
  ASSERT_EQ(PQsendPrepare(c.get(), "skipped", "SELECT 7", 0, nullptr), 1);
  ASSERT_EQ(PQpipelineSync(c.get()), 1);
  EXPECT_EQ(pipeline_results(c, 9), (std::vector<std::string>{"prepared", "2", "prepared", "3", "2", "sync",
                                                               "error 42601", "aborted", "sync"}));
  ASSERT_EQ(PQexitPipelineMode(c.get()), 1);
  EXPECT_EQ(run(c, "p2", {"5"}).scalar(), "7");
  EXPECT_EQ(run(c, "skipped", {}).sqlstate, "26000") << "a skipped Parse must not exist";
  EXPECT_EQ(server_statement_count(c), "2");
}

TEST(PlanCache, DdlThroughTheProxyRepreparesStatements) {
  Daemon d(tx_config(2));
  START_DAEMON(d);
  ConnPtr a = must_connect(d.conninfo()), b = must_connect(d.conninfo());
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(exec(a, "DROP TABLE IF EXISTS pc_ddl; CREATE TABLE pc_ddl(id int); INSERT INTO pc_ddl VALUES (1)").ok);
  ASSERT_TRUE(prepare(a, "all_cols", "SELECT * FROM pc_ddl", 0).ok);
  ASSERT_TRUE(prepare(b, "all_cols", "SELECT * FROM pc_ddl", 0).ok);
  QResult before = run(a, "all_cols", {});
  ASSERT_TRUE(before.ok) << before.describe();
  EXPECT_EQ(before.rows.at(0).size(), 1u);
  ASSERT_TRUE(exec(b, "ALTER TABLE pc_ddl ADD COLUMN extra int DEFAULT 5").ok);
  // PostgreSQL alone would answer 0A000 "cached plan must not change result type".
  for (auto* c : {&a, &b}) {
    QResult after = run(*c, "all_cols", {});
    ASSERT_TRUE(after.ok) << after.describe();
    ASSERT_EQ(after.rows.at(0).size(), 2u);
    EXPECT_EQ(after.at(0, 1), "5");
  }
  EXPECT_TRUE(exec(a, "DROP TABLE pc_ddl").ok);
}

TEST(PlanCache, DeallocateAndDiscardReachTheClientsStatements) {
  Daemon d(tx_config(2));
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  ASSERT_TRUE(prepare(c, "one", "SELECT 1", 0).ok);
  ASSERT_TRUE(prepare(c, "two", "SELECT 2", 0).ok);
  QResult dealloc = exec(c, "DEALLOCATE one");
  ASSERT_TRUE(dealloc.ok) << dealloc.describe();
  EXPECT_EQ(run(c, "one", {}).sqlstate, "26000");
  EXPECT_EQ(run(c, "two", {}).scalar(), "2");
  EXPECT_EQ(exec(c, "DEALLOCATE one").sqlstate, "26000");
  ASSERT_TRUE(prepare(c, "one", "SELECT 11", 0).ok) << "a deallocated name can be prepared again";
  EXPECT_EQ(run(c, "one", {}).scalar(), "11");
  ASSERT_TRUE(exec(c, "DEALLOCATE ALL").ok);
  EXPECT_EQ(run(c, "one", {}).sqlstate, "26000");
  EXPECT_EQ(run(c, "two", {}).sqlstate, "26000");
  ASSERT_TRUE(prepare(c, "three", "SELECT 3", 0).ok);
  ASSERT_TRUE(exec(c, "DISCARD ALL").ok);
  EXPECT_EQ(run(c, "three", {}).sqlstate, "26000");
  ASSERT_TRUE(prepare(c, "three", "SELECT 33", 0).ok);
  EXPECT_EQ(run(c, "three", {}).scalar(), "33");
}

TEST(PlanCache, EvictionKeepsEveryClientStatementUsable) {
  DaemonConfig cfg = tx_config(1);
  cfg.set("max_prepared_statements", "2");
  Daemon d(cfg);
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  for (int k = 0; k < 5; ++k) {
    std::string name = "m" + std::to_string(k), sql = "SELECT $1::int * " + std::to_string(k);
    ASSERT_TRUE(prepare(c, name.c_str(), sql.c_str()).ok);
  }
  for (int round = 0; round < 3; ++round) {
    for (int k = 0; k < 5; ++k) {
      std::string name = "m" + std::to_string(k);
      QResult r = run(c, name.c_str(), {"3"});
      ASSERT_TRUE(r.ok) << name << ": " << r.describe();
      EXPECT_EQ(r.scalar(), std::to_string(3 * k));
    }
  }
  EXPECT_EQ(server_statement_count(c), "2");
}

TEST(PlanCache, ParseOfAKnownStatementNeedsNoFreeServer) {
  DaemonConfig cfg = tx_config(1);
  cfg.set("query_wait_timeout", "3s");
  Daemon d(cfg);
  START_DAEMON(d);
  ConnPtr holder = must_connect(d.conninfo()), c = must_connect(d.conninfo());
  ASSERT_TRUE(holder && c);
  ASSERT_TRUE(prepare(holder, "known", "SELECT $1::int - 1").ok);
  ASSERT_TRUE(exec(holder, "BEGIN").ok);   // the only server is taken
  auto t0 = Clock::now();
  QResult p = prepare(c, "mine", "SELECT $1::int - 1");
  EXPECT_TRUE(p.ok) << p.describe();
  EXPECT_LT(ms_since(t0), 2000) << "the Parse waited for a server";
  ASSERT_TRUE(exec(holder, "COMMIT").ok);
  EXPECT_EQ(run(c, "mine", {"10"}).scalar(), "9");
}

TEST(PlanCache, OffMeansDiscardAfterNamedStatements) {
  DaemonConfig cfg = tx_config(1);
  cfg.set("max_prepared_statements", "0");
  Daemon d(cfg);
  START_DAEMON(d);
  ConnPtr a = must_connect(d.conninfo()), b = must_connect(d.conninfo());
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(prepare(a, "mul", "SELECT $1::int * 2").ok);
  // Same name on the only server: the first was discarded, no 42P05.
  ASSERT_TRUE(prepare(b, "mul", "SELECT $1::int * 3").ok);
  for (auto* c : {&a, &b}) {
    QResult r = run(*c, "mul", {"7"});
    if (r.ok) EXPECT_EQ(r.scalar(), c == &a ? "14" : "21");
    else EXPECT_EQ(r.sqlstate, "26000") << r.describe();
  }
  ASSERT_TRUE(exec(b, "BEGIN").ok);
  ASSERT_TRUE(prepare(b, "inside", "SELECT $1::int + 1").ok);
  EXPECT_EQ(run(b, "inside", {"7"}).scalar(), "8");
  ASSERT_TRUE(exec(b, "COMMIT").ok);
}

TEST(PlanCache, SessionModePassesNamesThrough) {
  Daemon d(base_config());
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  ASSERT_TRUE(prepare(c, "mine", "SELECT $1::int").ok);
  EXPECT_EQ(exec(c, "SELECT name FROM pg_prepared_statements").scalar(), "mine");
  EXPECT_EQ(run(c, "mine", {"3"}).scalar(), "3");
}

TEST(PlanCache, NotifyOnTheSchemaChannelRepreparesStatements) {
  DaemonConfig cfg = tx_config(1);
  cfg.set("schema_notify_channel", "schema_changed")
      .set("schema_notify_conninfo", "\"" + cluster().direct_conninfo("app", "app", "apppass") + "\"");
  Daemon d(cfg);
  START_DAEMON(d);
  ASSERT_TRUE(eventually([&] { return d.log().find("listening for NOTIFY") != std::string::npos; }, 5000)) << d.log();
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  cluster().psql("DROP TABLE IF EXISTS pc_notify; CREATE TABLE pc_notify(id int); INSERT INTO pc_notify VALUES (1);"
                 "GRANT ALL ON pc_notify TO app");
  ASSERT_TRUE(prepare(c, "all_cols", "SELECT * FROM pc_notify", 0).ok);
  ASSERT_EQ(run(c, "all_cols", {}).rows.at(0).size(), 1u);
  // Behind the proxy's back, as a migration tool connected directly would.
  bool ok = false;
  cluster().psql("ALTER TABLE pc_notify ADD COLUMN extra int DEFAULT 9; NOTIFY schema_changed", "app", &ok);
  ASSERT_TRUE(ok);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));   // the notification reaches the listener
  QResult after = run(c, "all_cols", {});
  ASSERT_TRUE(after.ok) << after.describe();
  EXPECT_EQ(after.at(0, 1), "9");
  cluster().psql("DROP TABLE pc_notify");
}

TEST(PlanCache, ResultTypeChangedElsewhereIsRecoveredOutsideTransactions) {
  Daemon d(tx_config(1));
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  cluster().psql("DROP TABLE IF EXISTS pc_other; CREATE TABLE pc_other(id int); INSERT INTO pc_other VALUES (1);"
                 "GRANT ALL ON pc_other TO app");
  ASSERT_TRUE(prepare(c, "all_cols", "SELECT * FROM pc_other", 0).ok);
  ASSERT_TRUE(run(c, "all_cols", {}).ok);
  // Unannounced, behind the proxy's back. PostgreSQL answers 0A000 "cached plan
  // must not change result type"; outside a transaction pgsidecar prepares afresh
  // and runs the execution again.
  cluster().psql("ALTER TABLE pc_other ADD COLUMN extra int DEFAULT 3");
  QResult first = run(c, "all_cols", {});
  ASSERT_TRUE(first.ok) << first.describe();
  EXPECT_EQ(first.at(0, 1), "3");
  // Inside a transaction the error is PostgreSQL's (the transaction is aborted);
  // the next transaction works.
  cluster().psql("ALTER TABLE pc_other ADD COLUMN more int DEFAULT 4");
  ASSERT_TRUE(exec(c, "BEGIN").ok);
  QResult in_tx = run(c, "all_cols", {});
  EXPECT_EQ(in_tx.sqlstate, "0A000") << in_tx.describe();
  ASSERT_TRUE(exec(c, "ROLLBACK").ok);
  QResult after = run(c, "all_cols", {});
  ASSERT_TRUE(after.ok) << after.describe();
  EXPECT_EQ(after.at(0, 2), "4");
  cluster().psql("DROP TABLE pc_other");
}

// psycopg sends DEALLOCATE through the extended protocol (an unnamed Parse).
TEST(PlanCache, DeallocateThroughTheExtendedProtocol) {
  Daemon d(tx_config(1));
  START_DAEMON(d);
  ConnPtr a = must_connect(d.conninfo()), b = must_connect(d.conninfo());
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(prepare(a, "s", "SELECT $1::int + 100").ok);
  ASSERT_TRUE(prepare(a, "t", "SELECT $1::int + 200").ok);
  ASSERT_TRUE(prepare(b, "same", "SELECT $1::int + 100").ok);
  QResult one = exec_params(a, "DEALLOCATE t", {});
  ASSERT_TRUE(one.ok) << one.describe();
  EXPECT_EQ(run(a, "t", {"1"}).sqlstate, "26000");
  EXPECT_EQ(run(a, "s", {"1"}).scalar(), "101");
  QResult all = exec_params(a, "DEALLOCATE ALL", {});
  ASSERT_TRUE(all.ok) << all.describe();
  EXPECT_EQ(run(a, "s", {"1"}).sqlstate, "26000");
  // The server dropped the shared statement too; the other client does not notice.
  QResult other = run(b, "same", {"2"});
  ASSERT_TRUE(other.ok) << other.describe();
  EXPECT_EQ(other.scalar(), "102");
  EXPECT_EQ(exec_params(a, "DEALLOCATE nope", {}).sqlstate, "26000");
}

namespace {

std::string cstr(std::string_view s) { return std::string(s) + '\0'; }

// Messages until ReadyForQuery: the first column of each DataRow, and "E<sqlstate>" for errors.
std::vector<std::string> read_until_ready(RawConn& rc) {
  std::vector<std::string> got;
  for (;;) {
    BackendMsg m;
    if (rc.read_msg(m, 10000) != RawConn::Status::Ok) {
      got.push_back("closed");
      return got;
    }
    if (m.type == 'D' && m.payload.size() >= 6) {
      uint32_t len = uint32_t(uint8_t(m.payload[2])) << 24 | uint32_t(uint8_t(m.payload[3])) << 16 |
                     uint32_t(uint8_t(m.payload[4])) << 8 | uint8_t(m.payload[5]);
      got.push_back(m.payload.substr(6, len));
    }
    if (m.type == 'E') got.push_back("E" + wire::error_fields(m.payload)['C']);
    if (m.type == 'Z') return got;
  }
}

}  // namespace

// Each Bind the plan cache rewrites gets a new head in a small scratch area of the
// batch being written. Many of them in one read, some with long portal names,
// fill the batch and the area together: no head may be overwritten before it is sent.
TEST(PlanCache, ManyRewrittenBindsInOneBatchKeepTheirHeads) {
  Daemon d(tx_config(1));
  START_DAEMON(d);
  RawConn rc;
  std::string state, err;
  ASSERT_TRUE(rc.login(d.port(), "app", "app", state, err)) << state << " " << err;
  ASSERT_TRUE(rc.send(wire::msg('P', cstr("s1") + cstr("SELECT $1::int") + wire::be16(0)) + wire::msg('S', "")));
  ASSERT_EQ(read_until_ready(rc), std::vector<std::string>{});
  // Portal names of 80, then 1, 490 and 390 bytes: eight heads fill most of the
  // area, the ninth fills the batch, and the last two would reuse the area.
  const size_t portal_len[] = {80, 80, 80, 80, 80, 80, 80, 80, 1, 490, 390};
  std::vector<std::string> want;
  for (int round = 0; round < 3; round++) {   // the first round also prepares s1 on the server
    std::string batch;
    for (size_t i = 0; i < std::size(portal_len); i++) {
      std::string portal = char('a' + i) + std::string(portal_len[i] - 1, 'p');   // PostgreSQL keeps 63 bytes
      std::string value = std::to_string(round * 100 + int(i));
      batch += wire::msg('B', cstr(portal) + cstr("s1") + wire::be16(0) + wire::be16(1) +
                                  wire::be32(uint32_t(value.size())) + value + wire::be16(0));
      batch += wire::msg('E', cstr(portal) + wire::be32(0));
      if (round == 0) want.push_back(value);
      else want[i] = value;
    }
    ASSERT_TRUE(rc.send(batch + wire::msg('S', "")));
    EXPECT_EQ(read_until_ready(rc), want) << "round " << round;
  }
  expect_serving(d, "after many rewritten Binds");
}

// A re-run after "cached plan must not change result type" is only for a batch
// that is alone on the server: with another batch behind it, the client gets
// PostgreSQL's error and its later batch its own answer, in order.
TEST(PlanCache, ResultTypeChangedWithABatchBehindIsPostgresError) {
  Daemon d(tx_config(1));
  START_DAEMON(d);
  cluster().psql("DROP TABLE IF EXISTS pc_behind; CREATE TABLE pc_behind(id int); INSERT INTO pc_behind VALUES (1);"
                 "GRANT ALL ON pc_behind TO app");
  // Raw messages: both batches go in one write, so the second is behind the
  // first when its error comes (libpq's PQpipelineSync sends each on its own).
  RawConn rc;
  std::string state, err;
  ASSERT_TRUE(rc.login(d.port(), "app", "app", state, err)) << state << " " << err;
  auto run = [](const std::string& name) {
    return wire::msg('B', cstr("") + cstr(name) + wire::be16(0) + wire::be16(0) + wire::be16(0)) +
           wire::msg('E', cstr("") + wire::be32(0)) + wire::msg('S', "");
  };
  ASSERT_TRUE(rc.send(wire::msg('P', cstr("all_cols") + cstr("SELECT * FROM pc_behind") + wire::be16(0)) +
                      wire::msg('P', cstr("other") + cstr("SELECT 42") + wire::be16(0)) + wire::msg('S', "")));
  ASSERT_EQ(read_until_ready(rc), std::vector<std::string>{});
  ASSERT_TRUE(rc.send(run("all_cols")));
  ASSERT_EQ(read_until_ready(rc), std::vector<std::string>{"1"});
  cluster().psql("ALTER TABLE pc_behind ADD COLUMN extra int DEFAULT 3");
  ASSERT_TRUE(rc.send(run("all_cols") + run("other")));
  EXPECT_EQ(read_until_ready(rc), std::vector<std::string>{"E0A000"});
  EXPECT_EQ(read_until_ready(rc), std::vector<std::string>{"42"});
  // Prepared afresh on its next use, with the new column.
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  ASSERT_TRUE(rc.send(run("all_cols")));
  EXPECT_EQ(read_until_ready(rc), std::vector<std::string>{"1"});
  EXPECT_EQ(exec(c, "SELECT extra FROM pc_behind").scalar(), "3");
  cluster().psql("DROP TABLE pc_behind");
}

// A Bind whose portal name is too long for pgsidecar's rewrite ends its client
// (08P01). The Parse queued before it, to prepare the statement again on this
// server, must not reach the server of a later client as a stray ParseComplete.
TEST(PlanCache, RefusedBindLeavesNothingForTheNextClient) {
  Daemon d(tx_config(1));
  START_DAEMON(d);
  RawConn rc;
  std::string state, err;
  ASSERT_TRUE(rc.login(d.port(), "app", "app", state, err)) << state << " " << err;
  ASSERT_TRUE(rc.send(wire::msg('P', cstr("s1") + cstr("SELECT 7") + wire::be16(0)) + wire::msg('S', "")));
  ASSERT_EQ(read_until_ready(rc), std::vector<std::string>{});
  // DDL through the proxy: s1 is prepared again on the server before its next use.
  ASSERT_EQ(rc.simple_query("CREATE TABLE pc_bump(); DROP TABLE pc_bump"), "");
  std::string portal(1100, 'p');
  ASSERT_TRUE(rc.send(wire::msg('B', cstr(portal) + cstr("s1") + wire::be16(0) + wire::be16(0) + wire::be16(0)) +
                      wire::msg('E', cstr(portal) + wire::be32(0)) + wire::msg('S', "")));
  EXPECT_EQ(read_until_ready(rc), (std::vector<std::string>{"E08P01", "closed"}));
  for (int i = 0; i < 3; i++) {   // whichever server they get, later clients get their own answers
    ConnPtr c = must_connect(d.conninfo());
    ASSERT_TRUE(c);
    QResult p = prepare(c, "s2", "SELECT 8", 0);   // replies the plan cache counts on
    ASSERT_TRUE(p.ok) << p.describe();
    QResult r = run(c, "s2", {});
    ASSERT_TRUE(r.ok) << r.describe();
    EXPECT_EQ(r.scalar(), "8");
    QResult q = exec(c, "SELECT 1");
    ASSERT_TRUE(q.ok) << q.describe();
    EXPECT_EQ(q.scalar(), "1");
  }
}
