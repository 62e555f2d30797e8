#include "lockd/locks.h"

#include <prometheus/histogram.h>

#include <algorithm>
#include <random>

#include "conf/log.h"
#include "lockd/manifest.h"
#include "lockd/timer.h"

namespace lockd {
namespace {

constexpr int64_t kFirstBackoffMs = 5, kMaxBackoffMs = 1000;
constexpr double kHoldWeight = 0.3;   // of the newest hold time in the moving average
constexpr const char* kChannel = "pgsidecar_locks";   // payload: "<key> <ticket, 0 = released> <instance>"
constexpr const char* kNoTicket = "9223372036854775807";   // a try-only request: newer than every ticket

constexpr int kStaleSeconds = 30;       // a ticket not refreshed this long is dropped (its sidecar stalled)
constexpr uint64_t kHeartbeatMs = 5000;  // how often a sidecar refreshes its tickets
constexpr int kMaxTicketing = 64;        // ticket INSERTs under way at once: bounds the queue one client can make

// The global queue: one row per waiter, on any sidecar (instance: its random id).
// A row counts while the session that wrote it lives (pid and start time in
// pg_stat_activity) and its sidecar refreshes it (seen_at); others are deleted
// before each try, in a statement of their own.
// Created when missing (a role without CREATE can use one made beforehand).
constexpr const char* kCreateQueue =
    "DO $$ BEGIN IF to_regclass('pgsidecar_lock_queue') IS NULL THEN CREATE TABLE pgsidecar_lock_queue ("
    " ticket bigserial PRIMARY KEY, key bigint NOT NULL, instance text NOT NULL, pid int NOT NULL,"
    " backend_start timestamptz, queued_at timestamptz NOT NULL DEFAULT now(),"
    " seen_at timestamptz NOT NULL DEFAULT now()); END IF; END $$";
// Answers: the ticket, and how many tickets of the name are older.
constexpr const char* kEnqueue =
    "WITH t AS (INSERT INTO pgsidecar_lock_queue (key, instance, pid, backend_start)"
    " SELECT $1::bigint, $2::text, pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
    " RETURNING ticket)"
    " SELECT t.ticket, (SELECT count(*) FROM pgsidecar_lock_queue WHERE key = $1::bigint),"
    " pg_notify('pgsidecar_locks', $1::bigint::text || ' ' || t.ticket || ' ' || $2::text) FROM t";
const std::string kClean =
    "DELETE FROM pgsidecar_lock_queue q WHERE q.key = $1::bigint AND (q.seen_at < now() - interval '" +
    std::to_string(kStaleSeconds) +
    " seconds' OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = q.pid"
    " AND (a.backend_start = q.backend_start OR a.backend_start IS NULL OR q.backend_start IS NULL)))";
// Takes the advisory lock only when no other sidecar ($3 is us) has a ticket older
// than $2. Answers: got, their older tickets, their oldest ticket, their tickets.
constexpr const char* kTry =
    "WITH n AS (SELECT count(*) FILTER (WHERE ticket < $2::bigint AND instance <> $3::text) AS ahead,"
    " min(ticket) FILTER (WHERE instance <> $3::text) AS first,"
    " count(*) FILTER (WHERE instance <> $3::text) AS remote FROM pgsidecar_lock_queue WHERE key = $1::bigint)"
    " SELECT CASE WHEN n.ahead = 0 THEN pg_try_advisory_lock($1::bigint) ELSE false END, n.ahead, n.first, n.remote"
    " FROM n";
constexpr const char* kDequeue = "DELETE FROM pgsidecar_lock_queue WHERE ticket = $1::bigint";
constexpr const char* kHeartbeat = "UPDATE pgsidecar_lock_queue SET seen_at = now() WHERE ticket = ANY ($1::bigint[])";
constexpr const char* kUnlock = "SELECT pg_advisory_unlock($1::bigint)";
constexpr const char* kRelease =
    "SELECT pg_advisory_unlock($1::bigint), pg_notify('pgsidecar_locks', $1::bigint::text || ' 0 ' || $2::text)";

int64_t ms_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

int64_t lock_key(const std::string& name) {
  std::array<unsigned char, 32> d = sha256("pgsidecar:lock:" + name);
  uint64_t k = 0;
  for (int i = 0; i < 8; i++) k = k << 8 | d[i];
  return static_cast<int64_t>(k);
}


LockTable::LockTable(uv_loop_t* loop, std::string conninfo, Deliver deliver, prometheus::Histogram* wait_seconds)
    : loop_(loop), pg_(loop, "lockd locks"), deliver_(std::move(deliver)), wait_seconds_(wait_seconds) {
  std::random_device rd;
  instance_ = std::to_string(uint64_t(rd()) << 32 | rd());
  pg_.configure(std::move(conninfo), {kChannel});
  pg_.on_down([this](bool was_up) {
    queue_created_ = false;
    if (was_up) on_connection_lost();
  });
  pg_.on_notify([this](const std::string&, const std::string& payload, int) { on_notify(payload); });
  heartbeat_ = make_timer(loop_, [this] {
    heartbeat();
    start_timer(heartbeat_, int64_t(kHeartbeatMs));
  });
  uv_unref(reinterpret_cast<uv_handle_t*>(heartbeat_));
  start_timer(heartbeat_, int64_t(kHeartbeatMs));
}

// Our tickets stay fresh while we run; a stalled sidecar's go stale and are dropped.
void LockTable::heartbeat() {
  std::string tickets;
  for (const auto& [name, l] : locks_)
    for (const Waiter& w : l.waiters)
      if (w.ticket) tickets += (tickets.empty() ? "" : ",") + std::to_string(w.ticket);
  if (!tickets.empty()) pg_.query(kHeartbeat, {"{" + tickets + "}"}, [](pq::QueryResult) {});
}

void LockTable::ensure_queue() {
  if (std::exchange(queue_created_, true)) return;
  pg_.query(kCreateQueue, {}, [](pq::QueryResult r) {
    // Another sidecar creating it at the same moment: 42P07 or 23505, and it exists.
    if (r.ok || r.connection_failed || r.sqlstate == "42P07" || r.sqlstate == "23505") return;
    LOG_WARN("lockd: cannot create the lock queue table pgsidecar_lock_queue: %s (lockd's login needs CREATE "
             "on the schema, or the table made beforehand: docs/lockd-protocol.md)", r.message.c_str());
  });
}

LockTable::~LockTable() { stop(); }

void LockTable::stop() {
  if (heartbeat_) close_timer(std::exchange(heartbeat_, nullptr));
  for (auto& [name, l] : locks_) {
    for (Waiter& w : l.waiters)
      if (w.timer) close_timer(w.timer);
    if (l.retry) close_timer(l.retry);
  }
  locks_.clear();
  owned_.clear();
  pg_.stop();
}

std::string LockTable::acquire(Owner owner, const std::string& name, int64_t timeout_ms) {
  // Refusals create no entry.
  if (auto found = locks_.find(name); found != locks_.end()) {
    const Lock& l = found->second;
    if (l.holder == owner) return "already_held";
    for (const Waiter& w : l.waiters)
      if (w.owner == owner) return "already_held";
  }
  if (owned(owner) >= kMaxPerOwner) return "too_many_locks";
  auto [it, created] = locks_.try_emplace(name);
  Lock& l = it->second;
  if (created) {
    l.name = name;
    l.key = std::to_string(lock_key(name));
  }
  owned_[owner]++;
  const bool try_only = timeout_ms == 0;
  if (try_only && (l.holder != 0 || !l.waiters.empty())) {   // not free here: no need to ask PostgreSQL
    l.waiters.push_back({owner, Clock::now(), true});
    drop_waiter(l, l.waiters.size() - 1, LockEvent(LockEvent::Kind::Timeout, name));
    return "";
  }
  l.waiters.push_back({owner, Clock::now(), try_only});
  if (timeout_ms > 0) arm_timeout(l, l.waiters.back(), timeout_ms);
  pump(l);
  return "";
}

void LockTable::arm_timeout(Lock& l, Waiter& w, int64_t timeout_ms) {
  w.timer = make_timer(loop_, [this, name = l.name, owner = w.owner] {
    auto it = locks_.find(name);
    if (it == locks_.end()) return;
    Lock& lk = it->second;
    for (size_t i = 0; i < lk.waiters.size(); i++) {
      if (lk.waiters[i].owner != owner) continue;
      stats_.timeouts++;
      drop_waiter(lk, i, LockEvent(LockEvent::Kind::Timeout, name));
      pump(lk);   // it may have been the one the lock waited for
      return erase_if_unused(name);
    }
  });
  start_timer(w.timer, timeout_ms);
}

// Tells waiter i that it waits, once: position 1 + the waiters ahead of it, on
// every host (1 = next).
void LockTable::tell_queued(Lock& l, size_t i, int ahead) {
  Waiter& w = l.waiters[i];
  if (w.told_queued) return;
  w.told_queued = true;
  stats_.waits++;
  LockEvent e{LockEvent::Kind::Queued, l.name};
  e.position = ahead + 1;
  e.estimate_ms = estimate(l, size_t(ahead));
  e.waited_ms = ms_since(w.since);
  deliver_(w.owner, e);
}

std::optional<int64_t> LockTable::estimate(const Lock& l, size_t ahead) const {
  if (!l.avg_hold_ms) return std::nullopt;
  double current = l.holder ? std::max(0.0, *l.avg_hold_ms - double(ms_since(l.held_since))) : 0.0;
  return int64_t(current + *l.avg_hold_ms * double(ahead));
}

// Moves the lock on: hand it to the next waiter if its ticket is the oldest, give
// the advisory lock up if another host's is, or ask PostgreSQL for it.
void LockTable::pump(Lock& l) {
  request_tickets(l);
  if (l.holder != 0) return;
  if (l.waiters.empty()) {
    if (l.pg == Pg::Held) release_pg(l);
    return;
  }
  const Waiter& front = l.waiters.front();
  if (!front.try_only && front.ticket == 0) return;   // runs again when its ticket comes
  if (l.pg == Pg::Held) {
    if (!l.remote_first || (!front.try_only && front.ticket < *l.remote_first)) return grant(l);
    if (front.try_only) {
      drop_waiter(l, 0, LockEvent(LockEvent::Kind::Timeout, l.name));
      return pump(l);
    }
    stats_.handoffs++;   // another host's waiter came first: its turn
    return release_pg(l);
  }
  if (l.pg == Pg::None) try_lock(l);
}

// Every waiter (but try-only ones) gets a ticket, in local order, at most
// kMaxTicketing under way at once.
void LockTable::request_tickets(Lock& l) {
  for (Waiter& w : l.waiters) {
    if (w.try_only || w.ticket != 0 || w.ticketing != 0) continue;
    if (ticketing_ >= kMaxTicketing) {
      ticket_starved_ = true;
      return;
    }
    ensure_queue();
    ticketing_++;
    w.ticketing = ++ticket_seq_;
    pg_.query(kEnqueue, {l.key, instance_},
              [this, name = l.name, owner = w.owner, seq = w.ticketing](pq::QueryResult r) {
                on_ticket(name, owner, seq, r);
              });
  }
}

void LockTable::on_ticket(const std::string& name, Owner owner, uint64_t seq, const pq::QueryResult& r) {
  ticketing_--;
  on_ticket_for(name, owner, seq, r);
  if (std::exchange(ticket_starved_, false)) {   // waiters elsewhere wait for room to ask for theirs
    for (const std::string& n : names()) {
      auto it = locks_.find(n);
      if (it != locks_.end()) pump(it->second);
    }
  }
}

void LockTable::on_ticket_for(const std::string& name, Owner owner, uint64_t seq, const pq::QueryResult& r) {
  int64_t ticket = r.ok && !r.rows.empty() && r.rows[0].size() >= 2 && r.rows[0][0] ? std::stoll(*r.rows[0][0]) : 0;
  auto it = locks_.find(name);
  Lock* l = it == locks_.end() ? nullptr : &it->second;
  size_t i = 0;
  while (l && i < l->waiters.size() && !(l->waiters[i].owner == owner && l->waiters[i].ticketing == seq)) i++;
  if (!l || i == l->waiters.size()) {   // the waiter left meanwhile (or the connection was lost)
    if (ticket) drop_ticket(ticket);
    return;
  }
  if (!ticket) {   // this waiter cannot queue; the others go on (and a lock held for it goes)
    drop_waiter(*l, i, LockEvent(LockEvent::Kind::Unavailable, name, r.ok ? "no ticket was returned" : r.message));
    pump(*l);
    return erase_if_unused(name);
  }
  Waiter& w = l->waiters[i];
  w.ticketing = 0;
  w.ticket = ticket;
  // Behind a holder or another waiter here: it waits. The front of a free lock is
  // told when PostgreSQL says another host comes first.
  if (l->holder != 0 || i > 0) tell_queued(*l, i, r.rows[0][1] ? std::stoi(*r.rows[0][1]) : int(i));
  pump(*l);
}

// Drops dead and stale tickets of the name, then tries: two statements, so that
// an error in the cleanup cannot come after the advisory lock was taken.
void LockTable::try_lock(Lock& l) {
  l.pg = Pg::Acquiring;
  const Waiter& front = l.waiters.front();
  ensure_queue();
  pg_.query(kClean, {l.key}, [](pq::QueryResult) {});
  pg_.query(kTry, {l.key, front.try_only ? kNoTicket : std::to_string(front.ticket), instance_},
            [this, name = l.name, key = l.key](pq::QueryResult r) { on_try_result(name, key, r); });
}

void LockTable::on_try_result(const std::string& name, const std::string& key, const pq::QueryResult& r) {
  const bool got = r.ok && !r.rows.empty() && r.rows[0].size() >= 4 && r.rows[0][0] == std::optional<std::string>("t");
  auto it = locks_.find(name);
  if (it == locks_.end()) {   // stopped meanwhile: nobody may keep what the try took
    if (got) pg_.query(kUnlock, {key}, [](pq::QueryResult) {});
    return;
  }
  Lock& l = it->second;
  if (!r.ok || r.rows.empty() || r.rows[0].size() < 4) {
    // A statement can fail after pg_try_advisory_lock took the lock (a timeout):
    // give it back (a WARNING only, if it was not taken).
    if (!r.connection_failed) pg_.query(kUnlock, {key}, [](pq::QueryResult) {});
    return fail_waiters(l, r.ok ? "no answer" : r.message);
  }
  const pq::Row& row = r.rows[0];
  const int ahead = row[1] ? std::stoi(*row[1]) : 0;
  l.remote_first = row[2] ? std::optional<int64_t>(std::stoll(*row[2])) : std::nullopt;
  l.remote_waiters = row[3] ? std::stoi(*row[3]) : 0;
  if (got) {
    l.pg = Pg::Held;
    l.backoff_ms = 0;
    l.poked = false;
    pump(l);
    return erase_if_unused(name);
  }
  // Held by another host, or another host's waiter comes first: retry when a
  // release is announced, or after a backoff; a try-only waiter ends here.
  stats_.contention++;
  l.pg = Pg::None;
  while (!l.waiters.empty() && l.waiters.front().try_only) drop_waiter(l, 0, LockEvent(LockEvent::Kind::Timeout, name));
  if (l.waiters.empty()) return erase_if_unused(name);
  if (l.waiters.front().ticket != 0) tell_queued(l, 0, ahead);
  backoff(l);
}

void LockTable::backoff(Lock& l) {
  l.pg = Pg::Backoff;
  l.backoff_ms = l.backoff_ms == 0 ? kFirstBackoffMs : std::min(kMaxBackoffMs, l.backoff_ms * 2);
  static thread_local std::mt19937 rng{std::random_device{}()};
  int64_t delay = std::uniform_int_distribution<int64_t>(l.backoff_ms / 2, l.backoff_ms)(rng);
  if (std::exchange(l.poked, false)) delay = 0;
  if (!l.retry) {
    l.retry = make_timer(loop_, [this, name = l.name] {
      auto it = locks_.find(name);
      if (it == locks_.end()) return;
      it->second.pg = Pg::None;
      pump(it->second);
    });
  }
  start_timer(l.retry, delay);
}

// "<key> <ticket> <instance>" from another sidecar: a new waiter there (we hold the
// lock: it may be older than ours), or a release (we wait: try now).
void LockTable::on_notify(const std::string& payload) {
  size_t a = payload.find(' '), b = a == std::string::npos ? a : payload.find(' ', a + 1);
  if (b == std::string::npos || payload.compare(b + 1, std::string::npos, instance_) == 0) return;
  const std::string key = payload.substr(0, a);
  const int64_t ticket = std::strtoll(payload.c_str() + a + 1, nullptr, 10);
  for (auto& [name, l] : locks_) {
    if (l.key != key) continue;
    if (ticket > 0) {
      l.remote_waiters++;
      if (!l.remote_first || ticket < *l.remote_first) l.remote_first = ticket;
    } else if (l.pg == Pg::Backoff) {
      uv_timer_stop(l.retry);
      l.pg = Pg::None;
      pump(l);
    } else if (l.pg == Pg::Acquiring) {
      l.poked = true;
    }
    return;
  }
}

void LockTable::grant(Lock& l) {
  Waiter w = l.waiters.front();
  l.waiters.pop_front();
  if (w.timer) close_timer(w.timer);
  if (w.ticket) drop_ticket(w.ticket);
  l.holder = w.owner;
  l.held_since = Clock::now();
  stats_.acquired++;
  auto waited = std::chrono::duration<double>(l.held_since - w.since);
  if (wait_seconds_) wait_seconds_->Observe(waited.count());
  LockEvent e{LockEvent::Kind::Held, l.name};
  e.waited_ms = std::chrono::duration_cast<std::chrono::milliseconds>(waited).count();
  deliver_(w.owner, e);
}

std::optional<int64_t> LockTable::release(Owner owner, const std::string& name) {
  auto it = locks_.find(name);
  if (it == locks_.end() || it->second.holder != owner) return std::nullopt;
  Lock& l = it->second;
  int64_t held = ms_since(l.held_since);
  l.avg_hold_ms = l.avg_hold_ms ? *l.avg_hold_ms * (1 - kHoldWeight) + double(held) * kHoldWeight : double(held);
  l.holder = 0;
  disown(owner);
  pump(l);   // the next local waiter, or the advisory lock goes
  return held;
}

void LockTable::release_pg(Lock& l) {
  l.pg = Pg::Releasing;
  l.remote_first.reset();   // another host consumes its tickets now: ask again next time
  std::string name = l.name;
  pg_.query(kRelease, {l.key, instance_}, [this, name](pq::QueryResult) {
    auto it = locks_.find(name);
    if (it == locks_.end()) return;
    it->second.pg = Pg::None;   // released, or the session is gone (which released it)
    pump(it->second);
    erase_if_unused(name);
  });
}

void LockTable::drop_ticket(int64_t ticket) {
  pg_.query(kDequeue, {std::to_string(ticket)}, [](pq::QueryResult) {});
}

// The try failed: nobody here can have the lock now. Every waiter is told, none
// is left hanging.
void LockTable::fail_waiters(Lock& l, const std::string& message) {
  std::string name = l.name;
  l.pg = Pg::None;
  while (!l.waiters.empty()) drop_waiter(l, 0, LockEvent(LockEvent::Kind::Unavailable, name, message));
  erase_if_unused(name);
}

void LockTable::drop_waiter(Lock& l, size_t i, std::optional<LockEvent> tell) {
  Waiter w = l.waiters[i];
  l.waiters.erase(l.waiters.begin() + long(i));
  disown(w.owner);
  if (w.timer) close_timer(w.timer);
  if (w.ticket) drop_ticket(w.ticket);   // a ticket still being written is dropped when it comes
  if (tell) {
    tell->waited_ms = ms_since(w.since);
    deliver_(w.owner, *tell);
  }
}

std::vector<std::string> LockTable::names() const {
  std::vector<std::string> out;
  for (const auto& [name, l] : locks_) out.push_back(name);
  return out;
}

void LockTable::forget(Owner owner) {
  for (const std::string& name : names()) {   // a copy: entries may be erased on the way
    auto it = locks_.find(name);
    if (it == locks_.end()) continue;
    Lock& l = it->second;
    for (size_t i = 0; i < l.waiters.size(); i++) {
      if (l.waiters[i].owner == owner) {
        drop_waiter(l, i, std::nullopt);
        if (i == 0) pump(l);
        break;
      }
    }
    if (l.holder == owner) release(owner, name);
    erase_if_unused(name);
  }
  owned_.erase(owner);
}

size_t LockTable::owned(Owner owner) const {
  auto it = owned_.find(owner);
  return it == owned_.end() ? 0 : it->second;
}

void LockTable::disown(Owner owner) {
  auto it = owned_.find(owner);
  if (it != owned_.end() && --it->second == 0) owned_.erase(it);
}

void LockTable::erase_if_unused(const std::string& name) {
  auto it = locks_.find(name);
  if (it == locks_.end()) return;
  Lock& l = it->second;
  if (l.holder != 0 || !l.waiters.empty()) return;
  if (l.pg == Pg::Backoff) l.pg = Pg::None;
  if (l.pg != Pg::None) return;
  if (l.retry) close_timer(l.retry);
  locks_.erase(it);
}

// The server released every advisory lock of the session, and its tickets are
// dead: holders are told. Waiters with a query under way hear database_unavailable
// from it (pq::Session fails those first); the others queue again on the next
// connection.
void LockTable::on_connection_lost() {
  for (const std::string& name : names()) {
    auto it = locks_.find(name);
    if (it == locks_.end()) continue;
    Lock& l = it->second;
    if (l.pg == Pg::Held || l.pg == Pg::Releasing) l.pg = Pg::None;
    l.remote_first.reset();
    for (Waiter& w : l.waiters) w.ticket = 0, w.ticketing = 0;
    if (l.holder != 0) {
      stats_.lost++;
      Owner holder = l.holder;
      l.holder = 0;
      disown(holder);
      LockEvent e{LockEvent::Kind::Lost, name};
      e.message = "the connection to PostgreSQL was lost, and the advisory lock with it; this lock is no longer held";
      deliver_(holder, e);
    }
    if (l.pg == Pg::None) pump(l);   // waiters queue again (and hear if the server is down)
    erase_if_unused(name);
  }
}

std::vector<LockInfo> LockTable::list(const std::string& only_name) const {
  std::vector<LockInfo> out;
  for (const auto& [name, l] : locks_) {
    if (!only_name.empty() && name != only_name) continue;
    out.push_back({name, l.holder != 0, l.holder ? ms_since(l.held_since) : 0, int(l.waiters.size()),
                   l.remote_waiters, estimate(l, l.waiters.size() + size_t(l.remote_waiters))});
  }
  if (out.empty() && !only_name.empty()) out.push_back({only_name, false, 0, 0, 0, std::nullopt});
  return out;
}

int LockTable::holders() const {
  int n = 0;
  for (const auto& [name, l] : locks_) n += l.holder != 0;
  return n;
}

int LockTable::waiters() const {
  int n = 0;
  for (const auto& [name, l] : locks_) n += int(l.waiters.size());
  return n;
}

}  // namespace lockd
