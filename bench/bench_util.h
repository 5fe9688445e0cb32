// Timing helpers for benchmarks. Benchmarks compare against a baseline measured in the same run
// (these machines are noisy), report medians of several repeats, and never assert timings.
#pragma once

#include <algorithm>
#include <chrono>
#include <functional>
#include <vector>

namespace slm::bench {

inline double NowSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

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

}  // namespace slm::bench
