// One line per event on stderr (journald adds the timestamp under systemd).
// Level-filtered; callers never pass passwords or secrets.
#pragma once
#include <cstdio>
#include <string_view>

#include "conf/config.h"

namespace logx {

void set_level(conf::LogLevel level);
bool enabled(conf::LogLevel level);
void write(conf::LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace logx

#define LOG_DEBUG(...) do { if (logx::enabled(conf::LogLevel::Debug)) logx::write(conf::LogLevel::Debug, __VA_ARGS__); } while (0)
#define LOG_INFO(...) do { if (logx::enabled(conf::LogLevel::Info)) logx::write(conf::LogLevel::Info, __VA_ARGS__); } while (0)
#define LOG_WARN(...) do { if (logx::enabled(conf::LogLevel::Warn)) logx::write(conf::LogLevel::Warn, __VA_ARGS__); } while (0)
#define LOG_ERROR(...) logx::write(conf::LogLevel::Error, __VA_ARGS__)
