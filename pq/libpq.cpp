#include "pq/libpq.h"

#include <dlfcn.h>

#include "conf/log.h"

namespace pq {
namespace {

template <typename F>
bool resolve(void* lib, const char* name, F& fn) {
  fn = reinterpret_cast<F>(dlsym(lib, name));
  if (!fn) LOG_ERROR("libpq: symbol %s not found", name);
  return fn != nullptr;
}

const Api* load() {
  void* lib = dlopen("libpq.so.5", RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    LOG_ERROR("could not load libpq (package libpq5): %s", dlerror());
    return nullptr;
  }
  static Api a;
  bool ok = resolve(lib, "PQconnectStart", a.connectStart) & resolve(lib, "PQconnectPoll", a.connectPoll) &
            resolve(lib, "PQstatus", a.status) & resolve(lib, "PQerrorMessage", a.errorMessage) &
            resolve(lib, "PQsocket", a.socket) & resolve(lib, "PQsetnonblocking", a.setnonblocking) &
            resolve(lib, "PQsendQuery", a.sendQuery) & resolve(lib, "PQsendQueryParams", a.sendQueryParams) & resolve(lib, "PQflush", a.flush) &
            resolve(lib, "PQconsumeInput", a.consumeInput) & resolve(lib, "PQisBusy", a.isBusy) &
            resolve(lib, "PQgetResult", a.getResult) & resolve(lib, "PQresultStatus", a.resultStatus) &
            resolve(lib, "PQresultErrorMessage", a.resultErrorMessage) &
            resolve(lib, "PQresultErrorField", a.resultErrorField) & resolve(lib, "PQntuples", a.ntuples) &
            resolve(lib, "PQnfields", a.nfields) & resolve(lib, "PQgetvalue", a.getvalue) &
            resolve(lib, "PQgetisnull", a.getisnull) & resolve(lib, "PQclear", a.clear) &
            resolve(lib, "PQnotifies", a.notifies) & resolve(lib, "PQfreemem", a.freemem) &
            resolve(lib, "PQfinish", a.finish);
  return ok ? &a : nullptr;
}

}  // namespace

const Api* api() {
  static const Api* loaded = load();
  return loaded;
}

}  // namespace pq
