// Parity of the CLIP image encoder with transformers (references from
// tests/parity/make_clip_references.py, run first by ctest): our LoadImage + ClipPreprocess of the
// same PNGs against CLIPImageProcessor's pixel_values, and our ClipVisionModel on those
// pixel_values against CLIPVisionModel's hidden states, last_hidden_state and pooler_output.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "tests/parity/parity_util.h"
#include "core/safetensors.h"
#include "vision/clip_vision.h"
#include "vision/image.h"

namespace slm::vision {
namespace {

using parity::ParityDir;

using parity::MaxAbsDiff;

TEST(ClipParity, PreprocessingMatchesClipImageProcessor) {
  safetensors::Reader refs(ParityDir() + "/clip_references.safetensors");
  for (int i = 0; i < 3; ++i) {
    const std::string png = ParityDir() + "/clip_images/image_" + std::to_string(i) + ".png";
    const torch::Tensor ours = ClipPreprocess(LoadImage(png));
    const torch::Tensor theirs = refs.Get("pixel_values_" + std::to_string(i));
    ASSERT_EQ(ours.sizes(), theirs.sizes());
    const double diff = MaxAbsDiff(ours, theirs);
    std::printf(
        "CLIP preprocessing image_%d: max abs diff %.3g (reference: %s)\n", i, diff,
        refs.Metadata().count("preprocessor") ? refs.Metadata().at("preprocessor").c_str() : "?");
    EXPECT_LE(diff, 1e-5) << png;
  }
}

// The PIL backend (CLIPImageProcessorPil): against make_clip_references.py's numpy port of Pillow's
// Resample.c and transformers' numpy rescale/normalise (Pillow itself is not installed here).
TEST(ClipParity, PilBackendPreprocessingMatchesPillowPort) {
  safetensors::Reader refs(ParityDir() + "/clip_references.safetensors");
  ClipPreprocessOptions options;
  options.resample_backend = ClipResample::kPil;
  for (int i = 0; i < 3; ++i) {
    const std::string png = ParityDir() + "/clip_images/image_" + std::to_string(i) + ".png";
    const torch::Tensor ours = ClipPreprocess(LoadImage(png), options);
    const torch::Tensor theirs = refs.Get("pixel_values_pil_" + std::to_string(i));
    ASSERT_EQ(ours.sizes(), theirs.sizes());
    const double diff = MaxAbsDiff(ours, theirs);
    const double vs_torch = MaxAbsDiff(ours, refs.Get("pixel_values_" + std::to_string(i)));
    std::printf(
        "CLIP PIL-backend preprocessing image_%d: max abs diff %.3g (vs torchvision "
        "backend: %.3g)\n",
        i, diff, vs_torch);
    EXPECT_LE(diff, 1e-5) << png;
  }
}

TEST(ClipParity, VisionTowerMatchesClipVisionModel) {
  safetensors::Reader refs(ParityDir() + "/clip_references.safetensors");
  ClipVisionModel model = LoadClipVision(ParityDir() + "/clip_tiny_random");
  model->Freeze();
  torch::NoGradGuard no_grad;
  const torch::Tensor pixels = torch::stack(
      {refs.Get("pixel_values_0"), refs.Get("pixel_values_1"), refs.Get("pixel_values_2")});
  const ClipVisionOutput out = model->forward(pixels, /*output_hidden_states=*/true);
  const int64_t layers = model->Config().num_hidden_layers;
  ASSERT_EQ(static_cast<int64_t>(out.hidden_states.size()), layers + 1);
  double worst = 0;
  for (int64_t l = 0; l <= layers; ++l) {
    const double d =
        MaxAbsDiff(out.hidden_states[l], refs.Get("hidden_state_" + std::to_string(l)));
    std::printf("CLIP hidden_state_%lld: max abs diff %.3g\n", static_cast<long long>(l), d);
    worst = std::max(worst, d);
  }
  const double last = MaxAbsDiff(out.last_hidden_state, refs.Get("last_hidden_state"));
  const double pooled = MaxAbsDiff(out.pooler_output, refs.Get("pooler_output"));
  // Default features: penultimate layer, patch tokens only (LLaVA).
  const torch::Tensor features = model->Features(pixels);
  const torch::Tensor penultimate = refs.Get("hidden_state_" + std::to_string(layers - 1));
  const double feat = MaxAbsDiff(features, penultimate.slice(1, 1));
  std::printf("CLIP last_hidden_state %.3g, pooler_output %.3g, default features %.3g\n", last,
              pooled, feat);
  EXPECT_LE(worst, 1e-4);
  EXPECT_LE(last, 1e-4);
  EXPECT_LE(pooled, 1e-4);
  EXPECT_LE(feat, 1e-4);
  EXPECT_EQ(features.sizes(), (std::vector<int64_t>{3, 49, 64}));
}

}  // namespace
}  // namespace slm::vision
