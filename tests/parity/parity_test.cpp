// Parity with independent Python references (tests/parity/make_references.py, run first by ctest):
// the log-mel front-end against Hugging Face's WhisperFeatureExtractor (numpy float64 path and
// torch path), and safetensors interchange with the `safetensors` package in both directions.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <map>
#include <string>

#include "tests/parity/parity_util.h"
#include "audio/log_mel.h"
#include "core/safetensors.h"

namespace slm {
namespace {

using parity::ParityDir;

std::vector<float> ToVector(const torch::Tensor& t) {
  const torch::Tensor c = t.to(torch::kFloat).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

TEST(ParityWhisperFeatures, MelFiltersMatchTransformers) {
  safetensors::Reader ref(ParityDir() + "/whisper_features.safetensors");
  for (int n_mels : {80, 128}) {
    audio::LogMelOptions o;
    o.n_mels = n_mels;
    const torch::Tensor ours = audio::MelFilterBank(o);
    const torch::Tensor theirs = ref.Get("mel_filters." + std::to_string(n_mels));
    ASSERT_EQ(ours.sizes(), theirs.sizes());
    EXPECT_LE((ours - theirs).abs().max().item<float>(), 1e-6) << n_mels;
  }
}

TEST(ParityWhisperFeatures, LogMelMatchesWhisperFeatureExtractor) {
  safetensors::Reader ref(ParityDir() + "/whisper_features.safetensors");
  int compared = 0;
  for (const std::string name : {"vowel", "chirp", "burst", "espeak", "long"}) {
    const std::vector<float> signal = ToVector(ref.Get("signal." + name));
    for (int n_mels : {80, 128}) {
      audio::LogMelOptions o;
      o.n_mels = n_mels;
      // transformers' layout is [n_mels, frames]; ours is [frames, n_mels].
      const torch::Tensor ours = audio::LogMel(o).Compute(signal).t();
      for (const std::string path : {"numpy", "torch"}) {
        const torch::Tensor theirs =
            ref.Get("features_" + path + "." + name + "." + std::to_string(n_mels));
        ASSERT_EQ(ours.sizes(), theirs.sizes()) << name;
        const float diff = (ours - theirs).abs().max().item<float>();
        EXPECT_LE(diff, 1e-4) << name << " " << n_mels << " mels vs transformers " << path;
        std::printf("parity log-mel %-6s %3d mels vs transformers %-5s: max abs diff %.3g\n",
                    name.c_str(), n_mels, path.c_str(), diff);
        ++compared;
      }
    }
  }
  EXPECT_EQ(compared, 20);
}

TEST(ParitySafetensors, ReadsFilesWrittenByPython) {
  safetensors::Reader r(ParityDir() + "/py_written.safetensors");
  EXPECT_EQ(r.Metadata().at("writer"), "python");
  EXPECT_TRUE(torch::equal(r.Get("f32"), torch::arange(6, torch::kFloat).reshape({2, 3}) / 4));
  EXPECT_TRUE(torch::equal(r.Get("f16"), torch::tensor({0.5, -1.25, 3.0}).to(torch::kHalf)));
  EXPECT_TRUE(torch::equal(r.Get("bf16"),
                           torch::tensor({1.0, -2.0, 0.375, 8.0}).reshape({2, 2}).to(torch::kBFloat16)));
  EXPECT_TRUE(torch::equal(r.Get("i64"), torch::tensor({int64_t{1}, int64_t{-2}, int64_t{3000000000}})));
  EXPECT_EQ(r.Info("nested.name.weight").shape, (std::vector<int64_t>{4, 1}));
}

TEST(ParitySafetensors, WritesFilesForPython) {
  // The Python side (tests/parity/check_cpp_written.py, next in the ctest fixture order) reads this
  // file; checking our own reader first separates a writer bug from an interchange bug.
  const std::string path = ParityDir() + "/cpp_written.safetensors";
  const std::map<std::string, torch::Tensor> written = {
      {"a.f32", torch::arange(12, torch::kFloat).reshape({3, 4}) - 5},
      {"b.bf16", torch::tensor({1.5, -0.25, 96.0}).to(torch::kBFloat16)},
      {"c.f16", torch::tensor({0.5, 2.0}).reshape({2, 1}).to(torch::kHalf)},
      {"d.i64", torch::tensor({int64_t{7}, int64_t{-7}, int64_t{1} << 40})}};
  safetensors::Save(path, {written.begin(), written.end()}, {{"writer", "c++"}});
  safetensors::Reader r(path);
  EXPECT_EQ(r.Metadata().at("writer"), "c++");
  EXPECT_EQ(r.Names().size(), written.size());
  for (const auto& entry : written) {
    const torch::Tensor back = r.Get(entry.first);
    EXPECT_EQ(back.scalar_type(), entry.second.scalar_type()) << entry.first;
    EXPECT_TRUE(torch::equal(back, entry.second)) << entry.first;
  }
}

}  // namespace
}  // namespace slm
