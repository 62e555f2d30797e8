// One client connection: startup, authentication, then queries forwarded to a
// server connection from its pool. In session mode the server is held from
// login to disconnect; in transaction mode it is borrowed per transaction.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "cache/result_cache.h"
#include "conf/log.h"
#include "pool/pool.h"
#include "pool/statements.h"
#include "proxy/auth.h"
#include "proxy/conn.h"
#include "proxy/decoder.h"
#include "proxy/pinning.h"
#include "proxy/protocol.h"
#include "proxy/session_state.h"
#include "proxy/tracked_params.h"

namespace proxy {

class Proxy;
class ServerConn;
struct PendingReply;
struct PoolEntry;

class ClientSession final : public Conn, public pool::Waiter {
 public:
  ClientSession(Proxy& proxy, uint32_t cancel_pid, uint32_t cancel_key);
  void start() { read_start(); }

  uint32_t cancel_pid() const { return cancel_pid_; }
  uint32_t cancel_key() const { return cancel_key_; }
  ServerConn* server() const { return server_; }
  const PoolEntry* pool_entry() const { return pool_entry_; }
  const std::string& user() const { return user_; }
  const std::string& database() const { return database_; }
  std::string_view application_name() const { return wanted_[0]; }
  bool is_admin() const { return admin_; }
  // The fields of this client's log lines; addr holds the text client_addr points at.
  logx::Fields log_fields(std::string& addr, std::string_view sqlstate = {}) const;
  // The admin console's PAUSE finished: its reply goes out now.
  void admin_reply_paused();
  pool::Time started() const { return started_; }
  bool logged_in() const { return state_ == State::Ready; }
  // Idle: logged in and no transaction or query in flight.
  bool idle() const;

  // Called by the linked ServerConn.
  void server_released();                          // transaction over, server back in the pool
  void server_lost();                              // server closed while linked
  void server_state_wiped();                       // the server is reset (DISCARD ALL) as it is released
  void tracked_param_changed(int index, std::string_view value) { wanted_.set(size_t(index), value); }
  void resume_reading();                           // the server's write queue drained
  SettingList& settings() { return settings_; }
  // A Parse (forget) or Close (restore) of a named statement was skipped by the server.
  void undo_statement(const std::string& name, const pool::StatementPtr& st, bool forget);
  // A statement waits in the input until the server has answered everything before
  // it (a Query that changes the session), or half of the answers due (a plan-cache
  // message past ServerConn::kMaxReplies).
  // What it waits for has come: the caller then runs process_deferred().
  bool deferral_over() const;
  void process_deferred() { process_input(); }
  // Part of a message has gone to the server and the rest has not: it cannot be released.
  bool mid_message() const { return fwd_remaining_ > 0; }

  // Pinning (transaction mode; client_session_pinning.cpp, proxy/pinning.h).
  const Pin& pin() const { return pin_; }
  // Waiting for another client to unpin (max_pinned_per_pool), without a server.
  const PinWait& pin_wait() const { return pin_wait_; }
  // Proxy::pin_slot_freed: a slot may be free, try the statement again. False if
  // this client was not waiting.
  bool pin_slot_free();
  // A CancelRequest for this client while it waits: the statement is refused (57014).
  void cancel_pin_wait() { end_pin_wait(PinWait::End::Cancelled); }
  // The linked server is clean at the end of a transaction: true if it may go
  // back to the pool. False keeps it (pinned); when a statement may have removed
  // state, the server is asked first and released if nothing is left.
  bool release_at_transaction_end();
  // A RESET ALL or DISCARD ALL succeeded: no setting pins any more.
  void settings_reset() { drop_pin(conf::kPinSet); }
  // Session mode, a SET past SettingList's bounds: the result cache's key cannot
  // follow the client's settings any more, so it looks nothing up for it.
  void settings_unfollowed() {
    if (cs_) cs_->bypass = true;
  }
  // A RESET (or RESET ALL, DISCARD ALL) of tracked parameter `index` was the last
  // change of it in a Query that succeeded. The server went to its own default; a
  // direct connection goes to the client's startup value, so that is set on the
  // server before the client's next statement (restored_).
  void tracked_reset(int index);
  // The ParameterStatus of the values tracked_reset() restored, to the client
  // now: called at the ReadyForQuery, before it passes, so the client never
  // builds a statement on the server default (standard_conforming_strings!).
  void report_restored();

  // Result cache: the response to the query whose capture was armed (see
  // ServerConn::arm_capture); the transaction ended (ReadyForQuery 'I').
  void capture_done(std::string response);
  // Result cache invalidation. Writes are kept per sync point sent (Query, Sync,
  // FunctionCall): a ReadyForQuery outside a transaction that answers sync point
  // `epoch` (ServerConn::syncs_done) makes the writes sent before it visible, so
  // they are invalidated then, not at the end of a pipeline.
  void writes_done(uint64_t epoch, bool in_transaction);
  // A batch ran again unseen by the client: epochs no longer match; wait for idle.
  void sync_points_shifted();
  // Idle, or the server gone: everything sent is done.
  void transaction_ended();

  // Called by Proxy.
  void fatal(std::string_view code, std::string_view message);   // FATAL ErrorResponse, then close
  void check_timeouts(pool::Time now);                           // query/idle_transaction/client_idle_timeout
  void note_ready() { last_active_ = pool::Clock::now(); }       // a ReadyForQuery went to the client
  // A ReadyForQuery closed a batch with an error: an unnamed Parse in it may have
  // been skipped, so the unnamed statement's text is no longer known.
  void batch_failed() {
    if (cs_) cs_->unnamed.reset();
  }

  // pool::Waiter
  void granted(pool::Member* m) override;
  void wait_failed(const pool::Failure& f) override;

 private:
  enum class State { Startup, Auth, Login, Ready };
  enum class QueryAction { Forward, Answered, Defer, WaitPin };
  static constexpr size_t kMaxBufferedWhileWaiting = 64 * 1024;
  static constexpr size_t kMaxRetryBytes = 8 * 1024;   // largest Bind..Sync kept for a re-run
  static constexpr std::chrono::seconds kFlushBeforeClose{5};   // see fatal_at_

  void on_read() override;
  void on_read_end(int status) override;
  void on_drained() override;
  void on_closed() override;
  void on_tls_ready() override;
  void on_tls_failed(const std::string& reason) override;
  bool tls_offered() const;   // an SSLRequest is answered 'S'

  bool handle_startup_packet();
  void handle_startup_params(const pg::StartupPacket& sp);
  bool handle_password_message(char type, const uint8_t* body, size_t len);
  void auth_ok();
  void finish_login();
  void process_input();
  void process_once();
  void update_reading();
  bool head_ready() const;
  void forward();
  void apply_tracked_then(void (ClientSession::*next)());
  void continue_after_apply();
  void detach_server(bool client_gone);
  void protocol_violation(std::string_view message);
  QueryAction inspect_query(std::string_view sql, const cache::ClassificationPtr& c);
  QueryAction refuse_query(const pg::ErrorInfo& e);
  bool wanted_scs_on() const;
  // Pinning: the kinds a statement would pin for here (pin_on of the pool),
  // whether they would pin one client past max_pinned_per_pool, waiting for a
  // slot (true: the server was given back and the client queued), the refusal
  // ("" if none), pin / unpin bookkeeping, and the server's answer to what is left.
  uint8_t pins_of(uint8_t kinds) const;
  bool pin_full(uint8_t kinds) const;
  bool wait_for_pin_slot();
  void end_pin_wait(PinWait::End end);
  std::optional<pg::ErrorInfo> pin_refusal(uint8_t kinds, std::string_view what);
  void add_pin(uint8_t kinds, std::string_view what);
  void drop_pin(uint8_t kinds);
  void check_pin_state();
  void pin_log(pool::Time now);
  // Plan cache (client_session_statements.cpp).
  size_t route_statement_message(const pg::Frame& f, const uint8_t* msg, size_t avail, const cache::ClassificationPtr& c,
                                 WriteBatch& out);
  static std::string_view statement_text(const pg::Frame& f, const uint8_t* msg);
  cache::ClassificationPtr classification(std::string_view sql);
  size_t route_unnamed_parse(std::string_view query, const cache::ClassificationPtr& c, const uint8_t* msg, size_t total,
                             size_t tail_at, WriteBatch& out);
  bool prepared_here(const pool::StatementPtr& st, WriteBatch& out);
  void ensure_prepared(const pool::StatementPtr& st, WriteBatch& out);
  void prepare_on_server(const pool::StatementPtr& st, PendingReply reply, WriteBatch& out);
  void close_on_server(const pool::StatementPtr& st, WriteBatch& out);
  bool answer_deallocate(const std::string& name);
  bool answer_parse_locally();
  void admin_login();
  void admin_input();
  // Result cache (client_session_cache.cpp).
  struct CacheUnit;
  struct PendingStore {
    std::string key;
    cache::ClassificationPtr statement;
    int64_t ttl_ms = 0;
    uint64_t since = 0;
  };
  enum class CacheStep { Pass, Served, Waiting };
  CacheStep try_result_cache();
  bool parse_cache_unit(CacheUnit& u);
  void build_cache_key(const CacheUnit& u);
  void replay(const cache::StoredResult& r, const CacheUnit& u);
  void shared_lookup_done(const cache::StoredResult* r);
  CacheStep wait_for_catalog();
  cache::ClassificationPtr handed_on(size_t pos);
  bool cache_reads_text() const;
  void forget_parsed(const uint8_t* msg, size_t avail);
  static bool clock_parameter(std::string_view bind_tail);
  // parsed: the classification of a Query's or Parse's text, when forward() has it.
  void note_for_cache(char type, const uint8_t* msg, size_t avail, const cache::ClassificationPtr& parsed);
  void seal_writes(uint64_t epoch);   // a sync point went out: writes_ so far belong to it
  void note_statement(const cache::ClassificationPtr& c);
  void follow_setting(const cache::ClassificationPtr& c);
  void unknown_session_change();

  Proxy& proxy_;
  uint32_t cancel_pid_, cancel_key_;
  pool::Time started_;
  pool::Time last_active_{};               // last read from the client or ReadyForQuery to it (timeouts)
  pool::Time fatal_at_{};                  // a FATAL was sent: closed once written, or kFlushBeforeClose after
  uint8_t encryption_asked_ = 0;           // SSLRequest (1) / GSSENCRequest (2) answered already
  bool direct_tls_ = false;                // the client began with a TLS handshake (no SSLRequest)
  State state_ = State::Startup;
  PoolEntry* pool_entry_ = nullptr;
  ServerConn* server_ = nullptr;
  std::string user_, database_;
  std::string params_key_;                 // startup parameters servers must be opened with
  TrackedValues wanted_;                   // tracked parameter values this client expects
  unsigned wanted_given_ = 0;              // bitmask: values the client set at startup (before first login)
  TrackedValues reset_to_;                 // what RESET returns each tracked parameter to (set at login)
  unsigned restored_ = 0;                  // bitmask: reset to reset_to_ here, the server not yet set
  unsigned unreported_ = 0;                // bitmask: of those, the client not yet told
  std::unique_ptr<auth::ScramServer> scram_;
  bool sasl_started_ = false;
  size_t fwd_remaining_ = 0;               // bytes of a partly forwarded message still to pass through
  SettingList settings_;                   // SET statements in force for this client (transaction mode)
  Pin pin_;                                // session state holding this client to its server (transaction mode)
  PinWait pin_wait_;                       // waiting for a pinned client of the pool to unpin
  bool plan_cache_ = false;                // transaction mode with max_prepared_statements > 0
  pool::ClientStatements statements_;      // the client's named statements (plan cache)
  enum class Defer : uint8_t { None, UntilQuiet, UntilReplies };
  Defer deferred_ = Defer::None;           // see deferral_over()
  bool in_process_ = false, again_ = false;   // process_input() is running / go round once more
  bool classifying_ = false;               // the text at the head is being parsed off the loop
  bool stalled_ = false;                   // its answers passed high water unread: input waits for on_drained
  bool admin_ = false, admin_rights_ = false;   // admin console session; may run control commands
  // Result cache: the cache (null when cache.mode is off) and this client's state
  // for it, made with the startup packet's database only when there is a cache
  // (client_session_cache.cpp).
  cache::ResultCache* cache_ = nullptr;
  struct SyncWrites {
    uint64_t epoch;   // the sync point they were sent before
    cache::Writes writes;
  };
  struct NamedStatement {   // statement null: the name's text is not known (note_named)
    std::string parse_tail;
    cache::ClassificationPtr statement;
  };
  std::pair<NamedStatement*, bool> note_named(std::string_view name);
  void mark_unknown(std::string_view name);
  void forget_named_texts();
  void note_sql_statement_name(const cache::SessionEffect& e);
  struct CacheState {
    std::string key;                              // scratch for building keys
    std::optional<PendingStore> pending_store;    // the statement at the head of the input missed: store its answer
    std::optional<PendingStore> capturing;        // the one whose answer the server is capturing
    uint64_t lookup_id = 0;                       // of the L2 lookup in flight (0 = none)
    uint64_t not_admitted_at = ~uint64_t(0);      // in_consumed() when the head query missed and was not admitted
    uint64_t classified_at = ~uint64_t(0);        // in_consumed() of a Query try_result_cache() classified ...
    cache::ClassificationPtr classified;          // ... and what it found, for forward() (handed_on())
    bool bypass = false;                          // session state the key cannot describe: no lookups
    bool text_mode_unsure = false;                // sent what may change standard_conforming_strings/client_encoding
    cache::ClassificationPtr unnamed;             // the unnamed statement's, from its last Parse
    cache::Writes writes;                         // sent since the last sync point
    std::vector<SyncWrites> sync_writes;          // sent before sync points not yet answered
    cache::Writes txn_writes;                     // answered inside the open transaction: invalidated when it ends
    std::unordered_map<std::string, NamedStatement> named;   // without the plan cache: the client's named statements
    bool names_unsure = false;                    // since an unknown session change: new names are not believed either
  };
  std::unique_ptr<CacheState> cs_;   // non-null exactly when cache_ is
};

}  // namespace proxy
