#include "vision/clip_vision.h"

#include <fstream>

#include "core/error.h"
#include "core/fs.h"
#include "core/hf_config.h"
#include "core/module_weights.h"
#include "core/safetensors.h"
#include "core/strings.h"

namespace slm::vision {
namespace {

using nlohmann::json;
namespace nn = torch::nn;

struct EmbeddingsImpl : nn::Module {
  nn::Conv2d patch_embedding{nullptr};
  torch::Tensor class_embedding;
  nn::Embedding position_embedding{nullptr};
  explicit EmbeddingsImpl(const ClipVisionConfig& c) {
    patch_embedding = register_module(
        "patch_embedding", nn::Conv2d(nn::Conv2dOptions(c.num_channels, c.hidden_size, c.patch_size)
                                          .stride(c.patch_size)
                                          .bias(false)));
    class_embedding = register_parameter("class_embedding", torch::randn({c.hidden_size}));
    position_embedding =
        register_module("position_embedding", nn::Embedding(c.NumPatches() + 1, c.hidden_size));
  }
};
TORCH_MODULE(Embeddings);

struct AttentionImpl : nn::Module {
  nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr};
  explicit AttentionImpl(const ClipVisionConfig& c) {
    k_proj = register_module("k_proj", nn::Linear(c.hidden_size, c.hidden_size));
    v_proj = register_module("v_proj", nn::Linear(c.hidden_size, c.hidden_size));
    q_proj = register_module("q_proj", nn::Linear(c.hidden_size, c.hidden_size));
    out_proj = register_module("out_proj", nn::Linear(c.hidden_size, c.hidden_size));
  }
};
TORCH_MODULE(Attention);

struct MlpImpl : nn::Module {
  nn::Linear fc1{nullptr}, fc2{nullptr};
  explicit MlpImpl(const ClipVisionConfig& c) {
    fc1 = register_module("fc1", nn::Linear(c.hidden_size, c.intermediate_size));
    fc2 = register_module("fc2", nn::Linear(c.intermediate_size, c.hidden_size));
  }
};
TORCH_MODULE(Mlp);

nn::LayerNorm MakeNorm(const ClipVisionConfig& c) {
  return nn::LayerNorm(nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps));
}

struct EncoderLayerImpl : nn::Module {
  Attention self_attn{nullptr};
  nn::LayerNorm layer_norm1{nullptr}, layer_norm2{nullptr};
  Mlp mlp{nullptr};
  explicit EncoderLayerImpl(const ClipVisionConfig& c) {
    self_attn = register_module("self_attn", Attention(c));
    layer_norm1 = register_module("layer_norm1", MakeNorm(c));
    mlp = register_module("mlp", Mlp(c));
    layer_norm2 = register_module("layer_norm2", MakeNorm(c));
  }
};
TORCH_MODULE(EncoderLayer);

struct EncoderImpl : nn::Module {
  nn::ModuleList layers;
  explicit EncoderImpl(const ClipVisionConfig& c) {
    layers = register_module("layers", nn::ModuleList());
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers->push_back(EncoderLayer(c));
  }
};
TORCH_MODULE(Encoder);

struct TransformerImpl : nn::Module {
  Embeddings embeddings{nullptr};
  nn::LayerNorm pre_layrnorm{nullptr}, post_layernorm{nullptr};
  Encoder encoder{nullptr};
  explicit TransformerImpl(const ClipVisionConfig& c) {
    embeddings = register_module("embeddings", Embeddings(c));
    pre_layrnorm = register_module("pre_layrnorm", MakeNorm(c));
    encoder = register_module("encoder", Encoder(c));
    post_layernorm = register_module("post_layernorm", MakeNorm(c));
  }
};
TORCH_MODULE(Transformer);

torch::Tensor Activation(const std::string& name, const torch::Tensor& x) {
  if (name == "quick_gelu") return x * torch::sigmoid(1.702 * x);
  if (name == "gelu") return torch::gelu(x);
  return torch::gelu(x, "tanh");  // gelu_new, gelu_pytorch_tanh (validated)
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// ClipVisionConfig

void ClipVisionConfig::Validate(const std::string& where) const {
  Check(hidden_size > 0 && intermediate_size > 0 && num_hidden_layers > 0 &&
            num_attention_heads > 0 && num_channels > 0 && image_size > 0 && patch_size > 0,
        where, ": vision sizes must be positive");
  Check(hidden_size % num_attention_heads == 0, where, ": hidden_size ", hidden_size,
        " is not divisible by num_attention_heads ", num_attention_heads);
  Check(image_size % patch_size == 0, where, ": image_size ", image_size,
        " is not divisible by patch_size ", patch_size);
  Check(hidden_act == "quick_gelu" || hidden_act == "gelu" || hidden_act == "gelu_new" ||
            hidden_act == "gelu_pytorch_tanh",
        where, ": unsupported hidden_act \"", hidden_act,
        "\" (quick_gelu, gelu, gelu_new, gelu_pytorch_tanh)");
  Check(layer_norm_eps > 0, where, ": layer_norm_eps must be positive");
}

ClipVisionConfig ClipVisionConfig::FromJson(const json& root, const std::string& where) {
  Check(root.is_object(), where, ": expected a JSON object");
  const json* j = &root;
  std::string context = where;
  auto vc = root.find("vision_config");
  if (vc != root.end()) {
    Check(vc->is_object(), where, ": \"vision_config\" must be an object");
    j = &*vc;
    context = where + " (vision_config)";
  } else {
    auto mt = root.find("model_type");
    Check(mt == root.end() || *mt == "clip_vision_model", where, ": model_type ",
          mt == root.end() ? std::string("?") : mt->dump(),
          " has no \"vision_config\" and is not \"clip_vision_model\"");
  }
  // config.json values through the one Hugging Face config reader (core/hf_config.h).
  ClipVisionConfig c;
  c.hidden_size = hf_config::OptionalInt(*j, "hidden_size", context, c.hidden_size);
  c.intermediate_size =
      hf_config::OptionalInt(*j, "intermediate_size", context, c.intermediate_size);
  c.num_hidden_layers =
      hf_config::OptionalInt(*j, "num_hidden_layers", context, c.num_hidden_layers);
  c.num_attention_heads =
      hf_config::OptionalInt(*j, "num_attention_heads", context, c.num_attention_heads);
  c.num_channels = hf_config::OptionalInt(*j, "num_channels", context, c.num_channels);
  c.image_size = hf_config::OptionalInt(*j, "image_size", context, c.image_size);
  c.patch_size = hf_config::OptionalInt(*j, "patch_size", context, c.patch_size);
  c.hidden_act = hf_config::OptionalString(*j, "hidden_act", context, c.hidden_act);
  c.layer_norm_eps = hf_config::OptionalNumber(*j, "layer_norm_eps", context, c.layer_norm_eps);
  c.Validate(context);
  return c;
}

json ClipVisionConfig::ToJson() const {
  return {{"model_type", "clip_vision_model"},
          {"architectures", {"CLIPVisionModel"}},
          {"hidden_size", hidden_size},
          {"intermediate_size", intermediate_size},
          {"num_hidden_layers", num_hidden_layers},
          {"num_attention_heads", num_attention_heads},
          {"num_channels", num_channels},
          {"image_size", image_size},
          {"patch_size", patch_size},
          {"hidden_act", hidden_act},
          {"layer_norm_eps", layer_norm_eps}};
}

ClipVisionConfig ClipVisionConfig::FromFile(const std::string& path) {
  return FromJson(fs::ReadJson(path), path);
}

// ---------------------------------------------------------------------------------------------
// ClipVisionModelImpl

struct ClipVisionModelImpl::Parts {
  Transformer vision_model{nullptr};
};

ClipVisionModelImpl::ClipVisionModelImpl(const ClipVisionConfig& config)
    : ClipVisionModelImpl(config, torch::TensorOptions(), true) {}

ClipVisionModelImpl::ClipVisionModelImpl(const ClipVisionConfig& config,
                                         const torch::TensorOptions& options, bool init_weights)
    : config_(config), parts_(std::make_shared<Parts>()) {
  config_.Validate("CLIP vision config");
  parts_->vision_model = register_module("vision_model", Transformer(config_));
  if (init_weights) {
    torch::NoGradGuard no_grad;
    for (auto& named : named_parameters()) {
      const std::string& name = named.key();
      torch::Tensor p = named.value();
      if (name.find("layer_norm") != std::string::npos ||
          name.find("layrnorm") != std::string::npos ||
          name.find("post_layernorm") != std::string::npos) {
        if (name.size() >= 6 && name.compare(name.size() - 6, 6, "weight") == 0)
          p.fill_(1.0);
        else
          p.zero_();
      } else if (name.size() >= 4 && name.compare(name.size() - 4, 4, "bias") == 0) {
        p.zero_();
      } else {
        p.normal_(0.0, 0.02);
      }
    }
  }
  to(options.device(), options.dtype().toScalarType());
}

torch::Tensor ClipVisionModelImpl::Embed(const torch::Tensor& pixel_values) {
  Check(pixel_values.dim() == 4 && pixel_values.size(1) == config_.num_channels &&
            pixel_values.size(2) == config_.image_size &&
            pixel_values.size(3) == config_.image_size,
        "CLIP vision: pixel_values must be [B, ", config_.num_channels, ", ", config_.image_size,
        ", ", config_.image_size, "], got ", ShapeString(pixel_values.sizes().vec()));
  auto& e = parts_->vision_model->embeddings;
  const torch::Tensor weight = e->patch_embedding->weight;
  torch::Tensor x = e->patch_embedding(pixel_values.to(weight.device(), weight.scalar_type()));
  x = x.flatten(2).transpose(1, 2);  // [B, P, hidden]
  const int64_t batch = x.size(0);
  torch::Tensor cls = e->class_embedding.view({1, 1, -1}).expand({batch, 1, -1});
  x = torch::cat({cls, x}, 1) + e->position_embedding->weight.unsqueeze(0);
  return parts_->vision_model->pre_layrnorm(x);
}

torch::Tensor ClipVisionModelImpl::Layer(int64_t index, const torch::Tensor& hidden) {
  auto layer = parts_->vision_model->encoder->layers->ptr<EncoderLayerImpl>(index);
  const int64_t b = hidden.size(0), t = hidden.size(1), heads = config_.num_attention_heads,
                d = config_.HeadDim();
  torch::Tensor h = layer->layer_norm1(hidden);
  auto& a = layer->self_attn;
  auto split = [&](const torch::Tensor& x) { return x.view({b, t, heads, d}).transpose(1, 2); };
  const torch::Tensor q = split(a->q_proj(h)), k = split(a->k_proj(h)), v = split(a->v_proj(h));
  // Fused attention (flash / memory-efficient kernels on a GPU): the eager matmul-softmax-matmul
  // that transformers' "eager" mode runs was 12% slower than its SDPA mode at batch 16 on an H100
  // (docs/BENCHMARKS.md); the two agree to float rounding (parity test).
  torch::Tensor o = torch::scaled_dot_product_attention(q, k, v, std::nullopt, 0.0, false, std::pow(double(d), -0.5))
                        .transpose(1, 2)
                        .reshape({b, t, heads * d});
  torch::Tensor x = hidden + a->out_proj(o);
  h = layer->layer_norm2(x);
  h = layer->mlp->fc2(Activation(config_.hidden_act, layer->mlp->fc1(h)));
  return x + h;
}

ClipVisionOutput ClipVisionModelImpl::forward(const torch::Tensor& pixel_values,
                                              bool output_hidden_states) {
  ClipVisionOutput out;
  torch::Tensor h = Embed(pixel_values);
  if (output_hidden_states) out.hidden_states.push_back(h);
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i) {
    h = Layer(i, h);
    if (output_hidden_states) out.hidden_states.push_back(h);
  }
  out.last_hidden_state = h;
  out.pooler_output = parts_->vision_model->post_layernorm(h.select(1, 0));
  return out;
}

torch::Tensor ClipVisionModelImpl::Features(const torch::Tensor& pixel_values,
                                            const ClipFeatureOptions& options) {
  const int64_t count = config_.num_hidden_layers + 1;
  const int64_t layer = options.layer < 0 ? count + options.layer : options.layer;
  Check(layer >= 0 && layer < count, "CLIP vision: feature layer ", options.layer,
        " is out of range for ", config_.num_hidden_layers, " layers (valid: ", -count, "..",
        count - 1, ")");
  torch::Tensor h = Embed(pixel_values);
  for (int64_t i = 0; i < layer; ++i) h = Layer(i, h);
  return options.keep_class_token ? h : h.slice(1, 1);
}

void ClipVisionModelImpl::Freeze() { module_weights::Freeze(*this); }

bool ClipVisionModelImpl::IsFrozen() const { return module_weights::IsFrozen(*this); }

int64_t ClipVisionModelImpl::ParameterCount() const { return module_weights::CountParameters(*this); }

void ClipVisionModelImpl::SaveWeights(
    const std::string& model_dir,
    const std::vector<std::pair<std::string, torch::Tensor>>& extra) const {
  const module_weights::NamedTensors tensors = module_weights::ParametersAndExtra(
      *this, extra, [](const std::string& name) { return name.rfind("vision_model.", 0) == 0; }, "ClipVisionModel",
      "the tower's");
  module_weights::WriteModelDirectory(model_dir, tensors, config_.ToJson());
}

void ClipVisionModelImpl::LoadWeights(const std::string& model_dir) {
  // Single file or sharded (LLaVA checkpoints are sharded); errors name the index or the file.
  const safetensors::Checkpoint checkpoint(model_dir);
  const std::string& path = checkpoint.Described();
  std::vector<std::string> names;
  for (const auto& [name, reader] : checkpoint.Sources()) names.push_back(name);
  // The tower's tensors sit under a prefix that depends on the class that saved them:
  // "vision_model." (CLIPModel, CLIPVisionModel in transformers 4), "" (CLIPVisionModel saved by
  // transformers 5), "vision_tower.vision_model." / "model.vision_tower.vision_model." (LLaVA).
  const std::string anchor = "embeddings.patch_embedding.weight";
  std::vector<std::string> prefixes;
  for (const std::string& name : names)
    if (name.size() >= anchor.size() &&
        name.compare(name.size() - anchor.size(), anchor.size(), anchor) == 0 &&
        (name.size() == anchor.size() || name[name.size() - anchor.size() - 1] == '.'))
      prefixes.push_back(name.substr(0, name.size() - anchor.size()));
  Check(!prefixes.empty(), path, ": missing tensor 'vision_model.", anchor,
        "' (no CLIP vision tower in this checkpoint)");
  Check(prefixes.size() == 1, path, ": several CLIP vision towers ('", prefixes[0], anchor, "', '",
        prefixes[1], anchor, "')");
  const std::string prefix = prefixes[0];
  const std::string internal = "vision_model.";
  safetensors::Plan plan;
  plan.ExpectParameters(*this, [&](const std::string& name) { return prefix + name.substr(internal.size()); });
  plan.ignore = [&](const std::string& name) {
    if (name.rfind(prefix, 0) != 0 || name == prefix + "embeddings.position_ids") return true;
    // Beside the tower under the same prefix: the text tower, projections, logit_scale, ...
    const std::string rest = name.substr(prefix.size());
    return rest.rfind("embeddings.", 0) != 0 && rest.rfind("encoder.", 0) != 0 &&
           rest.rfind("pre_layrnorm.", 0) != 0 && rest.rfind("post_layernorm.", 0) != 0;
  };
  plan.missing_hint = " (not a CLIP vision checkpoint with this config?)";
  plan.unexpected_hint = Str(" (not a parameter of this ", config_.num_hidden_layers, "-layer CLIP vision tower)");
  checkpoint.Load(plan);
}

ClipVisionModel LoadClipVision(const std::string& model_dir, torch::Device device,
                               torch::ScalarType dtype) {
  const ClipVisionConfig config = ClipVisionConfig::FromFile(hf_config::ConfigPath(model_dir));
  ClipVisionModel model(config, torch::TensorOptions().dtype(dtype).device(device),
                        /*init_weights=*/false);
  model->LoadWeights(model_dir);
  return model;
}

}  // namespace slm::vision
