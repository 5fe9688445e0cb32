// Words of a CTC reading, shared by the greedy decoder (audio/ctc.cpp) and the lexicon beam search
// (audio/ctc_lexicon_decoder.cpp), so both report spans and confidences the same way.
// Thread-safety: pure function.
#pragma once

#include <cstdint>
#include <vector>

#include "audio/ctc.h"

namespace slm::audio {

// One emitted symbol (CtcAlphabet id, not blank) with the encoder frames it spans, first and last
// inclusive, and its peak posterior.
struct CtcChar {
  int64_t id = 0;
  int64_t first = 0;
  int64_t last = 0;
  float peak = 0;
};

// The transcript of `chars` in order: spaces separate words; a word spans [its first character's
// first frame, its last character's last frame + 1) and its confidence is the mean peak of its
// characters; the transcript's confidence is the mean peak over all of them (spaces included),
// 0 when there are none.
CtcTranscript TranscriptOfChars(const std::vector<CtcChar>& chars);

}  // namespace slm::audio
