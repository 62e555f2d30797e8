// Migration status and the migration runner. Status is computed from two cached
// inputs, the manifest (files on disk) and the history (rows of the migration
// table), so most answers need no database round trip; see docs/lockd-protocol.md
// for when each input is re-read.
#pragma once
#include <uv.h>

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "cache/schema_version.h"
#include "conf/config.h"
#include "lockd/manifest.h"
#include "pq/session.h"

namespace lockd {

// One row of the history table, in any of the formats.
struct AppliedRow {
  std::string version;
  std::string checksum;   // pgsidecar: sha256 hex; flyway: CRC32 as text; golang-migrate: ""
  bool success = true;
  std::string error;      // pgsidecar: the failure; golang-migrate dirty: "dirty"
};

struct History {
  bool reachable = false;   // false: the reason says why
  std::string reason;
  std::vector<AppliedRow> rows;
  bool upto_head = false;   // golang-migrate: one row, every version up to it is applied
};

struct Status {
  std::string status;       // current | pending | failed | checksum-mismatch | unknown
  std::optional<std::string> head;
  std::vector<std::string> pending, mismatched;
  std::optional<AppliedRow> failed;
  std::string reason;       // unknown: why
};

Status evaluate(const Manifest& manifest, const History& history, conf::MigrationFormat format);

class Migrations {
 public:
  struct Answer {
    Status status;
    bool cached = false;
    bool manifest_invalid = false;   // status.reason holds the manifest's error
    std::vector<std::string> applied;  // migrate: versions this run applied
    std::vector<std::string> reverted; // migrate with to: versions this run reverted, newest first
    std::string failure;               // migrate: "<file>: <server error>" if a file failed
    std::string refusal_code;          // set: an error answer (code), message in failure
  };
  using Reply = std::function<void(const Answer&)>;

  Migrations(uv_loop_t* loop, const conf::Migrations& cfg, std::string conninfo, cache::SchemaVersion& schema);
  ~Migrations();

  void status(Reply reply);
  // Applies pending migrations. retry: a version that failed, to run again
  // (whether or not its file changed); "" = none. to: instead, revert every
  // applied version above it with its .down.sql file, newest first; "" = none.
  void migrate(Reply reply, const std::string& retry = "", const std::string& to = "");
  void stop();

  // SHOW MIGRATIONS: (version, name, file, state, error) per file as last known,
  // state one of applied, pending, failed, checksum-mismatch, unknown (history not
  // read yet); error: a failed version's error.
  void describe(std::vector<std::vector<std::string>>& rows) const;
  // For metrics and the admin console.
  const std::optional<Status>& last_status() const { return last_; }
  uint64_t applied_total() const { return applied_total_; }
  uint64_t failed_total() const { return failed_total_; }

 private:
  using Clock = std::chrono::steady_clock;
  struct Run;
  void refresh();
  void read_history(pq::Session& session, std::function<void(History)> done);
  bool history_usable() const;
  void take_run_lock(int64_t backoff_ms, std::function<void(pq::QueryResult)> then);
  void apply_next(std::shared_ptr<Run> r);
  void apply_file(std::shared_ptr<Run> r, const MigrationFile& f, std::string content);
  void apply_statements(std::shared_ptr<Run> r, const MigrationFile& f, std::shared_ptr<std::vector<std::string>> stmts,
                        Clock::time_point started);
  void run_statements(std::shared_ptr<Run> r, std::shared_ptr<std::vector<std::string>> stmts, size_t i,
                      std::function<void(size_t, const pq::QueryResult&)> done);
  void run_query(std::shared_ptr<Run> r, std::string sql, std::vector<std::string> params, pq::Session::Done done);
  void record_success(std::shared_ptr<Run> r, const MigrationFile& f, double ms, bool in_transaction);
  void record_failure(std::shared_ptr<Run> r, const MigrationFile& f, const std::string& error);
  void finish_run(std::shared_ptr<Run> r);
  Answer answer(bool cached) const;

  uv_loop_t* loop_;
  conf::Migrations cfg_;
  cache::SchemaVersion& schema_;
  pq::Session pg_;       // LISTENs, reads the history for status
  pq::Session runner_;   // applies migrations (own transactions), open only during a run
  ManifestWatcher manifest_;
  std::optional<History> history_;      // last read; nullopt = must be read
  uint64_t history_generation_ = 0;     // moves on with every change of history_
  // The status of the current inputs, evaluated once: (history, manifest) generations.
  mutable std::optional<std::tuple<uint64_t, uint64_t, Status>> evaluated_;
  Clock::time_point history_read_at_{};
  bool refreshing_ = false, stale_during_refresh_ = false;
  std::vector<Reply> status_waiting_;
  std::optional<Status> last_;
  struct Queued {
    Reply reply;
    std::string retry, to;
  };
  void start_next();
  void start_run(std::vector<std::string> retry, std::string to);
  void plan_revert(std::shared_ptr<Run> r);
  void revert_next(std::shared_ptr<Run> r);
  void revert_file(std::shared_ptr<Run> r, const std::string& version, const std::string& file, std::string content);

  std::vector<Reply> migrate_waiting_;   // callers of the run under way, and those who joined it
  std::deque<Queued> queued_;            // for later runs: retries, reverts, and callers during a revert
  bool running_ = false;
  bool exclusive_ = false;               // the run under way is a retry or a revert: plain callers wait
  bool run_lock_held_ = false;           // the runner's session holds the run lock
  uv_timer_t* lock_timer_ = nullptr;       // the next try of the run lock (lockd/timer.h)
  uint64_t applied_total_ = 0, failed_total_ = 0;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace lockd
