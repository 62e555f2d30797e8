// lockd: the local unix socket that answers migration status, runs migrations
// and grants named locks (protocol: docs/lockd-protocol.md). Runs on the daemon's
// loop; talks to PostgreSQL only through asynchronous libpq sessions.
#pragma once
#include <uv.h>

#include <memory>
#include <string>
#include <vector>

#include "cache/schema_version.h"
#include "conf/config.h"
#include "metrics/metrics.h"

namespace lockd {

// libpq conninfo strings for lockd's connections ("" = that part is not configured).
struct Targets {
  std::string locks, migrations;
};

class Lockd {
 public:
  Lockd(uv_loop_t* loop, const conf::Config& cfg, const Targets& targets, cache::SchemaVersion& schema,
        metrics::Metrics& metrics);
  ~Lockd();
  Lockd(const Lockd&) = delete;
  Lockd& operator=(const Lockd&) = delete;

  // Binds the socket (creating its directory if missing); false + err on failure.
  // Does nothing when lockd.socket_path is "".
  bool start(std::string& err);
  // Closes the socket and every client (their locks are released).
  void stop();
  // Counters and gauges for /metrics.
  void fill(metrics::LockdSnapshot& out) const;
  // The admin console's SHOW LOCKS and SHOW MIGRATIONS; false for other names.
  bool admin_table(const std::string& what, std::vector<std::string>& columns,
                   std::vector<std::vector<std::string>>& rows) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lockd
