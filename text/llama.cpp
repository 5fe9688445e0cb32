#include "text/llama.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <utility>

#include "core/error.h"
#include "core/fs.h"
#include "core/safetensors.h"
#include "core/strings.h"

namespace slm::text {
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;

const std::vector<std::string> kRopeTypes = {"default", "linear", "llama3"};
const std::vector<std::string> kConfigDtypes = {"float32", "bfloat16", "float16", "float64"};
const char kSupportedArchitecture[] =
    "supported: model_type \"llama\" / architectures [\"LlamaForCausalLM\"]";

// ---------------------------------------------------------------------------------------------
// config.json helpers. JSON null counts as absent, as transformers treats it (e.g.
// "rope_scaling": null, "pad_token_id": null).

const json* Field(const json& object, const std::string& key) {
  auto it = object.find(key);
  return it == object.end() || it->is_null() ? nullptr : &*it;
}

int64_t AsInt(const json& value, const std::string& key, const std::string& where) {
  Check(value.is_number_integer(), where, ": \"", key, "\" must be an integer, got ", value.dump());
  return value.get<int64_t>();
}

double AsNumber(const json& value, const std::string& key, const std::string& where) {
  Check(value.is_number(), where, ": \"", key, "\" must be a number, got ", value.dump());
  return value.get<double>();
}

bool AsBool(const json& value, const std::string& key, const std::string& where) {
  Check(value.is_boolean(), where, ": \"", key, "\" must be true or false, got ", value.dump());
  return value.get<bool>();
}

std::string AsString(const json& value, const std::string& key, const std::string& where) {
  Check(value.is_string(), where, ": \"", key, "\" must be a string, got ", value.dump());
  return value.get<std::string>();
}

int64_t RequiredInt(const json& object, const std::string& key, const std::string& where) {
  const json* value = Field(object, key);
  Check(value != nullptr, where, ": missing required key \"", key, "\"");
  return AsInt(*value, key, where);
}

// `prefix` names the enclosing dict in messages ("rope_parameters.").
int64_t OptionalInt(const json& object, const std::string& key, const std::string& where,
                    int64_t fallback, const std::string& prefix = "") {
  const json* value = Field(object, key);
  return value ? AsInt(*value, prefix + key, where) : fallback;
}

double OptionalNumber(const json& object, const std::string& key, const std::string& where,
                      double fallback, const std::string& prefix = "") {
  const json* value = Field(object, key);
  return value ? AsNumber(*value, prefix + key, where) : fallback;
}

bool OptionalBool(const json& object, const std::string& key, const std::string& where,
                  bool fallback) {
  const json* value = Field(object, key);
  return value ? AsBool(*value, key, where) : fallback;
}

void CheckArchitecture(const json& object, const std::string& where) {
  const json* model_type = Field(object, "model_type");
  const json* architectures = Field(object, "architectures");
  Check(model_type || architectures, where,
        ": neither \"model_type\" nor \"architectures\" says what model this is (",
        kSupportedArchitecture, ")");
  if (model_type) {
    const std::string type = AsString(*model_type, "model_type", where);
    Check(type == "llama", where, ": model_type \"", type, "\" is not supported (",
          kSupportedArchitecture, ")");
  }
  if (architectures) {
    Check(architectures->is_array(), where, ": \"architectures\" must be a list of strings, got ",
          architectures->dump());
    bool causal_lm = false;
    for (const json& name : *architectures)
      causal_lm |= AsString(name, "architectures", where) == "LlamaForCausalLM";
    Check(causal_lm, where, ": architectures ", architectures->dump(), " is not supported (",
          kSupportedArchitecture, ")");
  }
}

// rope_theta and the scaling variant. transformers 5 writes one "rope_parameters" dict holding
// rope_type and rope_theta; older configs have a top-level "rope_theta" plus "rope_scaling" (null
// or a dict whose type is under "rope_type" or the legacy "type"). Like transformers'
// standardize_rope_params, values inside the dict win over the top-level ones.
void ParseRope(const json& object, const std::string& where, LlamaConfig& config) {
  const json* parameters = Field(object, "rope_parameters");
  const json* scaling = Field(object, "rope_scaling");
  Check(!(parameters && scaling), where,
        ": both \"rope_parameters\" and \"rope_scaling\" are given; keep one");
  const std::string dict_key = parameters ? "rope_parameters" : "rope_scaling";
  const json* dict = parameters ? parameters : scaling;

  config.rope_theta = OptionalNumber(object, "rope_theta", where, 10000.0);
  const double partial_top = OptionalNumber(object, "partial_rotary_factor", where, 1.0);
  Check(partial_top == 1.0, where,
        ": \"partial_rotary_factor\" other than 1 is not supported by Llama, got ", partial_top);
  const int64_t top_level_original =
      OptionalInt(object, "original_max_position_embeddings", where, 0);
  RopeScaling& rope = config.rope_scaling;
  rope = RopeScaling();
  rope.original_max_position_embeddings =
      top_level_original > 0 ? top_level_original : config.max_position_embeddings;
  if (!dict) return;

  Check(dict->is_object(), where, ": \"", dict_key, "\" must be an object or null, got ",
        dict->dump());
  const std::vector<std::string> known = {"rope_type",
                                          "type",
                                          "rope_theta",
                                          "factor",
                                          "low_freq_factor",
                                          "high_freq_factor",
                                          "original_max_position_embeddings",
                                          "partial_rotary_factor"};
  for (auto it = dict->begin(); it != dict->end(); ++it) {
    if (std::find(known.begin(), known.end(), it.key()) != known.end()) continue;
    const std::string hint = ClosestMatch(it.key(), known);
    throw Error(Str(where, ": unknown key \"", dict_key, ".", it.key(), "\"",
                    hint.empty() ? "" : Str(" (did you mean \"", hint, "\"?)")));
  }
  const std::string key_prefix = dict_key + ".";
  const json* type = Field(*dict, "rope_type");
  if (!type) type = Field(*dict, "type");
  if (type) rope.rope_type = AsString(*type, key_prefix + "rope_type", where);
  Check(std::find(kRopeTypes.begin(), kRopeTypes.end(), rope.rope_type) != kRopeTypes.end(), where,
        ": rope type \"", rope.rope_type, "\" is not supported (supported: ", Join(kRopeTypes),
        ")");
  config.rope_theta = OptionalNumber(*dict, "rope_theta", where, config.rope_theta, key_prefix);
  const double partial = OptionalNumber(*dict, "partial_rotary_factor", where, 1.0, key_prefix);
  Check(partial == 1.0, where, ": \"", key_prefix,
        "partial_rotary_factor\" other than 1 is not supported by Llama, got ", partial);

  auto required_number = [&](const std::string& key) {
    const json* value = Field(*dict, key);
    Check(value != nullptr, where, ": rope type \"", rope.rope_type, "\" needs \"", key_prefix, key,
          "\"");
    return AsNumber(*value, key_prefix + key, where);
  };
  if (rope.rope_type == "linear") {
    rope.factor = required_number("factor");
  } else if (rope.rope_type == "llama3") {
    rope.factor = required_number("factor");
    rope.low_freq_factor = required_number("low_freq_factor");
    rope.high_freq_factor = required_number("high_freq_factor");
    rope.original_max_position_embeddings =
        OptionalInt(*dict, "original_max_position_embeddings", where,
                    rope.original_max_position_embeddings, key_prefix);
  }
}

std::string ShapeString(torch::IntArrayRef shape) {
  std::vector<std::string> dims;
  for (int64_t d : shape) dims.push_back(std::to_string(d));
  return "[" + Join(dims) + "]";
}

std::string ConfigDtypeName(torch::ScalarType type) {
  switch (type) {
    case torch::kBFloat16:
      return "bfloat16";
    case torch::kHalf:
      return "float16";
    case torch::kDouble:
      return "float64";
    default:
      return "float32";
  }
}

// ---------------------------------------------------------------------------------------------
// Building blocks, each registering its parameters under the name torch.nn / transformers use.
// Parameters are allocated uninitialised; LlamaModelImpl initialises them (or loads them).

// y = x W^T (+ b), parameters "weight" [out, in] and "bias" [out] as torch.nn.Linear, with an
// optional LoRA branch (submodules "lora_A", "lora_B", PEFT's names).
class ProjectionImpl : public torch::nn::Module {
 public:
  ProjectionImpl(int64_t in, int64_t out, bool bias, const torch::TensorOptions& options) {
    weight = register_parameter("weight", torch::empty({out, in}, options));
    if (bias) this->bias = register_parameter("bias", torch::empty({out}, options));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor y = torch::linear(x, weight, bias);
    if (lora_A && !lora_merged && lora_factor != 0.0) {
      const torch::Tensor h = lora_dropout > 0 && is_training()
                                  ? torch::dropout(x, lora_dropout, /*train=*/true)
                                  : x;
      y = y + torch::linear(torch::linear(h, lora_A->weight), lora_B->weight) * lora_factor;
    }
    return y;
  }

  void AddLora(int64_t rank, double dropout, double factor) {
    const torch::TensorOptions options = weight.options().requires_grad(false);
    lora_A = register_module("lora_A", std::make_shared<ProjectionImpl>(weight.size(1), rank, false, options));
    lora_B = register_module("lora_B", std::make_shared<ProjectionImpl>(rank, weight.size(0), false, options));
    {
      torch::NoGradGuard no_grad;
      // PEFT: kaiming_uniform_(a=sqrt(5)) for A, i.e. U(-1/sqrt(in), 1/sqrt(in)); B = 0.
      const double bound = 1.0 / std::sqrt(static_cast<double>(weight.size(1)));
      lora_A->weight.uniform_(-bound, bound);
      lora_B->weight.zero_();
    }
    lora_A->weight.set_requires_grad(true);
    lora_B->weight.set_requires_grad(true);
    lora_dropout = dropout;
    lora_factor = factor;
  }
  // The update scale * alpha / rank * B A in float32.
  torch::Tensor LoraDelta() const {
    return torch::matmul(lora_B->weight.to(torch::kFloat), lora_A->weight.to(torch::kFloat)) *
           lora_factor;
  }
  void Merge(bool merge) {
    torch::NoGradGuard no_grad;
    const torch::Tensor delta = LoraDelta();
    const torch::Tensor merged = weight.to(torch::kFloat) + (merge ? delta : -delta);
    weight.copy_(merged.to(weight.scalar_type()));
    lora_merged = merge;
  }

  torch::Tensor weight;
  torch::Tensor bias;  // undefined without bias
  std::shared_ptr<ProjectionImpl> lora_A, lora_B;  // null without LoRA
  double lora_factor = 0.0;  // runtime scale * alpha / rank
  double lora_dropout = 0.0;
  bool lora_merged = false;
};
TORCH_MODULE(Projection);

// Several projections of the same input run as one GEMM (q/k/v; gate/up): fewer, larger kernels,
// which is most of the cost of a decode step on a GPU. Only while none of their weights requires
// grad (a frozen backbone; gradients still flow to the input) and none has an active LoRA branch. The parts' weights
// are re-pointed into the fused tensor (set_data), so the fusion costs no memory and in-place
// changes of a part's weight (loading, LoRA merge, optimizer steps after unfreezing) are seen by
// both; replacing a part's tensor (module.to(), set_data elsewhere) is detected by address and the
// fused tensor is rebuilt.
class FusedProjections {
 public:
  explicit FusedProjections(std::vector<ProjectionImpl*> parts) : parts_(std::move(parts)) {}

  // The parts' outputs concatenated on the last dimension, or undefined when they cannot be fused.
  torch::Tensor Forward(const torch::Tensor& x) {
    if (!Eligible()) return {};
    if (!Current()) Build();
    return torch::linear(x, weight_, bias_);
  }

 private:
  bool Eligible() const {
    for (const ProjectionImpl* p : parts_) {
      if (p->weight.requires_grad()) return false;
      if (p->lora_A && !p->lora_merged && p->lora_factor != 0.0) return false;
      if (p->bias.defined() != parts_[0]->bias.defined()) return false;
      if (p->weight.device() != parts_[0]->weight.device() || p->weight.scalar_type() != parts_[0]->weight.scalar_type())
        return false;
    }
    return true;
  }
  // Every part still points into the fused tensors at its own offset.
  bool Current() const {
    if (!weight_.defined()) return false;
    int64_t row = 0;
    for (const ProjectionImpl* p : parts_) {
      if (p->weight.data_ptr() != weight_[row].data_ptr() || p->weight.size(1) != weight_.size(1)) return false;
      if (bias_.defined() && p->bias.data_ptr() != bias_[row].data_ptr()) return false;
      row += p->weight.size(0);
    }
    return row == weight_.size(0);
  }
  void Build() {
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> weights, biases;
    for (const ProjectionImpl* p : parts_) {
      weights.push_back(p->weight);
      if (p->bias.defined()) biases.push_back(p->bias);
    }
    weight_ = torch::cat(weights, 0);
    bias_ = biases.empty() ? torch::Tensor() : torch::cat(biases, 0);
    int64_t row = 0;
    for (ProjectionImpl* p : parts_) {
      const int64_t rows = p->weight.size(0);
      p->weight.set_data(weight_.narrow(0, row, rows));
      if (bias_.defined()) p->bias.set_data(bias_.narrow(0, row, rows));
      row += rows;
    }
  }

  std::vector<ProjectionImpl*> parts_;
  torch::Tensor weight_, bias_;
};

bool IsLoraName(const std::string& name) { return name.find(".lora_") != std::string::npos; }
// Parameters that are not the Hugging Face model's: LoRA branches and the extra vocabulary.
bool IsAdapterName(const std::string& name) { return IsLoraName(name) || name.rfind("extra_vocab.", 0) == 0; }

const std::vector<std::string>& LoraTargetNames() {
  static const std::vector<std::string> names = {"q_proj", "k_proj",    "v_proj",  "o_proj",
                                                 "gate_proj", "up_proj", "down_proj"};
  return names;
}

class EmbeddingImpl : public torch::nn::Module {
 public:
  EmbeddingImpl(int64_t count, int64_t dim, const torch::TensorOptions& options) {
    weight = register_parameter("weight", torch::empty({count, dim}, options));
  }
  torch::Tensor weight;
};
TORCH_MODULE(Embedding);

// LlamaRMSNorm through ATen's rms_norm (one fused kernel forward and backward on CUDA instead of
// eight elementwise ones; statistics in float32 for bf16/fp16 input, as transformers). transformers
// rounds the normalised value to bf16 before multiplying by the weight, the fused kernel multiplies
// in float32 and rounds once: bf16 outputs differ by that one rounding, float32 ones not at all
// (parity tests). A float64 model stays in float64 (transformers would drop it to float32), which
// keeps finite-difference checks exact.
class RmsNormImpl : public torch::nn::Module {
 public:
  RmsNormImpl(int64_t dim, double eps, const torch::TensorOptions& options) : eps_(eps) {
    weight = register_parameter("weight", torch::empty({dim}, options));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    if (x.scalar_type() != torch::kDouble) return torch::rms_norm(x, {weight.size(0)}, weight, eps_);
    return weight * (x * torch::rsqrt(x.pow(2).mean(-1, true) + eps_));
  }
  torch::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RmsNorm);

// Rotary embeddings. The inverse frequencies are not a parameter or buffer (transformers keeps
// them as a non-persistent buffer): they live here in float32 and follow the module's device but
// never its dtype, so a bf16 model still rotates with float32-accurate angles.
class RotaryEmbeddingImpl : public torch::nn::Module {
 public:
  explicit RotaryEmbeddingImpl(const LlamaConfig& config, torch::Device device)
      : inv_freq_(RopeInverseFrequencies(config).to(device)) {}

  void to(torch::Device device, torch::Dtype dtype, bool non_blocking) override {
    inv_freq_ = inv_freq_.to(device, non_blocking);
  }
  void to(torch::Dtype dtype, bool non_blocking) override {}
  void to(torch::Device device, bool non_blocking) override {
    inv_freq_ = inv_freq_.to(device, non_blocking);
  }

  // cos and signed sin [B or 1, 1, T, head_dim] in `dtype` for positions [B or 1, T]: angles in
  // float32 (float64 for a float64 model), cast to the model's dtype as transformers does. The sine's
  // first half is negated (see Rotate): transformers' sin with rotate_half's sign folded in.
  std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& positions,
                                                  torch::ScalarType dtype) const {
    const torch::ScalarType angle_type = dtype == torch::kDouble ? torch::kDouble : torch::kFloat;
    const torch::Tensor freqs = positions.unsqueeze(-1).to(angle_type) * inv_freq_.to(angle_type);
    const torch::Tensor sin = freqs.sin();
    return {torch::cat({freqs, freqs}, -1).unsqueeze(1).cos().to(dtype),
            torch::cat({-sin, sin}, -1).unsqueeze(1).to(dtype)};
  }

  const torch::Tensor& InverseFrequencies() const { return inv_freq_; }

 private:
  torch::Tensor inv_freq_;
};
TORCH_MODULE(RotaryEmbedding);

// transformers' x * cos + rotate_half(x) * sin, where rotate_half(x) = cat(-x2, x1), written as
// x * cos + cat(x2, x1) * cat(-sin1, sin2): bitwise the same values (negation is exact in either
// place), with one roll instead of two slices, a negation and a cat, forward and backward. That
// matters for training on a GPU, where the host's per-kernel cost is what leaves the device idle.
torch::Tensor Rotate(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& signed_sin) {
  return x * cos + x.roll(x.size(-1) / 2, -1) * signed_sin;
}

// How queries may look at keys in one forward pass; shared by every layer.
struct AttentionPattern {
  torch::Tensor mask;      // bool [B or 1, 1, T, T_past + T], true = attend; undefined = no mask
  bool is_causal = false;  // SDPA's own causal mask (no cache, no padding)
};

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const LlamaConfig& config, const torch::TensorOptions& options)
      : heads_(config.num_attention_heads),
        kv_heads_(config.num_key_value_heads),
        head_dim_(config.HeadDim()) {
    const int64_t hidden = config.hidden_size;
    const bool bias = config.attention_bias;
    q_proj = register_module("q_proj", Projection(hidden, heads_ * head_dim_, bias, options));
    k_proj = register_module("k_proj", Projection(hidden, kv_heads_ * head_dim_, bias, options));
    v_proj = register_module("v_proj", Projection(hidden, kv_heads_ * head_dim_, bias, options));
    o_proj = register_module("o_proj", Projection(heads_ * head_dim_, hidden, bias, options));
    fused_qkv_ = FusedProjections({q_proj.get(), k_proj.get(), v_proj.get()});
  }

  // x [B, T, hidden]; cache_keys/values (may be null) hold [B, kv_heads, T_past, head_dim] and
  // receive this step's rotated keys and values appended; with `static_slot` they are a
  // StaticKVCache's fixed buffers and this step's keys are written at that slot instead.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& signed_sin,
                        const AttentionPattern& pattern, torch::Tensor* cache_keys,
                        torch::Tensor* cache_values, const torch::Tensor* static_slot) {
    const int64_t batch = x.size(0);
    const int64_t steps = x.size(1);
    torch::Tensor q, k, v;
    if (const torch::Tensor qkv = fused_qkv_.Forward(x); qkv.defined()) {
      // One GEMM, and one rotation for the query and key heads together.
      // split_with_sizes rather than narrow: its backward is one cat, where each narrow's is a
      // zero fill and a copy of the whole tensor plus an add.
      const std::vector<torch::Tensor> qk_v =
          qkv.view({batch, steps, heads_ + 2 * kv_heads_, head_dim_})
              .transpose(1, 2)
              .split_with_sizes({heads_ + kv_heads_, kv_heads_}, 1);
      const std::vector<torch::Tensor> q_k = Rotate(qk_v[0], cos, signed_sin).split_with_sizes({heads_, kv_heads_}, 1);
      q = q_k[0];
      k = q_k[1];
      v = qk_v[1];
    } else {
      q = q_proj(x).view({batch, steps, heads_, head_dim_}).transpose(1, 2);
      k = k_proj(x).view({batch, steps, kv_heads_, head_dim_}).transpose(1, 2);
      v = v_proj(x).view({batch, steps, kv_heads_, head_dim_}).transpose(1, 2);
      q = Rotate(q, cos, signed_sin);
      k = Rotate(k, cos, signed_sin);
    }
    if (static_slot != nullptr) {
      cache_keys->index_copy_(2, *static_slot, k);
      cache_values->index_copy_(2, *static_slot, v);
      k = *cache_keys;
      v = *cache_values;
    } else if (cache_keys != nullptr) {
      if (cache_keys->defined()) {
        k = torch::cat({*cache_keys, k}, 2);
        v = torch::cat({*cache_values, v}, 2);
      }
      *cache_keys = k;
      *cache_values = v;
    }
    // enable_gqa lets SDPA broadcast the kv heads (transformers' repeat_kv) without copying them.
    const torch::Tensor attended = torch::scaled_dot_product_attention(
        q, k, v, pattern.mask.defined() ? std::optional<torch::Tensor>(pattern.mask) : std::nullopt,
        /*dropout_p=*/0.0, pattern.is_causal, 1.0 / std::sqrt(static_cast<double>(head_dim_)),
        /*enable_gqa=*/kv_heads_ != heads_);
    return o_proj(attended.transpose(1, 2).reshape({batch, steps, heads_ * head_dim_}));
  }

  // Keys and values from every position of x [B, T, hidden], queries only from xq [B, K, hidden]
  // (rows of x at some positions, rotated by cos_q/signed_sin_q [B, 1, K, head_dim]); mask bool
  // [B, 1, K, T]. Returns [B, K, hidden]: for those rows, what forward() returns. No cache.
  torch::Tensor ForwardQueries(const torch::Tensor& x, const torch::Tensor& xq, const torch::Tensor& cos,
                               const torch::Tensor& signed_sin, const torch::Tensor& cos_q,
                               const torch::Tensor& signed_sin_q, const torch::Tensor& mask) {
    const int64_t batch = x.size(0), steps = x.size(1), queries = xq.size(1);
    const torch::Tensor q = Rotate(q_proj(xq).view({batch, queries, heads_, head_dim_}).transpose(1, 2), cos_q, signed_sin_q);
    const torch::Tensor k = Rotate(k_proj(x).view({batch, steps, kv_heads_, head_dim_}).transpose(1, 2), cos, signed_sin);
    const torch::Tensor v = v_proj(x).view({batch, steps, kv_heads_, head_dim_}).transpose(1, 2);
    const torch::Tensor attended = torch::scaled_dot_product_attention(
        q, k, v, mask, /*dropout_p=*/0.0, /*is_causal=*/false, 1.0 / std::sqrt(static_cast<double>(head_dim_)),
        /*enable_gqa=*/kv_heads_ != heads_);
    return o_proj(attended.transpose(1, 2).reshape({batch, queries, heads_ * head_dim_}));
  }

  Projection q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

 private:
  FusedProjections fused_qkv_{{}};
  int64_t heads_;
  int64_t kv_heads_;
  int64_t head_dim_;
};
TORCH_MODULE(Attention);

// SwiGLU: down(silu(gate(x)) * up(x)).
class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(const LlamaConfig& config, const torch::TensorOptions& options) {
    const int64_t hidden = config.hidden_size;
    const int64_t inner = config.intermediate_size;
    const bool bias = config.mlp_bias;
    gate_proj = register_module("gate_proj", Projection(hidden, inner, bias, options));
    up_proj = register_module("up_proj", Projection(hidden, inner, bias, options));
    down_proj = register_module("down_proj", Projection(inner, hidden, bias, options));
    fused_gate_up_ = FusedProjections({gate_proj.get(), up_proj.get()});
  }
  torch::Tensor forward(const torch::Tensor& x) {
    if (const torch::Tensor gate_up = fused_gate_up_.Forward(x); gate_up.defined()) {
      const auto halves = gate_up.chunk(2, -1);
      return down_proj(torch::silu(halves[0]) * halves[1]);
    }
    return down_proj(torch::silu(gate_proj(x)) * up_proj(x));
  }
  Projection gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};

 private:
  FusedProjections fused_gate_up_{{}};
};
TORCH_MODULE(Mlp);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const LlamaConfig& config, const torch::TensorOptions& options) {
    self_attn = register_module("self_attn", Attention(config, options));
    mlp = register_module("mlp", Mlp(config, options));
    input_layernorm = register_module("input_layernorm",
                                      RmsNorm(config.hidden_size, config.rms_norm_eps, options));
    post_attention_layernorm = register_module(
        "post_attention_layernorm", RmsNorm(config.hidden_size, config.rms_norm_eps, options));
  }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& signed_sin,
                        const AttentionPattern& pattern, torch::Tensor* cache_keys,
                        torch::Tensor* cache_values, const torch::Tensor* static_slot) {
    const torch::Tensor h =
        x + self_attn(input_layernorm(x), cos, signed_sin, pattern, cache_keys, cache_values, static_slot);
    return h + mlp(post_attention_layernorm(h));
  }
  // The layer's output at the positions `at` only ([B, K] int64, no cache): keys and values still
  // come from every position of x [B, T, hidden]; queries, the output projection and the MLP run
  // on K rows instead of T. `mask` bool [B, 1, K, T]; cos_q/signed_sin_q the rotary at `at`.
  torch::Tensor ForwardAt(const torch::Tensor& x, const torch::Tensor& at, const torch::Tensor& cos,
                          const torch::Tensor& signed_sin, const torch::Tensor& cos_q,
                          const torch::Tensor& signed_sin_q, const torch::Tensor& mask) {
    const torch::Tensor rows = at.unsqueeze(-1).expand({at.size(0), at.size(1), x.size(2)});
    const torch::Tensor normed = input_layernorm(x);
    const torch::Tensor h =
        x.gather(1, rows) +
        self_attn->ForwardQueries(normed, normed.gather(1, rows), cos, signed_sin, cos_q, signed_sin_q, mask);
    return h + mlp(post_attention_layernorm(h));
  }
  Attention self_attn{nullptr};
  Mlp mlp{nullptr};
  RmsNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
};
TORCH_MODULE(DecoderLayer);

// transformers' LlamaModel: the part registered as "model".
class BackboneImpl : public torch::nn::Module {
 public:
  BackboneImpl(const LlamaConfig& config, const torch::TensorOptions& options) {
    embed_tokens =
        register_module("embed_tokens", Embedding(config.vocab_size, config.hidden_size, options));
    layers = register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
      decoder_layers.push_back(DecoderLayer(config, options));
      layers->push_back(decoder_layers.back());
    }
    norm = register_module("norm", RmsNorm(config.hidden_size, config.rms_norm_eps, options));
    rotary_emb = register_module("rotary_emb", RotaryEmbedding(config, options.device()));
  }
  Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  std::vector<DecoderLayer> decoder_layers;  // the same modules as `layers`, typed
  RmsNorm norm{nullptr};
  RotaryEmbedding rotary_emb{nullptr};
};
TORCH_MODULE(Backbone);

bool IsIgnoredCheckpointTensor(const std::string& name) {
  // Non-persistent rotary buffers that checkpoints written by transformers < 4.31 still carry.
  return name == "model.rotary_emb.inv_freq" ||
         (StartsWith(name, "model.layers.") && EndsWith(name, ".self_attn.rotary_emb.inv_freq"));
}

std::string NameList(const std::vector<std::string>& names) {
  const size_t shown = std::min<size_t>(names.size(), 5);
  std::string text =
      "'" + Join(std::vector<std::string>(names.begin(), names.begin() + shown), "', '") + "'";
  if (names.size() > shown) text += Str(" and ", names.size() - shown, " more");
  return text;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// LlamaConfig

void LlamaConfig::Validate(const std::string& where) const {
  auto positive = [&](int64_t value, const char* key) {
    Check(value > 0, where, ": \"", key, "\" must be positive, got ", value);
  };
  positive(vocab_size, "vocab_size");
  positive(hidden_size, "hidden_size");
  positive(intermediate_size, "intermediate_size");
  positive(num_hidden_layers, "num_hidden_layers");
  positive(num_attention_heads, "num_attention_heads");
  positive(num_key_value_heads, "num_key_value_heads");
  positive(max_position_embeddings, "max_position_embeddings");
  Check(head_dim >= 0, where, ": \"head_dim\" must be positive, got ", head_dim);
  Check(head_dim > 0 || hidden_size % num_attention_heads == 0, where, ": hidden_size (",
        hidden_size, ") is not a multiple of num_attention_heads (", num_attention_heads, ")");
  Check(num_attention_heads % num_key_value_heads == 0, where, ": num_attention_heads (",
        num_attention_heads, ") is not a multiple of num_key_value_heads (", num_key_value_heads,
        ")");
  Check(HeadDim() % 2 == 0, where, ": the head dimension (", HeadDim(),
        ") must be even for rotary embeddings");
  Check(rms_norm_eps > 0, where, ": \"rms_norm_eps\" must be positive, got ", rms_norm_eps);
  Check(rope_theta > 0, where, ": \"rope_theta\" must be positive, got ", rope_theta);
  Check(initializer_range >= 0, where, ": \"initializer_range\" must not be negative, got ",
        initializer_range);
  const RopeScaling& rope = rope_scaling;
  Check(std::find(kRopeTypes.begin(), kRopeTypes.end(), rope.rope_type) != kRopeTypes.end(), where,
        ": rope type \"", rope.rope_type, "\" is not supported (supported: ", Join(kRopeTypes),
        ")");
  if (rope.rope_type != "default")
    Check(rope.factor > 0, where, ": rope scaling \"factor\" must be positive, got ", rope.factor);
  if (rope.rope_type == "llama3") {
    Check(rope.low_freq_factor > 0, where,
          ": rope scaling \"low_freq_factor\" must be positive, got ", rope.low_freq_factor);
    Check(rope.high_freq_factor > rope.low_freq_factor, where,
          ": rope scaling \"high_freq_factor\" (", rope.high_freq_factor,
          ") must exceed \"low_freq_factor\" (", rope.low_freq_factor, ")");
    Check(rope.original_max_position_embeddings > 0, where,
          ": rope scaling \"original_max_position_embeddings\" must be positive, got ",
          rope.original_max_position_embeddings);
  }
  auto token = [&](int64_t id, const char* key, bool optional) {
    Check((optional && id == -1) || (id >= 0 && id < vocab_size), where, ": \"", key, "\" ", id,
          " is outside the vocabulary of ", vocab_size);
  };
  token(bos_token_id, "bos_token_id", true);
  token(pad_token_id, "pad_token_id", true);
  for (int64_t id : eos_token_ids) token(id, "eos_token_id", false);
  Check(std::find(kConfigDtypes.begin(), kConfigDtypes.end(), torch_dtype) != kConfigDtypes.end(),
        where, ": dtype \"", torch_dtype, "\" is not supported (supported: ", Join(kConfigDtypes),
        ")");
}

// Keys this code does not read are ignored: Hugging Face configs carry many that do not change
// the computation (use_cache, pretraining_tp, transformers_version, _name_or_path, generation
// hints). Every key that does change it is read and checked, or refused (quantization_config,
// hidden_act other than silu, partial rotary factors, unknown rope types or rope keys).
LlamaConfig LlamaConfig::FromJson(const json& object, const std::string& where) {
  Check(object.is_object(), where, ": a config must be a JSON object, got ", object.type_name());
  CheckArchitecture(object, where);
  Check(Field(object, "quantization_config") == nullptr, where,
        ": quantized checkpoints (\"quantization_config\") are not supported");
  if (const json* act = Field(object, "hidden_act")) {
    const std::string name = AsString(*act, "hidden_act", where);
    Check(name == "silu", where, ": hidden_act \"", name, "\" is not supported (Llama uses silu)");
  }

  LlamaConfig c;
  c.vocab_size = RequiredInt(object, "vocab_size", where);
  c.hidden_size = RequiredInt(object, "hidden_size", where);
  c.intermediate_size = RequiredInt(object, "intermediate_size", where);
  c.num_hidden_layers = RequiredInt(object, "num_hidden_layers", where);
  c.num_attention_heads = RequiredInt(object, "num_attention_heads", where);
  c.num_key_value_heads = OptionalInt(object, "num_key_value_heads", where, c.num_attention_heads);
  c.head_dim = OptionalInt(object, "head_dim", where, 0);
  Check(Field(object, "head_dim") == nullptr || c.head_dim > 0, where,
        ": \"head_dim\" must be positive, got ", c.head_dim);
  c.max_position_embeddings = OptionalInt(object, "max_position_embeddings", where, 2048);
  c.rms_norm_eps = OptionalNumber(object, "rms_norm_eps", where, 1e-6);
  ParseRope(object, where, c);
  c.tie_word_embeddings = OptionalBool(object, "tie_word_embeddings", where, false);
  c.attention_bias = OptionalBool(object, "attention_bias", where, false);
  c.mlp_bias = OptionalBool(object, "mlp_bias", where, false);
  // Special tokens as transformers' LlamaConfig: an absent key takes its default (bos 1, eos 2,
  // no pad), an explicit null means none. Llama 1/2 configs wrote "pad_token_id": -1 for "none",
  // which is what -1 means here too.
  const bool has_bos = object.contains("bos_token_id");
  c.bos_token_id = OptionalInt(object, "bos_token_id", where, has_bos ? -1 : 1);
  c.pad_token_id = OptionalInt(object, "pad_token_id", where, -1);
  if (object.contains("eos_token_id")) c.eos_token_ids.clear();
  if (const json* eos = Field(object, "eos_token_id")) {
    if (eos->is_array()) {
      for (const json& id : *eos) c.eos_token_ids.push_back(AsInt(id, "eos_token_id", where));
    } else {
      Check(eos->is_number_integer(), where,
            ": \"eos_token_id\" must be an integer or a list of integers, got ", eos->dump());
      c.eos_token_ids.push_back(eos->get<int64_t>());
    }
  }
  // transformers 5 writes "dtype"; 4.x wrote "torch_dtype".
  const json* dtype = Field(object, "dtype");
  const std::string dtype_key = dtype ? "dtype" : "torch_dtype";
  if (!dtype) dtype = Field(object, "torch_dtype");
  if (dtype) c.torch_dtype = AsString(*dtype, dtype_key, where);
  c.initializer_range = OptionalNumber(object, "initializer_range", where, 0.02);
  c.Validate(where);
  return c;
}

LlamaConfig LlamaConfig::FromFile(const std::string& config_json_path) {
  Check(stdfs::is_regular_file(config_json_path), "missing model config: '", config_json_path,
        "' does not exist");
  return FromJson(fs::ReadJson(config_json_path), config_json_path);
}

json LlamaConfig::ToJson() const {
  json rope = nullptr;  // transformers 4.x and 5.x both read a null rope_scaling as no scaling
  if (rope_scaling.rope_type == "linear") {
    rope = {{"rope_type", "linear"}, {"factor", rope_scaling.factor}};
  } else if (rope_scaling.rope_type == "llama3") {
    rope = {{"rope_type", "llama3"},
            {"factor", rope_scaling.factor},
            {"low_freq_factor", rope_scaling.low_freq_factor},
            {"high_freq_factor", rope_scaling.high_freq_factor},
            {"original_max_position_embeddings", rope_scaling.original_max_position_embeddings}};
  }
  json eos = nullptr;
  if (eos_token_ids.size() == 1) {
    eos = eos_token_ids[0];
  } else if (!eos_token_ids.empty()) {
    eos = eos_token_ids;
  }
  auto optional_id = [](int64_t id) { return id >= 0 ? json(id) : json(nullptr); };
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"vocab_size", vocab_size},
          {"hidden_size", hidden_size},
          {"intermediate_size", intermediate_size},
          {"num_hidden_layers", num_hidden_layers},
          {"num_attention_heads", num_attention_heads},
          {"num_key_value_heads", num_key_value_heads},
          {"head_dim", HeadDim()},
          {"hidden_act", "silu"},
          {"max_position_embeddings", max_position_embeddings},
          {"rms_norm_eps", rms_norm_eps},
          {"rope_theta", rope_theta},
          {"rope_scaling", rope},
          {"tie_word_embeddings", tie_word_embeddings},
          {"attention_bias", attention_bias},
          {"attention_dropout", 0.0},
          {"mlp_bias", mlp_bias},
          {"bos_token_id", optional_id(bos_token_id)},
          {"eos_token_id", eos},
          {"pad_token_id", optional_id(pad_token_id)},
          {"torch_dtype", torch_dtype},
          {"initializer_range", initializer_range},
          {"use_cache", true}};
}

// ---------------------------------------------------------------------------------------------
// Rotary frequencies: the float32 operation sequence of transformers' rope init functions
// (`1.0 / x` there is reciprocal(); `c / t` with a Python scalar is t.reciprocal() * c).

torch::Tensor RopeInverseFrequencies(const LlamaConfig& config) {
  const int64_t dim = config.HeadDim();
  const torch::Tensor exponent =
      torch::arange(0, dim, 2, torch::kLong).to(torch::kFloat) / static_cast<double>(dim);
  torch::Tensor inv_freq = torch::pow(config.rope_theta, exponent).reciprocal();
  const RopeScaling& rope = config.rope_scaling;
  if (rope.rope_type == "linear") return inv_freq / rope.factor;
  if (rope.rope_type != "llama3") return inv_freq;

  // Llama 3.1: wavelengths beyond the original context are stretched by `factor`, those shorter
  // than original / high_freq_factor are kept, and the band between is interpolated smoothly.
  const double old_context = static_cast<double>(rope.original_max_position_embeddings);
  const double low_freq_wavelen = old_context / rope.low_freq_factor;
  const double high_freq_wavelen = old_context / rope.high_freq_factor;
  const torch::Tensor wavelen = inv_freq.reciprocal() * (2 * M_PI);
  torch::Tensor scaled = torch::where(wavelen > low_freq_wavelen, inv_freq / rope.factor, inv_freq);
  const torch::Tensor smooth = (wavelen.reciprocal() * old_context - rope.low_freq_factor) /
                               (rope.high_freq_factor - rope.low_freq_factor);
  const torch::Tensor smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled;
  const torch::Tensor medium = torch::logical_not(wavelen < high_freq_wavelen) &
                               torch::logical_not(wavelen > low_freq_wavelen);
  return torch::where(medium, smoothed, scaled);
}

// ---------------------------------------------------------------------------------------------
// LlamaModelImpl

struct LlamaModelImpl::Parts {
  Backbone model{nullptr};
  Projection lm_head{nullptr};  // null when tied to the embeddings

  // Every projection of every layer named `target` (q_proj, ..., down_proj).
  std::vector<ProjectionImpl*> Targets(const std::string& target) const {
    std::vector<ProjectionImpl*> out;
    for (DecoderLayer layer : model->decoder_layers) {  // holders by value: non-const access
      auto& a = layer->self_attn;
      auto& m = layer->mlp;
      ProjectionImpl* p = target == "q_proj"      ? a->q_proj.get()
                          : target == "k_proj"    ? a->k_proj.get()
                          : target == "v_proj"    ? a->v_proj.get()
                          : target == "o_proj"    ? a->o_proj.get()
                          : target == "gate_proj" ? m->gate_proj.get()
                          : target == "up_proj"   ? m->up_proj.get()
                          : target == "down_proj" ? m->down_proj.get()
                                                  : nullptr;
      Check(p != nullptr, "LoRA: unknown target module '", target, "'");
      out.push_back(p);
    }
    return out;
  }
  std::vector<ProjectionImpl*> LoraProjections(const LoraOptions& lora) const {
    std::vector<ProjectionImpl*> out;
    for (const std::string& target : lora.target_modules)
      for (ProjectionImpl* p : Targets(target)) out.push_back(p);
    return out;
  }
};

LlamaModelImpl::LlamaModelImpl(const LlamaConfig& config)
    : LlamaModelImpl(config, torch::TensorOptions().dtype(torch::kFloat), true) {}

LlamaModelImpl::LlamaModelImpl(const LlamaConfig& config, const torch::TensorOptions& options,
                               bool init_weights)
    : config_(config), parts_(std::make_shared<Parts>()) {
  config_.Validate("LlamaConfig");
  Check(torch::isFloatingType(c10::typeMetaToScalarType(options.dtype())),
        "LlamaModel: parameters need a floating-point dtype, got ", options.dtype().name());
  parts_->model = register_module("model", Backbone(config_, options));
  if (!config_.tie_word_embeddings)
    parts_->lm_head = register_module(
        "lm_head", Projection(config_.hidden_size, config_.vocab_size, false, options));
  if (!init_weights) return;

  // transformers' _init_weights: normal(0, initializer_range) for linear and embedding weights,
  // zero biases, unit norm weights, and a zero embedding row for the padding token.
  torch::NoGradGuard no_grad;
  for (auto& named : named_parameters()) {
    const std::string& name = named.key();
    torch::Tensor& p = named.value();
    if (EndsWith(name, "norm.weight")) {
      p.fill_(1.0);
    } else if (EndsWith(name, ".bias")) {
      p.zero_();
    } else {
      p.normal_(0.0, config_.initializer_range);
    }
  }
  if (config_.pad_token_id >= 0) parts_->model->embed_tokens->weight[config_.pad_token_id].zero_();
}

torch::Tensor LlamaModelImpl::EmbedTokens(const torch::Tensor& input_ids) {
  Check(input_ids.defined(), "LlamaModel: input_ids are undefined");
  Check(input_ids.scalar_type() == torch::kLong || input_ids.scalar_type() == torch::kInt,
        "LlamaModel: input_ids must be int64, got ", input_ids.scalar_type());
  const torch::Tensor& weight = parts_->model->embed_tokens->weight;
  if (input_ids.device().is_cpu() && input_ids.numel() > 0) {
    const auto [low, high] = torch::aminmax(input_ids);
    const int64_t lowest = low.item<int64_t>();
    const int64_t highest = high.item<int64_t>();
    Check(lowest >= 0 && highest < TotalVocabulary(), "LlamaModel: token id ",
          lowest < 0 ? lowest : highest, " is outside the vocabulary of ", TotalVocabulary());
  }
  const torch::Tensor ids = input_ids.to(weight.device());
  if (!extra_embed_.defined()) return torch::embedding(weight, ids);
  // Base ids from the frozen table, new ids from the trainable rows.
  const torch::Tensor is_new = (ids >= config_.vocab_size).unsqueeze(-1);
  return torch::where(is_new, torch::embedding(extra_embed_, (ids - config_.vocab_size).clamp_min(0)),
                      torch::embedding(weight, ids.clamp_max(config_.vocab_size - 1)));
}

void LlamaModelImpl::AddVocabulary(int64_t count) {
  Check(count >= 1, "LlamaModel: AddVocabulary needs count >= 1, got ", count);
  Check(!extra_embed_.defined(), "LlamaModel: the extra vocabulary was already added");
  torch::NoGradGuard no_grad;
  const torch::Tensor& embed = parts_->model->embed_tokens->weight;
  const torch::Tensor& head = parts_->lm_head ? parts_->lm_head->weight : embed;
  const torch::Tensor base = embed.to(torch::kFloat);
  // Drawn on the CPU generator whatever the device, so a seed gives the same rows on every device.
  const torch::Tensor noise = torch::randn({count, config_.hidden_size}).to(base.device());
  const torch::Tensor rows = base.mean(0, true) + base.std(0, true, true) * noise;
  // A plain submodule, so the parameters are named "extra_vocab.embed" / "extra_vocab.head".
  auto extra = register_module("extra_vocab", std::make_shared<torch::nn::Module>());
  extra_embed_ = extra->register_parameter("embed", rows.to(embed.options()));
  extra_head_ = extra->register_parameter(
      "head", head.to(torch::kFloat).mean(0, true).expand({count, -1}).contiguous().to(head.options()));
}

int64_t LlamaModelImpl::ExtraVocabulary() const { return extra_embed_.defined() ? extra_embed_.size(0) : 0; }

std::vector<torch::Tensor> LlamaModelImpl::ExtraVocabularyParameters() const {
  if (!extra_embed_.defined()) return {};
  return {extra_embed_, extra_head_};
}

LlamaOutput LlamaModelImpl::forward(const LlamaInput& input) {
  const bool has_ids = input.input_ids.defined();
  const bool has_embeds = input.inputs_embeds.defined();
  Check(has_ids != has_embeds, "LlamaModel: give exactly one of input_ids and inputs_embeds (got ",
        has_ids ? "both" : "neither", ")");
  const torch::Tensor& embed_weight = parts_->model->embed_tokens->weight;
  const torch::ScalarType dtype = embed_weight.scalar_type();
  const torch::Device device = embed_weight.device();

  torch::Tensor hidden;
  if (has_ids) {
    Check(input.input_ids.dim() == 2, "LlamaModel: input_ids must be [B, T], got ",
          ShapeString(input.input_ids.sizes()));
    hidden = EmbedTokens(input.input_ids);
  } else {
    hidden = input.inputs_embeds;
    Check(hidden.dim() == 3 && hidden.size(2) == config_.hidden_size,
          "LlamaModel: inputs_embeds must be [B, T, hidden_size=", config_.hidden_size, "], got ",
          ShapeString(hidden.sizes()));
    Check(hidden.scalar_type() == dtype, "LlamaModel: inputs_embeds are ", hidden.scalar_type(),
          " but the model is ", dtype);
    Check(hidden.device() == device, "LlamaModel: inputs_embeds are on ", hidden.device(),
          " but the model is on ", device);
  }
  const int64_t batch = hidden.size(0);
  const int64_t steps = hidden.size(1);
  Check(batch > 0 && steps > 0, "LlamaModel: empty input ", ShapeString(hidden.sizes()));

  KVCache* cache = input.cache;
  StaticKVCache* fixed = input.static_cache;
  const int64_t layers = config_.num_hidden_layers;
  if (fixed != nullptr) return StaticStep(hidden, input);
  const int64_t past = cache ? cache->Length() : 0;
  if (past > 0) {
    Check(static_cast<int64_t>(cache->keys.size()) == layers &&
              static_cast<int64_t>(cache->values.size()) == layers,
          "LlamaModel: the KV cache has ", cache->keys.size(), " layers, the model ", layers);
    Check(cache->keys[0].size(0) == batch, "LlamaModel: the KV cache holds a batch of ",
          cache->keys[0].size(0), " but the input has ", batch);
  }
  const int64_t total = past + steps;
  // Positions past the trained range would silently extrapolate the rotary embeddings.
  Check(total <= config_.max_position_embeddings, "LlamaModel: ", total, " positions (", past,
        " cached + ", steps, " new) exceed max_position_embeddings ",
        config_.max_position_embeddings);
  Check(input.logits_to_keep >= 0, "LlamaModel: logits_to_keep must not be negative, got ",
        input.logits_to_keep);
  Check(input.logits_to_keep == 0 || !input.logits_positions.defined(),
        "LlamaModel: give logits_to_keep or logits_positions, not both");

  torch::Tensor key_valid;  // bool [B, T_past + T]; undefined = every key is a real token
  if (input.attention_mask.defined()) {
    const torch::Tensor& mask = input.attention_mask;
    Check(mask.dim() == 2 && mask.size(0) == batch && mask.size(1) == total,
          "LlamaModel: attention_mask must be [B, T_past + T] = [", batch, ", ", total, "], got ",
          ShapeString(mask.sizes()));
    key_valid = mask.to(device, torch::kBool);
  }

  torch::Tensor positions;
  if (input.position_ids.defined()) {
    const torch::Tensor& ids = input.position_ids;
    Check(ids.dim() == 2 && (ids.size(0) == batch || ids.size(0) == 1) && ids.size(1) == steps,
          "LlamaModel: position_ids must be [B, T] = [", batch, ", ", steps, "], got ",
          ShapeString(ids.sizes()));
    positions = ids.to(device, torch::kLong);
  } else if (key_valid.defined()) {
    // What transformers' generate() passes for left-padded batches: each row counts its own real
    // tokens; padding sits at position 0.
    const torch::Tensor counts = key_valid.to(torch::kLong).cumsum(1) - 1;
    positions = counts.masked_fill(key_valid.logical_not(), 0).slice(1, past);
  } else {
    positions =
        torch::arange(past, total, torch::TensorOptions(torch::kLong).device(device)).unsqueeze(0);
  }

  AttentionPattern pattern;
  if (key_valid.defined()) {
    // Query i (at absolute position past + i) sees keys k <= past + i that are real tokens. A
    // padding query of a left-padded row would see no key at all, and softmax over nothing is
    // NaN on some SDPA backends; a NaN there would leak into real tokens of later layers through
    // 0 * NaN in the weighted sum. So every query also sees itself: finite values on padding
    // rows (transformers gets zeros or a uniform average there; neither is ever read).
    const auto bool_options = torch::TensorOptions(torch::kBool).device(device);
    const torch::Tensor causal = torch::ones({steps, total}, bool_options).tril(past);
    const torch::Tensor self = torch::ones({steps, total}, bool_options).triu(past) & causal;
    pattern.mask =
        (causal.unsqueeze(0) & (key_valid.unsqueeze(1) | self.unsqueeze(0))).unsqueeze(1);
  } else if (steps > 1) {
    if (past == 0) {
      pattern.is_causal = true;
    } else {
      // SDPA's is_causal aligns the triangle top-left; with a cache it must end bottom-right.
      pattern.mask = torch::ones({steps, total}, torch::TensorOptions(torch::kBool).device(device))
                         .tril(past)
                         .unsqueeze(0)
                         .unsqueeze(0);
    }
  }
  // One new token without padding sees every cached key: no mask at all.

  const auto [cos, signed_sin] = parts_->model->rotary_emb->forward(positions, dtype);
  LlamaOutput output;
  if (input.output_hidden_states) output.hidden_states.push_back(hidden);
  if (cache != nullptr) {
    cache->keys.resize(layers);
    cache->values.resize(layers);
  }
  const bool pruned = input.logits_positions.defined() && input.prune_last_layer && cache == nullptr &&
                      !input.output_hidden_states;
  const torch::Tensor at = pruned ? LogitsPositions(input.logits_positions, batch, steps, device) : torch::Tensor();
  for (int64_t l = 0; l < layers; ++l) {
    if (pruned && l == layers - 1) {
      // Only the chosen positions' outputs are read, and the last layer's other outputs feed
      // nothing: its queries, output projection and MLP run on those K rows instead of all T
      // (a training loss over 16 target tokens of 74 positions skips ~3/4 of the layer's work,
      // forward and backward). Query at index a sees keys j <= a that are real (or itself), as
      // the full pattern above says.
      const torch::Tensor index = torch::arange(steps, torch::TensorOptions(torch::kLong).device(device));
      const torch::Tensor query = at.unsqueeze(-1);                         // [B, K, 1]
      torch::Tensor allowed = index.view({1, 1, steps}) <= query;           // [B, K, T]
      if (key_valid.defined()) allowed = allowed & (key_valid.unsqueeze(1) | index.view({1, 1, steps}) == query);
      const torch::Tensor at_positions = positions.expand({batch, steps}).gather(1, at);
      const auto [cos_q, signed_sin_q] = parts_->model->rotary_emb->forward(at_positions, dtype);
      hidden = parts_->model->decoder_layers[l]->ForwardAt(hidden, at, cos, signed_sin, cos_q, signed_sin_q,
                                                           allowed.unsqueeze(1));
      break;
    }
    hidden = parts_->model->decoder_layers[l]->forward(hidden, cos, signed_sin, pattern,
                                                       cache ? &cache->keys[l] : nullptr,
                                                       cache ? &cache->values[l] : nullptr, nullptr);
    if (input.output_hidden_states) output.hidden_states.push_back(hidden);
  }
  hidden = parts_->model->norm(hidden);
  // transformers' hidden_states end with the final-norm output, not the last layer's raw output.
  if (input.output_hidden_states) output.hidden_states.back() = hidden;
  output.last_hidden_state = hidden;

  const int64_t keep = input.logits_to_keep;
  torch::Tensor kept = keep > 0 && keep < steps ? hidden.slice(1, steps - keep) : hidden;
  if (pruned) {
    kept = hidden;  // the last layer ran at the chosen positions only
  } else if (input.logits_positions.defined()) {
    const torch::Tensor chosen = LogitsPositions(input.logits_positions, batch, steps, device);
    // The LM head over only the positions a loss needs: [B, K, H] instead of [B, T, H].
    kept = hidden.gather(1, chosen.unsqueeze(-1).expand({batch, chosen.size(1), hidden.size(2)}));
  }
  output.logits = Logits(kept);
  return output;
}

torch::Tensor LlamaModelImpl::LogitsPositions(const torch::Tensor& at, int64_t batch, int64_t steps,
                                              const torch::Device& device) const {
  Check(at.dim() == 2 && at.size(0) == batch && at.scalar_type() == torch::kLong,
        "LlamaModel: logits_positions must be int64 [B=", batch, ", K], got ", at.scalar_type(), " ",
        ShapeString(at.sizes()));
  if (at.device().is_cpu() && at.numel() > 0) {
    const auto [low, high] = torch::aminmax(at);
    Check(low.item<int64_t>() >= 0 && high.item<int64_t>() < steps,
          "LlamaModel: logits_positions must be in [0, ", steps, ")");
  }
  return at.to(device);
}

torch::Tensor LlamaModelImpl::Logits(const torch::Tensor& hidden) const {
  const torch::Tensor& embed_weight = parts_->model->embed_tokens->weight;
  const torch::Tensor& head = parts_->lm_head ? parts_->lm_head->weight : embed_weight;
  torch::Tensor logits = torch::linear(hidden, head);
  if (extra_head_.defined() && predict_extra_) logits = torch::cat({logits, torch::linear(hidden, extra_head_)}, -1);
  return embed_weight.scalar_type() == torch::kDouble ? logits : logits.to(torch::kFloat);
}

// One token per row through a StaticKVCache: fixed shapes and no host synchronisation, so the
// whole step can be captured as a CUDA graph. Only shape checks touch the host.
LlamaOutput LlamaModelImpl::StaticStep(torch::Tensor hidden, const LlamaInput& input) {
  StaticKVCache& fixed = *input.static_cache;
  const int64_t batch = hidden.size(0);
  const int64_t layers = config_.num_hidden_layers;
  Check(input.cache == nullptr, "LlamaModel: give cache or static_cache, not both");
  Check(hidden.size(1) == 1, "LlamaModel: a static-cache step takes one token per row, got ", hidden.size(1));
  Check(static_cast<int64_t>(fixed.keys.size()) == layers && static_cast<int64_t>(fixed.values.size()) == layers &&
            fixed.valid.defined() && fixed.slot.defined(),
        "LlamaModel: the static KV cache has ", fixed.keys.size(), " layers, the model ", layers);
  Check(fixed.valid.size(0) == batch, "LlamaModel: the static KV cache holds a batch of ", fixed.valid.size(0),
        " but the input has ", batch);
  Check(input.position_ids.defined() && input.position_ids.dim() == 2 && input.position_ids.size(1) == 1,
        "LlamaModel: a static-cache step needs position_ids [B, 1]");
  Check(!input.output_hidden_states && !input.logits_positions.defined(),
        "LlamaModel: a static-cache step returns logits only");
  const torch::ScalarType dtype = parts_->model->embed_tokens->weight.scalar_type();
  fixed.valid.index_fill_(1, fixed.slot, true);
  AttentionPattern pattern;
  pattern.mask = fixed.valid.view({batch, 1, 1, fixed.Capacity()});
  const auto [cos, signed_sin] = parts_->model->rotary_emb->forward(input.position_ids, dtype);
  for (int64_t l = 0; l < layers; ++l)
    hidden = parts_->model->decoder_layers[l]->forward(hidden, cos, signed_sin, pattern, &fixed.keys[l], &fixed.values[l],
                                                       &fixed.slot);
  fixed.slot.add_(1);
  LlamaOutput output;
  output.last_hidden_state = parts_->model->norm(hidden);
  output.logits = Logits(output.last_hidden_state);
  return output;
}

StaticKVCache StaticKVCache::FromCache(const KVCache& cache, const torch::Tensor& mask, int64_t capacity) {
  Check(!cache.keys.empty() && cache.keys.size() == cache.values.size(), "StaticKVCache: the cache is empty");
  const int64_t past = cache.Length();
  const torch::Tensor& first = cache.keys[0];
  Check(mask.dim() == 2 && mask.size(0) == first.size(0) && mask.size(1) == past, "StaticKVCache: mask must be [",
        first.size(0), ", ", past, "], got ", ShapeString(mask.sizes()));
  Check(capacity >= past, "StaticKVCache: capacity ", capacity, " is below the ", past, " cached positions");
  StaticKVCache fixed;
  for (size_t l = 0; l < cache.keys.size(); ++l) {
    for (const auto& [from, to] : {std::pair{&cache.keys[l], &fixed.keys}, std::pair{&cache.values[l], &fixed.values}}) {
      torch::Tensor buffer = torch::zeros({from->size(0), from->size(1), capacity, from->size(3)}, from->options());
      buffer.narrow(2, 0, past).copy_(*from);
      to->push_back(buffer);
    }
  }
  fixed.valid = torch::zeros({first.size(0), capacity}, first.options().dtype(torch::kBool));
  fixed.valid.narrow(1, 0, past).copy_(mask.ne(0));
  fixed.slot = torch::full({1}, past, first.options().dtype(torch::kLong));
  return fixed;
}

void LlamaModelImpl::Freeze() {
  for (auto& [name, p] : BaseParameters()) p.set_requires_grad(false);
  eval();
}

bool LlamaModelImpl::IsFrozen() const {
  if (is_training()) return false;
  for (const auto& [name, p] : BaseParameters())
    if (p.requires_grad()) return false;
  return true;
}

int64_t LlamaModelImpl::ParameterCount() const {
  int64_t count = 0;
  for (const auto& [name, p] : BaseParameters()) count += p.numel();
  return count;
}

std::vector<std::pair<std::string, torch::Tensor>> LlamaModelImpl::BaseParameters() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& named : named_parameters())
    if (!IsAdapterName(named.key())) out.emplace_back(named.key(), named.value());
  return out;
}

// ---------------------------------------------------------------------------------------------
// LoRA

void LoraOptions::Validate() const {
  Check(rank >= 1, "lora.rank must be >= 1, got ", rank);
  Check(alpha > 0, "lora.alpha must be positive, got ", alpha);
  Check(dropout >= 0 && dropout < 1, "lora.dropout must be in [0, 1), got ", dropout);
  Check(!target_modules.empty(), "lora.target_modules must name at least one projection");
  std::set<std::string> seen;
  for (const std::string& t : target_modules) {
    const auto& valid = LoraTargetNames();
    Check(std::find(valid.begin(), valid.end(), t) != valid.end(), "lora.target_modules: unknown module '",
          t, "' (valid: ", Join(valid, ", "), ")");
    Check(seen.insert(t).second, "lora.target_modules names '", t, "' twice");
  }
}

void LoraOptions::Load(config::Node node) {
  node.Read("rank", rank, config::InRange<int64_t>(1, 65536))
      .Read("alpha", alpha, config::InRange(1e-9, 1e9))
      .Read("dropout", dropout, config::InRange(0.0, 0.999))
      .Read("target_modules", target_modules);
  try {
    Validate();
  } catch (const Error& e) {
    node.Fail("target_modules", e.what());
  }
}

void LlamaModelImpl::AddLora(const LoraOptions& options) {
  Check(!has_lora_, "LlamaModel: LoRA was already added");
  options.Validate();
  lora_ = options;
  const double factor = lora_scale_ * options.alpha / static_cast<double>(options.rank);
  for (ProjectionImpl* p : parts_->LoraProjections(options)) p->AddLora(options.rank, options.dropout, factor);
  has_lora_ = true;
  lora_merged_ = false;
}

bool LlamaModelImpl::HasLora() const { return has_lora_; }

const LoraOptions& LlamaModelImpl::Lora() const {
  Check(has_lora_, "LlamaModel: the model has no LoRA");
  return lora_;
}

std::vector<torch::Tensor> LlamaModelImpl::LoraParameters() const {
  std::vector<torch::Tensor> out;
  for (const auto& named : named_parameters())
    if (IsLoraName(named.key())) out.push_back(named.value());
  return out;
}

void LlamaModelImpl::SetLoraScale(double scale) {
  Check(std::isfinite(scale) && scale >= 0, "LoRA scale must be finite and >= 0, got ", scale);
  const bool merged = lora_merged_;
  if (merged) UnmergeLora();
  lora_scale_ = scale;
  if (has_lora_) {
    const double factor = scale * lora_.alpha / static_cast<double>(lora_.rank);
    for (ProjectionImpl* p : parts_->LoraProjections(lora_)) p->lora_factor = factor;
  }
  if (merged) MergeLora();
}

void LlamaModelImpl::MergeLora() {
  Check(has_lora_, "LlamaModel: MergeLora without LoRA");
  Check(!lora_merged_, "LlamaModel: LoRA is already merged");
  for (ProjectionImpl* p : parts_->LoraProjections(lora_)) p->Merge(true);
  lora_merged_ = true;
}

void LlamaModelImpl::UnmergeLora() {
  Check(has_lora_, "LlamaModel: UnmergeLora without LoRA");
  Check(lora_merged_, "LlamaModel: LoRA is not merged");
  for (ProjectionImpl* p : parts_->LoraProjections(lora_)) p->Merge(false);
  lora_merged_ = false;
}

namespace {
const char kPeftPrefix[] = "base_model.model.";
}  // namespace

void LlamaModelImpl::SaveLora(const std::string& adapter_dir) const {
  Check(has_lora_, "LlamaModel: SaveLora without LoRA");
  fs::MakeDirs(adapter_dir);
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& named : named_parameters())
    if (IsLoraName(named.key()))
      tensors.emplace_back(kPeftPrefix + named.key(), named.value().detach());
  safetensors::Save(adapter_dir + "/adapter_model.safetensors", tensors, {{"format", "pt"}});
  const json config = {{"peft_type", "LORA"},
                       {"task_type", "CAUSAL_LM"},
                       {"r", lora_.rank},
                       {"lora_alpha", lora_.alpha},
                       {"lora_dropout", lora_.dropout},
                       {"target_modules", lora_.target_modules},
                       {"bias", "none"},
                       {"fan_in_fan_out", false},
                       {"inference_mode", false}};
  fs::AtomicWriteString(adapter_dir + "/adapter_config.json", config.dump(2) + "\n");
}

void LlamaModelImpl::LoadLora(const std::string& adapter_dir) {
  const std::string config_path = adapter_dir + "/adapter_config.json";
  const std::string weights_path = adapter_dir + "/adapter_model.safetensors";
  Check(stdfs::is_regular_file(config_path), "'", adapter_dir, "' has no adapter_config.json");
  const json config = fs::ReadJson(config_path);
  LoraOptions options;
  try {
    Check(config.value("peft_type", std::string("LORA")) == "LORA", "peft_type must be \"LORA\"");
    options.rank = config.at("r").get<int64_t>();
    options.alpha = config.at("lora_alpha").get<double>();
    options.dropout = config.value("lora_dropout", 0.0);
    const json& targets = config.at("target_modules");
    options.target_modules = targets.is_string() ? std::vector<std::string>{targets.get<std::string>()}
                                                 : targets.get<std::vector<std::string>>();
    Check(config.value("bias", std::string("none")) == "none", "only bias \"none\" is supported");
    options.Validate();
  } catch (const json::exception& e) {
    throw Error(Str(config_path, ": invalid LoRA config (", e.what(), ")"));
  } catch (const Error& e) {
    throw Error(Str(config_path, ": ", e.what()));
  }
  if (has_lora_) {
    Check(options.rank == lora_.rank && options.target_modules == lora_.target_modules, config_path,
          ": rank ", options.rank, " / targets ", Join(options.target_modules, ","),
          " differ from the model's LoRA (rank ", lora_.rank, " / ", Join(lora_.target_modules, ","), ")");
    Check(!lora_merged_, "LlamaModel: unmerge LoRA before loading another adapter");
  }
  const safetensors::Reader reader(weights_path);
  // Shapes follow from the options and the base weights, so everything is checked before the
  // model changes.
  std::set<std::string> expected;
  for (const std::string& target : options.target_modules) {
    const std::vector<ProjectionImpl*> projections = parts_->Targets(target);
    for (size_t layer = 0; layer < projections.size(); ++layer) {
      const bool mlp = target == "gate_proj" || target == "up_proj" || target == "down_proj";
      const std::string base =
          Str(kPeftPrefix, "model.layers.", layer, mlp ? ".mlp." : ".self_attn.", target);
      const torch::Tensor& w = projections[layer]->weight;
      const std::vector<std::pair<std::string, std::vector<int64_t>>> parts = {
          {base + ".lora_A.weight", {options.rank, w.size(1)}},
          {base + ".lora_B.weight", {w.size(0), options.rank}}};
      for (const auto& [name, shape] : parts) {
        Check(reader.Has(name), weights_path, ": missing tensor '", name, "'");
        const safetensors::TensorInfo& info = reader.Info(name);
        Check(info.shape == shape, weights_path, ": tensor '", name, "' has shape ",
              ShapeString(info.shape), ", expected ", ShapeString(shape));
        Check(torch::isFloatingType(info.scalar_type), weights_path, ": tensor '", name,
              "' has dtype ", info.dtype, ", expected a floating-point one");
        expected.insert(name);
      }
    }
  }
  for (const std::string& name : reader.Names())
    Check(expected.count(name), weights_path, ": unexpected tensor '", name,
          "' (not a LoRA weight of this model's targets)");
  if (!has_lora_) AddLora(options);
  torch::NoGradGuard no_grad;
  for (const auto& named : named_parameters())
    if (IsLoraName(named.key())) named.value().copy_(reader.Get(kPeftPrefix + named.key()));
  lora_.dropout = options.dropout;
  lora_.alpha = options.alpha;
  for (ProjectionImpl* p : parts_->LoraProjections(lora_)) p->lora_dropout = options.dropout;
  SetLoraScale(lora_scale_);  // alpha may differ from a previously added LoRA's
}

void LlamaModelImpl::LoadWeights(const std::string& model_dir) {
  const safetensors::Checkpoint checkpoint(model_dir);
  const auto& source = checkpoint.Sources();  // tensor name -> file holding it
  const std::string& described = checkpoint.Described();

  // Check everything before copying anything, so that a bad checkpoint leaves the model intact.
  std::vector<std::pair<torch::Tensor, std::pair<const safetensors::Reader*, std::string>>> plan;
  std::vector<std::string> missing;
  std::set<std::string> expected;
  for (const auto& [name, parameter] : BaseParameters()) {
    expected.insert(name);
    auto found = source.find(name);
    if (found == source.end()) {
      missing.push_back(name);
      continue;
    }
    const safetensors::TensorInfo& info = found->second->Info(name);
    Check(info.shape == parameter.sizes().vec(), found->second->Path(), ": tensor '", name,
          "' has shape ", ShapeString(info.shape), ", expected ", ShapeString(parameter.sizes()));
    Check(torch::isFloatingType(info.scalar_type), found->second->Path(), ": tensor '", name,
          "' has dtype ", info.dtype, ", expected a floating-point one (F32, F16, BF16)");
    plan.push_back({parameter, {found->second, name}});
  }
  Check(missing.empty(), described, ": missing tensor", missing.size() > 1 ? "s " : " ",
        NameList(missing));

  std::vector<std::string> unexpected;
  for (const auto& [name, reader] : source) {
    if (expected.count(name) || IsIgnoredCheckpointTensor(name)) continue;
    if (name == "lm_head.weight" && config_.tie_word_embeddings) {
      // transformers ties the head to the embeddings after loading; a stored copy is unused.
      Check(
          reader->Info(name).shape == std::vector<int64_t>{config_.vocab_size, config_.hidden_size},
          reader->Path(), ": tensor 'lm_head.weight' has shape ",
          ShapeString(reader->Info(name).shape), ", expected ",
          ShapeString({config_.vocab_size, config_.hidden_size}));
      continue;
    }
    unexpected.push_back(name);
  }
  Check(unexpected.empty(), described, ": unexpected tensor", unexpected.size() > 1 ? "s " : " ",
        NameList(unexpected), " (not a parameter of this ", config_.num_hidden_layers, "-layer ",
        config_.tie_word_embeddings ? "tied" : "untied", " Llama)");

  torch::NoGradGuard no_grad;
  for (auto& [parameter, where] : plan) where.first->CopyInto(where.second, parameter);
}

void LlamaModelImpl::SaveWeights(const std::string& model_dir) const {
  fs::MakeDirs(model_dir);
  json config = config_.ToJson();
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& [name, parameter] : BaseParameters()) tensors.emplace_back(name, parameter.detach());
  // Declare the dtype the weights are actually stored in, not the one the model was loaded from.
  config["torch_dtype"] = ConfigDtypeName(tensors.front().second.scalar_type());
  safetensors::Save(model_dir + "/model.safetensors", tensors, {{"format", "pt"}});
  fs::AtomicWriteString(model_dir + "/config.json", config.dump(2) + "\n");
}

LlamaModel LoadLlama(const std::string& model_dir, torch::Device device, torch::ScalarType dtype) {
  Check(stdfs::is_directory(model_dir), "model directory '", model_dir, "' does not exist");
  const std::string config_path = model_dir + "/config.json";
  Check(stdfs::is_regular_file(config_path), "'", model_dir,
        "' has no config.json (not a Hugging Face model directory)");
  const LlamaConfig config = LlamaConfig::FromFile(config_path);
  // Allocated directly in the target dtype and device, uninitialised: every weight is loaded.
  LlamaModel model(config, torch::TensorOptions().dtype(dtype).device(device),
                   /*init_weights=*/false);
  model->LoadWeights(model_dir);
  return model;
}

}  // namespace slm::text
