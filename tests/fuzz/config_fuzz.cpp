// libFuzzer target: arbitrary bytes as a pgsidecar YAML config. load_string must
// never crash, hang or leak an exception; it returns a config or "file:line: msg".
// Built and run by scripts/fuzz.sh like every target (README.md here); yaml-cpp
// is the distribution's, so only pgsidecar's side of the loader is instrumented.
#include "conf/config.h"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // yaml-cpp recurses per nesting level; very deep inputs only test its stack.
  if (size > 64 * 1024) return 0;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  conf::LoadResult r = conf::load_string(text, "fuzz.yaml");
  if (r.config.has_value() == !r.error.empty()) std::abort();   // exactly one is set
  if (r.config) {
    (void)conf::describe(*r.config);
    for (const conf::Database& d : r.config->databases) (void)conf::find_database(*r.config, d.name);
  } else if (r.error.rfind("fuzz.yaml", 0) != 0) {
    std::abort();   // every error names the file
  }
  return 0;
}
