// The classifications the proxy reads for every simple Query and Parse text,
// parsed once per shape (cache/classify.h shape_of): texts that differ only in
// their literals share one entry. Bounded in bytes; when full it starts over.
// Long texts are parsed on libuv's thread pool, never on the event loop.
#pragma once
#include <uv.h>

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "cache/classify.h"

namespace cache {

using ClassificationPtr = std::shared_ptr<const Classification>;

class StatementCache {
 public:
  // Texts longer than this are parsed off the loop (about 8 ms of parsing).
  static constexpr size_t kParseOnLoop = 16 * 1024;

  // fingerprints: also compute pg_query fingerprints (a second parse; the result cache's rules need them).
  explicit StatementCache(size_t max_bytes = 8 << 20, bool fingerprints = false)
      : max_bytes_(max_bytes), fingerprints_(fingerprints) {}
  // The classification of sql if it is at hand: its shape was seen before, or
  // the text is short enough to parse now. Null for a long text not seen before:
  // classify_async() parses it. Set effects carry the values of the text itself,
  // so a text with one is classified on its own: a long one is parsed off the loop
  // once its shape is known, and kept under the text itself.
  ClassificationPtr classify_now(std::string_view sql);
  // Parses sql on the thread pool; `done` runs on the loop once classify_now(sql) has it.
  void classify_async(uv_loop_t* loop, std::string sql, std::function<void()> done);
  size_t entries() const { return map_.size(); }

 private:
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  struct Work;
  // Parses at once on the thread pool (libuv has 4 threads, shared with DNS and
  // lockd's file scans); more wait in pending_, in order.
  static constexpr size_t kMaxParsing = 2;
  void start(Work* w);
  void remember(std::string key, ClassificationPtr c);
  // What one entry costs; texts whose entry would not be kept are not parsed at all.
  static size_t cost(size_t key_size) { return key_size + sizeof(Classification) + 64; }
  bool keepable(size_t key_size) const { return cost(key_size) <= max_bytes_ / 4; }

  std::unordered_map<std::string, ClassificationPtr, Hash, std::equal_to<>> map_;
  size_t bytes_ = 0, max_bytes_;
  bool fingerprints_;
  size_t parsing_ = 0;
  std::deque<Work*> pending_;
};

}  // namespace cache
