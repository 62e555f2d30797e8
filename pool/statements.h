// The plan cache's data: statements shared by every client that prepares the same
// text, and per server connection, which of them are prepared there (an LRU).
//
// A client's named statement maps to one shared Statement, identified by the bytes
// of its Parse message after the name (query text, parameter count and type OIDs).
// Its server-side name is assigned once ("pgsidecar_<id>"), so equal text never gets
// two names and different text never shares one, whatever the hash does.
#pragma once
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace pool {

class Pool;

struct Statement {
  std::string name;        // server-side name
  std::string parse_tail;  // Parse body after the name: query\0, int16 count, OIDs
  bool changes_schema = false;   // DDL: running it moves the schema version on
  // Running it changes the session beyond the transaction (SET, set_config(), temp
  // objects ...), or its text has a backslash, which a client with
  // standard_conforming_strings off reads otherwise: the server is reset after its client.
  bool session_effects = false, backslash = false;
  uint8_t pins = 0;              // kinds of session state running it leaves (conf::kPin* bits; proxy/pinning.h)
  bool may_clear_state = false;  // running it may remove session state (DROP, DEALLOCATE, unlock ...)

  // Pools in which a server accepted this Parse: a client there may be told
  // ParseComplete without a server (see ClientSession::answer_parse_locally).
  bool accepted_in(const Pool* p) const {
    for (const Pool* q : accepted_) if (q == p) return true;
    return false;
  }
  void mark_accepted(const Pool* p) const {
    if (!accepted_in(p)) accepted_.push_back(p);
  }

 private:
  mutable std::vector<const Pool*> accepted_;
};
using StatementPtr = std::shared_ptr<const Statement>;

// One client's names for shared statements. The map is made at the first name:
// a client that never names a statement holds one null pointer.
class ClientStatements {
 public:
  const StatementPtr* find(std::string_view name) const {
    if (!map_) return nullptr;
    auto it = map_->find(name);
    return it == map_->end() ? nullptr : &it->second;
  }
  size_t size() const { return map_ ? map_->size() : 0; }
  void add(std::string_view name, StatementPtr st) {
    if (!map_) map_ = std::make_unique<Map>();
    map_->emplace(std::string(name), std::move(st));
  }
  // Removes the name; its statement, or null if there was none.
  StatementPtr take(std::string_view name) {
    if (!map_) return nullptr;
    auto it = map_->find(name);
    if (it == map_->end()) return nullptr;
    StatementPtr st = std::move(it->second);
    map_->erase(it);
    return st;
  }
  void clear() { map_.reset(); }

 private:
  struct NameHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using Map = std::unordered_map<std::string, StatementPtr, NameHash, std::equal_to<>>;
  std::unique_ptr<Map> map_;
};

// Counters for the metrics module: what the plan cache did, since start.
struct StatementStats {
  uint64_t prepares = 0;     // Parse messages sent to servers for shared statements
  uint64_t hits = 0;         // a client's statement was already prepared on its server
  uint64_t misses = 0;       // it was not (prepared first, transparently)
  uint64_t evictions = 0;    // closed on a server to stay within max_prepared_statements
  uint64_t reprepares = 0;   // prepared again because the schema version moved on
};

class StatementRegistry {
 public:
  // The shared statement for these Parse bytes, created on first sight.
  StatementPtr intern(std::string_view parse_tail, bool changes_schema, bool session_effects = false,
                      uint8_t pins = 0, bool may_clear_state = false);
  // The shared statement for these bytes if there is one.
  StatementPtr find(std::string_view parse_tail) const {
    auto it = by_tail_.find(parse_tail);
    return it == by_tail_.end() ? nullptr : it->second;
  }
  // Forgets statements that no client or server refers to any more.
  void sweep();
  size_t size() const { return by_tail_.size(); }
  StatementStats& stats() { return stats_; }

 private:
  std::unordered_map<std::string_view, StatementPtr> by_tail_;   // keys view Statement::parse_tail
  uint64_t next_id_ = 1;
  StatementStats stats_;
};

// Statements prepared on one server connection, least recently used first out.
class ServerStatements {
 public:
  enum class Lookup { Hit, Miss, Stale };   // schema version 0 is always stale

  // Hit marks st most recently used; Stale means it was prepared under an older
  // schema version and must be closed and prepared again.
  Lookup find(const Statement* st, uint64_t schema_version);
  // Records st as prepared under schema_version. Returns the statement evicted to
  // stay within capacity (at least 1; the caller closes it on the server), or null.
  StatementPtr add(StatementPtr st, uint64_t schema_version, size_t capacity);
  void remove(const Statement* st);
  void clear();
  // Whether or not the server still has them, they are to be closed and prepared
  // again before use (a Close of a statement that does not exist is no error).
  void invalidate(const Statement* st);
  void invalidate_all();
  size_t size() const { return index_.size(); }

 private:
  struct Entry {
    StatementPtr stmt;
    uint64_t schema_version;
  };
  std::list<Entry> lru_;   // front: most recently used
  std::unordered_map<const Statement*, std::list<Entry>::iterator> index_;
};

}  // namespace pool
