// YAML config loader: a table of key -> setter per struct, strict validation,
// every error reported as "file:line: message". No exception leaves this file.
#include "conf/config.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <sstream>

#include <grp.h>
#include <pwd.h>

namespace conf {
namespace {

// Thrown inside this file only; load_string turns it into LoadResult::error.
struct Error {
  int line;  // 1-based; 0 = no line
  std::string msg;
};

// The value being parsed, with the key name and line for messages.
struct Val {
  const YAML::Node& node;
  std::string_view key;
  int line;
};

[[noreturn]] void fail(int line, std::string msg) { throw Error{line, std::move(msg)}; }
[[noreturn]] void fail(const Val& v, const std::string& msg) { fail(v.line, std::string(v.key) + " " + msg); }

// 1-based line of m, else of fallback.
int line_of_mark(const YAML::Mark& m, const YAML::Mark& fallback) {
  return m.line >= 0 ? m.line + 1 : fallback.line >= 0 ? fallback.line + 1 : 0;
}

int line_of(const YAML::Node& n, int fallback) {
  YAML::Mark m = n.Mark();
  return m.line >= 0 ? m.line + 1 : fallback;
}

// The scalar text of v ("" for an empty value); `what` completes "KEY must be ...".
std::string scalar(const Val& v, const std::string& what) {
  if (v.node.IsNull()) return "";
  if (!v.node.IsScalar()) fail(v, "must be " + what);
  return v.node.Scalar();
}
std::string str(const Val& v) { return scalar(v, "a string"); }
std::string got(const std::string& s) { return ", got '" + s + "'"; }

int integer(const Val& v, int lo, int hi) {
  std::string what = "an integer " + (hi == INT_MAX ? ">= " + std::to_string(lo)
                                                    : std::to_string(lo) + "-" + std::to_string(hi));
  std::string s = scalar(v, what);
  long long n = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size() || n < lo || n > hi) {
    fail(v, "must be " + what + got(s));
  }
  return static_cast<int>(n);
}

// Seconds as a plain number (PgBouncer style) or a number with unit ms, s, m, h.
Duration duration(const Val& v) {
  const std::string what = "a duration >= 0: seconds, or a number with unit ms, s, m or h (e.g. 30, 500ms, 1.5s, 5m)";
  std::string s = scalar(v, what);
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  std::string_view num(s.data(), i), unit(s.data() + i, s.size() - i);
  double value = 0;
  auto [end, ec] = std::from_chars(num.data(), num.data() + num.size(), value);
  static const std::map<std::string_view, double> units = {
      {"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}};
  auto u = units.find(unit);
  if (num.empty() || ec != std::errc() || end != num.data() + num.size() || u == units.end() ||
      value * u->second > 1e15) {
    fail(v, "must be " + what + got(s));
  }
  return Duration(std::llround(value * u->second));
}

void parse(const Val& v, std::string& out) { out = str(v); }
void parse(const Val& v, Duration& out) { out = duration(v); }

void parse(const Val& v, bool& out) {
  std::string s = str(v);
  if (s != "true" && s != "false") fail(v, "must be true or false" + got(s));
  out = s == "true";
}

// A YAML list of strings, or one comma-separated string.
void parse(const Val& v, std::vector<std::string>& out) {
  out.clear();
  auto add = [&](std::string s) {
    size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
    if (b != std::string::npos) out.push_back(s.substr(b, e - b + 1));
  };
  if (v.node.IsSequence()) {
    for (const auto& item : v.node) {
      if (!item.IsScalar()) fail(v, "must be a list of names");
      add(item.Scalar());
    }
    return;
  }
  std::string s = scalar(v, "a list of names or a comma-separated string");
  for (size_t pos = 0; pos <= s.size();) {
    size_t comma = s.find(',', pos);
    if (comma == std::string::npos) comma = s.size();
    add(s.substr(pos, comma - pos));
    pos = comma + 1;
  }
}

// Enums: the accepted spellings are exactly to_string() of each value.
template <class E, size_t N>
E enumerated(const Val& v, const std::array<E, N>& all) {
  std::string s = str(v);
  std::string expect;
  for (size_t i = 0; i < N; ++i) {
    if (to_string(all[i]) == s) return all[i];
    expect += (i == 0 ? "" : i + 1 == N ? " or " : ", ") + std::string(to_string(all[i]));
  }
  fail(v, "must be " + expect + got(s));
}
void parse(const Val& v, PoolMode& out) { out = enumerated(v, std::array{PoolMode::Session, PoolMode::Transaction}); }
void parse(const Val& v, AuthType& out) {
  out = enumerated(v, std::array{AuthType::Trust, AuthType::ScramSha256, AuthType::Cert});
}
void parse(const Val& v, SslMode& out) {
  out = enumerated(v, std::array{SslMode::Disable, SslMode::Allow, SslMode::Prefer, SslMode::Require,
                                 SslMode::VerifyCa, SslMode::VerifyFull});
}
void parse(const Val& v, ChannelBinding& out) {
  out = enumerated(v, std::array{ChannelBinding::Disable, ChannelBinding::Prefer, ChannelBinding::Require});
}
void parse(const Val& v, std::optional<SslMode>& out) { parse(v, out.emplace()); }
void parse(const Val& v, std::optional<std::string>& out) { out = str(v); }
void parse(const Val& v, LogLevel& out) {
  out = enumerated(v, std::array{LogLevel::Debug, LogLevel::Info, LogLevel::Warn, LogLevel::Error});
}
void parse(const Val& v, LogFormat& out) { out = enumerated(v, std::array{LogFormat::Text, LogFormat::Json}); }
void parse(const Val& v, MigrationFormat& out) {
  out = enumerated(v, std::array{MigrationFormat::Pgsidecar, MigrationFormat::GolangMigrate, MigrationFormat::Flyway});
}
void parse(const Val& v, CacheMode& out) { out = enumerated(v, std::array{CacheMode::Off, CacheMode::Hinted, CacheMode::All}); }
void parse(const Val& v, CacheAdmission& out) {
  out = enumerated(v, std::array{CacheAdmission::Always, CacheAdmission::Repeated});
}
void parse(const Val& v, Compression& out) { out = enumerated(v, std::array{Compression::None, Compression::Zstd}); }
void parse(const Val& v, std::optional<PoolMode>& out) { parse(v, out.emplace()); }

// A list of user (or group) names or numeric ids; names are looked up now.
std::vector<unsigned> ids(const Val& v, bool groups) {
  std::vector<std::string> names;
  parse(v, names);
  std::vector<unsigned> out;
  for (const std::string& n : names) {
    unsigned id = 0;
    auto [end, ec] = std::from_chars(n.data(), n.data() + n.size(), id);
    if (ec == std::errc() && end == n.data() + n.size()) {
      out.push_back(id);
    } else if (groups) {
      const struct group* g = getgrnam(n.c_str());   // config load only, never on the loop
      if (!g) fail(v, "names an unknown group" + got(n));
      out.push_back(g->gr_gid);
    } else {
      const struct passwd* p = getpwnam(n.c_str());
      if (!p) fail(v, "names an unknown user" + got(n));
      out.push_back(p->pw_uid);
    }
  }
  return out;
}

// Bytes as a plain number or with unit kB, MB, GB (powers of 1024, as PostgreSQL reads them).
size_t byte_size(const Val& v) {
  const std::string what = "a size in bytes, or a number with unit kB, MB or GB (e.g. 65536, 64MB)";
  std::string s = scalar(v, what);
  size_t i = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  unsigned long long n = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + i, n);
  static const std::map<std::string_view, unsigned long long> units = {
      {"", 1}, {"B", 1}, {"kB", 1ull << 10}, {"MB", 1ull << 20}, {"GB", 1ull << 30}};
  auto u = units.find(std::string_view(s).substr(i));
  if (i == 0 || ec != std::errc() || end != s.data() + i || u == units.end() || n > (1ull << 40) / u->second)
    fail(v, "must be " + what + got(s));
  return size_t(n * u->second);
}

// Always read as octal, like PgBouncer: 0777, "0660", 660 and "0o660" all work.
int octal_mode(const Val& v) {
  std::string s = str(v);
  std::string_view digits = s;
  if (digits.substr(0, 2) == "0o") digits.remove_prefix(2);
  int mode = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), mode, 8);
  if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size() || mode > 07777) {
    fail(v, "must be an octal file mode such as \"0777\" or \"0660\"" + got(s));
  }
  return mode;
}

// A duration of at least 1ms (0 would mean "no time at all", not "off").
Duration positive_duration(const Val& v) {
  Duration d = duration(v);
  if (d.count() <= 0) fail(v, "must be a duration > 0 (e.g. 500ms, 5s)" + got(v.node.Scalar()));
  return d;
}

// TCP keepalive times: the kernel takes whole seconds, 1-32767 on Linux.
Duration keepalive_seconds(const Val& v) {
  Duration d = duration(v);
  if (d.count() < 1000 || d.count() > 32767000 || d.count() % 1000 != 0)
    fail(v, "must be whole seconds from 1s to 32767s (e.g. 60, 30s, 2m)" + got(v.node.Scalar()));
  return d;
}

// A list or a comma-separated string of names, as the bit set of their values.
uint8_t name_set(const Val& v, const std::map<std::string_view, uint8_t>& names, const std::string& noun,
                 const std::string& expect) {
  uint8_t out = 0;
  auto add = [&](const std::string& raw, int line) {
    size_t b = raw.find_first_not_of(" \t"), e = raw.find_last_not_of(" \t");
    if (b == std::string::npos) return;
    std::string name = raw.substr(b, e - b + 1);
    auto it = names.find(name);
    if (it == names.end()) fail(line, std::string(v.key) + " has an unknown " + noun + " (expected " + expect + ")" + got(name));
    out |= it->second;
  };
  if (v.node.IsSequence()) {
    for (const auto& item : v.node) {
      if (!item.IsScalar()) fail(line_of(item, v.line), std::string(v.key) + " must be a list of " + noun + " names");
      add(item.Scalar(), line_of(item, v.line));
    }
  } else {
    std::string s = scalar(v, "a list of " + noun + " names (" + expect + ") or a comma-separated string");
    for (size_t pos = 0; pos <= s.size();) {
      size_t comma = s.find(',', pos);
      if (comma == std::string::npos) comma = s.size();
      add(s.substr(pos, comma - pos), v.line);
      pos = comma + 1;
    }
  }
  return out;
}

// `server_auth_methods`: a list or a comma-separated string of method names.
uint8_t server_auth_methods(const Val& v) {
  static const std::map<std::string_view, uint8_t> names = {
      {"scram-sha-256", kServerAuthScram}, {"md5", kServerAuthMd5},
      {"password", kServerAuthCleartext}, {"cleartext", kServerAuthCleartext}};
  const std::string expect = "scram-sha-256, md5 or password";
  uint8_t out = name_set(v, names, "method", expect);
  if (out == 0) fail(v, "must name at least one method: " + expect);
  return out;
}

// `pin_on`: kinds of session state, or `off`.
const std::map<std::string_view, uint8_t>& pin_kind_names() {
  static const std::map<std::string_view, uint8_t> names = {
      {"temp", kPinTemp}, {"prepare", kPinPrepare}, {"cursor", kPinCursor}, {"listen", kPinListen},
      {"advisory", kPinAdvisory}, {"set", kPinSet}, {"other", kPinOther}};
  return names;
}
uint8_t pin_kinds(const Val& v) {
  if (v.node.IsScalar() && (v.node.Scalar() == "off" || v.node.Scalar() == "false")) return 0;
  const std::string expect = "temp, prepare, cursor, listen, advisory, set, other; or off";
  uint8_t out = name_set(v, pin_kind_names(), "kind", expect);
  if (out == 0) fail(v, "must name at least one kind (" + expect + ")");
  return out;
}

// `*_tls_protocols`: TLS versions, contiguous (OpenSSL takes a minimum and a maximum).
uint8_t tls_protocols(const Val& v) {
  static const std::map<std::string_view, uint8_t> names = {
      {"tlsv1.2", kTls12}, {"tlsv1.3", kTls13}, {"secure", kTls12 | kTls13}, {"all", kTls12 | kTls13}};
  uint8_t out = name_set(v, names, "protocol", "tlsv1.2, tlsv1.3, secure or all");
  if (out == 0) fail(v, "must name at least one protocol (tlsv1.2, tlsv1.3, secure or all)");
  return out;
}

template <class T>
using Setter = std::function<void(T&, const Val&)>;
template <class T>
using Table = std::map<std::string_view, Setter<T>>;

template <class T, class F>
Setter<T> field(F T::*f) {
  return [f](T& t, const Val& v) { parse(v, t.*f); };
}
template <class T, class F>  // F is int or std::optional<int>
Setter<T> field(F T::*f, int lo, int hi = INT_MAX) {
  return [f, lo, hi](T& t, const Val& v) { t.*f = integer(v, lo, hi); };
}

const Table<Database>& database_keys() {
  static const Table<Database> keys = {
      {"host", [](Database& d, const Val& v) {
         d.host = str(v);
         if (d.host.empty()) fail(v, "must not be empty");
       }},
      {"port", field(&Database::port, 1, 65535)},
      {"dbname", field(&Database::dbname)},
      {"user", field(&Database::user)},
      {"password", field(&Database::password)},
      {"pool_mode", field(&Database::pool_mode)},
      {"pool_size", field(&Database::pool_size, 1)},
      {"min_pool_size", field(&Database::min_pool_size, 0)},
      {"reserve_pool_size", field(&Database::reserve_pool_size, 0)},
      {"pin_on", [](Database& d, const Val& v) { d.pin_on = pin_kinds(v); }},
      {"max_pinned_per_pool", field(&Database::max_pinned_per_pool, 0)},
      {"server_tls_sslmode", field(&Database::server_tls_sslmode)},
      {"server_tls_ca_file", field(&Database::server_tls_ca_file)},
      {"server_tls_key_file", field(&Database::server_tls_key_file)},
      {"server_tls_cert_file", field(&Database::server_tls_cert_file)},
  };
  return keys;
}

// Applies a YAML map to `out` through `table`, rejecting unknown and duplicate keys.
// Returns the line of each key that was set.
template <class T>
std::map<std::string, int> apply_map(T& out, const YAML::Node& map, const Table<T>& table, int fallback_line) {
  std::map<std::string, int> seen;
  for (const auto& kv : map) {
    int line = line_of(kv.first, fallback_line);
    if (!kv.first.IsScalar()) fail(line, "keys must be plain names");
    const std::string& key = kv.first.Scalar();
    auto it = table.find(key);
    if (it == table.end()) fail(line, "unknown key '" + key + "'");
    if (!seen.emplace(key, line).second) fail(line, "duplicate key '" + key + "'");
    // An empty value's mark is the next token's, often on a later line: use the key's.
    it->second(out, Val{kv.second, it->first, kv.second.IsNull() ? line : line_of(kv.second, line)});
  }
  return seen;
}

// PgBouncer-style "host=... port=... dbname=..."; values may be 'single quoted'.
void apply_connstr(Database& d, const std::string& s, int line) {
  size_t i = 0;
  auto skip_space = [&] { while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i; };
  for (skip_space(); i < s.size(); skip_space()) {
    size_t eq = s.find('=', i);
    size_t space = s.find_first_of(" \t", i);
    if (eq == std::string::npos || eq == i || (space != std::string::npos && space < eq)) {
      fail(line, "connection string: expected key=value at '" + s.substr(i) + "'");
    }
    std::string key = s.substr(i, eq - i), value;
    i = eq + 1;
    if (i < s.size() && s[i] == '\'') {
      for (++i;; ++i) {
        if (i >= s.size()) fail(line, "connection string: unterminated quote in value of '" + key + "'");
        if (s[i] == '\\' && i + 1 < s.size()) value += s[++i];
        else if (s[i] == '\'') { ++i; break; }
        else value += s[i];
      }
    } else {
      while (i < s.size() && !std::isspace(static_cast<unsigned char>(s[i]))) value += s[i++];
    }
    auto it = database_keys().find(key);
    if (it == database_keys().end()) fail(line, "unknown key '" + key + "'");
    it->second(d, Val{YAML::Node(value), it->first, line});
  }
}

void parse_databases(Config& cfg, const Val& v) {
  if (v.node.IsNull()) return;
  if (!v.node.IsMap()) fail(v, "must be a map of database name -> settings");
  std::set<std::string> names;
  for (const auto& kv : v.node) {
    int line = line_of(kv.first, v.line);
    if (!kv.first.IsScalar() || kv.first.Scalar().empty()) fail(line, "database names must be non-empty strings");
    Database d;
    d.name = kv.first.Scalar();
    if (!names.insert(d.name).second) fail(line, "duplicate database '" + d.name + "'");
    const YAML::Node& value = kv.second;
    if (value.IsMap()) {
      for (auto& [key, at] : apply_map(d, value, database_keys(), line)) cfg.lines["databases." + d.name + "." + key] = at;
    } else if (value.IsScalar()) {
      apply_connstr(d, value.Scalar(), line_of(value, line));
      for (const auto& [key, setter] : database_keys()) cfg.lines.emplace("databases." + d.name + "." + std::string(key), line);
    }
    else if (!value.IsNull()) fail(line, "database '" + d.name + "' must be a map or a connection string");
    int pool = d.pool_size.value_or(cfg.default_pool_size), min = d.min_pool_size.value_or(cfg.min_pool_size);
    if (min > pool) {
      fail(line, "database '" + d.name + "': min_pool_size " + std::to_string(min) + " exceeds pool size " +
                     std::to_string(pool));
    }
    cfg.databases.push_back(std::move(d));
  }
}

const Table<Metrics>& metrics_keys() {
  static const Table<Metrics> keys = {
      {"listen", [](Metrics& m, const Val& v) {
         m.listen = str(v);
         if (m.listen.empty()) return;
         size_t colon = m.listen.rfind(':');
         int port = 0;
         const char* end = m.listen.data() + m.listen.size();
         auto [ptr, ec] = colon == std::string::npos ? std::from_chars(end, end, port)
                                                     : std::from_chars(m.listen.data() + colon + 1, end, port);
         if (colon == std::string::npos || colon == 0 || ec != std::errc() || ptr != end || port < 1 || port > 65535)
           fail(v, "must be \"IP:port\" (e.g. \"127.0.0.1:9127\"), or \"\" for no metrics endpoint" + got(m.listen));
       }},
  };
  return keys;
}

const Table<Lockd>& lockd_keys() {
  static const Table<Lockd> keys = {
      {"socket_path", field(&Lockd::socket_path)},
      {"socket_mode", [](Lockd& l, const Val& v) { l.socket_mode = octal_mode(v); }},
      {"allowed_uids", [](Lockd& l, const Val& v) { l.allowed_uids = ids(v, false); }},
      {"allowed_gids", [](Lockd& l, const Val& v) { l.allowed_gids = ids(v, true); }},
      {"database", field(&Lockd::database)},
      {"user", field(&Lockd::user)},
      {"lock_timeout", field(&Lockd::lock_timeout)},
  };
  return keys;
}

const Table<Migrations>& migrations_keys() {
  static const Table<Migrations> keys = {
      {"dir", field(&Migrations::dir)},
      {"format", field(&Migrations::format)},
      {"table", field(&Migrations::table)},
      {"database", field(&Migrations::database)},
      {"user", field(&Migrations::user)},
      {"verify_interval", field(&Migrations::verify_interval)},
      {"optimistic", field(&Migrations::optimistic)},
  };
  return keys;
}

const Table<CacheRedis>& cache_redis_keys() {
  static const Table<CacheRedis> keys = {
      {"url", [](CacheRedis& r, const Val& v) {
         r.url = str(v);
         if (!r.url.empty() && !r.url.starts_with("redis://") && !r.url.starts_with("rediss://") &&
             !r.url.starts_with("unix://"))
           fail(v, "must be redis://[:password@]host[:port][/db], rediss://... (TLS) or unix:///path" + got(r.url));
       }},
      {"tls_sslmode", [](CacheRedis& r, const Val& v) {
         parse(v, r.tls.sslmode);
         if (r.tls.sslmode != SslMode::Require && r.tls.sslmode != SslMode::VerifyCa &&
             r.tls.sslmode != SslMode::VerifyFull)
           fail(v, "must be require, verify-ca or verify-full (TLS is on for rediss:// URLs only)");
       }},
      {"tls_ca_file", [](CacheRedis& r, const Val& v) { r.tls.ca_file = str(v); }},
      {"tls_cert_file", [](CacheRedis& r, const Val& v) { r.tls.cert_file = str(v); }},
      {"tls_key_file", [](CacheRedis& r, const Val& v) { r.tls.key_file = str(v); }},
      {"timeout_ms", [](CacheRedis& r, const Val& v) { r.timeout = Duration(integer(v, 1, 60000)); }},
      {"compression", field(&CacheRedis::compression)},
      {"key_prefix", field(&CacheRedis::key_prefix)},
  };
  return keys;
}

const Table<CacheRule>& cache_rule_keys() {
  static const Table<CacheRule> keys = {
      {"table", field(&CacheRule::table)},
      {"fingerprint", field(&CacheRule::fingerprint)},
      {"ttl", field(&CacheRule::ttl)},
  };
  return keys;
}

const Table<Cache>& cache_keys() {
  static const Table<Cache> keys = {
      {"mode", field(&Cache::mode)},
      {"max_bytes", [](Cache& c, const Val& v) { c.max_bytes = byte_size(v); }},
      {"max_entry_bytes", [](Cache& c, const Val& v) { c.max_entry_bytes = byte_size(v); }},
      {"default_ttl", field(&Cache::default_ttl)},
      {"max_ttl", field(&Cache::max_ttl)},
      {"catalogs", field(&Cache::catalogs)},
      {"admission", field(&Cache::admission)},
      {"invalidation_channel", [](Cache& c, const Val& v) {
         c.invalidation_channel = str(v);
         if (c.invalidation_channel.empty()) fail(v, "must not be empty");
       }},
      {"rules", [](Cache& c, const Val& v) {
         if (v.node.IsNull()) return;
         if (!v.node.IsSequence()) fail(v, "must be a list of {table: NAME, ttl: 30s} or {fingerprint: HEX, ttl: 30s}");
         c.rules.clear();
         for (const auto& item : v.node) {
           int line = line_of(item, v.line);
           if (!item.IsMap()) fail(line, "cache.rules items must be maps such as {table: orders, ttl: 30s}");
           CacheRule r;
           apply_map(r, item, cache_rule_keys(), line);
           if (r.table.empty() == r.fingerprint.empty()) fail(line, "cache.rules items need exactly one of table or fingerprint");
           c.rules.push_back(std::move(r));
         }
       }},
      {"redis", [](Cache& c, const Val& v) {
         if (v.node.IsNull()) return;
         if (!v.node.IsMap()) fail(v, "must be a map (e.g. {url: \"redis://127.0.0.1:6379\"})");
         apply_map(c.redis, v.node, cache_redis_keys(), v.line);
       }},
  };
  return keys;
}

// A nested map setting such as `metrics:`; null leaves the defaults.
template <class T>
Setter<Config> section(T Config::*member, const Table<T>& (*keys)(), const char* example) {
  return [member, keys, example](Config& c, const Val& v) {
    if (v.node.IsNull()) return;
    if (!v.node.IsMap()) fail(v, std::string("must be a map (e.g. ") + example + ")");
    apply_map(c.*member, v.node, keys(), v.line);
  };
}

const Table<Config>& config_keys() {
  static const Table<Config> keys = {
      {"listen_addr", field(&Config::listen_addr)},
      {"listen_port", field(&Config::listen_port, 1, 65535)},
      {"unix_socket_dir", field(&Config::unix_socket_dir)},
      {"unix_socket_mode", [](Config& c, const Val& v) { c.unix_socket_mode = octal_mode(v); }},
      {"auth_type", field(&Config::auth_type)},
      {"auth_file", field(&Config::auth_file)},
      {"admin_users", field(&Config::admin_users)},
      {"stats_users", field(&Config::stats_users)},
      {"pool_mode", field(&Config::pool_mode)},
      {"default_pool_size", field(&Config::default_pool_size, 1)},
      {"min_pool_size", field(&Config::min_pool_size, 0)},
      {"reserve_pool_size", field(&Config::reserve_pool_size, 0)},
      {"reserve_pool_timeout", field(&Config::reserve_pool_timeout)},
      {"max_client_conn", field(&Config::max_client_conn, 1)},
      {"max_db_connections", field(&Config::max_db_connections, 0)},
      {"max_prepared_statements", field(&Config::max_prepared_statements, 0)},
      {"max_client_prepared_statements", field(&Config::max_client_prepared_statements, 0)},
      {"max_unauthenticated_clients", field(&Config::max_unauthenticated_clients, 1)},
      {"pin_on", [](Config& c, const Val& v) { c.pin_on = pin_kinds(v); }},
      {"max_pinned_per_pool", field(&Config::max_pinned_per_pool, -1)},
      {"pinned_log_after", field(&Config::pinned_log_after)},
      {"max_inspect_bytes", [](Config& c, const Val& v) {
         c.max_inspect_bytes = byte_size(v);
         if (c.max_inspect_bytes < (64u << 10) || c.max_inspect_bytes > (1u << 30))
           fail(v, "must be from 64kB to 1GB" + got(v.node.Scalar()));
       }},
      {"schema_notify_channel", field(&Config::schema_notify_channel)},
      {"schema_notify_conninfo", field(&Config::schema_notify_conninfo)},
      {"server_idle_timeout", field(&Config::server_idle_timeout)},
      {"server_lifetime", field(&Config::server_lifetime)},
      {"server_connect_timeout", field(&Config::server_connect_timeout)},
      {"server_login_retry", field(&Config::server_login_retry)},
      {"server_reset_query", field(&Config::server_reset_query)},
      {"server_reset_query_always", field(&Config::server_reset_query_always)},
      {"server_check_query", field(&Config::server_check_query)},
      {"server_check_delay", field(&Config::server_check_delay)},
      {"server_check_timeout", [](Config& c, const Val& v) { c.server_check_timeout = positive_duration(v); }},
      {"server_reset_timeout", [](Config& c, const Val& v) { c.server_reset_timeout = positive_duration(v); }},
      {"cancel_wait_timeout", [](Config& c, const Val& v) { c.cancel_wait_timeout = positive_duration(v); }},
      {"server_auth_methods", [](Config& c, const Val& v) { c.server_auth_methods = server_auth_methods(v); }},
      {"query_wait_timeout", field(&Config::query_wait_timeout)},
      {"query_timeout", field(&Config::query_timeout)},
      {"idle_transaction_timeout", field(&Config::idle_transaction_timeout)},
      {"client_idle_timeout", field(&Config::client_idle_timeout)},
      {"client_login_timeout", field(&Config::client_login_timeout)},
      {"shutdown_timeout", field(&Config::shutdown_timeout)},
      {"tcp_keepalive", field(&Config::tcp_keepalive)},
      {"tcp_keepidle", [](Config& c, const Val& v) { c.tcp_keepidle = keepalive_seconds(v); }},
      {"tcp_keepintvl", [](Config& c, const Val& v) { c.tcp_keepintvl = keepalive_seconds(v); }},
      {"tcp_keepcnt", field(&Config::tcp_keepcnt, 1, 127)},
      {"client_tls_sslmode", [](Config& c, const Val& v) { parse(v, c.client_tls.sslmode); }},
      {"client_tls_key_file", [](Config& c, const Val& v) { c.client_tls.key_file = str(v); }},
      {"client_tls_cert_file", [](Config& c, const Val& v) { c.client_tls.cert_file = str(v); }},
      {"client_tls_ca_file", [](Config& c, const Val& v) { c.client_tls.ca_file = str(v); }},
      {"client_tls_protocols", [](Config& c, const Val& v) { c.client_tls.protocols = tls_protocols(v); }},
      {"client_tls_ciphers", [](Config& c, const Val& v) { c.client_tls.ciphers = str(v); }},
      {"server_tls_sslmode", [](Config& c, const Val& v) { parse(v, c.server_tls.sslmode); }},
      {"server_tls_key_file", [](Config& c, const Val& v) { c.server_tls.key_file = str(v); }},
      {"server_tls_cert_file", [](Config& c, const Val& v) { c.server_tls.cert_file = str(v); }},
      {"server_tls_ca_file", [](Config& c, const Val& v) { c.server_tls.ca_file = str(v); }},
      {"server_tls_protocols", [](Config& c, const Val& v) { c.server_tls.protocols = tls_protocols(v); }},
      {"server_tls_ciphers", [](Config& c, const Val& v) { c.server_tls.ciphers = str(v); }},
      {"server_channel_binding", field(&Config::server_channel_binding)},
      {"client_channel_binding", field(&Config::client_channel_binding)},
      {"log_level", field(&Config::log_level)},
      {"log_format", field(&Config::log_format)},
      {"metrics", section(&Config::metrics, metrics_keys, "{listen: \"127.0.0.1:9127\"}")},
      {"lockd", section(&Config::lockd, lockd_keys, "{socket_path: /run/pgsidecar/lockd.sock}")},
      {"migrations", section(&Config::migrations, migrations_keys, "{dir: /etc/pgsidecar/migrations, database: app}")},
      {"cache", section(&Config::cache, cache_keys, "{mode: hinted, max_bytes: 64MB}")},
      {"databases", [](Config&, const Val&) {}},  // applied last by parse_config: needs the pool defaults
  };
  return keys;
}

// What TLS settings need of each other; the files themselves are read by tls/tls.h.
void check_tls(const Config& cfg, std::map<std::string, int>& seen) {
  const Tls& c = cfg.client_tls;
  if (c.sslmode != SslMode::Disable && (c.key_file.empty() || c.cert_file.empty()))
    fail(seen["client_tls_sslmode"], "client_tls_sslmode " + std::string(to_string(c.sslmode)) +
                                         " requires client_tls_key_file and client_tls_cert_file");
  if ((c.sslmode == SslMode::VerifyCa || c.sslmode == SslMode::VerifyFull) && c.ca_file.empty())
    fail(seen["client_tls_sslmode"], "client_tls_sslmode " + std::string(to_string(c.sslmode)) +
                                         " requires client_tls_ca_file (the CA of client certificates)");
  if (cfg.auth_type == AuthType::Cert && (c.sslmode != SslMode::VerifyCa && c.sslmode != SslMode::VerifyFull))
    fail(seen["auth_type"], "auth_type cert requires client_tls_sslmode verify-ca or verify-full");
  const Tls& r = cfg.cache.redis.tls;
  if (r.key_file.empty() != r.cert_file.empty())
    fail(seen[r.key_file.empty() ? "cache.redis.tls_cert_file" : "cache.redis.tls_key_file"],
         "cache.redis.tls_key_file and cache.redis.tls_cert_file go together");
  for (const Tls* t : {&cfg.client_tls, &cfg.server_tls}) {
    const char* side = t == &cfg.client_tls ? "client" : "server";
    if (t->key_file.empty() != t->cert_file.empty())
      fail(seen[std::string(side) + (t->key_file.empty() ? "_tls_cert_file" : "_tls_key_file")],
           std::string(side) + "_tls_key_file and " + side + "_tls_cert_file go together");
    if ((t->protocols & kTls12) == 0 && t->ciphers != "default")
      fail(seen[std::string(side) + "_tls_ciphers"], std::string(side) +
                                                          "_tls_ciphers applies to TLS 1.2 only, which " + side +
                                                          "_tls_protocols leaves out");
  }
}

Config parse_config(const YAML::Node& root, const std::string& name) {
  Config cfg;
  cfg.source_path = name;
  if (root.IsNull()) return cfg;  // empty file: all defaults
  if (!root.IsMap()) fail(line_of(root, 1), "expected a map of settings at the top level");
  auto seen = apply_map(cfg, root, config_keys(), 1);
  // Lines of cache.redis.* too: its TLS files are read later (tls/tls.h), and named with them.
  if (const YAML::Node cache = root["cache"]; cache && cache.IsMap())
    if (const YAML::Node redis = cache["redis"]; redis && redis.IsMap())
      for (const auto& kv : redis) seen["cache.redis." + kv.first.Scalar()] = line_of(kv.first, seen["cache"]);
  cfg.lines.insert(seen.begin(), seen.end());
  if (cfg.min_pool_size > cfg.default_pool_size) {
    fail(seen["min_pool_size"], "min_pool_size " + std::to_string(cfg.min_pool_size) +
                                    " exceeds default_pool_size " + std::to_string(cfg.default_pool_size));
  }
  if (seen.count("databases")) {
    const YAML::Node databases = root["databases"];
    parse_databases(cfg, Val{databases, "databases", line_of(databases, seen["databases"])});
  }
  if (cfg.auth_type == AuthType::ScramSha256 && cfg.auth_file.empty()) {
    fail(seen["auth_type"], "auth_type scram-sha-256 requires auth_file");
  }
  check_tls(cfg, seen);
  if (!cfg.schema_notify_channel.empty() && cfg.schema_notify_conninfo.empty()) {
    fail(seen["schema_notify_channel"], "schema_notify_channel requires schema_notify_conninfo");
  }
  // lockd's databases must resolve to a `databases:` entry (exact or "*").
  for (auto [name, key] : {std::pair{&cfg.migrations.database, "migrations"}, {&cfg.lockd.database, "lockd"}}) {
    if (!name->empty() && !find_database(cfg, *name)) {
      fail(seen[key], std::string(key) + ".database '" + *name + "' is not in databases:");
    }
  }
  if (!cfg.migrations.dir.empty() && cfg.migrations.database.empty()) {
    fail(seen["migrations"], "migrations.dir requires migrations.database");
  }
  if (cfg.cache.max_entry_bytes > cfg.cache.max_bytes) {
    fail(seen["cache"], "cache.max_entry_bytes exceeds cache.max_bytes");
  }
  if (cfg.cache.default_ttl > cfg.cache.max_ttl) fail(seen["cache"], "cache.default_ttl exceeds cache.max_ttl");
  if (cfg.listen_addr.empty() && cfg.unix_socket_dir.empty()) {
    fail(0, "nothing to listen on: listen_addr and unix_socket_dir are both empty");
  }
  return cfg;
}

// Where each YAML document starts and where its first node is; only marks are kept.
struct DocumentMarks : YAML::EventHandler {
  struct Doc {
    YAML::Mark start, first;
    bool has_node = false;
  };
  std::vector<Doc> docs;
  void node(const YAML::Mark& m) {
    if (!docs.empty() && !docs.back().has_node) docs.back().first = m, docs.back().has_node = true;
  }
  void OnDocumentStart(const YAML::Mark& m) override { docs.push_back({m, m}); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& m, YAML::anchor_t) override { node(m); }
  void OnAlias(const YAML::Mark& m, YAML::anchor_t) override { node(m); }
  void OnScalar(const YAML::Mark& m, const std::string&, YAML::anchor_t, const std::string&) override { node(m); }
  void OnSequenceStart(const YAML::Mark& m, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {
    node(m);
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark& m, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {
    node(m);
  }
  void OnMapEnd() override {}
};

// The single document of `text` (Null when there is none). Not YAML::LoadAll: in
// yaml-cpp 0.7 a stray ',' at document level makes it return empty documents
// forever without consuming input (found by tests/fuzz/config_fuzz.cpp). So the
// documents are counted here, stopping at the second, and a second one starting
// where the first did means the parser is stuck on that character.
YAML::Node load_one_document(const std::string& text) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  DocumentMarks marks;
  while (marks.docs.size() < 2 && parser.HandleNextDocument(marks)) {}
  if (marks.docs.size() >= 2) {
    const DocumentMarks::Doc& second = marks.docs[1];
    if (second.start.pos == marks.docs[0].start.pos) {
      size_t pos = static_cast<size_t>(std::max(second.start.pos, 0));
      std::string what = pos < text.size() ? "'" + text.substr(pos, 1) + "'" : "end of input";
      throw Error{second.start.line + 1, "syntax error: unexpected " + what};
    }
    throw Error{line_of_mark(second.first, second.start), "only one YAML document is allowed"};
  }
  return YAML::Load(text);
}

std::string format(const std::string& name, int line, const std::string& msg) {
  return line > 0 ? name + ":" + std::to_string(line) + ": " + msg : name + ": " + msg;
}

}  // namespace

LoadResult load_string(std::string_view yaml, const std::string& name_for_errors) {
  LoadResult r;
  try {
    r.config = parse_config(load_one_document(std::string(yaml)), name_for_errors);
  } catch (const Error& e) {
    r.error = format(name_for_errors, e.line, e.msg);
  } catch (const YAML::Exception& e) {
    r.error = format(name_for_errors, e.mark.line >= 0 ? e.mark.line + 1 : 0, e.msg);
  } catch (const std::exception& e) {
    r.error = format(name_for_errors, 0, e.what());
  }
  return r;
}

LoadResult load_file(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return {std::nullopt, path + ": cannot open: " + std::strerror(errno)};
  std::string text;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  int err = std::ferror(f) ? errno : 0;
  std::fclose(f);
  if (err) return {std::nullopt, path + ": cannot read: " + std::strerror(err)};
  return load_string(text, path);
}

const Database* find_database(const Config& cfg, std::string_view name) {
  const Database* wildcard = nullptr;
  for (const Database& d : cfg.databases) {
    if (d.name == name) return &d;
    if (d.name == "*") wildcard = &d;
  }
  return wildcard;
}

std::string_view to_string(PoolMode m) { return m == PoolMode::Session ? "session" : "transaction"; }
std::string_view to_string(AuthType a) {
  static constexpr std::string_view names[] = {"trust", "scram-sha-256", "cert"};
  return names[static_cast<int>(a)];
}
std::string_view to_string(MigrationFormat f) {
  static constexpr std::string_view names[] = {"pgsidecar", "golang-migrate", "flyway"};
  return names[static_cast<int>(f)];
}

std::string_view to_string(CacheMode m) {
  static constexpr std::string_view names[] = {"off", "hinted", "all"};
  return names[static_cast<int>(m)];
}

std::string_view to_string(CacheAdmission a) {
  static constexpr std::string_view names[] = {"always", "repeated"};
  return names[static_cast<int>(a)];
}

std::string_view to_string(Compression c) {
  static constexpr std::string_view names[] = {"none", "zstd"};
  return names[static_cast<int>(c)];
}

std::string_view to_string(SslMode m) {
  static constexpr std::string_view names[] = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"};
  return names[static_cast<int>(m)];
}

std::string_view to_string(ChannelBinding b) {
  static constexpr std::string_view names[] = {"disable", "prefer", "require"};
  return names[static_cast<int>(b)];
}

std::string tls_protocol_names(uint8_t protocols) {
  std::string out;
  if (protocols & kTls12) out = "tlsv1.2";
  if (protocols & kTls13) out += out.empty() ? "tlsv1.3" : ",tlsv1.3";
  return out;
}

std::string Config::where(const std::string& key) const {
  auto it = lines.find(key);
  return it == lines.end() ? source_path + ": " : source_path + ":" + std::to_string(it->second) + ": ";
}

Tls server_tls_for(const Config& cfg, const Database& db) {
  Tls t = cfg.server_tls;
  if (db.server_tls_sslmode) t.sslmode = *db.server_tls_sslmode;
  if (db.server_tls_ca_file) t.ca_file = *db.server_tls_ca_file;
  if (db.server_tls_key_file) t.key_file = *db.server_tls_key_file;
  if (db.server_tls_cert_file) t.cert_file = *db.server_tls_cert_file;
  return t;
}

std::string server_tls_key(const Database& db, const std::string& key) {
  bool own = (key == "server_tls_ca_file" && db.server_tls_ca_file) ||
             (key == "server_tls_key_file" && db.server_tls_key_file) ||
             (key == "server_tls_cert_file" && db.server_tls_cert_file);
  return own ? "databases." + db.name + "." + key : key;
}

std::string pin_kind_list(uint8_t kinds) {
  std::string out;
  for (auto& [name, bit] : pin_kind_names())   // alphabetical: a std::map
    if (kinds & bit) out += (out.empty() ? "" : ",") + std::string(name);
  return out;
}

std::string server_auth_method_names(uint8_t methods) {
  std::string out;
  for (auto [bit, name] : {std::pair{kServerAuthScram, "scram-sha-256"}, {kServerAuthMd5, "md5"},
                           {kServerAuthCleartext, "password"}}) {
    if (methods & bit) out += (out.empty() ? "" : ",") + std::string(name);
  }
  return out;
}

const std::string& Migrations::history_table() const {
  static const std::string defaults[] = {"pgsidecar_migrations", "schema_migrations", "flyway_schema_history"};
  return table.empty() ? defaults[static_cast<int>(format)] : table;
}
std::string_view to_string(LogLevel l) {
  static constexpr std::string_view names[] = {"debug", "info", "warn", "error"};
  return names[static_cast<int>(l)];
}
std::string_view to_string(LogFormat f) { return f == LogFormat::Json ? "json" : "text"; }


std::vector<std::pair<std::string, std::string>> describe(const Config& c) {
  auto ms = [](Duration d) { return std::to_string(d.count()) + "ms"; };
  auto list = [](const std::vector<std::string>& v) {
    std::string out;
    for (const std::string& s : v) out += (out.empty() ? "" : ",") + s;
    return out;
  };
  auto octal = [](int m) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "%04o", m);
    return std::string(buf);
  };
  auto numbers = [](const std::vector<unsigned>& v) {
    std::string out;
    for (unsigned n : v) out += (out.empty() ? "" : ",") + std::to_string(n);
    return out;
  };
  return {
      {"listen_addr", c.listen_addr},
      {"listen_port", std::to_string(c.listen_port)},
      {"unix_socket_dir", c.unix_socket_dir},
      {"unix_socket_mode", octal(c.unix_socket_mode)},
      {"auth_type", std::string(to_string(c.auth_type))},
      {"auth_file", c.auth_file},
      {"admin_users", list(c.admin_users)},
      {"stats_users", list(c.stats_users)},
      {"pool_mode", std::string(to_string(c.pool_mode))},
      {"default_pool_size", std::to_string(c.default_pool_size)},
      {"min_pool_size", std::to_string(c.min_pool_size)},
      {"reserve_pool_size", std::to_string(c.reserve_pool_size)},
      {"reserve_pool_timeout", ms(c.reserve_pool_timeout)},
      {"max_client_conn", std::to_string(c.max_client_conn)},
      {"max_db_connections", std::to_string(c.max_db_connections)},
      {"max_prepared_statements", std::to_string(c.max_prepared_statements)},
      {"max_client_prepared_statements", std::to_string(c.max_client_prepared_statements)},
      {"max_unauthenticated_clients", std::to_string(c.max_unauthenticated_clients)},
      {"max_inspect_bytes", std::to_string(c.max_inspect_bytes)},
      {"schema_notify_channel", c.schema_notify_channel},
      {"schema_notify_conninfo", c.schema_notify_conninfo.empty() ? "" : "(set)"},   // may hold a password
      {"server_idle_timeout", ms(c.server_idle_timeout)},
      {"server_lifetime", ms(c.server_lifetime)},
      {"server_connect_timeout", ms(c.server_connect_timeout)},
      {"server_login_retry", ms(c.server_login_retry)},
      {"server_reset_query", c.server_reset_query},
      {"server_reset_query_always", c.server_reset_query_always ? "true" : "false"},
      {"server_check_query", c.server_check_query},
      {"server_check_delay", ms(c.server_check_delay)},
      {"server_check_timeout", ms(c.server_check_timeout)},
      {"server_reset_timeout", ms(c.server_reset_timeout)},
      {"cancel_wait_timeout", ms(c.cancel_wait_timeout)},
      {"server_auth_methods", server_auth_method_names(c.server_auth_methods)},
      {"pin_on", c.pin_on ? pin_kind_list(c.pin_on) : "off"},
      {"max_pinned_per_pool", std::to_string(c.max_pinned_per_pool)},
      {"pinned_log_after", ms(c.pinned_log_after)},
      {"query_wait_timeout", ms(c.query_wait_timeout)},
      {"query_timeout", ms(c.query_timeout)},
      {"idle_transaction_timeout", ms(c.idle_transaction_timeout)},
      {"client_idle_timeout", ms(c.client_idle_timeout)},
      {"client_login_timeout", ms(c.client_login_timeout)},
      {"shutdown_timeout", ms(c.shutdown_timeout)},
      {"tcp_keepalive", c.tcp_keepalive ? "true" : "false"},
      {"tcp_keepidle", ms(c.tcp_keepidle)},
      {"tcp_keepintvl", ms(c.tcp_keepintvl)},
      {"tcp_keepcnt", std::to_string(c.tcp_keepcnt)},
      {"client_tls_sslmode", std::string(to_string(c.client_tls.sslmode))},
      {"client_tls_key_file", c.client_tls.key_file},
      {"client_tls_cert_file", c.client_tls.cert_file},
      {"client_tls_ca_file", c.client_tls.ca_file},
      {"client_tls_protocols", tls_protocol_names(c.client_tls.protocols)},
      {"client_tls_ciphers", c.client_tls.ciphers},
      {"server_tls_sslmode", std::string(to_string(c.server_tls.sslmode))},
      {"server_tls_key_file", c.server_tls.key_file},
      {"server_tls_cert_file", c.server_tls.cert_file},
      {"server_tls_ca_file", c.server_tls.ca_file},
      {"server_tls_protocols", tls_protocol_names(c.server_tls.protocols)},
      {"server_tls_ciphers", c.server_tls.ciphers},
      {"server_channel_binding", std::string(to_string(c.server_channel_binding))},
      {"client_channel_binding", std::string(to_string(c.client_channel_binding))},
      {"log_level", std::string(to_string(c.log_level))},
      {"log_format", std::string(to_string(c.log_format))},
      {"metrics.listen", c.metrics.listen},
      {"lockd.socket_path", c.lockd.socket_path},
      {"lockd.socket_mode", octal(c.lockd.socket_mode)},
      {"lockd.allowed_uids", numbers(c.lockd.allowed_uids)},
      {"lockd.allowed_gids", numbers(c.lockd.allowed_gids)},
      {"lockd.database", c.lockd.database},
      {"lockd.user", c.lockd.user},
      {"lockd.lock_timeout", ms(c.lockd.lock_timeout)},
      {"migrations.dir", c.migrations.dir},
      {"migrations.format", std::string(to_string(c.migrations.format))},
      {"migrations.table", c.migrations.history_table()},
      {"migrations.database", c.migrations.database},
      {"migrations.user", c.migrations.user},
      {"migrations.verify_interval", ms(c.migrations.verify_interval)},
      {"migrations.optimistic", c.migrations.optimistic ? "true" : "false"},
      {"cache.mode", std::string(to_string(c.cache.mode))},
      {"cache.max_bytes", std::to_string(c.cache.max_bytes)},
      {"cache.max_entry_bytes", std::to_string(c.cache.max_entry_bytes)},
      {"cache.default_ttl", ms(c.cache.default_ttl)},
      {"cache.max_ttl", ms(c.cache.max_ttl)},
      {"cache.catalogs", c.cache.catalogs ? "true" : "false"},
      {"cache.admission", std::string(to_string(c.cache.admission))},
      {"cache.rules", std::to_string(c.cache.rules.size())},
      {"cache.invalidation_channel", c.cache.invalidation_channel},
      {"cache.redis.url", c.cache.redis.url.find('@') == std::string::npos ? c.cache.redis.url : "(set)"},
      {"cache.redis.timeout_ms", std::to_string(c.cache.redis.timeout.count())},
      {"cache.redis.compression", std::string(to_string(c.cache.redis.compression))},
      {"cache.redis.key_prefix", c.cache.redis.key_prefix},
      {"cache.redis.tls_sslmode", std::string(to_string(c.cache.redis.tls.sslmode))},
      {"cache.redis.tls_ca_file", c.cache.redis.tls.ca_file},
      {"cache.redis.tls_cert_file", c.cache.redis.tls.cert_file},
      {"cache.redis.tls_key_file", c.cache.redis.tls.key_file},
  };
}

bool needs_restart(std::string_view key) {
  return key == "listen_addr" || key == "listen_port" || key == "unix_socket_dir" || key == "unix_socket_mode" ||
         key == "metrics.listen" || key.starts_with("lockd.") || key.starts_with("migrations.") ||
         key.starts_with("cache.");
}

}  // namespace conf
