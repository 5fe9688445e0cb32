// `slm model inspect` (text/model_inspect.h) on a small Qwen2-family directory written here, and
// on broken copies of it: each problem is reported with its file and key, never a crash.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/fs.h"
#include "core/safetensors.h"
#include "tests/test_util.h"
#include "tests/text/chatml_tokenizer.h"
#include "tests/text/tiny_llama.h"
#include "text/model_inspect.h"
#include "text/tokenizer.h"

namespace slm::text {
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;

const json kChatml = {{"chat_template", "{{ '<|im_start|>' + m + '<|im_end|>' }}"}, {"eos_token", "<|im_end|>"}};

// A qwen2 model with a ChatML tokenizer (32 ids) in dir.
LlamaModel WriteQwen(const slm::testing::TempDir& dir, int64_t vocab = 97) {
  LlamaConfig config = testing::TinyLlamaConfig(vocab, 32, 128);
  config.model_type = "qwen2";
  config.tie_word_embeddings = true;
  config.bos_token_id = -1;  // Qwen's tokenizers have no BOS
  torch::manual_seed(3);
  LlamaModel model(config);
  model->SaveWeights(dir.path());
  testing::WriteChatmlTokenizer(dir, kChatml);
  return model;
}

bool HasProblem(const ModelInspection& m, const std::string& text) {
  for (const std::string& p : m.problems)
    if (p.find(text) != std::string::npos) return true;
  return false;
}

TEST(ModelInspect, ReportsASupportedDirectory) {
  slm::testing::TempDir dir;
  const LlamaModel model = WriteQwen(dir);
  const ModelInspection m = InspectModel(dir.path());
  EXPECT_TRUE(m.supported) << (m.problems.empty() ? "" : m.problems[0]);
  EXPECT_EQ(m.model_type, "qwen2");
  EXPECT_EQ(m.parameters, model->ParameterCount());
  EXPECT_EQ(m.dtypes.at("F32"), static_cast<int64_t>(model->BaseParameters().size()));
  ASSERT_EQ(m.shards.size(), 1u);
  EXPECT_EQ(m.shards[0].file, "model.safetensors");
  EXPECT_EQ(m.weight_bytes, 4 * model->ParameterCount());
  EXPECT_EQ(m.tokenizer_format, "tokenizer.json");
  EXPECT_EQ(m.tokenizer_vocab, 32);
  EXPECT_TRUE(m.special_tokens.at("bos").is_null());
  EXPECT_EQ(m.special_tokens.at("eos")["token"], "<|im_end|>");
  EXPECT_EQ(m.chat_format, "chatml");
  const json report = m.ToJson();
  EXPECT_EQ(report["architecture"]["family"], "qwen2");
  EXPECT_EQ(report["architecture"]["qkv_bias"], true);
  EXPECT_EQ(report["memory"]["kv_cache_bf16_bytes_per_token"], 2 * 2 * 2 * 8 * 2);  // K+V, 2 layers, 2 kv x 8
  bool said = false;
  for (const std::string& line : m.Lines()) said |= line == "supported: yes";
  EXPECT_TRUE(said);
}

TEST(ModelInspect, NamesEveryProblem) {
  {  // The tokenizer has ids the embeddings lack.
    slm::testing::TempDir dir;
    WriteQwen(dir, 30);
    const ModelInspection m = InspectModel(dir.path());
    EXPECT_FALSE(m.supported);
    EXPECT_TRUE(HasProblem(m, "has the added token '<|im_start|>' at id 30, beyond the 30 embedding rows of "
                              "\"vocab_size\" in config.json"));
  }
  {  // config.json contradicts the weights.
    slm::testing::TempDir dir;
    WriteQwen(dir);
    json config = fs::ReadJson(dir.File("config.json"));
    config["intermediate_size"] = 48;
    fs::AtomicWriteString(dir.File("config.json"), config.dump());
    const ModelInspection m = InspectModel(dir.path());
    EXPECT_FALSE(m.supported);
    EXPECT_TRUE(HasProblem(m, "tensor 'model.layers.0.mlp.gate_proj.weight' has shape [64, 32], expected [48, 32]"));
    config["intermediate_size"] = 64;
    config["model_type"] = "llama";  // Llama has no q/k/v bias: the checkpoint's biases are unexpected
    config["architectures"] = {"LlamaForCausalLM"};
    fs::AtomicWriteString(dir.File("config.json"), config.dump());
    EXPECT_TRUE(HasProblem(InspectModel(dir.path()), "unexpected tensors 'model.layers.0.self_attn.k_proj.bias'"));
    config["model_type"] = "falcon";
    fs::AtomicWriteString(dir.File("config.json"), config.dump());
    EXPECT_TRUE(HasProblem(InspectModel(dir.path()), "model_type \"falcon\" is not supported (supported: llama, qwen2"));
  }
  {  // A shard index naming a missing file; a truncated shard.
    slm::testing::TempDir dir;
    WriteQwen(dir);
    const json index = {{"metadata", json::object()},
                        {"weight_map", {{"model.norm.weight", "model-00002-of-00002.safetensors"}}}};
    stdfs::rename(dir.File("model.safetensors"), dir.File("model-00001-of-00002.safetensors"));
    fs::AtomicWriteString(dir.File("model.safetensors.index.json"), index.dump());
    EXPECT_TRUE(HasProblem(InspectModel(dir.path()), "shard 'model-00002-of-00002.safetensors'"));
    stdfs::remove(dir.File("model.safetensors.index.json"));
    stdfs::rename(dir.File("model-00001-of-00002.safetensors"), dir.File("model.safetensors"));
    stdfs::resize_file(dir.File("model.safetensors"), stdfs::file_size(dir.File("model.safetensors")) - 100);
    const ModelInspection m = InspectModel(dir.path());
    EXPECT_FALSE(m.supported);
    EXPECT_TRUE(HasProblem(m, "safetensors file '" + dir.File("model.safetensors") + "'"));
  }
  {  // No tokenizer; an unrecognised chat template is a note, not a problem.
    slm::testing::TempDir dir;
    WriteQwen(dir);
    stdfs::remove(dir.File("tokenizer.json"));
    EXPECT_FALSE(InspectModel(dir.path()).supported);
    WriteQwen(dir);
    fs::AtomicWriteString(dir.File("tokenizer_config.json"), json{{"chat_template", "<|user|>{{ x }}"}}.dump());
    const ModelInspection m = InspectModel(dir.path());
    EXPECT_TRUE(m.supported);
    EXPECT_EQ(m.chat_format, "");
    ASSERT_EQ(m.notes.size(), 1u);
    EXPECT_NE(m.notes[0].find("set model.chat_format"), std::string::npos);
  }
  slm::testing::TempDir empty;
  EXPECT_TRUE(HasProblem(InspectModel(empty.path()), "has no config.json"));
  EXPECT_SLM_ERROR(InspectModel(empty.File("nope")), "is not a directory");
}

}  // namespace
}  // namespace slm::text
