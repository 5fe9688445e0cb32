// The backbone's building blocks (text/llama.h is the public contract): projections with LoRA,
// fused projections, RMSNorm, rotary embeddings, attention, the MLP and decoder layers, each
// registering its parameters under the name transformers uses. Internal to text/: included by the
// llama*.cpp files only.
#pragma once

#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <optional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/strings.h"
#include "text/kv_cache.h"
#include "text/llama.h"
#include "text/lora_bank.h"

namespace slm::text {
namespace detail {

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

inline bool IsLoraName(const std::string& name) { return name.find(".lora_") != std::string::npos; }
// Parameters that are not the Hugging Face model's: LoRA branches and the extra vocabulary.
inline bool IsAdapterName(const std::string& name) { return IsLoraName(name) || name.rfind("extra_vocab.", 0) == 0; }

inline const std::vector<std::string>& LoraTargetNames() {
  static const std::vector<std::string> names(kLoraTargets.begin(), kLoraTargets.end());
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
// With unit_offset (Gemma), the scale is (1 + weight) and everything runs in float32 before one
// rounding to the input's dtype, as Gemma2RMSNorm does: 1 + w rounded to bf16 would lose the small
// weights the (1 + w) form exists for.
class RmsNormImpl : public torch::nn::Module {
 public:
  RmsNormImpl(int64_t dim, double eps, const torch::TensorOptions& options, bool unit_offset = false)
      : eps_(eps), unit_offset_(unit_offset) {
    weight = register_parameter("weight", torch::empty({dim}, options));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const std::vector<int64_t> shape = {weight.size(0)};
    if (x.scalar_type() == torch::kDouble) {
      const torch::Tensor scale = unit_offset_ ? weight + 1.0 : weight;
      return scale * (x * torch::rsqrt(x.pow(2).mean(-1, true) + eps_));
    }
    if (!unit_offset_) return torch::rms_norm(x, shape, weight, eps_);
    return torch::rms_norm(x.to(torch::kFloat), shape, weight.to(torch::kFloat) + 1.0, eps_).to(x.scalar_type());
  }
  torch::Tensor weight;

 private:
  double eps_;
  bool unit_offset_;
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
inline torch::Tensor Rotate(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& signed_sin) {
  return x * cos + x.roll(x.size(-1) / 2, -1) * signed_sin;
}

// How queries may look at keys in one forward pass; shared by every layer of one kind.
struct AttentionPattern {
  torch::Tensor mask;      // bool [B or 1, 1, T, T_keys], true = attend; undefined = no mask
  bool is_causal = false;  // SDPA's own causal mask (no cache, no padding)
};

// Attention of q [B, H, T, D] over k, v [B, KV, S, D]: softmax(scale * q k^T (masked)) v.
// SDPA, unless the scores are soft-capped (Gemma 2: cap * tanh(scores / cap), which SDPA cannot
// do): then transformers' eager sequence (fp32 softmax, kv heads repeated).
inline torch::Tensor Attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                            const AttentionPattern& pattern, double scale, double softcap) {
  const bool gqa = k.size(1) != q.size(1);
  if (softcap <= 0)
    // enable_gqa lets SDPA broadcast the kv heads (transformers' repeat_kv) without copying them.
    return torch::scaled_dot_product_attention(
        q, k, v, pattern.mask.defined() ? std::optional<torch::Tensor>(pattern.mask) : std::nullopt,
        /*dropout_p=*/0.0, pattern.is_causal, scale, /*enable_gqa=*/gqa);
  const int64_t groups = q.size(1) / k.size(1);
  const torch::Tensor keys = gqa ? k.repeat_interleave(groups, 1) : k;
  const torch::Tensor values = gqa ? v.repeat_interleave(groups, 1) : v;
  torch::Tensor scores = torch::matmul(q, keys.transpose(2, 3)) * scale;
  scores = torch::tanh(scores / softcap) * softcap;
  torch::Tensor allowed = pattern.mask;
  if (pattern.is_causal) {
    const auto bool_options = torch::TensorOptions(torch::kBool).device(q.device());
    allowed = torch::ones({q.size(2), k.size(2)}, bool_options).tril(k.size(2) - q.size(2));
  }
  if (allowed.defined()) scores = scores.masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity());
  return torch::matmul(torch::softmax(scores, -1, torch::kFloat).to(q.scalar_type()), values);
}

// How one forward pass stores this pass's keys and values and reads what a layer attends to; one
// object per pass, shared by the layers (text/kv_cache.h describes the three cache forms).
class CacheAccess {
 public:
  virtual ~CacheAccess() = default;
  // k, v: the pass's rotated keys and values [B, kv_heads, T, head_dim] of `layer`. Returns the
  // keys and values the layer attends to, [B, kv_heads, T_keys, head_dim].
  virtual std::pair<torch::Tensor, torch::Tensor> Update(int64_t layer, const torch::Tensor& k,
                                                         const torch::Tensor& v) = 0;
};

// KVCache: the new positions are appended (one concatenation per layer per pass).
class GrowingCacheAccess : public CacheAccess {
 public:
  explicit GrowingCacheAccess(KVCache& cache) : cache_(cache) {}
  std::pair<torch::Tensor, torch::Tensor> Update(int64_t layer, const torch::Tensor& k, const torch::Tensor& v) override {
    torch::Tensor& keys = cache_.keys[layer];
    torch::Tensor& values = cache_.values[layer];
    keys = keys.defined() ? torch::cat({keys, k}, 2) : k;
    values = values.defined() ? torch::cat({values, v}, 2) : v;
    return {keys, values};
  }

 private:
  KVCache& cache_;
};

// StaticKVCache: the one new position is written at the device-side slot; the layer attends to
// the whole buffer (its `valid` mask hides unused slots).
class StaticCacheAccess : public CacheAccess {
 public:
  explicit StaticCacheAccess(StaticKVCache& cache) : cache_(cache) {}
  std::pair<torch::Tensor, torch::Tensor> Update(int64_t layer, const torch::Tensor& k, const torch::Tensor& v) override {
    cache_.keys[layer].index_copy_(2, cache_.slot, k);
    cache_.values[layer].index_copy_(2, cache_.slot, v);
    return {cache_.keys[layer], cache_.values[layer]};
  }

 private:
  StaticKVCache& cache_;
};

// KVBlockPool: the pass's keys go to their slots in the pool (`write` [B * T], padding columns to
// the scratch block); the layer attends to each row's first L positions gathered through its
// block table (`read` [B * L]). The slot lists are computed once per pass (LlamaModelImpl).
class PagedCacheAccess : public CacheAccess {
 public:
  PagedCacheAccess(KVBlockPool& pool, torch::Tensor write, torch::Tensor read, int64_t batch, int64_t keys)
      : pool_(pool), write_(std::move(write)), read_(std::move(read)), batch_(batch), keys_(keys) {}
  std::pair<torch::Tensor, torch::Tensor> Update(int64_t layer, const torch::Tensor& k, const torch::Tensor& v) override {
    const int64_t heads = k.size(1), dim = k.size(3);
    torch::Tensor& pool_keys = pool_.Keys(layer);
    torch::Tensor& pool_values = pool_.Values(layer);
    pool_keys.index_copy_(0, write_, k.transpose(1, 2).reshape({-1, heads, dim}));
    pool_values.index_copy_(0, write_, v.transpose(1, 2).reshape({-1, heads, dim}));
    return {pool_keys.index_select(0, read_).view({batch_, keys_, heads, dim}).transpose(1, 2),
            pool_values.index_select(0, read_).view({batch_, keys_, heads, dim}).transpose(1, 2)};
  }

 private:
  KVBlockPool& pool_;
  torch::Tensor write_, read_;
  int64_t batch_, keys_;
};

// What every layer of one forward pass shares.
struct LayerContext {
  torch::Tensor cos, signed_sin;  // rotary of the pass's positions [B or 1, 1, T, head_dim]
  AttentionPattern pattern;
  AttentionPattern sliding;       // the same limited to the sliding window, for sliding layers
  CacheAccess* cache = nullptr;   // null: no cache
  const RowLora* lora = nullptr;  // per-row LoRA from a bank, or null
  int64_t layer = 0;
};

// The rows' bank LoRA update [B, T, out] of projection kLoraTargets[target] for x [B, T, in], or
// undefined when there is no row LoRA or no bank slot targets that projection.
inline torch::Tensor RowLoraDelta(const LayerContext& c, int64_t target, const torch::Tensor& x) {
  if (c.lora == nullptr) return {};
  const torch::Tensor& a = c.lora->bank->A(c.layer, target);
  if (!a.defined()) return {};
  const torch::Tensor a_rows = a.index_select(0, c.lora->slots);                           // [B, R, in]
  const torch::Tensor b_rows = c.lora->bank->B(c.layer, target).index_select(0, c.lora->slots);  // [B, out, R]
  return torch::bmm(torch::bmm(x, a_rows.transpose(1, 2)), b_rows.transpose(1, 2));
}

// y + delta when delta is defined (in place: row LoRA runs without autograd).
inline torch::Tensor AddDelta(torch::Tensor y, const torch::Tensor& delta) {
  if (delta.defined()) y.add_(delta);
  return y;
}

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const LlamaConfig& config, int64_t layer, const torch::TensorOptions& options)
      : heads_(config.num_attention_heads),
        kv_heads_(config.num_key_value_heads),
        head_dim_(config.HeadDim()),
        scale_(config.AttentionScale()),
        softcap_(config.attn_logit_softcapping),
        window_(config.LayerWindow(layer)) {
    const int64_t hidden = config.hidden_size;
    const bool qkv_bias = config.QkvBias();
    q_proj = register_module("q_proj", Projection(hidden, heads_ * head_dim_, qkv_bias, options));
    k_proj = register_module("k_proj", Projection(hidden, kv_heads_ * head_dim_, qkv_bias, options));
    v_proj = register_module("v_proj", Projection(hidden, kv_heads_ * head_dim_, qkv_bias, options));
    o_proj = register_module("o_proj", Projection(heads_ * head_dim_, hidden, config.attention_bias, options));
    if (config.Family().qk_norm) {
      q_norm = register_module("q_norm", RmsNorm(head_dim_, config.rms_norm_eps, options));
      k_norm = register_module("k_norm", RmsNorm(head_dim_, config.rms_norm_eps, options));
    }
    fused_qkv_ = FusedProjections({q_proj.get(), k_proj.get(), v_proj.get()});
  }

  // The layer's window (0 = full attention).
  int64_t Window() const { return window_; }

  // x [B, T, hidden] -> [B, T, hidden]. The pass's keys and values go through c.cache when set.
  torch::Tensor forward(const torch::Tensor& x, const LayerContext& c) {
    const int64_t batch = x.size(0);
    const int64_t steps = x.size(1);
    torch::Tensor q, k, v;
    if (torch::Tensor qkv = fused_qkv_.Forward(x); qkv.defined()) {
      if (c.lora != nullptr) {
        const int64_t sizes[3] = {heads_ * head_dim_, kv_heads_ * head_dim_, kv_heads_ * head_dim_};
        int64_t offset = 0;
        for (int64_t t = 0; t < 3; ++t) {
          if (const torch::Tensor d = RowLoraDelta(c, t, x); d.defined()) qkv.narrow(-1, offset, sizes[t]).add_(d);
          offset += sizes[t];
        }
      }
      // split_with_sizes rather than narrow: its backward is one cat, where each narrow's is a
      // zero fill and a copy of the whole tensor plus an add.
      const torch::Tensor heads = qkv.view({batch, steps, heads_ + 2 * kv_heads_, head_dim_});
      if (q_norm) {
        const std::vector<torch::Tensor> parts = heads.split_with_sizes({heads_, kv_heads_, kv_heads_}, 2);
        q = Rotate(q_norm(parts[0]).transpose(1, 2), c.cos, c.signed_sin);
        k = Rotate(k_norm(parts[1]).transpose(1, 2), c.cos, c.signed_sin);
        v = parts[2].transpose(1, 2);
      } else {
        // One GEMM, and one rotation for the query and key heads together.
        const std::vector<torch::Tensor> qk_v = heads.transpose(1, 2).split_with_sizes({heads_ + kv_heads_, kv_heads_}, 1);
        const std::vector<torch::Tensor> q_k =
            Rotate(qk_v[0], c.cos, c.signed_sin).split_with_sizes({heads_, kv_heads_}, 1);
        q = q_k[0];
        k = q_k[1];
        v = qk_v[1];
      }
    } else {
      q = Heads(AddDelta(q_proj(x), RowLoraDelta(c, 0, x)), heads_, q_norm);
      k = Heads(AddDelta(k_proj(x), RowLoraDelta(c, 1, x)), kv_heads_, k_norm);
      v = Heads(AddDelta(v_proj(x), RowLoraDelta(c, 2, x)), kv_heads_, nullptr);
      q = Rotate(q, c.cos, c.signed_sin);
      k = Rotate(k, c.cos, c.signed_sin);
    }
    if (c.cache != nullptr) std::tie(k, v) = c.cache->Update(c.layer, k, v);
    const torch::Tensor attended = Attend(q, k, v, window_ > 0 ? c.sliding : c.pattern, scale_, softcap_);
    const torch::Tensor merged = attended.transpose(1, 2).reshape({batch, steps, heads_ * head_dim_});
    return AddDelta(o_proj(merged), RowLoraDelta(c, 3, merged));
  }

  // Keys and values from every position of x [B, T, hidden], queries only from xq [B, K, hidden]
  // (rows of x at some positions, rotated by cos_q/signed_sin_q [B, 1, K, head_dim]); mask bool
  // [B, 1, K, T] (the caller applies this layer's window). Returns [B, K, hidden]: for those
  // rows, what forward() returns. No cache.
  torch::Tensor ForwardQueries(const torch::Tensor& x, const torch::Tensor& xq, const torch::Tensor& cos,
                               const torch::Tensor& signed_sin, const torch::Tensor& cos_q,
                               const torch::Tensor& signed_sin_q, const torch::Tensor& mask) {
    const int64_t batch = x.size(0), queries = xq.size(1);
    const torch::Tensor q = Rotate(Heads(q_proj(xq), heads_, q_norm), cos_q, signed_sin_q);
    const torch::Tensor k = Rotate(Heads(k_proj(x), kv_heads_, k_norm), cos, signed_sin);
    const torch::Tensor v = Heads(v_proj(x), kv_heads_, nullptr);
    AttentionPattern pattern;
    pattern.mask = mask;
    const torch::Tensor attended = Attend(q, k, v, pattern, scale_, softcap_);
    return o_proj(attended.transpose(1, 2).reshape({batch, queries, heads_ * head_dim_}));
  }

  Projection q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  RmsNorm q_norm{nullptr}, k_norm{nullptr};  // qk_norm families only

 private:
  // [B, T, count * head_dim] -> [B, count, T, head_dim], each head normalised when `norm` is set.
  torch::Tensor Heads(const torch::Tensor& y, int64_t count, RmsNorm norm) const {
    torch::Tensor h = y.view({y.size(0), y.size(1), count, head_dim_});
    if (norm) h = norm(h);
    return h.transpose(1, 2);
  }

  FusedProjections fused_qkv_{{}};
  int64_t heads_;
  int64_t kv_heads_;
  int64_t head_dim_;
  double scale_;
  double softcap_;
  int64_t window_;
};
TORCH_MODULE(Attention);

// Gated MLP: down(act(gate(x)) * up(x)), act = silu (SwiGLU) or tanh-approximated gelu (GeGLU).
class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(const LlamaConfig& config, const torch::TensorOptions& options) : gelu_(config.hidden_act != "silu") {
    const int64_t hidden = config.hidden_size;
    const int64_t inner = config.intermediate_size;
    const bool bias = config.mlp_bias;
    gate_proj = register_module("gate_proj", Projection(hidden, inner, bias, options));
    up_proj = register_module("up_proj", Projection(hidden, inner, bias, options));
    down_proj = register_module("down_proj", Projection(inner, hidden, bias, options));
    fused_gate_up_ = FusedProjections({gate_proj.get(), up_proj.get()});
  }
  torch::Tensor forward(const torch::Tensor& x, const LayerContext* c = nullptr) {
    torch::Tensor inner;
    if (torch::Tensor gate_up = fused_gate_up_.Forward(x); gate_up.defined()) {
      const std::vector<torch::Tensor> halves = gate_up.chunk(2, -1);
      if (c != nullptr) {
        AddDelta(halves[0], RowLoraDelta(*c, 4, x));
        AddDelta(halves[1], RowLoraDelta(*c, 5, x));
      }
      inner = Act(halves[0]) * halves[1];
    } else if (c != nullptr) {
      inner = Act(AddDelta(gate_proj(x), RowLoraDelta(*c, 4, x))) * AddDelta(up_proj(x), RowLoraDelta(*c, 5, x));
    } else {
      inner = Act(gate_proj(x)) * up_proj(x);
    }
    return c != nullptr ? AddDelta(down_proj(inner), RowLoraDelta(*c, 6, inner)) : down_proj(inner);
  }
  Projection gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};

 private:
  torch::Tensor Act(const torch::Tensor& x) const { return gelu_ ? torch::gelu(x, "tanh") : torch::silu(x); }
  FusedProjections fused_gate_up_{{}};
  bool gelu_;
};
TORCH_MODULE(Mlp);

// Pre-norm residual block. Llama: x + attn(norm1(x)), then h + mlp(norm2(h)) where norm2 is
// registered as "post_attention_layernorm". Gemma 2 (sandwich norms): x + post_attention(attn(
// input(x))), then h + post_feedforward(mlp(pre_feedforward(h))).
class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const LlamaConfig& config, int64_t layer, const torch::TensorOptions& options) {
    const bool gemma = config.Family().gemma;
    auto norm = [&](const char* name) {
      return register_module(name, RmsNorm(config.hidden_size, config.rms_norm_eps, options, gemma));
    };
    self_attn = register_module("self_attn", Attention(config, layer, options));
    mlp = register_module("mlp", Mlp(config, options));
    input_layernorm = norm("input_layernorm");
    post_attention_layernorm = norm("post_attention_layernorm");
    if (gemma) {
      pre_feedforward_layernorm = norm("pre_feedforward_layernorm");
      post_feedforward_layernorm = norm("post_feedforward_layernorm");
    }
  }
  torch::Tensor forward(const torch::Tensor& x, const LayerContext& c) {
    const LayerContext* lora = c.lora != nullptr ? &c : nullptr;
    if (pre_feedforward_layernorm) {
      const torch::Tensor h = x + post_attention_layernorm(self_attn->forward(input_layernorm(x), c));
      return h + post_feedforward_layernorm(mlp->forward(pre_feedforward_layernorm(h), lora));
    }
    const torch::Tensor h = x + self_attn->forward(input_layernorm(x), c);
    return h + mlp->forward(post_attention_layernorm(h), lora);
  }
  // The layer's output at the positions `at` only ([B, K] int64, no cache): keys and values still
  // come from every position of x [B, T, hidden]; queries, the output projection and the MLP run
  // on K rows instead of T. `mask` bool [B, 1, K, T] with this layer's window applied;
  // cos_q/signed_sin_q the rotary at `at`.
  torch::Tensor ForwardAt(const torch::Tensor& x, const torch::Tensor& at, const torch::Tensor& cos,
                          const torch::Tensor& signed_sin, const torch::Tensor& cos_q,
                          const torch::Tensor& signed_sin_q, const torch::Tensor& mask) {
    const torch::Tensor rows = at.unsqueeze(-1).expand({at.size(0), at.size(1), x.size(2)});
    const torch::Tensor normed = input_layernorm(x);
    torch::Tensor attended =
        self_attn->ForwardQueries(normed, normed.gather(1, rows), cos, signed_sin, cos_q, signed_sin_q, mask);
    if (pre_feedforward_layernorm) {
      const torch::Tensor h = x.gather(1, rows) + post_attention_layernorm(attended);
      return h + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h)));
    }
    const torch::Tensor h = x.gather(1, rows) + attended;
    return h + mlp(post_attention_layernorm(h));
  }
  Attention self_attn{nullptr};
  Mlp mlp{nullptr};
  RmsNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  RmsNorm pre_feedforward_layernorm{nullptr}, post_feedforward_layernorm{nullptr};  // gemma2 only
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
      decoder_layers.push_back(DecoderLayer(config, i, options));
      layers->push_back(decoder_layers.back());
    }
    norm = register_module("norm", RmsNorm(config.hidden_size, config.rms_norm_eps, options, config.Family().gemma));
    rotary_emb = register_module("rotary_emb", RotaryEmbedding(config, options.device()));
  }
  Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  std::vector<DecoderLayer> decoder_layers;  // the same modules as `layers`, typed
  RmsNorm norm{nullptr};
  RotaryEmbedding rotary_emb{nullptr};
};
TORCH_MODULE(Backbone);

inline bool IsIgnoredCheckpointTensor(const std::string& name) {
  // Non-persistent rotary buffers that checkpoints written by transformers < 4.31 still carry.
  return name == "model.rotary_emb.inv_freq" ||
         (StartsWith(name, "model.layers.") && EndsWith(name, ".self_attn.rotary_emb.inv_freq"));
}

}  // namespace detail

struct LlamaModelImpl::Parts {
  detail::Backbone model{nullptr};
  detail::Projection lm_head{nullptr};  // null when tied to the embeddings

  // Every projection of every layer named `target` (q_proj, ..., down_proj).
  std::vector<detail::ProjectionImpl*> Targets(const std::string& target) const {
    std::vector<detail::ProjectionImpl*> out;
    for (detail::DecoderLayer layer : model->decoder_layers) {  // holders by value: non-const access
      auto& a = layer->self_attn;
      auto& m = layer->mlp;
      detail::ProjectionImpl* p = target == "q_proj"      ? a->q_proj.get()
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
  std::vector<detail::ProjectionImpl*> LoraProjections(const LoraOptions& lora) const {
    std::vector<detail::ProjectionImpl*> out;
    for (const std::string& target : lora.target_modules)
      for (detail::ProjectionImpl* p : Targets(target)) out.push_back(p);
    return out;
  }
};

}  // namespace slm::text
