// Every backbone family (text/model_family.h) through every path of the one model code: the
// growing KVCache, the StaticKVCache step, the paged KVBlockPool pass and the pruned last layer of
// a training loss give the plain forward's logits, on sequences longer than the sliding window;
// left-padded batches equal each row alone; the window hides exactly what it should; LoRA (the
// model's own and a LoraBank's per-row one), gradients through the frozen backbone, SaveWeights
// round trips and cached generation work for each. The parity with transformers lives in
// tests/parity/family_parity_test.cpp.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "core/strings.h"
#include "tests/test_util.h"
#include "tests/text/tiny_llama.h"
#include "text/generate.h"
#include "text/kv_cache.h"
#include "text/llama.h"
#include "text/lora_bank.h"

namespace slm::text {
namespace {

constexpr int64_t kWindow = 4;

// A tiny model of `family` with the family's options switched on: windows of 4 where it has them,
// heads x head_dim != hidden for qwen3 and gemma2, soft caps small enough to bite.
LlamaConfig FamilyConfig(const std::string& family, int64_t layers = 3) {
  LlamaConfig c = testing::TinyLlamaConfig(97, 32, 128);
  c.model_type = family;
  c.num_hidden_layers = layers;
  auto types = [&](std::vector<std::string> pattern) {
    c.layer_types.clear();
    for (int64_t l = 0; l < layers; ++l) c.layer_types.push_back(pattern[l % pattern.size()]);
  };
  if (family == "llama") {
    c.attention_bias = true;
    c.rope_theta = 500000.0;
    c.rope_scaling.rope_type = "llama3";
    c.rope_scaling.factor = 8.0;
    c.rope_scaling.original_max_position_embeddings = 32;
  } else if (family == "qwen2") {
    c.sliding_window = kWindow;
    types({"full_attention", "sliding_attention"});
  } else if (family == "qwen3") {
    c.head_dim = 16;
  } else if (family == "mistral") {
    c.sliding_window = kWindow;
  } else if (family == "gemma2") {
    c.hidden_act = "gelu_pytorch_tanh";
    c.head_dim = 16;
    c.sliding_window = kWindow;
    types({"sliding_attention", "full_attention"});
    c.query_pre_attn_scalar = 12;
    c.attn_logit_softcapping = 2.0;
    c.final_logit_softcapping = 3.0;
    c.tie_word_embeddings = true;
  }
  return c;
}

// Norm weights and biases drawn at random (a fresh model has constants there).
LlamaModel FamilyModel(const LlamaConfig& config, uint64_t seed = 11) {
  torch::manual_seed(seed);
  LlamaModel model(config);
  torch::NoGradGuard no_grad;
  for (auto& [name, p] : model->BaseParameters()) {
    if (EndsWith(name, "norm.weight")) p.add_(torch::randn_like(p) * 0.2);
    if (EndsWith(name, ".bias")) p.normal_(0.0, 0.3);
  }
  model->Freeze();
  return model;
}

torch::Tensor Ids(int64_t length, uint64_t seed) {
  torch::manual_seed(seed);
  return torch::randint(3, 97, {1, length}, torch::kLong);
}

torch::Tensor Plain(LlamaModel model, const torch::Tensor& ids) {
  LlamaInput input;
  input.input_ids = ids;
  return model->forward(input).logits;
}

double Diff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

class FamilyTest : public ::testing::TestWithParam<std::string> {};

TEST_P(FamilyTest, EveryCacheFormEqualsThePlainForward) {
  torch::NoGradGuard no_grad;
  LlamaModel model = FamilyModel(FamilyConfig(GetParam()));
  const int64_t length = 15;  // well past the window of 4
  const torch::Tensor ids = Ids(length, 1);
  const torch::Tensor reference = Plain(model, ids);  // [1, T, V]

  // Growing cache: a prefill of 5, a chunk of 3 (several queries over a cached past), then
  // one token per step.
  {
    KVCache cache;
    double worst = 0;
    int64_t at = 0;
    for (int64_t chunk : {5, 3, 1, 1, 1, 1, 1, 1, 1}) {
      LlamaInput input;
      input.input_ids = ids.narrow(1, at, chunk);
      input.cache = &cache;
      worst = std::max(worst, Diff(model->forward(input).logits, reference.narrow(1, at, chunk)));
      at += chunk;
    }
    EXPECT_EQ(at, length);
    EXPECT_LT(worst, 1e-5) << "growing KVCache";
  }

  // Static cache: two left-padded rows prefilled with a KVCache, then one-token steps with
  // explicit positions (the CUDA-graph path of text/generate.cpp).
  {
    const torch::Tensor other = Ids(length, 2);
    const torch::Tensor other_reference = Plain(model, other.narrow(1, 3, length - 3));
    const int64_t prompt = 6;
    torch::Tensor batch = torch::zeros({2, prompt}, torch::kLong);
    batch[0] = ids[0].narrow(0, 0, prompt);
    batch[1].narrow(0, 3, prompt - 3).copy_(other[0].narrow(0, 3, prompt - 3));
    torch::Tensor mask = torch::ones({2, prompt}, torch::kLong);
    mask[1].narrow(0, 0, 3).zero_();
    KVCache cache;
    LlamaInput prefill;
    prefill.input_ids = batch;
    prefill.attention_mask = mask;
    prefill.cache = &cache;
    model->forward(prefill);
    StaticKVCache fixed = StaticKVCache::FromCache(cache, mask, length + 2);
    double worst = 0;
    for (int64_t t = prompt; t < length; ++t) {
      LlamaInput step;
      step.input_ids = torch::stack({ids[0][t], other[0][t]}).view({2, 1});
      step.position_ids = torch::tensor({t, t - 3}, torch::kLong).view({2, 1});
      step.static_cache = &fixed;
      const torch::Tensor logits = model->forward(step).logits;
      worst = std::max(worst, Diff(logits[0][0], reference[0][t]));
      worst = std::max(worst, Diff(logits[1][0], other_reference[0][t - 3]));
    }
    EXPECT_LT(worst, 1e-5) << "StaticKVCache";
  }

  // Paged: chunks of 6, 4, then single tokens through a block pool of 4-position blocks.
  {
    KVBlockPool pool(model->Config(), 8, 4, torch::TensorOptions(torch::kFloat));
    const std::vector<int64_t> blocks = pool.Allocate(pool.BlocksFor(length));
    const torch::Tensor table = torch::tensor(blocks, torch::kLong).unsqueeze(0);
    double worst = 0;
    int64_t at = 0;
    for (int64_t chunk : {6, 4, 1, 1, 1, 1, 1}) {
      PagedKVBatch paged{&pool, table, torch::tensor({at}, torch::kLong), torch::tensor({chunk}, torch::kLong)};
      LlamaInput input;
      input.input_ids = ids.narrow(1, at, chunk);
      input.paged = &paged;
      worst = std::max(worst, Diff(model->forward(input).logits, reference.narrow(1, at, chunk)));
      at += chunk;
    }
    EXPECT_LT(worst, 1e-5) << "paged KVBlockPool";
  }

  // A training loss's pruned last layer at a few positions.
  {
    LlamaInput input;
    input.input_ids = ids;
    input.logits_positions = torch::tensor({{2, 9, 14}}, torch::kLong);
    const torch::Tensor logits = model->forward(input).logits;  // [1, 3, V]
    EXPECT_LT(Diff(logits, reference.index_select(1, torch::tensor({2, 9, 14}, torch::kLong))), 1e-5)
        << "pruned last layer";
  }
}

TEST_P(FamilyTest, LeftPaddedRowsEqualEachRowAlone) {
  torch::NoGradGuard no_grad;
  LlamaModel model = FamilyModel(FamilyConfig(GetParam()));
  const torch::Tensor a = Ids(13, 3), b = Ids(7, 4);
  torch::Tensor batch = torch::zeros({2, 13}, torch::kLong);
  batch[0] = a[0];
  batch[1].narrow(0, 6, 7).copy_(b[0]);
  torch::Tensor mask = torch::ones({2, 13}, torch::kLong);
  mask[1].narrow(0, 0, 6).zero_();
  LlamaInput input;
  input.input_ids = batch;
  input.attention_mask = mask;
  const torch::Tensor logits = model->forward(input).logits;
  EXPECT_LT(Diff(logits[0], Plain(model, a)[0]), 1e-5);
  EXPECT_LT(Diff(logits[1].narrow(0, 6, 7), Plain(model, b)[0]), 1e-5);
  EXPECT_FALSE(torch::isnan(logits).any().item<bool>());
}

TEST_P(FamilyTest, CachedGenerationEqualsRecomputation) {
  LlamaModel model = FamilyModel(FamilyConfig(GetParam()));
  const std::vector<std::vector<int64_t>> prompts = {{5, 9, 11, 40, 7, 3, 20}, {8, 3}};
  GenerationOptions options;
  options.max_new_tokens = 12;
  options.ignore_stop_tokens = true;
  const GenerationResult reference = GenerateWithoutCache(model, prompts, options);
  for (const char* mode : {"dynamic", "static"}) {
    options.decode_mode = mode;
    EXPECT_EQ(Generate(model, prompts, options).tokens, reference.tokens) << mode;
  }
}

TEST_P(FamilyTest, LoraOwnAndPerRowFromABankAgree) {
  LlamaModel model = FamilyModel(FamilyConfig(GetParam()));
  const torch::Tensor ids = Ids(11, 5);
  torch::NoGradGuard no_grad;
  const torch::Tensor base = Plain(model, ids);
  LoraOptions options;
  options.rank = 4;
  options.alpha = 8;
  options.target_modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  model->AddLora(options);
  torch::manual_seed(6);
  for (torch::Tensor& p : model->LoraParameters()) p.normal_(0.0, 0.2);
  const torch::Tensor tuned = Plain(model, ids);
  EXPECT_GT(Diff(tuned, base), 1e-3);

  slm::testing::TempDir dir;
  model->SaveLora(dir.File("lora"));
  LlamaModel again = FamilyModel(FamilyConfig(GetParam()));
  again->LoadLora(dir.File("lora"));
  EXPECT_LT(Diff(Plain(again, ids), tuned), 1e-6);

  LoraBank bank(model->Config(), 3, 4, torch::TensorOptions(torch::kFloat));
  const LoraAdapter adapter = ReadLoraAdapter(model->Config(), dir.File("lora"));
  bank.Set(2, adapter.weights, options.alpha / options.rank);
  model->SetLoraScale(0.0);
  const RowLora rows{&bank, torch::tensor({2, 0}, torch::kLong)};
  LlamaInput input;
  input.input_ids = torch::cat({ids, ids});
  input.row_lora = &rows;
  const torch::Tensor logits = model->forward(input).logits;
  EXPECT_LT(Diff(logits[0], tuned[0]), 1e-5);
  EXPECT_LT(Diff(logits[1], base[0]), 1e-5);
}

TEST_P(FamilyTest, GradientsReachInputsThroughTheFrozenBackbone) {
  LlamaModel model = FamilyModel(FamilyConfig(GetParam()));
  torch::Tensor embeds = model->EmbedTokens(Ids(10, 7)).detach().requires_grad_(true);
  LlamaInput input;
  input.inputs_embeds = embeds;
  input.logits_positions = torch::tensor({{6, 9}}, torch::kLong);
  model->forward(input).logits.logsumexp(-1).sum().backward();
  ASSERT_TRUE(embeds.grad().defined());
  EXPECT_TRUE(torch::isfinite(embeds.grad()).all().item<bool>());
  EXPECT_GT(embeds.grad().abs().sum().item<double>(), 0.0);
  for (const auto& [name, p] : model->BaseParameters()) EXPECT_FALSE(p.grad().defined()) << name;
}

TEST_P(FamilyTest, SavedWeightsReloadAsTheSameFamily) {
  LlamaModel model = FamilyModel(FamilyConfig(GetParam()));
  slm::testing::TempDir dir;
  model->SaveWeights(dir.path());
  LlamaModel loaded = LoadLlama(dir.path());
  const LlamaConfig& c = loaded->Config();
  EXPECT_EQ(c.model_type, GetParam());
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) EXPECT_EQ(c.LayerWindow(l), model->Config().LayerWindow(l)) << l;
  EXPECT_EQ(c.AttentionScale(), model->Config().AttentionScale());
  EXPECT_EQ(c.final_logit_softcapping, model->Config().final_logit_softcapping);
  EXPECT_EQ(c.hidden_act, model->Config().hidden_act);
  torch::NoGradGuard no_grad;
  const torch::Tensor ids = Ids(12, 8);
  EXPECT_EQ(Diff(Plain(loaded, ids), Plain(model, ids)), 0.0);
}

INSTANTIATE_TEST_SUITE_P(Families, FamilyTest, ::testing::Values("llama", "qwen2", "qwen3", "mistral", "gemma2"));

// One layer that slides over 4 positions: position p depends on tokens p-3..p only, in every path.
TEST(SlidingWindow, HidesExactlyTheKeysOutsideTheWindow) {
  torch::NoGradGuard no_grad;
  for (const std::string family : {"mistral", "gemma2", "qwen2"}) {
    LlamaConfig config = FamilyConfig(family, 1);
    if (family != "mistral") config.layer_types = {"sliding_attention"};
    LlamaModel model = FamilyModel(config);
    const torch::Tensor ids = Ids(12, 9);
    torch::Tensor changed = ids.clone();
    changed[0][2] = (changed[0][2].item<int64_t>() + 1) % 90 + 3;
    const torch::Tensor a = Plain(model, ids), b = Plain(model, changed);
    for (int64_t p = 0; p < 12; ++p) {
      const bool sees = p >= 2 && p < 2 + kWindow;
      EXPECT_EQ(Diff(a[0][p], b[0][p]) > 1e-6, sees) << family << " position " << p;
    }
    // A full-attention layer sees it everywhere after it.
    config.sliding_window = family == "mistral" ? 0 : kWindow;
    if (family != "mistral") config.layer_types = {"full_attention"};
    LlamaModel full = FamilyModel(config);
    EXPECT_GT(Diff(Plain(full, ids)[0][11], Plain(full, changed)[0][11]), 1e-6) << family;
  }
}

TEST(FamilyModel, GemmaTraitsChangeTheComputation) {
  torch::NoGradGuard no_grad;
  const LlamaConfig gemma = FamilyConfig("gemma2");
  LlamaModel model = FamilyModel(gemma);
  const torch::Tensor ids = Ids(9, 10);
  // Embeddings are scaled by sqrt(hidden_size); logits are capped at final_logit_softcapping.
  const torch::Tensor raw = torch::embedding(model->BaseParameters().front().second, ids);
  EXPECT_LT(Diff(model->EmbedTokens(ids), raw * std::sqrt(32.0)), 1e-5);
  EXPECT_LE(Plain(model, ids).abs().max().item<double>(), gemma.final_logit_softcapping);
  // Each trait matters: turning it off changes the logits.
  for (const char* trait : {"softcap", "scale", "act"}) {
    LlamaConfig other = gemma;
    if (std::string(trait) == "softcap") other.attn_logit_softcapping = 0;
    if (std::string(trait) == "scale") other.query_pre_attn_scalar = 0;
    if (std::string(trait) == "act") other.hidden_act = "silu";
    EXPECT_GT(Diff(Plain(model, ids), Plain(FamilyModel(other), ids)), 1e-4) << trait;
  }
}

TEST(FamilyModel, RefusesOptionsItsFamilyCannotExpress) {
  LlamaConfig c = FamilyConfig("llama");
  c.sliding_window = 8;
  EXPECT_SLM_ERROR(c.Validate("cfg"), "cfg: llama has no sliding-window attention");
  c = FamilyConfig("qwen2");
  c.final_logit_softcapping = 30;
  EXPECT_SLM_ERROR(c.Validate("cfg"), "soft-capping are gemma2 options, not qwen2's");
  c = FamilyConfig("mistral");
  c.layer_types = {"full_attention", "full_attention", "full_attention"};
  EXPECT_SLM_ERROR(c.Validate("cfg"), "mistral applies \"sliding_window\" to every layer");
  c = FamilyConfig("gemma2");
  c.layer_types.pop_back();
  EXPECT_SLM_ERROR(c.Validate("cfg"), "\"layer_types\" has 2 entries for 3 layers");
  c = FamilyConfig("gemma2");
  c.layer_types[1] = "chunked_attention";
  EXPECT_SLM_ERROR(c.Validate("cfg"), "layer type \"chunked_attention\" in \"layer_types\" is not supported");
  c = FamilyConfig("qwen2");
  c.mlp_bias = true;
  EXPECT_SLM_ERROR(c.Validate("cfg"), "\"mlp_bias\" is not an option of qwen2");
  c.model_type = "phi3";
  EXPECT_SLM_ERROR(c.Validate("cfg"), "model_type \"phi3\" is not supported (supported: llama, qwen2, qwen3, mistral, gemma2)");
}

}  // namespace
}  // namespace slm::text
