// PostgreSQL v3 wire protocol: framing constants, in-place readers, and builders
// for the few messages pgsidecar generates itself. Forwarded messages are never
// decoded into objects: the proxy looks at the 5-byte header and moves byte ranges.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pg {

constexpr uint32_t kProtocolV3 = 3u << 16;
constexpr uint32_t kCancelRequest = 80877102;
constexpr uint32_t kSslRequest = 80877103;
constexpr uint32_t kGssEncRequest = 80877104;
constexpr uint32_t kMaxStartupLen = 10000;        // PostgreSQL's own MAX_STARTUP_PACKET_LENGTH
constexpr uint32_t kMaxMessageLen = 0x3fffffff;   // PostgreSQL's MaxAllocSize bound
constexpr size_t kHeaderLen = 5;                  // type byte + int32 length
inline constexpr uint8_t kParseComplete[5] = {'1', 0, 0, 0, 4};
inline constexpr uint8_t kBindComplete[5] = {'2', 0, 0, 0, 4};

inline uint32_t get_u32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}
inline void put_u32(uint8_t* p, uint32_t v) {
  p[0] = uint8_t(v >> 24); p[1] = uint8_t(v >> 16); p[2] = uint8_t(v >> 8); p[3] = uint8_t(v);
}

// Reads fields out of a message body in place. Any overrun sets ok() false and
// returns empty values, so callers check once at the end.
class Reader {
 public:
  Reader(const uint8_t* p, size_t n) : p_(p), end_(p + n) {}
  uint32_t u32();
  uint16_t u16();
  uint8_t u8();
  std::string_view cstr();             // up to (not including) the NUL
  std::string_view bytes(size_t n);
  size_t remaining() const { return size_t(end_ - p_); }
  bool ok() const { return ok_; }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
  bool ok_ = true;
};

// Appends one message to a string; the length is patched by finish().
class Writer {
 public:
  Writer(std::string& out, char type);   // type 0 = untyped (startup-style) message
  Writer& u32(uint32_t v);
  Writer& u16(uint16_t v);
  Writer& u8(uint8_t v);
  Writer& cstr(std::string_view s);      // with trailing NUL
  Writer& bytes(std::string_view s);
  void finish();

 private:
  std::string& out_;
  size_t len_pos_;
};

// Fields of an ErrorResponse/NoticeResponse that pgsidecar cares about.
struct ErrorInfo {
  std::string severity = "ERROR";
  std::string code;       // SQLSTATE
  std::string message;
  std::string detail;
  std::string routine = {};   // PostgreSQL's source function; drivers key some recovery on it
};
ErrorInfo parse_error(const uint8_t* body, size_t len);

void write_error(std::string& out, const ErrorInfo& e);
void write_error(std::string& out, std::string_view severity, std::string_view code, std::string_view message);
void write_auth(std::string& out, uint32_t code, std::string_view data = {});
void write_param_status(std::string& out, std::string_view name, std::string_view value);
void write_backend_key(std::string& out, uint32_t pid, uint32_t key);
void write_ready(std::string& out, char tx_status);
void write_query(std::string& out, std::string_view sql);
void write_terminate(std::string& out);
// Startup-style messages (no type byte).
void write_startup(std::string& out, const std::vector<std::pair<std::string, std::string>>& params);
void write_cancel(std::string& out, uint32_t pid, uint32_t key);

// A parsed startup-phase packet (after its 4-byte length).
struct StartupPacket {
  uint32_t code = 0;   // protocol version or one of the request codes
  std::vector<std::pair<std::string, std::string>> params;   // for kProtocolV3
  uint32_t cancel_pid = 0, cancel_key = 0;                   // for kCancelRequest
};
// False on a malformed body (missing terminators, bad cancel length).
bool parse_startup(const uint8_t* body, size_t len, StartupPacket& out);

// Authentication request codes (backend 'R' messages).
enum AuthCode : uint32_t {
  kAuthOk = 0, kAuthCleartext = 3, kAuthMd5 = 5, kAuthSasl = 10, kAuthSaslContinue = 11, kAuthSaslFinal = 12,
};

}  // namespace pg
