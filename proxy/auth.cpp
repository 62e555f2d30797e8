#include "proxy/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <vector>

// Password normalization: RFC 7677 asks for SASLprep. We treat passwords as raw
// bytes instead. PostgreSQL does the same whenever SASLprep fails (which it does
// for many non-ASCII strings), and for ASCII passwords SASLprep is the identity,
// so secrets made by PostgreSQL for ASCII passwords verify identically here.

namespace auth {
namespace {

using Key = std::array<uint8_t, 32>;
constexpr long kMaxIterations = 10'000'000;
constexpr int kNonceBytes = 18;

bool fail(std::string& err, std::string msg) { err = std::move(msg); return false; }

const unsigned char* bytes(std::string_view s) { return reinterpret_cast<const unsigned char*>(s.data()); }
std::string_view view(const Key& k) { return {reinterpret_cast<const char*>(k.data()), k.size()}; }

std::string b64_encode(std::string_view in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');   // +1: EVP_EncodeBlock writes a NUL
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), bytes(in), static_cast<int>(in.size()));
  out.resize(n < 0 ? 0 : static_cast<size_t>(n));
  return out;
}

// Strict base64: canonical alphabet, length a multiple of 4, '=' only as 1-2 final pad chars.
// (EVP_DecodeBlock alone would skip whitespace and count padding as zero bytes.)
std::optional<std::string> b64_decode(std::string_view in) {
  if (in.size() % 4 != 0) return std::nullopt;
  size_t pad = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '=') { ++pad; continue; }
    bool alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
    if (!alpha || pad > 0) return std::nullopt;
  }
  if (pad > 2) return std::nullopt;
  std::string out(in.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()), bytes(in), static_cast<int>(in.size()));
  if (n < 0 || static_cast<size_t>(n) < pad) return std::nullopt;
  out.resize(static_cast<size_t>(n) - pad);
  return out;
}

std::optional<Key> b64_key(std::string_view in) {
  auto raw = b64_decode(in);
  if (!raw || raw->size() != 32) return std::nullopt;
  Key k;
  std::memcpy(k.data(), raw->data(), k.size());
  return k;
}

std::optional<Key> sha256(std::string_view data) {
  Key out;
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), out.data(), &len, EVP_sha256(), nullptr) != 1 || len != out.size())
    return std::nullopt;
  return out;
}

std::optional<Key> hmac(const Key& key, std::string_view data) {
  Key out;
  unsigned int len = 0;
  if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), bytes(data), data.size(), out.data(), &len) ||
      len != out.size())
    return std::nullopt;
  return out;
}

std::optional<Key> salted_password(std::string_view password, std::string_view salt, int iterations) {
  Key out;
  if (PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()), bytes(salt), static_cast<int>(salt.size()),
                        iterations, EVP_sha256(), static_cast<int>(out.size()), out.data()) != 1)
    return std::nullopt;
  return out;
}

// PBKDF2 costs about a millisecond at 4096 iterations and would run on every server
// login; the server sends the same salt for a role every time, so remember the
// result per (password, salt, iterations). Bounded: cleared when it fills up.
std::optional<Key> cached_salted_password(std::string_view password, std::string_view salt, int iterations) {
  static std::map<std::string, Key> cache;
  std::string key = std::to_string(iterations);
  key.append(1, '\0').append(salt).append(1, '\0').append(password);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  auto salted = salted_password(password, salt, iterations);
  if (!salted) return salted;
  if (cache.size() >= 64) cache.clear();
  cache.emplace(std::move(key), *salted);
  return salted;
}

std::string md5_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md, &len, EVP_md5(), nullptr) != 1) return {};
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) { out += hex[md[i] >> 4]; out += hex[md[i] & 15]; }
  return out;
}

std::string random_b64(int n) {
  std::string raw(static_cast<size_t>(n), '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), n) != 1) return {};
  return b64_encode(raw);
}

std::optional<int> parse_iterations(std::string_view s) {
  long v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || p != s.data() + s.size() || v <= 0 || v > kMaxIterations)
    return std::nullopt;
  return static_cast<int>(v);
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  for (size_t pos = 0;;) {
    size_t next = s.find(sep, pos);
    out.push_back(s.substr(pos, next == std::string_view::npos ? std::string_view::npos : next - pos));
    if (next == std::string_view::npos) return out;
    pos = next + 1;
  }
}

// Value of attribute "<name>=value", or nullopt if a is not that attribute.
std::optional<std::string_view> attr(std::string_view a, char name) {
  if (a.size() < 2 || a[0] != name || a[1] != '=') return std::nullopt;
  return a.substr(2);
}

// RFC 5802 nonce: printable ASCII except ','.
bool valid_nonce(std::string_view n) {
  if (n.empty()) return false;
  for (char c : n)
    if (c < 0x21 || c > 0x7e || c == ',') return false;
  return true;
}

Key xor_keys(const Key& a, const Key& b) {
  Key out;
  for (size_t i = 0; i < out.size(); ++i) out[i] = a[i] ^ b[i];
  return out;
}

}  // namespace

bool equal_ct(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

// ---- userlist.txt --------------------------------------------------------------

std::optional<std::map<std::string, std::string>> load_userlist(const std::string& path, std::string& err) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) { err = path + ": cannot open: Is a directory"; return std::nullopt; }
  std::ifstream in(path);
  if (!in) { err = path + ": cannot open: " + std::strerror(errno); return std::nullopt; }

  std::map<std::string, std::string> users;
  std::string line;
  for (int lineno = 1; std::getline(in, line); ++lineno) {
    auto bad = [&](const std::string& msg) { err = path + ":" + std::to_string(lineno) + ": " + msg; };
    std::string_view s = line;
    size_t i = 0;
    auto skip_ws = [&] { while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r')) ++i; };
    // Reads a "quoted" field where "" stands for a literal quote.
    auto quoted = [&](std::string& out) {
      if (i >= s.size() || s[i] != '"') return false;
      for (++i; i < s.size(); ++i) {
        if (s[i] != '"') { out += s[i]; continue; }
        if (i + 1 < s.size() && s[i + 1] == '"') { out += '"'; ++i; continue; }
        ++i;
        return true;
      }
      return false;
    };
    skip_ws();
    if (i == s.size() || s[i] == ';') continue;
    std::string user, password;
    if (s[i] != '"') { bad("expected quoted user name"); return std::nullopt; }
    if (!quoted(user)) { bad("unterminated quoted user name"); return std::nullopt; }
    if (user.empty()) { bad("empty user name"); return std::nullopt; }
    skip_ws();
    if (i >= s.size() || s[i] != '"') { bad("expected quoted password after user name"); return std::nullopt; }
    if (!quoted(password)) { bad("unterminated quoted password"); return std::nullopt; }
    skip_ws();
    if (i != s.size()) { bad("unexpected text after password"); return std::nullopt; }
    if (!users.emplace(user, std::move(password)).second) { bad("duplicate user \"" + user + "\""); return std::nullopt; }
  }
  if (in.bad()) { err = path + ": read error"; return std::nullopt; }
  return users;
}

// ---- SCRAM secrets -------------------------------------------------------------

std::optional<ScramSecret> parse_scram_secret(std::string_view s) {
  constexpr std::string_view prefix = "SCRAM-SHA-256$";
  if (s.substr(0, prefix.size()) != prefix) return std::nullopt;
  auto parts = split(s.substr(prefix.size()), '$');
  if (parts.size() != 2) return std::nullopt;
  auto a = split(parts[0], ':'), b = split(parts[1], ':');
  if (a.size() != 2 || b.size() != 2) return std::nullopt;
  auto iter = parse_iterations(a[0]);
  auto salt = b64_decode(a[1]);
  auto stored = b64_key(b[0]), server = b64_key(b[1]);
  if (!iter || !salt || salt->empty() || !stored || !server) return std::nullopt;
  return ScramSecret{*iter, std::move(*salt), *stored, *server};
}

// On a crypto failure (or bad iteration count) the result has iterations = 0,
// which ScramServer refuses, so a broken secret never authenticates anyone.
ScramSecret make_scram_secret(std::string_view password, int iterations, std::string salt) {
  ScramSecret out;
  out.iterations = 0;
  if (salt.empty()) {
    salt.assign(16, '\0');
    if (RAND_bytes(reinterpret_cast<unsigned char*>(salt.data()), 16) != 1) return out;
  }
  if (iterations <= 0 || iterations > kMaxIterations) return out;
  auto salted = salted_password(password, salt, iterations);
  auto client_key = salted ? hmac(*salted, "Client Key") : std::nullopt;
  auto stored = client_key ? sha256(view(*client_key)) : std::nullopt;
  auto server = salted ? hmac(*salted, "Server Key") : std::nullopt;
  if (salted) OPENSSL_cleanse(salted->data(), salted->size());
  if (!stored || !server) return out;
  out.iterations = iterations;
  out.salt = std::move(salt);
  out.stored_key = *stored;
  out.server_key = *server;
  return out;
}

// ---- Dummy secrets for unknown users ------------------------------------------

DummyKey make_dummy_key() {
  DummyKey k{};
  if (RAND_bytes(k.data(), static_cast<int>(k.size())) != 1) {
    std::random_device rd;   // the OpenSSL RNG failing is near impossible; still never a fixed key
    for (uint8_t& b : k) b = static_cast<uint8_t>(rd());
  }
  return k;
}

ScramSecret dummy_scram_secret(const DummyKey& key, std::string_view user) {
  // HMAC(key, label || 0 || user): independent values per label, deterministic per user.
  auto derive = [&](std::string_view label) {
    std::string data(label);
    data.push_back('\0');
    data.append(user);
    return hmac(key, data);
  };
  auto salt = derive("salt"), stored = derive("stored key"), server = derive("server key");
  ScramSecret out;
  if (!salt || !stored || !server) {
    out.iterations = 0;   // refused by ScramServer, like a broken make_scram_secret
    return out;
  }
  out.iterations = kDefaultScramIterations;
  out.salt.assign(reinterpret_cast<const char*>(salt->data()), 16);
  out.stored_key = *stored;
  out.server_key = *server;
  return out;
}

ScramSecret dummy_scram_secret(std::string_view user) {
  static const DummyKey key = make_dummy_key();
  return dummy_scram_secret(key, user);
}

// ---- SCRAM server --------------------------------------------------------------

ScramServer::ScramServer(ScramSecret secret, std::string cbind) : secret_(std::move(secret)), cbind_(std::move(cbind)) {}

bool ScramServer::client_first(std::string_view msg, std::string& server_first, std::string& err, bool plus) {
  if (done_ || !nonce_.empty()) return fail(err, "SCRAM: unexpected client-first-message");
  if (secret_.iterations <= 0) return fail(err, "SCRAM: invalid secret");
  // gs2-header: cbind-flag "," [authzid] ","
  size_t c1 = msg.find(','), c2 = c1 == std::string_view::npos ? c1 : msg.find(',', c1 + 1);
  if (c2 == std::string_view::npos) return fail(err, "SCRAM: malformed client-first-message (gs2 header)");
  std::string_view flag = msg.substr(0, c1), authzid = msg.substr(c1 + 1, c2 - c1 - 1);
  if (plus && cbind_.empty()) return fail(err, "SCRAM: SCRAM-SHA-256-PLUS was not offered");
  if (flag.substr(0, 2) == "p=") {
    if (!plus) return fail(err, "SCRAM: client selected SCRAM-SHA-256 but asked for channel binding");
    if (flag.substr(2) != kChannelBindingType)
      return fail(err, "SCRAM: unsupported channel binding type " + std::string(flag.substr(2)));
  } else if (plus) {
    return fail(err, "SCRAM: client selected SCRAM-SHA-256-PLUS without channel binding");
  } else if (flag == "y" && !cbind_.empty()) {
    // The client could bind and believes we cannot: someone removed PLUS from our offer.
    return fail(err, "SCRAM: channel binding negotiation error");
  } else if (flag != "n" && flag != "y") {
    return fail(err, "SCRAM: malformed client-first-message (channel binding flag)");
  }
  if (!authzid.empty()) return fail(err, "SCRAM: authorization identity is not supported");

  std::string_view bare = msg.substr(c2 + 1);
  auto attrs = split(bare, ',');
  if (attr(attrs[0], 'm')) return fail(err, "SCRAM: mandatory extensions are not supported");
  // The user name (n=) is ignored, as PostgreSQL does: the startup packet names the user.
  if (!attr(attrs[0], 'n')) return fail(err, "SCRAM: malformed client-first-message (missing n=)");
  auto client_nonce = attrs.size() >= 2 ? attr(attrs[1], 'r') : std::nullopt;
  if (!client_nonce) return fail(err, "SCRAM: malformed client-first-message (missing r=)");
  if (!valid_nonce(*client_nonce)) return fail(err, "SCRAM: invalid client nonce");

  std::string server_part = random_b64(kNonceBytes);
  if (server_part.empty()) return fail(err, "SCRAM: could not generate nonce");
  gs2_header_ = msg.substr(0, c2 + 1);
  plus_ = plus;
  nonce_ = std::string(*client_nonce) + server_part;
  client_first_bare_ = bare;
  server_first_ = "r=" + nonce_ + ",s=" + b64_encode(secret_.salt) + ",i=" + std::to_string(secret_.iterations);
  server_first = server_first_;
  return true;
}

bool ScramServer::client_final(std::string_view msg, std::string& server_final, std::string& err) {
  if (done_ || nonce_.empty()) return fail(err, "SCRAM: unexpected client-final-message");
  done_ = true;   // one proof attempt per exchange

  size_t pp = msg.rfind(",p=");
  if (pp == std::string_view::npos) return fail(err, "SCRAM: malformed client-final-message (missing p=)");
  std::string_view without_proof = msg.substr(0, pp);
  auto attrs = split(without_proof, ',');
  auto cbind = attr(attrs[0], 'c');
  if (!cbind) return fail(err, "SCRAM: malformed client-final-message (missing c=)");
  if (*cbind != b64_encode(gs2_header_ + (plus_ ? cbind_ : std::string())))
    return fail(err, plus_ ? "SCRAM: channel binding does not match this TLS connection"
                           : "SCRAM: unexpected channel-binding attribute");
  auto r = attrs.size() >= 2 ? attr(attrs[1], 'r') : std::nullopt;
  if (!r) return fail(err, "SCRAM: malformed client-final-message (missing r=)");
  if (*r != nonce_) return fail(err, "SCRAM: nonce mismatch");
  auto proof = b64_key(msg.substr(pp + 3));
  if (!proof) return fail(err, "SCRAM: malformed client proof");

  std::string auth_message = client_first_bare_ + "," + server_first_ + "," + std::string(without_proof);
  auto client_sig = hmac(secret_.stored_key, auth_message);
  auto server_sig = hmac(secret_.server_key, auth_message);
  if (!client_sig || !server_sig) return fail(err, "SCRAM: internal crypto error");
  Key client_key = xor_keys(*proof, *client_sig);
  auto stored = sha256(view(client_key));
  OPENSSL_cleanse(client_key.data(), client_key.size());
  if (!stored || !equal_ct(view(*stored), view(secret_.stored_key)))
    return fail(err, "SCRAM: password authentication failed");
  server_final = "v=" + b64_encode(view(*server_sig));
  return true;
}

// ---- SCRAM client --------------------------------------------------------------

ScramClient::ScramClient(std::string password, char flag, std::string cbind)
    : password_(std::move(password)), flag_(flag), cbind_(std::move(cbind)) {}

// The gs2 header for our flag: "n,,", "y,," or "p=tls-server-end-point,,".
static std::string gs2_header(char flag) {
  return flag == 'p' ? "p=" + std::string(kChannelBindingType) + ",," : std::string(1, flag) + ",,";
}

std::string ScramClient::client_first() {
  nonce_ = random_b64(kNonceBytes);   // empty on RNG failure: server_first() then fails
  client_first_bare_ = "n=,r=" + nonce_;
  auth_message_.clear();
  verified_ = spent_ = false;
  return gs2_header(flag_) + client_first_bare_;
}

bool ScramClient::server_first(std::string_view msg, std::string& client_final, std::string& err) {
  if (spent_ || nonce_.empty() || !auth_message_.empty()) {
    spent_ = true;
    return fail(err, "SCRAM: unexpected server-first-message");
  }
  auto bad = [&](std::string why) {   // a failed step ends the exchange
    spent_ = true;
    return fail(err, std::move(why));
  };
  auto attrs = split(msg, ',');
  if (attr(attrs[0], 'm')) return bad("SCRAM: server requires unsupported extensions");
  if (attrs.size() < 3) return bad("SCRAM: malformed server-first-message");
  auto r = attr(attrs[0], 'r'), s = attr(attrs[1], 's'), i = attr(attrs[2], 'i');
  if (!r || !s || !i) return bad("SCRAM: malformed server-first-message");
  if (!valid_nonce(*r) || r->size() <= nonce_.size() || r->substr(0, nonce_.size()) != nonce_)
    return bad("SCRAM: server nonce does not extend the client nonce");
  auto salt = b64_decode(*s);
  if (!salt || salt->empty()) return bad("SCRAM: invalid salt");
  auto iterations = parse_iterations(*i);
  if (!iterations) return bad("SCRAM: invalid iteration count");
  if (*iterations > kMaxScramIterations)
    return bad("SCRAM: server asks for iteration count " + std::to_string(*iterations) + ", more than pgsidecar allows (" +
               std::to_string(kMaxScramIterations) + ")");

  auto salted = cached_salted_password(password_, *salt, *iterations);
  if (!salted) return bad("SCRAM: internal crypto error");
  salted_password_ = *salted;
  OPENSSL_cleanse(salted->data(), salted->size());
  std::string without_proof =
      "c=" + b64_encode(gs2_header(flag_) + (flag_ == 'p' ? cbind_ : std::string())) + ",r=" + std::string(*r);
  std::string auth_message = client_first_bare_ + "," + std::string(msg) + "," + without_proof;
  auto client_key = hmac(salted_password_, "Client Key");
  auto stored = client_key ? sha256(view(*client_key)) : std::nullopt;
  auto client_sig = stored ? hmac(*stored, auth_message) : std::nullopt;
  if (!client_sig) return bad("SCRAM: internal crypto error");
  Key proof = xor_keys(*client_key, *client_sig);
  OPENSSL_cleanse(client_key->data(), client_key->size());
  auth_message_ = std::move(auth_message);
  client_final = without_proof + ",p=" + b64_encode(view(proof));
  return true;
}

bool ScramClient::server_final(std::string_view msg, std::string& err) {
  if (spent_ || auth_message_.empty()) {
    spent_ = true;
    return fail(err, "SCRAM: unexpected server-final-message");
  }
  spent_ = true;   // exchange is over either way
  std::string auth_message = std::move(auth_message_);
  auth_message_.clear();
  nonce_.clear();
  Key salted = salted_password_;
  OPENSSL_cleanse(salted_password_.data(), salted_password_.size());
  if (auto e = attr(msg, 'e')) return fail(err, "SCRAM: server error: " + std::string(*e));
  auto v = attr(msg.substr(0, msg.find(',')), 'v');
  if (!v) return fail(err, "SCRAM: malformed server-final-message");
  auto sig = b64_key(*v);
  if (!sig) return fail(err, "SCRAM: malformed server signature");
  auto server_key = hmac(salted, "Server Key");
  OPENSSL_cleanse(salted.data(), salted.size());
  auto expected = server_key ? hmac(*server_key, auth_message) : std::nullopt;
  if (!expected) return fail(err, "SCRAM: internal crypto error");
  if (!equal_ct(view(*expected), view(*sig))) return fail(err, "SCRAM: invalid server signature");
  verified_ = true;
  return true;
}

// ---- md5 ---------------------------------------------------------------------

std::string md5_response(std::string_view user, std::string_view password, const uint8_t salt[4]) {
  std::string inner = password.size() == 35 && password.substr(0, 3) == "md5"
                          ? std::string(password.substr(3))
                          : md5_hex(std::string(password) + std::string(user));
  return "md5" + md5_hex(inner + std::string(reinterpret_cast<const char*>(salt), 4));
}

}  // namespace auth
