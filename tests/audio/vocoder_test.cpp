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

TEST(GriffinLim, RejectsBadInput) {
  const GriffinLimVocoder vocoder(FixedFloor());
  EXPECT_SLM_ERROR(vocoder.Synthesize(torch::zeros({10, 40})), "log-mel must be [T, 80]");
  torch::Tensor nan = torch::zeros({4, 80});
  nan[1][2] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_SLM_ERROR(vocoder.Synthesize(nan), "NaN or Inf");
  GriffinLimOptions bad;
  bad.momentum = 1.0;
  EXPECT_SLM_ERROR(GriffinLimVocoder(FixedFloor(), bad), "momentum must be in [0, 1)");
}

}  // namespace
}  // namespace slm::audio
