// Fuzzes the result cache's Redis value codec (cache/value_codec.h): values read
// back from Redis are untrusted bytes.
//
// The input is used twice:
//  1. as a stored value for cache::decode_value with a fixed expected key and the
//     default max_entry_bytes (1 MiB) as the bound, as ResultCache does: whatever
//     it accepts must be a well-formed response within the bound that re-encodes
//     (raw and zstd) and decodes to the same bytes;
//  2. as a response for cache::valid_response, and through encode_value /
//     decode_value: a round trip succeeds exactly when the response is valid,
//     and never under another key.
// Memory errors, undefined behaviour and leaks are caught by ASan/UBSan/LSan;
// broken invariants abort with a message.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "cache/value_codec.h"
#include "conf/config.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

// A key as the result cache builds them: database, statement, parameters (NULs inside).
const std::string kKey = std::string("app\0SELECT * FROM users WHERE id = $1\0", 38) + "\x01\x02params";
const std::string kOtherKey = std::string("app\0SELECT * FROM users WHERE id = $2\0", 38) + "\x01\x02params";
constexpr size_t kMaxResponse = 1 << 20;   // conf::ResultCache::max_entry_bytes' default

void round_trip(std::string_view response, bool valid, bool has_row_description) {
  for (auto compression : {conf::Compression::None, conf::Compression::Zstd}) {
    std::string stored = cache::encode_value(kKey, response, compression);
    std::string decoded;
    bool rd = !has_row_description;
    bool ok = cache::decode_value(stored, kKey, decoded, rd, kMaxResponse);
    FUZZ_CHECK(ok == valid);
    if (ok) {
      FUZZ_CHECK(decoded == response);
      FUZZ_CHECK(rd == has_row_description);
    }
    std::string other;
    FUZZ_CHECK(!cache::decode_value(stored, kOtherKey, other, rd, kMaxResponse));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);

  // 1. Untrusted stored value.
  std::string response;
  bool has_row_description = false;
  if (cache::decode_value(input, kKey, response, has_row_description, kMaxResponse)) {
    FUZZ_CHECK(response.size() <= kMaxResponse);
    bool rd = false;
    FUZZ_CHECK(cache::valid_response(response, rd));
    FUZZ_CHECK(rd == has_row_description);
    round_trip(response, true, has_row_description);
  }

  // 2. The input as a response (bounded: encoding copies it twice).
  if (size <= kMaxResponse) {
    bool rd = false;
    bool valid = cache::valid_response(input, rd);
    round_trip(input, valid, rd);
  }
  return 0;
}
