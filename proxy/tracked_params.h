// The session parameters PostgreSQL reports with ParameterStatus and that
// pgsidecar keeps per client in transaction mode, re-applying them with SET
// when the client lands on a server whose values differ.
#pragma once
#include <array>
#include <cstdint>
#include <cstring>
#include <new>
#include <string>
#include <string_view>
#include <strings.h>

namespace proxy {

inline constexpr std::array<std::string_view, 6> kTrackedParams = {
    "application_name", "client_encoding", "DateStyle", "IntervalStyle", "TimeZone", "standard_conforming_strings"};

// One value per tracked parameter, packed into one immutable block (each value
// ends in a NUL) that copies share: a client's expected values and what RESET
// returns to are most often its server's login values, so most clients hold no
// block of their own. set() copies the block first (copy-on-write). Blocks are
// one allocation with a plain count: they live on one event loop.
class TrackedValues {
 public:
  static constexpr size_t kCount = kTrackedParams.size();
  static constexpr size_t size() { return kCount; }
  TrackedValues() = default;
  TrackedValues(const TrackedValues& o) : b_(o.b_) {
    if (b_) b_->refs++;
  }
  TrackedValues& operator=(const TrackedValues& o) {
    if (o.b_) o.b_->refs++;
    drop();
    b_ = o.b_;
    return *this;
  }
  ~TrackedValues() { drop(); }

  std::string_view operator[](size_t i) const {
    return b_ ? std::string_view(b_->text + b_->begin(i), b_->end[i] - b_->begin(i)) : std::string_view();
  }
  const char* c_str(size_t i) const { return b_ ? b_->text + b_->begin(i) : ""; }
  void set(size_t i, std::string_view value) {
    if ((*this)[i] == value) return;
    // The new block is built before the old one is let go: value may point into it.
    const size_t len = (b_ ? b_->end[kCount - 1] + 1 : kCount) - (*this)[i].size() + value.size();
    Block* next = new (::operator new(sizeof(Block) + len)) Block;
    char* out = next->text;
    for (size_t j = 0; j < kCount; j++) {
      std::string_view v = j == i ? value : (*this)[j];
      if (!v.empty()) std::memcpy(out, v.data(), v.size());   // an empty one may have no data
      out += v.size();
      *out++ = '\0';
      next->end[j] = uint32_t(out - next->text - 1);
    }
    drop();
    b_ = next;
  }

 private:
  static_assert(kCount == 6);
  struct Block {
    uint32_t refs = 1;
    std::array<uint32_t, kCount> end;   // where value i's NUL is in text
    char text[];                         // the values, each ending in a NUL
    size_t begin(size_t i) const { return i == 0 ? 0 : end[i - 1] + 1; }
  };
  void drop() {
    if (b_ && --b_->refs == 0) {
      b_->~Block();
      ::operator delete(b_);
    }
  }
  Block* b_ = nullptr;   // null: every value is empty
};

// Index into kTrackedParams (names compare case-insensitively, as GUC names do), or -1.
inline int tracked_index(std::string_view name) {
  for (size_t i = 0; i < kTrackedParams.size(); i++)
    if (name.size() == kTrackedParams[i].size() && strncasecmp(name.data(), kTrackedParams[i].data(), name.size()) == 0)
      return int(i);
  return -1;
}

// The index of a name spelled as in kTrackedParams, found at compile time (hot paths).
consteval size_t tracked_at(std::string_view name) {
  for (size_t i = 0; i < kTrackedParams.size(); i++)
    if (name == kTrackedParams[i]) return i;
  throw "not a tracked parameter";
}

}  // namespace proxy
