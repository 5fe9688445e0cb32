// Evaluation metrics for speech recognition: word and character error rate.
//
// Text normalisation (applied to both reference and hypothesis before scoring, so that casing and
// punctuation never count as errors): lower-case ASCII; every character that is not a letter, digit
// or an apostrophe inside a word becomes a space (so "well-known," -> "well known"); apostrophes at
// word edges are dropped; runs of whitespace collapse to one space; leading/trailing space removed.
// WER = (substitutions + deletions + insertions) / reference words, from a Levenshtein alignment
// over words; CER the same over the characters of the normalised text (spaces included).
// Corpus-level rates sum edits and reference lengths over utterances (not a mean of ratios), as
// NIST sclite and jiwer do. Thread-safety: pure functions; ErrorRate accumulators are plain values.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace slm::train {

std::string NormalizeForScoring(const std::string& text);
// The words of NormalizeForScoring(text), what WER counts.
std::vector<std::string> ScoringWords(const std::string& text);

struct EditCounts {
  int64_t substitutions = 0;
  int64_t deletions = 0;
  int64_t insertions = 0;
  int64_t reference_length = 0;
  int64_t Errors() const { return substitutions + deletions + insertions; }
  // Errors / reference length; an empty reference scores 0 if the hypothesis is empty, else 1.
  double Rate() const;
  EditCounts& operator+=(const EditCounts& other);
};

// Minimum-edit alignment counts between token sequences.
EditCounts AlignTokens(const std::vector<std::string>& reference,
                       const std::vector<std::string>& hypothesis);

// Word and character edit counts of one utterance, after NormalizeForScoring.
EditCounts WordErrors(const std::string& reference, const std::string& hypothesis);
EditCounts CharErrors(const std::string& reference, const std::string& hypothesis);

}  // namespace slm::train
