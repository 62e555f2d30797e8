#include "proxy/client_session.h"

#include <algorithm>

#include "conf/log.h"
#include "proxy/admin.h"
#include "proxy/proxy.h"
#include "proxy/server_conn.h"

namespace proxy {

ClientSession::ClientSession(Proxy& proxy, uint32_t cancel_pid, uint32_t cancel_key)
    : Conn(proxy.loop()), proxy_(proxy), cancel_pid_(cancel_pid), cancel_key_(cancel_key), started_(pool::Clock::now()) {}

bool ClientSession::idle() const {
  if (state_ != State::Ready) return false;
  return !server_ || server_->clean();
}

void ClientSession::fatal(std::string_view code, std::string_view message) {
  if (closing()) return;
  // An ErrorResponse now would land inside the server's message: the client
  // could not frame anything after it. It loses the connection without one.
  if (server_ && server_->mid_message()) return close();
  std::string out;
  pg::write_error(out, "FATAL", code, message);
  send(out);
  close_after_flush();
  fatal_at_ = pool::Clock::now();
}

logx::Fields ClientSession::log_fields(std::string& addr, std::string_view sqlstate) const {
  auto [host, port] = peer_address();
  addr = port ? host + ":" + std::to_string(port) : host;
  logx::Fields f;
  f.client_id = cancel_pid_;
  f.client_addr = addr;
  f.db = database_;
  f.user = user_;
  f.application_name = application_name();
  if (server_) f.server_pid = server_->backend_pid();
  f.sqlstate = sqlstate;
  return f;
}

void ClientSession::protocol_violation(std::string_view message) {
  std::string addr;
  LOG_WARN(log_fields(addr, "08P01"), "protocol violation: %.*s", int(message.size()),
           message.data());
  fatal("08P01", message);
}

void ClientSession::on_read() {
  last_active_ = pool::Clock::now();
  while (!closing() && in_size() > 0) {
    switch (state_) {
      case State::Startup:
        if (!handle_startup_packet()) return;
        break;
      case State::Auth: {
        if (in_size() < pg::kHeaderLen) return;
        const uint8_t* p = in_data();
        uint32_t len = pg::get_u32(p + 1);
        if (p[0] != 'p' || len < 4 || len > 64 * 1024) {
          protocol_violation("expected a password message during authentication");
          return;
        }
        if (in_size() < size_t(len) + 1) return;
        in_consume(len + 1);
        if (!handle_password_message(char(p[0]), p + 5, len - 4)) return;
        break;
      }
      case State::Login:
        read_stop();   // queries wait until login finishes
        return;
      case State::Ready:
        process_input();
        return;
    }
  }
}

bool ClientSession::tls_offered() const { return proxy_.client_tls() && !unix_socket(); }

void ClientSession::on_tls_ready() {
  // Direct TLS is told from other protocols by ALPN, as PostgreSQL does.
  if (direct_tls_ && tls()->alpn() != "postgresql")
    protocol_violation("direct TLS connection without ALPN protocol \"postgresql\"");
}

void ClientSession::on_tls_failed(const std::string& reason) {
  std::string addr;
  LOG_INFO(log_fields(addr), "%s", reason.c_str());
  proxy_.tls_handshake_failed("client");
  close();
}

// Startup phase: SSLRequest / GSSENCRequest / CancelRequest / StartupMessage.
bool ClientSession::handle_startup_packet() {
  if (in_size() < 4) return false;
  // PostgreSQL 17's direct TLS: a TLS handshake record instead of a startup packet.
  if (in_data()[0] == 0x16 && !tls()) {
    std::string_view hello(reinterpret_cast<const char*>(in_data()), in_size());
    in_consume(in_size());
    direct_tls_ = true;
    if (!tls_offered() || !start_tls(proxy_.client_tls(), "", hello)) close();   // no TLS to speak: nothing to say
    return false;
  }
  uint32_t len = pg::get_u32(in_data());
  if (len < 8 || len > pg::kMaxStartupLen) {
    protocol_violation("invalid length of startup packet");
    return false;
  }
  if (in_size() < len) return false;
  pg::StartupPacket sp;
  bool ok = pg::parse_startup(in_data() + 4, len - 4, sp);
  in_consume(len);
  if (!ok) {
    protocol_violation("invalid startup packet layout: expected terminator as last byte");
    return false;
  }
  switch (sp.code) {
    case pg::kSslRequest:
    case pg::kGssEncRequest: {
      // One of each per connection, as PostgreSQL allows; another is an unknown protocol to it.
      uint8_t bit = sp.code == pg::kSslRequest ? 1 : 2;
      if ((encryption_asked_ & bit) || tls()) break;
      encryption_asked_ |= bit;
      if (bit == 2 || !tls_offered()) {
        send("N");   // the client goes on in plain text or gives up
        return true;
      }
      // Bytes sent before our answer were never encrypted: a man in the middle (CVE-2021-23214).
      if (in_size() > 0) {
        protocol_violation("received unencrypted data after SSL request");
        return false;
      }
      send("S");
      if (!start_tls(proxy_.client_tls(), "")) close();
      return false;
    }
    case pg::kCancelRequest:
      // Closed once the server has processed the cancel (or now, if there is nothing to cancel).
      if (!proxy_.cancel(cancel_pid_, sp.cancel_pid, sp.cancel_key)) close();
      else read_stop();
      return false;
    default: break;
  }
  if ((sp.code >> 16) != 3) {
    fatal("0A000", "unsupported frontend protocol " + std::to_string(sp.code >> 16) + "." +
                       std::to_string(sp.code & 0xffff) + ": server supports 3.0 to 3.0");
    return false;
  }
  if ((sp.code & 0xffff) != 0) {
    // A newer 3.x minor: say we speak 3.0, and list the _pq_ options we ignore.
    std::string out;
    pg::Writer w(out, 'v');
    std::vector<std::string_view> unknown;
    for (auto& [k, v] : sp.params)
      if (k.rfind("_pq_.", 0) == 0) unknown.push_back(k);
    w.u32(pg::kProtocolV3).u32(uint32_t(unknown.size()));
    for (auto k : unknown) w.cstr(k);
    w.finish();
    send(out);
  }
  handle_startup_params(sp);
  return false;
}

void ClientSession::handle_startup_params(const pg::StartupPacket& sp) {
  std::vector<std::pair<std::string, std::string>> extra;
  for (auto& [k, v] : sp.params) {
    if (k == "user") user_ = v;
    else if (k == "database") database_ = v;
    else if (k == "replication") {
      if (v != "false" && v != "0" && v != "off" && v != "no")
        return fatal("0A000", "replication connections are not supported by pgsidecar");
    } else if (k.rfind("_pq_.", 0) == 0) {
      continue;
    } else {
      extra.emplace_back(k, v);
    }
  }
  if (user_.empty()) return fatal("28000", "no PostgreSQL user name specified in startup packet");
  const tls::ContextPtr& tls_ctx = proxy_.client_tls();
  if (!tls() && !unix_socket() && tls_ctx && tls_ctx->mode >= conf::SslMode::Require)
    return fatal("28000", "pgsidecar accepts only TLS connections (client_tls_sslmode " +
                              std::string(conf::to_string(tls_ctx->mode)) + "): connect with sslmode=require or stricter");
  if (database_.empty()) database_ = user_;
  if (proxy_.shutting_down()) return fatal("57P03", "the database system is shutting down");
  if (proxy_.client_count() > proxy_.config().max_client_conn)
    return fatal("53300", "sorry, too many clients already (max_client_conn " +
                              std::to_string(proxy_.config().max_client_conn) + ")");
  if (database_ == kAdminDatabase) {
    admin_ = true;
  } else {
    pool_entry_ = proxy_.pool_for(database_, user_);
    if (!pool_entry_) return fatal("3D000", "database \"" + database_ + "\" does not exist");
    cache_ = proxy_.result_cache();
    if (cache_) cs_ = std::make_unique<CacheState>();
    // Servers are opened with the client's startup parameters, so that they are that
    // session's own defaults (RESET returns to them). In transaction mode the tracked
    // ones are applied with SET instead, so clients differing only in those share servers.
    bool txn = pool_entry_->mode == conf::PoolMode::Transaction;
    plan_cache_ = txn && proxy_.config().max_prepared_statements > 0;
    std::sort(extra.begin(), extra.end());
    for (auto& [k, v] : extra) {
      int i = tracked_index(k);
      if (i >= 0) {
        wanted_.set(size_t(i), v);
        wanted_given_ |= 1u << i;
        if (txn) continue;
      }
      params_key_.append(k).push_back('\0');
      params_key_.append(v).push_back('\0');
    }
  }

  if (proxy_.config().auth_type == conf::AuthType::Trust) return auth_ok();
  if (proxy_.config().auth_type == conf::AuthType::Cert) {
    // The client certificate verified against client_tls_ca_file; its CN is the user.
    if (tls() && tls()->peer_common_name() == user_) return auth_ok();
    std::string addr;
    LOG_INFO(log_fields(addr, "28000"), "certificate authentication failed for user \"%s\"",
             user_.c_str());
    return fatal("28000", "certificate authentication failed for user \"" + user_ +
                              "\": the client certificate's common name must be the user name");
  }
  const auth::ScramSecret* secret = proxy_.scram_secret(user_);
  // An unknown user runs the same exchange against a dummy secret of its own (a
  // salt per name, as a real user has) and fails at the end.
  // Over TLS, SCRAM-SHA-256-PLUS binds the exchange to this connection (client_channel_binding).
  conf::ChannelBinding binding = proxy_.config().client_channel_binding;
  std::string cbind = tls() && binding != conf::ChannelBinding::Disable ? tls()->server_end_point() : "";
  if (binding == conf::ChannelBinding::Require && cbind.empty())
    return fatal("28000", "pgsidecar requires SCRAM channel binding (client_channel_binding require): connect with "
                          "TLS and channel_binding=require");
  scram_ = std::make_unique<auth::ScramServer>(secret ? *secret : auth::dummy_scram_secret(user_), cbind);
  state_ = State::Auth;
  std::string out;
  using namespace std::string_view_literals;
  pg::write_auth(out, pg::kAuthSasl,
                 cbind.empty()                                  ? "SCRAM-SHA-256\0\0"sv
                 : binding == conf::ChannelBinding::Require ? "SCRAM-SHA-256-PLUS\0\0"sv
                                                                : "SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0"sv);
  send(out);
}

bool ClientSession::handle_password_message(char, const uint8_t* body, size_t len) {
  pg::Reader r(body, len);
  std::string reply, err;
  if (!sasl_started_) {
    sasl_started_ = true;
    std::string_view mech = r.cstr();
    uint32_t n = r.u32();
    std::string_view data = r.bytes(n == 0xffffffff ? 0 : n);
    bool plus = mech == "SCRAM-SHA-256-PLUS";
    bool offered = plus ? tls() && proxy_.config().client_channel_binding != conf::ChannelBinding::Disable
                        : mech == "SCRAM-SHA-256" && proxy_.config().client_channel_binding != conf::ChannelBinding::Require;
    if (!r.ok() || !offered) {
      protocol_violation("expected SASLInitialResponse with a mechanism pgsidecar offered");
      return false;
    }
    if (!scram_->client_first(data, reply, err, plus)) {
      protocol_violation("malformed SCRAM client-first-message: " + err);
      return false;
    }
    std::string out;
    pg::write_auth(out, pg::kAuthSaslContinue, reply);
    send(out);
    return true;
  }
  bool known = proxy_.scram_secret(user_) != nullptr;
  if (!scram_->client_final(r.bytes(r.remaining()), reply, err) || !known) {
    std::string addr;
    LOG_INFO(log_fields(addr, "28P01"), "password authentication failed for user \"%s\"",
             user_.c_str());
    fatal("28P01", "password authentication failed for user \"" + user_ + "\"");
    return false;
  }
  std::string out;
  pg::write_auth(out, pg::kAuthSaslFinal, reply);
  send(out);
  scram_.reset();
  auth_ok();
  return true;
}

// Authenticated: get a server for the welcome (ParameterStatus set) and to check
// that the server accepts this login.
void ClientSession::auth_ok() {
  std::string out;
  pg::write_auth(out, pg::kAuthOk);
  send(out);
  if (admin_) return admin_login();
  state_ = State::Login;
  read_stop();
  pool_entry_->pool->acquire(this, params_key_);
}

void ClientSession::granted(pool::Member* m) {
  if (wait_start != pool::Time{}) {   // it was queued
    pool_entry_->wait_seconds->Observe(std::chrono::duration<double>(pool::Clock::now() - wait_start).count());
    wait_start = {};
  }
  server_ = static_cast<ServerConn*>(m);
  server_->link(this);
  if (state_ == State::Login) {
    // First time: the server's values at its login are the baseline (not what an
    // earlier client set), the client's startup values win.
    TrackedValues given = wanted_;
    wanted_ = server_->login_tracked();
    for (size_t i = 0; i < wanted_.size(); i++)
      if (wanted_given_ & (1u << i)) wanted_.set(i, given[i]);
    reset_to_ = wanted_;
    apply_tracked_then(&ClientSession::finish_login);
  } else {
    apply_tracked_then(&ClientSession::continue_after_apply);
  }
}

// Re-applies tracked parameters that differ on this server, then calls next.
void ClientSession::apply_tracked_then(void (ClientSession::*next)()) {
  std::string sql;
  const TrackedValues& have = server_->tracked();
  for (size_t i = 0; i < wanted_.size(); i++) {
    if (wanted_[i] == have[i]) continue;
    sql.append("SET ").append(kTrackedParams[i]).append(" TO ").append(cache::quote_literal(wanted_[i])).append(";");
  }
  if (!(settings_ == server_->settings())) settings_.diff(server_->settings(), sql);
  if (sql.empty()) {
    restored_ = 0;
    return (this->*next)();
  }
  server_->run_internal(sql, [this, next](const pg::ErrorInfo* err) {
    if (err) {
      // The client asked for a value the server rejects: report it as PostgreSQL would
      // at startup. The server is closed rather than reused: a failed replay never
      // leaves a pool in a state that fails the next client too.
      ServerConn* s = server_;
      server_ = nullptr;
      s->unlink();
      s->pool().forget(s);
      s->close_member("replaying session settings failed");
      std::string out;
      pg::write_error(out, pg::ErrorInfo{"FATAL", err->code, err->message, err->detail});
      send(out);
      close_after_flush();
      return;
    }
    wanted_ = server_->tracked();
    server_->settings() = settings_;
    restored_ = 0;
    (this->*next)();
  }, proxy_.config().server_reset_timeout);
}

void ClientSession::report_restored() {
  if (unreported_ == 0) return;
  std::string out;
  for (size_t i = 0; i < kTrackedParams.size(); i++)
    if (unreported_ & (1u << i)) pg::write_param_status(out, kTrackedParams[i], wanted_[i]);
  unreported_ = 0;
  send(out);
}

void ClientSession::tracked_reset(int index) {
  const size_t i = size_t(index);
  // Something after the RESET (set_config() ...) left another value: that one stands.
  if (wanted_[i] != server_->login_tracked()[i] || wanted_[i] == reset_to_[i]) return;
  wanted_.set(i, reset_to_[i]);
  restored_ |= 1u << i;
  unreported_ |= 1u << i;
}


void ClientSession::finish_login() {
  std::string out;
  for (auto& [k, v] : server_->params()) pg::write_param_status(out, k, v);
  pg::write_backend_key(out, cancel_pid_, cancel_key_);
  pg::write_ready(out, 'I');
  send(out);
  state_ = State::Ready;
  proxy_.client_logged_in();
  if (cache_) {
    const ServerTarget& t = *pool_entry_->target;
    cache_->attach(database_, user_, t.host + ":" + std::to_string(t.port) + "/" + t.dbname);
  }
  std::string addr;
  LOG_DEBUG(log_fields(addr), "client logged in");
  if (pool_entry_->mode == conf::PoolMode::Transaction) {
    detach_server(false);
  }
  process_input();
}

void ClientSession::continue_after_apply() { process_input(); }

void ClientSession::wait_failed(const pool::Failure& f) {
  std::string out;
  pg::write_error(out, pg::ErrorInfo{f.severity, f.code, f.message, f.detail});
  send(out);
  close_after_flush();
}

// Ready state. A loop, not recursion: answering locally, being granted a server
// at once, or giving one back come back here through again_ (set by a nested
// call), and each round consumes input or links a server for the message at the
// head, which the next round then forwards.
void ClientSession::process_input() {
  if (in_process_) {
    again_ = true;
    return;
  }
  in_process_ = true;
  do {
    again_ = false;
    if (closing()) break;
    if (admin_) admin_input();
    else process_once();
  } while (again_);
  in_process_ = false;
  update_reading();
}

// Reads from the client while there is somewhere for its bytes to go, and at most
// max_inspect_bytes (one whole message) plus one read past what is being handled.
void ClientSession::update_reading() {
  if (closing() || admin_) return;
  // While a lookup waits (Redis, the catalog) its query stays at the head of the
  // input: reading goes on, bounded, so that a client that leaves is seen at once.
  bool want = state_ == State::Ready && !stalled_ && !classifying_ &&
              in_size() <= proxy_.config().max_inspect_bytes &&
              !((waiting || pin_wait_.queued || (cs_ && cs_->lookup_id != 0)) && in_size() > kMaxBufferedWhileWaiting) &&
              !(server_ && (server_->busy_internal() || server_->over_high_water() ||
                            deferred_ == Defer::UntilReplies));
  if (want != reading()) want ? read_start() : read_stop();
}

void ClientSession::process_once() {
  if (classifying_ || pin_wait_.queued) return;   // resumed by classify_async / pin_slot_free
  // The client is not reading its answers: nothing more is handled (answered here,
  // or sent on to be answered) until it does, whatever it keeps sending.
  if (over_high_water()) {
    stalled_ = true;
    return;
  }
  for (bool served = false; cache_ && fwd_remaining_ == 0;) {
    CacheStep step = try_result_cache();
    if (step == CacheStep::Waiting) return;
    if (step == CacheStep::Pass) {
      if (served && in_size() == 0) return;
      break;
    }
    served = true;
    if (over_high_water()) {   // as above
      stalled_ = true;
      return;
    }
  }
  if (server_) {
    if (server_->busy_internal()) return;
    // A RESET of a tracked parameter went to the server's default: set the
    // client's own back before its next statement (at once if the server stays).
    if (restored_ && fwd_remaining_ == 0 && server_->clean())
      return apply_tracked_then(&ClientSession::continue_after_apply);
    forward();
    return;
  }
  if (in_size() == 0) return;
  if (fwd_remaining_ == 0) {
    // A server is borrowed only for a message that can go out now: never for the
    // first bytes of one that must be read whole (a stalled client holds no server).
    pg::Frame f;
    std::string err;
    switch (pg::frame_frontend(in_data(), in_size(), proxy_.config().max_inspect_bytes, f, err)) {
      case pg::FrameStatus::Partial: return;
      case pg::FrameStatus::Invalid: return protocol_violation(err);
      case pg::FrameStatus::Ready: break;
    }
    if (f.type == 'X') return close();
    if (plan_cache_ && answer_parse_locally()) {
      if (in_size() > 0) again_ = true;
      else if (waiting) pool_entry_->pool->cancel(this);
      return;
    }
  }
  if (proxy_.shutting_down()) return fatal("57P01", "terminating connection: pgsidecar is shutting down");
  // Usually granted at once (granted() asks for another round). While queued, keep
  // reading (a disconnect is seen at once, no epoll changes) up to a bound.
  pool_entry_->pool->acquire(this, params_key_);
}

// Client -> server: forward byte ranges, noting sync points for the release rule.
void ClientSession::forward() {
  const uint8_t* p = in_data();
  size_t avail = in_size(), pos = 0;
  ServerConn* s = server_;
  bool txn = pool_entry_->mode == conf::PoolMode::Transaction;
  const size_t limit = proxy_.config().max_inspect_bytes;
  WriteBatch out(s);
  bool terminate = false;
  deferred_ = Defer::None;
  if (cs_ && cs_->pending_store && fwd_remaining_ == 0) {   // it missed: capture the answer to store it
    if (s->idle_protocol() && s->tx_status() == 'I') {
      s->arm_capture(cache_->max_entry_bytes());
      cs_->capturing = std::move(cs_->pending_store);
    }
    cs_->pending_store.reset();
  }
  while (pos < avail) {
    if (fwd_remaining_ > 0) {
      pos += out.pass(p + pos, avail - pos, fwd_remaining_);
      continue;
    }
    if (closing()) break;   // a local answer's write failed: nothing more for this client
    pg::Frame f;
    std::string err;
    pg::FrameStatus status = pg::frame_frontend(p + pos, avail - pos, limit, f, err);
    if (status == pg::FrameStatus::Partial) break;   // the rest arrives later
    if (status == pg::FrameStatus::Invalid) {
      in_consume(pos);
      out.flush();
      protocol_violation(err);
      return;
    }
    char type = f.type;
    size_t total = f.total;
    if (s->discarding() && type != 'S' && type != 'X') {
      // PostgreSQL skips it (an error earlier in this pipeline): nothing is read,
      // noted, rewritten or answered here either. Sync ends the skipping.
      fwd_remaining_ = total;
      pos += out.pass(p + pos, avail - pos, fwd_remaining_);
      continue;
    }
    cache::ClassificationPtr c;   // of a Query's or Parse's text
    if (f.inspect && (type == 'Q' || type == 'P')) {
      if (type == 'Q') c = handed_on(pos);
      if (!c) c = classification(statement_text(f, p + pos));
      if (!c) break;   // being parsed off the loop: forwarding goes on once it is ready
    }
    if (cache_) note_for_cache(type, p + pos, avail - pos, c);
    if (type == 'Q') {
      if (!f.inspect) {
        // Too long to read: whatever it does to the session is unknown.
        if (txn) s->note_session_state();
        s->note_schema_change();
      } else {
        std::string_view sql = statement_text(f, p + pos);
        if (c->kind == cache::Classification::Kind::Ddl) s->note_schema_change();
        if (cache_ && !txn) follow_setting(c);
        QueryAction action = txn ? inspect_query(sql, c) : QueryAction::Forward;
        if (action == QueryAction::Defer) {
          deferred_ = Defer::UntilQuiet;   // process_deferred() picks it up
          break;
        }
        if (action == QueryAction::WaitPin) break;   // the server goes back below
        if (action == QueryAction::Answered) {
          pos += total;
          continue;
        }
      }
    }
    // A pinned client's Parse of DROP/DEALLOCATE/UNLISTEN ... or a Close: ask the
    // server what is left when the transaction ends (proxy/pinning.h).
    if (pin_.pinned() && ((type == 'P' && c && c->may_clear_state) || type == 'C')) pin_.recheck = true;
    // A Parse (plan cache) that would pin one client too many waits like a Query.
    if (plan_cache_ && type == 'P' && c && pin_full(pins_of(pins_in(*c))) && wait_for_pin_slot()) break;
    if (plan_cache_ && (type == 'P' || type == 'B' || type == 'D' || type == 'C')) {
      if (s->replies_full()) {
        // Answers the server holds (no Sync yet) are asked for; this message waits
        // until half of those due have come (ServerConn::room_for_replies).
        static constexpr uint8_t kFlush[] = {'H', 0, 0, 0, 4};
        out.add(kFlush, sizeof kFlush);
        s->note_unsynced();
        deferred_ = Defer::UntilReplies;
        break;
      }
      size_t replaced = route_statement_message(f, p + pos, avail - pos, c, out);
      if (closing()) {
        // A violation (or a failed write) inside the rewrite: part of this message
        // may be in the batch, uncounted. Nothing goes out, and the server, marked
        // as mid-batch, is closed when the client is (detach_server), never reused.
        s->note_unsynced();
        return;
      }
      if (replaced > 0) {
        s->note_unsynced();
        pos += replaced;
        fwd_remaining_ = total - replaced;   // a Bind's parameters stream on unchanged
        continue;
      }
    }
    switch (type) {
      case 'X': terminate = true; break;
      case 'Q': case 'S': case 'F':
        s->note_sync_point();
        if (cache_) seal_writes(s->syncs_sent());
        break;
      case 'P':
        // Without the plan cache, a named statement outlives the transaction on this
        // server; so may what an unread or session-changing one does when bound.
        if (txn && !plan_cache_ &&
            (!f.inspect || p[pos + pg::kHeaderLen] != 0 || c->has_session_effects() ||
             (!wanted_scs_on() && statement_text(f, p + pos).find('\\') != std::string_view::npos)))
          s->note_session_state();

        if (!plan_cache_) {
          if (!f.inspect) {
            s->note_schema_change();
          } else if (c->kind == cache::Classification::Kind::Ddl) {
            s->note_schema_change();
          }
        }
        s->note_unsynced();
        break;
      case 'B': case 'D': case 'E': case 'C': case 'H': s->note_unsynced(); break;
      default: break;   // CopyData/CopyDone/CopyFail and anything the server will judge itself
    }
    if (terminate) {
      pos += total;
      break;
    }
    fwd_remaining_ = total;
    pos += out.pass(p + pos, avail - pos, fwd_remaining_);
  }
  in_consume(pos);
  pool_entry_->bytes_from_clients += pos;
  out.flush();
  if (terminate) {
    close();
    return;
  }
  if (txn && s->clean() && !pin_.pinned()) {
    // Nothing in flight (everything was answered here, or the next message has not
    // all arrived): the server is not needed until the client sends more.
    detach_server(false);
    if (deferred_ == Defer::None && !classifying_ && !pin_wait_.queued && head_ready()) again_ = true;
  }
}

// The SQL text of a whole, validated Query or Parse.
std::string_view ClientSession::statement_text(const pg::Frame& f, const uint8_t* msg) {
  const char* body = reinterpret_cast<const char*>(msg + pg::kHeaderLen);
  if (f.type == 'Q') return std::string_view(body, f.len - 5);
  std::string_view name(body);   // NUL-terminated: see frame_frontend
  return std::string_view(body + name.size() + 1);
}

// The classification of a Query or Parse text, or null while a long one is parsed
// on the thread pool (process_input() runs again when it is ready).
cache::ClassificationPtr ClientSession::classification(std::string_view sql) {
  if (cache::ClassificationPtr c = proxy_.sql().classify_now(sql)) return c;
  if (!classifying_) {
    classifying_ = true;
    proxy_.sql().classify_async(loop(), std::string(sql), [&proxy = proxy_, pid = cancel_pid_] {
      if (ClientSession* self = proxy.client(pid)) {
        self->classifying_ = false;
        self->process_input();
      }
    });
  }
  return nullptr;
}

// The message at the head of the input can go out now (see frame_frontend).
bool ClientSession::head_ready() const {
  pg::Frame f;
  std::string err;
  return fwd_remaining_ == 0 && in_size() > 0 &&
         pg::frame_frontend(in_data(), in_size(), proxy_.config().max_inspect_bytes, f, err) != pg::FrameStatus::Partial;
}

// Transaction mode, a whole simple Query (c: its classification): records the
// settings it changes, answers what the plan cache owns, refuses what needs a
// dedicated server, and marks the server for a reset after anything it cannot
// follow. Such statements wait (Defer) until everything sent before them has been
// answered, so that replies stay in order and the server's state is known.
ClientSession::QueryAction ClientSession::inspect_query(std::string_view sql, const cache::ClassificationPtr& c) {
  using Kind = cache::SessionEffect::Kind;
  const std::vector<cache::SessionEffect>& effects = c->effects;
  // With standard_conforming_strings off the server reads backslashes in strings
  // where libpg-query does not: it may see other statements than we do.
  bool ambiguous = sql.find('\\') != std::string_view::npos && !wanted_scs_on();
  if (c->may_clear_state && pin_.pinned()) pin_.recheck = true;   // asked at the end of the transaction
  if (effects.empty() && !ambiguous) return QueryAction::Forward;
  // Its local answer must wait for answers due and for the end of a message passing to the client.
  if (!server_->quiet()) return QueryAction::Defer;
  if (ambiguous) {
    server_->note_session_state();
    return QueryAction::Forward;
  }
  const uint8_t pins = pins_of(pins_in(*c));
  if (pin_full(pins) && wait_for_pin_slot()) return QueryAction::WaitPin;
  if (std::optional<pg::ErrorInfo> refusal = pin_refusal(pins, pin_what(*c, pins))) return refuse_query(*refusal);
  // LISTEN pins the client (pin_on listen), or else is refused: notifications would
  // reach whichever client has the server next.
  const bool listens = std::any_of(effects.begin(), effects.end(), [](auto& e) { return e.kind == Kind::Listen; });
  if (listens && !(pins & conf::kPinListen))
    return refuse_query({"ERROR", "0A000",
                         "LISTEN is not supported in transaction pooling mode without pinning: "
                         "notifications would reach whichever client uses the server next; add listen "
                         "to pin_on, or use pool_mode session",
                         ""});
  if (server_->tx_status() == 'I' && !c->transaction_control && !settings_.fits(effects))   // else not followed
    return refuse_query({"ERROR", "53400",
                         "too many settings for transaction pooling to follow (at most " +
                             std::to_string(SettingList::kMaxNames) + " names and " +
                             std::to_string(SettingList::kMaxBytes >> 10) +
                             " kB of SET statements per client); RESET some, or use pool_mode session",
                         ""});
  add_pin(pins, pin_what(*c, pins));
  bool follow = false;
  for (const cache::SessionEffect& e : effects) {
    switch (e.kind) {
      case Kind::Listen:
        break;
      case Kind::Deallocate:
        if (effects.size() == 1 && c->statements == 1 && answer_deallocate(e.name)) return QueryAction::Answered;
        break;
      case Kind::DeallocateAll:
      case Kind::DiscardAll:
        statements_.clear();
        follow = true;
        break;
      case Kind::Set:
      case Kind::Reset:
      case Kind::ResetAll:
      case Kind::Unparsed:   // settled at its ReadyForQuery: if the server ran it, it is not understood
        follow = true;
        break;
      case Kind::SessionObject:
      case Kind::Unknown:
        server_->note_session_state();
        break;
    }
  }
  // With BEGIN/COMMIT among the statements, which of them commit is not known here.
  if (follow && c->transaction_control) server_->note_session_state();
  else if (follow) server_->expect_settings(c);
  return QueryAction::Forward;
}

// A statement inspect_query refuses: its error and ReadyForQuery, and the server never sees it.
ClientSession::QueryAction ClientSession::refuse_query(const pg::ErrorInfo& e) {
  std::string out;
  pg::write_error(out, e);
  pg::write_ready(out, server_->tx_status());
  send(out);
  note_ready();
  return QueryAction::Answered;
}

bool ClientSession::deferral_over() const {
  switch (deferred_) {
    case Defer::None: return false;
    case Defer::UntilQuiet: return server_->quiet() || server_->discarding();   // then it passes, skipped
    case Defer::UntilReplies: return server_->room_for_replies() || server_->discarding();
  }
  return false;
}

bool ClientSession::wanted_scs_on() const {
  return wanted_[tracked_at("standard_conforming_strings")] != "off";
}

// Admin console (proxy/admin.h): admin_users may do everything, stats_users SHOW.
void ClientSession::admin_login() {
  const conf::Config& cfg = proxy_.config();
  auto listed = [&](const std::vector<std::string>& users) {
    return std::find(users.begin(), users.end(), user_) != users.end();
  };
  admin_rights_ = listed(cfg.admin_users);
  if (!admin_rights_ && !listed(cfg.stats_users))
    return fatal("28000", "not allowed: user \"" + user_ + "\" is in neither admin_users nor stats_users");
  std::string out;
  for (auto [k, v] : {std::pair{"server_version", PGSIDECAR_VERSION "/pgsidecar"}, {"server_encoding", "UTF8"},
                      {"client_encoding", "UTF8"}, {"DateStyle", "ISO"}, {"TimeZone", "UTC"},
                      {"integer_datetimes", "on"}, {"standard_conforming_strings", "on"},
                      {"is_superuser", admin_rights_ ? "on" : "off"}})
    pg::write_param_status(out, k, v);
  pg::write_backend_key(out, cancel_pid_, cancel_key_);
  pg::write_ready(out, 'I');
  send(out);
  state_ = State::Ready;
  proxy_.client_logged_in();
  read_start();
}

// Simple Query only, as in PgBouncer's console.
void ClientSession::admin_input() {
  constexpr size_t kMaxAdminMessage = 64 * 1024;
  while (!closing()) {
    if (over_high_water()) {   // answers unread: stop reading until they are (on_drained)
      stalled_ = true;
      read_stop();
      return;
    }
    const uint8_t* p = in_data();
    pg::Frame f;
    std::string err;
    switch (pg::frame_frontend(p, in_size(), kMaxAdminMessage, f, err)) {
      case pg::FrameStatus::Partial: return;
      case pg::FrameStatus::Invalid: return protocol_violation(err);
      case pg::FrameStatus::Ready: break;
    }
    if (f.type == 'X') return close();
    if (f.type != 'Q') return fatal("08P01", "extended query protocol not supported by admin console");
    if (!f.inspect) return protocol_violation("admin console command too long");
    std::string_view sql = statement_text(f, p);
    in_consume(f.total);   // the bytes stay valid until we return to the loop
    std::string out;
    bool answered = admin_query(proxy_, cancel_pid_, sql, admin_rights_, out);
    if (answered) pg::write_ready(out, 'I');
    send(out);
    if (!answered) {   // PAUSE: nothing more until its reply
      read_stop();
      return;
    }
  }
}

void ClientSession::admin_reply_paused() {
  std::string out;
  pg::Writer(out, 'C').cstr("PAUSE").finish();
  pg::write_ready(out, 'I');
  send(out);
  read_start();
  admin_input();
}

void ClientSession::resume_reading() { update_reading(); }

// Janitor (every 100 ms): the PgBouncer timeouts, 0 = off. Activity is the last
// read from the client or ReadyForQuery to it.
void ClientSession::check_timeouts(pool::Time now) {
  // A peer that does not read its last error within kFlushBeforeClose is closed anyway.
  if (fatal_at_ != pool::Time{} && now - fatal_at_ >= kFlushBeforeClose) close();
  if (state_ != State::Ready || admin_ || closing()) return;
  pin_log(now);
  const conf::Config& cfg = proxy_.config();
  auto past = [now](pool::Time since, conf::Duration limit) { return limit.count() > 0 && now - since >= limit; };
  if (pin_wait_.queued) {   // no client unpinned in time: the statement is refused (pin_refusal)
    if (past(pin_wait_.since, cfg.query_wait_timeout)) end_pin_wait(PinWait::End::Expired);
    return;
  }
  if (server_ && server_->query_started() != pool::Time{}) {   // a query is running
    if (!past(server_->query_started(), cfg.query_timeout)) return;
    proxy_.cancel_backend(*server_);
    return fatal("57014", "canceling statement due to query_timeout");
  }
  if (server_ && !server_->clean()) {   // idle in a transaction, mid-batch or mid-message
    if (past(last_active_, cfg.idle_transaction_timeout))
      fatal("25P03", "terminating connection due to idle_transaction_timeout");
    return;
  }
  if (past(last_active_, cfg.client_idle_timeout)) fatal("57P05", "terminating connection due to client_idle_timeout");
}

void ClientSession::server_released() {
  server_ = nullptr;
  if (proxy_.shutting_down()) return fatal("57P01", "terminating connection: pgsidecar is shutting down");
  process_input();
}

void ClientSession::server_lost() {
  // Part of a message the server never finished has reached the client: an
  // ErrorResponse now would land inside it, so the client loses the connection
  // without one (as in fatal()).
  const bool cut = server_ && server_->mid_message();
  server_ = nullptr;
  transaction_ended();   // a COMMIT may have been in flight: count its writes as done
  if (closing()) return;
  if (cut) return close();
  fatal("08006", "server connection lost; the transaction's outcome is unknown if COMMIT was in flight");
}

void ClientSession::on_read_end(int status) {
  std::string addr;
  if (status != UV_EOF) LOG_DEBUG(log_fields(addr), "client read error: %s", uv_strerror(status));
  close();
}

void ClientSession::on_drained() {
  if (server_) server_->read_start();
  // What a deferred statement waits for came while this client's queue was full
  // (ServerConn::process_linked skips it then).
  if (server_ && deferral_over()) process_input();
  if (stalled_) {
    stalled_ = false;
    if (admin_) read_start();
    process_input();
  }
}

// Gives the server back if it is clean, otherwise closes it: a server is never
// handed to another client in an unknown state.
void ClientSession::detach_server(bool client_gone) {
  ServerConn* s = server_;
  if (!s) return;
  if (client_gone && !s->clean()) {
    // A closed socket stops an idle transaction at once, but a running query only
    // when it next writes; cancel it so it does not run on, holding its locks.
    // Closed while still linked: close_member() then sees a message of this
    // client's that is cut, and sends no Terminate into it.
    if (!s->idle_protocol()) proxy_.cancel_backend(*s);
    s->pool().forget(s);
    s->close_member("client disconnected with a transaction or query in flight");
  }
  server_ = nullptr;
  s->unlink();
  if (s->closing()) return;
  if (!client_gone) {
    s->release_to_pool();   // the caller saw it clean
    return;
  }
  const conf::Config& cfg = proxy_.config();
  bool reset = !cfg.server_reset_query.empty() &&
               (pool_entry_->mode == conf::PoolMode::Session || cfg.server_reset_query_always);
  if (!reset) {
    s->release_to_pool();
    return;
  }
  s->run_internal(cfg.server_reset_query, [s](const pg::ErrorInfo* err) {
    if (err) {
      s->pool().forget(s);
      s->close_member("server_reset_query failed");
    } else {
      s->release_to_pool();
    }
  }, cfg.server_reset_timeout);
}

void ClientSession::on_closed() {
  if (pin_wait_.queued) std::erase(pool_entry_->pin_waiters, cancel_pid_);
  drop_pin(pin_.kinds);   // the server is reset before reuse (see add_pin)
  if (pool_entry_) pool_entry_->pool->cancel(this);
  detach_server(true);
  transaction_ended();   // as in server_lost
  proxy_.client_gone(this);
}

}  // namespace proxy
