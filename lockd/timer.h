// One-shot heap timers on the loop whose data is the function they run (lock
// retries and heartbeats, migration-lock retries); close_timer frees both.
#pragma once
#include <uv.h>

#include <cstdint>
#include <functional>

namespace lockd {

using Fire = std::function<void()>;

inline uv_timer_t* make_timer(uv_loop_t* loop, Fire fire) {
  auto* t = new uv_timer_t;
  uv_timer_init(loop, t);
  t->data = new Fire(std::move(fire));
  return t;
}

inline void start_timer(uv_timer_t* t, int64_t ms) {
  uv_timer_start(t, [](uv_timer_t* h) { (*static_cast<Fire*>(h->data))(); }, uint64_t(ms), 0);
}

// Safe from inside the timer's own function: both are freed on a later loop turn.
inline void close_timer(uv_timer_t* t) {
  uv_timer_stop(t);
  uv_close(reinterpret_cast<uv_handle_t*>(t), [](uv_handle_t* h) {
    delete static_cast<Fire*>(h->data);
    delete reinterpret_cast<uv_timer_t*>(h);
  });
}

}  // namespace lockd
