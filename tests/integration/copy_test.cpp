// COPY FROM STDIN / COPY TO STDOUT through the daemon (libpq and psql \copy),
// in both pool modes.
#include <gtest/gtest.h>

#include "harness.h"

using namespace itest;

namespace {

class Copy : public ::testing::TestWithParam<std::string> {
 protected:
  DaemonConfig config() {
    DaemonConfig c = base_config();
    c.set("pool_mode", GetParam()).set("default_pool_size", "2");
    return c;
  }
  std::string table() const { return "copy_t_" + GetParam(); }
};

std::string expected_text(int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += std::to_string(i) + "\trow-" + std::to_string(i) + "\n";
  return s;
}

// Copies text in; returns the final result.
QResult copy_in(PGconn* c, const std::string& sql, const std::string& data, const char* abort_msg = nullptr) {
  QResult start = result_of(PQexec(c, sql.c_str()), c);
  if (start.status != PGRES_COPY_IN) return start;
  for (size_t off = 0; off < data.size(); off += 65536) {
    size_t n = std::min<size_t>(65536, data.size() - off);
    if (PQputCopyData(c, data.data() + off, static_cast<int>(n)) != 1) {
      QResult q;
      q.error = std::string("PQputCopyData: ") + PQerrorMessage(c);
      return q;
    }
  }
  if (PQputCopyEnd(c, abort_msg) != 1) {
    QResult q;
    q.error = std::string("PQputCopyEnd: ") + PQerrorMessage(c);
    return q;
  }
  QResult r = result_of(PQgetResult(c), c);
  while (PGresult* extra = PQgetResult(c)) PQclear(extra);
  return r;
}

// Copies out; returns the data, sets ok.
std::string copy_out(PGconn* c, const std::string& sql, bool& ok, std::string& err) {
  ok = false;
  QResult start = result_of(PQexec(c, sql.c_str()), c);
  if (start.status != PGRES_COPY_OUT) {
    err = start.describe();
    return "";
  }
  std::string out;
  for (;;) {
    char* buf = nullptr;
    int n = PQgetCopyData(c, &buf, 0);
    if (n > 0) {
      out.append(buf, n);
      PQfreemem(buf);
      continue;
    }
    if (n == -2) {
      err = PQerrorMessage(c);
      return out;
    }
    break;
  }
  QResult fin = result_of(PQgetResult(c), c);
  while (PGresult* extra = PQgetResult(c)) PQclear(extra);
  ok = fin.status == PGRES_COMMAND_OK;
  if (!ok) err = fin.describe();
  return out;
}

}  // namespace

TEST_P(Copy, InAndOutWithLibpq) {
  const std::string t = table();
  ASSERT_APP_SQL("DROP TABLE IF EXISTS " + t + "; CREATE TABLE " + t + "(id int, txt text)");
  Daemon d(config());
  START_DAEMON(d);
  ConnPtr c = must_connect(d.conninfo());
  ASSERT_TRUE(c);

  const int n = 20000;
  std::string data = expected_text(n);
  QResult in = copy_in(c.get(), "COPY " + t + " FROM STDIN", data);
  ASSERT_EQ(in.status, PGRES_COMMAND_OK) << in.describe();
  QResult cnt = exec(c, "SELECT count(*), sum(id) FROM " + t);
  EXPECT_EQ(cnt.at(0, 0), std::to_string(n));
  EXPECT_EQ(cnt.at(0, 1), std::to_string(static_cast<long>(n) * (n - 1) / 2));

  bool ok = false;
  std::string err;
  std::string out = copy_out(c.get(), "COPY (SELECT id, txt FROM " + t + " ORDER BY id) TO STDOUT", ok, err);
  EXPECT_TRUE(ok) << err;
  EXPECT_EQ(out.size(), data.size());
  EXPECT_TRUE(out == data) << "COPY TO STDOUT data differs";

  // Bad data: the server's error comes back and the connection stays usable.
  QResult bad = copy_in(c.get(), "COPY " + t + " FROM STDIN", "1\tok\nnot-a-number\tx\n");
  EXPECT_EQ(bad.sqlstate, "22P02") << bad.describe();
  EXPECT_EQ(PQtransactionStatus(c.get()), PQTRANS_IDLE);
  EXPECT_EQ(exec(c, "SELECT count(*) FROM " + t).scalar(), std::to_string(n));

  // Client-side abort (CopyFail).
  QResult aborted = copy_in(c.get(), "COPY " + t + " FROM STDIN", "7\tx\n", "client gave up");
  EXPECT_EQ(aborted.sqlstate, "57014") << aborted.describe();
  EXPECT_EQ(exec(c, "SELECT count(*) FROM " + t).scalar(), std::to_string(n));

  // COPY inside an explicit transaction, rolled back.
  ASSERT_TRUE(exec(c, "BEGIN").ok);
  QResult in_tx = copy_in(c.get(), "COPY " + t + " FROM STDIN", "1\ta\n2\tb\n");
  EXPECT_EQ(in_tx.status, PGRES_COMMAND_OK) << in_tx.describe();
  EXPECT_EQ(exec(c, "SELECT count(*) FROM " + t).scalar(), std::to_string(n + 2));
  ASSERT_TRUE(exec(c, "ROLLBACK").ok);
  EXPECT_EQ(exec(c, "SELECT count(*) FROM " + t).scalar(), std::to_string(n));

  // Large COPY out (about 10 MB): exercises buffering/backpressure.
  std::string big = copy_out(c.get(), "COPY (SELECT g, repeat('x', 1000) FROM generate_series(1, 10000) g) TO STDOUT",
                             ok, err);
  EXPECT_TRUE(ok) << err;
  size_t expect_bytes = 0;
  for (int g = 1; g <= 10000; ++g) expect_bytes += std::to_string(g).size() + 1 + 1000 + 1;
  EXPECT_EQ(big.size(), expect_bytes);
  EXPECT_EQ(exec(c, "SELECT 'still fine'").scalar(), "still fine");
}

TEST_P(Copy, PsqlBackslashCopy) {
  const std::string t = table() + "_psql";
  ASSERT_APP_SQL("DROP TABLE IF EXISTS " + t + "; CREATE TABLE " + t + "(id int, name text)");
  Daemon d(config());
  START_DAEMON(d);
  std::string csv;
  for (int i = 1; i <= 3000; ++i) csv += std::to_string(i) + ",name " + std::to_string(i) + "\n";
  std::string in_path = d.dir() + "/in.csv", out_path = d.dir() + "/out.csv";
  write_file(in_path, csv);
  std::string ci = "host=127.0.0.1 port=" + std::to_string(d.port()) + " user=app dbname=app";
  // psql's default sslmode=prefer: this also exercises SSLRequest -> 'N'.
  ProcResult r = run_process({"psql", ci, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                              "-c", "\\copy " + t + " FROM '" + in_path + "' WITH (FORMAT csv)",
                              "-c", "SELECT count(*), sum(id) FROM " + t,
                              "-c", "\\copy (SELECT id, name FROM " + t + " ORDER BY id) TO '" + out_path + "' WITH (FORMAT csv)"},
                             60000, {"PGGSSENCMODE=disable"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("3000|4501500"), std::string::npos) << r.output;
  EXPECT_EQ(read_file(out_path), csv);
}

INSTANTIATE_TEST_SUITE_P(Modes, Copy, ::testing::Values("session", "transaction"),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });
