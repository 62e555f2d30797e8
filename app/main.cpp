// pgsidecar: wiring only. Parse arguments, load config, build the proxy, run the loop.
#include <uv.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "conf/config.h"
#include "conf/log.h"
#include "proxy/auth.h"
#include "proxy/proxy.h"
#include "systemd/sdnotify.h"

namespace {

constexpr const char* kUsage =
    "usage: pgsidecar -c FILE [--check-config]\n"
    "  -c, --config FILE   configuration file (YAML)\n"
    "      --check-config  validate FILE (and its auth_file) and exit: 0 if valid, 1 otherwise\n"
    "  -V, --version       print the version and exit\n";

struct Loaded {
  conf::Config config;
  proxy::Userlist users;
};

// Loads the config and its auth file; on failure prints "file:line: message".
bool load(const std::string& path, Loaded& out) {
  conf::LoadResult r = conf::load_file(path);
  if (!r.config) {
    std::fprintf(stderr, "%s\n", r.error.c_str());
    return false;
  }
  out.config = std::move(*r.config);
  out.users.clear();
  if (!out.config.auth_file.empty()) {
    std::string err;
    auto users = auth::load_userlist(out.config.auth_file, err);
    if (!users) {
      std::fprintf(stderr, "%s\n", err.c_str());
      return false;
    }
    out.users = std::move(*users);
  }
  return true;
}

struct App {
  std::string config_path;
  uv_loop_t* loop = nullptr;
  std::unique_ptr<proxy::Proxy> proxy;
  uv_signal_t sighup{}, sigterm{}, sigint{};
  uv_timer_t watchdog{};
  bool stopping = false;

  void on_signal(int signum) {
    if (signum == SIGHUP) {
      sdnotify::reloading();
      Loaded fresh;
      if (load(config_path, fresh)) {
        proxy->reload(std::move(fresh.config), std::move(fresh.users));
      } else {
        LOG_ERROR("reload failed; keeping the running configuration");
      }
      sdnotify::ready();
      return;
    }
    bool fast = signum == SIGINT || stopping;   // a second SIGTERM means: now
    if (!stopping) sdnotify::stopping();
    stopping = true;
    proxy->shutdown(fast, [this] { finish(); });
  }

  void finish() {
    for (uv_signal_t* s : {&sighup, &sigterm, &sigint}) uv_close(reinterpret_cast<uv_handle_t*>(s), nullptr);
    if (uv_is_active(reinterpret_cast<uv_handle_t*>(&watchdog)) || uv_is_closing(reinterpret_cast<uv_handle_t*>(&watchdog)) == 0)
      uv_close(reinterpret_cast<uv_handle_t*>(&watchdog), nullptr);
  }
};

}  // namespace

int main(int argc, char** argv) {
  std::string config_path;
  bool check_only = false;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if ((a == "-c" || a == "--config") && i + 1 < argc) config_path = argv[++i];
    else if (a == "--check-config") check_only = true;
    else if (a == "-V" || a == "--version") {
      std::printf("pgsidecar %s\n", PGSIDECAR_VERSION);
      return 0;
    } else if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else {
      std::fprintf(stderr, "pgsidecar: unknown argument '%s'\n%s", a.c_str(), kUsage);
      return 2;
    }
  }
  if (config_path.empty()) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  Loaded loaded;
  if (!load(config_path, loaded)) return 1;
  if (check_only) {
    std::printf("%s: configuration OK\n", config_path.c_str());
    return 0;
  }
  logx::set_level(loaded.config.log_level);
  std::signal(SIGPIPE, SIG_IGN);

  App app;
  app.config_path = config_path;
  app.loop = uv_default_loop();
  app.proxy = std::make_unique<proxy::Proxy>(app.loop, std::move(loaded.config), std::move(loaded.users));
  // The admin console's RELOAD and SHUTDOWN are SIGHUP and SIGTERM.
  app.proxy->set_admin_hooks([&app] { app.on_signal(SIGHUP); }, [&app] { app.on_signal(SIGTERM); });
  std::string err;
  if (!app.proxy->start(err)) {
    LOG_ERROR("%s", err.c_str());
    return 1;
  }
  for (auto [handle, signum] : {std::pair{&app.sighup, SIGHUP}, {&app.sigterm, SIGTERM}, {&app.sigint, SIGINT}}) {
    uv_signal_init(app.loop, handle);
    handle->data = &app;
    uv_signal_start(handle, [](uv_signal_t* s, int n) { static_cast<App*>(s->data)->on_signal(n); }, signum);
  }
  uv_timer_init(app.loop, &app.watchdog);
  if (auto interval = sdnotify::watchdog_interval(); interval.count() > 0) {
    uint64_t ms = uint64_t(interval.count() / 2000);
    uv_timer_start(&app.watchdog, [](uv_timer_t*) { sdnotify::watchdog(); }, ms, ms);
  }
  sdnotify::ready();
  LOG_INFO("pgsidecar %s ready", PGSIDECAR_VERSION);
  uv_run(app.loop, UV_RUN_DEFAULT);
  LOG_INFO("pgsidecar stopped");
  app.proxy.reset();
  uv_loop_close(app.loop);
  return 0;
}
