#include "audio/log_mel.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <random>
#include <thread>

#include "audio/synthetic_signal.h"
#include "tests/test_util.h"

namespace slm::audio {
namespace {

LogMelOptions Options(int n_mels, MelNormalization norm) {
  LogMelOptions o;
  o.n_mels = n_mels;
  o.normalization = norm;
  return o;
}

// The KissFFT path against LibTorch's torch::stft path on the same signals: max |diff| <= 1e-4.
TEST(LogMel, MatchesTorchStftReference) {
  for (int n_mels : {80, 128}) {
    for (auto norm : {MelNormalization::kWhisper, MelNormalization::kFixedFloor}) {
      for (unsigned seed : {1u, 2u}) {
        const auto x = SpeechLikeSignal(seed == 1 ? 3.0 : 1.37, 16000, seed);
        const auto o = Options(n_mels, norm);
        const torch::Tensor ours = LogMel(o).Compute(x);
        const torch::Tensor ref = ComputeLogMelWithTorch(x, o);
        ASSERT_EQ(ours.sizes(), ref.sizes());
        EXPECT_LE((ours - ref).abs().max().item<float>(), 1e-4)
            << "n_mels " << n_mels << " seed " << seed;
      }
    }
  }
}

TEST(LogMel, FrameCountAndShapeFollowWhisper) {
  LogMel mel;
  for (size_t n : {201u, 320u, 16000u, 16159u, 16160u}) {
    const auto out = mel.Compute(std::vector<float>(n, 0.01f));
    EXPECT_EQ(out.size(0), static_cast<int64_t>(n / 160)) << n;
    EXPECT_EQ(out.size(1), 80);
  }
}

TEST(LogMel, SineEnergyLandsInTheRightMelBin) {
  LogMelOptions o = Options(80, MelNormalization::kNone);
  const torch::Tensor bank = MelFilterBank(o);  // [201, 80]
  for (double hz : {320.0, 1000.0, 3000.0}) {  // exact FFT bin centres (40 Hz apart)
    const auto features = LogMel(o).Compute(SineSignal(hz, 0.5));
    const int64_t loudest = features.mean(0).argmax().item<int64_t>();
    // The filter with the largest weight at the tone's FFT bin.
    const int64_t bin = static_cast<int64_t>(std::lround(hz / 40.0));
    EXPECT_EQ(loudest, bank[bin].argmax().item<int64_t>()) << hz;
  }
}

TEST(LogMel, SlaneyFiltersHaveUnitAreaInHertz) {
  const torch::Tensor bank = MelFilterBank(Options(80, MelNormalization::kNone));
  EXPECT_EQ(bank.sizes(), (std::vector<int64_t>{201, 80}));
  EXPECT_GE(bank.min().item<float>(), 0.0f);
  // Slaney normalisation scales each triangle to area 1 (in Hz); filters wider than a few FFT bins
  // (40 Hz apart) integrate to ~1 when sampled on the bins.
  const torch::Tensor area = bank.sum(0) * 40.0;
  for (int m = 50; m < 80; ++m) EXPECT_NEAR(area[m].item<float>(), 1.0f, 0.03f) << m;
}

TEST(LogMel, BatchEqualsOneByOne) {
  LogMel mel;
  std::vector<std::vector<float>> signals = {SpeechLikeSignal(0.5, 16000, 1),
                                             SpeechLikeSignal(1.1, 16000, 2),
                                             SineSignal(500, 0.3)};
  const auto batch = mel.ComputeBatch(signals);
  ASSERT_EQ(batch.size(), 3u);
  for (size_t i = 0; i < signals.size(); ++i) EXPECT_TRUE(torch::equal(batch[i], mel.Compute(signals[i])));
  signals.push_back(std::vector<float>(10, 0.0f));
  EXPECT_SLM_ERROR(mel.ComputeBatch(signals), "signal 3 of the batch");
}

// One LogMel shared by threads computing at the same time gives each thread the offline result bit
// for bit (KissFFT's real FFT computes in its plan's scratch buffer: a shared plan corrupted frames).
TEST(LogMel, ConcurrentComputeOnOneObjectIsExact) {
  const LogMel mel;
  std::vector<std::vector<float>> signals;
  std::vector<torch::Tensor> expected;
  for (int i = 0; i < 4; ++i) {
    signals.push_back(SpeechLikeSignal(2.0, 16000, 10 + i));
    expected.push_back(mel.Compute(signals.back()));
  }
  std::vector<int> mismatches(signals.size(), 0);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < signals.size(); ++t)
    threads.emplace_back([&, t] {
      for (int round = 0; round < 20; ++round) mismatches[t] += !torch::equal(mel.Compute(signals[t]), expected[t]);
    });
  for (auto& thread : threads) thread.join();
  for (size_t t = 0; t < signals.size(); ++t) EXPECT_EQ(mismatches[t], 0) << "thread " << t;
}

TEST(LogMel, BadInput) {
  LogMel mel;
  EXPECT_SLM_ERROR(mel.Compute(std::vector<float>(200, 0.0f)), "200 samples is too short");
  auto x = SineSignal(100, 0.1);
  x[77] = std::nanf("");
  EXPECT_SLM_ERROR(mel.Compute(x), "sample 77 is NaN");
  LogMelOptions o;
  o.n_fft = 401;
  EXPECT_SLM_ERROR(LogMel bad(o), "n_fft must be even");
  o = LogMelOptions();
  o.f_max = 9000;
  EXPECT_SLM_ERROR(LogMel bad(o), "f_max <= sample_rate / 2");
}

TEST(LogMel, OptionsFromConfig) {
  auto doc = config::Document::LoadString("mel:\n  n_mels: 128\n  normalization: fixed_floor\n",
                                          "m.yaml");
  LogMelOptions o;
  o.Load(doc.Root().Child("mel"));
  doc.CheckAllConsumed();
  EXPECT_EQ(o.n_mels, 128);
  EXPECT_EQ(o.normalization, MelNormalization::kFixedFloor);
  auto bad = config::Document::LoadString("mel:\n  n_mels: 81\n", "m.yaml");
  EXPECT_SLM_ERROR(o.Load(bad.Root().Child("mel")), "m.yaml:2: key 'mel.n_mels' must be one of: 80, 128");
}

// Streams the signal in random chunk sizes and compares with the offline result bit for bit.
torch::Tensor StreamInChunks(const std::vector<float>& x, const LogMelOptions& o, std::mt19937& rng,
                             size_t max_chunk, bool pop_as_we_go) {
  StreamingLogMel stream(o);
  std::vector<torch::Tensor> pieces;
  for (size_t i = 0; i < x.size();) {
    const size_t n = std::min<size_t>(x.size() - i, 1 + rng() % max_chunk);
    stream.AcceptWaveform(16000, x.data() + i, n);
    i += n;
    if (pop_as_we_go) pieces.push_back(stream.PopFrames(1 + rng() % 50));
  }
  stream.InputFinished();
  pieces.push_back(stream.PopFrames());
  EXPECT_EQ(stream.NumFramesReady(), 0);
  return torch::cat(pieces, 0);
}

TEST(StreamingLogMel, RandomChunkingsEqualOffline) {
  const auto x = SpeechLikeSignal(4.03, 16000, 7);
  for (auto norm : {MelNormalization::kFixedFloor, MelNormalization::kNone}) {
    const auto o = Options(80, norm);
    const torch::Tensor offline = LogMel(o).Compute(x);
    std::mt19937 rng(11);
    for (size_t max_chunk : {7u, 160u, 1000u, 16000u, 160000u}) {
      for (bool pop : {false, true}) {
        const torch::Tensor streamed = StreamInChunks(x, o, rng, max_chunk, pop);
        ASSERT_EQ(streamed.sizes(), offline.sizes()) << max_chunk;
        EXPECT_TRUE(torch::equal(streamed, offline)) << "max chunk " << max_chunk;
      }
    }
  }
}

TEST(StreamingLogMel, SingleSampleChunksAndShortTails) {
  const auto o = Options(80, MelNormalization::kFixedFloor);
  for (size_t n : {201u, 239u, 240u, 361u, 8000u}) {
    const auto x = SpeechLikeSignal(double(n) / 16000, 16000, 3);
    StreamingLogMel stream(o);
    for (float v : x) stream.AcceptWaveform(16000, &v, 1);
    stream.InputFinished();
    EXPECT_TRUE(torch::equal(stream.PopFrames(), LogMel(o).Compute(x))) << n;
  }
}

TEST(StreamingLogMel, EmitsFramesBeforeTheEndAndResets) {
  const auto o = Options(80, MelNormalization::kFixedFloor);
  StreamingLogMel stream(o);
  const auto x = SpeechLikeSignal(1.0);
  stream.AcceptWaveform(16000, x.data(), 8000);
  // Frame t is ready once samples up to t*160 + 200 arrived: (8000 - 200) / 160 + 1 frames.
  EXPECT_EQ(stream.NumFramesReady(), (8000 - 200) / 160 + 1);
  stream.Reset();
  EXPECT_EQ(stream.NumFramesReady(), 0);
  stream.AcceptWaveform(16000, x);
  stream.InputFinished();
  EXPECT_EQ(stream.PopFrames().size(0), 100);
}

TEST(StreamingLogMel, BadInput) {
  EXPECT_SLM_ERROR(StreamingLogMel s(Options(80, MelNormalization::kWhisper)),
                   "needs a per-frame normalisation");
  StreamingLogMel stream(Options(80, MelNormalization::kFixedFloor));
  std::vector<float> x(100, 0.1f);
  EXPECT_SLM_ERROR(stream.AcceptWaveform(8000, x), "got 8000 Hz audio, expected 16000 Hz");
  x[3] = INFINITY;
  EXPECT_SLM_ERROR(stream.AcceptWaveform(16000, x), "sample 3 is infinite");
  x[3] = 0;
  stream.AcceptWaveform(16000, x);
  EXPECT_SLM_ERROR(stream.InputFinished(), "ended after 100 samples");
  stream.Reset();
  stream.AcceptWaveform(16000, std::vector<float>(400, 0.1f));
  stream.InputFinished();
  EXPECT_SLM_ERROR(stream.AcceptWaveform(16000, x), "audio after InputFinished");
}

}  // namespace
}  // namespace slm::audio
