// Patterns and split behaviours of Hugging Face tokenizer.json components (Split and Metaspace
// pre-tokenizers, Replace normalizer and decoder), with `tokenizers`' semantics: find_matches
// cuts the text into consecutive pieces flagged as match or not, and a SplitDelimiterBehavior
// decides what becomes of the matches.
//
// Thread-safety: a Pattern is immutable; FindMatches may be called concurrently.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "text/hf_json.h"
#include "text/regex.h"

namespace slm::text::hf {

struct Match {
  size_t start = 0;
  size_t end = 0;
  bool is_match = false;
};

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// "Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous".
SplitBehavior ParseSplitBehavior(const json& node, const std::string& path, const JsonContext& ctx);

class Pattern {
 public:
  // {"String": "..."} (a literal, non-empty) or {"Regex": "..."}.
  static Pattern Parse(const json& node, const std::string& path, const JsonContext& ctx);
  static Pattern Literal(std::string text);

  // Consecutive pieces covering `text` (valid UTF-8), matches flagged; nothing for "".
  void FindMatches(std::string_view text, std::vector<Match>& out) const;

 private:
  std::string literal_;
  std::shared_ptr<const Regex> regex_;  // null for a literal
};

// Each character for which predicate(c) holds is a match of its own (tokenizers' char patterns).
template <typename Predicate>
void FindCharMatches(std::string_view text, Predicate&& predicate, std::vector<Match>& out);

// The pieces [start, end) kept by `behavior`, after flipping the flags when `invert`; empty
// pieces are dropped.
void ApplySplitBehavior(const std::vector<Match>& matches, SplitBehavior behavior, bool invert,
                        std::vector<std::pair<size_t, size_t>>& out);

}  // namespace slm::text::hf

#include "text/unicode.h"

namespace slm::text::hf {

template <typename Predicate>
void FindCharMatches(std::string_view text, Predicate&& predicate, std::vector<Match>& out) {
  size_t last = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t length = 0;
    const char32_t c = unicode::DecodeAt(text, pos, &length);
    if (predicate(c)) {
      if (last < pos) out.push_back({last, pos, false});
      out.push_back({pos, pos + length, true});
      last = pos + length;
    }
    pos += length;
  }
  if (last < text.size()) out.push_back({last, text.size(), false});
}

}  // namespace slm::text::hf
