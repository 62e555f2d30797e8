// The plan cache's proxy side (transaction mode). A client's named statements map
// to shared server-side statements (pool/statements.h); Parse, Bind, Describe and
// Close are rewritten so that a server prepares a statement once for every client
// that uses it, and a client can land on any server. Replies the client did not
// ask for are dropped by the server connection (see PendingReply).
#include <algorithm>
#include <cstring>
#include <initializer_list>

#include "proxy/client_session.h"
#include "proxy/proxy.h"
#include "proxy/server_conn.h"

namespace proxy {
namespace {

using Kind = PendingReply::Kind;

// Writes a message's type, length and leading fields (an optional kind byte, then
// each field with its NUL) into out's scratch space; `rest` more body bytes follow,
// added by the caller. Returns the bytes written, empty if the fields do not fit.
std::string_view write_head(WriteBatch& out, char type, char kind, std::initializer_list<std::string_view> fields,
                            size_t rest) {
  size_t n = pg::kHeaderLen + (kind ? 1 : 0);
  for (std::string_view f : fields) n += f.size() + 1;
  uint8_t* p = out.scratch(n);
  if (!p) return {};
  p[0] = uint8_t(type);
  pg::put_u32(p + 1, uint32_t(n - 1 + rest));
  uint8_t* w = p + pg::kHeaderLen;
  if (kind) *w++ = uint8_t(kind);
  for (std::string_view f : fields) {
    std::memcpy(w, f.data(), f.size());
    w += f.size();
    *w++ = 0;
  }
  out.add(p, n);
  return {reinterpret_cast<const char*>(p), n};
}

// Length of the Describe (portal)/Execute messages and the Sync that follow a Bind
// at p, if that is all there is up to the Sync and it has all arrived; else 0.
size_t rest_of_execute_batch(const uint8_t* p, size_t avail) {
  size_t pos = 0;
  while (avail - pos >= pg::kHeaderLen) {
    char type = char(p[pos]);
    size_t total = size_t(pg::get_u32(p + pos + 1)) + 1;
    if (total < pg::kHeaderLen || avail - pos < total) return 0;
    bool portal_describe = type == 'D' && total > pg::kHeaderLen && p[pos + pg::kHeaderLen] == 'P';
    if (!portal_describe && type != 'E' && type != 'S') return 0;
    pos += total;
    if (type == 'S') return pos;
  }
  return 0;
}

// The end of a Bind with no parameters and no formats: three zero counts.
const uint8_t kEmptyBindTail[6] = {};

PendingReply reply(Kind kind, char type, uint64_t epoch) { return PendingReply{kind, type, epoch}; }

}  // namespace

// The frame says what has arrived (pg::frame_frontend): Parse, Describe and Close
// whole and validated, or a Parse too long to read; a Bind at least up to its names.
size_t ClientSession::route_statement_message(const pg::Frame& f, const uint8_t* msg, size_t avail,
                                              const cache::ClassificationPtr& c, WriteBatch& out) {
  ServerConn* s = server_;
  uint64_t epoch = s->syncs_sent();
  const size_t total = f.total;
  size_t have = std::min(avail, total);
  pg::Reader r(msg + pg::kHeaderLen, have - pg::kHeaderLen);
  switch (f.type) {
    case 'P': {
      if (!f.inspect) {
        // Too long to read: it goes out as sent, stays on this server only (not
        // shared), and what it does is not known: the server is reset after this client.
        s->note_session_state();
        s->note_schema_change();
        s->expect_reply(reply(Kind::Pass, '1', epoch));
        return 0;
      }
      std::string_view name = r.cstr();
      size_t tail_at = pg::kHeaderLen + name.size() + 1;
      std::string_view tail(reinterpret_cast<const char*>(msg + tail_at), total - tail_at);
      std::string_view query = tail.substr(0, tail.find('\0'));
      bool ddl = c->kind == cache::Classification::Kind::Ddl;
      // A Parse of SQL with session effects (SET, temp objects ...) runs when bound,
      // maybe more than once: not followed, so the server is reset after the client
      // that binds it (see the Bind case).
      const bool effects = c->has_session_effects() || (!wanted_scs_on() && query.find('\\') != std::string_view::npos);
      if (effects) s->note_session_state();
      // State it leaves pins the client (proxy/pinning.h), or the Parse fails with 53300.
      const uint8_t pins = pins_of(pins_in(*c));
      if (std::optional<pg::ErrorInfo> refusal = pin_refusal(pins, pin_what(*c, pins))) {
        write_head(out, 'B', 0, {"", kDuplicateMarker}, sizeof kEmptyBindTail);
        out.add(kEmptyBindTail, sizeof kEmptyBindTail);
        PendingReply no = reply(Kind::PinLimit, 'E', epoch);
        no.refusal = std::move(*refusal);
        s->expect_reply(std::move(no));
        return total;
      }
      add_pin(pins, pin_what(*c, pins));
      if (name.empty()) {   // the unnamed statement keeps its own semantics
        if (ddl) s->note_schema_change();
        return route_unnamed_parse(query, c, msg, total, tail_at, out);
      }
      const int max_statements = proxy_.config().max_client_prepared_statements;
      bool duplicate = statements_.find(name) != nullptr;
      if (duplicate || (max_statements > 0 && statements_.size() >= size_t(max_statements))) {
        // PostgreSQL answers 42P05 and skips to Sync; a Bind that fails makes the server skip.
        write_head(out, 'B', 0, {"", kDuplicateMarker}, sizeof kEmptyBindTail);
        out.add(kEmptyBindTail, sizeof kEmptyBindTail);
        PendingReply dup = reply(duplicate ? Kind::Duplicate : Kind::TooMany, 'E', epoch);
        dup.client_name = name;
        s->expect_reply(std::move(dup));
        return total;
      }
      pool::StatementPtr st =
          proxy_.statements().intern(tail, ddl, c->has_session_effects(), pins_in(*c), c->may_clear_state);
      statements_.add(name, st);
      PendingReply own = reply(Kind::Pass, '1', epoch);
      own.client_undo = PendingReply::ClientUndo::Forget;
      own.client_name = name;
      own.client_stmt = st;
      if (prepared_here(st, out)) {
        // A Close of nothing stands in for the Parse; its reply becomes ParseComplete.
        write_head(out, 'C', 'S', {kNoStatement}, 0);
        own.kind = Kind::AsParseComplete;
        own.reply = '3';
        s->expect_reply(std::move(own));
        return total;
      }
      prepare_on_server(st, std::move(own), out);
      return total;
    }
    case 'B': {
      std::string_view portal = r.cstr(), name = r.cstr();   // present: see frame_frontend
      const pool::StatementPtr* found = name.empty() ? nullptr : statements_.find(name);
      if (!found) return 0;   // unnamed, or unknown: PostgreSQL's own 26000 comes back
      pool::StatementPtr st = *found;
      if (st->changes_schema) s->note_schema_change();
      if (st->session_effects || (st->backslash && !wanted_scs_on())) s->note_session_state();
      // Bound in a later transaction, its state pins again. A Bind streams and is not
      // refused: past max_pinned_per_pool the state is reset after this client instead.
      if (uint8_t kinds = pins_of(st->pins); !pin_full(kinds))
        add_pin(kinds, "a prepared statement that leaves session state");
      if (st->may_clear_state && pin_.pinned()) pin_.recheck = true;
      bool fresh_batch = s->idle_protocol() && s->tx_status() == 'I';
      s->note_shared_bind();
      bool hit = prepared_here(st, out);
      if (!hit) prepare_on_server(st, reply(Kind::Swallow, '1', epoch), out);
      size_t head = pg::kHeaderLen + portal.size() + 1 + name.size() + 1;
      std::string_view new_head = write_head(out, 'B', 0, {portal, st->name}, total - head);
      if (new_head.empty()) {
        protocol_violation("portal name too long");
        return 0;
      }
      // Bind/Execute/Sync alone in an implicit transaction: if the server says the
      // plan's result type changed, it can be prepared afresh and run again unseen.
      if (hit && fresh_batch && have == total) {
        size_t rest = rest_of_execute_batch(msg + total, avail - total);
        if (rest > 0 && total + rest <= kMaxRetryBytes) {
          std::string& bytes = s->arm_retry(st);
          bytes.assign(new_head);
          bytes.append(reinterpret_cast<const char*>(msg + head), total - head + rest);
        }
      }
      return head;
    }
    case 'D': {
      uint8_t kind = r.u8();
      std::string_view name = r.cstr();
      if (kind != 'S' || name.empty()) return 0;
      const pool::StatementPtr* found = statements_.find(name);
      if (!found) return 0;
      pool::StatementPtr st = *found;
      ensure_prepared(st, out);
      write_head(out, 'D', 'S', {st->name}, 0);
      return total;
    }
    case 'C': {
      // Forwarded unchanged: no server statement has the client's name, so the
      // server closes nothing and answers CloseComplete where PostgreSQL would.
      uint8_t kind = r.u8();
      std::string_view name = r.cstr();
      PendingReply own = reply(Kind::Pass, '3', epoch);
      if (pool::StatementPtr st = kind == 'S' ? statements_.take(name) : nullptr) {
        own.client_undo = PendingReply::ClientUndo::Restore;
        own.client_name = name;
        own.client_stmt = std::move(st);
      }
      s->expect_reply(std::move(own));
      return 0;
    }
    default:
      return 0;
  }
}

// An unnamed Parse goes out unchanged, except SQL that reaches the statements the
// plan cache keeps (psycopg sends DEALLOCATE through the extended protocol).
size_t ClientSession::route_unnamed_parse(std::string_view query, const cache::ClassificationPtr& classified,
                                          const uint8_t* msg, size_t total, size_t tail_at, WriteBatch& out) {
  using EffectKind = cache::SessionEffect::Kind;
  ServerConn* s = server_;
  PendingReply pass = reply(Kind::Pass, '1', s->syncs_sent());
  const cache::SessionEffect* e = classified->effects.size() == 1 && classified->statements == 1 ? &classified->effects[0] : nullptr;
  if (!e || (e->kind != EffectKind::Deallocate && e->kind != EffectKind::DeallocateAll && e->kind != EffectKind::DiscardAll)) {
    // Not followed through Parse: reset after this client.
    if (classified->has_session_effects() || (!wanted_scs_on() && query.find('\\') != std::string_view::npos))
      s->note_session_state();
    s->expect_reply(std::move(pass));
    return 0;
  }
  if (e->kind == EffectKind::DeallocateAll || e->kind == EffectKind::DiscardAll) {
    // The server will drop every statement: whatever it is known to hold is
    // closed and prepared again before its next use (a Close of nothing is fine).
    statements_.clear();
    s->statements().invalidate_all();
  } else if (pool::StatementPtr st = statements_.take(e->name)) {
    // DEALLOCATE of one of the client's names: deallocate the shared statement
    // on this server instead (others prepare it again when they need it).
    ensure_prepared(st, out);
    s->statements().invalidate(st.get());
    std::string sql = "DEALLOCATE " + st->name;
    size_t rest_at = tail_at + query.size() + 1;   // parameter type count and OIDs
    write_head(out, 'P', 0, {"", sql}, total - rest_at);
    out.add(msg + rest_at, total - rest_at);
    s->expect_reply(std::move(pass));
    return total;
  }
  s->expect_reply(std::move(pass));
  return 0;
}

// True if the linked server has st under the current schema version. If it has
// an older one, that is closed here (the caller prepares st again).
bool ClientSession::prepared_here(const pool::StatementPtr& st, WriteBatch& out) {
  pool::StatementStats& stats = proxy_.statements().stats();
  switch (server_->statements().find(st.get(), proxy_.schema().current())) {
    case pool::ServerStatements::Lookup::Hit:
      stats.hits++;
      return true;
    case pool::ServerStatements::Lookup::Stale:
      stats.reprepares++;
      close_on_server(st, out);
      return false;
    case pool::ServerStatements::Lookup::Miss:
      stats.misses++;
      return false;
  }
  return false;
}

// Before a Describe of st: make sure the server has it.
void ClientSession::ensure_prepared(const pool::StatementPtr& st, WriteBatch& out) {
  if (!prepared_here(st, out)) prepare_on_server(st, reply(Kind::Swallow, '1', server_->syncs_sent()), out);
}

// Parse st on the linked server, closing the least recently used one if it is full.
void ClientSession::prepare_on_server(const pool::StatementPtr& st, PendingReply parse_reply, WriteBatch& out) {
  pool::StatementStats& stats = proxy_.statements().stats();
  size_t capacity = size_t(std::max(1, proxy_.config().max_prepared_statements));
  if (pool::StatementPtr evicted = server_->statements().add(st, proxy_.schema().current(), capacity)) {
    stats.evictions++;
    close_on_server(evicted, out);
  }
  write_head(out, 'P', 0, {st->name}, st->parse_tail.size());
  out.add(reinterpret_cast<const uint8_t*>(st->parse_tail.data()), st->parse_tail.size());
  stats.prepares++;
  parse_reply.prepared = st;
  server_->expect_reply(std::move(parse_reply));
}

void ClientSession::close_on_server(const pool::StatementPtr& st, WriteBatch& out) {
  write_head(out, 'C', 'S', {st->name}, 0);
  PendingReply close = reply(Kind::Swallow, '3', server_->syncs_sent());
  close.closed = st;
  server_->expect_reply(std::move(close));
}

// Between transactions, Parse + Sync of a statement that a server of this pool has
// accepted before is answered here, with no server: the client needs one only once
// it runs something. Besides saving a round trip, this keeps pgbench -M prepared
// from deadlocking: it waits for each Parse with its other clients (holding servers
// in open transactions) stalled behind it.
bool ClientSession::answer_parse_locally() {
  const uint8_t* p = in_data();
  size_t avail = in_size();
  if (avail < pg::kHeaderLen || p[0] != 'P') return false;
  size_t parse_len = size_t(pg::get_u32(p + 1)) + 1;
  if (parse_len < pg::kHeaderLen || avail < parse_len + pg::kHeaderLen) return false;
  const uint8_t* sync = p + parse_len;
  if (sync[0] != 'S' || pg::get_u32(sync + 1) != 4) return false;
  pg::Reader r(p + pg::kHeaderLen, parse_len - pg::kHeaderLen);
  std::string_view name = r.cstr();
  const int max_statements = proxy_.config().max_client_prepared_statements;
  if (!r.ok() || name.empty() || statements_.find(name) ||
      (max_statements > 0 && statements_.size() >= size_t(max_statements)))
    return false;   // the server's (or our stand-in's) error, through the normal path
  size_t tail_at = pg::kHeaderLen + name.size() + 1;
  std::string_view tail(reinterpret_cast<const char*>(p + tail_at), parse_len - tail_at);
  pool::StatementPtr st = proxy_.statements().find(tail);
  if (!st || !st->accepted_in(pool_entry_->pool.get())) return false;
  statements_.add(name, std::move(st));
  proxy_.statements().stats().hits++;
  in_consume(parse_len + pg::kHeaderLen);
  static const char kReply[] = {'1', 0, 0, 0, 4, 'Z', 0, 0, 0, 5, 'I'};
  send(std::string_view(kReply, sizeof kReply));
  return true;
}

// DEALLOCATE of a statement the plan cache keeps for the client: answered here.
bool ClientSession::answer_deallocate(const std::string& name) {
  if (!statements_.find(name) || server_->tx_status() == 'E') return false;   // the server's own answer
  statements_.take(name);
  std::string out;
  pg::Writer(out, 'C').cstr("DEALLOCATE").finish();
  pg::write_ready(out, server_->tx_status());
  send(out);
  return true;
}

void ClientSession::undo_statement(const std::string& name, const pool::StatementPtr& st, bool forget) {
  const pool::StatementPtr* have = statements_.find(name);
  if (forget) {
    if (have && *have == st) statements_.take(name);
  } else if (!have) {
    statements_.add(name, st);
  }
}

}  // namespace proxy
