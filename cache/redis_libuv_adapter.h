// Attaches a hiredis async context to a libuv loop: a local version of
// <hiredis/adapters/libuv.h> (hiredis 0.14.1) with one fix. When a socket
// fails (a refused connect, a reset) libuv reports the error as a negative
// status with no events and stops watching; the stock adapter then returns
// without telling hiredis, so a failed connect is never reported and the
// context waits forever. Here hiredis is handed the events it asked for, its
// read or write meets the error and it tears the context down as usual.
#pragma once
#include <hiredis/async.h>
#include <uv.h>

namespace cache::redis_uv {

struct Watch {
  redisAsyncContext* ac;   // null once hiredis has cleaned up: the context is gone
  uv_poll_t poll;
  int events = 0;          // what hiredis wants to hear about
};

inline void on_poll(uv_poll_t* poll, int status, int events) {
  auto* w = static_cast<Watch*>(poll->data);
  if (status < 0) events = w->events;
  // Either call may end with the context freed (cleanup below clears w->ac).
  if (w->ac && (events & UV_READABLE)) redisAsyncHandleRead(w->ac);
  if (w->ac && (events & UV_WRITABLE)) redisAsyncHandleWrite(w->ac);
}

inline void watch(Watch* w, int events) {
  w->events = events;
  if (events) uv_poll_start(&w->poll, events, on_poll);
  else uv_poll_stop(&w->poll);
}

inline void add_read(void* p) { auto* w = static_cast<Watch*>(p); watch(w, w->events | UV_READABLE); }
inline void del_read(void* p) { auto* w = static_cast<Watch*>(p); watch(w, w->events & ~UV_READABLE); }
inline void add_write(void* p) { auto* w = static_cast<Watch*>(p); watch(w, w->events | UV_WRITABLE); }
inline void del_write(void* p) { auto* w = static_cast<Watch*>(p); watch(w, w->events & ~UV_WRITABLE); }

// Called by hiredis while it frees the context; the Watch outlives it until libuv has closed the poll.
inline void cleanup(void* p) {
  auto* w = static_cast<Watch*>(p);
  w->ac = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&w->poll), [](uv_handle_t* h) { delete static_cast<Watch*>(h->data); });
}

// False if the socket cannot be watched; the caller still owns (and frees) ac.
inline bool attach(redisAsyncContext* ac, uv_loop_t* loop) {
  if (ac->ev.data) return false;
  auto* w = new Watch{ac, {}, 0};
  if (uv_poll_init_socket(loop, &w->poll, ac->c.fd) != 0) {
    delete w;
    return false;
  }
  w->poll.data = w;
  ac->ev.data = w;
  ac->ev.addRead = add_read;
  ac->ev.delRead = del_read;
  ac->ev.addWrite = add_write;
  ac->ev.delWrite = del_write;
  ac->ev.cleanup = cleanup;
  return true;
}

}  // namespace cache::redis_uv
