// Statement classification for the result cache: kinds, relations, cacheability, hints.
#include "cache/classify.h"
#include "cache/statement_cache.h"

#include <gtest/gtest.h>
#include <pthread.h>

#include <chrono>
#include <iostream>

using cache::classify_statement;
using cache::Classification;
using cache::parse_ttl;
using Kind = Classification::Kind;
using Names = std::vector<std::string>;

namespace {

struct Case {
  const char* sql;
  Kind kind;
  const char* reason;   // "" = cacheable
  Names reads;
  Names writes;
};

void check(const std::vector<Case>& cases) {
  for (const Case& t : cases) {
    SCOPED_TRACE(t.sql);
    Classification c = classify_statement(t.sql);
    EXPECT_EQ(c.kind, t.kind);
    EXPECT_EQ(c.not_cacheable_reason, t.reason);
    EXPECT_EQ(c.cacheable, std::string_view(t.reason).empty());
    EXPECT_EQ(c.reads, t.reads);
    EXPECT_EQ(c.writes, t.writes);
  }
}

TEST(ClassifyRead, SelectsCollectEveryRelationButCtes) {
  check({
      {"SELECT v FROM hot WHERE id = $1", Kind::Read, "", {"hot"}, {}},
      {"SELECT v FROM public.hot", Kind::Read, "", {"hot"}, {}},
      {"SELECT * FROM \"Hot\", hot", Kind::Read, "", {"Hot", "hot"}, {}},
      {"SELECT 1", Kind::Read, "", {}, {}},
      {"VALUES (1), (2)", Kind::Read, "", {}, {}},
      {"TABLE t", Kind::Read, "", {"t"}, {}},
      {"SELECT * FROM a JOIN b USING (id) LEFT JOIN c ON c.id = a.id", Kind::Read, "", {"a", "b", "c"}, {}},
      {"SELECT * FROM a WHERE id IN (SELECT id FROM b WHERE EXISTS (SELECT 1 FROM c))", Kind::Read, "",
       {"a", "b", "c"}, {}},
      {"SELECT (SELECT max(x) FROM s) FROM a, LATERAL (SELECT * FROM b) q", Kind::Read, "", {"a", "b", "s"}, {}},
      {"SELECT 1 FROM a UNION SELECT 2 FROM b", Kind::Read, "", {"a", "b"}, {}},
      {"WITH x AS (SELECT * FROM t) SELECT * FROM x JOIN u ON true", Kind::Read, "", {"t", "u"}, {}},
      // Only unqualified names in the WITH's scope are CTEs.
      {"WITH x AS (SELECT 1) SELECT * FROM x, public.x", Kind::Read, "", {"x"}, {}},
      {"SELECT * FROM (WITH x AS (SELECT 1) SELECT * FROM x) s, x", Kind::Read, "", {"x"}, {}},
      {"WITH t AS (SELECT * FROM t) SELECT * FROM t", Kind::Read, "", {"t"}, {}},   // the CTE reads the table
      {"WITH a AS (SELECT 1), b AS (SELECT * FROM a) SELECT * FROM b", Kind::Read, "", {}, {}},
      {"WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT * FROM r", Kind::Read,
       "", {}, {}},
      {"SHOW work_mem", Kind::Read, "not a SELECT", {}, {}},
      {"EXPLAIN SELECT * FROM t", Kind::Read, "not a SELECT", {"t"}, {}},
      {"EXPLAIN DELETE FROM t", Kind::Read, "not a SELECT", {"t"}, {}},   // does not run
      {"EXPLAIN (ANALYZE false) UPDATE t SET x = 1", Kind::Read, "not a SELECT", {"t"}, {}},
      {"EXPLAIN ANALYZE SELECT * FROM t", Kind::Read, "not a SELECT", {"t"}, {}},
      {"COPY t TO STDOUT", Kind::Read, "not a SELECT", {"t"}, {}},
      {"COPY (SELECT * FROM t) TO STDOUT", Kind::Read, "not a SELECT", {"t"}, {}},
  });
}

TEST(ClassifyWrite, TargetsAreWritesAndSourcesReads) {
  check({
      {"INSERT INTO t (a) VALUES ($1)", Kind::Write, "not a SELECT", {}, {"t"}},
      {"INSERT INTO t SELECT * FROM s", Kind::Write, "not a SELECT", {"s"}, {"t"}},
      {"INSERT INTO public.t VALUES (1) ON CONFLICT (id) DO UPDATE SET v = excluded.v", Kind::Write,
       "not a SELECT", {}, {"t"}},
      {"UPDATE a SET x = b.y FROM b WHERE a.id = b.id", Kind::Write, "not a SELECT", {"b"}, {"a"}},
      {"DELETE FROM a USING b WHERE a.id = b.id", Kind::Write, "not a SELECT", {"b"}, {"a"}},
      {"MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE WHEN NOT MATCHED THEN INSERT VALUES (s.id)",
       Kind::Write, "not a SELECT", {"s"}, {"t"}},
      {"TRUNCATE a, public.b", Kind::Write, "not a SELECT", {}, {"a", "b"}},
      {"COPY t FROM STDIN", Kind::Write, "not a SELECT", {}, {"t"}},
      {"COPY (DELETE FROM t RETURNING *) TO STDOUT", Kind::Write, "not a SELECT", {}, {"t"}},
      {"REFRESH MATERIALIZED VIEW mv", Kind::Write, "not a SELECT", {}, {"mv"}},
      {"EXPLAIN ANALYZE DELETE FROM t", Kind::Write, "not a SELECT", {}, {"t"}},
      {"EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET x = 1", Kind::Write, "not a SELECT", {}, {"t"}},
      // A number counts as on: texts share the classification of their shape, where every number is 0.
      {"EXPLAIN (ANALYZE 0) UPDATE t SET x = 1", Kind::Write, "not a SELECT", {}, {"t"}},
      {"EXPLAIN (ANALYZE 1) UPDATE t SET x = 1", Kind::Write, "not a SELECT", {}, {"t"}},
      {"WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", Kind::Write, "writes in a CTE", {}, {"t"}},
      {"WITH n AS (INSERT INTO log VALUES (1) RETURNING id) UPDATE t SET x = n.id FROM n", Kind::Write,
       "not a SELECT", {}, {"log", "t"}},
      {"UPDATE a SET x = 1; SELECT * FROM b", Kind::Write, "several statements", {"b"}, {"a"}},
  });
}

TEST(ClassifyWrite, DoCallExecuteMayWriteAnything) {
  for (const char* sql : {"DO $$ BEGIN PERFORM 1; END $$", "CALL p(1)", "EXECUTE s(1)"}) {
    SCOPED_TRACE(sql);
    Classification c = classify_statement(sql);
    EXPECT_EQ(c.kind, Kind::Write);
    EXPECT_TRUE(c.writes_unknown);
    EXPECT_FALSE(c.cacheable);
  }
  EXPECT_FALSE(classify_statement("DELETE FROM t").writes_unknown);
  Classification both = classify_statement("SELECT 1; CALL p()");
  EXPECT_EQ(both.kind, Kind::Write);
  EXPECT_TRUE(both.writes_unknown);
}

TEST(ClassifyDdl, SchemaAndPrivilegeChanges) {
  for (const char* sql :
       {"CREATE TABLE t (a int)", "CREATE TEMP TABLE q (a int)", "ALTER TABLE t ADD COLUMN b int", "DROP TABLE t",
        "ALTER TABLE t RENAME TO u", "CREATE INDEX ON t (a)", "CREATE VIEW v AS SELECT * FROM t",
        "CREATE TABLE c AS SELECT * FROM t", "SELECT * INTO c FROM t", "GRANT SELECT ON t TO r",
        "REVOKE SELECT ON t FROM r", "GRANT r TO u", "CREATE POLICY p ON t USING (true)",
        "ALTER POLICY p ON t USING (false)", "COMMENT ON TABLE t IS 'x'", "CREATE FUNCTION f() RETURNS int AS 'SELECT 1' LANGUAGE sql",
        "CREATE TYPE ty AS (a int)", "ALTER TABLE t OWNER TO r", "CREATE MATERIALIZED VIEW mv AS SELECT 1",
        "CREATE RULE r AS ON INSERT TO t DO INSTEAD NOTHING", "SELECT 1; DROP TABLE t; DELETE FROM u"}) {
    SCOPED_TRACE(sql);
    Classification c = classify_statement(sql);
    EXPECT_EQ(c.kind, Kind::Ddl);
    EXPECT_FALSE(c.cacheable);
  }
  EXPECT_EQ(classify_statement("SELECT * INTO c FROM t").not_cacheable_reason, "SELECT INTO");
}

// Rows move (ctid, physical order) or a rebuilt index answers: readers of the table are stale.
TEST(ClassifyWrite, RewritesOfATableWriteIt) {
  check({
      {"VACUUM FULL t", Kind::Write, "not a SELECT", {}, {"t"}},
      {"VACUUM (FULL, ANALYZE) a, b", Kind::Write, "not a SELECT", {}, {"a", "b"}},
      {"CLUSTER t USING t_pkey", Kind::Write, "not a SELECT", {}, {"t"}},
      {"REINDEX TABLE t", Kind::Write, "not a SELECT", {}, {"t"}},
  });
  EXPECT_FALSE(classify_statement("VACUUM FULL t").writes_unknown);
  for (const char* sql : {"VACUUM FULL", "CLUSTER"}) {
    SCOPED_TRACE(sql);
    EXPECT_TRUE(classify_statement(sql).writes_unknown);
  }
  EXPECT_TRUE(classify_statement("VACUUM (FULL false) t").writes.empty());
}

TEST(ClassifyOther, SessionAndMaintenance) {
  for (const char* sql : {"BEGIN", "COMMIT", "SET search_path = a", "RESET ALL", "LISTEN ch", "NOTIFY ch, 'x'",
                          "VACUUM t", "ANALYZE t", "LOCK TABLE t", "PREPARE p AS DELETE FROM t", "DEALLOCATE p",
                          "DISCARD ALL", "CHECKPOINT", "REINDEX DATABASE d", "DECLARE c CURSOR FOR SELECT 1",
                          "FETCH 10 FROM c", "", "  /* only a comment */ ", "-- nothing"}) {
    SCOPED_TRACE(sql);
    Classification c = classify_statement(sql);
    EXPECT_EQ(c.kind, Kind::Other);
    EXPECT_FALSE(c.cacheable);
    EXPECT_TRUE(c.writes.empty());
  }
  EXPECT_EQ(classify_statement("").statements, 0);
  EXPECT_EQ(classify_statement("").not_cacheable_reason, "no statement");
  // PREPARE does not run its statement: EXECUTE does (writes_unknown).
  EXPECT_EQ(classify_statement("PREPARE p AS DELETE FROM t").reads, Names{"t"});
}

TEST(ClassifyCacheable, TimeSessionAndLockingStopIt) {
  check({
      {"SELECT now()", Kind::Read, "calls now()", {}, {}},
      {"SELECT pg_catalog.now()", Kind::Read, "calls now()", {}, {}},
      {"SELECT * FROM t WHERE ts > now() - interval '1 day'", Kind::Read, "calls now()", {"t"}, {}},
      {"SELECT current_timestamp", Kind::Read, "uses CURRENT_TIMESTAMP", {}, {}},
      {"SELECT current_date", Kind::Read, "uses CURRENT_DATE", {}, {}},
      {"SELECT localtimestamp(3)", Kind::Read, "uses LOCALTIMESTAMP", {}, {}},
      {"SELECT * FROM t WHERE d = 'today'::date", Kind::Read, "uses 'today'", {"t"}, {}},
      {"SELECT timestamptz 'now'", Kind::Read, "uses 'now'", {}, {}},
      {"SELECT '   now'::timestamptz", Kind::Read, "uses '   now'", {}, {}},
      {"SELECT * FROM t WHERE ts < 'Today 10:00'", Kind::Read, "uses 'Today 10:00'", {"t"}, {}},
      {"SELECT 'TOMORROW'::date", Kind::Read, "uses 'TOMORROW'", {}, {}},
      {"SELECT ('n' || 'ow')::timestamptz", Kind::Read, "casts an expression to timestamptz", {}, {}},
      {"SELECT count(*) FROM t TABLESAMPLE BERNOULLI (50)", Kind::Read, "TABLESAMPLE without REPEATABLE", {"t"}, {}},
      {"SELECT CAST(v AS date) FROM t", Kind::Read, "casts an expression to date", {"t"}, {}},
      {"SELECT date(v) FROM t", Kind::Read, "casts an expression to date", {"t"}, {}},
      {"SELECT pg_listening_channels()", Kind::Read, "calls pg_listening_channels()", {}, {}},
      {"SELECT * FROM pg_prepared_statement()", Kind::Read, "calls pg_prepared_statement()", {}, {}},
      {"SELECT * FROM pg_cursor()", Kind::Read, "calls pg_cursor()", {}, {}},
      {"SELECT random()", Kind::Read, "calls random()", {}, {}},
      {"SELECT nextval('s')", Kind::Read, "calls nextval()", {}, {}},
      {"SELECT pg_sleep_for('1s')", Kind::Read, "calls pg_sleep_for()", {}, {}},
      {"SELECT pg_try_advisory_lock(1)", Kind::Read, "calls pg_try_advisory_lock()", {}, {}},
      {"SELECT uuid_generate_v4()", Kind::Read, "calls uuid_generate_v4()", {}, {}},
      {"SELECT current_setting('x')", Kind::Read, "calls current_setting()", {}, {}},
      {"SELECT age(ts) FROM t", Kind::Read, "calls age()", {"t"}, {}},   // counts from today
      {"SELECT * FROM t FOR UPDATE", Kind::Read, "FOR UPDATE/SHARE", {"t"}, {}},
      {"SELECT * FROM t FOR SHARE SKIP LOCKED", Kind::Read, "FOR UPDATE/SHARE", {"t"}, {}},
      {"SELECT * FROM (SELECT * FROM t FOR KEY SHARE) s", Kind::Read, "FOR UPDATE/SHARE", {"t"}, {}},
      {"SELECT 1; SELECT 2", Kind::Read, "several statements", {}, {}},
      {"SELECT * FROM pg_temp.x", Kind::Read, "reads a temporary table", {"x"}, {}},
      {"SELECT * FROM pg_temp_3.x", Kind::Read, "reads a temporary table", {"x"}, {}},
      {"SELECT * FROM pg_class", Kind::Read, "reads a catalog", {"pg_class"}, {}},
      {"SELECT * FROM pg_catalog.pg_class c JOIN t ON true", Kind::Read, "reads a catalog", {"pg_class", "t"}, {}},
      {"SELECT * FROM information_schema.tables", Kind::Read, "reads a catalog", {"tables"}, {}},
      // A catalog comes last, so "reads a catalog" means nothing else is in the way.
      {"SELECT now() FROM pg_class", Kind::Read, "calls now()", {"pg_class"}, {}},
  });
  // Fine: the role is part of the cache key; ordinary functions go to the caller.
  for (const char* sql : {"SELECT current_user, session_user, current_schema", "SELECT upper('x')",
                          "SELECT * FROM t WHERE d = '2024-01-01'::date", "SELECT * FROM generate_series(1, 3)",
                          "SELECT * FROM t WHERE name IN ('snow', 'nowhere', 'known')",
                          "SELECT * FROM t WHERE d = $1::date", "SELECT date('2024-01-01')"}) {
    SCOPED_TRACE(sql);
    Classification c = classify_statement(sql);
    EXPECT_TRUE(c.cacheable) << c.not_cacheable_reason;
  }
}

TEST(ClassifyCacheable, FunctionsAndCatalogFlag) {
  Classification c = classify_statement("SELECT upper(v), pg_catalog.lower(v), count(*) FROM hot");
  EXPECT_TRUE(c.cacheable);
  EXPECT_EQ(c.functions, (Names{"count", "lower", "upper"}));
  EXPECT_FALSE(c.catalogs);
  EXPECT_EQ(classify_statement("SELECT f(1); INSERT INTO t VALUES (g())").functions, (Names{"f", "g"}));
  EXPECT_TRUE(classify_statement("SELECT * FROM pg_class").catalogs);
  EXPECT_TRUE(classify_statement("SELECT 1; SELECT * FROM information_schema.columns").catalogs);
  EXPECT_EQ(classify_statement("SELECT 1").statements, 1);
  EXPECT_EQ(classify_statement("SELECT 1; SELECT 2;").statements, 2);
}

TEST(ClassifyHints, CommentsOpeningWithPgsidecar) {
  struct Hint {
    const char* sql;
    bool hinted;
    int64_t ttl;
    bool nocache;
  };
  const Hint hints[] = {
      {"SELECT * FROM t", false, -1, false},
      {"/* pgsidecar:cache */ SELECT * FROM t", true, -1, false},
      {"SELECT * FROM t /*pgsidecar:cache*/", true, -1, false},
      {"/* pgsidecar:cache ttl=30s */ SELECT 1", true, 30'000, false},
      {"/*\n  pgsidecar:cache  ttl = 500ms\n*/ SELECT 1", true, 500, false},
      {"/* pgsidecar:cache ttl=2m*/ SELECT 1", true, 120'000, false},
      {"/* pgsidecar:cache ttl=soon */ SELECT 1", true, -1, false},
      {"/* pgsidecar:cache ttl=-5s */ SELECT 1", true, -1, false},
      {"/* pgsidecar:nocache */ SELECT 1", false, -1, true},
      {"SELECT 1 -- pgsidecar:cache ttl=1h", true, 3'600'000, false},
      {"-- pgsidecar:nocache\nSELECT 1", false, -1, true},
      {"/* PGSIDECAR:cache */ SELECT 1", false, -1, false},      // case-sensitive
      {"/* please pgsidecar:cache */ SELECT 1", false, -1, false},   // must open the comment
      {"SELECT 1 --\npgsidecar:cache", false, -1, false},        // not in the -- comment
      {"/* pgsidecar:cachex */ SELECT 1", false, -1, false},
      {"/* pgsidecar:", false, -1, false},
  };
  for (const Hint& h : hints) {
    SCOPED_TRACE(h.sql);
    Classification c = classify_statement(h.sql);
    EXPECT_EQ(c.hinted, h.hinted);
    EXPECT_EQ(c.hint_ttl_ms, h.ttl);
    EXPECT_EQ(c.hint_nocache, h.nocache);
  }
  // Hints do not change the analysis.
  Classification c = classify_statement("/* pgsidecar:cache ttl=30s */ SELECT v FROM hot");
  EXPECT_TRUE(c.cacheable);
  EXPECT_EQ(c.reads, Names{"hot"});
}

TEST(ClassifyFingerprint, EqualAcrossConstantsOnly) {
  const std::string a = classify_statement("SELECT v FROM hot WHERE id = 1").fingerprint;
  EXPECT_EQ(a.size(), 16u);
  EXPECT_EQ(classify_statement("SELECT v FROM hot WHERE id = 2").fingerprint, a);
  EXPECT_EQ(classify_statement("select v  from hot where id = 3 /* x */").fingerprint, a);
  EXPECT_NE(classify_statement("SELECT v FROM cold WHERE id = 1").fingerprint, a);
  EXPECT_NE(classify_statement("SELECT w FROM hot WHERE id = 1").fingerprint, a);
  EXPECT_EQ(classify_statement("SELEC v").fingerprint, "");
}

TEST(ClassifyRobustness, BadInputIsUnparsableNeverACrash) {
  Classification bad = classify_statement("SELEC v FROM hot");
  EXPECT_EQ(bad.kind, Kind::Unparsable);
  EXPECT_FALSE(bad.cacheable);
  EXPECT_EQ(bad.not_cacheable_reason.rfind("does not parse: ", 0), 0u) << bad.not_cacheable_reason;
  EXPECT_NE(bad.not_cacheable_reason.find("syntax error"), std::string::npos) << bad.not_cacheable_reason;

  const std::string nul("SELECT 1\0; DROP TABLE t", 23);
  EXPECT_EQ(classify_statement(nul).kind, Kind::Unparsable);
  EXPECT_EQ(classify_statement(std::string_view("\0", 1)).kind, Kind::Unparsable);
  EXPECT_EQ(classify_statement("SELECT 'unterminated").kind, Kind::Unparsable);
  EXPECT_EQ(classify_statement("/* unterminated comment").kind, Kind::Unparsable);

  // Not UTF-8 (a LATIN1 client): still parsed, non-ASCII bytes masked.
  Classification latin1 = classify_statement("UPDATE \"caf\xe9\" SET v = '\xff\xfe'");
  EXPECT_EQ(latin1.kind, Kind::Write);
  EXPECT_EQ(latin1.writes, Names{"caf?"});
  EXPECT_EQ(classify_statement("SELECT '\xc3' FROM t").reads, Names{"t"});

  // Long flat texts are parsed (callers keep long texts off the event loop).
  std::string values = "INSERT INTO t VALUES (0)";
  for (int i = 1; i < 2'000; ++i) values += ", (" + std::to_string(i) + ")";
  Classification big = classify_statement(values);
  EXPECT_EQ(big.kind, Kind::Write);
  EXPECT_EQ(big.writes, Names{"t"});
  EXPECT_TRUE(big.effects.empty());
}

TEST(ClassifyRobustness, DeepTreeOnASmallStack) {
  // As deep as texts get parsed (kMaxParseDepth); one level more is not parsed at all.
  static std::string deep = "SELECT 1";
  for (size_t i = 0; i + 8 < cache::kMaxParseDepth; i++) deep += "*1";
  EXPECT_EQ(classify_statement(deep + "*1*1*1*1*1*1*1*1*1*1*1*1*1*1*1*1*1*1*1*1").kind, Kind::Write)
      << "too deep: counted as not understood";
  static Classification c;
  pthread_attr_t attr;
  ASSERT_EQ(pthread_attr_init(&attr), 0);
  ASSERT_EQ(pthread_attr_setstacksize(&attr, 1024 * 1024), 0);
  pthread_t thread;
  auto run = [](void*) -> void* {
    c = classify_statement(deep);
    return nullptr;
  };
  ASSERT_EQ(pthread_create(&thread, &attr, run, nullptr), 0);
  pthread_join(thread, nullptr);
  pthread_attr_destroy(&attr);
  EXPECT_EQ(c.kind, Kind::Read);
  EXPECT_TRUE(c.cacheable);
}

TEST(ClassifySettings, SessionSettingChanges) {
  for (const char* sql : {"SET search_path = a", "SET ROLE bob", "RESET ALL", "RESET work_mem", "DISCARD ALL",
                          "SET SESSION AUTHORIZATION bob", "SELECT 1; SET search_path = a"})
    EXPECT_TRUE(classify_statement(sql).changes_settings) << sql;
  for (const char* sql : {"SET LOCAL search_path = a", "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
                          "SELECT 1", "UPDATE t SET v = 1", "SHOW search_path"})
    EXPECT_FALSE(classify_statement(sql).changes_settings) << sql;
}

TEST(ClassifyParseTtl, UnitsAndRejects) {
  EXPECT_EQ(parse_ttl("30s"), 30'000);
  EXPECT_EQ(parse_ttl("500ms"), 500);
  EXPECT_EQ(parse_ttl("2m"), 120'000);
  EXPECT_EQ(parse_ttl("1h"), 3'600'000);
  EXPECT_EQ(parse_ttl("45"), 45'000);
  EXPECT_EQ(parse_ttl("0"), 0);
  for (const char* bad : {"", "s", "-5", "+5", " 5", "5 s", "5x", "5sec", "1.5s", "ms", "99999999999999999999",
                          "9223372036854775807s", "3000000000000000h"}) {
    SCOPED_TRACE(bad);
    EXPECT_EQ(parse_ttl(bad), -1);
  }
  EXPECT_EQ(parse_ttl("9223372036854775807ms"), INT64_MAX);
}

TEST(ClassifyCost, TenThousandShortSelects) {
  constexpr int kRuns = 10'000;
  size_t reads = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kRuns; ++i) reads += classify_statement("SELECT v FROM hot WHERE id = $1").reads.size();
  const auto us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(reads, size_t(kRuns));
  std::cout << "classify_statement: " << us / kRuns << " us per call\n";
}

}  // namespace

// The result cache parses once per shape; clock words in its string literals are
// read from each text.
TEST(ClockWordInString, FindsClockWordsInStringLiteralsOnly) {
  EXPECT_TRUE(cache::clock_word_in_string("SELECT '   now'::timestamptz"));
  EXPECT_TRUE(cache::clock_word_in_string("SELECT 'a', 'Today 10:00'::date"));
  EXPECT_TRUE(cache::clock_word_in_string("SELECT 'it''s tomorrow'"));
  EXPECT_FALSE(cache::clock_word_in_string("SELECT now_col, today FROM t WHERE v = 'x'"));
  EXPECT_FALSE(cache::clock_word_in_string("SELECT 'it''s', 'nowhere'"));
  EXPECT_FALSE(cache::clock_word_in_string("SELECT 1"));
  EXPECT_FALSE(cache::clock_word_in_string("SELECT 'unterminated"));
}

// Texts of one shape share a classification, taken from the shape itself: a
// literal that decides what runs is judged the cautious way for all of them.
TEST(StatementCacheShapes, LiteralsThatDecideAreReadTheCautiousWay) {
  cache::StatementCache sc;
  // EXPLAIN ANALYZE 'false' first, then 'true': the second runs the UPDATE.
  ASSERT_TRUE(sc.classify_now("EXPLAIN (ANALYZE 'false') UPDATE t SET x = 1"));
  cache::ClassificationPtr on = sc.classify_now("EXPLAIN (ANALYZE 'true') UPDATE t SET x = 1");
  ASSERT_TRUE(on);
  EXPECT_EQ(on->writes, std::vector<std::string>{"t"});
  // set_config(..., 't') first: the text with 'false' keeps its setting for the session.
  ASSERT_TRUE(sc.classify_now("SELECT set_config('app.x', 'a', 't')"));
  cache::ClassificationPtr session = sc.classify_now("SELECT set_config('app.x', 'a', 'false')");
  ASSERT_TRUE(session);
  EXPECT_TRUE(session->has_session_effects());
}

// A long text with a SET is parsed off the loop, once for its shape and once for
// itself: the SET keeps the text's own value, whatever other texts of its shape said.
TEST(StatementCacheShapes, LongSetKeepsItsOwnValue) {
  uv_loop_t loop;
  ASSERT_EQ(uv_loop_init(&loop), 0);
  cache::StatementCache sc;
  auto classify = [&](const std::string& sql) {
    for (int round = 0; round < 3; round++) {
      if (cache::ClassificationPtr c = sc.classify_now(sql)) return c;
      sc.classify_async(&loop, sql, [] {});
      uv_run(&loop, UV_RUN_DEFAULT);
    }
    return cache::ClassificationPtr();
  };
  for (char v : {'a', 'b'}) {
    const std::string value(cache::StatementCache::kParseOnLoop + 100, v);
    cache::ClassificationPtr c = classify("SET app.big = '" + value + "'");
    ASSERT_TRUE(c) << v;
    ASSERT_EQ(c->effects.size(), 1u);
    EXPECT_EQ(c->effects[0].kind, cache::SessionEffect::Kind::Set);
    EXPECT_NE(c->effects[0].sql.find(value), std::string::npos) << v;
  }
  EXPECT_EQ(uv_loop_close(&loop), 0);
}
