#include "core/module_weights.h"

#include "core/error.h"
#include "core/fs.h"
#include "core/safetensors.h"

namespace slm::module_weights {

void Freeze(torch::nn::Module& module) {
  for (torch::Tensor& p : module.parameters()) p.set_requires_grad(false);
  module.eval();
}

bool IsFrozen(const torch::nn::Module& module) {
  if (module.is_training()) return false;
  for (const torch::Tensor& p : module.parameters())
    if (p.requires_grad()) return false;
  return true;
}

int64_t CountParameters(const torch::nn::Module& module) {
  int64_t count = 0;
  for (const torch::Tensor& p : module.parameters()) count += p.numel();
  return count;
}

NamedTensors ParametersAndExtra(const torch::nn::Module& module, const NamedTensors& extra,
                                const std::function<bool(const std::string&)>& collides,
                                const std::string& owner, const std::string& whose) {
  NamedTensors tensors;
  for (const auto& named : module.named_parameters()) tensors.emplace_back(named.key(), named.value().detach());
  for (const auto& [name, tensor] : extra) {
    Check(!collides(name), owner, "::SaveWeights: extra tensor '", name, "' would collide with ", whose);
    tensors.emplace_back(name, tensor.detach());
  }
  return tensors;
}

void WriteModelDirectory(const std::string& model_dir, const NamedTensors& tensors, const nlohmann::json& config) {
  fs::MakeDirs(model_dir);
  safetensors::Save(model_dir + "/model.safetensors", tensors, {{"format", "pt"}});
  fs::AtomicWriteString(model_dir + "/config.json", config.dump(2) + "\n");
}

}  // namespace slm::module_weights
