#include "proxy/readiness.h"

#include <algorithm>

#include "proxy/conn.h"
#include "proxy/decoder.h"
#include "proxy/protocol.h"

namespace proxy {

// One startup packet and its first answer. Deleted by Conn after on_closed.
struct Readiness::Probe final : Conn {
  Probe(Readiness* r, std::string n, uv_loop_t* loop) : Conn(loop), owner(r), name(std::move(n)) {}
  Readiness* owner;   // null once given up on
  std::string name;
  std::string startup;
  bool reported = false;

  void report(bool ok, const std::string& why) {
    if (!reported && owner) owner->probe_done(name, ok, why);
    reported = true;
    close();
  }
  void on_connected(int status) override {
    if (status != 0) return report(false, std::string("connect failed: ") + uv_strerror(status));
    read_start();
    send(startup);
  }
  void on_read() override {
    pg::Frame f;
    std::string err;
    pg::FrameStatus st = pg::frame_backend(in_data(), in_size(), f, err);
    if (st == pg::FrameStatus::Partial || (st == pg::FrameStatus::Ready && !f.whole && f.type == 'E'))
      return;   // wait for the whole first message
    if (st == pg::FrameStatus::Invalid) return report(false, "not a PostgreSQL answer: " + err);
    if (f.type == 'R' || f.type == 'N' || f.type == 'S') return report(true, "");   // asks for a password, or more
    if (f.type != 'E') return report(false, std::string("unexpected first message '") + f.type + "'");
    pg::ErrorInfo e = pg::parse_error(in_data() + pg::kHeaderLen, f.len - 4);
    // Not accepting connections now: starting up, shutting down, in recovery without
    // hot standby, or out of connection slots. Any other error is a server that answers.
    bool down = e.code == "57P03" || e.code == "57P01" || e.code == "53300";
    report(!down, down ? e.code + " " + e.message : "");
  }
  void on_read_end(int status) override {
    report(false, status == UV_EOF ? "closed without an answer" : std::string("read failed: ") + uv_strerror(status));
  }
  void on_closed() override {
    if (!reported && owner) owner->probe_done(name, false, "closed");
    if (owner) {
      auto it = owner->entries_.find(name);
      if (it != owner->entries_.end() && it->second.probe == this) it->second.probe = nullptr;
    }
  }
};

Readiness::~Readiness() { stop(); }

void Readiness::stop() {
  stopped_ = true;
  for (auto& [name, e] : entries_)
    if (e.probe) {
      e.probe->owner = nullptr;
      e.probe->close();
      e.probe = nullptr;
    }
}

void Readiness::configure(const conf::Config& cfg) {
  window_ = std::max(std::chrono::milliseconds(cfg.server_check_delay), std::chrono::milliseconds(1000));
  probe_timeout_ = std::chrono::milliseconds(cfg.server_connect_timeout);
  std::map<std::string, Entry> next;
  for (const conf::Database& db : cfg.databases) {
    Entry e;
    e.host = db.host;
    e.port = db.port;
    // The wildcard's clients name the database; "postgres" exists on every server.
    e.dbname = !db.dbname.empty() ? db.dbname : db.name == "*" ? "postgres" : db.name;
    e.fixed_user = !db.user.empty();
    e.user = e.fixed_user ? db.user : "pgsidecar";
    if (auto old = entries_.find(db.name);
        old != entries_.end() && old->second.host == e.host && old->second.port == e.port) {
      e.last_ok = old->second.last_ok;
      e.last_error = old->second.last_error;
      e.probe_deadline = old->second.probe_deadline;
      e.next_probe = old->second.next_probe;
      if (!e.fixed_user) e.user = old->second.user;
      std::swap(e.probe, old->second.probe);
    }
    next.emplace(db.name, std::move(e));
  }
  for (auto& [name, e] : entries_)   // gone or moved: their probes no longer count
    if (e.probe) {
      e.probe->owner = nullptr;
      e.probe->close();
    }
  entries_ = std::move(next);
}

void Readiness::tick(pool::Time now) {
  if (stopped_) return;
  for (auto& [name, e] : entries_) {
    if (e.probe) {
      if (now >= e.probe_deadline) e.probe->report(false, "no answer within server_connect_timeout");
      continue;
    }
    if (now < e.next_probe || (e.last_ok != pool::Time{} && now - e.last_ok < window_ / 2)) continue;
    auto* p = new Probe(this, name, loop_);
    pg::write_startup(p->startup, {{"user", e.user}, {"database", e.dbname}, {"application_name", "pgsidecar readyz"}});
    e.probe = p;
    e.probe_deadline = now + probe_timeout_;
    p->connect(e.host, e.port);
  }
}

void Readiness::note_login(const std::string& database, const std::string& user, pool::Time now) {
  auto it = entries_.find(database);
  if (it == entries_.end()) it = entries_.find("*");
  if (it == entries_.end()) return;
  it->second.last_ok = now;
  if (!it->second.fixed_user) it->second.user = user;
}

void Readiness::probe_done(const std::string& name, bool ok, const std::string& why) {
  auto it = entries_.find(name);
  if (it == entries_.end()) return;
  const pool::Time now = pool::Clock::now();
  if (ok) {
    it->second.last_ok = now;
  } else {   // refused now: not ready at once, whatever answered before
    it->second.last_ok = {};
    it->second.last_error = why;
    it->second.next_probe = now + std::chrono::seconds(1);
  }
}

std::map<std::string, std::string> Readiness::unreachable(pool::Time now) const {
  std::map<std::string, std::string> out;
  for (const auto& [name, e] : entries_) {
    // A probe still within its timeout keeps a fresh-enough entry ready: a slow answer is no failure.
    auto grace = e.probe ? window_ + probe_timeout_ : window_;
    if (e.last_ok == pool::Time{} || now - e.last_ok > grace) out[name] = e.last_error;
  }
  return out;
}

}  // namespace proxy
