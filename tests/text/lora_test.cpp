// LoRA on the Llama backbone: a fresh adapter is the identity, the update equals the low-rank
// formula applied to the weights by hand, merge/unmerge and the runtime scale, only LoRA trains,
// PEFT-format save/load and every way an adapter directory can be broken. Parity with PEFT itself
// is in tests/parity (llama_parity_test.cpp + make_llama_references.py --check-cpp).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <map>

#include "core/fs.h"
#include "core/safetensors.h"
#include "tests/test_util.h"
#include "tests/text/tiny_llama.h"
#include "text/llama.h"

namespace slm::text {
namespace {

using nlohmann::json;
using testing::TinyLlama;
using testing::TinyLlamaConfig;

torch::Tensor Logits(LlamaModel& model, const torch::Tensor& ids) {
  torch::NoGradGuard no_grad;
  LlamaInput input;
  input.input_ids = ids;
  return model->forward(input).logits;
}

LoraOptions Options(std::vector<std::string> targets = {"q_proj", "v_proj", "down_proj"}) {
  LoraOptions o;
  o.rank = 3;
  o.alpha = 6.0;
  o.target_modules = std::move(targets);
  return o;
}

void RandomizeLora(LlamaModel& model, uint64_t seed = 11) {
  torch::manual_seed(seed);
  torch::NoGradGuard no_grad;
  for (torch::Tensor& p : model->LoraParameters()) p.normal_(0.0, 0.3);
}

// The same model with scale * alpha / r * B A added to each targeted weight by hand.
LlamaModel ManualMerge(LlamaModel& lora_model, double scale) {
  LlamaModel plain = TinyLlama();
  torch::NoGradGuard no_grad;
  auto lora = lora_model->named_parameters();
  const double factor = scale * lora_model->Lora().alpha / lora_model->Lora().rank;
  for (auto& [name, weight] : plain->BaseParameters()) {
    weight.copy_(lora[name]);
    const std::string stem = name.substr(0, name.size() - std::string(".weight").size());
    if (lora.contains(stem + ".lora_A.weight"))
      weight.add_(torch::matmul(lora[stem + ".lora_B.weight"], lora[stem + ".lora_A.weight"]) * factor);
  }
  return plain;
}

TEST(Lora, FreshAdapterIsIdentityAndNamedAsPeft) {
  LlamaModel model = TinyLlama();
  const auto ids = torch::randint(3, 97, {2, 9}, torch::kLong);
  const auto before = Logits(model, ids);
  const int64_t base_count = model->ParameterCount();
  model->AddLora(Options());
  EXPECT_TRUE(torch::equal(Logits(model, ids), before));
  EXPECT_EQ(model->ParameterCount(), base_count);  // base only
  auto params = model->named_parameters();
  ASSERT_TRUE(params.contains("model.layers.0.self_attn.q_proj.lora_A.weight"));
  ASSERT_TRUE(params.contains("model.layers.1.mlp.down_proj.lora_B.weight"));
  EXPECT_FALSE(params.contains("model.layers.0.self_attn.k_proj.lora_A.weight"));
  EXPECT_EQ(params["model.layers.0.self_attn.q_proj.lora_A.weight"].sizes(),
            (std::vector<int64_t>{3, 32}));
  EXPECT_EQ(params["model.layers.0.mlp.down_proj.lora_B.weight"].sizes(),
            (std::vector<int64_t>{32, 3}));
  // q: 32 -> 32, v: 32 -> 16 (2 kv heads of 8), down: 64 -> 32; rank 3; 2 layers.
  int64_t lora_count = 0;
  for (const auto& p : model->LoraParameters()) lora_count += p.numel();
  EXPECT_EQ(lora_count, 2 * 3 * ((32 + 32) + (32 + 16) + (64 + 32)));
  EXPECT_SLM_ERROR(model->AddLora(Options()), "LoRA was already added");
}

TEST(Lora, UpdateEqualsLowRankFormulaAtAnyScale) {
  LlamaModel model = TinyLlama();
  model->AddLora(Options());
  RandomizeLora(model);
  const auto ids = torch::randint(3, 97, {2, 9}, torch::kLong);
  LlamaModel reference = ManualMerge(model, 1.0);
  EXPECT_LT((Logits(model, ids) - Logits(reference, ids)).abs().max().item<double>(), 1e-5);
  model->SetLoraScale(0.5);  // the "LoRA scaling discount"
  LlamaModel half = ManualMerge(model, 0.5);
  EXPECT_LT((Logits(model, ids) - Logits(half, ids)).abs().max().item<double>(), 1e-5);
  model->SetLoraScale(0.0);
  LlamaModel base = TinyLlama();
  EXPECT_LT((Logits(model, ids) - Logits(base, ids)).abs().max().item<double>(), 1e-6);
  EXPECT_SLM_ERROR(model->SetLoraScale(-1), "LoRA scale must be finite and >= 0");
}

TEST(Lora, MergeThenUnmergeRestoresWeights) {
  LlamaModel model = TinyLlama();
  model->AddLora(Options({"q_proj", "k_proj", "o_proj", "gate_proj", "up_proj"}));
  RandomizeLora(model);
  const auto ids = torch::randint(3, 97, {1, 12}, torch::kLong);
  const auto unmerged = Logits(model, ids);
  std::map<std::string, torch::Tensor> before;
  for (auto& [name, p] : model->BaseParameters()) before[name] = p.clone();
  model->MergeLora();
  EXPECT_TRUE(model->LoraMerged());
  EXPECT_LT((Logits(model, ids) - unmerged).abs().max().item<double>(), 1e-5);
  EXPECT_FALSE(torch::equal(before["model.layers.0.self_attn.q_proj.weight"],
                            model->named_parameters()["model.layers.0.self_attn.q_proj.weight"]));
  model->SetLoraScale(0.25);  // re-merged at the new scale
  // ManualMerge copies the (now merged) base weights: compare against the unmerged reference.
  model->UnmergeLora();
  LlamaModel quarter_ref = ManualMerge(model, 0.25);
  model->MergeLora();
  EXPECT_LT((Logits(model, ids) - Logits(quarter_ref, ids)).abs().max().item<double>(), 1e-5);
  model->SetLoraScale(1.0);
  EXPECT_SLM_ERROR(model->MergeLora(), "already merged");
  model->UnmergeLora();
  for (auto& [name, p] : model->BaseParameters())
    EXPECT_LT((p - before[name]).abs().max().item<double>(), 1e-6) << name;
  EXPECT_LT((Logits(model, ids) - unmerged).abs().max().item<double>(), 1e-5);
  EXPECT_SLM_ERROR(model->UnmergeLora(), "not merged");
}

TEST(Lora, OnlyLoraTrainsThroughTheFrozenBackbone) {
  LlamaModel model = TinyLlama();
  model->AddLora(Options());
  model->Freeze();  // after AddLora too: LoRA stays trainable
  EXPECT_TRUE(model->IsFrozen());
  RandomizeLora(model);
  LlamaInput input;
  input.input_ids = torch::randint(3, 97, {2, 7}, torch::kLong);
  model->forward(input).logits.pow(2).mean().backward();
  for (const auto& named : model->named_parameters()) {
    const bool lora = named.key().find(".lora_") != std::string::npos;
    EXPECT_EQ(named.value().requires_grad(), lora) << named.key();
    EXPECT_EQ(named.value().grad().defined(), lora) << named.key();
  }
}

TEST(Lora, DropoutOnlyInTraining) {
  LlamaModel model = TinyLlama();
  LoraOptions o = Options();
  o.dropout = 0.5;
  model->AddLora(o);
  RandomizeLora(model);
  const auto ids = torch::randint(3, 97, {1, 8}, torch::kLong);
  const auto a = Logits(model, ids), b = Logits(model, ids);
  EXPECT_TRUE(torch::equal(a, b));  // eval: deterministic
  model->train();
  torch::manual_seed(1);
  const auto c = Logits(model, ids);
  EXPECT_GT((c - a).abs().max().item<double>(), 1e-4);
}

TEST(Lora, SaveLoadRoundTripAndBaseCheckpointExcludesLora) {
  slm::testing::TempDir tmp;
  LlamaModel model = TinyLlama();
  model->AddLora(Options());
  RandomizeLora(model);
  model->SaveLora(tmp.File("adapter"));
  model->SaveWeights(tmp.File("base"));
  const auto ids = torch::randint(3, 97, {2, 6}, torch::kLong);
  const auto expected = Logits(model, ids);

  safetensors::Reader base(tmp.File("base") + "/model.safetensors");
  for (const auto& name : base.Names()) EXPECT_EQ(name.find("lora"), std::string::npos) << name;
  const json config = fs::ReadJson(tmp.File("adapter") + "/adapter_config.json");
  EXPECT_EQ(config["peft_type"], "LORA");
  EXPECT_EQ(config["r"], 3);
  safetensors::Reader adapter(tmp.File("adapter") + "/adapter_model.safetensors");
  EXPECT_TRUE(adapter.Has("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));

  LlamaModel loaded = LoadLlama(tmp.File("base"));
  loaded->Freeze();
  loaded->LoadLora(tmp.File("adapter"));
  EXPECT_LT((Logits(loaded, ids) - expected).abs().max().item<double>(), 1e-6);
  // Loading into a model that already has the same LoRA replaces its weights.
  LlamaModel again = LoadLlama(tmp.File("base"));
  again->AddLora(Options());
  again->LoadLora(tmp.File("adapter"));
  EXPECT_LT((Logits(again, ids) - expected).abs().max().item<double>(), 1e-6);
}

TEST(Lora, BadAdaptersAndOptionsAreNamedErrors) {
  slm::testing::TempDir tmp;
  LlamaModel model = TinyLlama();
  EXPECT_SLM_ERROR(model->AddLora(Options({"qproj"})), "unknown module 'qproj'");
  EXPECT_SLM_ERROR(model->AddLora(Options({"q_proj", "q_proj"})), "names 'q_proj' twice");
  LoraOptions zero = Options();
  zero.rank = 0;
  EXPECT_SLM_ERROR(model->AddLora(zero), "lora.rank must be >= 1");
  EXPECT_FALSE(model->HasLora());
  EXPECT_SLM_ERROR(model->MergeLora(), "without LoRA");
  EXPECT_SLM_ERROR(model->LoadLora(tmp.File("none")), "has no adapter_config.json");

  LlamaModel source = TinyLlama();
  source->AddLora(Options());
  source->SaveLora(tmp.File("a"));
  // Rank mismatch with an existing LoRA.
  LlamaModel other = TinyLlama();
  LoraOptions rank5 = Options();
  rank5.rank = 5;
  other->AddLora(rank5);
  EXPECT_SLM_ERROR(other->LoadLora(tmp.File("a")), "differ from the model's LoRA");
  // A missing tensor leaves the model without LoRA.
  safetensors::Reader full(tmp.File("a") + "/adapter_model.safetensors");
  std::vector<std::pair<std::string, torch::Tensor>> some;
  for (const auto& name : full.Names())
    if (name.find("layers.1.mlp") == std::string::npos) some.emplace_back(name, full.Get(name));
  std::filesystem::copy(tmp.File("a"), tmp.File("b"));
  safetensors::Save(tmp.File("b") + "/adapter_model.safetensors", some);
  LlamaModel fresh = TinyLlama();
  EXPECT_SLM_ERROR(fresh->LoadLora(tmp.File("b")),
                   "missing tensor 'base_model.model.model.layers.1.mlp.down_proj.lora_A.weight'");
  EXPECT_FALSE(fresh->HasLora());
  // A wrongly shaped tensor.
  auto wrong = some;
  wrong.emplace_back("base_model.model.model.layers.1.mlp.down_proj.lora_A.weight", torch::zeros({3, 5}));
  wrong.emplace_back("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight", torch::zeros({32, 3}));
  safetensors::Save(tmp.File("b") + "/adapter_model.safetensors", wrong);
  EXPECT_SLM_ERROR(fresh->LoadLora(tmp.File("b")), "has shape [3, 5], expected [3, 64]");
  EXPECT_FALSE(fresh->HasLora());
  // A corrupt config.
  fs::AtomicWriteString(tmp.File("b") + "/adapter_config.json", "{\"r\": 4}");
  EXPECT_SLM_ERROR(fresh->LoadLora(tmp.File("b")), "adapter_config.json: invalid LoRA config");
}

TEST(Lora, OptionsFromConfig) {
  auto doc = config::Document::LoadString(
      "lora: {rank: 16, alpha: 32, dropout: 0.05, target_modules: [q_proj, k_proj]}\n", "l.yaml");
  LoraOptions o;
  o.Load(doc.Root().Child("lora"));
  EXPECT_EQ(o.rank, 16);
  EXPECT_DOUBLE_EQ(o.alpha, 32.0);
  EXPECT_EQ(o.target_modules, (std::vector<std::string>{"q_proj", "k_proj"}));
  auto bad = config::Document::LoadString("lora: {target_modules: [q_prj]}\n", "l.yaml");
  LoraOptions b;
  EXPECT_SLM_ERROR(b.Load(bad.Root().Child("lora")), "unknown module 'q_prj'");
}

}  // namespace
}  // namespace slm::text
