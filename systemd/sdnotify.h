// The sd_notify(3) messages a Type=notify systemd unit expects. Every call is a
// no-op when the process was not started by systemd (NOTIFY_SOCKET unset), so the
// daemon calls them unconditionally. Send errors are ignored: telling
// systemd is best effort and must never stop the proxy.
#pragma once
#include <chrono>
#include <string_view>

namespace sdnotify {

// READY=1: listeners are open and the pools are configured.
void ready();
// RELOADING=1 plus MONOTONIC_USEC (systemd >= 253 notify-reload protocol; older
// systemd ignores the extra field). Call ready() again once the reload is done.
void reloading();
// STOPPING=1: shutdown has begun.
void stopping();
// WATCHDOG=1: keep-alive; send at about half of watchdog_interval().
void watchdog();
// The WatchdogSec= interval systemd expects keep-alives within, or 0 if the
// watchdog is not enabled for this process.
std::chrono::microseconds watchdog_interval();
// STATUS=<text>: one line shown by `systemctl status`. Newlines are replaced.
void status(std::string_view text);

}  // namespace sdnotify
