// Transaction pool mode: a client that creates session state (temp table, SQL
// PREPARE, WITH HOLD cursor, LISTEN, session advisory lock, set_config) is
// pinned to its server until the state is gone (pin_on, max_pinned_per_pool,
// pinned_log_after; proxy/pinning.h). Pools of 2 servers; the per-kind tests
// run 6 clients: the state survives the pinned client's next transactions, is
// never visible to another client, and the client unpins when it is cleared.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>
#include <functional>
#include <mutex>
#include <set>
#include <thread>

#include "harness.h"

using namespace itest;

namespace {

constexpr int kClients = 6;   // client 0 pins, 1..5 are the others
constexpr int kRounds = 5;

// Transaction mode, 2 servers, an admin user; max_pinned_per_pool 1 explicitly.
DaemonConfig pin_config(int pool_size = 2) {
  DaemonConfig c = tx_config(pool_size);
  c.set("admin_users", "[admin]").set("max_pinned_per_pool", "1");
  return c;
}

std::string admin_conninfo(const Daemon& d) {
  return "host=127.0.0.1 port=" + std::to_string(d.port()) + " user=admin dbname=pgsidecar";
}

// The client's own TCP port: the `port` column of its SHOW CLIENTS row.
std::string local_port(PGconn* c) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (!c || getsockname(PQsocket(c), reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
  if (ss.ss_family == AF_INET) return std::to_string(ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port));
  if (ss.ss_family == AF_INET6) return std::to_string(ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port));
  return "?";
}

// An admin SHOW as rows of column name -> value.
using Table = std::vector<std::map<std::string, std::string>>;
Table show(PGconn* admin, const std::string& cmd) {
  Table t;
  PGresult* r = PQexec(admin, cmd.c_str());
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    ADD_FAILURE() << cmd << ": " << PQresultErrorMessage(r);
    PQclear(r);
    return t;
  }
  for (int i = 0; i < PQntuples(r); ++i) {
    std::map<std::string, std::string> row;
    for (int f = 0; f < PQnfields(r); ++f) row[PQfname(r, f)] = PQgetisnull(r, i, f) ? "<NULL>" : PQgetvalue(r, i, f);
    t.push_back(std::move(row));
  }
  PQclear(r);
  return t;
}

// SHOW CLIENTS `pinned` of client c; "<no client>" / "<no pinned column>" otherwise.
std::string pinned_of(PGconn* admin, PGconn* c) {
  std::string port = local_port(c);
  for (auto& row : show(admin, "SHOW CLIENTS"))
    if (row["port"] == port) return row.count("pinned") ? row["pinned"] : "<no pinned column>";
  return "<no client>";
}

// A SHOW POOLS column of the pool app/app.
std::string pool_value(PGconn* admin, const std::string& column, const std::string& db = "app") {
  for (auto& row : show(admin, "SHOW POOLS"))
    if (row["database"] == db && row["user"] == "app") return row.count(column) ? row[column] : "<no " + column + ">";
  return "<no pool>";
}

::testing::AssertionResult pinned_becomes(PGconn* admin, PGconn* c, const std::string& want, int timeout_ms = 3000) {
  std::string last;
  if (eventually([&] { return (last = pinned_of(admin, c)) == want; }, timeout_ms))
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "SHOW CLIENTS pinned is '" << last << "', expected '" << want << "'";
}

::testing::AssertionResult sv_pinned_becomes(PGconn* admin, const std::string& want, int timeout_ms = 3000,
                                             const std::string& db = "app") {
  std::string last;
  if (eventually([&] { return (last = pool_value(admin, "sv_pinned", db)) == want; }, timeout_ms))
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "SHOW POOLS sv_pinned is '" << last << "', expected '" << want << "'";
}

// "" if sql returns `want` as its first value, else what it returned.
std::string expect_value(PGconn* c, const std::string& sql, const std::string& want) {
  QResult r = exec_within(c, sql);
  if (r.ok && r.scalar() == want) return "";
  return sql + ": expected " + want + ", got " + r.describe();
}

// "" if sql fails with `state`, else what it returned.
std::string expect_state(PGconn* c, const std::string& sql, const std::string& state) {
  QResult r = exec_within(c, sql);
  if (r.sqlstate == state) return "";
  return sql + ": expected SQLSTATE " + state + ", got " + r.describe();
}

std::string backend_pid(PGconn* c) {
  QResult r = exec_within(c, "SELECT pg_backend_pid()");
  return r.ok ? r.scalar() : "error: " + r.describe();
}

// One kind of session state, for run_kind().
struct KindCase {
  std::string kind;                    // SHOW CLIENTS pinned while it exists
  std::vector<std::string> create;     // client 0 runs these (each must succeed)
  // Client 0, round r, inside a transaction: the state is there and works. "" or a failure.
  std::function<std::string(PGconn*, int)> use;
  // Another client (its own transaction or autocommit): the state is not visible.
  // tag is unique per call (LISTEN: the NOTIFY payload). "" or a failure.
  std::function<std::string(PGconn*, const std::string& tag)> invisible;
  // After the rounds, on client 0 with the tags given to invisible(). "" or a failure.
  std::function<std::string(PGconn*, const std::set<std::string>&)> after_rounds;
  std::vector<std::string> clear;      // client 0 runs these: the state is gone
  std::function<std::string(PGconn*)> gone;   // client 0, after unpinning. "" or a failure.
  // Another client, after unpinning, possibly on client 0's former server: none
  // of the state there. Defaults to invisible. "" or a failure.
  std::function<std::string(PGconn*)> clean;
};

// Pool of 2 servers, 6 clients. Client 0 creates the state and is pinned; it
// keeps its server (pg_backend_pid) and its state over its next transactions
// while clients 1..5 run transactions concurrently, never on client 0's server
// and never seeing the state; a client needing a second free server waits.
// Then client 0 clears the state: unpinned, sv_pinned 0, the server is back in
// the pool (two other clients in transactions at once get both servers).
void run_kind(const KindCase& k) {
  Daemon d(pin_config(2));
  START_DAEMON(d);
  ConnPtr admin = must_connect(admin_conninfo(d));
  ASSERT_TRUE(admin);
  std::vector<ConnPtr> cs;
  for (int i = 0; i < kClients; ++i) {
    cs.push_back(must_connect(d.conninfo()));
    ASSERT_TRUE(cs.back()) << "client " << i;
    ASSERT_EQ(exec_within(cs.back(), "SELECT 1").scalar(), "1") << "client " << i;
  }
  PGconn* c0 = cs[0].get();
  EXPECT_EQ(pinned_of(admin.get(), c0), "") << "pinned before creating any state";
  EXPECT_EQ(pool_value(admin.get(), "sv_pinned"), "0");

  for (const auto& sql : k.create) {
    QResult r = exec_within(c0, sql);
    ASSERT_TRUE(r.ok) << sql << ": " << r.describe();
  }
  const std::string pid0 = backend_pid(c0);
  ASSERT_TRUE(pinned_becomes(admin.get(), c0, k.kind));
  EXPECT_TRUE(sv_pinned_becomes(admin.get(), "1"));
  for (int i = 1; i < kClients; ++i) EXPECT_EQ(pinned_of(admin.get(), cs[i].get()), "") << "client " << i;

  // Client 1 holds the only server client 0 does not: client 2 has to wait
  // for it instead of getting client 0's server.
  {
    ASSERT_TRUE(exec_within(cs[1], "BEGIN").ok);
    std::string pid1 = backend_pid(cs[1].get());
    EXPECT_NE(pid1, pid0) << "client 1 got the pinned server";
    ASSERT_EQ(PQsendQuery(cs[2].get(), "SELECT pg_backend_pid()"), 1);
    EXPECT_TRUE(eventually([&] { return pool_value(admin.get(), "cl_waiting") == "1"; }, 3000))
        << "client 2 was not queued while client 0 pinned the other server";
    EXPECT_EQ(backend_pid(c0), pid0) << "the pinned client has to keep running meanwhile";
    ASSERT_TRUE(exec_within(cs[1], "COMMIT").ok);
    QResult p2 = result_of(PQgetResult(cs[2].get()), cs[2].get());
    while (PGresult* extra = PQgetResult(cs[2].get())) PQclear(extra);
    EXPECT_EQ(p2.scalar(), pid1) << p2.describe();
  }

  // Rounds: client 0 in the main thread, clients 1..5 in threads.
  std::mutex mu;
  std::vector<std::string> errors;
  std::set<std::string> tags;
  auto fail = [&](const std::string& e) {
    std::lock_guard<std::mutex> lk(mu);
    if (errors.size() < 30) errors.push_back(e);
  };
  auto probe = [&](PGconn* c, const std::string& tag, const std::string& where) {
    {
      std::lock_guard<std::mutex> lk(mu);
      tags.insert(tag);
    }
    std::string e = k.invisible(c, tag);
    if (!e.empty()) fail(where + ": " + e);
  };
  std::vector<std::thread> threads;
  for (int i = 1; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      PGconn* c = cs[i].get();
      for (int r = 0; r < kRounds; ++r) {
        std::string who = "client " + std::to_string(i) + " round " + std::to_string(r);
        QResult b = exec_within(c, "BEGIN");
        if (!b.ok) return fail(who + " BEGIN: " + b.describe());
        std::string pid = backend_pid(c);
        if (pid == pid0) fail(who + ": in a transaction on the pinned server " + pid0);
        probe(c, "c" + std::to_string(i) + "r" + std::to_string(r) + "tx", who + " in a transaction");
        QResult cm = exec_within(c, "COMMIT");   // after an expected error this is a ROLLBACK
        if (!cm.ok) return fail(who + " COMMIT: " + cm.describe());
        pid = backend_pid(c);
        if (pid == pid0) fail(who + ": autocommit on the pinned server " + pid0);
        probe(c, "c" + std::to_string(i) + "r" + std::to_string(r) + "ac", who + " autocommit");
      }
    });
  }
  for (int r = 0; r < kRounds; ++r) {
    std::string who = "pinned client round " + std::to_string(r);
    QResult b = exec_within(c0, "BEGIN");
    if (!b.ok) {
      fail(who + " BEGIN: " + b.describe());
      break;
    }
    std::string pid = backend_pid(c0);
    if (pid != pid0) fail(who + ": moved from server " + pid0 + " to " + pid);
    std::string e = k.use(c0, r);
    if (!e.empty()) fail(who + ": " + e);
    QResult cm = exec_within(c0, "COMMIT");
    if (!cm.ok) fail(who + " COMMIT: " + cm.describe());
    pid = backend_pid(c0);
    if (pid != pid0) fail(who + ": autocommit moved from server " + pid0 + " to " + pid);
  }
  for (auto& t : threads) t.join();
  std::string all;
  for (auto& e : errors) all += "\n  " + e;
  EXPECT_TRUE(errors.empty()) << all;
  if (k.after_rounds) {
    std::string e = k.after_rounds(c0, tags);
    EXPECT_TRUE(e.empty()) << e;
  }
  EXPECT_EQ(pinned_of(admin.get(), c0), k.kind) << "still pinned after the rounds";

  // Clear the state: unpinned at the end of that transaction.
  for (const auto& sql : k.clear) {
    QResult r = exec_within(c0, sql);
    ASSERT_TRUE(r.ok) << sql << ": " << r.describe();
  }
  EXPECT_TRUE(pinned_becomes(admin.get(), c0, "")) << "after " << k.clear.back();
  EXPECT_TRUE(sv_pinned_becomes(admin.get(), "0")) << "after " << k.clear.back();
  std::string e = k.gone(c0);
  EXPECT_TRUE(e.empty()) << e;

  // The server is back in the pool: two clients in transactions at once get
  // both servers, and the one on client 0's former server sees no state.
  ASSERT_TRUE(exec_within(cs[1], "BEGIN").ok);
  std::string a = backend_pid(cs[1].get());
  ASSERT_TRUE(exec_within(cs[2], "BEGIN", 3000).ok);
  std::string b = backend_pid(cs[2].get());
  EXPECT_NE(a, b);
  EXPECT_TRUE(a == pid0 || b == pid0) << "client 0's server " << pid0 << " did not go back to the pool: " << a << ", "
                                      << b;
  for (int i : {1, 2}) {
    std::string f = k.clean ? k.clean(cs[i].get()) : k.invisible(cs[i].get(), "after" + std::to_string(i));
    EXPECT_TRUE(f.empty()) << "client " << i << " after unpinning: " << f;
  }
  exec_within(cs[1], "COMMIT");
  exec_within(cs[2], "COMMIT");
  expect_serving(d, k.kind.c_str());
}

}  // namespace

// ------------------------------------------------------------ each kind

TEST(Pinning, TempTableSurvivesIsPrivateAndUnpinsOnDrop) {
  KindCase k;
  k.kind = "temp";
  k.create = {"CREATE TEMP TABLE pin_tmp(i int)", "INSERT INTO pin_tmp VALUES (1)"};
  k.use = [](PGconn* c, int r) {
    QResult ins = exec_within(c, "INSERT INTO pin_tmp VALUES (" + std::to_string(r + 2) + ")");
    if (!ins.ok) return "INSERT: " + ins.describe();
    return expect_value(c, "SELECT count(*) FROM pin_tmp", std::to_string(r + 2));
  };
  k.invisible = [](PGconn* c, const std::string&) { return expect_state(c, "SELECT count(*) FROM pin_tmp", "42P01"); };
  k.clear = {"DROP TABLE pin_tmp"};
  k.gone = [](PGconn* c) { return expect_state(c, "SELECT count(*) FROM pin_tmp", "42P01"); };
  run_kind(k);
}

TEST(Pinning, TableInPgTempSurvivesIsPrivateAndUnpinsOnDiscardTemp) {
  KindCase k;
  k.kind = "temp";
  k.create = {"CREATE TABLE pg_temp.pin_tmp2(i int)", "INSERT INTO pg_temp.pin_tmp2 VALUES (7)"};
  k.use = [](PGconn* c, int) { return expect_value(c, "SELECT sum(i) FROM pin_tmp2", "7"); };
  k.invisible = [](PGconn* c, const std::string&) {
    return expect_value(c, "SELECT to_regclass('pg_temp.pin_tmp2') IS NULL", "t");
  };
  k.clear = {"DISCARD TEMP"};
  k.gone = [](PGconn* c) { return expect_state(c, "SELECT count(*) FROM pin_tmp2", "42P01"); };
  run_kind(k);
}

// Not a relation, function or type: "gone" counts every kind of schema object
// (found by PostgreSQL's stats_ext test through transaction mode).
TEST(Pinning, StatisticsObjectInPgTempSurvivesIsPrivateAndUnpinsOnDrop) {
  const std::string mine =
      "SELECT count(*) FROM pg_statistic_ext WHERE stxname = 'pin_st' AND stxnamespace = pg_my_temp_schema()";
  KindCase k;
  k.kind = "temp";
  k.create = {"CREATE TABLE IF NOT EXISTS pin_st_t(a int, b int)", "CREATE STATISTICS pg_temp.pin_st ON a, b FROM pin_st_t"};
  k.use = [mine](PGconn* c, int) { return expect_value(c, mine, "1"); };
  k.invisible = [mine](PGconn* c, const std::string&) { return expect_value(c, mine, "0"); };
  k.clear = {"DROP STATISTICS pg_temp.pin_st"};
  k.gone = [mine](PGconn* c) { return expect_value(c, mine, "0"); };
  run_kind(k);
}

TEST(Pinning, PreparedStatementSurvivesIsPrivateAndUnpinsOnDeallocate) {
  KindCase k;
  k.kind = "prepare";
  k.create = {"PREPARE pin_p(int) AS SELECT $1 * 2"};
  k.use = [](PGconn* c, int r) { return expect_value(c, "EXECUTE pin_p(" + std::to_string(r) + ")", std::to_string(2 * r)); };
  k.invisible = [](PGconn* c, const std::string&) { return expect_state(c, "EXECUTE pin_p(1)", "26000"); };
  k.clear = {"DEALLOCATE pin_p"};
  k.gone = [](PGconn* c) { return expect_state(c, "EXECUTE pin_p(1)", "26000"); };
  run_kind(k);
}

TEST(Pinning, HoldableCursorSurvivesIsPrivateAndUnpinsOnClose) {
  KindCase k;
  k.kind = "cursor";
  k.create = {"BEGIN", "DECLARE pin_cur CURSOR WITH HOLD FOR SELECT g FROM generate_series(1, 1000) g", "COMMIT"};
  // Each round fetches the next row: the same cursor, positioned where it was left.
  k.use = [](PGconn* c, int r) { return expect_value(c, "FETCH 1 FROM pin_cur", std::to_string(r + 1)); };
  k.invisible = [](PGconn* c, const std::string&) { return expect_state(c, "FETCH 1 FROM pin_cur", "34000"); };
  k.clear = {"CLOSE pin_cur"};
  k.gone = [](PGconn* c) { return expect_state(c, "FETCH 1 FROM pin_cur", "34000"); };
  run_kind(k);
}

TEST(Pinning, ListenSurvivesReceivesNotifiesIsPrivateAndUnpinsOnUnlistenAll) {
  KindCase k;
  k.kind = "listen";
  k.create = {"LISTEN pin_ch"};
  k.use = [](PGconn* c, int) {
    return expect_value(c, "SELECT count(*) FROM pg_listening_channels() ch WHERE ch = 'pin_ch'", "1");
  };
  // Each other client checks it listens to nothing, then notifies pin_ch.
  k.invisible = [](PGconn* c, const std::string& tag) {
    std::string e = expect_value(c, "SELECT count(*) FROM pg_listening_channels()", "0");
    if (!e.empty()) return e;
    QResult n = exec_within(c, "NOTIFY pin_ch, '" + tag + "'");
    return n.ok ? std::string() : "NOTIFY: " + n.describe();
  };
  // Every NOTIFY from the other clients reached the pinned client.
  k.after_rounds = [](PGconn* c, const std::set<std::string>& tags) {
    std::set<std::string> got;
    std::string stray;
    auto t0 = Clock::now();
    while (got.size() < tags.size() && ms_since(t0) < 5000) {
      QResult q = exec_within(c, "SELECT 1");
      if (!q.ok) return "SELECT 1: " + q.describe();
      while (PGnotify* n = PQnotifies(c)) {
        std::string ch = n->relname, payload = n->extra;
        PQfreemem(n);
        if (ch == "pin_ch" && tags.count(payload)) got.insert(payload);
        else stray += " " + ch + ":" + payload;
      }
      if (got.size() < tags.size()) {
        if (auto n = wait_notify(c, 100)) {
          auto colon = n->find(':');
          if (n->substr(0, colon) == "pin_ch" && tags.count(n->substr(colon + 1))) got.insert(n->substr(colon + 1));
          else stray += " " + *n;
        }
      }
    }
    if (got.size() == tags.size() && stray.empty()) return std::string();
    return "received " + std::to_string(got.size()) + " of " + std::to_string(tags.size()) +
           " notifications; unexpected:" + stray;
  };
  k.clear = {"UNLISTEN *"};
  k.gone = [](PGconn* c) { return expect_value(c, "SELECT count(*) FROM pg_listening_channels()", "0"); };
  run_kind(k);
}

TEST(Pinning, AdvisoryLockStaysHeldIsPrivateAndUnpinsOnUnlock) {
  KindCase k;
  k.kind = "advisory";
  k.create = {"SELECT pg_advisory_lock(42)"};
  k.use = [](PGconn* c, int) {
    std::string e = expect_value(
        c, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 42 AND granted AND pid = pg_backend_pid()",
        "1");
    if (!e.empty()) return e;
    std::string direct = cluster().scalar("SELECT pg_try_advisory_lock(42)").value_or("error");
    return direct == "f" ? std::string() : "a direct connection's pg_try_advisory_lock(42) is " + direct;
  };
  // Without leaving anything: another session gets f, the holder's own session would get t.
  k.invisible = [](PGconn* c, const std::string&) {
    std::string e = expect_value(c, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()", "0");
    return e.empty() ? expect_value(c, "SELECT pg_try_advisory_xact_lock(42)", "f") : e;
  };
  k.clear = {"SELECT pg_advisory_unlock(42)"};
  k.clean = [](PGconn* c) {
    return expect_value(c, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()", "0");
  };
  k.gone = [](PGconn*) {
    std::string direct = cluster().scalar("SELECT pg_try_advisory_lock(42)").value_or("error");
    return direct == "t" ? std::string() : "after unlock a direct pg_try_advisory_lock(42) is " + direct;
  };
  run_kind(k);
}

TEST(Pinning, SessionSetConfigSurvivesIsPrivateAndUnpinsOnResetAll) {
  KindCase k;
  k.kind = "set";
  k.create = {"SELECT set_config('app.tenant', 'x', false)"};
  k.use = [](PGconn* c, int) { return expect_value(c, "SELECT current_setting('app.tenant')", "x"); };
  k.invisible = [](PGconn* c, const std::string&) {
    return expect_value(c, "SELECT coalesce(current_setting('app.tenant', true), '')", "");
  };
  k.clear = {"RESET ALL"};
  k.gone = [](PGconn* c) { return expect_value(c, "SELECT coalesce(current_setting('app.tenant', true), '')", ""); };
  run_kind(k);
}

// ------------------------------------------------------------ other / DO

// A DO block pins only until the end of its transaction when it left nothing:
// afterwards two other clients can hold both servers at once.
TEST(Pinning, DoBlockThatLeavesNothingDoesNotStayPinned) {
  Daemon d(pin_config(2));
  START_DAEMON(d);
  ConnPtr admin = must_connect(admin_conninfo(d));
  ConnPtr c = must_connect(d.conninfo()), h1 = must_connect(d.conninfo()), h2 = must_connect(d.conninfo());
  ASSERT_TRUE(admin && c && h1 && h2);
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"autocommit", {"DO $$ BEGIN PERFORM 1; END $$"}},
      {"in a transaction", {"BEGIN", "DO $$ BEGIN PERFORM 1; END $$", "SELECT 2", "COMMIT"}},
  };
  for (const auto& [what, stmts] : cases) {
    SCOPED_TRACE(what);
    for (const auto& sql : stmts) {
      QResult r = exec_within(c, sql);
      ASSERT_TRUE(r.ok) << sql << ": " << r.describe();
    }
    EXPECT_EQ(exec_within(c, "SELECT 1").scalar(), "1");
    EXPECT_EQ(pinned_of(admin.get(), c.get()), "");
    EXPECT_EQ(pool_value(admin.get(), "sv_pinned"), "0");
    ASSERT_TRUE(exec_within(h1, "BEGIN").ok);
    std::string p1 = backend_pid(h1.get());
    QResult b2 = exec_within(h2, "BEGIN", 3000);
    QResult p2 = exec_within(h2, "SELECT pg_backend_pid()", 3000);
    EXPECT_TRUE(b2.ok && p2.ok) << "a second client could not get the other server: " << b2.describe() << " / "
                                << p2.describe();
    EXPECT_NE(p1, p2.scalar());
    exec_within(h1, "COMMIT");
    exec_within(h2, "COMMIT");
    EXPECT_EQ(pinned_of(admin.get(), c.get()), "");
  }
  expect_serving(d, "DO");
}

// ------------------------------------------------------------ clearing

// Each way of clearing state; the server is asked, so the client unpins only
// when the last object of a kind is gone (and not when the clearing is rolled
// back). "*": not checked (inside a transaction).
TEST(Pinning, ClearingUnpinsOnlyWhenTheLastStateIsGone) {
  Daemon d(pin_config(2));
  START_DAEMON(d);
  ConnPtr admin = must_connect(admin_conninfo(d));
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(admin && c);
  struct Step {
    std::string sql, pinned;
  };
  const std::vector<std::pair<std::string, std::vector<Step>>> variants = {
      {"DROP of the last temp table",
       {{"CREATE TEMP TABLE pin_cv_a(i int)", "temp"},
        {"CREATE TABLE pg_temp.pin_cv_b(i int)", "temp"},
        {"DROP TABLE pin_cv_a", "temp"},
        {"SELECT count(*) FROM pin_cv_b", "temp"},
        {"DROP TABLE pin_cv_b", ""}}},
      {"DROP rolled back, then committed",
       {{"CREATE TEMP TABLE pin_cv_c(i int)", "temp"},
        {"BEGIN", "*"},
        {"DROP TABLE pin_cv_c", "*"},
        {"ROLLBACK", "temp"},
        {"SELECT count(*) FROM pin_cv_c", "temp"},
        {"BEGIN", "*"},
        {"DROP TABLE pin_cv_c", "*"},
        {"COMMIT", ""}}},
      {"DISCARD TEMP", {{"CREATE TEMP TABLE pin_cv_d(i int)", "temp"}, {"DISCARD TEMP", ""}}},
      {"DEALLOCATE of the last statement",
       {{"PREPARE pin_cv_p1 AS SELECT 1", "prepare"},
        {"PREPARE pin_cv_p2 AS SELECT 2", "prepare"},
        {"DEALLOCATE pin_cv_p1", "prepare"},
        {"EXECUTE pin_cv_p2", "prepare"},
        {"DEALLOCATE pin_cv_p2", ""}}},
      {"DEALLOCATE ALL", {{"PREPARE pin_cv_p3 AS SELECT 3", "prepare"}, {"DEALLOCATE ALL", ""}}},
      {"CLOSE of the last cursor",
       {{"BEGIN", "*"},
        {"DECLARE pin_cv_k1 CURSOR WITH HOLD FOR SELECT 1", "*"},
        {"DECLARE pin_cv_k2 CURSOR WITH HOLD FOR SELECT 2", "*"},
        {"COMMIT", "cursor"},
        {"CLOSE pin_cv_k1", "cursor"},
        {"FETCH 1 FROM pin_cv_k2", "cursor"},
        {"CLOSE pin_cv_k2", ""}}},
      {"CLOSE ALL",
       {{"BEGIN", "*"},
        {"DECLARE pin_cv_k3 CURSOR WITH HOLD FOR SELECT 3", "*"},
        {"COMMIT", "cursor"},
        {"CLOSE ALL", ""}}},
      {"UNLISTEN of the last channel",
       {{"LISTEN pin_cv_ch1", "listen"},
        {"LISTEN pin_cv_ch2", "listen"},
        {"UNLISTEN pin_cv_ch1", "listen"},
        {"SELECT count(*) FROM pg_listening_channels()", "listen"},
        {"UNLISTEN pin_cv_ch2", ""}}},
      {"pg_advisory_unlock of the last lock",
       {{"SELECT pg_advisory_lock(4301)", "advisory"},
        {"SELECT pg_advisory_lock(4301)", "advisory"},
        {"SELECT pg_advisory_unlock(4301)", "advisory"},
        {"SELECT 1", "advisory"},
        {"SELECT pg_advisory_unlock(4301)", ""}}},
      {"pg_advisory_unlock_all",
       {{"SELECT pg_advisory_lock(4302)", "advisory"},
        {"SELECT pg_advisory_lock(4303)", "advisory"},
        {"SELECT pg_advisory_unlock_all()", ""}}},
      {"pg_advisory_xact_lock does not pin",
       {{"SELECT pg_advisory_xact_lock(4304)", ""},
        {"BEGIN", "*"},
        {"SELECT pg_advisory_xact_lock(4304)", "*"},
        {"COMMIT", ""},
        {"SELECT 1", ""}}},
      {"RESET ALL", {{"SELECT set_config('app.tenant', 'y', false)", "set"}, {"RESET ALL", ""}}},
      {"DISCARD ALL",
       {{"CREATE TEMP TABLE pin_cv_e(i int)", "temp"},
        {"PREPARE pin_cv_p4 AS SELECT 4", "prepare,temp"},
        {"LISTEN pin_cv_ch3", "listen,prepare,temp"},
        {"SELECT pg_advisory_lock(4305)", "advisory,listen,prepare,temp"},
        {"DISCARD ALL", ""}}},
  };
  for (const auto& [what, steps] : variants) {
    SCOPED_TRACE(what);
    std::string pid0;
    for (const auto& step : steps) {
      QResult r = exec_within(c, step.sql);
      ASSERT_TRUE(r.ok) << step.sql << ": " << r.describe();
      if (step.pinned == "*") continue;
      EXPECT_TRUE(pinned_becomes(admin.get(), c.get(), step.pinned)) << "after " << step.sql;
      EXPECT_TRUE(sv_pinned_becomes(admin.get(), step.pinned.empty() ? "0" : "1")) << "after " << step.sql;
      if (!step.pinned.empty()) {
        std::string pid = backend_pid(c.get());
        if (pid0.empty()) pid0 = pid;
        EXPECT_EQ(pid, pid0) << "moved to another server while pinned, after " << step.sql;
      } else {
        pid0.clear();
      }
    }
    ASSERT_EQ(pinned_of(admin.get(), c.get()), "") << "each variant ends unpinned";
  }
  // The direct view: all the locks taken above were released.
  EXPECT_EQ(cluster().scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid BETWEEN 4301 AND 4305")
                .value_or("?"),
            "0");
  expect_serving(d, "clearing");
}

// ------------------------------------------------------------ disconnect

// A pinned client that disconnects: its server is reset before anyone else
// uses it (temp table, prepared statement, cursor, LISTEN, advisory lock and
// setting all gone).
TEST(Pinning, DisconnectOfAPinnedClientResetsItsServer) {
  Daemon d(pin_config(2));
  START_DAEMON(d);
  ConnPtr admin = must_connect(admin_conninfo(d));
  ASSERT_TRUE(admin);
  std::string pid0;
  {
    ConnPtr a = must_connect(d.conninfo());
    ASSERT_TRUE(a);
    for (const char* sql :
         {"CREATE TEMP TABLE pin_gone_tmp(i int)", "PREPARE pin_gone_p AS SELECT 1", "LISTEN pin_gone_ch",
          "SELECT pg_advisory_lock(4401)", "BEGIN", "DECLARE pin_gone_cur CURSOR WITH HOLD FOR SELECT 1", "COMMIT",
          "SELECT set_config('app.tenant', 'gone', false)"}) {
      QResult r = exec_within(a, sql);
      ASSERT_TRUE(r.ok) << sql << ": " << r.describe();
    }
    pid0 = backend_pid(a.get());
    ASSERT_TRUE(pinned_becomes(admin.get(), a.get(), "advisory,cursor,listen,prepare,set,temp"));
    ASSERT_TRUE(sv_pinned_becomes(admin.get(), "1"));
    EXPECT_EQ(cluster().scalar("SELECT pg_try_advisory_lock(4401)").value_or("?"), "f");
  }   // PQfinish
  EXPECT_TRUE(sv_pinned_becomes(admin.get(), "0"));
  EXPECT_TRUE(eventually([&] { return cluster().scalar("SELECT pg_try_advisory_lock(4401)") == "t"; }, 3000))
      << "the advisory lock of the gone client is still held";
  // Two clients hold both servers at once; neither sees anything of the gone client.
  ConnPtr b1 = must_connect(d.conninfo()), b2 = must_connect(d.conninfo());
  ASSERT_TRUE(b1 && b2);
  std::set<std::string> pids;
  for (PGconn* b : {b1.get(), b2.get()}) {
    ASSERT_TRUE(exec_within(b, "BEGIN", 3000).ok);
    QResult r = exec_within(b,
                            "SELECT pg_backend_pid(), to_regclass('pg_temp.pin_gone_tmp') IS NULL, "
                            "(SELECT count(*) FROM pg_prepared_statements), "
                            "(SELECT count(*) FROM pg_listening_channels()), (SELECT count(*) FROM pg_cursors), "
                            "coalesce(current_setting('app.tenant', true), ''), "
                            "(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())",
                            3000);
    ASSERT_TRUE(r.ok) << r.describe();
    pids.insert(r.at(0, 0));
    std::string where = "server " + r.at(0, 0) + (r.at(0, 0) == pid0 ? " (the gone client's)" : "");
    EXPECT_EQ(r.at(0, 1), "t") << where << ": temp table left";
    EXPECT_EQ(r.at(0, 2), "0") << where << ": prepared statement left";
    EXPECT_EQ(r.at(0, 3), "0") << where << ": LISTEN left";
    EXPECT_EQ(r.at(0, 4), "0") << where << ": cursor left";
    EXPECT_EQ(r.at(0, 5), "") << where << ": setting left";
    EXPECT_EQ(r.at(0, 6), "0") << where << ": advisory lock left";
  }
  EXPECT_EQ(pids.size(), 2u);
  // The gone client's server was either reused (and reset) or closed.
  EXPECT_TRUE(pids.count(pid0) ||
              cluster().scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = " + pid0, "postgres") == "0")
      << "server " << pid0 << " neither back in the pool nor closed";
  exec_within(b1, "COMMIT");
  exec_within(b2, "COMMIT");
  expect_serving(d, "pinned client gone");
}

// ------------------------------------------------------------ limit

// max_pinned_per_pool reached: a Query that would pin one more client waits
// for query_wait_timeout (short here), then is refused with 53300 (nothing
// done); the client stays usable, and may pin once the other client unpins.
// Explicit 1, then the default (pool size 2 minus 1).
TEST(Pinning, MaxPinnedPerPoolWaitsThenRefusesWith53300AndCreatesNothing) {
  for (bool explicit_limit : {true, false}) {
    SCOPED_TRACE(explicit_limit ? "max_pinned_per_pool: 1" : "default max_pinned_per_pool");
    DaemonConfig cfg = pin_config(2);
    cfg.set("query_wait_timeout", "200ms");
    if (!explicit_limit) cfg.erase("max_pinned_per_pool");
    Daemon d(cfg);
    START_DAEMON(d);
    ConnPtr admin = must_connect(admin_conninfo(d));
    ConnPtr a = must_connect(d.conninfo()), b = must_connect(d.conninfo());
    ASSERT_TRUE(admin && a && b);
    ASSERT_TRUE(exec_within(a, "CREATE TEMP TABLE pin_lim_a(i int)").ok);
    ASSERT_TRUE(pinned_becomes(admin.get(), a.get(), "temp"));
    ASSERT_TRUE(sv_pinned_becomes(admin.get(), "1"));

    auto refused = [&](const std::string& sql, const std::string& why) {
      QResult r = exec_within(b, sql);
      EXPECT_EQ(r.sqlstate, "53300") << sql << ": " << r.describe();
      EXPECT_NE(r.error.find("max_pinned_per_pool"), std::string::npos) << sql << ": " << r.describe();
      EXPECT_NE(r.error.find(why), std::string::npos) << sql << ": " << r.describe();
      EXPECT_EQ(PQstatus(b.get()), CONNECTION_OK) << sql;
      EXPECT_EQ(exec_within(b, "SELECT 1").scalar(), "1") << "after refused " << sql;
      EXPECT_EQ(pinned_of(admin.get(), b.get()), "") << sql;
    };
    refused("CREATE TEMP TABLE pin_lim_b(i int)", "query_wait_timeout");
    EXPECT_EQ(cluster().scalar("SELECT count(*) FROM pg_class WHERE relname = 'pin_lim_b'").value_or("?"), "0")
        << "the refused temp table was created";
    EXPECT_EQ(exec_within(b, "SELECT to_regclass('pg_temp.pin_lim_b') IS NULL").scalar(), "t");
    refused("PREPARE pin_lim_p AS SELECT 1", "query_wait_timeout");
    EXPECT_EQ(exec_within(b, "EXECUTE pin_lim_p").sqlstate, "26000") << "the refused PREPARE was run";
    refused("LISTEN pin_lim_ch", "query_wait_timeout");
    EXPECT_EQ(exec_within(b, "SELECT count(*) FROM pg_listening_channels()").scalar(), "0");
    refused("SELECT pg_advisory_lock(4501)", "query_wait_timeout");
    EXPECT_EQ(cluster().scalar("SELECT pg_try_advisory_lock(4501)").value_or("?"), "t") << "the refused lock was taken";
    QResult extended = exec_params(b, "SELECT pg_advisory_lock($1::bigint)", {"4503"});   // a Parse waits too
    EXPECT_EQ(extended.sqlstate, "53300") << extended.describe();
    EXPECT_NE(extended.error.find("query_wait_timeout"), std::string::npos) << extended.describe();
    EXPECT_EQ(cluster().scalar("SELECT pg_try_advisory_lock(4503)").value_or("?"), "t") << "the refused lock was taken";
    EXPECT_EQ(exec_params(b, "SELECT $1::int + 1", {"1"}).scalar(), "2");
    // Inside a transaction block the server is held: no wait, refused at once.
    ASSERT_TRUE(exec_within(b, "BEGIN").ok);
    refused("CREATE TEMP TABLE pin_lim_b(i int)", "inside a transaction block");
    ASSERT_TRUE(exec_within(b, "ROLLBACK").ok);
    EXPECT_EQ(pool_value(admin.get(), "sv_pinned"), "1");
    EXPECT_EQ(pool_value(admin.get(), "cl_waiting"), "0");
    // a is unaffected.
    EXPECT_EQ(exec_within(a, "SELECT count(*) FROM pin_lim_a").scalar(), "0");
    EXPECT_EQ(pinned_of(admin.get(), a.get()), "temp");

    // a unpins: now b may pin.
    ASSERT_TRUE(exec_within(a, "DROP TABLE pin_lim_a").ok);
    EXPECT_TRUE(pinned_becomes(admin.get(), a.get(), ""));
    EXPECT_TRUE(sv_pinned_becomes(admin.get(), "0"));
    QResult ok = exec_within(b, "CREATE TEMP TABLE pin_lim_b(i int)");
    EXPECT_TRUE(ok.ok) << ok.describe();
    EXPECT_TRUE(pinned_becomes(admin.get(), b.get(), "temp"));
    EXPECT_EQ(exec_within(b, "SELECT count(*) FROM pin_lim_b").scalar(), "0");
    // And now a is the one refused.
    QResult again = exec_within(a, "LISTEN pin_lim_ch2");
    EXPECT_EQ(again.sqlstate, "53300") << again.describe();
    EXPECT_EQ(exec_within(a, "SELECT 2").scalar(), "2");
    expect_serving(d, "max_pinned_per_pool");
  }
}

// SHOW CLIENTS `state` of client c.
std::string state_of(PGconn* admin, PGconn* c) {
  std::string port = local_port(c);
  for (auto& row : show(admin, "SHOW CLIENTS"))
    if (row["port"] == port) return row["state"];
  return "<no client>";
}

// Client c waits for a pin slot: SHOW CLIENTS says waiting while the pool's
// unpinned server is idle (so it is not waiting for that server's login).
bool pin_waiting(PGconn* admin, PGconn* c) {
  return eventually([&] { return state_of(admin, c) == "waiting" && pool_value(admin, "sv_idle") == "1"; }, 3000);
}

// Clients past max_pinned_per_pool wait, in order, without holding a server: a
// simple Query (b) and an extended-protocol Parse (e) each go on, and pin, as the
// client before them unpins; everyone else is served meanwhile.
TEST(Pinning, ClientsPastMaxPinnedWaitInOrderForAnUnpin) {
  Daemon d(pin_config(2));   // query_wait_timeout: the default 2 minutes
  START_DAEMON(d);
  ConnPtr admin = must_connect(admin_conninfo(d));
  ConnPtr a = must_connect(d.conninfo()), b = must_connect(d.conninfo()), e = must_connect(d.conninfo()),
          other = must_connect(d.conninfo());
  ASSERT_TRUE(admin && a && b && e && other);
  ASSERT_TRUE(exec_within(a, "CREATE TEMP TABLE pin_wait_a(i int)").ok);
  ASSERT_TRUE(pinned_becomes(admin.get(), a.get(), "temp"));

  ASSERT_EQ(PQsendQuery(b.get(), "CREATE TEMP TABLE pin_wait_b(i int)"), 1);
  ASSERT_TRUE(pin_waiting(admin.get(), b.get()));
  ASSERT_EQ(PQsendQueryParams(e.get(), "SELECT pg_advisory_lock(4502)", 0, nullptr, nullptr, nullptr, nullptr, 0), 1);
  ASSERT_TRUE(eventually([&] { return pool_value(admin.get(), "cl_waiting") == "2"; }, 3000))
      << pool_value(admin.get(), "cl_waiting");
  EXPECT_EQ(state_of(admin.get(), e.get()), "waiting");
  // The waiters hold no server: the other server keeps multiplexing.
  for (int i = 0; i < 3; i++) EXPECT_EQ(exec_within(other, "SELECT " + std::to_string(i)).scalar(), std::to_string(i));
  EXPECT_EQ(cluster().scalar("SELECT count(*) FROM pg_class WHERE relname = 'pin_wait_b'").value_or("?"), "0");
  EXPECT_EQ(cluster().scalar("SELECT pg_try_advisory_lock(4502)").value_or("?"), "t") << "e's lock was taken while it waited";

  // a unpins: b (first in line) goes on and pins; e still waits.
  ASSERT_TRUE(exec_within(a, "DROP TABLE pin_wait_a").ok);
  QResult rb = await_results(b.get());
  EXPECT_TRUE(rb.ok) << rb.describe();
  EXPECT_TRUE(pinned_becomes(admin.get(), b.get(), "temp"));
  EXPECT_EQ(state_of(admin.get(), e.get()), "waiting");
  EXPECT_EQ(exec_within(b, "INSERT INTO pin_wait_b VALUES (1) RETURNING i").scalar(), "1");

  // b unpins: e's Parse goes on, takes its lock and pins.
  ASSERT_TRUE(exec_within(b, "DISCARD TEMP").ok);
  QResult re = await_results(e.get());
  EXPECT_TRUE(re.ok) << re.describe();
  EXPECT_TRUE(pinned_becomes(admin.get(), e.get(), "advisory"));
  EXPECT_EQ(cluster().scalar("SELECT pg_try_advisory_lock(4502)").value_or("?"), "f") << "e does not hold its lock";
  EXPECT_EQ(pool_value(admin.get(), "cl_waiting"), "0");
  EXPECT_TRUE(exec_within(e, "SELECT pg_advisory_unlock_all()").ok);
  EXPECT_TRUE(pinned_becomes(admin.get(), e.get(), ""));
  expect_serving(d, "waiting for a pin slot");
}

// A CancelRequest (Ctrl-C) ends a wait for a pin slot: 57014, nothing done, and
// the client goes on.
TEST(Pinning, CancelRequestEndsAPinWait) {
  Daemon d(pin_config(2));
  START_DAEMON(d);
  ConnPtr admin = must_connect(admin_conninfo(d));
  ConnPtr a = must_connect(d.conninfo()), b = must_connect(d.conninfo());
  ASSERT_TRUE(admin && a && b);
  ASSERT_TRUE(exec_within(a, "PREPARE pin_cancel_a AS SELECT 1").ok);
  ASSERT_TRUE(pinned_becomes(admin.get(), a.get(), "prepare"));
  ASSERT_EQ(PQsendQuery(b.get(), "CREATE TEMP TABLE pin_cancel_b(i int)"), 1);
  ASSERT_TRUE(pin_waiting(admin.get(), b.get()));
  PGcancel* cancel = PQgetCancel(b.get());
  ASSERT_NE(cancel, nullptr);
  char err[256];
  EXPECT_EQ(PQcancel(cancel, err, sizeof err), 1) << err;
  PQfreeCancel(cancel);
  QResult r = await_results(b.get());
  EXPECT_EQ(r.sqlstate, "57014") << r.describe();
  EXPECT_NE(r.error.find("waiting for a pinned client"), std::string::npos) << r.describe();
  EXPECT_EQ(pool_value(admin.get(), "cl_waiting"), "0");
  EXPECT_EQ(exec_within(b, "SELECT to_regclass('pg_temp.pin_cancel_b') IS NULL").scalar(), "t");
  EXPECT_EQ(pinned_of(admin.get(), b.get()), "");
  EXPECT_EQ(exec_within(a, "EXECUTE pin_cancel_a").scalar(), "1");
  expect_serving(d, "a cancelled pin wait");
}

// A client that leaves while it waits for a pin slot is forgotten: the slot
// goes to the next in line.
TEST(Pinning, WaiterThatLeavesIsSkipped) {
  Daemon d(pin_config(2));
  START_DAEMON(d);
  ConnPtr admin = must_connect(admin_conninfo(d));
  ConnPtr a = must_connect(d.conninfo()), gone = must_connect(d.conninfo()), next = must_connect(d.conninfo());
  ASSERT_TRUE(admin && a && gone && next);
  ASSERT_TRUE(exec_within(a, "LISTEN pin_leave").ok);
  ASSERT_TRUE(pinned_becomes(admin.get(), a.get(), "listen"));
  ASSERT_EQ(PQsendQuery(gone.get(), "LISTEN pin_leave_gone"), 1);
  ASSERT_TRUE(pin_waiting(admin.get(), gone.get()));
  ASSERT_EQ(PQsendQuery(next.get(), "LISTEN pin_leave_next"), 1);
  ASSERT_TRUE(eventually([&] { return pool_value(admin.get(), "cl_waiting") == "2"; }, 3000));
  gone.reset();
  ASSERT_TRUE(eventually([&] { return pool_value(admin.get(), "cl_waiting") == "1"; }, 3000));
  ASSERT_TRUE(exec_within(a, "UNLISTEN *").ok);
  QResult r = await_results(next.get());
  EXPECT_TRUE(r.ok) << r.describe();
  EXPECT_TRUE(pinned_becomes(admin.get(), next.get(), "listen"));
  EXPECT_TRUE(sv_pinned_becomes(admin.get(), "1"));
  expect_serving(d, "a waiter left");
}

// ------------------------------------------------------------ pin_on

// pin_on: off is today's behaviour: LISTEN refused (0A000), a temp table does not pin.
TEST(Pinning, PinOnOffRefusesListenAndDoesNotPin) {
  DaemonConfig cfg = pin_config(2);
  cfg.set("pin_on", "off");
  Daemon d(cfg);
  START_DAEMON(d);
  ConnPtr admin = must_connect(admin_conninfo(d));
  ConnPtr c = must_connect(d.conninfo()), h1 = must_connect(d.conninfo()), h2 = must_connect(d.conninfo());
  ASSERT_TRUE(admin && c && h1 && h2);
  QResult l = exec_within(c, "LISTEN pin_off_ch");
  EXPECT_EQ(l.sqlstate, "0A000") << l.describe();
  EXPECT_EQ(exec_within(c, "SELECT 1").scalar(), "1");
  QResult t = exec_within(c, "CREATE TEMP TABLE pin_off_tmp(i int)");
  EXPECT_TRUE(t.ok) << t.describe();
  EXPECT_EQ(exec_within(c, "SELECT 2").scalar(), "2");
  EXPECT_EQ(pinned_of(admin.get(), c.get()), "");
  EXPECT_EQ(pool_value(admin.get(), "sv_pinned"), "0");
  // Not pinned: two other clients hold both servers at once.
  ASSERT_TRUE(exec_within(h1, "BEGIN").ok);
  std::string p1 = backend_pid(h1.get());
  ASSERT_TRUE(exec_within(h2, "BEGIN", 3000).ok);
  QResult p2 = exec_within(h2, "SELECT pg_backend_pid()", 3000);
  EXPECT_TRUE(p2.ok) << p2.describe();
  EXPECT_NE(p1, p2.scalar());
  exec_within(h1, "COMMIT");
  exec_within(h2, "COMMIT");
  expect_serving(d, "pin_on: off");
}

// pin_on: [temp]: a temp table pins, LISTEN is refused with 0A000.
TEST(Pinning, PinOnSubsetPinsOnlyThoseKinds) {
  DaemonConfig cfg = pin_config(2);
  cfg.set("pin_on", "[temp]");
  Daemon d(cfg);
  START_DAEMON(d);
  ConnPtr admin = must_connect(admin_conninfo(d));
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(admin && c);
  QResult l = exec_within(c, "LISTEN pin_sub_ch");
  EXPECT_EQ(l.sqlstate, "0A000") << l.describe();
  EXPECT_EQ(exec_within(c, "SELECT 1").scalar(), "1");
  EXPECT_EQ(pinned_of(admin.get(), c.get()), "");
  ASSERT_TRUE(exec_within(c, "CREATE TEMP TABLE pin_sub_tmp(i int)").ok);
  EXPECT_TRUE(pinned_becomes(admin.get(), c.get(), "temp"));
  EXPECT_TRUE(sv_pinned_becomes(admin.get(), "1"));
  std::string pid0 = backend_pid(c.get());
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(exec_within(c, "INSERT INTO pin_sub_tmp VALUES (1)").ok);
    EXPECT_EQ(backend_pid(c.get()), pid0);
  }
  EXPECT_EQ(exec_within(c, "SELECT count(*) FROM pin_sub_tmp").scalar(), "3");
  EXPECT_EQ(exec_within(c, "LISTEN pin_sub_ch").sqlstate, "0A000") << "LISTEN while pinned for temp";
  ASSERT_TRUE(exec_within(c, "DROP TABLE pin_sub_tmp").ok);
  EXPECT_TRUE(pinned_becomes(admin.get(), c.get(), ""));
  EXPECT_TRUE(sv_pinned_becomes(admin.get(), "0"));
}

// A databases: entry's pin_on overrides the top-level one, both ways.
TEST(Pinning, DatabaseEntryPinOnOverridesTheDefault) {
  {
    SCOPED_TRACE("top-level off, database [listen]");
    DaemonConfig cfg = pin_config(2);
    cfg.set("pin_on", "off").db("app", db_entry("dbname: app, pin_on: [listen]"));
    Daemon d(cfg);
    START_DAEMON(d);
    ConnPtr admin = must_connect(admin_conninfo(d));
    ConnPtr c = must_connect(d.conninfo()), n = must_connect(d.conninfo());
    ASSERT_TRUE(admin && c && n);
    QResult l = exec_within(c, "LISTEN pin_db_ch");
    ASSERT_TRUE(l.ok) << l.describe();
    EXPECT_TRUE(pinned_becomes(admin.get(), c.get(), "listen"));
    EXPECT_TRUE(sv_pinned_becomes(admin.get(), "1"));
    ASSERT_TRUE(exec_within(n, "NOTIFY pin_db_ch, 'hello'").ok);
    ASSERT_TRUE(exec_within(c, "SELECT 1").ok);
    auto got = wait_notify(c.get(), 3000);
    EXPECT_EQ(got.value_or("<none>"), "pin_db_ch:hello");
    ASSERT_TRUE(exec_within(c, "CREATE TEMP TABLE pin_db_tmp(i int)").ok);
    EXPECT_EQ(exec_within(c, "SELECT 2").scalar(), "2");
    EXPECT_EQ(pinned_of(admin.get(), c.get()), "listen") << "temp is not in the database's pin_on";
    ASSERT_TRUE(exec_within(c, "UNLISTEN *").ok);
    EXPECT_TRUE(pinned_becomes(admin.get(), c.get(), "")) << "the temp table does not keep it pinned";
    EXPECT_TRUE(sv_pinned_becomes(admin.get(), "0"));
  }
  {
    SCOPED_TRACE("top-level default, database off");
    DaemonConfig cfg = pin_config(2);
    cfg.db("app", db_entry("dbname: app, pin_on: off"));
    Daemon d(cfg);
    START_DAEMON(d);
    ConnPtr admin = must_connect(admin_conninfo(d));
    ConnPtr c = must_connect(d.conninfo());
    ASSERT_TRUE(admin && c);
    QResult l = exec_within(c, "LISTEN pin_db_ch");
    EXPECT_EQ(l.sqlstate, "0A000") << l.describe();
    ASSERT_TRUE(exec_within(c, "CREATE TEMP TABLE pin_db_tmp2(i int)").ok);
    EXPECT_EQ(exec_within(c, "SELECT 1").scalar(), "1");
    EXPECT_EQ(pinned_of(admin.get(), c.get()), "");
    EXPECT_EQ(pool_value(admin.get(), "sv_pinned"), "0");
  }
}

// ------------------------------------------------------------ admin console

// SHOW CLIENTS `pinned`: the kinds, comma-separated and alphabetical, "" when
// not pinned; SHOW POOLS `sv_pinned`: servers held by pinned clients.
TEST(Pinning, AdminShowsPinnedKindsAndPinnedServers) {
  Daemon d(pin_config(2));
  START_DAEMON(d);
  ConnPtr admin = must_connect(admin_conninfo(d));
  ConnPtr c = must_connect(d.conninfo()), other = must_connect(d.conninfo());
  ASSERT_TRUE(admin && c && other);
  ASSERT_TRUE(exec_within(c, "SELECT 1").ok);
  ASSERT_TRUE(exec_within(other, "SELECT 1").ok);
  Table clients = show(admin.get(), "SHOW CLIENTS");
  ASSERT_EQ(clients.size(), 2u);
  for (auto& row : clients) {
    ASSERT_TRUE(row.count("pinned")) << "SHOW CLIENTS has no pinned column";
    EXPECT_EQ(row["pinned"], "");
  }
  EXPECT_EQ(pool_value(admin.get(), "sv_pinned"), "0");

  const std::vector<std::pair<std::string, std::string>> steps = {
      {"LISTEN pin_adm_ch", "listen"},
      {"CREATE TEMP TABLE pin_adm_t(i int)", "listen,temp"},
      {"PREPARE pin_adm_p AS SELECT 1", "listen,prepare,temp"},
      {"SELECT pg_advisory_lock(4601)", "advisory,listen,prepare,temp"},
      {"SELECT set_config('app.tenant', 'adm', false)", "advisory,listen,prepare,set,temp"},
      {"BEGIN", ""},
      {"DECLARE pin_adm_k CURSOR WITH HOLD FOR SELECT 1", ""},
      {"COMMIT", "advisory,cursor,listen,prepare,set,temp"},
      {"UNLISTEN *", "advisory,cursor,prepare,set,temp"},
      {"DROP TABLE pin_adm_t", "advisory,cursor,prepare,set"},
      {"DEALLOCATE pin_adm_p", "advisory,cursor,set"},
      {"SELECT pg_advisory_unlock_all()", "cursor,set"},
      {"CLOSE ALL", "set"},
      {"RESET ALL", ""},
  };
  bool in_tx = false;
  for (const auto& [sql, want] : steps) {
    QResult r = exec_within(c, sql);
    ASSERT_TRUE(r.ok) << sql << ": " << r.describe();
    if (sql == "BEGIN") in_tx = true;
    if (sql == "COMMIT") in_tx = false;
    if (in_tx) continue;
    EXPECT_TRUE(pinned_becomes(admin.get(), c.get(), want)) << "after " << sql;
    EXPECT_TRUE(sv_pinned_becomes(admin.get(), want.empty() ? "0" : "1")) << "after " << sql;
    EXPECT_EQ(pinned_of(admin.get(), other.get()), "") << "the other client, after " << sql;
  }
}

// pinned_log_after: a client pinned that long gets one log line.
TEST(Pinning, PinnedLogAfterLogsALongPinnedClientOnce) {
  DaemonConfig cfg = pin_config(2);
  cfg.set("pinned_log_after", "300ms");
  Daemon d(cfg);
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo("app", "app", "application_name=pin_log_client"));
  ASSERT_TRUE(c);
  ASSERT_EQ(exec_within(c, "SELECT 1").scalar(), "1");
  // Lines mentioning "pinned" (the startup may have some: the baseline).
  auto lines = [&] {
    int n = 0;
    std::string log = d.log();
    for (size_t pos = 0; pos < log.size();) {
      size_t eol = log.find('\n', pos);
      if (eol == std::string::npos) eol = log.size();
      if (log.substr(pos, eol - pos).find("pinned") != std::string::npos) ++n;
      pos = eol + 1;
    }
    return n;
  };
  const int before = lines();
  ASSERT_TRUE(exec_within(c, "LISTEN pin_log_ch").ok);
  // The client keeps working while it stays pinned.
  EXPECT_TRUE(eventually([&] { return exec_within(c, "SELECT 1").ok && lines() > before; }, 5000))
      << "no log line about the pinned client:\n" << tail_lines(d.log(), 20);
  EXPECT_EQ(lines(), before + 1) << tail_lines(d.log(), 20);
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(exec_within(c, "SELECT 1").ok);
  EXPECT_EQ(lines(), before + 1) << "logged more than once:\n" << tail_lines(d.log(), 20);
}

// Review findings: state cleared through the extended protocol unpins too, and a
// pinned client's pipelined statement that waits for a quiet server is sent.
TEST(Pinning, ExtendedProtocolUnlockUnpins) {
  Daemon d(pin_config());
  START_DAEMON(d);
  ConnPtr admin = must_connect(admin_conninfo(d));
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(admin && c);
  QResult r = exec_params(c, "SELECT pg_advisory_lock($1::bigint)", {"4701"});
  ASSERT_TRUE(r.ok) << r.describe();
  ASSERT_TRUE(pinned_becomes(admin.get(), c.get(), "advisory"));
  r = exec_params(c, "SELECT pg_advisory_unlock($1::bigint)", {"4701"});
  ASSERT_TRUE(r.ok) << r.describe();
  EXPECT_EQ(r.scalar(), "t");
  EXPECT_TRUE(pinned_becomes(admin.get(), c.get(), ""));
  EXPECT_TRUE(sv_pinned_becomes(admin.get(), "0"));
  EXPECT_EQ(cluster().scalar("SELECT pg_try_advisory_lock(4701)").value_or("?"), "t");
}

TEST(Pinning, PinnedClientsPipelinedSetIsSent) {
  Daemon d(pin_config());
  START_DAEMON(d);
  RawConn raw;
  std::string sqlstate, err;
  ASSERT_TRUE(raw.login(d.port(), "app", "app", sqlstate, err)) << sqlstate << " " << err;
  ASSERT_EQ(raw.simple_query("PREPARE pin_pipe AS SELECT 1"), "");
  // Two Queries in one write: the SET waits until the server has answered the
  // SELECT (its effect is recorded in order), then must go out on the kept server.
  std::string two;
  for (const char* sql : {"SELECT 1", "SET work_mem = '64MB'"}) {
    two += 'Q';
    uint32_t len = uint32_t(4 + std::strlen(sql) + 1);
    for (int shift : {24, 16, 8, 0}) two += char((len >> shift) & 0xff);
    two.append(sql).push_back('\0');
  }
  ASSERT_TRUE(raw.send(two));
  int ready = 0;
  for (int i = 0; i < 20 && ready < 2; i++) {
    BackendMsg m;
    ASSERT_EQ(raw.read_msg(m, 5000), RawConn::Status::Ok) << "after " << ready << " ReadyForQuery";
    if (m.type == 'Z') ready++;
  }
  EXPECT_EQ(ready, 2);
  std::vector<std::string> rows;
  ASSERT_EQ(raw.simple_query("SHOW work_mem", &rows), "");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0], "64MB");
  ASSERT_EQ(raw.simple_query("EXECUTE pin_pipe", &rows), "");
}
