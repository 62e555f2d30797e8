// pgsidecar configuration: plain structs loaded from YAML (yaml-cpp), validated
// with file:line errors. Names follow PgBouncer's where the meaning is the same.
#pragma once
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace conf {

using Duration = std::chrono::milliseconds;

enum class PoolMode { Session, Transaction };
enum class AuthType { Trust, ScramSha256, Cert };
enum class LogLevel { Debug, Info, Warn, Error };
enum class LogFormat { Text, Json };

// Bits of Config::server_auth_methods: the methods a PostgreSQL server may ask
// pgsidecar to log in with. YAML names: scram-sha-256, md5, password (alias cleartext).
constexpr uint8_t kServerAuthScram = 1, kServerAuthMd5 = 2, kServerAuthCleartext = 4;

// Bits of `pin_on`: the kinds of session state that pin a transaction-mode client
// to its server (proxy/pinning.h). YAML names: temp, prepare, cursor, listen,
// advisory, set, other; `off` is none.
constexpr uint8_t kPinTemp = 1, kPinPrepare = 2, kPinCursor = 4, kPinListen = 8, kPinAdvisory = 16, kPinSet = 32,
                  kPinOther = 64, kPinAll = 127;

// TLS (`client_tls_*`, `server_tls_*`): PgBouncer's sslmode names and meanings.
enum class SslMode { Disable, Allow, Prefer, Require, VerifyCa, VerifyFull };
// SCRAM channel binding (tls-server-end-point), libpq's names.
enum class ChannelBinding { Disable, Prefer, Require };
// Bits of Tls::protocols. YAML names: tlsv1.2, tlsv1.3, secure (both), all (both).
constexpr uint8_t kTls12 = 1, kTls13 = 2;

// One side's TLS settings: toward clients (pgsidecar is the TLS server) or toward
// PostgreSQL servers (pgsidecar is the TLS client).
struct Tls {
  SslMode sslmode = SslMode::Disable;
  std::string key_file, cert_file, ca_file;   // PEM; "" = none (ca_file toward servers: the system's CAs)
  uint8_t protocols = kTls12 | kTls13;        // kTls* bits, contiguous
  std::string ciphers = "default";            // OpenSSL cipher list for TLS 1.2; "default" = OpenSSL's
  bool operator==(const Tls&) const = default;
};
inline Tls prefer_tls() {
  Tls t;
  t.sslmode = SslMode::Prefer;
  return t;
}
inline Tls verify_full_tls() {
  Tls t;
  t.sslmode = SslMode::VerifyFull;
  return t;
}

// One entry of `databases:`. The key "*" matches any database name not listed.
struct Database {
  std::string name;                 // the name clients connect to ("*" = wildcard)
  std::string host = "127.0.0.1";   // hostname/IP, or a directory (starts with '/') for a unix socket
  int port = 5432;
  std::string dbname;               // server database; empty = the name the client asked for
  std::string user;                 // server login; empty = the client's user
  std::string password;             // server password; empty = take it from auth_file
  std::optional<PoolMode> pool_mode;        // overrides the global pool_mode
  std::optional<int> pool_size;             // overrides default_pool_size
  std::optional<int> min_pool_size;         // overrides min_pool_size
  std::optional<int> reserve_pool_size;     // overrides reserve_pool_size
  std::optional<uint8_t> pin_on;            // overrides pin_on (kPin* bits)
  std::optional<int> max_pinned_per_pool;   // overrides max_pinned_per_pool
  std::optional<SslMode> server_tls_sslmode;      // override server_tls_* for this entry's servers
  std::optional<std::string> server_tls_ca_file, server_tls_key_file, server_tls_cert_file;
};

// `metrics:` map.
struct Metrics {
  std::string listen = "127.0.0.1:9127";   // Prometheus /metrics endpoint; "" = off
};

// `lockd:` map: the local socket for migration status and named locks (lockd/).
struct Lockd {
  std::string socket_path = "/run/pgsidecar/lockd.sock";   // "" = off
  int socket_mode = 0660;
  std::vector<unsigned> allowed_uids;   // names resolved at load; both lists empty = see docs
  std::vector<unsigned> allowed_gids;
  std::string database;                 // `databases:` entry holding the advisory locks; "" = migrations.database
  std::string user;                     // server login; "" = migrations.user, then the entry's user
  Duration lock_timeout{30000};         // for lock requests without timeout_ms
};

enum class MigrationFormat { Pgsidecar, GolangMigrate, Flyway };

// `migrations:` map: the directory of SQL files lockd reports on and applies.
struct Migrations {
  std::string dir;                      // "" = no migrations
  MigrationFormat format = MigrationFormat::Pgsidecar;
  std::string table;                    // "" = the format's own table name
  std::string database;                 // `databases:` entry to migrate
  std::string user;                     // server login; "" = the entry's user
  Duration verify_interval{30000};      // a cached status older than this is re-read from PostgreSQL
  bool optimistic = true;               // answer from cache while re-reading (else wait for it)

  const std::string& history_table() const;
};

enum class CacheMode { Off, Hinted, All };
enum class CacheAdmission { Always, Repeated };
enum class Compression { None, Zstd };

// One `cache.rules` item: in hinted mode, statements reading `table` or with this
// pg_query `fingerprint` are cached as if hinted, with this ttl (0 = default_ttl).
struct CacheRule {
  std::string table, fingerprint;
  Duration ttl{0};
};

// `cache.redis:` map: the shared L2 tier and invalidation bus; url "" = off.
struct CacheRedis {
  std::string url;                      // redis://, rediss:// (TLS) or unix://
  Tls tls = verify_full_tls();          // tls_*: used with rediss:// only
  Duration timeout{50};                 // a slower answer counts as Redis being down
  Compression compression = Compression::Zstd;
  std::string key_prefix = "pgsidecar:";
};

// `cache:` map: the result cache (cache/result_cache.h).
struct Cache {
  CacheMode mode = CacheMode::Off;
  size_t max_bytes = 64 << 20;          // L1: stored responses, keys and bookkeeping
  size_t max_entry_bytes = 1 << 20;     // larger responses are streamed, not stored
  Duration default_ttl{60000};
  Duration max_ttl{3600000};            // caps hinted and rule ttls
  bool catalogs = false;                // cache statements reading pg_catalog / information_schema
  CacheAdmission admission = CacheAdmission::Repeated;   // store a miss's answer at once, or once its key missed before
  std::vector<CacheRule> rules;
  std::string invalidation_channel = "pgsidecar_invalidate";   // NOTIFY / Redis channel
  CacheRedis redis;
};

struct Config {
  std::string source_path;          // file it was loaded from (for messages)

  std::string listen_addr = "127.0.0.1";   // "" disables TCP; "*" = all IPv4 addresses
  int listen_port = 6432;
  std::string unix_socket_dir;      // "" disables the unix socket (.s.PGSQL.<listen_port>)
  int unix_socket_mode = 0777;

  AuthType auth_type = AuthType::Trust;
  std::string auth_file;            // PgBouncer userlist.txt format
  std::vector<std::string> admin_users;
  std::vector<std::string> stats_users;

  PoolMode pool_mode = PoolMode::Session;
  int default_pool_size = 20;
  int min_pool_size = 0;
  int reserve_pool_size = 0;
  Duration reserve_pool_timeout{5000};
  int max_client_conn = 100;
  int max_db_connections = 0;       // 0 = unlimited
  int max_prepared_statements = 200;  // per server connection, transaction mode; 0 = plan cache off
  int max_client_prepared_statements = 1000;  // named prepared statements one client may hold (plan cache); 0 = unlimited
  int max_unauthenticated_clients = 256;  // connections not yet logged in, at once; more are refused with 53300
  size_t max_inspect_bytes = 1 << 20;     // largest Query/Parse held whole to read it (SQL classifier); >= 64kB
  uint8_t pin_on = kPinAll;               // transaction mode: session state that pins a client (kPin* bits)
  int max_pinned_per_pool = -1;           // pinned clients per pool at once; -1 = pool size minus one
  Duration pinned_log_after{60000};       // a client pinned this long is logged once; 0 = never
  std::string schema_notify_channel;  // NOTIFY on it moves the schema version on; "" = not listening
  std::string schema_notify_conninfo; // libpq conninfo of the connection that LISTENs

  Duration server_idle_timeout{600000};
  Duration server_lifetime{3600000};
  Duration server_connect_timeout{15000};
  Duration server_login_retry{2000};
  std::string server_reset_query = "DISCARD ALL";
  bool server_reset_query_always = false;
  std::string server_check_query = "SELECT 1";
  Duration server_check_delay{30000};
  Duration server_check_timeout{5000};   // server_check_query must answer within this, else the server is closed; > 0
  Duration server_reset_timeout{5000};   // server_reset_query must finish within this, else the server is closed; > 0
  Duration cancel_wait_timeout{10000};   // a server whose cancel is in flight stays out of the pool at most this
                                         // long, then is closed; > 0
  uint8_t server_auth_methods = kServerAuthScram | kServerAuthMd5;  // kServerAuth* bits; never 0
  Duration query_wait_timeout{120000};
  Duration query_timeout{0};             // 0 = off; a longer query is cancelled and the client disconnected
  Duration idle_transaction_timeout{0};  // 0 = off; a client idle inside a transaction this long is disconnected
  Duration client_idle_timeout{0};       // 0 = off; a logged-in client idle (no transaction) this long is closed
  Duration client_login_timeout{60000};
  Duration shutdown_timeout{30000};

  // TCP keepalive on client and server TCP sockets (not unix sockets); whole seconds.
  bool tcp_keepalive = true;
  Duration tcp_keepidle{60000};     // TCP_KEEPIDLE: idle time before the first probe, 1s-32767s
  Duration tcp_keepintvl{10000};    // TCP_KEEPINTVL: between probes, 1s-32767s
  int tcp_keepcnt = 6;              // TCP_KEEPCNT: unanswered probes before the connection is dropped, 1-127

  // TLS toward clients (answering SSLRequest, direct TLS) and toward servers.
  Tls client_tls;                                   // client_tls_*; sslmode default disable
  Tls server_tls = prefer_tls();                    // server_tls_*; sslmode default prefer
  ChannelBinding server_channel_binding = ChannelBinding::Prefer;   // SCRAM-SHA-256-PLUS toward servers over TLS
  ChannelBinding client_channel_binding = ChannelBinding::Prefer;   // offer (prefer) or demand (require) it of TLS clients

  LogLevel log_level = LogLevel::Info;
  LogFormat log_format = LogFormat::Text;
  Metrics metrics;
  Lockd lockd;
  Migrations migrations;
  Cache cache;

  std::vector<Database> databases;

  // Line of each key that was set: "client_tls_cert_file", "databases.app.server_tls_ca_file".
  std::map<std::string, int> lines;
  // "file:line: " for a key (or "file: " when it has no line), for messages about its value.
  std::string where(const std::string& key) const;
};

// The server-side TLS settings of an entry: server_tls_* with its overrides.
Tls server_tls_for(const Config& cfg, const Database& db);
// The config key behind a server TLS file of an entry, for Config::where().
std::string server_tls_key(const Database& db, const std::string& key);

// Outcome of loading: exactly one of config / error is set.
// error is "file:line: message" (line 1-based) or "file: message".
struct LoadResult {
  std::optional<Config> config;
  std::string error;
};

LoadResult load_file(const std::string& path);
LoadResult load_string(std::string_view yaml, const std::string& name_for_errors);

// The entry for a client's database name: exact match first, then "*"; nullptr if none.
const Database* find_database(const Config& cfg, std::string_view name);

std::string_view to_string(PoolMode m);
std::string_view to_string(AuthType a);
std::string_view to_string(LogLevel l);
std::string_view to_string(LogFormat f);
std::string_view to_string(MigrationFormat f);
std::string_view to_string(CacheMode m);
std::string_view to_string(CacheAdmission a);
std::string_view to_string(Compression c);
std::string_view to_string(SslMode m);
std::string_view to_string(ChannelBinding b);
// "tlsv1.2,tlsv1.3"
std::string tls_protocol_names(uint8_t protocols);
// kServerAuth* bits as their YAML names, comma-separated ("scram-sha-256,md5").
std::string server_auth_method_names(uint8_t methods);
// "listen,temp": the pin_on names of kPin* bits, alphabetical; "" for none.
std::string pin_kind_list(uint8_t kinds);

// Every top-level setting as (key, value as text) in a fixed order, for the admin
// console's SHOW CONFIG (databases are listed by SHOW DATABASES).
std::vector<std::pair<std::string, std::string>> describe(const Config& c);
// Settings a reload cannot change (they need a restart).
bool needs_restart(std::string_view key);

}  // namespace conf
