// Timing helpers for benchmarks. Benchmarks compare against a baseline measured in the same run
// (these machines are noisy), report medians of several repeats, and never assert timings.
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <stdlib.h>
#include <torch/cuda.h>
#include <torch/types.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>
#include <system_error>
#include <vector>

#include "core/error.h"
#include "core/mkl_dispatch.h"
#include "core/timer.h"

namespace slm::bench {

using slm::NowSeconds;  // core/timer.h

// Waits for the device's queued work, so wall times cover it (nothing on CPU).
inline void Sync(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize();
}

// A fresh directory under the system temp dir, removed at scope exit, so that a failed run leaves
// nothing behind.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& prefix) {
    std::string pattern = (std::filesystem::temp_directory_path() / (prefix + "XXXXXX")).string();
    Check(mkdtemp(pattern.data()) != nullptr, "cannot create a temporary directory in ",
          std::filesystem::temp_directory_path().string());
    path_ = pattern;
  }
  ~ScratchDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Runs `body` once to warm up, then `repeats` times; returns the median wall time in seconds.
inline double MedianSeconds(int repeats, const std::function<void()>& body) {
  body();
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i) {
    const double start = NowSeconds();
    body();
    times.push_back(NowSeconds() - start);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// Runs a Python baseline (`python script args`, stderr discarded) whose last stdout line is one JSON
// object, and returns it. A missing interpreter/script, a failure or output without JSON gives an
// empty object and a note on stderr: the benchmark then reports our side alone. A non-empty
// `preload` is put in the baseline's LD_PRELOAD (core/mkl_dispatch.h: the same MKL kernels as ours).
inline nlohmann::json RunPythonJson(const std::string& python, const std::string& script,
                                    const std::string& args, const std::string& preload = "") {
  if (python == "none") return nlohmann::json::object();
  if (!std::filesystem::exists(python) || !std::filesystem::exists(script)) {
    std::fprintf(stderr, "baseline skipped: '%s' or '%s' not found\n", python.c_str(), script.c_str());
    return nlohmann::json::object();
  }
  if (!preload.empty() && !std::filesystem::exists(preload)) {
    std::fprintf(stderr, "baseline skipped: preload library '%s' not found\n", preload.c_str());
    return nlohmann::json::object();
  }
  const std::string command =
      (preload.empty() ? "" : "LD_PRELOAD='" + preload + "' ") + python + " " + script + " " + args + " 2>/dev/null";
  std::FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) {
    std::fprintf(stderr, "cannot run the baseline: %s\n", command.c_str());
    return nlohmann::json::object();
  }
  std::string output;
  char buffer[4096];
  while (std::fgets(buffer, sizeof(buffer), pipe) != nullptr) output += buffer;
  const int status = pclose(pipe);
  if (status != 0 || output.empty()) {
    std::fprintf(stderr, "baseline failed (status %d): %s\n", status, command.c_str());
    return nlohmann::json::object();
  }
  const size_t line = output.rfind("\n{");  // the JSON line is the last one
  try {
    return nlohmann::json::parse(output.substr(line == std::string::npos ? 0 : line + 1));
  } catch (const nlohmann::json::exception& e) {
    std::fprintf(stderr, "baseline printed no JSON (%s)\n", e.what());
    return nlohmann::json::object();
  }
}

// Which Python baselines a benchmark runs under --baseline-mkl (stock | same | both). Where this process
// runs MKL's AVX-512 kernels only because core/mkl_dispatch.h forces them ("forced", CPU only), the
// stock baseline runs on MKL's generic path; "same" runs it with libslm_mkl_preload.so preloaded, on
// our kernels, so that kernel choice and everything else are reported apart. Elsewhere both are one
// run, reported as the stock baseline.
struct PythonBaseline {
  std::string suffix;   // "" (stock) or "_same_mkl", appended to the report keys
  std::string preload;  // LD_PRELOAD for the baseline ("" = none)
};
inline std::vector<PythonBaseline> PythonBaselines(const std::string& mode, bool cpu, const std::string& preload) {
  Check(mode == "stock" || mode == "same" || mode == "both", "--baseline-mkl must be stock, same or both, got '",
        mode, "'");
  const bool differs = cpu && MklDispatchState().mode == "forced";
  std::vector<PythonBaseline> out;
  if (mode != "same" || !differs) out.push_back({"", ""});
  if (mode != "stock" && differs) out.push_back({"_same_mkl", preload});
  return out;
}

// --baseline-mkl and --mkl-preload on a benchmark command (bench/baseline_mkl.cpp).
void AddBaselineMklOptions(CLI::App* cmd, std::string* mode, std::string* preload);

}  // namespace slm::bench
