#include "conf/log.h"

#include <cstdarg>
#include <ctime>
#include <nlohmann/json.hpp>
#include <string>

namespace logx {
namespace {
conf::LogLevel g_level = conf::LogLevel::Info;
conf::LogFormat g_format = conf::LogFormat::Text;

// text: control bytes become \xNN, so that no client-sent byte can start a line.
void text_append(std::string& out, std::string_view s, bool quoted) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", static_cast<unsigned char>(c));
      out += hex;
      continue;
    }
    if (quoted && (c == '"' || c == '\\')) out += '\\';
    out += c;
  }
}

// text: a value with a blank, quote, '=' or nothing in it is quoted.
void text_field(std::string& out, std::string_view key, std::string_view value) {
  out += ' ';
  out += key;
  out += '=';
  const bool quoted = value.empty() || value.find_first_of(" \"=") != std::string_view::npos;
  if (quoted) out += '"';
  text_append(out, value, quoted);
  if (quoted) out += '"';
}

// Calls put(key, value) for each set field, in a fixed order: string_view for
// text fields, uint32_t for ids, double for the duration.
template <typename Put>
void each_field(const Fields& f, Put&& put) {
  if (f.client_id) put("client_id", f.client_id);
  if (!f.client_addr.empty()) put("client_addr", f.client_addr);
  if (!f.db.empty()) put("db", f.db);
  if (!f.user.empty()) put("user", f.user);
  if (!f.application_name.empty()) put("application_name", f.application_name);
  if (f.server_pid) put("server_pid", f.server_pid);
  if (!f.server_addr.empty()) put("server_addr", f.server_addr);
  if (!f.sqlstate.empty()) put("sqlstate", f.sqlstate);
  if (f.duration_ms >= 0) put("duration_ms", f.duration_ms);
}

void emit(conf::LogLevel level, const Fields& fields, const char* fmt, va_list ap) {
  char msg[1024];
  int m = std::vsnprintf(msg, sizeof msg, fmt, ap);
  size_t len = m < 0 ? 0 : std::min<size_t>(m, sizeof msg - 1);

  timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  tm t;
  gmtime_r(&now.tv_sec, &t);
  char ts[64];
  std::snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", t.tm_year + 1900, t.tm_mon + 1, t.tm_mday,
                t.tm_hour, t.tm_min, t.tm_sec, now.tv_nsec / 1000000);
  // One buffer, kept: a flood of log lines (failed logins) allocates nothing per line.
  thread_local std::string line;
  line.clear();
  format_into(line, level, ts, fields, std::string_view(msg, len));
  line += '\n';
  fwrite(line.data(), 1, line.size(), stderr);
}
}  // namespace

void set_level(conf::LogLevel level) { g_level = level; }
void set_format(conf::LogFormat format) { g_format = format; }
bool enabled(conf::LogLevel level) { return level >= g_level; }

std::string format_line(conf::LogLevel level, std::string_view ts, const Fields& fields, std::string_view msg) {
  std::string out;
  format_into(out, level, ts, fields, msg);
  return out;
}

void format_into(std::string& out, conf::LogLevel level, std::string_view ts, const Fields& fields,
                 std::string_view msg) {
  if (g_format == conf::LogFormat::Json) {
    nlohmann::ordered_json j;
    j["ts"] = ts;
    j["level"] = conf::to_string(level);
    j["msg"] = msg;
    each_field(fields, [&](const char* key, auto value) { j[key] = value; });
    // Names and messages may hold bytes a client sent: invalid UTF-8 becomes U+FFFD.
    out += j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    return;
  }
  out += ts;
  out += ' ';
  out += conf::to_string(level);
  out += ' ';
  text_append(out, msg, false);
  each_field(fields, [&](const char* key, auto value) {
    if constexpr (std::is_same_v<decltype(value), std::string_view>) {
      text_field(out, key, value);
    } else if constexpr (std::is_same_v<decltype(value), double>) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.1f", value);
      text_field(out, key, buf);
    } else {
      text_field(out, key, std::to_string(value));
    }
  });
}

void write(conf::LogLevel level, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  emit(level, Fields{}, fmt, ap);
  va_end(ap);
}

void write(conf::LogLevel level, const Fields& fields, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  emit(level, fields, fmt, ap);
  va_end(ap);
}

}  // namespace logx
