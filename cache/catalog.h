// What the result cache must know of a database beyond the statement text, read
// from its catalog over the control connection (kCatalogQuery), once per schema
// version:
//  - volatile functions (pg_proc.provolatile = 'v'), and which of them are not
//    built in (those may write, or change the session);
//  - sequences: reading one is never cached (nextval() moves it, even the
//    implicit one of a serial column); nor are pg_catalog's views (initdb records
//    no dependencies for them, and many show per-session or runtime state:
//    pg_prepared_statements, pg_cursors, pg_settings, pg_locks ...);
//  - what each view's rules and each table's row-level security policies reach
//    (pg_depend of pg_rewrite and pg_policy): the relations and functions a
//    statement runs without naming them;
//  - inheritance and partition trees (pg_inherits): a write to one member may
//    change what a read of another returns;
//  - login defaults (pg_db_role_setting: ALTER ROLE/DATABASE ... SET) in this
//    database: a new session starts with them, so they are part of the key.
// Names are unqualified, as the classifier reports them; two relations of one
// name in different schemas share their entries (more invalidation, never less).
#pragma once
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace cache {

// Rows of (kind, name, other): 'v' volatile function, other "true" when built in;
// 'S' a relation never cached (a sequence, a view of pg_catalog); 'r' a relation reaches relation `other`; 'f' a relation reaches
// function `other`; 'i' relation `name` inherits from `other`; 'd' / 'D' the
// settings (setconfig) of role `name` ("" = every role) in this database / in every database.
extern const char* const kCatalogQuery;

class Catalog {
 public:
  using Row = std::vector<std::optional<std::string>>;
  // Replaces everything with what these rows say.
  void load(const std::vector<Row>& rows);

  bool volatile_function(const std::string& f) const { return volatile_.count(f) > 0; }
  // Volatile and not built in: may write anything or change the session.
  bool user_volatile_function(const std::string& f) const { return user_volatile_.count(f) > 0; }
  // Reading it is never cached: a sequence, or it reaches (through views and
  // policies, at any depth) a sequence, a volatile function or one the classifier denies.
  bool blocked(const std::string& relation) const { return blocked_.count(relation) > 0; }
  // Adds to `relations` what they reach (views' and policies' relations, at any
  // depth) and, with `family`, every member of their inheritance trees.
  void expand(std::vector<std::string>& relations, bool family) const;
  // What a new session of role starts with in this database (ALTER ROLE/DATABASE
  // ... SET), appended to a cache key.
  void append_defaults(const std::string& role, std::string& key) const;
  bool same_defaults(const Catalog& o) const { return defaults_ == o.defaults_; }

 private:
  struct Defaults {
    std::string in_database, everywhere;   // setconfig as text ("{a=1,b=2}"), "" if none
    bool operator==(const Defaults&) const = default;
  };
  std::map<std::string, Defaults> defaults_;   // by role name; "" = every role
  std::unordered_set<std::string> volatile_, user_volatile_, blocked_;
  std::unordered_map<std::string, std::vector<std::string>> reaches_;   // direct edges only
  std::unordered_map<std::string, size_t> tree_of_;                     // relation -> index into trees_
  std::vector<std::vector<std::string>> trees_;
};

}  // namespace cache
