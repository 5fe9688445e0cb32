// What the model towers (audio/whisper_encoder.h, vision/clip_vision.h, text/llama.h) and the
// projector (adapters/projector.h) do alike with the parameters of a torch module: freeze them,
// count them, and write them as a Hugging Face model directory (config.json + model.safetensors,
// the layout their LoadWeights and transformers read back).
// Thread-safety: none of its own; a module must not be changed concurrently with these calls.
#pragma once

#include <torch/nn/module.h>

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace slm::module_weights {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// No parameter of `module` (submodules included) requires grad, and it is in eval mode.
void Freeze(torch::nn::Module& module);
// True when Freeze's state holds: eval mode and no parameter requiring grad.
bool IsFrozen(const torch::nn::Module& module);
// Elements of all of the module's parameters.
int64_t CountParameters(const torch::nn::Module& module);

// The module's parameters under their module names, then `extra` under their own names, all
// detached (same dtype and device, no copy). An extra name for which `collides` is true is an
// slm::Error "<owner>::SaveWeights: extra tensor '<name>' would collide with <whose>".
NamedTensors ParametersAndExtra(const torch::nn::Module& module, const NamedTensors& extra,
                                const std::function<bool(const std::string&)>& collides,
                                const std::string& owner, const std::string& whose);

// Creates model_dir (and parents) and writes model_dir/model.safetensors (`tensors` in their own
// dtypes, metadata format=pt, as transformers writes it) and model_dir/config.json (`config`
// indented by 2, newline-terminated), each file replaced atomically.
void WriteModelDirectory(const std::string& model_dir, const NamedTensors& tensors, const nlohmann::json& config);

}  // namespace slm::module_weights
