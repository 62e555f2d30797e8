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

bool ClientSession::pin_full(uint8_t kinds) const {
  return kinds != 0 && !pin_.pinned() && pool_entry_->pinned >= pool_entry_->max_pinned;
}

// Waits only where nothing is lost by giving the server back: the statement is
// the first of its transaction and nothing is in flight. Inside a transaction,
// or behind pipelined messages, it is refused at once.
bool ClientSession::wait_for_pin_slot() {
  if (pin_wait_.at != in_consumed()) pin_wait_ = PinWait{};   // what waited before is gone (answered, refused)
  if (pin_wait_.end != PinWait::End::None || !server_->idle_protocol() || !server_->clean() ||
      server_->tx_status() != 'I')
    return false;
  if (pin_wait_.since == pool::Time{}) {
    pin_wait_.since = pool::Clock::now();
    pin_wait_.at = in_consumed();
    pool_entry_->pin_waiters.push_back(cancel_pid_);
  } else {
    pool_entry_->pin_waiters.push_front(cancel_pid_);   // woken, and another client took the slot first
  }
  pin_wait_.queued = true;
  return true;
}

bool ClientSession::pin_slot_free() {
  if (!pin_wait_.queued || closing()) return false;
  pin_wait_.queued = false;
  process_input();
  return true;
}

// query_wait_timeout passed, or a CancelRequest: the statement goes on to its refusal.
void ClientSession::end_pin_wait(PinWait::End end) {
  if (!pin_wait_.queued) return;
  std::erase(pool_entry_->pin_waiters, cancel_pid_);
  pin_wait_.queued = false;
  pin_wait_.end = end;
  process_input();
}

std::optional<pg::ErrorInfo> ClientSession::pin_refusal(uint8_t kinds, std::string_view what) {
  if (!pin_full(kinds)) return std::nullopt;
  if (pin_wait_.at != in_consumed()) pin_wait_ = PinWait{};
  pg::ErrorInfo e{"ERROR", "53300",
                  "cannot keep session state in transaction pooling mode: " + std::string(what) + " (" +
                      pin_names(kinds) + ") would pin this client to its server, and max_pinned_per_pool (" +
                      std::to_string(pool_entry_->max_pinned) + ") clients of this pool are pinned already",
                  ""};
  switch (pin_wait_.end) {
    case PinWait::End::None:
      e.message += " (it cannot wait inside a transaction block or a pipeline)";
      break;
    case PinWait::End::Expired:
      e.message += "; none unpinned within query_wait_timeout (" +
                   std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                      proxy_.config().query_wait_timeout).count()) + " ms)";
      break;
    case PinWait::End::Cancelled:
      e.code = "57014";
      e.message = "canceling statement due to user request (it was waiting for a pinned client to unpin: " +
                  e.message + ")";
      break;
  }
  pin_wait_ = PinWait{};
  return e;
}

void ClientSession::add_pin(uint8_t kinds, std::string_view what) {
  pin_wait_ = PinWait{};   // it waited, if at all, and goes on now
  if (kinds == 0) return;
  if (!pin_.pinned()) {
    pin_.since = pool::Clock::now();
    pin_.logged = false;
    pin_.first = std::make_unique<std::string>(what);
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
  proxy_.pin_slot_freed(*pool_entry_);
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
      std::string addr;
      LOG_WARN(log_fields(addr), "asking the server which session state is left failed: %s; the client stays pinned",
               err->message.c_str());
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
  std::string addr;
  logx::Fields f = log_fields(addr);
  f.duration_ms = std::chrono::duration<double, std::milli>(now - pin_.since).count();
  LOG_INFO(f, "client pinned to its server for %llds by %s (%s)",
           static_cast<long long>(std::chrono::duration_cast<std::chrono::seconds>(now - pin_.since).count()),
           pin_.first->c_str(), pin_names(pin_.kinds).c_str());
}

}  // namespace proxy
