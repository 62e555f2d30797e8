// Prometheus metrics: the /metrics endpoint on a live daemon, with figures that
// must match what the test did.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <filesystem>
#include <regex>
#include <thread>

#include "harness.h"
#include "metrics/http_endpoint.h"

using namespace itest;

namespace {

// Reads into *got until the peer closes (EOF or reset): true, or false after timeout_ms.
bool wait_eof(int fd, int timeout_ms, std::string* got = nullptr) {
  auto t0 = Clock::now();
  char buf[65536];
  for (;;) {
    long left = timeout_ms - ms_since(t0);
    pollfd p{fd, POLLIN, 0};
    if (left <= 0 || poll(&p, 1, int(left)) <= 0) return false;
    ssize_t n = read(fd, buf, sizeof buf);
    if (n == 0 || (n < 0 && errno == ECONNRESET)) return true;
    if (n > 0 && got) got->append(buf, size_t(n));
  }
}

// Sends the request on a new connection; the whole response (head and body), "" if none.
std::string http_exchange(int port, const std::string& request) {
  int fd = tcp_connect(port);
  if (fd < 0) return "";
  std::string out;
  if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) == ssize_t(request.size())) wait_eof(fd, 30000, &out);
  close(fd);
  return out;
}

// One HTTP GET on 127.0.0.1:port; the whole response (head and body), "" if none.
std::string http_get(int port, const std::string& path) {
  return http_exchange(port, "GET " + path + " HTTP/1.1\r\nHost: localhost\r\n\r\n");
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

// The value of the sample `name{labels}` (labels exactly as rendered), or -1.
double sample(const std::string& text, const std::string& series) {
  size_t at = text.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + series.size() + 2));
}

struct MetricsDaemon {
  int port = free_port();
  DaemonConfig cfg = base_config();
  MetricsDaemon(const std::string& mode, int pool_size) {
    cfg.set("metrics", "{listen: \"127.0.0.1:" + std::to_string(port) + "\"}")
        .set("pool_mode", mode)
        .set("default_pool_size", std::to_string(pool_size));
  }
  // lockd on, with an (empty) migrations directory, so its families are exported too.
  MetricsDaemon& with_lockd() {
    cfg.set("lockd", "{socket_path: \"@DIR@/lockd.sock\"}")
        .set("migrations", "{dir: \"@DIR@\", database: app, user: app}");
    return *this;
  }
  // The result cache on (and its Redis tier, given a URL), so its families are exported too.
  MetricsDaemon& with_cache(const std::string& redis_url = "") {
    cfg.set("cache", redis_url.empty() ? "{mode: all, admission: always}"
                                       : "{mode: all, admission: always, redis: {url: \"" + redis_url + "\"}}");
    return *this;
  }
  std::string scrape() const {
    std::string r = http_get(port, "/metrics");
    size_t body = r.find("\r\n\r\n");
    return body == std::string::npos ? "" : r.substr(body + 4);
  }
};

const std::string kPool = "database=\"app\",user=\"app\"";

}  // namespace

TEST(Metrics, CountsMatchWhatClientsDid) {
  MetricsDaemon m("transaction", 2);
  Daemon d(m.cfg);
  START_DAEMON(d);
  ConnPtr a = must_connect(d.conninfo()), b = must_connect(d.conninfo());
  ASSERT_TRUE(a && b);
  std::string before = m.scrape();
  double q0 = sample(before, "pgsidecar_queries_total{" + kPool + "}");
  double t0 = sample(before, "pgsidecar_transactions_total{" + kPool + "}");
  double qd0 = sample(before, "pgsidecar_query_duration_seconds_count{" + kPool + "}");
  double td0 = sample(before, "pgsidecar_transaction_duration_seconds_count{" + kPool + "}");
  ASSERT_GE(q0, 0) << before;
  for (int i = 0; i < 7; ++i) ASSERT_TRUE(exec(a, "SELECT 1").ok);   // 7 queries, 7 transactions
  ASSERT_TRUE(exec(b, "BEGIN").ok);                                  // 3 queries, 1 transaction
  ASSERT_TRUE(exec(b, "SELECT 2").ok);
  std::string during = m.scrape();
  EXPECT_EQ(sample(during, "pgsidecar_client_connections{" + kPool + ",state=\"active\"}"), 1) << during;
  EXPECT_EQ(sample(during, "pgsidecar_client_connections{" + kPool + ",state=\"idle\"}"), 1) << during;
  EXPECT_EQ(sample(during, "pgsidecar_server_connections{" + kPool + ",state=\"active\"}"), 1) << during;
  ASSERT_TRUE(exec(b, "COMMIT").ok);
  std::string after = m.scrape();
  EXPECT_EQ(sample(after, "pgsidecar_queries_total{" + kPool + "}") - q0, 10) << after;
  EXPECT_EQ(sample(after, "pgsidecar_transactions_total{" + kPool + "}") - t0, 8) << after;
  EXPECT_EQ(sample(after, "pgsidecar_query_duration_seconds_count{" + kPool + "}") - qd0, 10) << after;
  EXPECT_EQ(sample(after, "pgsidecar_transaction_duration_seconds_count{" + kPool + "}") - td0, 8) << after;
  EXPECT_GT(sample(after, "pgsidecar_bytes_total{" + kPool + ",direction=\"client_to_server\"}"), 10 * 13) << after;
  EXPECT_GT(sample(after, "pgsidecar_bytes_total{" + kPool + ",direction=\"server_to_client\"}"), 10 * 6) << after;
  EXPECT_EQ(sample(after, "pgsidecar_build_info{version=\"" PGSIDECAR_VERSION "\"}"), 1) << after;
  // Errors by SQLSTATE class: 22012 division_by_zero, twice.
  EXPECT_EQ(exec(a, "SELECT 1/0").sqlstate, "22012");
  EXPECT_EQ(exec(b, "SELECT 1/0").sqlstate, "22012");
  EXPECT_EQ(sample(m.scrape(), "pgsidecar_server_errors_total{" + kPool + ",class=\"22\"}"), 2);
}

TEST(Metrics, PlanCacheAndWaitHistogram) {
  MetricsDaemon m("transaction", 1);
  Daemon d(m.cfg);
  START_DAEMON(d);
  ConnPtr a = must_connect(d.conninfo()), b = must_connect(d.conninfo());
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(result_of(PQprepare(a.get(), "s", "SELECT 1", 0, nullptr)).ok);   // miss: prepare
  ASSERT_TRUE(result_of(PQprepare(b.get(), "t", "SELECT 1", 0, nullptr)).ok);   // hit
  std::string text = m.scrape();
  EXPECT_EQ(sample(text, "pgsidecar_prepared_statements_total{event=\"prepare\"}"), 1) << text;
  EXPECT_EQ(sample(text, "pgsidecar_prepared_statements_total{event=\"hit\"}"), 1) << text;
  // b waits while a holds the only server (logins may have waited too: count from here).
  double waits = sample(text, "pgsidecar_pool_wait_seconds_count{" + kPool + "}");
  ASSERT_TRUE(exec(a, "BEGIN").ok);
  ASSERT_EQ(PQsendQuery(b.get(), "SELECT 2"), 1);
  ASSERT_TRUE(eventually([&] {
    return sample(m.scrape(), "pgsidecar_client_connections{" + kPool + ",state=\"waiting\"}") == 1;
  }, 3000));
  ASSERT_TRUE(exec(a, "COMMIT").ok);
  QResult r = result_of(PQgetResult(b.get()));
  ASSERT_TRUE(r.ok) << r.describe();
  while (PGresult* rest = PQgetResult(b.get())) PQclear(rest);
  text = m.scrape();
  EXPECT_EQ(sample(text, "pgsidecar_pool_wait_seconds_count{" + kPool + "}") - waits, 1) << text;
}

// The janitor's 100 ms tick is observed every time; a loop held for 400 ms (here:
// the process stopped) shows as one late tick of at least 300 ms.
TEST(Metrics, EventLoopLagShowsAHeldLoop) {
  MetricsDaemon m("transaction", 1);
  Daemon d(m.cfg);
  START_DAEMON(d);
  const std::string count = "pgsidecar_event_loop_lag_seconds_count", slow = "pgsidecar_event_loop_lag_seconds_bucket{le=\"0.25\"}";
  std::string text = m.scrape();
  double n0 = sample(text, count);
  ASSERT_GE(n0, 0) << text;
  ASSERT_TRUE(eventually([&] { return sample(m.scrape(), count) >= n0 + 3; }, 5000)) << "ticks are observed";
  text = m.scrape();
  double fast0 = sample(text, slow), n1 = sample(text, count);
  ASSERT_EQ(kill(d.pid(), SIGSTOP), 0);
  std::this_thread::sleep_for(Ms(400));   // the stimulus: the loop is held this long
  ASSERT_EQ(kill(d.pid(), SIGCONT), 0);
  ASSERT_TRUE(eventually([&] { return sample(m.scrape(), count) >= n1 + 2; }, 5000));
  text = m.scrape();
  // Every tick since n1 but the late one is below 0.25 s.
  EXPECT_LT(sample(text, slow) - fast0, sample(text, count) - n1) << text;
}

// The writes of one transaction are one invalidation at its COMMIT, however
// many statements wrote (not one per statement, which cost a Redis round trip each).
TEST(Metrics, OneTransactionIsOneInvalidation) {
  MetricsDaemon m("transaction", 2);
  m.with_cache();
  Daemon d(m.cfg);
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  ASSERT_TRUE(exec(c, "DROP TABLE IF EXISTS mt_inv; CREATE TABLE mt_inv (i int)").ok);
  // Writes count as "write", or as "everything" while the new table's catalog is being read.
  auto events = [&m] {
    std::string text = m.scrape();
    double n = 0;
    for (const char* reason : {"write", "everything"})
      n += std::max(0.0, sample(text, std::string("pgsidecar_cache_invalidations_total{reason=\"") + reason + "\"}"));
    return n;
  };
  const double e0 = events();
  ASSERT_TRUE(exec(c, "BEGIN").ok);
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(exec(c, "INSERT INTO mt_inv VALUES (" + std::to_string(i) + ")").ok);
  EXPECT_EQ(events(), e0) << "nothing before COMMIT";
  ASSERT_TRUE(exec(c, "COMMIT").ok);
  EXPECT_EQ(events(), e0 + 1);
  ASSERT_TRUE(exec(c, "DROP TABLE mt_inv").ok);
}

// Any database user may NOTIFY on the invalidation channel. A message with
// "schema" or "all" from a backend of another role is not acted on (counted as
// untrusted); one that names relations still drops them (a trigger's message);
// the sidecar's own role may send either.
TEST(Metrics, InvalidationFlagsAreTakenOnlyFromTheSidecarsRole) {
  MetricsDaemon m("transaction", 2);
  m.with_cache();
  Daemon d(m.cfg);
  START_DAEMON(d);
  bool ok = false;
  std::string out = cluster().psql(
      "DROP TABLE IF EXISTS mt_forge; CREATE TABLE mt_forge (i int); INSERT INTO mt_forge VALUES (1);"
      "GRANT SELECT ON mt_forge TO PUBLIC; DROP ROLE IF EXISTS mt_forger; CREATE ROLE mt_forger LOGIN PASSWORD 'forgerpass';",
      "app", &ok);
  ASSERT_TRUE(ok) << out;
  ConnPtr c = must_connect(d.conninfo());
  ConnPtr forger = must_connect(cluster().direct_conninfo("mt_forger", "app", "forgerpass"));
  ConnPtr own = must_connect(cluster().direct_conninfo("app", "app", "apppass"));   // the role the daemon's control connection uses
  ASSERT_TRUE(c && forger && own);
  auto read = [&] { return exec(c, "SELECT i FROM mt_forge").scalar(); };
  auto count = [&m](const std::string& reason) {
    return std::max(0.0, sample(m.scrape(), "pgsidecar_cache_invalidations_total{reason=\"" + reason + "\"}"));
  };
  auto behind = [](int v) {   // no sidecar sees this write
    ASSERT_TRUE(cluster().scalar("UPDATE mt_forge SET i = " + std::to_string(v) + " RETURNING i").has_value());
  };
  // Cached: a write made behind the daemon is not seen.
  auto cached = [&](const std::string& want, int next) {
    return eventually([&] { return read() == want; }, 5000) &&
           eventually([&] { read(); behind(next); return read() == want; }, 20000);
  };
  ASSERT_TRUE(cached("1", 2));
  const double schema0 = count("schema");

  auto notify = [](const ConnPtr& from, const std::string& payload) {
    QResult r = exec(from, "SELECT pg_notify('pgsidecar_invalidate', '" + payload + "')");
    ASSERT_TRUE(r.ok) << r.describe();
  };
  notify(forger, R"({"o":"forged","db":"app","schema":true,"all":true})");
  ASSERT_TRUE(eventually([&] { return count("untrusted") == 1; }, 5000));
  EXPECT_EQ(read(), "1") << "a forged schema/all message dropped entries";
  EXPECT_EQ(count("schema"), schema0);

  notify(forger, R"({"rels":["mt_forge"]})");   // as pgsidecar_watch()'s trigger sends it
  EXPECT_TRUE(eventually([&] { return read() == "2"; }, 5000)) << "a message naming a table did not drop it";
  ASSERT_TRUE(cached("2", 3));

  notify(own, R"({"o":"another sidecar","schema":true})");
  EXPECT_TRUE(eventually([&] { return count("schema") == schema0 + 1; }, 5000));
  EXPECT_TRUE(eventually([&] { return read() == "3"; }, 5000));
  EXPECT_EQ(count("untrusted"), 1);
  cluster().psql("DROP TABLE mt_forge; DROP ROLE mt_forger;");
}

TEST(Metrics, ServerDisconnectsByReason) {
  MetricsDaemon m("transaction", 1);
  Daemon d(m.cfg);
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  std::string pid = exec(c, "SELECT pg_backend_pid()").scalar();
  ASSERT_EQ(cluster().scalar("SELECT pg_terminate_backend(" + pid + ")").value_or("?"), "t");
  // PostgreSQL's FATAL while idle, or its closing the socket: either way, counted once.
  auto counted = [&] {
    std::string t = m.scrape();
    return std::max(sample(t, "pgsidecar_server_disconnects_total{" + kPool + ",reason=\"server_error\"}"),
                    sample(t, "pgsidecar_server_disconnects_total{" + kPool + ",reason=\"server_closed\"}")) == 1;
  };
  EXPECT_TRUE(eventually(counted, 3000)) << m.scrape();
}

TEST(Metrics, OnlyMetricsPathIsServed) {
  MetricsDaemon m("session", 2);
  Daemon d(m.cfg);
  START_DAEMON(d);
  EXPECT_EQ(http_get(m.port, "/").rfind("HTTP/1.1 404", 0), 0u);
  EXPECT_EQ(http_get(m.port, "/metrics").rfind("HTTP/1.1 200", 0), 0u);
  EXPECT_TRUE(starts_with(http_exchange(m.port, "HEAD /metrics HTTP/1.1\r\n\r\n"), "HTTP/1.1 405"));
  EXPECT_TRUE(starts_with(http_exchange(m.port, "GET /metrics HTTP/2.0\r\n\r\n"), "HTTP/1.1 505"));
  EXPECT_TRUE(starts_with(http_exchange(m.port, "GET /metrics HTTP/1.1\nHost: x\n\n"), "HTTP/1.1 400"));
  // The daemon still serves its clients.
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  EXPECT_EQ(exec(c, "SELECT 3").scalar(), "3");
}

// /healthz answers while the loop runs; /readyz follows PostgreSQL: 503 naming the
// database entry while it is down, 200 again once it is back.
TEST(Metrics, ReadyzFollowsPostgreSQL) {
  MetricsDaemon m("transaction", 2);
  m.cfg.set("server_check_delay", "1s");
  Daemon d(m.cfg);
  START_DAEMON(d);
  EXPECT_EQ(http_get(m.port, "/healthz"), "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
                                          "Content-Length: 3\r\nConnection: close\r\n\r\nok\n");
  auto ready = [&] { return http_get(m.port, "/readyz"); };
  std::string r;
  ASSERT_TRUE(eventually([&] { return starts_with(r = ready(), "HTTP/1.1 200"); }, 10000)) << r;
  EXPECT_TRUE(contains(r, "application/json")) << r;
  EXPECT_TRUE(contains(r, "{\"not_ready\":{},\"ready\":true}")) << r;

  struct Restart {   // PostgreSQL comes back for the next tests, whatever happens here
    ~Restart() {
      if (!cluster().running()) cluster().start();
    }
  } restart;
  ASSERT_TRUE(cluster().stop(PgCluster::StopMode::Immediate));
  ASSERT_TRUE(eventually([&] { return starts_with(r = ready(), "HTTP/1.1 503"); }, 10000)) << r;
  EXPECT_TRUE(contains(r, "\"ready\":false")) << r;
  EXPECT_TRUE(contains(r, "\"database app\"")) << r;
  EXPECT_EQ(http_get(m.port, "/healthz").rfind("HTTP/1.1 200", 0), 0u);   // alive, just not ready

  ASSERT_TRUE(cluster().start());
  EXPECT_TRUE(eventually([&] { return starts_with(r = ready(), "HTTP/1.1 200"); }, 10000)) << r;
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  EXPECT_EQ(exec(c, "SELECT 1").scalar(), "1");
}

// A pool with min_pool_size needs a live server, and lockd's migrations must be current.
TEST(Metrics, ReadyzNeedsWarmPoolsAndCurrentMigrations) {
  MetricsDaemon m("transaction", 2);
  m.with_lockd();
  m.cfg.db("warm", "{host: 127.0.0.1, port: " + std::to_string(cluster().port()) +
                       ", dbname: app, user: app, password: apppass, min_pool_size: 1}");
  m.cfg.db("cold", "{host: 127.0.0.1, port: " + std::to_string(cluster().port()) +
                       ", dbname: app, user: nobody_here, password: x, min_pool_size: 1}");
  Daemon d(m.cfg);
  START_DAEMON(d);
  std::string r;
  // The warm pool gets its server and every database answers; nobody_here cannot
  // log in, so that pool never gets one.
  ASSERT_TRUE(eventually([&] {
    r = http_get(m.port, "/readyz");
    return !contains(r, "pool warm/app") && !contains(r, "\"database ");
  }, 10000)) << r;
  EXPECT_TRUE(starts_with(r, "HTTP/1.1 503")) << r;
  EXPECT_TRUE(contains(r, "\"pool cold/nobody_here\":\"no live server (min_pool_size 1)\"")) << r;
  EXPECT_FALSE(contains(r, "migrations")) << r;   // an empty directory: current
  // A migration file not applied yet: once lockd has seen it (a status request),
  // pending, and not ready for that reason too.
  write_file(d.dir() + "/V1__first.sql", "CREATE TABLE readyz_m (id int);");
  run_process({daemon_binary(), "ctl", "--socket", d.dir() + "/lockd.sock", "status"}, 10000);
  EXPECT_TRUE(eventually([&] {
    r = http_get(m.port, "/readyz");
    return contains(r, "\"migrations\":\"pending\"");
  }, 15000)) << r;
}

TEST(Metrics, PortInUseFailsStartWithAClearMessage) {
  MetricsDaemon m("session", 2);
  int busy = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(uint16_t(m.port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(busy, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(busy, 1), 0);
  Daemon d(m.cfg);
  EXPECT_FALSE(d.start());
  EXPECT_NE(d.log().find("could not listen for metrics on 127.0.0.1:" + std::to_string(m.port)), std::string::npos)
      << d.log();
  close(busy);
}

TEST(Metrics, PromtoolAcceptsTheScrape) {
  RedisServer redis;
  START_REDIS(redis);
  MetricsDaemon m("transaction", 2);
  m.with_lockd().with_cache(redis.url());
  Daemon d(m.cfg);
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  ASSERT_TRUE(result_of(PQprepare(c.get(), "s", "SELECT 1", 0, nullptr)).ok);
  EXPECT_EQ(exec(c, "SELECT 1/0").sqlstate, "22012");   // an error class appears too
  ASSERT_TRUE(exec(c, "CREATE TEMP TABLE t (i int); INSERT INTO t VALUES (1)").ok);   // an invalidation
  std::string text = m.scrape();
  ProcResult r = run_process({"promtool", "check", "metrics"}, 30000, {}, text);
  EXPECT_EQ(r.exit_code, 0) << r.output << "\n" << text;
  EXPECT_EQ(r.output, "") << "promtool lint findings";
}

// metrics/grafana-dashboard.json is valid JSON and only queries metrics the daemon exports.
TEST(Metrics, DashboardUsesExportedMetrics) {
  std::string path = (std::filesystem::path(__FILE__).parent_path().parent_path().parent_path() / "metrics" /
                      "grafana-dashboard.json").string();
  std::string json = read_file(path);
  ASSERT_FALSE(json.empty()) << path;
  ProcResult valid = run_process({"python3", "-c", "import json,sys; json.load(sys.stdin)"}, 30000, {}, json);
  EXPECT_EQ(valid.exit_code, 0) << valid.output;
  MetricsDaemon m("transaction", 2);
  m.with_lockd().with_cache();
  Daemon d(m.cfg);
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  ASSERT_TRUE(exec(c, "SELECT 1").ok);
  ASSERT_TRUE(exec(c, "CREATE TEMP TABLE t (i int); INSERT INTO t VALUES (1)").ok);   // an invalidation
  ProcResult status = run_process({daemon_binary(), "ctl", "--socket", d.dir() + "/lockd.sock", "status"}, 10000);
  EXPECT_EQ(status.exit_code, 0) << status.output;   // an empty directory: current
  std::string text = m.scrape();
  std::regex name("pgsidecar_[a-z_]+");
  int checked = 0;
  for (auto it = std::sregex_iterator(json.begin(), json.end(), name); it != std::sregex_iterator(); ++it, ++checked) {
    std::string metric = it->str();
    if (metric.size() > 7 && metric.compare(metric.size() - 7, 7, "_bucket") == 0) metric.resize(metric.size() - 7);
    EXPECT_NE(text.find("# TYPE " + metric + " "), std::string::npos) << metric << " is not exported";
  }
  EXPECT_GT(checked, 10);
}

constexpr size_t kCap = metrics::HttpEndpoint::kMaxConnections;
constexpr int kRequestTimeoutMs = int(metrics::HttpEndpoint::kRequestTimeoutMs);

// The cap: idle connections past it are closed at once (after a best-effort
// 503); those within it stay, PostgreSQL clients are served meanwhile, and once
// they are gone scrapes are answered again.
TEST(Metrics, ConnectionsPastTheCapAreRefusedAndScrapesResume) {
  MetricsDaemon m("session", 2);
  Daemon d(m.cfg);
  START_DAEMON(d);
  constexpr size_t kExtra = 4;
  std::vector<int> fds;
  for (size_t i = 0; i < kCap + kExtra; ++i) {
    fds.push_back(tcp_connect(m.port));
    ASSERT_GE(fds.back(), 0) << i;
  }
  // kExtra of them (the last ones, unless the kernel reordered the accept queue) are closed at once.
  std::vector<bool> closed(fds.size());
  size_t n_closed = 0;
  auto t0 = Clock::now();
  while (n_closed < kExtra && ms_since(t0) < 5000) {
    for (size_t i = 0; i < fds.size(); ++i) {
      pollfd p{fds[i], POLLIN, 0};
      if (closed[i] || poll(&p, 1, 0) == 0) continue;
      std::string got;
      closed[i] = wait_eof(fds[i], 1000, &got);
      n_closed += closed[i];
      EXPECT_TRUE(got.empty() || starts_with(got, "HTTP/1.1 503")) << got;
    }
    poll(nullptr, 0, 10);
  }
  EXPECT_EQ(n_closed, kExtra);
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  EXPECT_EQ(exec(c, "SELECT 3").scalar(), "3");
  EXPECT_FALSE(starts_with(http_get(m.port, "/metrics"), "HTTP/1.1 200"));   // still full
  for (size_t i = 0; i < fds.size(); ++i) {
    pollfd p{fds[i], POLLIN, 0};
    if (!closed[i]) {
      EXPECT_EQ(poll(&p, 1, 0), 0) << "connection " << i << " within the cap was closed";
    }
  }
  for (int fd : fds) close(fd);
  EXPECT_TRUE(eventually([&] { return starts_with(http_get(m.port, "/metrics"), "HTTP/1.1 200"); }, 5000));
  EXPECT_EQ(exec(c, "SELECT 4").scalar(), "4");
}

// Half a request, or none: closed by the server after the request timeout,
// with no answer; scrapes and PostgreSQL clients are served meanwhile.
TEST(Metrics, PartialRequestsAreClosedByTheServer) {
  MetricsDaemon m("session", 2);
  Daemon d(m.cfg);
  START_DAEMON(d);
  int half = tcp_connect(m.port), silent = tcp_connect(m.port);
  ASSERT_GE(half, 0);
  ASSERT_GE(silent, 0);
  std::string partial = "GET /metrics HTTP/1.1\r\nHost: localhost\r\n";
  ASSERT_EQ(send(half, partial.data(), partial.size(), MSG_NOSIGNAL), ssize_t(partial.size()));
  EXPECT_TRUE(starts_with(http_get(m.port, "/metrics"), "HTTP/1.1 200"));
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  EXPECT_EQ(exec(c, "SELECT 3").scalar(), "3");
  std::string got_half, got_silent;
  EXPECT_TRUE(wait_eof(half, kRequestTimeoutMs + 20000, &got_half));
  EXPECT_TRUE(wait_eof(silent, kRequestTimeoutMs + 20000, &got_silent));
  EXPECT_EQ(got_half, "");
  EXPECT_EQ(got_silent, "");
  close(half);
  close(silent);
  EXPECT_EQ(exec(c, "SELECT 4").scalar(), "4");
}

TEST(Metrics, OverlongHeaderGets431) {
  MetricsDaemon m("session", 2);
  Daemon d(m.cfg);
  START_DAEMON(d);
  std::string big = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Big: " +
                    std::string(2 * metrics::http::kMaxHeadBytes, 'a') + "\r\n\r\n";
  std::string r = http_exchange(m.port, big);
  EXPECT_TRUE(starts_with(r, "HTTP/1.1 431")) << r.substr(0, 200);
  // Many fields, each small: the same limit.
  std::string many = "GET /metrics HTTP/1.1\r\n";
  for (int i = 0; i < 1000; ++i) many += "X-" + std::to_string(i) + ": v\r\n";
  r = http_exchange(m.port, many + "\r\n");
  EXPECT_TRUE(starts_with(r, "HTTP/1.1 431")) << r.substr(0, 200);
  EXPECT_TRUE(starts_with(http_get(m.port, "/metrics"), "HTTP/1.1 200"));
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  EXPECT_EQ(exec(c, "SELECT 3").scalar(), "3");
}

// Clients that pipeline a flood of requests and read nothing until they are
// done sending: each gets one answer, the rest is read and discarded.
TEST(Metrics, PipelinedFloodsGetOneAnswerEach) {
  MetricsDaemon m("session", 2);
  Daemon d(m.cfg);
  START_DAEMON(d);
  std::string one = "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n", flood;
  while (flood.size() < 256 * 1024) flood += one;
  std::vector<int> fds;
  for (int i = 0; i < 8; ++i) {
    int fd = tcp_connect(m.port);
    ASSERT_GE(fd, 0);
    fds.push_back(fd);
    // Blocking: the server drains what follows the first request once it has answered.
    ASSERT_EQ(send(fd, flood.data(), flood.size(), MSG_NOSIGNAL), ssize_t(flood.size()));
    shutdown(fd, SHUT_WR);
  }
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);
  EXPECT_EQ(exec(c, "SELECT 3").scalar(), "3");
  for (int fd : fds) {
    std::string got;
    EXPECT_TRUE(wait_eof(fd, 30000, &got));
    EXPECT_TRUE(starts_with(got, "HTTP/1.1 200")) << got.substr(0, 200);
    EXPECT_EQ(got.find("HTTP/1.1", 1), std::string::npos) << "more than one answer";
    close(fd);
  }
  EXPECT_TRUE(starts_with(http_get(m.port, "/metrics"), "HTTP/1.1 200"));
}
