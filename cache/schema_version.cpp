#include "cache/schema_version.h"

#include "conf/log.h"

namespace cache {

void SchemaVersion::bump(std::string_view reason) {
  version_++;
  LOG_DEBUG("schema version %llu: %.*s", static_cast<unsigned long long>(version_), int(reason.size()), reason.data());
  if (on_bump_) on_bump_();
}

}  // namespace cache
