// The CLIP ViT vision tower (Hugging Face `CLIPVisionTransformer`, as inside CLIPVisionModel,
// CLIPModel and LLaVA's vision tower).
//
// Architecture (transformers' modeling_clip): patch embedding (Conv2d, no bias, stride = patch)
// -> prepend the class embedding -> + learned position embeddings -> pre_layrnorm (HF's spelling)
// -> N x [layer_norm1 -> self-attention (q/k/v/out_proj with bias, scale head_dim^-0.5) -> residual
// -> layer_norm2 -> MLP fc1 -> quick_gelu (or gelu) -> fc2 -> residual] -> last_hidden_state;
// pooler_output = post_layernorm(last_hidden_state[:, 0]).
//
// Parameters are registered under the HF names with the "vision_model." prefix
// ("vision_model.embeddings.patch_embedding.weight", "vision_model.encoder.layers.0.self_attn.
// q_proj.weight", ..., "vision_model.post_layernorm.bias"), so CLIPVisionModel and CLIPModel
// model.safetensors files load unchanged (text tower, projections and logit_scale are ignored).
// The checkpoint prefix is found from "...embeddings.patch_embedding.weight": "vision_model."
// (CLIPModel), "" (CLIPVisionModel saved by transformers 5), "vision_tower.vision_model." (LLaVA).
//
// Shapes: pixel_values [B, 3, image_size, image_size] (ClipPreprocess output, stacked; any float
// dtype, converted to the model's); hidden states [B, 1 + P, hidden], P = (image_size / patch)^2.
// Features (what a projector consumes) default to LLaVA's choice: the penultimate layer's hidden
// states without the class token, [B, P, hidden].
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace slm::vision {

struct ClipVisionConfig {
  int64_t hidden_size = 768;
  int64_t intermediate_size = 3072;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t num_channels = 3;
  int64_t image_size = 224;
  int64_t patch_size = 32;
  std::string hidden_act = "quick_gelu";  // or "gelu" (erf), "gelu_new"/"gelu_pytorch_tanh" (tanh)
  double layer_norm_eps = 1e-5;

  int64_t NumPatches() const { return (image_size / patch_size) * (image_size / patch_size); }
  int64_t HeadDim() const { return hidden_size / num_attention_heads; }
  void Validate(const std::string& where) const;
  // A CLIPVisionConfig object (model_type "clip_vision_model"), or any config with a
  // "vision_config" object (CLIPConfig, LLaVA); missing keys keep CLIPVisionConfig's defaults.
  static ClipVisionConfig FromJson(const nlohmann::json& json, const std::string& where);
  static ClipVisionConfig FromFile(const std::string& config_json_path);
  // A CLIPVisionConfig config.json object (model_type "clip_vision_model").
  nlohmann::json ToJson() const;
};

struct ClipFeatureOptions {
  // Index into hidden_states (HF convention: 0 = embeddings after pre_layrnorm, i = after layer i,
  // negative counts from the end: -1 = last layer, -2 = penultimate, LLaVA's default).
  int64_t layer = -2;
  bool keep_class_token = false;  // false: patch tokens only [B, P, hidden] ("default" in LLaVA)
};

struct ClipVisionOutput {
  torch::Tensor last_hidden_state;           // [B, 1 + P, hidden] (no post_layernorm, as HF)
  torch::Tensor pooler_output;               // [B, hidden] = post_layernorm(class token)
  std::vector<torch::Tensor> hidden_states;  // if requested: num_hidden_layers + 1 entries
};

class ClipVisionModelImpl : public torch::nn::Module {
 public:
  // A fresh model (transformers-like random init), float32 on the CPU.
  explicit ClipVisionModelImpl(const ClipVisionConfig& config);
  ClipVisionModelImpl(const ClipVisionConfig& config, const torch::TensorOptions& options,
                      bool init_weights);

  ClipVisionOutput forward(const torch::Tensor& pixel_values, bool output_hidden_states = false);
  // The hidden states of one layer (runs only the layers needed), class token dropped unless kept.
  torch::Tensor Features(const torch::Tensor& pixel_values, const ClipFeatureOptions& options = {});
  const ClipVisionConfig& Config() const { return config_; }

  // No parameter requires grad; eval mode. Gradients still flow to pixel_values.
  void Freeze();
  bool IsFrozen() const;

  // Loads model_dir/model.safetensors or a sharded model.safetensors.index.json (F32/F16/BF16),
  // converting to this module's dtype/device.
  // slm::Error naming the tensor for a missing or wrongly shaped "vision_model.*" tensor or an
  // unexpected one (e.g. more layers than the config); other tensors (text tower, projections,
  // position_ids buffers) are ignored. Nothing changes unless every tensor checks out.
  void LoadWeights(const std::string& model_dir);
  // Writes config.json and model.safetensors ("vision_model.*", the CLIPModel layout) plus `extra`
  // tensors under their own names (e.g. "visual_projection.weight"), each file atomically.
  void SaveWeights(const std::string& model_dir,
                   const std::vector<std::pair<std::string, torch::Tensor>>& extra = {}) const;
  int64_t ParameterCount() const;

 private:
  ClipVisionConfig config_;
  struct Parts;
  std::shared_ptr<Parts> parts_;
  torch::Tensor Embed(const torch::Tensor& pixel_values);
  torch::Tensor Layer(int64_t index, const torch::Tensor& hidden);
};
TORCH_MODULE(ClipVisionModel);

// config.json + model.safetensors of a Hugging Face directory, on `device` in `dtype`.
ClipVisionModel LoadClipVision(const std::string& model_dir, torch::Device device = torch::kCPU,
                               torch::ScalarType dtype = torch::kFloat);

}  // namespace slm::vision
