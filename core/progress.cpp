#include "core/progress.h"

#include <unistd.h>

#include <cstdio>

#include "core/strings.h"

namespace slm {

ProgressBar::ProgressBar(std::string label, int64_t total, bool quiet)
    : label_(std::move(label)),
      total_(total),
      quiet_(quiet),
      tty_(isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

ProgressBar::~ProgressBar() { Finish(); }

double ProgressBar::ElapsedSeconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void ProgressBar::Update(int64_t n, const std::string& suffix) {
  count_ += n;
  if (!suffix.empty()) suffix_ = suffix;
  if (quiet_) return;
  const auto now = std::chrono::steady_clock::now();
  if (tty_) {
    if (now - last_draw_ >= std::chrono::milliseconds(100)) {
      last_draw_ = now;
      Draw(false);
    }
  } else if (total_ > 0) {
    const int decile = static_cast<int>(10 * count_ / total_);
    if (decile != last_decile_ && decile < 10) {
      last_decile_ = decile;
      Draw(false);
    }
  }
}

void ProgressBar::Finish() {
  if (finished_) return;
  finished_ = true;
  if (!quiet_) Draw(true);
}

void ProgressBar::Draw(bool final_line) {
  const double elapsed = ElapsedSeconds();
  const double rate = elapsed > 0 ? count_ / elapsed : 0.0;
  std::string line = label_;
  if (total_ > 0) {
    const double fraction = std::min(1.0, static_cast<double>(count_) / total_);
    const int width = 24;
    const int filled = static_cast<int>(fraction * width);
    line += " [" + std::string(filled, '#') + std::string(width - filled, '.') + "] ";
    char buf[64];
    std::snprintf(buf, sizeof buf, "%lld/%lld %3.0f%%", static_cast<long long>(count_),
                  static_cast<long long>(total_), 100 * fraction);
    line += buf;
    if (!final_line && rate > 0) line += " eta " + FormatDuration((total_ - count_) / rate);
  } else {
    line += " " + std::to_string(count_);
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, " %.1f/s %s", rate, FormatDuration(elapsed).c_str());
  line += buf;
  if (!suffix_.empty()) line += " " + suffix_;
  if (tty_) {
    std::fprintf(stderr, "\r\033[K%s%s", line.c_str(), final_line ? "\n" : "");
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  std::fflush(stderr);
}

}  // namespace slm
