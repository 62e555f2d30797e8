// Fuzzes the TLS record path toward clients (tls/tls.h): the input is what a
// client sends after pgsidecar answered 'S' to its SSLRequest, handed to a
// server-side Stream in pieces as socket reads would deliver it: the first byte
// picks the piece size (0 = all at once), the rest is the ciphertext. Each piece
// drives the handshake, then decryption, exactly as Conn::tls_input does.
// Invariants: no crash or leak (ASan/UBSan); a failed stream stays failed; no
// plaintext before the handshake is done, and never more plaintext than input;
// what the stream says back (alerts, handshake flights) stays bounded.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "tls/tls.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/support/self_signed_cert.h"

namespace {

tls::ContextPtr g_ctx;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  char tmpl[] = "/tmp/pgsidecar-tls-fuzz-XXXXXX";
  const char* dir = mkdtemp(tmpl);
  conf::Config cfg;
  cfg.client_tls.sslmode = conf::SslMode::Prefer;
  if (!dir || !testsupport::write_self_signed_cert(dir, cfg.client_tls.key_file, cfg.client_tls.cert_file)) std::abort();
  tls::Contexts contexts;
  std::string err;
  if (!tls::build(cfg, contexts, err)) std::abort();
  g_ctx = contexts.clients;
  std::system((std::string("rm -rf ") + dir).c_str());   // OpenSSL has read the files
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  size_t piece = data[0];
  data++;
  size--;
  tls::Stream s(g_ctx, "");
  FUZZ_CHECK(s.ok());
  std::string& out = tls::Stream::output();
  size_t plaintext = 0, said = 0;
  bool failed = false;
  for (size_t at = 0; at < size && !failed;) {
    size_t n = piece ? std::min(piece, size - at) : size - at;
    s.input(data + at, n);
    at += n;
    if (!s.handshake_done()) {
      tls::Stream::Step step = s.handshake();
      FUZZ_CHECK(step != tls::Stream::Step::Done || s.handshake_done());
      failed = step == tls::Stream::Step::Failed;
      if (failed || !s.handshake_done()) {
        said += out.size();
        out.clear();
        continue;
      }
    }
    uint8_t buf[16 * 1024 + 256];
    for (long got; !failed && (got = s.read(buf, sizeof buf)) != 0;) {
      if (got < 0) failed = true;
      else plaintext += size_t(got);
    }
    said += out.size();
    out.clear();
  }
  FUZZ_CHECK(plaintext <= size);
  FUZZ_CHECK(said <= 64 * 1024 + 4 * size);   // a server flight, and alerts in proportion to the input
  return 0;
}
