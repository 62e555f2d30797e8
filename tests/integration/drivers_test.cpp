// Real drivers through the plan cache: psycopg 3, node-postgres and PostgreSQL JDBC
// run the scripts in tests/clients/ (named server-side prepared statements used by
// 6 connections over a transaction-mode pool of 2 servers, DDL in between) against
// a daemon; each script checks every row itself and exits 0 only if all pass.
// scripts/deps.sh installs the drivers (apt) and tests/clients/node_modules (npm ci).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "harness.h"

using namespace itest;

namespace {

// tests/clients, from this file's path (PGSIDECAR_SOURCE_DIR overrides the source root).
std::string clients_dir() {
  if (const char* e = getenv("PGSIDECAR_SOURCE_DIR")) return std::string(e) + "/tests/clients";
  return (std::filesystem::path(__FILE__).parent_path().parent_path() / "clients").string();
}

// Starts a transaction-mode daemon with 2 servers and runs argv with PG* pointing at it.
void run_driver(const std::vector<std::string>& argv, const std::string& needs) {
  if (!needs.empty() && access(needs.c_str(), R_OK) != 0)
    FAIL() << needs << " is missing: run scripts/deps.sh";
  DaemonConfig cfg = base_config();
  cfg.set("pool_mode", "transaction").set("default_pool_size", "2").set("query_wait_timeout", "30s");
  Daemon d(cfg);
  START_DAEMON(d);
  auto t0 = Clock::now();
  ProcResult r = run_process(argv, 240000,
                             {"PGHOST=127.0.0.1", "PGPORT=" + std::to_string(d.port()), "PGUSER=app",
                              "PGDATABASE=app", "PGPASSWORD=", "PGSSLMODE=disable", "PGGSSENCMODE=disable",
                              "DIRECT="});
  EXPECT_FALSE(r.timed_out) << "timed out after " << ms_since(t0) << " ms";
  EXPECT_EQ(r.exit_code, 0) << "output:\n" << r.output << "\ndaemon log (tail):\n" << tail_lines(d.log(), 40);
  std::string last = tail_lines(r.output, 1);
  while (!last.empty() && last.back() == '\n') last.pop_back();
  std::cout << "[ driver   ] " << last << " (" << ms_since(t0) << " ms)" << std::endl;
}

}  // namespace

TEST(Drivers, PsycopgPreparedStatements) {
  // Debian's python3-psycopg is for the system interpreter, not whatever python3 is first on PATH.
  run_driver({"/usr/bin/python3", clients_dir() + "/psycopg_prepared.py"},
             "/usr/lib/python3/dist-packages/psycopg/__init__.py");
}

TEST(Drivers, NodePgNamedQueries) {
  run_driver({"node", clients_dir() + "/node_pg_prepared.js"}, clients_dir() + "/node_modules/pg/package.json");
}

TEST(Drivers, JdbcPreparedStatements) {
  run_driver({"java", "-cp", "/usr/share/java/postgresql.jar", clients_dir() + "/JdbcPrepared.java"},
             "/usr/share/java/postgresql.jar");
}
