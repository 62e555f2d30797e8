// Fuzzes a whole client session: the real Proxy (listeners, ClientSession,
// pools, ServerConn, plan and result caches) on its libuv loop, in this process,
// in front of a scripted fake PostgreSQL server; the input is a script of what
// the client sends and what the server does.
//
// Input: one flags byte, then steps. Flags pick the proxy (pool mode, result
// cache, plan cache, health check on every acquire, raw startup): eight proxies
// are built on first use and kept, each on its own unix socket. Steps:
//   0,1  client bytes, as they are (1 length byte, then the bytes)
//   2    a client message with a correct length (type byte, length byte, body)
//   3    a Query (length byte, text; the NUL is added)
//   4    the server: error on next reply, ParameterStatus, NoticeResponse,
//        NotificationResponse, raw bytes, hold or release replies, close, FATAL
//   5    run the loop until nothing moves
//   6    a CancelRequest for this client (or a made-up one) on a new connection
//   7    the client leaves; a new one logs in (at most 4 times)
// Unless raw startup is chosen, the client first sends a valid StartupPacket.
//
// Invariants, checked while the loop runs and after the client leaves:
//  - no sanitizer finding; no crash;
//  - everything a server receives frames as valid frontend messages, and each
//    non-streaming one has a valid body (pgsidecar forwards only whole,
//    validated messages, and never splices two clients' bytes);
//  - everything the client receives frames as valid backend messages;
//  - a server is linked to at most one client, and that client is linked back;
//  - a logged-in client that leaves is gone at once, even while its server holds
//    its answer back (see leave() for the two bounded exceptions);
//  - once the server has answered everything: no client left in the proxy and
//    no server still granted or waited for;
//  - the client leaves (step 7) and the next one gets the same server: whatever
//    the first left behind must not reach it (the checks above, for the second).
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "conf/log.h"
#include "proxy/client_session.h"
#include "proxy/decoder.h"
#include "proxy/protocol.h"
#include "proxy/proxy.h"
#include "proxy/server_conn.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

constexpr int kPort = 5432;
constexpr size_t kMaxBuffered = 1 << 20;   // what the fake peers keep unread (the proxy bounds its own)

int unix_connect(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  FUZZ_CHECK(fd >= 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 && errno != EINPROGRESS) {
    close(fd);
    return -1;
  }
  return fd;
}

// Nonblocking read of everything available; false once the peer has closed.
bool read_all(int fd, std::string& into, bool& moved) {
  char buf[16384];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      moved = true;
      if (into.size() < kMaxBuffered) into.append(buf, size_t(n));
      continue;
    }
    if (n == 0) return false;
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
  }
}

// Sends what it can of `out`; false if the peer is gone.
bool write_some(int fd, std::string& out, bool& moved) {
  while (!out.empty()) {
    ssize_t n = send(fd, out.data(), out.size(), MSG_NOSIGNAL);
    if (n > 0) {
      out.erase(0, size_t(n));
      moved = true;
      continue;
    }
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
  }
  return true;
}

std::string upper_word(std::string_view s) {
  size_t i = 0;
  while (i < s.size() && (s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '(' || s[i] == ';')) i++;
  std::string w;
  while (i < s.size() && w.size() < 16 && std::isalpha(static_cast<unsigned char>(s[i])))
    w += char(std::toupper(static_cast<unsigned char>(s[i++])));
  return w;
}

// ---------------------------------------------------------------- fake server

struct Backend {
  int fd = -1;
  bool started = false;        // the startup packet was answered
  bool closing = false;        // close once `out` is sent
  char status = 'I';           // transaction status in ReadyForQuery
  bool copy_in = false, skip_to_sync = false;
  uint32_t pid = 0, key = 0;
  bool control = false;        // a pgsidecar control connection (libpq): kept between inputs
  bool garbled = false;        // sent raw script bytes: may stop mid-message
  std::string in, out, held;   // held: replies kept back while the script holds them
  std::map<std::string, std::string> statements;
  std::string portal;          // text of the unnamed portal's statement
};

struct FakeServer {
  std::string dir;
  int listen_fd = -1;
  std::vector<std::unique_ptr<Backend>> backends;
  uint32_t next_pid = 1000;
  // Script state, per input.
  bool error_next = false, hold = false;

  void listen_on(const std::string& d) {
    dir = d;
    std::string path = dir + "/.s.PGSQL." + std::to_string(kPort);
    unlink(path.c_str());
    listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    FUZZ_CHECK(bind(listen_fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    FUZZ_CHECK(listen(listen_fd, 128) == 0);
  }

  Backend* newest() {
    for (auto it = backends.rbegin(); it != backends.rend(); ++it)
      if ((*it)->started && !(*it)->closing && !(*it)->control) return it->get();
    return nullptr;
  }

  void reply(Backend& b, const std::string& msgs) { (hold ? b.held : b.out) += msgs; }

  void error(Backend& b, std::string& m, const char* code) {
    pg::write_error(m, "ERROR", code, "fake error");
    if (b.status == 'T') b.status = 'E';
  }

  // Effects of a statement's text on the fake transaction state, and its reply.
  void run_statement(Backend& b, std::string_view text, std::string& m, bool simple) {
    const std::string w = upper_word(text);
    if (error_next) {
      error_next = false;
      error(b, m, "42000");
      if (!simple) b.skip_to_sync = true;
      return;
    }
    if (w.empty()) {
      m += std::string("I\0\0\0\4", 5);
      return;
    }
    if (b.status == 'E' && w != "ROLLBACK" && w != "ABORT" && w != "COMMIT" && w != "END") {
      pg::write_error(m, "ERROR", "25P02", "current transaction is aborted");
      if (!simple) b.skip_to_sync = true;
      return;
    }
    if (w == "BEGIN" || w == "START") b.status = 'T';
    if (w == "COMMIT" || w == "END" || w == "ROLLBACK" || w == "ABORT") b.status = 'I';
    if (w == "COPY" && simple) {
      std::string t(text);
      for (char& c : t) c = char(std::toupper(static_cast<unsigned char>(c)));
      if (t.find("STDIN") != std::string::npos) {
        pg::Writer(m, 'G').u8(0).u16(0).finish();
        b.copy_in = true;
        return;
      }
      if (t.find("STDOUT") != std::string::npos) {
        pg::Writer(m, 'H').u8(0).u16(0).finish();
        pg::Writer(m, 'd').bytes("1\n").finish();
        m += std::string("c\0\0\0\4", 5);
        pg::Writer(m, 'C').cstr("COPY 1").finish();
        return;
      }
    }
    if (w == "SELECT" || w == "VALUES" || w == "SHOW" || w == "WITH" || w == "TABLE") {
      if (simple) pg::Writer(m, 'T').u16(1).cstr("c").u32(0).u16(0).u32(23).u16(4).u32(uint32_t(-1)).u16(0).finish();
      pg::Writer(m, 'D').u16(1).u32(1).bytes("1").finish();
      pg::Writer(m, 'C').cstr("SELECT 1").finish();
      return;
    }
    pg::Writer(m, 'C').cstr(w).finish();
  }

  void ready(Backend& b, std::string& m) { pg::write_ready(m, b.status); }

  void startup(Backend& b, const uint8_t* body, size_t n) {
    pg::StartupPacket sp;
    FUZZ_CHECK(pg::parse_startup(body, n, sp));   // the proxy only sends valid ones
    if (sp.code == pg::kCancelRequest) {
      for (auto& o : backends)
        if (o->pid == sp.cancel_pid && o->key == sp.cancel_key && !o->held.empty()) {
          std::string m;
          pg::write_error(m, "ERROR", "57014", "canceling statement due to user request");
          o->out += o->held;   // the fake's replies were queued; the error stands for the cancel
          o->held.clear();
          o->out += m;
        }
      b.closing = true;
      return;
    }
    if (sp.code == pg::kSslRequest || sp.code == pg::kGssEncRequest) {
      b.out += 'N';
      return;
    }
    FUZZ_CHECK(sp.code == pg::kProtocolV3);
    b.started = true;
    for (auto& [k, v] : sp.params)
      if (k == "application_name" && v.rfind("pgsidecar ", 0) == 0) b.control = true;
    b.pid = next_pid++;
    b.key = b.pid * 7919u;
    std::string m;
    pg::write_auth(m, pg::kAuthOk);
    for (auto [k, v] : {std::pair{"server_version", "16.0"}, {"server_encoding", "UTF8"}, {"client_encoding", "UTF8"},
                        {"DateStyle", "ISO, MDY"}, {"TimeZone", "UTC"}, {"integer_datetimes", "on"},
                        {"standard_conforming_strings", "on"}, {"IntervalStyle", "postgres"},
                        {"application_name", ""}, {"is_superuser", "off"}})
      pg::write_param_status(m, k, v);
    pg::write_backend_key(m, b.pid, b.key);
    ready(b, m);
    b.out += m;
  }

  // One whole message from the proxy; checks that it is a valid one.
  void message(Backend& b, const uint8_t* p, const pg::Frame& f) {
    const uint8_t* body = p + pg::kHeaderLen;
    const size_t n = f.len - 4;
    // Bind and FunctionCall stream past their leading fields: their remaining
    // fields are the server's to judge, as PostgreSQL does. Nothing else may be malformed.
    if (f.type != 'B' && f.type != 'F') FUZZ_CHECK(pg::valid_frontend_body(f.type, body, n));
    std::string m;
    if (b.skip_to_sync && f.type != 'S') return;
    pg::Reader r(body, n);
    switch (f.type) {
      case 'Q': {
        std::string_view text = r.cstr();
        run_statement(b, text, m, true);
        if (!b.copy_in) ready(b, m);
        break;
      }
      case 'P': {
        std::string name(r.cstr());
        std::string_view text = r.cstr();
        if (error_next) {
          error_next = false;
          error(b, m, "42601");
          b.skip_to_sync = true;
        } else {
          b.statements[name] = text;
          m += std::string(reinterpret_cast<const char*>(pg::kParseComplete), 5);
        }
        break;
      }
      case 'B': {
        r.cstr();
        std::string stmt(r.cstr());
        auto it = b.statements.find(stmt);
        if (it == b.statements.end()) {
          pg::write_error(m, "ERROR", "26000", "prepared statement does not exist");
          b.skip_to_sync = true;
        } else {
          b.portal = it->second;
          m += std::string(reinterpret_cast<const char*>(pg::kBindComplete), 5);
        }
        break;
      }
      case 'D':
        if (body[0] == 'S') pg::Writer(m, 't').u16(0).finish();
        if (upper_word(b.portal) == "SELECT")
          pg::Writer(m, 'T').u16(1).cstr("c").u32(0).u16(0).u32(23).u16(4).u32(uint32_t(-1)).u16(0).finish();
        else
          m += std::string("n\0\0\0\4", 5);
        break;
      case 'E':
        run_statement(b, b.portal, m, false);
        break;
      case 'C':
        m += std::string("3\0\0\0\4", 5);
        break;
      case 'S':
        b.skip_to_sync = false;
        ready(b, m);
        break;
      case 'F':
        pg::Writer(m, 'V').u32(uint32_t(-1)).finish();
        ready(b, m);
        break;
      case 'c':
      case 'f':
        if (!b.copy_in) break;   // outside COPY PostgreSQL ignores them
        b.copy_in = false;
        if (f.type == 'c')
          pg::Writer(m, 'C').cstr("COPY 0").finish();
        else
          error(b, m, "57014");
        ready(b, m);
        break;
      case 'X':
        b.closing = true;
        break;
      default:   // 'H' Flush, 'd' CopyData: nothing to answer
        break;
    }
    if (!m.empty()) reply(b, m);
  }

  void process(Backend& b) {
    size_t at = 0;
    while (!b.closing) {
      const uint8_t* p = reinterpret_cast<const uint8_t*>(b.in.data()) + at;
      const size_t avail = b.in.size() - at;
      if (!b.started) {
        if (avail < 8) break;
        uint32_t len = pg::get_u32(p);
        FUZZ_CHECK(len >= 8 && len <= pg::kMaxStartupLen);
        if (avail < len) break;
        startup(b, p + 4, len - 4);
        at += len;
        continue;
      }
      pg::Frame f;
      std::string err;
      pg::FrameStatus st = pg::frame_frontend(p, avail, SIZE_MAX, f, err);
      if (st == pg::FrameStatus::Invalid) {
        // Only a streaming message's own fields may be wrong (see message()).
        FUZZ_CHECK(f.type == 'B' || f.type == 'F');
        FUZZ_CHECK(f.len >= 4 && f.len <= pg::kMaxMessageLen);
        f.whole = avail >= f.total;
      }
      if (!f.whole) break;
      message(b, p, f);
      at += f.total;
    }
    b.in.erase(0, at);
  }

  bool pump() {
    bool moved = false;
    for (;;) {
      int fd = accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) break;
      auto b = std::make_unique<Backend>();
      b->fd = fd;
      backends.push_back(std::move(b));
      moved = true;
    }
    for (size_t i = 0; i < backends.size();) {
      Backend& b = *backends[i];
      bool alive = read_all(b.fd, b.in, moved);
      if (alive && !b.closing) process(b);
      alive = write_some(b.fd, b.out, moved) && alive;
      if (!alive || (b.closing && b.out.empty())) {
        close(b.fd);
        backends.erase(backends.begin() + long(i));
        moved = true;
        continue;
      }
      i++;
    }
    return moved;
  }

  // The end of an input: pool servers go, so that each input starts from empty pools.
  void close_servers() {
    for (auto& b : backends)
      if (!b->control) b->closing = true;
  }

  void release_held() {
    hold = false;
    for (auto& b : backends) {
      b->out += b->held;
      b->held.clear();
    }
  }

  // A server that sent raw bytes may have stopped mid-message, where pgsidecar
  // rightly waits for the rest (up to server_reset_timeout, which the fuzzer never
  // lets pass). Such a server ends its stream here, as a broken one's peer would.
  void close_garbled() {
    for (auto& b : backends)
      if (b->garbled) b->closing = true;
  }

  // A script step acting on the newest server connection.
  void act(uint8_t what, const uint8_t* data, size_t n) {
    Backend* b = newest();
    std::string m;
    switch (what % 8) {
      case 0: error_next = true; return;
      case 1: hold = !hold; if (!hold) release_held(); return;
      case 2: {
        static const char* names[] = {"application_name", "client_encoding", "DateStyle", "TimeZone",
                                      "standard_conforming_strings", "IntervalStyle", "search_path"};
        std::string value(reinterpret_cast<const char*>(data), n);
        value.erase(std::find(value.begin(), value.end(), '\0'), value.end());
        pg::write_param_status(m, names[n % 7], value);
        break;
      }
      case 3: pg::write_error(m, "NOTICE", "01000", std::string(reinterpret_cast<const char*>(data), strnlen(reinterpret_cast<const char*>(data), n))); break;
      case 4: pg::Writer(m, 'A').u32(b ? b->pid : 0).cstr("chan").cstr("payload").finish(); break;
      case 5:   // anything at all
        m.assign(reinterpret_cast<const char*>(data), n);
        if (b) b->garbled = true;
        break;
      case 6:
        if (b) b->closing = true;
        return;
      case 7:
        pg::write_error(m, "FATAL", "57P01", "terminating connection due to administrator command");
        if (b) {
          b->out += m;
          b->closing = true;
        }
        return;
    }
    if (b) b->out += m;
  }
};

// ---------------------------------------------------------------- the client

struct Client {
  int fd = -1;
  std::string in, out;
  size_t checked = 0;               // bytes of `in` framed so far
  uint32_t pid = 0, key = 0;        // from BackendKeyData
  bool closed = false;
  bool framed = false;              // a first message has come

  bool pump() {
    if (fd < 0) return false;
    bool moved = false;
    bool alive = read_all(fd, in, moved);
    // Answers to SSLRequest/GSSENCRequest are one byte 'N'; no NoticeResponse
    // comes before the first message. After that, everything frames as backend messages.
    while (!framed && checked < in.size() && in[checked] == 'N') checked++;
    while (in.size() > checked) {
      pg::Frame f;
      std::string err;
      auto p = reinterpret_cast<const uint8_t*>(in.data()) + checked;
      pg::FrameStatus st = pg::frame_backend(p, in.size() - checked, f, err);
      if (st == pg::FrameStatus::Invalid)
        fprintf(stderr, "client stream: %s, at byte %zu of %zu\n", err.c_str(), checked, in.size());
      FUZZ_CHECK(st != pg::FrameStatus::Invalid);
      if (!f.whole) break;
      if (f.type == 'K' && f.len == 12) {
        pid = pg::get_u32(p + 5);
        key = pg::get_u32(p + 9);
      }
      checked += f.total;
      framed = true;
    }
    if (checked > (1 << 16) && checked == in.size()) {
      in.clear();
      checked = 0;
    }
    if (alive) alive = write_some(fd, out, moved);
    if (!alive) shut();
    return moved;
  }
  void shut() {
    if (fd >= 0) close(fd);
    fd = -1;
    closed = true;
  }
};

// ---------------------------------------------------------------- the world

struct World {
  uv_loop_t loop;
  std::string dir;
  FakeServer server;
  std::unique_ptr<proxy::Proxy> proxies[32];

  World() {
    uv_loop_init(&loop);
    signal(SIGPIPE, SIG_IGN);   // as the daemon does: writes to a closed peer fail with EPIPE
    char tmpl[] = "/tmp/pgsidecar-session-fuzz.XXXXXX";
    FUZZ_CHECK(mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    server.listen_on(dir);
    logx::set_level(conf::LogLevel::Error);
  }

  proxy::Proxy& proxy_for(uint8_t flags) {
    const unsigned i = flags & 31;
    if (!proxies[i]) {
      conf::Config c;
      c.listen_addr = "";
      c.unix_socket_dir = dir + "/p" + std::to_string(i);
      mkdir(c.unix_socket_dir.c_str(), 0700);
      c.metrics.listen = "";
      c.lockd.socket_path = "";
      c.log_level = conf::LogLevel::Error;
      c.pool_mode = (i & 1) ? conf::PoolMode::Transaction : conf::PoolMode::Session;
      c.cache.mode = (i & 2) ? conf::CacheMode::All : conf::CacheMode::Off;
      c.max_prepared_statements = (i & 4) ? 0 : 4;   // small: evictions happen
      c.server_check_delay = conf::Duration((i & 8) ? 0 : 30000);
      c.default_pool_size = 1;
      c.max_client_prepared_statements = 8;
      c.max_inspect_bytes = pg::kMinInspectLimit;
      conf::Database d;
      d.name = "*";
      d.host = dir;
      d.port = kPort;
      c.databases.push_back(d);
      proxies[i] = std::make_unique<proxy::Proxy>(&loop, std::move(c), proxy::Userlist{});
      std::string err;
      FUZZ_CHECK(proxies[i]->start(err));
    }
    return *proxies[i];
  }

  std::string socket_of(uint8_t flags) const {
    return dir + "/p" + std::to_string(flags & 31) + "/.s.PGSQL.6432";
  }

  void check_links(proxy::Proxy& p) {
    std::set<const proxy::ServerConn*> servers;
    for (const proxy::ClientSession* c : p.sessions()) {
      if (!c->server()) continue;
      FUZZ_CHECK(servers.insert(c->server()).second);   // one client per server
      FUZZ_CHECK(c->server()->client() == c);
    }
  }

  // Runs the loop and the fake peers until nothing has moved for a few rounds.
  void settle(proxy::Proxy& p, std::vector<Client*> clients, int max_rounds = 400) {
    int quiet = 0;
    for (int round = 0; round < max_rounds && quiet < 4; round++) {
      uv_run(&loop, UV_RUN_NOWAIT);
      bool moved = server.pump();
      for (Client* c : clients) moved |= c->pump();
      check_links(p);
      quiet = moved ? 0 : quiet + 1;
    }
  }
};

World& world() {
  static World* w = new World();   // kept for the process: proxies (and their caches) carry over
  return *w;
}

// The client (and its cancel connections) leave. A logged-in client is gone at
// once, even while its server holds an answer back. One still logging in, or
// whose server runs pgsidecar's own SETs, is not read until that ends (bounded by
// server_reset_timeout); it is gone once the server answers what it held, or
// ends its stream after raw bytes. Then no server is still granted or waited for.
void leave(World& w, proxy::Proxy& p, Client& client, std::vector<std::unique_ptr<Client>>& cancels) {
  client.shut();
  for (auto& c : cancels) c->shut();
  cancels.clear();
  w.settle(p, {});
  for (const proxy::ClientSession* c : p.sessions())
    FUZZ_CHECK(!c->logged_in() || (c->server() && c->server()->busy_internal()));
  w.server.release_held();
  w.server.close_garbled();
  w.settle(p, {});
  FUZZ_CHECK(p.client_count() == 0);
  w.server.error_next = false;
  w.settle(p, {});
  for (proxy::PoolEntry* e : p.pool_entries()) {
    pool::Stats s = e->pool->stats();
    FUZZ_CHECK(s.active == 0 && s.waiting == 0);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Every text then parses on the loop (StatementCache::kParseOnLoop): nothing
  // waits on the thread pool, so settle() sees the whole effect of each step.
  if (size < 1 || size > cache::StatementCache::kParseOnLoop) return 0;
  World& w = world();
  const uint8_t flags = data[0];
  proxy::Proxy& p = w.proxy_for(flags);
  w.server.error_next = false;
  w.server.hold = false;

  Client client;
  std::vector<std::unique_ptr<Client>> cancels;
  auto everyone = [&] {
    std::vector<Client*> v{&client};
    for (auto& c : cancels) v.push_back(c.get());
    return v;
  };
  auto arrive = [&] {
    client = Client{};
    client.fd = unix_connect(w.socket_of(flags));
    FUZZ_CHECK(client.fd >= 0);
    if (!(flags & 16)) pg::write_startup(client.out, {{"user", "fuzz"}, {"database", "fuzzdb"}});
  };
  arrive();

  size_t at = 1;
  auto take = [&](size_t n) {
    n = std::min(n, size - at);
    const uint8_t* q = data + at;
    at += n;
    return std::pair{q, n};
  };
  int comebacks = 0;
  while (at < size) {
    const uint8_t op = data[at++];
    switch (op & 7) {
      case 0:
      case 1: {
        auto [q, n] = take(at < size ? size_t(data[at++]) + 1 : 0);
        client.out.append(reinterpret_cast<const char*>(q), n);
        break;
      }
      case 2: {
        if (size - at < 2) {
          at = size;
          break;
        }
        char type = char(data[at++]);
        auto [q, n] = take(data[at++]);
        pg::Writer(client.out, type).bytes(std::string_view(reinterpret_cast<const char*>(q), n)).finish();
        break;
      }
      case 3: {
        auto [q, n] = take(at < size ? data[at++] : 0);
        auto text = reinterpret_cast<const char*>(q);
        pg::write_query(client.out, std::string_view(text, strnlen(text, n)));
        break;
      }
      case 4: {
        auto [q, n] = take(at < size ? data[at++] % 64 : 0);
        w.server.act(op >> 3, q, n);
        break;
      }
      case 5:
        w.settle(p, everyone());
        break;
      case 6: {
        if (cancels.size() >= 4) break;
        auto c = std::make_unique<Client>();
        c->fd = unix_connect(w.socket_of(flags));
        if (c->fd < 0) break;
        uint32_t key = client.key;
        if (op & 8) key ^= 1;   // a wrong key is ignored
        pg::write_cancel(c->out, client.pid, key);
        cancels.push_back(std::move(c));
        break;
      }
      case 7:   // the client leaves; the next one gets the same pool (of one server)
        if (++comebacks > 4) {
          at = size;
          break;
        }
        leave(w, p, client, cancels);
        arrive();
        break;
    }
    client.pump();
    for (auto& c : cancels) c->pump();
    uv_run(&w.loop, UV_RUN_NOWAIT);
    w.server.pump();
  }
  w.settle(p, everyone());
  leave(w, p, client, cancels);
  w.server.close_servers();   // each input starts from empty pools
  w.settle(p, {});
  return 0;
}
