// Client authentication (trust, scram-sha-256 against auth_file), server
// authentication (SCRAM, md5, trust; password from auth_file or databases:),
// database routing errors.
#include <gtest/gtest.h>

#include "harness.h"

using namespace itest;

namespace {

DaemonConfig scram_config() {
  DaemonConfig c = base_config();
  c.set("auth_type", "scram-sha-256");
  return c;
}

}  // namespace

TEST(Auth, ClientScramRightAndWrongPassword) {
  Daemon d(scram_config());
  START_DAEMON(d);
  ConnectResult good = pg_connect(d.conninfo("app", "app", "password=apppass"));
  ASSERT_TRUE(good.ok()) << good.error;
  EXPECT_EQ(exec(good.conn, "SELECT current_user").scalar(), "app");

  ConnectResult bad = pg_connect(d.conninfo("app", "app", "password=wrong"));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.sqlstate, "28P01") << bad.error;

  // A user that is not in auth_file fails the same way (no user enumeration).
  ConnectResult unknown = pg_connect(d.conninfo("nobody", "app", "password=whatever"));
  ASSERT_FALSE(unknown.ok());
  EXPECT_TRUE(unknown.sqlstate == "28P01" || unknown.sqlstate == "28000") << unknown.error;

  // The daemon keeps serving after failed logins.
  ConnectResult again = pg_connect(d.conninfo("app", "app", "password=apppass"));
  ASSERT_TRUE(again.ok()) << again.error;
  EXPECT_EQ(exec(again.conn, "SELECT 1").scalar(), "1");
}

TEST(Auth, ClientScramThenMd5ToServer) {
  // md5user's client password is checked against auth_file too (SCRAM exchange
  // computed from the plain password there), then md5 is used toward the server.
  Daemon d(scram_config());
  START_DAEMON(d);
  ConnectResult good = pg_connect(d.conninfo("md5user", "app", "password=md5pass"));
  ASSERT_TRUE(good.ok()) << good.error;
  EXPECT_EQ(exec(good.conn, "SELECT current_user").scalar(), "md5user");
  ConnectResult bad = pg_connect(d.conninfo("md5user", "app", "password=apppass"));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.sqlstate, "28P01") << bad.error;
}

TEST(Auth, ClientScramWithStoredScramSecret) {
  // auth_file holds a SCRAM secret (as pg_authid does), not the password.
  bool ok = false;
  cluster().psql("DROP ROLE IF EXISTS itest_secret_holder", "postgres", &ok);
  ASSERT_TRUE(ok);
  cluster().psql("SET password_encryption = 'scram-sha-256'; CREATE ROLE itest_secret_holder PASSWORD 'trustpass'",
                 "postgres", &ok);
  ASSERT_TRUE(ok);
  std::string secret =
      cluster().scalar("SELECT rolpassword FROM pg_authid WHERE rolname = 'itest_secret_holder'", "postgres").value_or("");
  ASSERT_EQ(secret.rfind("SCRAM-SHA-256$", 0), 0u) << secret;

  DaemonConfig cfg = scram_config();
  cfg.user("trustuser", secret);  // server side: trust (pg_hba)
  Daemon d(cfg);
  START_DAEMON(d);
  ConnectResult good = pg_connect(d.conninfo("trustuser", "app", "password=trustpass"));
  ASSERT_TRUE(good.ok()) << good.error;
  EXPECT_EQ(exec(good.conn, "SELECT current_user").scalar(), "trustuser");
  ConnectResult bad = pg_connect(d.conninfo("trustuser", "app", "password=nottrustpass"));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.sqlstate, "28P01") << bad.error;
}

TEST(Auth, ServerAuthScramMd5AndTrust) {
  Daemon d;  // client auth trust; server passwords from auth_file
  START_DAEMON(d);
  for (const std::string user : {"app", "md5user", "trustuser"}) {
    ConnectResult c = pg_connect(d.conninfo(user, "app"));
    ASSERT_TRUE(c.ok()) << user << ": [" << c.sqlstate << "] " << c.error;
    QResult q = exec(c.conn, "SELECT current_user, count(*) FROM pg_class");
    ASSERT_TRUE(q.ok) << user << ": " << q.describe();
    EXPECT_EQ(q.at(0, 0), user);
  }
}

TEST(Auth, ServerAuthMd5WithStoredHash) {
  std::string hash = cluster().scalar("SELECT 'md5' || md5('md5pass' || 'md5user')", "postgres").value_or("");
  ASSERT_EQ(hash.size(), 35u);
  DaemonConfig cfg = base_config();
  cfg.user("md5user", hash);
  Daemon d(cfg);
  START_DAEMON(d);
  ConnectResult c = pg_connect(d.conninfo("md5user", "app"));
  ASSERT_TRUE(c.ok()) << "[" << c.sqlstate << "] " << c.error;
  QResult q = exec(c.conn, "SELECT current_user");
  EXPECT_EQ(q.scalar(), "md5user") << q.describe();
}

TEST(Auth, DatabaseEntryForcesServerUserAndPassword) {
  DaemonConfig cfg = base_config();
  cfg.users.clear();  // the password comes from the databases: entry only
  cfg.db("forced", db_entry("dbname: app, user: app, password: apppass"));
  Daemon d(cfg);
  START_DAEMON(d);
  ConnectResult c = pg_connect(d.conninfo("someclient", "forced"));
  ASSERT_TRUE(c.ok()) << "[" << c.sqlstate << "] " << c.error;
  QResult q = exec(c.conn, "SELECT current_user, current_database()");
  ASSERT_TRUE(q.ok) << q.describe();
  EXPECT_EQ(q.at(0, 0), "app");
  EXPECT_EQ(q.at(0, 1), "app");
}

// Connects and, if the login succeeds (the daemon may defer the server login),
// runs a query; returns the first SQLSTATE seen.
static std::string first_error_state(const Daemon& d, const std::string& user, const std::string& db,
                                     std::string& detail) {
  ConnectResult c = pg_connect(d.conninfo(user, db));
  if (!c.ok()) {
    detail = c.error;
    return c.sqlstate;
  }
  QResult q = exec(c.conn, "SELECT 1");
  detail = q.describe();
  return q.ok ? "" : q.sqlstate;
}

TEST(Auth, ServerAuthFailureIsPassedThrough) {
  DaemonConfig cfg = base_config();
  cfg.user("app", "definitely-wrong");
  Daemon d(cfg);
  START_DAEMON(d);
  std::string detail;
  EXPECT_EQ(first_error_state(d, "app", "app", detail), "28P01") << detail;
  // Other users are unaffected.
  ConnectResult ok = pg_connect(d.conninfo("md5user", "app"));
  ASSERT_TRUE(ok.ok()) << ok.error;
  EXPECT_EQ(exec(ok.conn, "SELECT 1").scalar(), "1");
}

TEST(Auth, UnknownDatabaseWithoutWildcard) {
  DaemonConfig cfg = base_config();
  cfg.databases.erase("*");
  Daemon d(cfg);
  START_DAEMON(d);
  ConnectResult c = pg_connect(d.conninfo("app", "not_configured_db"));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.sqlstate, "3D000") << c.error;
  ConnectResult ok = pg_connect(d.conninfo("app", "app"));
  ASSERT_TRUE(ok.ok()) << ok.error;
  EXPECT_EQ(exec(ok.conn, "SELECT 1").scalar(), "1");
}

TEST(Auth, MissingServerDatabaseIsPassedThrough) {
  DaemonConfig cfg = base_config();
  cfg.db("ghost", db_entry("dbname: itest_ghost_db_does_not_exist"));
  Daemon d(cfg);
  START_DAEMON(d);
  std::string detail;
  EXPECT_EQ(first_error_state(d, "app", "ghost", detail), "3D000") << detail;
  // Through the wildcard as well.
  EXPECT_EQ(first_error_state(d, "app", "itest_no_such_db_2", detail), "3D000") << detail;
  ConnectResult ok = pg_connect(d.conninfo("app", "app"));
  ASSERT_TRUE(ok.ok()) << ok.error;
}

TEST(Auth, MaxClientConnExceeded) {
  DaemonConfig cfg = base_config();
  cfg.set("max_client_conn", "3");
  Daemon d(cfg);
  START_DAEMON(d);
  std::vector<ConnPtr> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(must_connect(d.conninfo()));
    ASSERT_TRUE(held.back());
  }
  ConnectResult over = pg_connect(d.conninfo());
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.sqlstate, "53300") << over.error;
  for (auto& c : held) EXPECT_EQ(exec(c, "SELECT 1").scalar(), "1");
  held.pop_back();
  ConnPtr again;
  EXPECT_TRUE(eventually([&] {
    ConnectResult r = pg_connect(d.conninfo());
    if (r.ok()) again = std::move(r.conn);
    return again != nullptr;
  }, 3000)) << "a slot freed by a disconnect was not reusable";
}
