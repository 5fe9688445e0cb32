#include "core/autocast.h"

#include <ATen/autocast_mode.h>

#include "core/error.h"

namespace slm {

AutocastGuard::AutocastGuard(torch::Device device, torch::ScalarType dtype, bool enabled) {
  if (!enabled || dtype == torch::kFloat) return;
  Check(dtype == torch::kBFloat16 || dtype == torch::kHalf, "autocast: dtype must be bfloat16 or float16, got ",
        c10::toString(dtype));
  type_ = device.type();
  Check(type_ == c10::DeviceType::CPU || type_ == c10::DeviceType::CUDA, "autocast: unsupported device ",
        device.str());
  previous_enabled_ = at::autocast::is_autocast_enabled(type_);
  previous_dtype_ = at::autocast::get_autocast_dtype(type_);
  at::autocast::set_autocast_enabled(type_, true);
  at::autocast::set_autocast_dtype(type_, dtype);
  at::autocast::increment_nesting();
  active_ = true;
}

AutocastGuard::~AutocastGuard() {
  if (!active_) return;
  // Weights cast for this scope are cached until the outermost scope ends (as torch.autocast).
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  at::autocast::set_autocast_enabled(type_, previous_enabled_);
  at::autocast::set_autocast_dtype(type_, previous_dtype_);
}

}  // namespace slm
