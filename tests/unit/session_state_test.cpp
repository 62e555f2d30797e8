// Session effects from the one SQL classifier (cache/classify.h) and the
// SettingList that replays them (proxy/session_state.h).
#include "proxy/session_state.h"

#include <gtest/gtest.h>

#include "cache/statement_cache.h"
#include "proxy/tracked_params.h"

namespace {

using cache::SessionEffect;
using Kind = SessionEffect::Kind;

std::vector<SessionEffect> effects(std::string_view sql) { return cache::classify_statement(sql).effects; }

// The only effect of sql (fails the test if there is not exactly one).
SessionEffect one(std::string_view sql) {
  std::vector<SessionEffect> e = effects(sql);
  EXPECT_EQ(e.size(), 1u) << sql;
  return e.empty() ? SessionEffect{} : e[0];
}

TEST(SessionEffects, SetFormsAndGeneratedSql) {
  EXPECT_EQ(one("SET search_path TO a, b").kind, Kind::Set);
  EXPECT_EQ(one("SET search_path TO a, b").sql, "SET \"search_path\" TO 'a', 'b'");
  EXPECT_EQ(one("  set SESSION statement_timeout = 5").sql, "SET \"statement_timeout\" TO 5");
  EXPECT_EQ(one("/* c */ SET app.tenant = '7';").name, "app.tenant");
  EXPECT_EQ(one("SET \"Work_Mem\" = '8MB'").name, "work_mem");   // setting names ignore case
  EXPECT_EQ(one("SET TIME ZONE 'UTC'").name, "timezone");
  EXPECT_EQ(one("SET NAMES 'LATIN1'").name, "client_encoding");
  EXPECT_EQ(one("SET SCHEMA 'x'").name, "search_path");
  EXPECT_EQ(one("SET XML OPTION DOCUMENT").name, "xmloption");
  EXPECT_EQ(one("SET ROLE alice").sql, "SET \"role\" TO 'alice'");
  EXPECT_EQ(one("SET SESSION AUTHORIZATION bob").name, "session_authorization");
  EXPECT_EQ(one("SET search_path = \"My Schema\"").sql, "SET \"search_path\" TO 'My Schema'");
  EXPECT_EQ(one("SET x.y = 'it''s'").sql, "SET \"x.y\" TO 'it''s'");
  EXPECT_EQ(one("SET x.y = 0").sql, "SET \"x.y\" TO 0");
  EXPECT_EQ(one("SET x.y = -1.5").sql, "SET \"x.y\" TO -1.5");
  // Negative integers (the tree leaves their value out) are read from the text.
  EXPECT_EQ(one("SET extra_float_digits = -1").sql, "SET \"extra_float_digits\" TO -1");
  EXPECT_EQ(one("SET extra_float_digits TO - 3 ;").sql, "SET \"extra_float_digits\" TO -3");
  EXPECT_EQ(one("SELECT 1; SET lock_timeout = -0").sql, "SET \"lock_timeout\" TO -0");
  EXPECT_EQ(one("SET extra_float_digits = +2").sql, "SET \"extra_float_digits\" TO 2");
  EXPECT_EQ(one("SET x.y = - /* c */ 1").kind, Kind::Unknown);   // not read: not guessed
  // A trailing comment is not part of the generated statement.
  EXPECT_EQ(one("SET search_path = a -- note").sql, "SET \"search_path\" TO 'a'");
  EXPECT_EQ(one("SET TIME ZONE DEFAULT").kind, Kind::Reset);
  EXPECT_EQ(one("SET work_mem FROM CURRENT").kind, Kind::Unknown);
  EXPECT_EQ(one("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE").sql,
            "SET \"default_transaction_isolation\" TO 'serializable'");
  EXPECT_EQ(effects("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY, DEFERRABLE").size(), 2u);
}

TEST(SessionEffects, TransactionScopedChangeNothing) {
  EXPECT_TRUE(effects("SET LOCAL work_mem = '1MB'").empty());
  EXPECT_TRUE(effects("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").empty());
  EXPECT_TRUE(effects("SET CONSTRAINTS ALL DEFERRED").empty());
  EXPECT_TRUE(effects("SELECT 'SET x = 1'").empty());
  EXPECT_TRUE(effects("DISCARD PLANS").empty());
  EXPECT_TRUE(effects("DECLARE c CURSOR FOR SELECT 1").empty());
  EXPECT_TRUE(effects("SELECT pg_advisory_xact_lock(1)").empty());
}

TEST(SessionEffects, EveryStatementOfAQuery) {
  std::vector<SessionEffect> e = effects("SELECT 1; SET search_path = a; ;SET work_mem = '8MB'");
  ASSERT_EQ(e.size(), 2u);
  EXPECT_EQ(e[0].name, "search_path");
  EXPECT_EQ(e[1].name, "work_mem");
  EXPECT_TRUE(cache::classify_statement("BEGIN; SET a.b = 1; COMMIT").transaction_control);
}

TEST(SessionEffects, ResetDiscardListenDeallocate) {
  EXPECT_EQ(one("RESET work_mem").kind, Kind::Reset);
  EXPECT_EQ(one("RESET ALL").kind, Kind::ResetAll);
  EXPECT_EQ(one("RESET SESSION AUTHORIZATION").name, one("SET SESSION AUTHORIZATION bob").name);
  EXPECT_EQ(one("RESET TIME ZONE").name, one("SET TIME ZONE 'UTC'").name);
  EXPECT_EQ(one("discard all").kind, Kind::DiscardAll);
  EXPECT_EQ(one("-- comment\nlisten chan").kind, Kind::Listen);
  EXPECT_EQ(one("deallocate prepare \"P_0\"").name, "P_0");   // quoted: case kept
  EXPECT_EQ(one("DEALLOCATE P_0").name, "p_0");                // unquoted: folded, as PostgreSQL does
  EXPECT_EQ(one("DEALLOCATE ALL").kind, Kind::DeallocateAll);
}

TEST(SessionEffects, StateThatCannotFollowTheClient) {
  for (const char* sql : {"PREPARE q AS SELECT 1", "declare c cursor with hold for select 1", "CREATE TEMP TABLE t (a int)",
                          "create local temporary table t (a int)", "CREATE TABLE pg_temp.t (a int)",
                          "SELECT * INTO TEMP t FROM x", "SELECT pg_advisory_lock(1)",
                          "SELECT 1 FROM t WHERE pg_try_advisory_lock(id)"})
    EXPECT_EQ(one(sql).kind, Kind::SessionObject) << sql;
  for (const char* sql : {"SELECT set_config('search_path', 'x', false)", "DO $$ BEGIN PERFORM 1; END $$", "CALL p()",
                          "LOAD 'auto_explain'"})
    EXPECT_EQ(one(sql).kind, Kind::Unknown) << sql;
  EXPECT_EQ(one("SELEC 1").kind, Kind::Unparsed);
  static constexpr char kWithNul[] = "SELECT 1\0; SET a.b = 1";
  EXPECT_EQ(one(std::string_view(kWithNul, sizeof kWithNul - 1)).kind, Kind::Unknown);   // a NUL: not looked at
  EXPECT_TRUE(effects("CREATE TABLE t (a int)").empty());
  // Temp objects named by a qualified name list: functions, domains, types.
  for (const char* sql : {"CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
                          "CREATE DOMAIN pg_temp.int4 AS pg_catalog.text", "SELECT pg_temp.f()",
                          "CREATE STATISTICS pg_temp.s ON a, b FROM t"})
    EXPECT_EQ(one(sql).kind, Kind::SessionObject) << sql;
}

TEST(SessionEffects, DeepTreesAreNotParsed) {
  std::string deep = "SELECT 1";
  for (int i = 0; i < 100000; i++) deep += "*1";
  EXPECT_EQ(one(deep).kind, Kind::Unknown);
  // An identifier ending in e before a quote does not open an escape string:
  // xe'\' is the identifier xe and the string '\', so the chain after it counts.
  std::string hidden = "SELECT xe'\\' + 1";
  for (int i = 0; i < 5000; i++) hidden += "*1";
  hidden += " + 'a'";
  size_t depth = 0;
  cache::shape_of(hidden, depth);
  EXPECT_GT(depth, cache::kMaxParseDepth);
  EXPECT_EQ(one(hidden).kind, Kind::Unknown);
  std::string wide = "INSERT INTO t VALUES ($1)";
  for (int i = 2; i <= 50000; i++) wide += ",($" + std::to_string(i) + ")";
  EXPECT_TRUE(effects(wide).empty());   // a long flat list is parsed
}

TEST(Shape, LiteralsMaskedOnlyWhereSafe) {
  size_t depth = 0;
  EXPECT_EQ(cache::shape_of("SELECT a FROM t WHERE id = 42 AND s = 'x''y'", depth),
            cache::shape_of("SELECT a FROM t WHERE id = 7 AND s = 'z'", depth));
  EXPECT_NE(cache::shape_of("SELECT t1 FROM t", depth), cache::shape_of("SELECT t2 FROM t", depth));
  EXPECT_EQ(cache::shape_of("SELECT E'a\\'b'", depth), "");     // escape strings: keyed on the text itself
  EXPECT_EQ(cache::shape_of("SELECT $$x$$", depth), "");
  EXPECT_NE(cache::shape_of("SELECT '1' /* x */", depth), "");
  cache::shape_of("SELECT f(g(h(1)))", depth);
  EXPECT_GE(depth, 4u);
}

TEST(StatementCache, SetValuesComeFromTheText) {
  cache::StatementCache sc;
  EXPECT_EQ(sc.classify_now("SET search_path = 'a'")->effects.at(0).sql, "SET \"search_path\" TO 'a'");
  EXPECT_EQ(sc.classify_now("SET search_path = 'b'")->effects.at(0).sql, "SET \"search_path\" TO 'b'");
  EXPECT_EQ(sc.classify_now("SELECT 1")->statements, 1);
  EXPECT_EQ(sc.classify_now("SELECT 2"), sc.classify_now("SELECT 3"));   // one entry per shape
}

TEST(SettingList, DiffReplaysAndResets) {
  proxy::SettingList client, server;
  client.apply(one("SET search_path TO a"));
  server.apply(one("SET work_mem = '8MB'"));
  std::string sql;
  client.diff(server, sql);
  EXPECT_EQ(sql, "RESET \"work_mem\";SET \"search_path\" TO 'a';");
  sql.clear();
  server = client;
  client.diff(server, sql);
  EXPECT_EQ(sql, "");
  client.apply(one("SET search_path TO b"));   // replaces, keeps one entry
  client.diff(server, sql);
  EXPECT_EQ(sql, "SET \"search_path\" TO 'b';");
}

// A setting the last client changed before becoming another role is reset as the
// login; the client's own role comes back last.
TEST(SettingList, ResetsRunAsTheLoginAndTheRoleComesLast) {
  proxy::SettingList server, fresh, client;
  server.apply(one("SET lo_compat_privileges = true"));
  server.apply(one("SET SESSION AUTHORIZATION regress_u"));
  std::string sql;
  fresh.diff(server, sql);
  EXPECT_EQ(sql, "RESET SESSION AUTHORIZATION;RESET ROLE;RESET \"lo_compat_privileges\";");
  client.apply(one("SET work_mem = '8MB'"));
  client.apply(one("SET SESSION AUTHORIZATION bob"));
  client.apply(one("SET ROLE alice"));
  sql.clear();
  client.diff(server, sql);
  EXPECT_EQ(sql,
            "RESET SESSION AUTHORIZATION;RESET ROLE;RESET \"lo_compat_privileges\";SET \"work_mem\" TO '8MB';"
            "SET \"session_authorization\" TO 'bob';SET \"role\" TO 'alice';");
  sql.clear();
  client.diff(proxy::SettingList{}, sql);   // a fresh server: nothing to reset
  EXPECT_EQ(sql, "SET \"work_mem\" TO '8MB';SET \"session_authorization\" TO 'bob';SET \"role\" TO 'alice';");
  sql.clear();
  proxy::SettingList same_role = client;
  same_role.apply(one("SET work_mem = '16MB'"));
  client.diff(same_role, sql);   // the role in force may not change work_mem back: as the login
  EXPECT_EQ(sql, "RESET SESSION AUTHORIZATION;RESET ROLE;SET \"work_mem\" TO '8MB';"
                 "SET \"session_authorization\" TO 'bob';SET \"role\" TO 'alice';");
  sql.clear();
  client.diff(client, sql);
  EXPECT_EQ(sql, "");
  // RESET SESSION AUTHORIZATION drops the role too: a role both sides share is set
  // again (found by the cache differential tester, seed 101).
  proxy::SettingList authorized_with_role, role_only;
  authorized_with_role.apply(one("SET SESSION AUTHORIZATION app"));
  authorized_with_role.apply(one("SET ROLE r1"));
  role_only.apply(one("SET ROLE r1"));
  sql.clear();
  role_only.diff(authorized_with_role, sql);
  EXPECT_EQ(sql, "RESET SESSION AUTHORIZATION;RESET ROLE;SET \"role\" TO 'r1';");
}

TEST(SettingList, RoleFollowsPostgreSQL) {
  proxy::SettingList l;
  l.apply(one("SET ROLE alice"));
  l.apply(one("SET work_mem = 1"));
  l.apply(one("RESET ALL"));
  proxy::SettingList only_role;
  only_role.apply(one("SET ROLE alice"));
  EXPECT_TRUE(l == only_role);
  l.apply(one("RESET SESSION AUTHORIZATION"));   // resets the role too
  EXPECT_TRUE(l.empty());
  l.apply(one("SET ROLE alice"));
  l.apply(one("DISCARD ALL"));
  EXPECT_TRUE(l.empty());
}

}  // namespace

// The tracked parameters' values, packed into one string: values grow, shrink and
// empty in any order without disturbing their neighbours, and each is a C string.
TEST(TrackedValues, SetKeepsTheOtherValues) {
  proxy::TrackedValues v;
  for (size_t i = 0; i < v.size(); i++) EXPECT_EQ(v[i], "") << i;
  std::array<std::string, proxy::TrackedValues::size()> want;
  const std::string_view values[] = {"pgbench", "UTF8", "", "ISO, MDY", "a much longer value than the others", "x"};
  for (int round = 0; round < 3; round++) {
    for (size_t i = 0; i < v.size(); i++) {
      size_t at = (i * 5 + size_t(round)) % v.size();
      std::string_view value = values[(i + size_t(round)) % std::size(values)];
      v.set(at, value);
      want[at] = value;
      for (size_t j = 0; j < v.size(); j++) {
        EXPECT_EQ(v[j], want[j]) << "round " << round << " set " << at << ", value " << j;
        EXPECT_STREQ(v.c_str(j), want[j].c_str());
      }
    }
  }
  proxy::TrackedValues copy = v;
  copy.set(0, "other");
  EXPECT_EQ(v[0], want[0]);
  EXPECT_EQ(copy[0], "other");
  EXPECT_EQ(copy[5], want[5]);
  // A value taken from a copy that shares the block (as RESET does from reset_to_).
  proxy::TrackedValues shared = v;
  v.set(4, shared[1]);
  EXPECT_EQ(v[4], want[1]);
  EXPECT_EQ(shared[4], want[4]);
  v.set(1, v[2]);   // and from itself
  EXPECT_EQ(v[1], want[2]);
  EXPECT_EQ(shared[1], want[1]);
}
