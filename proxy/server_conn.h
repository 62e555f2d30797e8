// A connection from pgsidecar to PostgreSQL: login (trust, cleartext, md5,
// SCRAM-SHA-256), then either idle in its pool, linked to one client (bytes
// forwarded), or running an internal query (reset, health check, SET replay).
#pragma once
#include <algorithm>
#include <array>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "conf/log.h"
#include "cache/statement_cache.h"
#include "pool/pool.h"
#include "pool/statements.h"
#include "proxy/auth.h"
#include "proxy/conn.h"
#include "proxy/decoder.h"
#include "proxy/protocol.h"
#include "proxy/session_state.h"
#include "proxy/tracked_params.h"

namespace proxy {

class ClientSession;
class Proxy;
struct PoolEntry;

// Where and as whom a server connection logs in.
struct ServerTarget {
  std::string host;   // hostname/IP, or a unix socket directory (starts with '/')
  int port = 5432;
  std::string dbname, user, password;
  tls::ContextPtr tls;   // null: plain (server_tls_sslmode disable)
  // TLS is asked for: server_tls_sslmode prefer or stricter, over TCP.
  bool wants_tls() const { return tls && tls->mode >= conf::SslMode::Prefer && !host.empty() && host[0] != '/'; }
  // The same server and database (the login aside).
  bool same_database(const ServerTarget& o) const { return host == o.host && port == o.port && dbname == o.dbname; }
  // The same server, database, login and TLS settings: a server made for one serves the other.
  // Checked as each server goes back to the pool: compares in place, copies nothing.
  bool same_login(const ServerTarget& o) const {
    static const conf::Tls kPlain;
    const conf::Tls& mine = tls ? tls->settings : kPlain;
    const conf::Tls& theirs = o.tls ? o.tls->settings : kPlain;
    return same_database(o) && user == o.user && (tls == o.tls || mine == theirs);
  }
};

// Plan cache, transaction mode: how to treat the reply to one Parse or Close sent
// to the server while linked. Every Parse and Close gets one, in sending order,
// so replies match them one to one; a message skipped because an earlier one in
// its batch failed gets no reply, and is undone when that batch's ReadyForQuery comes.
struct PendingReply {
  enum class Kind : uint8_t {
    Pass,              // the client's own message: forward the reply
    Swallow,           // ours (prepare before use, eviction, re-prepare): drop the reply
    AsParseComplete,   // a Close standing in for a Parse of a statement already prepared here
    Duplicate,         // a Bind that fails, standing in for a Parse of a name the client has: 42P05
    TooMany,           // the same, for a Parse past max_client_prepared_statements: 53400
    PinLimit,          // the same, for a Parse or Bind that would pin past max_pinned_per_pool: 53300
  };
  // For the client's own Parse (Forget the name it registered) or Close (Restore it).
  enum class ClientUndo : uint8_t { None, Forget, Restore };
  Kind kind = Kind::Pass;
  char reply = 0;                    // '1' ParseComplete, '3' CloseComplete, 'E' (Duplicate)
  uint64_t epoch = 0;             // sync points sent before it
  pool::StatementPtr prepared = nullptr;   // a Parse of it was sent here (undo: not prepared after all)
  pool::StatementPtr closed = nullptr;     // a Close of it was sent here (undo: still prepared)
  ClientUndo client_undo = ClientUndo::None;
  std::string client_name = {};            // the client's statement name (also for Duplicate's error)
  pg::ErrorInfo refusal = {};              // PinLimit's error (53300, or 57014 when cancelled while waiting)
  pool::StatementPtr client_stmt = nullptr;
};

// FIFO of PendingReply that keeps its storage: every Parse of the extended protocol
// passes through it, and a std::deque would allocate a block every few messages.
class ReplyQueue {
 public:
  bool empty() const { return head_ == items_.size(); }
  size_t size() const { return items_.size() - head_; }
  PendingReply& front() { return items_[head_]; }
  PendingReply& operator[](size_t i) { return items_[head_ + i]; }
  void push_back(PendingReply r) { items_.push_back(std::move(r)); }
  void pop_front(size_t n = 1) {
    for (size_t i = 0; i < n; i++) items_[head_ + i] = PendingReply{};   // let go of statements now
    head_ += n;
    if (head_ == items_.size()) {
      clear();
    } else if (head_ >= kCompactAt && 2 * head_ >= items_.size()) {
      // Never empty (a pipeline always has a reply due): drop the slots passed,
      // or the vector grows with every message of the session.
      items_.erase(items_.begin(), items_.begin() + long(head_));
      head_ = 0;
    }
  }
  void clear() {
    items_.clear();
    head_ = 0;
  }

 private:
  static constexpr size_t kCompactAt = 64;
  std::vector<PendingReply> items_;
  size_t head_ = 0;
};

// Statement names pgsidecar sends that never exist on a server: a Close of the
// first answers CloseComplete and does nothing; a Bind of the second fails with 26000.
constexpr std::string_view kNoStatement = "pgsidecar none";
constexpr std::string_view kDuplicateMarker = "pgsidecar duplicate";

class ServerConn final : public Conn, public pool::Member {
 public:
  using InternalDone = std::function<void(const pg::ErrorInfo* error)>;

  ServerConn(Proxy& proxy, pool::Pool& pool, PoolEntry& entry, std::vector<std::pair<std::string, std::string>> params);
  void start();

  void link(ClientSession* client);
  void unlink() {
    client_ = nullptr;
    if (state_ == State::Linked) state_ = State::Idle;
  }
  // Back to the pool, clean (the caller checked clean()).
  void release_to_pool();
  ClientSession* client() const { return client_; }
  pool::Pool& pool() { return pool_; }

  // Sends sql as a simple query whose responses are consumed here, not forwarded;
  // the server is closed if it has not answered within timeout.
  void run_internal(const std::string& sql, InternalDone done, conf::Duration timeout);
  // The first row the last internal query returned (text values, NULL as ""); read it in `done`.
  const std::vector<std::string>& internal_row() const { return internal_row_; }
  uint64_t id() const { return id_; }
  bool busy_internal() const { return state_ == State::Internal; }
  char tx_status() const { return tx_status_; }
  pool::Time query_started() const { return query_started_; }
  // Nothing in flight: the next ReadyForQuery answers the next query sent.
  bool idle_protocol() const { return expected_rfq_ == 0 && !unsynced_; }

  // True when nothing is in flight and no transaction is open, and both directions
  // are at a message boundary: safe to give to another client.
  bool clean() const;
  // Bookkeeping of what the linked client sent (see ClientSession::forward).
  void note_sync_point() {
    if (expected_rfq_ == 0) {
      query_started_ = pool::Clock::now();
      if (tx_status_ == 'I' && transaction_started_ == pool::Time{}) transaction_started_ = query_started_;
    }
    expected_rfq_++;
    syncs_sent_++;
    unsynced_ = false;
  }
  void note_unsynced() { unsynced_ = true; }

  // A query with SET/RESET/DISCARD ALL effects the client sent as the next query:
  // they are recorded when it succeeds (all of them, or none if it failed).
  void expect_settings(cache::ClassificationPtr c) { pending_settings_ = std::move(c); }
  SettingList& settings() { return settings_; }
  // The client created state that would outlive its transaction here.
  void note_session_state() { needs_discard_ = true; }
  // DDL went out: the schema version moves on once it is committed.
  void note_schema_change() { schema_change_pending_ = true; }

  // Plan cache: statements prepared here, and the replies to expect.
  pool::ServerStatements& statements() { return statements_; }
  uint64_t syncs_sent() const { return syncs_sent_; }
  void expect_reply(PendingReply r) { replies_.push_back(std::move(r)); }
  // Notes of answers due (each costs about 250 bytes, for a Parse of 15): past
  // kMaxReplies the client's plan-cache messages wait (ClientSession::forward)
  // until the server has answered half of them.
  static constexpr size_t kMaxReplies = 4096;
  bool replies_full() const { return replies_.size() >= kMaxReplies; }
  bool room_for_replies() const { return replies_.size() <= kMaxReplies / 2; }
  // The Bind..Sync batch being sent, for st: kept (the caller fills the returned
  // buffer with its bytes as sent) so that it can run again, unseen by the client,
  // after preparing st afresh if the server finds its result type changed (0A000).
  // This batch binds a shared statement, whose row shape may have changed since the
  // client described it (prepared afresh after DDL, or on a server that never had
  // the old one): a Bind asking for the old shape is then answered as PostgreSQL
  // answers a changed plan, 0A000, which drivers recover from.
  void note_shared_bind() { shared_bind_epoch_ = syncs_sent_ + 1; }
  std::string& arm_retry(const pool::StatementPtr& st) {
    retry_stmt_ = st;
    retry_epoch_ = syncs_sent_;
    return retry_bytes_;
  }

  // Result cache: copy the response to the query about to be sent (RowDescription,
  // DataRows, CommandComplete) as it passes to the client, and hand it over at its
  // ReadyForQuery if it was a complete, error-free answer within limit bytes.
  void arm_capture(size_t limit) {
    capture_.clear();
    capture_limit_ = limit;
    capture_state_ = Capture::On;
  }

  const TrackedValues& tracked() const { return tracked_; }
  // Part of a message has gone to the client and the rest has not come yet.
  bool mid_message() const { return fwd_remaining_ > 0; }
  // No answer due and no message half through to the client: a statement deferred
  // until now may be answered locally or sent.
  bool quiet() const { return idle_protocol() && !mid_message(); }
  // An error came for extended-protocol messages whose Sync has not been sent:
  // PostgreSQL skips whatever the client sends until its Sync.
  bool discarding() const { return saw_error_ && expected_rfq_ == 0 && unsynced_; }
  // The values it had right after login: a new client's defaults, whatever the
  // clients before it set.
  const TrackedValues& login_tracked() const { return login_tracked_; }
  const std::vector<std::pair<std::string, std::string>>& params() const { return params_; }
  uint32_t backend_pid() const { return backend_pid_; }
  uint32_t backend_key() const { return backend_key_; }
  // The fields of this server's log lines; addr holds the text server_addr points at.
  logx::Fields log_fields(std::string& addr, std::string_view sqlstate = {}) const;
  const ServerTarget& target() const { return target_; }

  // pool::Member
  void run_check(const std::string& sql) override;
  void close_member(std::string_view reason) override;
  void tick(pool::Time now) override;

 private:
  enum class State { Resolving, Connecting, TlsRequest, TlsHandshake, Login, Idle, Linked, Internal };

  void on_read() override;
  void on_read_end(int status) override;
  void on_drained() override;
  void on_closed() override;

  void on_connected(int status) override;
  void on_tls_ready() override;
  void on_tls_failed(const std::string& reason) override;
  void tls_answer();   // the server's answer to SSLRequest
  void send_startup();
  bool logging_in() const { return state_ < State::Idle; }
  void settle_pending_settings();
  void settle_replies();
  void observe_durations();
  void rerun_batch();
  void undo_reply(PendingReply& r);
  enum class ReplyStep { Forward, Done, Fail };
  ReplyStep handle_tracked_reply(char type, const uint8_t* msg, size_t total, WriteBatch& out);
  void fail_login(pg::ErrorInfo e);
  bool handle_login_message(char type, const uint8_t* body, size_t len);
  bool handle_auth(const uint8_t* body, size_t len);
  enum class Whole { Yes, No, Bad };
  Whole whole_message(size_t max_total, size_t& total, std::string& err);
  static constexpr size_t kMaxLoginMessage = 64 * 1024, kMaxInternalReply = 1024 * 1024;
  void process_linked();
  bool process_linked_step();
  void process_internal();
  void process_unlinked();
  void note_param(std::string_view name, std::string_view value);

  Proxy& proxy_;
  pool::Pool& pool_;
  PoolEntry& entry_;
  ServerTarget target_;
  std::vector<std::pair<std::string, std::string>> startup_params_;
  State state_ = State::Resolving;
  ClientSession* client_ = nullptr;

  std::vector<std::pair<std::string, std::string>> params_;   // every ParameterStatus seen
  TrackedValues tracked_, login_tracked_;
  uint32_t backend_pid_ = 0, backend_key_ = 0;
  std::unique_ptr<auth::ScramClient> scram_;
  bool authenticated_ = false;   // AuthenticationOk passed every check handle_auth makes

  // Protocol position while linked.
  int expected_rfq_ = 0;      // ReadyForQuery messages still to come for what the client sent
  bool unsynced_ = false;     // extended-protocol messages sent since the last Sync
  char tx_status_ = 'I';
  size_t fwd_remaining_ = 0;  // bytes of a partly forwarded message still to pass through
  pool::Time query_started_{}, transaction_started_{};   // for the duration histograms

  // SET statements in force on this server beyond its startup defaults (transaction mode).
  SettingList settings_;
  cache::ClassificationPtr pending_settings_;   // see expect_settings()
  bool saw_error_ = false;          // an ErrorResponse since the last ReadyForQuery
  bool needs_discard_ = false;      // session state of unknown extent: DISCARD ALL before reuse
  bool schema_change_pending_ = false;

  // Plan cache (transaction mode).
  pool::ServerStatements statements_;
  ReplyQueue replies_;
  uint64_t syncs_sent_ = 0, syncs_done_ = 0;   // Sync/Query/FunctionCall sent, ReadyForQuery received
  bool forwarded_since_rfq_ = false;           // a reply went to the client since the last ReadyForQuery
  pool::StatementPtr retry_stmt_;              // see arm_retry(); null when not armed
  uint64_t retry_epoch_ = 0;
  std::string retry_bytes_;
  bool retrying_ = false;                      // its 0A000 was dropped: drop its ReadyForQuery and re-run
  uint64_t shared_bind_epoch_ = 0;             // see note_shared_bind(); epoch + 1, 0 = none

  // Result cache capture (see arm_capture).
  enum class Capture : uint8_t { Off, On, Aborted };
  void capture_header(char type, size_t total);
  void capture_finish();
  // The next bytes of the message passing now (up to fwd_remaining_ of avail), kept if it is captured.
  void capture_passing(const uint8_t* p, size_t avail) {
    if (capture_message_) capture_.append(reinterpret_cast<const char*>(p), std::min(avail, fwd_remaining_));
  }
  Capture capture_state_ = Capture::Off;
  bool capture_message_ = false;   // the message passing now is part of the response
  std::string capture_;
  size_t capture_limit_ = 0;

  const uint64_t id_;                      // unique for the process (cancel bookkeeping in Proxy)
  pool::Time internal_deadline_{};
  InternalDone internal_done_;
  std::vector<std::string> internal_row_;
  std::unique_ptr<pg::ErrorInfo> internal_error_;
  std::string close_reason_;
};

}  // namespace proxy
