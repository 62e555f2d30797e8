// conf/log: the line each log_format writes, and that JSON lines parse whatever
// bytes the message and fields hold.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "conf/log.h"

namespace {

struct FormatGuard {   // the format is process-wide: put text back after each test
  explicit FormatGuard(conf::LogFormat f) { logx::set_format(f); }
  ~FormatGuard() { logx::set_format(conf::LogFormat::Text); }
};

logx::Fields client_fields() {
  logx::Fields f;
  f.client_id = 42;
  f.client_addr = "127.0.0.1:50000";
  f.db = "app";
  f.user = "bob";
  f.application_name = "my app";
  f.server_pid = 1234;
  f.sqlstate = "28P01";
  f.duration_ms = 12.5;
  return f;
}

TEST(Log, TextWithoutFieldsIsTheMessage) {
  FormatGuard g(conf::LogFormat::Text);
  EXPECT_EQ(logx::format_line(conf::LogLevel::Warn, "2026-12-03T10:00:00.000Z", {}, "configuration reloaded"),
            "2026-12-03T10:00:00.000Z warn configuration reloaded");
}

TEST(Log, TextAppendsFieldsAndQuotesValuesWithBlanks) {
  FormatGuard g(conf::LogFormat::Text);
  EXPECT_EQ(logx::format_line(conf::LogLevel::Info, "T", client_fields(), "password authentication failed"),
            "T info password authentication failed client_id=42 client_addr=127.0.0.1:50000 db=app user=bob "
            "application_name=\"my app\" server_pid=1234 sqlstate=28P01 duration_ms=12.5");
  logx::Fields f;
  f.user = "a \"b\"=c";
  EXPECT_EQ(logx::format_line(conf::LogLevel::Info, "T", f, "m"), "T info m user=\"a \\\"b\\\"=c\"");
}

TEST(Log, TextEscapesControlBytesSoNoLineCanBeForged) {
  FormatGuard g(conf::LogFormat::Text);
  logx::Fields f;
  f.user = "x\n2026-12-03T10:00:00.000Z error forged";
  EXPECT_EQ(logx::format_line(conf::LogLevel::Info, "T", f, "bad\r\nline\x7f"),
            "T info bad\\x0d\\x0aline\\x7f user=\"x\\x0a2026-12-03T10:00:00.000Z error forged\"");
}

TEST(Log, JsonHasStableKeysInOrder) {
  FormatGuard g(conf::LogFormat::Json);
  std::string line = logx::format_line(conf::LogLevel::Info, "2026-12-03T10:00:00.000Z", client_fields(),
                                       "password authentication failed");
  EXPECT_EQ(line,
            R"({"ts":"2026-12-03T10:00:00.000Z","level":"info","msg":"password authentication failed",)"
            R"("client_id":42,"client_addr":"127.0.0.1:50000","db":"app","user":"bob","application_name":"my app",)"
            R"("server_pid":1234,"sqlstate":"28P01","duration_ms":12.5})");
  EXPECT_EQ(logx::format_line(conf::LogLevel::Error, "T", {}, "x"), R"({"ts":"T","level":"error","msg":"x"})");
}

TEST(Log, JsonParsesWhateverBytesTheClientSent) {
  FormatGuard g(conf::LogFormat::Json);
  // A user name with quotes, a newline, a control byte and invalid UTF-8.
  const std::string user = std::string("a\"b\n\x01") + "\xff\xfe" + "\xc3";
  logx::Fields f;
  f.user = user;
  std::string line = logx::format_line(conf::LogLevel::Warn, "T", f, "protocol violation: \"\\\x7f\xe2\x82");
  EXPECT_EQ(line.find('\n'), std::string::npos) << "one object per line";
  nlohmann::json j = nlohmann::json::parse(line);   // throws on invalid JSON or UTF-8
  EXPECT_EQ(j["user"], "a\"b\n\x01\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
  EXPECT_EQ(j["level"], "warn");
}

}  // namespace
