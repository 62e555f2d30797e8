// What GET /readyz reports: whether the PostgreSQL servers of each `databases:`
// entry answer. An entry counts as reachable while one of its servers logged in,
// or a probe was answered, within the last server_check_delay. The janitor sends
// a probe to each entry past that (at most one in flight per entry): a startup
// packet, as pg_isready does, answered by an authentication request or by an
// error other than "starting up", "shutting down" or "too many clients". The
// probe never authenticates, so it needs no password.
#pragma once
#include <uv.h>

#include <chrono>
#include <map>
#include <string>

#include "conf/config.h"
#include "pool/pool.h"

namespace proxy {

class Readiness {
 public:
  explicit Readiness(uv_loop_t* loop) : loop_(loop) {}
  ~Readiness();
  Readiness(const Readiness&) = delete;
  Readiness& operator=(const Readiness&) = delete;

  // Closes probes in flight; tick() starts none after it (shutdown).
  void stop();
  // The entries to watch (on start and after each reload); known results stay.
  void configure(const conf::Config& cfg);
  // Every janitor tick: starts due probes, gives up on late ones.
  void tick(pool::Time now);
  // A server for this database (as clients name it) logged in as user: its entry,
  // or "*", is reachable; later probes of an entry without a user name that user
  // (a role that exists, so PostgreSQL logs no failed login for them).
  void note_login(const std::string& database, const std::string& user, pool::Time now);
  // Entries not reachable now, each with why ("" when all are).
  std::map<std::string, std::string> unreachable(pool::Time now) const;

  struct Probe;   // one probe connection (readiness.cpp)

 private:
  struct Entry {
    std::string host, dbname, user;   // user: the entry's, else the last one that logged in
    int port = 5432;
    pool::Time last_ok{};
    std::string last_error = "not checked yet";
    Probe* probe = nullptr;   // in flight
    pool::Time probe_deadline{};
    pool::Time next_probe{};   // halfway through the window after a success, 1 s after a failure
    bool fixed_user = false;   // the entry names its user
  };
  friend struct Probe;
  void probe_done(const std::string& name, bool ok, const std::string& why);

  uv_loop_t* loop_;
  std::chrono::milliseconds window_{30000};         // server_check_delay (at least 1 s)
  std::chrono::milliseconds probe_timeout_{15000};  // server_connect_timeout
  std::map<std::string, Entry> entries_;
  bool stopped_ = false;
};

}  // namespace proxy
