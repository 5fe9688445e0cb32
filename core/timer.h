// Wall-clock timing for run reports, benchmarks and time limits. One monotonic clock for the whole
// project, so durations measured by different libraries (generation, synthesis, the CLI's reports,
// the benchmarks) are comparable. Thread-safe: free functions without state.
#pragma once

#include <chrono>

namespace slm {

// Seconds on the steady clock since an arbitrary fixed point: only differences mean anything.
inline double NowSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Wall-clock seconds since `start` (steady clock): run timings and wall-time limits.
inline double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace slm
