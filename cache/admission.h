// The result cache's admission filter (cache.admission: repeated): TinyLFU's
// doorkeeper, a Bloom filter of the keys that missed lately. An answer is
// stored only when its key missed before, so a key read once (reads spread
// over a table far larger than the cache) costs no capture, no store and no
// eviction of something that is read again.
//
// Bounded: 2^20 bits (128 KB), two hashes, cleared after kMaxKeys remembered
// keys, so "before" means among roughly the last 100,000 distinct keys that
// missed. A false positive (about 3% when full) only stores a key on its first
// miss, as cache.admission: always does.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

namespace cache {

class Doorkeeper {
 public:
  static constexpr size_t kBits = size_t(1) << 20;
  static constexpr size_t kMaxKeys = kBits / 10;

  // True if key missed before (since the last clear); otherwise remembers it.
  bool missed_before(std::string_view key) {
    const uint64_t h = std::hash<std::string_view>{}(key);
    const size_t a = h & (kBits - 1), b = (h * 0x9E3779B97F4A7C15ull >> 40) & (kBits - 1);
    if (test(a) && test(b)) return true;
    if (keys_++ >= kMaxKeys) {
      std::fill(bits_.begin(), bits_.end(), 0);
      keys_ = 1;
    }
    set(a);
    set(b);
    return false;
  }

 private:
  bool test(size_t i) const { return bits_[i / 64] >> (i % 64) & 1; }
  void set(size_t i) { bits_[i / 64] |= uint64_t(1) << (i % 64); }

  std::vector<uint64_t> bits_ = std::vector<uint64_t>(kBits / 64);
  size_t keys_ = 0;
};

}  // namespace cache
