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

struct ScramSecret {
  int iterations = 4096;
  std::string salt;                       // raw bytes
  std::array<uint8_t, 32> stored_key{};
  std::array<uint8_t, 32> server_key{};
};

// Parses "SCRAM-SHA-256$iter:salt$stored:server"; nullopt if it is not one.
std::optional<ScramSecret> parse_scram_secret(std::string_view s);
// Derives a secret from a plain password (random 16-byte salt when salt is empty).
ScramSecret make_scram_secret(std::string_view password, int iterations = 4096, std::string salt = {});

// Server side of SCRAM-SHA-256 (no channel binding). One object per login attempt.
class ScramServer {
 public:
  explicit ScramServer(ScramSecret secret);
  // client-first-message -> server-first-message. False + err on a malformed message.
  bool client_first(std::string_view msg, std::string& server_first, std::string& err);
  // client-final-message -> server-final-message ("v=..."). False + err on bad proof/format.
  bool client_final(std::string_view msg, std::string& server_final, std::string& err);

 private:
  ScramSecret secret_;
  std::string client_first_bare_, server_first_, nonce_;
  char cbind_flag_ = 'n';   // gs2 flag the client sent: n or y (never p)
  bool done_ = false;       // client_final was attempted: the object is spent
};

// Client side of SCRAM-SHA-256, used to log in to PostgreSQL with a plain password.
class ScramClient {
 public:
  explicit ScramClient(std::string password);
  std::string client_first();   // "n,,n=,r=<nonce>"
  bool server_first(std::string_view msg, std::string& client_final, std::string& err);
  bool server_final(std::string_view msg, std::string& err);   // verifies the server signature

 private:
  std::string password_, nonce_, client_first_bare_, auth_message_;
  std::array<uint8_t, 32> salted_password_{};
};

// PostgreSQL md5 password response: "md5" + md5hex(md5hex(password + user) + salt).
// If password is already "md5<hex>" (stored hash), it is used as the inner hash.
std::string md5_response(std::string_view user, std::string_view password, const uint8_t salt[4]);

// Constant-time comparison for secrets.
bool equal_ct(std::string_view a, std::string_view b);

}  // namespace auth
