#include "cache/redis.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <charconv>
#include <climits>
#include <deque>
#include <exception>
#include <map>
#include <random>

#include "conf/log.h"

// Ownership: each connection attempt is a heap Socket that libuv's close
// callback deletes, after every callback of its requests (connect, write) has
// run. A Link forgets its Socket by clearing socket->link; the Socket's
// callbacks then do nothing. So nothing here is freed under a running callback,
// and a callback that a user callback made the Link give up on stops at once.
// The static callbacks are noexcept: libuv is C, nothing may unwind through it.

namespace cache {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr milliseconds kFirstBackoff{100};
constexpr milliseconds kMaxBackoff{5000};
constexpr milliseconds kConnectTimeout{2000};   // name lookup and TCP connect of one attempt

// One reply; larger is a protocol error (memory stays bounded). Values written
// are kept below it (Redis::kMaxValueBytes), so what we store can be read back.
constexpr size_t kMaxReplyBytes = Redis::kMaxValueBytes + (1 << 20);

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

// Text from Redis (an error reply) for a log line: short, no control characters.
std::string printable(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 200)) out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? '?' : c;
  if (s.size() > 200) out += "...";
  return out;
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
  constexpr std::string_view kRediss = "rediss://";
  t.tls = url.starts_with(kRediss);
  if (!t.tls && !url.starts_with(kRedis))
    return fail("expected redis[s]://[:password@]host[:port][/db] or unix:///path/to/socket");

  std::string_view rest = url.substr(t.tls ? kRediss.size() : kRedis.size());
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
  struct Link;

  // One connection attempt: its handle, TLS, parser and output. Deleted by
  // libuv's close callback, which runs after those of its requests.
  struct Socket {
    union {
      uv_tcp_t tcp;
      uv_pipe_t pipe;
    } h;
    uv_connect_t connect_req;
    uv_write_t write_req;
    Link* link = nullptr;               // null once its Link gave up on it
    std::unique_ptr<tls::Stream> tls;   // rediss://
    resp::Parser parser{kMaxReplyBytes};
    std::string plain;                  // commands not yet encrypted or queued for writing
    std::string wire;                   // bytes to write once the write in flight is done
    std::string writing;                // the write in flight (empty: none)
    bool connected = false;
    bool broken = false;                // a write could not start: dropped from the timer
    uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&h); }
    uv_handle_t* handle() { return reinterpret_cast<uv_handle_t*>(&h); }
  };

  // The command connection or the pub/sub one, with its own reconnect backoff.
  struct Link {
    Link(Impl* o, const char* n) : owner(o), name(n) {}
    Impl* owner;
    const char* name;
    Socket* sock = nullptr;               // null while down
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
  tls::ContextPtr tls_ctx;
  std::string where;                      // for logs: host:port or the socket path, never the password
  Link cmd{this, "command"};
  Link pubsub{this, "pub/sub"};
  std::map<std::string, Message, std::less<>> channels;
  std::function<void()> on_up, on_down;
  RedisStats stats;
  bool started = false, stopped = false;
  std::minstd_rand rng{std::random_device{}()};

  Impl(uv_loop_t* l, RedisTarget t, milliseconds to, tls::ContextPtr ctx)
      : loop(l), target(std::move(t)), timeout(to), tls_ctx(std::move(ctx)) {
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
    // A name is looked up on the thread pool: getaddrinfo would block the loop.
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
    // IPv4 first: "localhost" often lists ::1 first, and Redis is commonly
    // bound to 127.0.0.1 only.
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

  void open(Link& link, const std::string& ip) {
    auto* s = new Socket;
    s->link = &link;
    s->h.tcp.data = s;   // the same field in either member of the union
    s->connect_req.data = s;
    s->write_req.data = s;
    int rc = 0;
    if (target.unix_path.empty()) {
      sockaddr_storage addr{};
      rc = uv_ip4_addr(ip.c_str(), target.port, reinterpret_cast<sockaddr_in*>(&addr));
      if (rc != 0) rc = uv_ip6_addr(ip.c_str(), target.port, reinterpret_cast<sockaddr_in6*>(&addr));
      uv_tcp_init(loop, &s->h.tcp);
      s->h.tcp.data = s;
      if (rc == 0) rc = uv_tcp_connect(&s->connect_req, &s->h.tcp, reinterpret_cast<sockaddr*>(&addr), on_connected);
    } else {
      uv_pipe_init(loop, &s->h.pipe, 0);
      s->h.pipe.data = s;
      uv_pipe_connect(&s->connect_req, &s->h.pipe, target.unix_path.c_str(), on_connected);
    }
    link.sock = s;
    if (rc != 0) return drop(link, std::string("could not connect: ") + uv_strerror(rc));
    if (target.tls) {
      if (!tls_ctx) return drop(link, "TLS: no context for rediss://");
      s->tls = std::make_unique<tls::Stream>(tls_ctx, target.host);   // SNI and verify-full: the URL's host
      if (!s->tls->ok()) return drop(link, "TLS: " + s->tls->error());
    }
    handshake(link);   // written once connected (and, with TLS, once the TLS handshake is done)
  }

  static void on_connected(uv_connect_t* req, int status) noexcept {
    auto* s = static_cast<Socket*>(req->data);
    if (!s->link) return;
    Impl& self = *s->link->owner;
    if (status < 0) return self.drop(*s->link, std::string("could not connect: ") + uv_strerror(status));
    s->connected = true;
    if (self.target.unix_path.empty()) {
      uv_tcp_nodelay(&s->h.tcp, 1);
      // A vanished host behind the idle pub/sub connection is noticed within about 30 s.
      uv_tcp_keepalive(&s->h.tcp, 1, 15);
      uv_os_fd_t fd;
      if (uv_fileno(reinterpret_cast<uv_handle_t*>(&s->h.tcp), &fd) == 0) {
        int interval = 5, count = 3;
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
      }
    }
    uv_read_start(s->stream(), on_alloc, on_read);
    if (s->tls) {
      s->tls->input(nullptr, 0);
      if (s->tls->handshake() == tls::Stream::Step::Failed)
        return self.drop(*s->link, "TLS handshake: " + s->tls->error());
      take_tls_output(*s);
    }
    self.flush(*s);
  }

  // Queued before the connection is up. The command connection always sends at
  // least one command (PING without AUTH or SELECT), so up is reported only
  // once the peer has answered like a Redis.
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
      resp::encode(link.sock->plain, argv);
      size_t replies = argv[0] == "SUBSCRIBE" ? argv.size() - 1 : 1;   // one confirmation per channel
      for (size_t i = 0; i < replies; i++) expect(link, {{}, link.deadline, true});
    }
  }

  void handshake_reply(Link& link, const RedisReply& r) {
    if (!r.ok()) return drop(link, "handshake failed: " + printable(r.str));   // e.g. WRONGPASS, DB index out of range
    if (!link.pending.empty() && link.pending.front().handshake) return;   // more to come
    link.ready = true;
    link.backoff = kFirstBackoff;
    std::string_view tls_version = link.sock && link.sock->tls ? link.sock->tls->version() : "";
    LOG_INFO("redis: %s connection to %s is up%s%.*s", link.name, where.c_str(), tls_version.empty() ? "" : ", ",
             int(tls_version.size()), tls_version.data());
    if (&link != &cmd) return;
    stats.connects++;
    if (on_up) call_user("on_up", on_up);
  }

  // ------------------------------------------------------------ reading

  static void on_alloc(uv_handle_t*, size_t, uv_buf_t* buf) noexcept {
    static char read_buf[64 << 10];   // one loop: the bytes are used before the next read
    *buf = uv_buf_init(read_buf, sizeof read_buf);
  }

  static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) noexcept {
    auto* s = static_cast<Socket*>(stream->data);
    if (!s->link || nread == 0) return;
    Impl& self = *s->link->owner;
    if (nread < 0)
      return self.drop(*s->link, nread == UV_EOF ? "closed by Redis" : std::string("read failed: ") + uv_strerror(int(nread)));
    if (!s->tls) return (void)self.feed(*s, std::string_view(buf->base, size_t(nread)));
    s->tls->input(reinterpret_cast<const uint8_t*>(buf->base), size_t(nread));
    if (!s->tls->handshake_done()) {
      tls::Stream::Step step = s->tls->handshake();
      take_tls_output(*s);
      if (step == tls::Stream::Step::Failed) return self.drop(*s->link, "TLS handshake: " + s->tls->error());
      self.flush(*s);   // the next flight, or (Done) the commands queued behind the handshake
      if (step == tls::Stream::Step::More) return;
    }
    static uint8_t plain[16 << 10];
    for (;;) {
      long n = s->tls->read(plain, sizeof plain);
      take_tls_output(*s);
      if (n < 0) return self.drop(*s->link, "TLS: " + s->tls->error());
      if (n == 0) break;
      if (!self.feed(*s, std::string_view(reinterpret_cast<const char*>(plain), size_t(n)))) return;
    }
    self.flush(*s);
  }

  // Replies to their commands, messages to their channels. False once the
  // socket was given up on (a protocol error, or by a callback).
  bool feed(Socket& s, std::string_view in) {
    RedisReply r;
    for (;;) {
      resp::Parser::Status st = s.parser.next(in, r);
      if (st == resp::Parser::Status::More) return true;
      if (st == resp::Parser::Status::Invalid) {
        drop(*s.link, "protocol error: " + s.parser.error());
        return false;
      }
      Link& link = *s.link;
      if (&link == &pubsub && is_message(r)) deliver(r);
      else reply(link, std::move(r));
      if (!s.link) return false;
    }
  }

  static bool is_message(const RedisReply& m) {
    return m.type == RedisReply::Type::Array && m.elements.size() == 3 && m.elements[0].str == "message";
  }

  void deliver(const RedisReply& m) {
    auto it = channels.find(m.elements[1].str);
    if (it != channels.end()) call_user("message", [&] { it->second(m.elements[1].str, m.elements[2].str); });
  }

  void reply(Link& link, RedisReply r) {
    // Only a broken Redis (or not a Redis) answers what nobody asked.
    if (link.pending.empty()) return drop(link, "a reply that no command asked for");
    Pending p = std::move(link.pending.front());
    link.pending.pop_front();
    arm_deadline(link);
    if (p.handshake) return handshake_reply(link, r);
    if (!r.ok()) stats.errors++;
    if (p.done) call_user("command", [&] { p.done(std::move(r)); });   // last: it may call stop()
  }

  // ------------------------------------------------------------ writing

  bool command(std::vector<std::string> argv, Done done) {
    // An empty command would get no reply from Redis and shift every later reply.
    if (!cmd.ready || argv.empty()) return false;
    resp::encode(cmd.sock->plain, argv);
    expect(cmd, {std::move(done), Clock::now() + timeout, false});
    flush(*cmd.sock);
    return true;
  }

  static void take_tls_output(Socket& s) {
    std::string& out = tls::Stream::output();
    s.wire += out;
    out.clear();
  }

  // Writes what is queued; what comes meanwhile waits for the write in flight,
  // so commands of one loop turn go out together. Never fails the link here:
  // command() must not call back, so a write that cannot start is dropped from the timer.
  void flush(Socket& s) {
    if (!s.connected || s.broken) return;
    if (!s.plain.empty() && (!s.tls || s.tls->handshake_done())) {
      if (s.tls) {
        bool ok = s.tls->write(reinterpret_cast<const uint8_t*>(s.plain.data()), s.plain.size());
        take_tls_output(s);
        s.plain.clear();
        if (!ok) return fail_soon(s);
      } else {
        s.wire += s.plain;
        s.plain.clear();
      }
    }
    if (!s.writing.empty() || s.wire.empty()) return;
    s.writing.swap(s.wire);
    uv_buf_t b = uv_buf_init(s.writing.data(), unsigned(s.writing.size()));
    if (uv_write(&s.write_req, s.stream(), &b, 1, on_written) != 0) fail_soon(s);
  }

  void fail_soon(Socket& s) {
    s.broken = true;
    uv_timer_start(s.link->timer, on_timer, 0, 0);
  }

  static void on_written(uv_write_t* req, int status) noexcept {
    auto* s = static_cast<Socket*>(req->data);
    if (!s->link) return;
    if (status < 0) return s->link->owner->drop(*s->link, std::string("write failed: ") + uv_strerror(status));
    s->writing.clear();
    s->link->owner->flush(*s);
  }

  void expect(Link& link, Pending p) {
    link.pending.push_back(std::move(p));
    if (link.pending.size() == 1) arm_deadline(link);
  }

  // Replies come in order, so the oldest pending command has the nearest deadline.
  // A socket that could not write is dropped first (fail_soon's 0 ms stays).
  void arm_deadline(Link& link) {
    if (link.sock && link.sock->broken) return;
    if (link.pending.empty()) return (void)uv_timer_stop(link.timer);
    auto left = std::chrono::ceil<milliseconds>(link.pending.front().deadline - Clock::now());
    uv_timer_start(link.timer, on_timer, std::max<int64_t>(left.count(), 0), 0);
  }

  // ------------------------------------------------------------ failures

  static void on_timer(uv_timer_t* t) noexcept {
    auto* link = static_cast<Link*>(t->data);
    Impl& self = *link->owner;
    if (!link->sock && !link->lookup) return self.connect(*link);   // the wait before retrying is over
    if (link->sock && link->sock->broken) return self.drop(*link, "could not write to Redis");
    // libuv counts from the loop's cached time: a deadline not reached yet is waited for.
    if (!link->pending.empty() && link->pending.front().deadline > Clock::now()) return self.arm_deadline(*link);
    if (link->pending.empty() || link->pending.front().handshake) return self.drop(*link, "connect timed out");
    self.stats.timeouts++;
    self.drop(*link, "no reply within " + std::to_string(self.timeout.count()) + " ms");
  }

  // Forgets the connection; libuv frees it once its callbacks have run (they do nothing now).
  static void close_connection(Link& link) {
    if (Socket* s = link.sock) {
      s->link = nullptr;
      uv_close(s->handle(), [](uv_handle_t* h) { delete static_cast<Socket*>(h->data); });
      link.sock = nullptr;
    }
    if (link.lookup) {
      link.lookup->data = nullptr;
      uv_cancel(reinterpret_cast<uv_req_t*>(link.lookup));   // best effort: its callback frees it either way
      link.lookup = nullptr;
    }
  }

  void drop(Link& link, const std::string& why) {
    close_connection(link);
    down(link, why);
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

Redis::Redis(uv_loop_t* loop, RedisTarget target, std::chrono::milliseconds timeout, tls::ContextPtr tls)
    : impl_(std::make_unique<Impl>(loop, std::move(target), timeout, std::move(tls))) {}

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
