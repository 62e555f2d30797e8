#include "lockd/request.h"

#include <algorithm>
#include <cctype>

namespace lockd {
namespace {

using json = nlohmann::json;

bool blank(std::string_view line) {
  return std::all_of(line.begin(), line.end(), [](char ch) { return ch == ' ' || ch == '\t' || ch == '\r'; });
}

// Whether arrays and objects nest deeper than kMaxNesting (brackets inside strings do not count).
bool too_deep(std::string_view line) {
  size_t depth = 0;
  bool in_string = false, escaped = false;
  for (char ch : line) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (ch == '\\') escaped = true;
      else if (ch == '"') in_string = false;
    } else if (ch == '"') {
      in_string = true;
    } else if (ch == '[' || ch == '{') {
      if (++depth > kMaxNesting) return true;
    } else if ((ch == ']' || ch == '}') && depth > 0) {
      --depth;
    }
  }
  return false;
}

enum class Name { None, Required, Optional };

struct OpSpec {
  const char* name;
  Op op;
  Name takes_name;
  bool takes_timeout;
};

// Indexed by Op.
constexpr OpSpec kOpSpecs[kOps] = {
    {"status", Op::Status, Name::None, false},
    {"migrate", Op::Migrate, Name::None, false},
    {"lock", Op::Lock, Name::Required, true},
    {"unlock", Op::Unlock, Name::Required, false},
    {"locks", Op::Locks, Name::Optional, false},
};

// "1", "20240101", "1.2": what migration file names carry, at most 64 bytes.
bool is_version(const std::string& v) {
  if (v.empty() || v.size() > 64 || v.front() == '.' || v.back() == '.') return false;
  for (size_t i = 0; i < v.size(); i++)
    if (!(std::isdigit(static_cast<unsigned char>(v[i])) || (v[i] == '.' && v[i - 1] != '.'))) return false;
  return true;
}

const OpSpec* find_op(const json& op) {
  if (!op.is_string()) return nullptr;
  const std::string& s = op.get_ref<const std::string&>();
  for (const OpSpec& spec : kOpSpecs)
    if (s == spec.name) return &spec;
  return nullptr;
}

}  // namespace

const char* op_name(Op op) { return kOpSpecs[size_t(op)].name; }

// ------------------------------------------------------------ LineReader

size_t LineReader::room() const {
  if (too_long_ || queued_ >= kMaxQueued) return 0;
  return kMaxBuffered - buffered();
}

size_t LineReader::feed(std::string_view bytes) {
  bytes = bytes.substr(0, room());
  if (bytes.empty()) return 0;
  if (pos_ > 0) {   // drop what was taken, so the buffer never holds more than kMaxBuffered
    buf_.erase(0, pos_);
    tail_ -= pos_;
    scanned_ -= pos_;
    pos_ = 0;
  }
  buf_.append(bytes);
  scan();
  return bytes.size();
}

// Moves tail_ past the lines the new bytes completed, counting the non-blank ones.
void LineReader::scan() {
  while (!too_long_) {
    size_t nl = buf_.find('\n', scanned_);
    if (nl == std::string::npos) {
      scanned_ = buf_.size();
      too_long_ = buf_.size() - tail_ >= kMaxLine;   // not even its newline would fit
      return;
    }
    if (nl + 1 - tail_ > kMaxLine) {
      too_long_ = true;
      return;
    }
    if (!blank(std::string_view(buf_).substr(tail_, nl - tail_))) queued_++;
    tail_ = scanned_ = nl + 1;
  }
}

LineReader::Next LineReader::next() {
  while (pos_ < tail_) {   // [pos_, tail_) holds complete lines only
    size_t nl = buf_.find('\n', pos_);
    std::string_view line = std::string_view(buf_).substr(pos_, nl - pos_);
    pos_ = nl + 1;
    if (blank(line)) continue;
    queued_--;
    return {Status::Line, line};
  }
  if (too_long_) return {Status::TooLong, {}};
  if (pos_ == buf_.size()) {   // all taken: an idle connection holds no buffer
    std::string().swap(buf_);
    pos_ = tail_ = scanned_ = 0;
  }
  return {Status::More, {}};
}

// ------------------------------------------------------------ requests

std::variant<Request, RequestError> parse_request(std::string_view line) {
  const char* example = "each line must be one JSON object, such as {\"op\":\"status\"}";
  if (too_deep(line)) {
    return RequestError{nullptr, "invalid", "bad_request",
                        std::string(example) + ", nested at most " + std::to_string(kMaxNesting) + " deep"};
  }
  json req = json::parse(line.begin(), line.end(), nullptr, false);
  if (req.is_discarded() || !req.is_object()) return RequestError{nullptr, "invalid", "bad_request", example};

  json id = req.contains("id") ? req["id"] : json(nullptr);
  auto op = req.find("op");
  const OpSpec* spec = op == req.end() ? nullptr : find_op(*op);
  if (!spec) {
    std::string shown = op == req.end() ? "(missing)" : op->dump(-1, ' ', false, json::error_handler_t::replace);
    return RequestError{id, "invalid", "unknown_op", "unknown op " + shown + "; ops: status, migrate, lock, unlock, locks"};
  }
  auto fail = [&](const char* code, std::string message) {
    return RequestError{id, spec->name, code, std::move(message)};
  };

  Request r{spec->op, id, "", std::nullopt, "", ""};
  if (spec->takes_name != Name::None) {
    auto name = req.find("name");
    if (name == req.end() && spec->takes_name == Name::Required)
      return fail("bad_request", std::string(spec->name) + " needs \"name\": a string");
    if (name != req.end()) {
      if (!name->is_string()) return fail("bad_request", std::string(spec->name) + " needs \"name\": a string");
      r.name = name->get<std::string>();
      if (spec->takes_name == Name::Required && (r.name.empty() || r.name.size() > kMaxLockName))
        return fail("bad_name", "a lock name is 1 to " + std::to_string(kMaxLockName) + " bytes");
    }
  }
  if (spec->takes_timeout && req.contains("timeout_ms")) {
    const json& t = req["timeout_ms"];
    // An unsigned above INT64_MAX reads as negative here, and is refused with the rest.
    if (!t.is_number_integer() || t.get<int64_t>() < 0) return fail("bad_request", "timeout_ms must be an integer >= 0");
    r.timeout_ms = t.get<int64_t>();
  }
  for (auto [field, out] : {std::pair{"retry", &r.retry}, std::pair{"to", &r.to}}) {
    if (spec->op != Op::Migrate || !req.contains(field)) continue;
    const json& v = req[field];
    if (!v.is_string() || !is_version(v.get_ref<const std::string&>()))
      return fail("bad_request", std::string(field) + " must be a version: digits, with dots between parts (1, 20240101, 1.2)");
    *out = v.get<std::string>();
  }
  if (!r.retry.empty() && !r.to.empty()) return fail("bad_request", "migrate takes retry or to, not both");
  return r;
}

}  // namespace lockd
