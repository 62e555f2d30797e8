// Differential tests of the result cache: the cache must never give an answer
// PostgreSQL itself would not give that session at that moment. A script (steps:
// session, SQL, protocol) runs twice from the same freshly recreated fixture:
// once straight against PostgreSQL, once through a pgsidecar with
// `cache: {mode: all}`; the answers (rows with column names, command tag, or
// SQLSTATE) must be the same, step by step. The fixture (database cdiff: tables,
// views, sequences, functions, a partitioned table, RLS policies, grants, role
// defaults) is dropped and recreated before every run, so sequences restart and
// any difference is a cache (or proxy) bug.
//
// Part 1: one test per known class of wrong answers (several fail against the
// current build; they describe bugs). Part 2: a seeded random script that is
// shrunk on a mismatch. Both run in session and transaction pool mode (the test
// parameter). Environment: PGSIDECAR_DIFF_SEED (default 20240611),
// PGSIDECAR_DIFF_STEPS (400), PGSIDECAR_DIFF_SHRINK (at most 200 reruns while
// shrinking), PGSIDECAR_DIFF_VERBOSE (print the whole random script and answers).
#include <poll.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <random>
#include <sstream>

#include "harness.h"

using namespace itest;

namespace {

constexpr const char* kDb = "cdiff";
constexpr const char* kSuper = "cdiff_super";   // a superuser that logs in over TCP
constexpr const char* kSuperPassword = "superpw";
// admission: always stores every miss, so a wrong entry would be served on the next read.
constexpr const char* kCache = "{mode: all, default_ttl: 60s, admission: always}";
constexpr int kStatementTimeoutMs = 10000;   // a hung statement is an answer ("TIMEOUT"), not a hung test

// ---------------------------------------------------------------- scripts
// How a step reaches the server: a simple Query, an extended-protocol batch
// (PQexecParams), a FunctionCall (PQfn); or Reconnect: the session's connection is
// closed and its next step logs in anew.
enum class Proto { Simple, Extended, FastPath, Reconnect };

// What a step does to locks; the generator and the shrinker keep scripts free of
// lock waits between sessions (one thread drives all of them).
enum class Kind { Read, Set, Write, Ddl, Begin, End };

struct Step {
  int session = 0;
  std::string sql;   // FastPath: the function as regprocedure text, e.g. "public.fp_set(text,text)"
  Proto proto = Proto::Simple;
  std::vector<std::string> params;   // Extended/FastPath: text values
  Kind kind = Kind::Read;
};

struct Login {
  std::string user = "app";
  std::string db = kDb;
};

struct Script {
  explicit Script(std::vector<Login> logins) : sessions(std::move(logins)) {}

  std::vector<Login> sessions;
  std::vector<Step> steps;
  // Pairs of step indexes whose direct answers must differ: the state change
  // between them is visible, so a stale hit on the second would show.
  std::vector<std::pair<size_t, size_t>> changes;

  size_t add(int s, std::string sql, Proto p = Proto::Simple, std::vector<std::string> params = {},
             Kind k = Kind::Read) {
    steps.push_back({s, std::move(sql), p, std::move(params), k});
    return steps.size() - 1;
  }
  size_t q(int s, std::string sql) { return add(s, std::move(sql)); }
  size_t x(int s, std::string sql, std::vector<std::string> params = {}) {
    return add(s, std::move(sql), Proto::Extended, std::move(params));
  }
  size_t fn(int s, std::string proc, std::vector<std::string> args) {
    return add(s, std::move(proc), Proto::FastPath, std::move(args));
  }
  void changed(size_t before, size_t after) { changes.emplace_back(before, after); }
};

Login app_login() { return {}; }
Login super_login(const std::string& db = kDb) { return {kSuper, db}; }

std::string proto_name(Proto p) {
  switch (p) {
    case Proto::Simple: return "Q";
    case Proto::Extended: return "X";
    case Proto::FastPath: return "F";
    case Proto::Reconnect: return "-";
  }
  return "?";
}

std::string step_text(const Step& st) {
  std::string s = "s" + std::to_string(st.session) + " " + proto_name(st.proto) + " " + st.sql;
  if (!st.params.empty()) {
    s += "  [";
    for (size_t i = 0; i < st.params.size(); i++) s += (i ? ", " : "") + st.params[i];
    s += "]";
  }
  return s;
}

// ---------------------------------------------------------------- answers
struct Answer {
  std::string key;      // compared: rows / tag / SQLSTATE of every result
  std::string detail;   // printed only: error messages
  bool hit = false;     // printed only: the cache's hit counter moved during this step
};

void append_result(Answer& a, PGresult* r) {
  std::string k;
  switch (PQresultStatus(r)) {
    case PGRES_TUPLES_OK: {
      k = "rows[";
      for (int c = 0; c < PQnfields(r); c++) k += std::string(c ? "," : "") + PQfname(r, c);
      k += "]";
      for (int i = 0; i < PQntuples(r); i++) {
        k += " (";
        for (int c = 0; c < PQnfields(r); c++)
          k += std::string(c ? "|" : "") + (PQgetisnull(r, i, c) ? "NULL" : PQgetvalue(r, i, c));
        k += ")";
      }
      break;
    }
    case PGRES_COMMAND_OK: k = std::string("tag ") + PQcmdStatus(r); break;
    case PGRES_EMPTY_QUERY: k = "empty"; break;
    default: {
      const char* st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
      const char* msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
      k = std::string("error ") + (st ? st : "?");
      a.detail += std::string(a.detail.empty() ? "" : "; ") + (msg ? msg : PQresultErrorMessage(r));
    }
  }
  a.key += (a.key.empty() ? "" : " ; ") + k;
}

// Sends one step and collects every result; false on timeout (the caller drops the connection).
bool run_statement(PGconn* c, const Step& st, Answer& a) {
  std::vector<const char*> vals;
  for (const auto& p : st.params) vals.push_back(p.c_str());
  int sent = st.proto == Proto::Simple
                 ? PQsendQuery(c, st.sql.c_str())
                 : PQsendQueryParams(c, st.sql.c_str(), int(vals.size()), nullptr, vals.data(), nullptr, nullptr, 0);
  if (!sent) {
    a.key = "send failed";
    a.detail = PQerrorMessage(c);
    return true;
  }
  auto t0 = Clock::now();
  for (;;) {
    if (!PQconsumeInput(c)) break;
    while (!PQisBusy(c)) {
      PGresult* r = PQgetResult(c);
      if (!r) return true;
      append_result(a, r);
      PQclear(r);
    }
    int left = kStatementTimeoutMs - int(ms_since(t0));
    if (left <= 0) {
      a.key += (a.key.empty() ? "" : " ; ") + std::string("TIMEOUT");
      return false;
    }
    pollfd p{PQsocket(c), POLLIN, 0};
    poll(&p, 1, left);
  }
  while (PGresult* r = PQgetResult(c)) {   // the connection broke: what libpq still has
    append_result(a, r);
    PQclear(r);
  }
  a.key += " ; connection lost";
  return true;
}

// FunctionCall ('F'): libpq's PQfn, text arguments, a text result. Blocking (libpq
// has no asynchronous fast path).
Answer run_fastpath(PGconn* c, Oid fn, const std::vector<std::string>& args) {
  Answer a;
  if (fn == InvalidOid) {
    a.key = "no such function";
    return a;
  }
  std::vector<PQArgBlock> blocks(args.size());
  for (size_t i = 0; i < args.size(); i++) {
    blocks[i].isint = 0;
    blocks[i].len = int(args[i].size());
    blocks[i].u.ptr = reinterpret_cast<int*>(const_cast<char*>(args[i].data()));
  }
  std::vector<int> buf(1024);
  int len = 0;
  PGresult* r = PQfn(c, fn, buf.data(), &len, 0, blocks.data(), int(blocks.size()));
  if (!r) {
    a.key = "no result";
    a.detail = PQerrorMessage(c);
    return a;
  }
  if (PQresultStatus(r) == PGRES_COMMAND_OK)
    a.key = len < 0 ? "fn NULL" : "fn " + std::string(reinterpret_cast<char*>(buf.data()), size_t(len));
  else
    append_result(a, r);
  PQclear(r);
  return a;
}

// ---------------------------------------------------------------- fixture
// Roles are cluster-wide: created once, never dropped (memberships are re-granted per run).
const char* kRolesSql =
    "DO $$BEGIN\n"
    "  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cdiff_r1') THEN CREATE ROLE cdiff_r1; END IF;\n"
    "  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cdiff_r2') THEN CREATE ROLE cdiff_r2; END IF;\n"
    "  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cdiff_super') THEN\n"
    "    CREATE ROLE cdiff_super LOGIN SUPERUSER PASSWORD 'superpw';\n"
    "  END IF;\n"
    "END$$";

// Run as superuser in database cdiff. Objects are owned by app except the RLS
// tables (owned by the superuser, so that app, not their owner, is subject to RLS).
const char* kFixtureSql = R"SQL(
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS public, a, b CASCADE;
CREATE SCHEMA public AUTHORIZATION app;
GRANT USAGE, CREATE ON SCHEMA public TO PUBLIC;
CREATE SCHEMA a AUTHORIZATION app;
CREATE SCHEMA b AUTHORIZATION app;
GRANT USAGE ON SCHEMA a, b TO PUBLIC;
GRANT cdiff_r1, cdiff_r2 TO app;
ALTER ROLE app RESET ALL;
ALTER ROLE app IN DATABASE cdiff RESET ALL;
ALTER DATABASE cdiff RESET ALL;

SET ROLE app;
CREATE TABLE public.t (id int PRIMARY KEY, v text);
INSERT INTO public.t VALUES (1, 'public-1'), (2, 'public-2');
CREATE TABLE a.t (id int PRIMARY KEY, v text);
INSERT INTO a.t VALUES (1, 'a-1'), (2, 'a-2');
CREATE TABLE b.t (id int PRIMARY KEY, v text);
INSERT INTO b.t VALUES (1, 'b-1'), (2, 'b-2'), (3, 'b-3');
GRANT ALL ON a.t, b.t TO PUBLIC;

CREATE TABLE items (id int PRIMARY KEY, v text, n int);
INSERT INTO items SELECT g, 'item-' || g, g FROM generate_series(1, 8) g;
CREATE VIEW v_items AS SELECT id, v FROM items WHERE id <= 5;
CREATE VIEW v1 AS SELECT id, v FROM items WHERE n % 2 = 0;
CREATE VIEW v2 AS SELECT id, v FROM v1 WHERE id > 2;

CREATE SEQUENCE s1;
CREATE SEQUENCE s2;
CREATE VIEW vseq AS SELECT nextval('s1') AS n;
CREATE TABLE ser_t (id serial PRIMARY KEY, v text);

CREATE TABLE p (id int, k int, v text) PARTITION BY RANGE (k);
CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (100);
CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (100) TO (200);
INSERT INTO p VALUES (1, 5, 'p1-a'), (2, 50, 'p1-b'), (3, 150, 'p2-a');

CREATE TABLE vac_t (id int PRIMARY KEY, v text);
INSERT INTO vac_t SELECT g, 'vac-' || g FROM generate_series(1, 6) g;
CREATE TABLE dates_t (d date, label text);
INSERT INTO dates_t VALUES (current_date - 1, 'yesterday'), (current_date, 'today'), (current_date + 1, 'tomorrow');

CREATE FUNCTION set_path_b() RETURNS text LANGUAGE plpgsql
  AS $$BEGIN RETURN set_config('search_path', 'b', false); END$$;
CREATE FUNCTION set_path(p text) RETURNS text LANGUAGE plpgsql
  AS $$BEGIN RETURN set_config('search_path', p, false); END$$;
CREATE FUNCTION set_tenant(t int) RETURNS text LANGUAGE plpgsql
  AS $$BEGIN RETURN set_config('app.tenant', t::text, false); END$$;
CREATE FUNCTION fp_set(name text, value text) RETURNS text LANGUAGE plpgsql
  AS $$BEGIN RETURN set_config(name, value, false); END$$;

GRANT ALL ON ALL TABLES IN SCHEMA public TO PUBLIC;
GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO PUBLIC;
RESET ROLE;

CREATE TABLE tenant_rows (tenant int, v text);
INSERT INTO tenant_rows VALUES (1, 't1-a'), (1, 't1-b'), (2, 't2-a');
ALTER TABLE tenant_rows ENABLE ROW LEVEL SECURITY;
CREATE POLICY by_tenant ON tenant_rows USING (tenant::text = current_setting('app.tenant', true));
GRANT ALL ON tenant_rows TO PUBLIC;

CREATE TABLE owned_rows (owner name, v text);
INSERT INTO owned_rows VALUES ('app', 'app-row'), ('cdiff_r1', 'r1-row'), ('cdiff_r2', 'r2-row');
ALTER TABLE owned_rows ENABLE ROW LEVEL SECURITY;
CREATE POLICY by_owner ON owned_rows USING (owner = current_user);
GRANT ALL ON owned_rows TO PUBLIC;

CREATE TABLE members_only (v text);
INSERT INTO members_only VALUES ('secret');
GRANT SELECT ON members_only TO cdiff_r2;
)SQL";

ConnPtr super_conn(const std::string& db, std::string& err) {
  ConnectResult cr = pg_connect(cluster().super_conninfo(db));
  if (!cr.ok()) err = "superuser connect to " + db + ": " + cr.error;
  else PQsetNoticeProcessor(cr.conn.get(), [](void*, const char*) {}, nullptr);
  return std::move(cr.conn);
}

bool super_exec(PGconn* c, const std::string& sql, std::string& err) {
  QResult r = exec(c, sql);
  if (!r.ok) err = "fixture SQL failed: [" + r.sqlstate + "] " + r.error;
  return r.ok;
}

// Database cdiff and the roles, if missing.
bool ensure_cluster_objects(std::string& err) {
  static bool done = false;   // one cluster per process
  if (done) return true;
  ConnPtr c = super_conn("postgres", err);
  if (!c) return false;
  if (exec(c, "SELECT 1 FROM pg_database WHERE datname = 'cdiff'").rows.empty() &&
      !super_exec(c.get(), "CREATE DATABASE cdiff OWNER app", err))
    return false;
  done = super_exec(c.get(), kRolesSql, err);
  return done;
}

// Ends every other session on cdiff (leftovers of the previous run hold locks or
// cursors), then drops and recreates the fixture.
bool reset_fixture(std::string& err) {
  if (!ensure_cluster_objects(err)) return false;
  ConnPtr pg = super_conn("postgres", err);
  if (!pg) return false;
  const std::string others = "FROM pg_stat_activity WHERE datname = 'cdiff' AND pid <> pg_backend_pid()";
  exec(pg, "SELECT pg_terminate_backend(pid) " + others);
  if (!eventually([&] { return exec(pg, "SELECT count(*) " + others).scalar() == "0"; }, 10000)) {
    err = "sessions on cdiff did not go away";
    return false;
  }
  ConnPtr c = super_conn(kDb, err);
  return c && super_exec(c.get(), kFixtureSql, err);
}

// ---------------------------------------------------------------- runs
using ConninfoFor = std::function<std::string(const Login&)>;
using HitCounter = std::function<long()>;

// Plays the script; sessions connect at their first step (so a step can be a new login).
std::vector<Answer> play(const Script& s, const ConninfoFor& conninfo, const HitCounter& hits = nullptr) {
  std::map<std::string, Oid> fns;   // FastPath functions, resolved in this fixture
  if (std::any_of(s.steps.begin(), s.steps.end(), [](const Step& st) { return st.proto == Proto::FastPath; })) {
    std::string err;
    ConnPtr c = super_conn(kDb, err);
    for (const auto& st : s.steps) {
      if (st.proto != Proto::FastPath || fns.count(st.sql)) continue;
      QResult r = exec(c, "SELECT '" + st.sql + "'::regprocedure::oid");
      fns[st.sql] = r.ok ? Oid(std::stoul(r.scalar())) : InvalidOid;
    }
  }
  std::vector<ConnPtr> conns(s.sessions.size());
  std::vector<bool> dead(s.sessions.size(), false);
  std::vector<Answer> out;
  long seen = hits ? hits() : 0;
  for (const auto& st : s.steps) {
    Answer a;
    auto& c = conns.at(size_t(st.session));
    if (st.proto == Proto::Reconnect) {   // the next step of this session logs in again
      c.reset();
      dead[size_t(st.session)] = false;
      a.key = "closed";
    } else if (dead[size_t(st.session)]) {
      a.key = "session dead";
    } else if (!c) {
      ConnectResult cr = pg_connect(conninfo(s.sessions[size_t(st.session)]));
      if (cr.ok()) {
        c = std::move(cr.conn);
        PQsetNoticeProcessor(c.get(), [](void*, const char*) {}, nullptr);
      } else {
        a.key = "connect failed " + cr.sqlstate;
        a.detail = cr.error;
      }
    }
    if (c && a.key.empty()) {
      if (st.proto == Proto::FastPath) {
        a = run_fastpath(c.get(), fns[st.sql], st.params);
      } else if (!run_statement(c.get(), st, a)) {
        c.reset();
        dead[size_t(st.session)] = true;
      }
    }
    if (hits) {
      long now = hits();
      a.hit = now > seen;
      seen = now;
    }
    out.push_back(std::move(a));
  }
  return out;
}

struct RunResult {
  std::vector<Answer> answers;
  long hits = 0;          // result_l1 hits during the script (proxied runs)
  std::string error;      // the run itself failed (fixture, daemon start)
  std::string log_tail;   // the daemon's last lines (proxied runs)
};

RunResult run_direct(const Script& s) {
  RunResult r;
  if (!reset_fixture(r.error)) return r;
  r.answers = play(s, [](const Login& l) {
    return cluster().direct_conninfo(l.user, l.db, l.user == kSuper ? kSuperPassword : "apppass");
  });
  return r;
}

DaemonConfig mode_config(const std::string& mode, const std::string& cache) {
  DaemonConfig c = mode == "transaction" ? tx_config(4) : base_config();   // 4: all three sessions may pin
  c.set("cache", cache).set("stats_users", "[app]").user(kSuper, kSuperPassword);
  return c;
}

// SHOW CACHE `hits` of row result_l1 on the admin console; -1 if unknown.
long l1_hits(PGconn* admin) {
  if (!admin) return -1;
  PGresult* r = PQexec(admin, "SHOW CACHE");
  long hits = -1;
  int col = PQfnumber(r, "hits");
  for (int row = 0; col >= 0 && row < PQntuples(r); row++)
    if (std::string(PQgetvalue(r, row, 0)) == "result_l1") hits = std::stol(PQgetvalue(r, row, col));
  PQclear(r);
  return hits;
}
long l1_hits(const Daemon& d) {
  ConnectResult cr = pg_connect(d.conninfo("app", "pgsidecar"));
  return l1_hits(cr.conn.get());
}

RunResult run_proxied(const Script& s, const std::string& mode, const std::string& cache) {
  RunResult r;
  if (!reset_fixture(r.error)) return r;
  Daemon d(mode_config(mode, cache));
  if (!d.start(&r.error)) return r;
  {
    // Statements calling functions are cached only once the daemon has read the
    // database's volatile functions (right after the first login there).
    ConnectResult probe = pg_connect(d.conninfo("app", kDb));
    long h0 = l1_hits(d);
    if (!probe.ok() || !eventually([&] {
          exec(probe.conn.get(), "SELECT upper('probe')");
          return l1_hits(d) > h0;
        }, 20000)) {   // a bound for a loaded machine, not a speed target
      r.error = "the daemon never served a function call from cache: " + probe.error;
      return r;
    }
  }
  ConnPtr admin = pg_connect(d.conninfo("app", "pgsidecar")).conn;
  long h0 = l1_hits(admin.get());
  r.answers = play(s, [&](const Login& l) { return d.conninfo(l.user, l.db); }, [&] { return l1_hits(admin.get()); });
  r.hits = l1_hits(admin.get()) - h0;
  admin.reset();
  d.stop();   // (its log is complete once it exited)
  r.log_tail = tail_lines(d.log(), 20);
  return r;
}

// First step whose answers differ, -1 if none.
long first_mismatch(const RunResult& direct, const RunResult& proxied) {
  size_t n = std::max(direct.answers.size(), proxied.answers.size());
  for (size_t i = 0; i < n; i++) {
    if (i >= direct.answers.size() || i >= proxied.answers.size() ||
        direct.answers[i].key != proxied.answers[i].key)
      return long(i);
  }
  return -1;
}

std::string answer_text(const Answer& a) { return a.key + (a.detail.empty() ? "" : "   -- " + a.detail); }

std::string report(const std::string& mode, const Script& s, const RunResult& direct, const RunResult& proxied, long at) {
  std::ostringstream o;
  bool differs = size_t(at) >= direct.answers.size() || size_t(at) >= proxied.answers.size() ||
                 direct.answers[size_t(at)].key != proxied.answers[size_t(at)].key;
  if (differs) o << "pool mode " << mode << ": step " << at << " differs (direct PostgreSQL vs through pgsidecar)\n";
  else o << "pool mode " << mode << ": the script and its answers\n";
  o << "sessions:";
  for (size_t i = 0; i < s.sessions.size(); i++) o << " s" << i << "=" << s.sessions[i].user << "@" << s.sessions[i].db;
  o << "\nscript up to that step:\n";
  for (long i = 0; i <= at && size_t(i) < s.steps.size(); i++) {
    o << (i == at ? "=> #" : "   #") << i << " " << step_text(s.steps[size_t(i)]) << "\n";
    const Answer* d = size_t(i) < direct.answers.size() ? &direct.answers[size_t(i)] : nullptr;
    const Answer* p = size_t(i) < proxied.answers.size() ? &proxied.answers[size_t(i)] : nullptr;
    if (i == at || !d || !p || d->key != p->key) {
      o << "        direct:    " << (d ? answer_text(*d) : "<none>") << "\n";
      o << "        pgsidecar: " << (p ? answer_text(*p) : "<none>") << (p && p->hit ? "   (cache hit)" : "") << "\n";
    } else {
      o << "        both:      " << answer_text(*d) << (p->hit ? "   (cache hit)" : "") << "\n";
    }
  }
  return o.str();
}

// ---------------------------------------------------------------- fixed cases
class CacheDifferential : public ::testing::TestWithParam<std::string> {
 protected:
  void TearDown() override { cluster().psql("ALTER ROLE app RESET ALL", "postgres"); }
  const std::string& mode() const { return GetParam(); }

  // Runs s directly and through the daemon; fails on the first differing answer.
  // Also checks the script can catch something: the direct answers of every
  // `changes` pair differ.
  RunResult expect_same(const Script& s, const std::string& cache = kCache) {
    RunResult direct = run_direct(s);
    RunResult proxied = run_proxied(s, mode(), cache);   // (its daemon is gone before any failure is recorded)
    EXPECT_EQ(direct.error, "");
    EXPECT_EQ(proxied.error, "");
    if (!direct.error.empty() || !proxied.error.empty()) return proxied;
    for (auto [before, after] : s.changes) {
      EXPECT_NE(direct.answers.at(before).key, direct.answers.at(after).key)
          << "steps " << before << " and " << after << " should see a change; direct answer: "
          << answer_text(direct.answers.at(after));
    }
    // (hits show whether the statements under test are cached at all; zero is no failure:
    // a statement never cached cannot be answered wrongly from the cache)
    long at = first_mismatch(direct, proxied);
    std::cout << "cache differential: pool mode " << mode() << ", " << s.steps.size() << " steps, "
              << proxied.hits << " cache hits, " << (at < 0 ? "same answers" : "mismatch") << std::endl;
    EXPECT_EQ(at, -1) << report(mode(), s, direct, proxied, at) << "daemon log (last lines):\n" << proxied.log_tail;
    return proxied;
  }
};

INSTANTIATE_TEST_SUITE_P(, CacheDifferential, ::testing::Values("session", "transaction"),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

const std::string kReadT = "SELECT * FROM t ORDER BY id";

// Transaction mode by design: after a statement whose effect on the session is not
// followed, the server is reset before reuse, so what it changed does not follow the
// client to its next transaction (docs/result-cache.md, "The key").
const char* const kResetByDesign =
    "transaction mode resets session state made by functions or UPDATE pg_settings (docs/result-cache.md)";

// 1. A VOLATILE plpgsql function calls set_config('search_path', ..., false).
TEST_P(CacheDifferential, FunctionSetsSearchPath) {
  if (mode() == "transaction") GTEST_SKIP() << kResetByDesign;
  Script s{{app_login(), app_login()}};
  s.q(0, "SET search_path = a");
  s.q(0, kReadT);
  size_t before = s.q(0, kReadT);
  s.x(0, "SELECT * FROM t WHERE id <= $1 ORDER BY id", {"9"});
  s.q(0, "SELECT public.set_path_b()");
  size_t after = s.q(0, kReadT);
  s.q(0, kReadT);
  s.x(0, "SELECT * FROM t WHERE id <= $1 ORDER BY id", {"9"});
  // another session with search_path a, after the first one switched
  s.q(1, "SET search_path = a");
  size_t other = s.q(1, kReadT);
  s.x(1, "SELECT * FROM t WHERE id <= $1 ORDER BY id", {"9"});
  s.q(0, kReadT);
  s.changed(before, after);
  s.changed(after, other);
  expect_same(s);
}

// 2. A custom setting behind an RLS policy, set by a function.
TEST_P(CacheDifferential, FunctionSetsTenantForRowLevelSecurity) {
  if (mode() == "transaction") GTEST_SKIP() << kResetByDesign;
  const std::string read = "SELECT v FROM tenant_rows ORDER BY v";
  Script s{{app_login(), app_login()}};
  size_t none = s.q(0, read);
  s.q(0, "SELECT public.set_tenant(1)");
  size_t t1 = s.q(0, read);
  size_t other = s.q(1, read);   // session 1 has no tenant: no rows
  s.q(1, "SELECT public.set_tenant(2)");
  size_t t2 = s.q(1, read);
  s.q(0, read);
  s.q(1, "SELECT set_config('app.tenant', '1', false)");
  s.q(1, read);
  s.q(0, "SET app.tenant = '2'");
  s.q(0, read);
  s.q(0, "RESET app.tenant");
  s.q(0, read);
  s.changed(none, t1);
  s.changed(t1, other);
  s.changed(t1, t2);
  expect_same(s);
}

// 3. UPDATE pg_settings sets a setting like SET does.
TEST_P(CacheDifferential, UpdatePgSettingsSetsSearchPath) {
  if (mode() == "transaction") GTEST_SKIP() << kResetByDesign;
  Script s{{app_login(), app_login()}};
  s.q(0, "SET search_path = a");
  s.q(0, kReadT);
  size_t before = s.q(0, kReadT);
  s.q(0, "UPDATE pg_settings SET setting = 'b' WHERE name = 'search_path'");
  size_t after = s.q(0, kReadT);
  s.q(1, "SET search_path = a");
  s.q(1, kReadT);
  s.q(0, "SHOW search_path");
  s.changed(before, after);
  expect_same(s);
}

// 4. RESET/SET SESSION AUTHORIZATION also reset the role.
TEST_P(CacheDifferential, SessionAuthorizationResetsRole) {
  const std::string read = "SELECT owner, v FROM owned_rows ORDER BY v";
  Script s{{app_login(), super_login()}};
  size_t as_app = s.q(0, read);
  s.q(0, "SET ROLE cdiff_r1");
  size_t as_r1 = s.q(0, read);
  s.q(0, "RESET SESSION AUTHORIZATION");
  size_t reset = s.q(0, read);
  s.q(0, "SET ROLE cdiff_r2");
  s.q(0, read);
  s.q(0, "SET SESSION AUTHORIZATION app");
  s.q(0, read);
  // the superuser login may change its session user
  size_t all = s.q(1, read);
  s.q(1, "SET SESSION AUTHORIZATION app");
  size_t super_as_app = s.q(1, read);
  s.q(1, "RESET SESSION AUTHORIZATION");
  s.q(1, read);
  s.q(1, "SET ROLE cdiff_r1");
  s.q(1, read);
  s.q(1, "SET SESSION AUTHORIZATION cdiff_super");
  s.q(1, read);
  s.q(1, "SET SESSION AUTHORIZATION cdiff_r2");
  s.q(1, read);
  s.q(1, "RESET ROLE");
  s.q(1, read);
  s.changed(as_app, as_r1);
  s.changed(as_r1, reset);
  s.changed(all, super_as_app);
  expect_same(s);
}

// 5. A SET after a leading `;` (an empty statement first).
TEST_P(CacheDifferential, SetAfterLeadingSemicolon) {
  Script s{{app_login(), app_login()}};
  s.q(0, "SET search_path = a");
  size_t before = s.q(0, kReadT);
  s.q(0, "; SET search_path = b");
  size_t after = s.q(0, kReadT);
  s.q(0, ";;SET search_path = public");
  s.q(0, kReadT);
  s.q(0, "/* c */ ; SET search_path = a");
  s.q(0, kReadT);
  s.q(1, "SET search_path = b");
  s.q(1, kReadT);
  s.changed(before, after);
  expect_same(s);
}

// 6. DDL behind a nested comment.
TEST_P(CacheDifferential, DdlBehindNestedComment) {
  Script s{{app_login()}};
  s.q(0, "SELECT * FROM v1 ORDER BY id");
  size_t v1_before = s.q(0, "SELECT * FROM v1 ORDER BY id");
  s.q(0, "/* outer /* inner */ still comment */ CREATE OR REPLACE VIEW v1 AS SELECT id, v FROM items WHERE n % 2 = 1");
  size_t v1_after = s.q(0, "SELECT * FROM v1 ORDER BY id");
  size_t items_before = s.q(0, "SELECT * FROM items ORDER BY id");
  s.q(0, "/* /* */ */ ALTER TABLE items RENAME COLUMN v TO w");
  size_t items_after = s.q(0, "SELECT * FROM items ORDER BY id");
  size_t vac_before = s.q(0, "SELECT * FROM vac_t ORDER BY id");
  s.q(0, "/* /* */ */ ALTER TABLE vac_t RENAME TO vac_old");
  size_t vac_after = s.q(0, "SELECT * FROM vac_t ORDER BY id");
  size_t v2_before = s.q(0, "SELECT * FROM v2 ORDER BY id");
  s.q(0, "/* a /* b */ c */ DROP VIEW v2");
  size_t v2_after = s.q(0, "SELECT * FROM v2 ORDER BY id");
  s.changed(v1_before, v1_after);
  s.changed(items_before, items_after);
  s.changed(vac_before, vac_after);
  s.changed(v2_before, v2_after);
  expect_same(s);
}

// 7. A view over nextval(): every read moves the sequence.
TEST_P(CacheDifferential, ViewOverNextval) {
  Script s{{app_login(), app_login()}};
  size_t first = s.q(0, "SELECT n FROM vseq");
  size_t second = s.q(0, "SELECT n FROM vseq");
  size_t third = s.q(1, "SELECT n FROM vseq");
  size_t x1 = s.x(0, "SELECT n FROM vseq");
  size_t x2 = s.x(0, "SELECT n FROM vseq");
  s.changed(first, second);
  s.changed(second, third);
  s.changed(x1, x2);
  expect_same(s);
}

// 8. Sequences move without any write the statement names.
TEST_P(CacheDifferential, SequenceLastValueMoves) {
  Script s{{app_login(), app_login()}};
  s.q(0, "SELECT nextval('s2')");
  s.q(0, "SELECT last_value FROM s2");
  size_t l1 = s.q(0, "SELECT last_value FROM s2");
  s.q(0, "SELECT nextval('s2')");
  size_t l2 = s.q(0, "SELECT last_value FROM s2");
  size_t l2b = s.q(1, "SELECT last_value FROM s2");
  s.q(1, "SELECT setval('s2', 42)");
  size_t l3 = s.q(0, "SELECT last_value FROM s2");
  size_t ser0 = s.q(0, "SELECT last_value, is_called FROM ser_t_id_seq");
  s.q(0, "INSERT INTO ser_t (v) VALUES ('x')");
  size_t ser1 = s.q(0, "SELECT last_value, is_called FROM ser_t_id_seq");
  s.q(0, "INSERT INTO ser_t (v) VALUES ('y')");
  size_t ser2 = s.q(0, "SELECT last_value, is_called FROM ser_t_id_seq");
  s.changed(l1, l2);
  s.changed(l2b, l3);
  s.changed(ser0, ser1);
  s.changed(ser1, ser2);
  expect_same(s);
}

// 9. Time literals ('now', 'today', ... in any case, with blanks) are never cached.
// Outside the differential runner: each literal runs twice on a fresh session with
// a clock_timestamp() between the reads. The second read must not count as a cache
// hit, and an instant must not be older than that clock (a cached '   now' would
// be). A control read in between shows whether the session still looks up (one
// that stopped looking up cannot be served a stale answer: noted, not failed).
TEST_P(CacheDifferential, TimeLiteralsAreNotCached) {
  struct Literal {
    std::string sql;
    bool instant;   // a point in time (else a date: equal from one read to the next, barring midnight)
    Proto proto = Proto::Simple;
  };
  const std::vector<Literal> literals = {
      {"SELECT '   now'::timestamptz", true},
      {"SELECT ' Now '::timestamptz", true},
      {"SELECT 'NOW'::timestamptz", true},
      {"SELECT 'now  '::timestamptz", true},
      {"SELECT E'\\tnow'::timestamptz", true},
      {"SELECT timestamptz '  now'", true},
      {"SELECT CAST(' now' AS timestamptz)", true},
      {"SELECT '  now'::timestamp::timestamptz", true},
      {"SELECT 'now'::text::timestamptz", true},
      {"SELECT ('n' || 'ow')::timestamptz", true},
      {"SELECT '   now'::timestamptz", true, Proto::Extended},
      {"SELECT 'today'::date", false},
      {"SELECT ' Today'::timestamptz", false},
      {"SELECT 'TOMORROW'::date", false},
      {"SELECT 'yesterday '::date", false},
      {"SELECT label FROM dates_t WHERE d = 'TOMORROW'", false},
      {"SELECT label FROM dates_t WHERE d < '  today' ORDER BY d", false},
      {"SELECT label FROM dates_t WHERE d = ' yesterday'", false},
      {"SELECT 'Today'::date", false, Proto::Extended},
  };
  struct Seen {
    QResult first, clock, second;
    bool second_hit = false;
    std::string not_older;   // "t": second >= clock
  };
  std::vector<Seen> seen;
  std::string err;
  ASSERT_TRUE(reset_fixture(err)) << err;
  {
    Daemon d(mode_config(mode(), kCache));
    START_DAEMON(d);
    ConnPtr direct = must_connect(cluster().super_conninfo(kDb));
    const std::string control = "SELECT label FROM dates_t ORDER BY d";
    {
      ConnPtr warm = must_connect(d.conninfo("app", kDb));
      ASSERT_TRUE(exec(warm, control).ok);
      long h = l1_hits(d);
      ASSERT_TRUE(exec(warm, control).ok);
      ASSERT_EQ(l1_hits(d), h + 1) << "the control read is not served from cache: the hit counter proves nothing";
    }
    for (const auto& lit : literals) {
      ConnPtr c = must_connect(d.conninfo("app", kDb));
      auto run = [&] { return lit.proto == Proto::Simple ? exec(c, lit.sql) : exec_params(c, lit.sql, {}); };
      Seen s;
      s.first = run();
      ASSERT_TRUE(s.first.ok) << lit.sql << ": " << s.first.describe();
      s.clock = exec(c, "SELECT clock_timestamp()");
      long h = l1_hits(d);
      ASSERT_TRUE(exec(c, control).ok);
      if (l1_hits(d) != h + 1) std::cout << "note: after `" << lit.sql << "` the session stopped looking up" << std::endl;
      h = l1_hits(d);
      s.second = run();
      ASSERT_TRUE(s.second.ok) << lit.sql << ": " << s.second.describe();
      s.second_hit = l1_hits(d) != h;
      s.not_older =
          exec_params(direct, "SELECT $1::timestamptz >= $2::timestamptz", {s.second.scalar(), s.clock.scalar()}).scalar();
      seen.push_back(std::move(s));
    }
  }   // the daemon is gone before any failure is recorded (its log would say nothing more)
  for (size_t i = 0; i < literals.size(); i++) {
    SCOPED_TRACE(proto_name(literals[i].proto) + " " + literals[i].sql + " (pool mode " + mode() + ")");
    EXPECT_FALSE(seen[i].second_hit) << "served from cache";
    if (literals[i].instant) {
      EXPECT_EQ(seen[i].not_older, "t") << "second read " << seen[i].second.scalar()
                                        << " is older than clock_timestamp() " << seen[i].clock.scalar()
                                        << " taken before it (first read " << seen[i].first.scalar() << ")";
    } else {
      EXPECT_EQ(seen[i].second.rows, seen[i].first.rows);
    }
  }
}

// 10. Session-local state read through functions and catalog views: another
// session must not see it. Default cache (catalog views not cached) and catalogs: true.
TEST_P(CacheDifferential, SessionLocalFunctions) {
  const std::vector<std::string> reads = {
      "SELECT pg_listening_channels()",
      "SELECT count(*) FROM pg_listening_channels()",
      "SELECT name FROM pg_prepared_statements ORDER BY name",
      "SELECT name FROM pg_prepared_statement() ORDER BY name",
      "SELECT name FROM pg_cursors ORDER BY name",
      "SELECT name FROM pg_cursor() ORDER BY name",
  };
  Script s{{app_login(), app_login()}};
  std::vector<size_t> before, own, other;
  for (const auto& r : reads) before.push_back(s.q(0, r));
  for (const auto& r : reads) s.q(1, r);
  s.q(0, "LISTEN cdiff_ch");
  s.q(0, "PREPARE cdiff_q AS SELECT 1");
  s.q(0, "DECLARE cdiff_c CURSOR WITH HOLD FOR SELECT 1");
  for (const auto& r : reads) own.push_back(s.q(0, r));
  for (const auto& r : reads) other.push_back(s.q(1, r));
  s.q(0, "UNLISTEN *");
  s.q(0, "DEALLOCATE cdiff_q");
  s.q(0, "CLOSE cdiff_c");
  for (const auto& r : reads) s.q(0, r);
  s.q(1, "LISTEN cdiff_other");
  for (const auto& r : reads) s.q(0, r);
  for (const auto& r : reads) s.q(1, r);
  for (size_t i = 0; i < reads.size(); i++) {
    s.changed(before[i], own[i]);
    s.changed(own[i], other[i]);
  }
  {
    SCOPED_TRACE("cache.catalogs: false");
    expect_same(s);
  }
  {
    SCOPED_TRACE("cache.catalogs: true");
    expect_same(s, "{mode: all, default_ttl: 60s, catalogs: true, admission: always}");
  }
}

// 11. standard_conforming_strings = off: PostgreSQL reads `'a\', '` as one
// literal, so the text below is a SELECT and a DELETE; with it on, one SELECT.
TEST_P(CacheDifferential, StandardConformingStringsOff) {
  const std::string odd = "SELECT 'a\\', 'b; DELETE FROM t; --'";
  const std::string count = "SELECT count(*) FROM t";
  Script s{{app_login(), app_login()}};
  s.q(1, count);
  size_t before = s.q(0, count);
  s.q(0, "SET standard_conforming_strings = off");
  s.q(0, odd);
  size_t after = s.q(0, count);
  size_t other = s.q(1, count);
  s.q(0, "INSERT INTO t VALUES (7, 'seven')");
  s.q(1, count);
  s.q(0, odd);   // deletes again
  s.q(1, count);
  s.q(0, count);
  s.x(0, "SELECT 'a\\', 'b; DELETE FROM t; --'");   // one statement in any case
  s.changed(before, after);
  s.changed(before, other);
  expect_same(s);
}

// 12. VACUUM FULL and CLUSTER move rows (ctid).
TEST_P(CacheDifferential, VacuumFullAndClusterMoveRows) {
  const std::string read = "SELECT ctid, id FROM vac_t ORDER BY id";
  Script s{{app_login()}};
  s.q(0, "UPDATE vac_t SET v = v || '+' WHERE id <= 3");
  s.q(0, read);
  size_t before = s.q(0, read);
  s.q(0, "VACUUM FULL vac_t");
  size_t vacuumed = s.q(0, read);
  s.q(0, "UPDATE vac_t SET v = v || '+' WHERE id IN (1, 4)");
  size_t updated = s.q(0, read);
  s.q(0, "CLUSTER vac_t USING vac_t_pkey");
  size_t clustered = s.q(0, read);
  s.changed(before, vacuumed);
  s.changed(updated, clustered);
  expect_same(s);
}

// 13. Writes to a partition, through the parent, and through an updatable view.
TEST_P(CacheDifferential, PartitionAndViewWrites) {
  Script s{{app_login()}};
  s.q(0, "SELECT count(*) FROM p");
  size_t p_before = s.q(0, "SELECT count(*) FROM p");
  s.q(0, "INSERT INTO p1 VALUES (10, 10, 'via-p1')");
  size_t p_after = s.q(0, "SELECT count(*) FROM p");
  size_t p1_before = s.q(0, "SELECT count(*) FROM p1");
  s.q(0, "INSERT INTO p VALUES (11, 20, 'via-p')");
  size_t p1_after = s.q(0, "SELECT count(*) FROM p1");
  size_t p2_before = s.q(0, "SELECT count(*) FROM p2");
  s.q(0, "UPDATE p SET k = k + 100 WHERE id = 1");   // moves a row from p1 to p2
  size_t p2_after = s.q(0, "SELECT count(*) FROM p2");
  s.q(0, "DELETE FROM p2 WHERE id = 3");
  s.q(0, "SELECT count(*) FROM p");
  s.q(0, "SELECT id, v FROM items WHERE id <= 5 ORDER BY id");
  size_t base_before = s.q(0, "SELECT id, v FROM items WHERE id <= 5 ORDER BY id");
  s.q(0, "UPDATE v_items SET v = 'via-view' WHERE id = 2");
  size_t base_after = s.q(0, "SELECT id, v FROM items WHERE id <= 5 ORDER BY id");
  s.changed(p_before, p_after);
  s.changed(p1_before, p1_after);
  s.changed(p2_before, p2_after);
  s.changed(base_before, base_after);
  expect_same(s);
}

// 14. Role membership revoked (from another database, then from this one) and a
// table grant revoked: the read must fail like PostgreSQL's.
TEST_P(CacheDifferential, RoleMembershipRevoked) {
  const std::string read = "SELECT v FROM members_only";
  Script s{{app_login(), super_login("app"), super_login()}};
  s.q(0, read);
  size_t member = s.q(0, read);
  s.q(1, "REVOKE cdiff_r2 FROM app");   // through pgsidecar, database app
  size_t revoked = s.q(0, read);
  s.q(1, "GRANT cdiff_r2 TO app");
  s.q(0, read);
  size_t again = s.q(0, read);
  s.q(2, "REVOKE cdiff_r2 FROM app");   // database cdiff
  size_t revoked2 = s.q(0, read);
  s.q(2, "GRANT cdiff_r2 TO app");
  s.q(0, read);
  size_t granted = s.q(0, read);
  s.q(2, "REVOKE SELECT ON members_only FROM cdiff_r2");
  size_t table_revoked = s.q(0, read);
  s.changed(member, revoked);
  s.changed(again, revoked2);
  s.changed(granted, table_revoked);
  expect_same(s);
}

// 15. FunctionCall ('F', libpq's PQfn) calling a function that sets search_path.
TEST_P(CacheDifferential, FunctionCallMessageSetsSearchPath) {
  if (mode() == "transaction") GTEST_SKIP() << kResetByDesign;
  Script s{{app_login(), app_login()}};
  s.q(0, "SET search_path = a");
  s.q(0, kReadT);
  size_t before = s.q(0, kReadT);
  s.fn(0, "public.fp_set(text,text)", {"search_path", "b"});
  size_t after = s.q(0, kReadT);
  s.q(1, "SET search_path = a");
  s.q(1, kReadT);
  s.fn(1, "public.fp_set(text,text)", {"app.tenant", "1"});
  s.q(1, "SELECT v FROM public.tenant_rows ORDER BY v");
  s.q(0, "SELECT v FROM public.tenant_rows ORDER BY v");
  s.changed(before, after);
  expect_same(s);
}

// 16. Role and database defaults apply to sessions that log in afterwards.
TEST_P(CacheDifferential, RoleAndDatabaseDefaultsForNewSessions) {
  // Sessions 2-4 log in after a change and get the new defaults from new servers;
  // session 0 keeps the server (and the defaults) it logged in with. In transaction
  // mode a new client gets any pooled server, which keeps the defaults it logged in
  // with (as with PgBouncer), so the answers differ without the cache as well.
  if (mode() == "transaction") GTEST_SKIP() << "pooled servers keep the login defaults they started with";
  Script s{{app_login(), app_login(), app_login(), app_login(), app_login()}};
  s.q(0, kReadT);
  size_t public_rows = s.q(0, kReadT);
  s.q(1, "ALTER ROLE app SET search_path = b");
  size_t role_default = s.q(2, kReadT);   // a new login
  s.q(2, "SHOW search_path");
  s.q(0, kReadT);
  s.q(1, "ALTER ROLE app RESET search_path");
  s.q(1, "ALTER DATABASE cdiff SET search_path = a");
  size_t db_default = s.q(3, kReadT);   // a new login
  s.q(1, "ALTER ROLE app IN DATABASE cdiff SET search_path = b");
  size_t role_in_db = s.q(4, kReadT);   // a new login
  s.q(1, "ALTER ROLE app IN DATABASE cdiff RESET search_path");
  s.q(1, "ALTER DATABASE cdiff RESET search_path");
  s.changed(public_rows, role_default);
  s.changed(public_rows, db_default);
  s.changed(db_default, role_in_db);
  expect_same(s);
}

// 17. Nested views: v2 over v1 over items; writes to items.
TEST_P(CacheDifferential, NestedViewsSeeBaseTableWrites) {
  Script s{{app_login(), app_login()}};
  s.q(0, "SELECT * FROM v2 ORDER BY id");
  size_t before = s.q(0, "SELECT * FROM v2 ORDER BY id");
  s.q(1, "UPDATE items SET v = 'changed' WHERE id = 4");
  size_t after = s.q(0, "SELECT * FROM v2 ORDER BY id");
  size_t v1_before = s.q(0, "SELECT * FROM v1 ORDER BY id");
  s.q(1, "INSERT INTO items VALUES (10, 'ten', 10)");
  size_t v1_after = s.q(0, "SELECT * FROM v1 ORDER BY id");
  s.q(0, "SELECT * FROM v2 ORDER BY id");
  s.q(1, "DELETE FROM items WHERE id = 6");
  s.q(0, "SELECT * FROM v2 ORDER BY id");
  s.changed(before, after);
  s.changed(v1_before, v1_after);
  expect_same(s);
}

// ---------------------------------------------------------------- random scripts
// A step is invalid if it could wait for a lock another session holds: while a
// session has a transaction open, nobody else writes or runs DDL, and after DDL
// in it nobody else does anything.
struct LockState {
  std::vector<bool> open;
  std::vector<bool> ddl;
  explicit LockState(size_t sessions) : open(sessions), ddl(sessions) {}

  bool allowed(const Step& st) const {
    for (size_t o = 0; o < open.size(); o++) {
      if (o == size_t(st.session) || !open[o]) continue;
      if (ddl[o] || st.kind == Kind::Write || st.kind == Kind::Ddl || st.kind == Kind::Begin) return false;
    }
    return true;
  }
  void apply(const Step& st) {
    size_t s = size_t(st.session);
    if (st.kind == Kind::Begin) open[s] = true;
    if (st.kind == Kind::End) open[s] = ddl[s] = false;
    if (st.kind == Kind::Ddl && open[s]) ddl[s] = true;
  }
};

bool lock_safe(const Script& s) {
  LockState ls(s.sessions.size());
  for (const auto& st : s.steps) {
    if (!ls.allowed(st)) return false;
    ls.apply(st);
  }
  return true;
}

constexpr int kSuperSession = 2;   // sessions 0 and 1 are app, 2 the superuser

struct Choice {
  const char* sql;
  Proto proto = Proto::Simple;
  std::vector<std::string> params = {};
};

// Reads repeat textually (a small fixed set) so that the cache is hit.
const std::vector<Choice> kReads = {
    {"SELECT * FROM t ORDER BY id"},
    {"SELECT * FROM items ORDER BY id"},
    {"SELECT id, v FROM v_items ORDER BY id"},
    {"SELECT * FROM v1 ORDER BY id"},
    {"SELECT * FROM v2 ORDER BY id"},
    {"SELECT n FROM vseq"},
    {"SELECT last_value, is_called FROM s2"},
    {"SELECT last_value FROM ser_t_id_seq"},
    {"SELECT id, v FROM ser_t ORDER BY id"},
    {"SELECT count(*), sum(k) FROM p"},
    {"SELECT id, k, v FROM p1 ORDER BY id"},
    {"SELECT count(*) FROM p2"},
    {"SELECT v FROM tenant_rows ORDER BY v"},
    {"SELECT owner, v FROM owned_rows ORDER BY owner, v"},
    {"SELECT v FROM members_only"},
    {"SELECT pg_listening_channels()"},
    {"SELECT v FROM items WHERE id = $1", Proto::Extended, {"2"}},
    {"SELECT v FROM items WHERE id = $1", Proto::Extended, {"3"}},
    {"SELECT * FROM t WHERE id <= $1 ORDER BY id", Proto::Extended, {"2"}},
    {"SELECT count(*) FROM p WHERE k < $1", Proto::Extended, {"100"}},
    {"SELECT v FROM tenant_rows ORDER BY v", Proto::Extended},
    {"SELECT * FROM v2 ORDER BY id", Proto::Extended},
    {"SELECT n FROM vseq", Proto::Extended},
};

// SET/RESET with constants: followed by the proxy, the session keeps looking up.
const std::vector<Choice> kSets = {
    {"SET search_path = a, public"},
    {"SET search_path = b, public"},
    {"SET search_path TO DEFAULT"},
    {"RESET search_path"},
    {"SET search_path = public"},
    {"SET app.tenant = '1'"},
    {"SET app.tenant = '2'"},
    {"SET app.tenant TO DEFAULT"},
    {"RESET app.tenant"},
    {"SET ROLE cdiff_r1"},
    {"SET ROLE cdiff_r2"},
    {"RESET ROLE"},
    {"SET ROLE NONE"},
    {"RESET ALL"},
    {"DISCARD ALL"},
    {"SET SESSION AUTHORIZATION app"},
    {"RESET SESSION AUTHORIZATION"},
    {"LISTEN cdiff_ch"},
    {"UNLISTEN *"},
};
// State changes the proxy cannot (or need not) follow; most make a session stop
// looking up, and the function calls drop the database's entries.
const std::vector<Choice> kOpaqueSets = {
    {"; SET search_path = b, public"},
    {"/* x */ ; SET app.tenant = '2'"},
    {"SET search_path = a, public", Proto::Extended},
    {"SELECT set_config('search_path', 'b, public', false)"},
    {"SELECT set_config('app.tenant', '2', false)"},
    {"SELECT public.set_path('a, public')"},
    {"SELECT public.set_path_b()"},
    {"SELECT public.set_tenant(1)"},
    {"SELECT public.set_tenant(2)"},
    {"UPDATE pg_settings SET setting = 'a, public' WHERE name = 'search_path'"},
};
// Those of them that transaction mode keeps for the client (followed or pinned).
const std::vector<Choice> kOpaqueSetsKept = {
    {"; SET search_path = b, public"},
    {"/* x */ ; SET app.tenant = '2'"},
    {"SELECT set_config('search_path', 'b, public', false)"},
    {"SELECT set_config('app.tenant', '2', false)"},
};
const std::vector<Choice> kSuperSets = {
    {"SET SESSION AUTHORIZATION app"},
    {"SET SESSION AUTHORIZATION cdiff_r1"},
    {"SET SESSION AUTHORIZATION DEFAULT"},
    {"RESET SESSION AUTHORIZATION"},
};
const std::vector<Choice> kLocalSets = {
    {"SET LOCAL search_path = b, public"},
    {"SET LOCAL app.tenant = '2'"},
    {"SET LOCAL ROLE cdiff_r1"},
    {"SELECT set_config('search_path', 'a, public', true)"},
};
const std::vector<Choice> kWrites = {
    {"INSERT INTO items (id, v, n) SELECT max(id) + 1, 'new', 4 FROM items"},
    {"UPDATE items SET v = v || '+' WHERE id = 2"},
    {"UPDATE items SET n = n + 1 WHERE id = 4"},
    {"DELETE FROM items WHERE id = (SELECT max(id) FROM items) AND id > 8"},
    {"UPDATE v_items SET v = 'via-view' || id WHERE id = 3"},
    {"UPDATE t SET v = v || '*' WHERE id = 1"},
    {"INSERT INTO p VALUES (20, 60, 'via-p')"},
    {"INSERT INTO p1 VALUES (21, 30, 'via-p1')"},
    {"INSERT INTO p2 VALUES (22, 120, 'via-p2')"},
    {"DELETE FROM p1 WHERE id = (SELECT min(id) FROM p1)"},
    {"UPDATE p SET k = k + 100 WHERE k < 100 AND id = (SELECT min(id) FROM p1)"},
    {"INSERT INTO ser_t (v) VALUES ('s')"},
    {"INSERT INTO owned_rows VALUES (current_user, 'mine')"},
    {"UPDATE tenant_rows SET v = v || '!' WHERE tenant = 1"},
    {"UPDATE items SET v = $1 WHERE id = $2", Proto::Extended, {"x", "5"}},
    {"SELECT nextval('s2')"},
    {"SELECT nextval('s1')"},
    {"SELECT setval('s2', 10)"},
};
const std::vector<Choice> kDdl = {
    {"CREATE OR REPLACE VIEW v1 AS SELECT id, v FROM items WHERE n % 2 = 1"},
    {"CREATE OR REPLACE VIEW v1 AS SELECT id, v FROM items WHERE n % 2 = 0"},
    {"/* a /* b */ c */ CREATE OR REPLACE VIEW v_items AS SELECT id, v FROM items WHERE id <= 4"},
    {"CREATE OR REPLACE VIEW v_items AS SELECT id, v FROM items WHERE id <= 5"},
    {"ALTER TABLE items ADD COLUMN IF NOT EXISTS extra int DEFAULT 7"},
    {"ALTER TABLE items DROP COLUMN IF EXISTS extra"},
    // Not ALTER ROLE/DATABASE ... SET: a pooled server connection logged in before
    // it keeps the old defaults in both pool modes, which would end nearly every
    // script within a few steps; RoleAndDatabaseDefaultsForNewSessions covers them.
};

// Generator state: locks, and the last reads (repeated often, as applications do,
// so that answers come from the cache).
struct GenState {
  LockState locks;
  std::vector<const Choice*> recent;
  // Transaction mode leaves out what it drops by design (docs/result-cache.md,
  // docs/architecture.md "Pinning"): session state made inside functions or by
  // UPDATE pg_settings (reset with the server), and SET inside a block or through
  // the extended protocol (not followed to the next server).
  bool transaction_mode = false;
};

using Generator = std::function<bool(std::mt19937_64&, int session, GenState&, Step&)>;

const Choice& pick(std::mt19937_64& rng, const std::vector<Choice>& v) { return v[rng() % v.size()]; }
Step from(const Choice& c, int session, Kind k) { return {session, c.sql, c.proto, c.params, k}; }
Step pick_step(std::mt19937_64& rng, const std::vector<Choice>& v, int session, Kind k) {
  return from(pick(rng, v), session, k);
}

// Statement kinds with weights: a dispatch table instead of an if-ladder.
struct Category {
  int weight;
  Generator make;   // false: not possible in this state
};

// Weights keep the cache busy: DDL and opaque state changes (which drop entries or
// stop a session's lookups) are rare, and reconnects give sessions a fresh start.
const std::vector<Category> kCategories = {
    {100, [](std::mt19937_64& rng, int s, GenState& g, Step& st) {
       if (!g.recent.empty() && rng() % 2) {
         st = from(*g.recent[rng() % g.recent.size()], s, Kind::Read);
         return true;
       }
       const Choice& c = pick(rng, kReads);
       g.recent.push_back(&c);
       if (g.recent.size() > 4) g.recent.erase(g.recent.begin());
       st = from(c, s, Kind::Read);
       return true;
     }},
    {24, [](std::mt19937_64& rng, int s, GenState& g, Step& st) {
       if (g.transaction_mode && g.locks.open[size_t(s)]) return false;
       st = pick_step(rng, kSets, s, Kind::Set);
       return true;
     }},
    {3, [](std::mt19937_64& rng, int s, GenState& g, Step& st) {
       if (g.transaction_mode && g.locks.open[size_t(s)]) return false;   // SET in a block: see GenState
       st = pick_step(rng, g.transaction_mode ? kOpaqueSetsKept : kOpaqueSets, s, Kind::Set);
       return true;
     }},
    {5, [](std::mt19937_64& rng, int s, GenState& g, Step& st) {
       if (s != kSuperSession || (g.transaction_mode && g.locks.open[size_t(s)])) return false;
       st = pick_step(rng, kSuperSets, s, Kind::Set);
       return true;
     }},
    {6, [](std::mt19937_64& rng, int s, GenState& g, Step& st) {
       if (!g.locks.open[size_t(s)]) return false;
       st = pick_step(rng, kLocalSets, s, Kind::Set);
       return true;
     }},
    {16, [](std::mt19937_64& rng, int s, GenState&, Step& st) {
       st = pick_step(rng, kWrites, s, Kind::Write);
       return true;
     }},
    {3, [](std::mt19937_64& rng, int s, GenState&, Step& st) {
       st = pick_step(rng, kDdl, s, Kind::Ddl);
       return true;
     }},
    {6, [](std::mt19937_64& rng, int s, GenState& g, Step& st) {
       if (g.locks.open[size_t(s)]) return false;
       static const std::vector<Choice> begins = {{"BEGIN"}, {"BEGIN ISOLATION LEVEL REPEATABLE READ"}};
       st = pick_step(rng, begins, s, Kind::Begin);
       return true;
     }},
    {10, [](std::mt19937_64& rng, int s, GenState& g, Step& st) {
       if (!g.locks.open[size_t(s)]) return false;
       static const std::vector<Choice> ends = {{"COMMIT"}, {"COMMIT"}, {"ROLLBACK"}};
       st = pick_step(rng, ends, s, Kind::End);
       return true;
     }},
    {6, [](std::mt19937_64&, int s, GenState&, Step& st) {
       st = {s, "(new connection)", Proto::Reconnect, {}, Kind::End};   // ends an open transaction too
       return true;
     }},
};

Script generate(uint64_t seed, int steps, bool transaction_mode) {
  std::mt19937_64 rng(seed);
  Script s{{app_login(), app_login(), super_login()}};
  GenState g{LockState(s.sessions.size()), {}, transaction_mode};
  int total = 0;
  for (const auto& c : kCategories) total += c.weight;
  while (int(s.steps.size()) < steps) {
    int session = int(rng() % s.sessions.size());
    int w = int(rng() % uint64_t(total));
    size_t cat = 0;
    while (w >= kCategories[cat].weight) w -= kCategories[cat++].weight;
    Step st;
    if (!kCategories[cat].make(rng, session, g, st) || !g.locks.allowed(st)) continue;
    g.locks.apply(st);
    s.steps.push_back(std::move(st));
  }
  return s;
}

uint64_t env_u64(const char* name, uint64_t dflt) {
  const char* v = getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 10) : dflt;
}

struct Verdict {
  RunResult direct, proxied;
  long at = -1;
  std::string error;
};

Verdict differential(const Script& s, const std::string& mode) {
  Verdict v;
  v.direct = run_direct(s);
  v.proxied = run_proxied(s, mode, kCache);
  v.error = v.direct.error.empty() ? v.proxied.error : v.direct.error;
  if (v.error.empty()) v.at = first_mismatch(v.direct, v.proxied);
  return v;
}

// Greedy delta debugging: cut everything after the mismatch, then try removing
// chunks (halving their size down to single steps) while the script still
// mismatches somewhere; at most max_attempts reruns.
Script shrink(Script s, long at, const std::string& mode, int max_attempts, int& attempts) {
  s.steps.resize(size_t(at) + 1);
  s.changes.clear();
  auto still_fails = [&](const Script& cand, long& where) {
    if (!lock_safe(cand)) return false;   // could wait for a lock: not run
    attempts++;
    Verdict v = differential(cand, mode);
    where = v.at;
    return v.error.empty() && v.at >= 0;
  };
  for (size_t chunk = std::max<size_t>(1, s.steps.size() / 2); attempts < max_attempts;) {
    bool removed = false;   // in this pass
    for (size_t i = 0; i < s.steps.size() && attempts < max_attempts;) {
      Script cand = s;
      size_t end = std::min(s.steps.size(), i + chunk);
      cand.steps.erase(cand.steps.begin() + long(i), cand.steps.begin() + long(end));
      long where = -1;
      if (!cand.steps.empty() && still_fails(cand, where)) {
        cand.steps.resize(size_t(where) + 1);
        s = std::move(cand);
        removed = true;
      } else {
        i += chunk;
      }
    }
    if (chunk > 1) chunk /= 2;
    else if (!removed) break;   // a whole pass of single steps removed nothing
  }
  return s;
}

TEST_P(CacheDifferential, RandomScripts) {
  const uint64_t seed = env_u64("PGSIDECAR_DIFF_SEED", 20240611);
  const int steps = int(env_u64("PGSIDECAR_DIFF_STEPS", 400));
  std::cout << "cache differential: seed " << seed << ", " << steps << " steps, pool mode " << mode()
            << " (PGSIDECAR_DIFF_SEED / PGSIDECAR_DIFF_STEPS)" << std::endl;
  Script s = generate(seed, steps, mode() == "transaction");
  ASSERT_TRUE(lock_safe(s));
  Verdict v = differential(s, mode());
  ASSERT_EQ(v.error, "");
  if (getenv("PGSIDECAR_DIFF_VERBOSE"))
    std::cout << report(mode(), s, v.direct, v.proxied, v.at < 0 ? long(s.steps.size()) - 1 : v.at);
  std::cout << "cache differential: " << v.proxied.hits << " cache hits in " << steps << " steps" << std::endl;
  EXPECT_GT(v.proxied.hits, 0) << "the script never hit the cache: it cannot catch a wrong hit";
  if (v.at < 0) {
    std::cout << "cache differential: seed " << seed << ", " << steps << " steps clean in pool mode " << mode()
              << std::endl;
    return;
  }
  std::cout << "cache differential: mismatch at step " << v.at << "; shrinking" << std::endl;
  int attempts = 0;
  Script small = shrink(s, v.at, mode(), int(env_u64("PGSIDECAR_DIFF_SHRINK", 200)), attempts);
  Verdict sv = differential(small, mode());   // the shortest script, run once more for its answers
  std::string shrunk = std::to_string(small.steps.size()) + " after shrinking";
  if (!sv.error.empty() || sv.at < 0) {   // did not reproduce this time: report the original
    shrunk = "the shrunk script did not reproduce on a rerun, so the original";
    small = s;
    sv = v;
  }
  std::cout << "cache differential: seed " << seed << ", " << v.at << " of " << steps << " steps clean in pool mode "
            << mode() << ", then a mismatch" << std::endl;
  ADD_FAILURE() << "seed " << seed << " (" << steps << " steps), " << v.at + 1 << " steps to the first mismatch, "
                << shrunk << " (" << attempts << " reruns)\n"
                << report(mode(), small, sv.direct, sv.proxied, sv.at);
}

}  // namespace

