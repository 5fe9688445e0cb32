// Progress reporting for long loops (corpus synthesis, training, benchmarks).
// On a terminal it redraws one line on stderr at most 10 times a second; otherwise (CI, pipes,
// log files) it writes a plain line every 10% so that logs stay readable. Not thread-safe: call
// Update from the thread that owns the loop.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "core/timer.h"

namespace slm {

class ProgressBar {
 public:
  // total <= 0 means unknown (shows count and rate only). quiet=true prints nothing.
  ProgressBar(std::string label, int64_t total, bool quiet = false);
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  // Advances by `n` and sets a free-form suffix such as "loss 2.31".
  void Update(int64_t n = 1, const std::string& suffix = "");
  // Prints the final line (called by the destructor if not called before).
  void Finish();
  int64_t Count() const { return count_; }
  double ElapsedSeconds() const;

 private:
  void Draw(bool final_line);
  std::string label_;
  int64_t total_;
  int64_t count_ = 0;
  bool quiet_;
  bool tty_;
  bool finished_ = false;
  int last_decile_ = -1;
  std::string suffix_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

}  // namespace slm
