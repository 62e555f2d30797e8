// The result cache's building blocks: ResultStore (L1: byte-bounded LRU with TTLs,
// a dependency index by (database, relation), invalidation sequence numbers) and
// the value codec (response validation, Redis values, key digests).
#include "cache/admission.h"
#include "cache/result_store.h"
#include "cache/value_codec.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <list>
#include <map>
#include <new>
#include <random>
#include <set>
#include <string>
#include <unordered_set>
#include <vector>

namespace {

using namespace std::chrono_literals;
using cache::Clock;
using cache::ResultStore;
using cache::StoredResult;
using Admit = ResultStore::Admit;
using Names = std::vector<std::string>;

// ---------------------------------------------------------------- ResultStore

const Clock::time_point t0{std::chrono::hours(1)};

StoredResult result(const std::string& key, size_t value_bytes, Clock::time_point expires = t0 + 10s,
                    bool has_row_description = true) {
  return StoredResult{key, std::string(value_bytes, 'v'), has_row_description, expires};
}

// The live keys that read relation of database, sorted (does not touch recency).
Names readers(const ResultStore& s, const std::string& database, const std::string& relation) {
  Names keys = s.keys_reading(database, relation);
  std::sort(keys.begin(), keys.end());
  return keys;
}

TEST(ResultStore, StoreThenFindReturnsTheEntry) {
  ResultStore s(1 << 20);
  EXPECT_EQ(s.seq(), 0u);
  StoredResult r{"k1", "T...D...C...", true, t0 + 5s};
  size_t cost = ResultStore::charge(r, 2);
  EXPECT_EQ(cost, 2u + 12u + 160u + 96u);
  ASSERT_EQ(s.store(r, "db", {"a", "b"}, s.seq()), Admit::Stored);
  EXPECT_EQ(s.entries(), 1u);
  EXPECT_EQ(s.bytes(), cost);

  const StoredResult* got = s.find("k1", t0);
  ASSERT_NE(got, nullptr);
  EXPECT_EQ(got->key, "k1");
  EXPECT_EQ(got->value, "T...D...C...");
  EXPECT_TRUE(got->has_row_description);
  EXPECT_EQ(got->expires, t0 + 5s);

  EXPECT_EQ(s.find("k2", t0), nullptr);
  EXPECT_EQ(s.find("k", t0), nullptr);
  EXPECT_EQ(s.find("", t0), nullptr);
  EXPECT_EQ(s.evictions(), 0u);
  EXPECT_EQ(s.expirations(), 0u);
}

TEST(ResultStore, FindAfterExpiryDropsTheEntry) {
  ResultStore s(1 << 20);
  ASSERT_EQ(s.store(result("k", 100, t0 + 10s), "db", {"a"}, 0), Admit::Stored);
  ASSERT_EQ(s.store(result("other", 50, t0 + 60s), "db", {"a"}, 0), Admit::Stored);
  size_t other = ResultStore::charge(result("other", 50), 1);

  ASSERT_NE(s.find("k", t0 + 10s - 1ns), nullptr);   // last instant it is fresh
  EXPECT_EQ(s.find("k", t0 + 10s), nullptr);         // expires is exclusive
  EXPECT_EQ(s.expirations(), 1u);
  EXPECT_EQ(s.entries(), 1u);
  EXPECT_EQ(s.bytes(), other);
  EXPECT_EQ(readers(s, "db", "a"), Names{"other"});

  EXPECT_EQ(s.find("k", t0 + 10s), nullptr);   // already gone: not counted twice
  EXPECT_EQ(s.expirations(), 1u);
  EXPECT_EQ(s.evictions(), 0u);
}

TEST(ResultStore, LeastRecentlyUsedGoesFirst) {
  size_t each = ResultStore::charge(result("a", 1000), 1);
  ResultStore s(3 * each);   // room for exactly three
  for (const char* k : {"a", "b", "c"}) ASSERT_EQ(s.store(result(k, 1000), "db", {"t"}, 0), Admit::Stored);
  EXPECT_EQ(s.bytes(), 3 * each);
  EXPECT_EQ(s.evictions(), 0u);

  ASSERT_NE(s.find("a", t0), nullptr);   // a is now the most recent: b is the oldest
  ASSERT_EQ(s.store(result("d", 1000), "db", {"t"}, 0), Admit::Stored);
  EXPECT_EQ(readers(s, "db", "t"), (Names{"a", "c", "d"}));
  EXPECT_EQ(s.evictions(), 1u);

  ASSERT_EQ(s.store(result("e", 1000), "db", {"t"}, 0), Admit::Stored);   // c is the oldest now
  EXPECT_EQ(readers(s, "db", "t"), (Names{"a", "d", "e"}));
  EXPECT_EQ(s.evictions(), 2u);

  // One entry costing exactly two pushes out the two oldest (a, then d) and no more.
  size_t big = 2 * each - ResultStore::charge(result("big", 0), 1);
  ASSERT_EQ(ResultStore::charge(result("big", big), 1), 2 * each);
  ASSERT_EQ(s.store(result("big", big), "db", {"t"}, 0), Admit::Stored);
  EXPECT_EQ(readers(s, "db", "t"), (Names{"big", "e"}));
  EXPECT_EQ(s.evictions(), 4u);
  EXPECT_EQ(s.bytes(), 3 * each);
  EXPECT_EQ(s.find("a", t0), nullptr);
  EXPECT_EQ(s.expirations(), 0u);   // evicted, not expired
}

TEST(ResultStore, TooLargeStoresNothing) {
  StoredResult fits = result("fits", 100);
  size_t max = ResultStore::charge(fits, 2);
  ResultStore s(max);
  ASSERT_EQ(s.store(result("small", 10), "db", {"a"}, 0), Admit::Stored);
  size_t small = s.bytes();

  EXPECT_EQ(s.store(result("huge", 101), "db", {"a", "b"}, 0), Admit::TooLarge);   // max + 1
  EXPECT_EQ(s.store(result("fits", 100), "db", {"a", "b", "c"}, 0), Admit::TooLarge);   // relations count too
  EXPECT_EQ(s.entries(), 1u);   // nothing evicted to make room for what can never fit
  EXPECT_EQ(s.bytes(), small);
  EXPECT_EQ(s.evictions(), 0u);
  EXPECT_NE(s.find("small", t0), nullptr);

  EXPECT_EQ(s.store(fits, "db", {"a", "b"}, 0), Admit::Stored);   // exactly max
  EXPECT_EQ(s.bytes(), max);
  EXPECT_EQ(s.entries(), 1u);
  EXPECT_EQ(s.evictions(), 1u);
}

TEST(ResultStore, ReplacingAKeyDoesNotDoubleCount) {
  StoredResult second{"k", std::string(300, 'x'), false, t0 + 20s};
  size_t cost = ResultStore::charge(second, 2);
  ResultStore s(cost);   // room for one of them only
  ASSERT_EQ(s.store(result("k", 100), "db", {"a"}, 0), Admit::Stored);
  ASSERT_EQ(s.store(second, "db", {"b", "c"}, 0), Admit::Stored);
  EXPECT_EQ(s.entries(), 1u);
  EXPECT_EQ(s.bytes(), cost);
  EXPECT_EQ(s.evictions(), 0u);   // replaced, not evicted

  const StoredResult* got = s.find("k", t0);
  ASSERT_NE(got, nullptr);
  EXPECT_EQ(got->value, std::string(300, 'x'));
  EXPECT_FALSE(got->has_row_description);
  EXPECT_EQ(got->expires, t0 + 20s);

  // The dependencies are the new ones: the old relation no longer reaches it.
  EXPECT_EQ(readers(s, "db", "a"), Names{});
  EXPECT_EQ(readers(s, "db", "b"), Names{"k"});
  EXPECT_EQ(s.invalidate("db", {"a"}), 0u);
  EXPECT_EQ(s.entries(), 1u);
  EXPECT_EQ(s.invalidate("db", {"c"}), 1u);
  EXPECT_EQ(s.entries(), 0u);
  EXPECT_EQ(s.bytes(), 0u);
}

TEST(ResultStore, InvalidateDropsExactlyTheEntriesThatReadARelation) {
  ResultStore s(1 << 20);
  ASSERT_EQ(s.store(result("1a", 10), "db1", {"a"}, 0), Admit::Stored);
  ASSERT_EQ(s.store(result("1ab", 10), "db1", {"a", "b"}, 0), Admit::Stored);
  ASSERT_EQ(s.store(result("1b", 10), "db1", {"b"}, 0), Admit::Stored);
  ASSERT_EQ(s.store(result("1c", 10), "db1", {"c"}, 0), Admit::Stored);
  ASSERT_EQ(s.store(result("1none", 10), "db1", {}, 0), Admit::Stored);
  ASSERT_EQ(s.store(result("2a", 10), "db2", {"a"}, 0), Admit::Stored);
  size_t one = ResultStore::charge(result("1a", 10), 1);

  EXPECT_EQ(s.invalidate("db1", {"a"}), 2u);   // 1a, 1ab
  EXPECT_EQ(s.seq(), 1u);
  EXPECT_EQ(s.entries(), 4u);
  EXPECT_EQ(s.find("1a", t0), nullptr);
  EXPECT_EQ(s.find("1ab", t0), nullptr);
  EXPECT_EQ(readers(s, "db1", "b"), Names{"1b"});   // 1ab left b's index too
  EXPECT_EQ(readers(s, "db2", "a"), Names{"2a"});   // same relation, other database
  EXPECT_EQ(s.bytes(), ResultStore::charge(result("1b", 10), 1) + ResultStore::charge(result("1c", 10), 1) +
                           ResultStore::charge(result("1none", 10), 0) + one);

  EXPECT_EQ(s.invalidate("db1", {"a"}), 0u);   // nothing left to drop, still a new seq
  EXPECT_EQ(s.seq(), 2u);
  EXPECT_EQ(s.invalidate("db1", {"zzz"}), 0u);
  EXPECT_EQ(s.invalidate("db3", {"b"}), 0u);
  EXPECT_EQ(s.entries(), 4u);

  EXPECT_EQ(s.invalidate("db1", {"b", "c", "b"}), 2u);
  EXPECT_EQ(s.entries(), 2u);
  EXPECT_NE(s.find("1none", t0), nullptr);
  EXPECT_NE(s.find("2a", t0), nullptr);
  EXPECT_EQ(s.evictions(), 0u);
}

TEST(ResultStore, InvalidateCountsAnEntryReadingSeveralRelationsOnce) {
  ResultStore s(1 << 20);
  ASSERT_EQ(s.store(result("ab", 10), "db", {"a", "b"}, 0), Admit::Stored);
  ASSERT_EQ(s.store(result("a", 10), "db", {"a"}, 0), Admit::Stored);
  ASSERT_EQ(s.store(result("b", 10), "db", {"b"}, 0), Admit::Stored);
  EXPECT_EQ(s.invalidate("db", {"a", "b"}), 3u);
  EXPECT_EQ(s.entries(), 0u);
  EXPECT_EQ(s.bytes(), 0u);
}

TEST(ResultStore, InvalidateAllDropsADatabaseOrEverything) {
  ResultStore s(1 << 20);
  ASSERT_EQ(s.store(result("1x", 10), "db1", {"a"}, 0), Admit::Stored);
  ASSERT_EQ(s.store(result("1y", 10), "db1", {}, 0), Admit::Stored);
  ASSERT_EQ(s.store(result("2x", 10), "db2", {"a"}, 0), Admit::Stored);
  ASSERT_EQ(s.store(result("3x", 10), "db3", {"b"}, 0), Admit::Stored);
  size_t db2 = ResultStore::charge(result("2x", 10), 1);

  EXPECT_EQ(s.invalidate_all("db1"), 2u);
  EXPECT_EQ(s.entries(), 2u);
  EXPECT_EQ(s.bytes(), 2 * db2);
  EXPECT_EQ(readers(s, "db1", "a"), Names{});
  EXPECT_EQ(readers(s, "db2", "a"), Names{"2x"});
  EXPECT_EQ(s.invalidate_all("db1"), 0u);
  EXPECT_EQ(s.invalidate_all("nope"), 0u);
  EXPECT_EQ(s.entries(), 2u);

  EXPECT_EQ(s.invalidate_all(""), 2u);
  EXPECT_EQ(s.entries(), 0u);
  EXPECT_EQ(s.bytes(), 0u);
  EXPECT_EQ(s.find("3x", t0), nullptr);
  EXPECT_EQ(s.seq(), 4u);
  EXPECT_EQ(s.evictions(), 0u);
}

TEST(ResultStore, KeysReadingListsTheReadersOfOneDatabaseRelation) {
  ResultStore s(1 << 20);
  ASSERT_EQ(s.store(result("q1", 10), "db", {"a", "b"}, 0), Admit::Stored);
  ASSERT_EQ(s.store(result("q2", 10), "db", {"a"}, 0), Admit::Stored);
  ASSERT_EQ(s.store(result("q3", 10), "other", {"a"}, 0), Admit::Stored);
  ASSERT_EQ(s.store(result("q4", 10), "db", {"ab"}, 0), Admit::Stored);
  EXPECT_EQ(readers(s, "db", "a"), (Names{"q1", "q2"}));
  EXPECT_EQ(readers(s, "db", "b"), Names{"q1"});
  EXPECT_EQ(readers(s, "other", "a"), Names{"q3"});
  EXPECT_EQ(readers(s, "db", "ab"), Names{"q4"});
  EXPECT_EQ(readers(s, "db", "c"), Names{});
  EXPECT_EQ(readers(s, "nope", "a"), Names{});
  ASSERT_NE(s.find("q1", t0 + 10s - 1ns), nullptr);
  EXPECT_EQ(s.find("q1", t0 + 10s), nullptr);   // expired: out of the index too
  EXPECT_EQ(readers(s, "db", "a"), Names{"q2"});
}

TEST(ResultStore, RacedByAnInvalidationOfARelationItRead) {
  ResultStore s(1 << 20);
  uint64_t since = s.seq();
  ASSERT_EQ(s.store(result("before", 10), "db", {"a"}, since), Admit::Stored);
  EXPECT_EQ(s.invalidate("db", {"a"}), 1u);
  EXPECT_EQ(s.store(result("k", 10), "db", {"b", "a"}, since), Admit::Raced);
  EXPECT_EQ(s.entries(), 0u);
  EXPECT_EQ(s.bytes(), 0u);
  EXPECT_EQ(s.find("k", t0), nullptr);
  EXPECT_EQ(readers(s, "db", "b"), Names{});

  // A query that started after the invalidation is fine.
  EXPECT_EQ(s.store(result("k", 10), "db", {"b", "a"}, s.seq()), Admit::Stored);
  EXPECT_NE(s.find("k", t0), nullptr);
}

TEST(ResultStore, RacedByAnInvalidationOfItsDatabase) {
  ResultStore s(1 << 20);
  uint64_t since = s.seq();
  EXPECT_EQ(s.invalidate_all("db"), 0u);   // a database the store has never seen
  EXPECT_EQ(s.store(result("k", 10), "db", {"a"}, since), Admit::Raced);
  EXPECT_EQ(s.store(result("k", 10), "db", {}, since), Admit::Raced);
  EXPECT_EQ(s.store(result("k", 10), "other", {"a"}, since), Admit::Stored);
  EXPECT_EQ(s.entries(), 1u);
  EXPECT_EQ(readers(s, "db", "a"), Names{});

  since = s.seq();
  ASSERT_EQ(s.store(result("k2", 10), "db", {"a"}, since), Admit::Stored);
  EXPECT_EQ(s.invalidate_all("db"), 1u);   // a database it has seen
  EXPECT_EQ(s.store(result("k3", 10), "db", {"b"}, since), Admit::Raced);
  EXPECT_EQ(s.entries(), 1u);
}

TEST(ResultStore, RacedByAnInvalidationOfEverything) {
  ResultStore s(1 << 20);
  uint64_t since = s.seq();
  ASSERT_EQ(s.store(result("x", 10), "db", {"a"}, since), Admit::Stored);
  EXPECT_EQ(s.invalidate_all(""), 1u);
  EXPECT_EQ(s.store(result("k", 10), "db", {"a"}, since), Admit::Raced);
  EXPECT_EQ(s.store(result("k", 10), "never-seen", {}, since), Admit::Raced);
  EXPECT_EQ(s.entries(), 0u);
  EXPECT_EQ(s.bytes(), 0u);
  EXPECT_EQ(s.store(result("k", 10), "db", {"a"}, s.seq()), Admit::Stored);
}

TEST(ResultStore, UnrelatedInvalidationsDoNotRace) {
  ResultStore s(1 << 20);
  uint64_t since = s.seq();
  EXPECT_EQ(s.invalidate("db", {"other"}), 0u);    // another relation
  EXPECT_EQ(s.invalidate("db2", {"a"}), 0u);       // the same relation in another database
  EXPECT_EQ(s.invalidate_all("db2"), 0u);          // another database
  EXPECT_EQ(s.seq(), 3u);
  EXPECT_EQ(s.store(result("k", 10), "db", {"a", "b"}, since), Admit::Stored);
  EXPECT_EQ(s.entries(), 1u);
}

// Invalidations naming ever new relations (any database user may NOTIFY) keep a
// bounded number of scopes; past the bound, a store started before counts as raced.
TEST(ResultStore, ScopesOfInvalidatedNamesAreBounded) {
  ResultStore s(1 << 20);
  ASSERT_EQ(s.store(result("kept", 10), "db", {"a"}, s.seq()), Admit::Stored);
  uint64_t since = s.seq();
  for (int i = 0; i < 70000; i++) s.invalidate("db", {"n" + std::to_string(i)});
  EXPECT_LE(s.scopes(), 65536u + 2);
  EXPECT_NE(s.find("kept", t0), nullptr);   // entries stay
  EXPECT_EQ(readers(s, "db", "a"), Names{"kept"});
  EXPECT_EQ(s.store(result("k", 10), "db", {"b"}, since), Admit::Raced);
  EXPECT_EQ(s.store(result("k", 10), "db", {"b"}, s.seq()), Admit::Stored);
}

TEST(ResultStore, StoreWithSinceAtOrAfterTheLatestInvalidationSucceeds) {
  ResultStore s(1 << 20);
  s.invalidate("db", {"a"});
  s.invalidate_all("db");
  s.invalidate_all("");
  ASSERT_EQ(s.seq(), 3u);
  EXPECT_EQ(s.store(result("k1", 10), "db", {"a"}, 2), Admit::Raced);
  EXPECT_EQ(s.store(result("k1", 10), "db", {"a"}, 3), Admit::Stored);
  EXPECT_EQ(s.store(result("k2", 10), "db", {"a"}, 4), Admit::Stored);
  s.invalidate("db", {"b"});   // seq 4: k3 reads only a
  EXPECT_EQ(s.store(result("k3", 10), "db", {"a"}, 3), Admit::Stored);
  EXPECT_EQ(s.store(result("k4", 10), "db", {"b"}, 3), Admit::Raced);
  EXPECT_EQ(s.entries(), 3u);
}

TEST(ResultStore, EvictionsCountOnlyWhatMakesRoom) {
  size_t each = ResultStore::charge(result("k0", 100), 1);
  ResultStore s(4 * each);
  for (int i = 0; i < 10; i++)
    ASSERT_EQ(s.store(result("k" + std::to_string(i), 100), "db", {"a"}, 0), Admit::Stored);
  EXPECT_EQ(s.evictions(), 6u);
  EXPECT_EQ(s.entries(), 4u);
  EXPECT_EQ(readers(s, "db", "a"), (Names{"k6", "k7", "k8", "k9"}));

  ASSERT_EQ(s.store(result("k9", 100), "db", {"a"}, 0), Admit::Stored);   // replacement
  EXPECT_EQ(s.find("k6", t0 + 1h), nullptr);                               // expiry
  EXPECT_EQ(s.expirations(), 1u);
  EXPECT_EQ(s.invalidate("db", {"a"}), 3u);
  EXPECT_EQ(s.evictions(), 6u);   // neither replacement, expiry nor invalidation is an eviction
}

// Random operations against a plain model of the same rules: the live keys, bytes(),
// entries() and evictions() match after every step, and bytes() never exceeds max.
TEST(ResultStore, MatchesAModelUnderRandomOperations) {
  struct Live {
    size_t charge;
    Names reads;
  };
  const size_t max = 12000;
  const Names relations = {"r0", "r1", "r2", "r3"};
  ResultStore s(max);
  std::list<std::string> lru;   // front: most recent
  std::map<std::string, Live> live;
  uint64_t evictions = 0;
  std::mt19937 rng(20240601);
  auto drop = [&](const std::string& k) {
    lru.remove(k);
    live.erase(k);
  };

  for (int step = 0; step < 20000; step++) {
    SCOPED_TRACE(step);
    std::string key = "k" + std::to_string(rng() % 40);
    unsigned op = rng() % 10;
    if (op < 6) {   // store
      Names reads;
      for (const std::string& r : relations)
        if (rng() % 3 == 0) reads.push_back(r);
      if (reads.empty()) reads.push_back(relations[rng() % relations.size()]);
      StoredResult r = result(key, rng() % 4000);
      size_t cost = ResultStore::charge(r, reads.size());
      Admit want = cost > max ? Admit::TooLarge : Admit::Stored;
      if (want == Admit::Stored) {
        size_t bytes = 0;
        drop(key);
        for (auto& [k, l] : live) bytes += l.charge;
        while (bytes + cost > max) {
          bytes -= live[lru.back()].charge;
          live.erase(lru.back());
          lru.pop_back();
          evictions++;
        }
        live[key] = {cost, reads};
        lru.push_front(key);
      }
      ASSERT_EQ(s.store(std::move(r), "db", reads, s.seq()), want);
    } else if (op < 9) {   // find (never expired here)
      bool present = live.count(key) > 0;
      ASSERT_EQ(s.find(key, t0) != nullptr, present);
      if (present) {
        lru.remove(key);
        lru.push_front(key);
      }
    } else {   // invalidate one relation
      const std::string& rel = relations[rng() % relations.size()];
      size_t n = 0;
      for (auto it = live.begin(); it != live.end();) {
        if (std::find(it->second.reads.begin(), it->second.reads.end(), rel) != it->second.reads.end()) {
          lru.remove(it->first);
          it = live.erase(it);
          n++;
        } else {
          ++it;
        }
      }
      ASSERT_EQ(s.invalidate("db", {rel}), n);
    }

    size_t bytes = 0;
    std::set<std::string> want_keys, got_keys;
    for (auto& [k, l] : live) {
      bytes += l.charge;
      want_keys.insert(k);
    }
    for (const std::string& rel : relations)
      for (const std::string& k : s.keys_reading("db", rel)) got_keys.insert(k);
    ASSERT_EQ(s.bytes(), bytes);
    ASSERT_LE(s.bytes(), max);
    ASSERT_EQ(s.entries(), live.size());
    ASSERT_EQ(s.evictions(), evictions);
    ASSERT_EQ(got_keys, want_keys);
  }
  EXPECT_GT(evictions, 100u);   // the run did exercise eviction
}

// ---------------------------------------------------------------- ValueCodec

// One protocol message: type byte, big-endian length (itself included), body.
std::string message(char type, const std::string& body) {
  uint32_t len = uint32_t(body.size() + 4);
  std::string m(1, type);
  for (int shift = 24; shift >= 0; shift -= 8) m.push_back(char(len >> shift));
  return m + body;
}
std::string be32(uint32_t v) { return {char(v >> 24), char(v >> 16), char(v >> 8), char(v)}; }
std::string be16(uint16_t v) { return {char(v >> 8), char(v)}; }

// RowDescription of text columns named by names.
std::string row_description(const Names& names) {
  std::string body = be16(uint16_t(names.size()));
  for (const std::string& n : names)
    body += n + '\0' + be32(0) + be16(0) + be32(25) + be16(0xffff) + be32(0xffffffff) + be16(0);
  return message('T', body);
}
std::string data_row(const Names& values) {
  std::string body = be16(uint16_t(values.size()));
  for (const std::string& v : values) body += be32(uint32_t(v.size())) + v;
  return message('D', body);
}
std::string command_complete(const std::string& tag) { return message('C', tag + '\0'); }

// T D D C: a typical small SELECT.
std::string small_response() {
  return row_description({"id", "name"}) + data_row({"1", "alice"}) + data_row({"2", "bob"}) +
         command_complete("SELECT 2");
}
// About 100 kB of similar rows: compresses well.
std::string repetitive_response() {
  std::string r = row_description({"id", "name", "email"});
  for (int i = 0; i < 1500; i++)
    r += data_row({std::to_string(i), "user number " + std::to_string(i), "user" + std::to_string(i) + "@example.com"});
  return r + command_complete("SELECT 1500");
}
// About 100 kB of random bytes in DataRows, no RowDescription: does not compress.
std::string random_response() {
  std::mt19937 rng(7);
  std::string r;
  for (int i = 0; i < 100; i++) {
    std::string v(1000, '\0');
    for (char& c : v) c = char(rng());
    r += data_row({v});
  }
  return r + command_complete("SELECT 100");
}

bool valid(std::string_view bytes) {
  bool has_row_description = false;
  return cache::valid_response(bytes, has_row_description);
}

TEST(ValueCodec, ValidResponseAcceptsWholeResults) {
  bool rd = false;
  EXPECT_TRUE(cache::valid_response(small_response(), rd));
  EXPECT_TRUE(rd);
  rd = true;
  EXPECT_TRUE(cache::valid_response(data_row({"1"}) + command_complete("SELECT 1"), rd));   // D C, no T
  EXPECT_FALSE(rd);
  rd = true;
  EXPECT_TRUE(cache::valid_response(command_complete("SELECT 0"), rd));   // C alone
  EXPECT_FALSE(rd);
  EXPECT_TRUE(cache::valid_response(row_description({"x"}) + command_complete("SELECT 0"), rd));   // T C
  EXPECT_TRUE(rd);
  EXPECT_TRUE(valid(message('C', "")));                              // shortest message: length 4
  EXPECT_TRUE(valid(message('T', "") + message('D', "") + message('C', "")));
  EXPECT_TRUE(valid(repetitive_response()));
  EXPECT_TRUE(valid(random_response()));
}

TEST(ValueCodec, ValidResponseRejectsAnythingElse) {
  std::string whole = small_response();
  std::string c = command_complete("SELECT 1");
  EXPECT_FALSE(valid(""));
  for (size_t n = 0; n < whole.size(); n++) EXPECT_FALSE(valid(whole.substr(0, n))) << "prefix of " << n;
  EXPECT_FALSE(valid(whole + "x"));                                   // trailing byte after C
  EXPECT_FALSE(valid(whole + c));                                     // a second C
  EXPECT_FALSE(valid(whole + data_row({"3"})));                       // a row after C
  EXPECT_FALSE(valid(row_description({"a"}) + data_row({"1"})));      // no C
  EXPECT_FALSE(valid(message('E', "SERROR\0") + c));                  // ErrorResponse
  EXPECT_FALSE(valid(data_row({"1"}) + message('N', "notice") + c));  // NoticeResponse
  EXPECT_FALSE(valid(message('Z', "I")));                             // ReadyForQuery
  EXPECT_FALSE(valid(message('d', "")));                              // case matters
  EXPECT_FALSE(valid(data_row({"1"}) + row_description({"a"}) + c));  // T not first
  EXPECT_FALSE(valid(row_description({"a"}) + row_description({"a"}) + c));
  for (uint32_t len : {0u, 1u, 3u}) {                                 // length < 4
    SCOPED_TRACE(len);
    EXPECT_FALSE(valid("C" + be32(len) + std::string(8, '\0')));
    EXPECT_FALSE(valid("D" + be32(len) + c));
  }
  EXPECT_FALSE(valid("C" + be32(6) + "x"));                           // length past the end
  EXPECT_FALSE(valid("D" + be32(0xffffffff) + c));
  EXPECT_FALSE(valid("D" + be32(0x7fffffff) + c));
}

const std::string kKey = std::string("db\0SELECT * FROM users WHERE id = $1\0", 37) + "\x01\x02params";

std::string encode(const std::string& response, conf::Compression compression, const std::string& key = kKey) {
  return cache::encode_value(key, response, compression);
}
bool decodes(std::string_view stored, const std::string& key = kKey) {
  std::string response;
  bool has_row_description = false;
  return cache::decode_value(stored, key, response, has_row_description);
}

// The fixed layout ahead of the payload: magic(5) flags(1) key length(4) key, length(4) CRC(4).
size_t header_size(const std::string& key = kKey) { return 5 + 1 + 4 + key.size() + 4 + 4; }

TEST(ValueCodec, RoundTrips) {
  struct Case {
    const char* name;
    std::string response;
    bool has_row_description;
    int zstd_shrinks;   // 1 yes, 0 no, -1 zstd's call
  };
  std::vector<Case> cases = {{"small", small_response(), true, -1},
                             {"repetitive", repetitive_response(), true, 1},
                             {"random", random_response(), false, 0},
                             {"C alone", command_complete("SELECT 0"), false, 0}};
  for (const Case& c : cases) {
    for (auto compression : {conf::Compression::Zstd, conf::Compression::None}) {
      SCOPED_TRACE(std::string(c.name) + (compression == conf::Compression::Zstd ? " zstd" : " none"));
      std::string stored = encode(c.response, compression);
      ASSERT_EQ(stored.substr(0, 5), "PGSC1");
      std::string response = "stale";
      bool has_row_description = !c.has_row_description;
      ASSERT_TRUE(cache::decode_value(stored, kKey, response, has_row_description));
      EXPECT_EQ(response, c.response);
      EXPECT_EQ(has_row_description, c.has_row_description);
      // Stored raw unless compression is on and it shrinks the response.
      bool compressed = stored[5] == 1;
      if (compression == conf::Compression::None) {
        EXPECT_FALSE(compressed);
      } else if (c.zstd_shrinks >= 0) {
        EXPECT_EQ(compressed, c.zstd_shrinks == 1);
      }
      if (compressed) {
        EXPECT_LT(stored.size(), header_size() + c.response.size());
        if (c.zstd_shrinks == 1) {
          EXPECT_LT(stored.size(), c.response.size() / 5);
        }
      } else {
        EXPECT_EQ(stored, stored.substr(0, header_size()) + c.response);
      }
    }
  }
}

TEST(ValueCodec, DecodeRejectsAnotherKey) {
  std::string stored = encode(small_response(), conf::Compression::None);
  ASSERT_TRUE(decodes(stored));
  std::string last = kKey;
  last.back() ^= 1;
  EXPECT_FALSE(decodes(stored, last));
  EXPECT_FALSE(decodes(stored, kKey.substr(0, kKey.size() - 1)));
  EXPECT_FALSE(decodes(stored, kKey + "x"));
  EXPECT_FALSE(decodes(stored, ""));
  EXPECT_FALSE(decodes(stored, "db"));   // the key up to its first NUL
  EXPECT_TRUE(decodes(encode(small_response(), conf::Compression::None, ""), ""));
}

TEST(ValueCodec, DecodeRejectsAResponseThatIsNotWellFormed) {
  EXPECT_FALSE(decodes(encode("hello", conf::Compression::None)));
  EXPECT_FALSE(decodes(encode("", conf::Compression::None)));
  std::string trailing = repetitive_response() + "x";   // compressed, CRC right, still not a response
  std::string stored = encode(trailing, conf::Compression::Zstd);
  ASSERT_EQ(stored[5], 1);
  EXPECT_FALSE(decodes(stored));
}

// Twenty equal rows: small, but zstd still shrinks it.
std::string small_compressible_response() {
  std::string r;
  for (int i = 0; i < 20; i++) r += data_row({"row", "same value"});
  return r + command_complete("SELECT 20");
}

// Flips stored[i] by mask and decodes. The header and a raw payload must be rejected.
// In a zstd frame a few bits are ignored by the format (the descriptor's unused bit,
// some padding): such a flip may decode, but only to the very same response. Returns
// true if the flip was ignored that way.
bool flip_is_caught_or_harmless(const std::string& stored, const std::string& original, size_t i, uint8_t mask) {
  std::string bad = stored;
  bad[i] ^= char(mask);
  std::string response;
  bool has_row_description = false;
  if (!cache::decode_value(bad, kKey, response, has_row_description)) return false;
  bool in_frame = stored[5] == 1 && i >= header_size();
  EXPECT_TRUE(in_frame) << "byte " << i << " ^ " << int(mask) << " decoded";
  EXPECT_EQ(response, original) << "byte " << i << " ^ " << int(mask) << " decoded to another response";
  return true;
}

// Every byte of a small value flipped in turn, each of four ways.
TEST(ValueCodec, DecodeRejectsAnyFlippedByteOfASmallValue) {
  for (auto [response, compression] : {std::pair{small_response(), conf::Compression::None},
                                       std::pair{small_compressible_response(), conf::Compression::Zstd}}) {
    std::string stored = encode(response, compression);
    ASSERT_EQ(stored[5], compression == conf::Compression::Zstd ? 1 : 0);
    ASSERT_TRUE(decodes(stored));
    size_t tried = 0, ignored = 0;
    for (size_t i = 0; i < stored.size(); i++) {
      for (uint8_t mask : {0x01, 0x10, 0x80, 0xff}) {
        tried++;
        ignored += flip_is_caught_or_harmless(stored, response, i, mask);
      }
    }
    EXPECT_LE(ignored * 50, tried);   // a handful at most
  }
}

// For big values, a sample: the whole header and the frame's start, then every 97th byte.
TEST(ValueCodec, DecodeRejectsFlippedBytesOfABigValue) {
  for (const std::string& response : {repetitive_response(), random_response()}) {
    for (auto compression : {conf::Compression::Zstd, conf::Compression::None}) {
      std::string stored = encode(response, compression);
      ASSERT_TRUE(decodes(stored));
      SCOPED_TRACE(stored[5] == 1 ? "compressed" : "raw");
      size_t tried = 0, ignored = 0;
      for (size_t i = 0; i < stored.size(); i += i < header_size() + 64 ? 1 : 97) {
        for (uint8_t mask : {0x01, 0x10}) {
          tried++;
          ignored += flip_is_caught_or_harmless(stored, response, i, mask);
        }
      }
      ignored += flip_is_caught_or_harmless(stored, response, stored.size() - 1, 0x10);
      EXPECT_LE(ignored * 50, tried);
    }
  }
}

TEST(ValueCodec, DecodeRejectsTruncationAtEveryLength) {
  for (const std::string& stored : {encode(small_response(), conf::Compression::None),
                                    encode(small_compressible_response(), conf::Compression::Zstd)}) {
    ASSERT_TRUE(decodes(stored));
    for (size_t n = 0; n < stored.size(); n++) EXPECT_FALSE(decodes(stored.substr(0, n))) << "length " << n;
    EXPECT_FALSE(decodes(stored + '\0'));   // and one byte too many
  }
  std::string big = encode(repetitive_response(), conf::Compression::Zstd);
  for (size_t n = 0; n < big.size(); n += 61) EXPECT_FALSE(decodes(big.substr(0, n))) << "length " << n;
  EXPECT_FALSE(decodes(big.substr(0, big.size() - 1)));
}

TEST(ValueCodec, DecodeRejectsWrongMagicAndFlags) {
  std::string stored = encode(small_response(), conf::Compression::None);
  for (size_t i = 0; i < 5; i++) {
    std::string bad = stored;
    bad[i] = char(bad[i] + 1);
    EXPECT_FALSE(decodes(bad)) << "magic byte " << i;
  }
  EXPECT_FALSE(decodes("PGSC2" + stored.substr(5)));
  EXPECT_FALSE(decodes("pgsc1" + stored.substr(5)));
  for (char flags : {char(1), char(2), char(0x80), char(0xff)}) {   // raw payload under other flags
    std::string bad = stored;
    bad[5] = flags;
    EXPECT_FALSE(decodes(bad)) << "flags " << int(uint8_t(flags));
  }
}

// Replaces the value's length field (after magic, flags, key length, key).
std::string with_length(std::string stored, uint32_t length, const std::string& key = kKey) {
  return stored.replace(5 + 1 + 4 + key.size(), 4, be32(length));
}
// The header of a stored value with another payload: length and CRC as encode_value
// writes them for `claimed`, flags as given.
std::string header_for(const std::string& claimed, uint8_t flags) {
  std::string h = encode(claimed, conf::Compression::None).substr(0, header_size());
  h[5] = char(flags);
  return h;
}
// A zstd frame of content, its header rewritten to declare content_size (8-byte field).
std::string zstd_frame_declaring(const std::string& content, uint64_t content_size) {
  std::string frame(ZSTD_compressBound(content.size()), '\0');
  size_t n = ZSTD_compress(frame.data(), frame.size(), content.data(), content.size(), 1);
  EXPECT_FALSE(ZSTD_isError(n));
  frame.resize(n);
  // Frame header (RFC 8878 3.1.1.1): magic, descriptor, [window], [dictionary id], [content size].
  uint8_t fhd = uint8_t(frame[4]);
  bool single_segment = fhd & 0x20;
  EXPECT_EQ(fhd & 0x03, 0);   // no dictionary id
  size_t fcs_bytes[] = {single_segment ? 1u : 0u, 2, 4, 8};
  size_t header = 5 + (single_segment ? 0 : 1) + fcs_bytes[fhd >> 6];
  std::string out = frame.substr(0, 4);
  out.push_back(char(0xC0 | 0x20 | (fhd & 0x04)));   // 8-byte content size, single segment, checksum as it was
  for (int i = 0; i < 8; i++) out.push_back(char(content_size >> (8 * i)));
  out += frame.substr(header);
  EXPECT_EQ(ZSTD_getFrameContentSize(out.data(), out.size()), content_size);
  return out;
}

TEST(ValueCodec, DecodeRejectsImpossibleLengths) {
  std::string raw = encode(small_response(), conf::Compression::None);
  std::string zstd = encode(repetitive_response(), conf::Compression::Zstd);
  ASSERT_EQ(zstd[5], 1);
  for (uint32_t length : {0u, 1u, uint32_t(small_response().size() - 1), uint32_t(small_response().size() + 1),
                          (1u << 30) + 1, 0x7fffffffu, 0xffffffffu}) {
    SCOPED_TRACE(length);
    EXPECT_FALSE(decodes(with_length(raw, length)));
    EXPECT_FALSE(decodes(with_length(zstd, length)));
  }
  std::string bad_key_length = raw;
  bad_key_length.replace(6, 4, be32(0xffffffff));
  EXPECT_FALSE(decodes(bad_key_length));
  bad_key_length.replace(6, 4, be32(uint32_t(kKey.size() + 1)));
  // Its last byte is the length field's high byte (0): the key matches, every field after is misaligned.
  EXPECT_FALSE(decodes(bad_key_length, kKey + '\0'));
}

// The frame's own content size and the value's length agree, but the frame holds
// more or less than that. Length and CRC are those of the declared prefix, which is
// itself a valid response: only the decompressor's size check stands in the way.
TEST(ValueCodec, DecodeRejectsAZstdFrameWithALyingContentSize) {
  std::string prefix = repetitive_response();
  std::string longer = prefix + repetitive_response();   // prefix is a valid response on its own
  std::string shorter = prefix.substr(0, prefix.size() / 2);
  ASSERT_TRUE(decodes(header_for(prefix, 1) + zstd_frame_declaring(prefix, prefix.size())));   // the honest one

  EXPECT_FALSE(decodes(header_for(prefix, 1) + zstd_frame_declaring(longer, prefix.size())));
  EXPECT_FALSE(decodes(header_for(prefix, 1) + zstd_frame_declaring(shorter, prefix.size())));
  // Frame and value disagree on the size.
  EXPECT_FALSE(decodes(header_for(prefix, 1) + zstd_frame_declaring(prefix, prefix.size() + 1)));
  EXPECT_FALSE(decodes(header_for(prefix, 1) + zstd_frame_declaring(prefix, prefix.size() - 1)));
  // A frame that does not say its size at all.
  std::string unknown(ZSTD_compressBound(prefix.size()), '\0');
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 0);
  size_t n = ZSTD_compress2(cctx, unknown.data(), unknown.size(), prefix.data(), prefix.size());
  ZSTD_freeCCtx(cctx);
  ASSERT_FALSE(ZSTD_isError(n));
  unknown.resize(n);
  ASSERT_EQ(ZSTD_getFrameContentSize(unknown.data(), unknown.size()), ZSTD_CONTENTSIZE_UNKNOWN);
  EXPECT_FALSE(decodes(header_for(prefix, 1) + unknown));
}

// In a child process: 0 if stored is rejected within 256 MiB more address space,
// 2 if it is accepted, 3 if decoding ran out of memory, 4 if the limit could not be set.
int decode_with_little_memory(const std::string& stored) {
  long pages = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld", &pages) != 1) pages = 0;
    std::fclose(f);
  }
  rlim_t budget = rlim_t(pages) * rlim_t(sysconf(_SC_PAGESIZE)) + (rlim_t(256) << 20);
  rlimit limit{budget, budget};
  if (pages == 0 || setrlimit(RLIMIT_AS, &limit) != 0) return 4;
  try {
    return decodes(stored) ? 2 : 0;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "decode_value allocated the declared size\n");
    return 3;
  }
}

// A value of a few hundred bytes that declares a 1 GiB response (the most decode_value
// accepts) must be rejected without first allocating that much: values come from Redis
// and are untrusted.
TEST(ValueCodec, DecodeDoesNotAllocateWhatATinyValueDeclares) {
  const uint32_t declared = 1u << 30;
  std::string claimed = command_complete("SELECT 0");
  std::string stored = with_length(header_for(claimed, 1), declared) + zstd_frame_declaring(claimed, declared);
  ASSERT_LT(stored.size(), 200u);
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(std::_Exit(decode_with_little_memory(stored)), ::testing::ExitedWithCode(0), "");
}

// 64-bit FNV-1a (offset basis 14695981039346656037, prime 1099511628211), as hex.
std::string fnv1a_hex(std::string_view bytes) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : bytes) h = (h ^ c) * 1099511628211ull;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

// What value_codec.cpp says it computes: FNV-1a over the key forwards, then backwards.
TEST(ValueCodec, KeyDigestIsFnv1aForwardsAndBackwards) {
  EXPECT_EQ(cache::key_digest(""), "cbf29ce484222325cbf29ce484222325");   // the offset basis twice
  EXPECT_EQ(cache::key_digest("a"), "af63dc4c8601ec8caf63dc4c8601ec8c");   // a palindrome: halves agree
  for (std::string key : {std::string("ab"), kKey, std::string(1000, 'q') + "!"}) {
    std::string reversed(key.rbegin(), key.rend());
    EXPECT_EQ(cache::key_digest(key), fnv1a_hex(key) + fnv1a_hex(reversed));
  }
}

TEST(ValueCodec, KeyDigestIs32HexDigitsAndStable) {
  std::string d = cache::key_digest(kKey);
  ASSERT_EQ(d.size(), 32u);
  EXPECT_EQ(d.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_EQ(cache::key_digest(kKey), d);
  EXPECT_EQ(cache::key_digest(std::string(kKey)), d);
  EXPECT_NE(cache::key_digest("ab"), cache::key_digest("ba"));
  EXPECT_NE(cache::key_digest(std::string("a\0", 2)), cache::key_digest("a"));
}

TEST(ValueCodec, KeyDigestsOfDifferentKeysDiffer) {
  std::unordered_set<std::string> seen;
  size_t keys = 0;
  for (int i = 0; i < 2000; i++) {
    std::string n = std::to_string(i);
    for (const std::string& key : {std::string("db\0SELECT * FROM t WHERE id = ", 30) + n,
                                   std::string("db2\0SELECT * FROM t WHERE id = ", 31) + n, n + '\0' + n, n}) {
      std::string d = cache::key_digest(key);
      ASSERT_EQ(d.size(), 32u);
      EXPECT_TRUE(seen.insert(d).second) << "collision for key " << i;
      keys++;
    }
  }
  EXPECT_EQ(seen.size(), keys);
}

}  // namespace

// The admission filter: a key is admitted on its second miss; the filter is
// bounded, forgetting everything after kMaxKeys remembered keys.
TEST(Doorkeeper, AdmitsOnTheSecondMissAndForgetsPastItsBound) {
  cache::Doorkeeper d;
  EXPECT_FALSE(d.missed_before("a"));
  EXPECT_TRUE(d.missed_before("a"));
  EXPECT_TRUE(d.missed_before("a"));
  EXPECT_FALSE(d.missed_before("b"));
  size_t admitted_first = 0;   // false positives among new keys, while filling
  for (size_t i = 0; i + 2 < cache::Doorkeeper::kMaxKeys; i++)
    if (d.missed_before("k" + std::to_string(i))) admitted_first++;
  EXPECT_LT(admitted_first, cache::Doorkeeper::kMaxKeys / 20) << "more than 5% false positives";
  EXPECT_TRUE(d.missed_before("a"));
  // Twice the bound of new keys: cleared at least once since "a" was remembered.
  for (size_t i = 0; i < 2 * cache::Doorkeeper::kMaxKeys; i++) d.missed_before("m" + std::to_string(i));
  EXPECT_FALSE(d.missed_before("a")) << "not forgotten";
  EXPECT_TRUE(d.missed_before("a"));
}
