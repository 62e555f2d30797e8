#include "cache/catalog.h"

#include <algorithm>

#include "cache/classify.h"

namespace cache {

const char* const kCatalogQuery =
    "SELECT 'v', p.proname, (p.pronamespace = 'pg_catalog'::regnamespace)::text "
    "  FROM pg_proc p WHERE p.provolatile = 'v' "
    "UNION ALL "
    "SELECT 'S', c.relname, NULL FROM pg_class c WHERE c.relkind = 'S' "
    "UNION ALL "
    "SELECT DISTINCT CASE WHEN d.refclassid = 'pg_class'::regclass THEN 'r' ELSE 'f' END, src.relname, "
    "       COALESCE(rc.relname, rp.proname) "
    "  FROM (SELECT 'pg_rewrite'::regclass AS classid, r.oid, c.relname, c.oid AS reloid "
    "          FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class "
    "        UNION ALL "
    "        SELECT 'pg_policy'::regclass, po.oid, c.relname, c.oid "
    "          FROM pg_policy po JOIN pg_class c ON c.oid = po.polrelid) src "
    "  JOIN pg_depend d ON d.classid = src.classid AND d.objid = src.oid AND d.deptype = 'n' "
    "  LEFT JOIN pg_class rc ON d.refclassid = 'pg_class'::regclass AND rc.oid = d.refobjid "
    "  LEFT JOIN pg_proc rp ON d.refclassid = 'pg_proc'::regclass AND rp.oid = d.refobjid "
    " WHERE (rc.oid IS NOT NULL AND rc.oid <> src.reloid) OR rp.oid IS NOT NULL "
    "UNION ALL "
    "SELECT 'i', c.relname, p.relname FROM pg_inherits i "
    "  JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent";

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

}  // namespace cache
