// The session parameters PostgreSQL reports with ParameterStatus and that
// pgsidecar keeps per client in transaction mode, re-applying them with SET
// when the client lands on a server whose values differ.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <strings.h>

namespace proxy {

inline constexpr std::array<std::string_view, 6> kTrackedParams = {
    "application_name", "client_encoding", "DateStyle", "IntervalStyle", "TimeZone", "standard_conforming_strings"};

// One value per tracked parameter, packed into one string (each value ends in a
// NUL), so that a client or server keeps one allocation, not six strings.
class TrackedValues {
 public:
  static constexpr size_t kCount = kTrackedParams.size();
  static constexpr size_t size() { return kCount; }
  std::string_view operator[](size_t i) const { return {packed_.data() + begin(i), end_[i] - begin(i)}; }
  const char* c_str(size_t i) const { return packed_.data() + begin(i); }
  void set(size_t i, std::string_view value) {
    size_t at = begin(i), old = end_[i] - at;
    packed_.replace(at, old, value.data(), value.size());   // value may not point into packed_
    for (size_t j = i; j < size(); j++) end_[j] = uint32_t(end_[j] - old + value.size());
  }

 private:
  size_t begin(size_t i) const { return i == 0 ? 0 : end_[i - 1] + 1; }
  static_assert(kCount == 6);
  std::string packed_ = std::string(kCount, '\0');
  std::array<uint32_t, kCount> end_{0, 1, 2, 3, 4, 5};   // where value i's NUL is
};

// Index into kTrackedParams (names compare case-insensitively, as GUC names do), or -1.
inline int tracked_index(std::string_view name) {
  for (size_t i = 0; i < kTrackedParams.size(); i++)
    if (name.size() == kTrackedParams[i].size() && strncasecmp(name.data(), kTrackedParams[i].data(), name.size()) == 0)
      return int(i);
  return -1;
}

}  // namespace proxy
