// Pool bookkeeping with in-memory members and waiters (no sockets): FIFO grants,
// limits, timeouts, login failures, parameter-keyed reuse.
#include "pool/pool.h"

#include <gtest/gtest.h>

#include <memory>
#include <vector>

namespace {

using namespace std::chrono_literals;

struct FakeMember : pool::Member {
  pool::Pool* pool = nullptr;
  bool closed = false;
  std::string check_sql;
  void run_check(const std::string& sql) override { check_sql = sql; }
  void close_member(std::string_view) override {
    if (closed) return;
    closed = true;
    pool->forget(this);
  }
};

struct FakeWaiter : pool::Waiter {
  explicit FakeWaiter(std::vector<int>* order = nullptr, int id = 0) : order(order), id(id) {}
  pool::Member* got = nullptr;
  std::string failed_code;
  std::vector<int>* order;
  int id;
  void granted(pool::Member* m) override {
    got = m;
    if (order) order->push_back(id);
  }
  void wait_failed(const pool::Failure& f) override { failed_code = f.code; }
};

struct PoolFixture : ::testing::Test {
  std::vector<std::unique_ptr<FakeMember>> launched;
  pool::DatabaseCounter counter;
  std::unique_ptr<pool::Pool> pool;

  void make(pool::Settings s) {
    pool = std::make_unique<pool::Pool>("db", "user", s, [this](pool::Pool& p, const std::string&) {
      launched.push_back(std::make_unique<FakeMember>());
      launched.back()->pool = &p;
      return launched.back().get();
    }, &counter);
  }
  static pool::Settings settings(int size) {
    pool::Settings s;
    s.size = size;
    s.check_query = "";
    return s;
  }
};

TEST_F(PoolFixture, LaunchesUpToSizeAndGrantsInFifoOrder) {
  make(settings(2));
  std::vector<int> order;
  FakeWaiter a(&order, 1), b(&order, 2), c(&order, 3);
  pool->acquire(&a, "");
  pool->acquire(&b, "");
  pool->acquire(&c, "");
  ASSERT_EQ(launched.size(), 2u);   // capped at size
  EXPECT_EQ(counter.servers, 2);
  pool->login_done(launched[0].get(), nullptr);
  pool->login_done(launched[1].get(), nullptr);
  EXPECT_EQ(order, (std::vector<int>{1, 2}));
  EXPECT_EQ(pool->stats().waiting, 1);
  pool->release(b.got);   // the second client's server goes to the third
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(c.got, launched[1].get());
  EXPECT_EQ(pool->stats().active, 2);
}

TEST_F(PoolFixture, IdleServerIsReusedWithoutLaunching) {
  make(settings(5));
  FakeWaiter a, b;
  pool->acquire(&a, "");
  pool->login_done(launched[0].get(), nullptr);
  pool->release(a.got);
  pool->acquire(&b, "");
  EXPECT_EQ(b.got, launched[0].get());
  EXPECT_EQ(launched.size(), 1u);
}

TEST_F(PoolFixture, WaitTimeoutFailsWith08P01) {
  auto s = settings(1);
  s.wait_timeout = 50ms;
  make(s);
  FakeWaiter a, b;
  pool->acquire(&a, "");
  pool->login_done(launched[0].get(), nullptr);
  pool->acquire(&b, "");
  pool->tick(pool::Clock::now() + 10ms);
  EXPECT_EQ(b.failed_code, "");
  pool->tick(pool::Clock::now() + 100ms);
  EXPECT_EQ(b.failed_code, "08P01");
  EXPECT_EQ(pool->stats().waiting, 0);
  EXPECT_EQ(pool->stats().wait_timeouts_total, 1u);
}

TEST_F(PoolFixture, LoginFailureFailsWaitersAndBacksOff) {
  auto s = settings(3);
  s.login_retry = 1s;
  make(s);
  FakeWaiter a, b, c;
  pool->acquire(&a, "");
  pool->acquire(&b, "");
  pool::Failure f{"FATAL", "28P01", "password authentication failed", {}};
  pool->login_done(launched[0].get(), &f);
  EXPECT_EQ(a.failed_code, "28P01");
  EXPECT_EQ(b.failed_code, "28P01");   // the second launch is still pending, but for the same key
  pool->login_done(launched[1].get(), &f);
  // Within login_retry, a new client fails at once instead of opening another doomed connection.
  size_t before = launched.size();
  pool->acquire(&c, "");
  EXPECT_EQ(c.failed_code, "28P01");
  EXPECT_EQ(launched.size(), before);
}

TEST_F(PoolFixture, CancelledWaiterIsNotGranted) {
  make(settings(1));
  FakeWaiter a, b;
  pool->acquire(&a, "");
  pool->acquire(&b, "");
  pool->cancel(&b);
  pool->login_done(launched[0].get(), nullptr);
  EXPECT_EQ(a.got, launched[0].get());
  pool->release(a.got);
  EXPECT_EQ(b.got, nullptr);
  EXPECT_EQ(pool->stats().idle, 1);
}

TEST_F(PoolFixture, ServersAreMatchedByParamsKey) {
  make(settings(1));
  FakeWaiter a, b;
  pool->acquire(&a, "options\0-c x=1\0");
  pool->login_done(launched[0].get(), nullptr);
  pool->release(a.got);
  // Pool full with an idle server of other parameters: it is replaced.
  pool->acquire(&b, "other");
  EXPECT_TRUE(launched[0]->closed);
  ASSERT_EQ(launched.size(), 2u);
  EXPECT_EQ(launched[1]->params_key, "other");
  pool->login_done(launched[1].get(), nullptr);
  EXPECT_EQ(b.got, launched[1].get());
}

TEST_F(PoolFixture, IdleTimeoutKeepsMinPoolSize) {
  auto s = settings(4);
  s.min_size = 1;
  s.idle_timeout = 10ms;
  make(s);
  pool->tick(pool::Clock::now());   // warm-up to min_pool_size
  ASSERT_EQ(launched.size(), 1u);
  pool->login_done(launched[0].get(), nullptr);
  FakeWaiter a, b;
  pool->acquire(&a, "");
  pool->acquire(&b, "");
  pool->login_done(launched[1].get(), nullptr);
  pool->release(a.got);
  pool->release(b.got);
  EXPECT_EQ(pool->stats().idle, 2);
  pool->tick(pool::Clock::now() + 1s);
  EXPECT_EQ(pool->total(), 1);   // one closed, min_pool_size kept
}

TEST_F(PoolFixture, LifetimeClosesOnRelease) {
  auto s = settings(2);
  s.lifetime = 0ms;   // use once
  make(s);
  FakeWaiter a;
  pool->acquire(&a, "");
  pool->login_done(launched[0].get(), nullptr);
  pool->release(a.got);
  EXPECT_TRUE(launched[0]->closed);
  EXPECT_EQ(pool->total(), 0);
}

TEST_F(PoolFixture, HealthCheckRunsOnLongIdleServer) {
  auto s = settings(2);
  s.check_query = "SELECT 1";
  s.check_delay = 0ms;
  make(s);
  FakeWaiter a, b;
  pool->acquire(&a, "");
  pool->login_done(launched[0].get(), nullptr);   // fresh login: no check
  EXPECT_EQ(a.got, launched[0].get());
  EXPECT_EQ(launched[0]->check_sql, "");
  pool->release(a.got);
  pool->acquire(&b, "");
  EXPECT_EQ(launched[0]->check_sql, "SELECT 1");
  EXPECT_EQ(b.got, nullptr);
  pool->check_done(launched[0].get(), false);     // failed check: closed, another launched
  EXPECT_TRUE(launched[0]->closed);
  ASSERT_EQ(launched.size(), 2u);
  pool->login_done(launched[1].get(), nullptr);
  EXPECT_EQ(b.got, launched[1].get());
}

TEST_F(PoolFixture, ReservePoolAfterTimeout) {
  auto s = settings(1);
  s.reserve_size = 1;
  s.reserve_timeout = 10ms;
  make(s);
  FakeWaiter a, b;
  pool->acquire(&a, "");
  pool->login_done(launched[0].get(), nullptr);
  pool->acquire(&b, "");
  EXPECT_EQ(launched.size(), 1u);
  pool->tick(pool::Clock::now() + 50ms);
  ASSERT_EQ(launched.size(), 2u);
  pool->login_done(launched[1].get(), nullptr);
  EXPECT_EQ(b.got, launched[1].get());
}

}  // namespace
