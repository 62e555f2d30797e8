// TLS for pgsidecar's connections, on the event loop: OpenSSL contexts built from
// the client_tls_* / server_tls_* settings, and a Stream that runs one connection's
// TLS over bytes the caller reads and writes (no socket inside, nothing blocks).
//
// Stream's BIO reads straight from the bytes just read off the socket and writes
// into one loop-wide buffer, so ciphertext is never copied into a per-connection
// queue; OpenSSL's own record buffers are released while a connection is idle.
#pragma once
#include <openssl/ssl.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "conf/config.h"

namespace tls {

// One side's SSL_CTX and how connections made from it must check their peer.
// Settings that name no file and check no certificate cannot fail to build, so
// their SSL_CTX (and OpenSSL's start-up, a few ms) waits for the first connection
// that uses it: the default server_tls_sslmode prefer costs nothing at start,
// and the first TLS connection (after a reload, the first per entry) pays it on the loop.
struct Context {
  ~Context();
  // The SSL_CTX, built now if it was deferred; null if OpenSSL failed (out of memory).
  SSL_CTX* ssl_ctx() const;
  conf::Tls settings;         // what it was built from (a reload compares them)
  conf::SslMode mode = conf::SslMode::Disable;
  bool accept = false;        // toward clients (pgsidecar is the TLS server)
  bool postgresql = false;    // toward a PostgreSQL server: offers ALPN "postgresql"
  std::string ca_file;        // for messages ("" = the system's CAs)
  // Null until built: read it through ssl_ctx(). Contexts are shared as const and
  // built lazily without a lock: every TLS connection runs on the loop's thread.
  mutable SSL_CTX* ctx = nullptr;
};
using ContextPtr = std::shared_ptr<const Context>;

// Every context a configuration needs: toward clients (null when
// client_tls_sslmode is disable), toward each `databases:` entry's servers
// (null for an entry whose server_tls_sslmode is disable), and toward Redis
// (null unless cache.redis.url is rediss://).
struct Contexts {
  ContextPtr clients;
  std::map<std::string, ContextPtr> servers;   // by entry name ("*" included)
  ContextPtr redis;
  ContextPtr for_database(const std::string& entry_name) const {
    auto it = servers.find(entry_name);
    return it == servers.end() ? nullptr : it->second;
  }
};
// Reads every certificate, key and CA file the settings name. False + err
// ("file:line: client_tls_cert_file: ...") if one is unreadable, malformed, or a
// key does not match its certificate.
bool build(const conf::Config& cfg, Contexts& out, std::string& err);
// A context toward a TLS server that is not a PostgreSQL (Redis: no ALPN).
// Null + err ("<key_prefix>ca_file: ...") and bad_key (that key) on failure.
ContextPtr connect_context(const conf::Tls& t, const std::string& key_prefix, std::string& err, std::string& bad_key);

class Stream {
 public:
  // host: toward a server, its name or IP (SNI, and checked against the
  // certificate in verify-full). Check ok() before use.
  Stream(const ContextPtr& ctx, const std::string& host);
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  bool ok() const { return ssl_ != nullptr; }

  // Ciphertext just read; each call below consumes what it needs of it, and
  // OpenSSL keeps a partial record. Valid until the next call to input().
  void input(const uint8_t* p, size_t n) {
    in_ = p;
    in_len_ = n;
  }
  enum class Step { Done, More, Failed };
  Step handshake();
  bool handshake_done() const { return done_; }
  // Plaintext into dst: bytes > 0; 0 when all input is used; -1 when the peer
  // closed (close_notify) or the stream failed (error() says which).
  long read(uint8_t* dst, size_t cap);
  bool write(const uint8_t* p, size_t n);   // plaintext; false if the stream failed
  // Ciphertext to send, produced by any call above; clear it once sent.
  static std::string& output();

  const std::string& error() const { return error_; }
  std::string_view version() const;          // "TLSv1.3"; "" before the handshake
  std::string_view alpn() const;             // the protocol agreed by ALPN, "" if none
  std::string describe() const;              // "TLSv1.3/TLS_AES_256_GCM_SHA384" (SHOW CLIENTS/SERVERS)
  // Toward clients: the client certificate's CN when it verified ("" if none).
  std::string peer_common_name() const;
  // tls-server-end-point channel binding (RFC 5929): the hash of the server's
  // certificate (ours when accepting); "" if it cannot be computed.
  std::string server_end_point() const;

 private:
  static int bio_write(BIO* b, const char* data, int len);
  static int bio_read(BIO* b, char* data, int len);
  static long bio_ctrl(BIO* b, int cmd, long num, void* ptr);
  static void on_message(int write_p, int version, int content_type, const void* buf, size_t len, SSL* ssl, void* arg);
  static constexpr uint64_t kLateHandshakes = 16;
  bool fail(int rc, const char* what);

  ContextPtr ctx_;
  SSL* ssl_ = nullptr;
  const uint8_t* in_ = nullptr;
  size_t in_len_ = 0;
  bool done_ = false;
  uint64_t late_handshakes_ = 0, plaintext_read_ = 0;   // see on_message()
  std::string error_;
};

}  // namespace tls
