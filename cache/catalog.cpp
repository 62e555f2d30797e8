#include "cache/catalog.h"

#include <algorithm>

#include "cache/classify.h"

namespace cache {

namespace {
const std::string kEveryRole;   // pg_db_role_setting.setrole 0
}

// What views' rules and RLS policies reach is read from their node trees
// (pg_rewrite.ev_action, pg_policy.polqual/polwithcheck): pg_depend records no
// dependency on pinned objects, so built-in functions and system catalogs would
// be missing there. A tree reading the clock through CURRENT_DATE, CURRENT_TIMESTAMP,
// LOCALTIME ... (SQLValueFunction ops 0-8; the user and schema ones are fine, the
// role is in the key) or an identity's nextval (NextValueExpr) is never cached.
const char* const kCatalogQuery =
    "WITH src AS ("
    "  SELECT ev_class AS rel, ev_action::text AS tree FROM pg_rewrite"
    "  UNION ALL"
    "  SELECT polrelid, coalesce(polqual::text, '') || ' ' || coalesce(polwithcheck::text, '') FROM pg_policy) "
    "SELECT 'v', p.proname, (p.pronamespace = 'pg_catalog'::regnamespace)::text "
    "  FROM pg_proc p WHERE p.provolatile = 'v' "
    "UNION ALL "
    "SELECT 'S', c.relname, NULL FROM pg_class c "
    " WHERE c.relkind IN ('S', 'f') OR (c.relkind = 'v' AND c.relnamespace = 'pg_catalog'::regnamespace) "
    "UNION ALL "
    "SELECT DISTINCT 'S', c.relname, NULL FROM src JOIN pg_class c ON c.oid = src.rel "
    " WHERE src.tree ~ '\\{SQLVALUEFUNCTION :op [0-8] ' OR src.tree LIKE '%{NEXTVALUEEXPR %' "
    "UNION ALL "
    "SELECT DISTINCT 'f', c.relname, p.proname FROM src JOIN pg_class c ON c.oid = src.rel "
    "  CROSS JOIN LATERAL regexp_matches(src.tree, ':(?:op)?funcid (\\d+)', 'g') m "
    "  JOIN pg_proc p ON p.oid = m[1]::oid "
    "UNION ALL "
    "SELECT DISTINCT 'r', c.relname, r.relname FROM src JOIN pg_class c ON c.oid = src.rel "
    "  CROSS JOIN LATERAL regexp_matches(src.tree, ':relid (\\d+)', 'g') m "
    "  JOIN pg_class r ON r.oid = m[1]::oid AND r.oid <> src.rel "
    "UNION ALL "
    "SELECT 'i', c.relname, p.relname FROM pg_inherits i "
    "  JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
    "UNION ALL "
    "SELECT CASE WHEN s.setdatabase = 0 THEN 'D' ELSE 'd' END, coalesce(r.rolname, ''), s.setconfig::text "
    "  FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole "
    " WHERE s.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))";

void Catalog::load(const std::vector<Row>& rows) {
  *this = Catalog();
  std::vector<std::pair<const std::string*, const std::string*>> reached_functions;
  std::unordered_map<std::string, std::string> parent;   // union-find over inheritance pairs
  auto root = [&parent](std::string name) {
    for (size_t hops = 0; hops <= parent.size(); hops++) {   // bounded: a cycle cannot loop
      auto it = parent.find(name);
      if (it == parent.end() || it->second == name) break;
      name = it->second;
    }
    return name;
  };
  for (const Row& row : rows) {
    if (row.size() < 3 || !row[0] || row[0]->size() != 1 || !row[1]) continue;
    const std::string& name = *row[1];
    const std::string* other = row[2] ? &*row[2] : nullptr;
    switch ((*row[0])[0]) {
      case 'v':
        volatile_.insert(name);
        if (!other || *other != "true") user_volatile_.insert(name);
        break;
      case 'S': blocked_.insert(name); break;
      case 'r':
        if (other) reaches_[name].push_back(*other);
        break;
      case 'f':
        if (other) reached_functions.emplace_back(&name, other);
        break;
      case 'i':
        if (other) {
          std::string a = root(name), b = root(*other);
          if (a != b) parent[a] = b;
          parent.try_emplace(name, name);
          parent.try_emplace(*other, *other);
        }
        break;
      case 'd':
      case 'D':
        if (other) ((*row[0])[0] == 'd' ? defaults_[name].in_database : defaults_[name].everywhere) = *other;
        break;
      default: break;
    }
  }
  for (auto [relation, function] : reached_functions)
    if (volatile_.count(*function) || denied_function(*function)) blocked_.insert(*relation);
  // A relation that reaches a blocked one is blocked: spread along the edges until
  // nothing changes (each round blocks at least one more, so at most one per relation).
  for (bool changed = true; changed;) {
    changed = false;
    for (const auto& [relation, reached] : reaches_) {
      if (blocked_.count(relation)) continue;
      for (const std::string& r : reached) {
        if (!blocked_.count(r)) continue;
        blocked_.insert(relation);
        changed = true;
        break;
      }
    }
  }
  std::unordered_map<std::string, size_t> tree_index;
  for (const auto& [name, up] : parent) {
    auto [it, added] = tree_index.try_emplace(root(name), trees_.size());
    if (added) trees_.emplace_back();
    trees_[it->second].push_back(name);
    tree_of_[name] = it->second;
  }
}

void Catalog::expand(std::vector<std::string>& relations, bool family) const {
  auto leads_on = [&](const std::string& r) { return reaches_.count(r) || (family && tree_of_.count(r)); };
  if (std::none_of(relations.begin(), relations.end(), leads_on)) return;   // the usual case: nothing to add
  std::unordered_set<std::string> seen(relations.begin(), relations.end());
  auto add = [&](const std::string& r) {
    if (seen.insert(r).second) relations.push_back(r);
  };
  for (size_t i = 0; i < relations.size(); i++) {   // grows as it goes; each name once
    const std::string name = relations[i];
    if (auto it = reaches_.find(name); it != reaches_.end())
      for (const std::string& r : it->second) add(r);
    if (!family) continue;
    if (auto it = tree_of_.find(name); it != tree_of_.end())
      for (const std::string& r : trees_[it->second]) add(r);
  }
}

void Catalog::append_defaults(const std::string& role, std::string& key) const {
  for (const std::string* r : {&kEveryRole, &role}) {
    auto it = defaults_.find(*r);
    if (it == defaults_.end()) {
      key.append(2, '\0');
      continue;
    }
    key.append(it->second.in_database).push_back('\0');
    key.append(it->second.everywhere).push_back('\0');
  }
}

}  // namespace cache
