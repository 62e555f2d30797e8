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

// What a statement leaves behind in the session beyond its transaction, for
// transaction pooling: followed (Set/Reset...), answered by the plan cache
// (Deallocate), or a reason to reset the server before anyone else uses it.
struct SessionEffect {
  enum class Kind : uint8_t {
    Set,             // SET name TO value (session level); `sql` replays it
    Reset,           // RESET name, SET name TO DEFAULT
    ResetAll,        // RESET ALL
    DiscardAll,      // DISCARD ALL
    Deallocate,      // DEALLOCATE name (`name`)
    DeallocateAll,   // DEALLOCATE ALL
    Listen,          // LISTEN
    SessionObject,   // a temp object, PREPARE, a WITH HOLD cursor, a session advisory lock
    Unknown,         // something that changes the session in a way not followed
    Unparsed,        // libpg-query does not parse it: Unknown if the server runs it all the same
  };
  // What kind of session state it leaves (transaction mode pins the client to its
  // server for it, see proxy/pinning.h); None for what is followed or undone.
  enum class Pin : uint8_t { None, Temp, Prepare, Cursor, Listen, Advisory, Set, Other };
  Kind kind = Kind::Unknown;
  Pin pin = Pin::None;
  std::string name;   // lower-case setting name (Set/Reset), statement name (Deallocate, PREPARE)
  std::string sql;    // Set: the statement, generated from the parse tree with proper quoting
  std::string what;   // why (SessionObject/Unknown), for logs and errors
};

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
  std::vector<SessionEffect> effects;      // in statement order
  bool transaction_control = false;        // BEGIN, COMMIT, ROLLBACK, SAVEPOINT ... among the statements
  // DISCARD, DROP, DEALLOCATE, CLOSE, UNLISTEN, RESET ALL or pg_advisory_unlock*():
  // session state may be gone afterwards (a pinned client's server is asked).
  bool may_clear_state = false;
  // Effects when it runs through Parse/Bind (not followed there). A text libpg-query
  // cannot parse is left to the server, which (but for newer grammar) rejects it.
  bool has_session_effects() const {
    for (const SessionEffect& e : effects)
      if (e.kind != SessionEffect::Kind::Unparsed) return true;
    return false;
  }
  // From a /* pgsidecar:cache */ or /* pgsidecar:cache ttl=30s */ comment:
  bool hinted = false;
  int64_t hint_ttl_ms = -1;                // -1 = no ttl given
  bool hint_nocache = false;               // /* pgsidecar:nocache */
};

// Parses sql (one or more statements) and classifies it. Pure function; about
// 5-30 µs for a short statement, so callers cache the result per text, and
// ~0.5 µs per byte for long ones, which are not parsed on the event loop. The
// fingerprint costs a second parse: only the result cache's rules need it.
Classification classify_statement(std::string_view sql, bool with_fingerprint = true);

// What a text that was not looked at counts as: it may write anything and change
// the session in any way.
Classification unclassified(std::string reason);

// A text that may differ from another only in its literals: the classification
// of one serves all (effects aside from Set values, reads, writes, kind). Plain
// strings mask to '', integers to 0 and decimals to 0.0; comments and quoted
// identifiers are kept. Empty when the text has anything the scan does not mask
// (escape strings, dollar quotes, prefixed strings, numbers PostgreSQL splits
// its own way), so the caller keys on the text itself.
// `depth` is an upper bound of the parse tree's nesting, so that a text too deep
// for libpg-query's recursion is never handed to it.
std::string shape_of(std::string_view sql, size_t& depth);

// Deeper trees than this are not parsed on the event loop (libpg-query recurses
// per level without a check); such statements count as not understood.
constexpr size_t kMaxParseDepth = 2000;

// A function whose result depends on the time, the session or chance, or that
// acts on the server (now(), current_setting(), nextval(), pg_advisory_lock() ...):
// never cached, whatever pg_proc says of its volatility.
bool denied_function(std::string_view name);

// A date/time input text whose value depends on the clock ('now', ' Today',
// 'tomorrow 10:00' ...): a literal or parameter value like this is never cached.
bool time_literal(std::string_view text);
// Whether a plain string literal ('...', '' inside) of sql is a time_literal. For
// texts shape_of masks (no escape or dollar-quoted strings); quotes inside
// comments count too, which only costs caching.
bool clock_word_in_string(std::string_view sql);

// SQL quoting for statements pgsidecar generates: 'it''s' (E'..' with a
// backslash, so it reads the same whatever standard_conforming_strings is),
// "My ""Schema""".
std::string quote_literal(std::string_view s);
std::string quote_ident(std::string_view s);

// Parses "30s", "500ms", "2m", "1h", "45" (seconds) into milliseconds; -1 if invalid.
int64_t parse_ttl(std::string_view text);

}  // namespace cache
