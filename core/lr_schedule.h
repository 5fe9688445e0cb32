// Learning-rate schedule shared by every trainer: linear warm-up from lr/warmup to lr over
// `warmup_steps`, then cosine decay to min_ratio * lr at `total_steps` (and flat after it).
// Steps are 0-based optimizer steps. Pure function; thread-safe.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace slm {

inline double WarmupCosineLr(double lr, int64_t step, int64_t warmup_steps, int64_t total_steps,
                             double min_ratio) {
  if (step < warmup_steps) return lr * double(step + 1) / double(warmup_steps);
  const double progress =
      double(step - warmup_steps) / double(std::max<int64_t>(1, total_steps - warmup_steps));
  const double cosine = 0.5 * (1.0 + std::cos(M_PI * std::min(1.0, progress)));
  return lr * (min_ratio + (1.0 - min_ratio) * cosine);
}

}  // namespace slm
