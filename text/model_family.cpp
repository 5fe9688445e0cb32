#include "text/model_family.h"

#include "core/error.h"
#include "core/strings.h"

namespace slm::text {

const std::vector<ModelFamily>& ModelFamilies() {
  // Defaults as transformers' configuration_<family>.py declares them.
  static const std::vector<ModelFamily> families = {
      {"llama", "LlamaForCausalLM", "Llama 2, Llama 3.x, SmolLM2, TinyLlama",
       /*qkv_bias=*/false, /*qk_norm=*/false, /*gemma=*/false, /*reads_attention_bias=*/true,
       /*reads_mlp_bias=*/true, SlidingWindowKeys::kNone, "hidden_act", "silu", 0, 2048, false, 1, 2, -1, 0},
      {"qwen2", "Qwen2ForCausalLM", "Qwen2, Qwen2.5", true, false, false, false, false,
       SlidingWindowKeys::kQwen, "hidden_act", "silu", 0, 32768, false, -1, -1, -1, 4096},
      {"qwen3", "Qwen3ForCausalLM", "Qwen3 (dense)", false, true, false, true, false, SlidingWindowKeys::kQwen,
       "hidden_act", "silu", 128, 32768, false, -1, -1, -1, 4096},
      {"mistral", "MistralForCausalLM", "Mistral 7B v0.1-v0.3", false, false, false, false, false,
       SlidingWindowKeys::kAllLayers, "hidden_act", "silu", 0, 131072, false, 1, 2, -1, 4096},
      {"gemma2", "Gemma2ForCausalLM", "Gemma 2", false, false, true, true, false, SlidingWindowKeys::kLayerTypes,
       "hidden_activation", "gelu_pytorch_tanh", 256, 8192, true, 2, 1, 0, 4096},
  };
  return families;
}

std::string SupportedModelTypes() {
  std::vector<std::string> names;
  for (const ModelFamily& f : ModelFamilies()) names.push_back(f.model_type);
  return Join(names, ", ");
}

const ModelFamily& FindModelFamily(const std::string& model_type, const std::string& where) {
  for (const ModelFamily& f : ModelFamilies())
    if (model_type == f.model_type) return f;
  throw Error(Str(where, ": model_type \"", model_type, "\" is not supported (supported: ", SupportedModelTypes(),
                  ")"));
}

const ModelFamily* FamilyOfArchitecture(const std::string& architecture) {
  for (const ModelFamily& f : ModelFamilies())
    if (architecture == f.architecture) return &f;
  return nullptr;
}

const std::vector<std::string>& SupportedActivations() {
  static const std::vector<std::string> names = {"silu", "gelu_pytorch_tanh"};
  return names;
}

}  // namespace slm::text
