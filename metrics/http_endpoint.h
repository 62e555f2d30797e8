// A minimal HTTP/1.x endpoint on the event loop for Prometheus scrapes:
// `GET /metrics` is answered with render(), anything else with 404; one request
// per connection. Serving on the loop keeps every metric on one thread (no
// exporter threads reading what the loop writes).
#pragma once
#include <uv.h>

#include <functional>
#include <memory>
#include <string>

namespace metrics {

class HttpEndpoint {
 public:
  using Render = std::function<std::string()>;
  HttpEndpoint(uv_loop_t* loop, Render render) : loop_(loop), render_(std::move(render)) {}
  ~HttpEndpoint() { stop(); }
  HttpEndpoint(const HttpEndpoint&) = delete;
  HttpEndpoint& operator=(const HttpEndpoint&) = delete;

  // listen is "host:port" (IPv4 or [IPv6]); false and err if it cannot listen.
  bool start(const std::string& listen, std::string& err);
  void stop();

  struct Request;   // one scrape connection (defined in the .cpp)

 private:
  static void on_connection(uv_stream_t* server, int status);
  void respond(Request* r);

  uv_loop_t* loop_;
  Render render_;
  uv_tcp_t* listener_ = nullptr;   // heap: closed asynchronously
};

}  // namespace metrics
