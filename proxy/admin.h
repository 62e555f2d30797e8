// The admin console: clients that connect to the virtual database "pgsidecar"
// talk to pgsidecar itself, with PgBouncer's commands and column names, in the
// simple query protocol, so psql shows the answers as tables. Users in
// admin_users may run every command; users in stats_users only SHOW.
#pragma once
#include <string>
#include <string_view>

namespace proxy {

class Proxy;

inline constexpr std::string_view kAdminDatabase = "pgsidecar";

// Answers one simple Query: appends result sets / CommandComplete or an
// ErrorResponse to out. Returns false if the reply must wait (PAUSE until the
// pools are quiet: Proxy finishes it); otherwise the caller appends ReadyForQuery.
bool admin_query(Proxy& proxy, uint32_t session_pid, std::string_view sql, bool admin_rights, std::string& out);

}  // namespace proxy
