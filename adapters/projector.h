// Projectors: the small trainable maps from an encoder's feature space into the frozen LM's input
// embedding space. Chosen by name in config through a registry (an unknown name is an error that
// lists the valid ones). Every projector maps
//   input  [B, T, input_dim]  (float32/bf16, encoder frames or image patches)
//   output [B, OutputLength(T), output_dim]  (same dtype/device)
// and reports its time compression, so a caller can compute how many LM positions a given number
// of encoder frames occupies.
//
// Registered now: "linear" (LiMBeR: one affine map) and "mlp" (LLaVA-1.5: Linear-GELU-Linear,
// parameters named linear_1/linear_2 as Hugging Face's LlavaMultiModalProjector, so weights load
// unchanged). Thread-safety: forward() on one module from several threads is safe in eval mode.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "core/config.h"

namespace slm::adapters {

struct ProjectorSpec {
  std::string type = "mlp";
  int64_t input_dim = 0;
  int64_t output_dim = 0;
  int64_t hidden_dim = 0;  // 0 = output_dim (mlp only)
  // Reads type/input_dim/output_dim/hidden_dim with validation (type must be registered).
  void Load(config::Node node);
};

class ProjectorImpl : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(const torch::Tensor& features) = 0;
  // Output positions for T input frames.
  virtual int64_t OutputLength(int64_t input_frames) const { return input_frames; }
  const ProjectorSpec& Spec() const { return spec_; }
  int64_t ParameterCount() const;

 protected:
  explicit ProjectorImpl(ProjectorSpec spec) : spec_(std::move(spec)) {}
  // Throws slm::Error naming the projector if features are not [B, T, input_dim].
  void CheckInput(const torch::Tensor& features) const;
  ProjectorSpec spec_;
};

// Creates the registered projector `spec.type`; slm::Error for an unknown type or bad dimensions.
std::shared_ptr<ProjectorImpl> MakeProjector(const ProjectorSpec& spec);
std::vector<std::string> ProjectorTypes();

}  // namespace slm::adapters
