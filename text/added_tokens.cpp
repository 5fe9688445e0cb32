#include "text/added_tokens.h"

#include <algorithm>
#include <set>

#include "core/error.h"
#include "text/unicode.h"

namespace slm::text {

void AddedTokenMatcher::Build(std::vector<Entry> entries) {
  entries_ = std::move(entries);
  by_pattern_.clear();
  std::fill(std::begin(first_byte_), std::end(first_byte_), false);
  std::set<size_t, std::greater<size_t>> lengths;
  for (size_t i = 0; i < entries_.size(); ++i) {
    const std::string& pattern = entries_[i].pattern;
    Check(!pattern.empty(), "added token ", entries_[i].id, " has an empty pattern");
    Check(by_pattern_.emplace(pattern, i).second, "added token '", pattern, "' is listed twice");
    lengths.insert(pattern.size());
    first_byte_[static_cast<unsigned char>(pattern[0])] = true;
  }
  lengths_.assign(lengths.begin(), lengths.end());
}

const AddedTokenMatcher::Entry* AddedTokenMatcher::LongestAt(std::string_view text,
                                                             size_t pos) const {
  for (const size_t length : lengths_) {
    if (pos + length > text.size()) continue;
    auto it = by_pattern_.find(text.substr(pos, length));
    if (it != by_pattern_.end()) return &entries_[it->second];
  }
  return nullptr;
}

bool AddedTokenMatcher::IsSingleWord(std::string_view text, size_t start, size_t stop) {
  size_t length = 0;
  if (start > 0 && unicode::IsWordChar(unicode::DecodeBefore(text, start, &length))) return false;
  if (stop < text.size() && unicode::IsWordChar(unicode::DecodeAt(text, stop, &length))) {
    return false;
  }
  return true;
}

size_t AddedTokenMatcher::WhitespaceRunBefore(std::string_view text, size_t end) {
  while (end > 0) {
    size_t length = 0;
    if (!unicode::IsWhiteSpace(unicode::DecodeBefore(text, end, &length))) break;
    end -= length;
  }
  return end;
}

size_t AddedTokenMatcher::WhitespaceRunAfter(std::string_view text, size_t start) {
  while (start < text.size()) {
    size_t length = 0;
    if (!unicode::IsWhiteSpace(unicode::DecodeAt(text, start, &length))) break;
    start += length;
  }
  return start;
}

}  // namespace slm::text
