// Fuzzes the startup phase of a client connection (proxy/protocol.h).
//
// The input is used twice:
//  1. as the body of one startup packet (the bytes after its 4-byte length) for
//     pg::parse_startup, checking that what it accepts round-trips through
//     write_startup / write_cancel to the same bytes;
//  2. as the raw byte stream a client sends before authentication, framed and
//     checked the way ClientSession::handle_startup_packet does: a length in
//     8..kMaxStartupLen, the whole packet present, then parse_startup on its body;
//     SSLRequest / GSSENCRequest answers 'N' and reads the next packet, anything
//     else ends the startup phase (including the NegotiateProtocolVersion reply
//     built for a newer 3.x minor).
// Memory errors and undefined behaviour are caught by ASan/UBSan; broken
// invariants abort with a message.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/protocol.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

std::string_view as_view(const uint8_t* p, size_t n) { return {reinterpret_cast<const char*>(p), n}; }

// parse_startup on one body, plus the invariants of what it accepts.
bool parse_body(const uint8_t* body, size_t len, pg::StartupPacket& sp) {
  bool ok = pg::parse_startup(body, len, sp);
  if (!ok) return false;
  FUZZ_CHECK(len >= 4);
  FUZZ_CHECK(sp.code == pg::get_u32(body));
  std::string rebuilt;
  if (sp.code == pg::kCancelRequest) {
    FUZZ_CHECK(len == 12);
    pg::write_cancel(rebuilt, sp.cancel_pid, sp.cancel_key);
  } else if (sp.code == pg::kProtocolV3) {
    FUZZ_CHECK(body[len - 1] == 0);
    for (const auto& [k, v] : sp.params) {
      FUZZ_CHECK(!k.empty());
      FUZZ_CHECK(k.find('\0') == std::string::npos && v.find('\0') == std::string::npos);
    }
    pg::write_startup(rebuilt, sp.params);
  } else {
    FUZZ_CHECK(sp.params.empty());
    return true;   // SSL/GSS requests and other versions: only the code is read
  }
  // Accepted packets are exactly what the writers produce (after the length).
  FUZZ_CHECK(rebuilt.size() == len + 4);
  FUZZ_CHECK(pg::get_u32(reinterpret_cast<const uint8_t*>(rebuilt.data())) == len + 4);
  FUZZ_CHECK(rebuilt.compare(4, std::string::npos, as_view(body, len)) == 0);
  return true;
}

// The client's byte stream in the startup state, as ClientSession reads it.
void run_session(const uint8_t* data, size_t size) {
  size_t pos = 0;
  for (;;) {
    if (size - pos < 4) return;                          // wait for more input
    uint32_t len = pg::get_u32(data + pos);
    if (len < 8 || len > pg::kMaxStartupLen) return;     // "invalid length of startup packet"
    if (size - pos < len) return;                        // wait for the whole packet
    // The body alone in its own allocation, so that reading past it hits ASan's redzone.
    std::vector<uint8_t> body(data + pos + 4, data + pos + len);
    pg::StartupPacket sp;
    bool ok = parse_body(body.data(), body.size(), sp);
    pos += len;
    if (!ok) return;                                     // "invalid startup packet layout"
    if (sp.code == pg::kSslRequest || sp.code == pg::kGssEncRequest) continue;   // 'N', next packet
    if (sp.code == pg::kCancelRequest) return;
    if ((sp.code >> 16) != 3) return;                    // unsupported frontend protocol
    if ((sp.code & 0xffff) != 0) {
      // NegotiateProtocolVersion, as ClientSession builds it.
      std::string out;
      pg::Writer w(out, 'v');
      std::vector<std::string_view> unknown;
      for (auto& [k, v] : sp.params)
        if (k.rfind("_pq_.", 0) == 0) unknown.push_back(k);
      w.u32(pg::kProtocolV3).u32(uint32_t(unknown.size()));
      for (auto k : unknown) w.cstr(k);
      w.finish();
      FUZZ_CHECK(out.size() >= 5 && out[0] == 'v');
      FUZZ_CHECK(pg::get_u32(reinterpret_cast<const uint8_t*>(out.data()) + 1) == out.size() - 1);
    }
    return;   // startup parameters handled: authentication follows
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  pg::StartupPacket sp;
  parse_body(data, size, sp);   // libFuzzer's buffer is exactly size bytes

  run_session(data, size);
  return 0;
}
