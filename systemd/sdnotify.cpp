#include "systemd/sdnotify.h"

#include <systemd/sd-daemon.h>
#include <time.h>

#include <cstdint>
#include <string>

namespace sdnotify {
namespace {

// unset_environment = 0 throughout: we notify many times over the process's life.
void notify(const char* state) noexcept { (void)sd_notify(0, state); }

std::uint64_t monotonic_usec() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000u +
         static_cast<std::uint64_t>(ts.tv_nsec) / 1000u;
}

}  // namespace

void ready() { notify("READY=1"); }

void reloading() {
  std::string state = "RELOADING=1\nMONOTONIC_USEC=" + std::to_string(monotonic_usec());
  notify(state.c_str());
}

void stopping() { notify("STOPPING=1"); }

void watchdog() { notify("WATCHDOG=1"); }

std::chrono::microseconds watchdog_interval() {
  std::uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) <= 0) return std::chrono::microseconds{0};
  return std::chrono::microseconds{static_cast<std::int64_t>(usec)};
}

void status(std::string_view text) {
  std::string state = "STATUS=";
  state.reserve(state.size() + text.size());
  for (char c : text) state.push_back(c == '\n' || c == '\r' ? ' ' : c);
  notify(state.c_str());
}

}  // namespace sdnotify
