#include "proxy/session_state.h"

#include <algorithm>
#include <cctype>

namespace proxy {
namespace {

// A tiny lexer: whitespace and comments skipped, identifiers lower-cased.
class Lexer {
 public:
  explicit Lexer(std::string_view s) : s_(s) {}
  void skip_space() {
    while (pos_ < s_.size()) {
      if (std::isspace(uint8_t(s_[pos_]))) pos_++;
      else if (s_.compare(pos_, 2, "--") == 0) pos_ = std::min(s_.find('\n', pos_), s_.size());
      else if (s_.compare(pos_, 2, "/*") == 0) {
        size_t end = s_.find("*/", pos_ + 2);
        pos_ = end == std::string_view::npos ? s_.size() : end + 2;
      } else break;
    }
  }
  // A plain or quoted identifier, possibly dotted (custom settings: app.tenant).
  std::string word() {
    skip_space();
    std::string w;
    while (pos_ < s_.size()) {
      char c = s_[pos_];
      if (c == '"') {
        size_t end = s_.find('"', pos_ + 1);
        if (end == std::string_view::npos) return {};
        w.append(s_.substr(pos_ + 1, end - pos_ - 1));
        pos_ = end + 1;
      } else if (std::isalnum(uint8_t(c)) || c == '_' || c == '.' || c == '$') {
        w.push_back(char(std::tolower(uint8_t(c))));
        pos_++;
      } else {
        break;
      }
    }
    return w;
  }
  std::string_view rest() const { return s_.substr(pos_); }

 private:
  std::string_view s_;
  size_t pos_ = 0;
};

// Where the statement after the next top-level ';' starts (outside quotes,
// comments and dollar quotes), or npos if there is none.
size_t next_statement(std::string_view sql, size_t from) {
  for (size_t i = from; i < sql.size(); i++) {
    char c = sql[i];
    if (c == '\'' || c == '"') {
      size_t end = sql.find(c, i + 1);
      if (end == std::string_view::npos) return end;
      i = end;
    } else if (c == '$') {
      size_t tag_end = sql.find('$', i + 1);
      if (tag_end == std::string_view::npos) return tag_end;
      std::string_view tag = sql.substr(i, tag_end - i + 1);
      size_t end = sql.find(tag, tag_end + 1);
      if (end == std::string_view::npos) return end;
      i = end + tag.size() - 1;
    } else if (c == '-' && sql.compare(i, 2, "--") == 0) {
      i = std::min(sql.find('\n', i), sql.size());
    } else if (c == '/' && sql.compare(i, 2, "/*") == 0) {
      size_t end = sql.find("*/", i + 2);
      if (end == std::string_view::npos) return end;
      i = end + 1;
    } else if (c == ';') {
      return i + 1;
    }
  }
  return std::string_view::npos;
}

// True if sql holds more than one statement (something other than space, comments
// and ';' after a top-level ';').
bool multi_statement(std::string_view sql) {
  for (size_t at = next_statement(sql, 0); at != std::string_view::npos; at = next_statement(sql, at)) {
    Lexer rest(sql.substr(at));
    rest.skip_space();
    std::string_view r = rest.rest();
    if (!r.empty() && r.find_first_not_of(';') != std::string_view::npos) return true;
  }
  return false;
}

}  // namespace

Classified classify(std::string_view sql) {
  Lexer lx(sql);
  std::string first = lx.word();
  Classified c;
  if (first == "listen") {
    c.kind = StmtKind::Listen;
    return c;
  }
  if (first == "deallocate") {
    std::string name = lx.word();
    if (name == "prepare") name = lx.word();
    if (name.empty() || multi_statement(sql)) return c;
    c.kind = name == "all" ? StmtKind::DeallocateAll : StmtKind::Deallocate;
    c.name = std::move(name);
    return c;
  }
  if (first == "prepare" || first == "declare") {
    c.kind = StmtKind::SessionObject;
    return c;
  }
  if (first == "create") {
    std::string w = lx.word();
    if (w == "local" || w == "global") w = lx.word();
    if (w == "temp" || w == "temporary") c.kind = StmtKind::SessionObject;
    return c;
  }
  if (first != "set" && first != "reset" && first != "discard") return c;
  if (multi_statement(sql)) return c;
  if (first == "discard") {
    if (lx.word() == "all") c.kind = StmtKind::DiscardAll;
    return c;
  }
  std::string name = lx.word();
  if (first == "reset") {
    // The names SET records: RESET SESSION AUTHORIZATION, RESET TIME ZONE.
    if (name == "session" && lx.word() == "authorization") name = "session_authorization";
    else if (name == "time" && lx.word() == "zone") name = "timezone";
    c.kind = name == "all" ? StmtKind::ResetAll : StmtKind::Reset;
    c.name = name;
    return c;
  }
  if (name == "session") {
    name = lx.word();
    if (name == "characteristics") return c;
    if (name == "authorization") name = "session_authorization";
  }
  if (name == "local" || name == "transaction" || name.empty()) return c;
  if (name == "time") {   // SET TIME ZONE ...
    if (lx.word() != "zone") return c;
    name = "timezone";
  }
  c.kind = StmtKind::Set;
  c.name = name;
  return c;
}

bool changes_schema(std::string_view sql) {
  for (size_t at = 0; at != std::string_view::npos; at = next_statement(sql, at)) {
    Lexer lx(sql.substr(at));
    std::string first = lx.word();
    if (first == "create" || first == "alter" || first == "drop" || first == "import") return true;
  }
  return false;
}

void SettingList::apply(const Classified& c, std::string_view stmt) {
  auto it = std::find_if(items_.begin(), items_.end(), [&](auto& p) { return p.first == c.name; });
  switch (c.kind) {
    case StmtKind::Set:
      if (it != items_.end()) it->second = stmt;
      else items_.emplace_back(c.name, stmt);
      break;
    case StmtKind::Reset:
      if (it != items_.end()) items_.erase(it);
      break;
    case StmtKind::ResetAll: {
      // RESET ALL leaves role and session_authorization alone, as PostgreSQL does.
      std::erase_if(items_, [](auto& p) { return p.first != "role" && p.first != "session_authorization"; });
      break;
    }
    case StmtKind::DiscardAll: items_.clear(); break;
    default: break;
  }
}

void SettingList::diff(const SettingList& from, std::string& sql) const {
  for (auto& [name, stmt] : from.items_) {
    bool wanted = std::any_of(items_.begin(), items_.end(), [&](auto& p) { return p.first == name; });
    if (!wanted) sql.append("RESET ").append(name == "timezone" ? "TimeZone" : name).append(";");
  }
  for (auto& item : items_) {
    bool same = std::find(from.items_.begin(), from.items_.end(), item) != from.items_.end();
    if (!same) sql.append(item.second).append(";");
  }
}

}  // namespace proxy
