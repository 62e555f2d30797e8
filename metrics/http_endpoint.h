// A minimal HTTP/1.x endpoint on the event loop for Prometheus scrapes and probes:
// `GET /metrics` is answered with render(), other paths by their route(); one
// request per connection.
// Serving on the loop keeps every metric on one thread (no exporter threads
// reading what the loop writes).
//
// Bounded by Limits: at most max_connections connections (past that a new one
// gets a best-effort 503 and is closed at once), at most max_head_bytes of
// request head buffered per connection (then 431), request_timeout to send a
// complete head, response_timeout to take the answer, drain_timeout to close
// after it (then closed by the server). Once a head is complete nothing more is
// read until the answer is written, and what comes after it is discarded, so a
// client that pipelines requests or never reads holds at most one response.
#pragma once
#include <uv.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "metrics/http_request.h"

namespace metrics {

class HttpEndpoint {
 public:
  static constexpr size_t kMaxConnections = 64;
  static constexpr uint64_t kRequestTimeoutMs = 10'000;    // accept -> complete request head
  static constexpr uint64_t kResponseTimeoutMs = 30'000;   // complete head -> answer written
  static constexpr uint64_t kDrainTimeoutMs = 2'000;       // answer written -> peer closes

  struct Limits {
    size_t max_connections = kMaxConnections;
    size_t max_head_bytes = http::kMaxHeadBytes;
    uint64_t request_timeout_ms = kRequestTimeoutMs;
    uint64_t response_timeout_ms = kResponseTimeoutMs;
    uint64_t drain_timeout_ms = kDrainTimeoutMs;
  };

  // What a route answers: status, body and its content type.
  struct Reply {
    int status = 200;
    std::string body;
    std::string_view content_type = "text/plain; charset=utf-8";
  };
  using Render = std::function<std::string()>;

  HttpEndpoint(uv_loop_t* loop, Render render);   // the default Limits
  HttpEndpoint(uv_loop_t* loop, Render render, Limits limits);
  ~HttpEndpoint() { stop(); }
  HttpEndpoint(const HttpEndpoint&) = delete;
  HttpEndpoint& operator=(const HttpEndpoint&) = delete;

  // listen is "host:port" (IPv4 or [IPv6]); false and err if it cannot listen.
  bool start(const std::string& listen, std::string& err);
  // Stops listening and closes every open connection.
  void stop();

  // Adds GET path (before start()); /metrics is there from the start.
  void route(std::string_view path, std::function<Reply()> handler) { routes_.push_back({path, std::move(handler)}); }

  int port() const;                                      // the bound port (listen port 0: the one picked), 0 if stopped
  size_t connections() const { return conns_.size(); }   // open scrape connections

  struct Conn;   // one scrape connection (defined in the .cpp)

 private:
  // GET paths and what they answer (the path's text must outlive the endpoint).
  struct Route {
    std::string_view path;
    std::function<Reply()> handler;
  };

  static void on_connection(uv_stream_t* server, int status);
  void on_head(Conn* c, const http::ParseResult& parsed);
  Reply answer(const http::ParseResult& parsed) const;
  void forget(Conn* c);

  uv_loop_t* loop_;
  Render render_;
  Limits limits_;
  std::vector<Route> routes_;
  uv_tcp_t* listener_ = nullptr;   // heap: closed asynchronously
  std::unordered_set<Conn*> conns_;
  bool full_ = false;   // refusing since the last warning; logged once per stretch
};

}  // namespace metrics
