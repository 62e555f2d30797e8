// ResultCache's memo of classified texts: what a lookup that misses leaves behind.
#include "cache/result_cache.h"

#include <gtest/gtest.h>
#include <uv.h>

#include <memory>
#include <string>

namespace {

struct Fixture {
  uv_loop_t loop{};
  cache::SchemaVersion schema;
  std::unique_ptr<cache::ResultCache> rc;
  Fixture() {
    uv_loop_init(&loop);
    conf::Cache cfg;
    cfg.mode = conf::CacheMode::Hinted;
    rc = std::make_unique<cache::ResultCache>(&loop, cfg, schema,
                                              [](const std::string&, const std::string&) { return std::string(); });
  }
  ~Fixture() {
    rc.reset();
    uv_loop_close(&loop);
  }
};

TEST(ResultCacheMemo, ATextIsRememberedOnlyWhenAsked) {
  Fixture f;
  const std::string sql = "SELECT abalance FROM pgbench_accounts WHERE aid = 41";
  bool is_new = false;
  cache::ClassificationPtr first = f.rc->classify_transient(sql, is_new);
  ASSERT_TRUE(first);
  EXPECT_TRUE(is_new);
  EXPECT_EQ(first->reads, std::vector<std::string>{"pgbench_accounts"});
  f.rc->classify_transient(sql, is_new);
  EXPECT_TRUE(is_new) << "a lookup that missed and was not stored leaves no memo entry";

  f.rc->remember(sql, first);
  EXPECT_EQ(f.rc->classify_transient(sql, is_new), first);
  EXPECT_FALSE(is_new);

  // classify() remembers at once, as before.
  cache::ClassificationPtr other = f.rc->classify("SELECT 1");
  EXPECT_EQ(f.rc->classify_transient("SELECT 1", is_new), other);
  EXPECT_FALSE(is_new);
}

TEST(ResultCacheMemo, TooLongTextsAreNeverParsedNorRemembered) {
  Fixture f;
  const std::string sql = "SELECT '" + std::string(cache::ResultCache::kMaxParsedText, 'x') + "'";
  bool is_new = true;
  cache::ClassificationPtr c = f.rc->classify_transient(sql, is_new);
  EXPECT_FALSE(is_new);
  EXPECT_FALSE(c->cacheable);
  EXPECT_TRUE(c->writes_unknown);
}

TEST(ResultCacheMemo, EffectsTakeTheProxysClassificationOfShortTextsOnly) {
  Fixture f;
  auto parsed = std::make_shared<const cache::Classification>(cache::classify_statement("SET search_path = a", false));
  EXPECT_EQ(f.rc->effects_of("SET search_path = a", parsed), parsed);
  EXPECT_NE(f.rc->effects_of("SET search_path = a", nullptr), nullptr);

  // A text the cache would not parse counts as unknown, whatever the proxy made of it.
  const std::string sql = "SET search_path = '" + std::string(cache::ResultCache::kMaxParsedText, 'a') + "'";
  cache::ClassificationPtr c = f.rc->effects_of(sql, parsed);
  EXPECT_NE(c, parsed);
  EXPECT_TRUE(c->writes_unknown);
}

}  // namespace
