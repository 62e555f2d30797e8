// The metrics listener's HTTP layer: parse_request() on byte buffers (split at
// every byte boundary) and format_response(); then HttpEndpoint on a real loop
// with short limits, driven from this thread through non-blocking sockets:
// timeouts, the connection cap, the head limit, one answer per connection.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "metrics/http_endpoint.h"
#include "metrics/http_request.h"

using metrics::HttpEndpoint;
using metrics::http::Parse;
using metrics::http::parse_request;
using metrics::http::ParseResult;

namespace {

const std::string kScrape =
    "GET /metrics HTTP/1.1\r\n"
    "Host: 127.0.0.1:9127\r\n"
    "User-Agent: Prometheus/2.45.0\r\n"
    "Accept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\n"
    "Accept-Encoding: gzip\r\n"
    "X-Prometheus-Scrape-Timeout-Seconds: 10\r\n"
    "\r\n";

bool same(const ParseResult& a, const ParseResult& b) {
  return a.status == b.status && a.head.method == b.head.method && a.head.target == b.head.target &&
         a.head.path == b.head.path && a.head.minor_version == b.head.minor_version && a.head.size == b.head.size;
}

// Every prefix of `bytes` parses as Incomplete or as the whole does, so a reader
// that parses after each read answers the same wherever the reads split.
void expect_split_consistent(const std::string& bytes, size_t max_head = metrics::http::kMaxHeadBytes) {
  ParseResult whole = parse_request(bytes, max_head);
  for (size_t k = 0; k <= bytes.size(); ++k) {
    ParseResult prefix = parse_request(std::string_view(bytes).substr(0, k), max_head);
    if (prefix.status != Parse::Incomplete) {
      EXPECT_TRUE(same(prefix, whole)) << "prefix of " << k << " bytes of " << bytes.size();
      return;
    }
  }
  EXPECT_EQ(whole.status, Parse::Incomplete);
}

Parse status_of(const std::string& bytes, size_t max_head = metrics::http::kMaxHeadBytes) {
  expect_split_consistent(bytes, max_head);
  return parse_request(bytes, max_head).status;
}

}  // namespace

TEST(HttpRequest, ParsesAPrometheusScrape) {
  ParseResult r = parse_request(kScrape);
  ASSERT_EQ(r.status, Parse::Complete);
  EXPECT_EQ(r.head.method, "GET");
  EXPECT_EQ(r.head.target, "/metrics");
  EXPECT_EQ(r.head.path, "/metrics");
  EXPECT_EQ(r.head.minor_version, 1);
  EXPECT_EQ(r.head.size, kScrape.size());
  expect_split_consistent(kScrape);
}

TEST(HttpRequest, EveryStrictPrefixIsIncomplete) {
  for (size_t k = 0; k < kScrape.size(); ++k)
    EXPECT_EQ(parse_request(std::string_view(kScrape).substr(0, k)).status, Parse::Incomplete) << k;
}

TEST(HttpRequest, QueryHttp10AndTrailingBytes) {
  std::string head = "GET /metrics?name[]=up HTTP/1.0\r\n\r\n";
  std::string pipelined = head + "GET /metrics HTTP/1.1\r\n\r\nGARBAGE";
  ParseResult r = parse_request(pipelined);
  ASSERT_EQ(r.status, Parse::Complete);
  EXPECT_EQ(r.head.target, "/metrics?name[]=up");
  EXPECT_EQ(r.head.path, "/metrics");
  EXPECT_EQ(r.head.minor_version, 0);
  EXPECT_EQ(r.head.size, head.size());   // what follows the head is not looked at
  expect_split_consistent(pipelined);
  EXPECT_EQ(status_of("get /x HTTP/1.1\r\nA:\r\n\r\n"), Parse::Complete);   // a token: answered 405, not 400
}

TEST(HttpRequest, MalformedHeads) {
  const char* cases[] = {
      "\r\n",                                        // an empty request line
      " /metrics HTTP/1.1\r\n\r\n",                  // no method
      "GET  /metrics HTTP/1.1\r\n\r\n",              // two spaces
      "GET /metrics  HTTP/1.1\r\n\r\n",
      "GET /metrics\r\n\r\n",                        // HTTP/0.9
      "GET metrics HTTP/1.1\r\n\r\n",                // not origin-form
      "GET http://h/metrics HTTP/1.1\r\n\r\n",
      "GET * HTTP/1.1\r\n\r\n",
      "GET /me\ttrics HTTP/1.1\r\n\r\n",
      "G(T /metrics HTTP/1.1\r\n\r\n",               // not a token
      "GET /metrics HTTP/1.1 \r\n\r\n",
      "GET /metrics HTTP/1.10\r\n\r\n",
      "GET /metrics http/1.1\r\n\r\n",
      "GET /metrics HTTP/1.x\r\n\r\n",
      "GET /metrics HTTP/1.1\n\n",                   // bare LF: at once
      "GET /metrics HTTP/1.1\r\nHost: x\n",
      "GET /metrics HTTP/1.1\r\nHost: x\r\r\n\r\n",  // bare CR
      "GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n",   // space before the colon
      "GET /metrics HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
      "GET /metrics HTTP/1.1\r\nno colon\r\n\r\n",
      "GET /metrics HTTP/1.1\r\n: empty name\r\n\r\n",
      "GET /metrics HTTP/1.1\r\nX: a\x01z\r\n\r\n",
      "GET /metrics HTTP/1.1\r\nX: a\x7fz\r\n\r\n",
  };
  for (const char* c : cases) EXPECT_EQ(status_of(c), Parse::Malformed) << c;
  // Found on a complete line, before the head ends.
  EXPECT_EQ(parse_request("GET /metrics HTTP/1.1\r\nHost : x\r\n").status, Parse::Malformed);
  EXPECT_EQ(parse_request("GET /metrics HTTP/1.1\n").status, Parse::Malformed);
}

TEST(HttpRequest, FieldValuesMayCarryTabsAndObsText) {
  EXPECT_EQ(status_of("GET /metrics HTTP/1.1\r\nX:\tv\xe9 w \r\nEmpty:\r\n\r\n"), Parse::Complete);
}

TEST(HttpRequest, OtherHttpVersions) {
  EXPECT_EQ(status_of("GET /metrics HTTP/2.0\r\n\r\n"), Parse::BadVersion);
  EXPECT_EQ(status_of("GET /metrics HTTP/0.9\r\n\r\n"), Parse::BadVersion);
  EXPECT_EQ(parse_request("GET /metrics HTTP/1.9\r\n\r\n").head.minor_version, 9);
}

TEST(HttpRequest, HeadLimit) {
  std::string prefix = "GET /metrics HTTP/1.1\r\nX: ";
  auto head_of = [&](size_t total) { return prefix + std::string(total - prefix.size() - 4, 'a') + "\r\n\r\n"; };
  EXPECT_EQ(status_of(head_of(100), 100), Parse::Complete);   // exactly the limit
  EXPECT_EQ(status_of(head_of(101), 100), Parse::TooLarge);
  EXPECT_EQ(status_of(prefix + std::string(100, 'a'), 100), Parse::TooLarge);   // no end in sight
  EXPECT_EQ(status_of(std::string(200, 'G'), 100), Parse::TooLarge);            // no line at all
  EXPECT_EQ(parse_request(std::string(99, 'G'), 100).status, Parse::Incomplete);
  EXPECT_EQ(parse_request(head_of(9000)).status, Parse::TooLarge);               // the default, 8 KiB
  EXPECT_EQ(parse_request(head_of(8192)).status, Parse::Complete);
  // A malformed line within the limit is reported as such, even past it.
  EXPECT_EQ(status_of("BAD\r\n" + std::string(200, 'x'), 100), Parse::Malformed);
}

TEST(HttpRequest, FormatsResponses) {
  EXPECT_EQ(metrics::http::format_response(405, "text/plain", "no\n", "Allow: GET\r\n"),
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
            "Connection: close\r\nAllow: GET\r\n\r\nno\n");
  EXPECT_EQ(metrics::http::reason_phrase(431), "Request Header Fields Too Large");
  EXPECT_EQ(metrics::http::reason_phrase(999), "Unknown");
}

// ---------------------------------------------------------------- the endpoint on a loop

namespace {

// A non-blocking client socket on 127.0.0.1.
struct Client {
  int fd = -1;
  std::string got;   // everything read so far
  bool eof = false;  // the server closed (FIN or reset)

  explicit Client(int port) {
    fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(uint16_t(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);   // loopback: at once
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  }
  ~Client() { close(fd); }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Reads what is there; true once the server has closed.
  bool closed() {
    char buf[65536];
    while (!eof) {
      ssize_t n = read(fd, buf, sizeof buf);
      if (n > 0) got.append(buf, size_t(n));
      else if (n == 0 || errno == ECONNRESET) eof = true;
      else break;
    }
    return eof;
  }
  // Sends what the socket takes; returns the bytes sent.
  size_t send_some(std::string_view bytes) {
    ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    return n > 0 ? size_t(n) : 0;
  }
};

class MetricsEndpoint : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(uv_loop_init(&loop_), 0); }
  void TearDown() override {
    ep_.reset();
    uv_run(&loop_, UV_RUN_DEFAULT);   // the closes
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }

  void start(HttpEndpoint::Limits limits, std::function<std::string()> render = [] { return "up 1\n"; }) {
    ep_ = std::make_unique<HttpEndpoint>(&loop_, std::move(render), limits);
    std::string err;
    ASSERT_TRUE(ep_->start("127.0.0.1:0", err)) << err;
    port_ = ep_->port();
    ASSERT_GT(port_, 0);
  }

  // Runs the loop until pred holds; false after max_ms (a bound, not a measurement).
  bool run_until(const std::function<bool()>& pred, int max_ms = 5000) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(max_ms);
    while (!pred()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      uv_run(&loop_, UV_RUN_NOWAIT);
      poll(nullptr, 0, 1);
    }
    return true;
  }

  // The whole exchange: request, then everything until the server closes.
  std::string exchange(const std::string& request) {
    Client c(port_);
    EXPECT_EQ(c.send_some(request), request.size());
    EXPECT_TRUE(run_until([&] { return c.closed(); }));
    return c.got;
  }

  uv_loop_t loop_;
  std::unique_ptr<HttpEndpoint> ep_;
  int port_ = 0;
};

bool starts_with(const std::string& s, std::string_view p) { return s.rfind(p, 0) == 0; }

}  // namespace

TEST_F(MetricsEndpoint, AnswersByPathMethodAndParse) {
  start({});
  std::string ok = exchange("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_TRUE(starts_with(ok, "HTTP/1.1 200 OK\r\n")) << ok;
  EXPECT_NE(ok.find("Content-Type: text/plain; version=0.0.4"), std::string::npos) << ok;
  EXPECT_NE(ok.find("\r\nContent-Length: 5\r\n"), std::string::npos) << ok;
  EXPECT_TRUE(ok.ends_with("\r\n\r\nup 1\n")) << ok;
  EXPECT_TRUE(starts_with(exchange("GET /metrics?x=1 HTTP/1.0\r\n\r\n"), "HTTP/1.1 200 "));
  EXPECT_TRUE(starts_with(exchange("GET / HTTP/1.1\r\n\r\n"), "HTTP/1.1 404 "));
  EXPECT_TRUE(starts_with(exchange("GET /metricsx HTTP/1.1\r\n\r\n"), "HTTP/1.1 404 "));
  std::string post = exchange("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
  EXPECT_TRUE(starts_with(post, "HTTP/1.1 405 ")) << post;
  EXPECT_NE(post.find("\r\nAllow: GET\r\n"), std::string::npos) << post;
  EXPECT_TRUE(starts_with(exchange("GET /metrics HTTP/2.0\r\n\r\n"), "HTTP/1.1 505 "));
  EXPECT_TRUE(starts_with(exchange("GET /metrics HTTP/1.1\n\n"), "HTTP/1.1 400 "));
  EXPECT_TRUE(starts_with(exchange(std::string("\x16\x03\x01\x02\x00\x01\xfc\x03\x03\r\n", 11)), "HTTP/1.1 400 "));
  EXPECT_TRUE(run_until([&] { return ep_->connections() == 0; }));
}

TEST_F(MetricsEndpoint, OversizedHeadGets431) {
  start({.max_head_bytes = 1024});
  std::string big = "GET /metrics HTTP/1.1\r\nX: " + std::string(4000, 'a') + "\r\n\r\n";
  std::string r = exchange(big);   // read in full and discarded after the answer: no reset
  EXPECT_TRUE(starts_with(r, "HTTP/1.1 431 ")) << r;
  EXPECT_TRUE(run_until([&] { return ep_->connections() == 0; }));
}

TEST_F(MetricsEndpoint, PartialAndSilentRequestsAreClosedAfterTheRequestTimeout) {
  start({.request_timeout_ms = 50});
  Client half(port_), silent(port_);
  EXPECT_GT(half.send_some("GET /metrics HTTP/1.1\r\nHost: x\r\n"), 0u);
  EXPECT_TRUE(run_until([&] { return half.closed() && silent.closed(); }));
  EXPECT_EQ(half.got, "");
  EXPECT_EQ(silent.got, "");
  EXPECT_EQ(ep_->connections(), 0u);
}

TEST_F(MetricsEndpoint, CapRefusesConnectionsPastItAndRecovers) {
  start({.max_connections = 2});
  Client a(port_), b(port_);
  ASSERT_TRUE(run_until([&] { return ep_->connections() == 2; }));
  Client extra(port_);
  ASSERT_TRUE(run_until([&] { return extra.closed(); }));
  EXPECT_TRUE(extra.got.empty() || starts_with(extra.got, "HTTP/1.1 503 ")) << extra.got;
  EXPECT_FALSE(a.closed());
  EXPECT_FALSE(b.closed());
  EXPECT_EQ(ep_->connections(), 2u);
  // The ones held are still served; once one is gone a new one is too.
  a.send_some("GET /metrics HTTP/1.1\r\n\r\n");
  ASSERT_TRUE(run_until([&] { return a.closed(); }));
  EXPECT_TRUE(starts_with(a.got, "HTTP/1.1 200 ")) << a.got;
  shutdown(a.fd, SHUT_WR);   // the server drains until the client is done too
  ASSERT_TRUE(run_until([&] { return ep_->connections() == 1; }));
  EXPECT_TRUE(starts_with(exchange("GET /metrics HTTP/1.1\r\n\r\n"), "HTTP/1.1 200 "));
  EXPECT_FALSE(b.closed());
}

// A pipelined flood gets one answer (rendered once) and is read and discarded,
// not buffered: the connection closes once the client stops sending.
TEST_F(MetricsEndpoint, PipelinedFloodGetsOneAnswer) {
  int renders = 0;
  start({}, [&] { return ++renders, std::string("up 1\n"); });
  Client c(port_);
  std::string one = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", flood;
  for (int i = 0; i < 4096; ++i) flood += one;   // 140 KiB
  std::string_view left = flood;
  ASSERT_TRUE(run_until([&] {
    left.remove_prefix(c.send_some(left));
    return left.empty();
  }));
  shutdown(c.fd, SHUT_WR);
  ASSERT_TRUE(run_until([&] { return c.closed(); }));
  EXPECT_EQ(renders, 1);
  EXPECT_TRUE(starts_with(c.got, "HTTP/1.1 200 ")) << c.got.substr(0, 200);
  EXPECT_EQ(c.got.find("HTTP/1.1", 1), std::string::npos);
  EXPECT_TRUE(run_until([&] { return ep_->connections() == 0; }));
}

// A client that never reads a large answer holds that one answer until the
// response timeout closes it.
TEST_F(MetricsEndpoint, NonReadingClientIsClosedAfterTheResponseTimeout) {
  start({.response_timeout_ms = 100}, [] { return std::string(16 << 20, 'x'); });
  Client c(port_);
  c.send_some("GET /metrics HTTP/1.1\r\n\r\n");
  EXPECT_TRUE(run_until([&] { return ep_->connections() == 0; }));
  EXPECT_TRUE(run_until([&] { return c.closed(); }));   // what the socket buffers held, then the close
  EXPECT_LT(c.got.size(), size_t(16 << 20));
}

// A client that takes its answer but keeps the connection open is closed after
// the drain timeout.
TEST_F(MetricsEndpoint, ClientThatKeepsTheConnectionIsClosedAfterTheDrainTimeout) {
  start({.drain_timeout_ms = 50});
  Client c(port_);
  c.send_some("GET /metrics HTTP/1.1\r\n\r\n");
  ASSERT_TRUE(run_until([&] { return c.closed(); }));   // the answer and the server's FIN
  EXPECT_TRUE(starts_with(c.got, "HTTP/1.1 200 ")) << c.got;
  EXPECT_TRUE(run_until([&] { return ep_->connections() == 0; }));
}

TEST_F(MetricsEndpoint, StopClosesOpenConnections) {
  start({});
  Client a(port_), b(port_);
  ASSERT_TRUE(run_until([&] { return ep_->connections() == 2; }));
  b.send_some("GET /met");
  ep_->stop();
  EXPECT_EQ(ep_->connections(), 0u);
  EXPECT_EQ(ep_->port(), 0);
  EXPECT_TRUE(run_until([&] { return a.closed() && b.closed(); }));
}
