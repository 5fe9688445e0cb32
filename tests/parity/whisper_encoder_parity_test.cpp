// Parity of the Whisper speech encoder with Hugging Face transformers' WhisperEncoder (references
// from tests/parity/make_whisper_encoder_references.py, run first by ctest): a small random
// WhisperForConditionalGeneration, encoder outputs for the 30 s input transformers requires and
// for two shorter inputs (400 and 401 frames, run through transformers' own modules with the
// position table sliced), plus the sinusoid table of a fresh model.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "tests/parity/parity_util.h"
#include "audio/whisper_encoder.h"
#include "core/safetensors.h"

namespace slm::audio {
namespace {

using parity::ParityDir;

using parity::MaxAbsDiff;

// HF features [B, n_mels, T] -> ours [B, T, n_mels].
torch::Tensor Ours(const torch::Tensor& hf_features) {
  return hf_features.transpose(1, 2).contiguous();
}

void ExpectMatches(WhisperEncoder& model, const safetensors::Reader& ref, const std::string& key,
                   const std::string& label) {
  torch::NoGradGuard no_grad;
  const torch::Tensor expected = ref.Get(key + ".last_hidden_state");
  const torch::Tensor ours = model->forward(Ours(ref.Get(key + ".input_features")));
  ASSERT_EQ(ours.sizes().vec(), expected.sizes().vec()) << label << " " << key;
  const double diff = MaxAbsDiff(ours, expected);
  std::printf("whisper encoder parity %s %s: max abs diff %.3g (output max |x| %.3g)\n",
              label.c_str(), key.c_str(), diff, expected.abs().max().item<double>());
  EXPECT_LE(diff, 1e-4) << label << " " << key;
}

TEST(WhisperEncoderParityTest, MatchesTransformersOnFullAndShortInputs) {
  const std::string dir = ParityDir() + "/whisper_tiny_random";
  safetensors::Reader ref(dir + "/reference.safetensors");
  WhisperEncoder model = LoadWhisperEncoder(dir);
  model->Freeze();
  EXPECT_EQ(model->Config().d_model, 64);
  EXPECT_EQ(model->Config().encoder_layers, 2);
  for (const char* key : {"full", "short400", "short401"}) ExpectMatches(model, ref, key, "hub");
}

TEST(WhisperEncoderParityTest, LoadsBareWhisperModelCheckpoint) {
  const std::string dir = ParityDir() + "/whisper_tiny_random";
  safetensors::Reader ref(dir + "/reference.safetensors");
  WhisperEncoder model = LoadWhisperEncoder(dir + "_bare");
  model->Freeze();
  ExpectMatches(model, ref, "short401", "bare");
}

TEST(WhisperEncoderParityTest, FreshModelHoldsTransformersSinusoids) {
  const std::string dir = ParityDir() + "/whisper_tiny_random";
  safetensors::Reader ref(dir + "/reference.safetensors");
  const torch::Tensor expected = ref.Get("sinusoids");
  const double diff = MaxAbsDiff(WhisperSinusoids(expected.size(0), expected.size(1)), expected);
  std::printf("whisper sinusoids max abs diff %.3g\n", diff);
  EXPECT_LE(diff, 1e-6);
  WhisperEncoderConfig config = WhisperEncoderConfig::FromFile(dir + "/config.json");
  WhisperEncoder fresh(config);
  for (const auto& named : fresh->named_parameters()) {
    if (named.key() == "model.encoder.embed_positions.weight") {
      EXPECT_LE(MaxAbsDiff(named.value(), expected), 1e-6);
    }
  }
}

}  // namespace
}  // namespace slm::audio
