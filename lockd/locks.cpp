#include "lockd/locks.h"

#include <prometheus/histogram.h>

#include <algorithm>
#include <random>

#include "lockd/manifest.h"

namespace lockd {
namespace {

constexpr int64_t kFirstBackoffMs = 5, kMaxBackoffMs = 1000;
constexpr double kHoldWeight = 0.3;   // of the newest hold time in the moving average

using Fire = std::function<void()>;

// A heap timer whose data is the function it runs; close_timer frees both.
uv_timer_t* make_timer(uv_loop_t* loop, Fire fire) {
  auto* t = new uv_timer_t;
  uv_timer_init(loop, t);
  t->data = new Fire(std::move(fire));
  return t;
}

void start_timer(uv_timer_t* t, int64_t ms) {
  uv_timer_start(t, [](uv_timer_t* h) { (*static_cast<Fire*>(h->data))(); }, uint64_t(ms), 0);
}

void close_timer(uv_timer_t* t) {
  uv_timer_stop(t);
  uv_close(reinterpret_cast<uv_handle_t*>(t), [](uv_handle_t* h) {
    delete static_cast<Fire*>(h->data);
    delete reinterpret_cast<uv_timer_t*>(h);
  });
}

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
  pg_.configure(std::move(conninfo), {});
  pg_.on_down([this](bool was_up) {
    if (was_up) on_connection_lost();
  });
}

LockTable::~LockTable() { stop(); }

void LockTable::stop() {
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
  l.waiters.push_back({owner, Clock::now(), timeout_ms == 0});
  Waiter& w = l.waiters.back();
  if (timeout_ms > 0) arm_timeout(l, w, timeout_ms);
  pump(l);
  // Still waiting behind someone here: say where it stands (a try-only request ends now).
  auto me = std::find_if(l.waiters.begin(), l.waiters.end(), [owner](const Waiter& x) { return x.owner == owner; });
  if (me != l.waiters.end() && (l.holder != 0 || me != l.waiters.begin())) {
    if (me->try_only) {
      drop_waiter(l, size_t(me - l.waiters.begin()), LockEvent(LockEvent::Kind::Timeout, name));
    } else {
      stats_.waits++;
      tell_queued(l);
    }
  }
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
      return erase_if_unused(name);
    }
  });
  start_timer(w.timer, timeout_ms);
}

// Sends a Queued event to every waiter that has not had one, with its position.
void LockTable::tell_queued(Lock& l) {
  for (size_t i = 0; i < l.waiters.size(); i++) {
    Waiter& w = l.waiters[i];
    // The first waiter of a free lock is being granted, unless another host holds it.
    if (w.told_queued || (i == 0 && l.holder == 0 && l.pg != Pg::Backoff)) continue;
    w.told_queued = true;
    LockEvent e{LockEvent::Kind::Queued, l.name};
    e.position = int(i) + 1;
    e.estimate_ms = estimate(l, i);
    e.waited_ms = ms_since(w.since);
    deliver_(w.owner, e);
  }
}

std::optional<int64_t> LockTable::estimate(const Lock& l, size_t ahead) const {
  if (!l.avg_hold_ms) return std::nullopt;
  double current = l.holder ? std::max(0.0, *l.avg_hold_ms - double(ms_since(l.held_since))) : 0.0;
  return int64_t(current + *l.avg_hold_ms * double(ahead));
}

// Moves the lock on: hand it to the next waiter, or get it from PostgreSQL first.
void LockTable::pump(Lock& l) {
  if (l.holder != 0 || l.waiters.empty()) return;
  if (l.pg == Pg::Held) return grant(l);
  if (l.pg == Pg::None) try_acquire(l);
}

void LockTable::try_acquire(Lock& l) {
  l.pg = Pg::Acquiring;
  std::string name = l.name;
  pg_.query("SELECT pg_try_advisory_lock($1::bigint)", {l.key}, [this, name](pq::QueryResult r) { on_try_result(name, r); });
}

void LockTable::on_try_result(const std::string& name, const pq::QueryResult& r) {
  auto it = locks_.find(name);
  if (it == locks_.end()) {   // stopped meanwhile
    return;
  }
  Lock& l = it->second;
  bool got = r.ok && !r.rows.empty() && !r.rows[0].empty() && r.rows[0][0] == std::optional<std::string>("t");
  if (!r.ok) {
    // Nobody here can have the lock now: every waiter is told, none is left hanging.
    l.pg = Pg::None;
    while (!l.waiters.empty()) drop_waiter(l, 0, LockEvent(LockEvent::Kind::Unavailable, name, r.message));
    return erase_if_unused(name);
  }
  if (got) {
    l.pg = Pg::Held;
    l.backoff_ms = 0;
    if (l.waiters.empty()) return release_pg(l);   // everyone left while we asked
    return grant(l);
  }
  // Held by another host: retry later; a try-only waiter ends here.
  stats_.contention++;
  l.pg = Pg::None;
  while (!l.waiters.empty() && l.waiters.front().try_only) drop_waiter(l, 0, LockEvent(LockEvent::Kind::Timeout, name));
  if (l.waiters.empty()) return erase_if_unused(name);
  if (!l.waiters.front().told_queued) stats_.waits++;
  l.pg = Pg::Backoff;
  tell_queued(l);
  l.backoff_ms = l.backoff_ms == 0 ? kFirstBackoffMs : std::min(kMaxBackoffMs, l.backoff_ms * 2);
  static thread_local std::mt19937 rng{std::random_device{}()};
  int64_t delay = std::uniform_int_distribution<int64_t>(l.backoff_ms / 2, l.backoff_ms)(rng);
  if (!l.retry) {
    l.retry = make_timer(loop_, [this, name] {
      auto it = locks_.find(name);
      if (it == locks_.end()) return;
      it->second.pg = Pg::None;
      pump(it->second);
    });
  }
  start_timer(l.retry, delay);
}

void LockTable::grant(Lock& l) {
  Waiter w = l.waiters.front();
  l.waiters.pop_front();
  if (w.timer) close_timer(w.timer);
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
  if (!l.waiters.empty()) grant(l);   // local hand-over: the advisory lock stays ours
  else release_pg(l);
  return held;
}

void LockTable::release_pg(Lock& l) {
  l.pg = Pg::Releasing;
  std::string name = l.name;
  pg_.query("SELECT pg_advisory_unlock($1::bigint)", {l.key}, [this, name](pq::QueryResult) {
    auto it = locks_.find(name);
    if (it == locks_.end()) return;
    it->second.pg = Pg::None;   // released, or the session is gone (which released it)
    pump(it->second);
    erase_if_unused(name);
  });
}

void LockTable::drop_waiter(Lock& l, size_t i, std::optional<LockEvent> tell) {
  Waiter w = l.waiters[i];
  l.waiters.erase(l.waiters.begin() + long(i));
  disown(w.owner);
  if (w.timer) close_timer(w.timer);
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

// The server released every advisory lock of the session: holders are told.
void LockTable::on_connection_lost() {
  for (const std::string& name : names()) {
    auto it = locks_.find(name);
    if (it == locks_.end()) continue;
    Lock& l = it->second;
    if (l.pg == Pg::Held || l.pg == Pg::Releasing) l.pg = Pg::None;
    if (l.holder != 0) {
      stats_.lost++;
      Owner holder = l.holder;
      l.holder = 0;
      disown(holder);
      LockEvent e{LockEvent::Kind::Lost, name};
      e.message = "the connection to PostgreSQL was lost, and the advisory lock with it; this lock is no longer held";
      deliver_(holder, e);
    }
    if (l.pg == Pg::None) pump(l);   // waiters try again (and hear if the server is down)
    erase_if_unused(name);
  }
}

std::vector<LockInfo> LockTable::list(const std::string& only_name) const {
  std::vector<LockInfo> out;
  for (const auto& [name, l] : locks_) {
    if (!only_name.empty() && name != only_name) continue;
    out.push_back({name, l.holder != 0, l.holder ? ms_since(l.held_since) : 0, int(l.waiters.size()),
                   estimate(l, l.waiters.size())});
  }
  if (out.empty() && !only_name.empty()) out.push_back({only_name, false, 0, 0, std::nullopt});
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
