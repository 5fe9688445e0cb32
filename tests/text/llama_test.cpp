// The Llama backbone: parameter layout and initialisation, the KV cache against full
// recomputation, gradients through the frozen model against finite differences, the fused
// projections, input validation, last-layer positions and extra vocabulary. config.json parsing is
// in llama_config_test.cpp, checkpoints in llama_checkpoint_test.cpp, numerical parity with
// transformers in tests/parity/llama_parity_test.cpp.
#include "text/llama.h"
#include "text/generate.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

#include "core/error.h"
#include "core/fs.h"
#include "core/safetensors.h"
#include "tests/test_util.h"
#include "tests/text/llama_fixture.h"

namespace slm::text {
namespace {

using nlohmann::json;
using namespace llama_testing;

// ---------------------------------------------------------------------------------------------
// Module layout

std::set<std::string> ParameterNames(LlamaModel& model) {
  std::set<std::string> names;
  for (const auto& named : model->named_parameters()) names.insert(named.key());
  return names;
}

TEST(LlamaModelTest, ParametersCarryHuggingFaceNames) {
  LlamaModel untied = TinyModel(false);
  const std::set<std::string> names = ParameterNames(untied);
  std::set<std::string> expected = {"model.embed_tokens.weight", "model.norm.weight",
                                    "lm_head.weight"};
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    for (const char* n : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                          "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
                          "input_layernorm", "post_attention_layernorm"})
      expected.insert(p + n + ".weight");
  }
  EXPECT_EQ(names, expected);
  EXPECT_EQ(untied->named_buffers().size(), 0u);
  // 97*32 embed + 97*32 head + 32 norm + 2 * (q 32*32 + k 16*32 + v 16*32 + o 32*32 + 3 * 64*32 +
  // 2 * 32 norms)
  const int64_t per_layer = 32 * 32 + 16 * 32 + 16 * 32 + 32 * 32 + 3 * 64 * 32 + 2 * 32;
  EXPECT_EQ(untied->ParameterCount(), 2 * 97 * 32 + 32 + 2 * per_layer);
  EXPECT_EQ(untied->named_parameters()["model.layers.1.self_attn.k_proj.weight"].sizes(),
            torch::IntArrayRef({16, 32}));

  LlamaModel tied = TinyModel(true);
  std::set<std::string> tied_expected = expected;
  tied_expected.erase("lm_head.weight");
  EXPECT_EQ(ParameterNames(tied), tied_expected);
  EXPECT_EQ(tied->ParameterCount(), 97 * 32 + 32 + 2 * per_layer);

  LlamaConfig biased = TinyConfig();
  biased.attention_bias = true;
  LlamaModel with_bias(biased);
  EXPECT_EQ(with_bias->named_parameters()["model.layers.0.self_attn.q_proj.bias"].sizes(),
            torch::IntArrayRef({32}));
  EXPECT_EQ(with_bias->named_parameters()["model.layers.0.self_attn.o_proj.bias"].sizes(),
            torch::IntArrayRef({32}));
}

TEST(LlamaModelTest, InitialisesLikeTransformers) {
  LlamaConfig c = TinyConfig();
  c.initializer_range = 0.02;
  c.pad_token_id = 0;
  c.vocab_size = 4000;
  torch::manual_seed(1);
  LlamaModel model(c);
  auto params = model->named_parameters();
  EXPECT_TRUE(torch::equal(params["model.norm.weight"], torch::ones({32})));
  EXPECT_TRUE(torch::equal(params["model.embed_tokens.weight"][0], torch::zeros({32})));
  const torch::Tensor embed = params["model.embed_tokens.weight"].slice(0, 1);
  EXPECT_NEAR(embed.std().item<double>(), 0.02, 0.001);
  EXPECT_NEAR(embed.mean().item<double>(), 0.0, 0.001);
}

TEST(LlamaModelTest, ShapesDtypesAndHiddenStates) {
  LlamaModel model = TinyModel();
  LlamaInput input;
  input.input_ids = Ids({5, 6, 7, 8, 9, 10, 11, 12}, 2);
  input.output_hidden_states = true;
  LlamaOutput out;
  {
    torch::NoGradGuard no_grad;
    out = model->forward(input);
  }
  EXPECT_EQ(out.logits.sizes(), torch::IntArrayRef({2, 4, 97}));
  EXPECT_EQ(out.logits.scalar_type(), torch::kFloat);
  EXPECT_FALSE(out.logits.requires_grad());
  EXPECT_EQ(out.last_hidden_state.sizes(), torch::IntArrayRef({2, 4, 32}));
  ASSERT_EQ(out.hidden_states.size(), 3u);
  // transformers' convention: embeddings, each layer's output, the last one after the final norm.
  EXPECT_TRUE(torch::equal(out.hidden_states[0], model->EmbedTokens(input.input_ids)));
  EXPECT_TRUE(torch::equal(out.hidden_states[2], out.last_hidden_state));
  EXPECT_GT(MaxAbsDiff(out.hidden_states[1], out.hidden_states[0]), 0.1);
  // The head is the last hidden state times lm_head.weight^T.
  const torch::Tensor head = model->named_parameters()["lm_head.weight"];
  EXPECT_LE(MaxAbsDiff(out.logits, torch::matmul(out.last_hidden_state, head.t())), 1e-5);
  EXPECT_GT(out.logits.std().item<double>(), 0.3);  // weights large enough to test with

  input.logits_to_keep = 1;
  input.output_hidden_states = false;
  const LlamaOutput last = Forward(model, input.input_ids);
  LlamaOutput kept;
  {
    torch::NoGradGuard no_grad;
    kept = model->forward(input);
  }
  EXPECT_EQ(kept.logits.sizes(), torch::IntArrayRef({2, 1, 97}));
  EXPECT_LE(MaxAbsDiff(kept.logits, last.logits.slice(1, 3)), 1e-5);
  EXPECT_TRUE(kept.hidden_states.empty());

  // A bfloat16 model computes in bfloat16 and still returns float32 logits.
  LlamaModel bf16 = TinyModel();
  bf16->to(torch::kBFloat16);
  const LlamaOutput low = Forward(bf16, input.input_ids);
  EXPECT_EQ(low.logits.scalar_type(), torch::kFloat);
  EXPECT_EQ(low.last_hidden_state.scalar_type(), torch::kBFloat16);
  EXPECT_LE(MaxAbsDiff(low.logits, last.logits), 0.15);
  EXPECT_FALSE(torch::isnan(low.logits).any().item<bool>());
}

TEST(LlamaModelTest, TiedHeadUsesTheEmbeddings) {
  LlamaModel model = TinyModel(true);
  const LlamaOutput out = Forward(model, Ids({3, 4, 5}));
  const torch::Tensor embed = model->named_parameters()["model.embed_tokens.weight"];
  EXPECT_LE(MaxAbsDiff(out.logits, torch::matmul(out.last_hidden_state, embed.t())), 1e-5);
}

TEST(LlamaModelTest, InputsEmbedsEqualInputIds) {
  LlamaModel model = TinyModel();
  const torch::Tensor ids = Ids({11, 12, 13, 14, 15});
  LlamaInput input;
  {
    torch::NoGradGuard no_grad;
    input.inputs_embeds = model->EmbedTokens(ids);
  }
  const LlamaOutput a = Forward(model, ids);
  LlamaOutput b;
  {
    torch::NoGradGuard no_grad;
    b = model->forward(input);
  }
  EXPECT_TRUE(torch::equal(a.logits, b.logits));
}

// ---------------------------------------------------------------------------------------------
// KV cache against full recomputation

TEST(LlamaCacheTest, TokenByTokenEqualsOnePass) {
  LlamaModel model = TinyModel();
  const torch::Tensor ids = Ids({5, 17, 42, 8, 91, 33, 60, 2, 14, 77});
  const torch::Tensor full = Forward(model, ids).logits;

  KVCache cache;
  std::vector<torch::Tensor> steps;
  for (int64_t t = 0; t < ids.size(1); ++t)
    steps.push_back(Forward(model, ids.slice(1, t, t + 1), &cache).logits);
  EXPECT_EQ(cache.Length(), 10);
  ASSERT_EQ(cache.keys.size(), 2u);
  EXPECT_EQ(cache.keys[1].sizes(), torch::IntArrayRef({1, 2, 10, 8}));
  const double token_by_token = MaxAbsDiff(torch::cat(steps, 1), full);
  EXPECT_LE(token_by_token, 1e-5);

  // A prompt in one pass, then single steps, then a chunk of two.
  cache.Clear();
  std::vector<torch::Tensor> parts = {Forward(model, ids.slice(1, 0, 6), &cache).logits};
  parts.push_back(Forward(model, ids.slice(1, 6, 7), &cache).logits);
  parts.push_back(Forward(model, ids.slice(1, 7, 8), &cache).logits);
  parts.push_back(Forward(model, ids.slice(1, 8, 10), &cache).logits);
  const double prompt_then_steps = MaxAbsDiff(torch::cat(parts, 1), full);
  EXPECT_LE(prompt_then_steps, 1e-5);
  std::printf("cache vs recompute: token by token %.3g, prompt then steps %.3g\n", token_by_token,
              prompt_then_steps);
}

TEST(LlamaCacheTest, LeftPaddedBatchMatchesUnpaddedRowsWithAndWithoutCache) {
  LlamaModel model = TinyModel(false, 11);
  const int64_t pad = 0;
  // Row 0 is the 4-token sequence a, left-padded to 7; row 1 is the 7-token sequence b.
  const std::vector<int64_t> a = {21, 22, 23, 24};
  const std::vector<int64_t> b = {31, 32, 33, 34, 35, 36, 37};
  const torch::Tensor ids = Ids({pad, pad, pad, 21, 22, 23, 24, 31, 32, 33, 34, 35, 36, 37}, 2);
  const torch::Tensor mask = Ids({0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 2);

  const LlamaOutput batched = Forward(model, ids, nullptr, mask);
  EXPECT_FALSE(torch::isnan(batched.logits).any().item<bool>());
  const torch::Tensor alone_a = Forward(model, Ids(a)).logits;
  const torch::Tensor alone_b = Forward(model, Ids(b)).logits;
  const double padded_vs_alone = std::max(MaxAbsDiff(batched.logits[0].slice(0, 3), alone_a[0]),
                                          MaxAbsDiff(batched.logits[1], alone_b[0]));
  EXPECT_LE(padded_vs_alone, 1e-5);

  // The same batch step by step with a growing mask: the prompt's first 4 columns, then one
  // column per new token, continuing with 3 generated tokens.
  const torch::Tensor next = Ids({50, 51, 52, 53, 54, 55}, 2);
  KVCache cache;
  std::vector<torch::Tensor> cached = {
      Forward(model, ids.slice(1, 0, 4), &cache, mask.slice(1, 0, 4)).logits};
  for (int64_t t = 4; t < 7; ++t)
    cached.push_back(
        Forward(model, ids.slice(1, t, t + 1), &cache, mask.slice(1, 0, t + 1)).logits);
  torch::Tensor grown = mask;
  for (int64_t t = 0; t < 3; ++t) {
    grown = torch::cat({grown, torch::ones({2, 1}, torch::kLong)}, 1);
    cached.push_back(Forward(model, next.slice(1, t, t + 1), &cache, grown).logits);
  }
  const torch::Tensor all_ids = torch::cat({ids, next}, 1);
  const torch::Tensor one_pass = Forward(model, all_ids, nullptr, grown).logits;
  const torch::Tensor stepped = torch::cat(cached, 1);
  // Only real tokens: row 0 from column 3, row 1 everywhere.
  const double cache_padded = std::max(MaxAbsDiff(stepped[0].slice(0, 3), one_pass[0].slice(0, 3)),
                                       MaxAbsDiff(stepped[1], one_pass[1]));
  EXPECT_LE(cache_padded, 1e-5);
  EXPECT_FALSE(torch::isnan(stepped).any().item<bool>());
  std::printf("left-padded batch: vs unpadded rows %.3g, cached vs one pass %.3g\n",
              padded_vs_alone, cache_padded);
}

TEST(LlamaCacheTest, ExplicitPositionIdsOverrideTheDefault) {
  LlamaModel model = TinyModel();
  const torch::Tensor ids = Ids({4, 5, 6});
  const torch::Tensor reference = Forward(model, ids).logits;
  LlamaInput input;
  input.input_ids = ids;
  input.position_ids = Ids({0, 1, 2});
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(model->forward(input).logits, reference));
  // Rotary attention depends on relative positions only: a uniform shift changes nothing beyond
  // rounding, a different spacing changes the result.
  input.position_ids = Ids({10, 11, 12});
  EXPECT_LE(MaxAbsDiff(model->forward(input).logits, reference), 1e-4);
  input.position_ids = Ids({0, 1, 5});
  EXPECT_GT(MaxAbsDiff(model->forward(input).logits, reference), 1e-2);
}

// ---------------------------------------------------------------------------------------------
// Frozen backbone, gradients to inputs_embeds

TEST(LlamaFreezeTest, GradientReachesInputsEmbedsOnlyAndMatchesFiniteDifferences) {
  LlamaModel model = TinyModel();
  EXPECT_FALSE(model->IsFrozen());
  model->Freeze();
  EXPECT_TRUE(model->IsFrozen());
  EXPECT_FALSE(model->is_training());
  for (const auto& p : model->parameters()) EXPECT_FALSE(p.requires_grad());

  model->to(torch::kDouble);
  torch::manual_seed(3);
  const torch::Tensor embeds =
      (torch::randn({2, 5, 32}, torch::kDouble) * 0.5).set_requires_grad(true);
  const torch::Tensor weights = torch::randn({2, 5, 97}, torch::kDouble);
  const torch::Tensor mask = Ids({0, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 2);
  auto loss_of = [&](const torch::Tensor& x) {
    LlamaInput input;
    input.inputs_embeds = x;
    input.attention_mask = mask;
    const LlamaOutput out = model->forward(input);
    EXPECT_EQ(out.logits.scalar_type(), torch::kDouble);
    return (out.logits * weights).sum();
  };
  loss_of(embeds).backward();
  for (const auto& p : model->parameters()) EXPECT_FALSE(p.grad().defined());
  ASSERT_TRUE(embeds.grad().defined());
  EXPECT_GT(embeds.grad().abs().max().item<double>(), 1e-3);

  const double h = 1e-6;
  double worst = 0;
  const std::vector<std::array<int64_t, 3>> coordinates = {
      {0, 1, 0}, {0, 4, 17}, {1, 0, 31}, {1, 2, 5}, {1, 4, 9}};
  for (const auto& [b, t, d] : coordinates) {
    torch::NoGradGuard no_grad;
    torch::Tensor plus = embeds.detach().clone();
    torch::Tensor minus = embeds.detach().clone();
    plus[b][t][d] += h;
    minus[b][t][d] -= h;
    const double numeric = (loss_of(plus).item<double>() - loss_of(minus).item<double>()) / (2 * h);
    const double analytic = embeds.grad()[b][t][d].item<double>();
    const double relative = std::abs(numeric - analytic) / std::max(std::abs(analytic), 1e-12);
    EXPECT_LE(relative, 1e-6) << b << "," << t << "," << d << ": " << analytic << " vs " << numeric;
    worst = std::max(worst, relative);
  }
  // A padding position of row 0 never reaches a real token's logits in row 1; within row 0 it
  // only affects itself, so its gradient is whatever its own logits give (finite, not NaN).
  EXPECT_FALSE(torch::isnan(embeds.grad()).any().item<bool>());
  std::printf("finite differences vs autograd (float64, h = 1e-6): worst relative error %.3g\n",
              worst);
}

// A frozen backbone runs q/k/v and gate/up as one GEMM each over fused weights that the separate
// parameters point into. Same logits as the separate projections (a trainable model takes that
// path), in-place weight changes and a LoRA merge are seen, a dtype change rebuilds the fusion, and
// saving writes the same tensors.
TEST(LlamaFusionTest, FusedProjectionsMatchSeparateOnesAndFollowWeightChanges) {
  LlamaModel model = TinyModel();
  const torch::Tensor ids = Ids({1, 9, 27, 81, 3, 44, 5}, 1);
  auto trainable_logits = [&] {
    for (auto& [name, p] : model->BaseParameters()) p.set_requires_grad(true);
    torch::Tensor logits = Forward(model, ids).logits.detach();
    model->Freeze();
    return logits;
  };
  model->Freeze();
  const torch::Tensor fused = Forward(model, ids).logits;
  EXPECT_LT(MaxAbsDiff(fused, trainable_logits()), 1e-5);
  // The parts now live in one tensor: k's rows follow q's (no second copy of the weights).
  auto param = [&](const std::string& name) { return model->named_parameters()[name]; };
  const torch::Tensor q = param("model.layers.0.self_attn.q_proj.weight");
  const torch::Tensor k = param("model.layers.0.self_attn.k_proj.weight");
  EXPECT_EQ(static_cast<const char*>(k.data_ptr()),
            static_cast<const char*>(q.data_ptr()) + q.numel() * q.element_size());

  {  // An in-place change of one part reaches the fused GEMM.
    torch::NoGradGuard no_grad;
    param("model.layers.1.mlp.up_proj.weight").mul_(1.5);
    param("model.layers.0.self_attn.v_proj.weight").add_(0.1);
  }
  const torch::Tensor changed = Forward(model, ids).logits;
  EXPECT_GT(MaxAbsDiff(changed, fused), 1e-3);
  EXPECT_LT(MaxAbsDiff(changed, trainable_logits()), 1e-5);

  // An active LoRA branch on q/v takes the separate path; merged, the fused one again.
  LoraOptions lora;
  lora.rank = 2;
  lora.target_modules = {"q_proj", "v_proj", "up_proj"};
  model->AddLora(lora);
  for (torch::Tensor& p : model->LoraParameters()) {
    torch::NoGradGuard no_grad;
    p.normal_(0.0, 0.3);
    p.set_requires_grad(false);
  }
  const torch::Tensor with_lora = Forward(model, ids).logits;
  EXPECT_GT(MaxAbsDiff(with_lora, changed), 1e-3);
  model->MergeLora();
  EXPECT_LT(MaxAbsDiff(Forward(model, ids).logits, with_lora), 1e-5);

  // New tensors (a dtype change) are noticed and fused again.
  model->to(torch::kDouble);
  const torch::Tensor in_double = Forward(model, ids).logits;
  EXPECT_EQ(in_double.scalar_type(), torch::kDouble);
  EXPECT_LT(MaxAbsDiff(in_double, with_lora), 1e-4);

  // Saving writes the parts, identical to what the model computes with.
  testing::TempDir dir;
  model->to(torch::kFloat);
  const torch::Tensor before = Forward(model, ids).logits;
  model->SaveWeights(dir.path());
  EXPECT_LT(MaxAbsDiff(Forward(LoadLlama(dir.path()), ids).logits, before), 1e-6);
}

// ---------------------------------------------------------------------------------------------
// Bad inputs

TEST(LlamaInputTest, RejectsBadInputsWithClearMessages) {
  LlamaModel model = TinyModel();
  torch::NoGradGuard no_grad;
  LlamaInput input;
  EXPECT_SLM_ERROR(model->forward(input),
                   "give exactly one of input_ids and inputs_embeds (got neither)");
  input.input_ids = Ids({1, 2});
  input.inputs_embeds = torch::zeros({1, 2, 32});
  EXPECT_SLM_ERROR(model->forward(input),
                   "give exactly one of input_ids and inputs_embeds (got both)");

  input.input_ids = torch::Tensor();
  input.inputs_embeds = torch::zeros({1, 2, 48});
  EXPECT_SLM_ERROR(model->forward(input),
                   "inputs_embeds must be [B, T, hidden_size=32], got [1, 2, 48]");
  input.inputs_embeds = torch::zeros({1, 2, 32}, torch::kDouble);
  EXPECT_SLM_ERROR(model->forward(input), "inputs_embeds are Double but the model is Float");

  input.inputs_embeds = torch::Tensor();
  input.input_ids = torch::zeros({1, 65}, torch::kLong);
  EXPECT_SLM_ERROR(model->forward(input),
                   "65 positions (0 cached + 65 new) exceed max_position_embeddings 64");
  KVCache cache;
  input.cache = &cache;
  input.input_ids = torch::zeros({1, 60}, torch::kLong);
  model->forward(input);
  input.input_ids = torch::zeros({1, 5}, torch::kLong);
  EXPECT_SLM_ERROR(model->forward(input),
                   "65 positions (60 cached + 5 new) exceed max_position_embeddings 64");
  EXPECT_EQ(cache.Length(), 60);  // a rejected step leaves the cache alone
  input.input_ids = torch::zeros({2, 1}, torch::kLong);
  EXPECT_SLM_ERROR(model->forward(input), "the KV cache holds a batch of 1 but the input has 2");
  input.cache = nullptr;

  input.input_ids = Ids({1, 97});
  EXPECT_SLM_ERROR(model->forward(input), "token id 97 is outside the vocabulary of 97");
  input.input_ids = Ids({-3, 1});
  EXPECT_SLM_ERROR(model->forward(input), "token id -3 is outside the vocabulary of 97");
  input.input_ids = torch::zeros({1, 2}, torch::kFloat);
  EXPECT_SLM_ERROR(model->forward(input), "input_ids must be int64");
  input.input_ids = Ids({1, 2, 3});
  input.attention_mask = Ids({1, 1});
  EXPECT_SLM_ERROR(model->forward(input),
                   "attention_mask must be [B, T_past + T] = [1, 3], got [1, 2]");
  input.attention_mask = torch::Tensor();
  input.position_ids = Ids({0, 1});
  EXPECT_SLM_ERROR(model->forward(input), "position_ids must be [B, T] = [1, 3], got [1, 2]");
}

}  // namespace
}  // namespace slm::text

namespace slm::text {
namespace {

// With logits_positions the last layer runs at those positions only: the logits and the gradient
// reaching the inputs must be those of the full forward, with left padding too.
TEST(Llama, LastLayerAtChosenPositionsMatchesTheFullForwardAndBackward) {
  LlamaModel model = TinyModel();
  model->Freeze();
  torch::manual_seed(3);
  const torch::Tensor embeds = torch::randn({2, 9, model->Config().hidden_size});
  const torch::Tensor mask = torch::tensor({{1, 1, 1, 1, 1, 1, 1, 1, 1}, {0, 0, 0, 1, 1, 1, 1, 1, 1}}, torch::kLong);
  const torch::Tensor at = torch::tensor({{8, 2, 5}, {8, 3, 6}}, torch::kLong);
  const torch::Tensor weights = torch::randn({2, 3, model->Config().vocab_size});
  auto run = [&](bool chosen, torch::Tensor* grad) {
    const torch::Tensor x = embeds.clone().set_requires_grad(true);
    LlamaInput input;
    input.inputs_embeds = x;
    input.attention_mask = mask;
    torch::Tensor logits;
    if (chosen) {
      input.logits_positions = at;
      logits = model->forward(input).logits;
    } else {
      const torch::Tensor all = model->forward(input).logits;
      logits = all.gather(1, at.unsqueeze(-1).expand({2, 3, all.size(2)}));
    }
    (logits * weights).sum().backward();
    *grad = x.grad();
    return logits.detach();
  };
  torch::Tensor grad_chosen, grad_full;
  const torch::Tensor chosen = run(true, &grad_chosen);
  const torch::Tensor full = run(false, &grad_full);
  EXPECT_LT((chosen - full).abs().max().item<double>(), 1e-5);
  EXPECT_LT((grad_chosen - grad_full).abs().max().item<double>(), 1e-5);
  EXPECT_GT(grad_full.abs().max().item<double>(), 0.0);
  // Padding keys stay out of the pruned layer: row 1's padding gets no gradient in either path.
  EXPECT_EQ(grad_chosen[1].slice(0, 0, 3).abs().max().item<double>(), 0.0);
  EXPECT_EQ(grad_full[1].slice(0, 0, 3).abs().max().item<double>(), 0.0);
}

TEST(Llama, LogitsAtChosenPositionsEqualFullLogits) {
  LlamaModel model = TinyModel();
  const auto ids = torch::randint(3, 97, {2, 10}, torch::kLong);
  LlamaInput full;
  full.input_ids = ids;
  torch::NoGradGuard no_grad;
  const auto all = model->forward(full).logits;
  LlamaInput some = full;
  some.logits_positions = torch::tensor({{0, 4, 9}, {7, 7, 2}}, torch::kLong);
  const auto picked = model->forward(some).logits;
  ASSERT_EQ(picked.sizes(), (std::vector<int64_t>{2, 3, 97}));
  EXPECT_TRUE(torch::allclose(picked[0][1], all[0][4], 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(picked[1][2], all[1][2], 1e-5, 1e-6));
  some.logits_positions = torch::tensor({{0, 10}, {1, 2}}, torch::kLong);
  EXPECT_SLM_ERROR(model->forward(some), "logits_positions must be in [0, 10)");
  some.logits_positions = torch::tensor({0, 1}, torch::kLong);
  EXPECT_SLM_ERROR(model->forward(some), "logits_positions must be int64 [B=2, K]");
  some.logits_to_keep = 1;
  EXPECT_SLM_ERROR(model->forward(some), "not both");
}

}  // namespace
}  // namespace slm::text

namespace slm::text {
namespace {

TEST(LlamaExtraVocabulary, NewTokensEmbedAndArePredictedWhileTheBaseStaysFrozen) {
  for (const bool tied : {false, true}) {
    LlamaModel model = TinyModel(tied);
    model->Freeze();
    const int64_t v = model->Config().vocab_size;
    const torch::Tensor ids = torch::tensor({{1, 5, 9, 2}}, torch::kLong);
    LlamaInput input;
    input.input_ids = ids;
    const torch::Tensor before = model->forward(input).logits;
    model->AddVocabulary(3);
    EXPECT_EQ(model->TotalVocabulary(), v + 3);
    EXPECT_EQ(model->BaseParameters().size(), TinyModel(tied)->BaseParameters().size());
    const torch::Tensor after = model->forward(input).logits;
    ASSERT_EQ(after.size(2), v + 3);
    // Base tokens: the same logits as before over the base vocabulary.
    EXPECT_TRUE(torch::allclose(after.narrow(2, 0, v), before, 1e-5, 1e-5));
    // New ids embed from the new rows.
    const std::vector<torch::Tensor> extra = model->ExtraVocabularyParameters();
    ASSERT_EQ(extra.size(), 2u);
    EXPECT_TRUE(torch::equal(model->EmbedTokens(torch::tensor({{v + 1}}, torch::kLong))[0][0], extra[0][1]));
    // Training a new token: only the new rows get gradients.
    LlamaInput with_new;
    with_new.input_ids = Ids({1, v, v + 2});
    const torch::Tensor logits = model->forward(with_new).logits;
    torch::nn::functional::cross_entropy(logits[0], torch::tensor({v, v + 2, v + 1}, torch::kLong)).backward();
    for (const auto& [name, p] : model->BaseParameters()) EXPECT_FALSE(p.grad().defined()) << name;
    EXPECT_GT(extra[0].grad().abs().sum().item<double>(), 0);
    EXPECT_GT(extra[1].grad().abs().sum().item<double>(), 0);
    // Generation accepts prompts with new ids and may produce them.
    GenerationOptions options;
    options.max_new_tokens = 2;
    options.ignore_stop_tokens = true;
    EXPECT_EQ(Generate(model, {{1, v + 1}}, options).tokens[0].size(), 2u);
    EXPECT_SLM_ERROR(model->AddVocabulary(2), "already added");
    EXPECT_SLM_ERROR(model->EmbedTokens(torch::tensor({{v + 3}}, torch::kLong)), "outside the vocabulary");
  }
  EXPECT_SLM_ERROR(TinyModel()->AddVocabulary(0), "count >= 1");
}

}  // namespace
}  // namespace slm::text
