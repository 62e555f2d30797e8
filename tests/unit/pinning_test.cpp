// Pinning (proxy/pinning.h): which kinds each statement pins for, which
// statements may remove state, and how the server's answer unpins.
#include "proxy/pinning.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

using cache::classify_statement;

namespace {

uint8_t pins(const std::string& sql) { return proxy::pins_in(classify_statement(sql, false)); }
bool may_clear(const std::string& sql) { return classify_statement(sql, false).may_clear_state; }

}  // namespace

TEST(Pinning, KindsFromTheParseTree) {
  EXPECT_EQ(pins("CREATE TEMP TABLE t(i int)"), conf::kPinTemp);
  EXPECT_EQ(pins("CREATE TABLE pg_temp.t(i int)"), conf::kPinTemp);
  EXPECT_EQ(pins("SELECT 1 INTO TEMP t2"), conf::kPinTemp);
  EXPECT_EQ(pins("PREPARE p AS SELECT 1"), conf::kPinPrepare);
  EXPECT_EQ(pins("DECLARE c CURSOR WITH HOLD FOR SELECT 1"), conf::kPinCursor);
  EXPECT_EQ(pins("DECLARE c CURSOR FOR SELECT 1"), 0);   // ends with its transaction
  EXPECT_EQ(pins("LISTEN ch"), conf::kPinListen);
  EXPECT_EQ(pins("SELECT pg_advisory_lock(1)"), conf::kPinAdvisory);
  EXPECT_EQ(pins("SELECT x FROM t WHERE pg_try_advisory_lock_shared(x)"), conf::kPinAdvisory);   // inside a statement
  EXPECT_EQ(pins("SELECT pg_advisory_xact_lock(1)"), 0);
  EXPECT_EQ(pins("SELECT set_config('app.tenant', 'a', false)"), conf::kPinSet);
  EXPECT_EQ(pins("SELECT set_config('app.tenant', 'a', true)"), 0);   // ends with the transaction
  EXPECT_EQ(pins("SELECT set_config('app.tenant', 'a', $1)"), conf::kPinSet);
  EXPECT_EQ(pins("SET search_path = DEFAULT"), 0);       // followed (replayed)
  EXPECT_EQ(pins("SET search_path = a, b"), 0);
  EXPECT_EQ(pins("SET LOCAL work_mem = '1MB'"), 0);
  EXPECT_EQ(pins("DO $$ BEGIN PERFORM 1; END $$"), conf::kPinOther);
  EXPECT_EQ(pins("CALL p()"), conf::kPinOther);
  EXPECT_EQ(pins("SELECT 1; LISTEN a; CREATE TEMP TABLE t(i int)"), conf::kPinListen | conf::kPinTemp);
  EXPECT_EQ(pins("SELECT 1"), 0);
  EXPECT_EQ(pins("NOTIFY ch"), 0);
}

TEST(Pinning, StatementsThatMayRemoveState) {
  for (const char* sql : {"DISCARD ALL", "DISCARD TEMP", "DROP TABLE t", "DEALLOCATE p", "DEALLOCATE ALL", "CLOSE c",
                          "CLOSE ALL", "UNLISTEN *", "UNLISTEN ch", "RESET ALL", "SELECT pg_advisory_unlock(1)",
                          "SELECT pg_advisory_unlock_all()", "SELECT pg_advisory_unlock_shared(1)"})
    EXPECT_TRUE(may_clear(sql)) << sql;
  for (const char* sql : {"SELECT 1", "RESET search_path", "CREATE TABLE t(i int)", "LISTEN ch"})
    EXPECT_FALSE(may_clear(sql)) << sql;
}

TEST(Pinning, ServerAnswerUnpinsWhatIsGone) {
  const uint8_t all = conf::kPinAll;
  auto none_followed = [](std::string_view) { return false; };
  auto all_followed = [](std::string_view) { return true; };
  std::vector<std::string> row = {"0", "0", "0", "0", "0", ""};
  // Every count 0, no setting: all but Set go (Set goes with RESET ALL / DISCARD ALL).
  EXPECT_EQ(proxy::kinds_left(all, row.data(), row.size(), none_followed), conf::kPinSet);
  row = {"2", "0", "1", "0", "0", ""};
  EXPECT_EQ(proxy::kinds_left(all, row.data(), row.size(), none_followed),
            conf::kPinTemp | conf::kPinCursor | conf::kPinSet | conf::kPinOther);
  // Other stays while a setting pgsidecar does not follow is set.
  row = {"0", "0", "0", "0", "0", "search_path,work_mem"};
  EXPECT_EQ(proxy::kinds_left(conf::kPinOther, row.data(), row.size(), none_followed), conf::kPinOther);
  EXPECT_EQ(proxy::kinds_left(conf::kPinOther, row.data(), row.size(), all_followed), 0);
  // A row that is not the one asked for unpins nothing.
  row = {"0"};
  EXPECT_EQ(proxy::kinds_left(all, row.data(), row.size(), all_followed), all);
}

TEST(Pinning, NamesAsPinOnSpellsThem) {
  EXPECT_EQ(proxy::pin_names(0), "");
  EXPECT_EQ(proxy::pin_names(conf::kPinTemp | conf::kPinListen), "listen,temp");
  EXPECT_EQ(proxy::pin_names(conf::kPinAll), "advisory,cursor,listen,other,prepare,set,temp");
  EXPECT_EQ(proxy::pin_what(classify_statement("SELECT 1; LISTEN a", false), conf::kPinListen), "LISTEN");
}
