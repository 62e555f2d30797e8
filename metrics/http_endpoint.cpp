#include "metrics/http_endpoint.h"

#include <cstring>

#include "conf/log.h"

namespace metrics {

// One scrape connection: reads the request head, writes the answer, closes.
struct HttpEndpoint::Request {
  static constexpr size_t kMaxHead = 8192;
  uv_tcp_t tcp;
  uv_write_t write;
  HttpEndpoint* owner;
  std::string in, out;
  char buf[1024];
};

namespace {

void close_request(uv_handle_t* h) {
  uv_close(h, [](uv_handle_t* handle) { delete static_cast<HttpEndpoint::Request*>(handle->data); });
}

}  // namespace

bool HttpEndpoint::start(const std::string& listen, std::string& err) {
  size_t colon = listen.rfind(':');
  std::string host = colon == std::string::npos ? "" : listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  int port = colon == std::string::npos ? 0 : std::atoi(listen.c_str() + colon + 1);
  sockaddr_storage addr{};
  if (uv_ip4_addr(host.c_str(), port, reinterpret_cast<sockaddr_in*>(&addr)) != 0 &&
      uv_ip6_addr(host.c_str(), port, reinterpret_cast<sockaddr_in6*>(&addr)) != 0) {
    err = "metrics listen address '" + listen + "' is not an IP address and port";
    return false;
  }
  listener_ = new uv_tcp_t;
  uv_tcp_init(loop_, listener_);
  listener_->data = this;
  int rc = uv_tcp_bind(listener_, reinterpret_cast<sockaddr*>(&addr), 0);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(listener_), 64, on_connection);
  if (rc != 0) {
    err = "could not listen for metrics on " + listen + ": " + uv_strerror(rc);
    stop();
    return false;
  }
  LOG_INFO("metrics on http://%s/metrics", listen.c_str());
  return true;
}

void HttpEndpoint::stop() {
  if (!listener_) return;
  uv_close(reinterpret_cast<uv_handle_t*>(listener_), [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
  listener_ = nullptr;
}

void HttpEndpoint::on_connection(uv_stream_t* server, int status) {
  if (status < 0) return;
  auto* self = static_cast<HttpEndpoint*>(server->data);
  auto* r = new Request;
  r->owner = self;
  uv_tcp_init(self->loop_, &r->tcp);
  r->tcp.data = r;
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&r->tcp)) != 0) return close_request(reinterpret_cast<uv_handle_t*>(&r->tcp));
  uv_read_start(
      reinterpret_cast<uv_stream_t*>(&r->tcp),
      [](uv_handle_t* h, size_t, uv_buf_t* b) {
        auto* req = static_cast<Request*>(h->data);
        *b = uv_buf_init(req->buf, sizeof req->buf);
      },
      [](uv_stream_t* s, ssize_t n, const uv_buf_t* b) {
        auto* req = static_cast<Request*>(s->data);
        if (n < 0) return close_request(reinterpret_cast<uv_handle_t*>(s));
        req->in.append(b->base, size_t(n));
        if (req->in.find("\r\n\r\n") == std::string::npos && req->in.size() < Request::kMaxHead) return;
        uv_read_stop(s);
        req->owner->respond(req);
      });
}

void HttpEndpoint::respond(Request* r) {
  std::string status = "404 Not Found", body = "only GET /metrics is served here\n";
  if (r->in.size() >= Request::kMaxHead) {
    status = "431 Request Header Fields Too Large";
    body = "request head too large\n";
  } else if (r->in.rfind("GET /metrics ", 0) == 0 || r->in.rfind("GET /metrics?", 0) == 0) {
    status = "200 OK";
    body = render_();
  }
  r->out = "HTTP/1.1 " + status + "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
  uv_buf_t buf = uv_buf_init(r->out.data(), unsigned(r->out.size()));
  r->write.data = r;
  int rc = uv_write(&r->write, reinterpret_cast<uv_stream_t*>(&r->tcp), &buf, 1, [](uv_write_t* w, int) {
    close_request(reinterpret_cast<uv_handle_t*>(&static_cast<Request*>(w->data)->tcp));
  });
  if (rc != 0) close_request(reinterpret_cast<uv_handle_t*>(&r->tcp));
}

}  // namespace metrics
