#include "conf/log.h"

#include <cstdarg>
#include <ctime>

namespace logx {
namespace {
conf::LogLevel g_level = conf::LogLevel::Info;
}

void set_level(conf::LogLevel level) { g_level = level; }
bool enabled(conf::LogLevel level) { return level >= g_level; }

void write(conf::LogLevel level, const char* fmt, ...) {
  char line[1024];
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  tm t;
  gmtime_r(&ts.tv_sec, &t);
  int n = std::snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s ", t.tm_year + 1900, t.tm_mon + 1,
                        t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, ts.tv_nsec / 1000000,
                        conf::to_string(level).data());
  va_list ap;
  va_start(ap, fmt);
  int m = std::vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
  va_end(ap);
  size_t len = n + (m < 0 ? 0 : std::min<size_t>(m, sizeof line - n - 2));
  line[len++] = '\n';
  fwrite(line, 1, len, stderr);
}

}  // namespace logx
