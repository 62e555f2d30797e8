// The schema version: a counter that moves on whenever the database schema may
// have changed (DDL passed through the proxy, a NOTIFY on the configured channel).
// Server-side prepared statements remember the version they were prepared under
// and are prepared again before their next use once it has moved on, so a changed
// table never meets a plan that expects its old row type. The result cache will
// keys on it for the same reason, and drops everything it holds when it moves.
#pragma once
#include <cstdint>
#include <functional>
#include <string_view>

namespace cache {

class SchemaVersion {
 public:
  uint64_t current() const { return version_; }
  void bump(std::string_view reason);
  uint64_t bumps() const { return version_ - 1; }
  // Called after every bump (one observer: the result cache).
  void on_bump(std::function<void()> cb) { on_bump_ = std::move(cb); }

 private:
  uint64_t version_ = 1;
  std::function<void()> on_bump_;   // starts above 0, so 0 can mean "prepared under an unknown version"
};

}  // namespace cache
