// The result cache against a real PostgreSQL: what is served from cache, what
// never is, and what invalidates. A hit is told from a miss by changing the row
// behind the proxy's back (direct SQL, which no sidecar sees): a cached answer
// still shows the old value.
#include <atomic>
#include <functional>
#include <map>
#include <thread>

#include "harness.h"

using namespace itest;

namespace {

const std::string kHint = "/* pgsidecar:cache ttl=30s */ ";

// A daemon with the result cache on; mode "hinted" unless given. Every miss is
// stored (admission: always) unless the map names an admission itself.
DaemonConfig cache_config(const std::string& pool_mode = "transaction", const std::string& cache = "{mode: hinted}") {
  DaemonConfig c = pool_mode == "transaction" ? tx_config(3) : base_config();
  std::string map = cache;
  if (map.find("admission:") == std::string::npos) map.insert(1, "admission: always, ");
  c.set("cache", map).set("stats_users", "[app]");
  return c;
}

// SHOW CACHE row `name` ("result_l1", "result_l2") as column -> value.
std::map<std::string, std::string> cache_row(const Daemon& d, const std::string& name) {
  return admin_row(d, "SHOW CACHE", name);
}
long cache_count(const Daemon& d, const std::string& row, const std::string& column) {
  std::string v = cache_row(d, row)[column];
  return v.empty() ? -1 : std::stol(v);
}

// Statements calling functions are cached once the daemon has read the database's
// volatile functions (a query on its control connection, right after the first login).
void wait_functions_known(const Daemon& d, PGconn* c) {
  long hits = cache_count(d, "result_l1", "hits");
  ASSERT_TRUE(eventually([&] {
    exec(c, "/* pgsidecar:cache */ SELECT upper('probe')");
    return cache_count(d, "result_l1", "hits") > hits;
  }, 20000));   // a bound for a loaded machine
}

class ResultCache : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_APP_SQL(
        "DROP TABLE IF EXISTS rc_items; CREATE TABLE rc_items (id int PRIMARY KEY, v text);"
        "INSERT INTO rc_items SELECT g, 'v' || g FROM generate_series(1, 100) g;");
  }
  // Changes a row without any sidecar seeing it.
  static void change_behind(int id, const std::string& v) {
    ASSERT_APP_SQL("UPDATE rc_items SET v = '" + v + "' WHERE id = " + std::to_string(id));
  }
  static std::string read(PGconn* c, int id, const std::string& hint = kHint) {
    return exec(c, hint + "SELECT v FROM rc_items WHERE id = " + std::to_string(id)).scalar();
  }
};

TEST_F(ResultCache, HitAfterMissReturnsIdenticalBytes) {
  Daemon d(cache_config());
  START_DAEMON(d);
  RawConn rc;
  std::string state, err;
  ASSERT_TRUE(rc.login(d.port(), "app", "app", state, err)) << err;
  auto answer = [&](const std::string& sql) {
    std::string bytes;
    EXPECT_TRUE(rc.send(wire::query(sql)));
    for (BackendMsg m; rc.read_msg(m, 5000) == RawConn::Status::Ok;) {
      bytes += m.type + wire::be32(uint32_t(m.payload.size() + 4)) + m.payload;
      if (m.type == 'Z') break;
    }
    return bytes;
  };
  std::string sql = kHint + "SELECT id, v FROM rc_items WHERE id <= 3 ORDER BY id";
  std::string first = answer(sql);
  change_behind(1, "changed");
  std::string second = answer(sql);
  EXPECT_EQ(first, second);
  EXPECT_NE(first.find("v1"), std::string::npos);
  EXPECT_EQ(cache_count(d, "result_l1", "hits"), 1);
  EXPECT_EQ(cache_count(d, "result_l1", "stores"), 1);
}

// A Query without its terminating NUL is malformed: it gets 08P01, never the
// answer stored for the text it would spell without its last byte.
TEST_F(ResultCache, QueryWithoutItsNulIsRefusedNotServed) {
  Daemon d(cache_config());
  START_DAEMON(d);
  std::string sql = kHint + "SELECT v FROM rc_items WHERE id = 1";
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_EQ(exec(c, sql).scalar(), "v1");   // stored
  ASSERT_EQ(exec(c, sql).scalar(), "v1");
  ASSERT_EQ(cache_count(d, "result_l1", "hits"), 1);

  RawConn rc;
  std::string state, err;
  ASSERT_TRUE(rc.login(d.port(), "app", "app", state, err)) << err;
  std::string body = sql + "2";   // "... id = 12" with no NUL: the cached text plus one byte
  ASSERT_TRUE(rc.send("Q" + wire::be32(uint32_t(body.size() + 4)) + body));
  BadInputOutcome o = await_error_or_close(rc, 5000);
  EXPECT_EQ(o.sqlstate, "08P01") << o.describe();
  EXPECT_EQ(cache_count(d, "result_l1", "hits"), 1) << "the malformed Query was answered from the cache";
  EXPECT_EQ(exec(c, sql).scalar(), "v1") << "other clients are still served";
}

TEST_F(ResultCache, ExtendedProtocolIsServedAndKeyedByParameters) {
  Daemon d(cache_config());
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  std::string sql = kHint + "SELECT v FROM rc_items WHERE id = $1";
  EXPECT_EQ(exec_params(c, sql, {"5"}).scalar(), "v5");
  EXPECT_EQ(exec_params(c, sql, {"6"}).scalar(), "v6");
  change_behind(5, "new5");
  EXPECT_EQ(exec_params(c, sql, {"5"}).scalar(), "v5");   // cached
  EXPECT_EQ(exec_params(c, sql, {"6"}).scalar(), "v6");
  EXPECT_EQ(cache_count(d, "result_l1", "hits"), 2);
  // A named prepared statement (plan cache) is served too.
  PGresult* prep = PQprepare(c.get(), "byid", sql.c_str(), 1, nullptr);
  ASSERT_EQ(PQresultStatus(prep), PGRES_COMMAND_OK);
  PQclear(prep);
  const char* values[] = {"5"};
  QResult r = result_of(PQexecPrepared(c.get(), "byid", 1, values, nullptr, nullptr, 0), c.get());
  EXPECT_EQ(r.scalar(), "v5");
}

TEST_F(ResultCache, SessionModeNamedStatementsAndDeallocate) {
  Daemon d(cache_config("session"));
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  std::string sql = kHint + "SELECT v FROM rc_items WHERE id = $1";
  PGresult* prep = PQprepare(c.get(), "s1", sql.c_str(), 1, nullptr);
  ASSERT_EQ(PQresultStatus(prep), PGRES_COMMAND_OK);
  PQclear(prep);
  const char* values[] = {"8"};
  auto run = [&] { return result_of(PQexecPrepared(c.get(), "s1", 1, values, nullptr, nullptr, 0), c.get()); };
  EXPECT_EQ(run().scalar(), "v8");
  change_behind(8, "new8");
  EXPECT_EQ(run().scalar(), "v8");   // served
  ASSERT_TRUE(exec(c, "DEALLOCATE s1").ok);
  EXPECT_EQ(run().sqlstate, "26000");   // the server's answer, not the cached one
}

// Without the plan cache the result cache keeps the text of each named statement
// it may serve; past max_client_prepared_statements names it stops looking up for
// that client (a name it no longer follows could be reused with another text).
TEST_F(ResultCache, NamedStatementsKeptPerClientAreBounded) {
  DaemonConfig cfg = cache_config("session");
  cfg.set("max_client_prepared_statements", "2");
  Daemon d(cfg);
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  std::string sql = kHint + "SELECT v FROM rc_items WHERE id = $1";
  auto prepare = [&](const char* name) {
    PGresult* prep = PQprepare(c.get(), name, sql.c_str(), 1, nullptr);
    EXPECT_EQ(PQresultStatus(prep), PGRES_COMMAND_OK) << name;   // session mode: never refused here
    PQclear(prep);
  };
  auto run = [&](const char* name, const char* id) {
    const char* values[] = {id};
    return result_of(PQexecPrepared(c.get(), name, 1, values, nullptr, nullptr, 0), c.get()).scalar();
  };
  prepare("s1");
  prepare("s2");
  EXPECT_EQ(run("s1", "8"), "v8");
  change_behind(8, "new8");
  EXPECT_EQ(run("s1", "8"), "v8");     // served
  prepare("s3");                        // one name too many
  EXPECT_EQ(run("s1", "8"), "new8");   // no more lookups for this client
  EXPECT_EQ(run("s3", "8"), "new8");
}

// `make` leaves `name` on the server with a statement of its own, by a way that
// leaves the name's text unknown to pgsidecar. A Parse of the cached text under
// that name is then refused (42P05) and the server runs the old statement, whose
// rows must never reach another client as the text's.
void expect_old_statement_not_served(Daemon& d, const char* name, const std::function<void(const ConnPtr&)>& make) {
  ConnPtr c = must_connect(d.conninfo()), other = must_connect(d.conninfo());
  ASSERT_TRUE(c && other);
  const std::string sql = kHint + "SELECT v FROM rc_items WHERE id = $1";
  make(c);
  PGresult* prep = PQprepare(c.get(), name, sql.c_str(), 1, nullptr);
  const char* state = PQresultErrorField(prep, PG_DIAG_SQLSTATE);
  EXPECT_EQ(std::string(state ? state : ""), "42P05");
  PQclear(prep);
  const char* values[] = {"5"};
  for (int i = 0; i < 2; i++)   // the second run is past admission
    EXPECT_EQ(result_of(PQexecPrepared(c.get(), name, 1, values, nullptr, nullptr, 0), c.get()).scalar(), "POISON-5");
  EXPECT_EQ(exec_params(other, sql, {"5"}).scalar(), "v5");
}

// A name whose DEALLOCATE may not have run (here its Query failed first).
TEST_F(ResultCache, NameOfAFailedDeallocateIsNeverServed) {
  Daemon d(cache_config("session"));
  START_DAEMON(d);
  expect_old_statement_not_served(d, "s3", [](const ConnPtr& c) {
    PGresult* prep = PQprepare(c.get(), "s3", "SELECT 'POISON-' || $1::text AS v", 1, nullptr);
    ASSERT_EQ(PQresultStatus(prep), PGRES_COMMAND_OK);
    PQclear(prep);
    EXPECT_EQ(exec(c, "SELECT 1/0; DEALLOCATE s3").sqlstate, "22012");
  });
}

// A name made by SQL PREPARE (without the plan cache, protocol-level names reach
// the server as the client gave them).
TEST_F(ResultCache, NameMadeBySqlPrepareIsNeverServed) {
  for (std::string mode : {"session", "transaction"}) {
    SCOPED_TRACE(mode);
    DaemonConfig cfg = cache_config(mode);
    cfg.set("max_prepared_statements", "0");
    Daemon d(cfg);
    START_DAEMON(d);
    expect_old_statement_not_served(d, "s4", [](const ConnPtr& c) {   // PREPARE pins in transaction mode
      ASSERT_TRUE(exec(c, "PREPARE s4(text) AS SELECT 'POISON-' || $1 AS v").ok);
    });
  }
}

// A Query the cache cannot read (standard_conforming_strings off) may PREPARE
// anything: every name's text is unknown afterwards, and lookups stop.
TEST_F(ResultCache, NamesAfterAnUnreadableQueryAreNeverServed) {
  Daemon d(cache_config("session"));
  START_DAEMON(d);
  expect_old_statement_not_served(d, "s5", [](const ConnPtr& c) {
    ASSERT_TRUE(exec(c, "SET standard_conforming_strings = off").ok);
    ASSERT_TRUE(exec(c, "PREPARE s5(text) AS SELECT 'POISON-' || $1 AS v").ok);
    ASSERT_TRUE(exec(c, "SET standard_conforming_strings = on").ok);
  });
}

// A name that an unreadable Query made, first seen by the cache at the Parse the
// server refuses: the statement that runs writes, and the write invalidates.
TEST_F(ResultCache, WriteThroughANameMadeUnseenInvalidates) {
  Daemon d(cache_config("session"));
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo()), other = must_connect(d.conninfo());
  ASSERT_TRUE(c && other);
  std::string sql = kHint + "SELECT v FROM rc_items WHERE id = $1";
  ASSERT_TRUE(exec(c, "SET standard_conforming_strings = off").ok);
  ASSERT_TRUE(exec(c, "PREPARE s6(int) AS UPDATE rc_items SET v = 'written' WHERE id = $1").ok);
  ASSERT_TRUE(exec(c, "SET standard_conforming_strings = on").ok);
  PGresult* prep = PQprepare(c.get(), "s6", sql.c_str(), 1, nullptr);
  EXPECT_EQ(PQresultStatus(prep), PGRES_FATAL_ERROR);   // 42P05: s6 is the UPDATE
  PQclear(prep);
  EXPECT_EQ(exec_params(other, sql, {"6"}).scalar(), "v6");   // stored
  EXPECT_EQ(exec_params(other, sql, {"6"}).scalar(), "v6");
  const char* values[] = {"6"};
  EXPECT_TRUE(result_of(PQexecPrepared(c.get(), "s6", 1, values, nullptr, nullptr, 0), c.get()).ok);
  EXPECT_EQ(exec_params(other, sql, {"6"}).scalar(), "written");
}

TEST_F(ResultCache, WriteThroughTheProxyInvalidates) {
  for (std::string mode : {"transaction", "session"}) {
    SCOPED_TRACE(mode);
    Daemon d(cache_config(mode));
    START_DAEMON(d);
    ConnPtr c = must_connect(d.conninfo());
    ASSERT_EQ(read(c.get(), 7), "v7");
    // autocommit write: invalidated at once
    ASSERT_TRUE(exec(c, "UPDATE rc_items SET v = 'w1' WHERE id = 7").ok);
    EXPECT_EQ(read(c.get(), 7), "w1");
    // in a transaction: at commit; the extended protocol too
    ConnPtr other = must_connect(d.conninfo());
    ASSERT_TRUE(exec(other, "BEGIN").ok);
    ASSERT_TRUE(exec_params(other, "UPDATE rc_items SET v = $1 WHERE id = 7", {"w2"}).ok);
    EXPECT_EQ(read(c.get(), 7), "w1");
    ASSERT_TRUE(exec(other, "COMMIT").ok);
    EXPECT_EQ(read(c.get(), 7), "w2");
    ASSERT_APP_SQL("UPDATE rc_items SET v = 'v7' WHERE id = 7");
  }
}

// In a pipeline, an autocommit write is committed at its own Sync: it invalidates
// at that ReadyForQuery, while a later batch of the same pipeline still runs.
TEST_F(ResultCache, PipelinedWriteInvalidatesAtItsOwnSync) {
  ASSERT_APP_SQL("DROP TABLE IF EXISTS rc_blocker; CREATE TABLE rc_blocker (x int);");
  for (std::string mode : {"transaction", "session"}) {
    SCOPED_TRACE(mode);
    Daemon d(cache_config(mode));
    START_DAEMON(d);
    ConnPtr reader = must_connect(d.conninfo());
    ASSERT_EQ(read(reader.get(), 9), "v9");
    ASSERT_EQ(read(reader.get(), 9), "v9");   // now cached
    // The pipeline's second batch waits on a lock held directly on PostgreSQL.
    ConnPtr holder = must_connect(cluster().direct_conninfo("app", "app", "apppass"));
    ASSERT_TRUE(exec(holder, "BEGIN; LOCK TABLE rc_blocker IN ACCESS EXCLUSIVE MODE").ok);
    ConnPtr writer = must_connect(d.conninfo());
    PGconn* w = writer.get();
    ASSERT_EQ(PQenterPipelineMode(w), 1);
    ASSERT_EQ(PQsendQueryParams(w, "UPDATE rc_items SET v = 'piped' WHERE id = 9", 0, nullptr, nullptr, nullptr, nullptr, 0), 1);
    ASSERT_EQ(PQpipelineSync(w), 1);
    ASSERT_EQ(PQsendQueryParams(w, "SELECT count(*) FROM rc_blocker", 0, nullptr, nullptr, nullptr, nullptr, 0), 1);
    ASSERT_EQ(PQpipelineSync(w), 1);
    ASSERT_EQ(PQflush(w), 0);
    QResult updated = result_of(PQgetResult(w), w);
    ASSERT_TRUE(updated.ok) << updated.describe();
    EXPECT_EQ(PQgetResult(w), nullptr);
    PGresult* sync = PQgetResult(w);   // the first batch's ReadyForQuery
    ASSERT_NE(sync, nullptr);
    EXPECT_EQ(PQresultStatus(sync), PGRES_PIPELINE_SYNC);
    PQclear(sync);
    // The second batch is still waiting for the lock; the write is visible, and so through the cache.
    EXPECT_EQ(read(reader.get(), 9), "piped");
    ASSERT_TRUE(exec(holder, "COMMIT").ok);
    QResult counted = result_of(PQgetResult(w), w);
    EXPECT_TRUE(counted.ok) << counted.describe();
    EXPECT_EQ(PQgetResult(w), nullptr);
    sync = PQgetResult(w);
    ASSERT_NE(sync, nullptr);
    PQclear(sync);
    ASSERT_EQ(PQexitPipelineMode(w), 1);
    ASSERT_APP_SQL("UPDATE rc_items SET v = 'v9' WHERE id = 9");
  }
  ASSERT_APP_SQL("DROP TABLE rc_blocker");
}

TEST_F(ResultCache, DdlInvalidatesEverything) {
  Daemon d(cache_config());
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  std::string sql = kHint + "SELECT * FROM rc_items WHERE id = 1";
  ASSERT_EQ(exec(c, sql).rows.at(0).size(), 2u);
  ASSERT_TRUE(exec(c, "ALTER TABLE rc_items ADD COLUMN extra int DEFAULT 42").ok);
  QResult r = exec(c, sql);
  ASSERT_EQ(r.rows.size(), 1u);
  EXPECT_EQ(r.rows[0].size(), 3u);
  EXPECT_EQ(r.at(0, 2), "42");
}

TEST_F(ResultCache, RowLevelSecurityHoldsPerRole) {
  cluster().psql(
      "DROP TABLE IF EXISTS rc_secret; DROP ROLE IF EXISTS rc_alice; DROP ROLE IF EXISTS rc_bob;"
      "CREATE ROLE rc_alice LOGIN PASSWORD 'pw'; CREATE ROLE rc_bob LOGIN PASSWORD 'pw'; GRANT rc_bob TO app;"
      "CREATE TABLE rc_secret (owner name, v text); ALTER TABLE rc_secret ENABLE ROW LEVEL SECURITY;"
      "CREATE POLICY own ON rc_secret USING (owner = current_user);"
      "GRANT SELECT ON rc_secret TO rc_alice, rc_bob;"
      "INSERT INTO rc_secret VALUES ('rc_alice', 'alice-row'), ('rc_bob', 'bob-row');");
  Daemon d(cache_config("transaction", "{mode: all}").user("rc_alice", "pw").user("rc_bob", "pw"));
  START_DAEMON(d);
  ConnPtr alice = must_connect(d.conninfo("rc_alice", "app"));
  ConnPtr bob = must_connect(d.conninfo("rc_bob", "app"));
  wait_functions_known(d, alice.get());
  long hits = cache_count(d, "result_l1", "hits");
  for (int i = 0; i < 3; i++) {
    EXPECT_EQ(exec(alice, "SELECT string_agg(v, ',') FROM rc_secret").scalar(), "alice-row");
    EXPECT_EQ(exec(bob, "SELECT string_agg(v, ',') FROM rc_secret").scalar(), "bob-row");
  }
  // The same role after SET ROLE is another key too.
  ConnPtr app = must_connect(d.conninfo());
  EXPECT_EQ(exec(app, "SET ROLE rc_bob").ok, true);
  EXPECT_EQ(exec(app, "SELECT string_agg(v, ',') FROM rc_secret").scalar(), "bob-row");
  EXPECT_GE(cache_count(d, "result_l1", "hits"), hits + 4);
}

TEST_F(ResultCache, VolatileFunctionsAreNeverCached) {
  ASSERT_APP_SQL(
      "DROP SEQUENCE IF EXISTS rc_seq; CREATE SEQUENCE rc_seq;"
      "CREATE OR REPLACE FUNCTION rc_next() RETURNS bigint VOLATILE LANGUAGE sql AS 'SELECT nextval(''rc_seq'')';"
      "CREATE OR REPLACE FUNCTION rc_upper(text) RETURNS text IMMUTABLE LANGUAGE sql AS 'SELECT upper($1)';");
  Daemon d(cache_config("transaction", "{mode: all}"));
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  for (const char* sql : {"SELECT random()::text", "SELECT now()::text", "SELECT clock_timestamp()::text",
                          "SELECT rc_next()::text", "SELECT nextval('rc_seq')::text"}) {
    SCOPED_TRACE(sql);
    std::string a = exec(c, sql).scalar();
    std::this_thread::sleep_for(Ms(2));
    std::string b = exec(c, sql).scalar();
    EXPECT_NE(a, b);
  }
  // An immutable user function is cached once pgsidecar has read pg_proc.
  ASSERT_TRUE(eventually([&] {
    exec(c, "SELECT rc_upper(v) FROM rc_items WHERE id = 2");
    return cache_count(d, "result_l1", "hits") > 0;
  }, 3000));
}

// cache.admission: repeated (the default) stores an answer only when its key
// missed before: a key read once costs no store.
TEST_F(ResultCache, RepeatedAdmissionStoresOnTheSecondMiss) {
  Daemon d(cache_config("transaction", "{mode: hinted, admission: repeated}"));
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_EQ(read(c.get(), 60), "v60");   // first miss: not stored
  EXPECT_EQ(cache_count(d, "result_l1", "stores"), 0);
  change_behind(60, "second");
  ASSERT_EQ(read(c.get(), 60), "second");   // missed again (nothing stored): now stored
  EXPECT_EQ(cache_count(d, "result_l1", "stores"), 1);
  change_behind(60, "third");
  EXPECT_EQ(read(c.get(), 60), "second");   // a hit
  EXPECT_EQ(cache_count(d, "result_l1", "hits"), 1);
  ASSERT_EQ(read(c.get(), 61), "v61");   // another key: its first miss again
  EXPECT_EQ(cache_count(d, "result_l1", "stores"), 1);
}

TEST_F(ResultCache, TtlExpires) {
  Daemon d(cache_config());
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  std::string hint = "/* pgsidecar:cache ttl=500ms */ ";
  ASSERT_EQ(read(c.get(), 9, hint), "v9");
  change_behind(9, "later");
  EXPECT_EQ(read(c.get(), 9, hint), "v9");
  std::this_thread::sleep_for(Ms(700));
  EXPECT_EQ(read(c.get(), 9, hint), "later");
}

TEST_F(ResultCache, LruEvictsWithinTheByteBound) {
  Daemon d(cache_config("transaction", "{mode: hinted, max_bytes: 64kB, max_entry_bytes: 16kB}"));
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  wait_functions_known(d, c.get());
  // 40 distinct answers of ~4 kB each: about 160 kB, more than twice the bound.
  for (int i = 1; i <= 40; i++)
    ASSERT_TRUE(exec(c, kHint + "SELECT repeat(v, 1000) FROM rc_items WHERE id = " + std::to_string(i)).ok);
  long bytes = cache_count(d, "result_l1", "bytes");
  EXPECT_GT(bytes, 32 * 1024) << [&] {
    std::string all;
    for (auto& [k, v] : cache_row(d, "result_l1")) all += k + "=" + v + " ";
    return all;
  }();
  EXPECT_LE(bytes, 64 * 1024);
  EXPECT_GT(cache_count(d, "result_l1", "evictions"), 10);
  // The oldest was evicted (a miss sees the change), the newest was not.
  change_behind(1, "x1");
  change_behind(40, "x40");
  EXPECT_EQ(exec(c, kHint + "SELECT repeat(v, 1000) FROM rc_items WHERE id = 1").scalar().substr(0, 2), "x1");
  EXPECT_EQ(exec(c, kHint + "SELECT repeat(v, 1000) FROM rc_items WHERE id = 40").scalar().substr(0, 3), "v40");
  // Larger than max_entry_bytes: streamed, never stored.
  long stores = cache_count(d, "result_l1", "stores");
  ASSERT_EQ(exec(c, kHint + "SELECT repeat('x', 20000)").scalar().size(), 20000u);
  EXPECT_EQ(cache_count(d, "result_l1", "stores"), stores);
}

TEST_F(ResultCache, ModesDecideWhatIsCached) {
  {
    Daemon d(cache_config("transaction", "{mode: hinted}"));
    START_DAEMON(d);
    ConnPtr c = must_connect(d.conninfo());
    ASSERT_EQ(read(c.get(), 11, ""), "v11");
    change_behind(11, "u11");
    EXPECT_EQ(read(c.get(), 11, ""), "u11");   // no hint: not cached
    EXPECT_EQ(read(c.get(), 11, "/* pgsidecar:nocache */ "), "u11");
  }
  {
    Daemon d(cache_config("transaction", "{mode: hinted, rules: [{table: rc_items, ttl: 30s}]}"));
    START_DAEMON(d);
    ConnPtr c = must_connect(d.conninfo());
    ASSERT_EQ(read(c.get(), 11, ""), "u11");
    change_behind(11, "w11");
    EXPECT_EQ(read(c.get(), 11, ""), "u11");   // cached by the table rule
  }
  {
    Daemon d(base_config());   // cache off: nothing cached, SHOW CACHE has no result rows
    START_DAEMON(d);
    ConnPtr c = must_connect(d.conninfo());
    ASSERT_EQ(read(c.get(), 11), "w11");
    change_behind(11, "v11");
    EXPECT_EQ(read(c.get(), 11), "v11");
  }
}

TEST_F(ResultCache, BadStatementsPassThrough) {
  Daemon d(cache_config("transaction", "{mode: all}"));
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  QResult r = exec(c, kHint + "SELEC v FROM rc_items");
  EXPECT_EQ(r.sqlstate, "42601");
  r = exec(c, kHint + "SELECT v FROM rc_no_such_table");
  EXPECT_EQ(r.sqlstate, "42P01");
  r = exec(c, kHint + "SELECT 1/0");
  EXPECT_EQ(r.sqlstate, "22012");
  r = exec(c, kHint + "SELECT 1/0");   // errors are never stored
  EXPECT_EQ(r.sqlstate, "22012");
  EXPECT_EQ(read(c.get(), 3), "v3");
}

TEST_F(ResultCache, TemporaryTablesAndSetStopLookups) {
  Daemon d(cache_config("session", "{mode: all}"));
  START_DAEMON(d);
  ConnPtr warm = must_connect(d.conninfo());
  ASSERT_EQ(exec(warm, "SELECT v FROM rc_items WHERE id = 4").scalar(), "v4");
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(exec(c, "CREATE TEMP TABLE rc_items (id int, v text); INSERT INTO rc_items VALUES (4, 'temp4')").ok);
  EXPECT_EQ(exec(c, "SELECT v FROM rc_items WHERE id = 4").scalar(), "temp4");
  // SET search_path is part of the key in session mode too.
  ConnPtr s = must_connect(d.conninfo());
  ASSERT_TRUE(exec(s, "CREATE SCHEMA IF NOT EXISTS rc_other; DROP TABLE IF EXISTS rc_other.rc_items;"
                      "CREATE TABLE rc_other.rc_items AS SELECT 4 AS id, 'other4'::text AS v").ok);
  ASSERT_TRUE(exec(s, "SET search_path = rc_other").ok);
  EXPECT_EQ(exec(s, "SELECT v FROM rc_items WHERE id = 4").scalar(), "other4");
  ASSERT_TRUE(exec(s, "RESET search_path").ok);
  EXPECT_EQ(exec(s, "SELECT v FROM rc_items WHERE id = 4").scalar(), "v4");
  warm.reset();   // session mode, pool size 5: make room
  c.reset();
  // A SET among other statements is not followed: that session stops looking up.
  ConnPtr multi = must_connect(d.conninfo());
  ASSERT_TRUE(exec(multi, "SET search_path = rc_other; SELECT 1").ok);
  EXPECT_EQ(exec(multi, "SELECT v FROM rc_items WHERE id = 4").scalar(), "other4");
  // A SET rolled back never reaches the key: what this session reads is not stored as rc_other's.
  ConnPtr rolled = must_connect(d.conninfo());
  ASSERT_TRUE(exec(rolled, "BEGIN").ok);
  ASSERT_TRUE(exec(rolled, "SET search_path = rc_other").ok);
  ASSERT_TRUE(exec(rolled, "ROLLBACK").ok);
  EXPECT_EQ(exec(rolled, "SELECT v FROM rc_items WHERE id = 4").scalar(), "v4");
  ConnPtr other = must_connect(d.conninfo());
  ASSERT_TRUE(exec(other, "SET search_path = rc_other").ok);
  EXPECT_EQ(exec(other, "SELECT v FROM rc_items WHERE id = 4").scalar(), "other4");
}

}  // namespace

// ---------------------------------------------------------------- shared tier and bus
namespace {

std::string redis_cache(const RedisServer& r, const std::string& more = "") {
  return "{mode: hinted, redis: {url: \"" + r.url() + "\", timeout_ms: 100}" + more + "}";
}

bool l2_up(const Daemon& d) { return cache_row(d, "result_l2")["state"] == "up"; }

class ResultCacheShared : public ResultCache {};

TEST_F(ResultCacheShared, SidecarsShareEntriesAndInvalidations) {
  RedisServer redis;
  START_REDIS(redis);
  Daemon a(cache_config("transaction", redis_cache(redis))), b(cache_config("session", redis_cache(redis)));
  START_DAEMON(a);
  START_DAEMON(b);
  ASSERT_TRUE(eventually([&] { return l2_up(a) && l2_up(b); }, 5000));
  ConnPtr ca = must_connect(a.conninfo()), cb = must_connect(b.conninfo());
  ASSERT_EQ(read(ca.get(), 20), "v20");   // miss on A: stored in L1 and Redis
  ASSERT_TRUE(eventually([&] { return cache_count(a, "result_l2", "stores") == 1; }, 2000));
  change_behind(20, "behind");
  EXPECT_EQ(read(cb.get(), 20), "v20");   // B never read it: Redis answered
  EXPECT_EQ(cache_count(b, "result_l2", "hits"), 1);
  // A write through A reaches B's L1 (pub/sub) and Redis (dependency sets).
  ASSERT_TRUE(exec(ca, "UPDATE rc_items SET v = 'via-a' WHERE id = 20").ok);
  EXPECT_TRUE(eventually([&] { return read(cb.get(), 20) == "via-a"; }, 1000));
  Daemon c(cache_config("transaction", redis_cache(redis)));
  START_DAEMON(c);
  ASSERT_TRUE(eventually([&] { return l2_up(c); }, 5000));
  ConnPtr cc = must_connect(c.conninfo());
  EXPECT_EQ(read(cc.get(), 20), "via-a");
  // DDL through B: a new generation; A and C drop everything.
  std::string star = kHint + "SELECT * FROM rc_items WHERE id = 21";
  ASSERT_EQ(exec(ca, star).rows.at(0).size(), 2u);
  ASSERT_TRUE(exec(cb, "ALTER TABLE rc_items ADD COLUMN extra int DEFAULT 7").ok);
  EXPECT_TRUE(eventually([&] { return exec(ca, star).rows.at(0).size() == 3u; }, 1000));
  EXPECT_EQ(exec(cc, star).rows.at(0).size(), 3u);
}

TEST_F(ResultCacheShared, RedisDyingMidLoadCostsNoQuery) {
  RedisServer redis;
  START_REDIS(redis);
  Daemon d(cache_config("transaction", redis_cache(redis)));
  START_DAEMON(d);
  ASSERT_TRUE(eventually([&] { return l2_up(d); }, 5000));
  std::atomic<bool> stop{false};
  std::atomic<int> queries{0}, errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; t++) {
    threads.emplace_back([&, t] {
      ConnPtr c = must_connect(d.conninfo());
      for (int i = 0; !stop; i++) {
        int id = 1 + (i * 7 + t) % 60;
        if (read(c.get(), id) == "v" + std::to_string(id)) queries++;
        else errors++;
      }
    });
  }
  std::this_thread::sleep_for(Ms(700));
  redis.kill();
  ASSERT_TRUE(eventually([&] { return !l2_up(d); }, 3000));
  int at_kill = queries;
  std::this_thread::sleep_for(Ms(700));
  EXPECT_GT(queries - at_kill, 100);   // still answering, from L1 and PostgreSQL
  START_REDIS(redis);                  // same port: the daemon reconnects by itself
  EXPECT_TRUE(eventually([&] { return l2_up(d); }, 8000));
  std::this_thread::sleep_for(Ms(300));
  stop = true;
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors, 0);
  EXPECT_GT(queries, 500);
}

TEST_F(ResultCacheShared, CorruptValuesFromRedisAreDiscarded) {
  RedisServer redis;
  START_REDIS(redis);
  Daemon a(cache_config("transaction", redis_cache(redis)));
  START_DAEMON(a);
  ASSERT_TRUE(eventually([&] { return l2_up(a); }, 5000));
  ConnPtr ca = must_connect(a.conninfo());
  ASSERT_EQ(read(ca.get(), 30), "v30");
  ASSERT_TRUE(eventually([&] { return cache_count(a, "result_l2", "stores") == 1; }, 2000));
  std::string keys = redis.cli("--scan --pattern 'pgsidecar:r:*'");
  ASSERT_FALSE(keys.empty());
  for (size_t at = 0; at < keys.size();) {   // every stored value: replaced by garbage behind its magic
    size_t nl = keys.find('\n', at);
    std::string key = keys.substr(at, nl == std::string::npos ? std::string::npos : nl - at);
    redis.cli("SET '" + key + "' 'PGSC1 not a value'");
    at = nl == std::string::npos ? keys.size() : nl + 1;
  }
  Daemon b(cache_config("transaction", redis_cache(redis)));
  START_DAEMON(b);
  ASSERT_TRUE(eventually([&] { return l2_up(b); }, 5000));
  ConnPtr cb = must_connect(b.conninfo());
  EXPECT_EQ(read(cb.get(), 30), "v30");
  EXPECT_EQ(cache_count(b, "result_l2", "hits"), 0);
  EXPECT_EQ(cache_count(b, "result_l2", "errors"), 1);   // the corrupt value, counted
}

TEST_F(ResultCacheShared, WithoutRedisNotifyCarriesInvalidations) {
  Daemon a(cache_config()), b(cache_config());
  START_DAEMON(a);
  START_DAEMON(b);
  ConnPtr ca = must_connect(a.conninfo()), cb = must_connect(b.conninfo());
  ASSERT_EQ(read(cb.get(), 40), "v40");
  change_behind(40, "behind");
  ASSERT_EQ(read(cb.get(), 40), "v40");   // cached on B
  ASSERT_TRUE(exec(ca, "UPDATE rc_items SET v = 'via-a' WHERE id = 40").ok);
  EXPECT_TRUE(eventually([&] { return read(cb.get(), 40) == "via-a"; }, 1000));
}

// Installs conf/pgsidecar-invalidate.sql in the app database and watches `table`.
void watch(const std::string& table) {
  std::string here = __FILE__;
  std::string sql = read_file(here.substr(0, here.rfind("tests/integration/")) + "conf/pgsidecar-invalidate.sql");
  ASSERT_FALSE(sql.empty());
  bool ok = false;
  std::string out = cluster().psql(sql + "\nSELECT pgsidecar_watch('" + table + "');", "app", &ok);
  ASSERT_TRUE(ok) << out;
}

TEST_F(ResultCacheShared, TriggersInvalidateWritesMadeElsewhere) {
  ASSERT_NO_FATAL_FAILURE(watch("rc_items"));
  Daemon d(cache_config());
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_EQ(read(c.get(), 50), "v50");
  ASSERT_EQ(read(c.get(), 50), "v50");
  ASSERT_EQ(cache_count(d, "result_l1", "hits"), 1);
  change_behind(50, "elsewhere");   // a plain UPDATE, no sidecar involved
  EXPECT_TRUE(eventually([&] { return read(c.get(), 50) == "elsewhere"; }, 1000));
  cluster().psql("SELECT pgsidecar_unwatch('rc_items');");
}

// A write straight to a partition, made without any sidecar, reaches readers of the
// parent, and one routed through the parent reaches readers of the partition.
TEST_F(ResultCacheShared, TriggersCoverPartitionTrees) {
  ASSERT_APP_SQL(
      "DROP TABLE IF EXISTS rc_parts; CREATE TABLE rc_parts (id int, v text) PARTITION BY RANGE (id);"
      "CREATE TABLE rc_parts_low PARTITION OF rc_parts FOR VALUES FROM (0) TO (100);"
      "CREATE TABLE rc_parts_high PARTITION OF rc_parts FOR VALUES FROM (100) TO (200);");
  ASSERT_NO_FATAL_FAILURE(watch("rc_parts"));
  Daemon d(cache_config());
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  auto count = [&](const std::string& table) {
    QResult r = exec(c, kHint + "SELECT count(*) FROM " + table);
    EXPECT_TRUE(r.ok) << r.describe();
    return r.scalar();
  };
  ASSERT_EQ(count("rc_parts"), "0");
  ASSERT_EQ(count("rc_parts_low"), "0");
  ASSERT_EQ(count("rc_parts"), "0");
  ASSERT_EQ(count("rc_parts_low"), "0");
  ASSERT_EQ(cache_count(d, "result_l1", "hits"), 2);
  ASSERT_APP_SQL("INSERT INTO rc_parts_low VALUES (1, 'direct')");   // no sidecar
  EXPECT_TRUE(eventually([&] { return count("rc_parts") == "1"; }, 2000));
  ASSERT_APP_SQL("INSERT INTO rc_parts VALUES (2, 'routed')");       // lands in rc_parts_low
  EXPECT_TRUE(eventually([&] { return count("rc_parts_low") == "2"; }, 2000));
  ASSERT_APP_SQL("SELECT pgsidecar_unwatch('rc_parts'); DROP TABLE rc_parts;");
}

}  // namespace
