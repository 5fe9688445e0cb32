#include "audio/synthetic_signal.h"

#include <cmath>
#include <random>

namespace slm::audio {

std::vector<float> SpeechLikeSignal(double seconds, int rate, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> noise(0.0f, 1.0f);
  const size_t n = static_cast<size_t>(seconds * rate);
  std::vector<float> x(n);
  const double formants[3] = {700, 1200, 2600};
  const double offset = 0.37 * seed;  // different seeds give different intonation
  double phase = 0;
  for (size_t i = 0; i < n; ++i) {
    const double t = double(i) / rate;
    const double f0 = 110 + 30 * std::sin(2 * M_PI * 0.7 * (t + offset)) + 10 * std::sin(2 * M_PI * 3.1 * t);
    phase += 2 * M_PI * f0 / rate;
    double v = 0;
    for (int h = 1; h * f0 < rate / 2 && h < 40; ++h) {
      const double fh = h * f0;
      double gain = 0;
      for (double f : formants) gain += 1.0 / (1.0 + std::pow((fh - f) / 120.0, 2));
      v += gain * std::sin(h * phase) / h;
    }
    const double syllable = 0.5 * (1 - std::cos(2 * M_PI * 4.0 * t));
    const bool pause = std::fmod(t + offset, 1.3) > 1.1;
    x[i] = static_cast<float>((pause ? 0.0 : 0.3 * syllable * v) + 0.003 * noise(rng));
  }
  return x;
}

std::vector<float> SineSignal(double hz, double seconds, int rate, float amplitude) {
  std::vector<float> x(static_cast<size_t>(seconds * rate));
  for (size_t i = 0; i < x.size(); ++i)
    x[i] = amplitude * static_cast<float>(std::sin(2 * M_PI * hz * i / rate));
  return x;
}

}  // namespace slm::audio
