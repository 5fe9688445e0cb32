// slm merge (adapters/merge.h): linear merging (exact for LoRA, by stacking ranks), TIES as PEFT
// computes it (hand-checked values), the SVD back to a LoRA, and the checks on what may be merged.
#include "adapters/merge.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "core/fs.h"
#include "core/safetensors.h"
#include "tests/test_util.h"

namespace slm::adapters {
namespace {

using json = nlohmann::json;

// An adapters/ directory written by hand: adapter tensors, optional LoRA (one module "m").
void WriteAdapters(const std::string& dir, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                   const torch::Tensor& lora_a = {}, const torch::Tensor& lora_b = {}, double alpha = 0,
                   const json& targets = json::array({"q_proj"})) {
  fs::MakeDirs(dir);
  json specs = {{"speech_units", {{"k", 4}, {"hash", "abc"}}}};
  if (!tensors.empty()) safetensors::Save(dir + "/adapters.safetensors", tensors);
  if (lora_a.defined()) {
    fs::MakeDirs(dir + "/lora");
    safetensors::Save(dir + "/lora/adapter_model.safetensors",
                      {{"base_model.model.m.lora_A.weight", lora_a}, {"base_model.model.m.lora_B.weight", lora_b}});
    const json config = {{"peft_type", "LORA"}, {"r", lora_a.size(0)}, {"lora_alpha", alpha}, {"target_modules", targets}};
    fs::AtomicWriteString(dir + "/lora/adapter_config.json", config.dump());
    specs["lora"] = true;
  }
  fs::AtomicWriteString(dir + "/adapter_config.json", specs.dump());
  const std::string task = std::filesystem::path(dir).filename().string();
  fs::AtomicWriteString(dir + "/tasks.json", json{{"tasks", {{task, "p"}}}}.dump());
}

MergeConfig Config(const std::string& method, const std::vector<std::pair<std::string, double>>& inputs,
                   const std::string& out, double density = 0.2) {
  MergeConfig c;
  c.method = method;
  for (const auto& [dir, w] : inputs) c.inputs.push_back({dir, w});
  c.output = out;
  c.density = density;
  return c;
}

torch::Tensor Read(const std::string& path, const std::string& name) { return safetensors::Reader(path).Get(name); }

TEST(Merge, LinearIsTheWeightedSumAndExactForLora) {
  slm::testing::TempDir tmp;
  torch::manual_seed(3);
  const torch::Tensor x1 = torch::randn({3, 4}), x2 = torch::randn({3, 4});
  const torch::Tensor a1 = torch::randn({2, 6}), b1 = torch::randn({5, 2});  // rank 2, alpha 4: scale 2
  const torch::Tensor a2 = torch::randn({3, 6}), b2 = torch::randn({5, 3});  // rank 3, alpha 3: scale 1
  WriteAdapters(tmp.File("one"), {{"unit_vocab.embed", x1}}, a1, b1, 4.0);
  WriteAdapters(tmp.File("two"), {{"unit_vocab.embed", x2}}, a2, b2, 3.0);
  const MergeResult r = MergeAdapters(Config("linear", {{tmp.File("one"), 0.25}, {tmp.File("two"), 0.75}}, tmp.File("out")));
  EXPECT_EQ(r.lora_rank, 5);
  EXPECT_EQ(r.tensors, 2);
  EXPECT_TRUE(torch::allclose(Read(tmp.File("out/adapters.safetensors"), "unit_vocab.embed"), 0.25 * x1 + 0.75 * x2));
  const std::string lora = tmp.File("out/lora/adapter_model.safetensors");
  const torch::Tensor a = Read(lora, "base_model.model.m.lora_A.weight"), b = Read(lora, "base_model.model.m.lora_B.weight");
  const json config = fs::ReadJson(tmp.File("out/lora/adapter_config.json"));
  EXPECT_EQ(config["r"], 5);
  const double scale = config["lora_alpha"].get<double>() / 5.0;
  const torch::Tensor want = 0.25 * 2.0 * b1.matmul(a1) + 0.75 * 1.0 * b2.matmul(a2);
  EXPECT_TRUE(torch::allclose(scale * b.matmul(a), want, 1e-5, 1e-5));
  // The record says how to load it; the tasks are the union; the directory is a complete adapter.
  const json record = fs::ReadJson(tmp.File("out/merge.json"));
  EXPECT_EQ(record["load_with"][0], "model.lora.rank=5");
  EXPECT_EQ(fs::ReadJson(tmp.File("out/tasks.json"))["tasks"].size(), 2u);
  EXPECT_EQ(fs::ReadJson(tmp.File("out/adapter_config.json")), fs::ReadJson(tmp.File("one/adapter_config.json")));
}

TEST(Merge, TiesTrimsElectsAndAveragesTheAgreeingEntries) {
  slm::testing::TempDir tmp;
  WriteAdapters(tmp.File("one"), {{"w", torch::tensor({3.0f, -2.0f, 0.5f, 1.0f})}});
  WriteAdapters(tmp.File("two"), {{"w", torch::tensor({-1.0f, -4.0f, 0.2f, 2.0f})}});
  WriteAdapters(tmp.File("base"), {{"w", torch::tensor({1.0f, 1.0f, 1.0f, 1.0f})}});
  // From zero, density 0.5: trimmed [3, -2, 0, 0] and [0, -4, 0, 2]; signs of the sum [+, -, +, +];
  // agreeing entries averaged: [3, (-2 - 4) / 2, 0, 2].
  MergeAdapters(Config("ties", {{tmp.File("one"), 1.0}, {tmp.File("two"), 1.0}}, tmp.File("out"), 0.5));
  EXPECT_TRUE(torch::equal(Read(tmp.File("out/adapters.safetensors"), "w"), torch::tensor({3.0f, -3.0f, 0.0f, 2.0f})));
  // From a base: task vectors [2, -3, -0.5, 0] and [-2, -5, -0.8, 1], weighted 1 and 0.5 ->
  // [2, -3, -0.5, 0], [-1, -2.5, -0.4, 0.5]; trimmed to 2 each: [2, -3, 0, 0], [-1, -2.5, 0, 0];
  // sum [1, -5.5, 0, 0] -> signs [+, -, +, +]; result base + [2, -2.75, 0, 0].
  MergeConfig from_base = Config("ties", {{tmp.File("one"), 1.0}, {tmp.File("two"), 0.5}}, tmp.File("out2"), 0.5);
  from_base.base = tmp.File("base");
  MergeAdapters(from_base);
  EXPECT_TRUE(torch::allclose(Read(tmp.File("out2/adapters.safetensors"), "w"), torch::tensor({3.0f, -1.75f, 1.0f, 1.0f})));
}

TEST(Merge, TiesOnLoraGoesBackToTheLargestRankBySvd) {
  slm::testing::TempDir tmp;
  torch::manual_seed(5);
  const torch::Tensor a = torch::randn({2, 6}), b = torch::randn({5, 2});
  WriteAdapters(tmp.File("one"), {}, a, b, 2.0);
  WriteAdapters(tmp.File("two"), {}, a, b, 2.0);
  const MergeResult r = MergeAdapters(Config("ties", {{tmp.File("one"), 1.0}, {tmp.File("two"), 1.0}}, tmp.File("out"), 1.0));
  EXPECT_EQ(r.lora_rank, 2);
  const std::string lora = tmp.File("out/lora/adapter_model.safetensors");
  const torch::Tensor merged = Read(lora, "base_model.model.m.lora_B.weight").matmul(Read(lora, "base_model.model.m.lora_A.weight"));
  // Two identical updates agree everywhere: their disjoint mean is the update itself, of rank 2.
  EXPECT_TRUE(torch::allclose(merged, b.matmul(a), 1e-4, 1e-4));
  EXPECT_FALSE(std::filesystem::exists(tmp.File("out/adapters.safetensors")));
}

TEST(Merge, RefusesWhatCannotBeMerged) {
  slm::testing::TempDir tmp;
  WriteAdapters(tmp.File("a"), {{"w", torch::zeros({2, 3})}});
  WriteAdapters(tmp.File("wide"), {{"w", torch::zeros({2, 4})}});
  WriteAdapters(tmp.File("other"), {{"v", torch::zeros({2, 3})}});
  WriteAdapters(tmp.File("lora"), {{"w", torch::zeros({2, 3})}}, torch::zeros({1, 3}), torch::zeros({3, 1}), 1.0);
  auto merge = [&](const std::string& other, const std::string& method = "linear") {
    return slm::testing::ErrorOf([&] { MergeAdapters(Config(method, {{tmp.File("a"), 0.5}, {other, 0.5}}, tmp.File("out"))); });
  };
  EXPECT_NE(merge(tmp.File("wide")).find("tensor 'w' is [2, 3] in"), std::string::npos) << merge(tmp.File("wide"));
  EXPECT_NE(merge(tmp.File("wide")).find("the adapters belong to different models"), std::string::npos);
  EXPECT_NE(merge(tmp.File("other")).find("has no tensor 'w'"), std::string::npos);
  EXPECT_NE(merge(tmp.File("lora")).find("adapter_config.json of"), std::string::npos);
  EXPECT_NE(merge(tmp.File("missing")).find("is not an adapters directory"), std::string::npos);
  // LoRA on other target modules.
  WriteAdapters(tmp.File("l2"), {{"w", torch::zeros({2, 3})}}, torch::zeros({1, 3}), torch::zeros({3, 1}), 1.0,
                json::array({"v_proj"}));
  EXPECT_NE(slm::testing::ErrorOf([&] {
              MergeAdapters(Config("linear", {{tmp.File("lora"), 1}, {tmp.File("l2"), 1}}, tmp.File("out")));
            }).find("targets [\"v_proj\"]"),
            std::string::npos);
  // Runs on different backbones (each adapters/ sits in a run directory with its config.yaml).
  for (const auto& [run, backbone] : {std::pair<std::string, std::string>{"r1", "/models/one"}, {"r2", "/models/two"}}) {
    WriteAdapters(tmp.File(run + "/adapters"), {{"w", torch::zeros({2, 3})}});
    fs::AtomicWriteString(tmp.File(run + "/config.yaml"), "model:\n  backbone: " + backbone + "\n");
  }
  EXPECT_NE(slm::testing::ErrorOf([&] {
              MergeAdapters(Config("linear", {{tmp.File("r1/adapters"), 1}, {tmp.File("r2/adapters"), 1}}, tmp.File("out")));
            }).find("was trained on the backbone '/models/two'"),
            std::string::npos);
  // The config: two inputs at least, a known method, density in (0, 1].
  auto load = [](const std::string& yaml) {
    return slm::testing::ErrorOf([&] {
      auto doc = config::Document::LoadString(yaml, "m.yaml");
      MergeConfig c;
      c.Load(doc.Root());
      doc.CheckAllConsumed();
    });
  };
  EXPECT_NE(load("merge: {inputs: [{adapters: a}], output: o}").find("at least two"), std::string::npos);
  EXPECT_NE(load("merge: {method: avg, inputs: [{adapters: a}, {adapters: b}], output: o}").find("avg"), std::string::npos);
  EXPECT_NE(load("merge: {density: 0, inputs: [{adapters: a}, {adapters: b}], output: o}").find("density"), std::string::npos);
  EXPECT_EQ(load("merge: {inputs: [{adapters: a, weight: 0.3}, {adapters: b}], output: o}"), "");
  auto sample = config::Document::LoadFile(std::string(SLM_SOURCE_DIR) + "/samples/configs/merge_tiny.yaml");
  MergeConfig s;
  s.Load(sample.Root());
  sample.CheckAllConsumed();
  EXPECT_EQ(s.inputs.size(), 2u);
}

}  // namespace
}  // namespace slm::adapters
