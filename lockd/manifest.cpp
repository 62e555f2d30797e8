#include "lockd/manifest.h"

#include <dirent.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>

namespace lockd {
namespace {

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// "1", "1.2", "1_2" (Flyway separators) -> "1", "1.2", "1.2"; nullopt if not a version.
std::optional<std::string> flyway_version(std::string_view v) {
  std::string out;
  size_t start = 0;
  for (size_t i = 0; i <= v.size(); i++) {
    if (i < v.size() && v[i] != '.' && v[i] != '_') continue;
    if (!all_digits(v.substr(start, i - start))) return std::nullopt;
    out += (out.empty() ? "" : ".") + std::string(v.substr(start, i - start));
    start = i + 1;
  }
  return out;
}

std::string_view number_part(std::string_view v, size_t& pos) {
  size_t end = v.find('.', pos);
  if (end == std::string_view::npos) end = v.size();
  std::string_view part = v.substr(pos, end - pos);
  pos = end + 1;
  while (part.size() > 1 && part[0] == '0') part.remove_prefix(1);
  return part;
}

}  // namespace

std::array<unsigned char, 32> sha256(std::string_view data) {
  std::array<unsigned char, 32> out{};
  EVP_Digest(data.data(), data.size(), out.data(), nullptr, EVP_sha256(), nullptr);
  return out;
}

std::string sha256_hex(std::string_view data) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char b : sha256(data)) out += {digits[b >> 4], digits[b & 15]};
  return out;
}

bool read_file(const std::string& path, std::string& out, std::string& err) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) {
    err = path + ": " + std::strerror(errno);
    return false;
  }
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  bool ok = !std::ferror(f);
  std::fclose(f);
  if (!ok) err = path + ": read error";
  return ok;
}

const MigrationFile* Manifest::find(std::string_view version) const {
  for (const MigrationFile& f : files)
    if (compare_versions(f.version, version) == 0) return &f;
  return nullptr;
}

std::optional<std::pair<std::string, std::string>> parse_file_name(std::string_view file, conf::MigrationFormat format) {
  using conf::MigrationFormat;
  if (format != MigrationFormat::Flyway && file.ends_with(".up.sql")) {
    std::string_view stem = file.substr(0, file.size() - 7);
    size_t us = stem.find('_');
    if (us != std::string_view::npos && us + 1 < stem.size() && all_digits(stem.substr(0, us))) {
      return std::pair{std::string(stem.substr(0, us)), std::string(stem.substr(us + 1))};
    }
  }
  if (format != MigrationFormat::GolangMigrate && file.size() > 1 && file[0] == 'V' && file.ends_with(".sql") &&
      !file.ends_with(".down.sql")) {
    std::string_view stem = file.substr(1, file.size() - 5);
    size_t sep = stem.find("__");
    if (sep != std::string_view::npos && sep + 2 < stem.size()) {
      if (auto v = flyway_version(stem.substr(0, sep))) return std::pair{*v, std::string(stem.substr(sep + 2))};
    }
  }
  return std::nullopt;
}

int compare_versions(std::string_view a, std::string_view b) {
  size_t pa = 0, pb = 0;
  while (pa <= a.size() || pb <= b.size()) {
    std::string_view x = pa <= a.size() ? number_part(a, pa) : "0";
    std::string_view y = pb <= b.size() ? number_part(b, pb) : "0";
    if (x.size() != y.size()) return x.size() < y.size() ? -1 : 1;
    if (int c = x.compare(y)) return c < 0 ? -1 : 1;
  }
  return 0;
}

int32_t flyway_checksum(std::string_view content) {
  if (content.substr(0, 3) == "\xEF\xBB\xBF") content.remove_prefix(3);
  uLong crc = crc32(0L, Z_NULL, 0);
  size_t start = 0;
  for (size_t i = 0; i < content.size(); i++) {
    if (content[i] != '\n' && content[i] != '\r') continue;
    crc = crc32(crc, reinterpret_cast<const Bytef*>(content.data() + start), uInt(i - start));
    if (content[i] == '\r' && i + 1 < content.size() && content[i + 1] == '\n') i++;
    start = i + 1;
  }
  if (start < content.size()) crc = crc32(crc, reinterpret_cast<const Bytef*>(content.data() + start), uInt(content.size() - start));
  return static_cast<int32_t>(static_cast<uint32_t>(crc));
}

Manifest scan(const std::string& dir, conf::MigrationFormat format, const Manifest& previous,
              const std::set<std::string>& changed, bool everything_changed) {
  Manifest m;
  DIR* d = opendir(dir.c_str());
  if (!d) {
    m.error = "cannot read migrations.dir " + dir + ": " + std::strerror(errno);
    return m;
  }
  std::map<std::string, const MigrationFile*> before;
  for (const MigrationFile& f : previous.files) before[f.file] = &f;
  while (dirent* e = readdir(d)) {
    std::string file = e->d_name;
    auto parsed = parse_file_name(file, format);
    if (!parsed) continue;
    std::string path = dir + "/" + file;
    struct stat st;
    if (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    MigrationFile f{parsed->first, parsed->second, file, "", 0, int64_t(st.st_size),
                    int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
    auto old = before.find(file);
    if (!everything_changed && !changed.count(file) && old != before.end() && old->second->size == f.size &&
        old->second->mtime_ns == f.mtime_ns) {
      f.sha256 = old->second->sha256;
      f.flyway_checksum = old->second->flyway_checksum;
    } else {
      std::string content;
      if (!read_file(path, content, m.error)) break;
      f.sha256 = sha256_hex(content);
      f.flyway_checksum = flyway_checksum(content);
      m.rehashed++;
    }
    m.files.push_back(std::move(f));
  }
  closedir(d);
  std::sort(m.files.begin(), m.files.end(),
            [](const MigrationFile& a, const MigrationFile& b) { return compare_versions(a.version, b.version) < 0; });
  for (size_t i = 1; i < m.files.size() && m.error.empty(); i++) {
    if (compare_versions(m.files[i - 1].version, m.files[i].version) == 0) {
      m.error = "two migration files have version " + m.files[i].version + ": " + m.files[i - 1].file + " and " +
                m.files[i].file;
    }
  }
  if (!m.error.empty()) m.files.clear();
  return m;
}

void run_blocking(uv_loop_t* loop, std::function<void()> work, std::function<void()> done) {
  struct Job {
    uv_work_t req;
    std::function<void()> work, done;
  };
  auto* job = new Job{{}, std::move(work), std::move(done)};
  job->req.data = job;
  uv_queue_work(
      loop, &job->req, [](uv_work_t* r) { static_cast<Job*>(r->data)->work(); },
      [](uv_work_t* r, int) {
        auto* j = static_cast<Job*>(r->data);
        j->done();
        delete j;
      });
}

struct ManifestWatcher::Scan {
  Manifest previous, result;
  std::set<std::string> changed;
  bool everything = false;
};

ManifestWatcher::ManifestWatcher(uv_loop_t* loop, std::string dir, conf::MigrationFormat format)
    : loop_(loop), dir_(std::move(dir)), format_(format) {}

ManifestWatcher::~ManifestWatcher() { stop(); }

void ManifestWatcher::stop() {
  *alive_ = false;
  if (event_) {
    uv_fs_event_stop(event_);
    uv_close(reinterpret_cast<uv_handle_t*>(event_), [](uv_handle_t* h) { delete reinterpret_cast<uv_fs_event_t*>(h); });
    event_ = nullptr;
  }
}

void ManifestWatcher::get(std::function<void(const Manifest&)> cb) {
  if (fresh_) return cb(manifest_);
  waiting_.push_back(std::move(cb));
  if (!scanning_) start_scan();
}

// Watches before scanning, so a change made during the scan is not missed.
void ManifestWatcher::start_watch() {
  if (event_) return;
  event_ = new uv_fs_event_t;
  uv_fs_event_init(loop_, event_);
  event_->data = this;
  int rc = uv_fs_event_start(
      event_,
      [](uv_fs_event_t* h, const char* filename, int, int status) {
        auto* self = static_cast<ManifestWatcher*>(h->data);
        if (status < 0 || !filename) self->everything_changed_ = true;
        else self->changed_.insert(filename);
        if (self->scanning_) self->rescan_ = true;
        bool was_fresh = self->fresh_;
        self->fresh_ = false;
        if (was_fresh && self->on_stale_) self->on_stale_();
      },
      dir_.c_str(), 0);
  if (rc != 0) {   // e.g. the directory does not exist yet: every get() rescans
    uv_close(reinterpret_cast<uv_handle_t*>(event_), [](uv_handle_t* h) { delete reinterpret_cast<uv_fs_event_t*>(h); });
    event_ = nullptr;
  }
}

void ManifestWatcher::start_scan() {
  start_watch();
  scanning_ = true;
  rescan_ = false;
  auto job = std::make_shared<Scan>();
  job->previous = manifest_;
  job->changed.swap(changed_);
  job->everything = everything_changed_;
  everything_changed_ = false;
  std::string dir = dir_;
  conf::MigrationFormat format = format_;
  std::shared_ptr<bool> alive = alive_;
  run_blocking(
      loop_, [job, dir, format] { job->result = scan(dir, format, job->previous, job->changed, job->everything); },
      [this, job, alive] {
        if (*alive) scan_done(std::move(job->result));
      });
}

void ManifestWatcher::scan_done(Manifest m) {
  scanning_ = false;
  manifest_ = std::move(m);
  generation_++;
  if (rescan_) return start_scan();   // changed while scanning: the result may already be old
  fresh_ = event_ != nullptr && manifest_.error.empty();   // unwatched or failed: rescan on every get()
  if (!event_) everything_changed_ = true;
  auto waiting = std::move(waiting_);
  waiting_.clear();
  for (auto& cb : waiting) cb(manifest_);
}

}  // namespace lockd
