// The one text format in which spoken-dictionary questions and answers meet the backbone: the
// pretraining lines (datagen/dictionary.h selects the entries, train/lm_pretrain.h writes them),
// typed evaluation and the server's transcript-conditioned answers all use it, so that the three
// agree. Thread-safety: pure functions.
#pragma once

#include <string>

namespace slm::text {

// The prompt a question becomes for the backbone: "what is a dog?".
std::string QaPromptText(const std::string& question);
// A pretraining line: QaPromptText(question) + " " + answer.
std::string QaTrainingText(const std::string& question, const std::string& answer);
// The form answers are compared in (normalized exact match): ASCII lower case, whitespace collapsed
// and trimmed, final "." / ";" / "," dropped.
std::string NormalizeAnswer(const std::string& text);

}  // namespace slm::text
