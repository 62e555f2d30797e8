#include "proxy/protocol.h"

namespace pg {

uint32_t Reader::u32() {
  if (remaining() < 4) { ok_ = false; p_ = end_; return 0; }
  uint32_t v = get_u32(p_);
  p_ += 4;
  return v;
}

uint16_t Reader::u16() {
  if (remaining() < 2) { ok_ = false; p_ = end_; return 0; }
  uint16_t v = uint16_t((p_[0] << 8) | p_[1]);
  p_ += 2;
  return v;
}

uint8_t Reader::u8() {
  if (remaining() < 1) { ok_ = false; return 0; }
  return *p_++;
}

std::string_view Reader::cstr() {
  const void* nul = std::memchr(p_, 0, remaining());
  if (!nul) { ok_ = false; p_ = end_; return {}; }
  std::string_view s(reinterpret_cast<const char*>(p_), static_cast<const uint8_t*>(nul) - p_);
  p_ = static_cast<const uint8_t*>(nul) + 1;
  return s;
}

std::string_view Reader::bytes(size_t n) {
  if (remaining() < n) { ok_ = false; p_ = end_; return {}; }
  std::string_view s(reinterpret_cast<const char*>(p_), n);
  p_ += n;
  return s;
}

Writer::Writer(std::string& out, char type) : out_(out) {
  if (type) out_.push_back(type);
  len_pos_ = out_.size();
  out_.append(4, '\0');
}
Writer& Writer::u32(uint32_t v) {
  uint8_t b[4];
  put_u32(b, v);
  out_.append(reinterpret_cast<char*>(b), 4);
  return *this;
}
Writer& Writer::u16(uint16_t v) {
  out_.push_back(char(v >> 8));
  out_.push_back(char(v & 0xff));
  return *this;
}
Writer& Writer::u8(uint8_t v) { out_.push_back(char(v)); return *this; }
Writer& Writer::cstr(std::string_view s) { out_.append(s); out_.push_back('\0'); return *this; }
Writer& Writer::bytes(std::string_view s) { out_.append(s); return *this; }
void Writer::finish() {
  put_u32(reinterpret_cast<uint8_t*>(&out_[len_pos_]), uint32_t(out_.size() - len_pos_));
}

ErrorInfo parse_error(const uint8_t* body, size_t len) {
  ErrorInfo e;
  e.severity.clear();
  Reader r(body, len);
  while (r.ok() && r.remaining() > 0) {
    char field = char(r.u8());
    if (field == 0) break;
    std::string_view v = r.cstr();
    switch (field) {
      case 'V': e.severity = v; break;             // non-localized severity wins
      case 'S': if (e.severity.empty()) e.severity = v; break;
      case 'C': e.code = v; break;
      case 'M': e.message = v; break;
      case 'D': e.detail = v; break;
      default: break;
    }
  }
  return e;
}

void write_error(std::string& out, const ErrorInfo& e) {
  Writer w(out, 'E');
  w.u8('S').cstr(e.severity).u8('V').cstr(e.severity).u8('C').cstr(e.code).u8('M').cstr(e.message);
  if (!e.detail.empty()) w.u8('D').cstr(e.detail);
  if (!e.routine.empty()) w.u8('R').cstr(e.routine);
  w.u8(0).finish();
}

void write_error(std::string& out, std::string_view severity, std::string_view code, std::string_view message) {
  write_error(out, ErrorInfo{std::string(severity), std::string(code), std::string(message), {}});
}

void write_auth(std::string& out, uint32_t code, std::string_view data) {
  Writer(out, 'R').u32(code).bytes(data).finish();
}

void write_param_status(std::string& out, std::string_view name, std::string_view value) {
  Writer(out, 'S').cstr(name).cstr(value).finish();
}

void write_backend_key(std::string& out, uint32_t pid, uint32_t key) {
  Writer(out, 'K').u32(pid).u32(key).finish();
}

void write_ready(std::string& out, char tx_status) { Writer(out, 'Z').u8(uint8_t(tx_status)).finish(); }

void write_query(std::string& out, std::string_view sql) { Writer(out, 'Q').cstr(sql).finish(); }

void write_terminate(std::string& out) { Writer(out, 'X').finish(); }

void write_startup(std::string& out, const std::vector<std::pair<std::string, std::string>>& params) {
  Writer w(out, 0);
  w.u32(kProtocolV3);
  for (const auto& [k, v] : params) w.cstr(k).cstr(v);
  w.u8(0).finish();
}

void write_cancel(std::string& out, uint32_t pid, uint32_t key) {
  Writer(out, 0).u32(kCancelRequest).u32(pid).u32(key).finish();
}

bool parse_startup(const uint8_t* body, size_t len, StartupPacket& out) {
  Reader r(body, len);
  out.code = r.u32();
  if (!r.ok()) return false;
  if (out.code == kCancelRequest) {
    out.cancel_pid = r.u32();
    out.cancel_key = r.u32();
    return r.ok() && r.remaining() == 0;
  }
  if (out.code != kProtocolV3) return true;   // SSL/GSS requests and unknown versions carry nothing we need
  while (r.ok() && r.remaining() > 0) {
    std::string_view key = r.cstr();
    if (key.empty()) return r.ok() && r.remaining() == 0;
    std::string_view value = r.cstr();
    if (!r.ok()) return false;
    out.params.emplace_back(key, value);
  }
  return false;   // ran out before the final terminator
}

}  // namespace pg
