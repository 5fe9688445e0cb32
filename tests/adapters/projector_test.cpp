#include "adapters/projector.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/test_util.h"

namespace slm::adapters {
namespace {

ProjectorSpec Spec(const std::string& type, int64_t in, int64_t out) {
  ProjectorSpec spec;
  spec.type = type;
  spec.input_dim = in;
  spec.output_dim = out;
  return spec;
}

TEST(Projector, ShapesParameterCountsAndNames) {
  ProjectorSpec spec = Spec("mlp", 16, 32);
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
  ProjectorSpec spec = Spec("mlp", 3, 2);
  spec.hidden_dim = 4;
  auto mlp = MakeProjector(spec);
  auto params = mlp->named_parameters();
  const auto x = torch::randn({1, 2, 3});
  const auto expected = torch::nn::functional::linear(
      torch::gelu(torch::nn::functional::linear(x, params["linear_1.weight"], params["linear_1.bias"])),
      params["linear_2.weight"], params["linear_2.bias"]);
  EXPECT_TRUE(torch::allclose(mlp->forward(x), expected));
}

TEST(Projector, OutputLengthsCompressionAndRates) {
  ProjectorSpec s = Spec("stack_mlp", 8, 12);
  s.stack = 4;
  auto stack = MakeProjector(s);
  EXPECT_EQ(stack->OutputLength(50), 13);  // ceil(50 / 4)
  EXPECT_DOUBLE_EQ(stack->OutputRate(50.0), 12.5);
  EXPECT_EQ(stack->forward(torch::randn({2, 50, 8})).sizes(), (std::vector<int64_t>{2, 13, 12}));

  s = Spec("conv", 8, 12);
  s.stride = 3;
  auto conv = MakeProjector(s);
  for (int64_t t : {1, 2, 3, 4, 17, 50}) {
    EXPECT_EQ(conv->OutputLength(t), (t + 2) / 3);
    EXPECT_EQ(conv->forward(torch::randn({1, t, 8})).size(1), (t + 2) / 3) << t;
  }
  EXPECT_DOUBLE_EQ(conv->Compression(), 3.0);

  s = Spec("qformer", 8, 12);
  s.window = 5;
  s.num_queries = 2;
  s.num_heads = 2;
  auto qformer = MakeProjector(s);
  EXPECT_EQ(qformer->OutputLength(11), 6);  // 3 windows x 2 queries
  EXPECT_DOUBLE_EQ(qformer->OutputRate(50.0), 20.0);
  EXPECT_EQ(qformer->forward(torch::randn({3, 11, 8})).sizes(), (std::vector<int64_t>{3, 6, 12}));
}

TEST(Projector, StackMlpMatchesUltravoxFormula) {
  ProjectorSpec s = Spec("stack_mlp", 3, 5);
  s.stack = 2;
  s.hidden_dim = 4;
  auto p = MakeProjector(s);
  auto params = p->named_parameters();
  ASSERT_TRUE(params.contains("ln_pre.weight") && params.contains("ln_mid.weight"));
  EXPECT_FALSE(params.contains("linear_1.bias"));  // no biases, as Ultravox
  {
    torch::NoGradGuard no_grad;
    params["ln_pre.weight"].uniform_(0.5, 1.5);
    params["ln_mid.weight"].uniform_(0.5, 1.5);
  }
  const auto x = torch::randn({1, 3, 3});
  // Frames (0,1) and (2, zero padding) are concatenated.
  const auto stacked = torch::cat({x, torch::zeros({1, 1, 3})}, 1).reshape({1, 2, 6});
  auto rms = [](const torch::Tensor& v, const torch::Tensor& w) {
    return w * v * torch::rsqrt(v.pow(2).mean(-1, true) + 1e-6);
  };
  const auto h = torch::nn::functional::linear(rms(stacked, params["ln_pre.weight"]),
                                               params["linear_1.weight"]);
  const auto value = h.slice(-1, 0, 4), gate = h.slice(-1, 4);
  const auto expected = torch::nn::functional::linear(
      rms(torch::silu(gate) * value, params["ln_mid.weight"]), params["linear_2.weight"]);
  EXPECT_TRUE(torch::allclose(p->forward(x), expected, 1e-5, 1e-6));
}

TEST(Projector, ConvIsCentredStridedConvolution) {
  ProjectorSpec s = Spec("conv", 2, 3);
  s.stride = 2;
  s.kernel_size = 3;
  s.hidden_dim = 4;
  auto p = MakeProjector(s);
  auto params = p->named_parameters();
  const auto x = torch::randn({1, 5, 2});
  // kernel 3, stride 2: ceil(5 / 2) = 3 outputs, output i covers frames 2i..2i+2, zeros past
  // the end.
  const auto padded = torch::cat({x, torch::zeros({1, 2, 2})}, 1).transpose(1, 2);
  const auto y = torch::conv1d(padded, params["conv.weight"], params["conv.bias"], 2);
  const auto expected = torch::nn::functional::linear(torch::gelu(y.transpose(1, 2)),
                                                      params["linear.weight"], params["linear.bias"]);
  EXPECT_TRUE(torch::allclose(p->forward(x), expected, 1e-5, 1e-6));
}

// The padded-batch contract: row b of a padded batch equals that row projected alone.
TEST(Projector, PaddedRowsEqualRowsAlone) {
  torch::manual_seed(3);
  std::vector<ProjectorSpec> specs;
  for (const std::string type : {"linear", "mlp", "stack_mlp", "conv", "qformer"}) {
    ProjectorSpec s = Spec(type, 8, 6);
    s.stack = 3;
    s.stride = 2;
    s.window = 4;
    s.num_queries = 2;
    s.num_heads = 2;
    specs.push_back(s);
  }
  for (const ProjectorSpec& spec : specs) {
    auto p = MakeProjector(spec);
    p->eval();
    const auto x = torch::randn({3, 13, 8});
    const auto lengths = torch::tensor({13, 7, 1}, torch::kLong);
    // Padding holds garbage, as an encoder's padded frames do.
    const ProjectorOutput batch = p->Project(x, lengths);
    for (int64_t b = 0; b < 3; ++b) {
      const int64_t n = lengths[b].item<int64_t>();
      const auto alone = p->forward(x[b].slice(0, 0, n).unsqueeze(0))[0];
      ASSERT_EQ(batch.lengths[b].item<int64_t>(), alone.size(0)) << spec.type;
      EXPECT_TRUE(torch::allclose(batch.embeds[b].slice(0, 0, alone.size(0)), alone, 1e-5, 1e-5))
          << spec.type << " row " << b;
    }
    EXPECT_TRUE(torch::isfinite(batch.embeds).all().item<bool>()) << spec.type;
  }
}

TEST(Projector, GradientsReachEveryParameter) {
  for (const std::string type : {"stack_mlp", "conv", "qformer"}) {
    ProjectorSpec s = Spec(type, 8, 6);
    s.num_heads = 2;
    s.num_queries = 2;  // with one query, self-attention is constant and q/k get no gradient
    auto p = MakeProjector(s);
    p->forward(torch::randn({2, 16, 8})).pow(2).sum().backward();
    for (const auto& named : p->named_parameters())
      EXPECT_TRUE(named.value().grad().defined() && named.value().grad().abs().sum().item<double>() > 0)
          << type << " " << named.key();
  }
}

TEST(Projector, ErrorsNameTheProblem) {
  EXPECT_SLM_ERROR(MakeProjector(Spec("qformr", 4, 4)),
                   "unknown projector 'qformr' (valid: conv, ctc_embed, linear, mlp, qformer, stack_mlp)");
  EXPECT_SLM_ERROR(MakeProjector(Spec("mlp", 0, 4)), "must be positive");
  auto p = MakeProjector(Spec("linear", 4, 8));
  EXPECT_SLM_ERROR(p->forward(torch::randn({2, 3, 5})), "expects features [batch, frames, 4]");
  EXPECT_SLM_ERROR(p->Project(torch::randn({2, 3, 4}), torch::tensor({3, 4})), "lengths must be in [1, 3]");
  ProjectorSpec q = Spec("qformer", 6, 4);
  q.num_heads = 4;
  EXPECT_SLM_ERROR(MakeProjector(q), "num_heads (4) must divide the hidden size (6)");

  auto doc = config::Document::LoadString("adapter: {type: mlp, input_dim: 8}\n", "a.yaml");
  ProjectorSpec spec;
  spec.Load(doc.Root().Child("adapter"));  // output_dim may come from the model later
  EXPECT_SLM_ERROR(MakeProjector(spec), "input_dim and output_dim must be positive (got 8, 0)");
  // A key the chosen type does not use is an unknown key, not silently ignored.
  auto doc2 = config::Document::LoadString(
      "adapter: {type: mlp, input_dim: 8, output_dim: 4, stack: 4}\n", "b.yaml");
  ProjectorSpec spec2;
  spec2.Load(doc2.Root().Child("adapter"));
  EXPECT_SLM_ERROR(doc2.CheckAllConsumed(), "adapter.stack");
  auto doc3 = config::Document::LoadString(
      "adapter: {type: stack_mlp, input_dim: 8, output_dim: 4, stack: 0}\n", "c.yaml");
  ProjectorSpec spec3;
  EXPECT_SLM_ERROR(spec3.Load(doc3.Root().Child("adapter")), "adapter.stack");
}

}  // namespace
}  // namespace slm::adapters
