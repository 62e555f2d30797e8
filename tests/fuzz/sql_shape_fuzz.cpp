// Fuzzes the SQL shape scanner (cache/classify.h shape_of) and, where the scan
// says the parse tree is shallow enough, libpg-query through classify_statement.
//
// The input is a SQL text. shape_of must not crash or run away (libFuzzer's
// -timeout catches loops); a non-empty shape is never longer than the text plus
// the "''" of masked strings. When the depth bound is within kMaxParseDepth and
// the text is short, classify_statement must not crash either (libpg-query
// recurses per level without a check: the depth bound is what keeps it safe).
//
// Literal invariance: for a text without quotes, dollar signs, backslashes or
// comments (where digits may sit in something shape_of keeps), every run of
// digits that starts a number (not preceded by an identifier character) is
// replaced by "7"; the shape and depth must not change, and neither may the
// classification (kind, effect kinds and names). A run longer than 9 digits
// only keeps the depth: an integer past int4 lexes as a numeric constant, which
// some rules reject, so shape_of keys such a text on itself (it has no shape),
// while its replacement has one.
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cache/classify.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

constexpr size_t kMaxClassify = 4096;

// As shape_of's scanner counts identifier characters.
bool ident_char(unsigned char ch) { return std::isalnum(ch) || ch == '_' || ch == '$' || ch >= 0x80; }

using Summary = std::pair<cache::Classification::Kind, std::vector<std::pair<cache::SessionEffect::Kind, std::string>>>;
Summary summary(std::string_view sql) {
  cache::Classification c = cache::classify_statement(sql, false);
  Summary s{c.kind, {}};
  for (const cache::SessionEffect& e : c.effects) s.second.emplace_back(e.kind, e.name);
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view sql(reinterpret_cast<const char*>(data), size);
  size_t depth = 0;
  const std::string shape = cache::shape_of(sql, depth);
  FUZZ_CHECK(depth <= size + 1);
  if (!shape.empty()) FUZZ_CHECK(shape.size() <= 2 * size);

  const bool parse = depth <= cache::kMaxParseDepth && size < kMaxClassify;
  if (parse) (void)cache::classify_statement(sql, false);

  // Digits replaced where shape_of masks them.
  if (sql.find_first_of("'\"$\\") != std::string_view::npos || sql.find("--") != std::string_view::npos ||
      sql.find("/*") != std::string_view::npos)
    return 0;
  std::string replaced;
  replaced.reserve(size);
  bool long_run = false, any = false;
  for (size_t i = 0; i < size;) {
    const unsigned char ch = uint8_t(sql[i]);
    if (std::isdigit(ch) && (i == 0 || !ident_char(uint8_t(sql[i - 1])))) {
      size_t start = i;
      while (i < size && std::isdigit(uint8_t(sql[i]))) i++;
      long_run |= i - start > 9;
      any = true;
      replaced.push_back('7');
      continue;
    }
    replaced.push_back(char(ch));
    i++;
  }
  if (!any) return 0;
  size_t depth2 = 0;
  const std::string shape2 = cache::shape_of(replaced, depth2);
  FUZZ_CHECK(depth2 == depth);
  if (long_run) return 0;
  FUZZ_CHECK(shape2 == shape);
  if (parse && !shape.empty()) FUZZ_CHECK(summary(sql) == summary(replaced));
  return 0;
}
