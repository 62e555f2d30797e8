#include "cache/statement_cache.h"

#include <algorithm>

namespace cache {
namespace {

bool has_set(const Classification& c) {
  return std::any_of(c.effects.begin(), c.effects.end(), [](const SessionEffect& e) { return e.kind == SessionEffect::Kind::Set; });
}

}  // namespace

struct StatementCache::Work {
  uv_work_t req;
  uv_loop_t* loop;
  StatementCache* self;
  std::string sql, key;
  Classification result;
  std::function<void()> done;
};

ClassificationPtr StatementCache::classify_now(std::string_view sql) {
  size_t depth = 0;
  std::string shape = shape_of(sql, depth);
  if (depth > kMaxParseDepth) {
    static const ClassificationPtr kTooDeep =
        std::make_shared<const Classification>(unclassified("too deeply nested to parse on the event loop"));
    return kTooDeep;
  }
  std::string_view key = shape.empty() ? sql : std::string_view(shape);
  ClassificationPtr c;
  if (auto it = map_.find(key); it != map_.end()) {
    c = it->second;
  } else if (!keepable(key.size())) {
    static const ClassificationPtr kTooLong = std::make_shared<const Classification>(unclassified("too long to classify"));
    return kTooLong;
  } else if (sql.size() > kParseOnLoop) {
    return nullptr;
  } else {
    // The shape itself, not the first text of it: what a literal decides (an
    // EXPLAIN option, set_config's third argument) is then judged on the masked
    // value, which the classifier reads the cautious way, for every text alike.
    c = std::make_shared<const Classification>(classify_statement(key, fingerprints_));
    remember(std::string(key), c);
  }
  if (shape.empty() || !has_set(*c)) return c;
  if (sql.size() <= kParseOnLoop) return std::make_shared<const Classification>(classify_statement(sql, fingerprints_));
  // A long text with SETs: the text itself, parsed off the loop (classify_async).
  if (auto it = map_.find(sql); it != map_.end()) return it->second;
  if (keepable(sql.size())) return nullptr;
  // Too long to keep: its values are unknown, so it pins like set_config() (until RESET ALL).
  static const ClassificationPtr kLongSet = [] {
    Classification u = unclassified("a SET in a text too long to classify");
    u.effects[0].pin = SessionEffect::Pin::Set;
    return std::make_shared<const Classification>(std::move(u));
  }();
  return kLongSet;
}

void StatementCache::classify_async(uv_loop_t* loop, std::string sql, std::function<void()> done) {
  auto* w = new Work{{}, loop, this, std::move(sql), {}, {}, std::move(done)};
  size_t depth = 0;
  w->key = shape_of(w->sql, depth);
  // Its shape is known and has SETs, whose values come from the text: parse the text.
  if (auto it = map_.find(w->key); w->key.empty() || (it != map_.end() && has_set(*it->second))) w->key = w->sql;
  w->req.data = w;
  if (parsing_ >= kMaxParsing) {
    pending_.push_back(w);
    return;
  }
  start(w);
}

void StatementCache::start(Work* w) {
  parsing_++;
  int rc = uv_queue_work(
      w->loop, &w->req, [](uv_work_t* req) {
        auto* w = static_cast<Work*>(req->data);
        w->result = classify_statement(w->key, w->self->fingerprints_);   // the shape; libpg-query keeps its state per thread
      },
      [](uv_work_t* req, int) {
        std::unique_ptr<Work> w(static_cast<Work*>(req->data));
        StatementCache* self = w->self;
        self->parsing_--;
        if (!self->pending_.empty()) {
          Work* next = self->pending_.front();
          self->pending_.pop_front();
          self->start(next);
        }
        self->remember(std::move(w->key), std::make_shared<const Classification>(std::move(w->result)));
        w->done();
      });
  if (rc != 0) {   // cannot happen with a valid loop; count the text as not understood
    parsing_--;
    std::unique_ptr<Work> owned(w);
    remember(std::move(owned->key), std::make_shared<const Classification>(unclassified("not parsed")));
    owned->done();
  }
}

void StatementCache::remember(std::string key, ClassificationPtr c) {
  if (!keepable(key.size())) return;
  if (bytes_ + cost(key.size()) > max_bytes_) {
    map_.clear();
    bytes_ = 0;
  }
  bytes_ += cost(key.size());
  map_.insert_or_assign(std::move(key), std::move(c));
}

}  // namespace cache
