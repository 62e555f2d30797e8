// The result cache's first tier (L1): stored responses by key, bounded in bytes,
// least recently used out first, each with its own expiry, and indexed by the
// relations it read so a write drops exactly the entries that read what it wrote.
//
// Invalidation races with queries in flight: a result read before a write
// committed may arrive after the invalidation. Every invalidation therefore takes a
// sequence number, recorded on the relations (and database) it covered; a query
// notes the sequence when it starts (seq()), and its result is not stored if
// anything it read was invalidated since.
#pragma once
#include <chrono>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace cache {

using Clock = std::chrono::steady_clock;

struct StoredResult {
  std::string key;
  std::string value;                // response messages, as the server sent them
  bool has_row_description = false; // value starts with a RowDescription
  Clock::time_point expires;
};

class ResultStore {
 public:
  enum class Admit { Stored, TooLarge, Raced };

  explicit ResultStore(size_t max_bytes) : max_bytes_(max_bytes) {}

  // The entry for key if present and not expired (expired ones are dropped); marks it recently used.
  const StoredResult* find(std::string_view key, Clock::time_point now);
  // Stores (or replaces) an entry that read `reads` of `database`; evicts the least
  // recently used entries to stay within max_bytes. Raced: something it read was
  // invalidated after `since` (a seq() taken when its query started).
  Admit store(StoredResult r, const std::string& database, const std::vector<std::string>& reads, uint64_t since);
  // Drops the entries of `database` that read any of `relations`. Returns how many.
  size_t invalidate(const std::string& database, const std::vector<std::string>& relations);
  // Drops every entry of `database` ("" = of every database). Returns how many.
  size_t invalidate_all(const std::string& database);
  // Keys of the entries of database that read relation (for the L2 tier's invalidation).
  std::vector<std::string> keys_reading(const std::string& database, const std::string& relation) const;

  uint64_t seq() const { return seq_; }
  size_t bytes() const { return bytes_; }
  size_t entries() const { return by_key_.size(); }
  size_t scopes() const { return relations_.size(); }   // relation names with a scope (bounded)
  size_t max_bytes() const { return max_bytes_; }
  uint64_t evictions() const { return evictions_; }
  uint64_t expirations() const { return expirations_; }

  // What an entry costs against max_bytes: its bytes plus bookkeeping.
  static size_t charge(const StoredResult& r, size_t relations) {
    return r.key.size() + r.value.size() + 160 + 48 * relations;
  }

 private:
  struct Entry;
  struct Scope {             // a database, or one relation of a database
    uint64_t invalidated = 0;   // seq of the last invalidation that covered it
    std::unordered_set<Entry*> entries;
  };
  struct Entry {
    StoredResult r;
    size_t charge = 0;
    Scope* database = nullptr;
    std::vector<Scope*> relations;
    std::list<Entry*>::iterator lru;
  };

  Scope& database_scope(const std::string& database) { return databases_[database]; }
  Scope& relation_scope(const std::string& database, const std::string& relation) {
    return relations_[database + '\0' + relation];
  }
  void erase(Entry* e);
  static constexpr size_t kMaxScopes = 65536;   // relation scopes kept (see invalidate)

  size_t max_bytes_, bytes_ = 0;
  uint64_t seq_ = 0, evictions_ = 0, expirations_ = 0;
  uint64_t all_invalidated_ = 0;   // seq of the last invalidation of every database
  std::unordered_map<std::string_view, std::unique_ptr<Entry>> by_key_;   // keys view Entry::r.key
  std::list<Entry*> lru_;                                                 // front: most recently used
  std::unordered_map<std::string, Scope> databases_, relations_;         // relations_: database '\0' relation
};

}  // namespace cache
