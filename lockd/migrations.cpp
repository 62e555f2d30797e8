#include "lockd/migrations.h"

#include <pg_query.h>

#include <sys/stat.h>

#include <algorithm>
#include <cctype>

#include "conf/log.h"
#include "lockd/timer.h"

namespace lockd {
namespace {

constexpr const char* kChannel = "pgsidecar_migrations";
constexpr int64_t kFirstLockRetryMs = 5, kMaxLockRetryMs = 1000;

// "schema.table" or "table", each part quoted.
std::string quote_table(const std::string& name) {
  size_t dot = name.find('.');
  if (dot == std::string::npos) return pq::quote_ident(name);
  return pq::quote_ident(name.substr(0, dot)) + "." + pq::quote_ident(name.substr(dot + 1));
}

// The advisory lock serializing runs on one history table: (class, hash of table name).
std::vector<std::string> run_lock_key(const std::string& table) {
  std::array<unsigned char, 32> d = sha256("pgsidecar:migrations:" + table);
  int32_t key = int32_t(uint32_t(d[0]) << 24 | uint32_t(d[1]) << 16 | uint32_t(d[2]) << 8 | d[3]);
  return {"1885827939", std::to_string(key)};   // 1885827939 = 'pgsc'
}

const std::string& text(const pq::Row& row, size_t i) {
  static const std::string empty;
  return i < row.size() && row[i] ? *row[i] : empty;
}

// A statement without the comments and blanks before it.
std::string_view past_comments(std::string_view s) {
  for (;;) {
    size_t start = s.find_first_not_of(" \t\r\n");
    if (start == std::string_view::npos) return {};
    s.remove_prefix(start);
    if (s.starts_with("--")) {
      size_t nl = s.find('\n');
      s.remove_prefix(nl == std::string_view::npos ? s.size() : nl);
    } else if (s.starts_with("/*")) {
      size_t end = s.find("*/");
      s.remove_prefix(end == std::string_view::npos ? s.size() : end + 2);
    } else {
      return s;
    }
  }
}

// "statement 2 of 3 (CREATE INDEX ...)": which statement of a file failed; its
// first line, cut at 200 bytes on a UTF-8 character boundary.
std::string describe_statement(const std::vector<std::string>& stmts, size_t i) {
  std::string_view text = past_comments(stmts[i]);
  std::string_view first_line = text.substr(0, text.find('\n'));
  std::string shown(first_line);
  if (shown.size() > 200) {
    size_t cut = 200;
    while (cut > 0 && (static_cast<unsigned char>(shown[cut]) & 0xC0) == 0x80) cut--;
    shown = shown.substr(0, cut) + "...";
  }
  return "statement " + std::to_string(i + 1) + " of " + std::to_string(stmts.size()) + " (" + shown + ")";
}

// BEGIN, COMMIT and their kin: a no-transaction file must not manage a
// transaction itself (a failure inside one would leave it open, its history row in it).
bool transaction_control(std::string_view stmt) {
  std::string word;
  for (char ch : past_comments(stmt)) {
    if (!std::isalpha(static_cast<unsigned char>(ch))) break;
    word += char(std::tolower(static_cast<unsigned char>(ch)));
  }
  static const char* const kWords[] = {"begin", "start", "commit", "end", "rollback", "abort", "savepoint", "release"};
  return std::any_of(std::begin(kWords), std::end(kWords), [&](const char* w) { return word == w; });
}

// A file whose first line is "-- pgsidecar:no-transaction" (blanks around it allowed).
bool no_transaction(const std::string& content) {
  std::string_view first(content);
  first = first.substr(0, first.find('\n'));
  while (!first.empty() && std::isspace(static_cast<unsigned char>(first.back()))) first.remove_suffix(1);
  while (!first.empty() && std::isspace(static_cast<unsigned char>(first.front()))) first.remove_prefix(1);
  return first == "-- pgsidecar:no-transaction";
}

// The statements of a file, as PostgreSQL's parser splits them (libpg_query); on a
// syntax error, err says where and nothing is returned.
std::vector<std::string> split_statements(const std::string& content, std::string& err) {
  std::vector<std::string> out;
  PgQuerySplitResult r = pg_query_split_with_parser(content.c_str());
  if (r.error) {
    err = "cannot split the file into statements (PostgreSQL 15's grammar): " + std::string(r.error->message) +
          " at character " + std::to_string(r.error->cursorpos);
  } else {
    for (int i = 0; i < r.n_stmts; i++) {
      const PgQuerySplitStmt* s = r.stmts[i];
      std::string stmt = content.substr(size_t(s->stmt_location), size_t(s->stmt_len));
      if (past_comments(stmt).empty()) continue;
      if (transaction_control(stmt)) {
        err = "statement " + std::to_string(out.size() + 1) + " (" + std::string(past_comments(stmt).substr(0, 40)) +
              "): a -- pgsidecar:no-transaction file must not manage transactions (BEGIN, COMMIT, ...)";
        out.clear();
        break;
      }
      out.push_back(stmt);
    }
  }
  pg_query_free_split_result(r);
  return out;
}

}  // namespace

Status evaluate(const Manifest& manifest, const History& history, conf::MigrationFormat format) {
  Status s;
  if (!history.reachable) {
    s.status = "unknown";
    s.reason = history.reason;
    return s;
  }
  auto newer = [](const std::string& a, const std::optional<std::string>& b) { return !b || compare_versions(a, *b) > 0; };
  if (format == conf::MigrationFormat::GolangMigrate) {
    if (!history.rows.empty()) {
      const AppliedRow& r = history.rows.front();
      s.head = r.version;
      if (!r.success) s.failed = r;
    }
    for (const MigrationFile& f : manifest.files)
      if (newer(f.version, s.head)) s.pending.push_back(f.version);
  } else {
    auto succeeded = [&](const std::string& v) {
      for (const AppliedRow& r : history.rows)
        if (r.success && compare_versions(r.version, v) == 0) return &r;
      return static_cast<const AppliedRow*>(nullptr);
    };
    for (const AppliedRow& r : history.rows) {
      if (r.success) {
        if (newer(r.version, s.head)) s.head = r.version;
        const MigrationFile* f = manifest.find(r.version);
        std::string expect = !f ? "" : format == conf::MigrationFormat::Flyway ? std::to_string(f->flyway_checksum) : f->sha256;
        if (f && r.checksum != expect) s.mismatched.push_back(r.version);
      } else if (!s.failed && !succeeded(r.version)) {
        // pgsidecar retries a failed version once its file has changed: it is pending again.
        const MigrationFile* f = manifest.find(r.version);
        bool edited = format == conf::MigrationFormat::Pgsidecar && f && f->sha256 != r.checksum;
        if (!edited) s.failed = r;
      }
    }
    for (const MigrationFile& f : manifest.files)
      if (!succeeded(f.version)) s.pending.push_back(f.version);
  }
  s.status = s.failed ? "failed" : !s.mismatched.empty() ? "checksum-mismatch" : !s.pending.empty() ? "pending" : "current";
  return s;
}

struct Migrations::Run {
  Manifest manifest;
  History history;
  std::vector<std::string> applied;
  size_t next = 0;
  std::string failure;       // "<file>: <error>"
  std::string refusal_code;  // set with failure: the error code of the answer
  std::vector<std::string> retry;   // failed versions to run again, whether or not their files changed
  std::string to;                   // set: revert the versions above it instead
  std::vector<std::pair<std::string, std::string>> reverts;   // (version, down file), newest first
  std::vector<std::string> reverted;
};

Migrations::Migrations(uv_loop_t* loop, const conf::Migrations& cfg, std::string conninfo, cache::SchemaVersion& schema)
    : loop_(loop),
      cfg_(cfg),
      schema_(schema),
      pg_(loop, "lockd migration status"),
      runner_(loop, "lockd migration runner"),
      manifest_(loop, cfg.dir, cfg.format) {
  runner_.configure(conninfo, {});
  runner_.on_down([this](bool) { run_lock_held_ = false; });   // the server released it with the session
  pg_.configure(std::move(conninfo), {kChannel});
  pg_.on_notify([this](const std::string&, const std::string&, int) {
    // A migration committed somewhere: the history and the schema have moved on.
    if (refreshing_) stale_during_refresh_ = true;
    history_.reset();
    history_generation_++;
    schema_.bump("a migration was applied (NOTIFY pgsidecar_migrations)");
  });
  pg_.on_down([this](bool) {
    history_.reset();
    history_generation_++;
  });   // notifications may be missed until reconnected
}

Migrations::~Migrations() { stop(); }

void Migrations::stop() {
  *alive_ = false;
  if (lock_timer_) close_timer(std::exchange(lock_timer_, nullptr));
  manifest_.stop();
  pg_.stop();
  runner_.stop();
}

bool Migrations::history_usable() const {
  return history_ && history_->reachable && Clock::now() - history_read_at_ <= cfg_.verify_interval;
}

void Migrations::status(Reply reply) {
  bool expired = history_ && history_->reachable && !history_usable();
  if (manifest_.fresh() && (history_usable() || (expired && cfg_.optimistic))) {
    reply(answer(true));
    if (expired) refresh();   // optimistic: verify in the background
    return;
  }
  status_waiting_.push_back(std::move(reply));
  refresh();
}

// Brings the manifest and, if needed, the history up to date, then answers the waiters.
void Migrations::refresh() {
  if (refreshing_) return;
  refreshing_ = true;
  stale_during_refresh_ = false;
  bool query = !history_usable();
  auto parts = std::make_shared<int>(query ? 2 : 1);
  std::shared_ptr<bool> alive = alive_;
  auto part_done = [this, parts, query, alive] {
    if (!*alive || --*parts > 0) return;
    refreshing_ = false;
    Answer a = answer(!query);
    last_ = a.status;
    auto waiting = std::move(status_waiting_);
    status_waiting_.clear();
    for (Reply& r : waiting) r(a);
    if (stale_during_refresh_) {   // a NOTIFY arrived while reading: read again next time
      history_.reset();
      history_generation_++;
    }
  };
  if (query) {
    read_history(pg_, [this, part_done](History h) {
      history_ = std::move(h);
      history_generation_++;
      history_read_at_ = Clock::now();
      part_done();
    });
  }
  manifest_.get([part_done](const Manifest&) { part_done(); });
}

void Migrations::read_history(pq::Session& session, std::function<void(History)> done) {
  std::string table = quote_table(cfg_.history_table());
  std::string sql;
  switch (cfg_.format) {
    case conf::MigrationFormat::Pgsidecar:
      sql = "SELECT version, checksum, success, coalesce(error, '') FROM " + table;
      break;
    case conf::MigrationFormat::GolangMigrate:
      sql = "SELECT version::text, '', NOT dirty, CASE WHEN dirty THEN 'dirty' ELSE '' END FROM " + table;
      break;
    case conf::MigrationFormat::Flyway:
      sql = "SELECT version, checksum::text, success, '' FROM " + table + " WHERE version IS NOT NULL";
      break;
  }
  session.query(sql, {}, [done = std::move(done)](pq::QueryResult r) {
    History h;
    h.reachable = r.ok || r.sqlstate == "42P01";   // no table yet: nothing applied
    if (!r.ok && r.sqlstate != "42P01") h.reason = r.message;
    for (const pq::Row& row : r.rows) h.rows.push_back({text(row, 0), text(row, 1), text(row, 2) == "t", text(row, 3)});
    done(std::move(h));
  });
}

Migrations::Answer Migrations::answer(bool cached) const {
  Answer a;
  a.cached = cached;
  const Manifest& m = manifest_.last();
  if (!m.error.empty()) {
    a.manifest_invalid = true;
    a.status.status = "unknown";
    a.status.reason = m.error;
    return a;
  }
  if (!history_) {
    a.status = Status{"unknown", {}, {}, {}, {}, "not read yet"};
    return a;
  }
  if (!evaluated_ || std::get<0>(*evaluated_) != history_generation_ || std::get<1>(*evaluated_) != manifest_.generation())
    evaluated_.emplace(history_generation_, manifest_.generation(), evaluate(m, *history_, cfg_.format));
  a.status = std::get<2>(*evaluated_);
  return a;
}

void Migrations::describe(std::vector<std::vector<std::string>>& rows) const {
  Answer a = answer(true);
  auto listed = [](const std::vector<std::string>& v, const std::string& version) {
    return std::find(v.begin(), v.end(), version) != v.end();
  };
  for (const MigrationFile& f : manifest_.last().files) {
    std::string state = !history_ || a.status.status == "unknown" ? "unknown"
                        : a.status.failed && a.status.failed->version == f.version ? "failed"
                        : listed(a.status.mismatched, f.version)                    ? "checksum-mismatch"
                        : listed(a.status.pending, f.version)                       ? "pending"
                                                                                     : "applied";
    rows.push_back({f.version, f.name, f.file, state, state == "failed" ? a.status.failed->error : ""});
  }
}

// ---------------------------------------------------------------- the runner

void Migrations::migrate(Reply reply, const std::string& retry, const std::string& to) {
  if (cfg_.format != conf::MigrationFormat::Pgsidecar) {
    Answer a = answer(true);
    a.refusal_code = "read_only_format";
    a.failure = "migrations.format is " + std::string(conf::to_string(cfg_.format)) +
                ": lockd reports its status but does not apply its migrations; run that tool";
    return reply(a);
  }
  // A plain migrate joins a run under way that applies; a retry or a revert has a
  // run of its own (one under way has decided what it runs), which plain callers
  // do not join.
  if (retry.empty() && to.empty() && running_ && !exclusive_) return migrate_waiting_.push_back(std::move(reply));
  queued_.push_back({std::move(reply), retry, to});
  if (!running_) start_next();
}

// The next run: one retry or revert alone, or the plain requests queued before the next of those.
void Migrations::start_next() {
  if (queued_.empty()) return;
  Queued& front = queued_.front();
  if (!front.to.empty() || !front.retry.empty()) {
    Queued q = std::move(front);
    queued_.pop_front();
    migrate_waiting_.push_back(std::move(q.reply));
    return start_run(q.retry.empty() ? std::vector<std::string>{} : std::vector<std::string>{q.retry}, q.to);
  }
  while (!queued_.empty() && queued_.front().to.empty() && queued_.front().retry.empty()) {
    migrate_waiting_.push_back(std::move(queued_.front().reply));
    queued_.pop_front();
  }
  start_run({}, "");
}

// Lock, make sure the table exists, read the history under the lock, apply (or revert).
void Migrations::start_run(std::vector<std::string> retry, std::string to) {
  running_ = true;
  exclusive_ = !to.empty() || !retry.empty();
  auto r = std::make_shared<Run>();
  r->retry = std::move(retry);
  r->to = std::move(to);
  std::string table = quote_table(cfg_.history_table());
  std::vector<std::string> key = run_lock_key(cfg_.history_table());
  std::shared_ptr<bool> alive = alive_;
  auto failed = [this, r](const pq::QueryResult& q) {
    r->failure = q.message;
    r->refusal_code = q.connection_failed ? "database_unavailable" : "migration_failed";
    finish_run(r);
  };
  manifest_.get([=, this](const Manifest& m) {
    if (!*alive) return;
    r->manifest = m;
    if (!m.error.empty()) {
      r->failure = m.error;
      r->refusal_code = "manifest_invalid";
      return finish_run(r);
    }
    take_run_lock(kFirstLockRetryMs, [=, this](pq::QueryResult q) {
      if (!q.ok) return failed(q);
      runner_.query("CREATE TABLE IF NOT EXISTS " + table +
                    " (version text PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now(), duration_ms double precision NOT NULL,"
                    " success boolean NOT NULL, error text)",
                {}, [=, this](pq::QueryResult q) {
                  if (!q.ok) return failed(q);
                  read_history(runner_, [=, this](History h) {
                    if (!h.reachable) return failed(pq::QueryResult{false, true, "", h.reason, {}});
                    r->history = std::move(h);
                    if (!r->to.empty()) return plan_revert(r);
                    Status s = evaluate(r->manifest, r->history, cfg_.format);
                    for (const std::string& v : r->retry) {
                      // Failed, whether or not its file changed since (then it shows as pending).
                      bool failed = false, succeeded = false;
                      for (const AppliedRow& row : r->history.rows) {
                        if (compare_versions(row.version, v) != 0) continue;
                        (row.success ? succeeded : failed) = true;
                      }
                      if (!failed || succeeded) {
                        r->failure = "migrate --retry " + v + ": version " + v + " has not failed" +
                                     (s.failed ? "; " + s.failed->version + " has" : "");
                        r->refusal_code = "not_failed";
                        return finish_run(r);
                      }
                    }
                    apply_next(r);
                  });
                });
    });
  });
}

// The run lock, without waiting inside a statement: a session blocked in
// pg_advisory_lock is a transaction that CREATE INDEX CONCURRENTLY in another
// sidecar's run waits for, while that session waits for the run: a deadlock. So
// pg_try_advisory_lock, retried after 5 ms doubling to 1 s; then(ok) once held.
void Migrations::take_run_lock(int64_t backoff_ms, std::function<void(pq::QueryResult)> then) {
  runner_.query("SELECT pg_try_advisory_lock($1::int, $2::int)", run_lock_key(cfg_.history_table()),
                [this, backoff_ms, then, alive = alive_](pq::QueryResult q) {
                  if (!*alive) return;
                  if (!q.ok || (!q.rows.empty() && text(q.rows[0], 0) == "t")) {
                    run_lock_held_ = q.ok;
                    return then(std::move(q));
                  }
                  lock_timer_ = make_timer(loop_, [this, backoff_ms, then] {
                    close_timer(std::exchange(lock_timer_, nullptr));
                    take_run_lock(std::min<int64_t>(backoff_ms * 2, kMaxLockRetryMs), then);
                  });
                  start_timer(lock_timer_, backoff_ms);
                });
}

// Applies the next pending file, or finishes. A version that failed before with
// the same checksum is not retried: the file must change first.
void Migrations::apply_next(std::shared_ptr<Run> r) {
  Status s = evaluate(r->manifest, r->history, cfg_.format);
  const MigrationFile* f = nullptr;
  for (; r->next < r->manifest.files.size(); r->next++) {
    const MigrationFile& candidate = r->manifest.files[r->next];
    bool pending = false;
    for (const std::string& v : s.pending) pending |= v == candidate.version;
    if (pending) {
      f = &candidate;
      break;
    }
  }
  if (!f) return finish_run(r);
  const bool retried = std::any_of(r->retry.begin(), r->retry.end(),
                                   [&](const std::string& v) { return compare_versions(v, f->version) == 0; });
  for (const AppliedRow& row : r->history.rows) {
    if (retried) break;
    if (!row.success && compare_versions(row.version, f->version) == 0 && row.checksum == f->sha256) {
      r->failure = f->file + ": " + row.error + " (failed before; change the file, or migrate --retry " + f->version + ")";
      r->refusal_code = "migration_failed";
      return finish_run(r);
    }
  }
  std::string path = cfg_.dir + "/" + f->file;
  auto content = std::make_shared<std::string>();
  auto error = std::make_shared<std::string>();
  std::shared_ptr<bool> alive = alive_;
  MigrationFile file = *f;
  run_blocking(
      loop_, [path, content, error] { read_file(path, *content, *error); },
      [this, r, file, content, error, alive] {
        if (!*alive) return;
        if (!error->empty()) {
          r->failure = *error;
          r->refusal_code = "manifest_invalid";
          return finish_run(r);
        }
        apply_file(r, file, std::move(*content));
      });
}

void Migrations::apply_file(std::shared_ptr<Run> r, const MigrationFile& f, std::string content) {
  MigrationFile file = f;
  file.sha256 = sha256_hex(content);   // what is applied is what is recorded, even if edited since the scan
  if (no_transaction(content)) {
    std::string err;
    auto stmts = std::make_shared<std::vector<std::string>>(split_statements(content, err));
    if (!err.empty()) return record_failure(r, file, err);
    return apply_statements(r, file, stmts, Clock::now());
  }
  auto started = std::make_shared<Clock::time_point>();
  run_query(r, "BEGIN", {}, [=, this, content = std::move(content)](pq::QueryResult q) mutable {
    if (!q.ok) return finish_run((r->failure = q.message, r->refusal_code = "migration_failed", r));
    *started = Clock::now();
    run_query(r, std::move(content), {}, [=, this](pq::QueryResult q) {
      if (!q.ok) {
        std::string error = q.message;
        return run_query(r, "ROLLBACK", {}, [=, this](pq::QueryResult) { record_failure(r, file, error); });
      }
      record_success(r, file, std::chrono::duration<double, std::milli>(Clock::now() - *started).count(), true);
    });
  });
}

// A -- pgsidecar:no-transaction file: one statement at a time, each committed on
// its own (CREATE INDEX CONCURRENTLY, ALTER TYPE ... ADD VALUE, batched backfills).
// A failing statement leaves the ones before it applied; the version is recorded
// as failed, naming that statement, and runs again only with migrate --retry.
void Migrations::apply_statements(std::shared_ptr<Run> r, const MigrationFile& f,
                                  std::shared_ptr<std::vector<std::string>> stmts, Clock::time_point started) {
  run_statements(r, stmts, 0, [=, this](size_t at, const pq::QueryResult& q) {
    if (at == stmts->size())
      return record_success(r, f, std::chrono::duration<double, std::milli>(Clock::now() - started).count(), false);
    // A statement of the file may have opened a transaction: close it first.
    std::string error = describe_statement(*stmts, at) + ": " + q.message;
    run_query(r, "ROLLBACK", {}, [=, this](pq::QueryResult) { record_failure(r, f, error); });
  });
}

// Runs stmts[i..] one by one on the runner; done(at, result): at = stmts.size()
// when all ran, else the index of the one that failed, with its result.
void Migrations::run_statements(std::shared_ptr<Run> r, std::shared_ptr<std::vector<std::string>> stmts, size_t i,
                                std::function<void(size_t, const pq::QueryResult&)> done) {
  if (i == stmts->size()) return done(i, pq::QueryResult{true, false, "", "", {}});
  run_query(r, (*stmts)[i], {}, [this, r, stmts, i, done](pq::QueryResult q) {
    if (!q.ok) return done(i, q);
    run_statements(r, stmts, i + 1, done);
  });
}

// A query of the run under way, only while the runner still holds the run lock
// (a runner that reconnected does not) and the daemon is not stopping; otherwise,
// or when the connection fails, the run ends with database_unavailable and
// writes nothing more: a COMMIT whose answer was lost may have committed.
void Migrations::run_query(std::shared_ptr<Run> r, std::string sql, std::vector<std::string> params,
                           pq::Session::Done done) {
  auto lost = [this, r](const std::string& why) {
    run_lock_held_ = false;
    r->failure = why;
    r->refusal_code = "database_unavailable";
    finish_run(r);
  };
  if (!*alive_ || !run_lock_held_) return lost("the connection holding the migration lock was lost; nothing more ran");
  runner_.query(std::move(sql), std::move(params), [lost, done = std::move(done)](pq::QueryResult q) {
    if (q.connection_failed) return lost(q.message);
    done(std::move(q));
  });
}

// The version's history row, in the file's transaction if it has one, then the next file.
void Migrations::record_success(std::shared_ptr<Run> r, const MigrationFile& file, double ms, bool in_transaction) {
  std::string table = quote_table(cfg_.history_table());
  auto applied = [this, r, file, ms] {
    logx::Fields f;
    f.duration_ms = ms;
    LOG_INFO(f, "migrations: applied %s", file.file.c_str());
    r->applied.push_back(file.version);
    applied_total_++;
    r->history.rows.push_back({file.version, file.sha256, true, ""});
    r->next++;
    apply_next(r);
  };
  run_query(r, "WITH rec AS (INSERT INTO " + table +
                    " (version, name, checksum, duration_ms, success) VALUES ($1, $2, $3, $4, true)"
                    " ON CONFLICT (version) DO UPDATE SET name = $2, checksum = $3, applied_at = now(),"
                    " duration_ms = $4, success = true, error = NULL RETURNING version)"
                    " SELECT pg_notify('" + std::string(kChannel) + "', version) FROM rec",
                {file.version, file.name, file.sha256, std::to_string(ms)}, [=, this](pq::QueryResult q) {
                  if (!q.ok) {
                    std::string error = q.message;
                    if (!in_transaction) return record_failure(r, file, error);
                    return run_query(r, "ROLLBACK", {}, [=, this](pq::QueryResult) { record_failure(r, file, error); });
                  }
                  if (!in_transaction) return applied();
                  run_query(r, "COMMIT", {}, [=, this](pq::QueryResult q) {
                    if (!q.ok) return record_failure(r, file, q.message);
                    applied();
                  });
                });
}

// ---------------------------------------------------------------- reverting

// migrate with to: every applied version above it, newest first, each with its
// "<version>_<name>.down.sql"; refused (nothing reverted) when one is missing.
void Migrations::plan_revert(std::shared_ptr<Run> r) {
  std::vector<std::string> versions;
  for (const AppliedRow& row : r->history.rows)
    if (row.success && compare_versions(row.version, r->to) > 0) versions.push_back(row.version);
  std::sort(versions.begin(), versions.end(),
            [](const std::string& a, const std::string& b) { return compare_versions(a, b) > 0; });
  auto missing = std::make_shared<std::vector<std::string>>();
  for (const std::string& v : versions) {
    const MigrationFile* f = r->manifest.find(v);
    if (!f) {
      missing->push_back("version " + v + " (no migration file)");
      continue;
    }
    if (!f->file.ends_with(".up.sql")) {   // V<version>__<name>.sql: no down convention
      missing->push_back(f->file + " (only <version>_<name>.up.sql files have .down.sql files)");
      continue;
    }
    r->reverts.emplace_back(v, f->file.substr(0, f->file.size() - 7) + ".down.sql");
  }
  std::string dir = cfg_.dir;
  auto files = r->reverts;
  run_blocking(
      loop_,
      [dir, files, missing] {
        struct stat st;
        for (const auto& [version, file] : files)
          if (stat((dir + "/" + file).c_str(), &st) != 0 || !S_ISREG(st.st_mode)) missing->push_back(file);
      },
      [this, r, missing, alive = alive_] {
        if (!*alive) return;
        if (!missing->empty()) {
          std::string list;
          for (const std::string& m : *missing) list += (list.empty() ? "" : ", ") + m;
          r->failure = "cannot revert to " + r->to + ": no down migration for " + list;
          r->refusal_code = "down_missing";
          return finish_run(r);
        }
        revert_next(r);
      });
}

void Migrations::revert_next(std::shared_ptr<Run> r) {
  if (r->reverted.size() == r->reverts.size()) return finish_run(r);
  const std::string version = r->reverts[r->reverted.size()].first;
  const std::string file = r->reverts[r->reverted.size()].second;
  auto content = std::make_shared<std::string>();
  auto error = std::make_shared<std::string>();
  run_blocking(
      loop_, [path = cfg_.dir + "/" + file, content, error] { read_file(path, *content, *error); },
      [this, r, version, file, content, error, alive = alive_] {
        if (!*alive) return;
        if (!error->empty()) {
          r->failure = *error;
          r->refusal_code = "manifest_invalid";
          return finish_run(r);
        }
        revert_file(r, version, file, std::move(*content));
      });
}

// One down file: in a transaction with the deletion of its history row, or (no-
// transaction marker) statement by statement, then the deletion. A failure stops
// the run; the version stays applied.
void Migrations::revert_file(std::shared_ptr<Run> r, const std::string& version, const std::string& file,
                             std::string content) {
  const std::string forget = "WITH gone AS (DELETE FROM " + quote_table(cfg_.history_table()) +
                             " WHERE version = $1 RETURNING version) SELECT pg_notify('" + std::string(kChannel) +
                             "', version) FROM gone";
  auto fail = [this, r, file](const pq::QueryResult& q) {
    r->failure = file + ": " + q.message;
    r->refusal_code = q.connection_failed ? "database_unavailable" : "migration_failed";
    failed_total_++;
    LOG_WARN("migrations: reverting with %s failed: %s", file.c_str(), q.message.c_str());
    finish_run(r);
  };
  auto done = [this, r, version, file] {
    LOG_INFO("migrations: reverted %s with %s", version.c_str(), file.c_str());
    r->reverted.push_back(version);
    revert_next(r);
  };
  if (no_transaction(content)) {
    std::string err;
    auto stmts = std::make_shared<std::vector<std::string>>(split_statements(content, err));
    if (!err.empty()) return fail(pq::QueryResult{false, false, "", err, {}});
    return run_statements(r, stmts, 0, [=, this](size_t at, const pq::QueryResult& q) {
      if (at < stmts->size()) {
        pq::QueryResult named = q;
        named.message = describe_statement(*stmts, at) + ": " + q.message;
        return fail(named);
      }
      run_query(r, forget, {version}, [fail, done](pq::QueryResult q) { q.ok ? done() : fail(q); });
    });
  }
  run_query(r, "BEGIN", {}, [=, this, content = std::move(content)](pq::QueryResult q) mutable {
    if (!q.ok) return fail(q);
    run_query(r, std::move(content), {}, [=, this](pq::QueryResult q) {
      auto rollback = [this, r, fail](pq::QueryResult why) {
        run_query(r, "ROLLBACK", {}, [fail, why](pq::QueryResult) { fail(why); });
      };
      if (!q.ok) return rollback(q);
      run_query(r, forget, {version}, [=, this](pq::QueryResult q) {
        if (!q.ok) return rollback(q);
        run_query(r, "COMMIT", {}, [fail, done](pq::QueryResult q) { q.ok ? done() : fail(q); });
      });
    });
  });
}

// The file's transaction is rolled back; the failure gets a row of its own.
void Migrations::record_failure(std::shared_ptr<Run> r, const MigrationFile& f, const std::string& error) {
  failed_total_++;
  LOG_WARN("migrations: %s failed: %s", f.file.c_str(), error.c_str());
  r->failure = f.file + ": " + error;
  r->refusal_code = "migration_failed";
  std::string table = quote_table(cfg_.history_table());
  run_query(r, "WITH rec AS (INSERT INTO " + table +
                " (version, name, checksum, duration_ms, success, error) VALUES ($1, $2, $3, 0, false, $4)"
                " ON CONFLICT (version) DO UPDATE SET name = $2, checksum = $3, applied_at = now(), duration_ms = 0,"
                " success = false, error = $4 RETURNING version)"
                " SELECT pg_notify('" + std::string(kChannel) + "', version) FROM rec",
            {f.version, f.name, f.sha256, error}, [this, r](pq::QueryResult q) {
              if (!q.ok) LOG_WARN("migrations: recording the failure failed: %s", q.message.c_str());
              finish_run(r);
            });
}

// Unlocks, re-reads the history and answers everyone who asked during the run.
void Migrations::finish_run(std::shared_ptr<Run> r) {
  if (!r->applied.empty()) schema_.bump("migrations applied by lockd");
  if (!r->reverted.empty()) schema_.bump("migrations reverted by lockd");
  std::vector<std::string> key = run_lock_key(cfg_.history_table());
  std::shared_ptr<bool> alive = alive_;
  // The status after the run, read on the status connection (after the commits),
  // answers every caller and refreshes the cache.
  auto reply_all = [this, r, alive] {
    if (!*alive) return;
    runner_.stop();   // one server connection less until the next run
    run_lock_held_ = false;
    read_history(pg_, [this, r, alive](History h) {
      if (!*alive) return;
      history_ = std::move(h);
      history_generation_++;
      history_read_at_ = Clock::now();
      running_ = false;
      Answer a = answer(false);
      last_ = a.status;
      exclusive_ = false;
      a.applied = r->applied;
      a.reverted = r->reverted;
      a.failure = r->failure;
      a.refusal_code = r->refusal_code;
      auto waiting = std::move(migrate_waiting_);
      migrate_waiting_.clear();
      for (Reply& w : waiting) w(a);
      if (!running_) start_next();
    });
  };
  if (!runner_.connected()) return reply_all();   // the server released the lock with the session
  runner_.query("SELECT pg_advisory_unlock($1::int, $2::int)", key, [reply_all](pq::QueryResult) { reply_all(); });
}

}  // namespace lockd
