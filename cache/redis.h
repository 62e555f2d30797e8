// A Redis client on the daemon's libuv loop (hiredis's async API with its libuv
// adapter): commands with a deadline, a pub/sub connection of its own, and
// reconnection with backoff. Redis is an optional tier: every failure (refused,
// timed out, disconnected mid-reply, garbage on the wire) comes back as a
// RedisReply of type Failed, is counted, and never blocks or throws.
#pragma once
#include <uv.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace cache {

struct RedisReply {
  enum class Type : uint8_t { Failed, Nil, Integer, String, Status, Array, Error };
  Type type = Type::Failed;   // Failed: not sent, timed out, or the connection was lost
  long long integer = 0;
  std::string str;            // String, Status, Error
  std::vector<RedisReply> elements;
  bool ok() const { return type != Type::Failed && type != Type::Error; }
};

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
};
// Parses redis://[:password@]host[:port][/db] or unix:///path/to/socket; false + err if invalid.
bool parse_redis_url(std::string_view url, RedisTarget& out, std::string& err);

class Redis {
 public:
  using Done = std::function<void(RedisReply)>;
  using Message = std::function<void(std::string_view channel, std::string_view message)>;

  Redis(uv_loop_t* loop, RedisTarget target, std::chrono::milliseconds timeout);
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
