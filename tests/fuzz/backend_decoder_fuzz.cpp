// Fuzzes pg::frame_backend (proxy/decoder.h) on a server's message stream.
//
// The first input byte picks how the rest is cut; the rest is the stream. A
// driver buffers it as the proxy does (append, frame the head, consume a Ready
// message when whole; a Ready message that is not whole goes out as far as it is
// here and the rest is skipped as it arrives) and records each decision. The
// stream is fed whole, cut at one point, in fixed-size chunks and (when short)
// byte by byte: the decisions must be the same (no server type that pgsidecar
// reads streams). On every call: the Frame matches the header, inspect implies
// whole and Ready, valid_backend_body agrees with Ready+inspect for the types
// pgsidecar reads (whole, within kMaxBackendInspect), and with Ready for the
// others.
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

// The server messages pgsidecar reads (see the table in proxy/decoder.cpp).
bool read_type(char t) { return t == 'Z' || t == 'K' || t == 'S' || t == 'E' || t == 'R'; }

struct Decision {
  FrameStatus status;
  char type;
  uint32_t len;
  bool inspect;
};

struct Driver {
  std::vector<uint8_t> buf;   // buf[head..] is buffered; consumed bytes are dropped lazily
  size_t head = 0;
  size_t skip = 0;
  bool failed = false;
  std::vector<Decision> decisions;

  FrameStatus frame(Frame& f) {
    const uint8_t* p = buf.data() + head;
    const size_t avail = buf.size() - head;
    std::string err;
    FrameStatus st = pg::frame_backend(p, avail, f, err);
    if (avail < pg::kHeaderLen) {
      FUZZ_CHECK(st == FrameStatus::Partial);
      return st;
    }
    FUZZ_CHECK(f.type == char(p[0]));
    FUZZ_CHECK(f.len == pg::get_u32(p + 1));
    FUZZ_CHECK(f.total == size_t(f.len) + 1);
    FUZZ_CHECK(f.whole == (avail >= f.total));
    if (f.inspect) FUZZ_CHECK(f.whole && st == FrameStatus::Ready && read_type(f.type) && f.total <= pg::kMaxBackendInspect);
    if (st == FrameStatus::Invalid) FUZZ_CHECK(!err.empty());
    if (st == FrameStatus::Partial) FUZZ_CHECK(!f.whole && read_type(f.type));
    if (st == FrameStatus::Ready && !f.inspect && read_type(f.type)) FUZZ_CHECK(f.type == 'E' && f.total > pg::kMaxBackendInspect);
    const bool len_ok = f.len >= 4 && f.len <= pg::kMaxMessageLen;
    if (f.whole && len_ok) {
      bool valid = pg::valid_backend_body(f.type, p + pg::kHeaderLen, f.len - 4);
      if (read_type(f.type)) {
        if (f.total <= pg::kMaxBackendInspect) FUZZ_CHECK(valid == (st == FrameStatus::Ready && f.inspect));
      } else {
        FUZZ_CHECK(valid == (st == FrameStatus::Ready));
      }
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
      decisions.push_back({st, f.type, f.len, f.inspect});
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
  FUZZ_CHECK(whole.decisions.size() == split.decisions.size());
  for (size_t i = 0; i < whole.decisions.size(); i++) {
    const Decision& w = whole.decisions[i];
    const Decision& s = split.decisions[i];
    FUZZ_CHECK(s.status == w.status && s.type == w.type && s.len == w.len && s.inspect == w.inspect);
  }
  FUZZ_CHECK(whole.failed == split.failed);
  if (!whole.failed) FUZZ_CHECK(whole.buffered() == split.buffered() && whole.skip == split.skip);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t control = data[0];
  const uint8_t* p = data + 1;
  const size_t n = size - 1;

  Driver whole;
  whole.feed(p, n);

  Driver at;   // cut at one point
  const size_t point = n * control / 255;
  at.feed(p, point);
  at.feed(p + point, n - point);
  compare(whole, at);

  const size_t cut = (control & 31) + 1;
  Driver chunks;
  for (size_t i = 0; i < n; i += cut) chunks.feed(p + i, n - i < cut ? n - i : cut);
  compare(whole, chunks);

  if (n <= 512) {
    Driver bytes;
    for (size_t i = 0; i < n; i++) bytes.feed(p + i, 1);
    compare(whole, bytes);
  }
  return 0;
}
