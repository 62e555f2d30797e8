// The result cache's proxy side. A query at the head of a client's input is
// looked up when nothing is in flight and no transaction is open: a whole simple
// Query, or an extended batch Parse(unnamed)? Bind Describe(portal)? Execute Sync.
// A hit is answered from the stored bytes without a server; a miss goes to a
// server with a capture armed, and its answer is stored. Every statement that
// passes is also noted for the writes it makes, which invalidate at the end of
// its transaction (cache/result_cache.h).
#include <strings.h>

#include "proxy/client_session.h"
#include "proxy/proxy.h"
#include "proxy/server_conn.h"

namespace proxy {
namespace {

const uint8_t kReadyIdle[6] = {'Z', 0, 0, 0, 5, 'I'};

// It may change how the server reads the texts after it: standard_conforming_strings
// or client_encoding, by name, by RESET ALL or DISCARD ALL, or in a way not followed.
bool may_change_text_mode(const cache::Classification& c) {
  using Kind = cache::SessionEffect::Kind;
  for (const cache::SessionEffect& e : c.effects) {
    if (e.kind == Kind::Unknown || e.kind == Kind::Unparsed || e.kind == Kind::ResetAll || e.kind == Kind::DiscardAll)
      return true;
    if ((e.kind == Kind::Set || e.kind == Kind::Reset) &&
        (e.name == "standard_conforming_strings" || e.name == "client_encoding"))
      return true;
  }
  return c.kind == cache::Classification::Kind::Unparsable || c.writes_unknown ||
         std::binary_search(c.functions.begin(), c.functions.end(), "set_config");
}

}  // namespace

// The query at the head of the input, as far as the cache is concerned.
struct ClientSession::CacheUnit {
  size_t bytes = 0;             // of all its messages
  bool extended = false, parse = false, describe = false;
  std::string_view parse_tail;  // extended: query\0, parameter count and types
  std::string_view bind_tail;   // extended: the Bind after the statement name (values and formats)
  std::string_view sql;
  cache::ClassificationPtr statement;   // for a named statement known here
};

bool ClientSession::parse_cache_unit(CacheUnit& u) {
  const uint8_t* p = in_data();
  size_t avail = in_size(), pos = 0;
  bool bound = false, executed = false;
  while (avail - pos >= pg::kHeaderLen) {
    char type = char(p[pos]);
    uint32_t len = pg::get_u32(p + pos + 1);
    if (len < 4 || avail - pos < size_t(len) + 1) return false;   // not all here: not ours
    pg::Reader r(p + pos + pg::kHeaderLen, len - 4);
    size_t next = pos + len + 1;
    switch (type) {
      case 'Q': {
        // Only a Query the decoder reads whole and finds valid (one text ending in
        // its NUL); forward() refuses an invalid one (08P01).
        pg::Frame f;
        std::string err;
        if (pos != 0 || pg::frame_frontend(p, avail, proxy_.config().max_inspect_bytes, f, err) != pg::FrameStatus::Ready ||
            !f.inspect)
          return false;
        u.sql = statement_text(f, p);
        u.bytes = next;
        return true;
      }
      case 'P':
        if (pos != 0 || !r.cstr().empty() || !r.ok()) return false;   // only the unnamed statement
        u.parse = u.extended = true;
        u.parse_tail = std::string_view(reinterpret_cast<const char*>(p + pos + 6), len - 5);
        break;
      case 'B': {
        if (bound || !r.cstr().empty()) return false;   // named portals may be run in parts
        std::string_view name = r.cstr();
        if (!r.ok() || (u.parse && !name.empty())) return false;
        if (!u.parse) {
          if (name.empty()) return false;   // the unnamed statement of an earlier batch: text unknown here
          if (plan_cache_) {
            const pool::StatementPtr* found = statements_.find(name);
            if (!found) return false;
            u.parse_tail = (*found)->parse_tail;
          } else {
            auto it = cs_->named.find(std::string(name));
            if (it == cs_->named.end() || !it->second.statement) return false;
            u.parse_tail = it->second.parse_tail;
            u.statement = it->second.statement;
          }
        }
        size_t at = pos + pg::kHeaderLen + 1 + name.size() + 1;
        u.bind_tail = std::string_view(reinterpret_cast<const char*>(p + at), next - at);
        u.extended = bound = true;
        break;
      }
      case 'D':
        if (!bound || executed || r.u8() != 'P' || !r.cstr().empty() || !r.ok()) return false;
        u.describe = true;
        break;
      case 'E':
        if (!bound || executed || !r.cstr().empty() || r.u32() != 0 || !r.ok()) return false;   // all rows, or none
        executed = true;
        break;
      case 'S':
        if (!executed) return false;
        u.bytes = next;
        u.sql = u.parse_tail.substr(0, u.parse_tail.find('\0'));
        return true;
      default:
        return false;
    }
    pos = next;
  }
  return false;
}

// Everything the answer depends on besides the statement: who asks (the role, also
// as the server login), where (database, and the server behind it), the settings that shape rows (startup
// parameters, reported ones such as DateStyle and TimeZone, SET statements in
// force, so search_path and role too, and the login defaults of ALTER ROLE/DATABASE
// ... SET) and the schema version.
void ClientSession::build_cache_key(const CacheUnit& u) {
  const ServerTarget& server = *pool_entry_->target;
  std::string& key = cs_->key;
  key.clear();
  key.append(database_).push_back('\0');
  key.append(server.host).append(":").append(std::to_string(server.port)).append("/").append(server.dbname).push_back('\0');
  key.append(user_).push_back('\0');
  key.append(server.user).push_back('\0');
  key.append(params_key_).push_back('\0');
  cache_->append_login_defaults(database_, server.user, key);
  for (size_t i = 0; i < wanted_.size(); i++) key.append(wanted_[i]).push_back('\0');
  settings_.append_to(key);
  key.append(std::to_string(proxy_.schema().current())).push_back('\0');
  if (!u.extended) {
    key.push_back('Q');
    key.append(u.sql);
  } else {
    key.push_back(u.describe ? 'X' : 'x');
    key.append(u.parse_tail);
    key.append(u.bind_tail);
  }
}

ClientSession::CacheStep ClientSession::try_result_cache() {
  if (cs_->lookup_id) return CacheStep::Waiting;
  if (cs_->bypass || cs_->pending_store || waiting || !cache_reads_text()) return CacheStep::Pass;
  if (cs_->not_admitted_at == in_consumed()) return CacheStep::Pass;   // judged already, before its server came
  if (server_ && !server_->clean())
    return CacheStep::Pass;   // in a transaction, or answers (or part of one) still due: order and snapshots matter
  CacheUnit u;
  if (!parse_cache_unit(u)) return CacheStep::Pass;
  // A new simple Query text is remembered (ResultCache::classify) unless it is a
  // miss the cache does not store: texts that differ only in their literals
  // (WHERE id = 1, 2, ...) and miss, as on a table far larger than the cache,
  // would only churn the memo.
  cache::ClassificationPtr c = u.statement;
  bool new_text = false;
  if (!c) c = cache_->classify_transient(u.sql, new_text);
  auto remember = [&] {
    if (new_text) cache_->remember(u.sql, c);
  };
  // A Query that goes on to its server: forward() takes this classification
  // rather than scanning the text again (handed_on()).
  auto hand_on = [&] {
    if (u.extended || u.sql.size() > cache::ResultCache::kMaxParsedText) return;
    cs_->classified_at = in_consumed();
    cs_->classified = c;
  };
  int64_t ttl = cache_->ttl_ms(*c, database_, user_);
  if (ttl == cache::ResultCache::kNeedCatalog) return wait_for_catalog();
  if (ttl <= 0 || (u.extended && clock_parameter(u.bind_tail))) {
    remember();
    hand_on();
    return CacheStep::Pass;
  }
  if (server_ && !cache_->login_current(database_, server_->created)) {
    remember();
    hand_on();
    return CacheStep::Pass;   // this session started with login defaults the key no longer shows
  }
  build_cache_key(u);
  const cache::StoredResult* r = cache_->find(cs_->key);
  if (r && (!u.extended || r->has_row_description == u.describe)) {
    remember();   // before replay(), which consumes the text
    replay(*r, u);
    return CacheStep::Served;
  }
  hand_on();
  if (!cache_->admit(cs_->key)) {   // its first miss: not stored (cache.admission)
    cs_->not_admitted_at = in_consumed();
    return CacheStep::Pass;
  }
  remember();
  cs_->pending_store = PendingStore{cs_->key, c, ttl, cache_->seq()};
  static uint64_t last_lookup = 0;
  uint64_t id = ++last_lookup;
  bool asked = cache_->find_shared(cs_->key, database_, c, ttl, [&proxy = proxy_, pid = cancel_pid_, id](const cache::StoredResult* r) {
    ClientSession* self = proxy.client(pid);
    if (self && self->cs_ && self->cs_->lookup_id == id) self->shared_lookup_done(r);   // pid may be reused
  });
  if (!asked) return CacheStep::Pass;
  cs_->lookup_id = id;   // the query stays at the head of the input until Redis answers
  return CacheStep::Waiting;
}

// What try_result_cache() found the Query at pos (from the head of the input) to
// be, if it looked at that Query: one scan of its text rather than two.
cache::ClassificationPtr ClientSession::handed_on(size_t pos) {
  if (!cs_ || cs_->classified_at != in_consumed() + pos) return nullptr;
  cs_->classified_at = ~uint64_t(0);
  return std::move(cs_->classified);
}

// The database's catalog is being read (after login, or after a schema move):
// this query waits for it at the head of the input, as for Redis.
ClientSession::CacheStep ClientSession::wait_for_catalog() {
  static uint64_t last_wait = 0;
  uint64_t id = ++last_wait | (uint64_t(1) << 63);   // apart from Redis lookups' ids
  bool waiting_now = cache_->wait_catalog(database_, [&proxy = proxy_, pid = cancel_pid_, id] {
    ClientSession* self = proxy.client(pid);
    if (!self || !self->cs_ || self->cs_->lookup_id != id) return;   // pid may be reused
    self->cs_->lookup_id = 0;
    if (!self->closing()) self->process_input();
  });
  if (!waiting_now) return CacheStep::Pass;
  cs_->lookup_id = id;
  return CacheStep::Waiting;
}

// libpg-query reads SQL as PostgreSQL does with standard_conforming_strings on, in
// UTF-8. A session with it off may split a text differently ('a\' ends a string
// only there), and one in another encoding shows names in other bytes: such a
// session neither looks up nor stores, and each of its statements may write anything.
// So does one that has sent something that may change either, until the server
// has answered everything and reported the values (cs_->text_mode_unsure).
bool ClientSession::cache_reads_text() const {
  return !cs_->text_mode_unsure && wanted_scs_on() && strcasecmp(wanted_.c_str(tracked_at("client_encoding")), "UTF8") == 0;
}

// A Bind parameter such as 'now' or 'today 10:00' turns into the time
// when its type is a date or time: the statement's answer is then the clock's.
bool ClientSession::clock_parameter(std::string_view bind_tail) {
  // Any format: a text parameter may be sent in binary too (its bytes are the text).
  pg::Reader r(reinterpret_cast<const uint8_t*>(bind_tail.data()), bind_tail.size());
  for (uint16_t i = 0, n = r.u16(); i < n && r.ok(); i++) r.u16();   // format codes
  for (uint16_t i = 0, n = r.u16(); i < n && r.ok(); i++) {
    uint32_t len = r.u32();
    if (len == uint32_t(-1)) continue;
    std::string_view v = r.bytes(len);
    if (r.ok() && cache::time_literal(v)) return true;
  }
  return !r.ok();
}

void ClientSession::shared_lookup_done(const cache::StoredResult* r) {
  cs_->lookup_id = 0;
  if (closing()) return;
  CacheUnit u;
  // The server may have started a message to the client meanwhile (a notification
  // in pieces): the statement then goes on as a miss, as in try_result_cache().
  if (r && (!server_ || server_->clean()) && parse_cache_unit(u) &&
      (!u.extended || r->has_row_description == u.describe)) {
    cs_->pending_store.reset();
    replay(*r, u);
  }
  process_input();
}

// The stored answer, framed as the protocol in use expects, straight from the
// entry's bytes (send() copies only what the socket does not take at once).
void ClientSession::replay(const cache::StoredResult& r, const CacheUnit& u) {
  uv_buf_t bufs[4];
  unsigned n = 0;
  auto add = [&](const void* data, size_t len) { bufs[n++] = uv_buf_init(static_cast<char*>(const_cast<void*>(data)), unsigned(len)); };
  if (u.parse) add(pg::kParseComplete, sizeof pg::kParseComplete);
  if (u.extended) add(pg::kBindComplete, sizeof pg::kBindComplete);
  add(r.value.data(), r.value.size());
  add(kReadyIdle, sizeof kReadyIdle);
  in_consume(u.bytes);
  send(bufs, n);
}

// A message about to be forwarded (its header and whatever of it has arrived):
// what it may write, and state the cache key cannot describe.
void ClientSession::note_for_cache(char type, const uint8_t* msg, size_t avail, const cache::ClassificationPtr& parsed) {
  size_t total = size_t(pg::get_u32(msg + 1)) + 1;
  if (type == 'F' || (!cache_reads_text() && (type == 'Q' || type == 'P' || type == 'B'))) {
    // A fast-path function call runs anything; a text read in another way may.
    cs_->writes.everything = true;
    if (type == 'F' || type == 'Q') unknown_session_change();
    if (type == 'P') forget_parsed(msg, avail);
    return;
  }
  if (avail < total && (type == 'Q' || type == 'P')) {
    // Too long to arrive at once: it may write anything, or change settings.
    cs_->writes.everything = true;
    unknown_session_change();
    return;
  }
  // A Bind's statement name comes first; its parameters may still be on the way.
  pg::Reader r(msg + pg::kHeaderLen, std::min(avail, total) - pg::kHeaderLen);
  switch (type) {
    case 'Q': {
      std::string_view sql = r.cstr();
      if (!r.ok()) break;
      cache::ClassificationPtr c = cache_->effects_of(sql, parsed);
      if (may_change_text_mode(*c)) cs_->text_mode_unsure = true;
      // One SET alone is followed into the key (inspect_query, follow_setting); one among others is not.
      if (c->changes_settings && c->statements != 1) unknown_session_change();
      note_statement(c);
      break;
    }
    case 'P': {
      std::string_view name = r.cstr();
      const char* tail = reinterpret_cast<const char*>(msg + pg::kHeaderLen + name.size() + 1);
      std::string_view sql = r.cstr();
      if (!r.ok()) break;
      cache::ClassificationPtr c = cache_->classify(sql);
      if (may_change_text_mode(*c)) cs_->text_mode_unsure = true;   // when bound, which is soon
      if (c->changes_settings) unknown_session_change();   // SET as a prepared statement is not followed into the key
      if (name.empty()) {
        cs_->unnamed = c;
      } else if (!plan_cache_) {
        // A name known here is in use, or may be: the server refuses this Parse
        // (42P05) and keeps its text, so the name's text stays unknown. So does a
        // new one after an unknown session change, which may have made it.
        auto [st, added] = note_named(name);
        if (st && added && !cs_->names_unsure)
          *st = NamedStatement{std::string(tail, msg + total - reinterpret_cast<const uint8_t*>(tail)), c};
        else if (st)
          *st = NamedStatement{};
      }
      note_statement(c);
      break;
    }
    case 'B': {
      r.cstr();
      std::string_view name = r.cstr();
      if (!r.ok()) break;
      // The statement it runs may write; one we cannot name may write anything.
      cache::ClassificationPtr c;
      if (name.empty()) {
        c = cs_->unnamed;
      } else if (plan_cache_) {
        if (const pool::StatementPtr* found = statements_.find(name)) {
          std::string_view tail = (*found)->parse_tail;
          c = cache_->classify(tail.substr(0, tail.find('\0')));
        }
      } else if (auto it = cs_->named.find(std::string(name)); it != cs_->named.end()) {
        c = it->second.statement;
      }
      if (c) cache_->note_writes(*c, database_, user_, cs_->writes);
      else cs_->writes.everything = true;
      break;
    }
    case 'C':   // it may be skipped (an error earlier in its pipeline): the name may stay
      if (!plan_cache_ && r.u8() == 'S') mark_unknown(r.cstr());
      break;
    default:
      break;
  }
}

// A Parse not classified (see note_for_cache): a later Bind of its name may write anything.
void ClientSession::forget_parsed(const uint8_t* msg, size_t avail) {
  size_t total = size_t(pg::get_u32(msg + 1)) + 1;
  pg::Reader r(msg + pg::kHeaderLen, std::min(avail, total) - pg::kHeaderLen);
  std::string_view name = r.cstr();
  if (!r.ok()) return;
  if (name.empty()) cs_->unnamed.reset();
  else if (!plan_cache_)
    if (NamedStatement* st = note_named(name).first) *st = NamedStatement{};
}

// Without the plan cache, the named statements the result cache may serve. An
// entry marked unknown is a name the server may hold with a text not known here
// (after a Close or DEALLOCATE that may not have run, or a Parse refused as a
// duplicate): it is never served, and a later Parse of it is not believed.
// Returns the entry for name and whether it is new; no entry past
// max_client_prepared_statements names, where this client's lookups stop instead.
std::pair<ClientSession::NamedStatement*, bool> ClientSession::note_named(std::string_view name) {
  auto [it, added] = cs_->named.try_emplace(std::string(name));
  const size_t max = size_t(proxy_.config().max_client_prepared_statements);
  if (added && max != 0 && cs_->named.size() > max) {
    cs_->named.erase(it);
    cs_->bypass = true;
    return {nullptr, true};
  }
  return {&it->second, added};
}

// SQL PREPARE and DEALLOCATE share the names of protocol-level statements: the
// name's text is unknown from here on (the statement may also fail). Marked,
// not dropped.
void ClientSession::note_sql_statement_name(const cache::SessionEffect& e) {
  using Kind = cache::SessionEffect::Kind;
  if (e.kind == Kind::Deallocate) mark_unknown(e.name);
  if (e.kind == Kind::DeallocateAll || e.kind == Kind::DiscardAll) forget_named_texts();
  if (e.pin == cache::SessionEffect::Pin::Prepare && !e.name.empty())
    if (NamedStatement* st = note_named(e.name).first) *st = NamedStatement{};
}

void ClientSession::forget_named_texts() {
  for (auto& [name, st] : cs_->named) st = NamedStatement{};
}

void ClientSession::mark_unknown(std::string_view name) {
  if (auto it = cs_->named.find(std::string(name)); it != cs_->named.end()) it->second = NamedStatement{};
}

// Session state changed in a way the key cannot follow: no more lookups for this
// client, and (transaction mode) the server is reset before anyone else gets it.
void ClientSession::unknown_session_change() {
  cs_->bypass = true;
  if (!plan_cache_) {   // DO, a function, a text not read may PREPARE or DEALLOCATE by name
    forget_named_texts();
    cs_->names_unsure = true;
  }
  if (server_) server_->note_session_state();
}

// Lookups go on only while every statement is one whose effect on the key is
// followed: reads, SET/RESET/DISCARD in forms follow_setting() takes, writes of
// tables, DDL (it moves the schema version). What else may change the session
// stops them; in transaction mode the server is then reset before reuse, and the
// client's known settings are applied again on the next one.
void ClientSession::note_statement(const cache::ClassificationPtr& c) {
  using Kind = cache::Classification::Kind;
  cache_->note_writes(*c, database_, user_, cs_->writes);
  // A temporary object can hide a table of the same name: nothing cached fits then.
  for (const cache::SessionEffect& e : c->effects) {
    if (e.pin == cache::SessionEffect::Pin::Temp) cs_->bypass = true;
    if (!plan_cache_) note_sql_statement_name(e);
  }
  // set_config(), a function that is volatile and not built in (it may call
  // set_config() or SET), a write to pg_settings, a text our parser rejects, DO, CALL.
  if (c->kind == Kind::Unparsable || c->writes_unknown ||
      std::binary_search(c->functions.begin(), c->functions.end(), "set_config") ||
      cache_->may_change_session(*c, database_, user_))
    unknown_session_change();
}

// Transaction mode: the server this client used is being reset (DISCARD ALL), so
// whatever unknown state it made is gone (its named statements too); the next
// server gets the known settings.
void ClientSession::server_state_wiped() {
  if (cs_ && pool_entry_ && pool_entry_->mode == conf::PoolMode::Transaction) cs_->bypass = cs_->names_unsure = false;
}

// Session mode: SET and RESET are followed into settings_ (and so into the key)
// once they succeed; one sent in a transaction or while answers are due is not,
// so lookups stop.
void ClientSession::follow_setting(const cache::ClassificationPtr& c) {
  using Kind = cache::SessionEffect::Kind;
  bool settings = false;
  for (const cache::SessionEffect& e : c->effects) {
    settings |= e.kind == Kind::Set || e.kind == Kind::Reset || e.kind == Kind::ResetAll || e.kind == Kind::DiscardAll;
    if (e.kind == Kind::Unknown) cs_->bypass = true;
  }
  if (!settings) return;
  // Inside a transaction it may yet roll back; with answers due, its place is unknown.
  if (server_->idle_protocol() && server_->tx_status() == 'I' && !c->transaction_control) server_->expect_settings(c);
  else cs_->bypass = true;
}

void ClientSession::capture_done(std::string response) {
  if (!cs_) return;
  std::optional<PendingStore> ps = std::move(cs_->capturing);
  cs_->capturing.reset();
  if (!ps || response.empty()) return;
  // Answered by a server its database entry no longer points at (a reload): not
  // what the key (built from the entry) says.
  if (server_ && !server_->target().same_database(*pool_entry_->target)) return;
  // Its server logged in before the login defaults in the key were read.
  if (server_ && !cache_->login_current(database_, server_->created)) return;
  cache_->store(std::move(ps->key), std::move(response), database_, *ps->statement, ps->ttl_ms, ps->since);
}

void ClientSession::seal_writes(uint64_t epoch) {
  if (cs_->writes.empty()) return;
  cs_->sync_writes.push_back({epoch, std::move(cs_->writes)});
  cs_->writes.clear();
}

// Writes answered inside a transaction are merged (each relation once) and wait
// for its end; outside one they are invalidated now, in one call.
void ClientSession::writes_done(uint64_t epoch, bool in_transaction) {
  if (!cs_) return;
  size_t n = 0;
  for (; n < cs_->sync_writes.size() && cs_->sync_writes[n].epoch <= epoch; n++)
    cs_->txn_writes.merge(std::move(cs_->sync_writes[n].writes));
  cs_->sync_writes.erase(cs_->sync_writes.begin(), cs_->sync_writes.begin() + ptrdiff_t(n));
  if (in_transaction || cs_->txn_writes.empty()) return;
  cache_->invalidate(database_, cs_->txn_writes);
  cs_->txn_writes.clear();
}

void ClientSession::sync_points_shifted() {
  if (!cs_) return;
  for (SyncWrites& s : cs_->sync_writes) cs_->writes.merge(std::move(s.writes));
  cs_->sync_writes.clear();
}

void ClientSession::transaction_ended() {
  if (!cs_) return;
  cs_->text_mode_unsure = false;   // idle, every ParameterStatus in
  seal_writes(UINT64_MAX);
  writes_done(UINT64_MAX, false);
}

}  // namespace proxy
