#include "proxy/proxy.h"

#include <algorithm>
#include <unordered_set>

#include <nlohmann/json.hpp>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf/log.h"
#include "proxy/client_session.h"
#include "proxy/server_conn.h"

namespace proxy {
namespace {

// Sends one CancelRequest to a server and waits for the server to hang up, which
// it does once the cancel is processed; then the requesting client's connection is
// closed too, so PQcancel returns when the cancel has landed, as on a direct connection.
class CancelConn final : public Conn {
 public:
  CancelConn(Proxy& proxy, uint32_t requester, const ServerConn& server)
      : Conn(proxy.loop()), proxy_(proxy), requester_(requester), server_id_(server.id()) {
    pg::write_cancel(packet_, server.backend_pid(), server.backend_key());
    proxy_.cancel_started(server_id_);
  }

 private:
  void on_connected(int status) override {
    if (status != 0 || !send(packet_)) return close();
    read_start();
  }
  void on_read() override { in_consume(in_size()); }
  void on_read_end(int) override { close(); }
  void on_closed() override {
    if (requester_ != 0) proxy_.close_client(requester_);   // 0: no client asked (client pids are never 0)
    proxy_.cancel_finished(server_id_);   // PostgreSQL has processed it (or the attempt failed)
  }

  Proxy& proxy_;
  uint32_t requester_;
  uint64_t server_id_;
  std::string packet_;
};

uint32_t random_u32() {
  uint32_t v = 0;
  RAND_bytes(reinterpret_cast<unsigned char*>(&v), sizeof v);
  return v;
}

// Decodes a params key ("name\0value\0...") back into startup parameters.
std::vector<std::pair<std::string, std::string>> decode_params(const std::string& key) {
  std::vector<std::pair<std::string, std::string>> out;
  size_t pos = 0;
  while (pos < key.size()) {
    size_t a = key.find('\0', pos);
    size_t b = key.find('\0', a + 1);
    out.emplace_back(key.substr(pos, a - pos), key.substr(a + 1, b - a - 1));
    pos = b + 1;
  }
  return out;
}

}  // namespace

Proxy::Proxy(uv_loop_t* loop, conf::Config cfg, Userlist users)
    : loop_(loop), cfg_(std::move(cfg)), users_(std::move(users)) {}

Proxy::~Proxy() = default;

// Client-auth secret for a user, derived on first use: PBKDF2 for every plain
// password at start or reload would stall the loop for milliseconds per user.
const auth::ScramSecret* Proxy::scram_secret(const std::string& user) const {
  if (auto it = secrets_.find(user); it != secrets_.end()) return &it->second;
  auto u = users_.find(user);
  if (u == users_.end()) return nullptr;
  if (auto s = auth::parse_scram_secret(u->second)) return &secrets_.emplace(user, *s).first->second;
  // An md5 hash cannot verify a SCRAM exchange: such users cannot log in with scram-sha-256.
  if (u->second.rfind("md5", 0) == 0 && u->second.size() == 35) return nullptr;
  return &secrets_.emplace(user, auth::make_scram_secret(u->second)).first->second;
}

bool Proxy::start(std::string& err) {
  if (!tls::build(cfg_, tls_, err)) return false;
  // Metrics first: if they cannot listen, no client is accepted by a daemon about to exit.
  readiness_.configure(cfg_);
  metrics_endpoint_.route("/healthz", [] { return metrics::HttpEndpoint::Reply{200, "ok\n"}; });
  metrics_endpoint_.route("/readyz", [this] { return readyz(); });
  if (!cfg_.metrics.listen.empty() && !metrics_endpoint_.start(cfg_.metrics.listen, err)) return false;
  if (!cfg_.listen_addr.empty()) {
    tcp_listener_ = std::make_unique<uv_tcp_t>();
    uv_tcp_init(loop_, tcp_listener_.get());
    tcp_listener_->data = this;
    std::string host = cfg_.listen_addr == "*" ? "0.0.0.0" : cfg_.listen_addr;
    sockaddr_storage addr{};
    if (uv_ip4_addr(host.c_str(), cfg_.listen_port, reinterpret_cast<sockaddr_in*>(&addr)) != 0 &&
        uv_ip6_addr(host.c_str(), cfg_.listen_port, reinterpret_cast<sockaddr_in6*>(&addr)) != 0) {
      err = "listen_addr '" + cfg_.listen_addr + "' is not an IP address";
      return false;
    }
    int rc = uv_tcp_bind(tcp_listener_.get(), reinterpret_cast<sockaddr*>(&addr), 0);
    if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(tcp_listener_.get()), 1024, on_tcp_connection);
    if (rc != 0) {
      err = "cannot listen on " + host + ":" + std::to_string(cfg_.listen_port) + ": " + uv_strerror(rc);
      return false;
    }
    LOG_INFO("listening on %s:%d", host.c_str(), cfg_.listen_port);
  }
  if (!cfg_.unix_socket_dir.empty()) {
    unix_listener_ = std::make_unique<uv_pipe_t>();
    uv_pipe_init(loop_, unix_listener_.get(), 0);
    unix_listener_->data = this;
    unix_path_ = cfg_.unix_socket_dir + "/.s.PGSQL." + std::to_string(cfg_.listen_port);
    unlink(unix_path_.c_str());   // a stale socket from a previous run
    int rc = uv_pipe_bind(unix_listener_.get(), unix_path_.c_str());
    if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(unix_listener_.get()), 1024, on_unix_connection);
    if (rc != 0) {
      err = "cannot listen on " + unix_path_ + ": " + uv_strerror(rc);
      return false;
    }
    chmod(unix_path_.c_str(), mode_t(cfg_.unix_socket_mode));
    LOG_INFO("listening on %s", unix_path_.c_str());
  }
  uv_timer_init(loop_, &janitor_timer_);
  janitor_timer_.data = this;
  uv_timer_start(&janitor_timer_, [](uv_timer_t* t) { static_cast<Proxy*>(t->data)->janitor(); }, kJanitorMs,
                 kJanitorMs);
  schema_listener_.configure(cfg_.schema_notify_channel, cfg_.schema_notify_conninfo);
  if (cfg_.cache.mode != conf::CacheMode::Off) {
    result_cache_ = std::make_unique<cache::ResultCache>(
        loop_, cfg_.cache, schema_,
        [this](const std::string& database, const std::string& user) { return control_conninfo(database, user, "cache"); });
    result_cache_->start();
  }
  // Warm pools whose server login does not depend on the client (fixed user).
  for (const auto& db : cfg_.databases)
    if (db.name != "*" && !db.user.empty() && db.min_pool_size.value_or(cfg_.min_pool_size) > 0) pool_for(db.name, db.user);
  return true;
}

void Proxy::on_tcp_connection(uv_stream_t* server, int status) {
  if (status == 0) static_cast<Proxy*>(server->data)->accept(server, true);
}

void Proxy::on_unix_connection(uv_stream_t* server, int status) {
  if (status == 0) static_cast<Proxy*>(server->data)->accept(server, false);
}

void Proxy::accept(uv_stream_t* listener, bool tcp) {
  uint32_t pid;
  do pid = random_u32() & 0x7fffffff;
  while (pid == 0 || clients_.count(pid));
  auto* c = new ClientSession(*this, pid, random_u32());
  if ((tcp ? c->init_tcp() : c->init_pipe()) != 0 || uv_accept(listener, c->stream()) != 0) {
    c->close();
    return;
  }
  if (tcp) {
    uv_tcp_nodelay(reinterpret_cast<uv_tcp_t*>(c->stream()), 1);
    keepalive(*c);
  }
  clients_[pid] = c;
  // Not yet logged in: bounded in number (and in time, client_login_timeout).
  if (++unauthenticated_ > cfg_.max_unauthenticated_clients) {
    c->fatal("53300", "sorry, too many clients logging in at once (max_unauthenticated_clients " +
                          std::to_string(cfg_.max_unauthenticated_clients) + ")");
    return;
  }
  c->start();
}

void Proxy::keepalive(Conn& c) const {
  c.set_keepalive(cfg_.tcp_keepalive, int(cfg_.tcp_keepidle.count() / 1000), int(cfg_.tcp_keepintvl.count() / 1000),
                  cfg_.tcp_keepcnt);
}

void Proxy::client_gone(ClientSession* c) {
  if (!c->logged_in()) unauthenticated_--;
  clients_.erase(c->cancel_pid());
  maybe_finish_shutdown();
}

bool Proxy::cancel(uint32_t requester, uint32_t pid, uint32_t key) {
  ClientSession* c = client(pid);
  if (!c || c->cancel_key() != key) {
    LOG_DEBUG("cancel request for unknown client %u ignored", pid);
    return false;
  }
  ServerConn* s = c->server();
  if (!s) {   // nothing running for that client, unless it waits for a pin slot
    c->cancel_pin_wait();
    return false;
  }
  auto* cc = new CancelConn(*this, requester, *s);
  cc->connect(s->target().host, s->target().port);
  std::string addr;
  LOG_INFO(c->log_fields(addr), "forwarding a cancel request to the server");
  return true;
}

void Proxy::cancel_backend(const ServerConn& s) {
  auto* cc = new CancelConn(*this, 0, s);
  cc->connect(s.target().host, s.target().port);
  std::string addr;
  LOG_INFO(s.log_fields(addr), "client gone mid-query: cancelling its query on the server");
}

void Proxy::cancel_started(uint64_t server_id) { cancels_[server_id].in_flight++; }

void Proxy::cancel_finished(uint64_t server_id) {
  auto it = cancels_.find(server_id);
  if (it == cancels_.end() || --it->second.in_flight > 0) return;
  ServerConn* parked = it->second.parked;
  cancels_.erase(it);
  if (parked) parked->release_to_pool();
}

bool Proxy::park_while_cancelling(ServerConn* s) {
  auto it = cancels_.find(s->id());
  if (it == cancels_.end()) return false;
  it->second.parked = s;
  it->second.parked_at = pool::Clock::now();
  return true;
}

void Proxy::server_closed(const ServerConn& s) { cancels_.erase(s.id()); }

// As many waiters as there are free slots go on; one that finds its slot taken
// (by a client that had a server at hand) queues again at the front.
void Proxy::pin_slot_freed(PoolEntry& e) {
  for (int free = e.max_pinned - e.pinned; free > 0 && !e.pin_waiters.empty();) {
    ClientSession* c = client(e.pin_waiters.front());
    e.pin_waiters.pop_front();
    if (c && c->pool_entry() == &e && c->pin_slot_free()) free--;
  }
}

void Proxy::close_client(uint32_t pid) {
  if (ClientSession* c = client(pid)) c->close();
}

pool::Settings Proxy::settings_for(const conf::Database& db) const {
  pool::Settings s;
  s.mode = db.pool_mode.value_or(cfg_.pool_mode);
  s.size = db.pool_size.value_or(cfg_.default_pool_size);
  s.min_size = db.min_pool_size.value_or(cfg_.min_pool_size);
  s.reserve_size = db.reserve_pool_size.value_or(cfg_.reserve_pool_size);
  s.max_db_connections = cfg_.max_db_connections;
  s.reserve_timeout = cfg_.reserve_pool_timeout;
  s.idle_timeout = cfg_.server_idle_timeout;
  s.lifetime = cfg_.server_lifetime;
  s.check_delay = cfg_.server_check_delay;
  s.wait_timeout = cfg_.query_wait_timeout;
  s.login_retry = cfg_.server_login_retry;
  s.connect_timeout = cfg_.server_connect_timeout;
  s.check_query = cfg_.server_check_query;
  return s;
}

static ServerTarget target_for(const conf::Database& db, const std::string& database, const std::string& user,
                               const Userlist& users, const tls::Contexts& contexts) {
  ServerTarget t;
  t.tls = contexts.for_database(db.name);
  t.host = db.host;
  t.port = db.port;
  t.dbname = db.dbname.empty() ? database : db.dbname;
  t.user = db.user.empty() ? user : db.user;
  t.password = db.password;
  if (t.password.empty()) {
    auto it = users.find(t.user);
    // A SCRAM secret cannot log in to a server; plain passwords and md5 hashes can (md5 auth).
    if (it != users.end() && !auth::parse_scram_secret(it->second)) t.password = it->second;
  }
  return t;
}

std::string Proxy::control_conninfo(const std::string& database, const std::string& user,
                                    const std::string& purpose) const {
  const conf::Database* db = conf::find_database(cfg_, database);
  if (!db) return "";
  ServerTarget t = target_for(*db, database, user, users_, tls_);
  auto quoted = [](const std::string& v) {
    std::string q = "'";
    for (char c : v) q += (c == '\\' || c == '\'') ? std::string("\\") + c : std::string(1, c);
    return q + "'";
  };
  std::string s = "host=" + quoted(t.host) + " port=" + std::to_string(t.port) + " dbname=" + quoted(t.dbname) +
                  " application_name='pgsidecar " + purpose + "' options='-c client_min_messages=warning'";
  if (!t.user.empty()) s += " user=" + quoted(t.user);
  // TLS as the pools use it (libpq's sslmode names are the same); unix sockets never use TLS.
  conf::Tls tls = conf::server_tls_for(cfg_, *db);
  if (t.host.empty() || t.host[0] != '/') {
    // libpq's allow retries a refused plain login with TLS; pgsidecar's allow is plain.
    conf::SslMode mode = tls.sslmode == conf::SslMode::Allow ? conf::SslMode::Disable : tls.sslmode;
    s += " sslmode=" + std::string(conf::to_string(mode));
    if (cfg_.server_channel_binding == conf::ChannelBinding::Require) s += " channel_binding=require";
    if (!tls.ca_file.empty()) s += " sslrootcert=" + quoted(tls.ca_file);
    if (!tls.cert_file.empty()) s += " sslcert=" + quoted(tls.cert_file) + " sslkey=" + quoted(tls.key_file);
  }
  if (!t.password.empty()) s += " password=" + quoted(t.password);
  return s;
}

// Pinning needs a server that keeps multiplexing: with max_pinned 0 (a pool of
// one) state is reset after each client as without pinning.
void Proxy::set_pinning(PoolEntry& e, const conf::Database& db) const {
  int size = db.pool_size.value_or(cfg_.default_pool_size);
  int max = db.max_pinned_per_pool.value_or(cfg_.max_pinned_per_pool);
  e.max_pinned = max < 0 ? std::max(0, size - 1) : max;
  e.pin_on = e.mode == conf::PoolMode::Transaction && e.max_pinned > 0 ? db.pin_on.value_or(cfg_.pin_on) : 0;
}

PoolEntry* Proxy::pool_for(const std::string& database, const std::string& user) {
  const conf::Database* db = conf::find_database(cfg_, database);
  if (!db) return nullptr;
  std::string key = database + '\0' + user;
  auto it = pools_.find(key);
  if (it != pools_.end()) return it->second.get();
  auto entry = std::make_unique<PoolEntry>();
  entry->target = std::make_unique<ServerTarget>(target_for(*db, database, user, users_, tls_));
  pool::Settings settings = settings_for(*db);
  entry->mode = settings.mode;
  set_pinning(*entry, *db);
  PoolEntry* e = entry.get();
  auto launcher = [this, e](pool::Pool& p, const std::string& params_key) -> pool::Member* {
    auto* s = new ServerConn(*this, p, *e, decode_params(params_key));
    s->start();
    return s;
  };
  entry->pool = std::make_unique<pool::Pool>(database, user, settings, launcher, &db_counters_[e->target->dbname]);
  if (paused_all_ || paused_dbs_.count(database)) entry->pool->pause();
  entry->wait_seconds = &metrics_.pool_wait(database, user);
  entry->query_seconds = &metrics_.query_duration(database, user);
  entry->transaction_seconds = &metrics_.transaction_duration(database, user);
  entry->pin_seconds = &metrics_.pin_duration(database, user);
  pools_.emplace(key, std::move(entry));
  return e;
}

std::unordered_map<const PoolEntry*, Proxy::ClientCounts> Proxy::client_counts() const {
  std::unordered_map<const PoolEntry*, ClientCounts> counts;
  for (auto& [pid, c] : clients_) {
    if (!c->pool_entry()) continue;   // admin session, or not past the startup packet yet
    ClientCounts& n = counts[c->pool_entry()];
    if (c->waiting || c->pin_wait().queued) n.waiting++;
    else if (c->server()) n.active++;
    else if (c->logged_in()) n.idle++;
  }
  return counts;
}

std::vector<PoolEntry*> Proxy::pool_entries() {
  std::vector<PoolEntry*> out;
  for (auto& [key, e] : pools_) out.push_back(e.get());
  return out;
}

std::vector<const ClientSession*> Proxy::sessions() const {
  std::vector<const ClientSession*> out;
  for (auto& [pid, c] : clients_)
    if (!c->is_admin()) out.push_back(c);
  return out;
}

void Proxy::pause(uint32_t pid, const std::string& db) {
  if (db.empty()) paused_all_ = true;
  else paused_dbs_.insert(db);
  for (auto& [key, e] : pools_)
    if (db.empty() || e->pool->database() == db) e->pool->pause();
  pending_pauses_.emplace_back(pid, db);   // answered by the janitor, within 100 ms of the pools going quiet
}

bool Proxy::resume(const std::string& db) {
  bool was = db.empty() ? (paused_all_ || !paused_dbs_.empty()) : (paused_all_ || paused_dbs_.count(db) > 0);
  if (db.empty()) {
    paused_all_ = false;
    paused_dbs_.clear();
  } else {
    paused_dbs_.erase(db);
  }
  for (auto& [key, e] : pools_)
    if (e->pool->paused() && !paused_all_ && !paused_dbs_.count(e->pool->database())) e->pool->resume();
  return was;
}

// PAUSE replies go out once the pools they cover have no busy server.
void Proxy::finish_pauses() {
  for (size_t i = 0; i < pending_pauses_.size();) {
    auto [pid, db] = pending_pauses_[i];
    bool quiet = true;
    for (auto& [key, e] : pools_)
      if ((db.empty() || e->pool->database() == db) && e->pool->stats().active > 0) quiet = false;
    ClientSession* c = client(pid);
    if (!c || quiet) {
      if (c) c->admin_reply_paused();
      pending_pauses_.erase(pending_pauses_.begin() + std::ptrdiff_t(i));
    } else {
      i++;
    }
  }
}

std::string Proxy::render_metrics() {
  metrics::Snapshot snap;
  std::unordered_map<const PoolEntry*, ClientCounts> clients = client_counts();
  for (auto& [key, e] : pools_) {
    metrics::PoolSnapshot& p = snap.pools.emplace_back();
    p.database = e->pool->database();
    p.user = e->pool->user();
    pool::Stats s = e->pool->stats();
    p.servers_active = s.active;
    p.servers_idle = s.idle;
    p.servers_login = s.launching;
    p.servers_testing = s.checking;
    p.queries = s.queries_total;
    p.transactions = s.transactions_total;
    p.server_connects = s.launched_total;
    p.login_failures = s.login_failures_total;
    p.wait_timeouts = s.wait_timeouts_total;
    p.bytes_from_clients = e->bytes_from_clients;
    p.bytes_from_servers = e->bytes_from_servers;
    p.errors_by_class = e->errors_by_class;
    p.disconnects = e->disconnects;
    p.clients_pinned = e->pinned;
    p.pins = e->pins_by_kind;
    const ClientCounts& n = clients[e.get()];
    p.clients_active = n.active;
    p.clients_waiting = n.waiting;
    p.clients_idle = n.idle;
  }
  const pool::StatementStats& st = statements_.stats();
  snap.statement_prepares = st.prepares;
  snap.statement_hits = st.hits;
  snap.statement_misses = st.misses;
  snap.statement_evictions = st.evictions;
  snap.statement_reprepares = st.reprepares;
  snap.schema_version = schema_.current();
  snap.config_reloads = reloads_;
  for (const auto& [pid, c] : clients_)
    if (c->tls() && c->tls()->handshake_done()) snap.tls_connections[{"client", std::string(c->tls()->version())}]++;
  for (PoolEntry* e : pool_entries())
    e->pool->for_each_member([&](const pool::Member& m) {
      const auto& s = static_cast<const ServerConn&>(m);
      if (s.tls() && s.tls()->handshake_done()) snap.tls_connections[{"server", std::string(s.tls()->version())}]++;
    });
  snap.tls_handshake_failures = tls_handshake_failures_;
  if (cache::ResultCache* rc = result_cache()) {
    metrics::CacheSnapshot& c = snap.cache;
    const cache::CacheStats& cs = rc->stats();
    c.enabled = true;
    c.l1_hits = cs.l1_hits;
    c.l1_misses = cs.l1_misses;
    c.l2_hits = cs.l2_hits;
    c.l2_misses = cs.l2_misses;
    c.stores = cs.stores;
    c.l2_stores = cs.l2_stores;
    c.too_large = cs.too_large;
    c.first_miss = cs.first_miss;
    c.raced = cs.raced;
    c.corrupt = cs.l2_corrupt;
    c.invalidated_entries = cs.invalidated_entries;
    c.invalidations = cs.invalidations;
    c.evictions = rc->l1().evictions();
    c.expirations = rc->l1().expirations();
    c.bytes = rc->l1().bytes();
    c.max_bytes = rc->l1().max_bytes();
    c.entries = rc->l1().entries();
    if (const cache::RedisStats* r = rc->redis_stats()) {
      c.redis_configured = true;
      c.redis_up = rc->redis_up();
      c.redis_errors = r->errors;
      c.redis_timeouts = r->timeouts;
    }
  }
  if (lockd_metrics_) lockd_metrics_(snap.lockd);
  return metrics_.render(snap);
}

metrics::HttpEndpoint::Reply Proxy::readyz() {
  nlohmann::json not_ready = nlohmann::json::object();
  if (shutting_down_) not_ready["shutdown"] = "shutting down";
  for (const auto& [key, e] : pools_) {
    const pool::Pool& p = *e->pool;
    // Only the pools made at start (an entry that names its user): a client naming
    // a user that cannot log in must not hold the sidecar out of rotation.
    const conf::Database* db = conf::find_database(cfg_, p.database());
    if (p.settings().min_size <= 0 || !db || db->name == "*" || db->user != p.user()) continue;
    pool::Stats s = p.stats();
    if (s.idle + s.active + s.checking == 0)
      not_ready["pool " + p.database() + "/" + p.user()] =
          "no live server (min_pool_size " + std::to_string(p.settings().min_size) + ")";
  }
  for (const auto& [name, why] : readiness_.unreachable(pool::Clock::now()))
    not_ready["database " + name] = "no server answered within server_check_delay: " + why;
  if (lockd_metrics_) {
    metrics::LockdSnapshot snap;
    lockd_metrics_(snap);
    if (snap.migrations_configured && snap.migration_status != "current")
      not_ready["migrations"] = snap.migration_status.empty() ? "status not known yet" : snap.migration_status;
  }
  nlohmann::json body = {{"ready", not_ready.empty()}, {"not_ready", not_ready}};
  // Names come from clients and servers: invalid UTF-8 is replaced, never thrown on.
  return {not_ready.empty() ? 200 : 503, body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n",
          "application/json"};
}

void Proxy::janitor() {
  // The loop is late by as long as something held it: a long callback delays
  // every connection, so operators see it (pgsidecar_event_loop_lag_seconds).
  const uint64_t now_ms = uv_now(loop_);
  if (janitor_due_ms_ != 0) loop_lag_.Observe(now_ms > janitor_due_ms_ ? double(now_ms - janitor_due_ms_) / 1000 : 0);
  janitor_due_ms_ = now_ms + kJanitorMs;
  pool::Time now = pool::Clock::now();
  for (auto& [key, e] : pools_) e->pool->tick(now);
  if (!cfg_.metrics.listen.empty() && !shutting_down_) readiness_.tick(now);   // only /readyz reads it
  if (++janitor_ticks_ % 100 == 0) statements_.sweep();   // every 10 s: drop statements nobody holds
  if (!pending_pauses_.empty()) finish_pauses();
  if (cfg_.client_login_timeout.count() > 0) {
    std::vector<ClientSession*> late;
    for (auto& [pid, c] : clients_)
      if (!c->logged_in() && !c->closing() && !c->waiting && now - c->started() > cfg_.client_login_timeout)
        late.push_back(c);
    for (ClientSession* c : late) {
      std::string addr;
      LOG_INFO(c->log_fields(addr, "08P01"), "client_login_timeout: login not completed in time%s",
               c->tls() && !c->tls()->handshake_done() ? " (TLS handshake)" : "");
      c->fatal("08P01", "client_login_timeout: login not completed in time");
    }
  }
  janitor_timeouts(now);
  for (auto& entry : pools_) {
    PoolEntry& e = *entry.second;
    if (e.pin_waiters.empty()) continue;
    std::erase_if(e.pin_waiters, [&](uint32_t pid) {   // clients gone or timed out
      ClientSession* c = client(pid);
      return !c || c->pool_entry() != &e || !c->pin_wait().queued;
    });
    pin_slot_freed(e);   // a reload may have raised max_pinned_per_pool
  }
  if (janitor_ticks_ % 10 == 0) prune_pools();   // every second
  if (shutting_down_ && now >= shutdown_deadline_) {
    std::vector<ClientSession*> all;
    for (auto& [pid, c] : clients_) all.push_back(c);
    for (ClientSession* c : all) c->fatal("57P01", "terminating connection: pgsidecar shutdown_timeout reached");
  }
}

void Proxy::janitor_timeouts(pool::Time now) {
  std::vector<ClientSession*> clients;
  clients.reserve(clients_.size());
  for (auto& [pid, c] : clients_) clients.push_back(c);
  for (ClientSession* c : clients) c->check_timeouts(now);
  std::vector<ServerConn*> stuck;
  for (auto& [id, cancels] : cancels_)
    if (cancels.parked && now - cancels.parked_at >= cfg_.cancel_wait_timeout) stuck.push_back(cancels.parked);
  for (ServerConn* s : stuck) {
    cancels_.erase(s->id());
    s->pool().forget(s);
    s->close_member("cancel_wait_timeout passed");
  }
}

// A pool whose server logins never succeeded (an unknown user or database with
// auth_type trust) goes once no client uses it, with its metric series: a flood
// of made-up user names leaves nothing behind.
void Proxy::prune_pools() {
  std::unordered_set<const PoolEntry*> used;
  for (auto& [pid, c] : clients_)
    if (c->pool_entry()) used.insert(c->pool_entry());
  for (auto it = pools_.begin(); it != pools_.end();) {
    PoolEntry* e = it->second.get();
    pool::Stats st = e->pool->stats();
    bool never_served = st.launched_total == st.login_failures_total;
    if (!never_served || used.count(e) || e->connections > 0 || st.idle + st.active + st.launching + st.checking + st.waiting > 0) {
      ++it;
      continue;
    }
    metrics_.forget_pool(*e->wait_seconds, *e->query_seconds, *e->transaction_seconds, *e->pin_seconds);
    it = pools_.erase(it);
  }
}

bool Proxy::reload(conf::Config cfg, Userlist users, std::string& err) {
  tls::Contexts contexts;
  if (!tls::build(cfg, contexts, err)) return false;
  tls_ = std::move(contexts);
  if (cfg.listen_addr != cfg_.listen_addr || cfg.listen_port != cfg_.listen_port ||
      cfg.unix_socket_dir != cfg_.unix_socket_dir)
    LOG_WARN("reload: listen_addr/listen_port/unix_socket_dir changes take effect only after a restart");
  cfg.listen_addr = cfg_.listen_addr;
  cfg.listen_port = cfg_.listen_port;
  cfg.unix_socket_dir = cfg_.unix_socket_dir;
  if (cfg.metrics.listen != cfg_.metrics.listen) LOG_WARN("reload: metrics.listen changes take effect only after a restart");
  cfg.metrics.listen = cfg_.metrics.listen;
  reloads_++;
  cfg_ = std::move(cfg);
  users_ = std::move(users);
  secrets_.clear();
  logx::set_level(cfg_.log_level);
  logx::set_format(cfg_.log_format);
  schema_listener_.configure(cfg_.schema_notify_channel, cfg_.schema_notify_conninfo);
  readiness_.configure(cfg_);
  for (auto& [key, e] : pools_) {
    const std::string& database = e->pool->database();
    const conf::Database* db = conf::find_database(cfg_, database);
    if (!db) continue;   // removed: existing clients finish, new ones are refused
    ServerTarget target = target_for(*db, database, e->pool->user(), users_, tls_);
    if (!target.same_login(*e->target))
      e->pool->close_idle("its database entry changed at a reload");   // linked ones go when released
    *e->target = std::move(target);
    pool::Settings s = settings_for(*db);
    if (s.mode != e->mode) {
      // Servers used in the old mode may hold a session's state: idle ones go, linked
      // ones are reset before anyone else gets them.
      e->pool->close_idle("pool_mode changed");
      for (auto& [pid, c] : clients_)
        if (c->pool_entry() == e.get() && c->server()) c->server()->note_session_state();
    }
    e->mode = s.mode;
    set_pinning(*e, *db);
    e->pool->set_settings(s);
  }
  LOG_INFO("configuration reloaded");
  return true;
}

void Proxy::shutdown(bool fast, std::function<void()> done) {
  shutdown_done_ = std::move(done);
  if (!shutting_down_) {
    shutting_down_ = true;
    schema_listener_.stop();
    if (result_cache_) result_cache_->stop();
    metrics_endpoint_.stop();
    readiness_.stop();
    shutdown_deadline_ = pool::Clock::now() + (fast ? conf::Duration(0) : cfg_.shutdown_timeout);
    if (tcp_listener_) uv_close(reinterpret_cast<uv_handle_t*>(tcp_listener_.get()), nullptr);
    if (unix_listener_) {
      uv_close(reinterpret_cast<uv_handle_t*>(unix_listener_.get()), nullptr);
      unlink(unix_path_.c_str());
    }
  } else if (fast) {
    shutdown_deadline_ = pool::Clock::now();
  }
  LOG_INFO("%s shutdown: %d clients", fast ? "fast" : "graceful", client_count());
  std::vector<ClientSession*> all;
  for (auto& [pid, c] : clients_) all.push_back(c);
  for (ClientSession* c : all)
    if (fast || c->idle() || !c->logged_in()) c->fatal("57P01", "terminating connection: pgsidecar is shutting down");
  maybe_finish_shutdown();
}

void Proxy::maybe_finish_shutdown() {
  if (!shutting_down_ || !clients_.empty() || !shutdown_done_) return;
  for (auto& [key, e] : pools_) e->pool->close_all("shutdown");
  uv_timer_stop(&janitor_timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(&janitor_timer_), nullptr);
  auto done = std::move(shutdown_done_);
  shutdown_done_ = nullptr;
  done();
}

}  // namespace proxy
