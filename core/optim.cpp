#include "core/optim.h"

namespace slm {

void OptimOptions::Load(config::Node& node) {
  using config::InRange;
  node.Read("steps", steps, InRange<int64_t>(1, int64_t{1} << 40))
      .Read("max_minutes", max_minutes, InRange(0.0, 1e6))
      .Read("batch_size", batch_size, InRange<int64_t>(1, 1 << 16))
      .Read("lr", lr, InRange(0.0, 10.0))
      .Read("warmup_steps", warmup_steps, InRange<int64_t>(0, int64_t{1} << 40))
      .Read("min_lr_ratio", min_lr_ratio, InRange(0.0, 1.0))
      .Read("weight_decay", weight_decay, InRange(0.0, 10.0))
      .Read("beta1", beta1, InRange(0.0, 0.99999))
      .Read("beta2", beta2, InRange(0.0, 0.99999))
      .Read("grad_clip", grad_clip, InRange(0.0, 1e6))
      .Read("log_every", log_every, InRange<int64_t>(1, 1 << 30));
}

std::unique_ptr<torch::optim::AdamW> MakeAdamW(const std::vector<torch::Tensor>& parameters,
                                               const OptimOptions& o) {
  std::vector<torch::Tensor> decay, no_decay;
  for (const torch::Tensor& p : parameters) {
    if (!p.requires_grad()) continue;
    (p.dim() >= 2 ? decay : no_decay).push_back(p);
  }
  Check(!decay.empty() || !no_decay.empty(), "nothing to optimise: no parameter requires grad");
  auto options = [&](double wd) {
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(o.lr).betas({o.beta1, o.beta2}).weight_decay(wd));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  if (!decay.empty()) groups.emplace_back(decay, options(o.weight_decay));
  if (!no_decay.empty()) groups.emplace_back(no_decay, options(0.0));
  return std::make_unique<torch::optim::AdamW>(groups, torch::optim::AdamWOptions(o.lr));
}

void SetLearningRate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

double ClipGradients(const std::vector<torch::Tensor>& parameters, const OptimOptions& o) {
  std::vector<torch::Tensor> with_grad;
  for (const torch::Tensor& p : parameters)
    if (p.grad().defined()) with_grad.push_back(p);
  if (with_grad.empty()) return 0.0;
  return torch::nn::utils::clip_grad_norm_(with_grad, o.grad_clip > 0 ? o.grad_clip : 1e30);
}

}  // namespace slm
