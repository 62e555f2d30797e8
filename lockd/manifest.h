// The migration manifest: which SQL files the migrations directory holds, their
// versions, names and checksums. scan() is plain blocking file I/O and runs on
// libuv's thread pool (see ManifestWatcher); it re-reads and re-hashes only files
// that are new, changed size or mtime, or were named by a file-system event.
#pragma once
#include <uv.h>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "conf/config.h"

namespace lockd {

struct MigrationFile {
  std::string version, name, file;   // file: name within the directory
  std::string sha256;                // lowercase hex of the file's bytes
  int32_t flyway_checksum = 0;       // Flyway's CRC32 over the file's lines
  int64_t size = 0, mtime_ns = 0;
};

struct Manifest {
  std::vector<MigrationFile> files;  // ordered by version
  std::string error;                 // set: the manifest is unusable (status answers manifest_invalid)
  int rehashed = 0;                  // files read and hashed by the scan that built it

  const MigrationFile* find(std::string_view version) const;
};

// (version, name) if `file` is a migration file name of this format: golang-migrate
// "<version>_<name>.up.sql" or Flyway "V<version>__<name>.sql" (format pgsidecar
// takes both). Versions are digits, with dots or underscores between for Flyway.
std::optional<std::pair<std::string, std::string>> parse_file_name(std::string_view file, conf::MigrationFormat format);

// SHA-256 of data, as bytes and as lowercase hex (checksums, lock keys).
std::array<unsigned char, 32> sha256(std::string_view data);
std::string sha256_hex(std::string_view data);

// Reads a whole file (blocking: thread pool only); false with err set on failure.
bool read_file(const std::string& path, std::string& out, std::string& err);

// Orders versions numerically part by part ("1.10" > "1.9", "010" == "10").
int compare_versions(std::string_view a, std::string_view b);

// Flyway's checksum: CRC32 over each line's bytes without its line ending (and a
// leading UTF-8 BOM), as the signed 32-bit value Flyway stores.
int32_t flyway_checksum(std::string_view content);

// Lists `dir`; files unchanged since `previous` (same size and mtime, not in
// `changed`) keep their checksums, the rest are read and hashed.
Manifest scan(const std::string& dir, conf::MigrationFormat format, const Manifest& previous,
              const std::set<std::string>& changed, bool everything_changed);

// Keeps the manifest of one directory current on the loop: built on first use,
// marked stale by file-system events (uv_fs_event) and rebuilt, incrementally,
// on the thread pool when next asked for.
class ManifestWatcher {
 public:
  ManifestWatcher(uv_loop_t* loop, std::string dir, conf::MigrationFormat format);
  ~ManifestWatcher();
  ManifestWatcher(const ManifestWatcher&) = delete;
  ManifestWatcher& operator=(const ManifestWatcher&) = delete;

  // Calls back with a current manifest: at once if nothing changed since the
  // last scan, else after a rescan.
  void get(std::function<void(const Manifest&)> cb);
  // Called on the loop when a file event makes the manifest stale.
  void on_stale(std::function<void()> cb) { on_stale_ = std::move(cb); }
  bool fresh() const { return fresh_; }
  const Manifest& last() const { return manifest_; }
  uint64_t generation() const { return generation_; }   // moves on with every scan
  void stop();

 private:
  struct Scan;
  void start_watch();
  void start_scan();
  void scan_done(Manifest m);

  uv_loop_t* loop_;
  std::string dir_;
  conf::MigrationFormat format_;
  Manifest manifest_;
  uint64_t generation_ = 0;
  bool fresh_ = false, scanning_ = false, rescan_ = false, everything_changed_ = true;
  std::set<std::string> changed_;
  std::vector<std::function<void(const Manifest&)>> waiting_;
  uv_fs_event_t* event_ = nullptr;   // heap: freed in its close callback
  std::function<void()> on_stale_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);   // a scan may finish after stop()
};

// Runs `work` on libuv's thread pool, then `done` on the loop.
void run_blocking(uv_loop_t* loop, std::function<void()> work, std::function<void()> done);

}  // namespace lockd
