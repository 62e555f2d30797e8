#include "proxy/session_state.h"

#include <algorithm>

namespace proxy {

void SettingList::apply(const cache::SessionEffect& e) {
  using Kind = cache::SessionEffect::Kind;
  auto erase = [this](std::string_view name) {
    std::erase_if(items_, [name](auto& p) { return p.first == name; });
  };
  switch (e.kind) {
    case Kind::Set: {
      // SET SESSION AUTHORIZATION also resets the role, as PostgreSQL does.
      if (e.name == "session_authorization") erase("role");
      auto it = std::find_if(items_.begin(), items_.end(), [&](auto& p) { return p.first == e.name; });
      if (it != items_.end()) it->second = e.sql;
      else items_.emplace_back(e.name, e.sql);
      break;
    }
    case Kind::Reset:
      erase(e.name);
      if (e.name == "session_authorization") erase("role");
      break;
    case Kind::ResetAll:
      // RESET ALL leaves role and session_authorization alone, as PostgreSQL does.
      std::erase_if(items_, [](auto& p) { return p.first != "role" && p.first != "session_authorization"; });
      break;
    case Kind::DiscardAll: items_.clear(); break;
    default: break;
  }
}

void SettingList::diff(const SettingList& from, std::string& sql) const {
  for (const auto& item : from.items_) {
    bool wanted = std::any_of(items_.begin(), items_.end(), [&](auto& p) { return p.first == item.first; });
    if (!wanted) sql.append("RESET ").append(cache::quote_ident(item.first)).append(";");
  }
  for (auto& item : items_) {
    bool same = std::find(from.items_.begin(), from.items_.end(), item) != from.items_.end();
    if (!same) sql.append(item.second).append(";");
  }
}

}  // namespace proxy
