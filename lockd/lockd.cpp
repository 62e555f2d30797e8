// The socket server: accepts peers (checking SO_PEERCRED and the connection
// cap), frames JSON lines (request.h), answers each connection's requests in
// order, and turns migration answers and lock events into response lines.
//
// Every peer costs bounded memory and every loop turn bounded work, whatever
// bytes arrive: reads stop while LineReader is full (kMaxQueued requests or
// kMaxBuffered bytes) or while answers pile up unread (kMaxUnsent); serve()
// answers at most kMaxPerTurn requests of a connection per loop turn, in a loop,
// and an answer never starts the next request from inside itself.
#include "lockd/lockd.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <unordered_map>
#include <variant>

#include "conf/log.h"
#include "lockd/locks.h"
#include "lockd/migrations.h"
#include "lockd/request.h"

namespace lockd {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// Connections; one more gets too_many_connections. Above the 500 processes
// bench/lockd.sh starts at once, and half the default 1024-descriptor limit, so
// lockd cannot take the descriptors the proxy needs.
constexpr size_t kMaxClients = 512;
constexpr size_t kMaxPerTurn = 16;         // requests of one connection answered per loop turn
constexpr size_t kMaxUnsent = 64 << 10;    // bytes of answers the peer has not read: answer no more
constexpr uint64_t kIdleTimeoutMs = 60'000;   // without a request, holding and waiting for nothing

// PGSIDECAR_LOCKD_IDLE_TIMEOUT_MS shortens the idle timeout for tests, which
// cannot wait a minute; unset (or not a number) in production.
uint64_t idle_timeout_ms() {
  const char* e = std::getenv("PGSIDECAR_LOCKD_IDLE_TIMEOUT_MS");
  uint64_t ms = e ? std::strtoull(e, nullptr, 10) : 0;
  return ms > 0 ? ms : kIdleTimeoutMs;
}

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
    Client(Impl* impl, Owner owner, uint64_t now) : d(impl), id(owner), active_ms(now) {}
    Impl* d;
    Owner id;
    uv_pipe_t pipe;
    LineReader reader;
    bool busy = false;        // a request is waiting for its final answer
    bool serving = false;     // inside serve(): an answer lets its loop go on
    bool scheduled = false;   // in `ready`
    bool reading = false, closing = false;
    uint64_t active_ms;       // loop time of the last request or final answer (idle clock)
    json request_id;          // of the request being answered (null: none given)
  };

  uv_loop_t* loop;
  conf::Lockd cfg;
  std::unique_ptr<Migrations> migrations;
  std::unique_ptr<LockTable> locks;
  uv_pipe_t* listener = nullptr;
  std::unordered_map<Owner, Client*> clients;
  Owner next_id = 1;
  std::vector<Owner> ready;          // connections with requests to answer on the next loop turn
  uv_idle_t* resume = nullptr;       // runs them; active only while `ready` is not empty
  uv_timer_t* sweeper = nullptr;     // closes idle connections
  uint64_t idle_ms = idle_timeout_ms();
  bool at_capacity = false;          // logged once per time the connection cap is reached
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
    start_housekeeping();
    LOG_INFO("lockd: listening on %s", path.c_str());
    // The status now: the first client asks one query less, migrations committed
    // elsewhere are heard of (NOTIFY) from the start, and /readyz knows it.
    if (migrations) migrations->status([](const Migrations::Answer&) {});
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

  void start_housekeeping() {
    resume = new uv_idle_t;
    uv_idle_init(loop, resume);
    resume->data = this;
    sweeper = new uv_timer_t;
    uv_timer_init(loop, sweeper);
    sweeper->data = this;
    uint64_t every = std::max<uint64_t>(idle_ms / 4, 10);   // closes within 1.25 x the timeout
    uv_timer_start(sweeper, [](uv_timer_t* t) { static_cast<Impl*>(t->data)->sweep(); }, every, every);
    uv_unref(reinterpret_cast<uv_handle_t*>(sweeper));   // housekeeping keeps no loop alive
  }

  template <class Handle>
  static void close_handle(Handle*& h) {
    if (!h) return;
    uv_close(reinterpret_cast<uv_handle_t*>(h), [](uv_handle_t* x) { delete reinterpret_cast<Handle*>(x); });
    h = nullptr;
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
    ready.clear();
    close_handle(resume);
    close_handle(sweeper);
  }

  void accept() {
    auto* c = new Client(this, next_id++, uv_now(loop));
    uv_pipe_init(loop, &c->pipe, 0);
    c->pipe.data = c;
    if (uv_accept(reinterpret_cast<uv_stream_t*>(listener), reinterpret_cast<uv_stream_t*>(&c->pipe)) != 0) {
      uv_close(reinterpret_cast<uv_handle_t*>(&c->pipe), [](uv_handle_t* h) { delete static_cast<Client*>(h->data); });
      return;
    }
    clients[c->id] = c;
    if (std::optional<json> no = refusal(c)) {
      send(c, std::move(*no));   // a fresh socket takes one line at once; close_client then drops nothing
      return close_client(c);
    }
    update_reading(c);
  }

  // Why a new connection (already in `clients`) is turned away, if it is.
  std::optional<json> refusal(Client* c) {
    if (clients.size() > kMaxClients) {
      count("invalid", "too_many_connections");
      if (!std::exchange(at_capacity, true)) LOG_WARN("lockd: %zu connections, refusing more", kMaxClients);
      return error_body("too_many_connections",
                        "lockd serves at most " + std::to_string(kMaxClients) + " connections at a time");
    }
    at_capacity = false;
    uv_os_fd_t fd;
    ucred cred{};
    socklen_t len = sizeof cred;
    if (uv_fileno(reinterpret_cast<uv_handle_t*>(&c->pipe), &fd) == 0 &&
        getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && peer_allowed(cfg, cred.uid, cred.gid)) {
      return std::nullopt;
    }
    rejected_peers++;
    LOG_WARN("lockd: refused a peer with uid %u gid %u (lockd.allowed_uids / allowed_gids)", cred.uid, cred.gid);
    return error_body("not_permitted", "uid " + std::to_string(cred.uid) + " gid " + std::to_string(cred.gid) +
                                           " may not use this socket (lockd.allowed_uids, lockd.allowed_gids)");
  }

  // Reads while the reader has room: stopped while kMaxQueued requests wait or
  // the buffer is full, resumed when serve() has taken some.
  void update_reading(Client* c) {
    if (c->closing) return;   // uv_close stops reading
    bool want = c->reader.room() > 0;
    if (want == c->reading) return;
    c->reading = want;
    auto* s = reinterpret_cast<uv_stream_t*>(&c->pipe);
    if (!want) {
      uv_read_stop(s);
      return;
    }
    uv_read_start(
        s,
        [](uv_handle_t* h, size_t, uv_buf_t* buf) {
          static char slab[LineReader::kMaxBuffered];   // one loop thread; the reader copies before the next read
          *buf = uv_buf_init(slab, unsigned(std::min(sizeof slab, static_cast<Client*>(h->data)->reader.room())));
        },
        [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
          auto* c = static_cast<Client*>(s->data);
          if (n == UV_ENOBUFS) return c->d->update_reading(c);   // no room: not an error, just stop
          if (n < 0) return c->d->close_client(c);
          c->reader.feed(std::string_view(buf->base, size_t(n)));   // n <= room(): all of it is taken
          c->d->serve(c);
        });
  }

  void close_client(Client* c) {
    if (c->closing) return;
    c->closing = true;
    clients.erase(c->id);
    if (locks) locks->forget(c->id);   // releases what it held, drops what it waited for
    uv_close(reinterpret_cast<uv_handle_t*>(&c->pipe), [](uv_handle_t* h) { delete static_cast<Client*>(h->data); });
  }

  // Closes connections that hold and wait for nothing and had no request
  // started or answered for idle_ms (also those whose requests stay queued
  // because they do not read their answers).
  void sweep() {
    // A status that is not current is evaluated again (from cache within verify_interval):
    // /readyz must not wait for a client's request after PostgreSQL or another sidecar moved it.
    if (migrations && (!migrations->last_status() || migrations->last_status()->status != "current"))
      migrations->status([](const Migrations::Answer&) {});
    uint64_t now = uv_now(loop);
    std::vector<Client*> idle;
    for (auto& [id, c] : clients) {
      bool holds_nothing = !c->busy && (!locks || locks->owned(id) == 0);
      if (holds_nothing && now - c->active_ms >= idle_ms) idle.push_back(c);
    }
    for (Client* c : idle) {
      count("invalid", "idle_timeout");
      send(c, error_body("idle_timeout", "no request for " + std::to_string(idle_ms / 1000) + " s"));
      close_client(c);
    }
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
    int rc = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&c->pipe), &buf, 1, [](uv_write_t* r, int) {
      // Called before the close callback, so the client is still there.
      auto* c = static_cast<Client*>(r->handle->data);
      delete reinterpret_cast<Write*>(r);
      if (!c->closing && c->reader.ready() && !unsent_full(c)) c->d->schedule(c);   // the peer read: go on
    });
    if (rc != 0) {
      delete w;
      return close_client(c);
    }
  }

  // The peer does not read its answers: answer no more requests (reading stops
  // too, once kMaxQueued wait) until it does. Unsolicited lines still go out:
  // there are at most a few per lock it holds or waits for.
  static bool unsent_full(Client* c) {
    return uv_stream_get_write_queue_size(reinterpret_cast<uv_stream_t*>(&c->pipe)) > kMaxUnsent;
  }

  // The final answer to the current request; the next one may start.
  void finish(Client* c, json body, const char* op) {
    count(op, body.value("ok", false) ? "ok" : body.contains("error") ? body["error"].value("code", "error") : "error");
    send(c, std::move(body));
    c->busy = false;
    c->request_id = nullptr;
    c->active_ms = uv_now(loop);
    // An answer given inside serve() lets its loop go on; one that came later
    // (a query, a lock event) continues on the next loop turn, never from here.
    if (!c->serving) schedule(c);
  }

  void count(const std::string& op, const std::string& result) { requests[{op, result}]++; }

  // ------------------------------------------------------------ requests

  // Answers the next requests of a connection on the next loop turn.
  void schedule(Client* c) {
    if (c->scheduled || c->closing) return;
    c->scheduled = true;
    ready.push_back(c->id);
    if (ready.size() == 1) uv_idle_start(resume, [](uv_idle_t* h) { static_cast<Impl*>(h->data)->run_ready(); });
  }

  void run_ready() {
    std::vector<Owner> now;
    now.swap(ready);   // serve() may schedule again: for the turn after this one
    for (Owner id : now) {
      auto it = clients.find(id);
      if (it == clients.end()) continue;   // closed meanwhile
      it->second->scheduled = false;
      serve(it->second);
    }
    if (ready.empty()) uv_idle_stop(resume);
  }

  // Answers the connection's queued requests in order: a loop, at most
  // kMaxPerTurn per call, so no input makes it recurse or hog the loop. It stops
  // at a request that waits (a query, a lock), and while the peer leaves its
  // answers unread; what is left is picked up on a later turn.
  void serve(Client* c) {
    c->serving = true;
    for (size_t n = 0; n < kMaxPerTurn && !c->busy && !c->closing && !unsent_full(c); n++) {
      LineReader::Next next = c->reader.next();
      if (next.status == LineReader::Status::More) break;
      if (next.status == LineReader::Status::TooLong) {
        too_long(c);
        break;
      }
      c->busy = true;
      c->active_ms = uv_now(loop);
      try {
        handle(c, next.line);
      } catch (const std::exception& e) {   // a bug, not bad input: answer and carry on
        LOG_ERROR("lockd: request failed: %s", e.what());
        finish(c, error_body("internal", e.what()), "invalid");
      }
    }
    c->serving = false;
    if (!c->busy && c->reader.ready() && !unsent_full(c)) schedule(c);   // the per-turn bound was hit
    update_reading(c);
  }

  void too_long(Client* c) {
    count("invalid", "line_too_long");
    send(c, error_body("line_too_long",
                       "a request line may be at most " + std::to_string(LineReader::kMaxLine) + " bytes"));
    close_client(c);
  }

  void handle(Client* c, std::string_view line) {
    using Handler = void (*)(Impl&, Client*, const Request&);
    static constexpr Handler kHandlers[kOps] = {
        // indexed by Op
        [](Impl& d, Client* c, const Request& r) { d.migration_op(c, r); },   // status
        [](Impl& d, Client* c, const Request& r) { d.migration_op(c, r); },   // migrate
        [](Impl& d, Client* c, const Request& r) { d.lock(c, r); },
        [](Impl& d, Client* c, const Request& r) { d.unlock(c, r); },
        [](Impl& d, Client* c, const Request& r) { d.list_locks(c, r); },
    };
    std::variant<Request, RequestError> parsed = parse_request(line);
    if (auto* e = std::get_if<RequestError>(&parsed)) {
      c->request_id = std::move(e->id);
      return finish(c, error_body(e->code, e->message), e->op);
    }
    auto& req = std::get<Request>(parsed);
    c->request_id = std::move(req.id);
    kHandlers[size_t(req.op)](*this, c, req);
  }

  void migration_op(Client* c, const Request& req) {
    std::string op = op_name(req.op);
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
      if (!a.reverted.empty()) body["reverted"] = a.reverted;
      finish(it->second, std::move(body), op.c_str());
    };
    if (op == "status") migrations->status(reply);
    else migrations->migrate(reply, req.retry, req.to);
  }

  // False (and the not_configured answer) without a lock table.
  bool locks_configured(Client* c, const Request& req) {
    if (locks) return true;
    finish(c, error_body("not_configured", "no database for locks: set lockd.database (or migrations.database)"),
           op_name(req.op));
    return false;
  }

  void lock(Client* c, const Request& req) {
    if (!locks_configured(c, req)) return;
    std::string err = locks->acquire(c->id, req.name, req.timeout_ms.value_or(cfg.lock_timeout.count()));
    if (err.empty()) return;   // the answer comes as lock events
    std::string why = err == "too_many_locks"
                          ? "this connection holds or waits for " + std::to_string(LockTable::kMaxPerOwner) +
                                " locks already, the most one connection may"
                          : "this connection already holds or waits for lock \"" + req.name + "\"";
    json body = error_body(err, why);
    body["name"] = req.name;
    finish(c, std::move(body), "lock");
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

  void unlock(Client* c, const Request& req) {
    if (!locks_configured(c, req)) return;
    std::optional<int64_t> held = locks->release(c->id, req.name);
    if (!held) {
      return finish(c, error_body("not_held", "this connection does not hold lock \"" + req.name + "\""), "unlock");
    }
    finish(c, {{"ok", true}, {"name", req.name}, {"state", "released"}, {"held_ms", *held}}, "unlock");
  }

  void list_locks(Client* c, const Request& req) {
    if (!locks_configured(c, req)) return;
    json list = json::array();
    for (const LockInfo& l : locks->list(req.name)) {
      list.push_back({{"name", l.name}, {"held", l.held}, {"held_ms", l.held_ms}, {"waiters", l.waiters},
                      {"remote_waiters", l.remote_waiters},
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
    out.lock_handoffs = s.handoffs;
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
    columns = {"name", "held", "held_ms", "waiters", "remote_waiters", "estimated_wait_ms"};
    if (d.locks) {
      for (const LockInfo& l : d.locks->list())
        rows.push_back({l.name, l.held ? "yes" : "no", std::to_string(l.held_ms), std::to_string(l.waiters),
                        std::to_string(l.remote_waiters), opt(l.estimate_ms)});
    }
    return true;
  }
  if (what == "migrations") {
    columns = {"version", "name", "file", "state", "error"};
    if (d.migrations) d.migrations->describe(rows);
    return true;
  }
  return false;
}

}  // namespace lockd
