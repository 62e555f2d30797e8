// Session state a transaction-mode client builds with SQL, kept so it follows the
// client from server to server and never leaks to the next client:
//  - classify() recognises, from the text of a simple Query, the statements that
//    change session-level settings (SET, RESET, DISCARD ALL) or that cannot work
//    without a dedicated server (LISTEN), and SQL-level DEALLOCATE;
//  - changes_schema() spots DDL, which moves the schema version on;
//  - SettingList records the SET statements in force, per client and per server,
//    and diff() writes the SQL that turns a server's list into a client's.
#pragma once
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace proxy {

// SessionObject: creates something that outlives the transaction on that server
// connection (PREPARE, DECLARE cursor, CREATE TEMP ...): the server is discarded
// (DISCARD ALL) before anyone else uses it.
// Deallocate/DeallocateAll: DEALLOCATE [PREPARE] name | ALL, which must also
// reach the statements the plan cache keeps for the client.
enum class StmtKind { Other, Set, Reset, ResetAll, DiscardAll, Listen, SessionObject, Deallocate, DeallocateAll };

struct Classified {
  StmtKind kind = StmtKind::Other;
  std::string name;   // lower-cased setting name for Set/Reset; statement name for Deallocate
};

// Looks at one simple-Query text. Multi-statement strings, SET LOCAL and
// SET TRANSACTION are Other (they do not outlive the transaction, or are not ours to split).
Classified classify(std::string_view sql);

// True if any statement in sql starts with CREATE, ALTER, DROP or IMPORT (DDL
// that can change what a prepared statement reads or returns).
bool changes_schema(std::string_view sql);

class SettingList {
 public:
  void apply(const Classified& c, std::string_view stmt);   // after the statement succeeded
  void clear() { items_.clear(); }
  bool empty() const { return items_.empty(); }
  bool operator==(const SettingList& o) const { return items_ == o.items_; }
  // Appends to sql the statements that make `from` (a server) equal to *this (a client).
  void diff(const SettingList& from, std::string& sql) const;
  // Appends the statements in force (for the result cache's key).
  void append_to(std::string& key) const {
    for (auto& item : items_) key.append(item.second).push_back('\0');
  }

 private:
  std::vector<std::pair<std::string, std::string>> items_;   // name -> SET statement, in order
};

}  // namespace proxy
