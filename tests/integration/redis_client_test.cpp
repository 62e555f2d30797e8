// The Redis client (cache/redis.h) on a libuv loop driven by the test, against
// a real redis-server (RedisServer) and against fake servers that never answer
// or answer garbage.
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <atomic>
#include <thread>

#include "cache/redis.h"
#include "harness.h"

namespace itest {
namespace {

using cache::Redis;
using cache::RedisReply;
using cache::RedisTarget;
using Type = RedisReply::Type;

// A loop run by the test. Declare it before the Redis objects on it: its
// destructor runs the close callbacks they leave and checks nothing is left.
class Loop {
 public:
  Loop() { uv_loop_init(&loop_); }
  ~Loop() {
    EXPECT_TRUE(finish(2000)) << "handles or requests still active on the loop";
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }
  uv_loop_t* get() { return &loop_; }

  // Runs the loop until pred() holds or timeout_ms pass; a 5 ms ticker keeps
  // uv_run from blocking longer than that.
  bool run_until(const std::function<bool()>& pred, int timeout_ms) {
    auto* tick = new uv_timer_t;
    uv_timer_init(&loop_, tick);
    uv_timer_start(tick, [](uv_timer_t*) {}, 5, 5);
    auto t0 = Clock::now();
    bool ok;
    while (!(ok = pred()) && ms_since(t0) < timeout_ms) uv_run(&loop_, UV_RUN_ONCE);
    uv_close(reinterpret_cast<uv_handle_t*>(tick), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    return ok;
  }
  void run_for(int ms) { run_until([] { return false; }, ms); }

  // Runs until nothing is active any more; false if something still is after timeout_ms.
  bool finish(int timeout_ms) {
    auto t0 = Clock::now();
    while (uv_run(&loop_, UV_RUN_NOWAIT) != 0) {
      if (ms_since(t0) > timeout_ms) return false;
      std::this_thread::sleep_for(Ms(1));
    }
    return true;
  }

 private:
  uv_loop_t loop_;
};

RedisTarget target_of(const std::string& url) {
  RedisTarget t;
  std::string err;
  EXPECT_TRUE(cache::parse_redis_url(url, t, err)) << url << ": " << err;
  return t;
}

// Sends argv and runs the loop until its reply (Failed if none within 3 s).
RedisReply call(Loop& loop, Redis& r, std::vector<std::string> argv) {
  auto got = std::make_shared<std::optional<RedisReply>>();   // shared: done may outlive this frame
  if (!r.command(std::move(argv), [got](RedisReply rep) { *got = std::move(rep); })) {
    ADD_FAILURE() << "command() refused: the client is not up";
    return {};
  }
  EXPECT_TRUE(loop.run_until([&] { return got->has_value(); }, 3000)) << "no reply within 3 s";
  return got->value_or(RedisReply{});
}

// PUBLISHes probes until Redis counts a subscriber on channel (SUBSCRIBE has no callback of its own).
bool wait_subscribed(Loop& loop, Redis& r, const std::string& channel) {
  auto t0 = Clock::now();
  while (ms_since(t0) < 5000) {
    RedisReply rep = call(loop, r, {"PUBLISH", channel, "probe"});
    if (rep.type == Type::Integer && rep.integer >= 1) return true;
    loop.run_for(20);
  }
  return false;
}

struct Received {
  std::vector<std::pair<std::string, std::string>> messages;   // channel, payload; probes left out
  Redis::Message collector() {
    return [this](std::string_view channel, std::string_view message) {
      if (message != "probe") messages.emplace_back(channel, message);
    };
  }
};

// ---------------------------------------------------------------- fake servers

// A loopback TCP server on a thread. It answers the first command on each
// connection (the client's PING handshake) with +PONG, then misbehaves.
class FakeRedis {
 public:
  enum class Mode {
    Silent,          // reads everything, answers nothing more
    Garbage,         // answers later commands with bytes that are not RESP
    GarbageAtOnce,   // sends garbage as soon as it accepts, before any PING
    Unasked,         // answers later commands twice: a well-formed reply nobody asked for
  };

  explicit FakeRedis(Mode mode) : mode_(mode) {
    listen_fd_ = listen_loopback(&port_);
    if (listen_fd_ < 0) {
      ADD_FAILURE() << "fake server: bind/listen failed";
      return;
    }
    thread_ = std::thread([this] { serve(); });
  }
  ~FakeRedis() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    for (auto& c : conns_) ::close(c.fd);
    ::close(listen_fd_);
  }

  int port() const { return port_; }
  std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_); }
  int connections() const { return accepted_; }

 private:
  struct Conn {
    int fd;
    std::string in;
    int commands = 0;
  };
  static constexpr std::string_view kGarbage = "\x01\x02 this is not RESP\r\n";

  // Length of the first complete command (an array of bulk strings) in buf, 0 if incomplete.
  static size_t command_length(const std::string& buf) {
    size_t pos = 0;
    auto header = [&](char type, long& n) {
      size_t end = buf.find("\r\n", pos);
      if (pos >= buf.size() || buf[pos] != type || end == std::string::npos) return false;
      n = atol(buf.c_str() + pos + 1);
      pos = end + 2;
      return true;
    };
    long argc = 0, len = 0;
    if (!header('*', argc)) return 0;
    for (long i = 0; i < argc; i++) {
      if (!header('$', len)) return 0;
      pos += len + 2;
      if (pos > buf.size()) return 0;
    }
    return pos;
  }

  void answer(Conn& c) {
    while (size_t n = command_length(c.in)) {
      c.in.erase(0, n);
      if (c.commands++ == 0) send_all(c.fd, "+PONG\r\n");
      else if (mode_ == Mode::Garbage) send_all(c.fd, kGarbage);
      else if (mode_ == Mode::Unasked) send_all(c.fd, "+OK\r\n:42\r\n");
    }
  }

  static void send_all(int fd, std::string_view bytes) { (void)::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL); }

  void serve() {
    while (!stop_) {
      std::vector<pollfd> fds{{listen_fd_, POLLIN, 0}};
      for (auto& c : conns_) fds.push_back({c.fd, POLLIN, 0});
      if (poll(fds.data(), fds.size(), 20) <= 0) continue;
      if (fds[0].revents & POLLIN) {
        int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd >= 0) {
          accepted_++;
          conns_.push_back({fd, "", 0});
          if (mode_ == Mode::GarbageAtOnce) send_all(fd, kGarbage);
        }
      }
      for (size_t i = 1; i < fds.size(); i++) {
        if (!fds[i].revents) continue;
        Conn& c = conns_[i - 1];
        char buf[4096];
        ssize_t r = ::recv(c.fd, buf, sizeof buf, 0);
        if (r <= 0) {
          ::close(c.fd);
          c.fd = -1;
          continue;
        }
        c.in.append(buf, size_t(r));
        answer(c);
      }
      std::erase_if(conns_, [](const Conn& c) { return c.fd < 0; });
    }
  }

  Mode mode_;
  int listen_fd_ = -1, port_ = 0;
  std::atomic<int> accepted_{0};
  std::atomic<bool> stop_{false};
  std::vector<Conn> conns_;   // the server thread's only
  std::thread thread_;
};

// ---------------------------------------------------------------- tests

TEST(RedisClient, ParseUrl) {
  RedisTarget t;
  std::string err;
  ASSERT_TRUE(cache::parse_redis_url("redis://127.0.0.1", t, err)) << err;
  EXPECT_EQ(t.host, "127.0.0.1");
  EXPECT_EQ(t.port, 6379);
  EXPECT_EQ(t.db, 0);
  EXPECT_EQ(t.password, "");
  EXPECT_EQ(t.unix_path, "");

  ASSERT_TRUE(cache::parse_redis_url("redis://cache.internal:6380/3", t, err)) << err;
  EXPECT_EQ(t.host, "cache.internal");
  EXPECT_EQ(t.port, 6380);
  EXPECT_EQ(t.db, 3);

  ASSERT_TRUE(cache::parse_redis_url("redis://:s3cret@10.0.0.5:7000/1", t, err)) << err;
  EXPECT_EQ(t.password, "s3cret");
  EXPECT_EQ(t.host, "10.0.0.5");
  EXPECT_EQ(t.port, 7000);
  EXPECT_EQ(t.db, 1);

  ASSERT_TRUE(cache::parse_redis_url("redis://alice:p%40ss%3Aw@host", t, err)) << err;   // user ignored
  EXPECT_EQ(t.password, "p@ss:w");
  EXPECT_EQ(t.host, "host");

  ASSERT_TRUE(cache::parse_redis_url("redis://[::1]:6390/", t, err)) << err;
  EXPECT_EQ(t.host, "::1");
  EXPECT_EQ(t.port, 6390);
  EXPECT_EQ(t.db, 0);

  ASSERT_TRUE(cache::parse_redis_url("rediss://:pw@cache.example.com:6380/2", t, err)) << err;
  EXPECT_TRUE(t.tls);
  EXPECT_EQ(t.host, "cache.example.com");
  EXPECT_EQ(t.port, 6380);
  EXPECT_EQ(t.db, 2);
  EXPECT_EQ(t.password, "pw");
  ASSERT_TRUE(cache::parse_redis_url("redis://cache.example.com", t, err)) << err;
  EXPECT_FALSE(t.tls);

  ASSERT_TRUE(cache::parse_redis_url("unix:///run/redis/redis.sock", t, err)) << err;
  EXPECT_EQ(t.unix_path, "/run/redis/redis.sock");

  // Bad URLs: false, a message naming the problem, out untouched, the password never echoed.
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"", "expected redis[s]://"},
      {"http://host:6379", "expected redis[s]://"},
      {"rediss://", "missing host"},
      {"redis://", "missing host"},
      {"redis://:6379", "missing host"},
      {"redis://host:0", "port"},
      {"redis://host:70000", "port"},
      {"redis://host:", "port"},
      {"redis://host:63a9", "port"},
      {"redis://host/x", "database"},
      {"redis://host/-1", "database"},
      {"redis://::1:6379", "brackets"},
      {"redis://[::1", "']'"},
      {"redis://:topsecret%zz@host", "%-escape"},
      {"redis://:topsecret@host:99999", "port"},
      {"unix://relative.sock", "absolute"},
      {"unix://", "absolute"},
  };
  for (const auto& [url, expected] : bad) {
    RedisTarget out;
    out.host = "untouched";
    std::string e;
    EXPECT_FALSE(cache::parse_redis_url(url, out, e)) << url;
    EXPECT_NE(e.find(expected), std::string::npos) << url << " -> " << e;
    EXPECT_EQ(e.find("topsecret"), std::string::npos) << url << " -> " << e;
    EXPECT_EQ(out.host, "untouched") << url;
  }
}

TEST(RedisClient, RepliesOfEveryType) {
  RedisServer server;
  START_REDIS(server);
  Loop loop;
  Redis r(loop.get(), target_of(server.url()), Ms(2000));
  int ups = 0;
  r.on_up([&] { ups++; });
  r.start();
  ASSERT_TRUE(loop.run_until([&] { return r.up(); }, 3000));
  EXPECT_EQ(ups, 1);

  RedisReply set = call(loop, r, {"SET", "k", "v"});
  EXPECT_EQ(set.type, Type::Status);
  EXPECT_EQ(set.str, "OK");
  EXPECT_TRUE(set.ok());
  EXPECT_EQ(server.cli("GET k"), "v");

  RedisReply get = call(loop, r, {"GET", "k"});
  EXPECT_EQ(get.type, Type::String);
  EXPECT_EQ(get.str, "v");
  EXPECT_EQ(call(loop, r, {"GET", "missing"}).type, Type::Nil);

  RedisReply incr = call(loop, r, {"INCRBY", "n", "5"});
  EXPECT_EQ(incr.type, Type::Integer);
  EXPECT_EQ(incr.integer, 5);

  const std::string binary("a\0b\r\n", 5);
  EXPECT_TRUE(call(loop, r, {"SET", "bin", binary}).ok());
  EXPECT_EQ(call(loop, r, {"GET", "bin"}).str, binary);

  call(loop, r, {"RPUSH", "list", "a", "b", "c"});
  RedisReply range = call(loop, r, {"LRANGE", "list", "0", "-1"});
  ASSERT_EQ(range.type, Type::Array);
  ASSERT_EQ(range.elements.size(), 3u);
  EXPECT_EQ(range.elements[2].str, "c");

  // {1, {"x", {2}}, "y"}: arrays within arrays.
  RedisReply nested = call(loop, r, {"EVAL", "return {1, {'x', {2}}, 'y'}", "0"});
  ASSERT_EQ(nested.type, Type::Array);
  ASSERT_EQ(nested.elements.size(), 3u);
  EXPECT_EQ(nested.elements[0].integer, 1);
  ASSERT_EQ(nested.elements[1].type, Type::Array);
  EXPECT_EQ(nested.elements[1].elements[0].str, "x");
  ASSERT_EQ(nested.elements[1].elements[1].type, Type::Array);
  EXPECT_EQ(nested.elements[1].elements[1].elements[0].integer, 2);
  EXPECT_EQ(nested.elements[2].str, "y");

  RedisReply unknown = call(loop, r, {"NOSUCHCOMMAND"});
  EXPECT_EQ(unknown.type, Type::Error);
  EXPECT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.str.rfind("ERR", 0), 0u) << unknown.str;
  EXPECT_EQ(call(loop, r, {"INCR", "k"}).type, Type::Error);   // "v" is not a number

  // Fire and forget.
  EXPECT_TRUE(r.command({"SET", "ff", "1"}, nullptr));
  loop.run_for(100);
  EXPECT_EQ(server.cli("GET ff"), "1");

  EXPECT_EQ(r.stats().errors, 2u);
  EXPECT_EQ(r.stats().timeouts, 0u);
  EXPECT_EQ(r.stats().connects, 1u);
  EXPECT_EQ(r.stats().disconnects, 0u);
  EXPECT_TRUE(r.up());
}

TEST(RedisClient, DoneIsNeverCalledFromInsideCommand) {
  RedisServer server;
  START_REDIS(server);
  Loop loop;
  Redis r(loop.get(), target_of(server.url()), Ms(2000));
  EXPECT_FALSE(r.command({"PING"}, [](RedisReply) { ADD_FAILURE() << "done of a refused command"; }));
  r.start();
  EXPECT_FALSE(r.up());
  EXPECT_FALSE(r.command({"PING"}, [](RedisReply) { ADD_FAILURE() << "done of a refused command"; }));
  EXPECT_FALSE(r.command({}, nullptr));   // nothing to send
  ASSERT_TRUE(loop.run_until([&] { return r.up(); }, 3000));

  // 100 pipelined commands: each done once, later, in order; one of them sends another from its done.
  bool inside_command = false;
  std::vector<long long> values;
  std::optional<RedisReply> chained;
  for (int i = 0; i < 100; i++) {
    inside_command = true;
    ASSERT_TRUE(r.command({"INCR", "counter"}, [&, i](RedisReply rep) {
      EXPECT_FALSE(inside_command) << "done called from inside command()";
      values.push_back(rep.integer);
      if (i == 50) {
        EXPECT_TRUE(r.command({"GET", "counter"}, [&](RedisReply g) { chained = std::move(g); }));
      }
    }));
    inside_command = false;
  }
  ASSERT_TRUE(loop.run_until([&] { return values.size() == 100 && chained; }, 3000));
  for (int i = 0; i < 100; i++) EXPECT_EQ(values[i], i + 1);
  EXPECT_EQ(chained->str, "100");   // sent after the 51st INCR, answered after all of them
  loop.run_for(50);
  EXPECT_EQ(values.size(), 100u);   // exactly once
}

TEST(RedisClient, PubSubDeliversMessages) {
  RedisServer server;
  START_REDIS(server);
  Loop loop;
  Redis r(loop.get(), target_of(server.url()), Ms(2000));
  Received got;
  r.subscribe("chan:a", got.collector());
  r.subscribe("chan:b", got.collector());
  r.start();
  ASSERT_TRUE(loop.run_until([&] { return r.up(); }, 3000));
  ASSERT_TRUE(wait_subscribed(loop, r, "chan:a"));
  ASSERT_TRUE(wait_subscribed(loop, r, "chan:b"));

  EXPECT_EQ(server.cli("PUBLISH chan:b 'from cli'"), "1");
  EXPECT_EQ(server.cli("PUBLISH elsewhere nobody"), "0");
  RedisReply pub = call(loop, r, {"PUBLISH", "chan:a", "from the client"});
  EXPECT_EQ(pub.integer, 1);
  ASSERT_TRUE(loop.run_until([&] { return got.messages.size() >= 2; }, 2000));
  loop.run_for(50);
  using M = std::pair<std::string, std::string>;
  EXPECT_EQ(got.messages, (std::vector<M>{{"chan:b", "from cli"}, {"chan:a", "from the client"}}));
}

TEST(RedisClient, ConnectionRefusedIsReportedAndRetried) {
  int port = free_port();
  Loop loop;
  Redis r(loop.get(), target_of("redis://127.0.0.1:" + std::to_string(port)), Ms(500));
  int ups = 0;
  r.on_up([&] { ups++; });
  auto t0 = Clock::now();
  r.start();
  loop.run_for(400);
  EXPECT_FALSE(r.up());
  EXPECT_FALSE(r.command({"PING"}, [](RedisReply) { ADD_FAILURE() << "done of a refused command"; }));
  EXPECT_EQ(ups, 0);
  EXPECT_EQ(r.stats().connects, 0u);
  EXPECT_EQ(r.stats().errors, 0u);

  // Refusals are noticed at once and retried with backoff (50-100, 100-200, 200-400,
  // 400-800 ms): a Redis appearing now is found well before a 2 s connect deadline
  // would rescue an attempt hiredis's stock adapter leaves hanging.
  RedisServer server(port);
  START_REDIS(server);
  ASSERT_TRUE(loop.run_until([&] { return r.up(); }, 3000));
  EXPECT_LT(ms_since(t0), 1700);
  EXPECT_EQ(ups, 1);
  EXPECT_EQ(call(loop, r, {"PING"}).str, "PONG");
}

TEST(RedisClient, ServerKilledThenRestartedReconnects) {
  RedisServer server;
  START_REDIS(server);
  Loop loop;
  Redis r(loop.get(), target_of(server.url()), Ms(3000));
  Received got;
  int ups = 0, downs = 0;
  r.subscribe("events", got.collector());
  r.on_up([&] { ups++; });
  r.on_down([&] { downs++; });
  r.start();
  ASSERT_TRUE(loop.run_until([&] { return r.up(); }, 3000));
  ASSERT_TRUE(wait_subscribed(loop, r, "events"));

  // Three commands that block in Redis, then Redis dies.
  std::vector<RedisReply> failed;
  for (int i = 0; i < 3; i++)
    ASSERT_TRUE(r.command({"BLPOP", "never", "0"}, [&](RedisReply rep) { failed.push_back(std::move(rep)); }));
  loop.run_for(100);
  ASSERT_TRUE(failed.empty());
  server.kill();
  ASSERT_TRUE(loop.run_until([&] { return failed.size() == 3; }, 2000));
  for (const RedisReply& f : failed) EXPECT_EQ(f.type, Type::Failed);
  EXPECT_FALSE(r.up());
  EXPECT_FALSE(r.command({"PING"}, nullptr));
  EXPECT_EQ(downs, 1);
  EXPECT_EQ(r.stats().errors, 3u);
  EXPECT_EQ(r.stats().timeouts, 0u);
  EXPECT_EQ(r.stats().disconnects, 1u);

  // Same port again: both connections come back by themselves.
  loop.run_for(200);
  START_REDIS(server);
  ASSERT_TRUE(loop.run_until([&] { return r.up(); }, 5000));
  EXPECT_EQ(ups, 2);
  EXPECT_EQ(r.stats().connects, 2u);
  EXPECT_TRUE(call(loop, r, {"SET", "after", "restart"}).ok());
  EXPECT_EQ(server.cli("GET after"), "restart");
  ASSERT_TRUE(wait_subscribed(loop, r, "events"));
  EXPECT_EQ(server.cli("PUBLISH events again"), "1");
  ASSERT_TRUE(loop.run_until([&] { return !got.messages.empty(); }, 2000));
  EXPECT_EQ(got.messages[0].second, "again");
  EXPECT_EQ(downs, 1);
}

TEST(RedisClient, SilentServerTimesOut) {
  FakeRedis fake(FakeRedis::Mode::Silent);
  Loop loop;
  Redis r(loop.get(), target_of(fake.url()), Ms(300));
  int downs = 0;
  r.on_down([&] { downs++; });
  r.start();
  ASSERT_TRUE(loop.run_until([&] { return r.up(); }, 3000));   // the fake answers the PING handshake

  auto t0 = Clock::now();
  std::vector<std::pair<RedisReply, long>> done;   // reply, ms after sending
  for (int i = 0; i < 3; i++)
    ASSERT_TRUE(r.command({"GET", "k"}, [&](RedisReply rep) { done.emplace_back(std::move(rep), ms_since(t0)); }));
  ASSERT_TRUE(loop.run_until([&] { return done.size() == 3; }, 3000));
  for (const auto& [rep, ms] : done) {
    EXPECT_EQ(rep.type, Type::Failed);
    EXPECT_GE(ms, 295);   // not before the timeout
    EXPECT_LT(ms, 800);   // nor much after it; all at once
  }
  EXPECT_FALSE(r.up());
  EXPECT_EQ(downs, 1);
  EXPECT_EQ(r.stats().timeouts, 1u);   // one timeout took the connection down
  EXPECT_EQ(r.stats().errors, 3u);     // and failed all three
  EXPECT_EQ(r.stats().disconnects, 1u);

  // It reconnects by itself (the fake answers the new handshake too).
  ASSERT_TRUE(loop.run_until([&] { return r.up(); }, 3000));
  EXPECT_EQ(r.stats().connects, 2u);
  EXPECT_GE(fake.connections(), 2);
}

TEST(RedisClient, GarbageRepliesFailWithoutCrashing) {
  Loop loop;
  {
    FakeRedis fake(FakeRedis::Mode::Garbage);
    Redis r(loop.get(), target_of(fake.url()), Ms(2000));
    r.start();
    ASSERT_TRUE(loop.run_until([&] { return r.up(); }, 3000));
    auto t0 = Clock::now();
    RedisReply rep = call(loop, r, {"GET", "k"});
    EXPECT_EQ(rep.type, Type::Failed);
    EXPECT_LT(ms_since(t0), 1000);   // from the protocol error, not the 2 s timeout
    EXPECT_EQ(r.stats().errors, 1u);
    EXPECT_EQ(r.stats().timeouts, 0u);
    EXPECT_EQ(r.stats().disconnects, 1u);
    r.stop();
  }
  {
    // Garbage instead of the handshake's answer: never up, keeps retrying.
    FakeRedis fake(FakeRedis::Mode::GarbageAtOnce);
    Redis r(loop.get(), target_of(fake.url()), Ms(2000));
    r.start();
    loop.run_for(600);
    EXPECT_FALSE(r.up());
    EXPECT_EQ(r.stats().connects, 0u);
    EXPECT_GE(fake.connections(), 2);
    r.stop();
  }
  {
    // A well-formed reply that no command asked for (hiredis 0.14 aborted the
    // process on one): the command gets its own reply, then the connection is dropped.
    FakeRedis fake(FakeRedis::Mode::Unasked);
    Redis r(loop.get(), target_of(fake.url()), Ms(2000));
    r.start();
    ASSERT_TRUE(loop.run_until([&] { return r.up(); }, 3000));
    RedisReply rep = call(loop, r, {"SET", "k", "v"});
    EXPECT_EQ(rep.type, Type::Status);
    EXPECT_EQ(rep.str, "OK");
    EXPECT_TRUE(loop.run_until([&] { return r.stats().disconnects == 1; }, 1000));
    EXPECT_TRUE(loop.run_until([&] { return r.up(); }, 3000));   // and comes back
    r.stop();
  }
}

TEST(RedisClient, AuthAndSelectBeforeUp) {
  RedisServer server;
  START_REDIS(server);
  ASSERT_EQ(server.cli("CONFIG SET requirepass s3cret"), "OK");
  Loop loop;
  // localhost: the name is resolved off the loop; db 2 is SELECTed.
  Redis r(loop.get(), target_of("redis://:s3cret@localhost:" + std::to_string(server.port()) + "/2"), Ms(2000));
  r.start();
  ASSERT_TRUE(loop.run_until([&] { return r.up(); }, 3000));
  EXPECT_TRUE(call(loop, r, {"SET", "where", "db2"}).ok());
  EXPECT_EQ(server.cli("--no-auth-warning -a s3cret -n 2 GET where"), "db2");
  EXPECT_EQ(server.cli("--no-auth-warning -a s3cret -n 0 EXISTS where"), "0");

  // A wrong password: the handshake fails, the connection never counts as up.
  Redis wrong(loop.get(), target_of("redis://:nope@127.0.0.1:" + std::to_string(server.port())), Ms(2000));
  int ups = 0;
  wrong.on_up([&] { ups++; });
  wrong.start();
  loop.run_for(500);
  EXPECT_FALSE(wrong.up());
  EXPECT_EQ(ups, 0);
  EXPECT_EQ(wrong.stats().connects, 0u);
}

TEST(RedisClient, StopFailsPendingAndLetsTheLoopFinish) {
  RedisServer server;
  START_REDIS(server);
  Loop loop;
  Redis r(loop.get(), target_of(server.url()), Ms(5000));
  Received got;
  int downs = 0;
  r.subscribe("events", got.collector());
  r.on_down([&] { downs++; });
  r.start();
  ASSERT_TRUE(loop.run_until([&] { return r.up(); }, 3000));
  ASSERT_TRUE(wait_subscribed(loop, r, "events"));

  int failed = 0;
  for (int i = 0; i < 2; i++)
    ASSERT_TRUE(r.command({"BLPOP", "never", "0"}, [&](RedisReply rep) { failed += rep.type == Type::Failed; }));
  loop.run_for(50);
  r.stop();
  EXPECT_EQ(failed, 2);   // from inside stop()
  EXPECT_FALSE(r.up());
  EXPECT_FALSE(r.command({"PING"}, nullptr));
  r.stop();               // again: nothing happens
  EXPECT_EQ(failed, 2);
  EXPECT_EQ(r.stats().errors, 2u);
  EXPECT_EQ(downs, 0);    // stopping is not losing the connection

  int alive = 1;
  for (int i = 0; i < 5 && alive; i++) alive = uv_run(loop.get(), UV_RUN_NOWAIT);
  EXPECT_EQ(alive, 0) << "the loop still has active handles after stop()";
}

TEST(RedisClient, StopFromInsideADoneCallback) {
  RedisServer server;
  START_REDIS(server);
  Loop loop;
  Redis r(loop.get(), target_of(server.url()), Ms(2000));
  r.start();
  ASSERT_TRUE(loop.run_until([&] { return r.up(); }, 3000));
  std::optional<RedisReply> first, second;
  ASSERT_TRUE(r.command({"PING"}, [&](RedisReply rep) {
    first = std::move(rep);
    r.stop();
  }));
  ASSERT_TRUE(r.command({"BLPOP", "never", "0"}, [&](RedisReply rep) { second = std::move(rep); }));
  ASSERT_TRUE(loop.run_until([&] { return first && second; }, 2000));
  EXPECT_EQ(first->str, "PONG");
  EXPECT_EQ(second->type, Type::Failed);
  EXPECT_FALSE(r.up());
  EXPECT_TRUE(loop.finish(1000));
}

}  // namespace
}  // namespace itest
