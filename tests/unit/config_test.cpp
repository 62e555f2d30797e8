#include "conf/config.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <unistd.h>

using namespace std::chrono_literals;
using conf::Duration;

namespace {

conf::Config load_ok(const std::string& yaml) {
  conf::LoadResult r = conf::load_string(yaml, "test.yaml");
  EXPECT_EQ(r.error, "");
  EXPECT_TRUE(r.config.has_value());
  return r.config.value_or(conf::Config{});
}

std::string load_err(const std::string& yaml) {
  conf::LoadResult r = conf::load_string(yaml, "test.yaml");
  EXPECT_FALSE(r.config.has_value()) << "expected an error for:\n" << yaml;
  return r.error;
}

Duration dur(const std::string& text) {
  return load_ok("server_lifetime: " + text + "\n").server_lifetime;
}

}  // namespace

TEST(Config, EmptyDocumentGivesDefaults) {
  for (const char* text : {"", "# only a comment\n", "---\n"}) {
    conf::Config c = load_ok(text);
    EXPECT_EQ(c.source_path, "test.yaml");
    EXPECT_EQ(c.listen_addr, "127.0.0.1");
    EXPECT_EQ(c.listen_port, 6432);
    EXPECT_EQ(c.unix_socket_dir, "");
    EXPECT_EQ(c.unix_socket_mode, 0777);
    EXPECT_EQ(c.auth_type, conf::AuthType::Trust);
    EXPECT_TRUE(c.admin_users.empty());
    EXPECT_EQ(c.pool_mode, conf::PoolMode::Session);
    EXPECT_EQ(c.default_pool_size, 20);
    EXPECT_EQ(c.max_client_conn, 100);
    EXPECT_EQ(c.server_lifetime, 3600s);
    EXPECT_EQ(c.server_reset_query, "DISCARD ALL");
    EXPECT_EQ(c.query_wait_timeout, 120s);
    EXPECT_EQ(c.log_level, conf::LogLevel::Info);
    EXPECT_TRUE(c.databases.empty());
  }
}

TEST(Config, EveryKeyParsed) {
  conf::Config c = load_ok(R"(
listen_addr: "*"
listen_port: 7432
unix_socket_dir: /run/pgsidecar
unix_socket_mode: "0660"
auth_type: scram-sha-256
auth_file: /etc/pgsidecar/userlist.txt
admin_users: [admin, root]
stats_users: "monitor, grafana"
pool_mode: transaction
default_pool_size: 30
min_pool_size: 2
reserve_pool_size: 5
reserve_pool_timeout: 3
max_client_conn: 10000
max_db_connections: 50
server_idle_timeout: 10m
server_lifetime: 2h
server_connect_timeout: 5s
server_login_retry: 500ms
server_reset_query: ""
server_reset_query_always: true
server_check_query: "SELECT 2"
server_check_delay: 0
query_wait_timeout: 1.5s
client_login_timeout: 20
shutdown_timeout: 45s
log_level: debug
log_format: json
databases:
  app:
    host: db.internal
    port: 5433
    dbname: app_prod
    user: app_owner
    password: s3cret
    pool_mode: session
    pool_size: 10
    min_pool_size: 1
    reserve_pool_size: 3
)");
  EXPECT_EQ(c.listen_addr, "*");
  EXPECT_EQ(c.listen_port, 7432);
  EXPECT_EQ(c.unix_socket_dir, "/run/pgsidecar");
  EXPECT_EQ(c.unix_socket_mode, 0660);
  EXPECT_EQ(c.auth_type, conf::AuthType::ScramSha256);
  EXPECT_EQ(c.auth_file, "/etc/pgsidecar/userlist.txt");
  EXPECT_EQ(c.admin_users, (std::vector<std::string>{"admin", "root"}));
  EXPECT_EQ(c.stats_users, (std::vector<std::string>{"monitor", "grafana"}));
  EXPECT_EQ(c.pool_mode, conf::PoolMode::Transaction);
  EXPECT_EQ(c.default_pool_size, 30);
  EXPECT_EQ(c.min_pool_size, 2);
  EXPECT_EQ(c.reserve_pool_size, 5);
  EXPECT_EQ(c.reserve_pool_timeout, 3s);
  EXPECT_EQ(c.max_client_conn, 10000);
  EXPECT_EQ(c.max_db_connections, 50);
  EXPECT_EQ(c.server_idle_timeout, 10min);
  EXPECT_EQ(c.server_lifetime, 2h);
  EXPECT_EQ(c.server_connect_timeout, 5s);
  EXPECT_EQ(c.server_login_retry, 500ms);
  EXPECT_EQ(c.server_reset_query, "");
  EXPECT_TRUE(c.server_reset_query_always);
  EXPECT_EQ(c.server_check_query, "SELECT 2");
  EXPECT_EQ(c.server_check_delay, 0ms);
  EXPECT_EQ(c.query_wait_timeout, 1500ms);
  EXPECT_EQ(c.client_login_timeout, 20s);
  EXPECT_EQ(c.shutdown_timeout, 45s);
  EXPECT_EQ(c.log_level, conf::LogLevel::Debug);
  EXPECT_EQ(c.log_format, conf::LogFormat::Json);
  ASSERT_EQ(c.databases.size(), 1u);
  const conf::Database& d = c.databases[0];
  EXPECT_EQ(d.name, "app");
  EXPECT_EQ(d.host, "db.internal");
  EXPECT_EQ(d.port, 5433);
  EXPECT_EQ(d.dbname, "app_prod");
  EXPECT_EQ(d.user, "app_owner");
  EXPECT_EQ(d.password, "s3cret");
  EXPECT_EQ(d.pool_mode, conf::PoolMode::Session);
  EXPECT_EQ(d.pool_size, 10);
  EXPECT_EQ(d.min_pool_size, 1);
  EXPECT_EQ(d.reserve_pool_size, 3);
}

TEST(Config, DurationForms) {
  EXPECT_EQ(dur("0"), 0ms);
  EXPECT_EQ(dur("30"), 30s);
  EXPECT_EQ(dur("0.25"), 250ms);
  EXPECT_EQ(dur("500ms"), 500ms);
  EXPECT_EQ(dur("30s"), 30s);
  EXPECT_EQ(dur("\"30s\""), 30s);
  EXPECT_EQ(dur("5m"), 5min);
  EXPECT_EQ(dur("1h"), 1h);
  EXPECT_EQ(dur("1.5s"), 1500ms);
  for (const char* bad : {"-1", "-5s", "5 s", "5d", "abc", "1.2.3s", "s", "\"\"", "[1]", "1e3"}) {
    std::string e = load_err(std::string("\nserver_lifetime: ") + bad + "\n");
    EXPECT_EQ(e.rfind("test.yaml:2: server_lifetime must be a duration >= 0", 0), 0u) << bad << " -> " << e;
  }
}

TEST(Config, UnknownKeyHasLine) {
  EXPECT_EQ(load_err("listen_port: 6432\n\n# comment\nfoo: 1\n"), "test.yaml:4: unknown key 'foo'");
  EXPECT_EQ(load_err("databases:\n  app:\n    host: x\n    hots: y\n"), "test.yaml:4: unknown key 'hots'");
  EXPECT_EQ(load_err("databases:\n  app: {host: x, colour: red}\n"), "test.yaml:2: unknown key 'colour'");
  EXPECT_EQ(load_err("log_level: info\nmetrics: {listen: \"127.0.0.1:9127\", path: /x}\n"),
            "test.yaml:2: unknown key 'path'");
  EXPECT_EQ(load_err("cache:\n  mode: hinted\n  redis: {url: \"redis://x\", timeout: 5}\n"),
            "test.yaml:3: unknown key 'timeout'");
}

TEST(Config, Cache) {
  conf::LoadResult r = conf::load_string(
      "cache:\n  mode: hinted\n  max_bytes: 16MB\n  max_entry_bytes: 64kB\n  default_ttl: 10s\n"
      "  rules: [{table: hot, ttl: 5s}, {fingerprint: 0123456789abcdef}]\n"
      "  redis: {url: \"redis://127.0.0.1:6379/1\", timeout_ms: 20, compression: none}\n",
      "test.yaml");
  ASSERT_TRUE(r.config) << r.error;
  const conf::Cache& c = r.config->cache;
  EXPECT_EQ(c.mode, conf::CacheMode::Hinted);
  EXPECT_EQ(c.max_bytes, 16u << 20);
  EXPECT_EQ(c.max_entry_bytes, 64u << 10);
  EXPECT_EQ(c.default_ttl, conf::Duration(10000));
  ASSERT_EQ(c.rules.size(), 2u);
  EXPECT_EQ(c.rules[0].table, "hot");
  EXPECT_EQ(c.rules[0].ttl, conf::Duration(5000));
  EXPECT_EQ(c.rules[1].fingerprint, "0123456789abcdef");
  EXPECT_EQ(c.redis.timeout, conf::Duration(20));
  EXPECT_EQ(c.redis.compression, conf::Compression::None);
  EXPECT_EQ(conf::Config{}.cache.mode, conf::CacheMode::Off);
  EXPECT_EQ(conf::Config{}.cache.max_bytes, 64u << 20);

  EXPECT_NE(load_err("cache: {mode: sometimes}\n").find("must be off, hinted or all"), std::string::npos);
  EXPECT_NE(load_err("cache: {max_bytes: 12XB}\n").find("must be a size in bytes"), std::string::npos);
  EXPECT_NE(load_err("cache: {max_bytes: 1kB}\n").find("max_entry_bytes exceeds"), std::string::npos);
  EXPECT_NE(load_err("cache: {rules: [{ttl: 5s}]}\n").find("exactly one of table or fingerprint"), std::string::npos);
  EXPECT_NE(load_err("cache: {redis: {url: \"http://x\"}}\n").find("must be redis://"), std::string::npos);
  EXPECT_NE(load_err("cache: {redis: {compression: lz4}}\n").find("must be none or zstd"), std::string::npos);
}

TEST(Config, CacheRedisTls) {
  const conf::Config c = load_ok(
      "cache:\n  mode: all\n  redis:\n    url: \"rediss://cache.example.com:6380\"\n    tls_sslmode: verify-ca\n"
      "    tls_ca_file: /etc/ca.pem\n    tls_cert_file: /etc/c.pem\n    tls_key_file: /etc/c.key\n");
  EXPECT_EQ(c.cache.redis.tls.sslmode, conf::SslMode::VerifyCa);
  EXPECT_EQ(c.cache.redis.tls.ca_file, "/etc/ca.pem");
  EXPECT_EQ(c.cache.redis.tls.cert_file, "/etc/c.pem");
  EXPECT_EQ(c.cache.redis.tls.key_file, "/etc/c.key");
  EXPECT_EQ(c.lines.at("cache.redis.tls_ca_file"), 6);   // for tls::build's file:line messages
  EXPECT_EQ(conf::Config{}.cache.redis.tls.sslmode, conf::SslMode::VerifyFull);
  EXPECT_EQ(load_err("cache:\n  redis: {tls_sslmode: prefer}\n"),
            "test.yaml:2: tls_sslmode must be require, verify-ca or verify-full (TLS is on for rediss:// URLs only)");
  EXPECT_EQ(load_err("cache:\n  redis:\n    url: \"rediss://x\"\n    tls_key_file: /k\n"),
            "test.yaml:4: cache.redis.tls_key_file and cache.redis.tls_cert_file go together");
}

TEST(Config, MetricsListen) {
  EXPECT_NE(load_err("metrics: {listen: \"127.0.0.1\"}\n").find("must be \"IP:port\""), std::string::npos);
  EXPECT_NE(load_err("metrics: {listen: \"127.0.0.1:9127x\"}\n").find("must be \"IP:port\""), std::string::npos);
  EXPECT_NE(load_err("metrics: {listen: \"127.0.0.1:0\"}\n").find("must be \"IP:port\""), std::string::npos);
  EXPECT_TRUE(conf::load_string("metrics: {listen: \"\"}\n", "test.yaml").config.has_value());
  EXPECT_EQ(conf::load_string("metrics: {listen: \"[::1]:9127\"}\n", "t").config->metrics.listen, "[::1]:9127");
  EXPECT_EQ(load_err("metrics: 5\n"), "test.yaml:1: metrics must be a map (e.g. {listen: \"127.0.0.1:9127\"})");
}

TEST(Config, DuplicateKeyRejected) {
  EXPECT_EQ(load_err("listen_port: 1\nlisten_port: 2\n"), "test.yaml:2: duplicate key 'listen_port'");
}

TEST(Config, BadEnumHasLine) {
  EXPECT_EQ(load_err("listen_port: 6432\npool_mode: sesion\n"),
            "test.yaml:2: pool_mode must be session or transaction, got 'sesion'");
  EXPECT_EQ(load_err("databases:\n  app:\n    host: x\n\n    pool_mode: sesion\n"),
            "test.yaml:5: pool_mode must be session or transaction, got 'sesion'");
  EXPECT_EQ(load_err("auth_type: md5\n"), "test.yaml:1: auth_type must be trust, scram-sha-256 or cert, got 'md5'");
  EXPECT_EQ(load_err("log_level: verbose\n"),
            "test.yaml:1: log_level must be debug, info, warn or error, got 'verbose'");
  EXPECT_EQ(load_err("log_format: logfmt\n"), "test.yaml:1: log_format must be text or json, got 'logfmt'");
  EXPECT_EQ(load_err("server_reset_query_always: yes\n"),
            "test.yaml:1: server_reset_query_always must be true or false, got 'yes'");
}

TEST(Config, BadPort) {
  for (const char* bad : {"0", "65536", "-1", "abc", "64.5", "\"\""}) {
    std::string e = load_err(std::string("listen_addr: 127.0.0.1\n\nlisten_port: ") + bad + "\n");
    EXPECT_EQ(e.rfind("test.yaml:3: listen_port must be an integer 1-65535", 0), 0u) << e;
  }
  EXPECT_EQ(load_ok("listen_port: 65535\n").listen_port, 65535);
  EXPECT_EQ(load_err("databases:\n  app: {port: 99999}\n").rfind("test.yaml:2: port must be an integer 1-65535", 0),
            0u);
}

TEST(Config, BadSizes) {
  EXPECT_EQ(load_err("default_pool_size: 0\n"), "test.yaml:1: default_pool_size must be an integer >= 1, got '0'");
  EXPECT_EQ(load_err("max_client_conn: 0\n"), "test.yaml:1: max_client_conn must be an integer >= 1, got '0'");
  EXPECT_EQ(load_err("reserve_pool_size: -1\n"), "test.yaml:1: reserve_pool_size must be an integer >= 0, got '-1'");
  EXPECT_EQ(load_err("max_db_connections: 1e9\n"),
            "test.yaml:1: max_db_connections must be an integer >= 0, got '1e9'");
  EXPECT_EQ(load_err("min_pool_size: 5\ndefault_pool_size: 4\n"),
            "test.yaml:1: min_pool_size 5 exceeds default_pool_size 4");
  EXPECT_EQ(load_err("min_pool_size: 5\ndatabases:\n  app: {pool_size: 3}\n"),
            "test.yaml:3: database 'app': min_pool_size 5 exceeds pool size 3");
}

TEST(Config, SocketMode) {
  EXPECT_EQ(load_ok("unix_socket_mode: 0777\n").unix_socket_mode, 0777);
  EXPECT_EQ(load_ok("unix_socket_mode: \"0660\"\n").unix_socket_mode, 0660);
  EXPECT_EQ(load_ok("unix_socket_mode: 600\n").unix_socket_mode, 0600);
  EXPECT_EQ(load_err("unix_socket_mode: \"0789\"\n").rfind("test.yaml:1: unix_socket_mode must be an octal", 0), 0u);
}

TEST(Config, UserLists) {
  EXPECT_EQ(load_ok("admin_users: admin\n").admin_users, (std::vector<std::string>{"admin"}));
  EXPECT_EQ(load_ok("admin_users: \"a,b ,, c\"\n").admin_users, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(load_ok("admin_users:\n  - a\n  - b\n").admin_users, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(load_ok("admin_users: []\n").admin_users.empty());
  EXPECT_EQ(load_err("admin_users: {a: 1}\n"),
            "test.yaml:1: admin_users must be a list of names or a comma-separated string");
  EXPECT_EQ(load_err("stats_users: [[a]]\n"), "test.yaml:1: stats_users must be a list of names");
}

TEST(Config, SyntaxErrorHasLine) {
  std::string e = load_err("listen_port: 6432\npool_mode: [session\nlog_level: info\n");
  EXPECT_EQ(e.rfind("test.yaml:", 0), 0u) << e;
  EXPECT_NE(e.find_first_of("0123456789"), std::string::npos) << e;
  e = load_err("listen_port: 6432\n  bad indent: 1\n");
  EXPECT_EQ(e.rfind("test.yaml:2: ", 0), 0u) << e;
  EXPECT_EQ(load_err("- a\n- b\n"), "test.yaml:1: expected a map of settings at the top level");
  EXPECT_EQ(load_err("listen_port: 1\n---\nlisten_port: 2\n"), "test.yaml:3: only one YAML document is allowed");
}

TEST(Config, MissingFile) {
  conf::LoadResult r = conf::load_file("/nonexistent/pgsidecar.yaml");
  EXPECT_FALSE(r.config.has_value());
  EXPECT_EQ(r.error, "/nonexistent/pgsidecar.yaml: cannot open: No such file or directory");
}

TEST(Config, LoadFile) {
  char path[] = "/tmp/config_test_XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  {
    std::ofstream(path) << "listen_port: 7000\npool_mode: transactoin\n";
  }
  conf::LoadResult r = conf::load_file(path);
  EXPECT_EQ(r.error, std::string(path) + ":2: pool_mode must be session or transaction, got 'transactoin'");
  {
    std::ofstream(path) << "listen_port: 7000\n";
  }
  r = conf::load_file(path);
  ASSERT_TRUE(r.config.has_value()) << r.error;
  EXPECT_EQ(r.config->listen_port, 7000);
  EXPECT_EQ(r.config->source_path, path);
  std::remove(path);
}

TEST(Config, DatabaseOverrides) {
  conf::Config c = load_ok(R"(
pool_mode: transaction
default_pool_size: 15
databases:
  plain: {}
  nulled:
  app: {host: /var/run/postgresql, pool_mode: session, pool_size: 4}
  legacy: "host=10.0.0.5 port=6543 dbname=legacy user=old password='pw 1' pool_size=7"
)");
  ASSERT_EQ(c.databases.size(), 4u);
  const conf::Database* plain = conf::find_database(c, "plain");
  ASSERT_NE(plain, nullptr);
  EXPECT_EQ(plain->host, "127.0.0.1");
  EXPECT_EQ(plain->port, 5432);
  EXPECT_EQ(plain->dbname, "");
  EXPECT_FALSE(plain->pool_mode.has_value());
  EXPECT_FALSE(plain->pool_size.has_value());
  ASSERT_NE(conf::find_database(c, "nulled"), nullptr);
  const conf::Database* app = conf::find_database(c, "app");
  ASSERT_NE(app, nullptr);
  EXPECT_EQ(app->host, "/var/run/postgresql");
  EXPECT_EQ(app->pool_mode, conf::PoolMode::Session);
  EXPECT_EQ(app->pool_size, 4);
  const conf::Database* legacy = conf::find_database(c, "legacy");
  ASSERT_NE(legacy, nullptr);
  EXPECT_EQ(legacy->host, "10.0.0.5");
  EXPECT_EQ(legacy->port, 6543);
  EXPECT_EQ(legacy->dbname, "legacy");
  EXPECT_EQ(legacy->user, "old");
  EXPECT_EQ(legacy->password, "pw 1");
  EXPECT_EQ(legacy->pool_size, 7);
  EXPECT_EQ(load_err("databases:\n  x: \"host=a bogus=1\"\n"), "test.yaml:2: unknown key 'bogus'");
  EXPECT_EQ(load_err("databases:\n  x: \"host=a port=http\"\n"),
            "test.yaml:2: port must be an integer 1-65535, got 'http'");
  EXPECT_EQ(load_err("databases:\n  x: {host: a}\n  x: {host: b}\n"), "test.yaml:3: duplicate database 'x'");
  EXPECT_EQ(load_err("databases:\n  x: {host: \"\"}\n"), "test.yaml:2: host must not be empty");
}

TEST(Config, ConnectionStringQuotes) {
  conf::Config c = load_ok("databases:\n  x: \"password='a b\\\\'c' user=u\"\n");
  ASSERT_EQ(c.databases.size(), 1u);
  EXPECT_EQ(c.databases[0].password, "a b'c");
  EXPECT_EQ(c.databases[0].user, "u");
}

TEST(Config, WildcardLookup) {
  conf::Config c = load_ok(R"(
databases:
  "*": {host: 10.0.0.1}
  app: {host: 10.0.0.2}
)");
  const conf::Database* app = conf::find_database(c, "app");
  ASSERT_NE(app, nullptr);
  EXPECT_EQ(app->host, "10.0.0.2");
  const conf::Database* other = conf::find_database(c, "reports");
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(other->name, "*");
  EXPECT_EQ(other->host, "10.0.0.1");

  conf::Config no_wildcard = load_ok("databases:\n  app: {}\n");
  EXPECT_EQ(conf::find_database(no_wildcard, "reports"), nullptr);
  EXPECT_NE(conf::find_database(no_wildcard, "app"), nullptr);
}

TEST(Config, ScramRequiresAuthFile) {
  EXPECT_EQ(load_err("listen_port: 6432\nauth_type: scram-sha-256\n"),
            "test.yaml:2: auth_type scram-sha-256 requires auth_file");
  EXPECT_EQ(load_err("auth_type: scram-sha-256\nauth_file: \"\"\n"),
            "test.yaml:1: auth_type scram-sha-256 requires auth_file");
  EXPECT_EQ(load_ok("auth_type: scram-sha-256\nauth_file: /etc/u.txt\n").auth_type, conf::AuthType::ScramSha256);
}

TEST(Config, NothingToListenOn) {
  EXPECT_EQ(load_err("listen_addr: \"\"\n"),
            "test.yaml: nothing to listen on: listen_addr and unix_socket_dir are both empty");
  EXPECT_EQ(load_ok("listen_addr: \"\"\nunix_socket_dir: /tmp\n").listen_addr, "");
}

// The shipped example must load and show every key at its real default.
TEST(Config, ExampleFileMatchesDefaults) {
  std::string here = __FILE__;
  std::string path = here.substr(0, here.rfind("tests/unit/")) + "conf/pgsidecar.example.yaml";
  conf::LoadResult r = conf::load_file(path);
  ASSERT_TRUE(r.config.has_value()) << r.error;
  const conf::Config& c = *r.config;
  const conf::Config d;
  EXPECT_EQ(c.listen_addr, d.listen_addr);
  EXPECT_EQ(c.listen_port, d.listen_port);
  EXPECT_EQ(c.unix_socket_dir, d.unix_socket_dir);
  EXPECT_EQ(c.unix_socket_mode, d.unix_socket_mode);
  EXPECT_EQ(c.auth_type, d.auth_type);
  EXPECT_EQ(c.auth_file, d.auth_file);
  EXPECT_EQ(c.admin_users, d.admin_users);
  EXPECT_EQ(c.stats_users, d.stats_users);
  EXPECT_EQ(c.cache.admission, d.cache.admission);
  EXPECT_EQ(c.cache.catalogs, d.cache.catalogs);
  EXPECT_EQ(c.pool_mode, d.pool_mode);
  EXPECT_EQ(c.default_pool_size, d.default_pool_size);
  EXPECT_EQ(c.min_pool_size, d.min_pool_size);
  EXPECT_EQ(c.reserve_pool_size, d.reserve_pool_size);
  EXPECT_EQ(c.reserve_pool_timeout, d.reserve_pool_timeout);
  EXPECT_EQ(c.max_client_conn, d.max_client_conn);
  EXPECT_EQ(c.max_db_connections, d.max_db_connections);
  EXPECT_EQ(c.server_idle_timeout, d.server_idle_timeout);
  EXPECT_EQ(c.server_lifetime, d.server_lifetime);
  EXPECT_EQ(c.server_connect_timeout, d.server_connect_timeout);
  EXPECT_EQ(c.server_login_retry, d.server_login_retry);
  EXPECT_EQ(c.server_reset_query, d.server_reset_query);
  EXPECT_EQ(c.server_reset_query_always, d.server_reset_query_always);
  EXPECT_EQ(c.server_check_query, d.server_check_query);
  EXPECT_EQ(c.server_check_delay, d.server_check_delay);
  EXPECT_EQ(c.query_wait_timeout, d.query_wait_timeout);
  EXPECT_EQ(c.client_login_timeout, d.client_login_timeout);
  EXPECT_EQ(c.shutdown_timeout, d.shutdown_timeout);
  EXPECT_EQ(c.log_level, d.log_level);
  EXPECT_EQ(c.log_format, d.log_format);
  EXPECT_EQ(c.idle_transaction_timeout, d.idle_transaction_timeout);
  EXPECT_EQ(c.query_timeout, d.query_timeout);
  EXPECT_EQ(c.client_idle_timeout, d.client_idle_timeout);
  EXPECT_EQ(c.cancel_wait_timeout, d.cancel_wait_timeout);
  EXPECT_EQ(c.server_check_timeout, d.server_check_timeout);
  EXPECT_EQ(c.server_reset_timeout, d.server_reset_timeout);
  EXPECT_EQ(c.tcp_keepalive, d.tcp_keepalive);
  EXPECT_EQ(c.tcp_keepidle, d.tcp_keepidle);
  EXPECT_EQ(c.tcp_keepintvl, d.tcp_keepintvl);
  EXPECT_EQ(c.tcp_keepcnt, d.tcp_keepcnt);
  EXPECT_EQ(c.server_auth_methods, d.server_auth_methods);
  EXPECT_EQ(c.max_inspect_bytes, d.max_inspect_bytes);
  EXPECT_EQ(c.max_client_prepared_statements, d.max_client_prepared_statements);
  EXPECT_EQ(c.max_unauthenticated_clients, d.max_unauthenticated_clients);
  EXPECT_EQ(c.max_prepared_statements, d.max_prepared_statements);
  ASSERT_EQ(c.databases.size(), 1u);
  EXPECT_EQ(c.databases[0].name, "*");
  EXPECT_EQ(c.databases[0].host, "127.0.0.1");
  EXPECT_EQ(c.databases[0].port, 5432);
}

TEST(Config, ToString) {
  EXPECT_EQ(conf::to_string(conf::PoolMode::Session), "session");
  EXPECT_EQ(conf::to_string(conf::PoolMode::Transaction), "transaction");
  EXPECT_EQ(conf::to_string(conf::AuthType::Trust), "trust");
  EXPECT_EQ(conf::to_string(conf::AuthType::ScramSha256), "scram-sha-256");
  EXPECT_EQ(conf::to_string(conf::LogLevel::Debug), "debug");
  EXPECT_EQ(conf::to_string(conf::LogLevel::Warn), "warn");
  EXPECT_EQ(conf::to_string(conf::LogLevel::Error), "error");
}

TEST(Config, LockdAndMigrations) {
  auto ok = conf::load_string(
      "databases: {app: {host: 127.0.0.1}}\n"
      "lockd: {socket_path: /tmp/l.sock, socket_mode: \"0600\", allowed_uids: [root, 1000], allowed_gids: \"0\"}\n"
      "migrations: {dir: /tmp/m, format: flyway, database: app, verify_interval: 5s, optimistic: false}\n",
      "t");
  ASSERT_TRUE(ok.config) << ok.error;
  EXPECT_EQ(ok.config->lockd.socket_mode, 0600);
  EXPECT_EQ(ok.config->lockd.allowed_uids, (std::vector<unsigned>{0, 1000}));
  EXPECT_EQ(ok.config->lockd.allowed_gids, (std::vector<unsigned>{0}));
  EXPECT_EQ(ok.config->migrations.history_table(), "flyway_schema_history");
  EXPECT_EQ(ok.config->migrations.verify_interval.count(), 5000);
  EXPECT_FALSE(ok.config->migrations.optimistic);
  EXPECT_EQ(conf::Config{}.lockd.socket_path, "/run/pgsidecar/lockd.sock");

  EXPECT_EQ(load_err("lockd: {socket: x}\n"), "test.yaml:1: unknown key 'socket'");
  EXPECT_EQ(load_err("lockd:\n  allowed_uids: [no-such-user-here]\n"),
            "test.yaml:2: allowed_uids names an unknown user, got 'no-such-user-here'");
  EXPECT_EQ(load_err("migrations: {format: liquibase}\n"),
            "test.yaml:1: format must be pgsidecar, golang-migrate or flyway, got 'liquibase'");
  EXPECT_EQ(load_err("migrations: {dir: /tmp/m}\n"), "test.yaml:1: migrations.dir requires migrations.database");
  EXPECT_EQ(load_err("migrations: {dir: /tmp/m, database: nope}\n"),
            "test.yaml:1: migrations.database 'nope' is not in databases:");
}

TEST(Config, SessionTimeouts) {
  const conf::Config d;
  EXPECT_EQ(d.idle_transaction_timeout, 0ms);
  EXPECT_EQ(d.query_timeout, 0ms);
  EXPECT_EQ(d.client_idle_timeout, 0ms);
  EXPECT_EQ(d.cancel_wait_timeout, 10s);
  EXPECT_EQ(d.server_check_timeout, 5s);
  EXPECT_EQ(d.server_reset_timeout, 5s);

  conf::Config c = load_ok(
      "idle_transaction_timeout: 30\nquery_timeout: 1.5s\nclient_idle_timeout: 10m\n"
      "cancel_wait_timeout: 500ms\nserver_check_timeout: 2s\nserver_reset_timeout: 1m\n");
  EXPECT_EQ(c.idle_transaction_timeout, 30s);
  EXPECT_EQ(c.query_timeout, 1500ms);
  EXPECT_EQ(c.client_idle_timeout, 10min);
  EXPECT_EQ(c.cancel_wait_timeout, 500ms);
  EXPECT_EQ(c.server_check_timeout, 2s);
  EXPECT_EQ(c.server_reset_timeout, 1min);

  for (const char* key : {"idle_transaction_timeout", "query_timeout", "client_idle_timeout", "cancel_wait_timeout",
                          "server_check_timeout", "server_reset_timeout"}) {
    std::string e = load_err(std::string("log_level: info\n") + key + ": 5d\n");
    EXPECT_EQ(e.rfind(std::string("test.yaml:2: ") + key + " must be a duration", 0), 0u) << e;
  }
  // 0 = off for the client-side timeouts; the server-side ones must be > 0.
  EXPECT_EQ(load_ok("query_timeout: 0\n").query_timeout, 0ms);
  for (const char* key : {"cancel_wait_timeout", "server_check_timeout", "server_reset_timeout"}) {
    EXPECT_EQ(load_err(std::string("\n") + key + ": 0\n"),
              std::string("test.yaml:2: ") + key + " must be a duration > 0 (e.g. 500ms, 5s), got '0'");
  }
}

TEST(Config, TcpKeepalive) {
  const conf::Config d;
  EXPECT_TRUE(d.tcp_keepalive);
  EXPECT_EQ(d.tcp_keepidle, 60s);
  EXPECT_EQ(d.tcp_keepintvl, 10s);
  EXPECT_EQ(d.tcp_keepcnt, 6);
  conf::Config c = load_ok("tcp_keepalive: false\ntcp_keepidle: 2m\ntcp_keepintvl: 5\ntcp_keepcnt: 3\n");
  EXPECT_FALSE(c.tcp_keepalive);
  EXPECT_EQ(c.tcp_keepidle, 120s);
  EXPECT_EQ(c.tcp_keepintvl, 5s);
  EXPECT_EQ(c.tcp_keepcnt, 3);
  EXPECT_EQ(load_ok("tcp_keepidle: 32767\n").tcp_keepidle, 32767s);

  EXPECT_EQ(load_err("\ntcp_keepalive: on\n"), "test.yaml:2: tcp_keepalive must be true or false, got 'on'");
  for (const char* bad : {"0", "500ms", "1.5s", "32768", "10h"}) {
    EXPECT_EQ(load_err(std::string("\ntcp_keepidle: ") + bad + "\n"),
              std::string("test.yaml:2: tcp_keepidle must be whole seconds from 1s to 32767s (e.g. 60, 30s, 2m), got '") +
                  bad + "'");
  }
  EXPECT_EQ(load_err("tcp_keepintvl: x\n").rfind("test.yaml:1: tcp_keepintvl must be a duration", 0), 0u);
  EXPECT_EQ(load_err("\ntcp_keepcnt: 0\n"), "test.yaml:2: tcp_keepcnt must be an integer 1-127, got '0'");
  EXPECT_EQ(load_err("tcp_keepcnt: 128\n"), "test.yaml:1: tcp_keepcnt must be an integer 1-127, got '128'");
}

TEST(Config, ServerAuthMethods) {
  EXPECT_EQ(conf::Config{}.server_auth_methods, conf::kServerAuthScram | conf::kServerAuthMd5);
  EXPECT_EQ(load_ok("server_auth_methods: [scram-sha-256]\n").server_auth_methods, conf::kServerAuthScram);
  EXPECT_EQ(load_ok("server_auth_methods:\n  - md5\n  - password\n").server_auth_methods,
            conf::kServerAuthMd5 | conf::kServerAuthCleartext);
  EXPECT_EQ(load_ok("server_auth_methods: \"scram-sha-256, md5,cleartext\"\n").server_auth_methods,
            conf::kServerAuthScram | conf::kServerAuthMd5 | conf::kServerAuthCleartext);
  EXPECT_EQ(load_ok("server_auth_methods: md5\n").server_auth_methods, conf::kServerAuthMd5);

  EXPECT_EQ(load_err("server_auth_methods:\n  - md5\n  - scram\n"),
            "test.yaml:3: server_auth_methods has an unknown method (expected scram-sha-256, md5 or password), "
            "got 'scram'");
  EXPECT_EQ(load_err("\nserver_auth_methods: \"md5, trust\"\n"),
            "test.yaml:2: server_auth_methods has an unknown method (expected scram-sha-256, md5 or password), "
            "got 'trust'");
  for (const char* empty : {"[]", "\"\"", "\" , \"", ""}) {
    EXPECT_EQ(load_err(std::string("\nserver_auth_methods: ") + empty + "\n"),
              "test.yaml:2: server_auth_methods must name at least one method: scram-sha-256, md5 or password")
        << empty;
  }
  EXPECT_EQ(load_err("server_auth_methods: {md5: 1}\n").rfind("test.yaml:1: server_auth_methods must be a list", 0),
            0u);
  EXPECT_EQ(load_err("server_auth_methods: [[md5]]\n"), "test.yaml:1: server_auth_methods must be a list of method names");

  EXPECT_EQ(conf::server_auth_method_names(conf::kServerAuthScram | conf::kServerAuthMd5), "scram-sha-256,md5");
  EXPECT_EQ(conf::server_auth_method_names(conf::kServerAuthCleartext), "password");
}

TEST(Config, PinOn) {
  conf::Config d;
  EXPECT_EQ(d.pin_on, conf::kPinAll);
  EXPECT_EQ(d.max_pinned_per_pool, -1);
  EXPECT_EQ(d.pinned_log_after, conf::Duration(60000));
  EXPECT_EQ(load_ok("pin_on: off\n").pin_on, 0);
  EXPECT_EQ(load_ok("pin_on: [temp, listen]\n").pin_on, conf::kPinTemp | conf::kPinListen);
  EXPECT_EQ(load_ok("pin_on: \"advisory, set\"\n").pin_on, conf::kPinAdvisory | conf::kPinSet);
  EXPECT_EQ(load_err("\npin_on: [temp, temps]\n"),
            "test.yaml:2: pin_on has an unknown kind (expected temp, prepare, cursor, listen, advisory, set, other; "
            "or off), got 'temps'");
  EXPECT_EQ(load_err("pin_on: []\n").rfind("test.yaml:1: pin_on must name at least one kind", 0), 0u);
  EXPECT_EQ(load_err("max_pinned_per_pool: -2\n").rfind("test.yaml:1: max_pinned_per_pool must be an integer", 0), 0u);
  conf::Config c = load_ok("databases:\n  app: {host: x, pin_on: [prepare], max_pinned_per_pool: 3}\n  b: {host: y}\n");
  ASSERT_EQ(c.databases.size(), 2u);
  EXPECT_EQ(c.databases[0].pin_on, std::optional<uint8_t>(conf::kPinPrepare));
  EXPECT_EQ(c.databases[0].max_pinned_per_pool, std::optional<int>(3));
  EXPECT_FALSE(c.databases[1].pin_on.has_value());
}

TEST(Config, ClientLimits) {
  const conf::Config d;
  EXPECT_EQ(d.max_inspect_bytes, 1u << 20);
  EXPECT_EQ(d.max_client_prepared_statements, 1000);
  EXPECT_EQ(d.max_unauthenticated_clients, 256);
  conf::Config c = load_ok("max_inspect_bytes: 4MB\nmax_client_prepared_statements: 0\nmax_unauthenticated_clients: 10\n");
  EXPECT_EQ(c.max_inspect_bytes, 4u << 20);
  EXPECT_EQ(c.max_client_prepared_statements, 0);
  EXPECT_EQ(c.max_unauthenticated_clients, 10);
  EXPECT_EQ(load_ok("max_inspect_bytes: 65536\n").max_inspect_bytes, 65536u);
  EXPECT_EQ(load_ok("max_inspect_bytes: 64kB\n").max_inspect_bytes, 65536u);

  EXPECT_EQ(load_err("\nmax_inspect_bytes: 65535\n"), "test.yaml:2: max_inspect_bytes must be from 64kB to 1GB, got '65535'");
  EXPECT_EQ(load_err("max_inspect_bytes: 2GB\n"), "test.yaml:1: max_inspect_bytes must be from 64kB to 1GB, got '2GB'");
  EXPECT_EQ(load_err("max_inspect_bytes: 1XB\n").rfind("test.yaml:1: max_inspect_bytes must be a size in bytes", 0), 0u);
  EXPECT_EQ(load_err("\nmax_client_prepared_statements: -1\n"),
            "test.yaml:2: max_client_prepared_statements must be an integer >= 0, got '-1'");
  EXPECT_EQ(load_err("\nmax_unauthenticated_clients: 0\n"),
            "test.yaml:2: max_unauthenticated_clients must be an integer >= 1, got '0'");
}

TEST(Config, DescribeNewKeysReloadable) {
  conf::Config c;
  c.server_auth_methods = conf::kServerAuthScram;
  c.query_timeout = 2s;
  std::map<std::string, std::string> shown;
  for (auto& [k, v] : conf::describe(c)) shown[k] = v;
  EXPECT_EQ(shown.at("server_auth_methods"), "scram-sha-256");
  EXPECT_EQ(shown.at("query_timeout"), "2000ms");
  EXPECT_EQ(shown.at("tcp_keepalive"), "true");
  EXPECT_EQ(shown.at("tcp_keepcnt"), "6");
  EXPECT_EQ(shown.at("max_inspect_bytes"), "1048576");
  for (const char* key : {"idle_transaction_timeout", "query_timeout", "client_idle_timeout", "cancel_wait_timeout",
                          "server_check_timeout", "server_reset_timeout", "tcp_keepalive", "tcp_keepidle",
                          "tcp_keepintvl", "tcp_keepcnt", "server_auth_methods", "max_inspect_bytes",
                          "max_client_prepared_statements", "max_unauthenticated_clients"}) {
    EXPECT_TRUE(shown.count(key)) << key;
    EXPECT_FALSE(conf::needs_restart(key)) << key;
  }
}

// yaml-cpp 0.7's LoadAll never returns on these (found by tests/fuzz/config_fuzz.cpp).
TEST(Config, StrayCommaIsAnErrorNotAHang) {
  EXPECT_EQ(load_err(","), "test.yaml:1: syntax error: unexpected ','");
  EXPECT_EQ(load_err(",,"), "test.yaml:1: syntax error: unexpected ','");
  EXPECT_EQ(load_err(",a:\n bases:\n"), "test.yaml:1: syntax error: unexpected ','");
  EXPECT_EQ(load_err("# comment\n\n, listen_port: 1\n"), "test.yaml:3: syntax error: unexpected ','");
  EXPECT_EQ(load_err(",\n---\nlisten_port: 1\n"), "test.yaml:1: syntax error: unexpected ','");
  EXPECT_EQ(load_err("listen_port: 1\n---\n,\n"), "test.yaml:3: only one YAML document is allowed");
  EXPECT_EQ(load_err("listen_port: 1\n...\n---\nlog_level: info\n"), "test.yaml:4: only one YAML document is allowed");
  EXPECT_EQ(load_ok("---\nlisten_port: 7\n...\n").listen_port, 7);
}

TEST(Config, TlsSettings) {
  conf::Config d;
  EXPECT_EQ(d.client_tls.sslmode, conf::SslMode::Disable);
  EXPECT_EQ(d.server_tls.sslmode, conf::SslMode::Prefer);
  EXPECT_EQ(d.server_tls.protocols, conf::kTls12 | conf::kTls13);
  EXPECT_EQ(d.server_channel_binding, conf::ChannelBinding::Prefer);
  conf::Config c = load_ok(
      "client_tls_sslmode: require\nclient_tls_key_file: /k\nclient_tls_cert_file: /c\n"
      "client_tls_protocols: tlsv1.3\nserver_tls_sslmode: verify-full\nserver_tls_ca_file: /ca\n"
      "databases:\n  app: {host: x, server_tls_sslmode: disable}\n  b: {host: y, server_tls_ca_file: /other}\n");
  EXPECT_EQ(c.client_tls.sslmode, conf::SslMode::Require);
  EXPECT_EQ(c.client_tls.protocols, conf::kTls13);
  EXPECT_EQ(conf::server_tls_for(c, c.databases[0]).sslmode, conf::SslMode::Disable);
  EXPECT_EQ(conf::server_tls_for(c, c.databases[1]).sslmode, conf::SslMode::VerifyFull);
  EXPECT_EQ(conf::server_tls_for(c, c.databases[1]).ca_file, "/other");
  EXPECT_EQ(c.where("server_tls_ca_file"), "test.yaml:6: ");
  EXPECT_EQ(c.where(conf::server_tls_key(c.databases[1], "server_tls_ca_file")), "test.yaml:9: ");
  EXPECT_EQ(load_err("client_tls_sslmode: require\n"),
            "test.yaml:1: client_tls_sslmode require requires client_tls_key_file and client_tls_cert_file");
  EXPECT_EQ(load_err("client_tls_sslmode: verify-ca\nclient_tls_key_file: /k\nclient_tls_cert_file: /c\n"),
            "test.yaml:1: client_tls_sslmode verify-ca requires client_tls_ca_file (the CA of client certificates)");
  EXPECT_EQ(load_err("\nauth_type: cert\n"),
            "test.yaml:2: auth_type cert requires client_tls_sslmode verify-ca or verify-full");
  EXPECT_EQ(load_err("server_tls_sslmode: sure\n").rfind("test.yaml:1: server_tls_sslmode must be disable, allow", 0), 0u);
  EXPECT_EQ(load_err("server_tls_protocols: [tlsv1.1]\n").rfind("test.yaml:1: server_tls_protocols has an unknown", 0), 0u);
  EXPECT_EQ(load_err("server_tls_key_file: /k\n"), "test.yaml:1: server_tls_key_file and server_tls_cert_file go together");
}
