// Moves the schema version on when PostgreSQL says the schema changed: LISTEN on a
// configured channel over a libpq connection of its own (a control-plane connection,
// driven asynchronously on the loop with uv_poll; libpq loaded on first use, see
// cache/libpq.h), and bump on every NOTIFY. Migration
// tools that change the schema behind the proxy's back run `NOTIFY <channel>` after.
// A lost connection is re-established every few seconds; the version is bumped then
// too, since a notification may have been missed in between.
#pragma once
#include <libpq-fe.h>
#include <uv.h>

#include <string>

#include "cache/libpq.h"
#include "cache/schema_version.h"

namespace cache {

class SchemaListener {
 public:
  SchemaListener(uv_loop_t* loop, SchemaVersion& version);
  ~SchemaListener();
  SchemaListener(const SchemaListener&) = delete;
  SchemaListener& operator=(const SchemaListener&) = delete;

  // Starts (or restarts, if either changed) listening; an empty channel stops.
  void configure(const std::string& channel, const std::string& conninfo);
  // Closes the connection and handles; the loop can then finish.
  void stop();
  bool listening() const { return state_ == State::Listening; }

 private:
  enum class State { Stopped, Connecting, Subscribing, Listening, Waiting };
  static constexpr int kRetryMs = 3000;

  void connect();
  void on_socket(int events);
  void advance_connect();
  void consume();
  void watch(int events);
  void fail(const char* what);
  void drop_connection();

  uv_loop_t* loop_;
  SchemaVersion& version_;
  const pq::Api* pq_ = nullptr;   // loaded on first connect
  std::string channel_, conninfo_;
  State state_ = State::Stopped;
  PGconn* conn_ = nullptr;
  uv_poll_t* poll_ = nullptr;   // heap: closed asynchronously, freed in its close callback
  int poll_fd_ = -1;
  uv_timer_t* retry_ = nullptr;
  bool missed_ = false;          // connection was lost: a NOTIFY may have been missed
};

}  // namespace cache
