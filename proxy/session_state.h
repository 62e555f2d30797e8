// Settings a transaction-mode client makes with SQL, kept so that they follow the
// client from server to server and never leak to the next client. What a
// statement changes comes from the one SQL classifier (cache/classify.h,
// SessionEffect); SettingList records the SETs in force, per client and per
// server, and diff() writes the SQL that turns a server's list into a client's.
#pragma once
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cache/classify.h"

namespace proxy {

class SettingList {
 public:
  // What one client may make pgsidecar keep and replay: distinct names, and the
  // bytes of their SET statements. A statement that would go past either is
  // refused in transaction mode (ClientSession::inspect_query); in session mode
  // the result cache stops following the client's settings instead.
  static constexpr size_t kMaxNames = 512;
  static constexpr size_t kMaxBytes = size_t(1) << 20;
  // Whether the list stays within both bounds once these effects apply.
  bool fits(const std::vector<cache::SessionEffect>& effects) const;
  // After the statement that had this effect succeeded (Set, Reset, ResetAll,
  // DiscardAll; other kinds change nothing here).
  void apply(const cache::SessionEffect& e);
  void clear() { items_.clear(); }
  bool empty() const { return items_.empty(); }
  bool has(std::string_view name) const {   // lower-case name
    for (auto& item : items_)
      if (item.first == name) return true;
    return false;
  }
  bool operator==(const SettingList& o) const { return items_ == o.items_; }
  // Appends to sql the statements that make `from` (a server) equal to *this (a client).
  void diff(const SettingList& from, std::string& sql) const;
  // Appends the statements in force (for the result cache's key).
  void append_to(std::string& key) const {
    for (auto& item : items_) key.append(item.second).push_back('\0');
  }

 private:
  std::vector<std::pair<std::string, std::string>> items_;   // lower-case name -> SET statement, in order
};

}  // namespace proxy
