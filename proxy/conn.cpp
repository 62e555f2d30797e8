#include "proxy/conn.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

namespace proxy {
namespace {
// Shared by every connection on the loop: a read lands here and is processed before
// the next read can start, so one buffer serves all (the loop is single-threaded).
constexpr size_t kScratchLen = 64 * 1024;
uint8_t g_scratch[kScratchLen];
// TLS: ciphertext is read into g_scratch and decrypted here (or after unread bytes in own_).
constexpr size_t kPlainLen = 64 * 1024, kMinRoom = 16 * 1024 + 256;   // room for a whole TLS record
uint8_t g_plain[kPlainLen];
}  // namespace

Conn::Conn(uv_loop_t* loop) : loop_(loop) { h_.handle.data = this; }

std::pair<std::string, int> Conn::address(bool peer) const {
  if (!initialized_) return {"", 0};
  if (h_.handle.type != UV_TCP) return {"unix", 0};
  sockaddr_storage ss{};
  int len = sizeof ss;
  auto* tcp = const_cast<uv_tcp_t*>(&h_.tcp);
  int rc = peer ? uv_tcp_getpeername(tcp, reinterpret_cast<sockaddr*>(&ss), &len)
                : uv_tcp_getsockname(tcp, reinterpret_cast<sockaddr*>(&ss), &len);
  if (rc != 0) return {"", 0};
  char ip[64] = "";
  if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    uv_ip6_name(a, ip, sizeof ip);
    return {ip, ntohs(a->sin6_port)};
  }
  auto* a = reinterpret_cast<sockaddr_in*>(&ss);
  uv_ip4_name(a, ip, sizeof ip);
  return {ip, ntohs(a->sin_port)};
}

int Conn::init_tcp() {
  int rc = uv_tcp_init(loop_, &h_.tcp);
  h_.handle.data = this;
  initialized_ = rc == 0;
  return rc;
}

void Conn::set_keepalive(bool on, int idle_s, int interval_s, int count) {
  if (!initialized_ || h_.handle.type != UV_TCP) return;
  uv_tcp_keepalive(&h_.tcp, on ? 1 : 0, unsigned(idle_s));
  uv_os_fd_t fd;
  if (!on || uv_fileno(&h_.handle, &fd) != 0) return;
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval_s, sizeof interval_s);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
}

int Conn::init_pipe() {
  int rc = uv_pipe_init(loop_, &h_.pipe, 0);
  h_.handle.data = this;
  initialized_ = rc == 0;
  return rc;
}

void Conn::connect(const std::string& host, int port) {
  connecting_ = std::make_unique<Connecting>();
  connecting_->req.data = this;
  connecting_->port = port;
  uv_connect_t* req = &connecting_->req;
  if (!host.empty() && host[0] == '/') {
    if (int rc = init_pipe(); rc != 0) return on_connected(rc);
    std::string path = host + "/.s.PGSQL." + std::to_string(port);
    uv_pipe_connect(req, &h_.pipe, path.c_str(), connect_cb);
    return;
  }
  if (int rc = init_tcp(); rc != 0) return on_connected(rc);
  sockaddr_storage addr{};
  if (uv_ip4_addr(host.c_str(), port, reinterpret_cast<sockaddr_in*>(&addr)) == 0 ||
      uv_ip6_addr(host.c_str(), port, reinterpret_cast<sockaddr_in6*>(&addr)) == 0) {
    if (int rc = uv_tcp_connect(req, &h_.tcp, reinterpret_cast<sockaddr*>(&addr), connect_cb); rc != 0)
      on_connected(rc);
    return;
  }
  auto* lookup = new uv_getaddrinfo_t;
  lookup->data = this;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  resolving_ = true;
  if (int rc = uv_getaddrinfo(loop_, lookup, resolved_cb, host.c_str(), nullptr, &hints); rc != 0) {
    resolving_ = false;
    delete lookup;
    on_connected(rc);
  }
}

void Conn::resolved_cb(uv_getaddrinfo_t* req, int status, addrinfo* res) {
  auto* c = static_cast<Conn*>(req->data);
  delete req;
  c->resolving_ = false;
  if (c->closing_) {   // close() was deferred until the lookup finished
    if (res) uv_freeaddrinfo(res);
    c->finish_close();
    return;
  }
  if (status != 0 || !res) {
    if (res) uv_freeaddrinfo(res);
    c->on_connected(status != 0 ? status : UV_EAI_NONAME);
    return;
  }
  sockaddr_storage addr{};
  std::memcpy(&addr, res->ai_addr, res->ai_addrlen);
  uv_freeaddrinfo(res);
  reinterpret_cast<sockaddr_in*>(&addr)->sin_port = htons(uint16_t(c->connecting_->port));   // same offset for v6
  if (int rc = uv_tcp_connect(&c->connecting_->req, &c->h_.tcp, reinterpret_cast<sockaddr*>(&addr), connect_cb); rc != 0)
    c->on_connected(rc);
}

void Conn::connect_cb(uv_connect_t* req, int status) {
  auto* c = static_cast<Conn*>(req->data);
  c->connecting_.reset();   // req is done with (libuv reports a close while connecting here too)
  if (c->closing_) return;
  if (status == 0 && c->h_.handle.type == UV_TCP) uv_tcp_nodelay(&c->h_.tcp, 1);
  c->on_connected(status);
}

void Conn::read_start() {
  if (reading_ || closing_ || close_when_flushed_) return;
  if (uv_read_start(&h_.stream, alloc_cb, read_cb) == 0) reading_ = true;
}

void Conn::read_stop() {
  if (!reading_) return;
  uv_read_stop(&h_.stream);
  reading_ = false;
}

void Conn::alloc_cb(uv_handle_t* h, size_t, uv_buf_t* buf) {
  auto* c = static_cast<Conn*>(h->data);
  if (c->tls_) {   // ciphertext: consumed by tls_input() before the next read
    *buf = uv_buf_init(reinterpret_cast<char*>(g_scratch), kScratchLen);
    return;
  }
  if (c->rpos_ >= c->own_len_) {
    c->rpos_ = c->own_len_ = c->view_len_ = 0;
    *buf = uv_buf_init(reinterpret_cast<char*>(g_scratch), kScratchLen);
    return;
  }
  // Unread bytes are pending (a partial message): append to them so the message
  // becomes contiguous, after moving them to the front.
  if (c->rpos_ > 0) {
    std::memmove(c->own_.data(), c->own_.data() + c->rpos_, c->own_len_ - c->rpos_);
    c->own_len_ -= c->rpos_;
    c->rpos_ = 0;
  }
  size_t want = std::max<size_t>(c->own_len_ + 16 * 1024, 32 * 1024);
  if (c->own_.size() < want) c->own_.resize(std::max(want, c->own_.size() * 2));
  c->view_ = c->own_.data();   // the vector may have moved
  c->view_len_ = c->own_len_;
  *buf = uv_buf_init(reinterpret_cast<char*>(c->own_.data() + c->own_len_), unsigned(c->own_.size() - c->own_len_));
}

void Conn::read_cb(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  auto* c = static_cast<Conn*>(s->data);
  if (nread == 0 || c->closing_) return;
  if (nread < 0) {
    c->read_stop();
    c->on_read_end(int(nread));
    return;
  }
  if (c->tls_) {
    c->tls_input(reinterpret_cast<const uint8_t*>(buf->base), size_t(nread));
    return;
  }
  if (reinterpret_cast<uint8_t*>(buf->base) == g_scratch) {
    c->view_ = g_scratch;
    c->view_len_ = size_t(nread);
    c->rpos_ = 0;
  } else {
    c->own_len_ += size_t(nread);
    c->view_ = c->own_.data();
    c->view_len_ = c->own_len_;
  }
  c->on_read();
  c->keep_unread();
}

// After a read: what on_read() left unconsumed in the scratch buffer moves to the
// connection's own buffer. Invariant outside read_cb: view_ is own_, unread bytes
// are own_[rpos_, own_len_), and in_consume() may advance rpos_ at any time.
void Conn::keep_unread() {
  if (view_ == g_scratch || view_ == g_plain) {
    size_t left = view_len_ - rpos_;
    if (left) {
      if (own_.size() < left) own_.resize(std::max<size_t>(left, 4096));
      std::memcpy(own_.data(), view_ + rpos_, left);
    }
    own_len_ = left;
    rpos_ = 0;
  }
  if (rpos_ >= own_len_) {
    rpos_ = own_len_ = 0;
    if (own_.capacity() > 256 * 1024) std::vector<uint8_t>().swap(own_);
  }
  view_ = own_.data();
  view_len_ = own_len_;
}

bool Conn::send(std::string_view bytes) {
  uv_buf_t b = uv_buf_init(const_cast<char*>(bytes.data()), unsigned(bytes.size()));
  return send(&b, 1);
}

bool Conn::send(const uv_buf_t* bufs, unsigned n) {
  if (closing_ || !initialized_) return false;
  return tls_ ? tls_send(bufs, n) : raw_send(bufs, n);
}

bool Conn::raw_send(const uv_buf_t* bufs, unsigned n) {
  size_t skip = 0;
  if (queued() == 0) {
    int rc = uv_try_write(&h_.stream, bufs, n);
    if (rc < 0 && rc != UV_EAGAIN) {
      close();
      return false;
    }
    skip = rc > 0 ? size_t(rc) : 0;
  }
  for (unsigned i = 0; i < n; i++) {
    size_t len = bufs[i].len;
    if (skip >= len) { skip -= len; continue; }
    if (!wq_) wq_ = std::make_unique<WriteQueue>();
    wq_->pending.append(bufs[i].base + skip, len - skip);
    skip = 0;
  }
  if (wq_ && !wq_->pending.empty() && wq_->inflight.empty()) start_write();
  if (over_high_water()) high_ = true;
  return true;
}

bool Conn::start_tls(const tls::ContextPtr& ctx, const std::string& host, std::string_view early) {
  auto stream = std::make_unique<tls::Stream>(ctx, host);
  if (!stream->ok()) return false;
  tls_ = std::move(stream);
  std::string copy(early);   // early may lie in the buffers plaintext is about to be written to
  tls_input(reinterpret_cast<const uint8_t*>(copy.data()), copy.size());   // toward a server: the ClientHello
  return true;
}

// Small pieces are gathered so that a batch of messages makes one TLS record.
bool Conn::tls_send(const uv_buf_t* bufs, unsigned n) {
  if (!tls_->handshake_done()) {   // nothing can be said before the handshake: give up on the peer
    close();
    return false;
  }
  uint8_t gather[16 * 1024];
  size_t used = 0;
  bool ok = true;
  for (unsigned i = 0; i < n && ok; i++) {
    const auto* p = reinterpret_cast<const uint8_t*>(bufs[i].base);
    size_t len = bufs[i].len;
    if (used + len > sizeof gather && used > 0) {
      ok = tls_->write(gather, used);
      used = 0;
    }
    if (len >= sizeof gather) {
      ok = ok && tls_->write(p, len);
    } else {
      std::memcpy(gather + used, p, len);
      used += len;
    }
  }
  if (ok && used > 0) ok = tls_->write(gather, used);
  if (!ok) {
    tls::Stream::output().clear();
    close();
    return false;
  }
  return flush_tls();
}

// Sends the ciphertext the last TLS call produced.
bool Conn::flush_tls() {
  std::string& out = tls::Stream::output();
  if (out.empty()) return true;
  uv_buf_t b = uv_buf_init(out.data(), unsigned(out.size()));
  bool ok = closing_ ? false : raw_send(&b, 1);
  out.clear();
  if (out.capacity() > 1024 * 1024) std::string().swap(out);
  return ok;
}

// Ciphertext read from the socket: the handshake, then every whole record is
// decrypted, after the unread bytes in own_ or into g_plain when there are none,
// and handed to on_read() as one read would be.
void Conn::tls_input(const uint8_t* p, size_t n) {
  tls_->input(p, n);
  if (!tls_->handshake_done()) {
    tls::Stream::Step step = tls_->handshake();
    flush_tls();
    if (closing_ || step == tls::Stream::Step::More) return;
    if (step == tls::Stream::Step::Failed) {
      read_stop();
      on_tls_failed(tls_->error());
      return;
    }
    on_tls_ready();
    if (closing_) return;
  }
  bool in_own = rpos_ < own_len_;
  size_t len = 0;
  if (in_own) {
    std::memmove(own_.data(), own_.data() + rpos_, own_len_ - rpos_);
    len = own_len_ - rpos_;
  }
  rpos_ = own_len_ = 0;
  long got = 0;
  for (;;) {   // bounded: the input is finite and every round consumes some or ends
    uint8_t* dst = g_plain;
    size_t cap = kPlainLen;
    if (!in_own && cap - len < kMinRoom) {
      if (own_.size() < len + 2 * kMinRoom) own_.resize(len + 2 * kMinRoom);
      std::memcpy(own_.data(), g_plain, len);
      in_own = true;
    }
    if (in_own) {
      if (own_.size() - len < kMinRoom) own_.resize(std::max(len + 2 * kMinRoom, own_.size() * 2));
      dst = own_.data();
      cap = own_.size();
    }
    got = tls_->read(dst + len, cap - len);
    if (got <= 0) break;
    len += size_t(got);
  }
  flush_tls();
  if (in_own) own_len_ = len;
  view_ = in_own ? own_.data() : g_plain;
  view_len_ = len;
  if (len > 0 && !closing_) on_read();
  keep_unread();
  if (got < 0 && !closing()) {
    read_stop();
    on_read_end(UV_EOF);
  }
}

void Conn::start_write() {
  wq_->inflight.swap(wq_->pending);
  uv_buf_t b = uv_buf_init(wq_->inflight.data(), unsigned(wq_->inflight.size()));
  wq_->req.data = this;
  if (uv_write(&wq_->req, &h_.stream, &b, 1, write_cb) != 0) {
    wq_->inflight.clear();
    close();
  }
}

void Conn::write_cb(uv_write_t* req, int status) {
  auto* c = static_cast<Conn*>(req->data);
  WriteQueue& q = *c->wq_;
  q.inflight.clear();
  if (status < 0) {
    c->close();
    return;
  }
  if (c->closing_) return;
  if (!q.pending.empty()) {
    c->start_write();
  } else {
    c->wq_.reset();   // drained: an idle connection keeps no queue (libuv is done with req)
    if (c->close_when_flushed_) {
      c->close();
      return;
    }
  }
  if (c->high_ && c->queued() < kLowWater) {
    c->high_ = false;
    c->on_drained();
  }
}

void Conn::close_after_flush() {
  if (queued() == 0) close();
  else {
    close_when_flushed_ = true;
    read_stop();
  }
}

void Conn::close() {
  if (closing_) return;
  closing_ = true;
  read_stop();
  if (!resolving_) finish_close();
}

void Conn::finish_close() {
  if (!initialized_) {
    // Never became a libuv handle: nothing to wait for, but still defer the delete.
    auto* idle = new uv_idle_t;
    uv_idle_init(loop_, idle);
    idle->data = this;
    uv_idle_start(idle, [](uv_idle_t* i) {
      auto* c = static_cast<Conn*>(i->data);
      uv_close(reinterpret_cast<uv_handle_t*>(i), [](uv_handle_t* h) { delete reinterpret_cast<uv_idle_t*>(h); });
      c->on_closed();
      delete c;
    });
    return;
  }
  uv_close(&h_.handle, close_cb);
}

void Conn::close_cb(uv_handle_t* h) {
  auto* c = static_cast<Conn*>(h->data);
  c->on_closed();
  delete c;
}

}  // namespace proxy
