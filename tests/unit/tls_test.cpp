// tls/tls.h in memory: both ends of a connection, no sockets. Ciphertext is
// handed across in pieces of every size down to one byte, as reads would deliver it.
#include "tls/tls.h"

#include "tests/support/self_signed_cert.h"

#include <gtest/gtest.h>
#include <openssl/err.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

using tls::Stream;

// A self-signed certificate for localhost / 127.0.0.1 (its own CA), in temp files.
struct Files {
  std::string dir, key, cert;
  Files() {
    char tmpl[] = "/tmp/pgsidecar-tls-unit-XXXXXX";
    dir = mkdtemp(tmpl);
    EXPECT_TRUE(testsupport::write_self_signed_cert(dir, key, cert));
  }
  ~Files() { std::system(("rm -rf " + dir).c_str()); }
};

const Files& files() {
  static Files f;
  return f;
}

// Contexts toward clients (entry "" unused) and toward the servers of entry "db".
tls::Contexts contexts(conf::SslMode server_mode) {
  conf::Config cfg;
  cfg.client_tls.sslmode = conf::SslMode::Prefer;
  cfg.client_tls.key_file = files().key;
  cfg.client_tls.cert_file = files().cert;
  cfg.server_tls.sslmode = server_mode;
  cfg.server_tls.ca_file = files().cert;
  conf::Database db;
  db.name = "db";
  cfg.databases.push_back(db);
  tls::Contexts out;
  std::string err;
  EXPECT_TRUE(tls::build(cfg, out, err)) << err;
  return out;
}

std::string take_output() {
  std::string s;
  s.swap(Stream::output());
  return s;
}

// Hands `bytes` to s in pieces of `piece` bytes (0 = at once), as successive reads.
Stream::Step feed_handshake(Stream& s, const std::string& bytes, size_t piece, std::string& reply) {
  Stream::Step step = Stream::Step::More;
  size_t at = 0;
  do {
    size_t n = piece ? std::min(piece, bytes.size() - at) : bytes.size() - at;
    s.input(reinterpret_cast<const uint8_t*>(bytes.data() + at), n);
    at += n;
    step = s.handshake();
    reply += take_output();
  } while (step == Stream::Step::More && at < bytes.size());
  return step;
}

// Plaintext s decrypts from `bytes` given in pieces; false if the stream failed.
bool feed_data(Stream& s, const std::string& bytes, size_t piece, std::string& plain) {
  size_t at = 0;
  do {
    size_t n = piece ? std::min(piece, bytes.size() - at) : bytes.size() - at;
    s.input(reinterpret_cast<const uint8_t*>(bytes.data() + at), n);
    at += n;
    uint8_t buf[4096];
    for (long got; (got = s.read(buf, sizeof buf)) != 0;) {
      if (got < 0) return false;
      plain.append(reinterpret_cast<char*>(buf), size_t(got));
    }
    take_output();
  } while (at < bytes.size());
  return true;
}

// A handshake between a client Stream toward `host` and a server Stream, with
// every flight handed over in pieces; returns the client's outcome.
Stream::Step connect(Stream& client, Stream& server, size_t piece) {
  std::string to_server, to_client;
  client.input(nullptr, 0);
  Stream::Step c = client.handshake(), s = Stream::Step::More;
  to_server = take_output();
  for (int round = 0; round < 8 && (c == Stream::Step::More || s == Stream::Step::More); round++) {
    if (!to_server.empty()) {
      std::string out;
      s = feed_handshake(server, to_server, piece, out);
      to_server.clear();
      to_client += out;
    }
    if (!to_client.empty()) {
      std::string out;
      c = feed_handshake(client, to_client, piece, out);
      to_client.clear();
      to_server += out;
    }
    if (s == Stream::Step::Failed || c == Stream::Step::Failed) break;
  }
  return c == Stream::Step::Done && s == Stream::Step::Done ? Stream::Step::Done
         : c == Stream::Step::Failed || s == Stream::Step::Failed ? Stream::Step::Failed
                                                                  : Stream::Step::More;
}

TEST(TlsStream, HandshakeAndDataInPiecesOfEverySize) {
  tls::Contexts ctx = contexts(conf::SslMode::VerifyFull);
  for (size_t piece : {size_t(1), size_t(2), size_t(5), size_t(13), size_t(100), size_t(0)}) {
    Stream client(ctx.for_database("db"), "localhost"), server(ctx.clients, "");
    ASSERT_TRUE(client.ok() && server.ok());
    ASSERT_EQ(connect(client, server, piece), Stream::Step::Done) << "piece " << piece << ": " << client.error()
                                                                   << " / " << server.error();
    EXPECT_EQ(client.version(), server.version());
    EXPECT_EQ(client.alpn(), "postgresql");
    EXPECT_EQ(client.server_end_point(), server.server_end_point());
    EXPECT_EQ(client.server_end_point().size(), 32u);   // SHA-256 of an ecdsa-with-SHA256 certificate
    std::string message;
    for (int i = 0; i < 3000; i++) message += "row " + std::to_string(i) + ";";
    ASSERT_TRUE(client.write(reinterpret_cast<const uint8_t*>(message.data()), message.size()));
    std::string plain;
    ASSERT_TRUE(feed_data(server, take_output(), piece, plain)) << server.error();
    EXPECT_EQ(plain, message) << "piece " << piece;
    ASSERT_TRUE(server.write(reinterpret_cast<const uint8_t*>("ok"), 2));
    plain.clear();
    ASSERT_TRUE(feed_data(client, take_output(), piece, plain)) << client.error();
    EXPECT_EQ(plain, "ok");
  }
}

TEST(TlsStream, VerifyFullChecksTheHostName) {
  tls::Contexts full = contexts(conf::SslMode::VerifyFull), ca = contexts(conf::SslMode::VerifyCa);
  for (const char* host : {"localhost", "127.0.0.1"}) {
    Stream client(full.for_database("db"), host), server(full.clients, "");
    EXPECT_EQ(connect(client, server, 0), Stream::Step::Done) << host << ": " << client.error();
  }
  Stream client(full.for_database("db"), "db.example.com"), server(full.clients, "");
  EXPECT_EQ(connect(client, server, 0), Stream::Step::Failed);
  EXPECT_NE(client.error().find("hostname mismatch"), std::string::npos) << client.error();
  Stream by_ip(full.for_database("db"), "127.0.0.2"), server2(full.clients, "");
  EXPECT_EQ(connect(by_ip, server2, 0), Stream::Step::Failed);
  EXPECT_NE(by_ip.error().find("IP address mismatch"), std::string::npos) << by_ip.error();
  Stream any_name(ca.for_database("db"), "db.example.com"), server3(ca.clients, "");
  EXPECT_EQ(connect(any_name, server3, 0), Stream::Step::Done) << "verify-ca checks no name: " << any_name.error();
}

// A peer that floods TLS 1.3 KeyUpdates (each one makes us answer) is cut off.
TEST(TlsStream, KeyUpdateFloodIsBounded) {
  tls::Contexts ctx = contexts(conf::SslMode::Require);
  Stream server(ctx.clients, "");
  SSL_CTX* cctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, nullptr);
  SSL* ssl = SSL_new(cctx);
  BIO *in = BIO_new(BIO_s_mem()), *out = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl, in, out);
  SSL_set_connect_state(ssl);
  auto drain = [&] {
    std::string s(size_t(BIO_ctrl_pending(out)), '\0');
    if (!s.empty()) BIO_read(out, s.data(), int(s.size()));
    return s;
  };
  for (int round = 0; round < 4 && !(SSL_is_init_finished(ssl) && server.handshake_done()); round++) {
    SSL_do_handshake(ssl);
    std::string reply;
    feed_handshake(server, drain(), 0, reply);
    BIO_write(in, reply.data(), int(reply.size()));
  }
  SSL_do_handshake(ssl);
  ASSERT_TRUE(server.handshake_done()) << server.error();
  std::string plain;
  bool alive = true;
  int sent = 0;
  for (; sent < 200 && alive; sent++) {
    SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED);
    SSL_write(ssl, "x", 1);
    alive = feed_data(server, drain(), 0, plain);
  }
  EXPECT_FALSE(alive) << "200 key updates were accepted";
  EXPECT_LE(sent, 20);
  EXPECT_NE(server.error().find("too many TLS handshake messages"), std::string::npos) << server.error();
  EXPECT_EQ(plain.substr(0, 3), "xxx");   // data before the limit was delivered
  SSL_free(ssl);
  SSL_CTX_free(cctx);
  ERR_clear_error();
}

TEST(TlsStream, BadFilesAreReportedWithTheirKey) {
  conf::Config cfg;
  cfg.source_path = "p.yaml";
  cfg.lines["client_tls_cert_file"] = 7;
  cfg.client_tls.sslmode = conf::SslMode::Require;
  cfg.client_tls.key_file = files().key;
  cfg.client_tls.cert_file = files().dir + "/missing.pem";
  tls::Contexts out;
  std::string err;
  EXPECT_FALSE(tls::build(cfg, out, err));
  EXPECT_EQ(err.rfind("p.yaml:7: client_tls_cert_file: cannot read " + files().dir + "/missing.pem", 0), 0u) << err;
  cfg.client_tls.cert_file = files().key;   // a key where a certificate belongs
  EXPECT_FALSE(tls::build(cfg, out, err));
  EXPECT_NE(err.find("no PEM certificate"), std::string::npos) << err;
}

TEST(TlsStream, RedisContextOnlyForRediss) {
  conf::Config cfg;
  cfg.source_path = "p.yaml";
  cfg.lines["cache.redis.tls_ca_file"] = 9;
  cfg.cache.redis.url = "redis://127.0.0.1";
  cfg.cache.redis.tls.ca_file = files().dir + "/missing.pem";
  tls::Contexts out;
  std::string err;
  EXPECT_TRUE(tls::build(cfg, out, err)) << err;   // plain redis://: the TLS files are not read
  EXPECT_EQ(out.redis, nullptr);
  cfg.cache.redis.url = "rediss://127.0.0.1";
  EXPECT_FALSE(tls::build(cfg, out, err));
  EXPECT_EQ(err.rfind("p.yaml:9: cache.redis.tls_ca_file: cannot read " + files().dir + "/missing.pem", 0), 0u) << err;
  cfg.cache.redis.tls.ca_file = files().cert;   // self-signed: its own CA
  ASSERT_TRUE(tls::build(cfg, out, err)) << err;
  ASSERT_NE(out.redis, nullptr);
  EXPECT_EQ(out.redis->mode, conf::SslMode::VerifyFull);
  EXPECT_FALSE(out.redis->accept);
}

}  // namespace
