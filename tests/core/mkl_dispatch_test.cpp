#include "core/mkl_dispatch.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <array>
#include <string>
#include <vector>

namespace slm {
namespace {

TEST(MklDispatch, DecisionRule) {
  EXPECT_EQ(DecideMklIntelAnswer(nullptr, true, 0), 1);   // AMD with AVX-512: forced
  EXPECT_EQ(DecideMklIntelAnswer(nullptr, false, 0), 0);  // no AVX-512: MKL's own answer
  EXPECT_EQ(DecideMklIntelAnswer(nullptr, true, 1), 1);   // Intel: unchanged
  EXPECT_EQ(DecideMklIntelAnswer("0", true, 0), 0);       // SLM_MKL_AVX512=0 keeps MKL's answer
  EXPECT_EQ(DecideMklIntelAnswer("1", true, 0), 1);
  EXPECT_EQ(DecideMklIntelAnswer("0", false, 1), 1);
}

TEST(MklDispatch, ThisExecutableAnswersMkl) {
  // The test executable links slm_core like every slm executable, so its definition must be the
  // one the dynamic linker binds libtorch_cpu.so's call to.
  const MklDispatch state = MklDispatchState();
  EXPECT_TRUE(state.linked);
  EXPECT_TRUE(state.mode == "forced" || state.mode == "native" || state.mode == "off") << state.mode;
  if (state.cpu_avx512 && !state.disabled) EXPECT_EQ(state.answer, 1);
  if (state.mode == "forced") EXPECT_EQ(state.answer, 1);
}

// Whatever MKL path the decision selects must multiply correctly on this CPU. The reference is a
// float64 broadcast-multiply-and-sum (no BLAS involved), so a wrong kernel cannot agree with it.
torch::Tensor Reference(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble).unsqueeze(-1) * b.to(torch::kDouble).unsqueeze(-3)).sum(-2);
}

void ExpectClose(const torch::Tensor& got, const torch::Tensor& a, const torch::Tensor& b, const std::string& what) {
  const torch::Tensor want = Reference(a, b);
  // float32 accumulation error grows with the inner dimension and the magnitude of the products.
  const torch::Tensor scale = Reference(a.abs(), b.abs());
  const double worst = ((got.to(torch::kDouble) - want).abs() / (scale + 1e-30)).max().item<double>();
  EXPECT_LT(worst, 1e-5) << what << ": relative error " << worst;
}

TEST(MklDispatch, Float32ProductsMatchAFloat64Reference) {
  MklDispatchState();  // the decision is made before the first product either way
  torch::manual_seed(3);
  const std::vector<std::array<int64_t, 3>> shapes = {
      {129, 193, 255}, {64, 768, 192}, {1, 300, 200}, {200, 48, 200}, {31, 7, 1025}, {128, 512, 64}};
  for (const auto& [m, k, n] : shapes) {
    const std::string what = std::to_string(m) + "x" + std::to_string(k) + "x" + std::to_string(n);
    const torch::Tensor a = torch::randn({m, k});
    const torch::Tensor b = torch::randn({k, n});
    ExpectClose(torch::mm(a, b), a, b, "mm " + what);
    // The transposed operand layouts linear() and its backward use.
    const torch::Tensor bt = b.t().contiguous();
    ExpectClose(torch::nn::functional::linear(a, bt), a, b, "linear " + what);
    const torch::Tensor at = a.t().contiguous();
    ExpectClose(torch::mm(at.t(), b), a, b, "mm(a^T^T) " + what);
    // addmm with a bias row, as linear with bias runs it.
    const torch::Tensor bias = torch::randn({n});
    const torch::Tensor with_bias = torch::addmm(bias, a, b);
    ExpectClose(with_bias - bias, a, b, "addmm " + what);
  }
  const torch::Tensor a = torch::randn({6, 65, 33});
  const torch::Tensor b = torch::randn({6, 33, 47});
  ExpectClose(torch::bmm(a, b), a, b, "bmm 6x65x33x47");
}

}  // namespace
}  // namespace slm
