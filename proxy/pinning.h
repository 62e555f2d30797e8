// Transaction mode: a client that creates session state (a temp table, SQL
// PREPARE, a WITH HOLD cursor, LISTEN, a session advisory lock, a setting that
// cannot be replayed, anything not followed) is pinned to its server until the
// state is gone, instead of losing it. The rule table is in docs/architecture.md.
//
// The classifier (cache/classify.h) says which kinds a statement creates
// (SessionEffect::pin) and whether it may remove some (may_clear_state). After
// such a statement the server itself is asked what is left (kStateQuery), so
// "gone" is the server's truth: the last temp table dropped, the last cursor
// closed, the last lock released.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "cache/classify.h"
#include "conf/config.h"
#include "pool/pool.h"

namespace proxy {

using PinKind = cache::SessionEffect::Pin;

// conf::kPin* bit of a kind (0 for None).
constexpr uint8_t pin_bit(PinKind k) { return k == PinKind::None ? 0 : uint8_t(1u << (unsigned(k) - 1)); }
static_assert(pin_bit(PinKind::Temp) == conf::kPinTemp && pin_bit(PinKind::Other) == conf::kPinOther);

// The kinds a statement's effects create (conf::kPin* bits), and what the first
// of `kinds` is ("LISTEN", "a temporary object" ...), for messages.
uint8_t pins_in(const cache::Classification& c);
std::string_view pin_what(const cache::Classification& c, uint8_t kinds);

// "temp,listen": the names of the kinds in a bit set (conf::kPin* bits), as pin_on spells them.
std::string pin_names(uint8_t kinds);

// One query, one row: the kinds still present on the server, a column each
// (temp objects, SQL prepared statements, holdable cursors, channels listened to,
// advisory locks held, settings set in the session). `protocol_statements`
// counts named protocol-level statements as the client's too (no plan cache).
std::string state_query(bool protocol_statements);
// Whether pgsidecar follows a setting (by lower-case name): it replays it itself.
using SettingNames = std::function<bool(std::string_view name)>;
// The kinds left, from the row of state_query(); `kinds` are those the client is
// pinned for. A counted kind whose count is 0 is gone. Other is gone when nothing
// is counted and every setting set in the session is followed. Set stays (custom
// settings are not listed in pg_settings): RESET ALL or DISCARD ALL clears it.
uint8_t kinds_left(uint8_t kinds, const std::string* counts, size_t n, const SettingNames& followed);

// A client's pin: which kinds hold it, since when, and what pinned it first.
struct Pin {
  uint8_t kinds = 0;          // conf::kPin* bits
  bool recheck = false;       // a statement may have removed state: ask the server at the end of the transaction
  bool logged = false;        // the pinned_log_after line was written
  pool::Time since{};
  // The statement part that pinned it first ("LISTEN", "a temporary object" ...);
  // behind a pointer, as most clients are never pinned.
  std::unique_ptr<std::string> first;
  bool pinned() const { return kinds != 0; }
};

// A client whose statement would pin one client past max_pinned_per_pool waits
// for a slot without a server, up to query_wait_timeout; then the statement is refused.
struct PinWait {
  enum class End : uint8_t { None, Expired, Cancelled };
  pool::Time since{};     // the statement at the head of its input first had to wait
  uint64_t at = 0;        // the client's input consumed then: once more is, that statement is gone
  bool queued = false;    // in PoolEntry::pin_waiters
  End end = End::None;    // query_wait_timeout passed, or a CancelRequest came: refuse the statement
};

}  // namespace proxy
