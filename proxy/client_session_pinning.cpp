// ClientSession, transaction mode: pinning to the server that holds this
// client's session state (proxy/pinning.h; the rule table is in
// docs/architecture.md, "Pinning").
#include "conf/log.h"
#include "proxy/client_session.h"
#include "proxy/proxy.h"
#include "proxy/server_conn.h"

namespace proxy {

uint8_t ClientSession::pins_of(uint8_t kinds) const {
  return pool_entry_ ? kinds & pool_entry_->pin_on : 0;
}

std::string ClientSession::pin_refusal(uint8_t kinds, std::string_view what) const {
  if (kinds == 0 || pin_.pinned() || pool_entry_->pinned < pool_entry_->max_pinned) return {};
  return "cannot keep session state in transaction pooling mode: " + std::string(what) + " (" + pin_names(kinds) +
         ") would pin this client to its server, and max_pinned_per_pool (" + std::to_string(pool_entry_->max_pinned) +
         ") clients of this pool are pinned already";
}

void ClientSession::add_pin(uint8_t kinds, std::string_view what) {
  if (kinds == 0) return;
  if (!pin_.pinned()) {
    pin_.since = pool::Clock::now();
    pin_.logged = false;
    pin_.first = what;
    pool_entry_->pinned++;
    pool_entry_->pins_by_kind[pin_names(kinds & uint8_t(-kinds))]++;   // the lowest kind names it
  }
  // A new kind: ask the server when the transaction ends (the statement may fail,
  // a temp table may be ON COMMIT DROP, what DO/CALL left is not known from the text).
  if (kinds & uint8_t(~pin_.kinds)) pin_.recheck = true;
  pin_.kinds |= kinds;
  server_->note_session_state();   // reset before anyone else gets it
}

void ClientSession::drop_pin(uint8_t kinds) {
  if (!pin_.pinned()) return;
  pin_.kinds &= uint8_t(~kinds);
  if (pin_.pinned()) return;
  pool_entry_->pinned--;
  pool_entry_->pin_seconds->Observe(std::chrono::duration<double>(pool::Clock::now() - pin_.since).count());
  pin_ = Pin{};
}

bool ClientSession::release_at_transaction_end() {
  if (!pin_.pinned()) return true;
  if (pin_.recheck) check_pin_state();   // the server is linked and clean here, never mid-check
  return false;
}

// Asks the server which state is left; unpins the kinds that are gone, and if
// none is left the server goes back to the pool (reset first: see add_pin).
void ClientSession::check_pin_state() {
  pin_.recheck = false;
  server_->run_internal(state_query(!plan_cache_), [this](const pg::ErrorInfo* err) {
    if (!err) {
      const std::vector<std::string>& row = server_->internal_row();
      auto followed = [this](std::string_view name) {
        return tracked_index(name) >= 0 || settings_.has(name);
      };
      drop_pin(pin_.kinds & uint8_t(~kinds_left(pin_.kinds, row.data(), row.size(), followed)));
    } else {
      LOG_WARN("client %u: asking the server which session state is left failed: %s; it stays pinned",
               cancel_pid_, err->message.c_str());
    }
    if (!pin_.pinned() && server_->clean()) {
      ServerConn* s = server_;
      server_ = nullptr;
      s->unlink();
      s->release_to_pool();
    }
    process_input();
  }, proxy_.config().server_reset_timeout);
}

// A client pinned for pinned_log_after is logged once, with what pinned it.
void ClientSession::pin_log(pool::Time now) {
  const conf::Duration after = proxy_.config().pinned_log_after;
  if (!pin_.pinned() || pin_.logged || after.count() <= 0 || now - pin_.since < after) return;
  pin_.logged = true;
  LOG_INFO("client %u (%s@%s, application_name '%s') pinned to its server for %llds by %s (%s)", cancel_pid_,
           user_.c_str(), database_.c_str(), application_name().c_str(),
           static_cast<long long>(std::chrono::duration_cast<std::chrono::seconds>(now - pin_.since).count()),
           pin_.first.c_str(), pin_names(pin_.kinds).c_str());
}

}  // namespace proxy
