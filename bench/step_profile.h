// Where a benchmark's step spends its device time: runs the step under LibTorch's Kineto profiler
// (CUPTI on CUDA) and summarises the device activity, so a GPU session of a few minutes returns the
// numbers that decide the next optimisation (is the GPU idle between kernels, which kernels dominate)
// instead of a multi-megabyte trace to be read elsewhere.
#pragma once

#include <torch/types.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <string>

namespace slm::bench {

// Runs `step` `steps` times (after the caller's warm-up) under the profiler, with the device
// synchronised before and after. Returns
//   {"steps", "wall_ms_per_step", "device_busy_ms_per_step" (union of device-activity intervals),
//    "device_busy_fraction", "kernels_per_step", "cpu_ops_per_step",
//    "top": [{"name", "ms_per_step", "calls_per_step", "fraction"} ...] (the `top` largest kernels
//    by total time, names cut to 120 characters)}.
// On CPU the device fields describe the CPU operators instead (no device activity exists). With a
// non-empty `trace_path` the Chrome trace is written there too. Not thread-safe (the profiler is
// per process); slm::Error when `steps` < 1.
nlohmann::json ProfileSteps(int steps, const std::function<void()>& step, const torch::Device& device,
                            int top = 15, const std::string& trace_path = "");

}  // namespace slm::bench
