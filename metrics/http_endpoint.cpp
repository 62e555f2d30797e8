#include "metrics/http_endpoint.h"

#include <netinet/in.h>

#include <utility>

#include "conf/log.h"

namespace metrics {

namespace {

constexpr std::string_view kPrometheusText = "text/plain; version=0.0.4; charset=utf-8";
constexpr std::string_view kPlainText = "text/plain; charset=utf-8";

// Heads that get no route: what each parse failure is answered with.
struct Refusal {
  http::Parse parse;
  int status;
  std::string_view body;
};
constexpr Refusal kRefusals[] = {
    {http::Parse::TooLarge, 431, "request head too large\n"},
    {http::Parse::Malformed, 400, "malformed request\n"},
    {http::Parse::BadVersion, 505, "only HTTP/1.x is served here\n"},
};

}  // namespace

// One scrape connection: reads the request head (into `in`, at most
// max_head_bytes), writes one answer, shuts down its side, then reads and
// discards until the peer closes (so unread bytes do not turn the close into a
// reset that could cut the answer short). The timer bounds every phase.
struct HttpEndpoint::Conn {
  HttpEndpoint* owner;   // null when not counted (refused) or after stop()
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_write_t write;
  uv_shutdown_t shutdown;
  std::string in;        // request bytes; sized to the head limit when reading starts
  size_t used = 0;
  std::string out;       // the one answer
  bool draining = false; // answer written: discard whatever comes
  bool closing = false;
  int open_handles = 2;  // tcp and timer; deleted when both are closed

  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&tcp); }

  void close() {
    if (closing) return;
    closing = true;
    if (owner) owner->forget(this);
    auto closed = [](uv_handle_t* h) {
      auto* c = static_cast<Conn*>(h->data);
      if (--c->open_handles == 0) delete c;
    };
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp), closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer), closed);
  }

  void arm(uint64_t ms) {
    uv_timer_start(&timer, [](uv_timer_t* t) { static_cast<Conn*>(t->data)->close(); }, ms, 0);
  }

  // Reading the head: into `in` after what came before, never past the limit
  // (a full buffer parses as complete or too large). Draining: over `in`.
  static void alloc(uv_handle_t* h, size_t, uv_buf_t* b) {
    auto* c = static_cast<Conn*>(h->data);
    if (c->in.empty()) c->in.resize(c->owner->limits_.max_head_bytes);
    size_t at = c->draining ? 0 : c->used;
    *b = uv_buf_init(c->in.data() + at, unsigned(c->in.size() - at));
  }

  static void read(uv_stream_t* s, ssize_t n, const uv_buf_t*) {
    auto* c = static_cast<Conn*>(s->data);
    if (n < 0) return c->close();   // EOF or error: nothing (more) to answer
    if (c->draining || n == 0) return;
    c->used += size_t(n);
    http::ParseResult parsed = http::parse_request({c->in.data(), c->used}, c->owner->limits_.max_head_bytes);
    if (parsed.status == http::Parse::Incomplete) return;   // below the limit: room left to read into
    uv_read_stop(s);
    c->owner->on_head(c, parsed);
  }
};

HttpEndpoint::HttpEndpoint(uv_loop_t* loop, Render render) : HttpEndpoint(loop, std::move(render), Limits{}) {}

HttpEndpoint::HttpEndpoint(uv_loop_t* loop, Render render, Limits limits)
    : loop_(loop), render_(std::move(render)), limits_(limits) {
  routes_.push_back({"/metrics", [this] { return Reply{200, render_(), kPrometheusText}; }});
}

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
  if (listener_) {
    uv_close(reinterpret_cast<uv_handle_t*>(listener_), [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
    listener_ = nullptr;
  }
  auto open = std::move(conns_);
  conns_.clear();
  for (Conn* c : open) {
    c->owner = nullptr;
    c->close();
  }
}

void HttpEndpoint::forget(Conn* c) {
  conns_.erase(c);
  if (conns_.size() < limits_.max_connections) full_ = false;
}

int HttpEndpoint::port() const {
  sockaddr_storage addr{};
  int len = sizeof addr;
  if (!listener_ || uv_tcp_getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return 0;
  if (addr.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
  return ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
}

void HttpEndpoint::on_connection(uv_stream_t* server, int status) {
  if (status < 0) return;
  auto* self = static_cast<HttpEndpoint*>(server->data);
  auto* c = new Conn;
  c->owner = nullptr;
  uv_tcp_init(self->loop_, &c->tcp);
  uv_timer_init(self->loop_, &c->timer);
  c->tcp.data = c->timer.data = c;
  // Accepted in any case: libuv stops watching the listener while a connection waits.
  if (uv_accept(server, c->stream()) != 0) return c->close();
  if (self->conns_.size() >= self->limits_.max_connections) {
    // Best effort: the answer fits any fresh socket buffer, but a request already
    // received makes the close a reset that may discard it.
    static const std::string busy = http::format_response(503, kPlainText, "too many metrics connections\n");
    uv_buf_t b = uv_buf_init(const_cast<char*>(busy.data()), unsigned(busy.size()));
    uv_try_write(c->stream(), &b, 1);
    if (!std::exchange(self->full_, true))
      LOG_WARN("metrics: %zu connections open, refusing new ones until one closes", self->conns_.size());
    return c->close();
  }
  c->owner = self;
  self->conns_.insert(c);
  c->arm(self->limits_.request_timeout_ms);
  uv_read_start(c->stream(), Conn::alloc, Conn::read);
}

HttpEndpoint::Reply HttpEndpoint::answer(const http::ParseResult& parsed) const {
  for (const Refusal& r : kRefusals)
    if (r.parse == parsed.status) return {r.status, std::string(r.body), kPlainText};
  for (const Route& route : routes_) {
    if (route.path != parsed.head.path) continue;
    if (parsed.head.method != "GET") return {405, "only GET is served here\n", kPlainText};
    return route.handler();
  }
  return {404, "not found; GET /metrics, /healthz and /readyz are served here\n", kPlainText};
}

// A complete head or a refusal: write the answer and shut down; drain until the peer closes.
void HttpEndpoint::on_head(Conn* c, const http::ParseResult& parsed) {
  Reply reply = answer(parsed);
  c->out = http::format_response(reply.status, reply.content_type, reply.body,
                                 reply.status == 405 ? "Allow: GET\r\n" : "");
  c->arm(limits_.response_timeout_ms);
  uv_buf_t buf = uv_buf_init(c->out.data(), unsigned(c->out.size()));
  c->write.data = c->shutdown.data = c;
  int rc = uv_write(&c->write, c->stream(), &buf, 1, [](uv_write_t* req, int status) {
    if (status < 0) static_cast<Conn*>(req->data)->close();
  });
  if (rc == 0) {
    rc = uv_shutdown(&c->shutdown, c->stream(), [](uv_shutdown_t* req, int status) {
      auto* conn = static_cast<Conn*>(req->data);
      if (status < 0) return conn->close();
      conn->draining = true;
      conn->arm(conn->owner->limits_.drain_timeout_ms);
      uv_read_start(conn->stream(), Conn::alloc, Conn::read);
    });
  }
  if (rc != 0) c->close();
}

}  // namespace metrics
