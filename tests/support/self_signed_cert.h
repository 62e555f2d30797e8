// Test support: a self-signed EC certificate for localhost / 127.0.0.1 that is
// its own CA, written as PEM key and certificate files (unit tests, fuzz targets).
#pragma once
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <string>
#include <utility>

namespace testsupport {

// Writes dir/key.pem and dir/cert.pem; false if any step fails.
inline bool write_self_signed_cert(const std::string& dir, std::string& key_path, std::string& cert_path) {
  key_path = dir + "/key.pem";
  cert_path = dir + "/cert.pem";
  EVP_PKEY* pkey = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  X509* x = X509_new();
  bool ok = pkey && x;
  if (ok) {
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 24 * 3600);
    X509_set_pubkey(x, pkey);
    X509_NAME* name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("localhost"), -1, -1, 0);
    X509_set_issuer_name(x, name);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, nullptr, nullptr, 0);
    for (auto [nid, value] : {std::pair{NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1"},
                              {NID_basic_constraints, "critical,CA:TRUE"}}) {
      X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &v3, nid, value);
      ok = ok && ext && X509_add_ext(x, ext, -1) == 1;
      X509_EXTENSION_free(ext);
    }
    ok = ok && X509_sign(x, pkey, EVP_sha256()) > 0;
  }
  FILE* f = ok ? std::fopen(key_path.c_str(), "w") : nullptr;
  ok = f && PEM_write_PrivateKey(f, pkey, nullptr, nullptr, 0, nullptr, nullptr) == 1;
  if (f) std::fclose(f);
  f = ok ? std::fopen(cert_path.c_str(), "w") : nullptr;
  ok = f && PEM_write_X509(f, x) == 1;
  if (f) std::fclose(f);
  X509_free(x);
  EVP_PKEY_free(pkey);
  return ok;
}

}  // namespace testsupport
