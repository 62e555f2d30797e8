// One socket (TCP or unix) with the I/O discipline every pgsidecar connection shares:
//  - reads land in a loop-wide scratch buffer; only the unconsumed tail of a partial
//    message is copied into the connection's own buffer, so idle connections hold none;
//  - writes go straight to the socket with uv_try_write (no copy); only what the
//    kernel does not take is copied to a queue and written by uv_write;
//  - the owner is deleted in the close callback, never inside one of its own callbacks.
#pragma once
#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tls/tls.h"

namespace proxy {

class Conn {
 public:
  explicit Conn(uv_loop_t* loop);
  virtual ~Conn() = default;
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  int init_tcp();
  int init_pipe();
  // Outgoing connection: host is an IP, a hostname (resolved off-loop by libuv),
  // or a unix socket directory (starts with '/'). Ends in on_connected(status).
  void connect(const std::string& host, int port);
  uv_stream_t* stream() { return &h_.stream; }
  bool unix_socket() const { return initialized_ && h_.handle.type == UV_NAMED_PIPE; }
  // TCP keepalive (tcp_keepalive, tcp_keepidle/keepintvl/keepcnt); a no-op on unix sockets.
  void set_keepalive(bool on, int idle_s, int interval_s, int count);
  uv_loop_t* loop() const { return loop_; }

  void read_start();
  void read_stop();
  bool reading() const { return reading_; }

  // False if the connection is closing or the write failed (the connection is then closing).
  bool send(const uv_buf_t* bufs, unsigned n);
  bool send(std::string_view bytes);
  size_t queued() const { return wq_ ? wq_->pending.size() + wq_->inflight.size() : 0; }
  bool over_high_water() const { return queued() > kHighWater; }

  // From now on the connection runs TLS (after an SSLRequest answered 'S', or
  // direct TLS): `early` is ciphertext already received and consumed from the
  // input. Toward a server, host is its name (SNI, verify-full). Ends in
  // on_tls_ready() or on_tls_failed(); false if the TLS state cannot be made.
  bool start_tls(const tls::ContextPtr& ctx, const std::string& host, std::string_view early = {});
  const tls::Stream* tls() const { return tls_.get(); }

  void close();               // idempotent; on_closed() then delete this, asynchronously
  void close_after_flush();   // close once everything queued has been written
  // Closing now, or once what is queued is written (nothing more is read or handled).
  bool closing() const { return closing_ || close_when_flushed_; }
  // "ip", port of the peer / of our end; "unix", 0 for a unix socket; "", 0 if unknown.
  std::pair<std::string, int> peer_address() const { return address(true); }
  std::pair<std::string, int> local_address() const { return address(false); }

  static constexpr size_t kHighWater = 256 * 1024;
  static constexpr size_t kLowWater = 64 * 1024;

 protected:
  // Unread input. Valid until the next return to the loop (it may point at the scratch buffer).
  const uint8_t* in_data() const { return view_ + rpos_; }
  size_t in_size() const { return view_len_ - rpos_; }
  void in_consume(size_t n) {
    rpos_ += n;
    consumed_ += n;
  }
  uint64_t in_consumed() const { return consumed_; }   // input bytes handled so far

  virtual void on_read() = 0;                 // new bytes are in in_data()
  virtual void on_read_end(int status) = 0;   // EOF (UV_EOF) or a read error
  virtual void on_drained() {}                // write queue fell below kLowWater after being above kHighWater
  virtual void on_closed() {}                 // handle is closed; `this` is deleted right after
  virtual void on_connected(int) {}           // result of connect(): 0 or a libuv error
  virtual void on_tls_ready() {}              // handshake done: plaintext flows from now on
  virtual void on_tls_failed(const std::string&) {}   // handshake failed (reading has stopped)

 private:
  static void alloc_cb(uv_handle_t* h, size_t suggested, uv_buf_t* buf);
  static void read_cb(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
  static void write_cb(uv_write_t* req, int status);
  static void close_cb(uv_handle_t* h);
  static void connect_cb(uv_connect_t* req, int status);
  static void resolved_cb(uv_getaddrinfo_t* req, int status, addrinfo* res);
  void finish_close();
  std::pair<std::string, int> address(bool peer) const;
  void start_write();
  void keep_unread();
  bool raw_send(const uv_buf_t* bufs, unsigned n);
  bool tls_send(const uv_buf_t* bufs, unsigned n);
  bool flush_tls();
  void tls_input(const uint8_t* p, size_t n);

  // What the kernel did not take: made on a short write, dropped once written.
  struct WriteQueue {
    uv_write_t req;
    std::string pending, inflight;   // queued / being written by req
  };
  // An outgoing connection in progress: made by connect(), dropped once connected.
  struct Connecting {
    uv_connect_t req;
    int port = 0;   // for the address a host name resolves to
  };

  uv_loop_t* loop_;
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } h_;
  uint64_t consumed_ = 0;       // see in_consumed()
  std::vector<uint8_t> own_;     // unconsumed input carried across reads: [0, own_len_)
  size_t own_len_ = 0;
  const uint8_t* view_ = nullptr;
  size_t view_len_ = 0, rpos_ = 0;
  std::unique_ptr<WriteQueue> wq_;
  std::unique_ptr<Connecting> connecting_;
  std::unique_ptr<tls::Stream> tls_;   // null: plain
  bool reading_ = false, closing_ = false, close_when_flushed_ = false, high_ = false, initialized_ = false, resolving_ = false;
};

// Byte ranges of received input bound for one peer, sent with one write;
// adjacent ranges merge. The ranges must stay valid until flush(). Small pieces
// of our own (rewritten message headers) go in the batch's scratch space.
class WriteBatch {
 public:
  explicit WriteBatch(Conn* dest) : dest_(dest) {}
  void add(const uint8_t* p, size_t len) {
    const char* c = reinterpret_cast<const char*>(p);
    if (n_ > 0 && bufs_[n_ - 1].base + bufs_[n_ - 1].len == c) {
      bufs_[n_ - 1].len += unsigned(len);
      return;
    }
    if (n_ == kMaxBufs) flush();
    bufs_[n_++] = uv_buf_init(const_cast<char*>(c), unsigned(len));
  }
  // Passes through up to `remaining` bytes of a message from p (avail bytes are
  // here); returns how many were taken and lowers `remaining` by as much.
  size_t pass(const uint8_t* p, size_t avail, size_t& remaining) {
    size_t take = remaining < avail ? remaining : avail;
    add(p, take);
    remaining -= take;
    return take;
  }
  // n bytes that stay valid until flush(), to fill and add(); null if n is too big.
  // A full batch is flushed here, so that the add() of this space cannot flush
  // (and hand the space out again) before it is queued.
  uint8_t* scratch(size_t n) {
    if (n > sizeof scratch_) return nullptr;
    if (used_ + n > sizeof scratch_ || n_ == kMaxBufs) flush();
    uint8_t* p = scratch_ + used_;
    used_ += n;
    return p;
  }
  void flush() {
    if (n_) dest_->send(bufs_, n_);
    n_ = 0;
    used_ = 0;
  }

 private:
  static constexpr unsigned kMaxBufs = 16;
  Conn* dest_;
  uint8_t scratch_[1024];
  size_t used_ = 0;
  uv_buf_t bufs_[kMaxBufs];
  unsigned n_ = 0;
};

}  // namespace proxy
