// The plan cache's data structures: shared statements, the per-server LRU and
// the queue of replies due.
#include "pool/statements.h"

#include <gtest/gtest.h>

#include "proxy/server_conn.h"

using pool::ServerStatements;
using pool::StatementRegistry;

namespace {

std::string tail(std::string_view query) {
  std::string t(query);
  t.push_back('\0');
  t.append(2, '\0');   // no parameter types
  return t;
}

TEST(StatementRegistry, SameBytesSameStatementOtherwiseDistinctNames) {
  StatementRegistry reg;
  auto a = reg.intern(tail("SELECT 1"), false);
  auto b = reg.intern(tail("SELECT 1"), false);
  auto c = reg.intern(tail("SELECT 2"), true);
  EXPECT_EQ(a, b);
  EXPECT_NE(a->name, c->name);
  EXPECT_EQ(a->name.rfind("pgsidecar_", 0), 0u);
  EXPECT_TRUE(c->changes_schema);
  EXPECT_EQ(reg.find(tail("SELECT 2")), c);
  EXPECT_EQ(reg.find(tail("SELECT 3")), nullptr);
}

TEST(StatementRegistry, SweepForgetsOnlyUnreferencedStatements) {
  StatementRegistry reg;
  auto kept = reg.intern(tail("SELECT 1"), false);
  reg.intern(tail("SELECT 2"), false);
  EXPECT_EQ(reg.size(), 2u);
  reg.sweep();
  EXPECT_EQ(reg.size(), 1u);
  EXPECT_EQ(reg.find(tail("SELECT 1")), kept);
}

TEST(StatementRegistry, AcceptedPerPool) {
  StatementRegistry reg;
  auto st = reg.intern(tail("SELECT 1"), false);
  auto* p1 = reinterpret_cast<const pool::Pool*>(0x10);
  auto* p2 = reinterpret_cast<const pool::Pool*>(0x20);
  EXPECT_FALSE(st->accepted_in(p1));
  st->mark_accepted(p1);
  EXPECT_TRUE(st->accepted_in(p1));
  EXPECT_FALSE(st->accepted_in(p2));
}

TEST(ServerStatements, LeastRecentlyUsedIsEvicted) {
  StatementRegistry reg;
  auto s1 = reg.intern(tail("SELECT 1"), false), s2 = reg.intern(tail("SELECT 2"), false),
       s3 = reg.intern(tail("SELECT 3"), false);
  ServerStatements lru;
  EXPECT_EQ(lru.find(s1.get(), 1), ServerStatements::Lookup::Miss);
  EXPECT_EQ(lru.add(s1, 1, 2), nullptr);
  EXPECT_EQ(lru.add(s2, 1, 2), nullptr);
  EXPECT_EQ(lru.find(s1.get(), 1), ServerStatements::Lookup::Hit);   // s2 is now the oldest
  EXPECT_EQ(lru.add(s3, 1, 2), s2);
  EXPECT_EQ(lru.size(), 2u);
  EXPECT_EQ(lru.find(s2.get(), 1), ServerStatements::Lookup::Miss);
}

TEST(ServerStatements, OlderSchemaVersionIsStale) {
  StatementRegistry reg;
  auto s1 = reg.intern(tail("SELECT 1"), false);
  ServerStatements lru;
  lru.add(s1, 1, 10);
  EXPECT_EQ(lru.find(s1.get(), 2), ServerStatements::Lookup::Stale);
  lru.add(s1, 2, 10);   // prepared again
  EXPECT_EQ(lru.find(s1.get(), 2), ServerStatements::Lookup::Hit);
  lru.remove(s1.get());
  EXPECT_EQ(lru.find(s1.get(), 2), ServerStatements::Lookup::Miss);
}

TEST(ServerStatements, CapacityIsAtLeastOne) {
  StatementRegistry reg;
  auto s1 = reg.intern(tail("SELECT 1"), false), s2 = reg.intern(tail("SELECT 2"), false);
  ServerStatements lru;
  EXPECT_EQ(lru.add(s1, 1, 0), nullptr);
  EXPECT_EQ(lru.add(s2, 1, 0), s1);
}

}  // namespace

// The plan cache's queue of replies due: first in, first out, across the
// compaction that keeps a never-empty queue (a pipeline) from growing.
TEST(ReplyQueue, StaysInOrderWhileNeverEmpty) {
  proxy::ReplyQueue q;
  uint64_t next_in = 0, next_out = 0;
  for (int round = 0; round < 1000; round++) {
    for (int i = 0; i < 3; i++) q.push_back(proxy::PendingReply{.epoch = next_in++});
    for (int i = 0; i < 2; i++) {   // one more is always left
      ASSERT_EQ(q.front().epoch, next_out++);
      q.pop_front();
    }
    ASSERT_EQ(q.size(), size_t(next_in - next_out));
    ASSERT_EQ(q[q.size() - 1].epoch, next_in - 1);
  }
  q.pop_front(q.size());
  EXPECT_TRUE(q.empty());
}
