// RESP2, the Redis wire protocol: commands out, replies in.
//
// The parser is incremental (bytes arrive in any pieces), iterative (an array
// nests by an explicit stack, never by recursion) and bounded: one reply may
// take at most max_reply_bytes, counting its input and sizeof(RedisReply) per
// array element (so the limit bounds memory too), and nest at most kMaxDepth
// arrays deep.
// Anything else (RESP3 types, a bad length, a line without CR LF) is Invalid,
// and the connection it came from is to be dropped.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace cache {

struct RedisReply {
  enum class Type : uint8_t { Failed, Nil, Integer, String, Status, Array, Error };
  Type type = Type::Failed;   // Failed: not sent, timed out, or the connection was lost
  long long integer = 0;
  std::string str;            // String, Status, Error
  std::vector<RedisReply> elements;
  bool ok() const { return type != Type::Failed && type != Type::Error; }
};

namespace resp {

// Appends argv as one command: an array of bulk strings.
void encode(std::string& out, const std::vector<std::string>& argv);

class Parser {
 public:
  static constexpr int kMaxDepth = 8;
  static constexpr size_t kMaxLine = 64 << 10;   // status, error, integer and length lines

  explicit Parser(size_t max_reply_bytes) : max_reply_(max_reply_bytes) {}
  Parser(const Parser&) = delete;              // holds pointers into itself
  Parser& operator=(const Parser&) = delete;

  enum class Status { Reply, More, Invalid };
  // Consumes bytes from the front of in. Reply: out holds the next whole reply
  // (in may have bytes left: call again). More: all of in was used, the reply
  // is not whole yet. Invalid: error() says why; the parser is then useless.
  Status next(std::string_view& in, RedisReply& out);
  const std::string& error() const { return error_; }

 private:
  Status fail(std::string why);
  // A value is whole: into its parent array, or out as the reply. True when the reply is whole.
  bool finish_value();
  RedisReply& open_value();   // the value the next line starts: the root or a new array element

  struct Frame {
    RedisReply* array;
    long long left;   // elements still to come
  };
  enum class State : uint8_t { Line, Bulk, BulkEnd };

  size_t max_reply_;
  State state_ = State::Line;
  std::string line_;            // the line so far, without CR LF
  RedisReply root_;
  std::vector<Frame> stack_;    // open arrays, outermost first
  RedisReply* bulk_ = nullptr;  // the bulk string being read (State::Bulk)
  size_t bulk_left_ = 0;
  size_t used_ = 0;             // of max_reply_: input bytes and elements of the reply so far
  std::string error_;
};

}  // namespace resp
}  // namespace cache
