// Named locks, granted in one order across every sidecar sharing the database.
// Each waiter gets a ticket: a row in pgsidecar_lock_queue (bigserial, so tickets
// are ordered across hosts). A sidecar holds the name's PostgreSQL advisory lock
// (one dedicated connection) for its local waiters in turn while their tickets are
// older than every other host's; when another host's is older, it releases the
// advisory lock for that host. NOTIFY pgsidecar_locks carries new tickets and
// releases between hosts; retries with exponential backoff catch holders that died
// without one, whose tickets die with their session. A holder is an owner id (a
// lockd client connection). docs/lockd-protocol.md, "Named locks".
#pragma once
#include <uv.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "pq/session.h"

namespace prometheus {
class Histogram;
}

namespace lockd {

using Owner = uint64_t;

struct LockEvent {
  enum class Kind { Queued, Held, Timeout, Unavailable, Lost };
  LockEvent(Kind k, std::string n, std::string msg = "") : kind(k), name(std::move(n)), message(std::move(msg)) {}
  Kind kind;
  std::string name;
  int position = 0;                       // Queued: 1 = next
  std::optional<int64_t> estimate_ms;     // Queued: from recent hold times
  int64_t waited_ms = 0;                  // Held, Timeout
  std::string message;                    // Unavailable, Lost
};

struct LockInfo {
  std::string name;
  bool held = false;
  int64_t held_ms = 0;
  int waiters = 0;
  int remote_waiters = 0;                 // waiters on other sidecars, as last seen
  std::optional<int64_t> estimate_ms;     // for a new waiter
};

struct LockStats {
  uint64_t acquired = 0, waits = 0, timeouts = 0, contention = 0, lost = 0;
  uint64_t handoffs = 0;   // advisory lock released with local waiters left: another host's waiter was older
};

// 64-bit advisory lock key of a name: first 8 bytes of SHA-256("pgsidecar:lock:" + name).
int64_t lock_key(const std::string& name);

class LockTable {
 public:
  using Deliver = std::function<void(Owner, const LockEvent&)>;
  // Names one owner may hold or wait for at a time: bounds what one peer costs.
  static constexpr size_t kMaxPerOwner = 64;

  LockTable(uv_loop_t* loop, std::string conninfo, Deliver deliver, prometheus::Histogram* wait_seconds);
  ~LockTable();

  // Queues owner for name. Events follow through deliver: maybe Queued, then
  // exactly one of Held, Timeout, Unavailable. Returns an error code instead:
  // "already_held" when the owner holds or waits for name already,
  // "too_many_locks" when it holds or waits for kMaxPerOwner names.
  std::string acquire(Owner owner, const std::string& name, int64_t timeout_ms);
  // Releases a held lock; nullopt if owner does not hold it, else the hold time in ms.
  std::optional<int64_t> release(Owner owner, const std::string& name);
  // The owner is gone: its locks are released and its waits dropped, silently.
  void forget(Owner owner);
  // How many names the owner holds or waits for.
  size_t owned(Owner owner) const;
  std::vector<LockInfo> list(const std::string& only_name = "") const;
  const LockStats& stats() const { return stats_; }
  int holders() const;
  int waiters() const;
  void stop();

 private:
  using Clock = std::chrono::steady_clock;
  enum class Pg { None, Acquiring, Backoff, Held, Releasing };
  struct Waiter {
    Owner owner;
    Clock::time_point since;
    bool try_only;              // timeout 0: granted only if free now; no ticket
    bool told_queued = false;
    int64_t ticket = 0;         // its row in pgsidecar_lock_queue; 0 = none (yet)
    uint64_t ticketing = 0;     // the INSERT under way for it, by sequence number; 0 = none
    uv_timer_t* timer = nullptr;
  };
  struct Lock {
    std::string name, key;
    Owner holder = 0;
    Clock::time_point held_since{};
    std::deque<Waiter> waiters;
    Pg pg = Pg::None;
    std::optional<int64_t> remote_first;   // oldest live ticket of another host, as last seen
    int remote_waiters = 0;                // other hosts' live tickets, as last seen
    bool poked = false;                    // a release was announced while our try was under way
    int64_t backoff_ms = 0;
    uv_timer_t* retry = nullptr;
    std::optional<double> avg_hold_ms;   // moving average of recent hold times
  };

  void pump(Lock& l);
  void request_tickets(Lock& l);
  void on_ticket(const std::string& name, Owner owner, uint64_t seq, const pq::QueryResult& r);
  void on_ticket_for(const std::string& name, Owner owner, uint64_t seq, const pq::QueryResult& r);
  void ensure_queue();
  void heartbeat();
  void try_lock(Lock& l);
  void on_try_result(const std::string& name, const std::string& key, const pq::QueryResult& r);
  void backoff(Lock& l);
  void grant(Lock& l);
  void release_pg(Lock& l);
  void drop_waiter(Lock& l, size_t i, std::optional<LockEvent> tell);
  void drop_ticket(int64_t ticket);
  void fail_waiters(Lock& l, const std::string& message);
  void tell_queued(Lock& l, size_t i, int ahead);
  void on_notify(const std::string& payload);
  std::optional<int64_t> estimate(const Lock& l, size_t ahead) const;
  void erase_if_unused(const std::string& name);
  void on_connection_lost();
  std::vector<std::string> names() const;
  void arm_timeout(Lock& l, Waiter& w, int64_t timeout_ms);
  void disown(Owner owner);

  uv_loop_t* loop_;
  pq::Session pg_;
  std::string instance_;        // random id in our NOTIFY payloads, to ignore our own
  bool queue_created_ = false;  // CREATE TABLE IF NOT EXISTS sent on this connection
  uint64_t ticket_seq_ = 0;     // numbers the ticket INSERTs
  int ticketing_ = 0;           // ticket INSERTs under way
  bool ticket_starved_ = false; // a waiter waits for room to ask for its ticket
  uv_timer_t* heartbeat_ = nullptr;
  Deliver deliver_;
  prometheus::Histogram* wait_seconds_;
  std::map<std::string, Lock> locks_;
  std::unordered_map<Owner, size_t> owned_;   // names held or waited for, per owner (none: absent)
  LockStats stats_;
};

}  // namespace lockd
