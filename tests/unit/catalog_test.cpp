// The result cache's view of a database's catalog (cache/catalog.h), from rows as
// kCatalogQuery returns them.
#include "cache/catalog.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace {

using Rows = std::vector<cache::Catalog::Row>;
using Names = std::vector<std::string>;

cache::Catalog::Row row(const char* kind, const char* name, const char* other) {
  cache::Catalog::Row r = {std::string(kind), std::string(name), std::nullopt};
  if (other) r[2] = std::string(other);
  return r;
}

Names expanded(const cache::Catalog& c, Names names, bool family) {
  c.expand(names, family);
  std::sort(names.begin(), names.end());
  return names;
}

TEST(Catalog, VolatileFunctionsAndWhichAreBuiltIn) {
  cache::Catalog c;
  c.load({row("v", "random", "true"), row("v", "bump_counter", "false")});
  EXPECT_TRUE(c.volatile_function("random"));
  EXPECT_FALSE(c.user_volatile_function("random"));
  EXPECT_TRUE(c.user_volatile_function("bump_counter"));
  EXPECT_FALSE(c.volatile_function("upper"));
}

TEST(Catalog, SequencesAndWhatReachesThemAreBlocked) {
  cache::Catalog c;
  c.load({
      row("S", "s1", nullptr),
      row("r", "vseq", "s1"),             // CREATE VIEW vseq AS SELECT nextval('s1')
      row("f", "vseq", "nextval"),
      row("r", "vtop", "vseq"),           // a view over it
      row("f", "vclock", "now"),          // stable, yet denied
      row("v", "bump", "false"),
      row("f", "vbump", "bump"),          // a volatile function of the user's
      row("f", "secure", "current_setting"),   // an RLS policy reading a setting
      row("r", "vplain", "t"),
      row("f", "vplain", "upper"),
  });
  for (const char* r : {"s1", "vseq", "vtop", "vclock", "vbump", "secure"}) EXPECT_TRUE(c.blocked(r)) << r;
  for (const char* r : {"t", "vplain"}) EXPECT_FALSE(c.blocked(r)) << r;
}

TEST(Catalog, ViewsReachTheirTablesAtAnyDepth) {
  cache::Catalog c;
  c.load({row("r", "v2", "v1"), row("r", "v1", "t"), row("r", "v1", "u"), row("r", "loop_a", "loop_b"),
          row("r", "loop_b", "loop_a")});
  EXPECT_EQ(expanded(c, {"v2"}, false), (Names{"t", "u", "v1", "v2"}));
  EXPECT_EQ(expanded(c, {"t"}, false), (Names{"t"}));
  EXPECT_EQ(expanded(c, {"loop_a"}, false), (Names{"loop_a", "loop_b"}));   // a cycle ends
}

TEST(Catalog, AWriteToOneMemberOfAnInheritanceTreeReachesAll) {
  cache::Catalog c;
  c.load({row("i", "p1", "p"), row("i", "p2", "p"), row("i", "p2a", "p2"), row("i", "other1", "other")});
  EXPECT_EQ(expanded(c, {"p2a"}, true), (Names{"p", "p1", "p2", "p2a"}));
  EXPECT_EQ(expanded(c, {"p"}, true), (Names{"p", "p1", "p2", "p2a"}));
  EXPECT_EQ(expanded(c, {"p1"}, false), (Names{"p1"}));   // reads need not: writes reach the readers
  EXPECT_EQ(expanded(c, {"other"}, true), (Names{"other", "other1"}));
}

TEST(Catalog, LoginDefaultsOfTheRoleAndOfEveryRoleGoIntoTheKey) {
  auto key = [](const cache::Catalog& c, const std::string& role) {
    std::string k;
    c.append_defaults(role, k);
    return k;
  };
  cache::Catalog none, db, role, role_in_db, other_role;
  db.load({row("d", "", "{search_path=a}")});
  role.load({row("D", "app", "{search_path=b}")});
  role_in_db.load({row("d", "app", "{search_path=b}")});
  other_role.load({row("D", "admin", "{search_path=b}")});
  const cache::Catalog* all[] = {&none, &db, &role, &role_in_db};
  for (const cache::Catalog* a : all)
    for (const cache::Catalog* b : all) {
      EXPECT_EQ(key(*a, "app") == key(*b, "app"), a == b);
      EXPECT_EQ(a->same_defaults(*b), a == b);
    }
  EXPECT_EQ(key(other_role, "app"), key(none, "app"));   // another role's defaults do not apply
  EXPECT_FALSE(other_role.same_defaults(none));          // but they are a change
  // Settings that differ only in where a separator falls are told apart.
  cache::Catalog one, two;
  one.load({row("D", "app", "{\"a=1,b=2\"}")});
  two.load({row("D", "app", "{a=1,b=2}")});
  EXPECT_NE(key(one, "app"), key(two, "app"));
}

TEST(Catalog, LoadReplacesAndIgnoresMalformedRows) {
  cache::Catalog c;
  c.load({row("S", "s1", nullptr)});
  Rows bad = {{}, {std::nullopt, std::string("x"), std::nullopt}, row("zz", "x", nullptr), row("r", "a", nullptr)};
  c.load(bad);
  EXPECT_FALSE(c.blocked("s1"));
  EXPECT_EQ(expanded(c, {"a"}, true), (Names{"a"}));
}

}  // namespace
