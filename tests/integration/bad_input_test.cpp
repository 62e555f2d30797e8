// Malformed and unusual client input. Each case asserts the exact SQLSTATE or a
// clean close, and that a healthy client connected before the bad input, as
// well as a new one, still work (the daemon keeps serving).
#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>

#include "harness.h"

using namespace itest;

namespace {

class BadInput : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    DaemonConfig c = base_config();
    // Pool large enough for every connection a case keeps open (session mode
    // holds a server per client).
    c.set("pool_mode", GetParam()).set("default_pool_size", "10").set("client_login_timeout", "1s");
    daemon_ = std::make_unique<Daemon>(c);
    START_DAEMON(*daemon_);
    healthy_ = must_connect(daemon_->conninfo());
    ASSERT_TRUE(healthy_);
    ASSERT_EQ(exec(healthy_, "SELECT 1").scalar(), "1");
  }

  // The daemon is alive, the earlier connection works, a new one works.
  void expect_still_serving(const char* what) {
    ASSERT_TRUE(daemon_->running()) << "daemon died after: " << what;
    QResult q = exec(healthy_, "SELECT 'healthy'");
    EXPECT_EQ(q.scalar(), "healthy") << "existing connection broken after " << what << ": " << q.describe();
    ConnectResult fresh = pg_connect(daemon_->conninfo());
    ASSERT_TRUE(fresh.ok()) << "new connection failed after " << what << ": " << fresh.error;
    EXPECT_EQ(exec(fresh.conn, "SELECT 'fresh'").scalar(), "fresh");
  }

  RawConn logged_in() {
    RawConn rc;
    std::string state, err;
    EXPECT_TRUE(rc.login(daemon_->port(), "app", "app", state, err)) << state << " " << err;
    return rc;
  }

  static std::string random_bytes(size_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::string s(n, '\0');
    for (auto& ch : s) ch = static_cast<char>(rng() & 0xff);
    return s;
  }

  std::unique_ptr<Daemon> daemon_;
  ConnPtr healthy_;
};

bool clean_outcome(const BadInputOutcome& o, std::initializer_list<const char*> states) {
  if (o.timed_out) return false;
  if (o.sqlstate.empty()) return o.closed;
  for (const char* s : states)
    if (o.sqlstate == s) return true;
  return false;
}

}  // namespace

TEST_P(BadInput, GarbageMessageAfterStartup) {
  RawConn rc;
  std::string state, err;
  ASSERT_TRUE(rc.login(daemon_->port(), "app", "app", state, err)) << state << " " << err;
  // Unknown message type 0x01 with a well-formed length and random payload.
  ASSERT_TRUE(rc.send(wire::msg('\x01', random_bytes(64, 1))));
  BadInputOutcome o = await_error_or_close(rc, 5000);
  EXPECT_TRUE(clean_outcome(o, {"08P01"})) << o.describe();
  expect_still_serving("garbage message after startup");
}

TEST_P(BadInput, RandomBytesAfterStartup) {
  for (uint32_t seed = 2; seed < 7; ++seed) {
    RawConn rc;
    std::string state, err;
    ASSERT_TRUE(rc.login(daemon_->port(), "app", "app", state, err)) << state << " " << err;
    std::string junk = random_bytes(300, seed);
    junk[0] = '\x02';  // never a valid frontend message type
    ASSERT_TRUE(rc.send(junk));
    // The declared length may exceed what we sent: half-close so that a
    // daemon waiting for the rest sees EOF.
    rc.shutdown_write();
    BadInputOutcome o = await_error_or_close(rc, 5000);
    EXPECT_TRUE(clean_outcome(o, {"08P01"})) << "seed " << seed << ": " << o.describe();
  }
  expect_still_serving("random bytes after startup");
}

TEST_P(BadInput, MessageLengthBelowFour) {
  RawConn rc;
  std::string state, err;
  ASSERT_TRUE(rc.login(daemon_->port(), "app", "app", state, err)) << state << " " << err;
  ASSERT_TRUE(rc.send(std::string("Q") + wire::be32(2) + "xx"));
  BadInputOutcome o = await_error_or_close(rc, 5000);
  EXPECT_TRUE(clean_outcome(o, {"08P01"})) << o.describe();
  expect_still_serving("message with length < 4");
}

TEST_P(BadInput, StartupPacketTooShort) {
  RawConn rc;
  ASSERT_TRUE(rc.connect(daemon_->port()));
  ASSERT_TRUE(rc.send(wire::be32(4)));
  BadInputOutcome o = await_error_or_close(rc, 5000);
  EXPECT_TRUE(clean_outcome(o, {"08P01"})) << o.describe();
  expect_still_serving("startup packet length 4");
}

TEST_P(BadInput, StartupPacketAbsurdLength) {
  long rss_before = daemon_->rss_kb();
  RawConn rc;
  ASSERT_TRUE(rc.connect(daemon_->port()));
  // Declares 100 MB, sends a plausible beginning.
  ASSERT_TRUE(rc.send(wire::be32(100000000) + wire::be32(196608) + std::string("user\0app\0", 9)));
  auto t0 = Clock::now();
  BadInputOutcome o = await_error_or_close(rc, 5000);
  EXPECT_TRUE(clean_outcome(o, {"08P01"})) << o.describe();
  EXPECT_LT(ms_since(t0), 3000) << "absurd startup length should be rejected at once, not waited for";
  long rss_after = daemon_->rss_kb();
  if (rss_before > 0 && rss_after > 0) {
    EXPECT_LT(rss_after - rss_before, 50 * 1024) << "daemon allocated the declared size";
  }
  expect_still_serving("startup packet declaring 100 MB");
}

TEST_P(BadInput, HugeDeclaredMessageAfterStartup) {
  long rss_before = daemon_->rss_kb();
  {
    RawConn rc;
    std::string state, err;
    ASSERT_TRUE(rc.login(daemon_->port(), "app", "app", state, err)) << state << " " << err;
    // A 1 GB query message, of which we send 1 MB and then vanish.
    std::string part = std::string("Q") + wire::be32(0x3fffffff) + std::string(1 << 20, 'x');
    rc.send(part);
    std::this_thread::sleep_for(Ms(200));
    rc.abort();
  }
  std::this_thread::sleep_for(Ms(300));
  long rss_after = daemon_->rss_kb();
  if (rss_before > 0 && rss_after > 0) {
    EXPECT_LT(rss_after - rss_before, 200 * 1024) << "daemon allocated the declared size";
  }
  expect_still_serving("1 GB message header");
}

TEST_P(BadInput, UnknownProtocolVersion) {
  RawConn rc;
  ASSERT_TRUE(rc.connect(daemon_->port()));
  ASSERT_TRUE(rc.send(wire::startup({{"user", "app"}, {"database", "app"}}, 4u << 16)));
  BadInputOutcome o = await_error_or_close(rc, 5000);
  EXPECT_TRUE(clean_outcome(o, {"0A000", "08P01"})) << o.describe();
  expect_still_serving("protocol version 4.0");
}

TEST_P(BadInput, GarbageStartupPacket) {
  RawConn rc;
  ASSERT_TRUE(rc.connect(daemon_->port()));
  std::string body = random_bytes(60, 99);
  body[0] = '\x12';  // version 0x12xxxxxx: nonsense
  ASSERT_TRUE(rc.send(wire::be32(64) + body));
  BadInputOutcome o = await_error_or_close(rc, 5000);
  EXPECT_TRUE(clean_outcome(o, {"0A000", "08P01"})) << o.describe();
  expect_still_serving("garbage startup packet");
}

TEST_P(BadInput, StartupWithoutUser) {
  RawConn rc;
  ASSERT_TRUE(rc.connect(daemon_->port()));
  ASSERT_TRUE(rc.send(wire::startup({{"database", "app"}})));
  BadInputOutcome o = await_error_or_close(rc, 5000);
  EXPECT_TRUE(clean_outcome(o, {"28000", "08P01"})) << o.describe();
  expect_still_serving("startup without user");
}

TEST_P(BadInput, StartupUnterminatedParameters) {
  RawConn rc;
  ASSERT_TRUE(rc.connect(daemon_->port()));
  std::string body = wire::be32(196608) + std::string("user\0app\0database\0ap", 21);  // no final NULs
  ASSERT_TRUE(rc.send(wire::be32(static_cast<uint32_t>(body.size() + 4)) + body));
  BadInputOutcome o = await_error_or_close(rc, 5000);
  EXPECT_TRUE(clean_outcome(o, {"08P01"})) << o.describe();
  expect_still_serving("unterminated startup parameters");
}

TEST_P(BadInput, SslRequestAnsweredNThenStartup) {
  RawConn rc;
  ASSERT_TRUE(rc.connect(daemon_->port()));
  ASSERT_TRUE(rc.send(wire::ssl_request()));
  std::string n;
  ASSERT_EQ(rc.read_exact(1, n, 3000), RawConn::Status::Ok);
  EXPECT_EQ(n, "N");
  std::string state, err;
  ASSERT_TRUE(rc.startup_login("app", "app", state, err)) << state << " " << err;
  std::vector<std::string> col;
  EXPECT_EQ(rc.simple_query("SELECT 'after ssl'", &col), "");
  EXPECT_EQ(col, std::vector<std::string>{"after ssl"});
  // libpq with sslmode=prefer falls back to plain.
  ConnectResult pref = pg_connect(daemon_->conninfo("app", "app", "sslmode=prefer"));
  ASSERT_TRUE(pref.ok()) << pref.error;
  EXPECT_EQ(exec(pref.conn, "SELECT 1").scalar(), "1");
  // sslmode=require fails on the client side; the daemon is unaffected.
  ConnectResult req = pg_connect(daemon_->conninfo("app", "app", "sslmode=require"));
  EXPECT_FALSE(req.ok());
  rc.close();
  pref.conn.reset();
  expect_still_serving("SSLRequest");
}

TEST_P(BadInput, GssEncRequestAnsweredNThenStartup) {
  RawConn rc;
  ASSERT_TRUE(rc.connect(daemon_->port()));
  ASSERT_TRUE(rc.send(wire::gssenc_request()));
  std::string n;
  ASSERT_EQ(rc.read_exact(1, n, 3000), RawConn::Status::Ok);
  EXPECT_EQ(n, "N");
  // PostgreSQL allows an SSLRequest after a refused GSSENCRequest.
  ASSERT_TRUE(rc.send(wire::ssl_request()));
  ASSERT_EQ(rc.read_exact(1, n, 3000), RawConn::Status::Ok);
  EXPECT_EQ(n, "N");
  std::string state, err;
  ASSERT_TRUE(rc.startup_login("app", "app", state, err)) << state << " " << err;
  std::vector<std::string> col;
  EXPECT_EQ(rc.simple_query("SELECT 'after gss'", &col), "");
  EXPECT_EQ(col, std::vector<std::string>{"after gss"});
  expect_still_serving("GSSENCRequest");
}

TEST_P(BadInput, CancelRequestWithBogusKeyOrLength) {
  {
    RawConn rc;
    ASSERT_TRUE(rc.connect(daemon_->port()));
    ASSERT_TRUE(rc.send(wire::cancel_request(12345, 67890)));
    EXPECT_EQ(rc.wait_closed(3000), RawConn::Status::Closed) << "cancel connection must be closed by the daemon";
  }
  {
    RawConn rc;
    ASSERT_TRUE(rc.connect(daemon_->port()));
    ASSERT_TRUE(rc.send(wire::be32(12) + wire::be32(80877102) + wire::be32(1)));  // too short
    BadInputOutcome o = await_error_or_close(rc, 3000);
    EXPECT_TRUE(clean_outcome(o, {"08P01"})) << o.describe();
  }
  // The healthy client's running query was not affected by a bogus cancel.
  ASSERT_EQ(PQsendQuery(healthy_.get(), "SELECT pg_sleep(0.5), 'survived'"), 1);
  RawConn rc;
  ASSERT_TRUE(rc.connect(daemon_->port()));
  ASSERT_TRUE(rc.send(wire::cancel_request(static_cast<uint32_t>(PQbackendPID(healthy_.get())), 1)));
  QResult r = result_of(PQgetResult(healthy_.get()), healthy_.get());
  while (PGresult* extra = PQgetResult(healthy_.get())) PQclear(extra);
  EXPECT_TRUE(r.ok) << "a cancel with the right pid but wrong key cancelled the query: " << r.describe();
  expect_still_serving("bogus CancelRequest");
}

TEST_P(BadInput, ClientGoneMidStartupAndLoginTimeout) {
  {
    RawConn rc;
    ASSERT_TRUE(rc.connect(daemon_->port()));
    std::string sp = wire::startup({{"user", "app"}, {"database", "app"}});
    ASSERT_TRUE(rc.send(sp.substr(0, sp.size() / 2)));
    rc.abort();
  }
  {
    // Connected but silent: closed after client_login_timeout (1 s).
    RawConn rc;
    ASSERT_TRUE(rc.connect(daemon_->port()));
    auto t0 = Clock::now();
    BadInputOutcome o = await_error_or_close(rc, 6000);
    EXPECT_FALSE(o.timed_out) << "silent client not disconnected after client_login_timeout";
    EXPECT_TRUE(o.closed) << o.describe();
    EXPECT_GE(ms_since(t0), 700);
  }
  expect_still_serving("client gone mid-startup / login timeout");
}

TEST_P(BadInput, TerminateRightAfterStartupAndUnknownExtendedSequence) {
  {
    RawConn rc = logged_in();
    ASSERT_TRUE(rc.send(wire::terminate()));
    EXPECT_EQ(rc.wait_closed(3000), RawConn::Status::Closed);
  }
  {
    // Execute of a portal that does not exist, then Sync: server error 34000,
    // then ReadyForQuery; the connection stays usable.
    RawConn rc = logged_in();
    std::string exec_msg = wire::msg('E', std::string("no_such_portal\0", 15) + wire::be32(0));
    ASSERT_TRUE(rc.send(exec_msg + wire::msg('S', "")));
    std::string state;
    for (;;) {
      BackendMsg m;
      ASSERT_EQ(rc.read_msg(m, 5000), RawConn::Status::Ok);
      if (m.type == 'E' && state.empty()) state = wire::error_fields(m.payload)['C'];
      if (m.type == 'Z') break;
    }
    EXPECT_EQ(state, "34000");
    std::vector<std::string> col;
    EXPECT_EQ(rc.simple_query("SELECT 'ok'", &col), "");
    EXPECT_EQ(col, std::vector<std::string>{"ok"});
  }
  expect_still_serving("Terminate / bad portal");
}

TEST_P(BadInput, ConcurrentGarbageWhileHealthyClientWorks) {
  std::atomic<bool> stop{false};
  std::atomic<int> healthy_ok{0}, healthy_fail{0};
  std::string first_fail;
  std::thread healthy([&] {
    ConnectResult c = pg_connect(daemon_->conninfo());
    if (!c.ok()) {
      healthy_fail++;
      first_fail = c.error;
      return;
    }
    while (!stop) {
      QResult q = exec(c.conn, "SELECT count(*) FROM pg_class");
      if (q.ok) healthy_ok++;
      else if (healthy_fail++ == 0) first_fail = q.describe();
    }
  });
  std::vector<std::thread> attackers;
  for (int t = 0; t < 4; ++t) {
    attackers.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        RawConn rc;
        if (!rc.connect(daemon_->port())) continue;
        uint32_t seed = static_cast<uint32_t>(t * 1000 + i);
        switch (i % 5) {
          case 0: rc.send(random_bytes(200, seed)); break;
          case 1: rc.send(wire::be32(4)); break;
          case 2: rc.send(wire::startup({{"user", "app"}, {"database", "app"}}, 4u << 16)); break;
          case 3: {
            std::string st, er;
            if (rc.login(daemon_->port(), "app", "app", st, er)) rc.send(std::string("Q") + wire::be32(1));
            break;
          }
          case 4: rc.send(wire::ssl_request() + random_bytes(50, seed)); break;
        }
        rc.shutdown_write();
        rc.wait_closed(2000);
      }
    });
  }
  for (auto& a : attackers) a.join();
  stop = true;
  healthy.join();
  EXPECT_EQ(healthy_fail.load(), 0) << first_fail;
  EXPECT_GT(healthy_ok.load(), 0);
  expect_still_serving("concurrent garbage");
}

INSTANTIATE_TEST_SUITE_P(Modes, BadInput, ::testing::Values("session", "transaction"),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });
