// The session parameters PostgreSQL reports with ParameterStatus and that
// pgsidecar keeps per client in transaction mode, re-applying them with SET
// when the client lands on a server whose values differ.
#pragma once
#include <array>
#include <string>
#include <string_view>
#include <strings.h>

namespace proxy {

inline constexpr std::array<std::string_view, 6> kTrackedParams = {
    "application_name", "client_encoding", "DateStyle", "IntervalStyle", "TimeZone", "standard_conforming_strings"};

using TrackedValues = std::array<std::string, kTrackedParams.size()>;

// Index into kTrackedParams (names compare case-insensitively, as GUC names do), or -1.
inline int tracked_index(std::string_view name) {
  for (size_t i = 0; i < kTrackedParams.size(); i++)
    if (name.size() == kTrackedParams[i].size() && strncasecmp(name.data(), kTrackedParams[i].data(), name.size()) == 0)
      return int(i);
  return -1;
}

}  // namespace proxy
