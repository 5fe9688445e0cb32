// slm::text::AddedTokenMatcher: finds added tokens in text the way Hugging Face `tokenizers`
// (AddedVocabulary::find_matches) does: leftmost-longest matches without overlap, scanning on after
// each match; a `single_word` token matches only when neither neighbour character is a word
// character (Rust regex \w), otherwise the scan goes on after it; `lstrip` / `rstrip` widen the
// match over the whitespace (Unicode White_Space) on its left / right, the left side never reaching
// back into the previous match.
//
// Thread-safety: immutable after Build; Split may be called concurrently.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "text/tokenizer_model.h"

namespace slm::text {

class AddedTokenMatcher {
 public:
  struct Entry {
    std::string pattern;  // the text matched: the content, or its normalized form
    int64_t id = -1;
    bool single_word = false;
    bool lstrip = false;
    bool rstrip = false;
  };

  // Replaces the entries; patterns must be non-empty and distinct.
  void Build(std::vector<Entry> entries);
  bool Empty() const { return entries_.empty(); }

  // Splits `text` into consecutive pieces, calling on_piece(offset, length, id) for each, with
  // id = -1 for text between added tokens (never empty) and the token's id otherwise. The pieces
  // cover the text in order (an `lstrip`/`rstrip` piece includes the whitespace it takes).
  template <typename F>
  void Split(std::string_view text, F&& on_piece) const {
    if (entries_.empty()) {
      if (!text.empty()) on_piece(size_t{0}, text.size(), int64_t{-1});
      return;
    }
    size_t piece_start = 0;  // tokenizers' start_offset
    size_t pos = 0;
    while (pos < text.size()) {
      if (!first_byte_[static_cast<unsigned char>(text[pos])]) {
        ++pos;
        continue;
      }
      const Entry* entry = LongestAt(text, pos);
      if (entry == nullptr) {
        ++pos;
        continue;
      }
      size_t start = pos;
      size_t stop = pos + entry->pattern.size();
      pos = stop;
      if (entry->single_word && !IsSingleWord(text, start, stop)) continue;
      if (entry->lstrip) start = std::max(WhitespaceRunBefore(text, start), piece_start);
      if (entry->rstrip) stop = WhitespaceRunAfter(text, stop);
      if (piece_start < start) on_piece(piece_start, start - piece_start, int64_t{-1});
      on_piece(start, stop - start, entry->id);
      piece_start = stop;
    }
    if (piece_start < text.size()) on_piece(piece_start, text.size() - piece_start, int64_t{-1});
  }

 private:
  const Entry* LongestAt(std::string_view text, size_t pos) const;
  static bool IsSingleWord(std::string_view text, size_t start, size_t stop);
  // Start of the whitespace run that ends at `end`; end of the one that starts at `start`.
  static size_t WhitespaceRunBefore(std::string_view text, size_t end);
  static size_t WhitespaceRunAfter(std::string_view text, size_t start);

  std::vector<Entry> entries_;
  std::unordered_map<std::string_view, size_t> by_pattern_;  // views into entries_
  std::vector<size_t> lengths_;                              // distinct lengths, descending
  bool first_byte_[256] = {};
};

}  // namespace slm::text
