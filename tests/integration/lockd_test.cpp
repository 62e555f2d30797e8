// lockd: the local unix-socket service for migration status, migrations run
// once across sidecars, and FIFO named locks (docs/lockd-protocol.md is the
// spec these tests check). Every test gets its own PostgreSQL database and its
// own migrations directory, because running the binary directly shares one
// cluster between all tests.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <latch>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "harness.h"

using namespace itest;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

// ---------------------------------------------------------------- client

// One connection to a lockd socket: JSON lines out, JSON lines in.
class LockdClient {
 public:
  enum class Rd { Ok, Closed, Timeout };

  LockdClient() = default;
  ~LockdClient() { close(); }
  LockdClient(const LockdClient&) = delete;
  LockdClient& operator=(const LockdClient&) = delete;
  LockdClient(LockdClient&& o) noexcept : fd_(o.fd_), buf_(std::move(o.buf_)) { o.fd_ = -1; }
  LockdClient& operator=(LockdClient&& o) noexcept {
    if (this != &o) {
      close();
      fd_ = o.fd_;
      buf_ = std::move(o.buf_);
      o.fd_ = -1;
    }
    return *this;
  }

  bool connect(const std::string& path) {
    close();
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (path.size() >= sizeof a.sun_path) return false;
    std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return false;
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      close();
      return false;
    }
    return true;
  }

  bool connected() const { return fd_ >= 0; }

  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    buf_.clear();
  }

  bool send_raw(std::string_view s) {
    size_t off = 0;
    while (off < s.size()) {
      ssize_t n = ::send(fd_, s.data() + off, s.size() - off, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        return false;
      }
      off += size_t(n);
    }
    return true;
  }
  bool send(const json& j) { return send_raw(j.dump() + "\n"); }

  // One line without its '\n'.
  Rd read_line(std::string& out, int timeout_ms) {
    auto t0 = Clock::now();
    for (;;) {
      size_t nl = buf_.find('\n');
      if (nl != std::string::npos) {
        out = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return Rd::Ok;
      }
      if (fd_ < 0) return Rd::Closed;
      long left = timeout_ms - ms_since(t0);
      if (left <= 0) return Rd::Timeout;
      pollfd p{fd_, POLLIN, 0};
      int r = ::poll(&p, 1, int(left));
      if (r < 0 && errno == EINTR) continue;
      if (r == 0) return Rd::Timeout;
      char b[65536];
      ssize_t n = ::recv(fd_, b, sizeof b, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return Rd::Closed;
      buf_.append(b, size_t(n));
    }
  }

  // The next line as JSON; on trouble an object {"_io": "timeout"|"closed"|"not json: ..."}
  // so that assertions on it fail with a readable message.
  json read(int timeout_ms = 15000) {
    std::string line;
    switch (read_line(line, timeout_ms)) {
      case Rd::Timeout: return json{{"_io", "timeout after " + std::to_string(timeout_ms) + " ms"}};
      case Rd::Closed: return json{{"_io", "closed"}};
      case Rd::Ok: break;
    }
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded()) return json{{"_io", "not json: " + line}};
    return j;
  }

  // Sends a request and reads one answer line.
  json call(const json& req, int timeout_ms = 15000) {
    if (!send(req)) return json{{"_io", "send failed"}};
    return read(timeout_ms);
  }

  // Reads lines until one that is not a "queued" line (the final answer of a
  // lock request); the queued lines go to *interim.
  json final_answer(int timeout_ms, std::vector<json>* interim = nullptr) {
    auto t0 = Clock::now();
    for (;;) {
      long left = timeout_ms - ms_since(t0);
      json j = read(int(left > 0 ? left : 0));
      if (j.is_object() && j.contains("state") && j["state"] == "queued") {
        if (interim) interim->push_back(j);
        continue;
      }
      return j;
    }
  }
  json lock(const json& req, int timeout_ms = 15000, std::vector<json>* interim = nullptr) {
    if (!send(req)) return json{{"_io", "send failed"}};
    return final_answer(timeout_ms, interim);
  }

  // True once the peer has closed the connection (data before EOF is discarded).
  bool wait_closed(int timeout_ms) {
    auto t0 = Clock::now();
    std::string line;
    for (;;) {
      long left = timeout_ms - ms_since(t0);
      if (left <= 0) return false;
      Rd r = read_line(line, int(left));
      if (r == Rd::Closed) return true;
      if (r == Rd::Timeout) return false;
    }
  }

 private:
  int fd_ = -1;
  std::string buf_;
};

// A field of an answer as text: strings unquoted, anything else as compact JSON
// (so null -> "null", ["1","2"] -> ["1","2"], true -> "true"); "<missing>" if absent.
std::string str(const json& j, const std::string& key) {
  if (!j.is_object() || !j.contains(key)) return "<missing>";
  const json& v = j[key];
  return v.is_string() ? v.get<std::string>() : v.dump();
}
std::string code(const json& j) {
  if (j.is_object() && j.contains("error") && j["error"].is_object() && j["error"].contains("code") &&
      j["error"]["code"].is_string())
    return j["error"]["code"].get<std::string>();
  return "<none>";
}
std::string err_message(const json& j) {
  if (j.is_object() && j.contains("error") && j["error"].is_object() && j["error"].contains("message") &&
      j["error"]["message"].is_string())
    return j["error"]["message"].get<std::string>();
  return "<none>";
}
long num(const json& j, const std::string& key) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_number()) return -1;
  return j[key].get<long>();
}

// ---------------------------------------------------------------- setup

std::string sock(const Daemon& d) { return d.dir() + "/lockd.sock"; }

bool wait_socket(const std::string& path, int timeout_ms = 10000) {
  return eventually([&] {
    LockdClient c;
    return c.connect(path);
  }, timeout_ms);
}

#define START_LOCKD(d)                                                                              \
  do {                                                                                              \
    START_DAEMON(d);                                                                                \
    ASSERT_TRUE(wait_socket(sock(d))) << "lockd socket " << sock(d) << " does not accept connections"; \
  } while (0)

LockdClient client(const Daemon& d) {
  LockdClient c;
  EXPECT_TRUE(c.connect(sock(d))) << "connect " << sock(d) << ": " << strerror(errno);
  return c;
}

// A fresh database owned by app.
std::string fresh_db(const std::string& name) {
  bool ok = false;
  std::string out = cluster().psql("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)", "postgres", &ok);
  EXPECT_TRUE(ok) << out;
  out = cluster().psql("CREATE DATABASE " + name + " OWNER app", "postgres", &ok);
  EXPECT_TRUE(ok) << out;
  return name;
}

// Runs SQL as superuser on db.
QResult q(const std::string& db, const std::string& sql) {
  ConnectResult cr = pg_connect(cluster().super_conninfo(db));
  if (!cr.ok()) {
    QResult r;
    r.error = "connect: " + cr.error;
    return r;
  }
  return exec(cr.conn.get(), sql);
}
// All rows, each as "c1|c2|...", joined by "\n" (or the error).
std::string rows(const std::string& db, const std::string& sql) {
  QResult r = q(db, sql);
  if (!r.ok) return "ERROR: " + r.describe();
  std::string out;
  for (const auto& row : r.rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) line += (i ? "|" : "") + row[i];
    out += (out.empty() ? "" : "\n") + line;
  }
  return out;
}

// A migrations directory of its own (removed at the end).
struct MigDir {
  std::string path;
  MigDir() {
    char t[] = "/tmp/pgsc-lt-mig-XXXXXX";
    if (mkdtemp(t)) path = t;
  }
  ~MigDir() {
    std::error_code ec;
    if (!path.empty()) fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return path + "/" + name; }
  void write(const std::string& name, const std::string& sql) const { write_file(file(name), sql); }
};

std::string sha256_hex_of(const std::string& data) {
  ProcResult r = run_process({"sha256sum"}, 10000, {}, data);
  return r.output.size() >= 64 ? r.output.substr(0, 64) : "sha256sum failed: " + r.output;
}
std::string sha256_file(const std::string& path) {
  ProcResult r = run_process({"sha256sum", path}, 10000);
  return r.output.size() >= 64 ? r.output.substr(0, 64) : "sha256sum failed: " + r.output;
}

// base_config() plus lockd (socket in the daemon's dir) on `db`, and migrations
// from `migdir` (none if empty). `lockd_more`/`mig_more` are appended inside
// the flow mappings (", key: value").
DaemonConfig lockd_config(const std::string& db, const std::string& migdir, const std::string& mig_more = "",
                          const std::string& lockd_more = "") {
  DaemonConfig c = base_config();
  if (db != "app") c.db(db, db_entry("dbname: " + db));
  c.set("lockd", "{socket_path: \"@DIR@/lockd.sock\", database: " + db + ", user: app" + lockd_more + "}");
  if (!migdir.empty())
    c.set("migrations", "{dir: \"" + migdir + "\", database: " + db + ", user: app, verify_interval: 1h" +
                            mig_more + "}");
  return c;
}

const json kStatus = {{"op", "status"}};
const json kMigrate = {{"op", "migrate"}};
json lock_req(const std::string& name, std::optional<long> timeout_ms = std::nullopt) {
  json j = {{"op", "lock"}, {"name", name}};
  if (timeout_ms) j["timeout_ms"] = *timeout_ms;
  return j;
}
json unlock_req(const std::string& name) { return {{"op", "unlock"}, {"name", name}}; }
json locks_req(const std::string& name) { return {{"op", "locks"}, {"name", name}}; }

// The entry for `name` in a locks answer, or null.
json lock_entry(const json& answer, const std::string& name) {
  if (!answer.is_object() || !answer.contains("locks") || !answer["locks"].is_array()) return nullptr;
  for (const json& e : answer["locks"])
    if (e.is_object() && e.contains("name") && e["name"] == name) return e;
  return nullptr;
}

// Sends raw bytes (the peer may close while we send) and reads one answer line.
json raw_call(LockdClient& c, const std::string& bytes) {
  (void)c.send_raw(bytes);
  return c.read(5000);
}

// JSON objects among the lines of a ctl's output.
std::vector<json> json_lines(const std::string& out) {
  std::vector<json> v;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    json j = json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.is_object()) v.push_back(j);
  }
  return v;
}

}  // namespace

// ================================================================ status

TEST(LockdStatus, StatusColdThenCached) {
  std::string db = fresh_db("lt_status_cold");
  MigDir m;
  m.write("1_create_users.up.sql", "CREATE TABLE users (id int PRIMARY KEY);\n");
  m.write("2_add_email.up.sql", "ALTER TABLE users ADD COLUMN email text;\n");
  Daemon d(lockd_config(db, m.path));
  START_LOCKD(d);

  struct stat st{};
  ASSERT_EQ(::stat(sock(d).c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0660u) << "default lockd.socket_mode";

  LockdClient c = client(d);
  json a1 = c.call(kStatus);
  EXPECT_EQ(str(a1, "ok"), "true") << a1.dump();
  EXPECT_EQ(str(a1, "status"), "pending") << a1.dump();
  EXPECT_EQ(str(a1, "pending"), R"(["1","2"])") << a1.dump();
  EXPECT_EQ(str(a1, "head"), "null") << a1.dump();
  EXPECT_EQ(str(a1, "cached"), "false") << "the first request after start-up waits for a query: " << a1.dump();

  json a2 = c.call(kStatus);
  EXPECT_EQ(str(a2, "cached"), "true") << a2.dump();
  json x1 = a1, x2 = a2;
  if (x1.is_object()) x1.erase("cached");
  if (x2.is_object()) x2.erase("cached");
  EXPECT_EQ(x1, x2) << "first: " << a1.dump() << "\nsecond: " << a2.dump();

  // A second connection gets the cached answer too.
  LockdClient c2 = client(d);
  json a3 = c2.call(kStatus);
  EXPECT_EQ(str(a3, "status"), "pending") << a3.dump();
  EXPECT_EQ(str(a3, "cached"), "true") << a3.dump();
}

TEST(LockdStatus, NewFileShowsPendingWithoutRestart) {
  std::string db = fresh_db("lt_new_file");
  MigDir m;
  m.write("1_a.up.sql", "CREATE TABLE a1 (id int);\n");
  m.write("2_b.up.sql", "CREATE TABLE b2 (id int);\n");
  Daemon d(lockd_config(db, m.path));
  START_LOCKD(d);
  LockdClient c = client(d);
  json mig = c.call(kMigrate);
  ASSERT_EQ(str(mig, "status"), "current") << mig.dump();
  json cur = c.call(kStatus);
  ASSERT_EQ(str(cur, "status"), "current") << cur.dump();
  EXPECT_EQ(str(cur, "cached"), "true") << "verify_interval is 1h: " << cur.dump();

  m.write("3_x.up.sql", "CREATE TABLE x3 (id int);\n");
  json last;
  bool seen = eventually([&] {
    last = c.call(kStatus);
    return str(last, "status") == "pending";
  }, 3000);
  ASSERT_TRUE(seen) << "a new file must invalidate the cached status; last answer: " << last.dump();
  EXPECT_EQ(str(last, "pending"), R"(["3"])") << last.dump();
  EXPECT_EQ(str(last, "head"), "2") << last.dump();

  json mig2 = c.call(kMigrate);
  EXPECT_EQ(str(mig2, "ok"), "true") << mig2.dump();
  EXPECT_EQ(str(mig2, "applied"), R"(["3"])") << mig2.dump();
  EXPECT_EQ(str(mig2, "head"), "3") << mig2.dump();
  EXPECT_EQ(rows(db, "SELECT to_regclass('x3') IS NOT NULL"), "t");
}

TEST(LockdStatus, EditedAppliedFileIsChecksumMismatch) {
  std::string db = fresh_db("lt_mismatch");
  MigDir m;
  const std::string one = "CREATE TABLE m1 (id int);\n";
  m.write("1_m1.up.sql", one);
  m.write("2_m2.up.sql", "CREATE TABLE m2 (id int);\n");
  Daemon d(lockd_config(db, m.path));
  START_LOCKD(d);
  LockdClient c = client(d);
  json mig = c.call(kMigrate);
  ASSERT_EQ(str(mig, "status"), "current") << mig.dump();

  m.write("1_m1.up.sql", "CREATE TABLE m1 (id bigint);\n");
  json last;
  bool seen = eventually([&] {
    last = c.call(kStatus);
    return str(last, "status") == "checksum-mismatch";
  }, 3000);
  ASSERT_TRUE(seen) << "last answer: " << last.dump();
  EXPECT_EQ(str(last, "ok"), "true") << last.dump();
  EXPECT_EQ(str(last, "mismatched"), R"(["1"])") << last.dump();
  EXPECT_EQ(str(last, "pending"), "[]") << "pending is still listed: " << last.dump();
  EXPECT_EQ(str(last, "head"), "2") << last.dump();

  // Putting the original bytes back makes it current again.
  m.write("1_m1.up.sql", one);
  seen = eventually([&] {
    last = c.call(kStatus);
    return str(last, "status") == "current";
  }, 3000);
  EXPECT_TRUE(seen) << "last answer: " << last.dump();
}

TEST(LockdStatus, DuplicateVersionIsManifestInvalid) {
  std::string db = fresh_db("lt_manifest");
  MigDir m;
  m.write("1_a.up.sql", "CREATE TABLE a (id int);\n");
  m.write("1_b.up.sql", "CREATE TABLE b (id int);\n");
  Daemon d(lockd_config(db, m.path));
  START_LOCKD(d);
  LockdClient c = client(d);
  json s = c.call(kStatus);
  EXPECT_EQ(str(s, "ok"), "false") << s.dump();
  EXPECT_EQ(code(s), "manifest_invalid") << s.dump();
  json mg = c.call(kMigrate);
  EXPECT_EQ(code(mg), "manifest_invalid") << mg.dump();
  EXPECT_EQ(rows(db, "SELECT to_regclass('a') IS NULL AND to_regclass('b') IS NULL"), "t") << "nothing was applied";

  fs::remove(m.file("1_b.up.sql"));
  json last;
  bool seen = eventually([&] {
    last = c.call(kStatus);
    return str(last, "status") == "pending";
  }, 3000);
  EXPECT_TRUE(seen) << "last answer: " << last.dump();
  EXPECT_EQ(str(last, "pending"), R"(["1"])") << last.dump();
}

TEST(LockdStatus, GolangMigrateFormatIsReadOnly) {
  std::string db = fresh_db("lt_golang");
  bool ok = false;
  std::string out = cluster().psql(
      "SET ROLE app; CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL);"
      " INSERT INTO schema_migrations VALUES (1, false);",
      db, &ok);
  ASSERT_TRUE(ok) << out;
  MigDir m;
  m.write("1_init.up.sql", "CREATE TABLE g1 (id int);\n");
  m.write("1_init.down.sql", "DROP TABLE g1;\n");
  m.write("2_more.up.sql", "CREATE TABLE g2 (id int);\n");
  m.write("2_more.down.sql", "DROP TABLE g2;\n");
  // verify_interval short and optimistic off: a status older than 200 ms is re-read before answering.
  DaemonConfig cfg = lockd_config(db, "");
  cfg.set("migrations", "{dir: \"" + m.path + "\", format: golang-migrate, database: " + db +
                            ", user: app, verify_interval: 200ms, optimistic: false}");
  Daemon d(cfg);
  START_LOCKD(d);
  LockdClient c = client(d);
  json s = c.call(kStatus);
  EXPECT_EQ(str(s, "status"), "pending") << "down files are not versions of their own: " << s.dump();
  EXPECT_EQ(str(s, "head"), "1") << s.dump();
  EXPECT_EQ(str(s, "pending"), R"(["2"])") << s.dump();

  json mg = c.call(kMigrate);
  EXPECT_EQ(str(mg, "ok"), "false") << mg.dump();
  EXPECT_EQ(code(mg), "read_only_format") << mg.dump();
  EXPECT_EQ(rows(db, "SELECT to_regclass('g2') IS NULL"), "t");

  // The tool left version 2 dirty.
  out = cluster().psql("UPDATE schema_migrations SET version = 2, dirty = true", db, &ok);
  ASSERT_TRUE(ok) << out;
  json last;
  bool seen = eventually([&] {
    last = c.call(kStatus);
    return str(last, "status") == "failed";
  }, 5000);
  ASSERT_TRUE(seen) << "the dirty flag must show as failed after verify_interval; last answer: " << last.dump();
  ASSERT_TRUE(last.contains("failed") && last["failed"].is_object()) << last.dump();
  EXPECT_EQ(str(last["failed"], "version"), "2") << last.dump();
}

// ================================================================ migrate

TEST(LockdMigrate, MigrateAppliesInOrderAndRecords) {
  std::string db = fresh_db("lt_migrate");
  MigDir m;
  m.write("1_create_t1.up.sql", "CREATE TABLE t1 (id int PRIMARY KEY);\n");
  // Needs t1: fails unless 1 ran first.
  m.write("2_create_t2.up.sql",
          "CREATE TABLE t2 (id int REFERENCES t1);\nINSERT INTO t1 VALUES (1);\nINSERT INTO t2 VALUES (1);\n");
  Daemon d(lockd_config(db, m.path));
  START_LOCKD(d);
  LockdClient c = client(d);
  json a = c.call(kMigrate);
  EXPECT_EQ(str(a, "ok"), "true") << a.dump();
  EXPECT_EQ(str(a, "applied"), R"(["1","2"])") << a.dump();
  EXPECT_EQ(str(a, "status"), "current") << a.dump();
  EXPECT_EQ(str(a, "head"), "2") << a.dump();
  EXPECT_EQ(str(a, "pending"), "[]") << a.dump();

  QResult h = q(db,
                "SELECT version, name, success::text, checksum, (coalesce(error, '') = '')::text, "
                "(duration_ms >= 0)::text FROM pgsidecar_migrations ORDER BY applied_at, version");
  ASSERT_TRUE(h.ok) << h.describe();
  ASSERT_EQ(h.rows.size(), 2u) << h.describe();
  const char* files[] = {"1_create_t1.up.sql", "2_create_t2.up.sql"};
  const char* names[] = {"create_t1", "create_t2"};
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(h.at(i, 0), std::to_string(i + 1)) << h.describe();
    EXPECT_TRUE(contains(h.at(i, 1), names[i])) << h.describe();
    EXPECT_EQ(h.at(i, 2), "true") << h.describe();
    EXPECT_EQ(h.at(i, 3), sha256_file(m.file(files[i]))) << "checksum: lowercase hex SHA-256 of the file";
    EXPECT_EQ(h.at(i, 4), "true") << "no error recorded: " << h.describe();
    EXPECT_EQ(h.at(i, 5), "true") << h.describe();
  }
  EXPECT_EQ(rows(db, "SELECT count(*) FROM t2"), "1");
  EXPECT_EQ(rows(db, "SELECT tableowner FROM pg_tables WHERE tablename = 't2'"), "app") << "migrations run as app";

  json s = c.call(kStatus);
  EXPECT_EQ(str(s, "status"), "current") << s.dump();
  EXPECT_EQ(str(s, "head"), "2") << s.dump();
  EXPECT_EQ(str(s, "pending"), "[]") << s.dump();

  // Nothing left to do: a second migrate applies nothing.
  json again = c.call(kMigrate);
  EXPECT_EQ(str(again, "ok"), "true") << again.dump();
  EXPECT_EQ(str(again, "applied"), "[]") << again.dump();
  EXPECT_EQ(rows(db, "SELECT count(*) FROM pgsidecar_migrations"), "2");
}

TEST(LockdMigrate, FailedMigrationRollsBackAndIsRecorded) {
  std::string db = fresh_db("lt_failed");
  MigDir m;
  m.write("1_one.up.sql", "CREATE TABLE one (id int);\n");
  m.write("2_two.up.sql", "CREATE TABLE two (id int);\nCREAT TABLE oops (id int);\n");
  m.write("3_three.up.sql", "CREATE TABLE three (id int);\n");
  Daemon d(lockd_config(db, m.path));
  START_LOCKD(d);
  LockdClient c = client(d);

  json a = c.call(kMigrate);
  EXPECT_EQ(str(a, "ok"), "false") << a.dump();
  EXPECT_EQ(code(a), "migration_failed") << a.dump();
  EXPECT_TRUE(contains(err_message(a), "2_two.up.sql")) << a.dump();
  EXPECT_EQ(str(a, "status"), "failed") << a.dump();
  EXPECT_EQ(str(a, "head"), "1") << a.dump();
  EXPECT_EQ(str(a, "pending"), R"(["2","3"])") << a.dump();
  ASSERT_TRUE(a.contains("failed") && a["failed"].is_object()) << a.dump();
  EXPECT_EQ(str(a["failed"], "version"), "2") << a.dump();
  EXPECT_TRUE(contains(str(a["failed"], "error"), "42601")) << a.dump();
  EXPECT_TRUE(contains(str(a["failed"], "error"), "syntax error")) << a.dump();

  EXPECT_EQ(rows(db, "SELECT to_regclass('one') IS NOT NULL, to_regclass('two') IS NULL, "
                     "to_regclass('three') IS NULL"),
            "t|t|t")
      << "1 applied, 2 rolled back entirely, 3 not tried";
  EXPECT_EQ(rows(db, "SELECT version, success::text, (coalesce(error, '') LIKE '%syntax error%')::text "
                     "FROM pgsidecar_migrations ORDER BY version"),
            "1|true|false\n2|false|true");

  json s = c.call(kStatus);
  EXPECT_EQ(str(s, "status"), "failed") << s.dump();

  // Not retried while the file is unchanged.
  auto t0 = Clock::now();
  json b = c.call(kMigrate);
  long took = ms_since(t0);
  EXPECT_EQ(code(b), "migration_failed") << b.dump();
  EXPECT_EQ(str(b, "status"), "failed") << b.dump();
  EXPECT_LT(took, 2000) << "a failed version with the same checksum is not retried";
  EXPECT_EQ(rows(db, "SELECT count(*) FROM pgsidecar_migrations WHERE version = '2'"), "1");

  // Fixed: the edit makes it pending again, and migrate applies 2 and 3.
  m.write("2_two.up.sql", "CREATE TABLE two (id int);\n");
  json last;
  bool seen = eventually([&] {
    last = c.call(kStatus);
    return str(last, "status") == "pending";
  }, 3000);
  EXPECT_TRUE(seen) << "status stays failed only until the file is changed; last answer: " << last.dump();
  json f = c.call(kMigrate);
  EXPECT_EQ(str(f, "ok"), "true") << f.dump();
  EXPECT_EQ(str(f, "status"), "current") << f.dump();
  EXPECT_EQ(str(f, "applied"), R"(["2","3"])") << f.dump();
  EXPECT_EQ(str(f, "head"), "3") << f.dump();
  EXPECT_EQ(rows(db, "SELECT to_regclass('two') IS NOT NULL, to_regclass('three') IS NOT NULL"), "t|t");
  EXPECT_EQ(rows(db, "SELECT count(*) FROM pgsidecar_migrations WHERE version = '2' AND success AND checksum = '" +
                         sha256_file(m.file("2_two.up.sql")) + "'"),
            "1");
}

// A runtime error after statements that did run: everything of the file is
// rolled back, and a sequence (nextval is never rolled back) counts attempts.
TEST(LockdMigrate, RuntimeErrorRollsBackAndIsRetriedOnlyWhenEdited) {
  std::string db = fresh_db("lt_runtime");
  MigDir m;
  m.write("1_seq.up.sql", "CREATE SEQUENCE attempts;\n");
  const std::string bad = "CREATE TABLE two (id int);\nSELECT nextval('attempts');\nINSERT INTO two VALUES (1/0);\n";
  m.write("2_two.up.sql", bad);
  Daemon d(lockd_config(db, m.path));
  START_LOCKD(d);
  LockdClient c = client(d);
  auto attempts = [&] { return rows(db, "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM attempts"); };

  json a = c.call(kMigrate);
  EXPECT_EQ(code(a), "migration_failed") << a.dump();
  ASSERT_TRUE(a.contains("failed") && a["failed"].is_object()) << a.dump();
  EXPECT_EQ(str(a["failed"], "version"), "2") << a.dump();
  EXPECT_TRUE(contains(str(a["failed"], "error"), "22012")) << a.dump();
  EXPECT_EQ(attempts(), "1");
  EXPECT_EQ(rows(db, "SELECT to_regclass('two') IS NULL"), "t") << "CREATE TABLE of the failed file rolled back";

  json b = c.call(kMigrate);
  EXPECT_EQ(code(b), "migration_failed") << b.dump();
  EXPECT_EQ(attempts(), "1") << "unchanged failed file must not be retried";

  // Edited (still failing): tried again.
  m.write("2_two.up.sql", "-- edited\n" + bad);
  json last;
  bool seen = eventually([&] {
    last = c.call(kStatus);
    return str(last, "status") == "pending";
  }, 3000);
  EXPECT_TRUE(seen) << "last answer: " << last.dump();
  json e = c.call(kMigrate);
  EXPECT_EQ(code(e), "migration_failed") << e.dump();
  EXPECT_EQ(attempts(), "2") << "an edited file is tried again";

  m.write("2_two.up.sql", "CREATE TABLE two (id int);\nSELECT nextval('attempts');\n");
  seen = eventually([&] {
    last = c.call(kStatus);
    return str(last, "status") == "pending";
  }, 3000);
  EXPECT_TRUE(seen) << "last answer: " << last.dump();
  json f = c.call(kMigrate);
  EXPECT_EQ(str(f, "status"), "current") << f.dump();
  EXPECT_EQ(str(f, "applied"), R"(["2"])") << f.dump();
  EXPECT_EQ(attempts(), "3");
}

// per callers on each of a and b send migrate (with "id": its index) at the same
// moment; their answers, callers of a first. A caller that cannot connect gets
// {"_io": why}.
std::vector<json> migrate_at_once(const Daemon& a, const Daemon& b, int per, int timeout_ms) {
  const int all = 2 * per;
  std::vector<LockdClient> clients(static_cast<size_t>(all));
  std::vector<json> answers(static_cast<size_t>(all));
  for (int i = 0; i < all; ++i)
    if (!clients[i].connect(sock(i < per ? a : b))) answers[i] = {{"_io", std::string("connect: ") + strerror(errno)}};
  std::latch go(all);
  std::vector<std::thread> threads;
  for (int i = 0; i < all; ++i) {
    threads.emplace_back([&, i] {
      go.arrive_and_wait();
      if (!clients[i].connected()) return;
      json req = kMigrate;
      req["id"] = i;
      answers[i] = clients[i].call(req, timeout_ms);
    });
  }
  for (auto& t : threads) t.join();
  return answers;
}

TEST(LockdMigrate, ConcurrentMigrateExactlyOnce) {
  std::string db = fresh_db("lt_concurrent");
  MigDir m;
  m.write("1_log.up.sql",
          "CREATE TABLE applied_log (v text NOT NULL);\n"
          "INSERT INTO applied_log VALUES ('1');\n"
          "SELECT pg_sleep(0.2);\n");
  m.write("2_second.up.sql", "INSERT INTO applied_log VALUES ('2');\nSELECT pg_sleep(0.2);\n");
  m.write("3_third.up.sql", "CREATE TABLE third (id int);\nINSERT INTO applied_log VALUES ('3');\n");
  DaemonConfig cfg = lockd_config(db, m.path);
  Daemon a(cfg), b(cfg);
  START_LOCKD(a);
  START_LOCKD(b);

  constexpr int kPer = 100, kAll = 2 * kPer;
  std::vector<json> answers = migrate_at_once(a, b, kPer, 30000);

  // `applied` lists what the run a request joined applied: every caller that
  // joined the applying sidecar's run names the versions, callers of the other
  // sidecar name none. So each version is named by the callers of exactly one
  // sidecar, and all versions are named.
  int current = 0;
  std::string first_bad;
  std::map<std::string, std::set<int>> applied_by;   // version -> sidecars whose callers list it
  for (int i = 0; i < kAll; ++i) {
    const json& r = answers[i];
    bool good = str(r, "ok") == "true" && str(r, "status") == "current" && str(r, "head") == "3" &&
                str(r, "pending") == "[]" && str(r, "id") == std::to_string(i);
    if (good) ++current;
    else if (first_bad.empty()) first_bad = "client " + std::to_string(i) + ": " + r.dump();
    if (r.is_object() && r.contains("applied") && r["applied"].is_array())
      for (const json& v : r["applied"]) applied_by[v.is_string() ? v.get<std::string>() : v.dump()].insert(i / kPer);
  }
  EXPECT_EQ(current, kAll) << first_bad;
  std::string union_text;
  for (const auto& [v, sidecars] : applied_by) {
    union_text += (union_text.empty() ? "" : ",") + v;
    EXPECT_EQ(sidecars.size(), 1u) << "version " << v << " reported applied by the callers of both sidecars";
  }
  EXPECT_EQ(union_text, "1,2,3") << "the union of the applied lists";
  EXPECT_EQ(rows(db, "SELECT version, count(*), bool_and(success)::text FROM pgsidecar_migrations GROUP BY version "
                     "ORDER BY version"),
            "1|1|true\n2|1|true\n3|1|true");
  EXPECT_EQ(rows(db, "SELECT v, count(*) FROM applied_log GROUP BY v ORDER BY v"), "1|1\n2|1\n3|1");
}

// A -- pgsidecar:no-transaction file runs statement by statement outside a
// transaction (CREATE INDEX CONCURRENTLY cannot run inside one), exactly once for
// 100 concurrent callers on two sidecars.
TEST(LockdMigrate, NoTransactionFileAppliedExactlyOnce) {
  std::string db = fresh_db("lt_notx");
  MigDir m;
  m.write("1_items.up.sql",
          "CREATE TABLE items (id int, name text);\n"
          "CREATE TABLE notx_log (v text NOT NULL);\n");
  m.write("2_index.up.sql",
          "-- pgsidecar:no-transaction\n"
          "CREATE INDEX CONCURRENTLY items_name ON items (name);\n"
          "INSERT INTO notx_log VALUES ('2');\n"
          "CREATE INDEX CONCURRENTLY items_id ON items (id);\n");
  m.write("3_after.up.sql", "INSERT INTO notx_log VALUES ('3');\n");
  DaemonConfig cfg = lockd_config(db, m.path);
  Daemon a(cfg), b(cfg);
  START_LOCKD(a);
  START_LOCKD(b);
  constexpr int kPer = 50, kAll = 2 * kPer;
  std::vector<json> answers = migrate_at_once(a, b, kPer, 60000);
  for (int i = 0; i < kAll; ++i)
    ASSERT_EQ(str(answers[i], "status"), "current") << "client " << i << ": " << answers[i].dump();
  EXPECT_EQ(rows(db, "SELECT v, count(*) FROM notx_log GROUP BY v ORDER BY v"), "2|1\n3|1");
  EXPECT_EQ(rows(db, "SELECT c.relname, i.indisvalid::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                     "WHERE c.relname LIKE 'items_%' ORDER BY 1"),
            "items_id|true\nitems_name|true");
  EXPECT_EQ(rows(db, "SELECT version, count(*), bool_and(success)::text FROM pgsidecar_migrations GROUP BY version "
                     "ORDER BY version"),
            "1|1|true\n2|1|true\n3|1|true");
}

// A failing statement of a no-transaction file: the statements before it stay
// applied, the version is failed with the statement named, later files wait; the
// file unchanged is not run again until migrate --retry (ctl too).
TEST(LockdMigrate, NoTransactionFailureIsReportedAndRetried) {
  std::string db = fresh_db("lt_notx_fail");
  MigDir m;
  m.write("1_items.up.sql", "CREATE TABLE items (id int);\n");
  m.write("2_index.up.sql",
          "-- pgsidecar:no-transaction\n"
          "CREATE INDEX CONCURRENTLY IF NOT EXISTS items_id ON items (id);\n"
          "CREATE INDEX CONCURRENTLY IF NOT EXISTS items_name ON items (name);\n");
  m.write("3_three.up.sql", "CREATE TABLE three (id int);\n");
  DaemonConfig cfg = lockd_config(db, m.path);
  cfg.set("stats_users", "[app]");
  Daemon d(cfg);
  START_LOCKD(d);
  LockdClient c = client(d);

  json a = c.call(kMigrate);
  EXPECT_EQ(code(a), "migration_failed") << a.dump();
  EXPECT_EQ(str(a, "status"), "failed") << a.dump();
  ASSERT_TRUE(a.contains("failed") && a["failed"].is_object()) << a.dump();
  EXPECT_EQ(str(a["failed"], "version"), "2") << a.dump();
  EXPECT_TRUE(contains(str(a["failed"], "error"), "statement 2 of 2")) << a.dump();
  EXPECT_TRUE(contains(str(a["failed"], "error"), "42703")) << a.dump();
  EXPECT_EQ(rows(db, "SELECT to_regclass('items_id') IS NOT NULL, to_regclass('three') IS NULL"), "t|t")
      << "statement 1 stays applied; 3 is not tried";
  EXPECT_EQ(str(c.call(kStatus), "status"), "failed");
  {
    // SHOW MIGRATIONS names the failed statement.
    ConnPtr admin = must_connect("host=127.0.0.1 port=" + std::to_string(d.port()) + " user=app dbname=pgsidecar");
    QResult sm = admin ? exec(admin, "SHOW MIGRATIONS") : QResult{};
    ASSERT_TRUE(sm.ok) << sm.describe();
    ASSERT_EQ(sm.rows.size(), 3u) << sm.describe();
    EXPECT_EQ(sm.at(1, 3), "failed");
    EXPECT_TRUE(contains(sm.at(1, 4), "statement 2 of 2")) << sm.describe();
  }

  json again = c.call(kMigrate);
  EXPECT_EQ(code(again), "migration_failed") << "unchanged, not run again: " << again.dump();
  json wrong = c.call({{"op", "migrate"}, {"retry", "3"}});
  EXPECT_EQ(code(wrong), "not_failed") << wrong.dump();
  json bad = c.call({{"op", "migrate"}, {"retry", 2}});
  EXPECT_EQ(code(bad), "bad_request") << bad.dump();

  ASSERT_EQ(rows(db, "ALTER TABLE items ADD COLUMN name text; SELECT 1"), "1");
  ProcResult ctl = run_process({daemon_binary(), "ctl", "--socket", sock(d), "migrate", "--retry", "2"}, 60000);
  EXPECT_EQ(ctl.exit_code, 0) << ctl.output;
  json fixed = json::parse(ctl.output.substr(0, ctl.output.find('\n')), nullptr, false);
  EXPECT_EQ(str(fixed, "ok"), "true") << ctl.output;
  EXPECT_EQ(str(fixed, "status"), "current") << ctl.output;
  EXPECT_EQ(str(fixed, "applied"), R"(["2","3"])") << ctl.output;
  EXPECT_EQ(rows(db, "SELECT version, success::text FROM pgsidecar_migrations ORDER BY version"),
            "1|true\n2|true\n3|true");
}

// migrate with to: the versions above it are reverted with their .down.sql files,
// newest first (a no-transaction one statement by statement), and are pending
// again; a missing down file refuses the whole revert.
TEST(LockdMigrate, DownMigrationsRevertToAVersion) {
  std::string db = fresh_db("lt_down");
  MigDir m;
  m.write("1_a.up.sql", "CREATE TABLE da (id int);\n");
  m.write("1_a.down.sql", "DROP TABLE da;\n");
  m.write("2_b.up.sql", "CREATE TABLE dbb (id int);\n");
  m.write("2_b.down.sql", "DROP TABLE dbb;\n");
  m.write("3_c.up.sql", "CREATE TABLE dc (id int);\nCREATE INDEX dc_id ON dc (id);\n");
  m.write("3_c.down.sql", "-- pgsidecar:no-transaction\nDROP INDEX CONCURRENTLY dc_id;\nDROP TABLE dc;\n");
  Daemon d(lockd_config(db, m.path));
  START_LOCKD(d);
  LockdClient c = client(d);
  ASSERT_EQ(str(c.call(kMigrate), "status"), "current");
  const std::string tables = "SELECT to_regclass('da') IS NOT NULL, to_regclass('dbb') IS NOT NULL, "
                             "to_regclass('dc') IS NOT NULL";

  json down = c.call({{"op", "migrate"}, {"to", "1"}});
  EXPECT_EQ(str(down, "ok"), "true") << down.dump();
  EXPECT_EQ(str(down, "reverted"), R"(["3","2"])") << down.dump();
  EXPECT_EQ(str(down, "status"), "pending") << down.dump();
  EXPECT_EQ(str(down, "head"), "1") << down.dump();
  EXPECT_EQ(rows(db, tables), "t|f|f");
  EXPECT_EQ(rows(db, "SELECT version FROM pgsidecar_migrations ORDER BY version"), "1");

  json up = c.call(kMigrate);
  EXPECT_EQ(str(up, "applied"), R"(["2","3"])") << up.dump();
  EXPECT_EQ(rows(db, tables), "t|t|t");

  std::filesystem::remove(m.file("2_b.down.sql"));
  json refused = c.call({{"op", "migrate"}, {"to", "0"}});
  EXPECT_EQ(code(refused), "down_missing") << refused.dump();
  EXPECT_TRUE(contains(err_message(refused), "2_b.down.sql")) << refused.dump();
  EXPECT_EQ(rows(db, tables), "t|t|t") << "nothing is reverted when a down file is missing";

  ProcResult ctl = run_process({daemon_binary(), "ctl", "--socket", sock(d), "migrate", "--to", "2"}, 60000);
  EXPECT_EQ(ctl.exit_code, 0) << ctl.output;
  EXPECT_TRUE(contains(ctl.output, R"("reverted":["3"])")) << ctl.output;
  EXPECT_EQ(rows(db, tables), "t|t|f");
  json both = c.call({{"op", "migrate"}, {"to", "1"}, {"retry", "2"}});
  EXPECT_EQ(code(both), "bad_request") << both.dump();
  for (const char* typo : {"latest", "v2", "2.", ".", "-1", " 2"}) {
    json r = c.call({{"op", "migrate"}, {"to", typo}});
    EXPECT_EQ(code(r), "bad_request") << "to " << typo << ": " << r.dump();
  }
  EXPECT_EQ(rows(db, tables), "t|t|f") << "no typo reverted anything";
}

// A no-transaction file that says BEGIN or COMMIT itself is refused before any of
// it runs; the failure names the statement, not the comments before it.
TEST(LockdMigrate, NoTransactionFileMustNotManageTransactions) {
  std::string db = fresh_db("lt_notx_begin");
  MigDir m;
  m.write("1_t.up.sql", "-- pgsidecar:no-transaction\n-- make t\nBEGIN;\nCREATE TABLE t (id int);\nCOMMIT;\n");
  Daemon d(lockd_config(db, m.path));
  START_LOCKD(d);
  LockdClient c = client(d);
  json a = c.call(kMigrate);
  EXPECT_EQ(code(a), "migration_failed") << a.dump();
  EXPECT_TRUE(contains(str(a["failed"], "error"), "statement 1 (BEGIN)")) << a.dump();
  EXPECT_TRUE(contains(str(a["failed"], "error"), "must not manage transactions")) << a.dump();
  EXPECT_EQ(rows(db, "SELECT to_regclass('t') IS NULL"), "t");
}

TEST(LockdMigrate, NotifyReachesOtherSidecar) {
  std::string db = fresh_db("lt_notify");
  MigDir m;
  m.write("1_a.up.sql", "CREATE TABLE na (id int);\n");
  m.write("2_b.up.sql", "CREATE TABLE nb (id int);\n");
  DaemonConfig cfg = lockd_config(db, m.path);   // verify_interval 1h
  Daemon a(cfg), b(cfg);
  START_LOCKD(a);
  START_LOCKD(b);
  LockdClient ca = client(a), cb = client(b);
  json s1 = cb.call(kStatus);
  ASSERT_EQ(str(s1, "status"), "pending") << s1.dump();
  json s2 = cb.call(kStatus);
  ASSERT_EQ(str(s2, "status"), "pending") << s2.dump();
  ASSERT_EQ(str(s2, "cached"), "true") << s2.dump();

  json mg = ca.call(kMigrate);
  ASSERT_EQ(str(mg, "status"), "current") << mg.dump();
  ASSERT_EQ(str(mg, "applied"), R"(["1","2"])") << mg.dump();
  auto t0 = Clock::now();
  json last;
  bool seen = eventually([&] {
    last = cb.call(kStatus);
    return str(last, "status") == "current";
  }, 2000);
  EXPECT_TRUE(seen) << "B must learn of A's migration through NOTIFY (its verify_interval is 1h); last answer: "
                    << last.dump() << " after " << ms_since(t0) << " ms";
  EXPECT_EQ(str(last, "head"), "2") << last.dump();
  EXPECT_EQ(str(last, "pending"), "[]") << last.dump();
  // B has nothing to do.
  json mb = cb.call(kMigrate);
  EXPECT_EQ(str(mb, "status"), "current") << mb.dump();
  EXPECT_EQ(str(mb, "applied"), "[]") << mb.dump();
}

// ================================================================ locks

TEST(LockdLocks, LockFifoOrder) {
  Daemon d(lockd_config("app", ""));
  START_LOCKD(d);
  LockdClient h = client(d), obs = client(d);
  LockdClient w[3] = {client(d), client(d), client(d)};
  json held = h.call(lock_req("fifo-n"));
  ASSERT_EQ(str(held, "state"), "held") << held.dump();
  EXPECT_EQ(str(held, "ok"), "true") << held.dump();
  EXPECT_EQ(str(held, "name"), "fifo-n") << held.dump();

  for (int i = 0; i < 3; ++i) {
    json req = lock_req("fifo-n");
    req["id"] = i;
    ASSERT_TRUE(w[i].send(req));
    json qd = w[i].read(5000);
    ASSERT_EQ(str(qd, "state"), "queued") << "waiter " << i << ": " << qd.dump();
    EXPECT_EQ(str(qd, "ok"), "true") << qd.dump();
    EXPECT_EQ(str(qd, "id"), std::to_string(i)) << qd.dump();
    EXPECT_EQ(str(qd, "position"), std::to_string(i + 1)) << "holders and waiters ahead: " << qd.dump();
    EXPECT_TRUE(qd.contains("estimated_wait_ms")) << qd.dump();
  }
  json ls = obs.call({{"op", "locks"}});
  json e = lock_entry(ls, "fifo-n");
  ASSERT_FALSE(e.is_null()) << ls.dump();
  EXPECT_EQ(str(e, "held"), "true") << ls.dump();
  EXPECT_EQ(str(e, "waiters"), "3") << ls.dump();

  std::this_thread::sleep_for(Ms(100));
  for (int i = 0; i < 3; ++i) {
    LockdClient& holder = i == 0 ? h : w[i - 1];
    json rel = holder.call(unlock_req("fifo-n"));
    EXPECT_EQ(str(rel, "state"), "released") << rel.dump();
    EXPECT_GE(num(rel, "held_ms"), 0) << rel.dump();
    json g = w[i].read(3000);
    EXPECT_EQ(str(g, "state"), "held") << "waiter " << i << " is next: " << g.dump();
    EXPECT_EQ(str(g, "id"), std::to_string(i)) << g.dump();
    EXPECT_GE(num(g, "waited_ms"), 100) << g.dump();
    for (int j = i + 1; j < 3; ++j) {
      json none = w[j].read(150);
      EXPECT_EQ(str(none, "_io"), "timeout after 150 ms") << "waiter " << j << " must still wait: " << none.dump();
    }
  }
  json rel = w[2].call(unlock_req("fifo-n"));
  EXPECT_EQ(str(rel, "state"), "released") << rel.dump();
  json after = obs.call(locks_req("fifo-n"));
  json ae = lock_entry(after, "fifo-n");
  ASSERT_FALSE(ae.is_null()) << after.dump();
  EXPECT_EQ(str(ae, "held"), "false") << after.dump();
  EXPECT_EQ(str(ae, "waiters"), "0") << after.dump();
}

TEST(LockdLocks, HolderDisconnectReleases) {
  Daemon d(lockd_config("app", ""));
  START_LOCKD(d);
  LockdClient h = client(d), w = client(d);
  json held = h.call(lock_req("disc"));
  ASSERT_EQ(str(held, "state"), "held") << held.dump();
  ASSERT_TRUE(w.send(lock_req("disc")));
  json qd = w.read(5000);
  ASSERT_EQ(str(qd, "state"), "queued") << qd.dump();
  EXPECT_EQ(str(qd, "position"), "1") << qd.dump();
  h.close();
  json g = w.read(3000);
  EXPECT_EQ(str(g, "state"), "held") << g.dump();
  EXPECT_EQ(str(g, "name"), "disc") << g.dump();
  // A waiter that disconnects leaves the queue too.
  LockdClient w2 = client(d);
  ASSERT_TRUE(w2.send(lock_req("disc")));
  ASSERT_EQ(str(w2.read(5000), "state"), "queued");
  w2.close();
  LockdClient obs = client(d);
  json last;
  bool gone = eventually([&] {
    last = obs.call(locks_req("disc"));
    return str(lock_entry(last, "disc"), "waiters") == "0";
  }, 3000);
  EXPECT_TRUE(gone) << last.dump();
  EXPECT_EQ(str(lock_entry(last, "disc"), "held"), "true") << last.dump();
}

TEST(LockdLocks, LockTimeout) {
  Daemon d(lockd_config("app", ""));
  START_LOCKD(d);
  LockdClient h = client(d), w = client(d);
  ASSERT_EQ(str(h.call(lock_req("tmo")), "state"), "held");

  std::vector<json> interim;
  auto t0 = Clock::now();
  json a = w.lock(lock_req("tmo", 300), 10000, &interim);
  long took = ms_since(t0);
  EXPECT_EQ(str(a, "ok"), "false") << a.dump();
  EXPECT_EQ(code(a), "lock_timeout") << a.dump();
  EXPECT_EQ(str(a, "name"), "tmo") << a.dump();
  EXPECT_GE(took, 290);
  EXPECT_LT(took, 3000);
  EXPECT_EQ(interim.size(), 1u) << "one queued line before the timeout";

  t0 = Clock::now();
  json z = w.lock(lock_req("tmo", 0), 10000);
  took = ms_since(t0);
  EXPECT_EQ(code(z), "lock_timeout") << z.dump();
  EXPECT_LT(took, 1000) << "timeout_ms 0: only if free now";

  // The connection still works, and the timed-out requests left no waiter behind.
  json ls = w.call(locks_req("tmo"));
  EXPECT_EQ(str(ls, "ok"), "true") << ls.dump();
  EXPECT_EQ(str(lock_entry(ls, "tmo"), "held"), "true") << ls.dump();
  EXPECT_EQ(str(lock_entry(ls, "tmo"), "waiters"), "0") << ls.dump();
  EXPECT_EQ(str(h.call(unlock_req("tmo")), "state"), "released");
  json g = w.lock(lock_req("tmo", 0), 5000);
  EXPECT_EQ(str(g, "state"), "held") << "free now: " << g.dump();
}

TEST(LockdLocks, AlreadyHeldAndNotHeld) {
  Daemon d(lockd_config("app", ""));
  START_LOCKD(d);
  LockdClient c = client(d), other = client(d);
  ASSERT_EQ(str(c.call(lock_req("dup")), "state"), "held");
  json again = c.call(lock_req("dup", 0));
  EXPECT_EQ(code(again), "already_held") << again.dump();
  json nh = c.call(unlock_req("never-locked"));
  EXPECT_EQ(code(nh), "not_held") << nh.dump();
  json foreign = other.call(unlock_req("dup"));
  EXPECT_EQ(code(foreign), "not_held") << "a lock belongs to the connection that acquired it: " << foreign.dump();
  EXPECT_EQ(str(c.call(unlock_req("dup")), "state"), "released");
}

TEST(LockdLocks, LockAcrossSidecars) {
  std::string db = fresh_db("lt_across");
  DaemonConfig cfg = lockd_config(db, "");
  Daemon a(cfg), b(cfg);
  START_LOCKD(a);
  START_LOCKD(b);
  LockdClient ca = client(a), cb = client(b);
  json ha = ca.call(lock_req("x"));
  ASSERT_EQ(str(ha, "state"), "held") << ha.dump();

  // The advisory lock: key = first 8 bytes of SHA-256("pgsidecar:lock:x") as a bigint
  // (pg_locks shows its high half as classid, low half as objid, objsubid 1).
  const std::string advisory_sql =
      "SELECT l.classid::text || ':' || l.objid::text || ':' || l.objsubid::text FROM pg_locks l "
      "JOIN pg_database d ON d.oid = l.database WHERE l.locktype = 'advisory' AND l.granted AND d.datname = '" +
      db + "'";
  std::string hex = sha256_hex_of("pgsidecar:lock:x");
  ASSERT_EQ(hex.size(), 64u) << hex;
  auto word = [&](int from) { return std::to_string(std::stoul(hex.substr(size_t(from) * 2, 8), nullptr, 16)); };
  auto swapped = [&](int from) {
    std::string w = hex.substr(size_t(from) * 2, 8), r;
    for (int i = 3; i >= 0; --i) r += w.substr(size_t(i) * 2, 2);
    return std::to_string(std::stoul(r, nullptr, 16));
  };
  std::string big_endian = word(0) + ":" + word(4) + ":1";
  std::string little_endian = swapped(4) + ":" + swapped(0) + ":1";
  std::string held_locks = rows(db, advisory_sql);
  EXPECT_TRUE(held_locks == big_endian || held_locks == little_endian)
      << "pg_locks advisory locks on " << db << ": [" << held_locks << "], expected " << big_endian << " (or "
      << little_endian << ")";

  ASSERT_TRUE(cb.send(lock_req("x", 10000)));
  auto t_wait = Clock::now();
  std::vector<json> early;
  for (;;) {
    long left = 500 - ms_since(t_wait);
    if (left <= 0) break;
    json l = cb.read(int(left));
    if (l.contains("_io")) break;
    early.push_back(l);
  }
  for (const json& l : early) EXPECT_EQ(str(l, "state"), "queued") << "B must wait while A holds x: " << l.dump();

  auto t0 = Clock::now();
  json rel = ca.call(unlock_req("x"));
  EXPECT_EQ(str(rel, "state"), "released") << rel.dump();
  json g = cb.final_answer(2500);
  long took = ms_since(t0);
  EXPECT_EQ(str(g, "state"), "held") << g.dump();
  EXPECT_LT(took, 2000) << "backoff is capped at 1 s (+ jitter)";
  std::string now_locks = rows(db, advisory_sql);
  EXPECT_TRUE(now_locks == big_endian || now_locks == little_endian) << "held by B now: [" << now_locks << "]";

  EXPECT_EQ(str(cb.call(unlock_req("x")), "state"), "released");
  bool freed = eventually([&] { return rows(db, advisory_sql).empty(); }, 3000);
  EXPECT_TRUE(freed) << "the advisory lock is released with the last local holder: " << rows(db, advisory_sql);
}

// Two sidecars, 20 contenders each, looping lock / hold 5 ms / unlock on one name:
// the hosts take turns, so each gets 40-60% of the grants, and nobody is
// overtaken by more grants than the queue ahead of it (its "queued" position)
// explains, give or take a few: tickets taken at nearly the same moment on two
// sidecars are numbered at INSERT but seen at commit, and a NOTIFY of a new
// ticket can arrive just after a local hand-over.
TEST(LockdLocks, HostsTakeTurns) {
  std::string db = fresh_db("lt_fair");
  DaemonConfig cfg = lockd_config(db, "");
  Daemon a(cfg), b(cfg);
  START_LOCKD(a);
  START_LOCKD(b);
  constexpr int kPerHost = 20, kGrants = 400;
  std::mutex mu;
  int grants[2] = {0, 0}, total = 0, worst_excess = 0, max_position = 0;
  long max_wait_ms = 0;
  std::string worst, failure;
  auto contender = [&](int host, int id) {
    LockdClient c = client(host == 0 ? a : b);
    for (;;) {
      {
        std::lock_guard<std::mutex> g(mu);
        if (total >= kGrants || !failure.empty()) return;
      }
      // The queued line says where the request stands (position p: p - 1 waiters
      // ahead, on either host); count the grants to others from then on.
      int seen_at_queued = -1, position = 0;
      json h;
      if (!c.send(lock_req("fair", 60000))) return;
      for (;;) {
        h = c.read(60000);
        if (str(h, "state") != "queued") break;
        std::lock_guard<std::mutex> g(mu);
        seen_at_queued = total;
        position = int(num(h, "position"));
      }
      if (str(h, "state") != "held") {
        std::lock_guard<std::mutex> g(mu);
        failure = "contender " + std::to_string(id) + ": " + h.dump();
        return;
      }
      {
        std::lock_guard<std::mutex> g(mu);
        // Beyond the p - 1 ahead, one more may be the grant under way as the line was read.
        int overtaken = seen_at_queued < 0 ? 0 : total - seen_at_queued;
        int excess = seen_at_queued < 0 ? 0 : overtaken - position;
        max_position = std::max(max_position, position);
        max_wait_ms = std::max(max_wait_ms, num(h, "waited_ms"));
        if (excess > worst_excess) {
          worst_excess = excess;
          worst = "overtaken by " + std::to_string(overtaken) + " grants at position " + std::to_string(position);
        }
        grants[host]++;
        total++;
      }
      std::this_thread::sleep_for(Ms(5));
      if (str(c.call(unlock_req("fair")), "state") != "released") {
        std::lock_guard<std::mutex> g(mu);
        failure = "unlock failed";
        return;
      }
    }
  };
  std::vector<std::thread> threads;
  for (int host = 0; host < 2; ++host)
    for (int i = 0; i < kPerHost; ++i) threads.emplace_back(contender, host, host * kPerHost + i);
  for (std::thread& t : threads) t.join();
  ASSERT_EQ(failure, "");
  const int sum = grants[0] + grants[1];
  std::printf("[          ] grants: %d on A, %d on B; longest wait %ld ms; highest position %d; worst overtaking "
              "beyond the position: %d %s\n", grants[0], grants[1], max_wait_ms, max_position, worst_excess,
              worst.c_str());
  EXPECT_GE(max_position, 20) << "the contenders did queue behind each other";
  EXPECT_GE(grants[0] * 100, sum * 40) << grants[0] << " of " << sum;
  EXPECT_GE(grants[1] * 100, sum * 40) << grants[1] << " of " << sum;
  EXPECT_LE(worst_excess, 5) << worst;
  json la = client(a).call(locks_req("fair"));
  EXPECT_EQ(str(lock_entry(la, "fair"), "waiters"), "0") << la.dump();
}

// A killed sidecar's PostgreSQL session ends, and its advisory lock and queue
// ticket with it: the other sidecar's waiter gets the lock.
TEST(LockdLocks, KilledHolderHandsTheLockOn) {
  std::string db = fresh_db("lt_kill");
  DaemonConfig cfg = lockd_config(db, "");
  Daemon a(cfg), b(cfg);
  START_LOCKD(a);
  START_LOCKD(b);
  LockdClient ca = client(a), cb = client(b);
  ASSERT_EQ(str(ca.call(lock_req("k")), "state"), "held");
  ASSERT_TRUE(cb.send(lock_req("k", 60000)));
  json q = cb.read(5000);
  ASSERT_EQ(str(q, "state"), "queued") << q.dump();
  a.signal(SIGKILL);
  json g = cb.final_answer(30000);
  EXPECT_EQ(str(g, "state"), "held") << g.dump();
}

// The queue table made beforehand (as a role without CREATE would have it), with
// a trigger that makes a ticket INSERT slow (0.4 s) and fail while fault_on has a row.
void make_queue_with_fault(const std::string& db) {
  QResult r = q(db,
                "CREATE TABLE pgsidecar_lock_queue (ticket bigserial PRIMARY KEY, key bigint NOT NULL,"
                " instance text NOT NULL, pid int NOT NULL, backend_start timestamptz,"
                " queued_at timestamptz NOT NULL DEFAULT now(), seen_at timestamptz NOT NULL DEFAULT now());"
                "CREATE TABLE fault_on (x int);"
                "GRANT ALL ON pgsidecar_lock_queue, fault_on TO app;"
                "GRANT ALL ON SEQUENCE pgsidecar_lock_queue_ticket_seq TO app;"
                "CREATE FUNCTION slow_or_fail() RETURNS trigger LANGUAGE plpgsql AS $$ DECLARE f bool; BEGIN"
                " f := EXISTS (SELECT 1 FROM fault_on); PERFORM pg_sleep(0.4);"
                " IF f THEN RAISE EXCEPTION 'injected ticket failure'; END IF; RETURN NEW; END $$;"
                "CREATE TRIGGER slow_or_fail BEFORE INSERT ON pgsidecar_lock_queue FOR EACH ROW"
                " EXECUTE FUNCTION slow_or_fail();");
  ASSERT_TRUE(r.ok) << r.describe();
}

const char* kAdvisoryHeld =
    "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
    "WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()";

// A waiter whose ticket cannot be written is told, and the advisory lock kept for
// it while its ticket was under way goes: the other sidecar gets the lock.
TEST(LockdLocks, FailedTicketWhileHeldReleasesTheLock) {
  std::string db = fresh_db("lt_ticket_held");
  make_queue_with_fault(db);
  DaemonConfig cfg = lockd_config(db, "");
  Daemon a(cfg), b(cfg);
  START_LOCKD(a);
  START_LOCKD(b);
  LockdClient h = client(a), w = client(a);
  ASSERT_EQ(str(h.lock(lock_req("x", 10000), 10000), "state"), "held");
  ASSERT_TRUE(q(db, "INSERT INTO fault_on VALUES (1)").ok);
  ASSERT_TRUE(w.send(lock_req("x", 60000)));
  EXPECT_EQ(str(h.call(unlock_req("x")), "state"), "released");   // while w's ticket is under way
  json f = w.final_answer(10000);
  EXPECT_EQ(code(f), "database_unavailable") << f.dump();
  EXPECT_TRUE(contains(err_message(f), "injected ticket failure")) << f.dump();
  ASSERT_TRUE(q(db, "DELETE FROM fault_on").ok);
  EXPECT_TRUE(eventually([&] { return rows(db, kAdvisoryHeld) == "0"; }, 5000)) << rows(db, kAdvisoryHeld);
  LockdClient cb = client(b);
  json g = cb.lock(lock_req("x", 10000), 15000);
  EXPECT_EQ(str(g, "state"), "held") << g.dump();
}

// One waiter's failed ticket fails that waiter only; the one whose ticket was
// written gets the lock, and nothing stays held once both are done.
TEST(LockdLocks, FailedTicketFailsOnlyItsWaiter) {
  std::string db = fresh_db("lt_ticket_one");
  make_queue_with_fault(db);
  DaemonConfig cfg = lockd_config(db, "");
  Daemon a(cfg), b(cfg);
  START_LOCKD(a);
  START_LOCKD(b);
  LockdClient w1 = client(a), w2 = client(a);
  ASSERT_TRUE(w1.send(lock_req("y", 60000)));
  ASSERT_TRUE(eventually([&] { return rows(db, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'") == "1"; }, 5000));
  ASSERT_TRUE(w2.send(lock_req("y", 60000)));
  ASSERT_TRUE(q(db, "INSERT INTO fault_on VALUES (1)").ok);   // w1's INSERT began before: it succeeds; w2's fails
  json f1 = w1.final_answer(10000), f2 = w2.final_answer(10000);
  EXPECT_EQ(str(f1, "state"), "held") << f1.dump();
  EXPECT_EQ(code(f2), "database_unavailable") << f2.dump();
  ASSERT_TRUE(q(db, "DELETE FROM fault_on").ok);
  EXPECT_EQ(str(w1.call(unlock_req("y")), "state"), "released");
  EXPECT_TRUE(eventually([&] { return rows(db, kAdvisoryHeld) == "0"; }, 5000)) << rows(db, kAdvisoryHeld);
  LockdClient cb = client(b);
  json g = cb.lock(lock_req("y", 10000), 15000);
  EXPECT_EQ(str(g, "state"), "held") << g.dump();
}

// ================================================================ protocol

TEST(LockdProtocol, BadInput) {
  Daemon d(lockd_config("app", ""));
  START_LOCKD(d);
  LockdClient c = client(d);

  json r = raw_call(c, "{not json\n");
  EXPECT_EQ(str(r, "ok"), "false") << r.dump();
  EXPECT_EQ(code(r), "bad_request") << r.dump();
  r = c.call({{"op", "locks"}});
  EXPECT_EQ(str(r, "ok"), "true") << "the connection stays open after bad_request: " << r.dump();
  EXPECT_TRUE(r.contains("locks") && r["locks"].is_array()) << r.dump();

  r = raw_call(c, "[1,2]\n");
  EXPECT_EQ(code(r), "bad_request") << "not an object: " << r.dump();
  r = c.call({{"op", "lock"}, {"name", 5}});
  EXPECT_EQ(code(r), "bad_request") << "name of the wrong type: " << r.dump();
  r = c.call({{"op", "lock"}, {"name", "typed"}, {"timeout_ms", "soon"}});
  EXPECT_EQ(code(r), "bad_request") << "timeout_ms of the wrong type: " << r.dump();

  r = c.call({{"op", "stat"}, {"id", "abc"}});
  EXPECT_EQ(code(r), "unknown_op") << r.dump();
  EXPECT_EQ(str(r, "id"), "abc") << "errors echo the id too: " << r.dump();
  r = c.call({{"name", "x"}});
  EXPECT_EQ(code(r), "unknown_op") << "op missing: " << r.dump();
  r = c.call({{"op", "locks"}, {"id", json{{"k", 1}}}});
  EXPECT_EQ(str(r, "id"), R"({"k":1})") << r.dump();

  r = c.call(lock_req(""));
  EXPECT_EQ(code(r), "bad_name") << r.dump();
  r = c.call(lock_req(std::string(201, 'n')));
  EXPECT_EQ(code(r), "bad_name") << "201 bytes: " << r.dump();
  r = c.call(lock_req(std::string(200, 'n')));
  EXPECT_EQ(str(r, "state"), "held") << "200 bytes is allowed: " << r.dump();
  r = c.call(unlock_req(std::string(200, 'n')));
  EXPECT_EQ(str(r, "state"), "released") << r.dump();

  // Exactly 8192 bytes including the newline is allowed.
  const std::string head = R"({"op":"locks","id":")", tail = "\"}\n";
  std::string max_line = head + std::string(8192 - head.size() - tail.size(), 'p') + tail;
  ASSERT_EQ(max_line.size(), 8192u);
  r = raw_call(c, max_line);
  EXPECT_EQ(str(r, "ok"), "true") << "an 8192-byte line: " << r.dump().substr(0, 200);

  // 8193 bytes: too long, and the connection is closed.
  LockdClient c2 = client(d);
  std::string long_line = head + std::string(8193 - head.size() - tail.size(), 'p') + tail;
  r = raw_call(c2, long_line);
  EXPECT_EQ(code(r), "line_too_long") << "an 8193-byte line: " << r.dump();
  EXPECT_TRUE(c2.wait_closed(3000)) << "the connection is closed after line_too_long";

  // 10000 bytes on the first connection.
  r = raw_call(c, head + std::string(10000 - head.size() - tail.size(), 'q') + tail);
  EXPECT_EQ(code(r), "line_too_long") << r.dump();
  EXPECT_TRUE(c.wait_closed(3000)) << "the connection is closed after line_too_long";

  LockdClient c3 = client(d);
  r = c3.call({{"op", "locks"}});
  EXPECT_EQ(str(r, "ok"), "true") << "other clients are still served: " << r.dump();
}

TEST(LockdProtocol, WrongPeerIsRejected) {
  Daemon d(lockd_config("app", "", "", ", allowed_uids: [54321], allowed_gids: [54321]"));
  START_LOCKD(d);
  LockdClient c = client(d);
  json r = c.read(5000);
  EXPECT_EQ(str(r, "ok"), "false") << r.dump();
  EXPECT_EQ(code(r), "not_permitted") << r.dump();
  EXPECT_TRUE(c.wait_closed(3000)) << "the connection is closed after not_permitted";

  // Either list may admit the peer: our gid is allowed.
  Daemon d2(lockd_config("app", "", "", ", allowed_uids: [54321], allowed_gids: [" + std::to_string(getgid()) + "]"));
  START_LOCKD(d2);
  LockdClient c2 = client(d2);
  json ok = c2.call({{"op", "locks"}});
  EXPECT_EQ(str(ok, "ok"), "true") << ok.dump();
}

TEST(LockdProtocol, DatabaseDown) {
  MigDir m;
  m.write("1_a.up.sql", "CREATE TABLE a (id int);\n");
  int port = free_port();
  DaemonConfig cfg = base_config();
  cfg.db("down", "{host: 127.0.0.1, port: " + std::to_string(port) + ", dbname: app}");
  cfg.set("lockd", "{socket_path: \"@DIR@/lockd.sock\", database: down, user: app}");
  cfg.set("migrations", "{dir: \"" + m.path + "\", database: down, user: app, verify_interval: 1h}");
  Daemon d(cfg);
  START_LOCKD(d);
  LockdClient c = client(d);

  auto t0 = Clock::now();
  json s = c.call(kStatus, 15000);
  long took = ms_since(t0);
  EXPECT_EQ(str(s, "ok"), "true") << s.dump();
  EXPECT_EQ(str(s, "status"), "unknown") << s.dump();
  EXPECT_TRUE(s.contains("reason") && s["reason"].is_string() && !s["reason"].get<std::string>().empty())
      << s.dump();
  EXPECT_LT(took, 5000);

  t0 = Clock::now();
  json l = c.lock(lock_req("down-lock", 1000), 15000);
  took = ms_since(t0);
  EXPECT_EQ(str(l, "ok"), "false") << l.dump();
  EXPECT_EQ(code(l), "database_unavailable") << l.dump();
  EXPECT_LT(took, 3500);

  json mg = c.call(kMigrate, 15000);
  EXPECT_EQ(str(mg, "ok"), "false") << mg.dump();
  EXPECT_EQ(code(mg), "database_unavailable") << mg.dump();

  // The pooler itself is unaffected.
  ConnPtr pc = must_connect(d.conninfo());
  ASSERT_TRUE(pc);
  EXPECT_EQ(exec(pc, "SELECT 1").scalar(), "1");
  json again = c.call({{"op", "locks"}});
  EXPECT_EQ(str(again, "ok"), "true") << again.dump();
}

TEST(LockdProtocol, NotConfigured) {
  Daemon d(lockd_config("app", ""));   // lockd with a database, no migrations
  START_LOCKD(d);
  LockdClient c = client(d);
  json s = c.call(kStatus);
  EXPECT_EQ(str(s, "ok"), "false") << s.dump();
  EXPECT_EQ(code(s), "not_configured") << s.dump();
  json mg = c.call(kMigrate);
  EXPECT_EQ(code(mg), "not_configured") << mg.dump();
  json l = c.call(lock_req("nc"));
  EXPECT_EQ(str(l, "state"), "held") << "locks work without migrations: " << l.dump();

  // Neither migrations nor a lockd database: lock ops are not configured either.
  DaemonConfig bare = base_config();
  bare.set("lockd", "{socket_path: \"@DIR@/lockd.sock\"}");
  Daemon d2(bare);
  START_LOCKD(d2);
  LockdClient c2 = client(d2);
  json l2 = c2.call(lock_req("nc"));
  EXPECT_EQ(code(l2), "not_configured") << l2.dump();
  json s2 = c2.call(kStatus);
  EXPECT_EQ(code(s2), "not_configured") << s2.dump();
}

// ================================================================ limits

// The limits of docs/lockd-protocol.md ("Limits"), mirrored here.
constexpr int kLocksPerConnection = 64;
constexpr int kMaxConnections = 512;
constexpr size_t kMaxLineBytes = 8192;

// 64 KiB of empty lines used to wedge lockd: each one was answered through a
// recursive call, 65536 deep. Blank lines are now skipped without an answer.
TEST(LockdLimits, EmptyLinesFloodThenStatusIsAnswered) {
  std::string db = fresh_db("lt_empty_lines");
  MigDir m;
  m.write("1_a.up.sql", "CREATE TABLE a (id int);\n");
  Daemon d(lockd_config(db, m.path));
  START_LOCKD(d);
  LockdClient c = client(d);
  ASSERT_TRUE(c.send_raw(std::string(65536, '\n'))) << "lockd stopped reading";
  json s = c.call({{"op", "status"}, {"id", 1}});
  EXPECT_EQ(str(s, "status"), "pending") << "blank lines get no answer; the status does: " << s.dump();
  EXPECT_EQ(str(s, "id"), "1") << s.dump();

  // Other blank lines (CR LF, spaces, tabs) are skipped too, in pieces across reads.
  std::string blanks;
  for (int i = 0; i < 4096; ++i) blanks += i % 3 == 0 ? "\r\n" : i % 3 == 1 ? " \t \n" : "\n";
  ASSERT_TRUE(c.send_raw(blanks));
  s = c.call({{"op", "status"}, {"id", 2}});
  EXPECT_EQ(str(s, "id"), "2") << s.dump();
  EXPECT_EQ(str(s, "cached"), "true") << s.dump();

  EXPECT_TRUE(d.running()) << tail_lines(d.log(), 30);
  LockdClient c2 = client(d);
  json l = c2.call({{"op", "locks"}});
  EXPECT_EQ(str(l, "ok"), "true") << "a new connection is served: " << l.dump();
  ConnPtr pc = must_connect(d.conninfo());
  ASSERT_TRUE(pc);
  EXPECT_EQ(exec(pc, "SELECT 41 + 1").scalar(), "42") << "the proxy on the same loop still serves queries";
}

// Many bad lines sent at once, by a peer that reads its answers only afterwards:
// every line is answered, in order, and the connection stays open (lockd serves
// a bounded number per loop turn and stops while its answers are not read).
TEST(LockdLimits, FloodOfBadLinesIsAnsweredInOrder) {
  Daemon d(lockd_config("app", ""));
  START_LOCKD(d);
  LockdClient c = client(d);
  constexpr int kLines = 20000;
  std::string flood;
  for (int i = 0; i < kLines; ++i) flood += "x\n";
  ASSERT_TRUE(c.send_raw(flood));
  ASSERT_TRUE(c.send({{"op", "locks"}, {"id", "after"}}));
  int bad = 0;
  json last;
  for (;;) {
    last = c.read(10000);
    if (code(last) != "bad_request") break;
    ++bad;
  }
  EXPECT_EQ(bad, kLines);
  EXPECT_EQ(str(last, "id"), "after") << last.dump();
  EXPECT_EQ(str(last, "ok"), "true") << last.dump();
  ConnPtr pc = must_connect(d.conninfo());
  ASSERT_TRUE(pc);
  EXPECT_EQ(exec(pc, "SELECT 1").scalar(), "1");
}

TEST(LockdLimits, LocksPerConnectionAreCapped) {
  Daemon d(lockd_config("app", ""));
  START_LOCKD(d);
  LockdClient c = client(d);
  for (int i = 0; i < kLocksPerConnection; ++i) {
    json a = c.call(lock_req("cap-" + std::to_string(i)));
    ASSERT_EQ(str(a, "state"), "held") << i << ": " << a.dump();
  }
  json over = c.call(lock_req("cap-over", 0));
  EXPECT_EQ(str(over, "ok"), "false") << over.dump();
  EXPECT_EQ(code(over), "too_many_locks") << over.dump();
  EXPECT_EQ(str(over, "name"), "cap-over") << over.dump();
  json e = c.call(locks_req("cap-over"));
  EXPECT_EQ(str(lock_entry(e, "cap-over"), "held"), "false") << "nothing was queued: " << e.dump();
  EXPECT_EQ(str(lock_entry(e, "cap-over"), "waiters"), "0") << e.dump();

  // The cap is per connection: another one may lock, also a name the first waits for.
  LockdClient other = client(d);
  EXPECT_EQ(str(other.call(lock_req("cap-over")), "state"), "held");

  // A release makes room; a wait counts like a hold while it lasts, and not after.
  EXPECT_EQ(str(c.call(unlock_req("cap-0")), "state"), "released");
  json t = c.lock(lock_req("cap-over", 100));
  EXPECT_EQ(code(t), "lock_timeout") << t.dump();
  json g = c.call(lock_req("cap-0", 0));
  EXPECT_EQ(str(g, "state"), "held") << "the timed-out wait no longer counts: " << g.dump();
  json again = c.call(lock_req("cap-new", 0));
  EXPECT_EQ(code(again), "too_many_locks") << again.dump();

  // Closing the connection releases all of them.
  c.close();
  bool freed = eventually([&] { return str(lock_entry(other.call(locks_req("cap-5")), "cap-5"), "held") == "false"; }, 5000);
  EXPECT_TRUE(freed) << "a closed connection's locks are released";
}

TEST(LockdLimits, ConnectionsAreCapped) {
  Daemon d(lockd_config("app", ""));
  START_LOCKD(d);
  // wait_socket's probes may still be closing: retry each until it is served.
  std::vector<LockdClient> conns;
  for (int i = 0; i < kMaxConnections; ++i) {
    LockdClient c;
    json last;
    bool served = eventually([&] {
      if (!c.connect(sock(d))) return false;
      last = c.call({{"op", "locks"}}, 5000);
      return str(last, "ok") == "true";
    }, 5000);
    ASSERT_TRUE(served) << "connection " << i << ": " << last.dump();
    conns.push_back(std::move(c));
  }
  LockdClient extra = client(d);
  json r = extra.read(5000);
  EXPECT_EQ(str(r, "ok"), "false") << r.dump();
  EXPECT_EQ(code(r), "too_many_connections") << r.dump();
  EXPECT_TRUE(extra.wait_closed(3000)) << "closed after too_many_connections";

  // Those already connected are still served; a freed slot is given to the next one.
  json a = conns.back().call({{"op", "locks"}});
  EXPECT_EQ(str(a, "ok"), "true") << a.dump();
  conns.front().close();
  json last;
  bool served = eventually([&] {
    LockdClient c;
    if (!c.connect(sock(d))) return false;
    last = c.call({{"op", "locks"}}, 5000);
    return str(last, "ok") == "true";
  }, 5000);
  EXPECT_TRUE(served) << last.dump();
  ConnPtr pc = must_connect(d.conninfo());
  ASSERT_TRUE(pc);
  EXPECT_EQ(exec(pc, "SELECT 1").scalar(), "1");
}

// An over-long line ends the connection, but only after the requests before it
// are answered (in order, as always); a line without end is cut off at the cap.
TEST(LockdLimits, OverlongLineAfterRequestsAnswersThemFirst) {
  Daemon d(lockd_config("app", ""));
  START_LOCKD(d);
  LockdClient c = client(d);
  std::string bytes = json{{"op", "locks"}, {"id", 1}}.dump() + "\n" + json{{"op", "locks"}, {"id", 2}}.dump() + "\n" +
                      std::string(kMaxLineBytes + 100, 'x') + "\n";
  (void)c.send_raw(bytes);
  json a1 = c.read(5000), a2 = c.read(5000), e = c.read(5000);
  EXPECT_EQ(str(a1, "id"), "1") << a1.dump();
  EXPECT_EQ(str(a2, "id"), "2") << a2.dump();
  EXPECT_EQ(code(e), "line_too_long") << e.dump();
  EXPECT_TRUE(c.wait_closed(3000)) << "closed after line_too_long";

  // No newline at all, far past the cap: lockd keeps at most the cap of it.
  LockdClient endless = client(d);
  (void)endless.send_raw(std::string(1 << 20, '{'));
  json r = endless.read(5000);
  EXPECT_EQ(code(r), "line_too_long") << r.dump();
  EXPECT_TRUE(endless.wait_closed(3000));

  LockdClient c3 = client(d);
  EXPECT_EQ(str(c3.call({{"op", "locks"}}), "ok"), "true") << "others are still served";
}

// Requests are flat; an id may nest, but only so deep (the JSON library copies
// and prints values recursively).
TEST(LockdLimits, DeeplyNestedRequestIsRefused) {
  Daemon d(lockd_config("app", ""));
  START_LOCKD(d);
  LockdClient c = client(d);
  auto nested = [](int depth) {
    return R"({"op":"locks","id":)" + std::string(size_t(depth), '[') + std::string(size_t(depth), ']') + "}\n";
  };
  json ok = raw_call(c, nested(15));
  EXPECT_EQ(str(ok, "ok"), "true") << "16 levels with the request object: " << ok.dump();
  json deep = raw_call(c, nested(4000));
  EXPECT_EQ(code(deep), "bad_request") << deep.dump();
  json after = c.call({{"op", "locks"}});
  EXPECT_EQ(str(after, "ok"), "true") << "the connection stays open: " << after.dump();
}

// While a request waits, the requests behind it queue (up to a cap, then lockd
// stops reading the socket); all are answered in order once it is done.
TEST(LockdLimits, PipelinedRequestsBehindAWaitAreAnsweredInOrder) {
  Daemon d(lockd_config("app", ""));
  START_LOCKD(d);
  LockdClient holder = client(d), c = client(d);
  ASSERT_EQ(str(holder.call(lock_req("pipe")), "state"), "held");
  constexpr int kBehind = 200;
  std::string bytes = lock_req("pipe", 20000).dump() + "\n";
  for (int i = 0; i < kBehind; ++i) bytes += json{{"op", "locks"}, {"name", "pipe"}, {"id", i}}.dump() + "\n";
  ASSERT_TRUE(c.send_raw(bytes));
  json q = c.read(5000);
  EXPECT_EQ(str(q, "state"), "queued") << q.dump();
  EXPECT_EQ(str(holder.call(unlock_req("pipe")), "state"), "released");
  json h = c.read(5000);
  EXPECT_EQ(str(h, "state"), "held") << h.dump();
  for (int i = 0; i < kBehind; ++i) {
    json a = c.read(5000);
    ASSERT_EQ(str(a, "id"), std::to_string(i)) << a.dump();
    ASSERT_EQ(str(lock_entry(a, "pipe"), "held"), "true") << a.dump();
  }
}

// A connection that holds or waits for nothing and sends nothing is closed after
// the idle timeout (shortened for the test through PGSIDECAR_LOCKD_IDLE_TIMEOUT_MS);
// one that holds a lock is kept however long it is quiet.
TEST(LockdLimits, IdleConnectionIsClosedButNotALockHolder) {
  Daemon d(lockd_config("app", ""));
  setenv("PGSIDECAR_LOCKD_IDLE_TIMEOUT_MS", "300", 1);
  std::string start_err;
  bool started = d.start(&start_err);
  unsetenv("PGSIDECAR_LOCKD_IDLE_TIMEOUT_MS");
  ASSERT_TRUE(started) << start_err;
  ASSERT_TRUE(wait_socket(sock(d)));

  LockdClient holder = client(d);
  ASSERT_EQ(str(holder.call(lock_req("idle")), "state"), "held");
  LockdClient waiter = client(d);
  ASSERT_TRUE(waiter.send(lock_req("idle", 60000)));
  ASSERT_EQ(str(waiter.read(5000), "state"), "queued");
  LockdClient quiet = client(d);
  ASSERT_EQ(str(quiet.call({{"op", "locks"}}), "ok"), "true");
  // The holder and the waiter went quiet before this one: they would be closed first.
  EXPECT_TRUE(quiet.wait_closed(10000)) << "an idle connection is closed";
  json a = holder.call(locks_req("idle"));
  EXPECT_EQ(str(lock_entry(a, "idle"), "held"), "true") << "the holder is still connected: " << a.dump();
  EXPECT_EQ(str(lock_entry(a, "idle"), "waiters"), "1") << "the waiter is still connected: " << a.dump();
  EXPECT_EQ(str(holder.call(unlock_req("idle")), "state"), "released");
  EXPECT_EQ(str(waiter.read(5000), "state"), "held");
}

// ================================================================ ctl

TEST(LockdCtl, CtlCli) {
  std::string db = fresh_db("lt_ctl");
  MigDir m;
  m.write("1_a.up.sql", "CREATE TABLE ca (id int);\n");
  m.write("2_b.up.sql", "CREATE TABLE cb (id int);\n");
  Daemon d(lockd_config(db, m.path));
  START_LOCKD(d);
  const std::string bin = daemon_binary(), s = sock(d);
  auto ctl = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = {bin, "ctl"};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_process(argv, 20000);
  };
  auto first_json = [](const ProcResult& r) {
    std::vector<json> v = json_lines(r.output);
    return v.empty() ? json{{"_io", "no JSON line in: " + r.output}} : v.front();
  };

  ProcResult st = ctl({"--socket", s, "status"});
  EXPECT_EQ(st.exit_code, 3) << st.output;
  EXPECT_EQ(str(first_json(st), "status"), "pending") << st.output;
  EXPECT_EQ(str(first_json(st), "pending"), R"(["1","2"])") << st.output;

  ProcResult mg = ctl({"--socket", s, "migrate"});
  EXPECT_EQ(mg.exit_code, 0) << mg.output;
  EXPECT_EQ(str(first_json(mg), "status"), "current") << mg.output;

  ProcResult st2 = ctl({"--socket", s, "status"});
  EXPECT_EQ(st2.exit_code, 0) << st2.output;
  EXPECT_EQ(str(first_json(st2), "status"), "current") << st2.output;
  ProcResult st3 = ctl({"-c", d.config_path(), "status"});
  EXPECT_EQ(st3.exit_code, 0) << "socket from the config's lockd.socket_path: " << st3.output;

  ProcResult seven = ctl({"--socket", s, "lock", "acquire", "n", "--", "sh", "-c", "exit 7"});
  EXPECT_EQ(seven.exit_code, 7) << seven.output;

  // While the command runs the lock is held (asked by a nested ctl).
  ProcResult nested =
      ctl({"--socket", s, "lock", "acquire", "n2", "--", bin, "ctl", "--socket", s, "lock", "status", "n2"});
  EXPECT_EQ(nested.exit_code, 0) << nested.output;
  bool saw_held = false;
  for (const json& j : json_lines(nested.output)) {
    json e = lock_entry(j, "n2");
    if (!e.is_null() && str(e, "held") == "true") saw_held = true;
  }
  EXPECT_TRUE(saw_held) << nested.output;
  ProcResult after = ctl({"--socket", s, "lock", "status", "n2"});
  EXPECT_EQ(after.exit_code, 0) << after.output;
  EXPECT_EQ(str(lock_entry(first_json(after), "n2"), "held"), "false") << "released when ctl exits: " << after.output;

  ProcResult rel = ctl({"--socket", s, "lock", "release", "n2"});
  EXPECT_EQ(rel.exit_code, 1) << rel.output;
  EXPECT_EQ(code(first_json(rel)), "not_held") << rel.output;

  ProcResult nosock = ctl({"--socket", "/nonexistent/lockd.sock", "status"});
  EXPECT_EQ(nosock.exit_code, 1) << nosock.output;
  ProcResult usage = ctl({"--socket", s, "frobnicate"});
  EXPECT_EQ(usage.exit_code, 2) << usage.output;
}

// The admin console shows lockd's state: SHOW MIGRATIONS and SHOW LOCKS.
TEST(LockdAdmin, ShowMigrationsAndLocks) {
  std::string db = fresh_db("lt_admin");
  MigDir m;
  m.write("1_a.up.sql", "CREATE TABLE a (id int);\n");
  m.write("2_b.up.sql", "CREATE TABLE b (id int);\n");
  DaemonConfig cfg = lockd_config(db, m.path);
  cfg.set("admin_users", "[admin]");
  Daemon d(cfg);
  START_LOCKD(d);
  LockdClient c = client(d);
  ASSERT_EQ(str(c.call(kStatus), "status"), "pending");
  ConnPtr admin = must_connect("host=127.0.0.1 port=" + std::to_string(d.port()) + " user=admin dbname=pgsidecar");
  ASSERT_TRUE(admin);
  QResult r = exec(admin, "SHOW MIGRATIONS");
  ASSERT_TRUE(r.ok) << r.describe();
  ASSERT_EQ(r.rows.size(), 2u) << r.describe();
  EXPECT_EQ(r.rows[0], (std::vector<std::string>{"1", "a", "1_a.up.sql", "pending", ""}));

  json mig = c.call({{"op", "migrate"}});
  ASSERT_EQ(str(mig, "status"), "current") << mig.dump();
  m.write("3_c.up.sql", "CREATE TABLE c (id int);\n");
  ASSERT_TRUE(eventually([&] { return str(c.call(kStatus), "status") == "pending"; }, 3000));
  r = exec(admin, "SHOW MIGRATIONS");
  ASSERT_EQ(r.rows.size(), 3u) << r.describe();
  EXPECT_EQ(r.at(1, 3), "applied");
  EXPECT_EQ(r.at(2, 3), "pending");

  ASSERT_EQ(str(c.call(lock_req("report")), "state"), "held");
  r = exec(admin, "SHOW LOCKS");
  ASSERT_TRUE(r.ok) << r.describe();
  ASSERT_EQ(r.rows.size(), 1u) << r.describe();
  EXPECT_EQ(r.at(0, 0), "report");
  EXPECT_EQ(r.at(0, 1), "yes");
  EXPECT_EQ(r.at(0, 3), "0");
}
