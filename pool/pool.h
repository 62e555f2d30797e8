// A pool of server connections for one (database, user): sizes, warm-up, FIFO
// wait queue with timeout, idle timeout, lifetime, health check, login back-off.
// It knows servers only through pool::Member and clients only through
// pool::Waiter, so it depends on nothing in proxy/.
#pragma once
#include <chrono>
#include <deque>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "conf/config.h"

namespace pool {

using Clock = std::chrono::steady_clock;
using Time = Clock::time_point;

struct Settings {
  conf::PoolMode mode = conf::PoolMode::Session;
  int size = 20, min_size = 0, reserve_size = 0;
  int max_db_connections = 0;   // 0 = unlimited
  conf::Duration reserve_timeout{5000}, idle_timeout{600000}, lifetime{3600000}, check_delay{30000},
      wait_timeout{120000}, login_retry{2000}, connect_timeout{15000};
  std::string check_query = "SELECT 1";
};

// Why a client could not get a server: sent to it as an ErrorResponse.
struct Failure {
  std::string severity = "FATAL";
  std::string code;       // SQLSTATE
  std::string message;
  std::string detail;
};

class Pool;

// A server connection as the pool sees it.
class Member {
 public:
  enum class State { Launching, Idle, Checking, Granted };
  virtual ~Member() = default;
  // Runs a health-check query; the member answers with Pool::check_done.
  virtual void run_check(const std::string& sql) = 0;
  // Closes the connection; its close path must call Pool::forget.
  virtual void close_member(std::string_view reason) = 0;
  // Janitor work of the member itself (deadlines of its own queries); may close it.
  virtual void tick(Time) {}

  std::string params_key;   // startup parameters it was opened with (see Pool::acquire)
  State state = State::Launching;
  Time created{}, idle_since{};
  class Waiter* reserved_for = nullptr;   // the client a health check is running for
};

// A client waiting for a server.
class Waiter {
 public:
  virtual ~Waiter() = default;
  virtual void granted(Member* m) = 0;            // the member is now this client's
  virtual void wait_failed(const Failure& f) = 0;  // no server: timeout or login failure

  Time wait_start{};
  std::string_view wait_key;   // params_key wanted; points into the waiter
  bool waiting = false;
};

// Server counts of one database, shared by its pools for max_db_connections.
struct DatabaseCounter {
  int servers = 0;
};

struct Stats {
  int idle = 0, active = 0, launching = 0, checking = 0, waiting = 0;
  uint64_t launched_total = 0, login_failures_total = 0, wait_timeouts_total = 0;
  uint64_t queries_total = 0, transactions_total = 0;   // ReadyForQuery from a linked server; of those, back to idle
};

class Pool {
 public:
  // Starts a server connection for params_key; it reports back with login_done.
  using Launcher = std::function<Member*(Pool& pool, const std::string& params_key)>;

  Pool(std::string database, std::string user, Settings settings, Launcher launcher, DatabaseCounter* db);
  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  // Grants a server now (Waiter::granted runs before this returns) or queues the waiter.
  // params_key selects servers opened with the same startup parameters.
  void acquire(Waiter* w, std::string_view params_key);
  // Removes a waiter from the queue (client went away); harmless if not waiting.
  void cancel(Waiter* w);
  // A granted member comes back clean: to the first waiter that can use it, or idle.
  void release(Member* m);
  // Login of a launched member finished: failure == nullptr on success.
  void login_done(Member* m, const Failure* failure);
  void check_done(Member* m, bool ok);
  // The member is closed: drop every reference to it.
  void forget(Member* m);
  // Janitor work: timeouts, idle/lifetime closes, warm-up. Call about every 100 ms.
  void tick(Time now);
  void set_settings(const Settings& s);
  // Closes idle members (used on shutdown and by RECONNECT-style operations).
  void close_idle(std::string_view reason);
  // Closes every member, busy or not (end of shutdown).
  void close_all(std::string_view reason);
  // PAUSE: clients queue instead of getting servers; servers come back and stay idle.
  void pause() { paused_ = true; }
  void resume();
  bool paused() const { return paused_; }
  // RECONNECT: idle servers close now, busy ones when they come back.
  void reconnect();
  // Time the longest-waiting client has waited so far (0 if none).
  Clock::duration longest_wait(Time now) const {
    return waiters_.empty() ? Clock::duration{0} : now - waiters_.front()->wait_start;
  }
  template <class F>
  void for_each_member(F f) const {
    for (const Member* m : members_) f(*m);
  }

  const std::string& database() const { return database_; }
  const std::string& user() const { return user_; }
  const Settings& settings() const { return settings_; }
  Stats stats() const;
  // A linked server answered a query or Sync; transaction_ended if its status is idle again.
  void note_answered(bool transaction_ended) {
    counters_.queries_total++;
    if (transaction_ended) counters_.transactions_total++;
  }
  int total() const { return int(members_.size()); }

 private:
  void serve();
  void grant(Waiter* w, Member* m);
  Member* take_idle(std::string_view key);
  void launch_for_waiters(Time now);
  bool may_launch(Time now, bool for_waiter) const;
  void launch(const std::string& key);
  void fail_waiters(const Failure& f, std::string_view key);
  void remove_idle(Member* m);
  bool drop(Member* m);                          // forget without serving waiters
  void retire(Member* m, std::string_view reason);   // drop, then close

  std::string database_, user_;
  Settings settings_;
  Launcher launcher_;
  DatabaseCounter* db_;
  std::vector<Member*> members_;   // every member, any state
  std::vector<Member*> idle_;      // LIFO: the most recently used server is reused first
  std::deque<Waiter*> waiters_;    // FIFO
  Time retry_at_{};                // after a failed login, no new launches before this
  Failure last_failure_;
  Stats counters_;
  bool serving_ = false, serve_again_ = false;
  bool paused_ = false;
  Time reconnect_before_{};   // members created before this are closed when released
};

}  // namespace pool
