// Fuzzes the RESP parser (cache/resp.h): Redis replies are bytes from the network.
//
// The first input byte picks where the rest is cut in two; both halves are fed in
// turn. Invariants: the same replies come out as from the uncut input, each
// re-encoded reply parses back to itself, and nothing is read or kept beyond the
// 64 KB reply limit used here. Memory errors, undefined behaviour and leaks are
// caught by ASan/UBSan/LSan; broken invariants abort with a message.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "cache/resp.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using cache::RedisReply;
using cache::resp::Parser;

constexpr size_t kLimit = 64 << 10;

// A reply's canonical encoding, iteratively (depth is bounded by the parser anyway).
std::string encode(const RedisReply& root) {
  std::string out;
  std::vector<const RedisReply*> todo{&root};
  while (!todo.empty()) {
    const RedisReply* r = todo.back();
    todo.pop_back();
    switch (r->type) {
      case RedisReply::Type::Status: out += "+" + r->str + "\r\n"; break;
      case RedisReply::Type::Error: out += "-" + r->str + "\r\n"; break;
      case RedisReply::Type::Integer: out += ":" + std::to_string(r->integer) + "\r\n"; break;
      case RedisReply::Type::String: out += "$" + std::to_string(r->str.size()) + "\r\n" + r->str + "\r\n"; break;
      case RedisReply::Type::Nil: out += "$-1\r\n"; break;
      case RedisReply::Type::Array:
        out += "*" + std::to_string(r->elements.size()) + "\r\n";
        for (size_t i = r->elements.size(); i-- > 0;) todo.push_back(&r->elements[i]);
        break;
      case RedisReply::Type::Failed: FUZZ_CHECK(false);
    }
  }
  return out;
}

struct Outcome {
  std::vector<std::string> replies;   // canonical encodings
  Parser::Status last = Parser::Status::More;
};

Outcome run(const std::vector<std::string_view>& pieces) {
  Parser p(kLimit);
  Outcome o;
  for (std::string_view piece : pieces) {
    RedisReply r;
    while ((o.last = p.next(piece, r)) == Parser::Status::Reply) o.replies.push_back(encode(r));
    if (o.last == Parser::Status::Invalid) break;
    FUZZ_CHECK(piece.empty());
  }
  return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  size_t cut = in.empty() ? 0 : data[0] % (in.size() + 1);
  Outcome whole = run({in});
  Outcome split = run({in.substr(0, cut), in.substr(cut)});
  FUZZ_CHECK(whole.replies == split.replies);
  FUZZ_CHECK(whole.last == split.last);
  for (const std::string& e : whole.replies) {
    FUZZ_CHECK(e.size() <= 2 * kLimit);   // a reply holds no more than its input could say
    Outcome again = run({e});
    FUZZ_CHECK(again.replies.size() == 1 && again.replies[0] == e);
  }
  return 0;
}
