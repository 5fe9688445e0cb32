#include "core/optim.h"

#include <ATen/ops/_fused_adamw.h>

#include <map>
#include <tuple>

namespace slm {

torch::Tensor FusedAdamW::step(LossClosure closure) {
  for (const auto& group : param_groups_)
    if (static_cast<const torch::optim::AdamWOptions&>(group.options()).amsgrad())
      return torch::optim::AdamW::step(std::move(closure));
  torch::NoGradGuard no_grad;
  torch::Tensor loss;
  if (closure != nullptr) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  for (auto& group : param_groups_) {
    const auto& o = static_cast<const torch::optim::AdamWOptions&>(group.options());
    // The kernel takes lists of one device and dtype.
    struct Lists {
      std::vector<torch::Tensor> params, grads, exp_avgs, exp_avg_sqs, steps;
    };
    std::map<std::tuple<std::string, int>, Lists> lists;
    for (torch::Tensor& p : group.params()) {
      if (!p.grad().defined()) continue;
      Check(!p.grad().is_sparse(), "AdamW does not support sparse gradients");
      std::unique_ptr<torch::optim::OptimizerParamState>& slot = state_[p.unsafeGetTensorImpl()];
      if (slot == nullptr) {
        auto fresh = std::make_unique<torch::optim::AdamWParamState>();
        fresh->step(0);
        fresh->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        fresh->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        slot = std::move(fresh);
      }
      auto& state = static_cast<torch::optim::AdamWParamState&>(*slot);
      state.step(state.step() + 1);
      Lists& l = lists[{p.device().str(), static_cast<int>(p.scalar_type())}];
      l.params.push_back(p);
      l.grads.push_back(p.grad());
      l.exp_avgs.push_back(state.exp_avg());
      l.exp_avg_sqs.push_back(state.exp_avg_sq());
      // The kernel reads the (already incremented) step count from a float tensor on the device.
      l.steps.push_back(torch::full({}, static_cast<double>(state.step()), p.options().dtype(torch::kFloat)));
    }
    for (auto& [key, l] : lists)
      at::_fused_adamw_(l.params, l.grads, l.exp_avgs, l.exp_avg_sqs, /*max_exp_avg_sqs=*/{}, l.steps, o.lr(),
                        std::get<0>(o.betas()), std::get<1>(o.betas()), o.weight_decay(), o.eps(),
                        /*amsgrad=*/false, /*maximize=*/false);
  }
  return loss;
}

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
  return std::make_unique<FusedAdamW>(groups, torch::optim::AdamWOptions(o.lr));
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
