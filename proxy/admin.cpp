#include "proxy/admin.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <ctime>
#include <map>
#include <vector>

#include "proxy/client_session.h"
#include "proxy/proxy.h"
#include "proxy/server_conn.h"

namespace proxy {
namespace {

constexpr uint32_t kTextOid = 25;

// SHOW CLIENTS and SHOW SERVERS share PgBouncer's header.
const std::initializer_list<std::string_view> kConnectionColumns = {
    "type", "user", "database", "state", "addr", "port", "local_addr", "local_port", "connect_time",
    "request_time", "wait", "wait_us", "close_needed", "ptr", "link", "remote_pid", "tls", "application_name"};

// Rows of text columns: RowDescription, DataRows, CommandComplete "SHOW".
class ResultSet {
 public:
  ResultSet(std::string& out, std::initializer_list<std::string_view> columns) : out_(out) { header(columns); }
  ResultSet(std::string& out, const std::vector<std::string>& columns) : out_(out) { header(columns); }
  void row(const std::vector<std::string>& values) {
    pg::Writer w(out_, 'D');
    w.u16(uint16_t(values.size()));
    for (const std::string& v : values) w.u32(uint32_t(v.size())).bytes(v);
    w.finish();
  }
  void done() { pg::Writer(out_, 'C').cstr("SHOW").finish(); }

 private:
  template <class Columns>
  void header(const Columns& columns) {
    pg::Writer w(out_, 'T');
    w.u16(uint16_t(columns.size()));
    for (std::string_view c : columns) w.cstr(c).u32(0).u16(0).u32(kTextOid).u16(0xffff).u32(0xffffffff).u16(0);
    w.finish();
  }

  std::string& out_;
};

template <class T>
std::string num(T v) {
  return std::to_string(v);
}

// Wall-clock text of a steady-clock instant, as PgBouncer prints connect times.
std::string wall_time(pool::Time t) {
  auto wall = std::chrono::system_clock::now() -
              std::chrono::duration_cast<std::chrono::system_clock::duration>(pool::Clock::now() - t);
  std::time_t tt = std::chrono::system_clock::to_time_t(wall);
  char buf[32];
  std::tm tm{};
  gmtime_r(&tt, &tm);
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

// Sum of a histogram's observations, in microseconds.
uint64_t sum_us(prometheus::Histogram* h) {
  return h ? uint64_t(h->Collect().histogram.sample_sum * 1e6) : 0;
}

const char* mode_name(conf::PoolMode m) { return m == conf::PoolMode::Transaction ? "transaction" : "session"; }

// "SHOW pools;" -> {"show", "pools"}: words lower-cased (quoted ones kept), at most 3.
std::vector<std::string> words(std::string_view sql) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < sql.size()) {
    char c = sql[i];
    if (std::isspace(uint8_t(c)) || c == ';') {
      i++;
    } else if (c == '"') {
      size_t end = sql.find('"', i + 1);
      if (end == std::string_view::npos) return {};
      out.emplace_back(sql.substr(i + 1, end - i - 1));
      i = end + 1;
    } else {
      std::string w;
      while (i < sql.size() && !std::isspace(uint8_t(sql[i])) && sql[i] != ';') w.push_back(char(std::tolower(uint8_t(sql[i++]))));
      out.push_back(std::move(w));
    }
  }
  return out;
}

void error(std::string& out, std::string_view code, std::string_view message) {
  pg::write_error(out, "ERROR", code, message);
}

void complete(std::string& out, std::string_view tag) { pg::Writer(out, 'C').cstr(tag).finish(); }

}  // namespace

bool admin_query(Proxy& proxy, uint32_t session_pid, std::string_view sql, bool admin_rights, std::string& out) {
  std::vector<std::string> w = words(sql);
  auto invalid = [&] { error(out, "08P01", "invalid command '" + std::string(sql) + "', use SHOW HELP;"); };
  if (w.empty()) {
    pg::Writer(out, 'I').finish();   // EmptyQueryResponse, as for an empty query anywhere
    return true;
  }
  const std::string& cmd = w[0];
  std::vector<std::vector<std::string>> rows_of_table;
  if ((cmd == "show" || cmd == "select") && w.size() == 2) {
    const std::string& what = w[1];
    if (what == "help") {
      ResultSet rs(out, {"command"});
      for (const char* c : {"SHOW HELP|POOLS|CLIENTS|SERVERS|STATS|DATABASES|CONFIG|CACHE|VERSION|LOCKS|MIGRATIONS", "PAUSE [db]", "RESUME [db]",
                            "RECONNECT [db]", "RELOAD", "SHUTDOWN"})
        rs.row({c});
      rs.done();
    } else if (what == "version") {
      ResultSet rs(out, {"version"});
      rs.row({"pgsidecar " PGSIDECAR_VERSION});
      rs.done();
    } else if (what == "pools") {
      ResultSet rs(out, {"database", "user", "cl_active", "cl_waiting", "cl_active_cancel_req", "cl_waiting_cancel_req",
                         "sv_active", "sv_active_cancel", "sv_being_canceled", "sv_idle", "sv_used", "sv_tested",
                         "sv_login", "maxwait", "maxwait_us", "pool_mode", "sv_pinned"});
      pool::Time now = pool::Clock::now();
      auto clients = proxy.client_counts();
      for (const PoolEntry* e : proxy.pool_entries()) {
        pool::Stats s = e->pool->stats();
        int active = clients[e].active;
        auto wait_us = std::chrono::duration_cast<std::chrono::microseconds>(e->pool->longest_wait(now)).count();
        rs.row({e->pool->database(), e->pool->user(), num(active), num(clients[e].waiting), "0", "0", num(s.active), "0", "0",
                num(s.idle), "0", num(s.checking), num(s.launching), std::to_string(wait_us / 1000000),
                std::to_string(wait_us % 1000000), mode_name(e->mode), num(e->pinned)});
      }
      rs.done();
    } else if (what == "clients") {
      std::vector<std::string> columns(kConnectionColumns.begin(), kConnectionColumns.end());
      columns.push_back("pinned");   // kinds of session state holding it to its server (transaction mode)
      ResultSet rs(out, columns);
      pool::Time now = pool::Clock::now();
      for (const ClientSession* c : proxy.sessions()) {
        if (!c->logged_in() && !c->waiting) continue;
        auto [addr, port] = c->peer_address();
        auto [laddr, lport] = c->local_address();
        // Queued for a server, or (transaction mode) for a pinned client to unpin.
        const bool waits = c->waiting || c->pin_wait().queued;
        pool::Time since = c->waiting ? c->wait_start : c->pin_wait().since;
        auto waited = waits ? std::chrono::duration_cast<std::chrono::microseconds>(now - since).count() : 0;
        rs.row({"C", c->user(), c->database(), waits ? "waiting" : "active", addr, num(port), laddr, num(lport),
                wall_time(c->started()), wall_time(c->started()), std::to_string(waited / 1000000),
                std::to_string(waited % 1000000), "0", num(c->cancel_pid()),
                c->server() ? num(c->server()->backend_pid()) : "", "0", c->tls() ? c->tls()->describe() : "",
                std::string(c->application_name()),
                pin_names(c->pin().kinds)});
      }
      rs.done();
    } else if (what == "servers") {
      ResultSet rs(out, kConnectionColumns);
      for (const PoolEntry* e : proxy.pool_entries()) {
        e->pool->for_each_member([&](const pool::Member& m) {
          const auto& s = static_cast<const ServerConn&>(m);
          const char* state = m.state == pool::Member::State::Launching ? "new"
                              : m.state == pool::Member::State::Idle     ? "idle"
                              : m.state == pool::Member::State::Checking ? "tested"
                                                                         : "active";
          auto [laddr, lport] = s.local_address();
          rs.row({"S", s.target().user, s.target().dbname, state, s.target().host, num(s.target().port), laddr,
                  num(lport), wall_time(m.created), wall_time(m.created), "0", "0", "0", num(s.backend_pid()),
                  s.client() ? num(s.client()->cancel_pid()) : "", num(s.backend_pid()),
                  s.tls() ? s.tls()->describe() : "",
                  std::string(s.tracked()[0])});
        });
      }
      rs.done();
    } else if (what == "stats") {
      ResultSet rs(out, {"database", "total_xact_count", "total_query_count", "total_received", "total_sent",
                         "total_xact_time", "total_query_time", "total_wait_time", "avg_xact_count", "avg_query_count",
                         "avg_recv", "avg_sent", "avg_xact_time", "avg_query_time", "avg_wait_time"});
      struct Totals {
        uint64_t xacts = 0, queries = 0, received = 0, sent = 0, xact_us = 0, query_us = 0, wait_us = 0;
      };
      std::map<std::string, Totals> by_db;
      for (const PoolEntry* e : proxy.pool_entries()) {
        pool::Stats s = e->pool->stats();
        Totals& t = by_db[e->pool->database()];
        t.xacts += s.transactions_total;
        t.queries += s.queries_total;
        t.received += e->bytes_from_clients;
        t.sent += e->bytes_from_servers;
        t.xact_us += sum_us(e->transaction_seconds);
        t.query_us += sum_us(e->query_seconds);
        t.wait_us += sum_us(e->wait_seconds);
      }
      // Averages are over the time since start (PgBouncer's cover its last stats_period).
      double up = std::max(1.0, std::chrono::duration<double>(pool::Clock::now() - proxy.started()).count());
      for (const auto& [db, t] : by_db) {
        auto per_s = [&](uint64_t v) { return num(uint64_t(double(v) / up)); };
        auto avg = [](uint64_t total, uint64_t n) { return num(n ? total / n : 0); };
        rs.row({db, num(t.xacts), num(t.queries), num(t.received), num(t.sent), num(t.xact_us), num(t.query_us),
                num(t.wait_us), per_s(t.xacts), per_s(t.queries), per_s(t.received), per_s(t.sent),
                avg(t.xact_us, t.xacts), avg(t.query_us, t.queries), avg(t.wait_us, t.xacts)});
      }
      rs.done();
    } else if (what == "databases") {
      ResultSet rs(out, {"name", "host", "port", "database", "force_user", "pool_size", "min_pool_size", "reserve_pool",
                         "pool_mode", "max_connections", "current_connections", "paused", "disabled"});
      const conf::Config& cfg = proxy.config();
      for (const conf::Database& d : cfg.databases) {
        bool paused = false;
        for (const PoolEntry* e : proxy.pool_entries())
          if (e->pool->database() == d.name && e->pool->paused()) paused = true;
        rs.row({d.name, d.host, num(d.port), d.dbname.empty() ? d.name : d.dbname, d.user,
                num(d.pool_size.value_or(cfg.default_pool_size)), num(d.min_pool_size.value_or(cfg.min_pool_size)),
                num(d.reserve_pool_size.value_or(cfg.reserve_pool_size)),
                d.pool_mode ? mode_name(*d.pool_mode) : "", num(cfg.max_db_connections),
                num(proxy.database_servers(d.dbname.empty() ? d.name : d.dbname)), paused ? "1" : "0", "0"});
      }
      rs.done();
    } else if (what == "config") {
      ResultSet rs(out, {"key", "value", "default", "changeable"});
      std::vector<std::pair<std::string, std::string>> now = conf::describe(proxy.config());
      std::vector<std::pair<std::string, std::string>> defaults = conf::describe(conf::Config{});
      for (size_t i = 0; i < now.size(); i++)
        rs.row({now[i].first, now[i].second, defaults[i].second, conf::needs_restart(now[i].first) ? "no" : "yes"});
      rs.done();
    } else if (what == "cache") {
      // One row per cache: the plan cache, and the result cache when it is on (tier l1, and l2 with Redis).
      ResultSet rs(out, {"cache", "entries", "prepares", "hits", "misses", "evictions", "reprepares", "schema_version",
                         "bytes", "stores", "invalidated", "errors", "state"});
      const pool::StatementStats& s = proxy.statements().stats();
      std::string version = num(proxy.schema().current());
      rs.row({"plan", num(uint64_t(proxy.statements().size())), num(s.prepares), num(s.hits), num(s.misses),
              num(s.evictions), num(s.reprepares), version, "", "", "", "", ""});
      if (const cache::ResultCache* rc = proxy.result_cache()) {
        const cache::CacheStats& c = rc->stats();
        const cache::ResultStore& l1 = rc->l1();
        rs.row({"result_l1", num(uint64_t(l1.entries())), "", num(c.l1_hits), num(c.l1_misses), num(l1.evictions()),
                "", version, num(uint64_t(l1.bytes())), num(c.stores), num(c.invalidated_entries), "", "on"});
        if (const cache::RedisStats* r = rc->redis_stats())
          rs.row({"result_l2", "", "", num(c.l2_hits), num(c.l2_misses), "", "", version, "", num(c.l2_stores),
                  "", num(r->errors + c.l2_corrupt), rc->redis_up() ? "up" : "down"});
      }
      rs.done();
    } else if (std::vector<std::string> columns; proxy.admin_table(what, columns, rows_of_table)) {
      ResultSet rs(out, columns);
      for (const auto& r : rows_of_table) rs.row(r);
      rs.done();
    } else {
      invalid();
    }
    return true;
  }
  bool control = cmd == "pause" || cmd == "resume" || cmd == "reconnect" || cmd == "reload" || cmd == "shutdown";
  if (!control || w.size() > 2 || ((cmd == "reload" || cmd == "shutdown") && w.size() > 1)) {
    invalid();
    return true;
  }
  if (!admin_rights) {
    error(out, "42501", "admin access needed: " + cmd + " is for admin_users");
    return true;
  }
  std::string db = w.size() == 2 ? w[1] : "";
  if (!db.empty() && conf::find_database(proxy.config(), db) == nullptr) {
    error(out, "08P01", "no such database: " + db);
    return true;
  }
  auto upper = [](std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return char(std::toupper(c)); });
    return s;
  };
  if (cmd == "reload") {
    proxy.request_reload();
  } else if (cmd == "shutdown") {
    proxy.request_shutdown();
  } else if (cmd == "reconnect") {
    for (PoolEntry* e : proxy.pool_entries())
      if (db.empty() || e->pool->database() == db) e->pool->reconnect();
  } else if (cmd == "resume") {
    if (!proxy.resume(db)) {
      error(out, "08P01", db.empty() ? "pooler is not paused" : "database " + db + " is not paused");
      return true;
    }
  } else {   // pause: the reply waits until the paused pools have no busy server
    proxy.pause(session_pid, db);
    return false;
  }
  complete(out, upper(cmd));
  return true;
}

}  // namespace proxy
