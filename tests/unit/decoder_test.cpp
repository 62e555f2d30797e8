// The protocol decoder (proxy/decoder.h) and the SQL shape scanner
// (cache/classify.h shape_of).
//
// Decoder: well-formed client and server streams are framed whole, message by
// message, and then fed again split at every byte boundary (and at every pair
// of boundaries for short streams) into a driver that buffers the way the proxy
// does; the decisions must be the same. Malformed and over-limit messages each
// have their expected answer.
//
// shape_of: literals are masked and nothing else; the quoting forms the cheap
// scan does not follow give an empty shape or one that still tells texts apart;
// the depth bound follows nesting. A property test checks that texts with the
// same shape get the same classification from libpg-query.
#include "proxy/decoder.h"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "cache/classify.h"
#include "proxy/protocol.h"

namespace {

using pg::Frame;
using pg::FrameStatus;

// ---------------------------------------------------------------------------
// Message builders

std::string be32(uint32_t v) {
  std::string s(4, '\0');
  pg::put_u32(reinterpret_cast<uint8_t*>(s.data()), v);
  return s;
}
std::string be16(uint16_t v) { return std::string{char(v >> 8), char(v & 0xff)}; }
std::string cstr(std::string_view s) { return std::string(s) + '\0'; }
std::string msg(char type, const std::string& body) { return std::string(1, type) + be32(uint32_t(body.size() + 4)) + body; }
// A message with a length field that does not match its body.
std::string msg_len(char type, uint32_t len, const std::string& body) { return std::string(1, type) + be32(len) + body; }

struct Value {
  bool null = false;
  std::string bytes;
};
std::string values(const std::vector<Value>& vs) {
  std::string s = be16(uint16_t(vs.size()));
  for (const Value& v : vs) s += v.null ? be32(0xffffffffu) : be32(uint32_t(v.bytes.size())) + v.bytes;
  return s;
}
std::string i16s(const std::vector<uint16_t>& codes) {
  std::string s = be16(uint16_t(codes.size()));
  for (uint16_t c : codes) s += be16(c);
  return s;
}

std::string query(std::string_view sql) { return msg('Q', cstr(sql)); }
std::string parse(std::string_view name, std::string_view sql, const std::vector<uint32_t>& oids) {
  std::string b = cstr(name) + cstr(sql) + be16(uint16_t(oids.size()));
  for (uint32_t o : oids) b += be32(o);
  return msg('P', b);
}
std::string bind(std::string_view portal, std::string_view stmt, const std::vector<uint16_t>& formats,
                 const std::vector<Value>& vs, const std::vector<uint16_t>& result_formats) {
  return msg('B', cstr(portal) + cstr(stmt) + i16s(formats) + values(vs) + i16s(result_formats));
}
std::string describe(char kind, std::string_view name) { return msg('D', std::string(1, kind) + cstr(name)); }
std::string close_msg(char kind, std::string_view name) { return msg('C', std::string(1, kind) + cstr(name)); }
std::string execute(std::string_view portal, uint32_t max_rows) { return msg('E', cstr(portal) + be32(max_rows)); }
std::string function_call(uint32_t oid, const std::vector<uint16_t>& formats, const std::vector<Value>& args, uint16_t result_format) {
  return msg('F', be32(oid) + i16s(formats) + values(args) + be16(result_format));
}
std::string empty_msg(char type) { return msg(type, ""); }

// Backend
std::string auth_ok() { return msg('R', be32(0)); }
std::string auth_sasl() { return msg('R', be32(10) + cstr("SCRAM-SHA-256") + std::string(1, '\0')); }
std::string backend_key(uint32_t pid, uint32_t key) { return msg('K', be32(pid) + be32(key)); }
std::string param_status(std::string_view k, std::string_view v) { return msg('S', cstr(k) + cstr(v)); }
std::string ready(char status) { return msg('Z', std::string(1, status)); }
std::string error_fields(char type, std::string_view sev, std::string_view code, std::string_view text) {
  return msg(type, "S" + cstr(sev) + "C" + cstr(code) + "M" + cstr(text) + std::string(1, '\0'));
}
std::string row_description(const std::vector<std::string>& cols) {
  std::string b = be16(uint16_t(cols.size()));
  for (const std::string& c : cols) b += cstr(c) + be32(0) + be16(0) + be32(23) + be16(4) + be32(0xffffffffu) + be16(0);
  return msg('T', b);
}
std::string data_row(const std::vector<Value>& vs) { return msg('D', values(vs)); }
std::string command_complete(std::string_view tag) { return msg('C', cstr(tag)); }

// ---------------------------------------------------------------------------
// A driver that buffers as the proxy does: append what arrived, frame the head,
// consume a Ready message when it is whole; a Ready message that is not whole
// (streaming types, or over the inspect limit) goes out as far as it is here and
// the rest of it is skipped as it arrives.

struct Decision {
  FrameStatus status;
  char type;
  uint32_t len;
  bool inspect;
  bool whole;
  bool operator==(const Decision& o) const {
    return status == o.status && type == o.type && len == o.len && inspect == o.inspect;
  }
};

std::ostream& operator<<(std::ostream& os, const Decision& d) {
  const char* st = d.status == FrameStatus::Ready ? "Ready" : d.status == FrameStatus::Partial ? "Partial" : "Invalid";
  return os << st << " '" << d.type << "' len " << d.len << (d.inspect ? " inspect" : "") << (d.whole ? " whole" : "");
}

struct Driver {
  bool backend = false;
  size_t limit = 64 * 1024;
  std::vector<uint8_t> buf;
  size_t skip = 0;        // rest of a message already passed through
  bool failed = false;    // an Invalid ended the stream
  std::vector<Decision> decisions;

  void feed(const uint8_t* p, size_t n) {
    if (failed) return;
    buf.insert(buf.end(), p, p + n);
    for (;;) {
      if (skip > 0) {
        size_t k = std::min(skip, buf.size());
        buf.erase(buf.begin(), buf.begin() + long(k));
        skip -= k;
        if (skip > 0) return;
      }
      Frame f;
      std::string err;
      FrameStatus st = backend ? pg::frame_backend(buf.data(), buf.size(), f, err)
                               : pg::frame_frontend(buf.data(), buf.size(), limit, f, err);
      if (st == FrameStatus::Partial) return;
      decisions.push_back({st, f.type, f.len, f.inspect, f.whole});
      if (st == FrameStatus::Invalid) {
        failed = true;
        return;
      }
      if (f.whole) {
        buf.erase(buf.begin(), buf.begin() + long(f.total));
      } else {
        skip = f.total - buf.size();
        buf.clear();
      }
    }
  }
  void feed(const std::string& s) { feed(reinterpret_cast<const uint8_t*>(s.data()), s.size()); }
};

bool streams(char type, bool backend) { return !backend && (type == 'B' || type == 'F' || type == 'd'); }

// The decisions of a split run against the whole run: the same, except that a
// streaming message cut before its end goes out uninspected.
void expect_same(const std::vector<Decision>& whole, const Driver& split, bool backend, const std::string& where) {
  ASSERT_EQ(whole.size(), split.decisions.size()) << where;
  for (size_t i = 0; i < whole.size(); i++) {
    const Decision& w = whole[i];
    const Decision& s = split.decisions[i];
    if (s.status == FrameStatus::Ready && !s.whole && streams(s.type, backend) && w.inspect) {
      EXPECT_EQ(s.type, w.type) << where << " message " << i;
      EXPECT_EQ(s.len, w.len) << where << " message " << i;
      EXPECT_FALSE(s.inspect) << where << " message " << i;
      continue;
    }
    EXPECT_EQ(s, w) << where << " message " << i;
  }
}

std::vector<Decision> run_whole(const std::string& stream, bool backend, size_t limit = 64 * 1024) {
  Driver d;
  d.backend = backend;
  d.limit = limit;
  d.feed(stream);
  if (!d.failed) {
    EXPECT_TRUE(d.buf.empty() && d.skip == 0);
  }
  return d.decisions;
}

// Every split at one boundary, and at two for short streams.
void check_splits(const std::string& stream, bool backend) {
  const std::vector<Decision> whole = run_whole(stream, backend);
  const auto* p = reinterpret_cast<const uint8_t*>(stream.data());
  const size_t n = stream.size();
  for (size_t a = 0; a <= n; a++) {
    Driver d;
    d.backend = backend;
    d.feed(p, a);
    d.feed(p + a, n - a);
    expect_same(whole, d, backend, "split at " + std::to_string(a));
    EXPECT_TRUE(d.buf.empty() && d.skip == 0) << "split at " << a;
    if (::testing::Test::HasFatalFailure()) return;
  }
  if (n > 160) return;
  for (size_t a = 0; a <= n; a++) {
    for (size_t b = a; b <= n; b++) {
      Driver d;
      d.backend = backend;
      d.feed(p, a);
      d.feed(p + a, b - a);
      d.feed(p + b, n - b);
      expect_same(whole, d, backend, "split at " + std::to_string(a) + "," + std::to_string(b));
      if (::testing::Test::HasFatalFailure()) return;
    }
  }
  // And one byte at a time.
  Driver d;
  d.backend = backend;
  for (size_t i = 0; i < n; i++) d.feed(p + i, 1);
  expect_same(whole, d, backend, "byte by byte");
}

// Frames a stream of well-formed messages and checks each decision against the
// types it was built from: every one Ready, inspected, with its own length.
void check_wellformed(const std::vector<std::string>& msgs, bool backend) {
  std::string stream;
  for (const std::string& m : msgs) stream += m;
  std::vector<Decision> whole = run_whole(stream, backend);
  ASSERT_EQ(whole.size(), msgs.size());
  for (size_t i = 0; i < msgs.size(); i++) {
    EXPECT_EQ(whole[i].status, FrameStatus::Ready) << i;
    EXPECT_EQ(whole[i].type, msgs[i][0]) << i;
    EXPECT_EQ(whole[i].len, msgs[i].size() - 1) << i;
    const auto* body = reinterpret_cast<const uint8_t*>(msgs[i].data()) + 5;
    if (backend) {
      EXPECT_TRUE(pg::valid_backend_body(msgs[i][0], body, msgs[i].size() - 5)) << i;
    } else {
      EXPECT_TRUE(whole[i].inspect) << i;
      EXPECT_TRUE(pg::valid_frontend_body(msgs[i][0], body, msgs[i].size() - 5)) << i;
    }
  }
  check_splits(stream, backend);
}

// The first decision on a single message given as `avail` bytes.
FrameStatus front(const std::string& m, size_t limit, Frame& f, size_t avail = std::string::npos) {
  std::string err;
  FrameStatus st = pg::frame_frontend(reinterpret_cast<const uint8_t*>(m.data()), std::min(avail, m.size()), limit, f, err);
  if (st == FrameStatus::Invalid) {
    EXPECT_FALSE(err.empty());
  }
  return st;
}
FrameStatus front(const std::string& m, size_t limit = 64 * 1024) {
  Frame f;
  return front(m, limit, f);
}
FrameStatus back(const std::string& m, size_t avail = std::string::npos) {
  Frame f;
  std::string err;
  FrameStatus st = pg::frame_backend(reinterpret_cast<const uint8_t*>(m.data()), std::min(avail, m.size()), f, err);
  if (st == FrameStatus::Invalid) {
    EXPECT_FALSE(err.empty());
  }
  return st;
}

// ---------------------------------------------------------------------------
// Well-formed streams

TEST(DecoderFrontend, SimpleQueries) {
  check_wellformed({query("SELECT 1"), query(""), query("SELECT 'a;b'; SELECT 2"), empty_msg('X')}, false);
}

TEST(DecoderFrontend, ExtendedProtocol) {
  check_wellformed({parse("s1", "SELECT $1::int, $2", {23, 25}),
                    parse("", "SELECT 1", {}),
                    bind("", "s1", {0, 1}, {{false, "42"}, {true, ""}}, {1}),
                    bind("p1", "s1", {}, {{false, ""}, {false, std::string("\0\1\2", 3)}}, {}),
                    describe('S', "s1"), describe('P', "p1"), describe('P', ""),
                    execute("p1", 0), execute("", 100), empty_msg('H'),
                    close_msg('P', "p1"), close_msg('S', "s1"), empty_msg('S')},
                   false);
}

TEST(DecoderFrontend, CopyAndFunctionCall) {
  check_wellformed({query("COPY t FROM STDIN"), msg('d', "1\tone\n"), msg('d', ""), msg('d', std::string(100, 'x')),
                    empty_msg('c'), msg('f', cstr("client gave up")),
                    function_call(1598, {1}, {{false, be32(7)}, {true, ""}}, 1),
                    function_call(1598, {}, {}, 0), empty_msg('S'), empty_msg('X')},
                   false);
}

TEST(DecoderFrontend, EveryTypeOnItsOwn) {
  for (const std::string& m : {query("SELECT 1"), parse("a", "b", {0}), bind("", "", {}, {}, {}), describe('S', ""),
                               close_msg('P', ""), execute("", 1), empty_msg('S'), empty_msg('H'), msg('d', "x"),
                               empty_msg('c'), msg('f', cstr("")), function_call(1, {}, {}, 0), empty_msg('X')}) {
    SCOPED_TRACE(std::string(1, m[0]));
    check_wellformed({m}, false);
  }
}

TEST(DecoderBackend, StartupAndResults) {
  check_wellformed({auth_sasl(), msg('R', be32(11) + "r=abc,s=xyz,i=4096"), msg('R', be32(12) + "v=sig"), auth_ok(),
                    param_status("server_version", "16.2"), param_status("TimeZone", ""), backend_key(1234, 0xdeadbeef),
                    ready('I'),
                    msg('1', ""), msg('2', ""), msg('t', be16(1) + be32(23)), row_description({"a", "b"}),
                    data_row({{false, "1"}, {true, ""}}), data_row({}), command_complete("SELECT 2"), msg('3', ""),
                    msg('n', ""), msg('s', ""), msg('I', ""), ready('T'),
                    error_fields('E', "ERROR", "42P01", "relation \"x\" does not exist"),
                    error_fields('N', "NOTICE", "00000", "hi"), msg('A', be32(1) + cstr("ch") + cstr("payload")),
                    msg('G', std::string(1, '\0') + be16(0)), msg('H', std::string(1, '\0') + be16(0)),
                    msg('d', "row\n"), msg('c', ""), msg('W', std::string(1, '\0') + be16(0)),
                    msg('V', be32(4) + be32(1)), msg('v', be32(0) + be32(0)), msg('E', std::string(1, '\0')),
                    ready('E')},
                   true);
}

// ---------------------------------------------------------------------------
// Malformed messages

TEST(DecoderFrontend, MalformedMessagesAreInvalid) {
  EXPECT_EQ(front(msg('Z', "")), FrameStatus::Invalid);             // not a frontend type
  EXPECT_EQ(front(msg('\0', "")), FrameStatus::Invalid);
  EXPECT_EQ(front(msg('p', "x")), FrameStatus::Invalid);            // authentication responses are startup-phase only
  EXPECT_EQ(front(msg_len('Q', 3, "")), FrameStatus::Invalid);      // length < 4
  EXPECT_EQ(front(msg_len('Q', 0, "")), FrameStatus::Invalid);
  EXPECT_EQ(front(msg_len('Q', 0x40000000u, "")), FrameStatus::Invalid);   // over PostgreSQL's bound
  EXPECT_EQ(front(msg('S', "x")), FrameStatus::Invalid);            // fixed length 4
  EXPECT_EQ(front(msg('H', "x")), FrameStatus::Invalid);
  EXPECT_EQ(front(msg('c', "x")), FrameStatus::Invalid);
  EXPECT_EQ(front(msg('X', "x")), FrameStatus::Invalid);
  EXPECT_EQ(front(msg_len('S', 5, "")), FrameStatus::Invalid);      // even before the body arrives
  EXPECT_EQ(front(msg('Q', "SELECT 1")), FrameStatus::Invalid);     // no NUL
  EXPECT_EQ(front(msg('Q', "")), FrameStatus::Invalid);
  EXPECT_EQ(front(msg('Q', std::string("SELECT 1\0x", 10))), FrameStatus::Invalid);   // bytes after the NUL
  EXPECT_EQ(front(msg('Q', std::string("a\0\0", 3))), FrameStatus::Invalid);
  EXPECT_EQ(front(msg('f', "gave up")), FrameStatus::Invalid);
  // Parse: 3 parameter types announced, 2 present.
  EXPECT_EQ(front(msg('P', cstr("s") + cstr("SELECT $1, $2, $3") + be16(3) + be32(23) + be32(23))), FrameStatus::Invalid);
  EXPECT_EQ(front(msg('P', cstr("s") + cstr("SELECT 1") + be16(0) + "x")), FrameStatus::Invalid);   // trailing byte
  EXPECT_EQ(front(msg('P', cstr("s") + cstr("SELECT 1"))), FrameStatus::Invalid);                   // no count
  EXPECT_EQ(front(msg('P', cstr("s"))), FrameStatus::Invalid);
  // Bind: a value length of -2, a value longer than the message, counts past the end.
  const std::string head = cstr("") + cstr("s") + i16s({});
  EXPECT_EQ(front(msg('B', head + be16(1) + be32(0xfffffffeu) + i16s({}))), FrameStatus::Invalid);
  EXPECT_EQ(front(msg('B', head + be16(1) + be32(100) + "abc" + i16s({}))), FrameStatus::Invalid);
  EXPECT_EQ(front(msg('B', head + be16(1) + be32(0x7fffffffu) + i16s({}))), FrameStatus::Invalid);
  EXPECT_EQ(front(msg('B', head + be16(2) + be32(1) + "a" + i16s({}))), FrameStatus::Invalid);
  EXPECT_EQ(front(msg('B', cstr("") + cstr("s") + be16(5) + be16(0))), FrameStatus::Invalid);
  EXPECT_EQ(front(msg('B', head + values({}) + i16s({}) + "x")), FrameStatus::Invalid);   // trailing byte
  EXPECT_EQ(front(msg('B', head + values({}))), FrameStatus::Invalid);                    // no result formats
  EXPECT_EQ(front(msg('B', cstr("p"))), FrameStatus::Invalid);                            // one name only
  // Describe / Close: kind 'X', no name terminator, trailing bytes, empty.
  EXPECT_EQ(front(describe('X', "s")), FrameStatus::Invalid);
  EXPECT_EQ(front(close_msg('X', "s")), FrameStatus::Invalid);
  EXPECT_EQ(front(msg('D', "Ss")), FrameStatus::Invalid);
  EXPECT_EQ(front(msg('D', std::string("Ss\0x", 4))), FrameStatus::Invalid);
  EXPECT_EQ(front(msg('D', "")), FrameStatus::Invalid);
  // Execute without its row count; FunctionCall with a short argument.
  EXPECT_EQ(front(msg('E', cstr("p") + be16(0))), FrameStatus::Invalid);
  EXPECT_EQ(front(msg('F', be32(1) + i16s({}) + be16(1) + be32(8) + "abc" + be16(0))), FrameStatus::Invalid);
  EXPECT_EQ(front(msg('F', be32(1) + i16s({}) + values({}))), FrameStatus::Invalid);      // no result format
}

TEST(DecoderFrontend, InvalidInTheMiddleOfAStreamStopsThere) {
  std::string stream = query("SELECT 1") + describe('X', "s") + query("SELECT 2");
  std::vector<Decision> d = run_whole(stream, false);
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].status, FrameStatus::Ready);
  EXPECT_EQ(d[1].status, FrameStatus::Invalid);
  EXPECT_EQ(d[1].type, 'D');
}

TEST(DecoderFrontend, PartialUntilWhole) {
  const std::string q = query("SELECT 1");
  Frame f;
  for (size_t n = 0; n < q.size(); n++) EXPECT_EQ(front(q, 64 * 1024, f, n), FrameStatus::Partial) << n;
  EXPECT_EQ(front(q, 64 * 1024, f), FrameStatus::Ready);
  EXPECT_TRUE(f.whole && f.inspect);
  EXPECT_EQ(f.total, q.size());
  // Bind streams once both names are here.
  const std::string b = bind("portal", "stmt", {}, {{false, std::string(50, 'v')}}, {});
  const size_t names_end = 5 + 7 + 5;
  for (size_t n = 0; n < names_end; n++) EXPECT_EQ(front(b, 64 * 1024, f, n), FrameStatus::Partial) << n;
  for (size_t n = names_end; n < b.size(); n++) {
    EXPECT_EQ(front(b, 64 * 1024, f, n), FrameStatus::Ready) << n;
    EXPECT_FALSE(f.whole || f.inspect) << n;
  }
  // CopyData and FunctionCall stream at once.
  const std::string d = msg('d', std::string(20, 'x'));
  EXPECT_EQ(front(d, 64 * 1024, f, 5), FrameStatus::Ready);
  EXPECT_FALSE(f.inspect);
  const std::string fc = function_call(1, {}, {{false, "abcd"}}, 0);
  EXPECT_EQ(front(fc, 64 * 1024, f, 5), FrameStatus::Ready);
  // A streamed Bind that turns out malformed is the server's to reject; whole, it is Invalid.
  const std::string bad = msg('B', cstr("") + cstr("") + i16s({}) + be16(1) + be32(0xfffffffeu) + i16s({}));
  EXPECT_EQ(front(bad, 64 * 1024, f, bad.size() - 1), FrameStatus::Ready);
  EXPECT_EQ(front(bad, 64 * 1024, f), FrameStatus::Invalid);
}

TEST(DecoderBackend, MalformedMessagesAreInvalid) {
  EXPECT_EQ(back(msg('x', "")), FrameStatus::Invalid);
  EXPECT_EQ(back(msg('Q', cstr("SELECT 1"))), FrameStatus::Invalid);   // a frontend type
  EXPECT_EQ(back(msg_len('C', 3, "")), FrameStatus::Invalid);
  EXPECT_EQ(back(msg_len('D', 0x40000000u, "")), FrameStatus::Invalid);
  EXPECT_EQ(back(msg('Z', "II")), FrameStatus::Invalid);                 // Z with length 6
  EXPECT_EQ(back(msg('Z', "")), FrameStatus::Invalid);
  EXPECT_EQ(back(msg_len('Z', 6, "")), FrameStatus::Invalid);            // known from the header alone
  EXPECT_EQ(back(msg('Z', "Q")), FrameStatus::Invalid);                  // status 'Q'
  EXPECT_EQ(back(msg('Z', std::string(1, '\0'))), FrameStatus::Invalid);
  EXPECT_EQ(back(msg('K', be32(1))), FrameStatus::Invalid);
  EXPECT_EQ(back(msg('1', "x")), FrameStatus::Invalid);
  EXPECT_EQ(back(msg('c', "x")), FrameStatus::Invalid);
  // NoData, EmptyQueryResponse and PortalSuspended have no body either: a longer one is
  // refused from its header, not waited for (the session fuzzer found a server stuck
  // in a reset behind a NoData claiming 84 bytes).
  for (char type : {'n', 'I', 's'}) {
    EXPECT_EQ(back(msg(type, "x")), FrameStatus::Invalid) << type;
    EXPECT_EQ(back(msg_len(type, 84, "TABL"), 9), FrameStatus::Invalid) << type;
    EXPECT_EQ(back(msg(type, "")), FrameStatus::Ready) << type;
  }
  EXPECT_EQ(back(msg('S', cstr("a"))), FrameStatus::Invalid);            // no value
  EXPECT_EQ(back(msg('S', cstr("a") + cstr("b") + "c")), FrameStatus::Invalid);
  EXPECT_EQ(back(msg('E', "SERROR")), FrameStatus::Invalid);             // field without NUL
  EXPECT_EQ(back(msg('E', "S" + cstr("ERROR"))), FrameStatus::Invalid);  // no final 0
  EXPECT_EQ(back(msg('E', "")), FrameStatus::Invalid);
  EXPECT_EQ(back(msg('E', std::string("\0x", 2))), FrameStatus::Invalid);
  EXPECT_EQ(back(msg('R', "ab")), FrameStatus::Invalid);                 // no auth code
  // Types pgsidecar does not read pass with any body; a NoticeResponse is forwarded unread.
  EXPECT_EQ(back(msg('N', "garbage")), FrameStatus::Ready);
  EXPECT_EQ(back(msg('D', "x")), FrameStatus::Ready);
  // Read types wait for the whole message; others go at once.
  const std::string z = ready('I');
  EXPECT_EQ(back(z, 5), FrameStatus::Partial);
  const std::string d = data_row({{false, "abc"}});
  EXPECT_EQ(back(d, 5), FrameStatus::Ready);
  EXPECT_EQ(back(d, 4), FrameStatus::Partial);
}

// ---------------------------------------------------------------------------
// Over the inspect limit

TEST(DecoderFrontend, OverTheLimit) {
  constexpr size_t kLimit = 64 * 1024;
  const std::string big_sql(2 << 20, 'a');
  const std::string big = query(big_sql);   // 2 MiB + 6: no trailing junk check is possible unread
  Frame f;
  for (size_t n = 0; n < 5; n++) EXPECT_EQ(front(big, kLimit, f, n), FrameStatus::Partial);
  for (size_t n : {size_t(5), size_t(6), kLimit - 1, kLimit, kLimit + 1, big.size()}) {
    EXPECT_EQ(front(big, kLimit, f, n), FrameStatus::Ready) << n;
    EXPECT_FALSE(f.inspect) << n;
    EXPECT_EQ(f.total, big.size());
    EXPECT_EQ(f.whole, n >= big.size());
  }
  // Parse, CopyFail, CopyData and FunctionCall pass through unread too.
  for (char t : {'P', 'f', 'd', 'F'}) {
    EXPECT_EQ(front(msg_len(t, 2 << 20, ""), kLimit), FrameStatus::Ready) << t;
  }
  // Describe, Close, Execute over the limit: no legitimate one is that long.
  for (char t : {'D', 'C', 'E'}) {
    EXPECT_EQ(front(msg_len(t, 2 << 20, ""), kLimit), FrameStatus::Invalid) << t;
    EXPECT_EQ(front(msg_len(t, 2 << 20, "S"), kLimit), FrameStatus::Invalid) << t;
  }
  EXPECT_EQ(front(describe('S', std::string(2 << 20, 's')), kLimit), FrameStatus::Invalid);
  // Exactly at the limit is still inspected.
  const std::string at = query(std::string(kLimit - 6, 'b'));
  ASSERT_EQ(at.size(), kLimit);
  EXPECT_EQ(front(at, kLimit, f), FrameStatus::Ready);
  EXPECT_TRUE(f.inspect);
  EXPECT_EQ(front(at, kLimit, f, kLimit - 1), FrameStatus::Partial);
  const std::string over = query(std::string(kLimit - 5, 'b'));
  EXPECT_EQ(front(over, kLimit, f, 5), FrameStatus::Ready);
  EXPECT_FALSE(f.inspect);
}

TEST(DecoderFrontend, BindOverTheLimitNeedsItsNamesWithinIt) {
  constexpr size_t kLimit = 64 * 1024;
  // A portal name longer than the limit: Partial until `limit` bytes are here, then Invalid.
  const std::string long_name = bind(std::string(kLimit + 100, 'p'), "s", {}, {}, {});
  Frame f;
  for (size_t n : {size_t(5), size_t(100), kLimit - 1})
    EXPECT_EQ(front(long_name, kLimit, f, n), FrameStatus::Partial) << n;
  for (size_t n : {kLimit, kLimit + 1, long_name.size()})
    EXPECT_EQ(front(long_name, kLimit, f, n), FrameStatus::Invalid) << n;
  // Names within the limit, values beyond it: Ready once the names are here.
  const std::string big_value = bind("p", "s", {1}, {{false, std::string(2 << 20, 'v')}}, {1});
  const size_t names_end = 5 + 2 + 2;
  for (size_t n = 5; n < names_end; n++) EXPECT_EQ(front(big_value, kLimit, f, n), FrameStatus::Partial) << n;
  for (size_t n : {names_end, kLimit, big_value.size()}) {
    EXPECT_EQ(front(big_value, kLimit, f, n), FrameStatus::Ready) << n;
    EXPECT_FALSE(f.inspect);
  }
  // The statement name ends right at the limit: the last readable byte is its NUL.
  const std::string edge = bind(std::string(kLimit - 7, 'p'), "", {}, {{false, std::string(100, 'v')}}, {});
  ASSERT_EQ(edge[kLimit - 1], '\0');
  EXPECT_EQ(front(edge, kLimit, f, kLimit), FrameStatus::Ready);
  EXPECT_EQ(front(edge, kLimit, f, kLimit - 1), FrameStatus::Partial);
  const std::string past = bind(std::string(kLimit - 6, 'p'), "", {}, {{false, std::string(100, 'v')}}, {});
  EXPECT_EQ(front(past, kLimit, f, kLimit), FrameStatus::Invalid);
  EXPECT_EQ(front(past, kLimit, f, kLimit - 1), FrameStatus::Partial);
}

TEST(DecoderFrontend, SmallLimitsStreamTheSameWay) {
  // The function takes any limit; with a small one the same streams split the same way.
  const std::string stream = query("SELECT 1") + query(std::string(100, 'x')) + parse("", std::string(80, 'y'), {}) +
                             bind("", "", {}, {{false, std::string(90, 'z')}}, {}) + execute("", 0) + empty_msg('S');
  for (size_t limit : {size_t(16), size_t(32), size_t(64), size_t(100), size_t(4096)}) {
    SCOPED_TRACE(limit);
    std::vector<Decision> whole = run_whole(stream, false, limit);
    ASSERT_EQ(whole.size(), 6u);
    for (size_t a = 0; a <= stream.size(); a++) {
      Driver d;
      d.limit = limit;
      d.feed(reinterpret_cast<const uint8_t*>(stream.data()), a);
      d.feed(reinterpret_cast<const uint8_t*>(stream.data()) + a, stream.size() - a);
      expect_same(whole, d, false, "split at " + std::to_string(a));
      if (::testing::Test::HasFatalFailure()) return;
    }
  }
}

TEST(DecoderBackend, OverTheLimit) {
  const uint32_t big = 2 << 20;
  // ErrorResponse is forwarded unread; the other types pgsidecar reads are refused.
  EXPECT_EQ(back(msg_len('E', big, "")), FrameStatus::Ready);
  for (char t : {'S', 'R'}) EXPECT_EQ(back(msg_len(t, big, "")), FrameStatus::Invalid) << t;
  // Types pgsidecar does not read go through at any length.
  for (char t : {'D', 'T', 'N', 'd', 'A', 'C'}) EXPECT_EQ(back(msg_len(t, big, "")), FrameStatus::Ready) << t;
  // A ParameterStatus right at the bound is read.
  const std::string ps = param_status("x", std::string(pg::kMaxBackendInspect - 5 - 2 - 1, 'v'));
  ASSERT_EQ(ps.size(), pg::kMaxBackendInspect);
  EXPECT_EQ(back(ps), FrameStatus::Ready);
  EXPECT_EQ(back(ps, ps.size() - 1), FrameStatus::Partial);
}

// ---------------------------------------------------------------------------
// shape_of

std::string shape(std::string_view sql) {
  size_t depth = 0;
  return cache::shape_of(sql, depth);
}
size_t depth_of(std::string_view sql) {
  size_t depth = 0;
  cache::shape_of(sql, depth);
  return depth;
}

TEST(ShapeOf, LiteralsShareAShape) {
  const std::vector<std::pair<std::string, std::string>> same = {
      {"SELECT * FROM t WHERE x = 1.5", "SELECT * FROM t WHERE x = 2.25e3"},
      {"SELECT * FROM t WHERE x = 1e10", "SELECT * FROM t WHERE x = 3.25E-7"},
      {"SELECT * FROM t WHERE x = .5", "SELECT * FROM t WHERE x = .25"},
      {"SELECT * FROM t WHERE x = 5.", "SELECT * FROM t WHERE x = 5.5"},
      {"SELECT 'a', 'it''s'", "SELECT '', 'x'"},
      {"SELECT 'a;b -- c /* d'", "SELECT 'e'"},
      {"SELECT '$$'", "SELECT '\"'"},
      {"SELECT 'a\\'", "SELECT 'b'"},   // standard strings: the backslash is a character
      {"INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y')", "INSERT INTO t (a, b) VALUES (3, 'zz'), (44, '')"},
      {"SELECT a FROM t LIMIT 10 OFFSET 20", "SELECT a FROM t LIMIT 1 OFFSET 0"},
      {"SELECT x[1] FROM t", "SELECT x[2] FROM t"},
      {"SELECT 1 -- trailing", "SELECT 2 -- trailing"},
  };
  for (const auto& [a, b] : same) {
    EXPECT_FALSE(shape(a).empty()) << a;
    EXPECT_EQ(shape(a), shape(b)) << a << " | " << b;
  }
}

TEST(ShapeOf, IdentifiersOperatorsAndKeywordsDiffer) {
  const std::vector<std::pair<std::string, std::string>> differ = {
      {"SELECT a FROM t", "SELECT b FROM t"},
      {"SELECT a FROM t1", "SELECT a FROM t2"},   // digits inside identifiers are not literals
      {"SELECT \"a\" FROM t", "SELECT \"b\" FROM t"},
      {"SELECT \"1\" FROM t", "SELECT \"2\" FROM t"},
      {"SELECT a FROM t WHERE a = 1", "SELECT a FROM t WHERE a < 1"},
      {"SELECT a FROM t WHERE a = 1", "SELECT a FROM t WHERE a <> 1"},
      {"SELECT 1 + 2", "SELECT 1 - 2"},
      {"SELECT a FROM t ORDER BY a ASC", "SELECT a FROM t ORDER BY a DESC"},
      {"SELECT a FROM t", "DELETE a FROM t"},
      {"SELECT $1", "SELECT $2"},   // parameters are not literals
      {"SELECT 1", "SELECT 1;"},
      {"SELECT 1", "SELECT (1)"},
      {"SELECT 1, 2", "SELECT 1"},
      {"SELECT 'a' FROM t", "SELECT 1 FROM t"},
      {"SELECT 1 -- x", "SELECT 1 -- y"},
      {"SELECT 1 /* x */", "SELECT 1 /* y */"},
      {"SELECT 1\n-- x\n, a", "SELECT 1\n-- x\n, b"},
      {"SELECT a1", "SELECT a2"},
      {"SELECT t.a FROM t", "SELECT t.b FROM t"},
      {"SET search_path = a", "SET search_path = b"},
      {"SELECT 1::int4", "SELECT 1::int8"},
      {"SELECT x FROM t", "SELECT x  FROM t"},   // whitespace is kept: differ, which is safe
  };
  for (const auto& [a, b] : differ) {
    std::string sa = shape(a), sb = shape(b);
    EXPECT_TRUE(sa.empty() || sb.empty() || sa != sb) << a << " | " << b << " -> " << sa;
  }
}

// Quoting the cheap scan does not mask: an empty shape (the caller keys on the
// text), or one that still tells apart texts that differ outside literals.
void expect_distinct_or_empty(const std::string& a, const std::string& b) {
  std::string sa = shape(a), sb = shape(b);
  EXPECT_TRUE(sa.empty() || sb.empty() || sa != sb) << a << " | " << b << " -> " << sa;
}

TEST(ShapeOf, QuotingItDoesNotFollowIsEmptyOrDistinct) {
  // E'' strings may hide a quote behind a backslash.
  EXPECT_EQ(shape("SELECT E'a\\'b'"), "");
  EXPECT_EQ(shape("SELECT e'x'"), "");
  expect_distinct_or_empty("SELECT E'\\'', a FROM t --'", "SELECT E'\\'', b FROM t --'");
  // A standard string ending in a backslash ends there.
  expect_distinct_or_empty("SELECT 'a\\', b FROM t", "SELECT 'a\\', c FROM t");
  expect_distinct_or_empty("SELECT 'a\\'; DROP TABLE x; --'", "SELECT 'a\\'; DROP TABLE y; --'");
  // Dollar quotes, with and without a tag.
  EXPECT_EQ(shape("SELECT $$x$$"), "");
  EXPECT_EQ(shape("SELECT $tag$a $$ b$tag$"), "");
  expect_distinct_or_empty("SELECT $q$ $$ $q$, a", "SELECT $q$ $$ $q$, b");
  expect_distinct_or_empty("SELECT $a$ ' $a$, x FROM t --'", "SELECT $a$ ' $a$, y FROM t --'");
  expect_distinct_or_empty("DO $$BEGIN DELETE FROM a; END$$", "DO $$BEGIN DELETE FROM b; END$$");
  // Nested comments: what a non-nesting scan would take for a string is code.
  expect_distinct_or_empty("/* /* */ 'a */ DROP TABLE t1; /* ' */ SELECT 1",
                           "/* /* */ 'a */ DROP TABLE t2; /* ' */ SELECT 1");
  expect_distinct_or_empty("SELECT 1 /* a /* b */ c */", "SELECT 1 /* a /* b */ d */");
  expect_distinct_or_empty("SELECT 1 /* /* */ */, a", "SELECT 1 /* /* */ */, b");
  expect_distinct_or_empty("SELECT 1 /* ' */, a FROM t /* ' */", "SELECT 1 /* ' */, b FROM u /* ' */");
  expect_distinct_or_empty("SELECT 1 -- '\n, a FROM t -- '", "SELECT 1 -- '\n, b FROM t -- '");
  // Unicode escapes: U&'' strings and U&"" identifiers.
  expect_distinct_or_empty("SELECT U&'d\\0061t\\+000061' , a", "SELECT U&'d\\0061t\\+000061' , b");
  expect_distinct_or_empty("SELECT U&\"d\\0061t\" FROM t", "SELECT U&\"d\\0062t\" FROM t");
  expect_distinct_or_empty("SELECT U&'a!0027' UESCAPE '!', x", "SELECT U&'a!0027' UESCAPE '!', y");
  // Bit and hex strings, national characters: prefixed literals are kept whole.
  EXPECT_EQ(shape("SELECT B'0101'"), "");
  EXPECT_EQ(shape("SELECT X'1F'"), "");
  EXPECT_EQ(shape("SELECT N'abc'"), "");
  // Quoted identifiers with quotes inside.
  expect_distinct_or_empty("SELECT \"a'b\", 1, c FROM t --'", "SELECT \"a'b\", 1, d FROM t --'");
  expect_distinct_or_empty("SELECT \"a\"\"b\" FROM t", "SELECT \"a\"\"c\" FROM t");
  // Unterminated quotes and comments run to the end without reading past it.
  for (std::string t : {"SELECT 'abc", "SELECT \"abc", "SELECT /* abc", "SELECT E'abc\\", "SELECT $$abc", "SELECT $a$x$a",
                        "SELECT 'a''", "/*", "'", "\"", "$", "$1", "E'", "--", "1e", "1e+", "1.e-"})
    shape(t);
}

TEST(ShapeOf, DepthGrowsWithNesting) {
  size_t prev = 0;
  for (size_t n : {1, 2, 5, 10, 100, 1000}) {
    std::string paren = "SELECT " + std::string(n, '(') + "1" + std::string(n, ')');
    size_t d = depth_of(paren);
    EXPECT_GE(d, n) << n;
    EXPECT_GT(d, prev) << n;
    prev = d;
    EXPECT_GE(depth_of("SELECT " + std::string(n, '[') + "a" + std::string(n, ']')), n);
    std::string chain = "SELECT a";
    for (size_t i = 0; i < n; i++) chain += " + a";
    EXPECT_GE(depth_of(chain), n) << n;
    std::string calls = "SELECT ";
    for (size_t i = 0; i < n; i++) calls += "f(";
    calls += "1" + std::string(n, ')');
    EXPECT_GE(depth_of(calls), 2 * n) << n;
    std::string ands = "SELECT 1 WHERE a";
    for (size_t i = 0; i < n; i++) ands += " AND a";
    EXPECT_GE(depth_of(ands), n) << n;
  }
  // Literals and parameters add nothing of their own.
  EXPECT_EQ(depth_of("SELECT a + 1"), depth_of("SELECT a + 123456"));
  EXPECT_EQ(depth_of("SELECT a + 1"), depth_of("SELECT a + 'x'"));
}

TEST(ShapeOf, DepthResetsAtCommasAndSemicolons) {
  const size_t one = depth_of("SELECT a + b");
  std::string list = "SELECT a + b", stmts = "SELECT a + b", in_call = "SELECT f(a + b";
  for (int i = 0; i < 1000; i++) {
    list += ", a + b";
    stmts += "; SELECT a + b";
    in_call += ", a + b";
  }
  in_call += ")";
  EXPECT_EQ(depth_of(list), one);
  EXPECT_EQ(depth_of(stmts), one);
  EXPECT_LE(depth_of(in_call), one + 2);
  // A long list inside deep nesting counts the nesting, not the list.
  std::string nested = std::string(50, '(') + list.substr(7) + std::string(50, ')');
  EXPECT_GE(depth_of("SELECT " + nested), 50u);
  EXPECT_LE(depth_of("SELECT " + nested), 50u + one + 1);
  // Semicolons reset even inside unbalanced parentheses; stray closers do not underflow.
  EXPECT_LE(depth_of("SELECT ((((((((a; SELECT b"), 10u);
  EXPECT_EQ(depth_of("SELECT b; SELECT ((((((((a"), depth_of("SELECT ((((((((a"));
  EXPECT_LE(depth_of(")))))))) SELECT a"), depth_of("SELECT a"));
  // Past the bound, the statement is not handed to libpg-query.
  std::string deep = "SELECT " + std::string(cache::kMaxParseDepth + 10, '(') + "1" + std::string(cache::kMaxParseDepth + 10, ')');
  EXPECT_GT(depth_of(deep), cache::kMaxParseDepth);
  cache::Classification c = cache::classify_statement(deep);
  EXPECT_EQ(c.kind, cache::Classification::Kind::Write);
  EXPECT_TRUE(c.writes_unknown);
}

// ---------------------------------------------------------------------------
// Texts with the same shape get the same classification.

struct Effects {
  cache::Classification::Kind kind;
  std::vector<std::pair<cache::SessionEffect::Kind, std::string>> effects;   // kind and name; Set sql aside
  bool operator==(const Effects& o) const { return kind == o.kind && effects == o.effects; }
};
Effects effects_of(const std::string& sql) {
  cache::Classification c = cache::classify_statement(sql, false);
  Effects e{c.kind, {}};
  for (const cache::SessionEffect& s : c.effects) e.effects.emplace_back(s.kind, s.name);
  return e;
}
std::ostream& operator<<(std::ostream& os, const Effects& e) {
  os << "kind " << int(e.kind) << " effects [";
  for (const auto& [k, n] : e.effects) os << " " << int(k) << ":" << n;
  return os << " ]";
}

TEST(ShapeProperty, SameShapeSameClassification) {
  const std::vector<std::string> templates = {
      "SELECT a, b FROM t WHERE id = {n}",
      "SELECT * FROM t WHERE name = {s} AND x > {n} ORDER BY a LIMIT {n}",
      "select count(*) from t where a in ({n}, {n}, {s})",
      "INSERT INTO t (a, b) VALUES ({n}, {s})",
      "INSERT INTO t VALUES ({n}) RETURNING *",
      "UPDATE t SET a = {n}, b = {s} WHERE c = {n}",
      "DELETE FROM t WHERE a = {s}",
      "SET search_path TO {s}",
      "SET statement_timeout = {n}",
      "SET LOCAL work_mem = {s}",
      "SET SESSION app.x = {n}",
      "BEGIN; SELECT {n}; COMMIT",
      "CREATE TEMP TABLE tt AS SELECT {n} AS a",
      "CREATE TABLE t2 AS SELECT {n} AS a",
      "SELECT pg_advisory_lock({n})",
      "SELECT pg_advisory_xact_lock({n})",
      "PREPARE p AS SELECT {n}",
      "DECLARE c CURSOR WITH HOLD FOR SELECT {n}",
      "SELECT now() - interval {s}",
      "VALUES ({n}, {s}), ({n}, {s})",
      "SELECT {n} + {n} * {n} / {n}",
      "SELECT a FROM t LIMIT {n} FOR UPDATE",
      "WITH x AS (DELETE FROM t WHERE a = {n} RETURNING a) SELECT * FROM x",
      "SELECT {s}::text || {s}",
      "SELECT * FROM t WHERE a = {n} -- note {n}",
      "SELECT 1 /* {n} */ + {n}",
      "SELECT {n}; SET x.y = {n}; RESET x.y",
      "SELECT {s} AS \"c1\", {n}",
      "EXPLAIN SELECT * FROM t WHERE a = {n}",
      "ALTER TABLE t ALTER COLUMN a SET DEFAULT {n}",
      "LISTEN ch; SELECT {n}",
      "SELECT set_config('a.b', {s}, false)",
  };
  const std::vector<std::string> numbers = {"0", "1", "42", "007", "3.14", "1e5", "2.5E-3", ".5", "5.", "99999999999999999999999"};
  const std::vector<std::string> strings = {"''", "'x'", "'it''s'", "'a\\'", "'--'", "'/*'", "'; DROP TABLE t; '",
                                            "'$$'", "'\"'", "'\xc3\xa9'", "'1 day'"};
  std::mt19937 rng(12345);
  std::vector<std::string> texts;
  for (int i = 0; i < 200; i++) {
    const std::string& t = templates[size_t(i) % templates.size()];
    std::string out;
    for (size_t k = 0; k < t.size();) {
      if (t.compare(k, 3, "{n}") == 0) {
        out += numbers[rng() % numbers.size()];
        k += 3;
      } else if (t.compare(k, 3, "{s}") == 0) {
        out += strings[rng() % strings.size()];
        k += 3;
      } else {
        out += t[k++];
      }
    }
    texts.push_back(out);
  }
  std::map<std::string, std::vector<std::string>> by_shape;
  size_t empty = 0;
  for (const std::string& t : texts) {
    std::string s = shape(t);
    if (s.empty()) empty++;
    else by_shape[s].push_back(t);
  }
  EXPECT_LT(empty, texts.size() / 4);
  size_t compared = 0;
  for (const auto& [s, group] : by_shape) {
    const Effects first = effects_of(group[0]);
    for (size_t i = 1; i < group.size(); i++) {
      EXPECT_EQ(effects_of(group[i]), first) << group[0] << " | " << group[i] << " (shape " << s << ")";
      compared++;
    }
  }
  EXPECT_GT(compared, 80u);   // integers and decimals, long numbers, keep apart
}

// Known bug (reported, not fixed here): two texts that differ only in a number
// share a shape although libpg-query accepts one and rejects the other, so the
// per-shape StatementCache serves the rejected text's Unparsable classification
// to the valid one (a DELETE that invalidates nothing, a DDL not noted):
//  - number() takes any run of digits and dots ("1.2.3", "1..2") as one literal;
//    PostgreSQL's lexer takes at most one dot, and the rest is a syntax error;
//  - an integer too large for int4 lexes as FCONST, a syntax error where the
//    grammar wants an Iconst (FETCH n, varchar(n), SET STATISTICS n ...).
TEST(ShapeOf, TextsOnlyOneOfWhichParsesDoNotShareAShape) {
  const std::vector<std::pair<std::string, std::string>> pairs = {
      {"DELETE FROM t WHERE a = 1.2.3", "DELETE FROM t WHERE a = 1"},
      {"DELETE FROM t WHERE a = 1..2", "DELETE FROM t WHERE a = 1"},
      {"SET x.y = 1.2.3", "SET x.y = 1"},
      {"CREATE TABLE t (a varchar(99999999999))", "CREATE TABLE t (a varchar(10))"},
      {"ALTER TABLE t ALTER a SET STATISTICS 99999999999", "ALTER TABLE t ALTER a SET STATISTICS 10"},
      {"FETCH 99999999999 FROM c", "FETCH 7 FROM c"},
  };
  for (const auto& [bad, good] : pairs) {
    ASSERT_EQ(effects_of(bad).kind, cache::Classification::Kind::Unparsable) << bad;
    ASSERT_NE(effects_of(good).kind, cache::Classification::Kind::Unparsable) << good;
    std::string sb = shape(bad), sg = shape(good);
    EXPECT_TRUE(sb.empty() || sg.empty() || sb != sg) << bad << " | " << good << " -> " << sb;
  }
}

}  // namespace
