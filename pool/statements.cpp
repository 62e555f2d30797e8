#include "pool/statements.h"

#include <algorithm>

namespace pool {

StatementPtr StatementRegistry::intern(std::string_view parse_tail, bool changes_schema, bool session_effects,
                                       uint8_t pins, bool may_clear_state) {
  if (auto it = by_tail_.find(parse_tail); it != by_tail_.end()) return it->second;
  auto st = std::make_shared<Statement>();
  st->name = "pgsidecar_" + std::to_string(next_id_++);
  st->parse_tail = parse_tail;
  st->changes_schema = changes_schema;
  st->session_effects = session_effects;
  st->pins = pins;
  st->may_clear_state = may_clear_state;
  st->backslash = parse_tail.substr(0, parse_tail.find('\0')).find('\\') != std::string_view::npos;
  by_tail_.emplace(st->parse_tail, st);
  return st;
}

void StatementRegistry::sweep() {
  for (auto it = by_tail_.begin(); it != by_tail_.end();) {
    if (it->second.use_count() == 1) it = by_tail_.erase(it);
    else ++it;
  }
}

ServerStatements::Lookup ServerStatements::find(const Statement* st, uint64_t schema_version) {
  auto it = index_.find(st);
  if (it == index_.end()) return Lookup::Miss;
  if (it->second->schema_version != schema_version) return Lookup::Stale;
  lru_.splice(lru_.begin(), lru_, it->second);
  return Lookup::Hit;
}

StatementPtr ServerStatements::add(StatementPtr st, uint64_t schema_version, size_t capacity) {
  if (auto it = index_.find(st.get()); it != index_.end()) {
    it->second->schema_version = schema_version;
    lru_.splice(lru_.begin(), lru_, it->second);
    return nullptr;
  }
  const Statement* key = st.get();
  lru_.push_front(Entry{std::move(st), schema_version});
  index_.emplace(key, lru_.begin());
  if (index_.size() <= std::max<size_t>(capacity, 1)) return nullptr;
  StatementPtr evicted = std::move(lru_.back().stmt);
  index_.erase(evicted.get());
  lru_.pop_back();
  return evicted;
}

void ServerStatements::remove(const Statement* st) {
  auto it = index_.find(st);
  if (it == index_.end()) return;
  lru_.erase(it->second);
  index_.erase(it);
}

void ServerStatements::invalidate(const Statement* st) {
  if (auto it = index_.find(st); it != index_.end()) it->second->schema_version = 0;
}

void ServerStatements::invalidate_all() {
  for (Entry& e : lru_) e.schema_version = 0;
}

void ServerStatements::clear() {
  lru_.clear();
  index_.clear();
}

}  // namespace pool
