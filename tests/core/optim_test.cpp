#include "core/optim.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sstream>
#include <vector>

namespace slm {
namespace {

// Parameters of a matrix, a vector and one that never gets a gradient, with fixed start values.
std::vector<torch::Tensor> Params() {
  torch::manual_seed(5);
  return {torch::randn({24, 16}).requires_grad_(), torch::randn({16}).requires_grad_(),
          torch::randn({8}).requires_grad_()};
}

// A few steps on a fixed quadratic loss; the third parameter gets no gradient.
void Train(torch::optim::Optimizer& optimizer, std::vector<torch::Tensor>& p, int steps) {
  for (int i = 0; i < steps; ++i) {
    optimizer.zero_grad();
    const torch::Tensor target = torch::full({24, 16}, 0.5 * i);
    const torch::Tensor loss = (p[0] - target).pow(2).sum() + (p[1] * p[1] * 3).sum();
    loss.backward();
    optimizer.step();
  }
}

OptimOptions Options() {
  OptimOptions o;
  o.lr = 0.05;
  o.weight_decay = 0.1;
  return o;
}

TEST(FusedAdamW, MatchesLibTorchsAdamW) {
  std::vector<torch::Tensor> fused = Params(), plain = Params();
  const auto ours = MakeAdamW(fused, Options());
  EXPECT_NE(dynamic_cast<FusedAdamW*>(ours.get()), nullptr);
  // The reference: LibTorch's own AdamW with the same groups (decay on matrices only).
  const OptimOptions o = Options();
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<torch::Tensor>{plain[0]},
                      std::make_unique<torch::optim::AdamWOptions>(
                          torch::optim::AdamWOptions(o.lr).betas({o.beta1, o.beta2}).weight_decay(o.weight_decay)));
  groups.emplace_back(std::vector<torch::Tensor>{plain[1], plain[2]},
                      std::make_unique<torch::optim::AdamWOptions>(
                          torch::optim::AdamWOptions(o.lr).betas({o.beta1, o.beta2}).weight_decay(0.0)));
  torch::optim::AdamW reference(groups, torch::optim::AdamWOptions(o.lr));
  Train(*ours, fused, 20);
  Train(reference, plain, 20);
  const std::vector<torch::Tensor> start = Params();
  for (size_t i = 0; i < fused.size(); ++i)
    EXPECT_TRUE(torch::allclose(fused[i], plain[i], 1e-5, 1e-6)) << "parameter " << i;
  EXPECT_FALSE(torch::equal(fused[0], start[0])) << "the matrix did not move";
  EXPECT_FALSE(torch::equal(fused[1], start[1])) << "the vector did not move";
  EXPECT_TRUE(torch::equal(fused[2], start[2]));  // no gradient, no update, no state
  EXPECT_EQ(ours->state().count(fused[2].unsafeGetTensorImpl()), 0u);
  const auto& state = static_cast<torch::optim::AdamWParamState&>(*ours->state().at(fused[0].unsafeGetTensorImpl()));
  EXPECT_EQ(state.step(), 20);
}

TEST(FusedAdamW, SavedStateResumesBitwise) {
  // 4 steps, save, load into a fresh optimizer over copies of the parameters, 6 more steps: the same
  // as 10 steps without the round trip (Train's targets restart with each call in both runs).
  std::vector<torch::Tensor> straight = Params();
  const auto uninterrupted = MakeAdamW(straight, Options());
  Train(*uninterrupted, straight, 4);
  Train(*uninterrupted, straight, 6);

  std::vector<torch::Tensor> first = Params();
  const auto before = MakeAdamW(first, Options());
  Train(*before, first, 4);
  std::stringstream archive;
  torch::save(*before, archive);
  std::vector<torch::Tensor> resumed;
  for (const torch::Tensor& p : first) resumed.push_back(p.detach().clone().requires_grad_());
  const auto after = MakeAdamW(resumed, Options());
  torch::load(*after, archive);
  Train(*after, resumed, 6);
  for (size_t i = 0; i < straight.size(); ++i)
    EXPECT_TRUE(torch::equal(resumed[i], straight[i])) << "parameter " << i;
}

TEST(FusedAdamW, AmsgradFallsBackToAdamW) {
  std::vector<torch::Tensor> fused = Params(), plain = Params();
  FusedAdamW ours(std::vector<torch::Tensor>{fused[0], fused[1]}, torch::optim::AdamWOptions(0.05).amsgrad(true));
  torch::optim::AdamW reference(std::vector<torch::Tensor>{plain[0], plain[1]},
                                torch::optim::AdamWOptions(0.05).amsgrad(true));
  Train(ours, fused, 5);
  Train(reference, plain, 5);
  EXPECT_TRUE(torch::equal(fused[0], plain[0]));
  EXPECT_TRUE(torch::equal(fused[1], plain[1]));
}

}  // namespace
}  // namespace slm
