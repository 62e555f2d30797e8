#include "tls/tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>

#include "conf/log.h"

namespace tls {
namespace {

constexpr unsigned char kAlpn[] = "\x0apostgresql";   // ALPN wire format: length, name

std::string openssl_error() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

// A file OpenSSL is about to read: "" if readable, else why not.
std::string unreadable(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (!f) return "cannot read " + path + ": " + std::strerror(errno);
  std::fclose(f);
  return "";
}

bool is_ip(const std::string& host) {
  unsigned char buf[16];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

// Direct TLS and SSLRequest alike: a client that offers ALPN must offer "postgresql".
int select_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in, unsigned inlen, void*) {
  unsigned char* chosen = nullptr;
  if (SSL_select_next_proto(&chosen, outlen, kAlpn, sizeof kAlpn - 1, in, inlen) != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  *out = chosen;
  return SSL_TLSEXT_ERR_OK;
}

using KeyName = std::function<std::string(const std::string&)>;

// Builds c's SSL_CTX from c.settings; err is a message without the "file:line: "
// prefix, bad_key the config key it is about.
// A context toward a server offers ALPN "postgresql" only when that server is a PostgreSQL.
bool build_ctx(const Context& c, const KeyName& key_name, std::string& err, std::string& bad_key) {
  const conf::Tls& t = c.settings;
  auto fail = [&](const std::string& key, std::string msg) {
    bad_key = key_name(key);
    err = key_name(key) + ": " + std::move(msg);
    return false;
  };
  c.ctx = SSL_CTX_new(c.accept ? TLS_server_method() : TLS_client_method());
  if (!c.ctx) return fail("sslmode", openssl_error());
  SSL_CTX_set_min_proto_version(c.ctx, (t.protocols & conf::kTls12) ? TLS1_2_VERSION : TLS1_3_VERSION);
  SSL_CTX_set_max_proto_version(c.ctx, (t.protocols & conf::kTls13) ? TLS1_3_VERSION : TLS1_2_VERSION);
  SSL_CTX_set_options(c.ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_mode(c.ctx, SSL_MODE_RELEASE_BUFFERS);
  if (t.ciphers != "default" && SSL_CTX_set_cipher_list(c.ctx, t.ciphers.c_str()) != 1)
    return fail("ciphers", "no usable TLS 1.2 cipher in '" + t.ciphers + "'");
  if (!t.cert_file.empty()) {
    if (std::string e = unreadable(t.cert_file); !e.empty()) return fail("cert_file", e);
    if (std::string e = unreadable(t.key_file); !e.empty()) return fail("key_file", e);
    if (SSL_CTX_use_certificate_chain_file(c.ctx, t.cert_file.c_str()) != 1)
      return fail("cert_file", "no PEM certificate in " + t.cert_file + ": " + openssl_error());
    // OpenSSL checks the key against the certificate as it loads it (same key type) or in check_private_key.
    bool loaded = SSL_CTX_use_PrivateKey_file(c.ctx, t.key_file.c_str(), SSL_FILETYPE_PEM) == 1;
    bool mismatch = loaded ? SSL_CTX_check_private_key(c.ctx) != 1
                           : ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH;
    if (mismatch) {
      ERR_clear_error();
      return fail("key_file", t.key_file + " does not match the certificate in " + t.cert_file);
    }
    if (!loaded) return fail("key_file", "no PEM private key in " + t.key_file + ": " + openssl_error());
  }
  bool verify = t.sslmode == conf::SslMode::VerifyCa || t.sslmode == conf::SslMode::VerifyFull;
  if (!t.ca_file.empty()) {
    if (std::string e = unreadable(t.ca_file); !e.empty()) return fail("ca_file", e);
    if (SSL_CTX_load_verify_locations(c.ctx, t.ca_file.c_str(), nullptr) != 1)
      return fail("ca_file", "no PEM certificate in " + t.ca_file + ": " + openssl_error());
  } else if (!c.accept && verify && SSL_CTX_set_default_verify_paths(c.ctx) != 1) {
    return fail("ca_file", "the system's CA certificates cannot be loaded: " + openssl_error());
  }
  if (c.accept) {
    // Clients: a certificate is asked for when a CA is configured, and required in verify-*.
    if (!t.ca_file.empty()) {
      STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(t.ca_file.c_str());
      if (names) SSL_CTX_set_client_CA_list(c.ctx, names);
      SSL_CTX_set_verify(c.ctx, SSL_VERIFY_PEER | (verify ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), nullptr);
    }
    // No resumption: no session cache, no TLS 1.2 tickets, no TLS 1.3 tickets.
    SSL_CTX_set_session_cache_mode(c.ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(c.ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(c.ctx, 0);
    static const unsigned char kSessionContext[] = "pgsidecar";
    SSL_CTX_set_session_id_context(c.ctx, kSessionContext, sizeof kSessionContext - 1);
    SSL_CTX_set_alpn_select_cb(c.ctx, select_alpn, nullptr);
  } else {
    SSL_CTX_set_verify(c.ctx, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);
    if (c.postgresql) SSL_CTX_set_alpn_protos(c.ctx, kAlpn, sizeof kAlpn - 1);
  }
  return true;
}

// A context for settings t; built now when its settings can fail (files to read,
// a cipher list, certificates to check), else on first use (Context::ssl_ctx).
std::shared_ptr<Context> make(const conf::Tls& t, bool accept, bool postgresql, const KeyName& key_name,
                              std::string& err, std::string& bad_key) {
  auto c = std::make_shared<Context>();
  c->settings = t;
  c->mode = t.sslmode;
  c->accept = accept;
  c->postgresql = postgresql;
  c->ca_file = t.ca_file;
  bool verify = t.sslmode == conf::SslMode::VerifyCa || t.sslmode == conf::SslMode::VerifyFull;
  bool can_fail = accept || verify || !t.cert_file.empty() || !t.key_file.empty() || !t.ca_file.empty() ||
                  t.ciphers != "default";
  if (can_fail && !build_ctx(*c, key_name, err, bad_key)) return nullptr;
  return c;
}

std::string g_output;   // one loop: every Stream's ciphertext passes here and is sent at once

}  // namespace

Context::~Context() {
  if (ctx) SSL_CTX_free(ctx);
}

SSL_CTX* Context::ssl_ctx() const {
  if (ctx) return ctx;
  std::string err, key;
  if (build_ctx(*this, [](const std::string& k) { return k; }, err, key)) return ctx;
  LOG_ERROR("cannot make a TLS context: %s", err.c_str());   // out of memory, or OpenSSL's own set-up failed
  if (ctx) SSL_CTX_free(ctx);
  ctx = nullptr;
  return nullptr;
}

bool build(const conf::Config& cfg, Contexts& out, std::string& err) {
  Contexts next;
  std::string msg, key;
  if (cfg.client_tls.sslmode != conf::SslMode::Disable) {
    next.clients = make(cfg.client_tls, true, true, [](const std::string& k) { return "client_tls_" + k; }, msg, key);
    if (!next.clients) {
      err = cfg.where(key) + msg;
      return false;
    }
  }
  for (const conf::Database& db : cfg.databases) {
    conf::Tls t = conf::server_tls_for(cfg, db);
    if (t.sslmode == conf::SslMode::Disable) continue;
    auto name = [&db](const std::string& k) { return conf::server_tls_key(db, "server_tls_" + k); };
    ContextPtr c = make(t, false, true, name, msg, key);
    if (!c) {
      err = cfg.where(key) + msg;
      return false;
    }
    next.servers[db.name] = std::move(c);
  }
  if (cfg.cache.redis.url.starts_with("rediss://")) {
    next.redis = connect_context(cfg.cache.redis.tls, "cache.redis.tls_", msg, key);
    if (!next.redis) {
      err = cfg.where(key) + msg;
      return false;
    }
  }
  out = std::move(next);
  return true;
}

ContextPtr connect_context(const conf::Tls& t, const std::string& key_prefix, std::string& err, std::string& bad_key) {
  return make(t, false, false, [&key_prefix](const std::string& k) { return key_prefix + k; }, err, bad_key);
}

std::string& Stream::output() { return g_output; }

Stream::Stream(const ContextPtr& ctx, const std::string& host) : ctx_(ctx) {
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "pgsidecar");
    BIO_meth_set_write(m, bio_write);
    BIO_meth_set_read(m, bio_read);
    BIO_meth_set_ctrl(m, bio_ctrl);
    return m;
  }();
  SSL_CTX* built = ctx_->ssl_ctx();
  SSL* ssl = built ? SSL_new(built) : nullptr;
  BIO* bio = ssl ? BIO_new(method) : nullptr;
  if (!bio) {
    if (ssl) SSL_free(ssl);
    error_ = openssl_error();
    return;
  }
  BIO_set_data(bio, this);
  BIO_set_init(bio, 1);
  SSL_set_bio(ssl, bio, bio);   // one reference, owned by ssl
  SSL_set_msg_callback(ssl, on_message);
  SSL_set_msg_callback_arg(ssl, this);
  if (ctx_->accept) {
    SSL_set_accept_state(ssl);
  } else {
    SSL_set_connect_state(ssl);
    if (!is_ip(host)) SSL_set_tlsext_host_name(ssl, host.c_str());
    if (ctx_->mode == conf::SslMode::VerifyFull) {
      X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
      if (is_ip(host)) X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str());
      else SSL_set1_host(ssl, host.c_str());
    }
  }
  ssl_ = ssl;
}

Stream::~Stream() {
  if (ssl_) SSL_free(ssl_);
}

int Stream::bio_write(BIO*, const char* data, int len) {
  g_output.append(data, size_t(len));
  return len;
}

int Stream::bio_read(BIO* b, char* data, int len) {
  auto* s = static_cast<Stream*>(BIO_get_data(b));
  BIO_clear_retry_flags(b);
  if (s->in_len_ == 0) {
    BIO_set_retry_read(b);
    return -1;
  }
  size_t n = std::min(size_t(len), s->in_len_);
  std::memcpy(data, s->in_, n);
  s->in_ += n;
  s->in_len_ -= n;
  return int(n);
}

long Stream::bio_ctrl(BIO*, int cmd, long, void*) { return cmd == BIO_CTRL_FLUSH ? 1 : 0; }

// Handshake messages the peer sends once the handshake is done (TLS 1.3 KeyUpdate,
// a TLS 1.2 renegotiation ClientHello) each make OpenSSL answer: a peer sending them
// without reading the answers would grow our output without bound. A few are normal.
void Stream::on_message(int write_p, int, int content_type, const void*, size_t, SSL*, void* arg) {
  auto* s = static_cast<Stream*>(arg);
  if (!write_p && content_type == SSL3_RT_HANDSHAKE && s->done_) s->late_handshakes_++;
}

bool Stream::fail(int rc, const char* what) {
  int e = SSL_get_error(ssl_, rc);
  long verify = SSL_get_verify_result(ssl_);
  if (e == SSL_ERROR_ZERO_RETURN) error_ = "the peer closed the TLS connection";
  else if (verify != X509_V_OK) error_ = std::string("certificate verify failed: ") + X509_verify_cert_error_string(verify);
  else if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) error_ = std::string(what) + ": unexpected end of input";
  else error_ = std::string(what) + ": " + openssl_error();
  ERR_clear_error();
  return false;
}

Stream::Step Stream::handshake() {
  if (done_) return Step::Done;
  int rc = SSL_do_handshake(ssl_);
  if (rc == 1) {
    done_ = true;
    return Step::Done;
  }
  if (SSL_get_error(ssl_, rc) == SSL_ERROR_WANT_READ) return Step::More;
  fail(rc, "TLS handshake failed");
  return Step::Failed;
}

long Stream::read(uint8_t* dst, size_t cap) {
  // Bounded: each round that wants more input with input left consumes some of it.
  for (;;) {
    int rc = SSL_read(ssl_, dst, int(std::min<size_t>(cap, 1 << 30)));
    // One late handshake message per 16 MB read, after the first kLateHandshakes.
    if (late_handshakes_ > kLateHandshakes + plaintext_read_ / (16 << 20)) {
      error_ = "too many TLS handshake messages after the handshake (key updates or renegotiation attempts)";
      return -1;
    }
    if (rc > 0) {
      plaintext_read_ += uint64_t(rc);
      return rc;
    }
    if (SSL_get_error(ssl_, rc) == SSL_ERROR_WANT_READ) {
      if (in_len_ > 0) continue;
      return 0;
    }
    fail(rc, "TLS read failed");
    return -1;
  }
}

bool Stream::write(const uint8_t* p, size_t n) {
  while (n > 0) {
    int chunk = int(std::min<size_t>(n, 1 << 30));
    int rc = SSL_write(ssl_, p, chunk);
    if (rc <= 0) return fail(rc, "TLS write failed");
    p += rc;
    n -= size_t(rc);
  }
  return true;
}

std::string_view Stream::version() const { return done_ ? SSL_get_version(ssl_) : ""; }

std::string Stream::describe() const {
  if (!done_) return "";
  return std::string(SSL_get_version(ssl_)) + "/" + SSL_CIPHER_get_name(SSL_get_current_cipher(ssl_));
}

std::string_view Stream::alpn() const {
  const unsigned char* p = nullptr;
  unsigned len = 0;
  SSL_get0_alpn_selected(ssl_, &p, &len);
  return p ? std::string_view(reinterpret_cast<const char*>(p), len) : std::string_view();
}

std::string Stream::peer_common_name() const {
  X509* peer = SSL_get0_peer_certificate(ssl_);
  if (!peer || SSL_get_verify_result(ssl_) != X509_V_OK) return "";
  X509_NAME* subject = X509_get_subject_name(peer);
  int i = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (i < 0) return "";
  ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i));
  unsigned char* utf8 = nullptr;
  int len = ASN1_STRING_to_UTF8(&utf8, data);
  if (len < 0) return "";
  std::string cn(reinterpret_cast<char*>(utf8), size_t(len));
  OPENSSL_free(utf8);
  if (cn.find('\0') != std::string::npos) return "";   // an embedded NUL names no one
  return cn;
}

std::string Stream::server_end_point() const {
  X509* cert = ctx_->accept ? SSL_get_certificate(ssl_) : SSL_get0_peer_certificate(ssl_);
  if (!cert) return "";
  int md_nid = NID_undef;
  if (!OBJ_find_sigid_algs(X509_get_signature_nid(cert), &md_nid, nullptr)) return "";
  // RFC 5929 4.1: MD5 and SHA-1 certificates are hashed with SHA-256.
  if (md_nid == NID_md5 || md_nid == NID_sha1) md_nid = NID_sha256;
  const EVP_MD* md = EVP_get_digestbynid(md_nid);
  unsigned char buf[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  if (!md || X509_digest(cert, md, buf, &len) != 1) return "";
  return std::string(reinterpret_cast<char*>(buf), len);
}

}  // namespace tls
