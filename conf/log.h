// One line per event on stderr (journald adds its own timestamp under systemd).
// log_format text: "<ts> <level> <msg> key=value ..."; json: one object per line,
// {"ts", "level", "msg", then the event's fields}. Level-filtered; callers never
// pass passwords or secrets.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "conf/config.h"

namespace logx {

// What a connection-level event is about. Unset fields (empty, 0, negative) are
// left out of the line. The ids are those SHOW CLIENTS and SHOW SERVERS show.
struct Fields {
  uint32_t client_id = 0;         // SHOW CLIENTS' ptr, SHOW SERVERS' link
  uint32_t server_pid = 0;        // the PostgreSQL backend pid: SHOW SERVERS' ptr, SHOW CLIENTS' link
  std::string_view db, user;
  std::string_view client_addr;   // "host:port" of the client, or the unix socket
  std::string_view server_addr;   // "host:port" of the PostgreSQL server
  std::string_view application_name;
  std::string_view sqlstate;      // of the error the client was sent
  double duration_ms = -1;        // of what the message reports (a pin, a migration, a wait)
};

void set_level(conf::LogLevel level);
void set_format(conf::LogFormat format);
bool enabled(conf::LogLevel level);
void write(conf::LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
void write(conf::LogLevel level, const Fields& fields, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
// The line write() puts out, without the newline: appended to out, or returned (tests).
void format_into(std::string& out, conf::LogLevel level, std::string_view ts, const Fields& fields,
                 std::string_view msg);
std::string format_line(conf::LogLevel level, std::string_view ts, const Fields& fields, std::string_view msg);

}  // namespace logx

// LOG_INFO("fmt", ...) or LOG_INFO(fields, "fmt", ...).
#define LOG_DEBUG(...) do { if (logx::enabled(conf::LogLevel::Debug)) logx::write(conf::LogLevel::Debug, __VA_ARGS__); } while (0)
#define LOG_INFO(...) do { if (logx::enabled(conf::LogLevel::Info)) logx::write(conf::LogLevel::Info, __VA_ARGS__); } while (0)
#define LOG_WARN(...) do { if (logx::enabled(conf::LogLevel::Warn)) logx::write(conf::LogLevel::Warn, __VA_ARGS__); } while (0)
#define LOG_ERROR(...) logx::write(conf::LogLevel::Error, __VA_ARGS__)
