// Statement classification for the result cache (see classify.h).
//
// libpg-query parses the text into PostgreSQL's raw parse tree as JSON; one
// generic walk over that tree collects what matters, whatever node holds it:
// relations (wrapped {"RangeVar":...}, or the bare `relation` of
// INSERT/UPDATE/DELETE/MERGE/COPY/REFRESH), function calls, SQLValueFunctions,
// locking clauses, string constants, CTE names and nested data-modifying
// statements.
//
// Rules:
// - Kind of a statement: SELECT/VALUES/TABLE, SHOW, EXPLAIN without ANALYZE,
//   COPY ... TO -> Read; SELECT INTO and Create*/Alter*/Drop*/Rename*, GRANT,
//   COMMENT, CREATE INDEX/VIEW/RULE ... -> Ddl; DO, CALL, EXECUTE -> Write with
//   writes_unknown; anything else (BEGIN, SET, LISTEN, VACUUM, LOCK, PREPARE ...)
//   -> Other. Any INSERT/UPDATE/DELETE/MERGE/TRUNCATE/COPY FROM/REFRESH that runs
//   makes it a Write of its target, and so do VACUUM FULL, CLUSTER and REINDEX
//   TABLE, which move rows (without a table: writes_unknown), also inside a CTE or COPY (...) TO; under
//   PREPARE or EXPLAIN without ANALYZE it does not run, so its target only
//   counts as read. EXPLAIN ANALYZE has the kind of the statement it runs.
//   Several statements: the strongest kind (Ddl > Write > Read > Other); no
//   statement at all (empty text, only comments) -> Other.
// - reads: relation names outside write targets, minus references to the
//   statement's own CTEs (an unqualified name, in the scope of its WITH).
//   reads/writes/functions are unqualified names, sorted and unique.
// - cacheable: exactly one statement, a SELECT, no INTO, no data-modifying CTE,
//   no FOR UPDATE/SHARE, no time/session function (kDenied, the time
//   SQLValueFunctions, string constants with 'now'/'today'/... in them), no temporary relation and
//   no catalog. "reads a catalog" is checked last, so that reason means nothing
//   else is in the way (the caller may allow catalogs).
// - Hints: comments opening with "pgsidecar:", found in the raw text since the
//   parser drops comments (a hint inside a string literal is taken too).
#include "cache/classify.h"

#include <pg_query.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <limits>
#include <nlohmann/json.hpp>

namespace cache {
namespace {

using json = nlohmann::json;
using Kind = Classification::Kind;

// Functions whose result depends on the time, the session or chance, or that
// act on the server (sequences, locks, notifications). The caller rejects the
// volatile ones from pg_proc, but some of these are only stable (now(),
// current_setting(), txid_current() ...) and the others must never be cached
// whatever the catalog says. A trailing '*' matches a prefix.
constexpr std::string_view kDenied[] = {
    "now", "statement_timestamp", "transaction_timestamp", "clock_timestamp", "timeofday",
    "age",   // age(timestamp) counts from today
    "random", "random_normal", "setseed", "gen_random_uuid", "uuid_generate_v*",
    "nextval", "currval", "lastval", "setval",
    "txid_current*", "pg_current_xact_id*", "pg_current_snapshot",
    "pg_backend_pid", "pg_is_in_recovery", "pg_postmaster_start_time", "pg_conf_load_time",
    "pg_trigger_depth", "pg_my_temp_schema", "pg_is_other_temp_schema", "mxid_age",
    // what this session holds, set or is told (stable in pg_proc, yet per session)
    "pg_listening_channels", "pg_prepared_statement", "pg_cursor", "pg_notification_queue_usage",
    "pg_show_all_settings", "pg_event_trigger_*", "pg_stat_*",
    "inet_client_addr", "inet_client_port", "inet_server_addr", "inet_server_port",
    "current_setting", "set_config",
    "pg_sleep*", "pg_advisory*", "pg_try_advisory*", "pg_notify",
};

}  // namespace

bool denied_function(std::string_view f) {
  return std::any_of(std::begin(kDenied), std::end(kDenied), [f](std::string_view d) {
    return d.ends_with('*') ? f.starts_with(d.substr(0, d.size() - 1)) : f == d;
  });
}

namespace {

// Built-in functions whose effect outlives the transaction: session-level
// advisory locks and session-level settings. (set_config() with is_local true
// would not, but the third argument may be any expression.)
constexpr std::string_view kSessionFunctions[] = {
    "set_config", "pg_advisory_lock", "pg_advisory_lock_shared", "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared", "dblink_connect", "dblink_connect_u",
};

bool session_function(std::string_view f) {
  return std::find(std::begin(kSessionFunctions), std::end(kSessionFunctions), f) != std::end(kSessionFunctions);
}

bool local_setting(const nlohmann::json& set_config_call);   // below: set_config(name, value, true)

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char ch) { return std::tolower(ch); });
  return s;
}

}  // namespace

// String constants that PostgreSQL turns into the current date or time when
// cast: '2024-01-01'::date is fine; 'today'::date, '  Now '::timestamptz and
// 'tomorrow 10:00'::timestamp are not. PostgreSQL's date/time input splits the
// text into fields of letters, digits and punctuation; any letter field that is
// one of its relative words makes the value depend on the clock.

bool time_literal(std::string_view s) {
  constexpr std::string_view kRelative[] = {"now", "today", "tomorrow", "yesterday"};
  for (size_t i = 0; i < s.size();) {
    if (!std::isalpha(uint8_t(s[i]))) {
      i++;
      continue;
    }
    size_t start = i;
    while (i < s.size() && std::isalpha(uint8_t(s[i]))) i++;
    if (i - start > 9) continue;
    std::string word = lower(std::string(s.substr(start, i - start)));
    if (std::find(std::begin(kRelative), std::end(kRelative), word) != std::end(kRelative)) return true;
  }
  return false;
}

bool clock_word_in_string(std::string_view sql) {
  for (size_t i = sql.find('\''); i != std::string_view::npos; i = sql.find('\'', i)) {
    size_t end = i + 1;
    while (end < sql.size() && (sql[end] != '\'' || (end + 1 < sql.size() && sql[end + 1] == '\'')))
      end += sql[end] == '\'' ? 2 : 1;
    if (time_literal(sql.substr(i + 1, end - i - 1))) return true;
    i = end + 1;
    if (i >= sql.size()) break;
  }
  return false;
}

namespace {

const json kNull;

// Types whose input turns 'now', 'today' ... into the clock.
bool time_type(std::string_view t) {
  return t == "date" || t == "timestamp" || t == "timestamptz" || t == "time" || t == "timetz";
}

// obj[key], or null when obj is not an object or has no such key (never throws).
const json& field(const json& obj, const char* key) {
  auto it = obj.find(key);   // end() for non-objects
  return it == obj.end() ? kNull : *it;
}

const std::string* str(const json& v) { return v.get_ptr<const std::string*>(); }

// The text of a {"String":{"sval":...}} node.
const std::string* sval(const json& node) { return str(field(field(node, "String"), "sval")); }

// Every argument a constant or a parameter (whose value the caller reads).
bool constant_args(const json& args) {
  if (!args.is_array()) return true;
  for (const json& a : args)
    if (field(a, "A_Const").is_null() && field(a, "ParamRef").is_null()) return false;
  return true;
}

// set_config(name, value, is_local) with is_local a constant true ('t', 'on' ...):
// the setting ends with the transaction. Any other third argument may be false.
bool local_setting(const json& call) {
  const json& args = field(call, "args");
  if (!args.is_array() || args.size() != 3) return false;
  const json& c = field(args[2], "A_Const");
  if (const json& b = field(c, "boolval"); b.is_object()) return field(b, "boolval") == true;
  const std::string* sv = str(field(field(c, "sval"), "sval"));
  if (!sv) return false;
  std::string v = *sv;
  std::transform(v.begin(), v.end(), v.begin(), [](unsigned char ch) { return std::tolower(ch); });
  return v == "t" || v == "true" || v == "on" || v == "yes" || v == "y" || v == "1";
}

int rank(Kind k) {
  switch (k) {
    case Kind::Ddl: return 3;
    case Kind::Write: return 2;
    case Kind::Read: return 1;
    default: return 0;
  }
}

struct Walker {
  std::string_view sql;                  // the text parsed (node locations are byte offsets into it)
  bool executes = true;                  // false where DML does not run (PREPARE, plain EXPLAIN)
  std::vector<std::string_view> ctes;    // CTE names in scope
  std::vector<std::string> reads, writes, functions;
  int dml = 0;                           // data-modifying statements that run
  bool locking = false, temp = false, catalogs = false;
  bool rewrites_all = false;             // CLUSTER / VACUUM FULL / REINDEX without a relation
  bool settings = false;                 // SET (not LOCAL, not TRANSACTION), RESET or DISCARD
  std::string time_reason;               // first time/session dependency seen
  // Of the statement being walked (reset per statement):
  bool temp_object = false;              // names a temporary relation (creates or uses one)
  std::string session_call;              // first call of a function that changes the session
  bool unlocks = false;                  // calls pg_advisory_unlock*()

  // Depth-first over the tree with a heap stack rather than recursion: the
  // tree can be tens of thousands of levels deep (see classify_statement).
  struct Step {
    const json* node = nullptr;          // walk this node, or else
    const std::string* cte = nullptr;    // bring this CTE name into scope, or else
    size_t scope = 0;                    // leave the scope of a WITH
  };
  std::vector<Step> todo;

  void walk(const json& root) {
    todo.push_back({&root});
    while (!todo.empty()) {
      const Step step = todo.back();
      todo.pop_back();
      if (step.cte) {
        ctes.push_back(*step.cte);
      } else if (!step.node) {
        ctes.resize(step.scope);
      } else if (step.node->is_array()) {
        for (const json& e : *step.node) todo.push_back({&e});
      } else if (step.node->is_object()) {
        const json& v = *step.node;
        const json& with = field(v, "withClause");
        if (!with.is_null()) todo.push_back({nullptr, nullptr, ctes.size()});   // runs after the body
        for (auto it = v.begin(); it != v.end(); ++it)
          if (it.key() != "withClause" && note(it.key(), it.value())) todo.push_back({&it.value()});
        if (!with.is_null()) enter_with(with);   // runs before the body
      }
    }
  }

  // A CTE name hides a table of that name in the body of its statement and, with
  // RECURSIVE, in all its CTEs; otherwise only in the CTEs that follow it (WITH
  // t AS (SELECT * FROM t) reads the table t).
  void enter_with(const json& with) {
    const json& list = field(with, "ctes");
    if (!list.is_array()) return;
    const bool recursive = field(with, "recursive") == true;
    for (auto it = list.rbegin(); it != list.rend(); ++it) {   // a stack: last pushed, first walked
      const std::string* name = str(field(field(*it, "CommonTableExpr"), "ctename"));
      if (name && recursive) ctes.push_back(*name);
      if (name && !recursive) todo.push_back({nullptr, name});
      todo.push_back({&*it});
    }
  }

  // Records what node `key` says; false when its children need no walk.
  bool note(const std::string& key, const json& v) {
    if (key == "relpersistence") {   // of a RangeVar, wrapped or bare (CREATE TEMP TABLE ...)
      if (v == "t") temp_object = true;
      return false;
    }
    if (key == "schemaname") {
      if (const std::string* schema = str(v); schema && schema->starts_with("pg_temp")) temp_object = true;
      return false;
    }
    // A qualified name list (funcname, typeName.names, DefineStmt defnames ...) in pg_temp.
    if (v.is_array() && !v.empty())
      if (const std::string* first = sval(v.front()); first && first->starts_with("pg_temp")) temp_object = true;
    if (key.empty() || key[0] < 'A' || key[0] > 'Z') return true;   // a field, not a node type
    if (key == "RangeVar") {
      relation(v, false);
    } else if (key == "InsertStmt" || key == "UpdateStmt" || key == "DeleteStmt" || key == "MergeStmt" ||
               key == "RefreshMatViewStmt") {
      relation(field(v, "relation"), executes);   // a bare RangeVar
    } else if (key == "CopyStmt") {
      relation(field(v, "relation"), executes && field(v, "is_from") == true);
    } else if (key == "ClusterStmt") {
      rewrites(field(v, "relation"));   // rows move (ctid, order)
    } else if (key == "ReindexStmt") {
      if (str(field(field(v, "relation"), "relname"))) rewrites(field(v, "relation"));
    } else if (key == "VacuumStmt") {
      if (vacuum_full(v))
        for (const json& r : field(v, "rels")) rewrites(field(field(r, "VacuumRelation"), "relation"));
      if (vacuum_full(v) && field(v, "rels").empty()) rewrites(kNull);
    } else if (key == "TruncateStmt") {
      for (const json& r : field(v, "relations")) relation(field(r, "RangeVar"), executes);
      return false;
    } else if (key == "FuncCall") {
      const json& names = field(v, "funcname");   // [schema,] name
      if (const std::string* f = names.is_array() && !names.empty() ? sval(names.back()) : nullptr) {
        functions.push_back(*f);
        if (time_reason.empty() && denied_function(*f)) time_reason = "calls " + *f + "()";
        if (time_reason.empty() && time_type(*f) && !constant_args(field(v, "args")))   // date(x): a cast too
          time_reason = "casts an expression to " + *f;
        if (session_call.empty() && session_function(*f) && !(*f == "set_config" && local_setting(v)))
          session_call = *f + "()";
        if (f->starts_with("pg_advisory_unlock")) unlocks = true;
      }
    } else if (key == "SQLValueFunction") {
      // SVFOP_CURRENT_DATE, SVFOP_LOCALTIMESTAMP_N ...; the user, role, catalog
      // and schema ones are fine since the role is part of the cache key.
      const std::string* op = str(field(v, "op"));
      if (op && time_reason.empty() && (op->find("TIME") != std::string::npos || op->find("DATE") != std::string::npos)) {
        std::string_view name(*op);
        if (name.starts_with("SVFOP_")) name.remove_prefix(6);
        if (name.ends_with("_N")) name.remove_suffix(2);
        time_reason = "uses " + std::string(name);
      }
    } else if (key == "TypeCast") {
      // 'now' may come out of an expression or a column as well as a literal:
      // ('n' || 'ow')::timestamptz, text_col::date. Constants and parameters are read.
      const json& names = field(field(v, "typeName"), "names");
      const std::string* type = names.is_array() && !names.empty() ? sval(names.back()) : nullptr;
      const json& arg = field(v, "arg");
      if (type && time_type(*type) && time_reason.empty() && field(arg, "A_Const").is_null() &&
          field(arg, "ParamRef").is_null())
        time_reason = "casts an expression to " + *type;
    } else if (key == "RangeTableSample") {   // a random sample, unless REPEATABLE (seed)
      if (field(v, "repeatable").is_null() && time_reason.empty()) time_reason = "TABLESAMPLE without REPEATABLE";
    } else if (key == "LockingClause") {
      locking = true;
    } else if (key == "A_Const") {
      const std::string* s = str(field(field(v, "sval"), "sval"));
      if (s && time_reason.empty() && time_literal(*s)) time_reason = "uses '" + s->substr(0, 40) + "'";
    }
    return true;
  }

  // CLUSTER, REINDEX, VACUUM FULL of one relation, or (none named) of many.
  void rewrites(const json& rv) {
    if (str(field(rv, "relname"))) relation(rv, executes);
    else if (executes) rewrites_all = true;
  }
  static bool vacuum_full(const json& vacuum);   // below

  void relation(const json& rv, bool write) {
    const std::string* name = str(field(rv, "relname"));
    if (!name) return;
    const std::string* schema = str(field(rv, "schemaname"));
    if (write) {
      ++dml;
      writes.push_back(*name);
      return;
    }
    if (!schema && std::find(ctes.begin(), ctes.end(), *name) != ctes.end()) return;   // a CTE
    reads.push_back(*name);
    const std::string* persistence = str(field(rv, "relpersistence"));
    if ((persistence && *persistence == "t") || (schema && schema->starts_with("pg_temp")))
      temp = true;
    else if (schema ? schema->starts_with("pg_") || *schema == "information_schema" : name->starts_with("pg_"))
      catalogs = true;
  }
};

bool is_ddl(std::string_view type) {
  constexpr std::string_view kPrefixes[] = {"Create", "Alter", "Drop", "Rename"};
  constexpr std::string_view kOthers[] = {"CommentStmt", "GrantStmt", "GrantRoleStmt", "IndexStmt", "ViewStmt",
                                          "SecLabelStmt", "DefineStmt", "CompositeTypeStmt", "RuleStmt",
                                          "ImportForeignSchemaStmt", "ReassignOwnedStmt"};
  return std::any_of(std::begin(kPrefixes), std::end(kPrefixes), [type](auto p) { return type.starts_with(p); }) ||
         std::find(std::begin(kOthers), std::end(kOthers), type) != std::end(kOthers);
}

// A boolean option (EXPLAIN's ANALYZE, VACUUM's FULL ...) given as `name`, true/on/1 ...
// Anything but a clear false counts as on: taking a write for a read would leave the cache stale.
bool option_on(const json& options, std::string_view name) {
  for (const json& opt : options) {
    const json& def = field(opt, "DefElem");
    if (field(def, "defname") != name) continue;
    const json& arg = field(def, "arg");
    // A number is on: 0 is left out of the tree, so it looks like the 0 a shape
    // masks every number to (statement_cache.h), and either may stand for 1.
    if (const json& i = field(arg, "Integer"); i.is_object()) return true;
    const std::string* s = sval(arg);
    if (!s) return true;
    std::string v(*s);
    std::transform(v.begin(), v.end(), v.begin(), [](unsigned char ch) { return std::tolower(ch); });
    // PostgreSQL's parse_bool takes unique prefixes: f, fa ..., n, no, of, off, 0.
    const bool off = !v.empty() && (std::string_view("false").starts_with(v) || std::string_view("no").starts_with(v) ||
                                    (v.size() >= 2 && std::string_view("off").starts_with(v)) || v == "0");
    return !off;
  }
  return false;
}

bool explain_analyze(const json& explain) { return option_on(field(explain, "options"), "analyze"); }
bool Walker::vacuum_full(const json& vacuum) { return option_on(field(vacuum, "options"), "full"); }

using Effect = SessionEffect::Kind;

using Pin = SessionEffect::Pin;

SessionEffect effect(Effect kind, std::string name = {}, std::string what = {}, Pin pin = Pin::None) {
  SessionEffect e;
  e.kind = kind;
  e.pin = kind == Effect::Unknown && pin == Pin::None ? Pin::Set : pin;   // settings not followed
  e.name = std::move(name);
  e.what = std::move(what);
  return e;
}

// The value list of SET name TO ..., as SQL; empty if a value is not a plain constant.
// An integer constant whose value the tree leaves out: 0, and also (libpg-query
// 15-4.0, libpg_query#243) any negative one. It is read from the text at its
// location instead: [+-]digits, or "" when that is not what is there.
std::string integer_at(const json& a_const, std::string_view sql) {
  const json& at = field(a_const, "location");
  if (!at.is_number_integer() || at.get<int64_t>() < 0 || size_t(at.get<int64_t>()) >= sql.size()) return {};
  std::string_view rest = sql.substr(size_t(at.get<int64_t>()));
  size_t n = rest[0] == '-' || rest[0] == '+' ? 1 : 0;
  while (n < rest.size() && (rest[n] == ' ' || rest[n] == '\t' || rest[n] == '\n' || rest[n] == '\r')) n++;
  size_t digits = n;
  while (digits < rest.size() && rest[digits] >= '0' && rest[digits] <= '9') digits++;
  if (digits == n || digits - n > 18 || (digits < rest.size() && (std::isalnum(static_cast<unsigned char>(rest[digits])) ||
                                                                  rest[digits] == '.' || rest[digits] == '_')))
    return {};
  std::string out(rest[0] == '-' ? "-" : "");
  out += rest.substr(n, digits - n);
  return out;
}

std::string set_values(const json& args, std::string_view sql) {
  std::string out;
  for (const json& arg : args) {
    const json& c = field(arg, "A_Const");
    if (!c.is_object()) return {};
    if (!out.empty()) out += ", ";
    if (const std::string* sv = str(field(field(c, "sval"), "sval"))) {
      out += quote_literal(*sv);
    } else if (const json& iv = field(c, "ival"); iv.is_object()) {
      const json& n = field(iv, "ival");
      if (n.is_number_integer()) {
        out += std::to_string(n.get<int64_t>());
      } else {
        std::string v = integer_at(c, sql);
        if (v.empty()) return {};   // not followed rather than guessed
        out += v;
      }
    } else if (const std::string* fv = str(field(field(c, "fval"), "fval"))) {
      if (fv->find_first_not_of("0123456789.eE+-") != std::string::npos) return {};
      out += *fv;
    } else if (const json& bv = field(c, "boolval"); bv.is_object()) {
      out += field(bv, "boolval") == true ? "true" : "false";
    } else {
      return {};
    }
  }
  return out;
}

// SET SESSION CHARACTERISTICS AS TRANSACTION ...: the defaults it sets, one Set each.
void session_characteristics(const json& args, std::string_view sql, std::vector<SessionEffect>& out) {
  static const std::pair<std::string_view, std::string_view> kDefaults[] = {
      {"transaction_isolation", "default_transaction_isolation"},
      {"transaction_read_only", "default_transaction_read_only"},
      {"transaction_deferrable", "default_transaction_deferrable"},
  };
  for (const json& item : args) {
    const json& def = field(item, "DefElem");
    const std::string* defname = str(field(def, "defname"));
    auto it = std::find_if(std::begin(kDefaults), std::end(kDefaults), [&](auto& d) { return defname && d.first == *defname; });
    std::string value = set_values(json::array({field(def, "arg")}), sql);
    if (it == std::end(kDefaults) || value.empty()) {
      out.push_back(effect(Effect::Unknown, {}, "SET SESSION CHARACTERISTICS"));
      continue;
    }
    SessionEffect e = effect(Effect::Set, std::string(it->second));
    e.sql = "SET " + quote_ident(e.name) + " TO " + value;
    out.push_back(std::move(e));
  }
}

// SET / RESET: followed when it is a session-level change of one setting to constants.
void set_effect(const json& body, std::string_view sql, std::vector<SessionEffect>& out) {
  if (field(body, "is_local") == true) return;   // SET LOCAL ends with its transaction
  const std::string* kind = str(field(body, "kind"));
  const std::string* raw_name = str(field(body, "name"));
  std::string name = raw_name ? lower(*raw_name) : std::string();   // setting names ignore case
  if (!kind) return out.push_back(effect(Effect::Unknown, name, "SET"));
  if (*kind == "VAR_RESET_ALL") return out.push_back(effect(Effect::ResetAll));
  if (*kind == "VAR_RESET" || *kind == "VAR_SET_DEFAULT") return out.push_back(effect(Effect::Reset, name));
  if (*kind == "VAR_SET_MULTI") {   // SET TRANSACTION ... ends with it; SET SESSION CHARACTERISTICS does not
    if (name != "transaction") session_characteristics(field(body, "args"), sql, out);
    return;
  }
  std::string values = *kind == "VAR_SET_VALUE" ? set_values(field(body, "args"), sql) : std::string();
  if (values.empty() || name.empty()) return out.push_back(effect(Effect::Unknown, name, "SET " + name));
  SessionEffect e = effect(Effect::Set, name);
  e.sql = "SET " + quote_ident(name) + " TO " + values;
  out.push_back(std::move(e));
}

// What one statement leaves in the session (see SessionEffect); w holds its walk.
void session_effects(const std::string& type, const json& body, const Walker& w, Classification& c) {
  std::vector<SessionEffect>& out = c.effects;
  if (type == "VariableSetStmt") {
    set_effect(body, w.sql, out);
  } else if (type == "DiscardStmt") {
    if (field(body, "target") == "DISCARD_ALL") out.push_back(effect(Effect::DiscardAll));
  } else if (type == "DeallocateStmt") {
    const std::string* name = str(field(body, "name"));
    out.push_back(name ? effect(Effect::Deallocate, *name) : effect(Effect::DeallocateAll));
  } else if (type == "ListenStmt") {
    out.push_back(effect(Effect::Listen, {}, "LISTEN", Pin::Listen));
  } else if (type == "PrepareStmt") {
    const std::string* name = str(field(body, "name"));
    out.push_back(effect(Effect::SessionObject, name ? *name : std::string(), "PREPARE", Pin::Prepare));
  } else if (type == "DeclareCursorStmt") {
    const json& options = field(body, "options");
    constexpr int64_t kCursorOptHold = 0x20;   // CURSOR_OPT_HOLD
    if (options.is_number_integer() && (options.get<int64_t>() & kCursorOptHold))
      out.push_back(effect(Effect::SessionObject, {}, "DECLARE ... WITH HOLD", Pin::Cursor));
  } else if (type == "LoadStmt" || type == "DoStmt" || type == "CallStmt") {
    out.push_back(effect(Effect::Unknown, {}, type == "LoadStmt" ? "LOAD" : type == "DoStmt" ? "DO" : "CALL", Pin::Other));
  } else if (type == "TransactionStmt") {
    c.transaction_control = true;
  }
  if (type == "DiscardStmt" || type == "DropStmt" || type == "DeallocateStmt" || type == "ClosePortalStmt" ||
      type == "UnlistenStmt" || (type == "VariableSetStmt" && field(body, "kind") == "VAR_RESET_ALL") ||
      w.unlocks)
    c.may_clear_state = true;
  if (w.temp_object) out.push_back(effect(Effect::SessionObject, {}, "a temporary object", Pin::Temp));
  if (!w.session_call.empty()) {
    const std::string& f = w.session_call;
    Pin pin = f.starts_with("set_config") ? Pin::Set : f.find("advisory") != std::string::npos ? Pin::Advisory : Pin::Other;
    out.push_back(effect(pin == Pin::Set ? Effect::Unknown : Effect::SessionObject, {}, f, pin));
  }
}

// Kind of one statement node {"Type": {...}}, walking it into w.
Kind statement(const json& node, Walker& w, Classification& c) {
  if (!node.is_object() || node.empty()) return Kind::Other;
  const std::string& type = node.begin().key();
  const json& body = node.begin().value();
  if (type == "ExplainStmt" && explain_analyze(body)) return statement(field(body, "query"), w, c);
  bool& writes_unknown = c.writes_unknown;
  const int dml_before = w.dml;
  w.executes = type != "ExplainStmt" && type != "PrepareStmt";
  w.temp_object = false;
  w.session_call.clear();
  w.unlocks = false;
  w.walk(node);
  w.executes = true;
  session_effects(type, body, w, c);
  Kind kind = Kind::Other;
  if (type == "SelectStmt")
    kind = field(body, "intoClause").is_null() ? Kind::Read : Kind::Ddl;
  else if (type == "ExplainStmt" || type == "VariableShowStmt" || type == "CopyStmt")
    kind = Kind::Read;
  else if (type == "DoStmt" || type == "CallStmt" || type == "ExecuteStmt")
    kind = Kind::Write, writes_unknown = true;
  else if (is_ddl(type))
    kind = Kind::Ddl;
  if (type == "DiscardStmt") w.settings = true;
  if (type == "VariableSetStmt" && !field(body, "is_local").is_boolean() && field(body, "kind") != "VAR_SET_MULTI")
    w.settings = true;   // SET LOCAL and SET TRANSACTION end with their transaction
  // INSERT, UPDATE ... and DML in CTEs or COPY (...) TO were counted by the walk.
  if (w.dml > dml_before && rank(kind) < rank(Kind::Write)) kind = Kind::Write;
  return kind;
}

std::vector<std::string> sorted_unique(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

bool is_space(char ch) { return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n'; }

// A hint is a comment that opens with "pgsidecar:": /* pgsidecar:cache ttl=30s */,
// -- pgsidecar:nocache.
void scan_hints(std::string_view sql, Classification& c) {
  constexpr std::string_view kTag = "pgsidecar:";
  for (size_t at = sql.find(kTag); at != std::string_view::npos; at = sql.find(kTag, at + 1)) {
    size_t b = at;
    bool newline = false;
    for (; b > 0 && is_space(sql[b - 1]); --b) newline |= sql[b - 1] == '\n';
    const std::string_view opener = b >= 2 ? sql.substr(b - 2, 2) : std::string_view();
    if (opener != "/*" && (opener != "--" || newline)) continue;
    std::string_view rest = sql.substr(at + kTag.size());
    auto take = [&rest](auto pred) {
      size_t n = 0;
      while (n < rest.size() && pred(rest[n])) ++n;
      std::string_view taken = rest.substr(0, n);
      rest.remove_prefix(n);
      return taken;
    };
    auto blanks = [](char ch) { return ch == ' ' || ch == '\t'; };
    const std::string_view word = take([](char ch) { return ch >= 'a' && ch <= 'z'; });
    if (word == "nocache") {
      c.hint_nocache = true;
    } else if (word == "cache") {
      c.hinted = true;
      take(blanks);
      if (!rest.starts_with("ttl")) continue;
      rest.remove_prefix(3);
      take(blanks);
      if (!rest.starts_with("=")) continue;   // "ttl" without a value: no ttl
      rest.remove_prefix(1);
      take(blanks);
      c.hint_ttl_ms = parse_ttl(take([](char ch) { return !is_space(ch) && ch != '*'; }));
    }
  }
}

}  // namespace

Classification unclassified(std::string reason) {
  Classification c;
  c.kind = Kind::Write;
  c.writes_unknown = true;
  c.changes_settings = true;
  c.effects.push_back(effect(Effect::Unknown, {}, reason, Pin::Other));
  c.not_cacheable_reason = std::move(reason);
  return c;
}

namespace {

Classification classify_here(std::string_view sql, bool with_fingerprint) {
  Classification c;
  try {   // only allocation can throw here; it must not reach the event loop
    scan_hints(sql, c);
    if (sql.find('\0') != std::string_view::npos) {   // libpg-query reads a C string
      c.not_cacheable_reason = "does not parse: NUL byte in the text";
      c.effects.push_back(effect(Effect::Unknown, {}, "a NUL byte in the text", Pin::Other));
      return c;
    }
    const std::string text(sql);
    PgQueryParseResult parsed = pg_query_parse(text.c_str());
    if (parsed.error) {
      c.not_cacheable_reason = std::string("does not parse: ") + (parsed.error->message ? parsed.error->message : "?");
      c.effects.push_back(effect(Effect::Unparsed, {}, "a statement libpg-query does not parse"));
      pg_query_free_parse_result(parsed);
      return c;
    }
    json tree = json::parse(parsed.parse_tree, nullptr, false);
    if (tree.is_discarded()) {
      // Not UTF-8 (a client in LATIN1 ...): names and strings keep their bytes
      // in the JSON, which nlohmann rejects. Bytes >= 0x80 only occur inside JSON
      // strings, so masking them keeps the structure.
      std::string masked(parsed.parse_tree);
      std::replace_if(masked.begin(), masked.end(), [](unsigned char ch) { return ch >= 0x80; }, '?');
      tree = json::parse(masked, nullptr, false);
    }
    pg_query_free_parse_result(parsed);
    if (tree.is_discarded()) {
      c.not_cacheable_reason = "does not parse: unreadable parse tree";
      c.effects.push_back(effect(Effect::Unknown, {}, "an unreadable parse tree", Pin::Other));
      return c;
    }

    Walker w;
    w.sql = text;
    c.kind = Kind::Other;
    const json* only = nullptr;   // the statement node when there is one
    for (const json& s : field(tree, "stmts")) {
      const json& node = field(s, "stmt");
      const Kind k = statement(node, w, c);
      if (rank(k) > rank(c.kind)) c.kind = k;
      only = ++c.statements == 1 ? &node : nullptr;
    }
    if (w.rewrites_all) c.kind = Kind::Write, c.writes_unknown = true;
    c.reads = sorted_unique(std::move(w.reads));
    c.writes = sorted_unique(std::move(w.writes));
    c.functions = sorted_unique(std::move(w.functions));
    c.catalogs = w.catalogs;
    c.changes_settings = w.settings;

    const json& select = only ? field(*only, "SelectStmt") : kNull;
    std::string& why = c.not_cacheable_reason;
    if (c.statements != 1) why = c.statements ? "several statements" : "no statement";
    else if (select.is_null()) why = "not a SELECT";
    else if (!field(select, "intoClause").is_null()) why = "SELECT INTO";
    else if (w.dml) why = "writes in a CTE";
    else if (w.locking) why = "FOR UPDATE/SHARE";
    else if (!w.time_reason.empty()) why = w.time_reason;
    else if (w.temp) why = "reads a temporary table";
    else if (w.catalogs) why = "reads a catalog";   // last: the caller may allow catalogs
    c.cacheable = why.empty();

    if (with_fingerprint) {
      PgQueryFingerprintResult fp = pg_query_fingerprint(text.c_str());
      if (!fp.error && fp.fingerprint_str) c.fingerprint = fp.fingerprint_str;
      pg_query_free_fingerprint_result(fp);
    }
  } catch (const std::exception& e) {
    return unclassified(std::string("cannot classify: ") + e.what());
  }
  return c;
}

// libpg-query recurses once per level of the tree when it prints it as JSON,
// with no depth check: `SELECT 1*1*1...` with 100,000 terms overflows an 8 MB
// stack. shape_of() bounds the depth from the tokens, so such texts are never
// handed to it. Texts this long are not parsed on the event loop at all (parsing
// costs ~2 µs per kB); the proxy reads none longer than max_inspect_bytes.
constexpr size_t kMaxText = 16 << 20;

// Character classes for the scanner below, one table lookup each (ASCII, as the C
// locale has it): it runs on every simple Query, so it avoids ctype calls and searches.
enum : uint8_t { kIdentChar = 1, kDigitChar = 2, kOpChar = 4, kPlainChar = 8 };
constexpr std::array<uint8_t, 256> kCharClass = [] {
  std::array<uint8_t, 256> t{};
  constexpr std::string_view ops = "+-*/<>=~!@#%^&|`?:", special = "'\"()[],;";
  for (int c = 0; c < 256; c++) {
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'), digit = c >= '0' && c <= '9';
    if (alpha || digit || c == '_' || c == '$' || c >= 0x80) t[c] |= kIdentChar;
    if (digit) t[c] |= kDigitChar;
    if (ops.find(char(c)) != std::string_view::npos) t[c] |= kOpChar;
    // Copied as is, adding no token and no level: spaces, dots and the like.
    if (t[c] == 0 && special.find(char(c)) == std::string_view::npos) t[c] |= kPlainChar;
  }
  return t;
}();
bool ident_char(unsigned char ch) { return kCharClass[ch] & kIdentChar; }
bool digit_char(unsigned char ch) { return kCharClass[ch] & kDigitChar; }
bool op_char(char ch) { return kCharClass[uint8_t(ch)] & kOpChar; }

// One pass over a SQL text as PostgreSQL's scanner (standard_conforming_strings
// on, as libpg-query reads it) sees its tokens: the shape (literals masked) and
// a bound of the parse tree's depth. Each identifier, keyword or operator can add
// at most one level in its comma-separated part of the enclosing parentheses;
// lists are flat, so a comma starts that count again.
class Scanner {
 public:
  explicit Scanner(std::string_view sql) : s_(sql) {}

  void run() {
    levels_.assign(1, 0);
    for (i_ = 0; i_ < s_.size();) step();
  }
  size_t depth() const { return depth_; }
  // The text with its literals masked, copied in runs between them.
  std::string take_shape() {
    if (!plain_) return {};
    if (copied_ == 0) return std::string(s_);
    shape_.append(s_.substr(copied_));
    return std::move(shape_);
  }

 private:
  void step() {
    const char ch = s_[i_];
    if (kCharClass[uint8_t(ch)] & kPlainChar) {   // a run of them at once
      while (++i_ < s_.size() && (kCharClass[uint8_t(s_[i_])] & kPlainChar)) {
      }
      return;
    }
    const char next = i_ + 1 < s_.size() ? s_[i_ + 1] : '\0';
    if (ch == '\'') return string_literal(escape_prefix());
    if (ch == '"') return copy_quoted('"');
    if (ch == '-' && next == '-') return copy_until_newline();
    if (ch == '/' && next == '*') return block_comment();
    if (ch == '$' && (i_ == 0 || !ident_char(uint8_t(s_[i_ - 1])))) return dollar();
    if (digit_char(uint8_t(ch)) && (i_ == 0 || !ident_char(uint8_t(s_[i_ - 1])))) return number();
    if (ident_char(uint8_t(ch))) {
      while (i_ < s_.size() && ident_char(uint8_t(s_[i_]))) i_++;
      return token();
    }
    if (op_char(ch)) {
      while (i_ < s_.size() && op_char(s_[i_]) && !(s_[i_] == '-' && i_ + 1 < s_.size() && s_[i_ + 1] == '-') &&
             !(s_[i_] == '/' && i_ + 1 < s_.size() && s_[i_ + 1] == '*'))
        i_++;
      return token();
    }
    i_++;
    switch (ch) {
      case '(': case '[':
        levels_.push_back(0);
        sum_ += 1;
        note_depth();
        break;
      case ')': case ']':
        if (levels_.size() > 1) {
          sum_ -= levels_.back() + 1;
          levels_.pop_back();
        }
        break;
      case ',':
        sum_ -= levels_.back();
        levels_.back() = 0;
        break;
      case ';':
        levels_.assign(1, 0);
        sum_ = 0;
        break;
      default: break;
    }
  }
  // E'...' takes backslash escapes only when the E is a token of its own: after
  // an identifier (xe'...') the quote opens an ordinary string, as PostgreSQL's lexer has it.
  bool escape_prefix() const {
    return i_ > 0 && (s_[i_ - 1] == 'E' || s_[i_ - 1] == 'e') && (i_ < 2 || !ident_char(uint8_t(s_[i_ - 2])));
  }
  void token() {
    levels_.back()++;
    sum_++;
    note_depth();
  }
  void note_depth() { depth_ = std::max(depth_, sum_); }

  // '...' with '' for a quote; E'...' also with backslash escapes (then not masked).
  void string_literal(bool escapes) {
    size_t start = i_++;
    // A prefix letter (E, B, X, U&, N) or any identifier right before it: keep the text.
    if (start > 0 && ident_char(uint8_t(s_[start - 1]))) plain_ = false;
    while (i_ < s_.size()) {
      char ch = s_[i_++];
      if (escapes && ch == '\\') {
        i_++;
      } else if (ch == '\'') {
        if (i_ < s_.size() && s_[i_] == '\'') i_++;
        else break;
      }
    }
    i_ = std::min(i_, s_.size());
    if (plain_) mask(start, "''");
    operand();
  }
  void copy_quoted(char quote) {
    i_++;
    while (i_ < s_.size()) {
      if (s_[i_++] != quote) continue;
      if (i_ < s_.size() && s_[i_] == quote) i_++;
      else break;
    }
    token();
  }
  void copy_until_newline() {
    size_t end = s_.find('\n', i_);
    i_ = end == std::string_view::npos ? s_.size() : end;
  }
  void block_comment() {   // nested, as PostgreSQL's
    size_t nesting = 0;
    while (i_ < s_.size()) {
      if (s_.compare(i_, 2, "/*") == 0) nesting++, i_ += 2;
      else if (s_.compare(i_, 2, "*/") == 0) {
        i_ += 2;
        if (--nesting == 0) break;
      } else {
        i_++;
      }
    }
  }
  // $tag$ ... $tag$ (not masked), or a parameter $1.
  void dollar() {
    size_t tag_end = i_ + 1;
    while (tag_end < s_.size() && ident_char(uint8_t(s_[tag_end])) && s_[tag_end] != '$') tag_end++;
    if (tag_end < s_.size() && s_[tag_end] == '$' && !(tag_end > i_ + 1 && digit_char(uint8_t(s_[i_ + 1])))) {
      std::string_view tag = s_.substr(i_, tag_end - i_ + 1);
      size_t close = s_.find(tag, tag_end + 1);
      i_ = close == std::string_view::npos ? s_.size() : close + tag.size();
      plain_ = false;
      return operand();
    }
    i_++;
    while (i_ < s_.size() && digit_char(uint8_t(s_[i_]))) i_++;
    operand();
  }
  // An integer masks to 0, a decimal or real to 0.0: the grammar takes only
  // integers in places (FETCH n, varchar(n)), so the two must not share a shape.
  // Texts whose numbers PostgreSQL reads its own way are keyed on the text itself:
  // a second dot (1.2.3, 1..2), or an integer of more than 9 digits (past int4, a
  // numeric constant).
  void number() {
    const size_t start = i_;
    size_t digits = 0;
    bool decimal = false;
    for (; i_ < s_.size(); i_++) {
      if (digit_char(uint8_t(s_[i_]))) digits++;
      else if (s_[i_] == '.' && !decimal) decimal = true;
      else break;
    }
    if (i_ < s_.size() && s_[i_] == '.') plain_ = false;
    if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      size_t e = i_ + 1;
      if (e < s_.size() && (s_[e] == '+' || s_[e] == '-')) e++;
      if (e < s_.size() && digit_char(uint8_t(s_[e]))) {
        decimal = true;
        i_ = e;
        while (i_ < s_.size() && digit_char(uint8_t(s_[i_]))) i_++;
      }
    }
    if (!decimal && digits > 9) plain_ = false;   // an integer past int4 is a numeric constant
    mask(start, decimal ? "0.0" : "0");
    operand();
  }
  void operand() {}   // literals and parameters add no level of their own
  // The literal from start to here reads as `with` in the shape.
  void mask(size_t start, std::string_view with) {
    if (copied_ == 0) shape_.reserve(s_.size() + 16);
    shape_.append(s_.substr(copied_, start - copied_));
    shape_.append(with);
    copied_ = i_;
  }

  std::string_view s_;
  size_t i_ = 0;
  std::string shape_;   // up to copied_, masked
  size_t copied_ = 0;
  bool plain_ = true;
  std::vector<size_t> levels_;
  size_t sum_ = 0, depth_ = 0;
};

}  // namespace

std::string shape_of(std::string_view sql, size_t& depth) {
  Scanner sc(sql);
  sc.run();
  depth = sc.depth();
  return sc.take_shape();
}

Classification classify_statement(std::string_view sql, bool with_fingerprint) {
  if (sql.size() > kMaxText) return unclassified("too long to classify");
  Scanner sc(sql);
  sc.run();
  if (sc.depth() > kMaxParseDepth) return unclassified("too deeply nested to parse on the event loop");
  return classify_here(sql, with_fingerprint);
}

std::string quote_literal(std::string_view s) {
  std::string q = s.find('\\') == std::string_view::npos ? "'" : "E'";
  for (char ch : s) {
    if (ch == '\'' || ch == '\\') q.push_back(ch);
    q.push_back(ch);
  }
  q.push_back('\'');
  return q;
}

std::string quote_ident(std::string_view s) {
  std::string q = "\"";
  for (char ch : s) {
    if (ch == '"') q.push_back(ch);
    q.push_back(ch);
  }
  q.push_back('"');
  return q;
}

int64_t parse_ttl(std::string_view text) {
  uint64_t n = 0;
  const char* end = text.data() + text.size();
  auto [unit_at, ec] = std::from_chars(text.data(), end, n);   // no sign, no blanks
  if (ec != std::errc()) return -1;
  const std::string_view unit(unit_at, size_t(end - unit_at));
  const uint64_t ms = unit == "ms" ? 1 : unit.empty() || unit == "s" ? 1000 : unit == "m" ? 60'000 : unit == "h" ? 3'600'000 : 0;
  if (ms == 0 || n > uint64_t(std::numeric_limits<int64_t>::max()) / ms) return -1;
  return int64_t(n * ms);
}

}  // namespace cache
