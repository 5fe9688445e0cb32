// Unit-to-mel decoder: discrete speech units -> log-mel frames, the middle stage of speech output
// (LM -> units -> this -> vocoder -> audio).
//
// Input: unit ids at the tokenizer's frame rate [T] (a deduplicated sequence is expanded by its
// durations first: ExpandRuns). Each unit is repeated `upsample` times (mel frames per unit frame:
// 100 Hz mel / unit rate, 1 for mel units, 2 for 50 Hz encoder units), embedded, and passed through
// `layers` residual blocks [LayerNorm -> Conv1d(kernel, same padding) -> GELU] and a linear
// projection to n_mels (the fixed-floor log-mel of audio/log_mel.h). Output [T * upsample, n_mels].
// Parameters: "embed.weight" [K, d], "blocks.{i}.norm.*", "blocks.{i}.conv.*", "out.*".
//
// On disk: decoder.safetensors + decoder.json {"k", "dim", "layers", "kernel", "n_mels",
// "upsample", "tokenizer_hash"}; Load checks the hash against the tokenizer it is used with.
// Thread-safety: forward() on an eval-mode model from several threads is safe.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "audio/units.h"

namespace slm::audio {

struct UnitDecoderConfig {
  int64_t k = 200;
  int64_t dim = 256;
  int64_t layers = 4;
  int64_t kernel = 5;
  int64_t n_mels = 80;
  int64_t upsample = 1;
  std::string tokenizer_hash;
  void Validate() const;  // slm::Error naming the field
  // dir/decoder.json, without the weights: a caller can check a decoder long before it loads one.
  // slm::Error naming `what` and `dir` when there is no decoder.json or when `expected_hash` (if
  // not empty) differs from the decoder's tokenizer hash; naming the file for a missing or
  // mistyped field.
  static UnitDecoderConfig Read(const std::string& dir, const std::string& expected_hash = "",
                                const std::string& what = "unit decoder");
};

class UnitDecoderImpl : public torch::nn::Module {
 public:
  explicit UnitDecoderImpl(const UnitDecoderConfig& config);
  // units [B, T] int64 in [0, k) -> log-mel [B, T * upsample, n_mels].
  torch::Tensor forward(const torch::Tensor& units);
  // One utterance: ids -> [T * upsample, n_mels] (no grad). slm::Error for ids outside [0, k).
  torch::Tensor Decode(const std::vector<int64_t>& units);
  const UnitDecoderConfig& Config() const { return config_; }
  void Save(const std::string& dir) const;
  // UnitDecoderConfig::Read, then LoadWeights, in eval mode.
  static std::shared_ptr<UnitDecoderImpl> Load(const std::string& dir, const std::string& expected_hash = "");
  // dir/decoder.safetensors into this decoder: slm::Error naming the file for a missing, misshaped,
  // non-floating-point or unexpected tensor, leaving the weights unchanged (core/safetensors.h).
  void LoadWeights(const std::string& dir);

 private:
  UnitDecoderConfig config_;
  torch::nn::Embedding embed_{nullptr};
  torch::nn::ModuleList blocks_;
  torch::nn::Linear out_{nullptr};
};
TORCH_MODULE(UnitDecoder);

// Deduplicated runs back to frame-level ids.
std::vector<int64_t> ExpandRuns(const std::vector<UnitRun>& runs);

}  // namespace slm::audio
