// Authentication primitives: PgBouncer userlist.txt, SCRAM-SHA-256 (RFC 5802/7677)
// both as server (clients log in to us) and as client (we log in to PostgreSQL), md5.
// Crypto comes from OpenSSL. Errors are values; nothing here throws or logs secrets.
#pragma once
#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace auth {

// userlist.txt: one `"user" "password"` per line; the password is plain text,
// "md5<32 hex>" or a SCRAM secret "SCRAM-SHA-256$<iter>:<salt b64>$<StoredKey b64>:<ServerKey b64>".
// ';' starts a comment line; "" inside quotes is a literal quote. On error returns
// nullopt and sets err to "path:line: message".
std::optional<std::map<std::string, std::string>> load_userlist(const std::string& path, std::string& err);

// Iterations of secrets pgsidecar derives from plain passwords (PostgreSQL's default too).
constexpr int kDefaultScramIterations = 4096;
// The most PBKDF2 iterations ScramClient accepts from a server. PBKDF2 runs on the
// event loop (about 0.25 ms per 1000 iterations, once per role and salt thanks to
// a cache), so a server asking for more, say a spoofed one, would stall every
// client; it is refused instead. PostgreSQL's default (scram_iterations) is 4096.
constexpr int kMaxScramIterations = 100000;

struct ScramSecret {
  int iterations = kDefaultScramIterations;
  std::string salt;                       // raw bytes
  std::array<uint8_t, 32> stored_key{};
  std::array<uint8_t, 32> server_key{};
};

// Parses "SCRAM-SHA-256$iter:salt$stored:server"; nullopt if it is not one.
std::optional<ScramSecret> parse_scram_secret(std::string_view s);
// Derives a secret from a plain password (random 16-byte salt when salt is empty).
ScramSecret make_scram_secret(std::string_view password, int iterations = kDefaultScramIterations,
                              std::string salt = {});

// Key for dummy_scram_secret: 32 random bytes, made once per process.
using DummyKey = std::array<uint8_t, 32>;
DummyKey make_dummy_key();
// The secret presented to a client whose user is unknown (or cannot use SCRAM), so
// that the exchange looks like a real one and fails only at the proof. Derived from
// `key` and the user name by HMAC-SHA-256 (no PBKDF2, cheap): the same name always
// gets the same salt, different names different salts, like real users, so salts do
// not tell which users exist. Salt 16 bytes, iterations kDefaultScramIterations;
// the keys are random-looking values no password matches.
ScramSecret dummy_scram_secret(const DummyKey& key, std::string_view user);
// The same with a process-wide key, made on first use.
ScramSecret dummy_scram_secret(std::string_view user);

// tls-server-end-point, the one channel binding type PostgreSQL and pgsidecar use.
constexpr std::string_view kChannelBindingType = "tls-server-end-point";

// Server side of SCRAM-SHA-256 and SCRAM-SHA-256-PLUS. One object per login attempt.
class ScramServer {
 public:
  // cbind: the connection's tls-server-end-point data when SCRAM-SHA-256-PLUS is
  // offered (the connection runs TLS); "" when it is not.
  explicit ScramServer(ScramSecret secret, std::string cbind = {});
  // client-first-message -> server-first-message; plus: the client chose
  // SCRAM-SHA-256-PLUS. False + err on a malformed message or a channel binding
  // flag that does not fit the mechanism (a "y" where PLUS was offered is a downgrade).
  bool client_first(std::string_view msg, std::string& server_first, std::string& err, bool plus = false);
  // client-final-message -> server-final-message ("v=..."). False + err on bad proof/format.
  bool client_final(std::string_view msg, std::string& server_final, std::string& err);

 private:
  ScramSecret secret_;
  std::string cbind_;
  std::string client_first_bare_, server_first_, nonce_;
  std::string gs2_header_;   // "n,,", "y,," or "p=tls-server-end-point,,"
  bool plus_ = false;        // channel binding in use: c= carries cbind_
  bool done_ = false;       // client_final was attempted: the object is spent
};

// Client side of SCRAM-SHA-256(-PLUS), used to log in to PostgreSQL with a plain password.
class ScramClient {
 public:
  // flag: 'p' binds cbind (SCRAM-SHA-256-PLUS), 'y' says we could bind but the
  // server offered no PLUS, 'n' that we cannot (no TLS).
  explicit ScramClient(std::string password, char flag = 'n', std::string cbind = {});
  std::string client_first();   // "n,,n=,r=<nonce>" (or "y,," / "p=tls-server-end-point,,")
  bool plus() const { return flag_ == 'p'; }
  // server-first-message -> client-final-message. False + err on a malformed message,
  // a nonce that does not extend ours, a bad salt, or more than kMaxScramIterations.
  bool server_first(std::string_view msg, std::string& client_final, std::string& err);
  bool server_final(std::string_view msg, std::string& err);   // verifies the server signature
  // True only once server_final() has verified the server's signature: the server
  // proved it knows the password. An AuthenticationOk before that must be refused
  // (a server skipping SASLFinal would otherwise be trusted without proof).
  bool verified() const { return verified_; }

 private:
  std::string password_, nonce_, client_first_bare_, auth_message_;
  char flag_ = 'n';
  std::string cbind_;
  std::array<uint8_t, 32> salted_password_{};
  bool verified_ = false;
  bool spent_ = false;   // a step failed or the exchange ended: every later step fails
};

// PostgreSQL md5 password response: "md5" + md5hex(md5hex(password + user) + salt).
// If password is already "md5<hex>" (stored hash), it is used as the inner hash.
std::string md5_response(std::string_view user, std::string_view password, const uint8_t salt[4]);

// Constant-time comparison for secrets.
bool equal_ct(std::string_view a, std::string_view b);

}  // namespace auth
