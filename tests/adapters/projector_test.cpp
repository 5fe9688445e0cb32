#include "adapters/projector.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/test_util.h"

namespace slm::adapters {
namespace {

TEST(Projector, ShapesParameterCountsAndNames) {
  ProjectorSpec spec;
  spec.type = "mlp";
  spec.input_dim = 16;
  spec.output_dim = 32;
  spec.hidden_dim = 64;
  auto mlp = MakeProjector(spec);
  EXPECT_EQ(mlp->forward(torch::randn({2, 5, 16})).sizes(), (std::vector<int64_t>{2, 5, 32}));
  EXPECT_EQ(mlp->ParameterCount(), 16 * 64 + 64 + 64 * 32 + 32);
  auto params = mlp->named_parameters();
  EXPECT_TRUE(params.contains("linear_1.weight"));  // Hugging Face LLaVA projector names
  EXPECT_TRUE(params.contains("linear_2.bias"));
  spec.type = "linear";
  auto linear = MakeProjector(spec);
  EXPECT_EQ(linear->ParameterCount(), 16 * 32 + 32);
  EXPECT_EQ(linear->OutputLength(50), 50);
}

TEST(Projector, MlpComputesLinearGeluLinear) {
  ProjectorSpec spec{"mlp", 3, 2, 4};
  auto mlp = MakeProjector(spec);
  auto params = mlp->named_parameters();
  const auto x = torch::randn({1, 2, 3});
  const auto expected = torch::nn::functional::linear(
      torch::gelu(torch::nn::functional::linear(x, params["linear_1.weight"], params["linear_1.bias"])),
      params["linear_2.weight"], params["linear_2.bias"]);
  EXPECT_TRUE(torch::allclose(mlp->forward(x), expected));
}

TEST(Projector, ErrorsNameTheProblem) {
  EXPECT_SLM_ERROR(MakeProjector(ProjectorSpec{"qformr", 4, 4, 0}),
                   "unknown projector 'qformr' (valid: linear, mlp)");
  EXPECT_SLM_ERROR(MakeProjector(ProjectorSpec{"mlp", 0, 4, 0}), "must be positive");
  auto p = MakeProjector(ProjectorSpec{"linear", 4, 8, 0});
  EXPECT_SLM_ERROR(p->forward(torch::randn({2, 3, 5})), "expects features [batch, frames, 4]");
  auto doc = config::Document::LoadString("adapter: {type: mlp, input_dim: 8}\n", "a.yaml");
  ProjectorSpec spec;
  EXPECT_SLM_ERROR(spec.Load(doc.Root().Child("adapter")), "key 'adapter.output_dim' is required");
}

}  // namespace
}  // namespace slm::adapters
