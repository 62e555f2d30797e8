// log_format: json: every line the daemon writes parses (with nlohmann and jq),
// and a connection-level event carries the ids SHOW CLIENTS shows.
#include <gtest/gtest.h>

#include <libpq-fe.h>

#include <nlohmann/json.hpp>

#include "harness.h"

using namespace itest;

namespace {

std::vector<nlohmann::json> json_lines(const std::string& log, std::string* bad) {
  std::vector<nlohmann::json> out;
  size_t pos = 0;
  while (pos < log.size()) {
    size_t eol = log.find('\n', pos);
    if (eol == std::string::npos) eol = log.size();
    std::string line = log.substr(pos, eol - pos);
    pos = eol + 1;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("ts") || !j.contains("level") || !j.contains("msg")) {
      if (bad->empty()) *bad = line;
      continue;
    }
    out.push_back(std::move(j));
  }
  return out;
}

const nlohmann::json* find_line(const std::vector<nlohmann::json>& lines, const std::string& msg_part) {
  for (const nlohmann::json& j : lines)
    if (j["msg"].get<std::string>().find(msg_part) != std::string::npos) return &j;
  return nullptr;
}

}  // namespace

TEST(Logging, JsonLinesCarryTheIdsShowClientsShows) {
  DaemonConfig cfg = tx_config(2);
  cfg.set("auth_type", "scram-sha-256").set("admin_users", "[admin]").user("admin", "adminpass");
  cfg.set("log_format", "json").set("pinned_log_after", "300ms");
  Daemon d(cfg);
  START_DAEMON(d);

  ConnectResult bad = pg_connect(d.conninfo("app", "app", "password=wrong"));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.sqlstate, "28P01") << bad.error;

  // LISTEN pins the client to its server: its backend pid is then fixed.
  ConnectResult c = pg_connect(d.conninfo("app", "app", "password=apppass application_name=json_log"));
  ASSERT_TRUE(c.ok()) << c.error;
  ASSERT_TRUE(exec_within(c.conn, "LISTEN json_log_ch").ok);
  const std::string backend_pid = exec_within(c.conn, "SELECT pg_backend_pid()").scalar();
  ASSERT_FALSE(backend_pid.empty());

  ConnectResult admin = pg_connect(d.conninfo("admin", "pgsidecar", "password=adminpass"));
  ASSERT_TRUE(admin.ok()) << admin.error;
  PGresult* res = PQexec(admin.conn.get(), "SHOW CLIENTS");
  std::string ptr, link;
  for (int row = 0; row < PQntuples(res); ++row) {
    if (std::string(PQgetvalue(res, row, PQfnumber(res, "application_name"))) != "json_log") continue;
    ptr = PQgetvalue(res, row, PQfnumber(res, "ptr"));
    link = PQgetvalue(res, row, PQfnumber(res, "link"));
  }
  PQclear(res);
  ASSERT_FALSE(ptr.empty()) << "no SHOW CLIENTS row for the client";
  EXPECT_EQ(link, backend_pid);

  std::string bad_line;
  ASSERT_TRUE(eventually([&] {
    exec_within(c.conn, "SELECT 1");
    return find_line(json_lines(d.log(), &bad_line), "pinned to its server") != nullptr;
  }, 10000)) << tail_lines(d.log(), 20);

  std::vector<nlohmann::json> lines = json_lines(d.log(), &bad_line);
  EXPECT_EQ(bad_line, "") << "a line that is not a JSON object with ts, level and msg";
  const nlohmann::json* pin = find_line(lines, "pinned to its server");
  ASSERT_NE(pin, nullptr);
  EXPECT_EQ((*pin)["level"], "info");
  EXPECT_EQ(std::to_string((*pin)["client_id"].get<uint32_t>()), ptr) << pin->dump();
  EXPECT_EQ(std::to_string((*pin)["server_pid"].get<uint32_t>()), backend_pid) << pin->dump();
  EXPECT_EQ((*pin)["db"], "app");
  EXPECT_EQ((*pin)["user"], "app");
  EXPECT_EQ((*pin)["application_name"], "json_log");
  EXPECT_TRUE((*pin)["client_addr"].get<std::string>().rfind("127.0.0.1:", 0) == 0) << pin->dump();
  EXPECT_GE((*pin)["duration_ms"].get<double>(), 300.0) << "pinned_log_after is 300ms";

  const nlohmann::json* auth = find_line(lines, "password authentication failed");
  ASSERT_NE(auth, nullptr) << tail_lines(d.log(), 20);
  EXPECT_EQ((*auth)["sqlstate"], "28P01");
  EXPECT_EQ((*auth)["user"], "app");
  EXPECT_EQ((*auth)["db"], "app");
  EXPECT_TRUE(auth->contains("client_id")) << auth->dump();

  // jq reads the file line by line as an operator would.
  ProcResult jq = run_process({"jq", "-e", "-c", "select(.ts and .level and .msg) | .level",
                               d.dir() + "/stderr.log"}, 10000);
  EXPECT_EQ(jq.exit_code, 0) << jq.output;
  EXPECT_EQ(std::count(jq.output.begin(), jq.output.end(), '\n'), long(lines.size())) << jq.output;
}
