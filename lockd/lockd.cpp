// The socket server: accepts peers (checking SO_PEERCRED), frames JSON lines,
// answers each connection's requests in order, and turns migration answers and
// lock events into response lines.
#include "lockd/lockd.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "conf/log.h"
#include "lockd/locks.h"
#include "lockd/migrations.h"

namespace lockd {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr size_t kMaxLine = 8192;         // bytes, newline included
constexpr size_t kMaxQueuedLines = 16;    // per client, beyond the one being answered: stop reading
constexpr size_t kMaxWriteQueue = 1 << 20;

json error_body(const std::string& code, const std::string& message) {
  return {{"ok", false}, {"error", {{"code", code}, {"message", message}}}};
}

json status_body(const Migrations::Answer& a) {
  json j = {{"ok", a.refusal_code.empty() && !a.manifest_invalid}, {"status", a.status.status}};
  j["head"] = a.status.head ? json(*a.status.head) : json(nullptr);
  j["pending"] = a.status.pending;
  if (!a.status.mismatched.empty()) j["mismatched"] = a.status.mismatched;
  if (a.status.failed) j["failed"] = {{"version", a.status.failed->version}, {"error", a.status.failed->error}};
  if (a.status.status == "unknown" && !a.manifest_invalid) j["reason"] = a.status.reason;
  j["cached"] = a.cached;
  if (a.manifest_invalid) j["error"] = {{"code", "manifest_invalid"}, {"message", a.status.reason}};
  else if (!a.refusal_code.empty()) j["error"] = {{"code", a.refusal_code}, {"message", a.failure}};
  return j;
}

bool peer_allowed(const conf::Lockd& cfg, uid_t uid, gid_t gid) {
  if (cfg.allowed_uids.empty() && cfg.allowed_gids.empty()) return uid == getuid() || uid == 0 || gid == getgid();
  return std::find(cfg.allowed_uids.begin(), cfg.allowed_uids.end(), uid) != cfg.allowed_uids.end() ||
         std::find(cfg.allowed_gids.begin(), cfg.allowed_gids.end(), gid) != cfg.allowed_gids.end();
}

}  // namespace

struct Lockd::Impl {
  struct Client {
    Client(Impl* impl, Owner owner) : d(impl), id(owner) {}
    Impl* d;
    Owner id;
    uv_pipe_t pipe;
    std::string in;
    std::deque<std::string> lines;
    bool busy = false, closing = false, reading = true;
    json request_id;                   // of the request being answered (null: none given)
  };

  uv_loop_t* loop;
  conf::Lockd cfg;
  std::unique_ptr<Migrations> migrations;
  std::unique_ptr<LockTable> locks;
  uv_pipe_t* listener = nullptr;
  std::unordered_map<Owner, Client*> clients;
  Owner next_id = 1;
  std::map<std::pair<std::string, std::string>, uint64_t> requests;   // (op, result) -> count
  uint64_t rejected_peers = 0;
  prometheus::Histogram* status_cached = nullptr;
  prometheus::Histogram* status_queried = nullptr;

  Impl(uv_loop_t* l, const conf::Config& c, const Targets& targets, cache::SchemaVersion& schema,
       metrics::Metrics& metrics)
      : loop(l), cfg(c.lockd) {
    if (!c.migrations.dir.empty() && !targets.migrations.empty())
      migrations = std::make_unique<Migrations>(loop, c.migrations, targets.migrations, schema);
    if (!targets.locks.empty()) {
      locks = std::make_unique<LockTable>(
          loop, targets.locks, [this](Owner o, const LockEvent& e) { on_lock_event(o, e); }, &metrics.lock_wait_seconds());
    }
    status_cached = &metrics.lockd_status_seconds("cache");
    status_queried = &metrics.lockd_status_seconds("database");
  }

  // ------------------------------------------------------------ socket

  bool start(std::string& err) {
    const std::string& path = cfg.socket_path;
    std::string dir = path.substr(0, path.rfind('/'));
    if (!dir.empty() && mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
      err = "lockd: cannot create " + dir + ": " + std::strerror(errno) + " (set lockd.socket_path, or \"\" for no lockd)";
      return false;
    }
    if (!remove_stale_socket(path, err)) return false;
    listener = new uv_pipe_t;
    uv_pipe_init(loop, listener, 0);
    listener->data = this;
    int rc = uv_pipe_bind(listener, path.c_str());
    if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(listener), 128, [](uv_stream_t* s, int status) {
      if (status == 0) static_cast<Impl*>(s->data)->accept();
    });
    if (rc != 0) {
      err = "lockd: cannot listen on " + path + ": " + uv_strerror(rc) + " (set lockd.socket_path, or \"\" for no lockd)";
      close_listener(false);
      return false;
    }
    chmod(path.c_str(), mode_t(cfg.socket_mode));
    LOG_INFO("lockd: listening on %s", path.c_str());
    if (migrations) migrations->warm();
    return true;
  }

  // A socket file left by a daemon that died is removed; one that answers is in use.
  static bool remove_stale_socket(const std::string& path, std::string& err) {
    struct stat st;
    if (lstat(path.c_str(), &st) != 0) return true;
    if (!S_ISSOCK(st.st_mode)) {
      err = "lockd: " + path + " exists and is not a socket";
      return false;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    bool live = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    close(fd);
    if (live) {
      err = "lockd: " + path + " is in use by another process";
      return false;
    }
    unlink(path.c_str());
    return true;
  }

  void close_listener(bool unlink_path) {
    if (!listener) return;
    uv_close(reinterpret_cast<uv_handle_t*>(listener), [](uv_handle_t* h) { delete reinterpret_cast<uv_pipe_t*>(h); });
    listener = nullptr;
    if (unlink_path) unlink(cfg.socket_path.c_str());
  }

  void stop() {
    close_listener(true);
    if (locks) locks->stop();   // first: closing clients then releases nothing through PostgreSQL
    std::vector<Client*> all;
    for (auto& [id, c] : clients) all.push_back(c);
    for (Client* c : all) close_client(c);
    if (migrations) migrations->stop();
  }

  void accept() {
    auto* c = new Client(this, next_id++);
    uv_pipe_init(loop, &c->pipe, 0);
    c->pipe.data = c;
    if (uv_accept(reinterpret_cast<uv_stream_t*>(listener), reinterpret_cast<uv_stream_t*>(&c->pipe)) != 0) {
      uv_close(reinterpret_cast<uv_handle_t*>(&c->pipe), [](uv_handle_t* h) { delete static_cast<Client*>(h->data); });
      return;
    }
    clients[c->id] = c;
    uv_os_fd_t fd;
    ucred cred{};
    socklen_t len = sizeof cred;
    if (uv_fileno(reinterpret_cast<uv_handle_t*>(&c->pipe), &fd) != 0 ||
        getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || !peer_allowed(cfg, cred.uid, cred.gid)) {
      rejected_peers++;
      LOG_WARN("lockd: refused a peer with uid %u gid %u (lockd.allowed_uids / allowed_gids)", cred.uid, cred.gid);
      send(c, error_body("not_permitted", "uid " + std::to_string(cred.uid) + " gid " + std::to_string(cred.gid) +
                                              " may not use this socket (lockd.allowed_uids, lockd.allowed_gids)"));
      return close_client(c);
    }
    start_reading(c);
  }

  static void start_reading(Client* c) {
    c->reading = true;
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(&c->pipe),
        [](uv_handle_t*, size_t, uv_buf_t* buf) {
          static char slab[65536];   // one loop thread; the bytes are copied out before the next read
          *buf = uv_buf_init(slab, sizeof slab);
        },
        [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
          auto* c = static_cast<Client*>(s->data);
          if (n < 0) return c->d->close_client(c);
          c->d->on_bytes(c, std::string_view(buf->base, size_t(n)));
        });
  }

  void close_client(Client* c) {
    if (c->closing) return;
    c->closing = true;
    clients.erase(c->id);
    if (locks) locks->forget(c->id);   // releases what it held, drops what it waited for
    uv_close(reinterpret_cast<uv_handle_t*>(&c->pipe), [](uv_handle_t* h) { delete static_cast<Client*>(h->data); });
  }

  void on_bytes(Client* c, std::string_view bytes) {
    c->in.append(bytes);
    size_t start = 0, nl;
    while ((nl = c->in.find('\n', start)) != std::string::npos) {
      if (nl + 1 - start > kMaxLine) return too_long(c);
      c->lines.emplace_back(c->in, start, nl - start);
      start = nl + 1;
    }
    c->in.erase(0, start);
    if (c->in.size() >= kMaxLine) return too_long(c);
    if (c->lines.size() > kMaxQueuedLines && c->reading) {
      uv_read_stop(reinterpret_cast<uv_stream_t*>(&c->pipe));
      c->reading = false;
    }
    next_request(c);
  }

  void too_long(Client* c) {
    count("invalid", "line_too_long");
    send(c, error_body("line_too_long", "a request line may be at most " + std::to_string(kMaxLine) + " bytes"));
    close_client(c);
  }

  // ------------------------------------------------------------ responses

  void send(Client* c, json body) {
    if (c->closing) return;
    if (!c->request_id.is_null()) body["id"] = c->request_id;
    struct Write {
      uv_write_t req;
      std::string text;
    };
    auto* w = new Write{{}, body.dump(-1, ' ', false, json::error_handler_t::replace) + "\n"};
    uv_buf_t buf = uv_buf_init(w->text.data(), unsigned(w->text.size()));
    int rc = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&c->pipe), &buf, 1,
                      [](uv_write_t* r, int) { delete reinterpret_cast<Write*>(r); });
    if (rc != 0) {
      delete w;
      return close_client(c);
    }
    if (uv_stream_get_write_queue_size(reinterpret_cast<uv_stream_t*>(&c->pipe)) > kMaxWriteQueue) close_client(c);
  }

  // The final answer to the current request; the next one may start.
  void finish(Client* c, json body, const char* op) {
    count(op, body.value("ok", false) ? "ok" : body.contains("error") ? body["error"].value("code", "error") : "error");
    send(c, std::move(body));
    c->busy = false;
    c->request_id = nullptr;
    next_request(c);
  }

  void count(const std::string& op, const std::string& result) { requests[{op, result}]++; }

  // ------------------------------------------------------------ requests

  void next_request(Client* c) {
    while (!c->busy && !c->closing && !c->lines.empty()) {
      std::string line = std::move(c->lines.front());
      c->lines.pop_front();
      c->busy = true;
      try {
        handle(c, line);
      } catch (const std::exception& e) {   // a bug, not bad input: answer and carry on
        LOG_ERROR("lockd: request failed: %s", e.what());
        finish(c, error_body("internal", e.what()), "invalid");
      }
    }
    if (!c->reading && !c->closing && c->lines.size() <= kMaxQueuedLines / 2) start_reading(c);
  }

  void handle(Client* c, const std::string& line) {
    json req = json::parse(line, nullptr, false);
    if (req.is_discarded() || !req.is_object()) {
      return finish(c, error_body("bad_request", "each line must be one JSON object, such as {\"op\":\"status\"}"), "invalid");
    }
    if (req.contains("id")) c->request_id = req["id"];
    const json* op = req.contains("op") ? &req["op"] : nullptr;
    std::string name = op && op->is_string() ? op->get<std::string>() : "";
    if (name == "status" || name == "migrate") return migration_op(c, name);
    if (name == "lock") return lock(c, req);
    if (name == "unlock") return unlock(c, req);
    if (name == "locks") return list_locks(c, req);
    std::string shown = op ? op->dump(-1, ' ', false, json::error_handler_t::replace) : "(missing)";
    finish(c, error_body("unknown_op", "unknown op " + shown + "; ops: status, migrate, lock, unlock, locks"), "invalid");
  }

  void migration_op(Client* c, const std::string& op) {
    if (!migrations) {
      return finish(c, error_body("not_configured", "no migrations: set migrations.dir and migrations.database"),
                    op.c_str());
    }
    Owner id = c->id;
    auto t0 = Clock::now();
    auto reply = [this, id, t0, op](const Migrations::Answer& a) {
      if (op == "status") {
        (a.cached ? status_cached : status_queried)->Observe(std::chrono::duration<double>(Clock::now() - t0).count());
      }
      auto it = clients.find(id);
      if (it == clients.end()) return;   // gone while waiting
      json body = status_body(a);
      if (op == "migrate") body["applied"] = a.applied;
      finish(it->second, std::move(body), op.c_str());
    };
    if (op == "status") migrations->status(reply);
    else migrations->migrate(reply);
  }

  // A lock name from the request, or an error answer (and nullopt).
  std::optional<std::string> lock_name(Client* c, const json& req, const char* op) {
    if (!locks) {
      finish(c, error_body("not_configured", "no database for locks: set lockd.database (or migrations.database)"), op);
      return std::nullopt;
    }
    if (!req.contains("name") || !req["name"].is_string()) {
      finish(c, error_body("bad_request", std::string(op) + " needs \"name\": a string"), op);
      return std::nullopt;
    }
    std::string name = req["name"].get<std::string>();
    if (name.empty() || name.size() > LockTable::kMaxName) {
      finish(c, error_body("bad_name", "a lock name is 1 to " + std::to_string(LockTable::kMaxName) + " bytes"), op);
      return std::nullopt;
    }
    return name;
  }

  void lock(Client* c, const json& req) {
    auto name = lock_name(c, req, "lock");
    if (!name) return;
    int64_t timeout = cfg.lock_timeout.count();
    if (req.contains("timeout_ms")) {
      const json& t = req["timeout_ms"];
      if (!t.is_number_integer() || t.get<int64_t>() < 0) {
        return finish(c, error_body("bad_request", "timeout_ms must be an integer >= 0"), "lock");
      }
      timeout = t.get<int64_t>();
    }
    std::string err = locks->acquire(c->id, *name, timeout);
    if (!err.empty()) {
      finish(c, error_body(err, "this connection already holds or waits for lock \"" + *name + "\""), "lock");
    }
  }

  void on_lock_event(Owner owner, const LockEvent& e) {
    auto it = clients.find(owner);
    if (it == clients.end()) return;
    Client* c = it->second;
    json body = {{"ok", true}, {"name", e.name}};
    switch (e.kind) {
      case LockEvent::Kind::Queued:
        body["state"] = "queued";
        body["position"] = e.position;
        body["estimated_wait_ms"] = e.estimate_ms ? json(*e.estimate_ms) : json(nullptr);
        return send(c, body);
      case LockEvent::Kind::Held:
        body["state"] = "held";
        body["waited_ms"] = e.waited_ms;
        return finish(c, body, "lock");
      case LockEvent::Kind::Timeout:
        body = error_body("lock_timeout", "lock \"" + e.name + "\" was not granted within the timeout");
        body["name"] = e.name;
        body["waited_ms"] = e.waited_ms;
        return finish(c, body, "lock");
      case LockEvent::Kind::Unavailable:
        body = error_body("database_unavailable", e.message);
        body["name"] = e.name;
        return finish(c, body, "lock");
      case LockEvent::Kind::Lost: {
        body = error_body("lock_lost", e.message);
        body["name"] = e.name;
        body["state"] = "lost";
        json saved = std::exchange(c->request_id, nullptr);   // unsolicited: no request id
        send(c, body);
        c->request_id = saved;
        count("lock", "lock_lost");
        return;
      }
    }
  }

  void unlock(Client* c, const json& req) {
    auto name = lock_name(c, req, "unlock");
    if (!name) return;
    std::optional<int64_t> held = locks->release(c->id, *name);
    if (!held) return finish(c, error_body("not_held", "this connection does not hold lock \"" + *name + "\""), "unlock");
    finish(c, {{"ok", true}, {"name", *name}, {"state", "released"}, {"held_ms", *held}}, "unlock");
  }

  void list_locks(Client* c, const json& req) {
    if (!locks) return finish(c, error_body("not_configured", "no database for locks: set lockd.database"), "locks");
    std::string only;
    if (req.contains("name")) {
      if (!req["name"].is_string()) return finish(c, error_body("bad_request", "\"name\" must be a string"), "locks");
      only = req["name"].get<std::string>();
    }
    json list = json::array();
    for (const LockInfo& l : locks->list(only)) {
      list.push_back({{"name", l.name}, {"held", l.held}, {"held_ms", l.held_ms}, {"waiters", l.waiters},
                      {"estimated_wait_ms", l.estimate_ms ? json(*l.estimate_ms) : json(nullptr)}});
    }
    finish(c, {{"ok", true}, {"locks", list}}, "locks");
  }
};

Lockd::Lockd(uv_loop_t* loop, const conf::Config& cfg, const Targets& targets, cache::SchemaVersion& schema,
             metrics::Metrics& metrics)
    : impl_(std::make_unique<Impl>(loop, cfg, targets, schema, metrics)) {}

Lockd::~Lockd() { stop(); }

bool Lockd::start(std::string& err) { return impl_->cfg.socket_path.empty() || impl_->start(err); }

void Lockd::stop() { impl_->stop(); }

void Lockd::fill(metrics::LockdSnapshot& out) const {
  const Impl& d = *impl_;
  out.enabled = !d.cfg.socket_path.empty();
  out.clients = int(d.clients.size());
  out.rejected_peers = d.rejected_peers;
  out.requests = d.requests;
  if (d.locks) {
    const LockStats& s = d.locks->stats();
    out.lock_acquired = s.acquired;
    out.lock_waits = s.waits;
    out.lock_timeouts = s.timeouts;
    out.lock_contention = s.contention;
    out.lock_lost = s.lost;
    out.locks_held = d.locks->holders();
    out.lock_waiters = d.locks->waiters();
  }
  if (d.migrations) {
    out.migrations_configured = true;
    out.migrations_applied = d.migrations->applied_total();
    out.migrations_failed = d.migrations->failed_total();
    if (const auto& s = d.migrations->last_status()) {
      out.migration_status = s->status;
      out.migrations_pending = int(s->pending.size());
    }
  }
}

bool Lockd::admin_table(const std::string& what, std::vector<std::string>& columns,
                        std::vector<std::vector<std::string>>& rows) const {
  const Impl& d = *impl_;
  auto opt = [](const std::optional<int64_t>& v) { return v ? std::to_string(*v) : std::string(); };
  if (what == "locks") {
    columns = {"name", "held", "held_ms", "waiters", "estimated_wait_ms"};
    if (d.locks) {
      for (const LockInfo& l : d.locks->list())
        rows.push_back({l.name, l.held ? "yes" : "no", std::to_string(l.held_ms), std::to_string(l.waiters),
                        opt(l.estimate_ms)});
    }
    return true;
  }
  if (what == "migrations") {
    columns = {"version", "name", "file", "state"};
    if (d.migrations) d.migrations->describe(rows);
    return true;
  }
  return false;
}

}  // namespace lockd
