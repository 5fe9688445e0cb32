#include "text/generate.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "core/config.h"
#include "core/error.h"
#include "tests/test_util.h"
#include "text/llama.h"

namespace slm::text {
namespace {

using Ids = std::vector<int64_t>;
using Prompts = std::vector<Ids>;

LlamaConfig TinyConfig() {
  LlamaConfig config;
  config.vocab_size = 64;
  config.hidden_size = 32;
  config.intermediate_size = 64;
  config.num_hidden_layers = 2;
  config.num_attention_heads = 4;
  config.num_key_value_heads = 2;
  config.max_position_embeddings = 96;
  config.bos_token_id = 1;
  config.eos_token_ids = {2};
  // Wider than transformers' 0.02 so that logits are spread out (std ~1): greedy choices then
  // have margins far above float32 rounding, and comparisons between code paths are exact.
  config.initializer_range = 0.2;
  return config;
}

LlamaModel TinyModel(const LlamaConfig& config = TinyConfig(), uint64_t seed = 3) {
  torch::manual_seed(seed);
  LlamaModel model(config);
  model->Freeze();
  return model;
}

GenerationOptions Greedy(int64_t max_new_tokens) {
  GenerationOptions options;
  options.max_new_tokens = max_new_tokens;
  options.ignore_stop_tokens = true;
  return options;
}

const Prompts kPrompts = {{1, 5, 9}, {1, 40, 41, 42, 17, 8, 30}, {1, 22, 7, 7, 50}};

TEST(GenerateTest, CachedGreedyEqualsFullRecomputationForOnePrompt) {
  LlamaModel model = TinyModel();
  const Prompts prompt = {{1, 12, 33, 4}};
  const GenerationResult cached = Generate(model, prompt, Greedy(24));
  const GenerationResult recomputed = GenerateWithoutCache(model, prompt, Greedy(24));
  ASSERT_EQ(cached.tokens.size(), 1u);
  EXPECT_EQ(cached.tokens[0].size(), 24u);
  EXPECT_EQ(cached.tokens, recomputed.tokens);
  EXPECT_EQ(cached.finish_reasons, (std::vector<std::string>{"length"}));
  EXPECT_EQ(cached.prompt_tokens, 4);
  EXPECT_EQ(cached.GeneratedTokens(), 24);
  EXPECT_GT(cached.prefill_seconds, 0);
  EXPECT_GT(cached.decode_seconds, 0);
  for (const int64_t id : cached.tokens[0]) {
    EXPECT_GE(id, 0);
    EXPECT_LT(id, 64);
  }
  // Not a degenerate model that repeats one token: the comparison has something to compare.
  EXPECT_GE(std::set<int64_t>(cached.tokens[0].begin(), cached.tokens[0].end()).size(), 4u);
}

TEST(GenerateTest, LeftPaddedBatchMatchesRecomputationAndSinglePrompts) {
  LlamaModel model = TinyModel();
  const GenerationResult cached = Generate(model, kPrompts, Greedy(16));
  const GenerationResult recomputed = GenerateWithoutCache(model, kPrompts, Greedy(16));
  EXPECT_EQ(cached.tokens, recomputed.tokens);
  EXPECT_EQ(cached.prompt_tokens, 3 + 7 + 5);
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    const GenerationResult alone = Generate(model, {kPrompts[i]}, Greedy(16));
    EXPECT_EQ(cached.tokens[i], alone.tokens[0]) << "row " << i;
  }
  // The rows differ from each other, so the comparison above is not vacuous.
  EXPECT_NE(cached.tokens[0], cached.tokens[1]);
}

TEST(GenerateTest, EmbeddingsGiveTheSameTokensAsTheirIds) {
  LlamaModel model = TinyModel();
  const GenerationResult from_ids = Generate(model, kPrompts, Greedy(10));
  // Left-pad by hand, as an adapter would after splicing.
  const int64_t longest = 7;
  torch::Tensor ids = torch::zeros({3, longest}, torch::kLong);
  torch::Tensor mask = torch::zeros({3, longest}, torch::kLong);
  for (int64_t b = 0; b < 3; ++b) {
    const int64_t length = static_cast<int64_t>(kPrompts[b].size());
    ids[b].narrow(0, longest - length, length).copy_(torch::tensor(kPrompts[b]));
    mask[b].narrow(0, longest - length, length).fill_(1);
  }
  torch::Tensor embeds;
  {
    torch::NoGradGuard no_grad;
    embeds = model->EmbedTokens(ids);
  }
  const GenerationResult from_embeds = GenerateFromEmbeds(model, embeds, mask, Greedy(10));
  EXPECT_EQ(from_embeds.tokens, from_ids.tokens);
  EXPECT_EQ(from_embeds.prompt_tokens, 15);
  // A bool mask works too.
  EXPECT_EQ(GenerateFromEmbeds(model, embeds, mask.to(torch::kBool), Greedy(10)).tokens,
            from_ids.tokens);
}

// The fixed-shape decoding that CUDA graphs replay, checked on the CPU against the growing cache:
// same tokens for single prompts, a left-padded batch and embeddings, and the same logits step by
// step through LlamaModel directly.
TEST(GenerateTest, StaticCacheDecodingEqualsTheGrowingCache) {
  LlamaModel model = TinyModel();
  GenerationOptions fixed = Greedy(20);
  fixed.decode_mode = "static";
  GenerationOptions growing = Greedy(20);
  growing.decode_mode = "dynamic";
  const GenerationResult batch = Generate(model, kPrompts, fixed);
  EXPECT_EQ(batch.tokens, Generate(model, kPrompts, growing).tokens);
  EXPECT_EQ(batch.tokens, Generate(model, kPrompts, Greedy(20)).tokens);  // auto = dynamic on CPU
  EXPECT_EQ(Generate(model, {kPrompts[1]}, fixed).tokens[0], batch.tokens[1]);
  const Prompts long_prompt = {{1, 12, 33, 4}};
  EXPECT_EQ(Generate(model, long_prompt, fixed).tokens, GenerateWithoutCache(model, long_prompt, Greedy(20)).tokens);

  // Embeddings of the left-padded batch.
  torch::Tensor ids = torch::zeros({3, 7}, torch::kLong), mask = torch::zeros({3, 7}, torch::kLong);
  for (int64_t b = 0; b < 3; ++b) {
    const int64_t length = static_cast<int64_t>(kPrompts[b].size());
    ids[b].narrow(0, 7 - length, length).copy_(torch::tensor(kPrompts[b]));
    mask[b].narrow(0, 7 - length, length).fill_(1);
  }
  torch::NoGradGuard no_grad;
  EXPECT_EQ(GenerateFromEmbeds(model, model->EmbedTokens(ids), mask, fixed).tokens, batch.tokens);

  // Logits of every step: the static cache attends over its whole capacity with a mask, the
  // growing cache over exactly the past; they agree to float32 reassociation.
  KVCache cache;
  LlamaInput prefill;
  prefill.input_ids = ids;
  prefill.attention_mask = mask;
  prefill.cache = &cache;
  model->forward(prefill);
  StaticKVCache fixed_cache = StaticKVCache::FromCache(cache, mask, 7 + 6);
  EXPECT_EQ(fixed_cache.Capacity(), 13);
  torch::Tensor grown_mask = mask;
  torch::Tensor position = mask.sum(1, true) - 1;
  double worst = 0;
  for (int64_t step = 0; step < 6; ++step) {
    const torch::Tensor next = torch::tensor(std::vector<int64_t>{5 + step, 9, 30 - step}).view({3, 1});
    position = position + 1;
    grown_mask = torch::cat({grown_mask, torch::ones({3, 1}, torch::kLong)}, 1);
    LlamaInput growing_step;
    growing_step.input_ids = next;
    growing_step.attention_mask = grown_mask;
    growing_step.position_ids = position;
    growing_step.cache = &cache;
    LlamaInput static_step;
    static_step.input_ids = next;
    static_step.position_ids = position;
    static_step.static_cache = &fixed_cache;
    const torch::Tensor expected = model->forward(growing_step).logits;
    const torch::Tensor got = model->forward(static_step).logits;
    ASSERT_EQ(got.sizes(), expected.sizes());
    worst = std::max(worst, (got - expected).abs().max().item<double>());
  }
  EXPECT_LT(worst, 1e-5);
  EXPECT_EQ(fixed_cache.slot.item<int64_t>(), 13);
  EXPECT_TRUE(fixed_cache.valid.all().item<bool>() == false);  // the prompt's padding stays invalid
  EXPECT_EQ(fixed_cache.valid.sum().item<int64_t>(), 15 + 3 * 6);

  // Misuse is reported, not silently wrong.
  EXPECT_SLM_ERROR(StaticKVCache::FromCache(cache, grown_mask, 4), "capacity 4 is below the 13 cached positions");
  EXPECT_SLM_ERROR(StaticKVCache::FromCache(KVCache{}, mask, 8), "the cache is empty");
  LlamaInput two_tokens;
  two_tokens.input_ids = torch::ones({3, 2}, torch::kLong);
  two_tokens.position_ids = torch::zeros({3, 2}, torch::kLong);
  two_tokens.static_cache = &fixed_cache;
  EXPECT_SLM_ERROR(model->forward(two_tokens), "a static-cache step takes one token per row, got 2");
  LlamaInput no_positions;
  no_positions.input_ids = torch::ones({3, 1}, torch::kLong);
  no_positions.static_cache = &fixed_cache;
  EXPECT_SLM_ERROR(model->forward(no_positions), "a static-cache step needs position_ids [B, 1]");
}

TEST(GenerateTest, StopTokensEndRowsWithoutBeingReported) {
  LlamaModel model = TinyModel();
  const Ids prompt = kPrompts[1];
  const Ids free_run = Generate(model, {prompt}, Greedy(20)).tokens[0];
  const size_t k = 5;
  const int64_t stop = free_run[k];
  const size_t first = std::find(free_run.begin(), free_run.end(), stop) - free_run.begin();
  const Ids expected(free_run.begin(), free_run.begin() + first);

  GenerationOptions options = Greedy(20);
  options.ignore_stop_tokens = false;
  options.stop_token_ids = {stop};
  const GenerationResult stopped = Generate(model, {prompt}, options);
  EXPECT_EQ(stopped.tokens[0], expected);
  EXPECT_EQ(stopped.finish_reasons[0], "stop");
  EXPECT_EQ(GenerateWithoutCache(model, {prompt}, options).tokens[0], expected);

  // Without stop_token_ids the model config's EOS ids stop generation (same weights, other EOS).
  LlamaConfig config = TinyConfig();
  config.eos_token_ids = {63, stop};
  LlamaModel with_eos = TinyModel(config);
  GenerationOptions defaults;
  defaults.max_new_tokens = 20;
  const GenerationResult by_eos = Generate(with_eos, {prompt}, defaults);
  EXPECT_EQ(by_eos.tokens[0], expected);
  EXPECT_EQ(by_eos.finish_reasons[0], "stop");

  // In a batch, a stopped row does not disturb the others.
  const GenerationResult free_batch = Generate(model, kPrompts, Greedy(20));
  const GenerationResult batch = Generate(model, kPrompts, options);
  for (size_t row = 0; row < kPrompts.size(); ++row) {
    const Ids& all = free_batch.tokens[row];
    const auto end = std::find(all.begin(), all.end(), stop);
    EXPECT_EQ(batch.tokens[row], Ids(all.begin(), end)) << "row " << row;
    EXPECT_EQ(batch.finish_reasons[row], end == all.end() ? "length" : "stop") << "row " << row;
  }
}

TEST(GenerateTest, CallbackStreamsTokensInOrderAndCanStopARow) {
  LlamaModel model = TinyModel();
  std::vector<std::pair<int64_t, int64_t>> streamed;
  const GenerationResult result =
      Generate(model, kPrompts, Greedy(8), [&](int64_t row, int64_t token) {
        streamed.emplace_back(row, token);
        return true;
      });
  ASSERT_EQ(streamed.size(), 24u);
  for (size_t i = 0; i < streamed.size(); ++i) {
    // Step by step, rows in order within a step.
    EXPECT_EQ(streamed[i].first, static_cast<int64_t>(i % 3));
    EXPECT_EQ(streamed[i].second, result.tokens[i % 3][i / 3]);
  }

  int64_t calls_for_row1 = 0;
  const GenerationResult stopped = Generate(model, kPrompts, Greedy(8), [&](int64_t row, int64_t) {
    return row != 1 || ++calls_for_row1 < 2;
  });
  EXPECT_EQ(calls_for_row1, 2);
  EXPECT_EQ(stopped.tokens[1], Ids(result.tokens[1].begin(), result.tokens[1].begin() + 2));
  EXPECT_EQ(stopped.finish_reasons, (std::vector<std::string>{"length", "callback", "length"}));
  EXPECT_EQ(stopped.tokens[0], result.tokens[0]);
  EXPECT_EQ(stopped.tokens[2], result.tokens[2]);
}

TEST(GenerateTest, SamplingIsReproducibleForASeed) {
  LlamaModel model = TinyModel();
  GenerationOptions options = Greedy(20);
  options.temperature = 1.0;
  options.seed = 5;
  const GenerationResult first = Generate(model, kPrompts, options);
  const GenerationResult second = Generate(model, kPrompts, options);
  EXPECT_EQ(first.tokens, second.tokens);
  options.seed = 6;
  const GenerationResult other = Generate(model, kPrompts, options);
  EXPECT_NE(first.tokens, other.tokens);
  // Sampling with the cache and without it draws the same tokens from the same seed.
  options.seed = 5;
  EXPECT_EQ(GenerateWithoutCache(model, kPrompts, options).tokens, first.tokens);
  // At temperature 1 over a 64-token vocabulary, sampling departs from greedy.
  EXPECT_NE(first.tokens, Generate(model, kPrompts, Greedy(20)).tokens);
}

TEST(GenerateTest, TopKOfOneIsGreedy) {
  LlamaModel model = TinyModel();
  GenerationOptions options = Greedy(12);
  options.temperature = 1.5;
  options.top_k = 1;
  options.seed = 11;
  EXPECT_EQ(Generate(model, kPrompts, options).tokens,
            Generate(model, kPrompts, Greedy(12)).tokens);
  // A tiny nucleus keeps only the most likely token too.
  options.top_k = 0;
  options.top_p = 1e-6;
  EXPECT_EQ(Generate(model, kPrompts, options).tokens,
            Generate(model, kPrompts, Greedy(12)).tokens);
}

TEST(GenerateTest, RepetitionPenaltyFollowsTransformers) {
  // Positive logits of seen tokens are divided, negative ones multiplied.
  const torch::Tensor logits = torch::tensor({{3.0f, 2.0f, -1.0f, -2.0f}});
  const torch::Tensor seen = torch::tensor({{true, false, true, false}});
  const torch::Tensor penalized = ApplyRepetitionPenalty(logits, seen, 2.0);
  EXPECT_TRUE(torch::allclose(penalized, torch::tensor({{1.5f, 2.0f, -2.0f, -2.0f}})));
  // ... which changes what greedy picks: token 0 before, token 1 after.
  EXPECT_EQ(logits.argmax(-1).item<int64_t>(), 0);
  EXPECT_EQ(penalized.argmax(-1).item<int64_t>(), 1);
}

TEST(GenerateTest, RepetitionPenaltyChangesGreedyGeneration) {
  LlamaModel model = TinyModel();
  const Ids prompt = kPrompts[2];
  const Ids plain = Generate(model, {prompt}, Greedy(20)).tokens[0];
  GenerationOptions options = Greedy(20);
  options.repetition_penalty = 100.0;
  const Ids penalized = Generate(model, {prompt}, options).tokens[0];
  EXPECT_NE(plain, penalized);
  // A prohibitive penalty makes every token new: none from the prompt, none repeated.
  std::set<int64_t> seen(prompt.begin(), prompt.end());
  for (const int64_t id : penalized) EXPECT_TRUE(seen.insert(id).second) << id;
  // The penalty sees each row's own tokens only, so batching does not change it.
  EXPECT_EQ(Generate(model, kPrompts, options).tokens[2], penalized);
  EXPECT_EQ(GenerateWithoutCache(model, {prompt}, options).tokens[0], penalized);
}

TEST(GenerateTest, SamplingFiltersFollowTransformers) {
  const double inf = std::numeric_limits<double>::infinity();
  const torch::Tensor logits = torch::tensor({{1.0f, 3.0f, 2.0f, 0.0f}});
  EXPECT_TRUE(torch::equal(ApplySamplingFilters(logits, 1.0, 2, 1.0),
                           torch::tensor({{-inf, 3.0, 2.0, -inf}}).to(torch::kFloat)));
  EXPECT_TRUE(torch::allclose(ApplySamplingFilters(logits, 2.0, 0, 1.0), logits / 2));
  // softmax = [0.087, 0.644, 0.237, 0.032]: the nucleus for 0.8 is {1, 2}; for 0.5 just {1}.
  EXPECT_TRUE(torch::equal(ApplySamplingFilters(logits, 1.0, 0, 0.8),
                           torch::tensor({{-inf, 3.0, 2.0, -inf}}).to(torch::kFloat)));
  EXPECT_TRUE(torch::equal(ApplySamplingFilters(logits, 1.0, 0, 0.5),
                           torch::tensor({{-inf, 3.0, -inf, -inf}}).to(torch::kFloat)));
}

TEST(GenerateTest, ZeroNewTokensReturnsEmptyRows) {
  LlamaModel model = TinyModel();
  const GenerationResult result = Generate(model, kPrompts, Greedy(0));
  EXPECT_EQ(result.tokens, (std::vector<Ids>{{}, {}, {}}));
  EXPECT_EQ(result.finish_reasons, (std::vector<std::string>{"length", "length", "length"}));
}

TEST(GenerateTest, RejectsInvalidOptionsAndPrompts) {
  LlamaModel model = TinyModel();
  const Prompts prompts = {{1, 2, 3}};
  auto with = [](auto change) {
    GenerationOptions options;
    change(options);
    return options;
  };
  EXPECT_SLM_ERROR(Generate(model, prompts, with([](auto& o) { o.temperature = -0.5; })),
                   "temperature must be >= 0");
  EXPECT_SLM_ERROR(Generate(model, prompts, with([](auto& o) { o.top_p = 0; })),
                   "top_p must be in (0, 1]");
  EXPECT_SLM_ERROR(Generate(model, prompts, with([](auto& o) { o.top_p = 1.5; })),
                   "top_p must be in (0, 1]");
  EXPECT_SLM_ERROR(Generate(model, prompts, with([](auto& o) { o.top_k = -1; })),
                   "top_k must be >= 0");
  EXPECT_SLM_ERROR(Generate(model, prompts, with([](auto& o) { o.repetition_penalty = 0; })),
                   "repetition_penalty must be > 0");
  EXPECT_SLM_ERROR(Generate(model, prompts, with([](auto& o) { o.max_new_tokens = -1; })),
                   "max_new_tokens must be >= 0");
  EXPECT_SLM_ERROR(Generate(model, prompts, with([](auto& o) { o.stop_token_ids = {64}; })),
                   "stop token id 64 is outside the model's vocabulary [0, 64)");
  EXPECT_SLM_ERROR(Generate(model, {}, GenerationOptions{}), "the list of prompts is empty");
  EXPECT_SLM_ERROR(Generate(model, {{1, 2}, {}}, GenerationOptions{}), "prompt 1 is empty");
  EXPECT_SLM_ERROR(Generate(model, {{1, 64}}, GenerationOptions{}),
                   "prompt 0 has token id 64 at position 1, outside the model's vocabulary");
  EXPECT_SLM_ERROR(Generate(model, {Ids(40, 3)}, with([](auto& o) { o.max_new_tokens = 57; })),
                   "the prompt has 40 positions (after padding) and max_new_tokens is 57, "
                   "together more than the model's max_position_embeddings=96");
  EXPECT_EQ(Generate(model, {Ids(40, 3)}, Greedy(56)).tokens[0].size(), 56u);
  EXPECT_SLM_ERROR(GenerateWithoutCache(model, {}, GenerationOptions{}),
                   "GenerateWithoutCache: the list of prompts is empty");
  EXPECT_SLM_ERROR(Generate(model, prompts, with([](auto& o) { o.decode_mode = "fast"; })),
                   "decode_mode must be auto, dynamic, static or graph, got 'fast'");
  EXPECT_SLM_ERROR(Generate(model, prompts, with([](auto& o) { o.decode_mode = "graph"; })),
                   "decode_mode 'graph' needs a CUDA device; the model is on cpu");

  const torch::Tensor embeds = torch::zeros({2, 3, 32});
  const torch::Tensor mask = torch::ones({2, 3}, torch::kLong);
  EXPECT_SLM_ERROR(GenerateFromEmbeds(model, torch::zeros({2, 3, 16}), mask, GenerationOptions{}),
                   "inputs_embeds has 16 features, the model's hidden_size is 32");
  EXPECT_SLM_ERROR(GenerateFromEmbeds(model, torch::zeros({3, 32}), mask, GenerationOptions{}),
                   "inputs_embeds must be [B, T, hidden_size]");
  EXPECT_SLM_ERROR(GenerateFromEmbeds(model, embeds, torch::ones({2, 4}), GenerationOptions{}),
                   "attention_mask must be [2, 3]");
  torch::Tensor empty_row = mask.clone();
  empty_row[1].zero_();
  EXPECT_SLM_ERROR(GenerateFromEmbeds(model, embeds, empty_row, GenerationOptions{}),
                   "row 1 of attention_mask has no real position");
}

TEST(GenerateTest, OptionsLoadFromYamlStrictly) {
  config::Document document = config::Document::LoadString(
      "max_new_tokens: 12\ntemperature: 0.7\ntop_k: 40\ntop_p: 0.9\nrepetition_penalty: 1.1\n"
      "stop_token_ids: [2, 7]\nignore_stop_tokens: true\nseed: 42\n",
      "gen.yaml");
  GenerationOptions options;
  options.Load(document.Root());
  document.CheckAllConsumed();
  EXPECT_EQ(options.max_new_tokens, 12);
  EXPECT_DOUBLE_EQ(options.temperature, 0.7);
  EXPECT_EQ(options.top_k, 40);
  EXPECT_DOUBLE_EQ(options.top_p, 0.9);
  EXPECT_DOUBLE_EQ(options.repetition_penalty, 1.1);
  EXPECT_EQ(options.stop_token_ids, (Ids{2, 7}));
  EXPECT_TRUE(options.ignore_stop_tokens);
  EXPECT_EQ(options.seed, 42u);

  config::Document bad = config::Document::LoadString("top_p: 1.5\n", "gen.yaml");
  GenerationOptions defaults;
  EXPECT_SLM_ERROR(defaults.Load(bad.Root()), "gen.yaml:1: key 'top_p' must be in (0, 1]");
  config::Document negative = config::Document::LoadString("temperature: -1\n", "gen.yaml");
  EXPECT_SLM_ERROR(defaults.Load(negative.Root()), "key 'temperature'");
  config::Document mode = config::Document::LoadString("decode_mode: static\n", "gen.yaml");
  defaults.Load(mode.Root());
  EXPECT_EQ(defaults.decode_mode, "static");
  config::Document bad_mode = config::Document::LoadString("decode_mode: turbo\n", "gen.yaml");
  EXPECT_SLM_ERROR(defaults.Load(bad_mode.Root()), "key 'decode_mode' must be one of: auto, dynamic, static, graph");
}

}  // namespace
}  // namespace slm::text
