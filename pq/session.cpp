#include "pq/session.h"

#include "conf/log.h"

namespace pq {
namespace {

void free_handle(uv_handle_t* h) {
  if (h->type == UV_POLL) delete reinterpret_cast<uv_poll_t*>(h);
  else delete reinterpret_cast<uv_timer_t*>(h);
}

void close_handle(uv_handle_t* h) { uv_close(h, free_handle); }

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

std::string quote_ident(const std::string& s) {
  std::string q = "\"";
  for (char c : s) q.append(c == '"' ? "\"\"" : std::string(1, c));
  return q + "\"";
}

Session::Session(uv_loop_t* loop, std::string label) : loop_(loop), label_(std::move(label)) {}

Session::~Session() { stop(); }

void Session::configure(std::string conninfo, std::vector<std::string> channels) {
  conninfo_ = std::move(conninfo);
  channels_ = std::move(channels);
}

void Session::query(std::string sql, std::vector<std::string> params, Done done) {
  queue_.push_back({std::move(sql), std::move(params), std::move(done)});
  kick();
}

void Session::connect_now() { kick(); }

// Connects or sends on the next loop iteration, never inside query(): a caller's
// callback then never runs while the caller is still in the middle of asking.
void Session::kick() {
  if (state_ == State::Connecting || state_ == State::Busy) return;
  if (!kick_) {
    kick_ = new uv_timer_t;
    uv_timer_init(loop_, kick_);
    kick_->data = this;
  }
  uv_timer_start(kick_, [](uv_timer_t* t) {
    auto* self = static_cast<Session*>(t->data);
    if (self->state_ == State::Closed) self->connect();
    else if (self->state_ == State::Ready) self->send_next();
  }, 0, 0);
}

void Session::stop() {
  if (kick_) {
    close_handle(reinterpret_cast<uv_handle_t*>(kick_));
    kick_ = nullptr;
  }
  close_connection();
  state_ = State::Closed;
  std::deque<Pending> failed;
  failed.swap(queue_);
  for (Pending& p : failed) p.done(QueryResult{false, true, "", "the connection was stopped", {}});
}

void Session::connect() {
  state_ = State::Connecting;
  subscribed_ = false;
  if (!pq_ && !(pq_ = api())) return fail("libpq (package libpq5) could not be loaded");
  conn_ = pq_->connectStart(conninfo_.c_str());
  if (!conn_ || pq_->status(conn_) == CONNECTION_BAD) return fail("could not start the connection");
  connect_timer_ = new uv_timer_t;
  uv_timer_init(loop_, connect_timer_);
  connect_timer_->data = this;
  uv_timer_start(connect_timer_, [](uv_timer_t* t) { static_cast<Session*>(t->data)->fail("connect timed out"); },
                 kConnectTimeoutMs, 0);
  advance_connect();
}

// Follows PQconnectPoll's wishes; the socket may change between steps.
void Session::advance_connect() {
  switch (pq_->connectPoll(conn_)) {
    case PGRES_POLLING_READING: return watch(UV_READABLE);
    case PGRES_POLLING_WRITING: return watch(UV_WRITABLE);
    case PGRES_POLLING_OK: break;
    default: return fail("connection failed");
  }
  if (pq_->setnonblocking(conn_, 1) != 0) return fail("could not set non-blocking mode");
  uv_timer_stop(connect_timer_);
  state_ = State::Ready;
  if (!channels_.empty() && !subscribed_) {
    std::string listen;
    for (const std::string& c : channels_) listen += "LISTEN " + quote_ident(c) + ";";
    queue_.push_front({listen, {}, [this](QueryResult r) {
                         subscribed_ = r.ok;
                         if (!r.ok) LOG_WARN("%s: LISTEN failed: %s", label_.c_str(), r.message.c_str());
                         else if (on_listening_) on_listening_();
                       }});
  }
  watch(UV_READABLE);
  send_next();
}

void Session::watch(int events) {
  int fd = pq_->socket(conn_);
  if (fd < 0) return fail("no socket");
  if (poll_ && fd != poll_fd_) {
    uv_poll_stop(poll_);
    close_handle(reinterpret_cast<uv_handle_t*>(poll_));
    poll_ = nullptr;
  }
  if (!poll_) {
    poll_ = new uv_poll_t;
    if (uv_poll_init(loop_, poll_, fd) != 0) {
      delete poll_;
      poll_ = nullptr;
      return fail("could not watch the socket");
    }
    poll_->data = this;
    poll_fd_ = fd;
  }
  uv_poll_start(poll_, events, [](uv_poll_t* p, int status, int ev) { static_cast<Session*>(p->data)->on_socket(status, ev); });
}

void Session::on_socket(int status, int events) {
  if (status < 0) return fail("socket error");
  if (state_ == State::Connecting) return advance_connect();
  if (events & UV_WRITABLE) {
    int f = pq_->flush(conn_);
    if (f < 0) return fail("could not send");
    if (f == 0) watch(UV_READABLE);
  }
  if (events & UV_READABLE) consume();
}

void Session::send_next() {
  if (state_ != State::Ready || queue_.empty()) return;
  Pending& p = queue_.front();
  int sent;
  if (p.params.empty()) {
    sent = pq_->sendQuery(conn_, p.sql.c_str());
  } else {
    std::vector<const char*> values;
    for (const std::string& v : p.params) values.push_back(v.c_str());
    sent = pq_->sendQueryParams(conn_, p.sql.c_str(), int(values.size()), nullptr, values.data(), nullptr, nullptr, 0);
  }
  if (!sent) return fail("could not send a query");
  state_ = State::Busy;
  current_ = QueryResult{true, false, "", "", {}};
  int f = pq_->flush(conn_);
  if (f < 0) return fail("could not send a query");
  watch(f == 1 ? UV_READABLE | UV_WRITABLE : UV_READABLE);
}

// Reads what arrived: results of the running query, then notifications.
void Session::consume() {
  if (!pq_->consumeInput(conn_)) return fail("connection lost");
  while (state_ == State::Busy && !pq_->isBusy(conn_)) {
    PGresult* r = pq_->getResult(conn_);
    if (!r) {  // the query is complete
      Pending done = std::move(queue_.front());
      queue_.pop_front();
      state_ = State::Ready;
      QueryResult result = std::move(current_);
      done.done(std::move(result));
      if (state_ != State::Ready) return;   // the callback stopped or failed us
      send_next();
      continue;
    }
    ExecStatusType st = pq_->resultStatus(r);
    if (st == PGRES_TUPLES_OK) {
      current_.rows.clear();
      int n = pq_->ntuples(r), f = pq_->nfields(r);
      for (int i = 0; i < n; i++) {
        Row row;
        for (int j = 0; j < f; j++) {
          if (pq_->getisnull(r, i, j)) row.emplace_back();
          else row.emplace_back(pq_->getvalue(r, i, j));
        }
        current_.rows.push_back(std::move(row));
      }
    } else if (st != PGRES_COMMAND_OK && st != PGRES_EMPTY_QUERY && current_.ok) {
      const char* state = pq_->resultErrorField(r, PG_DIAG_SQLSTATE);
      const char* severity = pq_->resultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
      const char* primary = pq_->resultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
      current_.ok = false;
      current_.sqlstate = state ? state : "";
      current_.message = primary ? std::string(severity ? severity : "ERROR") + " " + current_.sqlstate + ": " + primary
                                 : trimmed(pq_->resultErrorMessage(r));
    }
    pq_->clear(r);
  }
  while (conn_) {
    PGnotify* n = pq_->notifies(conn_);
    if (!n) break;
    std::string channel = n->relname, payload = n->extra ? n->extra : "";
    int be_pid = n->be_pid;
    pq_->freemem(n);
    if (on_notify_) on_notify_(channel, payload, be_pid);
  }
}

void Session::fail(const std::string& why) {
  bool was_up = state_ == State::Ready || state_ == State::Busy;
  std::string detail = conn_ ? trimmed(pq_->errorMessage(conn_)) : "";
  std::string message = detail.empty() ? why : why + ": " + detail;
  LOG_WARN("%s: %s", label_.c_str(), message.c_str());
  close_connection();
  state_ = State::Closed;
  // Everything queued fails: it may have run (the running query) or cannot run now.
  std::deque<Pending> failed;
  failed.swap(queue_);
  for (Pending& p : failed) p.done(QueryResult{false, true, "", message, {}});
  if (on_down_) on_down_(was_up);
}

void Session::close_connection() {
  if (connect_timer_) {
    uv_timer_stop(connect_timer_);
    close_handle(reinterpret_cast<uv_handle_t*>(connect_timer_));
    connect_timer_ = nullptr;
  }
  if (poll_) {
    uv_poll_stop(poll_);
    close_handle(reinterpret_cast<uv_handle_t*>(poll_));
    poll_ = nullptr;
    poll_fd_ = -1;
  }
  if (conn_) {
    pq_->finish(conn_);
    conn_ = nullptr;
  }
}

}  // namespace pq
