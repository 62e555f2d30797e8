// `pgsidecar ctl`: a client of the lockd socket for shell scripts
// (docs/lockd-protocol.md). A short-lived process, so plain blocking sockets.
#include "app/ctl.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "conf/config.h"

namespace ctl {
namespace {

using json = nlohmann::json;

constexpr const char* kUsage =
    "usage: pgsidecar ctl [--socket PATH | -c CONFIG] COMMAND\n"
    "  status                                   is the schema current? (exit 0 if so, 3 if not)\n"
    "  migrate [--retry VERSION | --to VERSION] apply pending migrations, once across all callers;\n"
    "                                           --retry: run the failed VERSION again first;\n"
    "                                           --to: revert the versions above VERSION (.down.sql)\n"
    "  lock acquire NAME [--timeout 5s] [-- COMMAND ARGS...]\n"
    "                                           hold NAME while COMMAND runs (or until stdin closes)\n"
    "  lock release NAME                        release NAME (held by this connection)\n"
    "  lock status [NAME]                       holders and waiters\n"
    "  raw                                      JSON request lines from stdin, answers to stdout\n";

int usage(const char* why) {
  if (why) std::fprintf(stderr, "pgsidecar ctl: %s\n", why);
  std::fputs(kUsage, stderr);
  return 2;
}

class Conn {
 public:
  ~Conn() {
    if (fd_ >= 0) close(fd_);
  }
  bool open(const std::string& path) {
    fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) return fail(path, "path too long");
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return fail(path, std::strerror(errno));
    return true;
  }
  bool send(const std::string& line) {
    std::string data = line + "\n";
    for (size_t off = 0; off < data.size();) {
      ssize_t n = write(fd_, data.data() + off, data.size() - off);
      if (n <= 0) return false;
      off += size_t(n);
    }
    return true;
  }
  // The next line, or nullopt when the daemon closed the connection.
  std::optional<std::string> line() {
    for (;;) {
      size_t nl = buf_.find('\n');
      if (nl != std::string::npos) {
        std::string l = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return l;
      }
      char tmp[4096];
      ssize_t n = read(fd_, tmp, sizeof tmp);
      if (n <= 0) return std::nullopt;
      buf_.append(tmp, size_t(n));
    }
  }
  bool buffered() const { return buf_.find('\n') != std::string::npos; }
  int fd() const { return fd_; }

 private:
  bool fail(const std::string& path, const char* why) {
    std::fprintf(stderr, "pgsidecar ctl: cannot connect to %s: %s\n", path.c_str(), why);
    return false;
  }
  int fd_ = -1;
  std::string buf_;
};

// Prints the answer line and returns it parsed (null when it is not JSON).
json print_answer(const std::string& line) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
  json j = json::parse(line, nullptr, false);
  return j.is_object() ? j : json::object();
}

std::optional<json> ask(Conn& c, const json& request) {
  if (!c.send(request.dump(-1, ' ', false, json::error_handler_t::replace))) return std::nullopt;
  auto l = c.line();
  if (!l) return std::nullopt;
  return print_answer(*l);
}

int lost_connection() {
  std::fprintf(stderr, "pgsidecar ctl: the daemon closed the connection\n");
  return 1;
}

// "5s", "500ms", "2m", "1h" or plain seconds -> ms; nullopt if malformed.
std::optional<int64_t> parse_duration(const std::string& s) {
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) i++;
  if (i == 0) return std::nullopt;
  double v = std::strtod(s.substr(0, i).c_str(), nullptr);
  std::string unit = s.substr(i);
  double scale = unit.empty() || unit == "s" ? 1000 : unit == "ms" ? 1 : unit == "m" ? 60000 : unit == "h" ? 3600000 : -1;
  if (scale < 0) return std::nullopt;
  return int64_t(v * scale);
}

int lock_acquire(Conn& c, const std::string& name, std::optional<int64_t> timeout, std::vector<std::string> command) {
  json req = {{"op", "lock"}, {"name", name}};
  if (timeout) req["timeout_ms"] = *timeout;
  if (!c.send(req.dump(-1, ' ', false, json::error_handler_t::replace))) return lost_connection();
  json answer;
  do {
    auto l = c.line();
    if (!l) return lost_connection();
    answer = print_answer(*l);
  } while (answer.value("state", "") == "queued");
  if (answer.value("state", "") != "held") return 1;
  if (!command.empty()) {
    pid_t pid = fork();
    if (pid == 0) {
      close(c.fd());
      std::vector<char*> argv;
      for (std::string& a : command) argv.push_back(a.data());
      argv.push_back(nullptr);
      execvp(argv[0], argv.data());
      std::fprintf(stderr, "pgsidecar ctl: cannot run %s: %s\n", argv[0], std::strerror(errno));
      _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  // Hold until stdin closes; a lost lock ends it early.
  pollfd fds[2] = {{STDIN_FILENO, POLLIN, 0}, {c.fd(), POLLIN, 0}};
  for (;;) {
    if (poll(fds, 2, -1) < 0 && errno != EINTR) return 1;
    if (fds[1].revents) {
      auto l = c.line();
      if (!l) return lost_connection();
      print_answer(*l);
      return 1;   // the only unsolicited line is "lost"
    }
    if (fds[0].revents) {
      char tmp[4096];
      if (read(STDIN_FILENO, tmp, sizeof tmp) <= 0) return 0;
    }
  }
}

// Pipes stdin's request lines to the daemon and its answers to stdout, until
// stdin ends and every request has its final answer.
int raw(Conn& c) {
  int outstanding = 0;
  bool input_open = true;
  std::string in;
  pollfd fds[2] = {{STDIN_FILENO, POLLIN, 0}, {c.fd(), POLLIN, 0}};
  while (input_open || outstanding > 0) {
    fds[0].fd = input_open ? STDIN_FILENO : -1;
    if (!c.buffered() && poll(fds, 2, -1) < 0 && errno != EINTR) return 1;
    if (c.buffered() || fds[1].revents) {
      auto l = c.line();
      if (!l) return outstanding > 0 ? lost_connection() : 0;
      json j = print_answer(*l);
      std::string state = j.value("state", "");
      if (state != "queued" && state != "lost") outstanding--;
      continue;
    }
    if (fds[0].revents) {
      char tmp[4096];
      ssize_t n = read(STDIN_FILENO, tmp, sizeof tmp);
      if (n <= 0) {
        input_open = false;
        continue;
      }
      in.append(tmp, size_t(n));
      for (size_t nl; (nl = in.find('\n')) != std::string::npos; in.erase(0, nl + 1)) {
        std::string line = in.substr(0, nl);
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        if (!c.send(line)) return lost_connection();
        outstanding++;
      }
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string socket_path = conf::Lockd{}.socket_path;
  std::vector<std::string> args;
  for (int i = 0; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--socket" || a == "-s") {
      if (++i >= argc) return usage("--socket needs a path");
      socket_path = argv[i];
    } else if (a == "-c" || a == "--config") {
      if (++i >= argc) return usage("-c needs a file");
      conf::LoadResult r = conf::load_file(argv[i]);
      if (!r.config) {
        std::fprintf(stderr, "%s\n", r.error.c_str());
        return 2;
      }
      socket_path = r.config->lockd.socket_path;
    } else if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else {
      for (; i < argc; i++) args.push_back(argv[i]);
    }
  }
  if (args.empty()) return usage(nullptr);
  if (socket_path.empty()) return usage("lockd is off in that config (lockd.socket_path is \"\")");

  const std::string& cmd = args[0];
  const bool with_version = cmd == "migrate" && args.size() == 3 && (args[1] == "--retry" || args[1] == "--to");
  if (cmd == "migrate" && args.size() == 2 && (args[1] == "--retry" || args[1] == "--to"))
    return usage((args[1] + " needs a version").c_str());
  bool known = ((cmd == "status" || cmd == "migrate" || cmd == "raw") && args.size() == 1) || with_version ||
               (cmd == "lock" && args.size() >= 2);
  if (!known) return usage(("unknown command: " + cmd).c_str());
  Conn c;
  if (!c.open(socket_path)) return 1;

  if (cmd == "status" || cmd == "migrate") {
    json req = {{"op", cmd}};
    if (with_version) req[args[1] == "--to" ? "to" : "retry"] = args[2];
    auto a = ask(c, req);
    if (!a) return lost_connection();
    if (!a->value("ok", false)) return 1;
    return cmd == "status" && a->value("status", "") != "current" ? 3 : 0;
  }
  if (cmd == "raw") return raw(c);

  const std::string& sub = args[1];
  if (sub == "acquire" && args.size() >= 3) {
    std::optional<int64_t> timeout;
    std::vector<std::string> command;
    for (size_t i = 3; i < args.size(); i++) {
      if (args[i] == "--timeout" && i + 1 < args.size()) {
        if (!(timeout = parse_duration(args[++i]))) return usage("--timeout takes a duration such as 5s or 500ms");
      } else if (args[i] == "--") {
        command.assign(args.begin() + long(i) + 1, args.end());
        if (command.empty()) return usage("-- must be followed by a command");
        break;
      } else {
        return usage(("unexpected argument: " + args[i]).c_str());
      }
    }
    return lock_acquire(c, args[2], timeout, std::move(command));
  }
  if (sub == "release" && args.size() == 3) {
    auto a = ask(c, {{"op", "unlock"}, {"name", args[2]}});
    if (!a) return lost_connection();
    return a->value("ok", false) ? 0 : 1;
  }
  if (sub == "status" && args.size() <= 3) {
    json req = {{"op", "locks"}};
    if (args.size() == 3) req["name"] = args[2];
    auto a = ask(c, req);
    if (!a) return lost_connection();
    return a->value("ok", false) ? 0 : 1;
  }
  return usage("lock takes: acquire NAME [--timeout D] [-- COMMAND...] | release NAME | status [NAME]");
}

}  // namespace ctl
