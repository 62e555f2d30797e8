#include "cache/classify.h"
#include "proxy/protocol.h"

#include <gtest/gtest.h>

namespace {

const uint8_t* bytes(const std::string& s) { return reinterpret_cast<const uint8_t*>(s.data()); }

TEST(Protocol, ErrorResponseRoundTrip) {
  std::string out;
  pg::write_error(out, pg::ErrorInfo{"FATAL", "28P01", "password authentication failed", "some detail"});
  ASSERT_EQ(out[0], 'E');
  ASSERT_EQ(pg::get_u32(bytes(out) + 1), out.size() - 1);
  pg::ErrorInfo e = pg::parse_error(bytes(out) + 5, out.size() - 5);
  EXPECT_EQ(e.severity, "FATAL");
  EXPECT_EQ(e.code, "28P01");
  EXPECT_EQ(e.message, "password authentication failed");
  EXPECT_EQ(e.detail, "some detail");
}

TEST(Protocol, ReadyForQueryAndParamStatus) {
  std::string out;
  pg::write_ready(out, 'T');
  EXPECT_EQ(out, std::string("Z\0\0\0\x05T", 6));
  out.clear();
  pg::write_param_status(out, "DateStyle", "ISO, MDY");
  pg::Reader r(bytes(out) + 5, out.size() - 5);
  EXPECT_EQ(r.cstr(), "DateStyle");
  EXPECT_EQ(r.cstr(), "ISO, MDY");
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(r.remaining(), 0u);
}

TEST(Protocol, StartupPacketParses) {
  std::string out;
  pg::write_startup(out, {{"user", "alice"}, {"database", "app"}, {"options", "-c x=1"}});
  ASSERT_EQ(pg::get_u32(bytes(out)), out.size());
  pg::StartupPacket sp;
  ASSERT_TRUE(pg::parse_startup(bytes(out) + 4, out.size() - 4, sp));
  EXPECT_EQ(sp.code, pg::kProtocolV3);
  ASSERT_EQ(sp.params.size(), 3u);
  EXPECT_EQ(sp.params[0].second, "alice");
  EXPECT_EQ(sp.params[2].first, "options");
}

TEST(Protocol, StartupPacketWithoutTerminatorIsRejected) {
  std::string out;
  pg::write_startup(out, {{"user", "alice"}});
  out.pop_back();   // drop the final terminator
  pg::StartupPacket sp;
  EXPECT_FALSE(pg::parse_startup(bytes(out) + 4, out.size() - 4, sp));
  // A key without its value.
  std::string body("\0\3\0\0user\0", 9);
  EXPECT_FALSE(pg::parse_startup(bytes(body), body.size(), sp));
}

TEST(Protocol, CancelRequest) {
  std::string out;
  pg::write_cancel(out, 1234, 0xdeadbeef);
  ASSERT_EQ(out.size(), 16u);
  pg::StartupPacket sp;
  ASSERT_TRUE(pg::parse_startup(bytes(out) + 4, out.size() - 4, sp));
  EXPECT_EQ(sp.code, pg::kCancelRequest);
  EXPECT_EQ(sp.cancel_pid, 1234u);
  EXPECT_EQ(sp.cancel_key, 0xdeadbeefu);
  // Truncated cancel packet.
  EXPECT_FALSE(pg::parse_startup(bytes(out) + 4, out.size() - 5, sp));
}

TEST(Protocol, ReaderOverrunIsSticky) {
  std::string body("ab", 2);
  pg::Reader r(bytes(body), body.size());
  EXPECT_EQ(r.u32(), 0u);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.cstr(), "");
  EXPECT_FALSE(r.ok());
}

TEST(Protocol, ErrorWithoutTerminatorDoesNotOverrun) {
  std::string body("SERROR\0C42601\0Mbroken", 21);   // the last field lacks its NUL
  pg::ErrorInfo e = pg::parse_error(bytes(body), body.size());
  EXPECT_EQ(e.code, "42601");
  EXPECT_EQ(e.message, "");
}

TEST(Protocol, QuoteLiteral) {
  EXPECT_EQ(cache::quote_literal("it's"), "'it''s'");
  EXPECT_EQ(cache::quote_literal(""), "''");
  EXPECT_EQ(cache::quote_literal("a\\'b"), "E'a\\\\''b'");   // reads the same whatever standard_conforming_strings is
  EXPECT_EQ(cache::quote_ident("My \"Schema\""), "\"My \"\"Schema\"\"\"");
}

}  // namespace
