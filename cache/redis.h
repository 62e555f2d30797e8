// A Redis client on the daemon's libuv loop: RESP (cache/resp.h) over TCP, TLS
// (tls/tls.h, for rediss://) or a unix socket; commands with a deadline, a
// pub/sub connection of its own, and reconnection with backoff. Redis is an
// optional tier: every failure (refused, timed out, disconnected mid-reply,
// garbage or an unasked-for reply on the wire, a failed TLS handshake) comes
// back as a RedisReply of type Failed, is counted, and never blocks or throws.
#pragma once
#include <uv.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cache/resp.h"
#include "tls/tls.h"

namespace cache {

struct RedisStats {
  uint64_t errors = 0;       // commands that failed (Failed or Error replies)
  uint64_t timeouts = 0;     // of those, failed because Redis did not answer in time
  uint64_t connects = 0;     // successful connects of the command connection
  uint64_t disconnects = 0;  // command connection lost (or given up on)
};

struct RedisTarget {
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string unix_path;     // set instead of host/port for unix:// URLs
  std::string password;      // AUTH after connect when set
  int db = 0;                // SELECT after connect when non-zero
  bool tls = false;          // rediss://: TLS, with the context given to Redis
};
// Parses redis[s]://[:password@]host[:port][/db] or unix:///path/to/socket; false + err if invalid.
bool parse_redis_url(std::string_view url, RedisTarget& out, std::string& err);

class Redis {
 public:
  // Longest value a caller should SET: a reply up to this size (plus framing) is read back.
  static constexpr size_t kMaxValueBytes = 64 << 20;

  using Done = std::function<void(RedisReply)>;
  using Message = std::function<void(std::string_view channel, std::string_view message)>;

  // tls: for a rediss:// target, the context its connections use (tls::Contexts::redis).
  Redis(uv_loop_t* loop, RedisTarget target, std::chrono::milliseconds timeout, tls::ContextPtr tls = nullptr);
  ~Redis();
  Redis(const Redis&) = delete;
  Redis& operator=(const Redis&) = delete;

  // Connects both connections; they reconnect by themselves with backoff
  // (100 ms doubling to 5 s, jittered) whenever lost.
  void start();
  // Sends argv as one command. False (done never called) when the command
  // connection is not up. Otherwise done is called exactly once, from a later
  // loop callback (never from inside command()): with the reply, or Failed when
  // no reply came within the timeout or the connection was lost. A command that
  // times out takes the connection down and reconnects it: a slow Redis is a
  // dead one for a cache. done may be empty (fire and forget).
  bool command(std::vector<std::string> argv, Done done);
  // SUBSCRIBEs to channel on the pub/sub connection (again after each reconnect);
  // on_message gets every message. Call before start().
  void subscribe(std::string channel, Message on_message);
  // Called after each (re)connect of the command connection, once AUTH/SELECT are done.
  void on_up(std::function<void()> cb);
  // Called when the command connection is lost or given up on.
  void on_down(std::function<void()> cb);
  bool up() const;
  const RedisStats& stats() const;
  // Closes both connections and timers: pending commands get Failed. The loop can then finish.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cache
