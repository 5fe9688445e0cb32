// The unit-to-mel decoder learns a known mapping, saves and loads, and refuses foreign units.
#include "train/unit_decoder_train.h"

#include <gtest/gtest.h>

#include "tests/test_util.h"

namespace slm::train {
namespace {

// Each of 4 units stands for a fixed 8-bin frame; utterances are random unit sequences and the mel
// is those frames, two per unit (upsample 2, like 50 Hz encoder units under 100 Hz mel).
std::vector<UnitDecoderExample> Data(const torch::Tensor& frames, int count) {
  torch::manual_seed(0);
  std::vector<UnitDecoderExample> data;
  for (int i = 0; i < count; ++i) {
    const torch::Tensor ids = torch::randint(4, {20 + i % 7}, torch::kLong);
    UnitDecoderExample e;
    e.units.assign(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel());
    e.mel = frames.index_select(0, ids).repeat_interleave(2, 0);
    data.push_back(e);
  }
  return data;
}

TEST(UnitDecoderTrain, LearnsAKnownMappingFarBelowTheMeanFrameBaseline) {
  const torch::Tensor frames = torch::tensor({{1.0}, {-1.0}, {0.5}, {-0.5}}).expand({4, 8}).clone() +
                               0.1 * torch::arange(8).to(torch::kFloat);
  audio::UnitDecoderConfig config;
  config.k = 4;
  config.dim = 32;
  config.layers = 2;
  config.kernel = 3;
  config.n_mels = 8;
  config.upsample = 2;
  config.tokenizer_hash = "abc";
  torch::manual_seed(1);
  audio::UnitDecoder decoder(config);
  UnitDecoderTrainOptions options;
  options.steps = 150;
  options.batch_size = 8;
  options.lr = 5e-3;
  options.warmup_steps = 10;
  options.window_units = 16;
  const UnitDecoderTrainResult r = TrainUnitDecoder(*decoder, Data(frames, 40), options, /*quiet=*/true);
  EXPECT_LT(r.valid_l1, 0.1 * r.mean_frame_l1) << r.valid_l1 << " vs " << r.mean_frame_l1;
  const torch::Tensor out = decoder->Decode({2, 0});
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{4, 8}));
  EXPECT_LT((out[0] - frames[2]).abs().max().item<double>(), 0.15);
  EXPECT_LT((out[3] - frames[0]).abs().max().item<double>(), 0.15);

  testing::TempDir dir;
  decoder->Save(dir.path());
  auto loaded = audio::UnitDecoderImpl::Load(dir.path(), "abc");
  EXPECT_TRUE(torch::equal(loaded->Decode({2, 0}), out));
  EXPECT_SLM_ERROR(audio::UnitDecoderImpl::Load(dir.path(), "def"), "trained on the units of tokenizer abc");
  EXPECT_SLM_ERROR(decoder->Decode({4}), "unit 0 is 4, outside 0..3");
  EXPECT_SLM_ERROR(decoder->Decode({}), "no units");
  EXPECT_EQ(audio::ExpandRuns({{3, 2}, {1, 1}}), (std::vector<int64_t>{3, 3, 1}));
}

TEST(UnitDecoderTrain, RejectsMisalignedData) {
  audio::UnitDecoderConfig config;
  config.k = 4;
  config.dim = 8;
  config.layers = 1;
  config.n_mels = 8;
  audio::UnitDecoder decoder(config);
  UnitDecoderExample e;
  e.units = {0, 1, 2};
  e.mel = torch::zeros({40, 8});
  UnitDecoderTrainOptions options;
  options.steps = 1;
  EXPECT_SLM_ERROR(TrainUnitDecoder(*decoder, {e}, options, true), "has 3 units but 40 mel frames");
  EXPECT_SLM_ERROR(TrainUnitDecoder(*decoder, {}, options, true), "no training examples");
}

}  // namespace
}  // namespace slm::train
