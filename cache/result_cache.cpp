#include "cache/result_cache.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <random>

#include "cache/value_codec.h"
#include "conf/log.h"

namespace cache {
namespace {

constexpr size_t kMaxClassified = 20000;   // distinct statement texts remembered
// Longer texts (bulk INSERTs, mostly) are not parsed on the event loop for the
// cache: they count as writing anything. Parsing costs ~0.5 µs per byte.
constexpr size_t kMaxParsedText = 8192;

// Deletes the L2 entries listed in each dependency set, and the sets.
constexpr const char* kDropDependents =
    "for _, d in ipairs(KEYS) do "
    "  for _, k in ipairs(redis.call('SMEMBERS', d)) do redis.call('DEL', k) end "
    "  redis.call('DEL', d) "
    "end return #KEYS";

// Volatile functions by name: any of them makes a SELECT uncacheable; one outside
// pg_catalog may also write (it is not known safe), so calling it invalidates.
constexpr const char* kVolatileFunctions =
    "SELECT DISTINCT p.proname, n.nspname = 'pg_catalog' FROM pg_proc p "
    "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.provolatile = 'v'";

bool contains(const std::unordered_set<std::string>& set, const std::vector<std::string>& names) {
  for (const std::string& n : names)
    if (set.count(n)) return true;
  return false;
}

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
  redis_ = std::make_unique<Redis>(loop_, target, cfg_.redis.timeout);
  redis_->subscribe(cfg_.invalidation_channel, [this](std::string_view, std::string_view message) {
    on_message("", message);
  });
  redis_->on_up([this] { redis_up_again(); });
  redis_->on_down([this] {
    l2_generation_ = -1;
    redis_was_down_ = true;
  });
  redis_->start();
}

void ResultCache::stop() {
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

ClassificationPtr ResultCache::classify(std::string_view sql) {
  auto it = classified_.find(sql);
  if (it != classified_.end()) return it->second;
  if (sql.size() > kMaxParsedText) {
    static const ClassificationPtr kTooLong = std::make_shared<const Classification>(unclassified("too long to classify"));
    return kTooLong;
  }
  if (classified_.size() >= kMaxClassified) classified_.clear();   // rare: that many distinct texts
  auto c = std::make_shared<const Classification>(classify_statement(sql));
  classified_.emplace(std::string(sql), c);
  return c;
}

ResultCache::Database& ResultCache::database(const std::string& name, const std::string& user) {
  Database& db = databases_[name];
  if (!db.session) {
    db.session = std::make_unique<pq::Session>(loop_, "result cache (" + name + ")");
    db.session->configure(conninfo_(name, user), {cfg_.invalidation_channel});
    db.session->on_notify([this, name](const std::string&, const std::string& payload) { on_message(name, payload); });
    db.session->connect_now();
  }
  if (!functions_known(db) && !db.loading) load_functions(name, db);
  return db;
}

void ResultCache::load_functions(const std::string& name, Database& db) {
  db.loading = true;
  uint64_t version = schema_.current();
  db.session->query(kVolatileFunctions, {}, [this, name, version](pq::QueryResult r) {
    Database& d = databases_[name];
    d.loading = false;
    if (!r.ok) {
      LOG_WARN("result cache: reading volatile functions of %s failed: %s", name.c_str(), r.message.c_str());
      return;   // retried on the next statement that calls a function
    }
    d.volatile_functions.clear();
    d.user_volatile_functions.clear();
    for (const pq::Row& row : r.rows) {
      if (row.size() < 2 || !row[0] || !row[1]) continue;
      d.volatile_functions.insert(*row[0]);
      if (*row[1] != "t") d.user_volatile_functions.insert(*row[0]);
    }
    d.functions_version = version;
  });
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
  if (!c.functions.empty()) {
    Database& db = this->database(database, user);
    if (!functions_known(db) || contains(db.volatile_functions, c.functions)) return 0;
  }
  return std::min<int64_t>(ttl, cfg_.max_ttl.count());
}

void ResultCache::note_writes(const Classification& c, const std::string& database, const std::string& user,
                              Writes& w) {
  using Kind = Classification::Kind;
  // A statement our parser rejects may be newer syntax the server accepts.
  if (c.kind == Kind::Ddl || c.kind == Kind::Unparsable || c.writes_unknown) w.everything = true;
  for (const std::string& rel : c.writes)
    if (std::find(w.relations.begin(), w.relations.end(), rel) == w.relations.end()) w.relations.push_back(rel);
  if (!c.functions.empty()) {
    Database& db = this->database(database, user);
    // A function not known to be safe may write anything.
    if (!functions_known(db) || contains(db.user_volatile_functions, c.functions)) w.everything = true;
  }
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
    if (store_.store(entry, database, c->reads, since) == ResultStore::Admit::Stored)
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
  StoredResult entry{key, std::move(response), has_row_description,
                     Clock::now() + std::chrono::milliseconds(ttl_ms)};
  switch (store_.store(std::move(entry), database, c.reads, since)) {
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
  for (const std::string& rel : c.reads) {
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

// A message on the invalidation channel: from another sidecar (Redis or NOTIFY),
// or from a trigger (NOTIFY, no origin; its database is the connection's).
void ResultCache::on_message(const std::string& from_database, std::string_view payload) {
  nlohmann::json msg = nlohmann::json::parse(payload, nullptr, false);
  if (msg.is_discarded() || !msg.is_object()) {
    LOG_WARN("result cache: ignored a malformed invalidation message");
    return;
  }
  auto text = [&](const char* field) {
    auto it = msg.find(field);
    return it != msg.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  if (text("o") == origin_) return;
  if (auto gen = msg.find("gen"); gen != msg.end() && gen->is_number_integer())
    l2_generation_ = std::max(l2_generation_, gen->get<long long>());
  std::string database = from_database.empty() ? text("db") : from_database;
  Writes w;
  w.everything = msg.value("all", false);
  if (auto rels = msg.find("rels"); rels != msg.end() && rels->is_array())
    for (const auto& r : *rels)
      if (r.is_string()) w.relations.push_back(r.get<std::string>());
  if (database.empty() || w.empty()) return;
  drop_local(database, w, text("o").empty() ? "trigger" : "remote");
  // "Everything" sent by NOTIFY (its sender's Redis was down): Redis still holds
  // what it made stale, so move the generation on here.
  if (w.everything && !msg.contains("gen") && redis_up()) next_generation(nullptr);
}

// DDL through this sidecar, or a NOTIFY on schema_notify_channel: nothing stored
// may still be right, in any database.
void ResultCache::on_schema_bump() {
  stats_.invalidations["schema"]++;
  stats_.invalidated_entries += store_.invalidate_all("");
  for (auto& [name, db] : databases_) db.functions_version = 0;
  if (!redis_ || !redis_->up()) return;
  next_generation([this](long long gen) {
    if (gen < 0) return;
    nlohmann::json msg = {{"o", origin_}, {"gen", gen}};
    redis_->command({"PUBLISH", cfg_.invalidation_channel, msg.dump()}, nullptr);
  });
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
