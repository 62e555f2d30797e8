// libFuzzer target for metrics::http::parse_request (metrics/http_request.h).
// The first byte picks where the rest is split, as if it arrived in two reads:
// the first part is parsed on its own, then the whole. Checked: nothing reads
// past the bytes given (ASan), a head never ends past the limit or the bytes,
// the views lie inside the bytes, and a split never changes the answer (an
// answer for the first part, other than Incomplete, is the answer for the whole).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "metrics/http_request.h"

namespace {

using metrics::http::Parse;
using metrics::http::ParseResult;

void check(bool ok) {
  if (!ok) std::abort();
}

bool inside(std::string_view part, std::string_view whole) {
  return part.empty() || (part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size());
}

void check_result(const ParseResult& r, std::string_view bytes, size_t max_head) {
  if (r.status != Parse::Complete) return;
  check(r.head.size >= 4 && r.head.size <= bytes.size() && r.head.size <= max_head);
  check(bytes.substr(r.head.size - 4, 4) == "\r\n\r\n");
  check(!r.head.method.empty() && inside(r.head.method, bytes));
  check(!r.head.target.empty() && r.head.target.front() == '/' && inside(r.head.target, bytes));
  check(!r.head.path.empty() && r.head.target.substr(0, r.head.path.size()) == r.head.path);
  check(r.head.minor_version >= 0 && r.head.minor_version <= 9);
}

bool same(const ParseResult& a, const ParseResult& b) {
  return a.status == b.status && a.head.method == b.head.method && a.head.target == b.head.target &&
         a.head.path == b.head.path && a.head.minor_version == b.head.minor_version && a.head.size == b.head.size;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  size_t split = bytes.empty() ? 0 : data[0] * bytes.size() / 255;
  // The real limit, and a small one so that inputs reach it.
  for (size_t max_head : {metrics::http::kMaxHeadBytes, size_t(64)}) {
    ParseResult first = metrics::http::parse_request(bytes.substr(0, split), max_head);
    ParseResult whole = metrics::http::parse_request(bytes, max_head);
    check_result(first, bytes, max_head);
    check_result(whole, bytes, max_head);
    if (first.status != Parse::Incomplete) check(same(first, whole));
  }
  return 0;
}
