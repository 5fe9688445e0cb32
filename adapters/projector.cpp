#include "adapters/projector.h"

#include <functional>

#include "core/registry.h"

namespace slm::adapters {
namespace {

class LinearProjector : public ProjectorImpl {
 public:
  explicit LinearProjector(ProjectorSpec spec) : ProjectorImpl(std::move(spec)) {
    linear_ = register_module("linear", torch::nn::Linear(spec_.input_dim, spec_.output_dim));
  }
  torch::Tensor forward(const torch::Tensor& features) override {
    CheckInput(features);
    return linear_->forward(features);
  }

 private:
  torch::nn::Linear linear_{nullptr};
};

class MlpProjector : public ProjectorImpl {
 public:
  explicit MlpProjector(ProjectorSpec spec) : ProjectorImpl(std::move(spec)) {
    const int64_t hidden = spec_.hidden_dim > 0 ? spec_.hidden_dim : spec_.output_dim;
    linear_1_ = register_module("linear_1", torch::nn::Linear(spec_.input_dim, hidden));
    linear_2_ = register_module("linear_2", torch::nn::Linear(hidden, spec_.output_dim));
  }
  torch::Tensor forward(const torch::Tensor& features) override {
    CheckInput(features);
    return linear_2_->forward(torch::gelu(linear_1_->forward(features)));
  }

 private:
  torch::nn::Linear linear_1_{nullptr}, linear_2_{nullptr};
};

using Factory = std::function<std::shared_ptr<ProjectorImpl>(const ProjectorSpec&)>;

const Registry<Factory>& Projectors() {
  static const Registry<Factory> registry = [] {
    Registry<Factory> r("projector");
    r.Add("linear", [](const ProjectorSpec& s) { return std::make_shared<LinearProjector>(s); },
          "one affine map (LiMBeR)");
    r.Add("mlp", [](const ProjectorSpec& s) { return std::make_shared<MlpProjector>(s); },
          "Linear-GELU-Linear (LLaVA-1.5)");
    return r;
  }();
  return registry;
}

}  // namespace

void ProjectorSpec::Load(config::Node node) {
  node.Read("type", type, config::OneOf<std::string>(ProjectorTypes()));
  node.Require("input_dim", input_dim, config::InRange<int64_t>(1, 1 << 20));
  node.Require("output_dim", output_dim, config::InRange<int64_t>(1, 1 << 20));
  node.Read("hidden_dim", hidden_dim, config::InRange<int64_t>(0, 1 << 20));
}

int64_t ProjectorImpl::ParameterCount() const {
  int64_t count = 0;
  for (const auto& p : parameters()) count += p.numel();
  return count;
}

void ProjectorImpl::CheckInput(const torch::Tensor& features) const {
  Check(features.dim() == 3 && features.size(2) == spec_.input_dim, "projector '", spec_.type,
        "' expects features [batch, frames, ", spec_.input_dim, "], got ", features.sizes());
}

std::shared_ptr<ProjectorImpl> MakeProjector(const ProjectorSpec& spec) {
  const auto& factory = Projectors().Get(spec.type);
  Check(spec.input_dim > 0 && spec.output_dim > 0 && spec.hidden_dim >= 0, "projector '", spec.type,
        "': input_dim and output_dim must be positive (got ", spec.input_dim, ", ", spec.output_dim,
        ")");
  return factory(spec);
}

std::vector<std::string> ProjectorTypes() { return Projectors().Names(); }

}  // namespace slm::adapters
