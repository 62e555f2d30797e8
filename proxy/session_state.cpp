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

// Counts every Set as adding to what is there (RESETs before it are not
// subtracted), which errs on the side of refusing.
bool SettingList::fits(const std::vector<cache::SessionEffect>& effects) const {
  size_t names = items_.size(), bytes = 0;
  for (const auto& item : items_) bytes += item.first.size() + item.second.size();
  for (const cache::SessionEffect& e : effects) {
    if (e.kind != cache::SessionEffect::Kind::Set) continue;
    if (!has(e.name)) names++;
    bytes += e.name.size() + e.sql.size();
  }
  return names <= kMaxNames && bytes <= kMaxBytes;
}

namespace {
bool identity(const std::string& name) { return name == "session_authorization" || name == "role"; }
}  // namespace

// Who runs the statements matters: a setting only a superuser may change (or a
// role that only the login may take) must be reset as the login, not as the role
// the last client left. So when either side has a role or session authorization
// in force, the server's are reset first and the client's set last, in the order
// the client set them (session authorization before role: setting it drops the role).
void SettingList::diff(const SettingList& from, std::string& sql) const {
  auto in = [](const std::vector<std::pair<std::string, std::string>>& items, const auto& item) {
    return std::find(items.begin(), items.end(), item) != items.end();
  };
  std::string body;
  for (const auto& item : from.items_) {
    if (identity(item.first)) continue;
    bool wanted = std::any_of(items_.begin(), items_.end(), [&](auto& p) { return p.first == item.first; });
    if (!wanted) body.append("RESET ").append(cache::quote_ident(item.first)).append(";");
  }
  for (const auto& item : items_)
    if (!identity(item.first) && !in(from.items_, item)) body.append(item.second).append(";");
  auto identities = [](const SettingList& l) {
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& item : l.items_)
      if (identity(item.first)) out.push_back(item);
    return out;
  };
  const auto had = identities(from), want = identities(*this);
  if (had == want && (had.empty() || body.empty())) {
    sql += body;
    return;
  }
  if (!had.empty()) sql.append("RESET SESSION AUTHORIZATION;RESET ROLE;");
  sql += body;
  for (const auto& item : want) sql.append(item.second).append(";");
}

}  // namespace proxy
