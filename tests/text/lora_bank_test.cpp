// Per-row LoRA from a bank (text/lora_bank.h): a batch mixing rows of several adapters (and rows
// without any) equals each row run alone with its adapter as the model's own LoRA, through every
// cache form and generation; bad adapters are refused without touching the bank.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>

#include "tests/test_util.h"
#include "tests/text/tiny_llama.h"
#include "text/generate.h"
#include "text/llama.h"
#include "text/lora_bank.h"

namespace slm::text {
namespace {

using testing::TinyLlama;
using testing::TinyLlamaConfig;

struct Adapter {
  LoraOptions options;
  std::map<std::string, torch::Tensor> weights;
  double Factor() const { return options.alpha / options.rank; }
};

// A random adapter over `targets` with rank `rank`.
Adapter RandomAdapter(std::vector<std::string> targets, int64_t rank, uint64_t seed) {
  LlamaModel model = TinyLlama();
  Adapter adapter;
  adapter.options.rank = rank;
  adapter.options.alpha = 2.0 * rank;
  adapter.options.target_modules = std::move(targets);
  model->AddLora(adapter.options);
  torch::manual_seed(seed);
  torch::NoGradGuard no_grad;
  for (const auto& named : model->named_parameters())
    if (named.key().find(".lora_") != std::string::npos)
      adapter.weights[named.key()] = named.value().detach().clone().normal_(0.0, 0.3);
  return adapter;
}

// The logits [T, V] of `ids` with `adapter` as the model's own LoRA (nullptr = none).
torch::Tensor Alone(const std::vector<int64_t>& ids, const Adapter* adapter) {
  LlamaModel model = TinyLlama();
  torch::NoGradGuard no_grad;
  if (adapter != nullptr) {
    model->AddLora(adapter->options);
    for (const auto& named : model->named_parameters())
      if (adapter->weights.count(named.key())) named.value().copy_(adapter->weights.at(named.key()));
  }
  LlamaInput input;
  input.input_ids = torch::tensor(ids, torch::kLong).unsqueeze(0);
  return model->forward(input).logits[0];
}

TEST(LoraBank, MixedRowsEqualEachRowWithItsOwnLora) {
  const Adapter a = RandomAdapter({"q_proj", "v_proj"}, 4, 1);
  const Adapter b = RandomAdapter({"q_proj", "k_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}, 2, 2);
  LlamaModel model = TinyLlama();
  LoraBank bank(model->Config(), 4, 4, torch::TensorOptions(torch::kFloat));
  bank.Set(1, a.weights, a.Factor());
  bank.Set(2, b.weights, b.Factor());
  const std::vector<std::vector<int64_t>> rows = {{5, 9, 11, 40}, {8, 3, 60, 61}, {70, 71, 72, 73}, {9, 9, 9, 9}};
  const std::vector<int64_t> slots = {1, 2, 0, 1};
  const Adapter* of_slot[] = {nullptr, &a, &b};
  torch::NoGradGuard no_grad;
  torch::Tensor ids = torch::zeros({4, 4}, torch::kLong);
  for (int r = 0; r < 4; ++r) ids[r] = torch::tensor(rows[r], torch::kLong);
  RowLora lora{&bank, torch::tensor(slots, torch::kLong)};
  LlamaInput input;
  input.input_ids = ids;
  input.row_lora = &lora;
  const torch::Tensor logits = model->forward(input).logits;
  for (int r = 0; r < 4; ++r)
    EXPECT_LT((logits[r] - Alone(rows[r], of_slot[slots[r]])).abs().max().item<double>(), 1e-5) << "row " << r;

  // The same through the paged cache, one token at a time.
  KVBlockPool pool(model->Config(), 8, 2, torch::TensorOptions(torch::kFloat));
  std::vector<std::vector<int64_t>> blocks(4);
  for (int r = 0; r < 4; ++r) blocks[r] = pool.Allocate(2);
  for (int64_t t = 0; t < 4; ++t) {
    torch::Tensor table = torch::zeros({4, 2}, torch::kLong);
    for (int r = 0; r < 4; ++r) table[r] = torch::tensor(blocks[r], torch::kLong);
    PagedKVBatch paged{&pool, table, torch::full({4}, t, torch::kLong), torch::ones({4}, torch::kLong)};
    LlamaInput step;
    step.input_ids = ids.narrow(1, t, 1);
    step.paged = &paged;
    step.row_lora = &lora;
    const torch::Tensor out = model->forward(step).logits;
    for (int r = 0; r < 4; ++r)
      EXPECT_LT((out[r][0] - logits[r][t]).abs().max().item<double>(), 1e-5) << "row " << r << " step " << t;
  }
}

TEST(LoraBank, GenerationWithABankSlotEqualsTheModelsOwnLora) {
  const Adapter a = RandomAdapter({"q_proj", "v_proj", "down_proj"}, 3, 5);
  LlamaModel own = TinyLlama();
  own->AddLora(a.options);
  {
    torch::NoGradGuard no_grad;
    for (const auto& named : own->named_parameters())
      if (a.weights.count(named.key())) named.value().copy_(a.weights.at(named.key()));
  }
  GenerationOptions options;
  options.max_new_tokens = 12;
  options.ignore_stop_tokens = true;
  const std::vector<std::vector<int64_t>> prompts = {{1, 5, 9, 11}};
  const GenerationResult expected = Generate(own, prompts, options);

  LlamaModel shared = TinyLlama();
  shared->AddLora(a.options);  // present but off: the bank replaces it
  shared->SetLoraScale(0.0);
  LoraBank bank(shared->Config(), 2, 3, torch::TensorOptions(torch::kFloat));
  bank.Set(1, a.weights, a.Factor());
  RowLora lora{&bank, torch::ones({1}, torch::kLong)};
  options.lora = &lora;
  for (const std::string mode : {"dynamic", "static"}) {
    options.decode_mode = mode;
    EXPECT_EQ(Generate(shared, prompts, options).tokens, expected.tokens) << mode;
  }
  shared->SetLoraScale(1.0);
  EXPECT_SLM_ERROR(Generate(shared, prompts, options), "own LoRA off");
}

TEST(LoraBank, RefusesBadAdaptersAndLeavesTheSlotUnchanged) {
  const Adapter a = RandomAdapter({"q_proj", "v_proj"}, 4, 1);
  LlamaModel model = TinyLlama();
  LoraBank bank(model->Config(), 3, 4, torch::TensorOptions(torch::kFloat));
  bank.Set(1, a.weights, a.Factor());
  const torch::Tensor before = bank.A(0, 0).clone();
  auto broken = a.weights;
  broken["model.layers.0.self_attn.q_proj.lora_A.weight"] = torch::zeros({4, 5});
  EXPECT_SLM_ERROR(bank.Set(1, broken, 1.0), "expected [r, 32]");
  broken = a.weights;
  broken.erase("model.layers.1.self_attn.v_proj.lora_B.weight");
  EXPECT_SLM_ERROR(bank.Set(1, broken, 1.0), "layer 1 v_proj has lora_A without its partner");
  broken = a.weights;
  broken["model.layers.0.self_attn.q_norm.lora_A.weight"] = torch::zeros({4, 32});
  EXPECT_SLM_ERROR(bank.Set(1, broken, 1.0), "not a LoRA parameter name");
  broken = a.weights;
  broken["model.layers.7.self_attn.q_proj.lora_A.weight"] = torch::zeros({4, 32});
  EXPECT_SLM_ERROR(bank.Set(1, broken, 1.0), "names layer 7");
  const Adapter big = RandomAdapter({"q_proj"}, 8, 3);
  EXPECT_SLM_ERROR(bank.Set(2, big.weights, 1.0), "has rank 8; this bank holds ranks up to 4");
  EXPECT_SLM_ERROR(bank.Set(0, a.weights, 1.0), "slot must be in [1, 3)");
  EXPECT_TRUE(torch::equal(bank.A(0, 0), before));
  bank.Clear(1);
  EXPECT_EQ(bank.A(0, 0).abs().sum().item<double>(), 0.0);
  EXPECT_FALSE(bank.A(0, 4).defined());  // gate_proj: no adapter targets it
}

}  // namespace
}  // namespace slm::text
