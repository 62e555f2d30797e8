// lockd's input side without a socket: LineReader frames a connection's byte
// stream into request lines, parse_request() turns one line into a request or
// the error to answer it with. lockd.cpp feeds them what it reads;
// tests/fuzz/lockd_line_fuzz.cpp feeds them arbitrary bytes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace lockd {

// Splits a byte stream into lines, holding at most kMaxBuffered bytes whatever
// arrives: the caller reads at most room() bytes at a time, and room() is 0
// while kMaxQueued requests are waiting to be taken (the caller then stops
// reading its socket until next() has taken some). Blank lines (only spaces,
// tabs, CRs) are skipped by next(): no answer, no queue slot, a byte scan each.
class LineReader {
 public:
  static constexpr size_t kMaxLine = 8192;               // bytes, newline included
  static constexpr size_t kMaxQueued = 16;               // complete requests not yet taken
  static constexpr size_t kMaxBuffered = 2 * kMaxLine;   // so a full line fits behind queued ones

  enum class Status { Line, More, TooLong };
  struct Next {
    Status status;
    std::string_view line;   // Status::Line: the line without its '\n', valid until the next feed()
  };

  // How many bytes feed() takes now.
  size_t room() const;
  // Takes the first room() bytes of `bytes`; returns how many it took.
  size_t feed(std::string_view bytes);
  // The next request line; More when none is complete yet; TooLong (for good:
  // the rest of that line cannot be told apart from a request) once the lines
  // before an over-long one have been taken.
  Next next();
  // True when next() would return a Line or TooLong.
  bool ready() const { return queued_ > 0 || too_long_; }
  size_t queued() const { return queued_; }
  size_t buffered() const { return buf_.size() - pos_; }

 private:
  void scan();

  std::string buf_;
  size_t pos_ = 0;       // start of the first line not taken
  size_t tail_ = 0;      // start of the first line without its '\n' yet
  size_t scanned_ = 0;   // bytes from tail_ on searched for '\n' already
  size_t queued_ = 0;    // non-blank lines in [pos_, tail_)
  bool too_long_ = false;   // the line at tail_ is over kMaxLine
};

enum class Op { Status, Migrate, Lock, Unlock, Locks };
inline constexpr size_t kOps = 5;
const char* op_name(Op op);

inline constexpr size_t kMaxLockName = 200;   // bytes
// Requests are flat objects; an "id" may nest, up to this many arrays/objects
// deep (the JSON library copies and prints values recursively).
inline constexpr size_t kMaxNesting = 16;

struct Request {
  Op op;
  nlohmann::json id;                   // echoed in every answer line; null: none given
  std::string name;                    // lock, unlock: 1..kMaxLockName bytes; locks: "" = every name
  std::optional<int64_t> timeout_ms;   // lock: >= 0; nullopt: lockd.lock_timeout
  std::string retry;                   // migrate: a failed version to run again; "" = none
  std::string to;                      // migrate: revert the applied versions above this one; "" = none
};

struct RequestError {
  nlohmann::json id;                   // null when the line had none (or was not an object)
  const char* op;                      // for metrics: the op, or "invalid" when there is none
  std::string code, message;
};

// One line (without '\n') as a request, or the error answer for it. Never throws.
std::variant<Request, RequestError> parse_request(std::string_view line);

}  // namespace lockd
