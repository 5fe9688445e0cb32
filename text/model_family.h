// The decoder-only families the backbone (text/llama.h) runs, one row of traits each: what the
// family's transformers class computes differently from LlamaForCausalLM, which config.json keys
// it reads, and the defaults its config class gives keys a config.json leaves out. One model code
// path reads these traits (text/llama_layers.h); there is no copy of the model per family.
//
//   llama    LlamaForCausalLM: Llama 1/2/3.x (rope scaling "linear", "llama3"), SmolLM/SmolLM2,
//            TinyLlama; optional biases (attention_bias on q/k/v/o, mlp_bias)
//   qwen2    Qwen2ForCausalLM: Qwen2/Qwen2.5; bias on q/k/v (never on o); sliding-window layers
//            from use_sliding_window + max_window_layers or layer_types
//   qwen3    Qwen3ForCausalLM: Qwen3 dense; RMSNorm over each query and key head before the
//            rotation (q_norm, k_norm); explicit head_dim
//   mistral  MistralForCausalLM: Mistral 7B; sliding_window on every layer (null = none)
//   gemma2   Gemma2ForCausalLM: token embeddings times sqrt(hidden_size), RMSNorm scaling by
//            (1 + weight) in float32, norms after attention and around the MLP, GeGLU
//            (gelu_pytorch_tanh), attention scale 1/sqrt(query_pre_attn_scalar), tanh
//            soft-capping of attention scores and final logits, sliding-window layers from
//            layer_types (alternating, sliding first, by default)
//
// Thread-safety: the table is immutable.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace slm::text {

// How a family's config.json says which layers attend within a sliding window.
enum class SlidingWindowKeys {
  kNone,        // no sliding-window attention
  kAllLayers,   // "sliding_window" (an int, or null = none) applies to every layer
  kQwen,        // "use_sliding_window", "sliding_window", "max_window_layers", "layer_types"
  kLayerTypes,  // "sliding_window" + "layer_types" (absent: even layers slide, odd are full)
};

struct ModelFamily {
  const char* model_type;    // config.json "model_type"
  const char* architecture;  // the transformers class, config.json "architectures"
  const char* examples;      // checkpoints of the family, for messages and docs

  // Computation.
  bool qkv_bias;             // q/k/v projections always carry a bias (o_proj does not)
  bool qk_norm;              // q_norm / k_norm over each head before the rotation
  bool gemma;                // scaled embeddings, (1 + w) RMSNorm, sandwich norms, soft-capping,
                             // query_pre_attn_scalar
  bool reads_attention_bias;  // "attention_bias": a bias on q/k/v/o
  bool reads_mlp_bias;        // "mlp_bias": a bias on gate/up/down
  SlidingWindowKeys sliding;
  const char* activation_key;  // "hidden_act" or "hidden_activation"

  // transformers' defaults for keys a config.json leaves out.
  const char* default_activation;
  int64_t default_head_dim;  // 0 = hidden_size / num_attention_heads
  int64_t default_max_position_embeddings;
  bool default_tie_word_embeddings;
  int64_t default_bos_token_id;  // -1 = none
  int64_t default_eos_token_id;  // -1 = none
  int64_t default_pad_token_id;  // -1 = none
  int64_t default_sliding_window;  // 0 = none
};

// Every supported family, in the order above.
const std::vector<ModelFamily>& ModelFamilies();
// "llama, qwen2, qwen3, mistral, gemma2".
std::string SupportedModelTypes();
// The family of a model_type. slm::Error naming `where`, the value and the supported ones.
const ModelFamily& FindModelFamily(const std::string& model_type, const std::string& where);
// The family whose transformers class is `architecture` ("Qwen2ForCausalLM"), or nullptr.
const ModelFamily* FamilyOfArchitecture(const std::string& architecture);

// Activations the MLP supports: "silu" (SwiGLU) and "gelu_pytorch_tanh" (GeGLU, tanh approximation).
const std::vector<std::string>& SupportedActivations();

}  // namespace slm::text
