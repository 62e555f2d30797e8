// Self-tests of the harness against PostgreSQL alone (no daemon): they check
// the assumptions the daemon tests build on (roles, pg_hba methods, SQLSTATE
// extraction for connection errors, raw protocol helpers, PostgreSQL's own
// answers to bad input).
#include <gtest/gtest.h>

#include "harness.h"

using namespace itest;

TEST(Harness, ProcessRunner) {
  ProcResult r = run_process({"sh", "-c", "echo out; echo err 1>&2; exit 3"}, 5000);
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_FALSE(r.timed_out);
  EXPECT_NE(r.output.find("out"), std::string::npos);
  EXPECT_NE(r.output.find("err"), std::string::npos);

  auto t0 = Clock::now();
  ProcResult t = run_process({"sleep", "30"}, 300);
  EXPECT_TRUE(t.timed_out);
  EXPECT_LT(ms_since(t0), 5000);

  ProcResult in = run_process({"cat"}, 5000, {}, "hello stdin");
  EXPECT_EQ(in.output, "hello stdin");
}

TEST(Harness, ClusterRolesAndServerAuthMethods) {
  PgCluster& pg = cluster();
  ASSERT_TRUE(pg.running());

  // app: SCRAM (pg_hba scram-sha-256)
  ConnectResult ok = pg_connect(pg.direct_conninfo("app", "app", "apppass"));
  ASSERT_TRUE(ok.ok()) << ok.error;
  EXPECT_EQ(exec(ok.conn, "SELECT current_user").scalar(), "app");

  // SQLSTATE of a connection-time failure is recovered from libpq's message.
  ConnectResult bad = pg_connect(pg.direct_conninfo("app", "app", "wrong"));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.sqlstate, "28P01") << bad.error;

  ConnectResult md5 = pg_connect(pg.direct_conninfo("md5user", "app", "md5pass"));
  ASSERT_TRUE(md5.ok()) << md5.error;
  EXPECT_EQ(exec(md5.conn, "SELECT current_user").scalar(), "md5user");
  EXPECT_EQ(pg.scalar("SELECT left(rolpassword, 3) FROM pg_authid WHERE rolname = 'md5user'", "postgres").value_or(""),
            "md5");
  EXPECT_EQ(pg.scalar("SELECT left(rolpassword, 13) FROM pg_authid WHERE rolname = 'app'", "postgres").value_or(""),
            "SCRAM-SHA-256");

  ConnectResult trust = pg_connect(pg.direct_conninfo("trustuser", "app"));
  ASSERT_TRUE(trust.ok()) << trust.error;
  EXPECT_EQ(exec(trust.conn, "SELECT current_user").scalar(), "trustuser");

  ConnectResult nodb = pg_connect(pg.direct_conninfo("trustuser", "no_such_db"));
  ASSERT_FALSE(nodb.ok());
  EXPECT_EQ(nodb.sqlstate, "3D000") << nodb.error;

  // Query-time SQLSTATE.
  EXPECT_EQ(exec(trust.conn, "SELECT 1/0").sqlstate, "22012");
}

TEST(Harness, RawProtocolAgainstPostgres) {
  PgCluster& pg = cluster();
  RawConn rc;
  std::string state, err;
  ASSERT_TRUE(rc.login(pg.port(), "trustuser", "app", state, err)) << state << " " << err;
  EXPECT_NE(rc.backend_pid, 0u);
  EXPECT_EQ(rc.params["server_encoding"], "UTF8");
  std::vector<std::string> col;
  EXPECT_EQ(rc.simple_query("SELECT 40 + 2", &col), "");
  ASSERT_EQ(col.size(), 1u);
  EXPECT_EQ(col[0], "42");
  EXPECT_EQ(rc.simple_query("SELECT 1/0"), "22012");
  // Garbage message type after startup: PostgreSQL answers 08P01 and closes.
  ASSERT_TRUE(rc.send(wire::msg('\x01', "garbage-garbage")));
  BadInputOutcome o = await_error_or_close(rc, 3000);
  EXPECT_EQ(o.sqlstate, "08P01") << o.describe();
  EXPECT_TRUE(o.closed) << o.describe();

  // SSLRequest on a server without SSL -> 'N', then startup proceeds.
  RawConn ssl;
  ASSERT_TRUE(ssl.connect(pg.port()));
  ASSERT_TRUE(ssl.send(wire::ssl_request()));
  std::string n;
  ASSERT_EQ(ssl.read_exact(1, n, 3000), RawConn::Status::Ok);
  EXPECT_EQ(n, "N");
  EXPECT_TRUE(ssl.startup_login("trustuser", "app", state, err)) << state << " " << err;

  // Unknown protocol version 4.0 -> 0A000.
  RawConn v4;
  ASSERT_TRUE(v4.connect(pg.port()));
  ASSERT_TRUE(v4.send(wire::startup({{"user", "trustuser"}, {"database", "app"}}, 4u << 16)));
  BadInputOutcome o4 = await_error_or_close(v4, 3000);
  EXPECT_EQ(o4.sqlstate, "0A000") << o4.describe();

  // Startup packet shorter than 8 bytes -> closed.
  RawConn shortp;
  ASSERT_TRUE(shortp.connect(pg.port()));
  ASSERT_TRUE(shortp.send(wire::be32(4)));
  BadInputOutcome os = await_error_or_close(shortp, 3000);
  EXPECT_TRUE(os.closed || !os.sqlstate.empty()) << os.describe();
}

TEST(Harness, ClusterRestartKeepsPort) {
  PgCluster& pg = cluster();
  int port = pg.port();
  ASSERT_TRUE(pg.stop(PgCluster::StopMode::Fast));
  EXPECT_FALSE(port_accepts(port));
  ASSERT_TRUE(pg.start());
  EXPECT_EQ(pg.port(), port);
  EXPECT_EQ(pg.scalar("SELECT 1").value_or(""), "1");
  EXPECT_EQ(pg.psql("SELECT 2"), "2");
}
