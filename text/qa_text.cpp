#include "text/qa_text.h"

#include <cctype>

#include "core/strings.h"

namespace slm::text {

std::string QaPromptText(const std::string& question) { return Trim(question) + "?"; }

std::string QaTrainingText(const std::string& question, const std::string& answer) {
  return QaPromptText(question) + " " + Trim(answer);
}

std::string NormalizeAnswer(const std::string& text) {
  std::string out;
  for (const char raw : text) {
    const char c = static_cast<char>(std::tolower(static_cast<unsigned char>(raw)));
    if (std::isspace(static_cast<unsigned char>(c))) {
      if (!out.empty() && out.back() != ' ') out += ' ';
    } else {
      out += c;
    }
  }
  while (!out.empty() && (out.back() == ' ' || out.back() == '.' || out.back() == ';' || out.back() == ','))
    out.pop_back();
  return out;
}

}  // namespace slm::text
