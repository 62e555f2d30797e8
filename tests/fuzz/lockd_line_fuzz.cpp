// libFuzzer target for lockd's input side (lockd/request.h): the bytes a peer
// might send, in two reads split where the first input byte says, framed by
// LineReader and each line parsed by parse_request(), as lockd.cpp does it,
// without a socket or a database. Besides crashes and sanitizer reports it
// checks the bounds lockd relies on: the reader never holds more than
// kMaxBuffered bytes, never yields a line over kMaxLine, and makes progress.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <variant>

#include "lockd/request.h"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

// Takes every line the reader has, as serve() does; false once the connection would be closed.
bool drain(lockd::LineReader& reader) {
  for (;;) {
    lockd::LineReader::Next next = reader.next();
    if (next.status == lockd::LineReader::Status::More) return true;
    if (next.status == lockd::LineReader::Status::TooLong) return false;
    check(next.line.size() < lockd::LineReader::kMaxLine);
    auto parsed = lockd::parse_request(next.line);
    if (auto* r = std::get_if<lockd::Request>(&parsed)) {
      check(r->op != lockd::Op::Lock || (!r->name.empty() && r->name.size() <= lockd::kMaxLockName));
      check(!r->timeout_ms || *r->timeout_ms >= 0);
      (void)r->id.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);   // as an answer echoes it
    } else {
      check(!std::get<lockd::RequestError>(parsed).code.empty());
    }
  }
}

// Feeds one read's worth of bytes, in the pieces room() allows.
bool feed(lockd::LineReader& reader, std::string_view bytes) {
  while (!bytes.empty()) {
    size_t took = reader.feed(bytes);
    check(took <= bytes.size() && reader.buffered() <= lockd::LineReader::kMaxBuffered);
    bytes.remove_prefix(took);
    if (!drain(reader)) return false;
    check(reader.room() > 0);   // after a drain there is room again: no wedge
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  size_t split = rest.empty() ? 0 : size_t(data[0]) * rest.size() / 255;
  lockd::LineReader reader;
  if (feed(reader, rest.substr(0, split))) feed(reader, rest.substr(split));
  return 0;
}
