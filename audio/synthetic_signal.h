// Deterministic synthetic signals for tests and benchmarks (no files, no randomness across runs).
// Thread-safety: pure functions.
#pragma once

#include <vector>

namespace slm::audio {

// A speech-like signal at `rate` Hz: harmonics of a gliding f0 (about 80-150 Hz) shaped by three
// formant resonances, amplitude-modulated into ~4 syllables per second, short pauses every 1.3 s,
// and low breath noise. Peak amplitude stays below 1. Same (seconds, rate, seed) -> same samples.
std::vector<float> SpeechLikeSignal(double seconds, int rate = 16000, unsigned seed = 1);

// amplitude * sin(2 pi hz t).
std::vector<float> SineSignal(double hz, double seconds, int rate = 16000, float amplitude = 0.5f);

}  // namespace slm::audio
