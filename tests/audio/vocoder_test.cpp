// Griffin-Lim vocoder (audio/vocoder.h): log-mel of espeak-ng speech -> audio -> log-mel again.
#include "audio/vocoder.h"

#include <gtest/gtest.h>

#include "audio/espeak_synth.h"
#include "audio/log_mel.h"
#include "tests/test_util.h"

namespace slm::audio {
namespace {

LogMelOptions FixedFloor() {
  LogMelOptions o;
  o.normalization = MelNormalization::kFixedFloor;
  return o;
}

double MelError(const torch::Tensor& a, const torch::Tensor& b) {
  const int64_t t = std::min(a.size(0), b.size(0));
  return (a.narrow(0, 0, t) - b.narrow(0, 0, t)).abs().mean().item<double>();
}

TEST(GriffinLim, ReconstructsSpeechWhoseLogMelMatchesTheInput) {
  VoiceSpec voice;
  voice.name = "en-us";
  const std::vector<float> speech = EspeakSynthesizer::Instance().Synthesize("what is a dog", voice).samples;
  const LogMel mel(FixedFloor());
  const torch::Tensor features = mel.Compute(speech);
  GriffinLimOptions options;
  options.iterations = 32;
  const GriffinLimVocoder vocoder(FixedFloor(), options);
  const std::vector<float> audio = vocoder.Synthesize(features);
  EXPECT_EQ(static_cast<int64_t>(audio.size()), features.size(0) * 160);
  const double error = MelError(mel.Compute(audio), features);
  // Random phase alone (0 iterations) is far worse than the converged phase.
  options.iterations = 0;
  const double random_phase = MelError(mel.Compute(GriffinLimVocoder(FixedFloor(), options).Synthesize(features)), features);
  EXPECT_LT(error, 0.05) << "random phase: " << random_phase;
  EXPECT_LT(error, 0.6 * random_phase);
  // Reproducible.
  options.iterations = 4;
  const GriffinLimVocoder a(FixedFloor(), options), b(FixedFloor(), options);
  EXPECT_EQ(a.Synthesize(features), b.Synthesize(features));
}

TEST(GriffinLim, MagnitudeInvertsTheFilterBankOnMelPower) {
  // A mel spectrum made from a known linear power spectrum maps back to a spectrum with the same mel.
  const LogMelOptions o = FixedFloor();
  const torch::Tensor power = torch::rand({o.n_fft / 2 + 1, 5}) + 0.1;
  const torch::Tensor mel = MelFilterBank(o).t().matmul(power);
  const torch::Tensor log_mel = ((mel.log10() + 4.0) / 4.0).t();
  const torch::Tensor magnitude = GriffinLimVocoder(o).Magnitude(log_mel);
  const torch::Tensor again = MelFilterBank(o).t().matmul(magnitude.pow(2));
  // Whole-spectrum relative error (a few low mel bands hold almost no filter weight, so a per-bin
  // ratio would measure LAPACK's rounding on near-zero values).
  EXPECT_LT(((again - mel).abs().sum() / mel.abs().sum()).item<double>(), 0.02);
  EXPECT_LT(((again - mel).abs().max() / mel.abs().max()).item<double>(), 0.05);
}

// What a unit decoder produces: speech log-mel that no real spectrum has exactly (here smoothed over
// time and perturbed with noise, as a regressor's output is).
torch::Tensor InconsistentSpeechMel() {
  VoiceSpec voice;
  voice.name = "en-us";
  const torch::Tensor features =
      LogMel(FixedFloor()).Compute(EspeakSynthesizer::Instance().Synthesize("the act of moving forward", voice).samples);
  const torch::Tensor padded = torch::cat({features.narrow(0, 0, 1), features, features.narrow(0, -1, 1)});
  const int64_t t = features.size(0);
  torch::Tensor smooth = 0.25 * padded.narrow(0, 0, t) + 0.5 * padded.narrow(0, 1, t) + 0.25 * padded.narrow(0, 2, t);
  torch::manual_seed(3);
  return smooth + 0.03 * torch::randn(smooth.sizes());
}

TEST(GriffinLim, MagnitudeOfAnInconsistentMelIsTheNonNegativeLeastSquaresFit) {
  const LogMelOptions o = FixedFloor();
  const torch::Tensor log_mel = InconsistentSpeechMel().narrow(0, 40, 40);  // 40 frames keep the reference quick
  const torch::Tensor bank = MelFilterBank(o).to(torch::kDouble);  // [bins, n_mels]
  const torch::Tensor mel_power = torch::pow(10.0, 4.0 * log_mel.to(torch::kDouble).t() - 4.0);  // [n_mels, T]
  const torch::Tensor power = GriffinLimVocoder(o).Magnitude(log_mel).to(torch::kDouble).pow(2);
  ASSERT_TRUE(torch::isfinite(power).all().item<bool>());
  ASSERT_GE(power.min().item<double>(), 0.0);
  auto objective = [&](const torch::Tensor& p) { return (bank.t().matmul(p) - mel_power).pow(2).sum().item<double>(); };
  // Independent reference: projected gradient descent with step 1 / L to convergence.
  const double lipschitz = torch::linalg_eigvalsh(bank.matmul(bank.t())).max().item<double>();
  torch::Tensor reference = torch::zeros_like(power);
  for (int i = 0; i < 20000; ++i)
    reference = (reference - bank.matmul(bank.t().matmul(reference) - mel_power) / lipschitz).clamp_min(0);
  const double optimum = objective(reference), norm = mel_power.pow(2).sum().item<double>();
  EXPECT_LT(objective(power) - optimum, 1e-3 * norm) << "ours " << objective(power) << ", optimum " << optimum;
  // The mel of the fitted spectrum stays close to the input in the feature domain (a pseudo-inverse
  // clamped at zero is off by 0.17 here, which is a loud artefact band).
  const torch::Tensor refit = (bank.t().matmul(power).clamp_min(1e-10).log10() + 4.0) / 4.0;
  EXPECT_LT((refit - mel_power.log10().add(4.0).div(4.0)).abs().mean().item<double>(), 0.01);
}

TEST(GriffinLim, ResynthesisOfAnInconsistentMelKeepsItsLogMel) {
  const torch::Tensor log_mel = InconsistentSpeechMel();
  const std::vector<float> audio = GriffinLimVocoder(FixedFloor()).Synthesize(log_mel);
  // The input itself is no real spectrum, so exact agreement is impossible; the clamped
  // pseudo-inverse gave 0.53 here.
  EXPECT_LT(MelError(LogMel(FixedFloor()).Compute(audio), log_mel), 0.05);  // 0.023 measured
}

TEST(GriffinLim, RejectsBadInput) {
  const GriffinLimVocoder vocoder(FixedFloor());
  EXPECT_SLM_ERROR(vocoder.Synthesize(torch::zeros({10, 40})), "log-mel must be [T, 80]");
  torch::Tensor nan = torch::zeros({4, 80});
  nan[1][2] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_SLM_ERROR(vocoder.Synthesize(nan), "NaN or Inf");
  GriffinLimOptions bad;
  bad.momentum = 1.0;
  EXPECT_SLM_ERROR(GriffinLimVocoder(FixedFloor(), bad), "momentum must be in [0, 1)");
  bad.momentum = 0.5;
  bad.nnls_iterations = -1;
  EXPECT_SLM_ERROR(GriffinLimVocoder(FixedFloor(), bad), "nnls_iterations must be >= 0");
}

}  // namespace
}  // namespace slm::audio
