#include "cache/schema_listener.h"

#include "conf/log.h"

namespace cache {

SchemaListener::SchemaListener(uv_loop_t* loop, SchemaVersion& version) : loop_(loop), version_(version) {}

SchemaListener::~SchemaListener() { stop(); }

void SchemaListener::configure(const std::string& channel, const std::string& conninfo) {
  if (channel == channel_ && conninfo == conninfo_ && session_) return;
  stop();
  channel_ = channel;
  conninfo_ = conninfo;
  if (channel_.empty()) return;
  session_ = std::make_unique<pq::Session>(loop_, "schema notification channel \"" + channel_ + "\"");
  session_->configure(conninfo_, {channel_});
  session_->on_notify(
      [this](const std::string&, const std::string&, int) { version_.bump("NOTIFY on the schema channel"); });
  session_->on_listening([this] {
    listening_ = true;
    LOG_INFO("schema version: listening for NOTIFY on channel \"%s\"", channel_.c_str());
    if (missed_) version_.bump("reconnected to the schema notification channel");
    missed_ = false;
  });
  session_->on_down([this](bool) {
    listening_ = false;
    missed_ = true;
    retry_later();
  });
  session_->connect_now();
}

void SchemaListener::retry_later() {
  LOG_WARN("schema notification channel \"%s\": retrying in %d s", channel_.c_str(), kRetryMs / 1000);
  if (!retry_) {
    retry_ = new uv_timer_t;
    uv_timer_init(loop_, retry_);
    retry_->data = this;
    uv_unref(reinterpret_cast<uv_handle_t*>(retry_));   // never keeps the loop alive on its own
  }
  uv_timer_start(retry_, [](uv_timer_t* t) {
    auto* self = static_cast<SchemaListener*>(t->data);
    if (self->session_) self->session_->connect_now();
  }, kRetryMs, 0);
}

void SchemaListener::stop() {
  if (session_) session_->stop();
  session_.reset();
  if (retry_) {
    uv_timer_stop(retry_);
    uv_close(reinterpret_cast<uv_handle_t*>(retry_), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    retry_ = nullptr;
  }
  listening_ = false;
}

}  // namespace cache
