// The frozen text backbone: a decoder-only LM of one of the Hugging Face families of
// text/model_family.h (llama, qwen2, qwen3, mistral, gemma2). The names LlamaModel / LlamaConfig
// are historical: they are the project's decoder backbone for every family.
//
// Architecture (as transformers' modeling_llama): token embeddings -> N x [RMSNorm -> grouped-query
// self-attention with rotary position embeddings -> residual -> RMSNorm -> SwiGLU MLP -> residual]
// -> final RMSNorm -> LM head (tied to the embeddings or separate). Rotary embeddings use
// rope_theta and the `rope_scaling` variants of Hugging Face configs: none ("default"), "linear"
// and "llama3" (Llama-3.1/3.2: low/high frequency factors around the original context). The other
// families change this through the traits of their ModelFamily row and the options of LlamaConfig:
// biases on q/k/v (qwen2), per-head q/k RMSNorm (qwen3), sliding-window attention on some or all
// layers (mistral, qwen2/qwen3 when enabled, gemma2), and for gemma2 scaled embeddings, (1 + w)
// RMSNorm, norms after attention and around the MLP, GeGLU, a query_pre_attn_scalar attention
// scale and tanh soft-capping of attention scores and of the final logits.
//
// Sliding window (LlamaConfig::LayerWindow): a query at position p of a sliding layer attends to
// keys at positions p - window < j <= p, in every pass (plain, growing KVCache, StaticKVCache,
// paged KVBlockPool, and the pruned last layer of logits_positions). Caches keep every position;
// the window saves compute nothing and memory nothing, it only changes what is attended.
//
// Parameters are registered under exactly the Hugging Face names ("model.embed_tokens.weight",
// "model.layers.0.self_attn.q_proj.weight", ..., "model.norm.weight", "lm_head.weight"), so a
// Hugging Face directory (config.json + model.safetensors or a sharded
// model.safetensors.index.json; F32/F16/BF16 on disk) loads unchanged, and what SaveWeights writes
// loads in transformers with the family's <Family>ForCausalLM.from_pretrained.
//
// Shapes and dtypes: input_ids [B, T] int64; inputs_embeds [B, T, hidden_size] in the model's
// dtype (as transformers: already scaled for gemma2, EmbedTokens returns them so); attention_mask
// [B, T_past + T] (1 = real token, 0 = padding; left padding for batched
// generation); logits [B, T, vocab_size] float32 (computed in the model's dtype, returned as fp32;
// a float64 model returns float64 logits, so gradient checks keep their precision).
// Any dtype (float32, bfloat16, float16, float64) on CPU or CUDA.
//
// Positions: with position_ids undefined, positions count the real tokens of each row
// (cumsum(attention_mask) - 1, padding at 0), which is what transformers' generate() passes for
// left-padded batches; without an attention_mask that is T_past, T_past + 1, ... . Padding rows
// produce finite (meaningless) values, never NaN. A sequence longer than max_position_embeddings
// (T_past + T) is an error. Token ids are range-checked when they are on the CPU (a check on a GPU
// would cost a host sync per step); ids already on a GPU must be below vocab_size.
//
// Thread-safety: forward() on a frozen model from several threads is safe when each call has its
// own KVCache; LoadWeights/Freeze mutate the module and need exclusive access.
#pragma once

#include <torch/torch.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/config.h"
#include "text/kv_cache.h"
#include "text/lora_bank.h"
#include "text/model_family.h"

namespace slm::safetensors {
struct Plan;
}  // namespace slm::safetensors

namespace slm::text {

struct RopeScaling {
  std::string rope_type = "default";                // "default" (no scaling), "linear", "llama3"
  double factor = 1.0;                              // linear, llama3
  double low_freq_factor = 1.0;                     // llama3
  double high_freq_factor = 4.0;                    // llama3
  int64_t original_max_position_embeddings = 8192;  // llama3
};

struct LlamaConfig {
  std::string model_type = "llama";  // the family (text/model_family.h): its fixed traits
  int64_t vocab_size = 32000;
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 11008;
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 32;
  int64_t num_key_value_heads = 32;
  int64_t head_dim = 0;  // 0 = hidden_size / num_attention_heads
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;
  bool mlp_bias = false;
  int64_t bos_token_id = 1;
  std::vector<int64_t> eos_token_ids = {2};  // config.json's eos_token_id: an int or a list
  int64_t pad_token_id = -1;                 // -1 = none
  std::string torch_dtype = "float32";       // as declared in config.json
  double initializer_range = 0.02;           // std of the normal init of a fresh model
  std::string hidden_act = "silu";           // "silu" (SwiGLU) or "gelu_pytorch_tanh" (GeGLU)
  // Sliding-window attention: 0 = none. Which layers slide: layer_types, or when that is empty,
  // every layer for the kAllLayers families (mistral), even layers for gemma2, none for qwen.
  int64_t sliding_window = 0;
  std::vector<std::string> layer_types;  // per layer "full_attention" | "sliding_attention"
  // gemma2 only (0 = off): attention scale 1/sqrt(query_pre_attn_scalar) instead of
  // 1/sqrt(head_dim); tanh soft-capping cap * tanh(x / cap) of attention scores and final logits.
  double query_pre_attn_scalar = 0;
  double attn_logit_softcapping = 0;
  double final_logit_softcapping = 0;

  int64_t HeadDim() const { return head_dim > 0 ? head_dim : hidden_size / num_attention_heads; }
  // The family row of model_type; slm::Error for an unknown one.
  const ModelFamily& Family() const;
  // The sliding window of `layer`, 0 for a full-attention layer.
  int64_t LayerWindow(int64_t layer) const;
  bool HasSlidingLayers() const;
  bool QkvBias() const { return attention_bias || Family().qkv_bias; }
  // 1/sqrt(query_pre_attn_scalar) or 1/sqrt(head_dim).
  double AttentionScale() const;
  // slm::Error for inconsistent values (heads not dividing, kv heads not dividing heads, an
  // option the family's transformers class cannot express, ...).
  void Validate(const std::string& where) const;
  // Parses a Hugging Face config.json object. slm::Error naming `where` and the key for a missing
  // or invalid key, an unsupported architecture (model_type / architectures must name a family of
  // text/model_family.h; the message lists them), an unsupported hidden_act, rope_scaling type,
  // layer type or family option (e.g. gemma2's use_bidirectional_attention).
  static LlamaConfig FromJson(const nlohmann::json& json, const std::string& where);
  static LlamaConfig FromFile(const std::string& config_json_path);
  // Hugging Face config.json content for the family's transformers class (architectures,
  // model_type, every field above under the family's key names).
  nlohmann::json ToJson() const;
};

struct LlamaInput {
  torch::Tensor input_ids;       // [B, T] int64, or undefined when inputs_embeds is given
  torch::Tensor inputs_embeds;   // [B, T, hidden_size]; exactly one of the two must be defined
  torch::Tensor attention_mask;  // [B, T_past + T], 1 = attend; undefined = all ones
  torch::Tensor position_ids;    // [B, T] int64; undefined = cumsum(attention_mask) - 1 (as HF)
  KVCache* cache = nullptr;      // when set, attends to the cache and appends this step's keys
  // Instead of `cache`: one token per row (T = 1), position_ids required, attention_mask unused
  // (the cache's `valid` slots are the mask). See StaticKVCache.
  StaticKVCache* static_cache = nullptr;
  // Instead of `cache`: rows whose caches live in a KVBlockPool (text/kv_cache.h, PagedKVBatch:
  // right-padded columns, positions and mask from the block tables; attention_mask and
  // position_ids must be undefined). Inference only (NoGradGuard). Logits as usual
  // (logits_to_keep / logits_positions, e.g. each row's last real column).
  const PagedKVBatch* paged = nullptr;
  // Per-row LoRA from a LoraBank (text/lora_bank.h): rows of different adapters in one pass.
  // Inference only; the model's own LoRA must be off (SetLoraScale(0)) or absent. Works with
  // every cache form; the last-layer pruning of logits_positions is skipped.
  const RowLora* row_lora = nullptr;
  bool output_hidden_states = false;
  int64_t logits_to_keep = 0;  // 0 = logits for every position; k = only the last k positions
  // [B, K] int64: logits only at these positions of each row (a training loss needs the target
  // positions only, which saves the LM head over long speech prompts). Exclusive with
  // logits_to_keep. Without a cache and hidden states, the last decoder layer also runs its
  // queries, output projection and MLP at these K positions only (its other outputs feed
  // nothing), and last_hidden_state is then [B, K, hidden_size] at these positions.
  torch::Tensor logits_positions;
  // false: the last layer runs at every position even with logits_positions (the same values;
  // `slm bench train --full-last-layer` measures the saving in one build).
  bool prune_last_layer = true;
};

struct LlamaOutput {
  torch::Tensor logits;  // [B, T | k | K, vocab_size] float32 (fp64 model: fp64)
  torch::Tensor last_hidden_state;           // [B, T, hidden_size] after the final norm ([B, K, ...]
                                             // with logits_positions and no cache: see above)
  std::vector<torch::Tensor> hidden_states;  // if requested: num_hidden_layers + 1, HF convention
};

// LoRA (Hu et al. 2021) on the backbone's linear layers: each targeted projection y = x W^T + b
// becomes y = x W^T + b + scale * (alpha / rank) * dropout(x) A^T B^T with A [rank, in] (Kaiming-
// uniform init, as PEFT) and B [out, rank] (zeros, so a fresh LoRA changes nothing). Parameters are
// named as PEFT names them ("model.layers.0.self_attn.q_proj.lora_A.weight"), and SaveLora writes
// PEFT's adapter directory (adapter_config.json + adapter_model.safetensors with the
// "base_model.model." prefix), which peft.PeftModel.from_pretrained loads.
// `scale` is a runtime factor (1 by default) applied on top of alpha / rank: the "LoRA scaling
// discount" of forgetting ablations (e.g. 0.5 halves the update at inference).
struct LoraOptions {
  int64_t rank = 8;
  double alpha = 16.0;
  double dropout = 0.0;  // on the LoRA branch's input, training mode only
  // Projection names: any of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj.
  std::vector<std::string> target_modules = {"q_proj", "v_proj"};
  // Keys rank, alpha, dropout, target_modules (strict; an unknown module name lists the valid ones).
  void Load(config::Node node);
  // slm::Error naming the field for an invalid value.
  void Validate() const;
};

// A PEFT LoRA adapter directory read without a model: its options and its tensors under the
// model's parameter names ("model.layers.0.self_attn.q_proj.lora_A.weight" [r, in], "...lora_B
// .weight" [out, r]; PEFT's "base_model.model." prefix removed), as stored (dtype of the file).
struct LoraAdapter {
  LoraOptions options;
  std::map<std::string, torch::Tensor> weights;
};
// slm::Error naming the file and tensor for a missing/invalid adapter_config.json, a missing,
// misshaped (for `model`'s geometry) or unexpected tensor.
LoraAdapter ReadLoraAdapter(const LlamaConfig& model, const std::string& adapter_dir);

// Inverse rotary frequencies [HeadDim() / 2] float32 for config.rope_scaling, computed with the
// same float32 operations as transformers' ROPE_INIT_FUNCTIONS ("default", "linear", "llama3").
torch::Tensor RopeInverseFrequencies(const LlamaConfig& config);

class LlamaModelImpl : public torch::nn::Module {
 public:
  // A fresh model initialised as transformers does (normal(0, initializer_range) weights, zero
  // biases, unit norms), float32 on the CPU.
  explicit LlamaModelImpl(const LlamaConfig& config);
  // Parameters allocated with `options` (dtype, device); init_weights = false leaves them
  // uninitialised, for a caller that loads every weight right after (LoadLlama).
  LlamaModelImpl(const LlamaConfig& config, const torch::TensorOptions& options, bool init_weights);

  LlamaOutput forward(const LlamaInput& input);
  // Token embeddings [B, T, hidden_size] of ids [B, T] (what adapters splice into).
  torch::Tensor EmbedTokens(const torch::Tensor& input_ids);
  const LlamaConfig& Config() const { return config_; }

  // No base parameter requires grad and the module is in eval mode; gradients still flow through
  // the activations to inputs_embeds (adapters train through the frozen backbone). LoRA
  // parameters keep requiring grad: they are the trainable part.
  void Freeze();
  bool IsFrozen() const;  // every base parameter frozen and eval mode

  // Adds LoRA to every targeted projection of every layer, parameters in the base weights' dtype
  // and device, requiring grad. slm::Error if LoRA was already added or the options are invalid.
  void AddLora(const LoraOptions& options);
  bool HasLora() const;
  const LoraOptions& Lora() const;  // slm::Error without LoRA
  std::vector<torch::Tensor> LoraParameters() const;
  // Runtime factor on every LoRA update (>= 0). Works merged or not (a merged model is re-merged).
  void SetLoraScale(double scale);
  double LoraScale() const { return lora_scale_; }
  // Folds scale * alpha / rank * B A into each base weight (computed in float32, then cast) so that
  // inference costs nothing extra; UnmergeLora subtracts the same product. In float32 the round
  // trip restores the weights to rounding error; in bf16 each merge/unmerge rounds the weight.
  void MergeLora();
  void UnmergeLora();
  bool LoraMerged() const { return lora_merged_; }
  // PEFT adapter directory (see LoraOptions). LoadLora adds LoRA with the directory's options when
  // the model has none (or checks they match) and loads A and B; slm::Error naming the file and
  // tensor for anything missing, misshaped or unexpected, leaving the model unchanged.
  void SaveLora(const std::string& adapter_dir) const;
  void LoadLora(const std::string& adapter_dir);

  // New tokens beyond config.vocab_size (speech units "<u0>".. reserved by the tokenizer): `count`
  // trainable rows appended to the input embeddings and to the LM head (also for tied models), so
  // ids vocab_size .. vocab_size+count-1 embed and are predicted while every base weight stays
  // frozen: the trainable vocabulary of a TTS adapter (SpeechGPT/SIMS-style unit tokens). New
  // embedding rows start at the mean base embedding plus noise of the base rows' std; new head
  // rows at the mean base head row, so a new token starts as likely as an average one.
  // Parameters "extra_vocab.embed" and "extra_vocab.head", [count, hidden_size], in the base dtype
  // and device; never part of BaseParameters / SaveWeights (the adapter saves them). Logits then
  // have TotalVocabulary() columns. slm::Error if already added or count < 1.
  void AddVocabulary(int64_t count);
  int64_t ExtraVocabulary() const;
  int64_t TotalVocabulary() const { return config_.vocab_size + ExtraVocabulary(); }
  // {embed, head} when added, else empty.
  std::vector<torch::Tensor> ExtraVocabularyParameters() const;
  // With false, logits cover the base vocabulary only (the extra rows stay embedded): the
  // untouched backbone's distribution over its own tokens, e.g. a text-retention reference.
  // Not thread-safe against concurrent forward passes.
  void SetPredictsExtraVocabulary(bool on) { predict_extra_ = on; }
  bool PredictsExtraVocabulary() const { return predict_extra_; }

  // Loads Hugging Face weights from model_dir (model.safetensors, or model.safetensors.index.json
  // with its shards), converting to this module's dtype and device. slm::Error naming the tensor
  // for a missing, unexpected or wrongly shaped tensor, and naming the file for unreadable ones.
  // Nothing is changed unless every tensor checks out. A tied model may omit lm_head.weight (one
  // that stores it has it ignored, as transformers ties it to the embeddings); the
  // "*.rotary_emb.inv_freq" buffers older checkpoints carry are ignored (recomputed from config).
  void LoadWeights(const std::string& model_dir);
  // The checks of LoadWeights without reading any tensor data (a model allocated on the meta
  // device can check a directory of any size): slm::Error as LoadWeights.
  void CheckWeights(const std::string& model_dir) const;
  // Writes config.json and model.safetensors (HF names; a tied lm_head is not stored twice). LoRA
  // is never part of it (SaveLora); a merged LoRA is, inside the base weights.
  void SaveWeights(const std::string& model_dir) const;
  int64_t ParameterCount() const;  // base parameters (LoRA excluded)
  // Base parameters by Hugging Face name (LoRA excluded).
  std::vector<std::pair<std::string, torch::Tensor>> BaseParameters() const;

 private:
  // The base parameters under their Hugging Face names, with the tolerated extras LoadWeights names.
  safetensors::Plan WeightPlan() const;
  LlamaOutput StaticStep(torch::Tensor hidden, const LlamaInput& input);
  LlamaOutput PagedForward(torch::Tensor hidden, const LlamaInput& input);
  void CheckRowLora(const RowLora& lora, int64_t batch) const;
  // LM head (+ extra vocabulary) in float32 (float64 for a float64 model).
  torch::Tensor Logits(const torch::Tensor& hidden) const;
  // input.logits_positions checked against [B, K] int64 in [0, steps) and moved to `device`.
  torch::Tensor LogitsPositions(const torch::Tensor& at, int64_t batch, int64_t steps,
                                const torch::Device& device) const;
  LlamaConfig config_;
  int64_t sliding_window_ = 0;  // the window of the sliding layers; 0 when none slides
  LoraOptions lora_;
  bool has_lora_ = false;
  bool lora_merged_ = false;
  double lora_scale_ = 1.0;
  torch::Tensor extra_embed_, extra_head_;  // AddVocabulary
  bool predict_extra_ = true;
  // Submodules registered as "model" (embed_tokens, layers, norm) and "lm_head"; defined in
  // llama.cpp.
  struct Parts;
  std::shared_ptr<Parts> parts_;
};
TORCH_MODULE(LlamaModel);

// config.json + weights of a Hugging Face directory, on `device` in `dtype`.
LlamaModel LoadLlama(const std::string& model_dir, torch::Device device = torch::kCPU,
                     torch::ScalarType dtype = torch::kFloat);

}  // namespace slm::text
