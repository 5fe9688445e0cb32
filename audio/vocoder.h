// Vocoders: log-mel frames -> waveform, the last stage of speech output (units -> mel -> audio).
// `Vocoder` is the interface a neural vocoder will implement; `GriffinLimVocoder` is the default:
// no training, no weights.
//
// GriffinLimVocoder inverts LogMel's features (log_mel.h): undo the normalisation (kFixedFloor /
// kNone: power = 10^(4 v - 4) resp. 10^v; kWhisper cannot be undone exactly and is treated as
// kFixedFloor), map mel power back to linear power by non-negative least squares against the
// Slaney filter bank B [bins, n_mels] (minimise |B^T p - mel|^2 over p >= 0 by `nnls_iterations`
// multiplicative updates p <- p * (B mel) / (B B^T p), Lee & Seung 2001, started from the
// filter-weighted average B mel / (B B^T 1)), take its square root as the magnitude, then estimate
// a phase by
// fast Griffin-Lim (Perraudin et al. 2013: Griffin-Lim with momentum) with LibTorch's stft/istft on
// the front-end's framing (Hann window of n_fft, hop_length, centred, reflect padding). The first
// phase is random from `seed`, so output is reproducible. Output: mono float32 at the options'
// sample rate, peak-normalised to 0.9 when louder, frames * hop_length samples.
//
// Thread-safety: Synthesize is const and safe to call concurrently.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "audio/log_mel.h"

namespace slm::audio {

class Vocoder {
 public:
  virtual ~Vocoder() = default;
  // log_mel [T, n_mels] float (the normalised features LogMel produces) -> samples at SampleRate().
  virtual std::vector<float> Synthesize(const torch::Tensor& log_mel) const = 0;
  virtual int SampleRate() const = 0;
};

struct GriffinLimOptions {
  int iterations = 32;
  double momentum = 0.99;  // 0 = classic Griffin-Lim
  uint64_t seed = 0;
  // Why NNLS and not the pseudo-inverse: mel frames that no real spectrum produced exactly (every
  // unit decoder's output) put the pseudo-inverse far outside p >= 0, and clamping it left a loud
  // spurious band near 1 kHz that made decoded speech unintelligible. The default count brings the
  // mel residual of such frames close to its limit at a small cost (docs/BENCHMARKS.md, "Speech
  // output").
  int nnls_iterations = 30;
};

class GriffinLimVocoder : public Vocoder {
 public:
  // slm::Error for iterations < 0, nnls_iterations < 0 or momentum outside [0, 1).
  GriffinLimVocoder(const LogMelOptions& features, const GriffinLimOptions& options = {});
  std::vector<float> Synthesize(const torch::Tensor& log_mel) const override;
  int SampleRate() const override { return features_.sample_rate; }
  // The linear magnitude spectrogram [n_fft/2 + 1, T] the phase search starts from (tests).
  torch::Tensor Magnitude(const torch::Tensor& log_mel) const;

 private:
  LogMelOptions features_;
  GriffinLimOptions options_;
  torch::Tensor bank_;        // [bins, n_mels]
  torch::Tensor bank_gram_1_;  // B B^T 1 [bins, 1]: the starting point's normaliser
  torch::Tensor window_;
};

}  // namespace slm::audio
