#include "text/lm_data.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <fstream>

#include "tests/test_util.h"

namespace slm::text {
namespace {

TEST(LmData, PackWindowsKeepsOrderAndPadsTheTail) {
  std::vector<int64_t> stream(23);
  for (int i = 0; i < 23; ++i) stream[i] = i;
  const torch::Tensor full = PackWindows(stream, 5, false);
  EXPECT_EQ(full.sizes(), (std::vector<int64_t>{4, 5}));
  EXPECT_EQ(full[3][4].item<int64_t>(), 19);
  const torch::Tensor tail = PackWindows(stream, 5, true);
  EXPECT_EQ(tail.sizes(), (std::vector<int64_t>{5, 5}));
  EXPECT_EQ(tail[4][2].item<int64_t>(), 22);
  EXPECT_EQ(tail[4][3].item<int64_t>(), -1);  // padding, never predicted
  EXPECT_SLM_ERROR(PackWindows(stream, 1, true), "window must be at least 2");
  EXPECT_SLM_ERROR(PackWindows({1, 2}, 5, false), "fills no window");
}

TEST(LmData, UnigramPerplexityIsTheSmoothedCrossEntropy) {
  // Train: ids 0,0,0,1 over a vocabulary of 2 -> add-one probabilities 4/6 and 2/6.
  const std::vector<int64_t> train = {0, 0, 0, 1};
  const torch::Tensor windows = torch::tensor(std::vector<int64_t>{1, 0, 1, -1}).reshape({1, 4});
  const PerplexityResult r = UnigramPerplexity(train, windows, 2);
  EXPECT_EQ(r.predicted_tokens, 2);  // targets 0 and 1 (the -1 is padding)
  const double nll = -(std::log(4.0 / 6.0) + std::log(2.0 / 6.0)) / 2.0;
  EXPECT_NEAR(r.mean_nll, nll, 1e-12);
  EXPECT_NEAR(r.perplexity, std::exp(nll), 1e-9);
  EXPECT_SLM_ERROR(UnigramPerplexity({0, 5}, windows, 2), "token id 5 outside the vocabulary");
}

TEST(LmData, PerplexityEqualsCrossEntropyOfTheLogits) {
  torch::manual_seed(3);
  LlamaConfig config;
  config.vocab_size = 50;
  config.hidden_size = 32;
  config.intermediate_size = 64;
  config.num_hidden_layers = 2;
  config.num_attention_heads = 4;
  config.num_key_value_heads = 2;
  config.max_position_embeddings = 64;
  LlamaModel model(config);
  model->Freeze();
  const torch::Tensor windows = torch::randint(0, 50, {3, 9}, torch::kLong);
  windows[2].slice(0, 6).fill_(-1);  // a padded tail window
  const PerplexityResult r = Perplexity(model, windows, 2);
  EXPECT_EQ(r.predicted_tokens, 2 * 8 + 5);
  double nll = 0;
  {
    torch::NoGradGuard no_grad;
    for (int64_t i = 0; i < 3; ++i) {
      const int64_t length = i == 2 ? 6 : 9;
      LlamaInput input;
      input.input_ids = windows[i].slice(0, 0, length).unsqueeze(0);
      const torch::Tensor logp = torch::log_softmax(model->forward(input).logits[0], -1);
      for (int64_t t = 0; t + 1 < length; ++t)
        nll -= logp[t][windows[i][t + 1].item<int64_t>()].item<double>();
    }
  }
  EXPECT_NEAR(r.mean_nll, nll / r.predicted_tokens, 1e-5);
}

TEST(LmData, TokenizeFileSkipsBlankLinesAndReportsMissingFiles) {
  testing::TempDir dir;
  std::ofstream(dir.File("t.txt")) << "ab\n\n   \ncde\n";
  auto encode = [](const std::string& line) {
    std::vector<int64_t> ids{1};
    for (char c : line) ids.push_back(c);
    return ids;
  };
  EXPECT_EQ(TokenizeFile(dir.File("t.txt"), encode),
            (std::vector<int64_t>{1, 'a', 'b', 1, 'c', 'd', 'e'}));
  EXPECT_EQ(TokenizeFile(dir.File("t.txt"), encode, 1), (std::vector<int64_t>{1, 'a', 'b'}));
  std::ofstream(dir.File("empty.txt")) << "\n\n";
  EXPECT_SLM_ERROR(TokenizeFile(dir.File("empty.txt"), encode), "has no text");
  EXPECT_SLM_ERROR(TokenizeFile(dir.File("none.txt"), encode), "cannot open text file");
}

}  // namespace
}  // namespace slm::text
