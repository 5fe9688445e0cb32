#include "text/scoring_words.h"

#include <cctype>

#include "core/strings.h"

namespace slm::text {

std::string NormalizeForScoring(const std::string& text) {
  std::string mapped;
  mapped.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (std::isalnum(c)) {
      mapped += static_cast<char>(std::tolower(c));
    } else if (c == '\'') {
      // Keep apostrophes only between two word characters ("don't"), not as quotes.
      const bool inside = i > 0 && i + 1 < text.size() &&
                          std::isalnum(static_cast<unsigned char>(text[i - 1])) &&
                          std::isalnum(static_cast<unsigned char>(text[i + 1]));
      mapped += inside ? '\'' : ' ';
    } else if (c >= 0x80) {
      mapped += static_cast<char>(c);  // non-ASCII letters are kept verbatim
    } else {
      mapped += ' ';
    }
  }
  return Join(Split(mapped, " \t\r\n"), " ");
}

std::vector<std::string> ScoringWords(const std::string& text) {
  return Split(NormalizeForScoring(text), " ");
}

}  // namespace slm::text
