#include "pool/pool.h"

#include <algorithm>

namespace pool {

Pool::Pool(std::string database, std::string user, Settings settings, Launcher launcher, DatabaseCounter* db)
    : database_(std::move(database)), user_(std::move(user)), settings_(std::move(settings)),
      launcher_(std::move(launcher)), db_(db) {}

Pool::~Pool() {
  // Members outlive the pool only during process exit; they hold no back-reference use then.
  for (Waiter* w : waiters_) w->waiting = false;
}

Stats Pool::stats() const {
  Stats s = counters_;
  for (const Member* m : members_) {
    switch (m->state) {
      case Member::State::Idle: s.idle++; break;
      case Member::State::Granted: s.active++; break;
      case Member::State::Launching: s.launching++; break;
      case Member::State::Checking: s.checking++; break;
    }
  }
  s.waiting = int(waiters_.size());
  return s;
}

void Pool::acquire(Waiter* w, std::string_view key) {
  w->wait_key = key;
  if (w->waiting) return;
  if (waiters_.empty() && !paused_) {
    if (Member* m = take_idle(key)) {
      grant(w, m);
      return;
    }
  }
  Time now = Clock::now();
  if (now < retry_at_) {
    bool any_busy = std::any_of(members_.begin(), members_.end(), [](const Member* m) {
      return m->state != Member::State::Idle;
    });
    if (!any_busy) {
      // The last login failed moments ago and nothing could free up: say why now.
      w->wait_failed(last_failure_);
      return;
    }
  }
  w->waiting = true;
  w->wait_start = now;
  waiters_.push_back(w);
  // Saturated pool (the common case under load): nothing idle, nothing to launch.
  // Releases serve the queue; skip the scans.
  if (paused_) return;
  if (!idle_.empty()) serve();
  else launch_for_waiters(now);
}

void Pool::cancel(Waiter* w) {
  if (w->waiting) {
    auto it = std::find(waiters_.begin(), waiters_.end(), w);
    if (it != waiters_.end()) waiters_.erase(it);
    w->waiting = false;
  }
  for (Member* m : members_)
    if (m->reserved_for == w) m->reserved_for = nullptr;
}

Member* Pool::take_idle(std::string_view key) {
  for (auto it = idle_.rbegin(); it != idle_.rend(); ++it) {
    if ((*it)->params_key == key) {
      Member* m = *it;
      idle_.erase(std::next(it).base());
      return m;
    }
  }
  return nullptr;
}

void Pool::remove_idle(Member* m) {
  auto it = std::find(idle_.begin(), idle_.end(), m);
  if (it != idle_.end()) idle_.erase(it);
}

void Pool::grant(Waiter* w, Member* m) {
  Time now = Clock::now();
  if (!settings_.check_query.empty() && m->idle_since != Time{} &&
      now - m->idle_since > settings_.check_delay) {
    m->state = Member::State::Checking;
    m->reserved_for = w;
    w->waiting = true;   // until check_done: a second acquire() must not grant it another server
    if (w->wait_start == Time{}) w->wait_start = now;   // it may go back to the queue
    m->run_check(settings_.check_query);
    return;
  }
  m->state = Member::State::Granted;
  w->waiting = false;
  w->granted(m);
}

void Pool::serve() {
  if (paused_) return;
  if (serving_) {
    serve_again_ = true;
    return;
  }
  serving_ = true;
  do {
    serve_again_ = false;
    for (size_t i = 0; i < waiters_.size();) {
      Waiter* w = waiters_[i];
      Member* m = take_idle(w->wait_key);
      if (!m) {
        i++;
        continue;
      }
      waiters_.erase(waiters_.begin() + long(i));
      // A health check keeps the waiter out of the queue but not yet granted.
      grant(w, m);
      if (serve_again_) break;   // grant() re-entered us: restart the scan
    }
  } while (serve_again_);
  serving_ = false;
  launch_for_waiters(Clock::now());
}

bool Pool::may_launch(Time now, bool for_waiter) const {
  if (now < retry_at_) return false;
  if (settings_.max_db_connections > 0 && db_ && db_->servers >= settings_.max_db_connections) return false;
  int total = int(members_.size());
  if (total < settings_.size) return true;
  if (!for_waiter || settings_.reserve_size <= 0 || settings_.reserve_timeout.count() == 0 ||
      total >= settings_.size + settings_.reserve_size)
    return false;
  return !waiters_.empty() && now - waiters_.front()->wait_start >= settings_.reserve_timeout;
}

// Opens servers for waiters that no idle or launching server will serve.
void Pool::launch_for_waiters(Time now) {
  if (waiters_.empty() || paused_) return;
  if (!may_launch(now, true) && idle_.empty()) return;   // full, and no idle server to trade
  // Waiters per params key, minus servers already launching for that key.
  std::vector<std::pair<std::string_view, int>> need;
  for (Waiter* w : waiters_) {
    auto it = std::find_if(need.begin(), need.end(), [&](auto& p) { return p.first == w->wait_key; });
    if (it == need.end()) need.emplace_back(w->wait_key, 1);
    else it->second++;
  }
  for (Member* m : members_) {
    if (m->state != Member::State::Launching) continue;
    for (auto& p : need)
      if (p.first == m->params_key) p.second--;
  }
  for (auto& [key, n] : need) {
    for (; n > 0; n--) {
      if (!may_launch(now, true)) {
        // Full: make room by closing an idle server opened with other parameters.
        auto other = std::find_if(idle_.begin(), idle_.end(), [&, &k = key](Member* m) { return m->params_key != k; });
        if (other == idle_.end() || now < retry_at_) return;
        retire(*other, "pool full, parameters differ from a waiting client's");
        if (!may_launch(now, true)) return;
      }
      launch(std::string(key));
    }
  }
}

void Pool::launch(const std::string& key) {
  Member* m = launcher_(*this, key);
  if (!m) return;
  m->params_key = key;
  m->state = Member::State::Launching;
  m->created = Clock::now();
  members_.push_back(m);
  if (db_) db_->servers++;
  counters_.launched_total++;
}

void Pool::login_done(Member* m, const Failure* failure) {
  if (failure) {
    counters_.login_failures_total++;
    last_failure_ = *failure;
    retry_at_ = Clock::now() + settings_.login_retry;
    retire(m, "login failed");
    fail_waiters(*failure, m->params_key);
    return;
  }
  retry_at_ = Time{};
  m->state = Member::State::Idle;
  m->idle_since = Time{};   // fresh: no health check needed
  idle_.push_back(m);
  serve();
}

// Fails the waiters for key that no other server is on its way to serve.
void Pool::fail_waiters(const Failure& f, std::string_view key) {
  bool others_coming = std::any_of(members_.begin(), members_.end(), [&](const Member* m) {
    return m->params_key == key && m->state != Member::State::Launching;
  });
  if (others_coming) return;   // a busy server will come back; they keep waiting
  std::vector<Waiter*> failed;
  for (auto it = waiters_.begin(); it != waiters_.end();) {
    if ((*it)->wait_key == key) {
      failed.push_back(*it);
      (*it)->waiting = false;
      it = waiters_.erase(it);
    } else {
      ++it;
    }
  }
  for (Waiter* w : failed) w->wait_failed(f);
}

void Pool::check_done(Member* m, bool ok) {
  Waiter* w = m->reserved_for;
  m->reserved_for = nullptr;
  if (!ok) {
    retire(m, "server_check_query failed");
    if (w) {
      // Back to the head of the queue: it has waited longest.
      w->waiting = true;
      waiters_.push_front(w);
      serve();
    }
    return;
  }
  if (!w) {
    release(m);
    return;
  }
  m->state = Member::State::Granted;
  w->waiting = false;
  w->granted(m);
}

void Pool::release(Member* m) {
  Time now = Clock::now();
  if (now - m->created >= settings_.lifetime || int(members_.size()) > settings_.size + settings_.reserve_size ||
      m->created <= reconnect_before_) {
    retire(m, m->created <= reconnect_before_          ? "RECONNECT"
              : now - m->created >= settings_.lifetime ? "server_lifetime reached"
                                                       : "pool shrunk");
    serve();
    return;
  }
  m->state = Member::State::Idle;
  m->idle_since = now;
  // Fast path: hand it straight to the first waiter (FIFO) that can use it.
  if (!waiters_.empty() && !serving_ && !paused_) {
    for (auto it = waiters_.begin(); it != waiters_.end(); ++it) {
      Waiter* w = *it;
      if (w->wait_key != m->params_key) continue;
      waiters_.erase(it);
      m->idle_since = Time{};
      grant(w, m);
      return;
    }
  }
  idle_.push_back(m);
  if (!waiters_.empty()) serve();
}

void Pool::resume() {
  paused_ = false;
  launch_for_waiters(Clock::now());
  serve();
}

void Pool::reconnect() {
  reconnect_before_ = Clock::now();   // everything that exists now
  close_idle("RECONNECT");
}

bool Pool::drop(Member* m) {
  auto it = std::find(members_.begin(), members_.end(), m);
  if (it == members_.end()) return false;
  members_.erase(it);
  remove_idle(m);
  if (db_) db_->servers--;
  if (Waiter* w = m->reserved_for) {
    m->reserved_for = nullptr;
    w->waiting = true;
    waiters_.push_front(w);
  }
  return true;
}

void Pool::retire(Member* m, std::string_view reason) {
  drop(m);
  m->close_member(reason);
}

void Pool::forget(Member* m) {
  if (drop(m) && !waiters_.empty()) serve();
}

void Pool::close_idle(std::string_view reason) {
  std::vector<Member*> idle = idle_;
  for (Member* m : idle) retire(m, reason);
}

void Pool::close_all(std::string_view reason) {
  std::vector<Member*> all = members_;
  for (Member* m : all) retire(m, reason);
}

void Pool::set_settings(const Settings& s) {
  settings_ = s;
  serve();
}

void Pool::tick(Time now) {
  // Waiters past query_wait_timeout.
  if (settings_.wait_timeout.count() > 0) {
    std::vector<Waiter*> expired;
    while (!waiters_.empty() && now - waiters_.front()->wait_start >= settings_.wait_timeout) {
      expired.push_back(waiters_.front());
      waiters_.front()->waiting = false;
      waiters_.pop_front();
    }
    Failure f{"FATAL", "08P01",
              "query_wait_timeout: no server connection became free in time (pool " + database_ + "/" + user_ +
                  " has " + std::to_string(members_.size()) + " servers, all busy)",
              {}};
    for (Waiter* w : expired) {
      counters_.wait_timeouts_total++;
      w->wait_failed(f);
    }
  }
  // The members' own deadlines (a health check or reset query that does not answer).
  for (Member* m : std::vector<Member*>(members_)) m->tick(now);
  // Logins that take too long.
  std::vector<Member*> stuck;
  for (Member* m : members_)
    if (m->state == Member::State::Launching && now - m->created >= settings_.connect_timeout) stuck.push_back(m);
  for (Member* m : stuck) {
    Failure f{"FATAL", "08006", "server_connect_timeout: could not connect to the server in time", {}};
    login_done(m, &f);
  }
  // Idle servers: lifetime, idle timeout above min_pool_size, shrink after reload.
  std::vector<Member*> closing;
  int total = int(members_.size());
  for (Member* m : idle_) {
    bool old = now - m->created >= settings_.lifetime;
    bool idle_long = settings_.idle_timeout.count() > 0 && m->idle_since != Time{} &&
                     now - m->idle_since >= settings_.idle_timeout;
    bool surplus = total > settings_.size + settings_.reserve_size;
    if (old || surplus || (idle_long && total > settings_.min_size)) {
      closing.push_back(m);
      total--;
    }
  }
  for (Member* m : closing) retire(m, "idle timeout or lifetime");
  // Warm-up to min_pool_size.
  for (int n = int(members_.size()); n < settings_.min_size && may_launch(now, false); n++) launch("");
  // Reserve pool: waiters that waited long enough may now get an extra server.
  launch_for_waiters(now);
}

}  // namespace pool
