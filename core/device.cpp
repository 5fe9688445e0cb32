#include "core/device.h"

#include <torch/torch.h>

#include <thread>

#include "core/error.h"
#include "core/strings.h"

namespace slm {

torch::Device ParseDevice(const std::string& name) {
  const std::string n = ToLower(Trim(name));
  if (n == "auto") return torch::cuda::is_available() ? torch::Device(torch::kCUDA, 0) : torch::kCPU;
  if (n == "cpu") return torch::kCPU;
  if (n == "cuda" || StartsWith(n, "cuda:")) {
    Check(torch::cuda::is_available(), "device '", name, "' requested but CUDA is not available");
    int index = 0;
    if (n.size() > 5) {
      try {
        index = std::stoi(n.substr(5));
      } catch (const std::exception&) {
        throw Error(Str("device '", name, "': invalid CUDA index"));
      }
    }
    Check(index >= 0 && index < static_cast<int>(torch::cuda::device_count()), "device '", name,
          "': only ", torch::cuda::device_count(), " CUDA device(s) present");
    return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  throw Error(Str("unknown device '", name, "' (valid: auto, cpu, cuda, cuda:N)"));
}

std::string DeviceNameProblem(const std::string& name) {
  try {
    ParseDevice(name);
    return "";
  } catch (const Error& e) {
    return e.what();
  }
}

torch::ScalarType ParseDtype(const std::string& name) {
  const std::string n = ToLower(Trim(name));
  if (n == "float32" || n == "fp32" || n == "float") return torch::kFloat;
  if (n == "bfloat16" || n == "bf16") return torch::kBFloat16;
  if (n == "float16" || n == "fp16" || n == "half") return torch::kHalf;
  if (n == "float64" || n == "fp64" || n == "double") return torch::kDouble;
  throw Error(Str("unknown dtype '", name, "' (valid: float32, bfloat16, float16, float64)"));
}

int SetThreads(int n) {
  if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  torch::set_num_threads(n);
  return torch::get_num_threads();
}

}  // namespace slm
