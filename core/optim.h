// What every trainer here shares: the optimisation keys of a `train:` config section, the
// learning-rate schedule and AdamW with decoupled weight decay on matrices only.
//   schedule: linear warm-up from lr/warmup to lr over warmup_steps, then cosine decay to
//             min_lr_ratio * lr at `steps` (flat after it); steps are 0-based optimizer steps.
//   AdamW:    weight decay on parameters with dim >= 2 (weights, embeddings), none on vectors and
//             scalars (norms, biases, a temperature); parameters that do not require grad are left
//             out (frozen parts never get optimizer state). The update runs as ATen's fused AdamW
//             kernel (one pass over parameter, gradient and both moments per tensor; FusedAdamW).
// Thread-safety: plain values and pure functions; an optimizer (FusedAdamW) is used from one thread.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "core/config.h"

namespace slm {

inline double WarmupCosineLr(double lr, int64_t step, int64_t warmup_steps, int64_t total_steps,
                             double min_ratio) {
  if (step < warmup_steps) return lr * double(step + 1) / double(warmup_steps);
  const double progress =
      double(step - warmup_steps) / double(std::max<int64_t>(1, total_steps - warmup_steps));
  const double cosine = 0.5 * (1.0 + std::cos(M_PI * std::min(1.0, progress)));
  return lr * (min_ratio + (1.0 - min_ratio) * cosine);
}

struct OptimOptions {
  int64_t steps = 1000;
  double max_minutes = 0;  // 0 = no wall-time limit; otherwise stop early (and say so)
  int64_t batch_size = 32;
  double lr = 1e-3;
  int64_t warmup_steps = 100;
  double min_lr_ratio = 0.1;
  double weight_decay = 0.01;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double grad_clip = 1.0;  // max global grad norm; 0 = no clipping
  int64_t log_every = 10;

  // Reads the keys above from a `train:` section (ranges checked); the caller reads its own extra
  // keys from the same node.
  void Load(config::Node& node);
  double LearningRate(int64_t step) const {
    return WarmupCosineLr(lr, step, warmup_steps, steps, min_lr_ratio);
  }
};

// torch::optim::AdamW whose step() is ATen's fused kernel (at::_fused_adamw_, CPU and CUDA) instead of
// LibTorch's eight tensor ops per parameter, each of which allocates or sweeps memory: at batch 1 on
// the CPU the unfused update was a large share of `slm bench train`'s step (docs/BENCHMARKS.md,
// "Fused AdamW"). Same algorithm, options, state (AdamWParamState) and checkpoint format as
// torch::optim::AdamW; results agree with it to float rounding, not bitwise. amsgrad falls back to AdamW's own step.
class FusedAdamW : public torch::optim::AdamW {
 public:
  using torch::optim::AdamW::AdamW;
  torch::Tensor step(LossClosure closure = nullptr) override;
};

std::unique_ptr<torch::optim::AdamW> MakeAdamW(const std::vector<torch::Tensor>& parameters,
                                               const OptimOptions& options);
void SetLearningRate(torch::optim::Optimizer& optimizer, double lr);
// Clips the global gradient norm of the parameters that have gradients to options.grad_clip (no
// clipping at 0) and returns the norm before clipping.
double ClipGradients(const std::vector<torch::Tensor>& parameters, const OptimOptions& options);

}  // namespace slm
