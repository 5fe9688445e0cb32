// Transcripts from the speech encoder's CTC head, for a batch of clips at once: log-mel features
// (the encoder's own front-end options), one padded encoder pass, the CTC head, greedy words with
// times and confidences (audio::CtcGreedyWords). The features are returned too: a spoken question
// is answered from them (MultimodalLM::Prepare).
//
// Thread-safety: Run may be called from one thread at a time per object; the modules it runs are
// frozen and may be used by other threads meanwhile.
#pragma once

#include <torch/torch.h>

#include <vector>

#include "audio/ctc.h"
#include "engine/served_model.h"

namespace slm::engine {

struct ClipTranscript {
  torch::Tensor features;  // [T, n_mels] float32 CPU
  audio::CtcTranscript transcript;
};

class Transcriber {
 public:
  explicit Transcriber(ServedModel& model) : model_(model) {}
  // One transcript per clip (mono samples at the model's rate; a clip shorter than the front-end's
  // window is zero-padded to it). Throws what the modules throw.
  std::vector<ClipTranscript> Run(const std::vector<const std::vector<float>*>& clips);

 private:
  ServedModel& model_;
};

}  // namespace slm::engine
