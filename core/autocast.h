// Mixed precision (autocast) for a scope, shared by the trainers and the benchmarks.
#pragma once

#include <c10/core/DeviceType.h>
#include <torch/types.h>

namespace slm {

// Mixed precision for a scope: while alive, ops on `device`'s type run under LibTorch autocast in
// `dtype` (bfloat16 or float16; matmuls and convolutions in that dtype, reductions, norms and losses
// in float32, as torch.autocast does), with float32 master weights left untouched. A disabled guard
// (enabled = false, or dtype float32) changes nothing. Restores the previous state on destruction
// and empties the cast-weight cache when the outermost guard ends. Thread-safety: autocast state is
// thread-local, so a guard covers only the thread that made it.
class AutocastGuard {
 public:
  AutocastGuard(torch::Device device, torch::ScalarType dtype, bool enabled = true);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool active_ = false;
  c10::DeviceType type_ = c10::DeviceType::CPU;
  bool previous_enabled_ = false;
  torch::ScalarType previous_dtype_ = torch::kFloat;
};

}  // namespace slm
