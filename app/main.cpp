// pgsidecar: wiring only. Parse arguments, load config, build the proxy, run the loop.
#include <uv.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "app/ctl.h"
#include "conf/config.h"
#include "conf/log.h"
#include "lockd/lockd.h"
#include "proxy/auth.h"
#include "proxy/proxy.h"
#include "systemd/sdnotify.h"

namespace {

constexpr const char* kUsage =
    "usage: pgsidecar -c FILE [--check-config]\n"
    "       pgsidecar ctl [--socket PATH | -c FILE] COMMAND   (lockd client; pgsidecar ctl --help)\n"
    "  -c, --config FILE   configuration file (YAML)\n"
    "      --check-config  validate FILE (and its auth_file) and exit: 0 if valid, 1 otherwise\n"
    "  -V, --version       print the version and exit\n";

struct Loaded {
  conf::Config config;
  proxy::Userlist users;
};

// Loads the config and its auth file; on failure err is "file:line: message".
bool load(const std::string& path, Loaded& out, std::string& err) {
  conf::LoadResult r = conf::load_file(path);
  if (!r.config) {
    err = r.error;
    return false;
  }
  out.config = std::move(*r.config);
  out.users.clear();
  if (!out.config.auth_file.empty()) {
    auto users = auth::load_userlist(out.config.auth_file, err);
    if (!users) return false;
    out.users = std::move(*users);
  }
  tls::Contexts tls;   // every certificate and key file must be usable
  return tls::build(out.config, tls, err);
}

struct App {
  std::string config_path;
  uv_loop_t* loop = nullptr;
  std::unique_ptr<proxy::Proxy> proxy;
  std::unique_ptr<lockd::Lockd> lockd;
  uv_signal_t sighup{}, sigterm{}, sigint{};
  uv_timer_t watchdog{};
  bool stopping = false;

  void on_signal(int signum) {
    if (signum == SIGHUP) {
      sdnotify::reloading();
      Loaded fresh;
      std::string err;
      if (!load(config_path, fresh, err) || !proxy->reload(std::move(fresh.config), std::move(fresh.users), err))
        LOG_ERROR("reload failed, keeping the running configuration: %s", err.c_str());
      sdnotify::ready();
      return;
    }
    bool fast = signum == SIGINT || stopping;   // a second SIGTERM means: now
    if (!stopping) sdnotify::stopping();
    stopping = true;
    if (lockd) lockd->stop();
    proxy->shutdown(fast, [this] { finish(); });
  }

  void finish() {
    for (uv_signal_t* s : {&sighup, &sigterm, &sigint}) uv_close(reinterpret_cast<uv_handle_t*>(s), nullptr);
    if (uv_is_active(reinterpret_cast<uv_handle_t*>(&watchdog)) || uv_is_closing(reinterpret_cast<uv_handle_t*>(&watchdog)) == 0)
      uv_close(reinterpret_cast<uv_handle_t*>(&watchdog), nullptr);
  }
};

}  // namespace

// lockd's connections: to lockd.database (else migrations.database) as lockd.user
// (else migrations.user), and to migrations.database as migrations.user.
lockd::Targets lockd_targets(const conf::Config& c, const proxy::Proxy& p) {
  const std::string& lock_db = c.lockd.database.empty() ? c.migrations.database : c.lockd.database;
  const std::string& lock_user = c.lockd.user.empty() ? c.migrations.user : c.lockd.user;
  lockd::Targets t;
  if (!lock_db.empty()) t.locks = p.control_conninfo(lock_db, lock_user);
  if (!c.migrations.database.empty()) t.migrations = p.control_conninfo(c.migrations.database, c.migrations.user);
  return t;
}

int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "ctl") == 0) return ctl::main(argc - 2, argv + 2);
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
  if (std::string err; !load(config_path, loaded, err)) {
    std::fprintf(stderr, "%s\n", err.c_str());   // plain text: the log format is in the file that failed
    return 1;
  }
  if (check_only) {
    std::printf("%s: configuration OK\n", config_path.c_str());
    return 0;
  }
  logx::set_level(loaded.config.log_level);
  logx::set_format(loaded.config.log_format);
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
  const conf::Config& cfg = app.proxy->config();
  if (!cfg.lockd.socket_path.empty()) {
    app.lockd = std::make_unique<lockd::Lockd>(app.loop, cfg, lockd_targets(cfg, *app.proxy), app.proxy->schema(),
                                               app.proxy->metrics());
    if (!app.lockd->start(err)) {
      LOG_ERROR("%s", err.c_str());
      return 1;
    }
    app.proxy->set_lockd_metrics([&app](metrics::LockdSnapshot& s) { app.lockd->fill(s); });
    app.proxy->set_admin_tables([&app](const std::string& what, std::vector<std::string>& columns,
                                       std::vector<std::vector<std::string>>& rows) {
      return app.lockd->admin_table(what, columns, rows);
    });
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
  app.lockd.reset();
  app.proxy.reset();
  uv_loop_close(app.loop);
  return 0;
}
