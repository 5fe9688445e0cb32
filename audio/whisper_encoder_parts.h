// Internal to audio/ (not a public API): the submodules of audio::WhisperEncoderImpl and the
// block-causal attention mask, shared by the offline forward (audio/whisper_encoder.cpp) and the
// incremental streaming encoder (audio/whisper_stream.cpp), so that both run the same arithmetic.
// Thread-safety: as WhisperEncoderImpl (read-only use of a frozen module from several threads).
#pragma once

#include <torch/torch.h>

#include <memory>
#include <vector>

#include "audio/whisper_encoder.h"

namespace slm::audio::detail {

// GELU, in place when asked (only without autograd, which needs the input for the backward).
inline torch::Tensor Gelu(torch::Tensor t, bool in_place) {
  return in_place ? torch::gelu_(t) : torch::gelu(t);
}

// Which keys each query may see, by absolute output-frame positions (int64 tensors broadcastable
// against each other, e.g. queries [..., Q, 1] and keys [..., 1, K]): key chunk <= query chunk and,
// when left_chunks > 0, key chunk >= query chunk - left_chunks; chunk = position / chunk_frames
// (chunk_frames > 0). Returns a bool tensor of the broadcast shape (true = attend).
inline torch::Tensor BlockCausalMask(const torch::Tensor& query_positions,
                                     const torch::Tensor& key_positions, int64_t chunk_frames,
                                     int64_t left_chunks) {
  const torch::Tensor query_chunk = query_positions.div(chunk_frames, "floor");
  const torch::Tensor key_chunk = key_positions.div(chunk_frames, "floor");
  torch::Tensor mask = key_chunk <= query_chunk;
  if (left_chunks > 0) mask = mask.logical_and(key_chunk >= query_chunk - left_chunks);
  return mask;
}

class EncoderLayerImpl : public torch::nn::Module {
 public:
  EncoderLayerImpl(const WhisperEncoderConfig& c, const torch::TensorOptions& o);

  // x [B, T, d_model]; mask [B or 1, 1, T, T] bool (true = attend) or undefined (all see all).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask) {
    return Forward(x, {}, {}, mask, nullptr, nullptr);
  }
  // The same block where the keys/values of earlier frames are given already projected:
  // past_keys/past_values [B, P, d_model] (undefined = none) come before the keys of x, so mask is
  // [B or 1, 1, T, P + T]. When keys/values are non-null they receive this call's projected
  // keys/values [B, T, d_model] (for the caller's cache). Inputs are never modified.
  torch::Tensor Forward(const torch::Tensor& x, const torch::Tensor& past_keys,
                        const torch::Tensor& past_values, const torch::Tensor& mask,
                        torch::Tensor* keys, torch::Tensor* values);

  std::shared_ptr<torch::nn::Module> attn;
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr};
  torch::nn::LayerNorm self_attn_layer_norm{nullptr}, final_layer_norm{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};

 private:
  int64_t heads_;
  int64_t head_dim_;
};
TORCH_MODULE(EncoderLayer);

// transformers' WhisperEncoder: registered as "model" -> "encoder".
class EncoderImpl : public torch::nn::Module {
 public:
  EncoderImpl(const WhisperEncoderConfig& c, const torch::TensorOptions& o);
  torch::nn::Conv1d conv1{nullptr}, conv2{nullptr};
  torch::Tensor embed_positions;
  torch::nn::ModuleList layers{nullptr};
  std::vector<EncoderLayer> typed_layers;
  torch::nn::LayerNorm layer_norm{nullptr};
};
TORCH_MODULE(Encoder);

}  // namespace slm::audio::detail

namespace slm::audio {
struct WhisperEncoderImpl::Parts {
  detail::Encoder encoder{nullptr};
};
}  // namespace slm::audio
