// Llama checkpoints: saving and loading (single file, shards, another dtype) and every way a
// checkpoint can be broken, each named in its error.
#include "text/llama.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
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
// Saving and loading

TEST(LlamaWeightsTest, SaveLoadRoundTripGivesIdenticalLogits) {
  for (bool tied : {false, true}) {
    LlamaModel model = TinyModel(tied);
    testing::TempDir dir;
    model->SaveWeights(dir.path());
    safetensors::Reader file(dir.File("model.safetensors"));
    EXPECT_EQ(file.Metadata().at("format"), "pt");
    EXPECT_EQ(file.Has("lm_head.weight"), !tied);
    EXPECT_EQ(file.Tensors().size(), tied ? 20u : 21u);
    const LlamaConfig saved = LlamaConfig::FromFile(dir.File("config.json"));
    EXPECT_EQ(saved.tie_word_embeddings, tied);
    EXPECT_EQ(saved.torch_dtype, "float32");

    LlamaModel loaded = LoadLlama(dir.path());
    const torch::Tensor ids = Ids({1, 9, 27, 81, 3});
    EXPECT_TRUE(torch::equal(Forward(loaded, ids).logits, Forward(model, ids).logits)) << tied;
  }
}

TEST(LlamaWeightsTest, LoadsIntoAnotherDtype) {
  LlamaModel model = TinyModel();
  testing::TempDir dir;
  model->SaveWeights(dir.path());
  LlamaModel half = LoadLlama(dir.path(), torch::kCPU, torch::kBFloat16);
  EXPECT_EQ(half->named_parameters()["model.norm.weight"].scalar_type(), torch::kBFloat16);
  const torch::Tensor ids = Ids({1, 9, 27});
  EXPECT_LE(MaxAbsDiff(Forward(half, ids).logits, Forward(model, ids).logits), 0.15);

  testing::TempDir again;
  half->SaveWeights(again.path());
  EXPECT_EQ(LlamaConfig::FromFile(again.File("config.json")).torch_dtype, "bfloat16");
  EXPECT_EQ(safetensors::Reader(again.File("model.safetensors")).Info("lm_head.weight").dtype,
            "BF16");
}

// Writes the model as two shards and an index, as transformers' save_pretrained does.
void WriteSharded(LlamaModel& model, const std::string& dir) {
  auto tensors = NamedTensors(model);
  std::vector<std::pair<std::string, torch::Tensor>> first, second;
  json weight_map = json::object();
  for (size_t i = 0; i < tensors.size(); ++i) {
    const bool one = i < tensors.size() / 2;
    (one ? first : second).push_back(tensors[i]);
    weight_map[tensors[i].first] =
        one ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  safetensors::Save(dir + "/model-00001-of-00002.safetensors", first, {{"format", "pt"}});
  safetensors::Save(dir + "/model-00002-of-00002.safetensors", second, {{"format", "pt"}});
  json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}};
  WriteText(dir + "/model.safetensors.index.json", index.dump(2));
  WriteText(dir + "/config.json", model->Config().ToJson().dump(2));
}

TEST(LlamaWeightsTest, ShardedEqualsSingleFile) {
  LlamaModel model = TinyModel();
  testing::TempDir single, sharded;
  model->SaveWeights(single.path());
  WriteSharded(model, sharded.path());
  const torch::Tensor ids = Ids({8, 6, 4, 2, 0, 1});
  EXPECT_TRUE(torch::equal(Forward(LoadLlama(sharded.path()), ids).logits,
                           Forward(LoadLlama(single.path()), ids).logits));
}

TEST(LlamaWeightsTest, ShardErrors) {
  LlamaModel model = TinyModel();
  testing::TempDir dir;
  WriteSharded(model, dir.path());
  std::filesystem::remove(dir.File("model-00002-of-00002.safetensors"));
  EXPECT_SLM_ERROR(LoadLlama(dir.path()),
                   "model.safetensors.index.json: shard 'model-00002-of-00002.safetensors'");
  EXPECT_SLM_ERROR(LoadLlama(dir.path()), "does not exist in '" + dir.path() + "'");

  // A tensor the index places in a shard that does not hold it.
  WriteSharded(model, dir.path());
  json index = json::parse(fs::ReadFile(dir.File("model.safetensors.index.json")));
  index["weight_map"]["model.norm.weight"] = "model-00001-of-00002.safetensors";
  WriteText(dir.File("model.safetensors.index.json"), index.dump());
  EXPECT_SLM_ERROR(LoadLlama(dir.path()),
                   "model-00001-of-00002.safetensors: tensor 'model.norm.weight' is listed in " +
                       dir.File("model.safetensors.index.json") + " but missing from this shard");

  index["weight_map"]["model.norm.weight"] = "../elsewhere.safetensors";
  WriteText(dir.File("model.safetensors.index.json"), index.dump());
  EXPECT_SLM_ERROR(LoadLlama(dir.path()), "shard name '../elsewhere.safetensors' must be a file");

  WriteText(dir.File("model.safetensors.index.json"), "{\"metadata\": {}}");
  EXPECT_SLM_ERROR(LoadLlama(dir.path()), "missing or invalid \"weight_map\" object");
}

class LlamaBadCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = TinyModel();
    model_->SaveWeights(dir_.path());
    tensors_ = NamedTensors(model_);
  }
  std::string Weights() const { return dir_.File("model.safetensors"); }
  void SaveTensors(const std::vector<std::pair<std::string, torch::Tensor>>& tensors) {
    safetensors::Save(Weights(), tensors);
  }
  testing::TempDir dir_;
  LlamaModel model_{nullptr};
  std::vector<std::pair<std::string, torch::Tensor>> tensors_;
};

TEST_F(LlamaBadCheckpointTest, TruncatedOrCorruptFiles) {
  const std::string bytes = fs::ReadFile(Weights());
  WriteText(Weights(), bytes.substr(0, 5));
  EXPECT_SLM_ERROR(LoadLlama(dir_.path()), "safetensors file '" + Weights() +
                                               "': truncated: 5 bytes, shorter than the 8-byte");
  WriteText(Weights(), bytes.substr(0, bytes.size() - 100));
  EXPECT_SLM_ERROR(LoadLlama(dir_.path()), "point outside the data block");
  WriteText(Weights(), bytes.substr(0, 8) + std::string(bytes.size() - 8, '\x7f'));
  EXPECT_SLM_ERROR(LoadLlama(dir_.path()), "': header is not valid JSON");
}

TEST_F(LlamaBadCheckpointTest, HandMadeHeaders) {
  // Offsets past the end of the file.
  WriteRawSafetensors(
      Weights(), R"({"model.norm.weight":{"dtype":"F32","shape":[32],"data_offsets":[0,4096]}})",
      std::string(128, '\0'));
  EXPECT_SLM_ERROR(LoadLlama(dir_.path()),
                   "tensor 'model.norm.weight': data_offsets [0, 4096] point outside the data "
                   "block of 128 bytes");
  // A dtype no checkpoint of ours can hold.
  WriteRawSafetensors(
      Weights(), R"({"model.norm.weight":{"dtype":"Q4_K","shape":[32],"data_offsets":[0,128]}})",
      std::string(128, '\0'));
  EXPECT_SLM_ERROR(LoadLlama(dir_.path()), "unsupported safetensors dtype 'Q4_K'");
  // Valid file, integer weights.
  auto tensors = tensors_;
  for (auto& [name, tensor] : tensors)
    if (name == "model.norm.weight") tensor = tensor.to(torch::kInt);
  SaveTensors(tensors);
  EXPECT_SLM_ERROR(LoadLlama(dir_.path()),
                   Weights() +
                       ": tensor 'model.norm.weight' has dtype I32, expected a "
                       "floating-point one");
}

TEST_F(LlamaBadCheckpointTest, MissingExtraAndMisshapenTensors) {
  auto missing = tensors_;
  missing.erase(std::remove_if(missing.begin(), missing.end(),
                               [](const auto& t) { return t.first == "model.norm.weight"; }),
                missing.end());
  SaveTensors(missing);
  EXPECT_SLM_ERROR(LoadLlama(dir_.path()), Weights() + ": missing tensor 'model.norm.weight'");

  auto extra = tensors_;
  extra.emplace_back("model.layers.2.mlp.up_proj.weight", torch::zeros({64, 32}));
  SaveTensors(extra);
  EXPECT_SLM_ERROR(LoadLlama(dir_.path()),
                   Weights() +
                       ": unexpected tensor 'model.layers.2.mlp.up_proj.weight' (not a "
                       "parameter of this 2-layer untied LlamaForCausalLM; does config.json describe "
                       "these weights?)");

  auto misshapen = tensors_;
  for (auto& [name, tensor] : misshapen)
    if (name == "model.layers.1.self_attn.k_proj.weight") tensor = torch::zeros({32, 32});
  SaveTensors(misshapen);
  EXPECT_SLM_ERROR(LoadLlama(dir_.path()),
                   Weights() +
                       ": tensor 'model.layers.1.self_attn.k_proj.weight' has shape "
                       "[32, 32], expected [16, 32]");

  // A failed load leaves the weights as they were.
  const torch::Tensor before = model_->named_parameters()["model.norm.weight"].clone();
  EXPECT_SLM_ERROR(model_->LoadWeights(dir_.path()), "has shape [32, 32], expected [16, 32]");
  EXPECT_TRUE(torch::equal(model_->named_parameters()["model.norm.weight"], before));
}

TEST_F(LlamaBadCheckpointTest, IgnoresRotaryBuffersAndTiedHeadCopies) {
  auto with_buffers = tensors_;
  with_buffers.emplace_back("model.layers.0.self_attn.rotary_emb.inv_freq", torch::ones({4}));
  with_buffers.emplace_back("model.layers.1.self_attn.rotary_emb.inv_freq", torch::ones({4}));
  SaveTensors(with_buffers);
  const torch::Tensor ids = Ids({3, 1, 4, 1, 5});
  EXPECT_TRUE(
      torch::equal(Forward(LoadLlama(dir_.path()), ids).logits, Forward(model_, ids).logits));

  // A tied model's checkpoint may still store lm_head.weight; transformers ignores it, so do we.
  LlamaModel tied = TinyModel(true);
  testing::TempDir tied_dir;
  tied->SaveWeights(tied_dir.path());
  auto tensors = NamedTensors(tied);
  tensors.emplace_back("lm_head.weight", torch::zeros({97, 32}));
  safetensors::Save(tied_dir.File("model.safetensors"), tensors);
  EXPECT_TRUE(
      torch::equal(Forward(LoadLlama(tied_dir.path()), ids).logits, Forward(tied, ids).logits));
}

TEST_F(LlamaBadCheckpointTest, DirectoryAndConfigErrors) {
  testing::TempDir empty;
  EXPECT_SLM_ERROR(
      LoadLlama(empty.path()),
      "'" + empty.path() + "' has no config.json (not a Hugging Face model directory)");
  EXPECT_SLM_ERROR(LoadLlama(empty.File("nope")),
                   "model directory '" + empty.File("nope") + "' does not exist");
  WriteText(empty.File("config.json"), model_->Config().ToJson().dump());
  WriteText(empty.File("pytorch_model.bin"), "pickle");
  EXPECT_SLM_ERROR(LoadLlama(empty.path()),
                   "no model.safetensors or model.safetensors.index.json in '" + empty.path() +
                       "' (pytorch_model.bin is not read: convert it to safetensors)");

  json gpt2 = model_->Config().ToJson();
  gpt2["model_type"] = "gpt2";
  WriteText(dir_.File("config.json"), gpt2.dump());
  EXPECT_SLM_ERROR(LoadLlama(dir_.path()),
                   dir_.File("config.json") + ": model_type \"gpt2\" is not supported");
}

}  // namespace
}  // namespace slm::text
