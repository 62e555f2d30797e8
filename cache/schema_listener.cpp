#include "cache/schema_listener.h"

#include "cache/libpq.h"
#include "conf/log.h"

namespace cache {
namespace {

void free_handle(uv_handle_t* h) {
  if (h->type == UV_POLL) delete reinterpret_cast<uv_poll_t*>(h);
  else delete reinterpret_cast<uv_timer_t*>(h);
}

std::string quote_ident(const std::string& s) {
  std::string q = "\"";
  for (char c : s) q.append(c == '"' ? "\"\"" : std::string(1, c));
  return q + "\"";
}

}  // namespace

SchemaListener::SchemaListener(uv_loop_t* loop, SchemaVersion& version) : loop_(loop), version_(version) {}

SchemaListener::~SchemaListener() { stop(); }

void SchemaListener::configure(const std::string& channel, const std::string& conninfo) {
  if (channel == channel_ && conninfo == conninfo_ && state_ != State::Stopped) return;
  stop();
  channel_ = channel;
  conninfo_ = conninfo;
  if (channel_.empty()) return;
  connect();
}

void SchemaListener::stop() {
  drop_connection();
  if (retry_) {
    uv_timer_stop(retry_);
    uv_close(reinterpret_cast<uv_handle_t*>(retry_), free_handle);
    retry_ = nullptr;
  }
  state_ = State::Stopped;
}

void SchemaListener::drop_connection() {
  if (poll_) {
    uv_poll_stop(poll_);
    uv_close(reinterpret_cast<uv_handle_t*>(poll_), free_handle);
    poll_ = nullptr;
    poll_fd_ = -1;
  }
  if (conn_) {
    pq_->finish(conn_);
    conn_ = nullptr;
  }
}

void SchemaListener::connect() {
  state_ = State::Connecting;
  if (!pq_ && !(pq_ = pq::api())) return fail("libpq is not available");
  conn_ = pq_->connectStart(conninfo_.c_str());
  if (!conn_ || pq_->status(conn_) == CONNECTION_BAD) return fail("could not start connection");
  advance_connect();
}

// Follows PQconnectPoll's wishes; the socket may change between steps.
void SchemaListener::advance_connect() {
  switch (pq_->connectPoll(conn_)) {
    case PGRES_POLLING_READING: return watch(UV_READABLE);
    case PGRES_POLLING_WRITING: return watch(UV_WRITABLE);
    case PGRES_POLLING_OK: break;
    default: return fail("connection failed");
  }
  if (pq_->setnonblocking(conn_, 1) != 0) return fail("could not set non-blocking mode");
  std::string sql = "LISTEN " + quote_ident(channel_);
  if (!pq_->sendQuery(conn_, sql.c_str())) return fail("could not send LISTEN");
  state_ = State::Subscribing;
  if (pq_->flush(conn_) != 0) return fail("could not send LISTEN");
  watch(UV_READABLE);
}

void SchemaListener::watch(int events) {
  int fd = pq_->socket(conn_);
  if (fd < 0) return fail("no socket");
  if (poll_ && fd != poll_fd_) {
    uv_poll_stop(poll_);
    uv_close(reinterpret_cast<uv_handle_t*>(poll_), free_handle);
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
  uv_poll_start(poll_, events, [](uv_poll_t* p, int status, int ev) {
    auto* self = static_cast<SchemaListener*>(p->data);
    if (status < 0) return self->fail("socket error");
    self->on_socket(ev);
  });
}

void SchemaListener::on_socket(int) {
  if (state_ == State::Connecting) return advance_connect();
  consume();
}

// Reads what arrived: the LISTEN's result, then notifications.
void SchemaListener::consume() {
  if (!pq_->consumeInput(conn_)) return fail("connection lost");
  while (!pq_->isBusy(conn_)) {
    PGresult* r = pq_->getResult(conn_);
    if (!r) break;
    bool ok = pq_->resultStatus(r) == PGRES_COMMAND_OK;
    std::string err = ok ? "" : pq_->resultErrorMessage(r);
    pq_->clear(r);
    if (!ok) return fail(err.c_str());
    if (state_ == State::Subscribing) {
      state_ = State::Listening;
      LOG_INFO("schema version: listening for NOTIFY on channel \"%s\"", channel_.c_str());
      if (missed_) version_.bump("reconnected to the schema notification channel");
      missed_ = false;
    }
  }
  while (PGnotify* n = pq_->notifies(conn_)) {
    version_.bump("NOTIFY on the schema channel");
    pq_->freemem(n);
  }
}

void SchemaListener::fail(const char* what) {
  std::string detail = conn_ ? pq_->errorMessage(conn_) : "";
  while (!detail.empty() && (detail.back() == '\n' || detail.back() == ' ')) detail.pop_back();
  LOG_WARN("schema notification channel \"%s\": %s%s%s; retrying in %d s", channel_.c_str(), what,
           detail.empty() ? "" : ": ", detail.c_str(), kRetryMs / 1000);
  drop_connection();
  missed_ = true;
  state_ = State::Waiting;
  if (!retry_) {
    retry_ = new uv_timer_t;
    uv_timer_init(loop_, retry_);
    retry_->data = this;
    uv_unref(reinterpret_cast<uv_handle_t*>(retry_));   // never keeps the loop alive on its own
  }
  uv_timer_start(retry_, [](uv_timer_t* t) { static_cast<SchemaListener*>(t->data)->connect(); }, kRetryMs, 0);
}

}  // namespace cache
