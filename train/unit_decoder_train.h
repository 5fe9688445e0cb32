// Training of the unit-to-mel decoder (audio/unit_decoder.h) on (units, log-mel) pairs of the same
// utterances: L1 loss between predicted and real fixed-floor log-mel on random windows of
// `window_units` units, AdamW with warm-up + cosine decay (core/optim.h). The last
// `valid_fraction` of the utterances is held out; the result reports its L1 next to the L1 of the
// baseline that predicts the training set's mean frame, so "learned something" is a measured claim.
// Deterministic for a seed on the CPU. Not thread-safe (trains one model).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "audio/unit_decoder.h"
#include "train/runner.h"

namespace slm::train {

struct UnitDecoderExample {
  std::vector<int64_t> units;  // frame-level ids at the tokenizer's rate
  torch::Tensor mel;           // [~units * upsample, n_mels]
};

struct UnitDecoderTrainOptions : LoopOptions {
  int64_t window_units = 64;
  double valid_fraction = 0.1;
  uint64_t seed = 0;
};

struct UnitDecoderTrainResult {
  double train_l1 = 0;     // mean over the last log_every steps
  double valid_l1 = 0;     // held-out utterances, whole
  double mean_frame_l1 = 0;  // held-out L1 of the training mean frame (the baseline)
  int64_t steps = 0;
  double seconds = 0;
  LoopResult training;  // the runner's account of the loop (every job's result has one)
};

// slm::Error for no examples, mismatched lengths (mel frames far from units * upsample), a unit
// outside the decoder's range.
UnitDecoderTrainResult TrainUnitDecoder(audio::UnitDecoderImpl& decoder, const std::vector<UnitDecoderExample>& data,
                                        const UnitDecoderTrainOptions& options, bool quiet);

}  // namespace slm::train
