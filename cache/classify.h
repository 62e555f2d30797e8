// What a SQL statement reads and writes, for the result cache: parsed with
// libpg-query (PostgreSQL's own parser), so the answer follows the server's
// grammar rather than a guess from keywords. A statement that does not parse is
// never cached and invalidates nothing by itself (the server will reject it).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace cache {

struct Classification {
  enum class Kind : uint8_t {
    Unparsable,   // libpg-query rejected it: pass through, never cache
    Read,         // only reads (SELECT, VALUES, TABLE, SHOW, EXPLAIN without ANALYZE ...)
    Write,        // changes the rows of `writes` (or, with writes_unknown, of anything)
    Ddl,          // changes the schema or privileges: everything of the database is stale
    Other,        // transaction control, SET, LISTEN, VACUUM ...: neither cached nor invalidating
  };
  Kind kind = Kind::Unparsable;
  // A single SELECT that may be cached as far as the text shows: no data-modifying
  // CTE, no SELECT INTO, no FOR UPDATE/SHARE, no time or session functions
  // (now(), current_timestamp ...), no catalog or temp relations. The caller
  // still checks `functions` against the database's volatile functions.
  bool cacheable = false;
  bool catalogs = false;                   // reads pg_catalog / information_schema / pg_* relations
  std::string not_cacheable_reason;        // for logs and tests, when !cacheable
  std::vector<std::string> reads;          // relation names read (unqualified, as the parser folded them), sorted, unique
  std::vector<std::string> writes;         // relation names written (INSERT/UPDATE/DELETE/MERGE/TRUNCATE/COPY FROM/REFRESH), sorted, unique
  bool writes_unknown = false;             // DO, CALL, EXECUTE, ...: may write anything
  bool changes_settings = false;           // SET (not LOCAL or TRANSACTION), RESET or DISCARD
  std::vector<std::string> functions;      // functions called (unqualified names), sorted, unique
  std::string fingerprint;                 // pg_query fingerprint (16 hex digits): equal for texts that differ only in constants
  int statements = 0;                      // top-level statements in the text
  // From a /* pgsidecar:cache */ or /* pgsidecar:cache ttl=30s */ comment:
  bool hinted = false;
  int64_t hint_ttl_ms = -1;                // -1 = no ttl given
  bool hint_nocache = false;               // /* pgsidecar:nocache */
};

// Parses sql (one or more statements) and classifies it. Pure function; about
// 5-30 µs for a short statement, so callers cache the result per text.
Classification classify_statement(std::string_view sql);

// Parses "30s", "500ms", "2m", "1h", "45" (seconds) into milliseconds; -1 if invalid.
int64_t parse_ttl(std::string_view text);

}  // namespace cache
