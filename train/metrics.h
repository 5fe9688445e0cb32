// Evaluation metrics: word and character error rate (speech recognition), caption attributes.
//
// Both reference and hypothesis are normalised before scoring (text/scoring_words.h), so that
// casing and punctuation never count as errors.
// WER = (substitutions + deletions + insertions) / reference words, from a Levenshtein alignment
// over words; CER the same over the characters of the normalised text (spaces included).
// Corpus-level rates sum edits and reference lengths over utterances (not a mean of ratios), as
// NIST sclite and jiwer do. Thread-safety: pure functions; ErrorRate accumulators are plain values.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "text/scoring_words.h"

namespace slm::train {

using text::NormalizeForScoring;
using text::ScoringWords;

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

// Caption attribute accuracy on the shapes data (datagen/shapes.h): a caption "a red circle below a
// blue square" as its scene {colour, shape, relation, colour, shape} with "below" / "right of"
// turned around ({"blue", "square", "above", "red", "circle"}), so both phrasings of one scene
// compare equal and the relation slot scores the axis (vertical or horizontal) alone. Read from
// ScoringWords; empty when the text is not a caption of that form (every slot then counts wrong).
std::vector<std::string> CaptionAttributes(const std::string& caption);
// The slots of CaptionAttributes, as the evaluation names them (attribute_accuracy_by_slot).
inline constexpr std::array<const char*, 5> kCaptionAttributeNames = {
    "first_color", "first_shape", "relation", "second_color", "second_shape"};

}  // namespace slm::train
