// Protocol details that must survive pooling, in both pool modes: large
// messages, pipelines with errors, notices, session SETs, LISTEN.
#include <gtest/gtest.h>

#include <set>
#include <thread>

#include "harness.h"

using namespace itest;

namespace {

class Protocol : public ::testing::TestWithParam<std::string> {
 protected:
  DaemonConfig config(int pool_size = 2) {
    DaemonConfig c = base_config();
    c.set("pool_mode", GetParam()).set("default_pool_size", std::to_string(pool_size));
    return c;
  }
  bool txn() const { return GetParam() == "transaction"; }
};

void collect_notice(void* arg, const PGresult* r) {
  auto* v = static_cast<std::vector<std::string>*>(arg);
  const char* m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
  v->push_back(m ? m : "?");
}

}  // namespace

TEST_P(Protocol, LargeMessagesBothWays) {
  Daemon d(config());
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  // 4 MB query text (simple protocol).
  std::string big(4 << 20, 'y');
  QResult q = exec(c, "SELECT length('" + big + "')");
  ASSERT_TRUE(q.ok) << q.describe();
  EXPECT_EQ(q.scalar(), std::to_string(big.size()));
  // 4 MB parameter (extended protocol).
  QResult p = exec_params(c, "SELECT length($1::text), md5($1::text) = md5(repeat('y', " + std::to_string(big.size()) + "))", {big});
  ASSERT_TRUE(p.ok) << p.describe();
  EXPECT_EQ(p.at(0, 0), std::to_string(big.size()));
  EXPECT_EQ(p.at(0, 1), "t");
  // 8 MB single row back.
  QResult r = exec(c, "SELECT repeat('z', 8 * 1024 * 1024)");
  ASSERT_TRUE(r.ok) << r.describe();
  EXPECT_EQ(r.scalar().size(), 8u << 20);
  // Many rows back.
  QResult many = exec(c, "SELECT g, md5(g::text) FROM generate_series(1, 200000) g");
  ASSERT_TRUE(many.ok) << many.describe();
  EXPECT_EQ(many.rows.size(), 200000u);
  EXPECT_EQ(many.at(199999, 0), "200000");
  EXPECT_EQ(exec(c, "SELECT 'after big'").scalar(), "after big");
}

TEST_P(Protocol, PipelineWithErrorRecovers) {
  Daemon d(config());
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  ASSERT_EQ(PQenterPipelineMode(c.get()), 1);
  ASSERT_EQ(PQsendQueryParams(c.get(), "SELECT 1", 0, nullptr, nullptr, nullptr, nullptr, 0), 1);
  ASSERT_EQ(PQsendQueryParams(c.get(), "SELECT 1/0", 0, nullptr, nullptr, nullptr, nullptr, 0), 1);
  ASSERT_EQ(PQsendQueryParams(c.get(), "SELECT 3", 0, nullptr, nullptr, nullptr, nullptr, 0), 1);
  ASSERT_EQ(PQpipelineSync(c.get()), 1);
  ASSERT_EQ(PQsendQueryParams(c.get(), "SELECT 4", 0, nullptr, nullptr, nullptr, nullptr, 0), 1);
  ASSERT_EQ(PQpipelineSync(c.get()), 1);

  QResult r1 = result_of(PQgetResult(c.get()), c.get());
  EXPECT_EQ(r1.scalar(), "1") << r1.describe();
  EXPECT_EQ(PQgetResult(c.get()), nullptr);
  QResult r2 = result_of(PQgetResult(c.get()), c.get());
  EXPECT_EQ(r2.sqlstate, "22012") << r2.describe();
  EXPECT_EQ(PQgetResult(c.get()), nullptr);
  QResult r3 = result_of(PQgetResult(c.get()), c.get());
  EXPECT_EQ(r3.status, PGRES_PIPELINE_ABORTED) << r3.describe();
  EXPECT_EQ(PQgetResult(c.get()), nullptr);
  PGresult* s1 = PQgetResult(c.get());
  ASSERT_NE(s1, nullptr);
  EXPECT_EQ(PQresultStatus(s1), PGRES_PIPELINE_SYNC);
  PQclear(s1);
  QResult r4 = result_of(PQgetResult(c.get()), c.get());
  EXPECT_EQ(r4.scalar(), "4") << r4.describe();
  EXPECT_EQ(PQgetResult(c.get()), nullptr);
  PGresult* s2 = PQgetResult(c.get());
  ASSERT_NE(s2, nullptr);
  EXPECT_EQ(PQresultStatus(s2), PGRES_PIPELINE_SYNC);
  PQclear(s2);
  ASSERT_EQ(PQexitPipelineMode(c.get()), 1);
  EXPECT_EQ(PQtransactionStatus(c.get()), PQTRANS_IDLE);
  EXPECT_EQ(exec(c, "SELECT 5").scalar(), "5");
}

TEST_P(Protocol, NoticesAndRaisedErrorsReachTheClient) {
  Daemon d(config());
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  std::vector<std::string> notices;
  PQsetNoticeReceiver(c.get(), collect_notice, &notices);
  QResult q = exec(c, "DO $$ BEGIN RAISE NOTICE 'hello %', 42; RAISE WARNING 'careful'; END $$");
  ASSERT_TRUE(q.ok) << q.describe();
  EXPECT_EQ(notices, (std::vector<std::string>{"hello 42", "careful"}));
  QResult e = exec(c, "DO $$ BEGIN RAISE EXCEPTION 'custom failure' USING ERRCODE = 'P0042'; END $$");
  EXPECT_EQ(e.sqlstate, "P0042");
  EXPECT_EQ(e.error, "custom failure");
  EXPECT_EQ(exec(c, "SELECT 'ok'").scalar(), "ok");
}

TEST_P(Protocol, SessionSetsStayWithTheirClient) {
  // Non-tracked settings (work_mem, search_path) set by one client must neither
  // leak to another client nor get lost when the client changes server.
  // Transaction mode: 3 clients on 2 servers; session mode needs 3 servers.
  Daemon d(config(txn() ? 2 : 3));
  START_DAEMON(d);
  std::vector<ConnPtr> cs;
  for (int i = 0; i < 3; ++i) {
    cs.push_back(must_connect(d.conninfo()));
    ASSERT_TRUE(cs.back());
  }
  QResult s1 = exec(cs[0], "SET work_mem = '7MB'");
  QResult s2 = exec(cs[0], "SET search_path = pg_catalog, public");
  if (!s1.ok || !s2.ok) {
    // Refusing a session SET in transaction mode is acceptable, silently
    // misapplying it is not.
    EXPECT_TRUE(txn()) << "SET refused in session mode: " << s1.describe() << " / " << s2.describe();
    EXPECT_FALSE(s1.sqlstate.empty());
    return;
  }
  const std::vector<std::pair<int, int>> pairs = {{0, 1}, {1, 2}, {2, 0}, {1, 0}, {2, 1}, {0, 2}};
  auto check = [&](int i) {
    QResult r = exec(cs[i], "SELECT current_setting('work_mem'), current_setting('search_path'), pg_backend_pid()");
    ASSERT_TRUE(r.ok) << r.describe();
    EXPECT_EQ(r.at(0, 0), i == 0 ? "7MB" : "4MB") << "client " << i << " on backend " << r.at(0, 2);
    EXPECT_EQ(r.at(0, 1), i == 0 ? "pg_catalog, public" : "\"$user\", public") << "client " << i;
  };
  for (int round = 0; round < 12; ++round) {
    auto [p, q] = pairs[round % pairs.size()];
    ASSERT_TRUE(exec(cs[p], "BEGIN").ok);
    check(p);
    ASSERT_TRUE(exec(cs[q], "BEGIN").ok);
    check(q);
    ASSERT_TRUE(exec(cs[p], "COMMIT").ok);
    ASSERT_TRUE(exec(cs[q], "COMMIT").ok);
    check(p);
  }
  // RESET ALL returns the client to the defaults, on whatever server.
  ASSERT_TRUE(exec(cs[0], "RESET ALL").ok);
  for (int k = 0; k < 3; ++k) {
    ASSERT_TRUE(exec(cs[1], "BEGIN").ok);
    QResult r = exec(cs[0], "SELECT current_setting('work_mem')");
    EXPECT_EQ(r.scalar(), "4MB");
    ASSERT_TRUE(exec(cs[1], "COMMIT").ok);
  }
}

TEST_P(Protocol, ListenWorksOrIsRefused) {
  Daemon d(config(2));
  START_DAEMON(d);
  ConnPtr l = must_connect(d.conninfo());
  ConnPtr s = must_connect(d.conninfo());
  ASSERT_TRUE(l && s);
  QResult r = exec(l, "LISTEN proto_chan");
  if (!r.ok) {
    EXPECT_TRUE(txn()) << "LISTEN refused in session mode: " << r.describe();
    EXPECT_EQ(r.sqlstate, "0A000") << r.describe();
    EXPECT_EQ(exec(l, "SELECT 1").scalar(), "1") << "connection unusable after a refused LISTEN";
    return;
  }
  ASSERT_TRUE(exec(s, "NOTIFY proto_chan, 'x'").ok);
  auto n = wait_notify(l.get(), 3000);
  EXPECT_TRUE(n.has_value()) << "LISTEN was accepted but the notification never arrived";
}

TEST_P(Protocol, ExtendedProtocolErrorsRecover) {
  Daemon d(config());
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  // Parse error, bind error (wrong parameter count), execute error.
  EXPECT_EQ(exec_params(c, "SELEC $1", {"1"}).sqlstate, "42601");
  EXPECT_EQ(exec_params(c, "SELECT $1::int", {"x"}).sqlstate, "22P02");
  EXPECT_EQ(exec_params(c, "SELECT 1/$1::int", {"0"}).sqlstate, "22012");
  QResult ok = exec_params(c, "SELECT $1::int + $2::int", {"2", "3"});
  EXPECT_EQ(ok.scalar(), "5") << ok.describe();
  // Unnamed statement described then executed.
  QResult prep = result_of(PQprepare(c.get(), "", "SELECT $1::text || 'x'", 1, nullptr), c.get());
  ASSERT_TRUE(prep.ok) << prep.describe();
  if (!txn()) {
    // Only session mode guarantees the unnamed statement survives the Sync.
    const char* v[1] = {"a"};
    QResult r = result_of(PQexecPrepared(c.get(), "", 1, v, nullptr, nullptr, 0), c.get());
    EXPECT_EQ(r.scalar(), "ax") << r.describe();
  }
  // Binary result format.
  const char* v[1] = {"258"};
  PGresult* br = PQexecParams(c.get(), "SELECT $1::int4", 1, nullptr, v, nullptr, nullptr, 1);
  ASSERT_EQ(PQresultStatus(br), PGRES_TUPLES_OK);
  ASSERT_EQ(PQgetlength(br, 0, 0), 4);
  const unsigned char* b = reinterpret_cast<const unsigned char*>(PQgetvalue(br, 0, 0));
  EXPECT_EQ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3], 258);
  PQclear(br);
  EXPECT_EQ(PQtransactionStatus(c.get()), PQTRANS_IDLE);
}

INSTANTIATE_TEST_SUITE_P(Modes, Protocol, ::testing::Values("session", "transaction"),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });
