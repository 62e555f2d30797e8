// lockd_load: load generator for pgsidecar's lockd socket (docs/lockd-protocol.md).
// Self-contained (libc, pthreads, std): it speaks the JSON-line protocol over
// AF_UNIX itself and matches answers with a few string searches, no JSON library.
//
//   g++ -O2 -std=c++20 -pthread bench/lockd_load.cpp -o lockd_load
//
// Every mode prints one result line, "MODE key=value ...", on stdout, problems on
// stderr (the first few of each kind), and exits 1 if any answer was wrong.
//
//   status-latency SOCKET N           one connection, N sequential status calls after
//                                     a warm-up; p50/p99/max in µs; every answer must
//                                     be ok and cached:true
//   status-throughput SOCKET CONNS S  CONNS connections, each in its own thread,
//                                     looping status calls for S seconds; calls/s
//   starters SOCKET N                 N threads released at once by a barrier; each
//                                     connects, sends migrate, then status; wall time
//                                     until all saw "current", answers with a
//                                     non-empty "applied"
//   lock-pairs SOCKET C S NAME        C connections looping lock(NAME)/unlock for S
//                                     seconds; pairs/s and acquire latency
//   first-status SOCKET WAIT_S        connect as soon as the socket accepts (retrying
//                                     up to WAIT_S), then time one status call: the
//                                     cold path right after the daemon starts
//   status-until SOCKET STATUS WAIT_S status calls every 5 ms until the answer's
//                                     status is STATUS (e.g. a new file was noticed)
//   first-uncached SOCKET WAIT_S      status calls every 1 ms until one answers
//                                     cached:false (after something dropped the
//                                     cache, e.g. a NOTIFY); times that call
//   echo-server SOCKET                for scale: listens on SOCKET and answers every
//                                     line with a fixed cached status answer, one
//                                     connection at a time, until killed (the floor
//                                     status-latency can reach on this machine)
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

// How long one answer may take before we call it a hang (LOCKD_LOAD_TIMEOUT, s).
int answer_timeout_s() {
  const char* e = std::getenv("LOCKD_LOAD_TIMEOUT");
  int v = e ? std::atoi(e) : 0;
  return v > 0 ? v : 60;
}

double us_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::micro>(b - a).count();
}

// Problems go to stderr, at most a few per kind, all counted.
struct Problems {
  std::mutex mu;
  std::atomic<long> count{0};
  int printed = 0;
  void report(const std::string& what) {
    count++;
    std::lock_guard<std::mutex> g(mu);
    if (printed++ < 8) std::fprintf(stderr, "lockd_load: %s\n", what.c_str());
    else if (printed == 9) std::fprintf(stderr, "lockd_load: (further problems not shown)\n");
  }
};
Problems problems;

// --- minimal JSON matching --------------------------------------------------

// The raw value of `"key":` in a one-line JSON object: a string's contents
// (without quotes, escapes left as they are), an array or object including its
// brackets, or a literal/number. Occurrences of "key" that are values (not
// followed by ':') are skipped. Empty view with *found=false when absent.
std::string_view field(std::string_view line, std::string_view key, bool* found = nullptr) {
  if (found) *found = false;
  std::string pat;
  pat.reserve(key.size() + 2);
  pat += '"';
  pat += key;
  pat += '"';
  size_t pos = 0;
  while ((pos = line.find(pat, pos)) != std::string_view::npos) {
    size_t i = pos + pat.size();
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) i++;
    if (i >= line.size() || line[i] != ':') {
      pos += pat.size();
      continue;
    }
    i++;
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) i++;
    if (i >= line.size()) return {};
    if (found) *found = true;
    char c = line[i];
    if (c == '"') {
      size_t j = i + 1;
      while (j < line.size() && line[j] != '"') j += line[j] == '\\' ? 2 : 1;
      return line.substr(i + 1, std::min(j, line.size()) - i - 1);
    }
    if (c == '[' || c == '{') {
      int depth = 0;
      bool in_str = false;
      size_t j = i;
      for (; j < line.size(); j++) {
        char d = line[j];
        if (in_str) {
          if (d == '\\') j++;
          else if (d == '"') in_str = false;
        } else if (d == '"') {
          in_str = true;
        } else if (d == '[' || d == '{') {
          depth++;
        } else if (d == ']' || d == '}') {
          if (--depth == 0) break;
        }
      }
      return line.substr(i, std::min(j + 1, line.size()) - i);
    }
    size_t j = i;
    while (j < line.size() && line[j] != ',' && line[j] != '}' && line[j] != ']' && line[j] != ' ') j++;
    return line.substr(i, j - i);
  }
  return {};
}

bool is_ok(std::string_view line) { return field(line, "ok") == "true"; }

// An array value with at least one element ("[]" and "[ ]" are empty).
bool nonempty_array(std::string_view v) {
  if (v.size() < 2 || v.front() != '[') return false;
  for (size_t i = 1; i + 1 < v.size(); i++)
    if (v[i] != ' ') return true;
  return false;
}

std::string shorten(std::string_view s) {
  return s.size() > 300 ? std::string(s.substr(0, 300)) + "..." : std::string(s);
}

// --- one connection -----------------------------------------------------------

struct Conn {
  int fd = -1;
  std::string buf;   // received, not yet returned
  size_t start = 0;  // first unreturned byte of buf
  std::string err;

  Conn() = default;
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;
  Conn(Conn&& o) noexcept : fd(o.fd), buf(std::move(o.buf)), start(o.start), err(std::move(o.err)) { o.fd = -1; }
  ~Conn() { close(); }
  void close() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }

  // Connects; while the socket is missing or refuses (daemon still starting),
  // retries every 200 µs until wait_s has passed.
  bool open(const std::string& path, double wait_s = 0) {
    auto deadline = Clock::now() + std::chrono::duration<double>(wait_s);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) {
      err = "socket path too long: " + path;
      return false;
    }
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    for (;;) {
      fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0) {
        err = std::string("socket: ") + std::strerror(errno);
        return false;
      }
      if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) break;
      int e = errno;
      ::close(fd);
      fd = -1;
      bool retry = e == ENOENT || e == ECONNREFUSED || e == EAGAIN || e == EINTR;
      if (!retry || Clock::now() >= deadline) {
        err = "connect " + path + ": " + std::strerror(e);
        return false;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    timeval tv{answer_timeout_s(), 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    return true;
  }

  bool send(std::string_view line) {
    while (!line.empty()) {
      ssize_t n = ::send(fd, line.data(), line.size(), MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        err = std::string("send: ") + std::strerror(errno);
        return false;
      }
      line.remove_prefix(size_t(n));
    }
    return true;
  }

  // The next answer line, without its '\n'.
  bool read_line(std::string& out) {
    for (;;) {
      size_t nl = buf.find('\n', start);
      if (nl != std::string::npos) {
        out.assign(buf, start, nl - start);
        start = nl + 1;
        if (start == buf.size()) {
          buf.clear();
          start = 0;
        }
        return true;
      }
      if (start > 0) {
        buf.erase(0, start);
        start = 0;
      }
      char tmp[16384];
      ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
      if (n > 0) {
        buf.append(tmp, size_t(n));
        continue;
      }
      if (n == 0) {
        err = "lockd closed the connection" + (buf.empty() ? std::string() : " after a partial line: " + shorten(buf));
        return false;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        err = "no answer within " + std::to_string(answer_timeout_s()) + " s (hang?)";
      } else {
        err = std::string("recv: ") + std::strerror(errno);
      }
      return false;
    }
  }

  // One request line, one answer line.
  bool call(std::string_view request, std::string& answer) { return send(request) && read_line(answer); }
};

constexpr std::string_view kStatus = "{\"op\":\"status\"}\n";

// Nearest-rank percentile of sorted values.
double pct(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  size_t i = size_t(std::ceil(p * double(sorted.size())));
  return sorted[std::clamp<size_t>(i, 1, sorted.size()) - 1];
}

[[noreturn]] void usage() {
  std::fputs(
      "usage: lockd_load status-latency SOCKET N\n"
      "       lockd_load status-throughput SOCKET CONNS SECONDS\n"
      "       lockd_load starters SOCKET N\n"
      "       lockd_load lock-pairs SOCKET CONTENDERS SECONDS NAME\n"
      "       lockd_load first-status SOCKET WAIT_SECONDS\n"
      "       lockd_load status-until SOCKET STATUS WAIT_SECONDS\n"
      "       lockd_load first-uncached SOCKET WAIT_SECONDS\n"
      "       lockd_load echo-server SOCKET\n",
      stderr);
  std::exit(2);
}

long arg_long(const char* s) {
  char* end = nullptr;
  long v = std::strtol(s, &end, 10);
  if (!end || *end || v <= 0) usage();
  return v;
}

double arg_seconds(const char* s) {
  char* end = nullptr;
  double v = std::strtod(s, &end);
  if (!end || *end || v <= 0) usage();
  return v;
}

// --- modes ----------------------------------------------------------------------

int status_latency(const std::string& sock, long n) {
  Conn c;
  if (!c.open(sock, 10)) {
    problems.report(c.err);
    std::printf("status-latency n=%ld errors=1\n", n);
    return 1;
  }
  std::string answer;
  long warmup = std::max(1000L, n / 10);
  for (long i = 0; i < warmup; i++) {
    if (!c.call(kStatus, answer)) {
      problems.report("warm-up: " + c.err);
      std::printf("status-latency n=%ld errors=%ld\n", n, problems.count.load());
      return 1;
    }
  }
  std::vector<double> lat;
  lat.reserve(size_t(n));
  long uncached = 0;
  std::string last_status;
  for (long i = 0; i < n; i++) {
    auto t0 = Clock::now();
    if (!c.call(kStatus, answer)) {
      problems.report(c.err);
      break;
    }
    auto t1 = Clock::now();
    lat.push_back(us_between(t0, t1));
    if (!is_ok(answer)) problems.report("status answer not ok: " + shorten(answer));
    if (field(answer, "cached") != "true") {
      if (uncached++ < 3) problems.report("status answer not cached:true: " + shorten(answer));
    }
    if (i == n - 1) last_status = field(answer, "status");
  }
  std::sort(lat.begin(), lat.end());
  double sum = 0;
  for (double v : lat) sum += v;
  std::printf("status-latency n=%zu p50_us=%.1f p99_us=%.1f max_us=%.1f mean_us=%.1f uncached=%ld status=%s errors=%ld\n",
              lat.size(), pct(lat, 0.50), pct(lat, 0.99), lat.empty() ? 0.0 : lat.back(),
              lat.empty() ? 0.0 : sum / double(lat.size()), uncached, last_status.empty() ? "-" : last_status.c_str(),
              problems.count.load());
  return problems.count ? 1 : 0;
}

int status_throughput(const std::string& sock, long conns, double seconds) {
  std::vector<Conn> cs(static_cast<size_t>(conns));
  for (auto& c : cs) {
    if (!c.open(sock, 10)) {
      problems.report(c.err);
      std::printf("status-throughput conns=%ld errors=%ld\n", conns, problems.count.load());
      return 1;
    }
  }
  std::atomic<bool> stop{false};
  std::atomic<long> calls{0}, uncached{0};
  Clock::time_point t0;
  std::barrier go(conns + 1, [&t0]() noexcept { t0 = Clock::now(); });
  std::vector<std::thread> ts;
  for (auto& c : cs) {
    ts.emplace_back([&, cp = &c] {
      std::string answer;
      long mine = 0, unc = 0;
      go.arrive_and_wait();
      while (!stop.load(std::memory_order_relaxed)) {
        if (!cp->call(kStatus, answer)) {
          problems.report(cp->err);
          break;
        }
        mine++;
        if (!is_ok(answer)) problems.report("status answer not ok: " + shorten(answer));
        if (field(answer, "cached") != "true") unc++;
      }
      calls += mine;
      uncached += unc;
    });
  }
  go.arrive_and_wait();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  auto t1 = Clock::now();
  for (auto& t : ts) t.join();
  double elapsed = us_between(t0, t1) / 1e6;  // calls finishing during the join add < 1 per connection
  std::printf("status-throughput conns=%ld seconds=%.2f calls=%ld calls_per_s=%.0f uncached=%ld errors=%ld\n", conns,
              elapsed, calls.load(), double(calls.load()) / elapsed, uncached.load(), problems.count.load());
  return problems.count ? 1 : 0;
}

int starters(const std::string& sock, long n) {
  std::atomic<long> applied_nonempty{0}, current{0}, migrate_current{0};
  std::vector<double> done_ms(size_t(n), -1);
  Clock::time_point t0;
  std::barrier go(n, [&t0]() noexcept { t0 = Clock::now(); });
  std::vector<std::thread> ts;
  ts.reserve(size_t(n));
  for (long i = 0; i < n; i++) {
    ts.emplace_back([&, i] {
      Conn c;
      std::string answer;
      std::string migrate = "{\"op\":\"migrate\",\"id\":" + std::to_string(i) + "}\n";
      go.arrive_and_wait();
      // Like a process that just started: connect, migrate, check the status.
      if (!c.open(sock, 10)) {
        problems.report("starter " + std::to_string(i) + ": " + c.err);
        return;
      }
      if (!c.call(migrate, answer)) {
        problems.report("starter " + std::to_string(i) + ": migrate: " + c.err);
        return;
      }
      if (!is_ok(answer)) problems.report("migrate answer not ok: " + shorten(answer));
      bool has_applied = false;
      std::string_view applied = field(answer, "applied", &has_applied);
      if (!has_applied && is_ok(answer)) problems.report("migrate answer without \"applied\": " + shorten(answer));
      if (nonempty_array(applied)) applied_nonempty++;
      if (field(answer, "status") == "current") migrate_current++;
      if (!c.call(kStatus, answer)) {
        problems.report("starter " + std::to_string(i) + ": status: " + c.err);
        return;
      }
      if (field(answer, "status") != "current") {
        problems.report("status after migrate is not current: " + shorten(answer));
        return;
      }
      done_ms[size_t(i)] = us_between(t0, Clock::now()) / 1000;
      current++;
    });
  }
  for (auto& t : ts) t.join();
  std::vector<double> ok;
  for (double v : done_ms)
    if (v >= 0) ok.push_back(v);
  std::sort(ok.begin(), ok.end());
  std::printf(
      "starters n=%ld wall_ms=%.2f p50_ms=%.2f current=%ld migrate_current=%ld applied_nonempty=%ld errors=%ld\n", n,
      ok.empty() ? 0.0 : ok.back(), pct(ok, 0.5), current.load(), migrate_current.load(), applied_nonempty.load(),
      problems.count.load());
  return problems.count || current != n ? 1 : 0;
}

int lock_pairs(const std::string& sock, long contenders, double seconds, const std::string& name) {
  std::vector<Conn> cs(static_cast<size_t>(contenders));
  for (auto& c : cs) {
    if (!c.open(sock, 10)) {
      problems.report(c.err);
      std::printf("lock-pairs contenders=%ld errors=%ld\n", contenders, problems.count.load());
      return 1;
    }
  }
  // The lock's own timeout is far beyond a run: a lock_timeout answer is a problem.
  const std::string lock = "{\"op\":\"lock\",\"name\":\"" + name + "\",\"timeout_ms\":" +
                           std::to_string(answer_timeout_s() * 1000) + "}\n";
  const std::string unlock = "{\"op\":\"unlock\",\"name\":\"" + name + "\"}\n";
  std::atomic<bool> stop{false};
  std::atomic<long> pairs{0}, queued{0};
  Clock::time_point t0, deadline;
  std::barrier go(contenders + 1, [&]() noexcept {
    t0 = Clock::now();
    deadline = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  });
  std::mutex mu;
  std::vector<double> lat;
  std::vector<std::thread> ts;
  for (auto& c : cs) {
    ts.emplace_back([&, cp = &c] {
      std::string answer;
      std::vector<double> mine;
      long n = 0, q = 0;
      go.arrive_and_wait();
      while (!stop.load(std::memory_order_relaxed)) {
        auto a = Clock::now();
        if (!cp->call(lock, answer)) {
          problems.report("lock: " + cp->err);
          break;
        }
        if (field(answer, "state") == "queued") {
          q++;
          if (!is_ok(answer)) problems.report("queued line not ok: " + shorten(answer));
          if (!cp->read_line(answer)) {
            problems.report("lock (after queued): " + cp->err);
            break;
          }
        }
        if (field(answer, "state") != "held" || !is_ok(answer)) {
          problems.report("lock answer is not held: " + shorten(answer));
          break;
        }
        auto b = Clock::now();
        if (!cp->call(unlock, answer)) {
          problems.report("unlock: " + cp->err);
          break;
        }
        if (field(answer, "state") != "released" || !is_ok(answer)) {
          problems.report("unlock answer is not released: " + shorten(answer));
          break;
        }
        if (Clock::now() <= deadline) {  // pairs finishing while the run winds down do not count
          n++;
          mine.push_back(us_between(a, b));
        }
      }
      cp->close();  // a lock this connection still holds (after an error) goes to the next contender
      pairs += n;
      queued += q;
      std::lock_guard<std::mutex> g(mu);
      lat.insert(lat.end(), mine.begin(), mine.end());
    });
  }
  go.arrive_and_wait();
  std::this_thread::sleep_until(deadline);
  stop = true;
  for (auto& t : ts) t.join();
  std::sort(lat.begin(), lat.end());
  std::printf(
      "lock-pairs contenders=%ld seconds=%.2f pairs=%ld pairs_per_s=%.0f acquire_p50_us=%.1f acquire_p99_us=%.1f "
      "acquire_max_us=%.1f queued=%ld errors=%ld\n",
      contenders, seconds, pairs.load(), double(pairs.load()) / seconds, pct(lat, 0.5), pct(lat, 0.99),
      lat.empty() ? 0.0 : lat.back(), queued.load(), problems.count.load());
  return problems.count ? 1 : 0;
}

int first_status(const std::string& sock, double wait_s) {
  auto c0 = Clock::now();
  Conn c;
  if (!c.open(sock, wait_s)) {
    problems.report(c.err);
    std::printf("first-status errors=1\n");
    return 1;
  }
  auto t0 = Clock::now();
  std::string answer;
  if (!c.call(kStatus, answer)) {
    problems.report(c.err);
    std::printf("first-status errors=1\n");
    return 1;
  }
  auto t1 = Clock::now();
  if (!is_ok(answer)) problems.report("status answer not ok: " + shorten(answer));
  std::string st(field(answer, "status")), cached(field(answer, "cached"));
  std::printf("first-status us=%.1f cached=%s status=%s connect_wait_ms=%.1f errors=%ld\n", us_between(t0, t1),
              cached.empty() ? "-" : cached.c_str(), st.empty() ? "-" : st.c_str(), us_between(c0, t0) / 1000,
              problems.count.load());
  return problems.count ? 1 : 0;
}

int status_until(const std::string& sock, const std::string& want, double wait_s) {
  auto t0 = Clock::now();
  auto deadline = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(wait_s));
  Conn c;
  if (!c.open(sock, wait_s)) {
    problems.report(c.err);
    std::printf("status-until want=%s errors=1\n", want.c_str());
    return 1;
  }
  std::string answer;
  long calls = 0;
  for (;;) {
    if (!c.call(kStatus, answer)) {
      problems.report(c.err);
      std::printf("status-until want=%s errors=1\n", want.c_str());
      return 1;
    }
    calls++;
    if (field(answer, "status") == want) break;
    if (Clock::now() >= deadline) {
      char secs[32];
      std::snprintf(secs, sizeof secs, "%g", wait_s);
      problems.report("status still not " + want + " after " + secs + " s: " + shorten(answer));
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::string st(field(answer, "status"));
  // answer= comes last: it is the raw JSON line and may contain spaces.
  std::printf("status-until want=%s status=%s waited_ms=%.1f calls=%ld errors=%ld answer=%s\n", want.c_str(),
              st.empty() ? "-" : st.c_str(), us_between(t0, Clock::now()) / 1000, calls, problems.count.load(),
              answer.c_str());
  return problems.count ? 1 : 0;
}

int first_uncached(const std::string& sock, double wait_s) {
  auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(wait_s));
  Conn c;
  if (!c.open(sock, wait_s)) {
    problems.report(c.err);
    std::printf("first-uncached errors=1\n");
    return 1;
  }
  std::string answer;
  long calls = 0;
  for (;;) {
    auto t0 = Clock::now();
    if (!c.call(kStatus, answer)) {
      problems.report(c.err);
      break;
    }
    auto t1 = Clock::now();
    calls++;
    if (!is_ok(answer)) problems.report("status answer not ok: " + shorten(answer));
    if (field(answer, "cached") == "false") {
      std::string st(field(answer, "status"));
      std::printf("first-uncached us=%.1f calls=%ld status=%s errors=%ld\n", us_between(t0, t1), calls,
                  st.empty() ? "-" : st.c_str(), problems.count.load());
      return problems.count ? 1 : 0;
    }
    if (t1 >= deadline) {
      problems.report("every status answer was cached:true for " + std::to_string(calls) + " calls: " + shorten(answer));
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  std::printf("first-uncached calls=%ld errors=%ld\n", calls, problems.count.load());
  return 1;
}

int echo_server(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) usage();
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  ::unlink(path.c_str());
  int l = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (l < 0 || ::bind(l, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(l, 64) != 0) {
    std::fprintf(stderr, "lockd_load: echo-server %s: %s\n", path.c_str(), std::strerror(errno));
    return 1;
  }
  constexpr std::string_view answer = "{\"ok\":true,\"status\":\"current\",\"head\":\"1\",\"pending\":[],\"cached\":true}\n";
  for (;;) {
    int c = ::accept(l, nullptr, nullptr);
    if (c < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    char buf[16384];
    std::string out;
    for (;;) {
      ssize_t n = ::recv(c, buf, sizeof buf, 0);
      if (n <= 0) break;
      out.clear();
      for (ssize_t i = 0; i < n; i++)
        if (buf[i] == '\n') out += answer;
      if (!out.empty() && ::send(c, out.data(), out.size(), MSG_NOSIGNAL) < 0) break;
    }
    ::close(c);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  if (argc < 3) usage();
  if (std::string_view(argv[1]) == "echo-server" && argc == 3) return echo_server(argv[2]);
  std::string mode = argv[1], sock = argv[2];
  if (mode == "status-latency" && argc == 4) return status_latency(sock, arg_long(argv[3]));
  if (mode == "status-throughput" && argc == 5) return status_throughput(sock, arg_long(argv[3]), arg_seconds(argv[4]));
  if (mode == "starters" && argc == 4) return starters(sock, arg_long(argv[3]));
  if (mode == "lock-pairs" && argc == 6) return lock_pairs(sock, arg_long(argv[3]), arg_seconds(argv[4]), argv[5]);
  if (mode == "first-status" && argc == 4) return first_status(sock, arg_seconds(argv[3]));
  if (mode == "status-until" && argc == 5) return status_until(sock, argv[3], arg_seconds(argv[4]));
  if (mode == "first-uncached" && argc == 4) return first_uncached(sock, arg_seconds(argv[3]));
  usage();
}
