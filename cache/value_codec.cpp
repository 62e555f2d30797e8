#include "cache/value_codec.h"

#include <zlib.h>
#include <zstd.h>

#include <cstdint>
#include <cstdio>

namespace cache {
namespace {

constexpr std::string_view kMagic = "PGSC1";
constexpr uint8_t kFlagZstd = 1;

uint32_t get_u32(const char* p) {
  auto b = reinterpret_cast<const uint8_t*>(p);
  return uint32_t(b[0]) << 24 | uint32_t(b[1]) << 16 | uint32_t(b[2]) << 8 | b[3];
}
void put_u32(std::string& out, uint32_t v) {
  char b[4] = {char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
  out.append(b, 4);
}
uint32_t crc(std::string_view s) {
  return uint32_t(crc32(0, reinterpret_cast<const Bytef*>(s.data()), uInt(s.size())));
}

}  // namespace

bool valid_response(std::string_view bytes, bool& has_row_description) {
  has_row_description = false;
  size_t pos = 0;
  bool first = true;
  while (pos + 5 <= bytes.size()) {
    char type = bytes[pos];
    uint32_t len = get_u32(bytes.data() + pos + 1);
    if (len < 4 || len > bytes.size() - pos - 1) return false;
    pos += size_t(len) + 1;
    if (type == 'C') return pos == bytes.size();
    if (type == 'T' && first) has_row_description = true;
    else if (type != 'D') return false;
    first = false;
  }
  return false;
}

std::string encode_value(std::string_view key, std::string_view response, conf::Compression compression) {
  std::string out(kMagic);
  out.push_back(0);   // flags, set below
  put_u32(out, uint32_t(key.size()));
  out.append(key);
  put_u32(out, uint32_t(response.size()));
  put_u32(out, crc(response));
  if (compression == conf::Compression::Zstd) {
    size_t at = out.size(), bound = ZSTD_compressBound(response.size());
    out.resize(at + bound);
    size_t n = ZSTD_compress(out.data() + at, bound, response.data(), response.size(), 1);
    if (!ZSTD_isError(n) && n < response.size()) {
      out.resize(at + n);
      out[kMagic.size()] = char(kFlagZstd);
      return out;
    }
    out.resize(at);
  }
  out.append(response);
  return out;
}

bool decode_value(std::string_view stored, std::string_view key, std::string& response, bool& has_row_description,
                  size_t max_response) {
  size_t head = kMagic.size() + 1 + 4;
  if (stored.size() < head || stored.substr(0, kMagic.size()) != kMagic) return false;
  uint8_t flags = uint8_t(stored[kMagic.size()]);
  uint32_t key_len = get_u32(stored.data() + kMagic.size() + 1);
  if (flags > kFlagZstd || key_len != key.size() || stored.size() - head < size_t(key_len) + 8) return false;
  if (stored.substr(head, key_len) != key) return false;
  size_t at = head + key_len;
  uint32_t raw_len = get_u32(stored.data() + at), sum = get_u32(stored.data() + at + 4);
  std::string_view payload = stored.substr(at + 8);
  if (raw_len > max_response) return false;
  if (flags & kFlagZstd) {
    unsigned long long declared = ZSTD_getFrameContentSize(payload.data(), payload.size());
    if (declared != raw_len) return false;
    response.resize(raw_len);
    size_t n = ZSTD_decompress(response.data(), raw_len, payload.data(), payload.size());
    if (ZSTD_isError(n) || n != raw_len) return false;
  } else {
    if (payload.size() != raw_len) return false;
    response.assign(payload);
  }
  return crc(response) == sum && valid_response(response, has_row_description);
}

std::string key_digest(std::string_view key) {
  // FNV-1a over the key forwards and backwards: stable across builds and hosts.
  uint64_t a = 0xcbf29ce484222325ull, b = a;
  for (unsigned char c : key) a = (a ^ c) * 1099511628211ull;
  for (auto it = key.rbegin(); it != key.rend(); ++it) b = (b ^ uint8_t(*it)) * 1099511628211ull;
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(a), static_cast<unsigned long long>(b));
  return buf;
}

}  // namespace cache
