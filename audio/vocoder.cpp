#include "audio/vocoder.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace slm::audio {

GriffinLimVocoder::GriffinLimVocoder(const LogMelOptions& features, const GriffinLimOptions& options)
    : features_(features), options_(options) {
  Check(options_.iterations >= 0, "Griffin-Lim: iterations must be >= 0, got ", options_.iterations);
  Check(options_.momentum >= 0 && options_.momentum < 1, "Griffin-Lim: momentum must be in [0, 1), got ",
        options_.momentum);
  Check(options_.nnls_iterations >= 0, "Griffin-Lim: nnls_iterations must be >= 0, got ", options_.nnls_iterations);
  bank_ = MelFilterBank(features_).to(torch::kFloat);
  bank_gram_1_ = bank_.matmul(bank_.sum(0, /*keepdim=*/true).t());
  window_ = torch::hann_window(features_.n_fft, torch::kFloat);
}

torch::Tensor GriffinLimVocoder::Magnitude(const torch::Tensor& log_mel) const {
  Check(log_mel.dim() == 2 && log_mel.size(1) == features_.n_mels && log_mel.size(0) >= 1, "vocoder: log-mel must be [T, ",
        features_.n_mels, "], got ", log_mel.sizes());
  Check(torch::isfinite(log_mel).all().item<bool>(), "vocoder: log-mel contains NaN or Inf");
  const torch::Tensor v = log_mel.to(torch::kCPU, torch::kFloat).t();  // [n_mels, T]
  const torch::Tensor log10_power = features_.normalization == MelNormalization::kNone ? v : 4.0 * v - 4.0;
  const torch::Tensor mel_power = torch::pow(10.0, log10_power.clamp_max(10.0));
  // Non-negative least squares for linear power p (header). Bins no filter covers stay at 0.
  const torch::Tensor numerator = bank_.matmul(mel_power);  // B mel [bins, T]
  torch::Tensor power = numerator / bank_gram_1_.clamp_min(1e-30);
  for (int i = 0; i < options_.nnls_iterations; ++i)
    power = power * numerator / bank_.matmul(bank_.t().matmul(power)).clamp_min(1e-30);
  return power.sqrt();  // [bins, T]
}

std::vector<float> GriffinLimVocoder::Synthesize(const torch::Tensor& log_mel) const {
  torch::NoGradGuard no_grad;
  const torch::Tensor frames = Magnitude(log_mel);
  // LogMel drops the last centred STFT frame; repeat the final one so istft covers T * hop samples.
  const torch::Tensor magnitude = torch::cat({frames, frames.narrow(1, frames.size(1) - 1, 1)}, 1);
  const int64_t length = frames.size(1) * features_.hop_length;
  const int n_fft = features_.n_fft, hop = features_.hop_length;
  auto istft = [&](const torch::Tensor& spectrum) {
    return torch::istft(spectrum, n_fft, hop, n_fft, window_, /*center=*/true, /*normalized=*/false,
                        /*onesided=*/true, length, /*return_complex=*/false);
  };
  auto stft = [&](const torch::Tensor& signal) {
    return torch::stft(signal, n_fft, hop, n_fft, window_, /*center=*/true, "reflect", /*normalized=*/false,
                       /*onesided=*/true, /*return_complex=*/true);
  };
  torch::Generator generator = at::detail::createCPUGenerator(options_.seed);
  const torch::Tensor phase = torch::rand(magnitude.sizes(), generator, torch::kFloat) * (2 * M_PI);
  torch::Tensor angles = torch::polar(torch::ones_like(magnitude), phase);
  torch::Tensor previous = torch::zeros_like(angles);
  torch::Tensor signal = istft(magnitude * angles);
  for (int i = 0; i < options_.iterations; ++i) {
    const torch::Tensor rebuilt = stft(signal);
    // Fast Griffin-Lim: extrapolate the projection with momentum, then keep only the phase.
    const torch::Tensor accelerated = rebuilt - (options_.momentum / (1 + options_.momentum)) * previous;
    angles = accelerated / accelerated.abs().clamp_min(1e-16);
    previous = rebuilt;
    signal = istft(magnitude * angles);
  }
  const float peak = signal.abs().max().item<float>();
  if (peak > 0.9f) signal = signal * (0.9f / peak);
  const torch::Tensor out = signal.contiguous();
  return std::vector<float>(out.data_ptr<float>(), out.data_ptr<float>() + out.numel());
}

}  // namespace slm::audio
