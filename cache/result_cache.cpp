#include "cache/result_cache.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <random>

#include "cache/value_codec.h"
#include "conf/log.h"

namespace cache {
namespace {

constexpr size_t kMaxClassified = 20000;         // distinct statement texts remembered
constexpr size_t kMaxMessageRelations = 1000;   // in one invalidation message
constexpr size_t kMaxSenderChecks = 64;         // NOTIFY senders being checked at once (on_notify)

// Deletes the L2 entries listed in each dependency set, and the sets.
constexpr const char* kDropDependents =
    "for _, d in ipairs(KEYS) do "
    "  for _, k in ipairs(redis.call('SMEMBERS', d)) do redis.call('DEL', k) end "
    "  redis.call('DEL', d) "
    "end return #KEYS";

}  // namespace

ResultCache::ResultCache(uv_loop_t* loop, const conf::Cache& cfg, SchemaVersion& schema, ConninfoFor conninfo)
    : loop_(loop), cfg_(cfg), schema_(schema), conninfo_(std::move(conninfo)), store_(cfg.max_bytes) {
  std::random_device rd;
  origin_ = std::to_string(rd()) + "-" + std::to_string(rd());
}

ResultCache::~ResultCache() { stop(); }

void ResultCache::start() {
  if (!enabled()) return;
  schema_.on_bump([this] { on_schema_bump(); });
  if (cfg_.redis.url.empty()) return;
  RedisTarget target;
  std::string err;
  if (!parse_redis_url(cfg_.redis.url, target, err)) {   // checked at config load; kept as a guard
    LOG_ERROR("cache.redis.url: %s; running without Redis", err.c_str());
    return;
  }
  tls::ContextPtr tls;
  if (target.tls) {   // the files were checked at config load (tls::build); read again here
    std::string key;
    tls = tls::connect_context(cfg_.redis.tls, "cache.redis.tls_", err, key);
    if (!tls) {
      LOG_ERROR("%s; running without Redis", err.c_str());
      return;
    }
  }
  redis_ = std::make_unique<Redis>(loop_, target, cfg_.redis.timeout, std::move(tls));
  redis_->subscribe(cfg_.invalidation_channel, [this](std::string_view, std::string_view message) {
    on_message("", message, true);   // only sidecars reach this Redis
  });
  redis_->on_up([this] { redis_up_again(); });
  redis_->on_down([this] {
    l2_generation_ = -1;
    redis_was_down_ = true;
  });
  redis_->start();
}

void ResultCache::stop() {
  stopped_ = true;
  if (wait_timer_) {
    uv_close(reinterpret_cast<uv_handle_t*>(wait_timer_), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    wait_timer_ = nullptr;
  }
  if (redis_) redis_->stop();
  for (auto& [name, db] : databases_)
    if (db.session) db.session->stop();
}

// Redis is (back) up. Invalidations published while it was down went through
// NOTIFY and never reached its entries: move the generation on, dropping them all.
void ResultCache::redis_up_again() {
  std::vector<std::string> cmd = {redis_was_down_ ? "INCR" : "GET", cfg_.redis.key_prefix + "gen"};
  redis_->command(std::move(cmd), [this](RedisReply r) {
    if (r.type == RedisReply::Type::Integer) l2_generation_ = r.integer;
    else if (r.type == RedisReply::Type::Nil) l2_generation_ = 0;
    else if (r.type == RedisReply::Type::String) l2_generation_ = std::atoll(r.str.c_str());
    else return;   // failed: the connection goes down and up again, and we retry
    redis_was_down_ = false;
  });
}

namespace {
const ClassificationPtr& too_long() {
  static const ClassificationPtr kTooLong = std::make_shared<const Classification>(unclassified("too long to classify"));
  return kTooLong;
}
}  // namespace

ClassificationPtr ResultCache::classify(std::string_view sql) {
  bool is_new = false;
  ClassificationPtr c = classify_transient(sql, is_new);
  if (is_new) remember(sql, c);
  return c;
}

ClassificationPtr ResultCache::classify_transient(std::string_view sql, bool& is_new) {
  is_new = false;
  if (auto it = classified_.find(sql); it != classified_.end()) return it->second;
  if (sql.size() > kMaxParsedText) return too_long();
  is_new = true;
  return classify_shape(sql);
}

void ResultCache::remember(std::string_view sql, ClassificationPtr c) {
  if (classified_.size() >= kMaxClassified) classified_.clear();   // many distinct texts: start over
  classified_.emplace(std::string(sql), std::move(c));
}

ClassificationPtr ResultCache::effects_of(std::string_view sql, const ClassificationPtr& parsed) {
  if (sql.size() > kMaxParsedText) return too_long();
  return parsed ? parsed : classify(sql);
}

// Texts that differ only in their literals share one parse (StatementCache):
// WHERE id = 1 and WHERE id = 2 are one statement to the cache. What depends on
// the literals themselves comes from the text: SET values (StatementCache parses
// such a text on its own) and clock words ('now', 'today' ...) in strings.
ClassificationPtr ResultCache::classify_shape(std::string_view sql) {
  ClassificationPtr c = shapes_.classify_now(sql);   // sql is short: parsed now if new
  if (!c) return std::make_shared<const Classification>(unclassified("too long to classify"));
  if (!c->cacheable || !clock_word_in_string(sql)) return c;
  auto copy = std::make_shared<Classification>(*c);
  copy->cacheable = false;
  copy->not_cacheable_reason = "a string literal names a time that depends on the clock ('now', 'today' ...)";
  return copy;
}

ResultCache::Database& ResultCache::database(const std::string& name, const std::string& user) {
  Database& db = databases_[name];
  if (stopped_) return db;   // shutting down: no new connections or reads
  if (!db.session) {
    db.conninfo = conninfo_(name, user);
    db.session = std::make_unique<pq::Session>(loop_, "result cache (" + name + ")");
    db.session->configure(db.conninfo, {cfg_.invalidation_channel});
    db.session->on_notify([this, name](const std::string&, const std::string& payload, int be_pid) {
      on_notify(name, payload, be_pid);
    });
    db.session->connect_now();
  }
  // After a failure, read again at most once a second.
  if (!catalog_known(db) && !db.loading && (!db.failed || uv_now(loop_) - db.load_started >= 1000))
    load_catalog(name, db);
  return db;
}

void ResultCache::attach(const std::string& name, const std::string& user, const std::string& server) {
  auto it = databases_.find(name);
  if (it != databases_.end() && !it->second.server.empty() && it->second.server != server) {
    LOG_INFO("result cache: %s now points at %s; dropping what was cached from the old server", name.c_str(),
             server.c_str());
    forget_database(name);
  }
  database(name, user).server = server;
}

// Its server changed: entries, catalog and control connection all belonged to the old one.
void ResultCache::forget_database(const std::string& name) {
  auto it = databases_.find(name);
  if (it == databases_.end()) return;
  stats_.invalidated_entries += store_.invalidate_all(name);
  Database& db = it->second;
  if (db.session) db.session->stop();
  std::vector<Waiter> waiting = std::move(db.waiting);
  // The session's callbacks refer to its database by name, never to this object.
  databases_.erase(it);
  for (Waiter& w : waiting) w.resume();
}

void ResultCache::load_catalog(const std::string& name, Database& db) {
  if (!db.session) return;
  db.loading = true;
  db.load_started = uv_now(loop_);
  uint64_t version = schema_.current(), moves = db.moves;
  pq::Session* session = db.session.get();
  auto started = std::chrono::steady_clock::now();
  db.session->query(kCatalogQuery, {}, [this, name, version, moves, session, started](pq::QueryResult r) {
    auto it = databases_.find(name);
    if (it == databases_.end() || it->second.session.get() != session) return;   // forgotten meanwhile
    Database& d = it->second;
    d.loading = false;
    d.failed = !r.ok;
    if (r.ok && d.moves != moves) {
      // Another sidecar moved the schema while this was read: read it again.
    } else if (r.ok) {
      Catalog read;
      read.load(r.rows);
      if (d.ever_loaded && !read.same_defaults(d.catalog)) d.defaults_since = started;
      d.catalog = std::move(read);
      d.catalog_version = version;
      d.ever_loaded = true;
    } else {
      LOG_WARN("result cache: reading the catalog of %s failed: %s", name.c_str(), r.message.c_str());
    }
    // Retried at the next lookup; those waiting now go on without the cache.
    std::vector<Waiter> waiting = std::move(d.waiting);
    d.waiting.clear();
    for (Waiter& w : waiting) w.resume();
  });
}

void ResultCache::append_login_defaults(const std::string& database, const std::string& role,
                                        std::string& key) const {
  auto it = databases_.find(database);
  if (it != databases_.end()) it->second.catalog.append_defaults(role, key);
}

bool ResultCache::login_current(const std::string& database, std::chrono::steady_clock::time_point created) const {
  auto it = databases_.find(database);
  return it == databases_.end() || it->second.defaults_since < created;
}

bool ResultCache::wait_catalog(const std::string& name, std::function<void()> resume) {
  auto it = databases_.find(name);
  if (stopped_ || it == databases_.end() || !it->second.loading || it->second.failed) return false;
  it->second.waiting.push_back({uv_now(loop_) + kCatalogWaitMs, std::move(resume)});
  if (!wait_timer_) {
    wait_timer_ = new uv_timer_t;
    uv_timer_init(loop_, wait_timer_);
    wait_timer_->data = this;
  }
  if (!uv_is_active(reinterpret_cast<uv_handle_t*>(wait_timer_)))
    uv_timer_start(wait_timer_, [](uv_timer_t* t) { static_cast<ResultCache*>(t->data)->end_long_waits(); },
                   kCatalogWaitMs, 0);
  return true;
}

// Each lookup waits at most kCatalogWaitMs, however often the read starts over (a
// stream of schema moves): then it goes on without the cache, and while that
// read lasts later lookups do not wait for it.
void ResultCache::end_long_waits() {
  const uint64_t now = uv_now(loop_);
  uint64_t next = 0;   // earliest deadline still ahead
  std::vector<Waiter> due;
  for (auto& [name, db] : databases_) {
    size_t before = due.size();
    std::erase_if(db.waiting, [&](Waiter& w) {
      if (w.deadline > now) {
        next = next ? std::min(next, w.deadline) : w.deadline;
        return false;
      }
      due.push_back(std::move(w));
      return true;
    });
    if (due.size() == before) continue;
    LOG_WARN("result cache: the catalog of %s is taking over %llu ms to read; not caching there meanwhile",
             name.c_str(), static_cast<unsigned long long>(kCatalogWaitMs));
    db.failed = true;
  }
  if (next && wait_timer_)
    uv_timer_start(wait_timer_, [](uv_timer_t* t) { static_cast<ResultCache*>(t->data)->end_long_waits(); },
                   next - now, 0);
  for (Waiter& w : due) w.resume();   // after the walk: a resumed lookup may look at databases_
}

int64_t ResultCache::ttl_ms(const Classification& c, const std::string& database, const std::string& user) {
  if (!enabled() || c.hint_nocache) return 0;
  bool catalog_only = !c.cacheable && c.catalogs && c.not_cacheable_reason == "reads a catalog";
  if (!c.cacheable && !(cfg_.catalogs && catalog_only)) return 0;
  int64_t ttl = -1;
  if (c.hinted) {
    ttl = c.hint_ttl_ms >= 0 ? c.hint_ttl_ms : cfg_.default_ttl.count();
  } else {
    for (const conf::CacheRule& rule : cfg_.rules) {
      bool match = rule.fingerprint.empty() ? std::binary_search(c.reads.begin(), c.reads.end(), rule.table)
                                            : rule.fingerprint == c.fingerprint;
      if (match) {
        ttl = rule.ttl.count() > 0 ? rule.ttl.count() : cfg_.default_ttl.count();
        break;
      }
    }
    if (ttl < 0 && cfg_.mode == conf::CacheMode::All) ttl = cfg_.default_ttl.count();
  }
  if (ttl <= 0) return 0;
  // Views, sequences and functions are told apart by the catalog only.
  Database& db = this->database(database, user);
  if (!catalog_known(db)) return db.loading && !db.failed ? kNeedCatalog : 0;
  for (const std::string& f : c.functions)
    if (db.catalog.volatile_function(f)) return 0;
  for (const std::string& r : c.reads)
    if (db.catalog.blocked(r)) return 0;
  return std::min<int64_t>(ttl, cfg_.max_ttl.count());
}

bool ResultCache::may_change_session(const Classification& c, const std::string& database, const std::string& user) {
  for (const std::string& r : c.writes)
    if (r.starts_with("pg_")) return true;   // a catalog (pg_settings, pg_db_role_setting ...)
  if (c.functions.empty()) return false;
  Database& db = this->database(database, user);
  if (!db.ever_loaded) return true;   // else the last catalog read: which functions are built in changes rarely
  for (const std::string& f : c.functions)
    if (db.catalog.user_volatile_function(f)) return true;
  return false;
}

std::vector<std::string> ResultCache::dependencies(const std::string& database, const Classification& c) {
  std::vector<std::string> deps = c.reads;
  auto it = databases_.find(database);
  if (it != databases_.end()) it->second.catalog.expand(deps, false);
  return deps;
}

void ResultCache::note_writes(const Classification& c, const std::string& database, const std::string& user,
                              Writes& w) {
  using Kind = Classification::Kind;
  // A statement our parser rejects may be newer syntax the server accepts.
  if (c.kind == Kind::Ddl || c.kind == Kind::Unparsable || c.writes_unknown) w.everything = true;
  // What c does not name: a write to a view writes its tables, one to a partition
  // or inheritance child changes what its whole tree reads, and VACUUM FULL or
  // CLUSTER moves rows. Without the catalog, that is anything.
  if (c.writes.empty() && c.functions.empty()) return;
  Database& db = this->database(database, user);
  if (!db.ever_loaded) {
    w.everything = true;
    return;
  }
  // The last catalog read, while the next one is under way (trees and views seldom change).
  std::vector<std::string> written = c.writes;
  db.catalog.expand(written, true);
  for (std::string& rel : written) w.add(std::move(rel));
  // A function not known to be safe may write anything.
  for (const std::string& f : c.functions)
    if (db.catalog.user_volatile_function(f)) w.everything = true;
}

bool ResultCache::admit(std::string_view key) {
  if (cfg_.admission == conf::CacheAdmission::Always) return true;
  if (!doorkeeper_) doorkeeper_ = std::make_unique<Doorkeeper>();
  if (doorkeeper_->missed_before(key)) return true;
  stats_.first_miss++;
  return false;
}

const StoredResult* ResultCache::find(std::string_view key) {
  const StoredResult* r = store_.find(key, Clock::now());
  if (r) stats_.l1_hits++;
  else stats_.l1_misses++;
  return r;
}

std::string ResultCache::l2_key(std::string_view key) const {
  return cfg_.redis.key_prefix + "r:" + std::to_string(l2_generation_) + ":" + key_digest(key);
}

std::string ResultCache::l2_dependency(const std::string& database, const std::string& relation) const {
  return cfg_.redis.key_prefix + "d:" + std::to_string(l2_generation_) + ":" + database + ":" + relation;
}

bool ResultCache::find_shared(const std::string& key, const std::string& database, ClassificationPtr c,
                              int64_t ttl_ms, Found done) {
  if (!redis_ || l2_generation_ < 0) return false;
  uint64_t since = store_.seq();
  std::vector<std::string> get = {"GET", l2_key(key)};
  return redis_->command(std::move(get), [=, this, done = std::move(done)](RedisReply r) {
    if (r.type != RedisReply::Type::String) {
      stats_.l2_misses++;
      return done(nullptr);
    }
    StoredResult entry{key, {}, false, Clock::now() + std::chrono::milliseconds(ttl_ms)};
    if (!decode_value(r.str, key, entry.value, entry.has_row_description, cfg_.max_entry_bytes)) {
      stats_.l2_corrupt++;
      stats_.l2_misses++;
      LOG_WARN("result cache: discarded a corrupt or foreign value from Redis");
      return done(nullptr);
    }
    stats_.l2_hits++;
    // Read before any invalidation since: served, and kept in L1 unless one raced it.
    if (store_.store(entry, database, dependencies(database, *c), since) == ResultStore::Admit::Stored)
      return done(store_.find(key, Clock::now()));
    done(&entry);
  });
}

void ResultCache::store(std::string key, std::string response, const std::string& database, const Classification& c,
                        int64_t ttl_ms, uint64_t since) {
  bool has_row_description = false;
  if (!valid_response(response, has_row_description)) return;
  if (response.size() > cfg_.max_entry_bytes) {
    stats_.too_large++;
    return;
  }
  std::string encoded;
  bool to_redis = redis_ && redis_->up() && l2_generation_ >= 0;
  if (to_redis) encoded = encode_value(key, response, cfg_.redis.compression);
  if (encoded.size() > Redis::kMaxValueBytes) to_redis = false;   // could not be read back
  StoredResult entry{key, std::move(response), has_row_description,
                     Clock::now() + std::chrono::milliseconds(ttl_ms)};
  auto db = databases_.find(database);
  if (db == databases_.end() || !catalog_known(db->second)) return;   // read before a schema move
  std::vector<std::string> deps = dependencies(database, c);
  switch (store_.store(std::move(entry), database, deps, since)) {
    case ResultStore::Admit::Stored: stats_.stores++; break;
    case ResultStore::Admit::TooLarge: stats_.too_large++; return;
    case ResultStore::Admit::Raced: stats_.raced++; return;
  }
  if (!to_redis) return;
  std::string l2 = l2_key(key);
  redis_->command({"SET", l2, std::move(encoded), "PX", std::to_string(ttl_ms)}, [this](RedisReply r) {
    if (r.ok()) stats_.l2_stores++;
  });
  // Dependency sets outlive their entries (max_ttl), so an invalidation finds every entry.
  for (const std::string& rel : deps) {
    std::string dep = l2_dependency(database, rel);
    redis_->command({"SADD", dep, l2}, nullptr);
    redis_->command({"PEXPIRE", dep, std::to_string(cfg_.max_ttl.count())}, nullptr);
  }
}

void ResultCache::invalidate(const std::string& database, const Writes& w) {
  if (w.empty()) return;
  drop_local(database, w, w.everything ? "everything" : "write");
  publish(database, w);
}

// Drops the entries w makes stale here and in Redis.
void ResultCache::drop_local(const std::string& database, const Writes& w, const char* reason) {
  stats_.invalidations[reason]++;
  if (w.everything) {
    stats_.invalidated_entries += store_.invalidate_all(database);
    // DO, CALL or a function may have run DDL (a new partition, a view): read the catalog again.
    if (auto it = databases_.find(database); it != databases_.end()) {
      it->second.catalog_version = 0;
      it->second.moves++;
    }
    return;   // Redis: the publisher moves the generation on
  }
  stats_.invalidated_entries += store_.invalidate(database, w.relations);
  if (!redis_ || !redis_->up() || l2_generation_ < 0) return;
  std::vector<std::string> cmd = {"EVAL", kDropDependents, std::to_string(w.relations.size())};
  for (const std::string& rel : w.relations) cmd.push_back(l2_dependency(database, rel));
  redis_->command(std::move(cmd), nullptr);
}

// Tells the other sidecars: over Redis when it is up, else NOTIFY in the database.
void ResultCache::publish(const std::string& database, const Writes& w) {
  nlohmann::json msg = {{"o", origin_}, {"db", database}};
  if (w.everything) msg["all"] = true;
  else msg["rels"] = w.relations;
  if (redis_ && redis_->up()) {
    if (!w.everything) {
      redis_->command({"PUBLISH", cfg_.invalidation_channel, msg.dump()}, nullptr);
      return;
    }
    next_generation([this, msg](long long gen) mutable {
      if (gen >= 0) msg["gen"] = gen;
      redis_->command({"PUBLISH", cfg_.invalidation_channel, msg.dump()}, nullptr);
    });
    return;
  }
  auto it = databases_.find(database);
  if (it == databases_.end() || !it->second.session) return;   // nothing cached there by anyone we could tell
  std::string payload = msg.dump();
  if (payload.size() > 7000) {   // NOTIFY payloads stop at 8000 bytes
    msg.erase("rels");
    msg["all"] = true;
    payload = msg.dump();
  }
  it->second.session->query("SELECT pg_notify($1, $2)", {cfg_.invalidation_channel, payload},
                            [](pq::QueryResult r) {
                              if (!r.ok) LOG_WARN("result cache: NOTIFY of an invalidation failed: %s", r.message.c_str());
                            });
}

// A NOTIFY on the invalidation channel in `database`. Any database user may
// send one. What names relations (a trigger's message) can only drop entries,
// so it is taken from anyone; "schema" and "all" (drop everything, everywhere,
// with a new Redis generation) only from a backend logged in as this sidecar's
// own control role. The sender is looked up by its pid: a sender already gone
// is not trusted either (its flags are lost, as if the bus had been down).
void ResultCache::on_notify(const std::string& database, const std::string& payload, int be_pid) {
  const bool flags = payload.find("\"schema\"") != std::string::npos || payload.find("\"all\"") != std::string::npos;
  auto it = databases_.find(database);
  if (!flags || it == databases_.end() || !it->second.session || sender_checks_ >= kMaxSenderChecks) {
    // Past the bound, or without a flag spelled plainly: treated as from anyone,
    // which ignores the flags, so a message cannot slip past the check.
    return on_message(database, payload, false);
  }
  sender_checks_++;
  it->second.session->query(
      "SELECT 1 FROM pg_catalog.pg_stat_activity WHERE pid = $1 AND usename = session_user",
      {std::to_string(be_pid)}, [this, database, payload, be_pid](pq::QueryResult r) {
        sender_checks_--;
        if (stopped_) return;   // stop(): the session failed its queue
        const bool own = r.ok && r.rows.size() == 1;
        if (!own) {
          stats_.invalidations["untrusted"]++;
          LOG_WARN("result cache: an invalidation message from backend %d, which is not logged in as this "
                   "sidecar's role%s: only the relations it names are dropped", be_pid,
                   r.ok ? "" : " (the check failed)");
        }
        on_message(database, payload, own);
      });
}

// A message on the invalidation channel: from another sidecar (Redis or NOTIFY),
// or from a trigger (NOTIFY, no origin; its database is the connection's).
// Untrusted (see on_notify): its "schema", "all" and "gen" are ignored.
void ResultCache::on_message(const std::string& from_database, std::string_view payload, bool trusted) {
  nlohmann::json msg = nlohmann::json::parse(payload, nullptr, false);
  if (msg.is_discarded() || !msg.is_object()) {
    LOG_WARN("result cache: ignored a malformed invalidation message");
    return;
  }
  auto text = [&](const char* field) {
    auto it = msg.find(field);
    return it != msg.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  auto flag = [&](const char* field) {   // anyone may NOTIFY: a field of the wrong type is false, never a throw
    auto it = msg.find(field);
    return it != msg.end() && it->is_boolean() && it->get<bool>();
  };
  if (text("o") == origin_) return;
  // Only Redis carries the key generation: any database user may NOTIFY on the
  // channel, and a generation pushed ahead would leave this sidecar's Redis
  // entries where other sidecars' invalidations never look.
  if (auto gen = msg.find("gen"); from_database.empty() && gen != msg.end() && gen->is_number_integer())
    l2_generation_ = std::max(l2_generation_, gen->get<long long>());
  if (trusted && flag("schema")) {
    schema_moved();
    // Sent by NOTIFY (its sender's Redis was down): Redis still holds pre-move entries.
    if (!from_database.empty() && redis_up()) next_generation(nullptr);
    return;
  }
  std::string database = from_database.empty() ? text("db") : from_database;
  Writes w;
  w.everything = trusted && flag("all");
  if (auto rels = msg.find("rels"); rels != msg.end() && rels->is_array()) {
    for (const auto& r : *rels)
      if (r.is_string() && w.relations.size() < kMaxMessageRelations) w.relations.push_back(r.get<std::string>());
    if (rels->size() > kMaxMessageRelations) w.everything = true;   // bounded: more counts as everything
  }
  if (database.empty() || w.empty()) return;
  if (text("o").empty() && !w.everything) {   // a trigger names its own table only: add views over it, its tree
    auto db = databases_.find(database);
    if (db != databases_.end() && catalog_known(db->second)) db->second.catalog.expand(w.relations, true);
    else w.everything = true;
  }
  drop_local(database, w, text("o").empty() ? "trigger" : "remote");
  // "Everything" sent by NOTIFY (its sender's Redis was down): Redis still holds
  // what it made stale, so move the generation on here.
  if (w.everything && !msg.contains("gen") && redis_up()) next_generation(nullptr);
}

// DDL through this sidecar, or a NOTIFY on schema_notify_channel: nothing stored
// may still be right, in any database.
void ResultCache::on_schema_bump() {
  schema_moved();
  if (stopped_) return;
  // The other sidecars drop everything too and read their catalogs again.
  if (!redis_ || !redis_->up()) {
    std::string payload = nlohmann::json({{"o", origin_}, {"schema", true}}).dump();
    for (auto& [name, db] : databases_)
      if (db.session)
        db.session->query("SELECT pg_notify($1, $2)", {cfg_.invalidation_channel, payload}, [](pq::QueryResult r) {
          if (!r.ok) LOG_WARN("result cache: NOTIFY of a schema move failed: %s", r.message.c_str());
        });
    return;
  }
  next_generation([this](long long gen) {
    if (gen < 0) return;
    nlohmann::json msg = {{"o", origin_}, {"gen", gen}, {"schema", true}};
    redis_->command({"PUBLISH", cfg_.invalidation_channel, msg.dump()}, nullptr);
  });
}

// Here or at another sidecar: nothing stored may still be right, in any database,
// and every catalog is read again.
void ResultCache::schema_moved() {
  stats_.invalidations["schema"]++;
  stats_.invalidated_entries += store_.invalidate_all("");
  for (auto& [name, db] : databases_) {
    db.catalog_version = 0;
    db.moves++;
  }
}

// Moves the Redis key generation on (INCR), leaving every Redis entry behind. L2
// is not used until the new generation is known, so no lookup meanwhile reads the
// old one. then (may be empty) gets the new generation, or -1 if INCR failed.
void ResultCache::next_generation(std::function<void(long long)> then) {
  l2_generation_ = -1;
  redis_->command({"INCR", cfg_.redis.key_prefix + "gen"}, [this, then = std::move(then)](RedisReply r) {
    long long gen = r.type == RedisReply::Type::Integer ? r.integer : -1;
    if (gen >= 0) l2_generation_ = gen;
    if (then) then(gen);
  });
}

}  // namespace cache
