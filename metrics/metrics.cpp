#include "metrics/metrics.h"

#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

namespace metrics {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

ClientMetric::Label label(std::string name, std::string value) { return {std::move(name), std::move(value)}; }

ClientMetric sample(double value, std::vector<ClientMetric::Label> labels, MetricType type) {
  ClientMetric m;
  m.label = std::move(labels);
  if (type == MetricType::Counter) m.counter.value = value;
  else m.gauge.value = value;
  return m;
}

// A family built from snapshot values; add() appends one labelled sample.
struct Builder {
  MetricFamily family;
  Builder(std::string name, std::string help, MetricType type) {
    family.name = std::move(name);
    family.help = std::move(help);
    family.type = type;
  }
  Builder& add(double value, std::vector<ClientMetric::Label> labels = {}) {
    family.metric.push_back(sample(value, std::move(labels), family.type));
    return *this;
  }
};

}  // namespace

Metrics::Metrics(std::string version)
    : version_(std::move(version)), registry_(std::make_shared<prometheus::Registry>()) {
  pool_wait_ = &prometheus::BuildHistogram()
                    .Name("pgsidecar_pool_wait_seconds")
                    .Help("Time a client waited in the pool's queue for a server, for clients that had to wait")
                    .Register(*registry_);
  query_duration_ = &prometheus::BuildHistogram()
                         .Name("pgsidecar_query_duration_seconds")
                         .Help("From a client's query or Sync reaching an otherwise quiet server connection to its "
                               "ReadyForQuery")
                         .Register(*registry_);
  pin_duration_ = &prometheus::BuildHistogram()
                       .Name("pgsidecar_pin_duration_seconds")
                       .Help("How long transaction-mode clients stayed pinned to a server by session state, "
                             "observed when the state is gone or the client leaves")
                       .Register(*registry_);
  transaction_duration_ = &prometheus::BuildHistogram()
                               .Name("pgsidecar_transaction_duration_seconds")
                               .Help("From the first query of a transaction reaching the server to the "
                                     "ReadyForQuery that ends it")
                               .Register(*registry_);
  lockd_status_ = &prometheus::BuildHistogram()
                       .Name("pgsidecar_lockd_status_seconds")
                       .Help("lockd status requests, from the request line to its answer, by source: cache (no "
                             "database round trip) or database")
                       .Register(*registry_);
  lock_wait_ = &prometheus::BuildHistogram()
                    .Name("pgsidecar_lock_wait_seconds")
                    .Help("lockd named locks: time from a lock request to its grant")
                    .Register(*registry_);
  loop_lag_ = &prometheus::BuildHistogram()
                   .Name("pgsidecar_event_loop_lag_seconds")
                   .Help("How late the event loop ran its 100 ms timer, observed every tick: time the loop was "
                         "blocked, which delays every connection")
                   .Register(*registry_);
}

namespace {
const prometheus::Histogram::BucketBoundaries kLatencyBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                                 0.1,    0.25,  0.5,    1,     2.5,   5,     10};
}  // namespace

prometheus::Histogram& Metrics::query_duration(const std::string& database, const std::string& user) {
  return query_duration_->Add({{"database", database}, {"user", user}}, kLatencyBuckets);
}

prometheus::Histogram& Metrics::transaction_duration(const std::string& database, const std::string& user) {
  return transaction_duration_->Add({{"database", database}, {"user", user}}, kLatencyBuckets);
}

prometheus::Histogram& Metrics::pin_duration(const std::string& database, const std::string& user) {
  static const prometheus::Histogram::BucketBoundaries buckets = {0.01, 0.1, 1, 10, 60, 300, 1800, 3600, 14400};
  return pin_duration_->Add({{"database", database}, {"user", user}}, buckets);
}

prometheus::Histogram& Metrics::pool_wait(const std::string& database, const std::string& user) {
  static const prometheus::Histogram::BucketBoundaries buckets = {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120};
  return pool_wait_->Add({{"database", database}, {"user", user}}, buckets);
}

void Metrics::forget_pool(prometheus::Histogram& wait, prometheus::Histogram& query,
                          prometheus::Histogram& transaction, prometheus::Histogram& pin) {
  pin_duration_->Remove(&pin);
  pool_wait_->Remove(&wait);
  query_duration_->Remove(&query);
  transaction_duration_->Remove(&transaction);
}

prometheus::Histogram& Metrics::lockd_status_seconds(const std::string& source) {
  static const prometheus::Histogram::BucketBoundaries buckets = {0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
                                                                  0.0025,   0.005,   0.01,   0.025,   0.05,   0.1,
                                                                  0.25,     1};
  return lockd_status_->Add({{"source", source}}, buckets);
}

prometheus::Histogram& Metrics::event_loop_lag_seconds() {
  static const prometheus::Histogram::BucketBoundaries buckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                                  0.1,   0.25,   0.5,   1,    2.5};
  return loop_lag_->Add({}, buckets);
}

prometheus::Histogram& Metrics::lock_wait_seconds() {
  static const prometheus::Histogram::BucketBoundaries buckets = {0.0001, 0.001, 0.005, 0.01, 0.05, 0.1,
                                                                  0.5,    1,     5,     10,   30,   120};
  return lock_wait_->Add({}, buckets);
}

namespace {

// lockd's families, when it runs.
void render_lockd(const LockdSnapshot& l, std::vector<MetricFamily>& out) {
  if (!l.enabled) return;
  auto counter = [&](const char* name, const char* help, uint64_t v) {
    out.push_back(Builder(name, help, MetricType::Counter).add(double(v)).family);
  };
  auto gauge = [&](const char* name, const char* help, double v) {
    out.push_back(Builder(name, help, MetricType::Gauge).add(v).family);
  };
  gauge("pgsidecar_lockd_clients", "Connections to the lockd socket", l.clients);
  counter("pgsidecar_lockd_rejected_peers_total", "lockd peers refused by uid/gid (lockd.allowed_uids/gids)",
          l.rejected_peers);
  Builder requests("pgsidecar_lockd_requests_total", "lockd requests answered, by op and result (ok or error code)",
                   MetricType::Counter);
  for (const auto& [key, n] : l.requests) requests.add(double(n), {label("op", key.first), label("result", key.second)});
  out.push_back(std::move(requests.family));
  counter("pgsidecar_lock_acquired_total", "Named locks granted", l.lock_acquired);
  counter("pgsidecar_lock_waits_total", "Lock requests that had to wait (queued)", l.lock_waits);
  counter("pgsidecar_lock_timeouts_total", "Lock requests that timed out", l.lock_timeouts);
  counter("pgsidecar_lock_contention_total",
          "Tries for a lock's advisory lock that found it held or another host's turn first", l.lock_contention);
  counter("pgsidecar_lock_handoffs_total",
          "Locks passed to another host while local waiters were left (hosts take turns)", l.lock_handoffs);
  counter("pgsidecar_locks_lost_total", "Held locks lost with the PostgreSQL connection", l.lock_lost);
  gauge("pgsidecar_locks_held", "Named locks held now", l.locks_held);
  gauge("pgsidecar_lock_waiters", "Lock requests waiting now", l.lock_waiters);
  if (!l.migrations_configured) return;
  Builder status("pgsidecar_migrations_status", "Last known migration status: 1 for the current one",
                 MetricType::Gauge);
  for (const char* s : {"current", "pending", "failed", "checksum-mismatch", "unknown"})
    status.add(l.migration_status == s ? 1 : 0, {label("status", s)});
  out.push_back(std::move(status.family));
  gauge("pgsidecar_migrations_pending", "Migration files not applied, as last known", l.migrations_pending);
  counter("pgsidecar_migrations_applied_total", "Migrations this sidecar applied", l.migrations_applied);
  counter("pgsidecar_migrations_failed_total", "Migrations this sidecar tried that failed", l.migrations_failed);
}

// The result cache's families, when it is on.
void render_cache(const CacheSnapshot& c, std::vector<MetricFamily>& out) {
  if (!c.enabled) return;
  auto by_tier = [&](const char* name, const char* help, uint64_t l1, uint64_t l2) {
    Builder b(name, help, MetricType::Counter);
    b.add(double(l1), {label("tier", "l1")});
    if (c.redis_configured) b.add(double(l2), {label("tier", "l2")});
    out.push_back(std::move(b.family));
  };
  auto counter = [&](const char* name, const char* help, uint64_t v) {
    out.push_back(Builder(name, help, MetricType::Counter).add(double(v)).family);
  };
  auto gauge = [&](const char* name, const char* help, double v) {
    out.push_back(Builder(name, help, MetricType::Gauge).add(v).family);
  };
  by_tier("pgsidecar_cache_hits_total", "Cacheable queries answered from the result cache, by tier", c.l1_hits,
          c.l2_hits);
  by_tier("pgsidecar_cache_misses_total",
          "Cacheable queries not found, by tier (an l1 miss asks l2 when Redis is up)", c.l1_misses, c.l2_misses);
  by_tier("pgsidecar_cache_stores_total", "Responses stored, by tier", c.stores, c.l2_stores);
  Builder not_stored("pgsidecar_cache_not_stored_total",
                     "Responses not stored: too_large (over cache.max_entry_bytes or max_bytes), raced (what it "
                     "read was invalidated while it ran), first_miss (its key had not missed before: cache.admission)",
                     MetricType::Counter);
  not_stored.add(double(c.too_large), {label("reason", "too_large")})
      .add(double(c.raced), {label("reason", "raced")})
      .add(double(c.first_miss), {label("reason", "first_miss")});
  out.push_back(std::move(not_stored.family));
  counter("pgsidecar_cache_evictions_total", "L1 entries evicted to stay within cache.max_bytes", c.evictions);
  counter("pgsidecar_cache_expirations_total", "L1 entries found expired (TTL)", c.expirations);
  Builder inval("pgsidecar_cache_invalidations_total",
                "Invalidation events, by reason: write (committed here), everything (DDL or unknown function here), "
                "remote (another sidecar), trigger (NOTIFY from a table trigger), schema (schema version moved), "
                "untrusted (a NOTIFY with schema/all flags from another role: flags ignored)",
                MetricType::Counter);
  for (const auto& [reason, n] : c.invalidations) inval.add(double(n), {label("reason", reason)});
  out.push_back(std::move(inval.family));
  counter("pgsidecar_cache_invalidated_entries_total", "L1 entries dropped by invalidations", c.invalidated_entries);
  gauge("pgsidecar_cache_bytes", "L1 bytes in use (responses, keys and bookkeeping)", double(c.bytes));
  gauge("pgsidecar_cache_max_bytes", "L1 byte bound (cache.max_bytes)", double(c.max_bytes));
  gauge("pgsidecar_cache_entries", "L1 entries", double(c.entries));
  if (!c.redis_configured) return;
  gauge("pgsidecar_cache_redis_up", "1 when the Redis tier is connected", c.redis_up ? 1 : 0);
  counter("pgsidecar_cache_redis_errors_total", "Redis commands that failed (errors, timeouts, lost connections)",
          c.redis_errors);
  counter("pgsidecar_cache_redis_timeouts_total", "Redis commands not answered within cache.redis.timeout_ms",
          c.redis_timeouts);
  counter("pgsidecar_cache_corrupt_values_total", "Values read from Redis that failed to decode and were discarded",
          c.corrupt);
}

}  // namespace

std::string Metrics::render(const Snapshot& snap) const {
  std::vector<MetricFamily> out = registry_->Collect();
  // database and user, plus one more label if given.
  auto pool_labels = [](const PoolSnapshot& p, std::string name = {}, std::string value = {}) {
    std::vector<ClientMetric::Label> l = {label("database", p.database), label("user", p.user)};
    if (!name.empty()) l.push_back(label(std::move(name), std::move(value)));
    return l;
  };
  Builder build("pgsidecar_build_info", "Version of the running pgsidecar; always 1", MetricType::Gauge);
  build.add(1, {label("version", version_)});
  Builder clients("pgsidecar_client_connections",
                  "Client connections by pool and state: active (holding a server), waiting (queued for one or for a pin slot), "
                  "idle (logged in, no server)",
                  MetricType::Gauge);
  Builder servers("pgsidecar_server_connections",
                  "Server connections by pool and state: active (linked to a client or running an internal "
                  "query), idle (in the pool), login (connecting), testing (health check)",
                  MetricType::Gauge);
  Builder queries("pgsidecar_queries_total", "Queries and Syncs answered by servers (ReadyForQuery seen)",
                  MetricType::Counter);
  Builder transactions("pgsidecar_transactions_total",
                       "Transactions ended (ReadyForQuery back to idle), explicit or implicit", MetricType::Counter);
  Builder connects("pgsidecar_server_connects_total", "Server connections opened", MetricType::Counter);
  Builder login_failures("pgsidecar_server_login_failures_total", "Server logins that failed", MetricType::Counter);
  Builder wait_timeouts("pgsidecar_pool_wait_timeouts_total", "Clients that gave up waiting (query_wait_timeout)",
                        MetricType::Counter);
  Builder bytes("pgsidecar_bytes_total", "Bytes forwarded: direction client_to_server or server_to_client",
                MetricType::Counter);
  Builder errors("pgsidecar_server_errors_total", "ErrorResponses servers sent to clients, by SQLSTATE class",
                 MetricType::Counter);
  Builder disconnects("pgsidecar_server_disconnects_total", "Server connections closed, by reason",
                      MetricType::Counter);
  Builder pinned("pgsidecar_pinned_clients",
                 "Transaction-mode clients pinned to their server by session state now", MetricType::Gauge);
  Builder pins("pgsidecar_pins_total", "Transaction-mode clients pinned to a server, by the kind of state that "
               "pinned them first (temp, prepare, cursor, listen, advisory, set, other)", MetricType::Counter);
  for (const PoolSnapshot& p : snap.pools) {
    clients.add(p.clients_active, pool_labels(p, "state", "active"))
        .add(p.clients_waiting, pool_labels(p, "state", "waiting"))
        .add(p.clients_idle, pool_labels(p, "state", "idle"));
    servers.add(p.servers_active, pool_labels(p, "state", "active"))
        .add(p.servers_idle, pool_labels(p, "state", "idle"))
        .add(p.servers_login, pool_labels(p, "state", "login"))
        .add(p.servers_testing, pool_labels(p, "state", "testing"));
    queries.add(double(p.queries), pool_labels(p));
    transactions.add(double(p.transactions), pool_labels(p));
    connects.add(double(p.server_connects), pool_labels(p));
    login_failures.add(double(p.login_failures), pool_labels(p));
    wait_timeouts.add(double(p.wait_timeouts), pool_labels(p));
    bytes.add(double(p.bytes_from_clients), pool_labels(p, "direction", "client_to_server"))
        .add(double(p.bytes_from_servers), pool_labels(p, "direction", "server_to_client"));
    for (const auto& [reason, n] : p.disconnects) disconnects.add(double(n), pool_labels(p, "reason", reason));
    for (const auto& [cls, n] : p.errors_by_class) errors.add(double(n), pool_labels(p, "class", cls));
    pinned.add(p.clients_pinned, pool_labels(p));
    for (const auto& [kind, n] : p.pins) pins.add(double(n), pool_labels(p, "reason", kind));
  }
  Builder statements("pgsidecar_prepared_statements_total",
                     "Plan cache events: prepare (Parse sent to a server), hit (already prepared there), miss "
                     "(prepared first), eviction (closed to stay within max_prepared_statements), reprepare "
                     "(prepared again after a schema change)",
                     MetricType::Counter);
  statements.add(double(snap.statement_prepares), {label("event", "prepare")})
      .add(double(snap.statement_hits), {label("event", "hit")})
      .add(double(snap.statement_misses), {label("event", "miss")})
      .add(double(snap.statement_evictions), {label("event", "eviction")})
      .add(double(snap.statement_reprepares), {label("event", "reprepare")});
  Builder schema("pgsidecar_schema_version", "Schema version: moves on with DDL, schema NOTIFY or changed plans",
                 MetricType::Gauge);
  schema.add(double(snap.schema_version));
  Builder reloads("pgsidecar_config_reloads_total", "Configuration reloads (SIGHUP)", MetricType::Counter);
  reloads.add(double(snap.config_reloads));
  Builder tls("pgsidecar_tls_connections", "Connections using TLS now, by side (client, server) and protocol version",
              MetricType::Gauge);
  for (const auto& [key, n] : snap.tls_connections) tls.add(n, {label("side", key.first), label("version", key.second)});
  Builder tls_failures("pgsidecar_tls_handshake_failures_total", "TLS handshakes that failed, by side (client, server)",
                       MetricType::Counter);
  for (const char* side : {"client", "server"}) {
    auto it = snap.tls_handshake_failures.find(side);
    tls_failures.add(double(it == snap.tls_handshake_failures.end() ? 0 : it->second), {label("side", side)});
  }
  for (Builder* b : {&build, &clients, &servers, &queries, &transactions, &connects, &login_failures, &wait_timeouts,
                     &bytes, &errors, &disconnects, &pinned, &pins, &statements, &schema, &reloads, &tls,
                     &tls_failures})
    out.push_back(std::move(b->family));
  render_lockd(snap.lockd, out);
  render_cache(snap.cache, out);
  return prometheus::TextSerializer().Serialize(out);
}

}  // namespace metrics
