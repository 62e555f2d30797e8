// TLS toward clients and toward PostgreSQL: sslmodes and certificate checks on both
// sides, client certificates (auth_type cert), SCRAM channel binding, certificate
// rotation by SIGHUP, stuck and malformed handshakes, --check-config, SHOW/metrics,
// and bulk data over TLS.
//
// Certificates are made once per process with the openssl CLI. The suite turns
// ssl on in the shared PostgreSQL (and adds a hostssl-only role) in
// SetUpTestSuite and turns it off again in TearDownTestSuite, so that other
// suites run by the same process see the cluster as the harness made it.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>

#include "harness.h"

using namespace itest;

namespace {

namespace fs = std::filesystem;

// ------------------------------------------------------------ certificates

struct KeyPair {
  std::string crt, key;
};

struct Certs {
  std::string dir;
  KeyPair ca, wrong_ca;      // two unrelated CAs
  KeyPair server;            // CN=localhost, SAN DNS:localhost, IP:127.0.0.1, signed by ca
  KeyPair wrong_server;      // the same names, signed by wrong_ca
  KeyPair elsewhere;         // CN/SAN elsewhere.example only, signed by ca
  KeyPair client_app;        // CN=app, signed by ca
  KeyPair client_other;      // CN=other, signed by ca
  KeyPair client_app_wrong;  // CN=app, signed by wrong_ca
  // Copies PostgreSQL reads (owned by postgres, under cluster().dir()).
  KeyPair pg_server, pg_elsewhere;
};

Certs g_certs;
std::string g_setup_error;           // set when the suite's fixture could not be built
std::string g_hba_path, g_hba_original;

const char* kOpensslCnf =
    "[req]\n"
    "distinguished_name = dn\n"
    "prompt = no\n"
    "[dn]\n"
    "CN = placeholder\n"
    "[v3_ca]\n"
    "basicConstraints = critical,CA:TRUE\n"
    "keyUsage = critical,keyCertSign,cRLSign\n"
    "subjectKeyIdentifier = hash\n";

bool openssl(const std::vector<std::string>& args, std::string& err) {
  std::vector<std::string> argv = {"openssl"};
  argv.insert(argv.end(), args.begin(), args.end());
  ProcResult r = run_process(argv, 60000);
  if (r.exit_code == 0) return true;
  std::string cmd;
  for (const auto& a : argv) cmd += a + " ";
  err = "failed: " + cmd + "\n" + r.output;
  return false;
}

// An EC key and a self-signed CA certificate.
bool make_ca(const std::string& dir, const std::string& name, KeyPair& out, std::string& err) {
  out = {dir + "/" + name + ".crt", dir + "/" + name + ".key"};
  return openssl({"req", "-x509", "-config", dir + "/openssl.cnf", "-extensions", "v3_ca", "-newkey", "ec",
                  "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", out.key, "-out", out.crt, "-days",
                  "3650", "-subj", "/CN=" + name},
                 err);
}

// An EC key and a certificate for cn with the given extensions, signed by ca.
bool make_leaf(const std::string& dir, const std::string& name, const std::string& cn, const std::string& ext,
               const KeyPair& ca, KeyPair& out, std::string& err) {
  static int serial = 1000;
  out = {dir + "/" + name + ".crt", dir + "/" + name + ".key"};
  std::string csr = dir + "/" + name + ".csr", extfile = dir + "/" + name + ".ext";
  write_file(extfile, ext + "\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid,issuer\n");
  return openssl({"req", "-new", "-config", dir + "/openssl.cnf", "-newkey", "ec", "-pkeyopt",
                  "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", out.key, "-out", csr, "-subj", "/CN=" + cn},
                 err) &&
         openssl({"x509", "-req", "-in", csr, "-CA", ca.crt, "-CAkey", ca.key, "-set_serial",
                  std::to_string(++serial), "-days", "3650", "-extfile", extfile, "-out", out.crt},
                 err) &&
         chmod(out.key.c_str(), 0600) == 0;
}

const std::string kServerExt =
    "basicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature,keyEncipherment\n"
    "extendedKeyUsage = serverAuth\n";
const std::string kClientExt =
    "basicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature,keyEncipherment\n"
    "extendedKeyUsage = clientAuth\n";

// Copies a key pair to where PostgreSQL (user postgres) can read it: key 0600.
bool copy_for_postgres(const KeyPair& from, const std::string& dir, const std::string& name, KeyPair& out,
                       std::string& err) {
  out = {dir + "/" + name + ".crt", dir + "/" + name + ".key"};
  write_file(out.crt, read_file(from.crt));
  write_file(out.key, read_file(from.key));
  chmod(out.crt.c_str(), 0644);
  chmod(out.key.c_str(), 0600);
  if (is_root()) {
    ProcResult r = run_process({"chown", "postgres:postgres", dir, out.crt, out.key}, 10000);
    if (r.exit_code != 0) {
      err = "chown for postgres: " + r.output;
      return false;
    }
  }
  return true;
}

bool make_certs(Certs& c, std::string& err) {
  // Under the cluster's directory: removed with it, also after a killed run.
  c.dir = cluster().dir() + "/tls-certs";
  fs::create_directories(c.dir);
  write_file(c.dir + "/openssl.cnf", kOpensslCnf);
  const std::string san_local = "subjectAltName = DNS:localhost, IP:127.0.0.1\n";
  bool ok = make_ca(c.dir, "ca", c.ca, err) && make_ca(c.dir, "wrong_ca", c.wrong_ca, err) &&
            make_leaf(c.dir, "server", "localhost", kServerExt + san_local, c.ca, c.server, err) &&
            make_leaf(c.dir, "wrong_server", "localhost", kServerExt + san_local, c.wrong_ca, c.wrong_server, err) &&
            make_leaf(c.dir, "elsewhere", "elsewhere.example",
                      kServerExt + "subjectAltName = DNS:elsewhere.example\n", c.ca, c.elsewhere, err) &&
            make_leaf(c.dir, "client_app", "app", kClientExt, c.ca, c.client_app, err) &&
            make_leaf(c.dir, "client_other", "other", kClientExt, c.ca, c.client_other, err) &&
            make_leaf(c.dir, "client_app_wrong", "app", kClientExt, c.wrong_ca, c.client_app_wrong, err);
  if (!ok) return false;
  std::string pgdir = cluster().dir() + "/tls";
  fs::create_directories(pgdir);
  return copy_for_postgres(c.server, pgdir, "server", c.pg_server, err) &&
         copy_for_postgres(c.elsewhere, pgdir, "elsewhere", c.pg_elsewhere, err);
}

// ------------------------------------------------------------ PostgreSQL

std::string yaml_str(const std::string& s) { return "\"" + s + "\""; }

bool super_sql(const std::string& sql, std::string& err) {
  bool ok = false;
  std::string out = cluster().psql(sql, "postgres", &ok);
  if (!ok) err = "SQL failed: " + sql + "\n" + out;
  return ok;
}

std::string direct_ssl_conninfo(const std::string& extra) {
  return cluster().direct_conninfo("app", "app", "apppass") + " " + extra;
}

// Makes PostgreSQL serve `pair` (ssl on) and waits until a new direct connection
// with ready_conninfo_extra (e.g. "sslmode=verify-full sslrootcert=...") gets in over TLS.
bool serve_pg_cert(const KeyPair& pair, const std::string& ready_conninfo_extra, std::string& err) {
  if (!super_sql("ALTER SYSTEM SET ssl = on;\nALTER SYSTEM SET ssl_cert_file = '" + pair.crt +
                     "';\nALTER SYSTEM SET ssl_key_file = '" + pair.key + "';\nSELECT pg_reload_conf();",
                 err))
    return false;
  bool up = eventually([&] {
    if (cluster().scalar("SHOW ssl", "postgres").value_or("") != "on") return false;
    ConnectResult c = pg_connect(direct_ssl_conninfo(ready_conninfo_extra), 3000);
    return c.ok() && exec(c.conn, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").scalar() == "t";
  }, 15000);
  if (!up) err = "PostgreSQL does not serve " + pair.crt + " (" + ready_conninfo_extra + "):\n" +
                 tail_lines(cluster().log(), 20);
  return up;
}

// The server certificate PostgreSQL normally serves (CN=localhost by ca), verified by name.
std::string pg_ready_full() { return "sslmode=verify-full sslrootcert=" + g_certs.ca.crt; }

bool setup_postgres(std::string& err) {
  g_hba_path = cluster().scalar("SHOW hba_file", "postgres").value_or("");
  if (g_hba_path.empty()) {
    err = "SHOW hba_file failed";
    return false;
  }
  g_hba_original = read_file(g_hba_path);
  if (!super_sql("DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tlsonly') THEN "
                 "CREATE ROLE tlsonly LOGIN PASSWORD 'tlspass'; END IF; END$$;\n"
                 "GRANT CONNECT ON DATABASE app TO tlsonly;",
                 err))
    return false;
  write_file(g_hba_path,
             "hostssl all tlsonly 127.0.0.1/32 scram-sha-256\nhostnossl all tlsonly 127.0.0.1/32 reject\n" +
                 g_hba_original);
  if (!serve_pg_cert(g_certs.pg_server, pg_ready_full(), err)) return false;
  // The hba lines are in force: tlsonly gets in with TLS only.
  std::string base = cluster().direct_conninfo("tlsonly", "app", "tlspass");
  bool hba = eventually([&] {
    ConnectResult plain = pg_connect(base + " sslmode=disable", 3000);
    ConnectResult tls = pg_connect(base + " sslmode=require", 3000);
    return !plain.ok() && plain.sqlstate == "28000" && tls.ok();
  }, 15000);
  if (!hba) err = "pg_hba.conf lines for tlsonly are not in force";
  return hba;
}

void restore_postgres() {
  if (!g_hba_path.empty()) write_file(g_hba_path, g_hba_original);
  std::string err;
  super_sql("ALTER SYSTEM RESET ssl;\nALTER SYSTEM RESET ssl_cert_file;\nALTER SYSTEM RESET ssl_key_file;\n"
            "SELECT pg_reload_conf();",
            err);
  eventually([] { return cluster().scalar("SHOW ssl", "postgres").value_or("") == "off"; }, 10000);
}

// ------------------------------------------------------------ daemon and clients

// base_config() with TLS toward clients in `mode` (pgsidecar's certificate: server, by ca).
DaemonConfig client_tls_config(const std::string& mode = "prefer") {
  DaemonConfig c = base_config();
  c.set("client_tls_sslmode", mode)
      .set("client_tls_cert_file", yaml_str(g_certs.server.crt))
      .set("client_tls_key_file", yaml_str(g_certs.server.key));
  return c;
}

// libpq conninfo through the daemon by host name localhost (so verify-full checks it).
std::string via_localhost(const Daemon& d, const std::string& user, const std::string& db, const std::string& extra) {
  return "host=localhost hostaddr=127.0.0.1 port=" + std::to_string(d.port()) + " user=" + user + " dbname=" + db +
         " " + extra;
}

std::string verify_full(const KeyPair& ca) { return "sslmode=verify-full sslrootcert=" + ca.crt; }
std::string with_cert(const KeyPair& k) { return " sslcert=" + k.crt + " sslkey=" + k.key; }

// Connects and runs sql; on success ok with the result, else the first error (login or query).
struct Outcome {
  bool ok = false;
  std::string sqlstate, error;
  QResult result;
  std::string describe() const { return ok ? result.describe() : "[" + sqlstate + "] " + error; }
};

Outcome login_and_query(const std::string& ci, const std::string& sql = "SELECT 1") {
  Outcome o;
  ConnectResult c = pg_connect(ci, 15000);
  if (!c.ok()) {
    o.sqlstate = c.sqlstate;
    o.error = c.error;
    return o;
  }
  o.result = exec_within(c.conn, sql, 15000);
  o.ok = o.result.ok;
  o.sqlstate = o.result.sqlstate;
  o.error = o.result.error;
  return o;
}

const char* kSslOfBackend = "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
const char* kSslAndUser = "SELECT ssl, version, current_user FROM pg_stat_ssl WHERE pid = pg_backend_pid()";


// Values of column `name` in the answer to sql (e.g. SHOW CLIENTS' tls).
std::vector<std::string> column(const ConnPtr& c, const std::string& sql, const std::string& name) {
  std::vector<std::string> out;
  PGresult* r = PQexec(c.get(), sql.c_str());
  int col = r && PQresultStatus(r) == PGRES_TUPLES_OK ? PQfnumber(r, name.c_str()) : -1;
  if (col >= 0)
    for (int i = 0; i < PQntuples(r); ++i) out.push_back(PQgetvalue(r, i, col));
  else
    out.push_back("<no column " + name + ": " + (r ? PQresultErrorMessage(r) : "no result") + ">");
  PQclear(r);
  return out;
}

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : " | ") + x;
  return s;
}

// HTTP GET /metrics on 127.0.0.1:port: the body, "" if none.
std::string scrape(int port) {
  int fd = tcp_connect(port);
  if (fd < 0) return "";
  std::string req = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", out;
  send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  auto t0 = Clock::now();
  char buf[65536];
  while (ms_since(t0) < 10000) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 1000) <= 0) continue;
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, size_t(n));
  }
  close(fd);
  size_t body = out.find("\r\n\r\n");
  return body == std::string::npos ? "" : out.substr(body + 4);
}

// Sum of the samples whose series starts with `prefix` (e.g. `name{side="client",`); -1 if none.
double metric_sum(const std::string& text, const std::string& prefix) {
  double sum = -1;
  for (size_t at = text.find("\n" + prefix); at != std::string::npos; at = text.find("\n" + prefix, at + 1)) {
    size_t eol = text.find('\n', at + 1);
    std::string line = text.substr(at + 1, eol == std::string::npos ? std::string::npos : eol - at - 1);
    size_t sp = line.rfind(' ');
    if (sp == std::string::npos) continue;
    sum = (sum < 0 ? 0 : sum) + std::stod(line.substr(sp + 1));
  }
  return sum;
}

// Line number (1-based) of the line starting with `key:` in the file, 0 if none.
int line_of(const std::string& path, const std::string& key) {
  std::string text = read_file(path);
  int line = 1;
  for (size_t pos = 0; pos < text.size();) {
    if (text.compare(pos, key.size() + 1, key + ":") == 0) return line;
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) break;
    pos = nl + 1;
    ++line;
  }
  return 0;
}

}  // namespace

class Tls : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string err;
    if (!make_certs(g_certs, err) || !setup_postgres(err)) g_setup_error = err.empty() ? "unknown error" : err;
  }
  static void TearDownTestSuite() {
    restore_postgres();
  }
  void SetUp() override { ASSERT_TRUE(g_setup_error.empty()) << "TLS fixture: " << g_setup_error; }
};

// 1. libpq and psql with verify-full to pgsidecar; pgsidecar verify-full to PostgreSQL.
TEST_F(Tls, VerifyFullBothSides) {
  DaemonConfig cfg = client_tls_config("prefer");
  cfg.set("server_tls_sslmode", "verify-full").set("server_tls_ca_file", yaml_str(g_certs.ca.crt));
  Daemon d(cfg);
  START_DAEMON(d);

  ConnectResult c = pg_connect(via_localhost(d, "app", "app", verify_full(g_certs.ca)));
  ASSERT_TRUE(c.ok()) << "[" << c.sqlstate << "] " << c.error;
  EXPECT_EQ(PQsslInUse(c.conn.get()), 1);
  const char* proto = PQsslAttribute(c.conn.get(), "protocol");
  EXPECT_EQ(std::string(proto ? proto : "").rfind("TLSv1.", 0), 0u) << (proto ? proto : "(null)");
  QResult q = exec(c.conn, kSslOfBackend);
  ASSERT_TRUE(q.ok) << q.describe();
  EXPECT_EQ(q.at(0, 0), "t") << "pgsidecar -> PostgreSQL is not TLS";
  EXPECT_EQ(q.at(0, 1).rfind("TLSv1.", 0), 0u) << q.at(0, 1);

  // psql the same way, also by IP address (the certificate lists 127.0.0.1).
  std::string ci = "host=127.0.0.1 port=" + std::to_string(d.port()) + " user=app dbname=app " +
                   verify_full(g_certs.ca);
  ProcResult r = run_process({"psql", ci, "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c",
                              "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"},
                             20000, {"PGGSSENCMODE=disable"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "t\n");

  // A client trusting another CA refuses pgsidecar's certificate.
  ConnectResult wrong = pg_connect(via_localhost(d, "app", "app", verify_full(g_certs.wrong_ca)));
  EXPECT_FALSE(wrong.ok());
  EXPECT_TRUE(contains(wrong.error, "certificate verify failed")) << wrong.error;
}

// 2. verify-full toward a hostssl-only role; a wrong CA fails clearly; a plain entry keeps serving.
TEST_F(Tls, ServerVerifyFullRightAndWrongCa) {
  DaemonConfig cfg = base_config();
  cfg.set("server_tls_sslmode", "verify-full").set("server_tls_ca_file", yaml_str(g_certs.wrong_ca.crt));
  cfg.user("tlsonly", "tlspass");
  cfg.db("secure", db_entry("dbname: app, server_tls_ca_file: " + yaml_str(g_certs.ca.crt)));
  cfg.db("wrongca", db_entry("dbname: app"));
  cfg.db("plain", db_entry("dbname: app, server_tls_sslmode: disable"));
  Daemon d(cfg);
  START_DAEMON(d);

  ConnPtr plain = must_connect(d.conninfo("app", "plain"));
  ASSERT_TRUE(plain);
  QResult pq = exec(plain, kSslOfBackend);
  ASSERT_TRUE(pq.ok) << pq.describe();
  EXPECT_EQ(pq.at(0, 0), "f") << "server_tls_sslmode disable override ignored";

  Outcome secure = login_and_query(d.conninfo("tlsonly", "secure"), kSslAndUser);
  ASSERT_TRUE(secure.ok) << secure.describe();
  EXPECT_EQ(secure.result.at(0, 0), "t");
  EXPECT_EQ(secure.result.at(0, 2), "tlsonly");

  // The role really is hostssl-only: without TLS, PostgreSQL refuses it.
  Outcome nossl = login_and_query(d.conninfo("tlsonly", "plain"));
  EXPECT_FALSE(nossl.ok);
  EXPECT_EQ(nossl.sqlstate, "28000") << nossl.describe();

  Outcome wrong = login_and_query(d.conninfo("app", "wrongca"));
  ASSERT_FALSE(wrong.ok) << "verify-full with a CA that did not sign PostgreSQL's certificate logged in";
  EXPECT_EQ(wrong.sqlstate, "08006") << wrong.describe();
  EXPECT_TRUE(contains(wrong.error, "TLS with server")) << wrong.error;
  EXPECT_TRUE(contains(wrong.error, "certificate verify failed")) << wrong.error;

  // Meanwhile the plain entry and the right-CA entry keep serving, old and new clients.
  EXPECT_EQ(exec_within(plain, "SELECT 'still'").scalar(), "still");
  Outcome plain2 = login_and_query(d.conninfo("app", "plain"), "SELECT 2");
  EXPECT_TRUE(plain2.ok && plain2.result.scalar() == "2") << plain2.describe();
  Outcome secure2 = login_and_query(d.conninfo("tlsonly", "secure"), "SELECT 3");
  EXPECT_TRUE(secure2.ok && secure2.result.scalar() == "3") << secure2.describe();
  EXPECT_TRUE(d.running());
}

// 3. PostgreSQL serving a certificate that names only elsewhere.example: verify-full by IP fails.
TEST_F(Tls, ServerHostNameMismatch) {
  std::string err;
  // verify-ca (not -full) connections see the swapped certificate: it verifies, the name does not.
  ASSERT_TRUE(serve_pg_cert(g_certs.pg_elsewhere, "sslmode=verify-ca sslrootcert=" + g_certs.ca.crt, err)) << err;
  struct Restore {
    ~Restore() {
      std::string e;
      EXPECT_TRUE(serve_pg_cert(g_certs.pg_server, pg_ready_full(), e)) << e;
    }
  } restore;
  ASSERT_TRUE(eventually([] { return !pg_connect(direct_ssl_conninfo(pg_ready_full()), 3000).ok(); }, 15000))
      << "PostgreSQL still serves a certificate naming 127.0.0.1";

  DaemonConfig cfg = base_config();
  cfg.set("server_tls_sslmode", "verify-full").set("server_tls_ca_file", yaml_str(g_certs.ca.crt));
  cfg.db("byca", db_entry("dbname: app, server_tls_sslmode: verify-ca"));
  Daemon d(cfg);
  START_DAEMON(d);

  Outcome full = login_and_query(d.conninfo("app", "app"));
  ASSERT_FALSE(full.ok) << "verify-full accepted a certificate that does not name 127.0.0.1";
  EXPECT_EQ(full.sqlstate, "08006") << full.describe();
  EXPECT_TRUE(contains(full.error, "TLS with server")) << full.error;
  EXPECT_TRUE(contains(full.error, "IP address mismatch") || contains(full.error, "hostname mismatch")) << full.error;

  // verify-ca accepts the same certificate (the CA is right; only the name differs).
  Outcome ca = login_and_query(d.conninfo("app", "byca"), kSslOfBackend);
  ASSERT_TRUE(ca.ok) << ca.describe();
  EXPECT_EQ(ca.result.at(0, 0), "t");
}

// 4. Client certificates: verify-ca demands one from client_tls_ca_file; auth_type cert checks the CN.
TEST_F(Tls, ClientCertificates) {
  DaemonConfig cfg = client_tls_config("verify-ca");
  cfg.set("client_tls_ca_file", yaml_str(g_certs.ca.crt));
  Daemon d(cfg);
  START_DAEMON(d);
  const std::string tls = verify_full(g_certs.ca);

  Outcome with = login_and_query(via_localhost(d, "app", "app", tls + with_cert(g_certs.client_app)), "SELECT current_user");
  ASSERT_TRUE(with.ok) << with.describe();
  EXPECT_EQ(with.result.scalar(), "app");

  Outcome without = login_and_query(via_localhost(d, "app", "app", tls + " sslcert=/nonexistent.crt sslkey=/nonexistent.key"));
  EXPECT_FALSE(without.ok) << "verify-ca let a client in without a certificate";
  EXPECT_TRUE(contains(without.error, "alert")) << without.describe();   // "tlsv13 alert certificate required"
  Outcome foreign = login_and_query(via_localhost(d, "app", "app", tls + with_cert(g_certs.client_app_wrong)));
  EXPECT_FALSE(foreign.ok) << "verify-ca let in a certificate from another CA";
  EXPECT_TRUE(contains(foreign.error, "alert")) << foreign.describe();   // "tlsv1 alert unknown ca"

  // auth_type cert: the certificate's CN must be the user.
  DaemonConfig certcfg = cfg;
  certcfg.set("auth_type", "cert");
  Daemon dc(certcfg);
  START_DAEMON(dc);
  Outcome app = login_and_query(via_localhost(dc, "app", "app", tls + with_cert(g_certs.client_app)), "SELECT current_user");
  ASSERT_TRUE(app.ok) << app.describe();
  EXPECT_EQ(app.result.scalar(), "app");
  Outcome other = login_and_query(via_localhost(dc, "app", "app", tls + with_cert(g_certs.client_other)));
  EXPECT_FALSE(other.ok) << "CN=other logged in as app";
  EXPECT_EQ(other.sqlstate, "28000") << other.describe();
  EXPECT_TRUE(contains(other.error, "certificate authentication failed for user")) << other.error;
}

// 5. require: plain TCP refused with 28000, TLS works, a unix socket needs no TLS.
TEST_F(Tls, RequireRefusesPlainTcpOnly) {
  DaemonConfig cfg = client_tls_config("require");
  cfg.set("unix_socket_dir", "\"@DIR@\"");
  Daemon d(cfg);
  START_DAEMON(d);

  ConnectResult plain = pg_connect(d.conninfo("app", "app", "sslmode=disable"));
  ASSERT_FALSE(plain.ok()) << "a plain TCP client got in under client_tls_sslmode require";
  EXPECT_EQ(plain.sqlstate, "28000") << plain.error;
  EXPECT_TRUE(contains(plain.error, "pgsidecar accepts only TLS connections")) << plain.error;

  Outcome tls = login_and_query(d.conninfo("app", "app", "sslmode=require"), "SELECT 'over tls'");
  EXPECT_TRUE(tls.ok && tls.result.scalar() == "over tls") << tls.describe();

  Outcome unix_sock = login_and_query(
      "host=" + d.dir() + " port=" + std::to_string(d.port()) + " user=app dbname=app sslmode=disable", "SELECT 'unix'");
  EXPECT_TRUE(unix_sock.ok && unix_sock.result.scalar() == "unix") << unix_sock.describe();
}

// 6. SCRAM-SHA-256-PLUS toward clients and toward PostgreSQL.
TEST_F(Tls, ChannelBinding) {
  DaemonConfig cfg = client_tls_config("prefer");
  cfg.set("auth_type", "scram-sha-256");
  Daemon d(cfg);
  START_DAEMON(d);
  Outcome bound = login_and_query(
      via_localhost(d, "app", "app", verify_full(g_certs.ca) + " channel_binding=require password=apppass"),
      "SELECT current_user");
  ASSERT_TRUE(bound.ok) << bound.describe();
  EXPECT_EQ(bound.result.scalar(), "app");
  // A wrong password over PLUS still fails.
  Outcome wrongpw = login_and_query(
      via_localhost(d, "app", "app", verify_full(g_certs.ca) + " channel_binding=require password=nope"));
  EXPECT_FALSE(wrongpw.ok);
  EXPECT_EQ(wrongpw.sqlstate, "28P01") << wrongpw.describe();

  // client_channel_binding disable: no PLUS in the offer, so a client requiring it gives up.
  DaemonConfig offcfg = cfg;
  offcfg.set("client_channel_binding", "disable");
  Daemon doff(offcfg);
  START_DAEMON(doff);
  Outcome unbound = login_and_query(
      via_localhost(doff, "app", "app", verify_full(g_certs.ca) + " channel_binding=require password=apppass"));
  EXPECT_FALSE(unbound.ok) << "channel_binding=require succeeded although pgsidecar offered no SCRAM-SHA-256-PLUS";
  EXPECT_TRUE(contains(unbound.error, "channel binding")) << unbound.describe();
  Outcome nobind = login_and_query(
      via_localhost(doff, "app", "app", verify_full(g_certs.ca) + " channel_binding=disable password=apppass"));
  EXPECT_TRUE(nobind.ok) << nobind.describe();

  // client_channel_binding require refuses clients without TLS.
  DaemonConfig reqcfg = cfg;
  reqcfg.set("client_channel_binding", "require");
  Daemon dr(reqcfg);
  START_DAEMON(dr);
  ConnectResult plain = pg_connect(dr.conninfo("app", "app", "sslmode=disable password=apppass"));
  ASSERT_FALSE(plain.ok());
  EXPECT_EQ(plain.sqlstate, "28000") << plain.error;
  Outcome plus = login_and_query(dr.conninfo("app", "app", "sslmode=require channel_binding=require password=apppass"));
  EXPECT_TRUE(plus.ok) << plus.describe();

  // server_channel_binding require: the TLS login of the hostssl-only role binds; a plain one is refused.
  DaemonConfig srv = base_config();
  srv.set("server_channel_binding", "require")
      .set("server_tls_sslmode", "verify-full")
      .set("server_tls_ca_file", yaml_str(g_certs.ca.crt));
  srv.user("tlsonly", "tlspass");
  srv.db("plain", db_entry("dbname: app, server_tls_sslmode: disable"));
  Daemon ds(srv);
  START_DAEMON(ds);
  Outcome server_plus = login_and_query(ds.conninfo("tlsonly", "app"), kSslAndUser);
  ASSERT_TRUE(server_plus.ok) << server_plus.describe();
  EXPECT_EQ(server_plus.result.at(0, 0), "t");
  EXPECT_EQ(server_plus.result.at(0, 2), "tlsonly");
  Outcome server_plain = login_and_query(ds.conninfo("app", "plain"));
  EXPECT_FALSE(server_plain.ok) << "server_channel_binding require logged in without TLS";
  EXPECT_TRUE(contains(server_plain.error, "server_channel_binding is require")) << server_plain.describe();
}

// 7. SIGHUP re-reads the certificate: new connections get the new one, old ones stay; a bad file is refused.
TEST_F(Tls, CertificateRotationBySighup) {
  DaemonConfig cfg = base_config();
  cfg.set("client_tls_sslmode", "prefer")
      .set("client_tls_cert_file", "\"@DIR@/rotating.crt\"")
      .set("client_tls_key_file", "\"@DIR@/rotating.key\"");
  Daemon d(cfg);
  auto install = [&](const KeyPair& k) {
    write_file(d.dir() + "/rotating.crt", read_file(k.crt));
    write_file(d.dir() + "/rotating.key", read_file(k.key));
    chmod((d.dir() + "/rotating.key").c_str(), 0600);
  };
  install(g_certs.server);
  START_DAEMON(d);

  ConnPtr old = must_connect(via_localhost(d, "app", "app", verify_full(g_certs.ca)));
  ASSERT_TRUE(old);
  ASSERT_EQ(exec(old, "SELECT 1").scalar(), "1");
  ASSERT_FALSE(pg_connect(via_localhost(d, "app", "app", verify_full(g_certs.wrong_ca))).ok());

  install(g_certs.wrong_server);   // same names, signed by the other CA
  d.reload(cfg);
  ConnPtr fresh;
  EXPECT_TRUE(eventually([&] {
    ConnectResult r = pg_connect(via_localhost(d, "app", "app", verify_full(g_certs.wrong_ca)), 3000);
    if (r.ok()) fresh = std::move(r.conn);
    return fresh != nullptr;
  }, 10000)) << "the new certificate is not served after SIGHUP";
  EXPECT_EQ(exec(fresh, "SELECT 'new'").scalar(), "new");
  EXPECT_FALSE(pg_connect(via_localhost(d, "app", "app", verify_full(g_certs.ca))).ok())
      << "new connections still get the old certificate";
  EXPECT_EQ(exec_within(old, "SELECT 1").scalar(), "1") << "the connection made before the reload broke";

  // An unreadable certificate on reload: the running configuration stays.
  write_file(d.dir() + "/rotating.crt", "not a certificate\n");
  d.reload(cfg);
  EXPECT_TRUE(eventually([&] { return contains(d.log(), "reload failed"); }, 10000)) << tail_lines(d.log(), 20);
  Outcome after = login_and_query(via_localhost(d, "app", "app", verify_full(g_certs.wrong_ca)), "SELECT 'kept'");
  EXPECT_TRUE(after.ok && after.result.scalar() == "kept") << after.describe();
  EXPECT_EQ(exec_within(old, "SELECT 1").scalar(), "1");
}

// 8. A client that stops in the middle of its handshake does not hold anyone up and is timed out.
TEST_F(Tls, StalledHandshakeIsTimedOut) {
  DaemonConfig cfg = client_tls_config("prefer");
  cfg.set("client_login_timeout", "1s");
  Daemon d(cfg);
  START_DAEMON(d);
  RawConn stuck;
  ASSERT_TRUE(stuck.connect(d.port()));
  ASSERT_TRUE(stuck.send(wire::ssl_request()));
  std::string answer;
  ASSERT_EQ(stuck.read_exact(1, answer, 5000), RawConn::Status::Ok);
  ASSERT_EQ(answer, "S");
  // A handshake record header announcing 512 bytes, and 2 of them.
  ASSERT_TRUE(stuck.send(std::string("\x16\x03\x01\x02\x00\x01\x00", 7)));

  Outcome other = login_and_query(via_localhost(d, "app", "app", verify_full(g_certs.ca)), "SELECT 'served'");
  EXPECT_TRUE(other.ok && other.result.scalar() == "served") << other.describe();
  Outcome plain = login_and_query(d.conninfo("app", "app", "sslmode=disable"), "SELECT 'plain'");
  EXPECT_TRUE(plain.ok && plain.result.scalar() == "plain") << plain.describe();

  EXPECT_EQ(stuck.wait_closed(15000), RawConn::Status::Closed)
      << "a stalled TLS handshake outlived client_login_timeout 1s";
  // Closed by the timeout, not dropped on sight: the daemon says why (logged before the close).
  EXPECT_NE(d.log().find("client_login_timeout: login not completed in time (TLS handshake)"), std::string::npos)
      << tail_lines(d.log(), 20);
  expect_serving(d, "a stalled handshake");
}

// 9. Bytes after an SSLRequest, sent before the answer: refused in plain text with 08P01.
TEST_F(Tls, UnencryptedBytesAfterSslRequest) {
  Daemon d(client_tls_config("prefer"));
  START_DAEMON(d);
  RawConn rc;
  ASSERT_TRUE(rc.connect(d.port()));
  ASSERT_TRUE(rc.send(wire::ssl_request() + wire::startup({{"user", "app"}, {"database", "app"}})));
  std::string first;
  ASSERT_EQ(rc.read_exact(1, first, 5000), RawConn::Status::Ok);
  ASSERT_EQ(first, "E") << "expected an unencrypted ErrorResponse instead of the answer to the SSLRequest";
  std::string len_bytes, payload;
  ASSERT_EQ(rc.read_exact(4, len_bytes, 5000), RawConn::Status::Ok);
  uint32_t len = (uint32_t(uint8_t(len_bytes[0])) << 24) | (uint32_t(uint8_t(len_bytes[1])) << 16) |
                 (uint32_t(uint8_t(len_bytes[2])) << 8) | uint32_t(uint8_t(len_bytes[3]));
  ASSERT_GE(len, 4u);
  ASSERT_EQ(rc.read_exact(len - 4, payload, 5000), RawConn::Status::Ok);
  auto f = wire::error_fields(payload);
  EXPECT_EQ(f['C'], "08P01");
  EXPECT_TRUE(contains(f['M'], "received unencrypted data after SSL request")) << f['M'];
  EXPECT_EQ(rc.wait_closed(5000), RawConn::Status::Closed);
  expect_serving(d, "unencrypted data after an SSLRequest");
}

// 10. --check-config names the file and line of an unreadable or mismatched certificate.
TEST_F(Tls, CheckConfigReportsBadCertificateFiles) {
  auto check = [](const Daemon& d) {
    return run_process({daemon_binary(), "--check-config", "-c", d.config_path()}, 20000);
  };
  {
    Daemon good(client_tls_config("require"));
    good.write_config();
    ProcResult r = check(good);
    EXPECT_EQ(r.exit_code, 0) << r.output;
  }
  {
    DaemonConfig cfg = client_tls_config("require");
    cfg.set("client_tls_cert_file", "\"@DIR@/missing.crt\"");
    Daemon d(cfg);
    d.write_config();
    ProcResult r = check(d);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    int line = line_of(d.config_path(), "client_tls_cert_file");
    ASSERT_GT(line, 0);
    EXPECT_TRUE(contains(r.output, d.config_path() + ":" + std::to_string(line) + ": client_tls_cert_file: cannot read"))
        << r.output;
  }
  {
    DaemonConfig cfg = client_tls_config("require");
    cfg.set("client_tls_key_file", yaml_str(g_certs.client_app.key));   // not the certificate's key
    Daemon d(cfg);
    d.write_config();
    ProcResult r = check(d);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    int line = line_of(d.config_path(), "client_tls_key_file");
    EXPECT_TRUE(contains(r.output, d.config_path() + ":" + std::to_string(line) + ": client_tls_key_file:")) << r.output;
    EXPECT_TRUE(contains(r.output, "does not match the certificate in " + g_certs.server.crt)) << r.output;
  }
}

// 11. SHOW CLIENTS / SHOW SERVERS tls columns and the TLS metrics.
TEST_F(Tls, ShowAndMetrics) {
  int mport = free_port();
  DaemonConfig cfg = client_tls_config("verify-ca");
  cfg.set("client_tls_ca_file", yaml_str(g_certs.ca.crt))
      .set("admin_users", "[admin]")
      .set("metrics", "{listen: \"127.0.0.1:" + std::to_string(mport) + "\"}");
  Daemon d(cfg);
  START_DAEMON(d);
  ConnPtr c = must_connect(via_localhost(d, "app", "app", verify_full(g_certs.ca) + with_cert(g_certs.client_app)));
  ASSERT_TRUE(c);
  ASSERT_EQ(exec(c, "SELECT 1").scalar(), "1");
  // The admin console over TLS as well (verify-ca requires it).
  ConnPtr admin = must_connect(via_localhost(d, "admin", "pgsidecar", verify_full(g_certs.ca) + with_cert(g_certs.client_app)));
  ASSERT_TRUE(admin);
  std::vector<std::string> clients = column(admin, "SHOW CLIENTS", "tls");
  ASSERT_EQ(clients.size(), 1u) << joined(clients);
  EXPECT_EQ(clients[0].rfind("TLSv1.", 0), 0u) << "SHOW CLIENTS tls: " << clients[0];
  EXPECT_TRUE(contains(clients[0], "/")) << clients[0];
  std::vector<std::string> servers = column(admin, "SHOW SERVERS", "tls");
  ASSERT_EQ(servers.size(), 1u) << joined(servers);
  EXPECT_EQ(servers[0].rfind("TLSv1.", 0), 0u) << "SHOW SERVERS tls: " << servers[0];

  std::string m = scrape(mport);
  ASSERT_FALSE(m.empty());
  EXPECT_GE(metric_sum(m, "pgsidecar_tls_connections{side=\"client\","), 1) << m;
  EXPECT_GE(metric_sum(m, "pgsidecar_tls_connections{side=\"server\","), 1) << m;
  double failures = metric_sum(m, "pgsidecar_tls_handshake_failures_total{side=\"client\"}");
  ASSERT_GE(failures, 0) << m;

  // A certificate from another CA fails the handshake, and the counter says so.
  EXPECT_FALSE(pg_connect(via_localhost(d, "app", "app", verify_full(g_certs.ca) + with_cert(g_certs.client_app_wrong))).ok());
  double after = -1;
  EXPECT_TRUE(eventually([&] {
    after = metric_sum(scrape(mport), "pgsidecar_tls_handshake_failures_total{side=\"client\"}");
    return after >= failures + 1;
  }, 10000)) << "client handshake failures " << failures << " -> " << after;
}

// 12. Ten megabytes out and a few megabytes in (COPY), TLS on both sides.
TEST_F(Tls, BulkDataBothWays) {
  DaemonConfig cfg = client_tls_config("require");
  cfg.set("server_tls_sslmode", "verify-full").set("server_tls_ca_file", yaml_str(g_certs.ca.crt));
  Daemon d(cfg);
  START_DAEMON(d);
  ConnPtr c = must_connect(via_localhost(d, "app", "app", verify_full(g_certs.ca)));
  ASSERT_TRUE(c);
  ASSERT_EQ(exec(c, kSslOfBackend).scalar(), "t");

  QResult big = exec_within(c, "SELECT g, lpad(g::text, 1000, 'x') FROM generate_series(1, 10000) g", 60000);
  ASSERT_TRUE(big.ok) << big.describe();
  ASSERT_EQ(big.rows.size(), 10000u);
  size_t bad = 0;
  for (size_t i = 0; i < big.rows.size(); ++i) {
    std::string n = std::to_string(i + 1);
    const std::string& v = big.rows[i][1];
    if (big.rows[i][0] != n || v.size() != 1000 || v.compare(1000 - n.size(), n.size(), n) != 0 ||
        v.find_first_not_of('x') != 1000 - n.size())
      ++bad;
  }
  EXPECT_EQ(bad, 0u) << "rows that came back wrong";

  std::string table = "tls_bulk_" + std::to_string(getpid());
  ASSERT_TRUE(exec(c, "CREATE TABLE " + table + " (id int, payload text)").ok);
  QResult start = exec(c, "COPY " + table + " FROM STDIN");
  ASSERT_EQ(start.status, PGRES_COPY_IN) << start.describe();
  const int kRows = 20000;
  long long id_sum = 0, len_sum = 0;
  std::string chunk;
  bool sent = true;
  for (int i = 1; i <= kRows && sent; ++i) {
    std::string payload(150 + i % 100, char('a' + i % 26));
    chunk += std::to_string(i) + "\t" + payload + "\n";
    id_sum += i;
    len_sum += long(payload.size());
    if (chunk.size() > 60000 || i == kRows) {
      sent = PQputCopyData(c.get(), chunk.data(), int(chunk.size())) == 1;
      chunk.clear();
    }
  }
  ASSERT_TRUE(sent) << PQerrorMessage(c.get());
  ASSERT_EQ(PQputCopyEnd(c.get(), nullptr), 1) << PQerrorMessage(c.get());
  QResult done = result_of(PQgetResult(c.get()), c.get());
  ASSERT_TRUE(done.ok) << done.describe();
  while (PGresult* r = PQgetResult(c.get())) PQclear(r);
  EXPECT_GT(len_sum, 3'000'000);
  QResult sums = exec(c, "SELECT count(*), sum(id), sum(length(payload)) FROM " + table);
  ASSERT_TRUE(sums.ok) << sums.describe();
  EXPECT_EQ(sums.at(0, 0), std::to_string(kRows));
  EXPECT_EQ(sums.at(0, 1), std::to_string(id_sum));
  EXPECT_EQ(sums.at(0, 2), std::to_string(len_sum));
  exec(c, "DROP TABLE " + table);
}

// 13. PostgreSQL 17's direct TLS: a TLS handshake instead of an SSLRequest, with
// ALPN "postgresql" (libpq here is 15, so OpenSSL plays the client). Without that
// ALPN the connection is refused, as PostgreSQL refuses it.
namespace {
// Handshake (blocking) on a fresh TCP connection; then the startup packet, and the
// first message type of the answer ('R' ... 'Z' on success); "" if anything failed.
std::string direct_tls_login(int port, const char* alpn_wire, size_t alpn_len) {
  int fd = tcp_connect(port);
  if (fd < 0) return "";
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_load_verify_locations(ctx, g_certs.ca.crt.c_str(), nullptr);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  if (alpn_len) SSL_CTX_set_alpn_protos(ctx, reinterpret_cast<const unsigned char*>(alpn_wire), unsigned(alpn_len));
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  std::string answer;
  if (SSL_connect(ssl) == 1) {
    std::string sp = wire::startup({{"user", "app"}, {"database", "app"}});
    char buf[1];
    if (SSL_write(ssl, sp.data(), int(sp.size())) > 0 && SSL_read(ssl, buf, 1) == 1) answer = std::string(1, buf[0]);
  }
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  close(fd);
  return answer;
}
}  // namespace

TEST_F(Tls, DirectTlsNeedsAlpnPostgresql) {
  Daemon d(client_tls_config("prefer"));
  START_DAEMON(d);
  EXPECT_EQ(direct_tls_login(d.port(), "\x0apostgresql", 11), "R");   // AuthenticationOk (trust)
  EXPECT_EQ(direct_tls_login(d.port(), "\x08http/1.1", 9), "");       // no common protocol: handshake refused
  EXPECT_EQ(direct_tls_login(d.port(), "", 0), "E");                  // no ALPN at all: 08P01
  expect_serving(d, "direct TLS");
}

// 14. rediss://: the result cache's Redis over TLS, its CA and its name checked.
// With the wrong CA or a certificate for another name, Redis stays down, the log
// says why, and queries are answered all the same.
TEST_F(Tls, RedissChecksTheCaAndTheName) {
  ASSERT_APP_SQL("DROP TABLE IF EXISTS tls_rc; CREATE TABLE tls_rc (v text); INSERT INTO tls_rc VALUES ('over tls');");
  const std::string query = "/* pgsidecar:cache */ SELECT v FROM tls_rc";
  auto config = [](const std::string& url, const KeyPair& ca) {
    return base_config().set("stats_users", "[app]").set(
        "cache", "{mode: hinted, admission: always, redis: {url: \"" + url + "\", tls_ca_file: " + yaml_str(ca.crt) +
                     ", timeout_ms: 1000}}");
  };
  auto l2 = [](const Daemon& d) { return admin_row(d, "SHOW CACHE", "result_l2"); };

  RedisServer redis;
  redis.use_tls(g_certs.server.crt, g_certs.server.key, g_certs.ca.crt);
  START_REDIS(redis);
  {
    Daemon d(config(redis.url(), g_certs.ca));
    START_DAEMON(d);
    ASSERT_TRUE(eventually([&] { return l2(d)["state"] == "up"; }, 10000)) << d.log();
    ConnPtr c = must_connect(d.conninfo());
    ASSERT_EQ(exec(c, query).scalar(), "over tls");
    EXPECT_TRUE(eventually([&] { return l2(d)["stores"] == "1"; }, 5000)) << d.log();
    EXPECT_NE(redis.cli("--scan --pattern 'pgsidecar:r:*'"), "");   // it is in Redis
    EXPECT_TRUE(contains(d.log(), "TLSv1.")) << d.log();
  }

  RedisServer elsewhere;   // serves a certificate for elsewhere.example only
  elsewhere.use_tls(g_certs.elsewhere.crt, g_certs.elsewhere.key, g_certs.ca.crt);
  START_REDIS(elsewhere);
  struct Case {
    std::string url;
    KeyPair ca;
    std::string why;
  };
  for (const Case& k : {Case{redis.url(), g_certs.wrong_ca, "certificate verify failed"},
                        Case{elsewhere.url(), g_certs.ca, "hostname mismatch"}}) {
    SCOPED_TRACE(k.why);
    Daemon d(config(k.url, k.ca));
    START_DAEMON(d);
    EXPECT_TRUE(eventually([&] { return contains(d.log(), k.why); }, 10000)) << d.log();
    ConnPtr c = must_connect(d.conninfo());
    EXPECT_EQ(exec(c, query).scalar(), "over tls");
    EXPECT_NE(l2(d)["state"], "up");
  }
}
