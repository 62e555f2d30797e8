#include "systemd/sdnotify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

// The notify protocol is one datagram of "KEY=VALUE\n..." text sent to the unix
// socket named by $NOTIFY_SOCKET (a path, or '@' for the abstract namespace).
// systemd documents it as a stable interface meant to be spoken without
// libsystemd; doing so keeps seven shared libraries (libsystemd, libgcrypt,
// liblzma, libzstd, liblz4, libcap, libgpg-error) out of every sidecar process.
namespace sdnotify {
namespace {

void notify(std::string_view state) noexcept {
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (path == nullptr || (path[0] != '/' && path[0] != '@')) return;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::size_t len = std::strlen(path);
  if (len >= sizeof addr.sun_path) return;
  std::memcpy(addr.sun_path, path, len);
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';
  socklen_t addr_len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len);

  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  (void)::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL,
                 reinterpret_cast<const sockaddr*>(&addr), addr_len);
  ::close(fd);
}

std::uint64_t monotonic_usec() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000u +
         static_cast<std::uint64_t>(ts.tv_nsec) / 1000u;
}

// A decimal environment variable, or 0 when it is absent or not a number.
std::uint64_t env_u64(const char* name) noexcept {
  const char* text = std::getenv(name);
  if (text == nullptr) return 0;
  std::uint64_t value = 0;
  const char* end = text + std::strlen(text);
  auto [ptr, ec] = std::from_chars(text, end, value);
  return ec == std::errc{} && ptr == end ? value : 0;
}

}  // namespace

void ready() { notify("READY=1"); }

void reloading() {
  notify("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(monotonic_usec()));
}

void stopping() { notify("STOPPING=1"); }

void watchdog() { notify("WATCHDOG=1"); }

std::chrono::microseconds watchdog_interval() {
  // WATCHDOG_PID, when set, names the process the watchdog is meant for.
  if (std::getenv("WATCHDOG_PID") != nullptr &&
      env_u64("WATCHDOG_PID") != static_cast<std::uint64_t>(::getpid())) {
    return std::chrono::microseconds{0};
  }
  return std::chrono::microseconds{static_cast<std::int64_t>(env_u64("WATCHDOG_USEC"))};
}

void status(std::string_view text) {
  std::string state = "STATUS=";
  state.reserve(state.size() + text.size());
  for (char c : text) state.push_back(c == '\n' || c == '\r' ? ' ' : c);
  notify(state);
}

}  // namespace sdnotify
