// Shared by the parity tests: where the Python references are, and how far apart two tensors are.
#pragma once

#include <torch/torch.h>

#include <cstdlib>
#include <string>

namespace slm::parity {

// Written by the tests/parity/*.py setup tests (ctest sets SLM_PARITY_DIR).
inline std::string ParityDir() {
  const char* dir = std::getenv("SLM_PARITY_DIR");
  return dir ? dir : SLM_BINARY_DIR "/parity";
}

// max |a - b| computed in double precision.
inline double MaxAbsDiff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

}  // namespace slm::parity
