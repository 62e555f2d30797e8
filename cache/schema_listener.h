// Moves the schema version on when PostgreSQL says the schema changed: LISTEN on a
// configured channel over a control-plane connection of its own (pq::Session,
// asynchronous on the loop), and bump on every NOTIFY. Migration tools that change
// the schema behind the proxy's back run `NOTIFY <channel>` after. A lost
// connection is re-established every few seconds; the version is bumped when
// listening again, since a notification may have been missed in between.
#pragma once
#include <uv.h>

#include <memory>
#include <string>

#include "pq/session.h"
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
  // Closes the connection and timer; the loop can then finish.
  void stop();
  bool listening() const { return listening_; }

 private:
  static constexpr int kRetryMs = 3000;
  void retry_later();

  uv_loop_t* loop_;
  SchemaVersion& version_;
  std::string channel_, conninfo_;
  std::unique_ptr<pq::Session> session_;
  uv_timer_t* retry_ = nullptr;   // heap: closed asynchronously, freed in its close callback
  bool listening_ = false;
  bool missed_ = false;           // the connection was down: a NOTIFY may have been missed
};

}  // namespace cache
