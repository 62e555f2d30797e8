// Fuzzes pg::frame_frontend (proxy/decoder.h) on a client's message stream.
//
// The first input byte picks the inspect limit (64 KiB as configured, or a small
// one so that the over-limit paths run on short inputs: the function takes any
// limit) and how the rest is cut; the rest is the stream. A driver buffers it as
// the proxy does (append, frame the head, consume a Ready message when whole; a
// Ready message that is not whole goes out as far as it is here and the rest is
// skipped as it arrives) and records each decision. The stream is fed whole, cut
// at one point, in fixed-size chunks and (when short) byte by byte; the decisions
// must agree: the same, except that a streaming message (Bind, FunctionCall,
// CopyData) cut before its end goes out uninspected, and a whole one that was
// Invalid by its body may stream instead (then the runs are compared up to it).
// On every call: the Frame matches the header, inspect implies whole and Ready,
// and valid_frontend_body agrees with Ready+inspect for whole messages within
// the limit.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "proxy/decoder.h"
#include "proxy/protocol.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using pg::Frame;
using pg::FrameStatus;

constexpr size_t kLimits[8] = {64 * 1024, 16, 17, 32, 64, 100, 1024, 4096};

bool streams(char t) { return t == 'B' || t == 'F' || t == 'd'; }

struct Decision {
  FrameStatus status;
  char type;
  uint32_t len;
  bool inspect, whole;
};

struct Driver {
  size_t limit;
  std::vector<uint8_t> buf;   // buf[head..] is buffered; consumed bytes are dropped lazily
  size_t head = 0;
  size_t skip = 0;
  bool failed = false;
  std::vector<Decision> decisions;

  explicit Driver(size_t l) : limit(l) {}

  // One call of frame_frontend with the invariants of its answer.
  FrameStatus frame(Frame& f) {
    const uint8_t* p = buf.data() + head;
    const size_t avail = buf.size() - head;
    std::string err;
    FrameStatus st = pg::frame_frontend(p, avail, limit, f, err);
    if (avail < pg::kHeaderLen) {
      FUZZ_CHECK(st == FrameStatus::Partial);
      return st;
    }
    FUZZ_CHECK(f.type == char(p[0]));
    FUZZ_CHECK(f.len == pg::get_u32(p + 1));
    FUZZ_CHECK(f.total == size_t(f.len) + 1);
    FUZZ_CHECK(f.whole == (avail >= f.total));
    if (f.inspect) FUZZ_CHECK(f.whole && st == FrameStatus::Ready && f.total <= limit);
    if (st == FrameStatus::Invalid) FUZZ_CHECK(!err.empty());
    if (st == FrameStatus::Partial) FUZZ_CHECK(!f.whole);
    if (st == FrameStatus::Ready && !f.inspect) FUZZ_CHECK(!f.whole || f.total > limit);
    if (st == FrameStatus::Ready && !f.whole && f.total <= limit) FUZZ_CHECK(streams(f.type));
    if (f.whole && f.len >= 4 && f.len <= pg::kMaxMessageLen && f.total <= limit) {
      bool valid = pg::valid_frontend_body(f.type, p + pg::kHeaderLen, f.len - 4);
      FUZZ_CHECK(valid == (st == FrameStatus::Ready && f.inspect));
    }
    return st;
  }

  void feed(const uint8_t* p, size_t n) {
    if (failed) return;
    if (head == buf.size()) {
      buf.clear();
      head = 0;
    }
    buf.insert(buf.end(), p, p + n);
    for (;;) {
      if (skip > 0) {
        size_t k = skip < buffered() ? skip : buffered();
        head += k;
        skip -= k;
        if (skip > 0) return;
      }
      Frame f;
      FrameStatus st = frame(f);
      if (st == FrameStatus::Partial) return;
      decisions.push_back({st, f.type, f.len, f.inspect, f.whole});
      if (st == FrameStatus::Invalid) {
        failed = true;
        return;
      }
      if (f.whole) {
        head += f.total;
      } else {
        skip = f.total - buffered();
        head = buf.size();
      }
    }
  }
  size_t buffered() const { return buf.size() - head; }
};

void compare(const Driver& whole, const Driver& split) {
  const size_t n = whole.decisions.size() < split.decisions.size() ? whole.decisions.size() : split.decisions.size();
  for (size_t i = 0; i < n; i++) {
    const Decision& w = whole.decisions[i];
    const Decision& s = split.decisions[i];
    FUZZ_CHECK(s.type == w.type && s.len == w.len);
    if (s.status == w.status && s.inspect == w.inspect) continue;
    if (s.status == FrameStatus::Ready && !s.whole && streams(s.type) && s.len + size_t(1) <= whole.limit) {
      // Streamed before its end: the whole run read it (inspected, or Invalid by its body).
      FUZZ_CHECK(!s.inspect);
      FUZZ_CHECK(w.status == FrameStatus::Invalid || (w.status == FrameStatus::Ready && w.inspect));
      if (w.status == FrameStatus::Invalid) return;   // the split run went on past it
      continue;
    }
    FUZZ_CHECK(false);   // any other difference
  }
  FUZZ_CHECK(whole.decisions.size() == split.decisions.size());
  FUZZ_CHECK(whole.failed == split.failed);
  if (!whole.failed) FUZZ_CHECK(whole.buffered() == split.buffered() && whole.skip == split.skip);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t control = data[0];
  const uint8_t* p = data + 1;
  const size_t n = size - 1;
  const size_t limit = kLimits[control & 7];
  const size_t cut = (control >> 3) + 1;   // 1..32

  Driver whole(limit);
  whole.feed(p, n);

  Driver at(limit);   // cut at one point
  const size_t point = n * (cut - 1) / 31;
  at.feed(p, point);
  at.feed(p + point, n - point);
  compare(whole, at);

  Driver chunks(limit);   // in chunks of `cut` bytes
  for (size_t i = 0; i < n; i += cut) chunks.feed(p + i, n - i < cut ? n - i : cut);
  compare(whole, chunks);

  if (n <= 512) {
    Driver bytes(limit);
    for (size_t i = 0; i < n; i++) bytes.feed(p + i, 1);
    compare(whole, bytes);
  }
  return 0;
}
