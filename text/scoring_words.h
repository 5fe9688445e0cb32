// The text normalisation that scoring applies to reference and hypothesis alike (train/metrics.h
// WER/CER) and that vocabulary selection counts words with (datagen/data_prep.h), so that casing
// and punctuation never count as errors and a "word" means the same in both: lower-case ASCII;
// every character that is not a letter, digit or an apostrophe inside a word becomes a space (so
// "well-known," -> "well known"); apostrophes at word edges are dropped; non-ASCII bytes are kept;
// runs of whitespace collapse to one space; leading/trailing space removed.
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <vector>

namespace slm::text {

std::string NormalizeForScoring(const std::string& text);
// The words of NormalizeForScoring(text), what WER counts.
std::vector<std::string> ScoringWords(const std::string& text);

}  // namespace slm::text
