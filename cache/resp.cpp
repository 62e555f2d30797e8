#include "cache/resp.h"

#include <algorithm>
#include <charconv>
#include <cstring>

namespace cache::resp {
namespace {

void append_header(std::string& out, char type, size_t n) {
  char buf[24];
  buf[0] = type;
  char* end = std::to_chars(buf + 1, buf + sizeof buf - 2, n).ptr;
  *end++ = '\r';
  *end++ = '\n';
  out.append(buf, size_t(end - buf));
}

bool to_ll(std::string_view s, long long& out) {
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return !s.empty() && ec == std::errc() && end == s.data() + s.size();
}

}  // namespace

void encode(std::string& out, const std::vector<std::string>& argv) {
  append_header(out, '*', argv.size());
  for (const std::string& a : argv) {
    append_header(out, '$', a.size());
    out += a;
    out += "\r\n";
  }
}

Parser::Status Parser::fail(std::string why) {
  error_ = std::move(why);
  return Status::Invalid;
}

RedisReply& Parser::open_value() {
  if (stack_.empty()) {
    root_ = RedisReply{};
    return root_;
  }
  // Only the innermost open array grows, so no pointer in stack_ moves.
  return stack_.back().array->elements.emplace_back();
}

bool Parser::finish_value() {
  while (!stack_.empty()) {
    if (--stack_.back().left > 0) return false;
    stack_.pop_back();   // that array is whole: one more value of its parent
  }
  return true;
}

Parser::Status Parser::next(std::string_view& in, RedisReply& out) {
  if (!error_.empty()) return Status::Invalid;
  while (!in.empty()) {
    bool whole = false;
    switch (state_) {
      case State::Line: {
        const char* nl = static_cast<const char*>(std::memchr(in.data(), '\n', in.size()));
        size_t take = nl ? size_t(nl - in.data()) + 1 : in.size();
        if (line_.size() + take > kMaxLine + 2) return fail("a reply line longer than 64 KB");
        used_ += take;
        if (used_ > max_reply_) return fail("a reply larger than " + std::to_string(max_reply_) + " bytes");
        line_.append(in.data(), nl ? take - 1 : take);
        in.remove_prefix(take);
        if (!nl) return Status::More;
        if (line_.size() < 2 || line_.back() != '\r') return fail("a reply line without CR LF or type");
        line_.pop_back();
        const char type = line_[0];
        std::string_view body = std::string_view(line_).substr(1);
        long long n = 0;
        if ((type == ':' || type == '$' || type == '*') && !to_ll(body, n)) return fail("a bad number in a reply");
        RedisReply& v = open_value();
        switch (type) {
          case '+':
          case '-':
            v.type = type == '+' ? RedisReply::Type::Status : RedisReply::Type::Error;
            v.str.assign(body);
            whole = finish_value();
            break;
          case ':':
            v.type = RedisReply::Type::Integer;
            v.integer = n;
            whole = finish_value();
            break;
          case '$':
            if (n < -1 || (n >= 0 && size_t(n) + 2 > max_reply_ - used_))
              return fail("a bulk string of " + std::to_string(n) + " bytes");
            if (n == -1) {
              v.type = RedisReply::Type::Nil;
              whole = finish_value();
              break;
            }
            v.type = RedisReply::Type::String;
            v.str.reserve(std::min<size_t>(size_t(n), 64 << 10));
            bulk_ = &v;
            bulk_left_ = size_t(n);
            state_ = State::Bulk;
            break;
          case '*':
            // Each element is charged its memory up front: a count the limit cannot hold is refused now.
            if (n < -1 || (n > 0 && size_t(n) > (max_reply_ - used_) / sizeof(RedisReply)))
              return fail("an array of " + std::to_string(n) + " elements");
            if (n > 0) used_ += size_t(n) * sizeof(RedisReply);
            if (n <= 0) {
              v.type = n == 0 ? RedisReply::Type::Array : RedisReply::Type::Nil;
              whole = finish_value();
              break;
            }
            if (stack_.size() >= size_t(kMaxDepth)) return fail("arrays nested deeper than 8");
            v.type = RedisReply::Type::Array;
            stack_.push_back({&v, n});
            break;
          default:
            return fail("an unexpected reply type byte " + std::to_string(uint8_t(type)));
        }
        line_.clear();
        break;
      }
      case State::Bulk: {
        size_t n = std::min(bulk_left_, in.size());
        bulk_->str.append(in.data(), n);
        in.remove_prefix(n);
        used_ += n;
        bulk_left_ -= n;
        if (bulk_left_ == 0) {
          state_ = State::BulkEnd;
          bulk_left_ = 2;
        }
        break;
      }
      case State::BulkEnd:
        if (in[0] != (bulk_left_ == 2 ? '\r' : '\n')) return fail("a bulk string without CR LF after it");
        in.remove_prefix(1);
        used_++;
        if (used_ > max_reply_) return fail("a reply larger than " + std::to_string(max_reply_) + " bytes");
        if (--bulk_left_ == 0) {
          state_ = State::Line;
          bulk_ = nullptr;
          whole = finish_value();
        }
        break;
    }
    if (whole) {
      out = std::move(root_);
      root_ = RedisReply{};
      used_ = 0;
      return Status::Reply;
    }
  }
  return Status::More;
}

}  // namespace cache::resp
