#include "cache/redis.h"

#include <arpa/inet.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <charconv>
#include <climits>
#include <deque>
#include <exception>
#include <map>
#include <random>

#include "cache/redis_libuv_adapter.h"
#include "conf/log.h"

// How hiredis 0.14.1 behaves, which everything below relies on:
// - Every callback given with a command runs exactly once: with the reply, or
//   with a NULL reply when the context is freed (by redisAsyncFree or by
//   hiredis itself after an error, which then also calls the disconnect
//   callback). A failed connect calls the connect callback with an error and
//   then frees the context itself.
// - redisAsyncFree inside a reply callback only marks the context; hiredis
//   frees it when the callback returns. Outside a callback it frees at once.
// - A well-formed reply that no command asked for trips an assert in hiredis
//   (garbage bytes are a protocol error and handled): only a broken Redis
//   would send one.
// So a context is detached (ac->data = nullptr) before anything frees it, and
// the static callbacks below ignore detached contexts. They are noexcept: hiredis
// and libuv are C, nothing may unwind through them.

namespace cache {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr milliseconds kFirstBackoff{100};
constexpr milliseconds kMaxBackoff{5000};
constexpr milliseconds kConnectTimeout{2000};   // name lookup and TCP connect of one attempt

RedisReply convert(const redisReply* r) {
  RedisReply out;
  switch (r->type) {
    case REDIS_REPLY_NIL: out.type = RedisReply::Type::Nil; break;
    case REDIS_REPLY_INTEGER: out.type = RedisReply::Type::Integer; out.integer = r->integer; break;
    case REDIS_REPLY_STRING: out.type = RedisReply::Type::String; out.str.assign(r->str, r->len); break;
    case REDIS_REPLY_STATUS: out.type = RedisReply::Type::Status; out.str.assign(r->str, r->len); break;
    case REDIS_REPLY_ERROR: out.type = RedisReply::Type::Error; out.str.assign(r->str, r->len); break;
    case REDIS_REPLY_ARRAY:
      out.type = RedisReply::Type::Array;
      for (size_t i = 0; i < r->elements; i++) out.elements.push_back(convert(r->element[i]));
      break;
  }
  return out;
}

// A throwing caller's callback is logged and the client carries on.
template <class F>
void call_user(const char* what, F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    LOG_ERROR("redis: %s callback threw: %s", what, e.what());
  }
}

bool to_int(std::string_view s, int min, int max, int& out) {
  int v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v < min || v > max) return false;
  out = v;
  return true;
}

// %XX escapes, so that a password can hold ':', '@' or '/'.
bool percent_decode(std::string_view s, std::string& out) {
  out.clear();
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    unsigned v = 0;
    if (i + 2 >= s.size() || std::from_chars(s.data() + i + 1, s.data() + i + 3, v, 16).ptr != s.data() + i + 3)
      return false;
    out += char(v);
    i += 2;
  }
  return true;
}

bool is_ip_literal(const std::string& host) {
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

}  // namespace

// Error messages never quote the URL whole: it may hold a password.
bool parse_redis_url(std::string_view url, RedisTarget& out, std::string& err) {
  auto fail = [&](const std::string& why) {
    err = "Redis URL: " + why;
    return false;
  };
  constexpr std::string_view kUnix = "unix://", kRedis = "redis://";
  RedisTarget t;
  if (url.starts_with(kUnix)) {
    std::string_view path = url.substr(kUnix.size());
    if (path.empty() || path[0] != '/') return fail("unix:// needs an absolute socket path, as in unix:///run/redis/redis.sock");
    t.unix_path = path;
    out = t;
    return true;
  }
  if (url.starts_with("rediss://")) return fail("TLS (rediss://) is not supported");
  if (!url.starts_with(kRedis)) return fail("expected redis://[:password@]host[:port][/db] or unix:///path/to/socket");

  std::string_view rest = url.substr(kRedis.size());
  size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string_view db = slash == std::string_view::npos ? "" : rest.substr(slash + 1);
  if (size_t at = authority.rfind('@'); at != std::string_view::npos) {
    // user:password@ or :password@; a user name is ignored (AUTH is sent with the password alone).
    std::string_view userinfo = authority.substr(0, at);
    size_t colon = userinfo.find(':');
    if (colon != std::string_view::npos && !percent_decode(userinfo.substr(colon + 1), t.password))
      return fail("bad %-escape in the password");
    authority = authority.substr(at + 1);
  }
  std::string_view port;
  bool has_port = false;
  if (authority.starts_with('[')) {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return fail("missing ']' after the IPv6 address");
    t.host = authority.substr(1, close - 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty() && after[0] != ':') return fail("expected ':port' after the IPv6 address");
    has_port = !after.empty();
    if (has_port) port = after.substr(1);
  } else {
    size_t colon = authority.find(':');
    if (colon != std::string_view::npos && authority.find(':', colon + 1) != std::string_view::npos)
      return fail("an IPv6 address goes in brackets, as in redis://[::1]:6379");
    t.host = authority.substr(0, colon);
    has_port = colon != std::string_view::npos;
    if (has_port) port = authority.substr(colon + 1);
  }
  if (t.host.empty()) return fail("missing host, as in redis://127.0.0.1:6379");
  if (has_port && !to_int(port, 1, 65535, t.port))
    return fail("port must be a number from 1 to 65535, got \"" + std::string(port) + "\"");
  if (!db.empty() && !to_int(db, 0, INT_MAX, t.db))
    return fail("database must be a number, got \"" + std::string(db) + "\"");
  out = t;
  return true;
}

struct Redis::Impl {
  struct Pending {
    Done done;                      // empty for fire and forget and for the handshake
    Clock::time_point deadline;
    bool handshake = false;         // AUTH, SELECT, PING, SUBSCRIBE confirmations: not the caller's
  };

  // One hiredis connection with its own reconnect backoff: the command one or the pub/sub one.
  struct Link {
    Link(Impl* o, const char* n) : owner(o), name(n) {}
    Impl* owner;
    const char* name;
    redisAsyncContext* ac = nullptr;      // null while down
    uv_getaddrinfo_t* lookup = nullptr;   // host name being resolved (heap: freed in its callback)
    // Counts down to the deadline while connecting or awaiting a reply, and to
    // the next attempt while down. Heap: freed in its close callback.
    uv_timer_t* timer = nullptr;
    bool ready = false;                   // handshake done
    milliseconds backoff = kFirstBackoff;
    Clock::time_point deadline;           // of the current connect and handshake
    std::deque<Pending> pending;          // in send order: replies come back in the same order
  };

  uv_loop_t* loop;
  RedisTarget target;
  milliseconds timeout;
  std::string where;                      // for logs: host:port or the socket path, never the password
  Link cmd{this, "command"};
  Link pubsub{this, "pub/sub"};
  std::map<std::string, Message, std::less<>> channels;
  std::function<void()> on_up, on_down;
  RedisStats stats;
  bool started = false, stopped = false;
  std::minstd_rand rng{std::random_device{}()};

  Impl(uv_loop_t* l, RedisTarget t, milliseconds to) : loop(l), target(std::move(t)), timeout(to) {
    where = target.unix_path.empty() ? target.host + ":" + std::to_string(target.port) : target.unix_path;
  }

  void start() {
    if (started || stopped) return;
    started = true;
    for (Link* link : {&cmd, &pubsub}) {
      if (link == &pubsub && channels.empty()) continue;   // only opened when someone subscribed
      link->timer = new uv_timer_t;
      uv_timer_init(loop, link->timer);
      link->timer->data = link;
      connect(*link);
    }
  }

  // ------------------------------------------------------------ connecting

  void connect(Link& link) {
    link.deadline = Clock::now() + kConnectTimeout;
    uv_timer_start(link.timer, on_timer, kConnectTimeout.count(), 0);
    if (!target.unix_path.empty() || is_ip_literal(target.host)) return open(link, target.host);
    // hiredis would resolve the name itself, blocking the loop: resolve on the thread pool first.
    auto* req = new uv_getaddrinfo_t;
    req->data = &link;
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    int rc = uv_getaddrinfo(loop, req, on_resolved, target.host.c_str(), nullptr, &hints);
    if (rc != 0) {
      delete req;
      return down(link, std::string("could not look up the host: ") + uv_strerror(rc));
    }
    link.lookup = req;
  }

  static void on_resolved(uv_getaddrinfo_t* req, int status, addrinfo* res) noexcept {
    auto* link = static_cast<Link*>(req->data);
    // IPv4 first, as hiredis does: "localhost" often lists ::1 first, and Redis
    // is commonly bound to 127.0.0.1 only.
    const addrinfo* pick = res;
    for (const addrinfo* a = res; a; a = a->ai_next)
      if (a->ai_family == AF_INET) {
        pick = a;
        break;
      }
    char ip[INET6_ADDRSTRLEN] = "";
    if (status == 0 && pick) uv_ip_name(pick->ai_addr, ip, sizeof ip);
    uv_freeaddrinfo(res);
    delete req;
    if (!link) return;   // abandoned: timed out or stopped
    link->lookup = nullptr;
    if (!ip[0]) return link->owner->down(*link, std::string("could not resolve the host: ") + uv_strerror(status));
    link->owner->open(*link, ip);
  }

  void open(Link& link, const std::string& host) {
    redisAsyncContext* ac = target.unix_path.empty() ? redisAsyncConnect(host.c_str(), target.port)
                                                     : redisAsyncConnectUnix(target.unix_path.c_str());
    if (!ac) return down(link, "out of memory");
    if (ac->err) {   // failed at once (a missing unix socket): hiredis leaves freeing it to us
      std::string why = ac->c.errstr;
      redisAsyncFree(ac);
      return down(link, why);
    }
    if (!redis_uv::attach(ac, loop)) {
      redisAsyncFree(ac);
      return down(link, "could not watch the socket");
    }
    if (target.unix_path.empty()) redisEnableKeepAlive(&ac->c);   // notices a vanished host while idle
    ac->data = &link;
    link.ac = ac;
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    redisAsyncSetConnectCallback(ac, on_connect);   // after attach: this starts waiting for the connect
    handshake(link);
  }

  // A failed connect; hiredis frees ac when this returns. A successful one
  // needs nothing here: the handshake is already queued.
  static void on_connect(const redisAsyncContext* ac, int status) noexcept {
    auto* link = static_cast<Link*>(ac->data);
    if (link && status != REDIS_OK) link->owner->lost(*link, ac->c.errstr);
  }

  // Queued before the connect completes (hiredis sends it once it does), so
  // nothing is ever sent from the connect callback, where freeing the context
  // would pull it from under hiredis. The command connection always sends at
  // least one command (PING without AUTH or SELECT): up is then reported from a
  // reply callback, where hiredis defers a free that on_up might cause, and
  // only once the peer has answered like a Redis.
  void handshake(Link& link) {
    std::vector<std::vector<std::string>> steps;
    if (!target.password.empty()) steps.push_back({"AUTH", target.password});
    if (&link == &cmd) {
      if (target.db != 0) steps.push_back({"SELECT", std::to_string(target.db)});
      if (steps.empty()) steps.push_back({"PING"});
    } else {
      std::vector<std::string> subscribe{"SUBSCRIBE"};
      for (const auto& [channel, cb] : channels) subscribe.push_back(channel);
      steps.push_back(subscribe);
    }
    for (const auto& argv : steps) {
      bool subscribe = argv[0] == "SUBSCRIBE";   // confirmed once per channel, through the message callback
      if (!send(link, argv, subscribe ? on_message : on_reply)) return drop(link, "could not send " + argv[0]);
      size_t replies = subscribe ? argv.size() - 1 : 1;
      for (size_t i = 0; i < replies; i++) expect(link, {{}, link.deadline, true});
    }
  }

  void handshake_reply(Link& link, const RedisReply& r) {
    if (!r.ok()) return drop(link, "handshake failed: " + r.str);   // e.g. WRONGPASS, DB index out of range
    if (!link.pending.empty() && link.pending.front().handshake) return;   // more to come
    link.ready = true;
    link.backoff = kFirstBackoff;
    LOG_INFO("redis: %s connection to %s is up", link.name, where.c_str());
    if (&link != &cmd) return;
    stats.connects++;
    if (on_up) call_user("on_up", on_up);
  }

  // ------------------------------------------------------------ commands

  bool command(std::vector<std::string> argv, Done done) {
    // An empty command would get no reply from Redis and shift every later reply.
    if (!cmd.ready || argv.empty() || !send(cmd, argv, on_reply)) return false;
    expect(cmd, {std::move(done), Clock::now() + timeout, false});
    return true;
  }

  static bool send(Link& link, const std::vector<std::string>& argv, redisCallbackFn* cb) {
    if (!link.ac) return false;
    std::vector<const char*> ptrs;
    std::vector<size_t> lens;
    for (const std::string& a : argv) {
      ptrs.push_back(a.data());
      lens.push_back(a.size());
    }
    return redisAsyncCommandArgv(link.ac, cb, nullptr, int(argv.size()), ptrs.data(), lens.data()) == REDIS_OK;
  }

  void expect(Link& link, Pending p) {
    link.pending.push_back(std::move(p));
    if (link.pending.size() == 1) arm_deadline(link);
  }

  // Replies come in order, so the oldest pending command has the nearest deadline.
  void arm_deadline(Link& link) {
    if (link.pending.empty()) return (void)uv_timer_stop(link.timer);
    auto left = std::chrono::duration_cast<milliseconds>(link.pending.front().deadline - Clock::now());
    uv_timer_start(link.timer, on_timer, std::max<int64_t>(left.count(), 0), 0);
  }

  static void on_reply(redisAsyncContext* ac, void* r, void*) noexcept {
    auto* link = static_cast<Link*>(ac->data);
    if (!link) return;
    if (!r) return link->owner->lost(*link, ac->c.errstr);   // hiredis is freeing ac
    link->owner->reply(*link, convert(static_cast<redisReply*>(r)));
  }

  void reply(Link& link, RedisReply r) {
    Pending p = std::move(link.pending.front());
    link.pending.pop_front();
    arm_deadline(link);
    if (p.handshake) return handshake_reply(link, r);
    if (!r.ok()) stats.errors++;
    if (p.done) call_user("command", [&] { p.done(std::move(r)); });   // last: it may call stop()
  }

  static void on_message(redisAsyncContext* ac, void* r, void*) noexcept {
    auto* link = static_cast<Link*>(ac->data);
    if (!link) return;
    if (!r) return link->owner->lost(*link, ac->c.errstr);
    RedisReply m = convert(static_cast<redisReply*>(r));
    if (m.type != RedisReply::Type::Array || m.elements.size() < 3) return;
    const std::string& kind = m.elements[0].str;
    if (kind == "subscribe" && !link->pending.empty()) return link->owner->reply(*link, std::move(m));
    if (kind != "message") return;
    auto it = link->owner->channels.find(m.elements[1].str);
    if (it != link->owner->channels.end())
      call_user("message", [&] { it->second(m.elements[1].str, m.elements[2].str); });
  }

  // ------------------------------------------------------------ failures

  static void on_disconnect(const redisAsyncContext* ac, int) noexcept {
    if (auto* link = static_cast<Link*>(ac->data)) link->owner->lost(*link, ac->c.errstr);
  }

  static void on_timer(uv_timer_t* t) noexcept {
    auto* link = static_cast<Link*>(t->data);
    Impl& self = *link->owner;
    if (!link->ac && !link->lookup) return self.connect(*link);   // the wait before retrying is over
    if (link->pending.empty() || link->pending.front().handshake) return self.drop(*link, "connect timed out");
    self.stats.timeouts++;
    self.drop(*link, "no reply within " + std::to_string(self.timeout.count()) + " ms");
  }

  // Forgets the connection without freeing it: its callbacks become no-ops.
  static void detach(Link& link) {
    if (link.ac) link.ac->data = nullptr;
    link.ac = nullptr;
    if (link.lookup) {
      link.lookup->data = nullptr;
      uv_cancel(reinterpret_cast<uv_req_t*>(link.lookup));   // best effort: its callback frees it either way
      link.lookup = nullptr;
    }
  }

  // hiredis is freeing the connection (error, EOF, failed connect).
  void lost(Link& link, const std::string& why) {
    detach(link);
    down(link, why);
  }

  // We give up on the connection (timeout, failed handshake).
  void drop(Link& link, const std::string& why) {
    close_connection(link);
    down(link, why);
  }

  static void close_connection(Link& link) {
    redisAsyncContext* ac = link.ac;
    detach(link);
    if (ac) redisAsyncFree(ac);   // runs the pending callbacks, which see a detached context
  }

  void down(Link& link, const std::string& why) {
    bool was_up = link.ready;
    link.ready = false;
    if (link.backoff == kFirstBackoff) LOG_WARN("redis: %s connection to %s: %s", link.name, where.c_str(), why.c_str());
    else LOG_DEBUG("redis: %s connection to %s: %s", link.name, where.c_str(), why.c_str());
    retry_later(link);
    if (was_up && &link == &cmd) stats.disconnects++;
    fail_pending(link);
    if (was_up && &link == &cmd && on_down && !stopped) call_user("on_down", on_down);
  }

  void retry_later(Link& link) {
    if (stopped) return;
    std::uniform_int_distribution<int64_t> jitter(link.backoff.count() / 2, link.backoff.count());
    uv_timer_start(link.timer, on_timer, jitter(rng), 0);
    link.backoff = std::min(link.backoff * 2, kMaxBackoff);
  }

  // Callers are told last, once the state is consistent: they may send again or stop.
  void fail_pending(Link& link) {
    std::deque<Pending> failed;
    failed.swap(link.pending);
    for (Pending& p : failed)
      if (!p.handshake) stats.errors++;
    for (Pending& p : failed)
      if (p.done) call_user("command", [&] { p.done(RedisReply{}); });
  }

  void stop() {
    if (stopped) return;
    stopped = true;
    for (Link* link : {&cmd, &pubsub}) {
      if (link->timer) {
        uv_close(reinterpret_cast<uv_handle_t*>(link->timer), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
        link->timer = nullptr;
      }
      close_connection(*link);
      link->ready = false;
    }
    for (Link* link : {&cmd, &pubsub}) fail_pending(*link);
  }
};

Redis::Redis(uv_loop_t* loop, RedisTarget target, std::chrono::milliseconds timeout)
    : impl_(std::make_unique<Impl>(loop, std::move(target), timeout)) {}

// Destroy a Redis after stop() (or let this stop it), never from inside one of
// its own callbacks. stop() only asks libuv to close handles: the loop must run
// once more afterwards to free them (their close callbacks do not touch this
// object, so it may be gone by then).
Redis::~Redis() { impl_->stop(); }

void Redis::start() { impl_->start(); }
bool Redis::command(std::vector<std::string> argv, Done done) { return impl_->command(std::move(argv), std::move(done)); }
void Redis::subscribe(std::string channel, Message on_message) { impl_->channels[std::move(channel)] = std::move(on_message); }
void Redis::on_up(std::function<void()> cb) { impl_->on_up = std::move(cb); }
void Redis::on_down(std::function<void()> cb) { impl_->on_down = std::move(cb); }
bool Redis::up() const { return impl_->cmd.ready; }
const RedisStats& Redis::stats() const { return impl_->stats; }
void Redis::stop() { impl_->stop(); }

}  // namespace cache
