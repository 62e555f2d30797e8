#include "proxy/decoder.h"

#include <algorithm>
#include <cstring>

#include "proxy/protocol.h"

namespace pg {
namespace {

// A body read field by field; every check returns false on overrun.
struct Body {
  const uint8_t* p;
  size_t n, at = 0;
  bool cstr() {
    const void* nul = at < n ? std::memchr(p + at, 0, n - at) : nullptr;
    if (!nul) return false;
    at = size_t(static_cast<const uint8_t*>(nul) - p) + 1;
    return true;
  }
  bool skip(size_t k) {
    if (n - at < k) return false;
    at += k;
    return true;
  }
  bool u16(int& v) {   // counts are unsigned 16-bit, as PostgreSQL reads them
    if (n - at < 2) return false;
    v = (p[at] << 8) | p[at + 1];
    at += 2;
    return true;
  }
  bool i32(int64_t& v) {
    if (n - at < 4) return false;
    v = int32_t(get_u32(p + at));
    at += 4;
    return true;
  }
  bool end() const { return at == n; }
  // A count, then that many int16 values (format codes: their values are the server's to judge).
  bool counted_i16s() {
    int count = 0;
    return u16(count) && skip(size_t(count) * 2);
  }
  // A count, then that many (int32 length, bytes) values; -1 is NULL.
  bool counted_values() {
    int count = 0;
    if (!u16(count)) return false;
    for (int i = 0; i < count; i++) {
      int64_t len = 0;
      if (!i32(len) || len < -1 || (len > 0 && !skip(size_t(len)))) return false;
    }
    return true;
  }
};

bool query_body(const uint8_t* b, size_t n) {   // text, one NUL, nothing after it
  Body r{b, n};
  return r.cstr() && r.end();
}
bool parse_body(const uint8_t* b, size_t n) {
  Body r{b, n};
  int count = 0;
  if (!r.cstr() || !r.cstr() || !r.u16(count)) return false;
  return r.skip(size_t(count) * 4) && r.end();
}
bool bind_body(const uint8_t* b, size_t n) {
  Body r{b, n};
  return r.cstr() && r.cstr() && r.counted_i16s() && r.counted_values() && r.counted_i16s() && r.end();
}
bool describe_body(const uint8_t* b, size_t n) {   // Describe and Close
  Body r{b, n};
  return n >= 1 && (b[0] == 'S' || b[0] == 'P') && r.skip(1) && r.cstr() && r.end();
}
bool execute_body(const uint8_t* b, size_t n) {
  Body r{b, n};
  return r.cstr() && r.skip(4) && r.end();
}
bool function_body(const uint8_t* b, size_t n) {
  Body r{b, n};
  return r.skip(4) && r.counted_i16s() && r.counted_values() && r.skip(2) && r.end();
}
bool any_body(const uint8_t*, size_t) { return true; }

// The leading fields of a streaming message, so that handlers can read them
// before the rest arrives: Bind's portal and statement names.
bool bind_head(const uint8_t* b, size_t n) {
  Body r{b, n};
  return r.cstr() && r.cstr();
}

struct FrontendType {
  bool valid = false;
  int fixed_len = -1;                            // the length field, when fixed
  bool streams = false;                          // may be forwarded before all of it arrives
  bool unread_ok = false;                        // over the inspect limit it passes through unread
  bool (*body)(const uint8_t*, size_t) = nullptr;
  bool (*head)(const uint8_t*, size_t) = nullptr;   // streaming types: leading fields present
};

struct FrontendTable {
  FrontendType t[256];
  constexpr FrontendTable() : t() {
    //         valid fixed streams unread_ok body        head
    t['Q'] = {true, -1, false, true, query_body, nullptr};
    t['P'] = {true, -1, false, true, parse_body, nullptr};
    t['B'] = {true, -1, true, true, bind_body, bind_head};
    t['D'] = {true, -1, false, false, describe_body, nullptr};
    t['C'] = {true, -1, false, false, describe_body, nullptr};
    t['E'] = {true, -1, false, false, execute_body, nullptr};
    t['F'] = {true, -1, true, true, function_body, nullptr};
    t['f'] = {true, -1, false, true, query_body, nullptr};   // CopyFail: one string
    t['d'] = {true, -1, true, true, any_body, nullptr};      // CopyData
    t['S'] = {true, 4, false, false, any_body, nullptr};
    t['H'] = {true, 4, false, false, any_body, nullptr};
    t['c'] = {true, 4, false, false, any_body, nullptr};
    t['X'] = {true, 4, false, false, any_body, nullptr};
  }
};
constexpr FrontendTable kFrontend;

// Backend types, and the ones pgsidecar reads (validated whole up to kMaxBackendInspect).
bool error_body(const uint8_t* b, size_t n) {   // fields: code byte + string, then a 0
  Body r{b, n};
  while (r.at < n && b[r.at] != 0)
    if (!r.skip(1) || !r.cstr()) return false;
  return r.skip(1) && r.end();
}
bool param_status_body(const uint8_t* b, size_t n) {
  Body r{b, n};
  return r.cstr() && r.cstr() && r.end();
}
bool ready_body(const uint8_t* b, size_t n) { return n == 1 && (b[0] == 'I' || b[0] == 'T' || b[0] == 'E'); }
bool auth_body(const uint8_t*, size_t n) { return n >= 4; }

struct BackendType {
  bool valid = false;
  int fixed_len = -1;
  bool read = false;                            // pgsidecar reads its body
  bool (*body)(const uint8_t*, size_t) = nullptr;
};

struct BackendTable {
  BackendType t[256];
  constexpr BackendTable() : t() {
    for (char c : {'T', 'D', 'C', 'A', 'G', 'H', 'W', 'd', 'V', 't', 'v'}) t[uint8_t(c)] = {true, -1, false, nullptr};
    // No body: ParseComplete, BindComplete, CloseComplete, CopyDone, NoData, EmptyQueryResponse, PortalSuspended.
    for (char c : {'1', '2', '3', 'c', 'n', 'I', 's'}) t[uint8_t(c)] = {true, 4, false, nullptr};
    t['Z'] = {true, 5, true, ready_body};
    t['K'] = {true, 12, true, any_body};
    t['S'] = {true, -1, true, param_status_body};
    t['E'] = {true, -1, true, error_body};
    t['N'] = {true, -1, false, nullptr};
    t['R'] = {true, -1, true, auth_body};
  }
};
constexpr BackendTable kBackend;

// The header fields and the checks every message type shares: the type exists,
// the length is within bounds and, for fixed-length types, exact.
template <class Type>
bool frame_header(const uint8_t* p, size_t avail, const Type& t, const char* side, Frame& f, std::string& error) {
  f.type = char(p[0]);
  f.len = get_u32(p + 1);
  f.total = size_t(f.len) + 1;
  f.whole = avail >= f.total;
  f.inspect = false;
  if (!t.valid) {
    error = "invalid message type " + std::to_string(unsigned(p[0])) + side;
    return false;
  }
  if (f.len < 4 || f.len > kMaxMessageLen || (t.fixed_len >= 0 && f.len != uint32_t(t.fixed_len))) {
    error = "invalid message length " + std::to_string(f.len) + " for message type '" + f.type + "'" + side;
    return false;
  }
  return true;
}

}  // namespace

bool valid_frontend_body(char type, const uint8_t* body, size_t len) {
  const FrontendType& t = kFrontend.t[uint8_t(type)];
  return t.valid && (t.fixed_len < 0 || size_t(t.fixed_len) == len + 4) && t.body(body, len);
}

bool valid_backend_body(char type, const uint8_t* body, size_t len) {
  const BackendType& t = kBackend.t[uint8_t(type)];
  return t.valid && (t.fixed_len < 0 || size_t(t.fixed_len) == len + 4) && (!t.body || t.body(body, len));
}

FrameStatus frame_frontend(const uint8_t* p, size_t avail, size_t inspect_limit, Frame& f, std::string& error) {
  if (avail < kHeaderLen) return FrameStatus::Partial;
  const FrontendType& t = kFrontend.t[p[0]];
  if (!frame_header(p, avail, t, "", f, error)) return FrameStatus::Invalid;
  const uint8_t* body = p + kHeaderLen;
  if (f.total <= inspect_limit) {
    if (!f.whole) {
      // A streaming type goes ahead once its leading fields are here; the rest follows.
      if (t.streams && (!t.head || t.head(body, avail - kHeaderLen))) return FrameStatus::Ready;
      return FrameStatus::Partial;
    }
    if (!t.body(body, f.len - 4)) {
      error = std::string("invalid message format for message type '") + f.type + "'";
      return FrameStatus::Invalid;
    }
    f.inspect = true;
    return FrameStatus::Ready;
  }
  // Larger than pgsidecar reads: streams through unread, but a Bind's names must be readable.
  if (!t.unread_ok) {
    error = std::string("message type '") + f.type + "' too long";
    return FrameStatus::Invalid;
  }
  if (!t.head) return FrameStatus::Ready;
  size_t head_avail = std::min(avail, std::max(inspect_limit, kHeaderLen)) - kHeaderLen;
  if (t.head(body, head_avail)) return FrameStatus::Ready;
  if (avail < inspect_limit) return FrameStatus::Partial;
  error = std::string("leading fields of message type '") + f.type + "' too long";
  return FrameStatus::Invalid;
}

FrameStatus frame_backend(const uint8_t* p, size_t avail, Frame& f, std::string& error) {
  if (avail < kHeaderLen) return FrameStatus::Partial;
  const BackendType& t = kBackend.t[p[0]];
  if (!frame_header(p, avail, t, " from server", f, error)) return FrameStatus::Invalid;
  if (!t.read) return FrameStatus::Ready;
  if (f.total > kMaxBackendInspect) {
    if (f.type == 'E') return FrameStatus::Ready;   // forwarded unread
    error = std::string("oversized message '") + f.type + "' from server";
    return FrameStatus::Invalid;
  }
  if (!f.whole) return FrameStatus::Partial;
  if (t.body && !t.body(p + kHeaderLen, f.len - 4)) {
    error = std::string("invalid message format for message type '") + f.type + "' from server";
    return FrameStatus::Invalid;
  }
  f.inspect = true;
  return FrameStatus::Ready;
}

}  // namespace pg
