#include "proxy/server_conn.h"

#include <cstdint>

#include "conf/log.h"
#include "proxy/client_session.h"
#include "proxy/proxy.h"

namespace proxy {
namespace {

uint64_t next_server_id = 0;

// The bounded label pgsidecar_server_disconnects_total uses for a close reason.
const char* disconnect_label(std::string_view reason) {
  static const std::pair<std::string_view, const char*> kPrefixes[] = {
      {"server closed the connection", "server_closed"},
      {"client disconnected", "client_gone"},
      {"server_reset_query failed", "reset_failed"},
      {"replaying session settings failed", "reset_failed"},
      {"DISCARD ALL failed", "reset_failed"},
      {"shutdown", "shutdown"},
      {"RECONNECT", "reconnect"},
      {"server_lifetime reached", "lifetime"},
      {"idle timeout or lifetime", "idle_timeout"},
      {"pool shrunk", "pool_resize"},
      {"pool_mode changed", "pool_resize"},
      {"its database entry", "reload"},
      {"pool full", "pool_resize"},
      {"login failed", "login_failed"},
      {"server_check_query failed", "check_failed"},
      {"server_check_timeout", "check_timeout"},
      {"server_reset_timeout", "reset_timeout"},
      {"cancel_wait_timeout", "cancel_timeout"},
      {"server sent ", "server_error"},
  };
  for (const auto& [prefix, label] : kPrefixes)
    if (reason.substr(0, prefix.size()) == prefix) return label;
  return "protocol_error";
}

// PostgreSQL's own error for a prepared statement whose result type changed,
// which drivers (pgjdbc) answer by preparing and describing again.
std::string plan_changed_error() {
  std::string err;
  pg::write_error(err, pg::ErrorInfo{"ERROR", "0A000", "cached plan must not change result type", {},
                                     "RevalidateCachedQuery"});
  return err;
}
}  // namespace

ServerConn::ServerConn(Proxy& proxy, pool::Pool& pool, PoolEntry& entry,
                       std::vector<std::pair<std::string, std::string>> params)
    : Conn(proxy.loop()), proxy_(proxy), pool_(pool), entry_(entry), target_(*entry.target),
      startup_params_(std::move(params)), id_(++next_server_id) {
  entry_.connections++;
}

void ServerConn::start() {
  state_ = State::Connecting;
  connect(target_.host, target_.port);
}

void ServerConn::on_connected(int status) {
  if (status != 0) {
    fail_login({"FATAL", "08006",
                "could not connect to server " + target_.host + ":" + std::to_string(target_.port) + ": " +
                    uv_strerror(status),
                {}});
    return;
  }
  proxy_.keepalive(*this);
  read_start();
  if (target_.wants_tls()) {
    state_ = State::TlsRequest;
    std::string out;
    pg::Writer(out, 0).u32(pg::kSslRequest).finish();
    send(out);
    return;
  }
  send_startup();
}

void ServerConn::tls_answer() {
  const tls::Context& ctx = *target_.tls;
  char answer = char(in_data()[0]);
  in_consume(1);
  std::string server = target_.host + ":" + std::to_string(target_.port);
  if (answer == 'S') {
    // Anything after 'S' came unencrypted, before the handshake: a man in the middle (CVE-2021-23222).
    if (in_size() > 0) {
      fail_login({"FATAL", "08P01", "server " + server + " sent unencrypted data after accepting TLS", {}});
      return;
    }
    state_ = State::TlsHandshake;
    if (!start_tls(target_.tls, target_.host))
      fail_login({"FATAL", "08006", "could not set up TLS toward server " + server, {}});
    return;
  }
  if (answer == 'N' && ctx.mode < conf::SslMode::Require) return send_startup();
  if (answer == 'N') {
    fail_login({"FATAL", "08001",
                "server " + server + " does not support TLS, and server_tls_sslmode is " +
                    std::string(conf::to_string(ctx.mode)),
                {}});
    return;
  }
  fail_login({"FATAL", "08P01", "server " + server + " answered the TLS request with neither S nor N", {}});
}

void ServerConn::on_tls_ready() { send_startup(); }

void ServerConn::on_tls_failed(const std::string& reason) {
  const tls::Context& ctx = *target_.tls;
  proxy_.tls_handshake_failed("server");
  std::string hint;
  if (reason.find("hostname mismatch") != std::string::npos || reason.find("IP address mismatch") != std::string::npos)
    hint = " (server_tls_sslmode verify-full: the certificate does not name \"" + target_.host +
           "\"; connect by a name it lists, or use verify-ca)";
  else if (reason.find("certificate verify failed") != std::string::npos)
    hint = " (server_tls_sslmode " + std::string(conf::to_string(ctx.mode)) + ": no trusted CA in " +
           (ctx.ca_file.empty() ? std::string("the system's CA store; set server_tls_ca_file") : "server_tls_ca_file " + ctx.ca_file) +
           " signed the server's certificate)";
  fail_login({"FATAL", "08006",
              "TLS with server " + target_.host + ":" + std::to_string(target_.port) + " failed: " + reason + hint, {}});
}

void ServerConn::send_startup() {
  state_ = State::Login;
  std::vector<std::pair<std::string, std::string>> params = {{"user", target_.user}, {"database", target_.dbname}};
  params.insert(params.end(), startup_params_.begin(), startup_params_.end());
  std::string out;
  pg::write_startup(out, params);
  send(out);
}

logx::Fields ServerConn::log_fields(std::string& addr, std::string_view sqlstate) const {
  addr = target_.host + ":" + std::to_string(target_.port);
  logx::Fields f;
  f.server_pid = backend_pid_;
  f.server_addr = addr;
  f.db = pool_.database();
  f.user = target_.user;
  if (client_) f.client_id = client_->cancel_pid();
  f.sqlstate = sqlstate;
  return f;
}

void ServerConn::fail_login(pg::ErrorInfo e) {
  if (!logging_in()) return;
  std::string addr;
  LOG_WARN(log_fields(addr, e.code), "server login to database \"%s\" failed: %s",
           target_.dbname.c_str(), e.message.c_str());
  state_ = State::Idle;   // no longer logging in; the pool retires us
  pool::Failure f{"FATAL", e.code, e.message, e.detail};
  pool_.login_done(this, &f);
}

void ServerConn::on_read() {
  switch (state_) {
    case State::TlsRequest:
      if (in_size() > 0) tls_answer();
      break;
    case State::Login: {
      while (state_ == State::Login) {
        const uint8_t* p = in_data();
        size_t total = 0;
        std::string err;
        if (Whole w = whole_message(kMaxLoginMessage, total, err); w != Whole::Yes) {
          if (w == Whole::Bad) fail_login({"FATAL", "08P01", "invalid message from server during login: " + err, {}});
          return;
        }
        in_consume(total);
        if (!handle_login_message(char(p[0]), p + 5, total - 5)) return;
      }
      if (state_ == State::Idle) process_unlinked();
      break;
    }
    case State::Linked: process_linked(); break;
    case State::Internal: process_internal(); break;
    case State::Idle: process_unlinked(); break;
    default: break;
  }
}

bool ServerConn::handle_login_message(char type, const uint8_t* body, size_t len) {
  switch (type) {
    case 'R': return handle_auth(body, len);
    case 'E': fail_login(pg::parse_error(body, len)); return false;
    case 'S': {
      pg::Reader r(body, len);
      std::string_view name = r.cstr(), value = r.cstr();
      if (r.ok()) note_param(name, value);
      return true;
    }
    case 'K': {
      pg::Reader r(body, len);
      backend_pid_ = r.u32();
      backend_key_ = r.u32();
      return true;
    }
    case 'Z':
      // A server (or a man in the middle) that skips authentication altogether is
      // refused too, or every check in handle_auth could be bypassed.
      if (!authenticated_) {
        fail_login({"FATAL", "08P01", "server sent ReadyForQuery before AuthenticationOk", {}});
        return false;
      }
      state_ = State::Idle;
      tx_status_ = 'I';
      login_tracked_ = tracked_;
      {
        std::string addr;
        LOG_DEBUG(log_fields(addr), "server connection ready");
      }
      proxy_.readiness().note_login(pool_.database(), target_.user, pool::Clock::now());
      pool_.login_done(this, nullptr);
      return false;
    case 'N':
    case 'v':   // NegotiateProtocolVersion: we only speak 3.0 anyway
      return true;
    default:
      fail_login({"FATAL", "08P01", std::string("unexpected message '") + type + "' from server during login", {}});
      return false;
  }
}

bool ServerConn::handle_auth(const uint8_t* body, size_t len) {
  pg::Reader r(body, len);
  uint32_t code = r.u32();
  std::string out;
  auto need_password = [&]() {
    if (!target_.password.empty()) return true;
    fail_login({"FATAL", "28P01",
                "server requested a password for user \"" + target_.user +
                    "\" but none is configured (databases.*.password or auth_file)",
                {}});
    return false;
  };
  // Only the methods server_auth_methods lists; AuthenticationOk counts only once
  // a SCRAM exchange that was started has verified the server's signature.
  auto allowed = [&](uint8_t method, const char* name) {
    if (proxy_.config().server_auth_methods & method) return true;
    fail_login({"FATAL", "28000",
                std::string("server requested ") + name + " authentication, which server_auth_methods does not allow (" +
                    conf::server_auth_method_names(proxy_.config().server_auth_methods) + ")",
                {}});
    return false;
  };
  conf::ChannelBinding binding = proxy_.config().server_channel_binding;
  if (binding == conf::ChannelBinding::Require && (code == pg::kAuthCleartext || code == pg::kAuthMd5)) {
    fail_login({"FATAL", "08P01", "server asked for a password without SCRAM channel binding, and server_channel_binding is require", {}});
    return false;
  }
  switch (code) {
    case pg::kAuthOk:
      if (binding == conf::ChannelBinding::Require && !(scram_ && scram_->plus())) {
        fail_login({"FATAL", "08P01", "server logged pgsidecar in without SCRAM channel binding, and server_channel_binding is require", {}});
        return false;
      }
      if (scram_ && !scram_->verified()) {
        fail_login({"FATAL", "08P01", "server sent AuthenticationOk before its SCRAM signature was verified", {}});
        return false;
      }
      scram_.reset();
      authenticated_ = true;
      return true;
    case pg::kAuthCleartext:
      if (!allowed(conf::kServerAuthCleartext, "password (cleartext)") || !need_password()) return false;
      pg::Writer(out, 'p').cstr(target_.password).finish();
      break;
    case pg::kAuthMd5: {
      if (!allowed(conf::kServerAuthMd5, "md5")) return false;
      std::string_view salt = r.bytes(4);
      if (!r.ok() || !need_password()) return r.ok() ? false : (fail_login({"FATAL", "08P01", "bad md5 request", {}}), false);
      pg::Writer(out, 'p').cstr(auth::md5_response(target_.user, target_.password,
                                                   reinterpret_cast<const uint8_t*>(salt.data()))).finish();
      break;
    }
    case pg::kAuthSasl: {
      if (!allowed(conf::kServerAuthScram, "SCRAM-SHA-256")) return false;
      bool has_scram = false, has_plus = false;
      for (std::string_view mech = r.cstr(); r.ok() && !mech.empty(); mech = r.cstr()) {
        has_scram |= mech == "SCRAM-SHA-256";
        has_plus |= mech == "SCRAM-SHA-256-PLUS";
      }
      // Channel binding (server_channel_binding) over TLS: PLUS when offered; "y" when
      // we could bind but the server did not offer it, so a server that did can tell a downgrade.
      std::string cbind = tls() && binding != conf::ChannelBinding::Disable ? tls()->server_end_point() : "";
      char flag = cbind.empty() ? 'n' : has_plus ? 'p' : 'y';
      if (binding == conf::ChannelBinding::Require && flag != 'p') {
        fail_login({"FATAL", "08P01",
                    "server offers no SCRAM-SHA-256-PLUS" + std::string(tls() ? "" : " (the connection does not use TLS)") +
                        ", and server_channel_binding is require",
                    {}});
        return false;
      }
      if (!(flag == 'p' ? has_plus : has_scram)) {
        fail_login({"FATAL", "08P01", "server offers no SASL mechanism pgsidecar supports (SCRAM-SHA-256)", {}});
        return false;
      }
      if (!need_password()) return false;
      scram_ = std::make_unique<auth::ScramClient>(target_.password, flag, cbind);
      std::string first = scram_->client_first();
      pg::Writer(out, 'p').cstr(flag == 'p' ? "SCRAM-SHA-256-PLUS" : "SCRAM-SHA-256").u32(uint32_t(first.size())).bytes(first).finish();
      break;
    }
    case pg::kAuthSaslContinue: {
      std::string final_msg, err;
      if (!scram_ || !scram_->server_first(r.bytes(r.remaining()), final_msg, err)) {
        fail_login({"FATAL", "08P01", "SCRAM exchange with server failed: " + err, {}});
        return false;
      }
      pg::Writer(out, 'p').bytes(final_msg).finish();
      break;
    }
    case pg::kAuthSaslFinal: {
      std::string err;
      if (!scram_ || !scram_->server_final(r.bytes(r.remaining()), err)) {
        fail_login({"FATAL", "08P01", "server's SCRAM signature did not verify: " + err, {}});
        return false;
      }
      return true;   // scram_ stays until AuthenticationOk, which checks it verified
    }
    default:
      fail_login({"FATAL", "08P01", "unsupported authentication method " + std::to_string(code) + " requested by server", {}});
      return false;
  }
  send(out);
  return true;
}

void ServerConn::note_param(std::string_view name, std::string_view value) {
  bool found = false;
  for (auto& [k, v] : params_) {
    if (k == name) {
      v = value;
      found = true;
      break;
    }
  }
  if (!found) params_.emplace_back(name, value);
  int i = tracked_index(name);
  if (i >= 0) {
    tracked_.set(size_t(i), value);
    if (client_) client_->tracked_param_changed(i, value);
  }
}

bool ServerConn::clean() const {
  return expected_rfq_ == 0 && !unsynced_ && tx_status_ == 'I' && fwd_remaining_ == 0 &&
         (state_ == State::Linked || state_ == State::Idle) && !(client_ && client_->mid_message());
}

void ServerConn::link(ClientSession* client) {
  client_ = client;
  state_ = State::Linked;
  expected_rfq_ = 0;
  unsynced_ = false;
  fwd_remaining_ = 0;
  saw_error_ = false;
  pending_settings_.reset();
  schema_change_pending_ = false;
  syncs_sent_ = syncs_done_ = 0;
  replies_.clear();
  forwarded_since_rfq_ = retrying_ = false;
  query_started_ = transaction_started_ = {};
  shared_bind_epoch_ = 0;
  retry_stmt_.reset();
  capture_state_ = Capture::Off;
  capture_message_ = false;
}

// Server -> client: forward byte ranges, watching only ReadyForQuery and ParameterStatus.
void ServerConn::process_linked() {
  while (process_linked_step()) {
  }
}

// Up to the ReadyForQuery that ends a transaction, or all that is buffered; true
// if a pinned client kept the server and more is buffered past that ReadyForQuery.
bool ServerConn::process_linked_step() {
  const uint8_t* p = in_data();
  size_t avail = in_size(), pos = 0;
  bool release = false;
  WriteBatch out(client_);
  while (pos < avail && !release) {
    if (fwd_remaining_ > 0) {
      capture_passing(p + pos, avail - pos);
      pos += out.pass(p + pos, avail - pos, fwd_remaining_);
      continue;
    }
    pg::Frame f;
    std::string err;
    pg::FrameStatus status = pg::frame_backend(p + pos, avail - pos, f, err);
    if (status == pg::FrameStatus::Partial) break;   // a message pgsidecar reads, not all here yet
    if (status == pg::FrameStatus::Invalid) {
      out.flush();   // the messages before it are whole: the client gets them, then the error
      close_member(err);
      return false;
    }
    const char type = f.type;
    const uint32_t len = f.len;
    const size_t total = f.total;
    if (capture_state_ != Capture::Off) capture_header(type, total);
    if (type == '1' || type == '3' || (type == 'E' && f.inspect)) {   // an error too long to read passes
      ReplyStep step = handle_tracked_reply(type, p + pos, total, out);
      if (step == ReplyStep::Fail) {
        out.flush();
        return false;
      }
      if (step == ReplyStep::Done) {
        pos += total;
        continue;
      }
    }
    if (type == 'E') saw_error_ = true;
    if (type == 'Z' || type == 'S') {   // whole and validated (frame_backend)
      if (type == 'Z') {
        tx_status_ = char(p[pos + 5]);
        if (expected_rfq_ > 0) expected_rfq_--;
        syncs_done_++;
        pool_.note_answered(tx_status_ == 'I');
        observe_durations();
        forwarded_since_rfq_ = false;
        if (!replies_.empty()) settle_replies();
        if (retrying_) {
          retrying_ = false;
          if (idle_protocol() && !client_->mid_message()) {   // nothing of the client's followed the batch
            pos += total;
            rerun_batch();
            continue;
          }
          // A re-run would land behind (or inside) what the client sent since:
          // it gets the error it would have had without the plan cache.
          retry_stmt_.reset();
          out.flush();
          client_->send(plan_changed_error());
          saw_error_ = true;
        }
        if (retry_stmt_ && retry_epoch_ < syncs_done_) retry_stmt_.reset();
        if (pending_settings_) {
          settle_pending_settings();
          out.flush();                 // the server's ParameterStatus first,
          client_->report_restored();  // then the client's own values, then this ReadyForQuery
        }
        if (schema_change_pending_ && tx_status_ == 'I') {
          schema_change_pending_ = false;
          proxy_.schema().bump("DDL passed through the proxy");
        }
        if (capture_state_ != Capture::Off) capture_finish();
        if (saw_error_) client_->batch_failed();
        if (tx_status_ == 'I' && idle_protocol()) client_->transaction_ended();
        else client_->writes_done(syncs_done_, tx_status_ != 'I');   // mid-pipeline: this batch is done
        client_->note_ready();
        saw_error_ = false;
        release = clean() && (pool_.settings().mode == conf::PoolMode::Transaction || proxy_.shutting_down());
      } else {
        pg::Reader r(p + pos + 5, len - 4);
        std::string_view name = r.cstr(), value = r.cstr();
        if (r.ok()) note_param(name, value);
      }
    }
    if (type != 'Z') forwarded_since_rfq_ = true;
    fwd_remaining_ = total;
    capture_passing(p + pos, avail - pos);
    pos += out.pass(p + pos, avail - pos, fwd_remaining_);
  }
  in_consume(pos);
  entry_.bytes_from_servers += pos;
  ClientSession* c = client_;
  out.flush();
  if (release) {
    // The transaction is over: give the server back, then tell the client; a
    // pinned client keeps it (proxy/pinning.h).
    if (proxy_.shutting_down() || c->release_at_transaction_end()) {
      release_to_pool();
      c->server_released();
      return false;
    }
    if (state_ == State::Linked && in_size() > 0) return true;   // kept: read on past the ReadyForQuery
  }
  if (c->over_high_water()) read_stop();   // resumed by the client's on_drained
  else if (c->deferral_over()) c->process_deferred();
  return false;
}

// A ReadyForQuery arrived: the query (if nothing else is in flight) and the
// transaction (if the status is idle again) are over.
void ServerConn::observe_durations() {
  bool query_done = expected_rfq_ == 0 && query_started_ != pool::Time{};
  bool transaction_done = tx_status_ == 'I' && transaction_started_ != pool::Time{};
  if (!query_done && !transaction_done) return;
  pool::Time now = pool::Clock::now();
  auto seconds = [now](pool::Time since) { return std::chrono::duration<double>(now - since).count(); };
  if (query_done) {
    entry_.query_seconds->Observe(seconds(query_started_));
    query_started_ = {};
  }
  if (transaction_done) {
    entry_.transaction_seconds->Observe(seconds(transaction_started_));
    transaction_started_ = {};
  }
}

// A ParseComplete, CloseComplete or ErrorResponse: the plan cache may own it.
// The message is whole and validated (frame_backend).
ServerConn::ReplyStep ServerConn::handle_tracked_reply(char type, const uint8_t* msg, size_t total, WriteBatch& out) {
  if (type == 'E') {
    pg::ErrorInfo e = pg::parse_error(msg + 5, total - 5);
    if (e.code.size() == 5) entry_.errors_by_class[e.code.substr(0, 2)]++;
    if (pool_.settings().mode != conf::PoolMode::Transaction) return ReplyStep::Forward;
    if (e.code == "0A000" && e.message.rfind("cached plan must not change result type", 0) == 0) {
      proxy_.schema().bump("a cached plan's result type changed on the server");
      if (retry_stmt_ && retry_epoch_ == syncs_done_ && !forwarded_since_rfq_) {
        retrying_ = true;   // nothing of this batch reached the client: run it again
        return ReplyStep::Done;
      }
    }
    if (e.code == "26000" && e.message.find("\"pgsidecar_") != std::string::npos) {
      // Dropped behind our back (a DEALLOCATE ALL inside a multi-statement query, say):
      // close and prepare afresh whatever this server is thought to have.
      statements_.invalidate_all();
    }
    if (e.code == "08P01" && shared_bind_epoch_ == syncs_done_ + 1 && e.message.rfind("bind message has ", 0) == 0 &&
        e.message.find(" result formats but query has ") != std::string::npos) {
      // The client's Bind asks for the row shape it described before, and the shared
      // statement now has another: that is PostgreSQL's 0A000, which drivers (pgjdbc)
      // answer by preparing and describing again.
      saw_error_ = true;
      out.flush();
      client_->send(plan_changed_error());
      return ReplyStep::Done;
    }
    PendingReply::Kind front = replies_.empty() ? PendingReply::Kind::Pass : replies_.front().kind;
    if ((front != PendingReply::Kind::Duplicate && front != PendingReply::Kind::TooMany &&
         front != PendingReply::Kind::PinLimit) ||
        e.code != "26000" || e.message.find(kDuplicateMarker) == std::string::npos)
      return ReplyStep::Forward;
    // Our stand-in Bind failed as planned: the client's Parse reused a name it has,
    // would have held more statements than it may, or would have pinned it past the bound.
    std::string err;
    if (front == PendingReply::Kind::Duplicate)
      pg::write_error(err, "ERROR", "42P05", "prepared statement \"" + replies_.front().client_name + "\" already exists");
    else if (front == PendingReply::Kind::PinLimit)
      pg::write_error(err, replies_.front().refusal);
    else
      pg::write_error(err, "ERROR", "53400",
                      "too many prepared statements for this client (max_client_prepared_statements " +
                          std::to_string(proxy_.config().max_client_prepared_statements) + ")");
    replies_.pop_front();
    saw_error_ = true;
    out.flush();
    client_->send(err);
    return ReplyStep::Done;
  }
  if (replies_.empty() || total != 5) return ReplyStep::Forward;
  PendingReply::Kind kind = replies_.front().kind;
  if (replies_.front().reply != type) {
    close_member("replies out of step with the plan cache's requests");
    return ReplyStep::Fail;
  }
  if (type == '1' && replies_.front().prepared) replies_.front().prepared->mark_accepted(&pool_);
  replies_.pop_front();
  switch (kind) {
    case PendingReply::Kind::Swallow: return ReplyStep::Done;
    case PendingReply::Kind::AsParseComplete: out.add(pg::kParseComplete, sizeof pg::kParseComplete); return ReplyStep::Done;
    default: return ReplyStep::Forward;
  }
}

// A message of the response being captured begins: part of the stored answer,
// neutral (protocol bookkeeping), or a reason not to store it.
void ServerConn::capture_header(char type, size_t total) {
  capture_message_ = false;
  if (capture_state_ != Capture::On) return;
  switch (type) {
    case 'T': case 'D': case 'C':
      if (capture_.size() + total > capture_limit_) break;   // too large: streamed, not stored
      capture_message_ = true;
      return;
    case '1': case '2': case '3': case 'S': case 'A': case 'Z':
      return;
    default:   // an error, a notice, NoData, a suspended portal, COPY ...
      break;
  }
  capture_state_ = Capture::Aborted;
  std::string().swap(capture_);
}

void ServerConn::capture_finish() {
  bool complete = capture_state_ == Capture::On && tx_status_ == 'I';
  capture_state_ = Capture::Off;
  capture_message_ = false;
  std::string response;
  if (complete) response.swap(capture_);
  capture_.clear();
  if (client_) client_->capture_done(std::move(response));
}

// The batch armed by arm_retry() failed with 0A000 and its ReadyForQuery was dropped:
// prepare the statement afresh, then send the batch again.
void ServerConn::rerun_batch() {
  pool::StatementPtr st = std::move(retry_stmt_);
  retry_stmt_.reset();
  std::string out;
  pg::Writer(out, 'C').u8('S').cstr(st->name).finish();
  pg::Writer(out, 'P').cstr(st->name).bytes(st->parse_tail).finish();
  out += retry_bytes_;
  PendingReply close{PendingReply::Kind::Swallow, '3', syncs_sent_};
  close.closed = st;
  PendingReply parse{PendingReply::Kind::Swallow, '1', syncs_sent_};
  parse.prepared = st;
  replies_.push_back(std::move(close));
  replies_.push_back(std::move(parse));
  statements_.add(st, proxy_.schema().current(), SIZE_MAX);
  pool::StatementStats& stats = proxy_.statements().stats();
  stats.reprepares++;
  stats.prepares++;
  note_shared_bind();
  note_sync_point();
  if (client_) client_->sync_points_shifted();
  send(out);
}

// A ReadyForQuery ended a batch: Parse/Close messages of it that got no reply were
// skipped after an error, so what they would have done did not happen.
void ServerConn::settle_replies() {
  size_t stale = 0;
  while (stale < replies_.size() && replies_[stale].epoch < syncs_done_) stale++;
  for (size_t i = stale; i-- > 0;) {   // newest first: a skipped Close then Parse leaves it prepared
    PendingReply& r = replies_[i];
    if (r.prepared) statements_.remove(r.prepared.get());
    if (r.closed) statements_.add(r.closed, 0, SIZE_MAX);   // still here; version unknown, so re-prepared before use
    if (client_ && r.client_undo != PendingReply::ClientUndo::None)
      client_->undo_statement(r.client_name, r.client_stmt, r.client_undo == PendingReply::ClientUndo::Forget);
  }
  replies_.pop_front(stale);
}

// The query behind pending_settings_ finished: record its effects if it succeeded.
void ServerConn::settle_pending_settings() {
  using Kind = cache::SessionEffect::Kind;
  cache::ClassificationPtr c = std::move(pending_settings_);
  pending_settings_.reset();
  if (saw_error_) return;   // one statement failed: the whole query rolled back
  // Tracked parameters whose last change in this Query was a RESET (RESET ALL,
  // DISCARD ALL included): back to the client's startup value (tracked_reset).
  unsigned reset = 0;
  for (const cache::SessionEffect& e : c->effects) {
    if (e.kind == Kind::ResetAll || e.kind == Kind::DiscardAll) reset = (1u << kTrackedParams.size()) - 1;
    else if (int i = e.kind == Kind::Set || e.kind == Kind::Reset ? tracked_index(e.name) : -1; i >= 0)
      reset = e.kind == Kind::Reset ? reset | (1u << unsigned(i)) : reset & ~(1u << unsigned(i));
  }
  if (tx_status_ == 'I')
    for (size_t i = 0; i < kTrackedParams.size(); i++)
      if (reset & (1u << i)) client_->tracked_reset(int(i));
  // Transaction mode refused what would not fit (ClientSession::inspect_query);
  // session mode follows settings only for the result cache's key.
  const bool transaction = pool_.settings().mode == conf::PoolMode::Transaction;
  const bool follow = transaction || client_->settings().fits(c->effects);
  if (!follow) client_->settings_unfollowed();
  for (const cache::SessionEffect& e : c->effects) {
    if (e.kind == Kind::DiscardAll || e.kind == Kind::DeallocateAll) statements_.clear();   // all dropped
    if (e.kind == Kind::Unparsed) {
      needs_discard_ = true;   // the server understood it and we did not
      continue;
    }
    if ((e.kind == Kind::Set || e.kind == Kind::Reset) && tracked_index(e.name) >= 0)
      continue;   // followed through ParameterStatus (and reset above)
    if ((e.kind == Kind::ResetAll || e.kind == Kind::DiscardAll) && tx_status_ == 'I') client_->settings_reset();
    if (tx_status_ != 'I') {
      // Inside a block it may yet roll back: not followed; the server is reset
      // before anyone else gets it (the client loses the SET if it commits).
      if (transaction) needs_discard_ = true;
      continue;
    }
    if (follow) client_->settings().apply(e);
    // Session mode (followed for the result cache's key): the server is the client's.
    if (transaction) settings_.apply(e);
  }
}

void ServerConn::release_to_pool() {
  if (client_ && needs_discard_) client_->server_state_wiped();
  client_ = nullptr;
  state_ = State::Idle;
  // A reload pointed the database elsewhere or changed its TLS: nobody gets the old server again.
  if (!entry_.target->same_login(target_)) return close_member("its database entry changed at a reload");
  // A cancel sent for the last client's query may not have reached PostgreSQL yet:
  // nobody else gets this server until it has (or cancel_wait_timeout passes).
  if (proxy_.park_while_cancelling(this)) return;
  if (!needs_discard_) {
    pool_.release(this);
    return;
  }
  // The last client left state behind (prepared statements, cursors, temp tables,
  // settings changed inside a block): wipe it before anyone else gets this server.
  run_internal("DISCARD ALL", [this](const pg::ErrorInfo* err) {
    settings_.clear();
    statements_.clear();
    needs_discard_ = false;
    if (err) return close_member("DISCARD ALL failed");
    state_ = State::Idle;
    pool_.release(this);
  }, proxy_.config().server_reset_timeout);
}

void ServerConn::run_internal(const std::string& sql, InternalDone done, conf::Duration timeout) {
  state_ = State::Internal;
  internal_row_.clear();
  internal_deadline_ = pool::Clock::now() + timeout;
  internal_done_ = std::move(done);
  internal_error_.reset();
  std::string out;
  pg::write_query(out, sql);
  send(out);
  read_start();
}

void ServerConn::process_internal() {
  while (state_ == State::Internal) {
    const uint8_t* p = in_data();
    size_t total = 0;
    std::string err;
    if (Whole w = whole_message(kMaxInternalReply, total, err); w != Whole::Yes) {
      if (w == Whole::Bad) close_member(err);
      return;
    }
    in_consume(total);
    const uint32_t len = uint32_t(total - 1);
    const uint8_t* body = p + 5;
    switch (char(p[0])) {
      case 'E': internal_error_ = std::make_unique<pg::ErrorInfo>(pg::parse_error(body, len - 4)); break;
      case 'D':
        if (internal_row_.empty()) {   // the first row: its values as text, NULL as ""
          pg::Reader r(body, len - 4);
          for (uint16_t i = 0, n = r.u16(); i < n && r.ok(); i++) {
            uint32_t vlen = r.u32();
            internal_row_.emplace_back(vlen == uint32_t(-1) ? std::string_view() : r.bytes(vlen));
          }
          if (!r.ok()) internal_row_.clear();
        }
        break;
      case 'S': {
        pg::Reader r(body, len - 4);
        std::string_view name = r.cstr(), value = r.cstr();
        if (r.ok()) note_param(name, value);
        break;
      }
      case 'Z': {
        tx_status_ = char(body[0]);
        state_ = client_ ? State::Linked : State::Idle;
        internal_deadline_ = {};
        InternalDone done = std::move(internal_done_);
        internal_done_ = nullptr;
        std::unique_ptr<pg::ErrorInfo> err = std::move(internal_error_);
        if (!err && tx_status_ != 'I') err = std::make_unique<pg::ErrorInfo>(pg::ErrorInfo{"ERROR", "25000", "internal query left a transaction open", {}});
        if (done) done(err.get());
        return;
      }
      case 'A':   // a notification for the linked client (a pinned one LISTENs) is its own
        if (client_) client_->send(std::string_view(reinterpret_cast<const char*>(p), total));
        break;
      default: break;   // RowDescription, DataRow, CommandComplete, notices: not ours to forward
    }
  }
}

// Messages while idle in the pool: only asynchronous ones are expected.
void ServerConn::process_unlinked() {
  while (true) {
    const uint8_t* p = in_data();
    size_t total = 0;
    std::string err;
    if (Whole w = whole_message(pg::kMaxBackendInspect, total, err); w != Whole::Yes) {
      if (w == Whole::Bad) close_member(err);
      return;
    }
    in_consume(total);
    const uint32_t len = uint32_t(total - 1);
    switch (char(p[0])) {
      case 'S': {
        pg::Reader r(p + 5, len - 4);
        std::string_view name = r.cstr(), value = r.cstr();
        if (r.ok()) note_param(name, value);
        break;
      }
      case 'N':
      case 'A': break;
      case 'E': {
        pg::ErrorInfo e = pg::parse_error(p + 5, len - 4);
        close_member("server sent " + e.code + " while idle: " + e.message);
        return;
      }
      default: close_member(std::string("unexpected message '") + char(p[0]) + "' from idle server"); return;
    }
  }
}

// Whether the message at the head of the input is all here (total set), still
// arriving, or bad: malformed, or over max_total (err says which).
ServerConn::Whole ServerConn::whole_message(size_t max_total, size_t& total, std::string& err) {
  pg::Frame f;
  pg::FrameStatus status = pg::frame_backend(in_data(), in_size(), f, err);
  if (status == pg::FrameStatus::Invalid) return Whole::Bad;
  if (f.total > max_total) {
    err = "oversized message '" + std::string(1, f.type) + "' from server";
    return Whole::Bad;
  }
  if (status == pg::FrameStatus::Partial || !f.whole) return Whole::No;
  total = f.total;
  return Whole::Yes;
}

void ServerConn::run_check(const std::string& sql) {
  run_internal(sql, [this](const pg::ErrorInfo* err) {
    state_ = State::Idle;
    pool_.check_done(this, err == nullptr);
  }, proxy_.config().server_check_timeout);
}

// A health check or reset query that has not answered in time: the server (a
// stopped backend, a broken network) is closed; whoever waited gets another.
void ServerConn::tick(pool::Time now) {
  if (state_ != State::Internal || internal_deadline_ == pool::Time{} || now < internal_deadline_) return;
  bool check = pool::Member::state == pool::Member::State::Checking;
  std::string addr;
  LOG_WARN(log_fields(addr), "%s passed without an answer from the server",
           check ? "server_check_timeout" : "server_reset_timeout");
  close_member(check ? "server_check_timeout passed" : "server_reset_timeout passed");
  close();   // not after a flush: the server may not be reading
}

void ServerConn::close_member(std::string_view reason) {
  if (closing()) return;
  if (close_reason_.empty()) close_reason_ = reason;
  std::string addr;
  LOG_DEBUG(log_fields(addr), "closing server connection: %.*s", int(reason.size()), reason.data());
  // No Terminate inside a client message that is partly forwarded: the server
  // would read it as the rest of that message.
  const bool cut = client_ && client_->mid_message();
  if (!cut && (state_ == State::Idle || state_ == State::Linked || state_ == State::Internal)) {
    std::string out;
    pg::write_terminate(out);
    send(out);
  }
  close_after_flush();
}

void ServerConn::on_read_end(int status) {
  if (logging_in()) {
    fail_login({"FATAL", "08006", std::string("server closed the connection during login: ") + uv_strerror(status), {}});
    return;
  }
  close_member(std::string("server closed the connection: ") + uv_strerror(status));
  close();
}

void ServerConn::on_drained() {
  if (client_) client_->resume_reading();
}

void ServerConn::on_closed() {
  internal_done_ = nullptr;
  proxy_.server_closed(*this);
  entry_.disconnects[disconnect_label(close_reason_)]++;
  pool_.forget(this);
  entry_.connections--;
  if (ClientSession* c = client_) {
    client_ = nullptr;
    c->server_lost();
  }
}

}  // namespace proxy
