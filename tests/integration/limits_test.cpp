// Bounds and timeouts a peer cannot get around: prepared statements per client,
// logins in progress, the server authentication methods, and the PgBouncer
// timeouts (query_timeout, client_idle_timeout). Each case checks the SQLSTATE
// the client gets and that other clients keep being served.
#include <gtest/gtest.h>

#include "harness.h"

using namespace itest;

namespace {

QResult prepare(const ConnPtr& c, const std::string& name, const std::string& sql) {
  return result_of(PQprepare(c.get(), name.c_str(), sql.c_str(), 0, nullptr), c.get());
}

QResult run_prepared(const ConnPtr& c, const std::string& name) {
  return result_of(PQexecPrepared(c.get(), name.c_str(), 0, nullptr, nullptr, nullptr, 0), c.get());
}

TEST(Limits, PreparedStatementsPerClient) {
  DaemonConfig cfg = tx_config(2);
  cfg.set("max_client_prepared_statements", "2");
  Daemon d(cfg);
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  ASSERT_TRUE(prepare(c, "s1", "SELECT 1").ok);
  ASSERT_TRUE(prepare(c, "s2", "SELECT 2").ok);
  QResult third = prepare(c, "s3", "SELECT 3");
  EXPECT_EQ(third.sqlstate, "53400") << third.describe();
  // The session goes on: its statements work, and one freed makes room.
  EXPECT_EQ(run_prepared(c, "s2").scalar(), "2");
  EXPECT_EQ(run_prepared(c, "s3").sqlstate, "26000");
  ASSERT_TRUE(exec(c, "DEALLOCATE s1").ok);
  EXPECT_TRUE(prepare(c, "s3", "SELECT 3").ok);
  EXPECT_EQ(run_prepared(c, "s3").scalar(), "3");
  expect_serving(d, "limits");
}

TEST(Limits, LoginsInProgressAreBounded) {
  DaemonConfig cfg = base_config();
  cfg.set("max_unauthenticated_clients", "3");
  Daemon d(cfg);
  START_DAEMON(d);
  std::vector<RawConn> silent(3);
  for (RawConn& rc : silent) ASSERT_TRUE(rc.connect(d.port()));
  RawConn extra;
  ASSERT_TRUE(extra.connect(d.port()));
  BackendMsg m;
  ASSERT_EQ(extra.read_msg(m, 5000), RawConn::Status::Ok);
  ASSERT_EQ(m.type, 'E');
  EXPECT_EQ(wire::error_fields(m.payload)['C'], "53300");
  EXPECT_EQ(extra.wait_closed(5000), RawConn::Status::Closed);
  // Once the silent ones go, logins are accepted again.
  for (RawConn& rc : silent) rc.close();
  ASSERT_TRUE(eventually([&] { return pg_connect(d.conninfo()).ok(); }, 5000));
  expect_serving(d, "limits");
}

TEST(Limits, ServerAuthMethodsAllowList) {
  DaemonConfig cfg = base_config();
  cfg.set("server_auth_methods", "[scram-sha-256]");
  Daemon d(cfg);
  START_DAEMON(d);
  // md5user's server login is md5 (harness pg_hba): not allowed here.
  ConnectResult r = pg_connect(d.conninfo("md5user", "app"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.sqlstate, "28000") << r.error;
  EXPECT_NE(r.error.find("server_auth_methods"), std::string::npos) << r.error;
  expect_serving(d, "limits");   // app logs in with SCRAM

  DaemonConfig md5 = base_config();
  md5.set("server_auth_methods", "[scram-sha-256, md5]");
  Daemon d2(md5);
  START_DAEMON(d2);
  ConnPtr ok = must_connect(d2.conninfo("md5user", "app"));
  ASSERT_TRUE(ok);
  EXPECT_EQ(exec(ok, "SELECT current_user").scalar(), "md5user");
}

TEST(Limits, QueryTimeoutCancelsAndDisconnects) {
  DaemonConfig cfg = tx_config(2);
  cfg.set("query_timeout", "500ms");
  Daemon d(cfg);
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  QResult r = exec(c, "SELECT pg_sleep(30)");
  EXPECT_EQ(r.sqlstate, "57014") << r.describe();
  // The backend's query was cancelled, not left running.
  EXPECT_TRUE(eventually([] { return cluster().backend_count("app", "app", true) == 0; }, 5000));
  expect_serving(d, "limits");
}

TEST(Limits, ClientIdleTimeoutClosesIdleClients) {
  DaemonConfig cfg = tx_config(2);
  cfg.set("client_idle_timeout", "300ms");
  Daemon d(cfg);
  START_DAEMON(d);
  RawConn rc;
  std::string state, err;
  ASSERT_TRUE(rc.login(d.port(), "app", "app", state, err)) << state << err;
  BadInputOutcome o = await_error_or_close(rc, 5000);
  EXPECT_EQ(o.sqlstate, "57P05") << o.describe();
  EXPECT_TRUE(o.closed) << o.describe();
  expect_serving(d, "limits");
}

// The settings a transaction-mode client has in force follow it from server to
// server; past SettingList's bounds (512 names, 1 MB of SET text) a SET is
// refused, and the session keeps what it had.
TEST(Limits, SettingsFollowedPerClientAreBounded) {
  Daemon d(tx_config(2));
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  auto sets = [](int from, int to) {
    std::string sql;
    for (int i = from; i < to; i++) sql += "SET app.s" + std::to_string(i) + " = 'v" + std::to_string(i) + "';";
    return sql;
  };
  ASSERT_TRUE(exec(c, sets(0, 500)).ok);
  QResult over = exec(c, sets(500, 520));
  EXPECT_EQ(over.sqlstate, "53400") << over.describe();
  EXPECT_NE(over.error.find("too many settings"), std::string::npos) << over.describe();
  EXPECT_EQ(exec(c, "SHOW app.s499").scalar(), "v499");
  EXPECT_EQ(exec(c, "SELECT current_setting('app.s510', true)").scalar(), "<NULL>");   // never ran
  EXPECT_TRUE(exec(c, sets(500, 512)).ok);   // exactly at the bound
  // A value may change; RESET ALL makes room again.
  EXPECT_TRUE(exec(c, "SET app.s0 = 'again'").ok);
  EXPECT_EQ(exec(c, "SET app.one_more = 1").sqlstate, "53400");
  ASSERT_TRUE(exec(c, "RESET ALL").ok);
  // Bytes count too: two 600 kB values do not fit beside each other.
  const std::string big(600 * 1024, 'x');
  ASSERT_TRUE(exec(c, "SET app.big1 = '" + big + "'").ok);
  EXPECT_EQ(exec(c, "SET app.big2 = '" + big + "'").sqlstate, "53400");
  EXPECT_EQ(exec(c, "SELECT length(current_setting('app.big1'))").scalar(), std::to_string(big.size()));
  // Inside a transaction block a SET is not followed (the server is reset after it): not refused.
  EXPECT_TRUE(exec(c, "BEGIN; SET app.big2 = '" + big + "'; COMMIT").ok);
  // Nobody else sees any of it.
  ConnPtr other = must_connect(d.conninfo());
  ASSERT_TRUE(other);
  EXPECT_EQ(exec(other, "SELECT coalesce(current_setting('app.big1', true), '')").scalar(), "");
  expect_serving(d, "limits");
}

// A SET in a text too long for the statement cache to keep (over 2 MB) is not
// followed: it pins the client like set_config(), and its value stays.
TEST(Limits, SetTooLongToFollowPins) {
  DaemonConfig cfg = tx_config(2);
  cfg.set("max_inspect_bytes", "8MB");
  Daemon d(cfg);
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  const std::string big(3 << 20, 'x');
  ASSERT_TRUE(exec(c, "SET app.huge = '" + big + "'").ok);
  for (int i = 0; i < 3; i++)
    EXPECT_EQ(exec(c, "SELECT length(current_setting('app.huge'))").scalar(), std::to_string(big.size()));
  ConnPtr other = must_connect(d.conninfo());
  ASSERT_TRUE(other);
  EXPECT_EQ(exec(other, "SELECT coalesce(current_setting('app.huge', true), '')").scalar(), "");
  expect_serving(d, "limits");
}

}  // namespace

namespace {

// Review findings: session effects reached through the extended protocol.
TEST(Limits, SessionChangingStatementBoundLaterDoesNotLeak) {
  Daemon d(tx_config(1));
  START_DAEMON(d);
  const std::string sql = "SELECT set_config('search_path', 'evil, public', false)";
  ConnPtr a = must_connect(d.conninfo()), c = must_connect(d.conninfo());
  ASSERT_TRUE(a && c);
  ASSERT_TRUE(prepare(a, "s1", sql).ok);
  ASSERT_TRUE(prepare(c, "s1", sql).ok);   // may be answered without a server
  EXPECT_EQ(run_prepared(c, "s1").scalar(), "evil, public");
  ConnPtr b = must_connect(d.conninfo());
  ASSERT_TRUE(b);
  EXPECT_EQ(exec(b, "SHOW search_path").scalar(), "\"$user\", public");
}

TEST(Limits, UnreadParseCountsAsNotUnderstood) {
  DaemonConfig cfg = tx_config(1);
  cfg.set("max_inspect_bytes", "64kB");
  Daemon d(cfg);
  START_DAEMON(d);
  ConnPtr a = must_connect(d.conninfo());
  ASSERT_TRUE(a);
  const std::string sql = "SET search_path = evil, public /*" + std::string(70 * 1024, 'x') + "*/";
  QResult r = result_of(PQexecParams(a.get(), sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0), a.get());
  ASSERT_TRUE(r.ok) << r.describe();
  ConnPtr b = must_connect(d.conninfo());
  ASSERT_TRUE(b);
  EXPECT_EQ(exec(b, "SHOW search_path").scalar(), "\"$user\", public");
}

TEST(Limits, TextTooDeepBehindAnIdentifierQuoteIsNotParsed) {
  Daemon d(tx_config(1));
  START_DAEMON(d);
  ConnPtr a = must_connect(d.conninfo());
  ASSERT_TRUE(a);
  std::string sql = "SELECT xe'\\' + 1";
  for (int i = 0; i < 100000; i++) sql += "*1";
  sql += " + 'a'";
  exec(a, sql);   // the server's answer (an error) does not matter: the daemon must live
  expect_serving(d, "limits");
}

}  // namespace
