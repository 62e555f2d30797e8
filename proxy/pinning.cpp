#include "proxy/pinning.h"

#include <algorithm>
#include <utility>

namespace proxy {

uint8_t pins_in(const cache::Classification& c) {
  uint8_t kinds = 0;
  for (const cache::SessionEffect& e : c.effects) kinds |= pin_bit(e.pin);
  return kinds;
}

std::string_view pin_what(const cache::Classification& c, uint8_t kinds) {
  for (const cache::SessionEffect& e : c.effects)
    if (pin_bit(e.pin) & kinds) return e.what;
  return {};
}

std::string pin_names(uint8_t kinds) { return conf::pin_kind_list(kinds); }

std::string state_query(bool protocol_statements) {
  // Every catalog of objects that live in a schema: a temp table, function, type,
  // operator, statistics object, collation ... keeps the client pinned.
  static constexpr std::pair<const char*, const char*> kInSchema[] = {
      {"pg_class", "relnamespace"},     {"pg_proc", "pronamespace"},       {"pg_type", "typnamespace"},
      {"pg_operator", "oprnamespace"},  {"pg_statistic_ext", "stxnamespace"}, {"pg_collation", "collnamespace"},
      {"pg_conversion", "connamespace"}, {"pg_opclass", "opcnamespace"},   {"pg_opfamily", "opfnamespace"},
      {"pg_ts_config", "cfgnamespace"}, {"pg_ts_dict", "dictnamespace"},   {"pg_ts_parser", "prsnamespace"},
      {"pg_ts_template", "tmplnamespace"}};
  std::string sql = "SELECT ";
  for (const auto& [table, column] : kInSchema) {
    if (&table != &kInSchema[0].first) sql += " OPERATOR(pg_catalog.+) ";
    sql.append("(SELECT pg_catalog.count(*) FROM pg_catalog.").append(table).append(" WHERE ").append(column);
    sql += " OPERATOR(pg_catalog.=) pg_catalog.pg_my_temp_schema())";
  }
  // Operators and functions are schema-qualified: the client's search_path is in
  // force, and a public.+ or public.count must not change the answer.
  sql += ", (SELECT pg_catalog.count(*) FROM pg_catalog.pg_prepared_statements";
  if (!protocol_statements) sql += " WHERE from_sql";
  sql +=
      "),"
      " (SELECT pg_catalog.count(*) FROM pg_catalog.pg_cursors WHERE is_holdable),"
      " (SELECT pg_catalog.count(*) FROM pg_catalog.pg_listening_channels()),"
      " (SELECT pg_catalog.count(*) FROM pg_catalog.pg_locks WHERE locktype OPERATOR(pg_catalog.=) 'advisory'"
      " AND pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()),"
      " (SELECT pg_catalog.string_agg(pg_catalog.lower(name), ',') FROM pg_catalog.pg_settings"
      " WHERE source OPERATOR(pg_catalog.=) 'session')";
  return sql;
}

uint8_t kinds_left(uint8_t kinds, const std::string* counts, size_t n, const SettingNames& followed) {
  if (n < 6) return kinds;   // not the row asked for: nothing is known to be gone
  static constexpr uint8_t kCounted[] = {conf::kPinTemp, conf::kPinPrepare, conf::kPinCursor, conf::kPinListen,
                                         conf::kPinAdvisory};
  bool none = true;
  for (size_t i = 0; i < 5; i++) {
    if (counts[i] == "0") kinds &= uint8_t(~kCounted[i]);
    else none = false;
  }
  // Set and Other: gone when every setting set in the session is one pgsidecar follows.
  bool unfollowed = false;
  std::string_view names = counts[5];
  while (!names.empty() && !unfollowed) {
    size_t comma = names.find(',');
    std::string_view name = names.substr(0, comma);
    unfollowed = !followed(name);
    names = comma == std::string_view::npos ? std::string_view() : names.substr(comma + 1);
  }
  // Set is not counted here: custom settings (app.tenant) are not in pg_settings.
  // It goes with a RESET ALL or DISCARD ALL that succeeded (ClientSession::settings_reset).
  // Other (DO, CALL, LOAD ...): what it made is not known, so it is gone only when
  // nothing countable is left.
  if (!unfollowed && none) kinds &= uint8_t(~conf::kPinOther);
  return kinds;
}

}  // namespace proxy
