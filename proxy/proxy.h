// The proxy: listeners, pools per (database, user), client registry for cancel
// requests, the janitor timer, reload and shutdown. Everything runs on one loop.
#pragma once
#include <uv.h>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "cache/statement_cache.h"
#include "cache/result_cache.h"
#include "cache/schema_listener.h"
#include "cache/schema_version.h"
#include "conf/config.h"
#include "metrics/http_endpoint.h"
#include "proxy/readiness.h"
#include "metrics/metrics.h"
#include "pool/pool.h"
#include "pool/statements.h"
#include "proxy/auth.h"
#include "tls/tls.h"

namespace proxy {

class ClientSession;
class ServerConn;
class Conn;
struct ServerTarget;

using Userlist = std::map<std::string, std::string>;

// A pool and where its servers log in.
struct PoolEntry {
  std::unique_ptr<pool::Pool> pool;
  std::unique_ptr<ServerTarget> target;
  conf::PoolMode mode;
  // Metrics of this pool (metrics/metrics.h): handles and plain counters bumped on the loop.
  prometheus::Histogram* wait_seconds = nullptr;
  prometheus::Histogram* query_seconds = nullptr;
  prometheus::Histogram* transaction_seconds = nullptr;
  prometheus::Histogram* pin_seconds = nullptr;
  uint64_t bytes_from_clients = 0, bytes_from_servers = 0;
  std::map<std::string, uint64_t> errors_by_class;
  std::map<std::string, uint64_t> disconnects;   // server connections closed, by reason label
  int connections = 0;   // ServerConn objects alive (closing ones too): they refer to this entry
  // Pinning (transaction mode, proxy/pinning.h): kinds that pin (conf::kPin* bits;
  // 0 in session mode or when max_pinned is 0), the bound, and the clients pinned now.
  uint8_t pin_on = 0;
  int max_pinned = 0;
  int pinned = 0;
  // Clients (by cancel pid) whose statement would pin one more: they wait, without
  // a server, for a pinned client to unpin (FIFO; see ClientSession::wait_for_pin_slot).
  std::deque<uint32_t> pin_waiters;
  std::map<std::string, uint64_t> pins_by_kind;   // clients pinned so far, by the kind that pinned them first
};

class Proxy {
 public:
  Proxy(uv_loop_t* loop, conf::Config cfg, Userlist users);
  ~Proxy();

  // Binds the listeners and starts the janitor. False + err if a listener fails.
  bool start(std::string& err);
  // SIGHUP: new pool sizes, timeouts, databases, users and TLS certificates (new
  // connections use them); listeners stay. False + err, and nothing changes, if a
  // TLS file cannot be used.
  bool reload(conf::Config cfg, Userlist users, std::string& err);
  // Stops accepting. Graceful: clients leave as their transactions end, or at
  // shutdown_timeout. Fast: everyone now. done runs once nothing is left.
  void shutdown(bool fast, std::function<void()> done);

  // For sessions and server connections.
  uv_loop_t* loop() const { return loop_; }
  const conf::Config& config() const { return cfg_; }
  const Userlist& users() const { return users_; }
  // TLS toward clients; null when client_tls_sslmode is disable.
  const tls::ContextPtr& client_tls() const { return tls_.clients; }
  void tls_handshake_failed(const char* side) { tls_handshake_failures_[side]++; }
  const auth::ScramSecret* scram_secret(const std::string& user) const;
  bool shutting_down() const { return shutting_down_; }
  int client_count() const { return int(clients_.size()); }
  // Finds or creates the pool for a client; nullptr if the database is unknown.
  PoolEntry* pool_for(const std::string& database, const std::string& user);
  void client_gone(ClientSession* c);
  // Forwards a CancelRequest received on client `requester`'s connection; true if
  // one was sent (that connection is then closed when the server has processed it).
  bool cancel(uint32_t requester, uint32_t pid, uint32_t key);
  void close_client(uint32_t pid);
  // Sends a CancelRequest for whatever server s is running (its client is gone).
  void cancel_backend(const ServerConn& s);
  // Plan cache: the statements clients share, and the schema version they were prepared under.
  pool::StatementRegistry& statements() { return statements_; }
  cache::SchemaVersion& schema() { return schema_; }
  // The SQL classifier's answers for query and Parse texts (one parse per shape).
  cache::StatementCache& sql() { return sql_; }
  void keepalive(Conn& c) const;                 // tcp_keepalive settings on a TCP connection
  // Cancels in flight per server: a server is kept out of the pool (parked) until
  // PostgreSQL has processed every cancel sent for it, or cancel_wait_timeout.
  void cancel_started(uint64_t server_id);
  void cancel_finished(uint64_t server_id);
  bool park_while_cancelling(ServerConn* s);   // true: parked, released by cancel_finished
  void server_closed(const ServerConn& s);
  // A pinned client of e unpinned or left, or the bound grew: the first client
  // waiting for a pin slot goes on (it may still find the pool at its bound).
  void pin_slot_freed(PoolEntry& e);
  void client_logged_in() { unauthenticated_--; }   // see max_unauthenticated_clients
  // The result cache, or null when cache.mode is off.
  cache::ResultCache* result_cache() { return result_cache_ && result_cache_->enabled() ? result_cache_.get() : nullptr; }
  ClientSession* client(uint32_t pid) const {
    auto it = clients_.find(pid);
    return it == clients_.end() ? nullptr : it->second;
  }
  // The /metrics text: a snapshot of pools, clients and caches, taken now.
  std::string render_metrics();
  // GET /readyz: 200, or 503 with a JSON body naming what is not ready.
  metrics::HttpEndpoint::Reply readyz();
  Readiness& readiness() { return readiness_; }
  metrics::Metrics& metrics() { return metrics_; }
  // Adds lockd's figures to each snapshot (the app wires lockd in).
  void set_lockd_metrics(std::function<void(metrics::LockdSnapshot&)> fill) { lockd_metrics_ = std::move(fill); }
  // SHOW <what> tables another module provides (lockd: LOCKS, MIGRATIONS); the
  // function returns false for a name it does not know.
  using AdminTables = std::function<bool(const std::string& what, std::vector<std::string>& columns,
                                         std::vector<std::vector<std::string>>& rows)>;
  void set_admin_tables(AdminTables f) { admin_tables_ = std::move(f); }
  bool admin_table(const std::string& what, std::vector<std::string>& columns,
                   std::vector<std::vector<std::string>>& rows) const {
    return admin_tables_ && admin_tables_(what, columns, rows);
  }
  // libpq conninfo for a control-plane connection to a `databases:` entry as
  // `user` ("" = the entry's user), with the password the pools would use.
  std::string control_conninfo(const std::string& database, const std::string& user,
                               const std::string& purpose = "lockd") const;

  // Clients of each pool by state: waiting (queued for a server), active (holding
  // one), idle (logged in, no server). Admin sessions and logins in progress are not counted.
  struct ClientCounts {
    int active = 0, waiting = 0, idle = 0;
  };
  std::unordered_map<const PoolEntry*, ClientCounts> client_counts() const;

  // For the admin console (admin.cpp).
  std::vector<PoolEntry*> pool_entries();
  std::vector<const ClientSession*> sessions() const;
  pool::Time started() const { return started_; }
  int database_servers(const std::string& dbname) { return db_counters_[dbname].servers; }
  // RELOAD and SHUTDOWN do what SIGHUP and SIGTERM do; the app sets how.
  void set_admin_hooks(std::function<void()> reload, std::function<void()> shutdown) {
    reload_hook_ = std::move(reload);
    shutdown_hook_ = std::move(shutdown);
  }
  void request_reload() { if (reload_hook_) reload_hook_(); }
  void request_shutdown() { if (shutdown_hook_) shutdown_hook_(); }
  // PAUSE [db] (db "" = all): pools stop handing out servers; the admin session
  // `pid` gets its reply once they have no busy server. RESUME: false if none was paused.
  void pause(uint32_t pid, const std::string& db);
  bool resume(const std::string& db);

 private:
  static void on_tcp_connection(uv_stream_t* server, int status);
  static void on_unix_connection(uv_stream_t* server, int status);
  void accept(uv_stream_t* listener, bool tcp);
  void janitor();
  pool::Settings settings_for(const conf::Database& db) const;
  void set_pinning(PoolEntry& e, const conf::Database& db) const;
  void maybe_finish_shutdown();

  uv_loop_t* loop_;
  conf::Config cfg_;
  Userlist users_;
  tls::Contexts tls_;
  pool::StatementRegistry statements_;
  cache::SchemaVersion schema_;
  cache::StatementCache sql_;
  int unauthenticated_ = 0;   // clients accepted and not yet logged in
  struct Cancels {
    int in_flight = 0;
    ServerConn* parked = nullptr;
    pool::Time parked_at{};
  };
  std::unordered_map<uint64_t, Cancels> cancels_;   // by ServerConn::id()
  void janitor_timeouts(pool::Time now);
  void prune_pools();
  cache::SchemaListener schema_listener_{loop_, schema_};
  std::unique_ptr<cache::ResultCache> result_cache_;
  unsigned janitor_ticks_ = 0;
  uint64_t reloads_ = 0;
  std::map<std::string, uint64_t> tls_handshake_failures_;   // by side: "client", "server"
  pool::Time started_ = pool::Clock::now();
  std::function<void()> reload_hook_, shutdown_hook_;
  std::function<void(metrics::LockdSnapshot&)> lockd_metrics_;
  AdminTables admin_tables_;
  bool paused_all_ = false;
  std::set<std::string> paused_dbs_;
  std::vector<std::pair<uint32_t, std::string>> pending_pauses_;   // admin session pid, database ("" = all)
  void finish_pauses();
  metrics::Metrics metrics_{PGSIDECAR_VERSION};
  metrics::HttpEndpoint metrics_endpoint_{loop_, [this] { return render_metrics(); }};
  Readiness readiness_{loop_};
  static constexpr uint64_t kJanitorMs = 100;                              // janitor() period
  prometheus::Histogram& loop_lag_ = metrics_.event_loop_lag_seconds();    // how late janitor() ran
  uint64_t janitor_due_ms_ = 0;                                            // uv_now() it is due next (0: not started)
  mutable std::map<std::string, auth::ScramSecret> secrets_;     // client auth secrets by user, derived lazily
  std::unique_ptr<uv_tcp_t> tcp_listener_;
  std::unique_ptr<uv_pipe_t> unix_listener_;
  std::string unix_path_;
  uv_timer_t janitor_timer_;
  std::unordered_map<std::string, std::unique_ptr<PoolEntry>> pools_;   // key: database '\0' user
  std::map<std::string, pool::DatabaseCounter> db_counters_;
  std::unordered_map<uint32_t, ClientSession*> clients_;              // by cancel pid
  bool shutting_down_ = false;
  pool::Time shutdown_deadline_{};
  std::function<void()> shutdown_done_;
};

}  // namespace proxy
