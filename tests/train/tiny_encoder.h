// A random tiny Whisper-shaped speech encoder (d_model 32, one layer, 3 s of input) saved with the
// fixed-floor log-mel options, for the train tests' miniature runs: fast to build and to run.
#pragma once

#include <string>

#include "audio/log_mel.h"
#include "audio/whisper_encoder.h"

namespace slm::train::testing_support {

inline std::string SaveTinySpeechEncoder(const std::string& path) {
  audio::WhisperEncoderConfig w;
  w.d_model = 32;
  w.encoder_layers = 1;
  w.encoder_attention_heads = 2;
  w.encoder_ffn_dim = 64;
  w.max_source_positions = 150;  // 3 s
  audio::WhisperEncoder(w)->SaveWeights(path);
  audio::LogMelOptions mel;
  mel.normalization = audio::MelNormalization::kFixedFloor;
  audio::SaveEncoderFeatureOptions(path, mel);
  return path;
}

}  // namespace slm::train::testing_support
