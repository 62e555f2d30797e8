#include "lockd/migrations.h"

#include <algorithm>

#include "conf/log.h"

namespace lockd {
namespace {

constexpr const char* kChannel = "pgsidecar_migrations";

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
};

Migrations::Migrations(uv_loop_t* loop, const conf::Migrations& cfg, std::string conninfo, cache::SchemaVersion& schema)
    : loop_(loop),
      cfg_(cfg),
      schema_(schema),
      pg_(loop, "lockd migration status"),
      runner_(loop, "lockd migration runner"),
      manifest_(loop, cfg.dir, cfg.format) {
  runner_.configure(conninfo, {});
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
    rows.push_back({f.version, f.name, f.file, state});
  }
}

// ---------------------------------------------------------------- the runner

void Migrations::migrate(Reply reply) {
  if (cfg_.format != conf::MigrationFormat::Pgsidecar) {
    Answer a = answer(true);
    a.refusal_code = "read_only_format";
    a.failure = "migrations.format is " + std::string(conf::to_string(cfg_.format)) +
                ": lockd reports its status but does not apply its migrations; run that tool";
    return reply(a);
  }
  migrate_waiting_.push_back(std::move(reply));
  if (!running_) start_run();
}

// Lock, make sure the table exists, read the history under the lock, apply.
void Migrations::start_run() {
  running_ = true;
  auto r = std::make_shared<Run>();
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
    runner_.query("SELECT pg_advisory_lock($1::int, $2::int)", key, [=, this](pq::QueryResult q) {
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
                    apply_next(r);
                  });
                });
    });
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
  for (const AppliedRow& row : r->history.rows) {
    if (!row.success && compare_versions(row.version, f->version) == 0 && row.checksum == f->sha256) {
      r->failure = f->file + ": " + row.error + " (failed before; change the file to retry)";
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
  std::string table = quote_table(cfg_.history_table());
  MigrationFile file = f;
  file.sha256 = sha256_hex(content);   // what is applied is what is recorded, even if edited since the scan
  auto started = std::make_shared<Clock::time_point>();
  runner_.query("BEGIN", {}, [=, this, content = std::move(content)](pq::QueryResult q) mutable {
    if (!q.ok) return finish_run((r->failure = q.message, r->refusal_code = "database_unavailable", r));
    *started = Clock::now();
    runner_.query(std::move(content), {}, [=, this](pq::QueryResult q) {
      if (!q.ok) {
        if (q.connection_failed) return finish_run((r->failure = q.message, r->refusal_code = "database_unavailable", r));
        std::string error = q.message;
        return runner_.query("ROLLBACK", {}, [=, this](pq::QueryResult) { record_failure(r, file, error); });
      }
      double ms = std::chrono::duration<double, std::milli>(Clock::now() - *started).count();
      runner_.query("WITH rec AS (INSERT INTO " + table +
                    " (version, name, checksum, duration_ms, success) VALUES ($1, $2, $3, $4, true)"
                    " ON CONFLICT (version) DO UPDATE SET name = $2, checksum = $3, applied_at = now(),"
                    " duration_ms = $4, success = true, error = NULL RETURNING version)"
                    " SELECT pg_notify('" + std::string(kChannel) + "', version) FROM rec",
                {file.version, file.name, file.sha256, std::to_string(ms)}, [=, this](pq::QueryResult q) {
                  if (!q.ok) {
                    std::string error = q.message;
                    return runner_.query("ROLLBACK", {}, [=, this](pq::QueryResult) { record_failure(r, file, error); });
                  }
                  runner_.query("COMMIT", {}, [=, this](pq::QueryResult q) {
                    if (!q.ok) return record_failure(r, file, q.message);
                    logx::Fields f;
                    f.duration_ms = ms;
                    LOG_INFO(f, "migrations: applied %s", file.file.c_str());
                    r->applied.push_back(file.version);
                    applied_total_++;
                    r->history.rows.push_back({file.version, file.sha256, true, ""});
                    r->next++;
                    apply_next(r);
                  });
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
  runner_.query("WITH rec AS (INSERT INTO " + table +
                " (version, name, checksum, duration_ms, success, error) VALUES ($1, $2, $3, 0, false, $4)"
                " ON CONFLICT (version) DO UPDATE SET name = $2, checksum = $3, applied_at = now(), duration_ms = 0,"
                " success = false, error = $4 RETURNING version)"
                " SELECT pg_notify('" + std::string(kChannel) + "', version) FROM rec",
            {f.version, f.name, f.sha256, error}, [this, r](pq::QueryResult) { finish_run(r); });
}

// Unlocks, re-reads the history and answers everyone who asked during the run.
void Migrations::finish_run(std::shared_ptr<Run> r) {
  if (!r->applied.empty()) schema_.bump("migrations applied by lockd");
  std::vector<std::string> key = run_lock_key(cfg_.history_table());
  std::shared_ptr<bool> alive = alive_;
  // The status after the run, read on the status connection (after the commits),
  // answers every caller and refreshes the cache.
  auto reply_all = [this, r, alive] {
    if (!*alive) return;
    runner_.stop();   // one server connection less until the next run
    read_history(pg_, [this, r](History h) {
      history_ = std::move(h);
      history_generation_++;
      history_read_at_ = Clock::now();
      running_ = false;
      Answer a = answer(false);
      last_ = a.status;
      a.applied = r->applied;
      a.failure = r->failure;
      a.refusal_code = r->refusal_code;
      auto waiting = std::move(migrate_waiting_);
      migrate_waiting_.clear();
      for (Reply& w : waiting) w(a);
    });
  };
  if (!runner_.connected()) return reply_all();   // the server released the lock with the session
  runner_.query("SELECT pg_advisory_unlock($1::int, $2::int)", key, [reply_all](pq::QueryResult) { reply_all(); });
}

}  // namespace lockd
