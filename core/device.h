// Device, dtype and thread helpers shared by every component that runs LibTorch.
// Thread-safety: SetThreads changes process-wide LibTorch state; call it at start-up.
#pragma once

#include <torch/types.h>

#include <string>

namespace slm {

// "cpu", "cuda", "cuda:N", or "auto" (CUDA when available, else CPU). slm::Error for anything
// else, or for CUDA on a machine without it.
torch::Device ParseDevice(const std::string& name);
// ParseDevice's error message for `name`, or "" when it parses: a config validator
// (config::Validator<std::string>) for `device` keys.
std::string DeviceNameProblem(const std::string& name);

// "float32|fp32|float", "bfloat16|bf16", "float16|fp16|half", "float64|fp64".
torch::ScalarType ParseDtype(const std::string& name);

// Sets LibTorch's intra-op threads; n <= 0 means the hardware concurrency. Debian's LibTorch was
// seen starting with one thread (docs/HAZARDS.md hazard 3), so every entry point calls this explicitly.
// Returns the number in effect.
int SetThreads(int n);

}  // namespace slm
