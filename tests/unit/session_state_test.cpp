#include "proxy/session_state.h"

#include <gtest/gtest.h>

namespace {

using proxy::classify;
using proxy::StmtKind;

TEST(Classify, SetForms) {
  EXPECT_EQ(classify("SET search_path TO a, b").kind, StmtKind::Set);
  EXPECT_EQ(classify("SET search_path TO a, b").name, "search_path");
  EXPECT_EQ(classify("  set SESSION statement_timeout = 5").name, "statement_timeout");
  EXPECT_EQ(classify("/* c */ SET app.tenant = '7';").name, "app.tenant");
  EXPECT_EQ(classify("SET \"work_mem\" = '8MB'").name, "work_mem");
  EXPECT_EQ(classify("SET TIME ZONE 'UTC'").name, "timezone");
  EXPECT_EQ(classify("SET ROLE alice").name, "role");
  EXPECT_EQ(classify("SET SESSION AUTHORIZATION bob").name, "session_authorization");
}

TEST(Classify, NotSessionLevel) {
  EXPECT_EQ(classify("SET LOCAL work_mem = '1MB'").kind, StmtKind::Other);
  EXPECT_EQ(classify("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").kind, StmtKind::Other);
  EXPECT_EQ(classify("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY").kind, StmtKind::Other);
  EXPECT_EQ(classify("SELECT 'SET x = 1'").kind, StmtKind::Other);
  EXPECT_EQ(classify("SET a = 1; SELECT 1").kind, StmtKind::Other);   // multi-statement: not split
  EXPECT_EQ(classify("SET a = 'x;y'").kind, StmtKind::Set);          // ';' inside a literal
  EXPECT_EQ(classify("SET a = 1;  ").kind, StmtKind::Set);
}

TEST(Classify, ResetDiscardListen) {
  EXPECT_EQ(classify("RESET work_mem").kind, StmtKind::Reset);
  EXPECT_EQ(classify("RESET ALL").kind, StmtKind::ResetAll);
  // RESET names the setting as SET recorded it, so the pair cancels out.
  EXPECT_EQ(classify("RESET SESSION AUTHORIZATION").name, classify("SET SESSION AUTHORIZATION bob").name);
  EXPECT_EQ(classify("RESET TIME ZONE").name, classify("SET TIME ZONE 'UTC'").name);
  EXPECT_EQ(classify("discard all").kind, StmtKind::DiscardAll);
  EXPECT_EQ(classify("DISCARD PLANS").kind, StmtKind::Other);
  EXPECT_EQ(classify("LISTEN chan").kind, StmtKind::Listen);
  EXPECT_EQ(classify("-- comment\nlisten chan").kind, StmtKind::Listen);
}

TEST(Classify, SessionObjects) {
  EXPECT_EQ(classify("PREPARE q AS SELECT 1").kind, StmtKind::SessionObject);
  EXPECT_EQ(classify("declare c cursor with hold for select 1").kind, StmtKind::SessionObject);
  EXPECT_EQ(classify("CREATE TEMP TABLE t (a int)").kind, StmtKind::SessionObject);
  EXPECT_EQ(classify("create local temporary table t (a int)").kind, StmtKind::SessionObject);
  EXPECT_EQ(classify("CREATE TABLE t (a int)").kind, StmtKind::Other);
}

TEST(Classify, Deallocate) {
  EXPECT_EQ(classify("DEALLOCATE s1").kind, StmtKind::Deallocate);
  EXPECT_EQ(classify("DEALLOCATE s1").name, "s1");
  EXPECT_EQ(classify("deallocate prepare \"P_0\"").name, "P_0");   // quoted: case kept
  EXPECT_EQ(classify("DEALLOCATE P_0").name, "p_0");                // unquoted: folded, as PostgreSQL does
  EXPECT_EQ(classify("DEALLOCATE ALL").kind, StmtKind::DeallocateAll);
  EXPECT_EQ(classify("DEALLOCATE PREPARE ALL").kind, StmtKind::DeallocateAll);
  EXPECT_EQ(classify("DEALLOCATE s1; SELECT 1").kind, StmtKind::Other);
}

TEST(ChangesSchema, DdlAnywhereInTheString) {
  using proxy::changes_schema;
  EXPECT_TRUE(changes_schema("ALTER TABLE t ADD COLUMN c int"));
  EXPECT_TRUE(changes_schema("  create index on t (a)"));
  EXPECT_TRUE(changes_schema("BEGIN; DROP TABLE t; COMMIT"));
  EXPECT_TRUE(changes_schema("/* x; */ SELECT 1; -- ;\n alter table t rename to u"));
  EXPECT_FALSE(changes_schema("SELECT 'alter; drop'"));
  EXPECT_FALSE(changes_schema("SELECT $$; DROP TABLE t$$"));
  EXPECT_FALSE(changes_schema("INSERT INTO create_log VALUES (1)"));
  EXPECT_FALSE(changes_schema("-- drop table t\nSELECT 1"));
}

TEST(SettingList, DiffReplaysAndResets) {
  proxy::SettingList client, server;
  client.apply(classify("SET search_path TO a"), "SET search_path TO a");
  server.apply(classify("SET work_mem = '8MB'"), "SET work_mem = '8MB'");
  std::string sql;
  client.diff(server, sql);
  EXPECT_EQ(sql, "RESET work_mem;SET search_path TO a;");
  sql.clear();
  server = client;
  client.diff(server, sql);
  EXPECT_EQ(sql, "");
  client.apply(classify("SET search_path TO b"), "SET search_path TO b");   // replaces, keeps one entry
  client.diff(server, sql);
  EXPECT_EQ(sql, "SET search_path TO b;");
}

TEST(SettingList, ResetAllKeepsRole) {
  proxy::SettingList l;
  l.apply(classify("SET ROLE alice"), "SET ROLE alice");
  l.apply(classify("SET work_mem = 1"), "SET work_mem = 1");
  l.apply(classify("RESET ALL"), "RESET ALL");
  proxy::SettingList only_role;
  only_role.apply(classify("SET ROLE alice"), "SET ROLE alice");
  EXPECT_TRUE(l == only_role);
  l.apply(classify("DISCARD ALL"), "DISCARD ALL");
  EXPECT_TRUE(l.empty());
}

}  // namespace
