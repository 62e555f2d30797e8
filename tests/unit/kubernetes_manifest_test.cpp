// deploy/kubernetes/: the example Deployment, ConfigMaps and Secret agree with the
// pgsidecar config they carry. The config and userlist pass pgsidecar's own
// loaders; every port, path and file the Pod names is the one the config uses.
// No cluster runs here: this checks the manifests as text.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "conf/config.h"
#include "proxy/auth.h"

namespace {

namespace fs = std::filesystem;

fs::path source_dir() {
  std::string here = __FILE__;
  return here.substr(0, here.rfind("tests/unit/"));
}

struct Manifests {
  std::vector<YAML::Node> docs;

  Manifests() {
    for (const auto& e : fs::directory_iterator(source_dir() / "deploy/kubernetes"))
      if (e.path().extension() == ".yaml")
        for (YAML::Node d : YAML::LoadAllFromFile(e.path().string())) docs.push_back(d);
  }
  YAML::Node find(const std::string& kind, const std::string& name) const {
    for (const YAML::Node& d : docs)
      if (d["kind"].as<std::string>() == kind && d["metadata"]["name"].as<std::string>() == name) return d;
    return YAML::Node();
  }
};

YAML::Node named(const YAML::Node& list, const std::string& name) {
  if (list && list.IsSequence())
    for (const YAML::Node& n : list)
      if (n["name"] && n["name"].as<std::string>() == name) return n;
  return YAML::Node();
}

// The ConfigMap or Secret volume mounted over `path` in the container, and the
// key that path reads: {volume, key}; key is "" when the mount is `path` itself.
std::optional<std::pair<YAML::Node, std::string>> mounted(const YAML::Node& spec, const YAML::Node& container,
                                                          const std::string& path) {
  for (const YAML::Node& m : container["volumeMounts"]) {
    std::string at = m["mountPath"].as<std::string>();
    std::string key;
    if (m["subPath"]) {
      if (path != at) continue;
      key = m["subPath"].as<std::string>();
    } else if (path == at) {
      key = "";
    } else if (path.rfind(at + "/", 0) == 0) {
      key = path.substr(at.size() + 1);
    } else {
      continue;
    }
    YAML::Node volume = named(spec["volumes"], m["name"].as<std::string>());
    if (!volume) return std::nullopt;
    return std::make_pair(volume, key);
  }
  return std::nullopt;
}

// The text a container reads at `path`, from a ConfigMap or Secret; nullopt if none holds it.
std::optional<std::string> file_in(const Manifests& m, const YAML::Node& spec, const YAML::Node& container,
                                   const std::string& path) {
  auto at = mounted(spec, container, path);
  if (!at || at->second.empty()) return std::nullopt;
  auto [volume, key] = *at;
  YAML::Node source;
  if (volume["configMap"]) {
    source = m.find("ConfigMap", volume["configMap"]["name"].as<std::string>())["data"];
  } else if (volume["secret"]) {
    if (YAML::Node items = volume["secret"]["items"]) {   // items renames keys to paths
      std::string renamed;
      for (const YAML::Node& i : items)
        if (i["path"].as<std::string>() == key) renamed = i["key"].as<std::string>();
      if (renamed.empty()) return std::nullopt;
      key = renamed;
    }
    source = m.find("Secret", volume["secret"]["secretName"].as<std::string>())["stringData"];
  }
  if (!source || !source[key]) return std::nullopt;
  return source[key].as<std::string>();
}

int port_of(const std::string& host_port) { return std::stoi(host_port.substr(host_port.rfind(':') + 1)); }

class KubernetesExample : public ::testing::Test {
 protected:
  void SetUp() override {
    YAML::Node deployment = m.find("Deployment", "app");
    ASSERT_TRUE(deployment) << "deploy/kubernetes has no Deployment 'app'";
    pod = deployment["spec"]["template"];
    spec = pod["spec"];
    sidecar = named(spec["initContainers"], "pgsidecar");
    ASSERT_TRUE(sidecar) << "no init container 'pgsidecar'";
    app = named(spec["containers"], "app");
    ASSERT_TRUE(app);

    std::vector<std::string> args = sidecar["args"].as<std::vector<std::string>>();
    ASSERT_EQ(args.size(), 2u);
    ASSERT_EQ(args[0], "-c");
    config_path = args[1];
    auto text = file_in(m, spec, sidecar, config_path);
    ASSERT_TRUE(text) << config_path << " is not mounted from a ConfigMap in the sidecar";
    conf::LoadResult r = conf::load_file(write_temp("pgsidecar.yaml", *text));
    ASSERT_TRUE(r.config) << r.error;
    cfg = *r.config;
  }

  void TearDown() override {
    for (const std::string& p : temps_) fs::remove(p);
  }

  // pgsidecar's loaders read files: the text goes to a temp file, removed after the test.
  std::string write_temp(const std::string& name, const std::string& text) {
    fs::path p = fs::temp_directory_path() / ("pgsidecar-k8s-test-" + std::to_string(getpid()) + "-" + name);
    FILE* f = std::fopen(p.c_str(), "w");
    std::fwrite(text.data(), 1, text.size(), f);
    std::fclose(f);
    temps_.push_back(p.string());
    return p.string();
  }

  Manifests m;
  std::vector<std::string> temps_;
  YAML::Node pod, spec, sidecar, app;
  std::string config_path;
  conf::Config cfg;
};

TEST_F(KubernetesExample, SidecarIsNativeAndItsUserlistLoads) {
  EXPECT_EQ(sidecar["restartPolicy"].as<std::string>(), "Always") << "a native sidecar is a restartable init container";
  auto userlist = file_in(m, spec, sidecar, cfg.auth_file);
  ASSERT_TRUE(userlist) << "auth_file " << cfg.auth_file << " is not mounted from the Secret";
  std::string err;
  auto users = auth::load_userlist(write_temp("userlist.txt", *userlist), err);
  ASSERT_TRUE(users) << err;

  // The application logs in as a user of the userlist, with its password, to the
  // address and port pgsidecar listens on, and a database it serves.
  YAML::Node url = named(app["env"], "DATABASE_URL");
  ASSERT_TRUE(url);
  std::string u = url["value"].as<std::string>();   // postgresql://USER@HOST:PORT/DB
  const std::string scheme = "postgresql://";
  ASSERT_EQ(u.rfind(scheme, 0), 0u) << u;
  std::string rest = u.substr(scheme.size());
  std::string user = rest.substr(0, rest.find('@'));
  std::string host_port = rest.substr(rest.find('@') + 1, rest.find('/') - rest.find('@') - 1);
  std::string db = rest.substr(rest.find('/') + 1);
  EXPECT_EQ(host_port.substr(0, host_port.find(':')), cfg.listen_addr);
  EXPECT_EQ(port_of(host_port), cfg.listen_port);
  EXPECT_NE(conf::find_database(cfg, db), nullptr) << db;
  ASSERT_TRUE(users->count(user)) << user << " is not in the userlist";
  YAML::Node password = named(app["env"], "PGPASSWORD");
  ASSERT_TRUE(password);
  YAML::Node ref = password["valueFrom"]["secretKeyRef"];
  YAML::Node secret = m.find("Secret", ref["name"].as<std::string>());
  ASSERT_TRUE(secret);
  EXPECT_EQ(secret["stringData"][ref["key"].as<std::string>()].as<std::string>(), users->at(user))
      << "the application's password is not the userlist's";
}

TEST_F(KubernetesExample, ProbesAndScrapeAnnotationsUseTheMetricsListener) {
  ASSERT_FALSE(cfg.metrics.listen.empty());
  const int port = port_of(cfg.metrics.listen);
  const std::string host = cfg.metrics.listen.substr(0, cfg.metrics.listen.rfind(':'));
  EXPECT_NE(host, "127.0.0.1") << "the kubelet probes the Pod's address, not its loopback";
  EXPECT_NE(host, "localhost");
  struct Probe {
    const char* name;
    const char* path;
  };
  for (Probe p : {Probe{"startupProbe", "/healthz"}, Probe{"livenessProbe", "/healthz"},
                  Probe{"readinessProbe", "/readyz"}}) {
    YAML::Node get = sidecar[p.name]["httpGet"];
    ASSERT_TRUE(get) << p.name;
    EXPECT_EQ(get["path"].as<std::string>(), p.path) << p.name;
    EXPECT_EQ(get["port"].as<int>(), port) << p.name;
  }
  YAML::Node notes = pod["metadata"]["annotations"];
  EXPECT_EQ(notes["prometheus.io/scrape"].as<std::string>(), "true");
  EXPECT_EQ(std::stoi(notes["prometheus.io/port"].as<std::string>()), port);
  EXPECT_EQ(notes["prometheus.io/path"].as<std::string>(), "/metrics");
  std::vector<int> ports;
  for (const YAML::Node& p : sidecar["ports"]) ports.push_back(p["containerPort"].as<int>());
  EXPECT_NE(std::find(ports.begin(), ports.end(), port), ports.end());
  EXPECT_NE(std::find(ports.begin(), ports.end(), cfg.listen_port), ports.end());
}

TEST_F(KubernetesExample, LockdSocketIsSharedWithTheMigrateStepAndTheApp) {
  ASSERT_FALSE(cfg.lockd.socket_path.empty());
  const std::string dir = fs::path(cfg.lockd.socket_path).parent_path().string();
  auto on_shared_dir = [&](const YAML::Node& c) {
    auto at = mounted(spec, c, dir);
    return at && at->second.empty() && at->first["emptyDir"];
  };
  EXPECT_TRUE(on_shared_dir(sidecar)) << dir << " is not an emptyDir in the sidecar";
  EXPECT_TRUE(on_shared_dir(app)) << dir << " is not the same emptyDir in the app";

  // The migrate step runs after the sidecar (native sidecars start first) and asks
  // lockd on that socket.
  YAML::Node inits = spec["initContainers"];
  int sidecar_at = -1, migrate_at = -1;
  for (size_t i = 0; i < inits.size(); ++i) {
    if (inits[i]["name"].as<std::string>() == "pgsidecar") sidecar_at = int(i);
    if (inits[i]["name"].as<std::string>() == "migrate") migrate_at = int(i);
  }
  ASSERT_GE(migrate_at, 0) << "no init container 'migrate'";
  EXPECT_LT(sidecar_at, migrate_at);
  YAML::Node migrate = inits[migrate_at];
  EXPECT_TRUE(on_shared_dir(migrate));
  std::vector<std::string> cmd = migrate["command"].as<std::vector<std::string>>();
  EXPECT_NE(std::find(cmd.begin(), cmd.end(), cfg.lockd.socket_path), cmd.end()) << "ctl names another socket";
  EXPECT_EQ(cmd.back(), "migrate");

  // lockd lets in its own uid: every container runs as the Pod's one user.
  EXPECT_TRUE(spec["securityContext"]["runAsUser"]);
  for (const YAML::Node& c : {sidecar, migrate, app})
    EXPECT_FALSE(c["securityContext"] && c["securityContext"]["runAsUser"]) << c["name"].as<std::string>();
}

TEST_F(KubernetesExample, MigrationsComeFromAConfigMap) {
  ASSERT_FALSE(cfg.migrations.dir.empty());
  auto at = mounted(spec, sidecar, cfg.migrations.dir);
  ASSERT_TRUE(at && at->second.empty()) << cfg.migrations.dir << " is not a mount in the sidecar";
  ASSERT_TRUE(at->first["configMap"]);
  YAML::Node data = m.find("ConfigMap", at->first["configMap"]["name"].as<std::string>())["data"];
  ASSERT_TRUE(data && data.size() > 0);
  for (const auto& kv : data) EXPECT_TRUE(kv.first.as<std::string>().ends_with(".sql")) << kv.first.as<std::string>();
  EXPECT_NE(conf::find_database(cfg, cfg.migrations.database), nullptr);
}

}  // namespace
