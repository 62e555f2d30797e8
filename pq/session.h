// One control-plane PostgreSQL connection, driven asynchronously on the
// loop (libpq non-blocking, uv_poll), never blocking it. Queries run one at a
// time in the order given; the connection is opened on first use and reopened on
// the next query after it is lost. Notifications on LISTENed channels are
// reported as they arrive, which also makes a dead server noticed while idle.
#pragma once
#include <libpq-fe.h>
#include <uv.h>

#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "pq/libpq.h"

namespace pq {

using Row = std::vector<std::optional<std::string>>;

struct QueryResult {
  bool ok = false;
  bool connection_failed = false;   // never reached the server, or lost it: the query may not have run
  std::string sqlstate;             // of the server's error
  std::string message;              // "ERROR 42601: syntax error ..." or libpq's connection message
  std::vector<Row> rows;            // of the last statement that returned rows
};

class Session {
 public:
  using Done = std::function<void(QueryResult)>;

  Session(uv_loop_t* loop, std::string label);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Where to connect and which channels to LISTEN on after each connect.
  void configure(std::string conninfo, std::vector<std::string> channels);
  // Called with the channel name, payload and sending backend's pid of every notification.
  using Notify = std::function<void(const std::string& channel, const std::string& payload, int be_pid)>;
  void on_notify(Notify cb) { on_notify_ = std::move(cb); }
  // Called when the channels are LISTENed to, after each connect.
  void on_listening(std::function<void()> cb) { on_listening_ = std::move(cb); }
  // Called when a connection attempt fails or an established connection is lost
  // (was_up: session state, such as advisory locks, is gone with it). Nothing
  // reconnects by itself: the next query or connect_now() does.
  void on_down(std::function<void(bool was_up)> cb) { on_down_ = std::move(cb); }

  // Runs sql: with params, as one statement through the extended protocol
  // ($1, $2, ... as text); without, through the simple protocol (several
  // statements allowed). done runs exactly once, on a later loop iteration.
  void query(std::string sql, std::vector<std::string> params, Done done);
  // Opens the connection now (if not open) so notifications start flowing.
  void connect_now();
  // Closes the connection; queued queries fail. The loop can then finish.
  void stop();

  bool connected() const { return state_ == State::Ready || state_ == State::Busy; }

 private:
  enum class State { Closed, Connecting, Ready, Busy };
  struct Pending {
    std::string sql;
    std::vector<std::string> params;
    Done done;
  };
  static constexpr uint64_t kConnectTimeoutMs = 5000;

  void kick();
  void connect();
  void advance_connect();
  void on_socket(int status, int events);
  void send_next();
  void consume();
  void watch(int events);
  void fail(const std::string& why);
  void close_connection();

  uv_loop_t* loop_;
  std::string label_, conninfo_;
  std::vector<std::string> channels_;
  const pq::Api* pq_ = nullptr;
  PGconn* conn_ = nullptr;
  State state_ = State::Closed;
  uv_poll_t* poll_ = nullptr;   // heap: freed in its close callback
  int poll_fd_ = -1;
  uv_timer_t* connect_timer_ = nullptr;
  uv_timer_t* kick_ = nullptr;
  std::deque<Pending> queue_;   // front is running when state_ == Busy
  QueryResult current_;
  bool subscribed_ = false;     // LISTENs sent on this connection
  Notify on_notify_;
  std::function<void()> on_listening_;
  std::function<void(bool)> on_down_;
};

// Quotes an SQL identifier ("a""b").
std::string quote_ident(const std::string& s);

}  // namespace pq
