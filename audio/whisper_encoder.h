// The speech encoder: Whisper's audio encoder (Hugging Face `WhisperEncoder`), with variable-length
// input and an optional block-causal (chunked) attention for streaming.
//
// Architecture (transformers' modeling_whisper): conv1 (n_mels -> d_model, kernel 3, padding 1) +
// GELU -> conv2 (kernel 3, stride 2, padding 1) + GELU -> + sinusoidal positions
// (`embed_positions.weight`, loaded from the checkpoint) -> N pre-LN blocks [LayerNorm -> self
// attention (q/v/out_proj with bias, k_proj without) -> residual -> LayerNorm -> fc1 -> GELU -> fc2
// -> residual] -> final LayerNorm. GELU is the exact (erf) one; LayerNorm eps is 1e-5.
//
// Parameters are registered under the Hugging Face names of WhisperModel /
// WhisperForConditionalGeneration checkpoints ("model.encoder.conv1.weight",
// "model.encoder.layers.0.self_attn.q_proj.weight", "model.encoder.embed_positions.weight",
// "model.encoder.layer_norm.weight", ...), so their model.safetensors (or a sharded
// model.safetensors.index.json) loads unchanged; decoder tensors in the file are ignored. A bare
// WhisperModel's save_pretrained names them "encoder.*" (no "model."); that layout loads too.
//
// Input: features [B, T, n_mels] (time-major, the layout audio::LogMel produces; HF's
// input_features are the transpose [B, n_mels, T]). Unlike transformers, T is not forced to 3000
// (30 s): any 1 <= T <= 2 * max_source_positions. Output [B, ceil(T/2), d_model] with positions
// 0..ceil(T/2)-1. For a padded batch give `lengths` [B] (real input frames per row) or `mask`
// [B, T] (1 = real, a prefix of each row): padded input frames are zeroed before each convolution
// (so the convolutions see what they would see at the end of an unpadded row) and padded output
// frames are masked out of attention, so real frames of each row equal that row run alone (padded
// output frames hold finite, meaningless values). Output lengths are ceil(length / 2).
//
// Block-causal mode (attention_chunk_frames = C > 0, in output frames): output frame i attends to
// frame j only when j / C <= i / C (its own chunk and all earlier ones), and with
// attention_left_chunks = L > 0 also i / C - L <= j / C (its own chunk and the L before it).
// Then the outputs of the first K chunks (K*C output frames) are final as soon as 2*K*C + 1 input
// frames have arrived (the convolutions look one input frame ahead): appending audio does not
// change them. audio/whisper_stream.h encodes a stream chunk by chunk with the same result.
//
// Any floating dtype (float32, bfloat16, float16, float64) on CPU or CUDA; features are converted
// to the model's dtype and device. forward() on a frozen model is safe from several threads;
// LoadWeights/Freeze need exclusive access. Incremental encoding: audio/whisper_stream.h.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "audio/log_mel.h"
#include "audio/whisper_stream.h"

namespace slm::audio {

struct WhisperEncoderConfig {
  int64_t d_model = 384;
  int64_t encoder_layers = 4;
  int64_t encoder_attention_heads = 6;
  int64_t encoder_ffn_dim = 1536;
  int64_t num_mel_bins = 80;
  int64_t max_source_positions = 1500;
  double init_std = 0.02;  // std of the normal init of a fresh model (transformers' init_std)
  // slm extensions (not transformers keys; read from config.json when present, written when
  // non-zero). Block-causal attention in chunks of this many output frames; 0 = full attention
  // (Whisper).
  int64_t attention_chunk_frames = 0;
  // With attention_chunk_frames > 0: how many earlier chunks a frame sees besides its own; 0 =
  // all of them. A bounded left context keeps the cost of encoding one more chunk independent of
  // how long the utterance already is (audio/whisper_stream.h). Must be 0 without chunks.
  int64_t attention_left_chunks = 0;

  int64_t HeadDim() const { return d_model / encoder_attention_heads; }
  // Longest accepted input: 2 * max_source_positions feature frames.
  int64_t MaxInputFrames() const { return 2 * max_source_positions; }
  // slm::Error naming `where` and the key for a non-positive size, heads not dividing d_model, ...
  void Validate(const std::string& where) const;
  // Parses a Hugging Face Whisper config.json object: model_type must be "whisper" and
  // activation_function "gelu". slm::Error naming `where` and the key for a missing or invalid key.
  static WhisperEncoderConfig FromJson(const nlohmann::json& json, const std::string& where);
  static WhisperEncoderConfig FromFile(const std::string& config_json_path);
  // A Hugging Face Whisper config.json object with these encoder keys (model_type "whisper"); the
  // decoder keys are left to transformers' defaults.
  nlohmann::json ToJson() const;
};

// The log-mel features an encoder directory expects, from its preprocessor_config.json
// (transformers' WhisperFeatureExtractor keys feature_size, sampling_rate, hop_length, n_fft, plus
// the slm keys "slm_normalization" (whisper|fixed_floor|none) and "slm_floor_log10"). Without the
// file, or without slm_normalization (a hub Whisper), Whisper's own normalisation is assumed.
// slm::Error naming the file and key for an invalid value.
LogMelOptions LoadEncoderFeatureOptions(const std::string& model_dir);
// Writes model_dir/preprocessor_config.json for `options` (atomic).
void SaveEncoderFeatureOptions(const std::string& model_dir, const LogMelOptions& options);

struct WhisperEncoderInput {
  torch::Tensor features;  // [B, T, n_mels]
  torch::Tensor lengths;   // [B] integer, real input frames per row; undefined = all T
  torch::Tensor mask;      // [B, T], 1 = real frame (prefix); alternative to `lengths`
  // Override the config's attention_chunk_frames / attention_left_chunks when >= 0 (chunk 0 =
  // full attention, where the left context does not apply).
  int64_t attention_chunk_frames = -1;
  int64_t attention_left_chunks = -1;
  bool output_hidden_states = false;
};

struct WhisperEncoderOutput {
  torch::Tensor last_hidden_state;           // [B, ceil(T/2), d_model], after the final LayerNorm
  torch::Tensor lengths;                     // [B] int64 output frames per row: ceil(length / 2)
  torch::Tensor mask;                        // [B, ceil(T/2)] bool, true = real output frame
  std::vector<torch::Tensor> hidden_states;  // if requested: embeddings + each layer (HF order)
};

// Whisper's sinusoidal position table [length, channels] float32, as transformers' sinusoids().
torch::Tensor WhisperSinusoids(int64_t length, int64_t channels);

class WhisperEncoderImpl : public torch::nn::Module {
 public:
  // A fresh model initialised as transformers does (normal(0, init_std) weights, zero biases, unit
  // LayerNorms, sinusoidal embed_positions), float32 on the CPU.
  explicit WhisperEncoderImpl(const WhisperEncoderConfig& config);
  // Parameters allocated with `options`; init_weights = false leaves them uninitialised, for a
  // caller that loads every weight right after (LoadWhisperEncoder).
  WhisperEncoderImpl(const WhisperEncoderConfig& config, const torch::TensorOptions& options,
                     bool init_weights);

  WhisperEncoderOutput forward(const WhisperEncoderInput& input);
  // Shorthand: features [B, T, n_mels] (all real) -> last_hidden_state.
  torch::Tensor forward(const torch::Tensor& features);
  const WhisperEncoderConfig& Config() const { return config_; }

  // No parameter requires grad and the module is in eval mode; gradients still flow through the
  // activations to the features.
  void Freeze();
  bool IsFrozen() const;

  // Loads the "model.encoder.*" (or bare WhisperModel "encoder.*") tensors of a Hugging Face
  // directory (model.safetensors or model.safetensors.index.json + shards), converting to this
  // module's dtype and device. Other tensors (the decoder, proj_out) are ignored. slm::Error naming
  // the tensor for a missing, wrongly shaped or non-floating-point one (core/safetensors.h, Plan);
  // nothing is changed unless every tensor checks out.
  void LoadWeights(const std::string& model_dir);
  // Writes config.json and model.safetensors ("model.encoder.*" names, the layout
  // WhisperForConditionalGeneration uses) plus `extra` tensors under their own names (e.g. a CTC
  // head), which LoadWeights ignores. Each file is replaced atomically.
  void SaveWeights(const std::string& model_dir,
                   const std::vector<std::pair<std::string, torch::Tensor>>& extra = {}) const;
  int64_t ParameterCount() const;

  // Incremental encoding of a block-causal encoder (contract in audio/whisper_stream.h). slm::Error
  // when attention_chunk_frames is 0.
  WhisperStreamState StartStream() const;
  // Appends `features` [T_new, n_mels] to the stream and returns the output frames it made final,
  // [N, d_model] (N a multiple of attention_chunk_frames, often 0): rows of last_hidden_state, in
  // the model's dtype on its device.
  torch::Tensor EncodeChunks(WhisperStreamState& state, const torch::Tensor& features);
  // Ends the stream's input and returns its remaining output frames [N, d_model] (N >= 0).
  torch::Tensor Finish(WhisperStreamState& state);
  // Several streams in one batched call; result i is step i's [N_i, d_model]. A stream may appear
  // once per call. slm::Error (naming the step) on bad input, and then no state has changed.
  std::vector<torch::Tensor> EncodeStreams(const std::vector<WhisperStreamStep>& steps);

 private:
  WhisperEncoderConfig config_;
  uint64_t id_;  // unique per module object: ties stream states to the encoder that started them
  struct Parts;  // submodules registered as "model" -> "encoder"; audio/whisper_encoder_parts.h
  std::shared_ptr<Parts> parts_;
};
TORCH_MODULE(WhisperEncoder);

// config.json + encoder weights of a Hugging Face Whisper directory, on `device` in `dtype`.
WhisperEncoder LoadWhisperEncoder(const std::string& model_dir, torch::Device device = torch::kCPU,
                                  torch::ScalarType dtype = torch::kFloat);

}  // namespace slm::audio
