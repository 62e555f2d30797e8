#include "cache/result_store.h"

namespace cache {

const StoredResult* ResultStore::find(std::string_view key, Clock::time_point now) {
  auto it = by_key_.find(key);
  if (it == by_key_.end()) return nullptr;
  Entry* e = it->second.get();
  if (e->r.expires <= now) {
    expirations_++;
    erase(e);
    return nullptr;
  }
  lru_.splice(lru_.begin(), lru_, e->lru);
  return &e->r;
}

ResultStore::Admit ResultStore::store(StoredResult r, const std::string& database,
                                      const std::vector<std::string>& reads, uint64_t since) {
  size_t cost = charge(r, reads.size());
  if (cost > max_bytes_) return Admit::TooLarge;
  Scope& db = database_scope(database);
  if (db.invalidated > since || all_invalidated_ > since) return Admit::Raced;
  std::vector<Scope*> scopes;
  scopes.reserve(reads.size());
  for (const std::string& rel : reads) {
    Scope& s = relation_scope(database, rel);
    if (s.invalidated > since) return Admit::Raced;
    scopes.push_back(&s);
  }
  if (auto old = by_key_.find(r.key); old != by_key_.end()) erase(old->second.get());
  while (bytes_ + cost > max_bytes_ && !lru_.empty()) {
    evictions_++;
    erase(lru_.back());
  }
  auto e = std::make_unique<Entry>();
  e->r = std::move(r);
  e->charge = cost;
  e->database = &db;
  e->relations = std::move(scopes);
  db.entries.insert(e.get());
  for (Scope* s : e->relations) s->entries.insert(e.get());
  lru_.push_front(e.get());
  e->lru = lru_.begin();
  bytes_ += cost;
  std::string_view key = e->r.key;
  by_key_.emplace(key, std::move(e));
  return Admit::Stored;
}

void ResultStore::erase(Entry* e) {
  e->database->entries.erase(e);
  for (Scope* s : e->relations) s->entries.erase(e);
  lru_.erase(e->lru);
  bytes_ -= e->charge;
  by_key_.erase(std::string_view(e->r.key));   // frees e
}

size_t ResultStore::invalidate(const std::string& database, const std::vector<std::string>& relations) {
  uint64_t seq = ++seq_;
  size_t dropped = 0;
  for (const std::string& rel : relations) {
    Scope& s = relation_scope(database, rel);
    s.invalidated = seq;
    while (!s.entries.empty()) {
      erase(*s.entries.begin());
      dropped++;
    }
  }
  // Names without entries are kept for their seq only (a store racing this
  // invalidation): bounded, whatever names invalidation messages bring. Past the
  // bound they go, and every store started before now counts as raced.
  if (relations_.size() > kMaxScopes) {
    std::erase_if(relations_, [](const auto& kv) { return kv.second.entries.empty(); });
    all_invalidated_ = seq;
  }
  return dropped;
}

size_t ResultStore::invalidate_all(const std::string& database) {
  uint64_t seq = ++seq_;
  size_t dropped = 0;
  for (auto& [name, db] : databases_) {
    if (!database.empty() && name != database) continue;
    db.invalidated = seq;
    while (!db.entries.empty()) {
      erase(*db.entries.begin());
      dropped++;
    }
  }
  if (database.empty()) all_invalidated_ = seq;
  else database_scope(database).invalidated = seq;   // also one not seen yet
  return dropped;
}

std::vector<std::string> ResultStore::keys_reading(const std::string& database, const std::string& relation) const {
  std::vector<std::string> keys;
  auto it = relations_.find(database + '\0' + relation);
  if (it == relations_.end()) return keys;
  for (const Entry* e : it->second.entries) keys.push_back(e->r.key);
  return keys;
}

}  // namespace cache
