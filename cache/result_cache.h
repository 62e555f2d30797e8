// The result cache: read-only query results served without a server.
//  - which statements: cache.mode (off, hinted, all), decided from the statement's
//    classification (cache/classify.h, cached per text) and the database's
//    catalog (cache/catalog.h: volatile functions, sequences, what views and
//    policies reach, inheritance trees; read over a control connection once per
//    schema version, and waited for by the first lookups);
//  - L1: ResultStore in memory; L2 (optional): Redis, shared by every sidecar on
//    it, written through on store and read on an L1 miss;
//  - invalidation: writes committed through this sidecar drop the entries that read
//    the written relations, DDL and schema-version moves drop everything; both are
//    published (Redis pub/sub if Redis is up, else NOTIFY on the invalidation
//    channel) and applied by every sidecar; writes made elsewhere reach it through
//    NOTIFYs from the triggers in conf/pgsidecar-invalidate.sql.
// The key (built by the proxy) holds everything a result depends on; see
// docs/result-cache.md.
#pragma once
#include <uv.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "cache/admission.h"
#include "cache/catalog.h"
#include "cache/classify.h"
#include "cache/redis.h"
#include "cache/result_store.h"
#include "cache/schema_version.h"
#include "cache/statement_cache.h"
#include "conf/config.h"
#include "pq/session.h"

namespace cache {

// Relations a transaction wrote, collected until it ends.
struct Writes {
  std::vector<std::string> relations;
  bool everything = false;   // DDL, or a call that may write anything
  bool empty() const { return relations.empty() && !everything; }
  // Each relation once.
  void add(std::string relation) {
    if (std::find(relations.begin(), relations.end(), relation) == relations.end())
      relations.push_back(std::move(relation));
  }
  void merge(Writes&& o) {
    everything |= o.everything;
    for (std::string& r : o.relations) add(std::move(r));
  }
  void clear() {
    relations.clear();
    everything = false;
  }
};

struct CacheStats {
  uint64_t l1_hits = 0, l1_misses = 0, l2_hits = 0, l2_misses = 0;
  uint64_t stores = 0, l2_stores = 0, too_large = 0, raced = 0;
  uint64_t first_miss = 0;                               // not stored: the key had not missed before (admission)
  uint64_t l2_corrupt = 0;                               // values from Redis that failed to decode
  std::map<std::string, uint64_t> invalidations;         // reason -> events
  uint64_t invalidated_entries = 0;
};

class ResultCache {
 public:
  using ConninfoFor = std::function<std::string(const std::string& database, const std::string& user)>;
  using Found = std::function<void(const StoredResult*)>;

  ResultCache(uv_loop_t* loop, const conf::Cache& cfg, SchemaVersion& schema, ConninfoFor conninfo);
  ~ResultCache();
  ResultCache(const ResultCache&) = delete;
  ResultCache& operator=(const ResultCache&) = delete;

  bool enabled() const { return cfg_.mode != conf::CacheMode::Off; }
  // Connects to Redis if configured.
  void start();
  // Closes Redis and control connections; the loop can then finish.
  void stop();

  // A client logged in to database as user: open its control connection (catalog,
  // invalidation NOTIFYs) now rather than at its first statement. A database
  // whose server changed (a reload) starts afresh: nothing cached from the old one.
  // `server` names the server behind the database ("host:port/dbname").
  void attach(const std::string& database, const std::string& user, const std::string& server);
  // Longer texts (bulk INSERTs, mostly) are not parsed on the event loop for the
  // cache: they count as writing anything. Parsing costs ~0.5 µs per byte.
  static constexpr size_t kMaxParsedText = 8192;
  // The classification of a statement text, parsed once per distinct text.
  ClassificationPtr classify(std::string_view sql);
  // The same for a text that may not come again (a lookup, which most often
  // misses where the cache cannot serve): a new text is parsed by its shape but
  // remembered only once remember() says it is worth it (stored, or served).
  // is_new: not remembered yet.
  ClassificationPtr classify_transient(std::string_view sql, bool& is_new);
  void remember(std::string_view sql, ClassificationPtr c);
  // What a text being sent writes and does to the session (note_for_cache).
  // `parsed` is the proxy's own classification of it, if it has one: these do not
  // depend on its literals, clock words or fingerprint. A text too long for
  // classify() is unknown here too.
  ClassificationPtr effects_of(std::string_view sql, const ClassificationPtr& parsed);
  // How long to keep the result of c run in database by user: 0 = not cached;
  // kNeedCatalog = cached if the database's catalog allows, which is being read
  // (wait_catalog()).
  static constexpr int64_t kNeedCatalog = -1;
  int64_t ttl_ms(const Classification& c, const std::string& database, const std::string& user);
  // Runs resume once the catalog of database has been read (or reading it
  // failed); false if it is not being read (then resume is dropped).
  bool wait_catalog(const std::string& database, std::function<void()> resume);
  // Adds what running c may write to w.
  void note_writes(const Classification& c, const std::string& database, const std::string& user, Writes& w);
  // c may change session state the key cannot describe: it calls a function
  // that is volatile and not built in (or the database's functions are not known
  // yet), or writes a catalog (UPDATE pg_settings ...).
  bool may_change_session(const Classification& c, const std::string& database, const std::string& user);

  // The login defaults (ALTER ROLE/DATABASE ... SET) a new session of role gets
  // in database, as its catalog shows them, appended to a key.
  void append_login_defaults(const std::string& database, const std::string& role, std::string& key) const;
  // A server of database created at `created` logged in with the defaults the
  // catalog shows: false if a read of the catalog that found them changed started after it.
  bool login_current(const std::string& database, std::chrono::steady_clock::time_point created) const;

  // L1 lookup; the result stays valid until the next call into the cache.
  const StoredResult* find(std::string_view key);
  // After an L1 miss: whether to look key up in L2 and store its answer
  // (cache.admission; false counts as not stored, reason first_miss).
  bool admit(std::string_view key);
  // L2 lookup on an L1 miss of a statement (c, run in database, kept ttl_ms). False
  // if Redis is not usable now (done never called); otherwise done runs later with
  // the entry (copied into L1) or null.
  bool find_shared(const std::string& key, const std::string& database, ClassificationPtr c, int64_t ttl_ms,
                   Found done);
  // Sequence to pass to store(): take it before the query goes to the server.
  uint64_t seq() const { return store_.seq(); }
  void store(std::string key, std::string response, const std::string& database, const Classification& c,
             int64_t ttl_ms, uint64_t since);
  // A transaction that wrote w in database has ended (committed or not).
  void invalidate(const std::string& database, const Writes& w);
  size_t max_entry_bytes() const { return cfg_.max_entry_bytes; }

  const CacheStats& stats() const { return stats_; }
  const ResultStore& l1() const { return store_; }
  const RedisStats* redis_stats() const { return redis_ ? &redis_->stats() : nullptr; }
  // Redis connected and its key generation known: L2 in use.
  bool redis_up() const { return redis_ && redis_->up() && l2_generation_ >= 0; }

 private:
  struct Waiter {
    uint64_t deadline;   // uv_now() when it goes on without the catalog
    std::function<void()> resume;
  };
  struct Database {
    std::unique_ptr<pq::Session> session;   // catalog; LISTEN on the invalidation channel
    std::string conninfo;                   // of session
    std::string server;                     // host:port/dbname behind it (a change drops everything)
    uint64_t catalog_version = 0;           // schema version the catalog was read under (0 = never)
    bool loading = false;
    bool failed = false;                    // the last read failed: lookups do not wait for the next
    uint64_t moves = 0;                     // schema moves seen (a read started before one is not used)
    uint64_t load_started = 0;              // uv_now() of the last read
    Catalog catalog;                        // the last read (catalog_version says whether it is current)
    bool ever_loaded = false;
    // Start of the read that found login defaults changed: servers made before
    // it may have logged in with others (epoch: none changed since the first read).
    std::chrono::steady_clock::time_point defaults_since{};
    std::vector<Waiter> waiting;            // lookups waiting for the catalog
  };

  Database& database(const std::string& name, const std::string& user);
  void load_catalog(const std::string& name, Database& db);
  bool catalog_known(const Database& db) const { return db.catalog_version == schema_.current(); }
  ClassificationPtr classify_shape(std::string_view sql);
  // The relations a result of c depends on: what it reads, and what that reaches.
  std::vector<std::string> dependencies(const std::string& database, const Classification& c);
  void forget_database(const std::string& name);
  void drop_local(const std::string& database, const Writes& w, const char* reason);
  void publish(const std::string& database, const Writes& w);
  void on_notify(const std::string& database, const std::string& payload, int be_pid);
  void on_message(const std::string& from_database, std::string_view payload, bool trusted);
  void on_schema_bump();
  void schema_moved();
  void end_long_waits();
  static constexpr uint64_t kCatalogWaitMs = 1000;   // longest a lookup waits for a catalog
  void next_generation(std::function<void(long long)> then);
  std::string l2_key(std::string_view key) const;
  std::string l2_dependency(const std::string& database, const std::string& relation) const;
  void redis_up_again();

  uv_loop_t* loop_;
  conf::Cache cfg_;
  SchemaVersion& schema_;
  ConninfoFor conninfo_;
  ResultStore store_;
  CacheStats stats_;
  struct TextHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  // By statement text; looked up without copying the text.
  std::unordered_map<std::string, ClassificationPtr, TextHash, std::equal_to<>> classified_;
  StatementCache shapes_{8 << 20, true};   // one parse per shape of text, with fingerprints
  std::map<std::string, Database> databases_;
  std::unique_ptr<Redis> redis_;
  long long l2_generation_ = -1;   // Redis keys' generation; -1 = unknown, L2 unused
  bool redis_was_down_ = false;    // invalidations may have been missed: move the generation on
  std::string origin_;             // this process, in published messages (its own are ignored)
  std::unique_ptr<Doorkeeper> doorkeeper_;   // cache.admission: repeated (made on first use)
  size_t sender_checks_ = 0;       // NOTIFY senders being looked up (on_notify)
  bool stopped_ = false;           // stop() ran: nothing new is opened or read
  uv_timer_t* wait_timer_ = nullptr;   // ends waits for a catalog that takes too long (end_long_waits)
};

}  // namespace cache
