// Prometheus metrics: the only place metric names are spelled. Everything runs on
// the loop thread. Hot paths bump plain counters the proxy and pools keep
// (pool::Stats, pool::StatementStats) or observe a histogram whose handle is cached
// per pool; a scrape takes a Snapshot of those and serializes it on the loop, so
// nothing is shared with another thread and nothing is looked up per query.
#pragma once
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace metrics {

// One (database, user) pool at scrape time.
struct PoolSnapshot {
  std::string database, user;
  int clients_active = 0, clients_waiting = 0, clients_idle = 0;
  int servers_active = 0, servers_idle = 0, servers_login = 0, servers_testing = 0;
  uint64_t queries = 0, transactions = 0;          // answered (ReadyForQuery), ended (status back to idle)
  uint64_t server_connects = 0, login_failures = 0, wait_timeouts = 0;
  uint64_t bytes_from_clients = 0, bytes_from_servers = 0;   // forwarded
  std::map<std::string, uint64_t> errors_by_class;            // SQLSTATE class ("42") -> ErrorResponses from servers
  std::map<std::string, uint64_t> disconnects;                // reason label -> server connections closed
  int clients_pinned = 0;                                     // transaction mode: pinned to a server now
  std::map<std::string, uint64_t> pins;                       // kind that pinned -> clients pinned so far
};

// lockd (lockd/lockd.h) at scrape time.
struct LockdSnapshot {
  bool enabled = false;
  int clients = 0;
  uint64_t rejected_peers = 0;
  std::map<std::pair<std::string, std::string>, uint64_t> requests;   // (op, result) -> answered requests
  uint64_t lock_acquired = 0, lock_waits = 0, lock_timeouts = 0, lock_contention = 0, lock_lost = 0;
  uint64_t lock_handoffs = 0;
  int locks_held = 0, lock_waiters = 0;
  bool migrations_configured = false;
  std::string migration_status;   // "" until first known
  int migrations_pending = 0;
  uint64_t migrations_applied = 0, migrations_failed = 0;
};

// The result cache (cache/result_cache.h) at scrape time.
struct CacheSnapshot {
  bool enabled = false;
  uint64_t l1_hits = 0, l1_misses = 0, l2_hits = 0, l2_misses = 0, stores = 0, l2_stores = 0;
  uint64_t evictions = 0, expirations = 0, too_large = 0, raced = 0, first_miss = 0, corrupt = 0, invalidated_entries = 0;
  std::map<std::string, uint64_t> invalidations;   // reason -> events
  uint64_t bytes = 0, max_bytes = 0, entries = 0;
  bool redis_configured = false, redis_up = false;
  uint64_t redis_errors = 0, redis_timeouts = 0;
};

struct Snapshot {
  std::vector<PoolSnapshot> pools;
  uint64_t statement_prepares = 0, statement_hits = 0, statement_misses = 0, statement_evictions = 0,
           statement_reprepares = 0;
  uint64_t schema_version = 0;
  uint64_t config_reloads = 0;
  // TLS: connections now by (side "client"/"server", version "TLSv1.3"), failed handshakes by side.
  std::map<std::pair<std::string, std::string>, int> tls_connections;
  std::map<std::string, uint64_t> tls_handshake_failures;
  LockdSnapshot lockd;
  CacheSnapshot cache;
};

class Metrics {
 public:
  explicit Metrics(std::string version);
  // Time clients of this pool waited for a server; the handle stays valid.
  prometheus::Histogram& pool_wait(const std::string& database, const std::string& user);
  // Query (Sync or simple Query to ReadyForQuery) and transaction durations.
  prometheus::Histogram& query_duration(const std::string& database, const std::string& user);
  prometheus::Histogram& transaction_duration(const std::string& database, const std::string& user);
  // How long transaction-mode clients stayed pinned to a server (proxy/pinning.h).
  prometheus::Histogram& pin_duration(const std::string& database, const std::string& user);
  // A pool is gone: its histogram series go too.
  void forget_pool(prometheus::Histogram& wait, prometheus::Histogram& query, prometheus::Histogram& transaction,
                   prometheus::Histogram& pin);
  // lockd: status answer latency by source ("cache" or "database"), and time
  // from a lock request to its grant.
  prometheus::Histogram& lockd_status_seconds(const std::string& source);
  prometheus::Histogram& lock_wait_seconds();
  // How late the event loop ran its 100 ms janitor timer: time the loop spent
  // blocked (a long callback) delays every connection by as much.
  prometheus::Histogram& event_loop_lag_seconds();
  // Prometheus text exposition format (version 0.0.4).
  std::string render(const Snapshot& snap) const;

 private:
  std::string version_;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Histogram>* pool_wait_;
  prometheus::Family<prometheus::Histogram>* query_duration_;
  prometheus::Family<prometheus::Histogram>* transaction_duration_;
  prometheus::Family<prometheus::Histogram>* pin_duration_;
  prometheus::Family<prometheus::Histogram>* lockd_status_;
  prometheus::Family<prometheus::Histogram>* lock_wait_;
  prometheus::Family<prometheus::Histogram>* loop_lag_;
};

}  // namespace metrics
