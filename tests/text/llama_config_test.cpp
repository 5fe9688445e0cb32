// The Llama backbone's config.json: both transformers generations, rope variants, the round trip
// and every error naming its file and key; the rotary inverse frequencies against transformers'
// formulas.
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
// config.json

json Llama3StyleJson() {
  // As transformers 5 writes it (rope_theta inside rope_parameters, "dtype"), with an eos list.
  return json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "attention_bias": false,
    "attention_dropout": 0.0, "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
    "head_dim": 64, "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
    "intermediate_size": 8192, "max_position_embeddings": 131072, "mlp_bias": false,
    "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_parameters": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                        "original_max_position_embeddings": 8192, "rope_theta": 500000.0,
                        "rope_type": "llama3"},
    "tie_word_embeddings": true, "dtype": "bfloat16", "transformers_version": "5.24.0",
    "use_cache": true, "vocab_size": 128256})");
}

json TinyLlamaStyleJson() {
  // As transformers 4.x wrote it: top-level rope_theta, rope_scaling null, torch_dtype.
  return json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
    "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
    "intermediate_size": 5632, "max_position_embeddings": 2048, "model_type": "llama",
    "num_attention_heads": 32, "num_hidden_layers": 22, "num_key_value_heads": 4,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": null, "rope_theta": 10000.0,
    "tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.35.0",
    "use_cache": true, "vocab_size": 32000})");
}

TEST(LlamaConfigTest, ParsesTransformers5ConfigWithLlama3RopeAndEosList) {
  const LlamaConfig c = LlamaConfig::FromJson(Llama3StyleJson(), "llama3/config.json");
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.hidden_size, 2048);
  EXPECT_EQ(c.intermediate_size, 8192);
  EXPECT_EQ(c.num_hidden_layers, 16);
  EXPECT_EQ(c.num_attention_heads, 32);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.HeadDim(), 64);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_scaling.rope_type, "llama3");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 32.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_EQ(c.pad_token_id, -1);
  EXPECT_EQ(c.torch_dtype, "bfloat16");
}

TEST(LlamaConfigTest, ParsesTransformers4ConfigWithDefaults) {
  const LlamaConfig c = LlamaConfig::FromJson(TinyLlamaStyleJson(), "tinyllama/config.json");
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_EQ(c.head_dim, 0);
  EXPECT_EQ(c.HeadDim(), 64);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.rope_scaling.rope_type, "default");
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{2}));
  EXPECT_EQ(c.torch_dtype, "bfloat16");

  // Optional keys absent: transformers' defaults (kv heads = heads, no bias, float32).
  json minimal = {{"model_type", "llama"},    {"vocab_size", 100},      {"hidden_size", 64},
                  {"intermediate_size", 128}, {"num_hidden_layers", 2}, {"num_attention_heads", 4}};
  const LlamaConfig m = LlamaConfig::FromJson(minimal, "minimal.json");
  EXPECT_EQ(m.num_key_value_heads, 4);
  EXPECT_EQ(m.max_position_embeddings, 2048);
  EXPECT_DOUBLE_EQ(m.rms_norm_eps, 1e-6);
  EXPECT_FALSE(m.attention_bias);
  EXPECT_EQ(m.torch_dtype, "float32");
  EXPECT_EQ(m.bos_token_id, 1);  // transformers' defaults when the keys are absent
  EXPECT_EQ(m.eos_token_ids, (std::vector<int64_t>{2}));
  EXPECT_EQ(m.pad_token_id, -1);
  minimal["bos_token_id"] = nullptr;  // explicitly none
  minimal["eos_token_id"] = nullptr;
  minimal["pad_token_id"] = -1;  // Llama 1's way of saying none
  const LlamaConfig none = LlamaConfig::FromJson(minimal, "minimal.json");
  EXPECT_EQ(none.bos_token_id, -1);
  EXPECT_TRUE(none.eos_token_ids.empty());
  EXPECT_EQ(none.pad_token_id, -1);
  EXPECT_TRUE(none.ToJson()["bos_token_id"].is_null());
  EXPECT_TRUE(none.ToJson()["eos_token_id"].is_null());
}

TEST(LlamaConfigTest, RopeVariantsInEveryShape) {
  json legacy = TinyLlamaStyleJson();
  legacy["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};  // pre-4.40 "type" key
  LlamaConfig c = LlamaConfig::FromJson(legacy, "legacy.json");
  EXPECT_EQ(c.rope_scaling.rope_type, "linear");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 2.0);

  // rope_parameters without rope_theta takes the top-level one (transformers' setdefault).
  json v5 = TinyLlamaStyleJson();
  v5.erase("rope_scaling");
  v5["rope_theta"] = 250000.0;
  v5["rope_parameters"] = {{"rope_type", "llama3"},
                           {"factor", 8.0},
                           {"low_freq_factor", 1.0},
                           {"high_freq_factor", 4.0}};
  c = LlamaConfig::FromJson(v5, "v5.json");
  EXPECT_DOUBLE_EQ(c.rope_theta, 250000.0);
  // original_max_position_embeddings defaults to max_position_embeddings, as transformers does.
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 2048);

  v5["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1e6}};
  c = LlamaConfig::FromJson(v5, "v5.json");
  EXPECT_EQ(c.rope_scaling.rope_type, "default");
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
}

TEST(LlamaConfigTest, ToJsonRoundTrips) {
  for (const json& source : {Llama3StyleJson(), TinyLlamaStyleJson()}) {
    const LlamaConfig a = LlamaConfig::FromJson(source, "a.json");
    const json written = a.ToJson();
    EXPECT_EQ(written["architectures"], json({"LlamaForCausalLM"}));
    EXPECT_EQ(written["model_type"], "llama");
    const LlamaConfig b = LlamaConfig::FromJson(written, "b.json");
    EXPECT_EQ(b.ToJson(), written);
    EXPECT_EQ(b.eos_token_ids, a.eos_token_ids);
    EXPECT_EQ(b.rope_scaling.rope_type, a.rope_scaling.rope_type);
    EXPECT_DOUBLE_EQ(b.rope_scaling.factor, a.rope_scaling.factor);
    EXPECT_EQ(b.rope_scaling.original_max_position_embeddings,
              a.rope_scaling.original_max_position_embeddings);
    EXPECT_DOUBLE_EQ(b.rope_theta, a.rope_theta);
    EXPECT_EQ(b.HeadDim(), a.HeadDim());
    EXPECT_EQ(b.tie_word_embeddings, a.tie_word_embeddings);
  }
  EXPECT_TRUE(LlamaConfig::FromJson(TinyLlamaStyleJson(), "x").ToJson()["rope_scaling"].is_null());
}

TEST(LlamaConfigTest, ErrorsNameTheFileAndKey) {
  auto with = [](const char* key, json value) {
    json j = TinyLlamaStyleJson();
    if (value.is_null()) {
      j.erase(key);
    } else {
      j[key] = value;
    }
    return j;
  };
  const std::string f = "m/config.json";
  EXPECT_SLM_ERROR(LlamaConfig::FromJson(with("model_type", "gpt2"), f),
                   "m/config.json: model_type \"gpt2\" is not supported (supported: llama, qwen2, "
                   "qwen3, mistral, gemma2)");
  EXPECT_SLM_ERROR(LlamaConfig::FromJson(with("model_type", "mistral"), f),
                   "architectures [\"LlamaForCausalLM\"] is not supported for model_type \"mistral\" (slm "
                   "runs MistralForCausalLM)");
  EXPECT_SLM_ERROR(
      LlamaConfig::FromJson(with("architectures", json::array({"GPT2LMHeadModel"})), f),
      "m/config.json: architectures [\"GPT2LMHeadModel\"] is not supported");
  json anonymous = TinyLlamaStyleJson();
  anonymous.erase("model_type");
  anonymous.erase("architectures");
  EXPECT_SLM_ERROR(LlamaConfig::FromJson(anonymous, f),
                   "neither \"model_type\" nor \"architectures\"");
  EXPECT_SLM_ERROR(LlamaConfig::FromJson(with("hidden_act", "gelu"), f),
                   "m/config.json: hidden_act \"gelu\" is not supported (supported: silu, gelu_pytorch_tanh)");
  EXPECT_SLM_ERROR(LlamaConfig::FromJson(with("vocab_size", nullptr), f),
                   "m/config.json: missing required key \"vocab_size\"");
  EXPECT_SLM_ERROR(LlamaConfig::FromJson(with("hidden_size", "2048"), f),
                   "m/config.json: \"hidden_size\" must be an integer, got \"2048\"");
  EXPECT_SLM_ERROR(LlamaConfig::FromJson(with("num_hidden_layers", 2.5), f),
                   "\"num_hidden_layers\" must be an integer, got 2.5");
  EXPECT_SLM_ERROR(LlamaConfig::FromJson(with("tie_word_embeddings", 1), f),
                   "\"tie_word_embeddings\" must be true or false, got 1");
  EXPECT_SLM_ERROR(LlamaConfig::FromJson(with("num_attention_heads", 30), f),
                   "hidden_size (2048) is not a multiple of num_attention_heads (30)");
  EXPECT_SLM_ERROR(LlamaConfig::FromJson(with("num_key_value_heads", 5), f),
                   "num_attention_heads (32) is not a multiple of num_key_value_heads (5)");
  EXPECT_SLM_ERROR(LlamaConfig::FromJson(with("eos_token_id", 32000), f),
                   "\"eos_token_id\" 32000 is outside the vocabulary of 32000");
  EXPECT_SLM_ERROR(LlamaConfig::FromJson(with("eos_token_id", "</s>"), f),
                   "\"eos_token_id\" must be an integer or a list of integers");
  EXPECT_SLM_ERROR(LlamaConfig::FromJson(with("torch_dtype", "int8"), f),
                   "dtype \"int8\" is not supported (supported: float32, bfloat16");
  EXPECT_SLM_ERROR(
      LlamaConfig::FromJson(with("quantization_config", json{{"quant_method", "gptq"}}), f),
      "quantized checkpoints (\"quantization_config\") are not supported");
  EXPECT_SLM_ERROR(
      LlamaConfig::FromJson(with("rope_scaling", json{{"rope_type", "yarn"}, {"factor", 4.0}}), f),
      "m/config.json: rope type \"yarn\" is not supported (supported: default, linear, llama3)");
  EXPECT_SLM_ERROR(
      LlamaConfig::FromJson(with("rope_scaling", json{{"type", "dynamic"}, {"factor", 4.0}}), f),
      "rope type \"dynamic\" is not supported");
  EXPECT_SLM_ERROR(LlamaConfig::FromJson(with("rope_scaling", json{{"rope_type", "linear"}}), f),
                   "rope type \"linear\" needs \"rope_scaling.factor\"");
  EXPECT_SLM_ERROR(
      LlamaConfig::FromJson(
          with("rope_scaling", json{{"rope_type", "linear"}, {"factr", 2.0}, {"factor", 2.0}}), f),
      "unknown key \"rope_scaling.factr\" (did you mean \"factor\"?)");
  json both = with("rope_scaling", json{{"rope_type", "linear"}, {"factor", 2.0}});
  both["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 10000.0}};
  EXPECT_SLM_ERROR(LlamaConfig::FromJson(both, f),
                   "both \"rope_parameters\" and \"rope_scaling\" are given; keep one");
  json v5 = with("rope_parameters", json{{"rope_type", "linear"}, {"factor", "two"}});
  EXPECT_SLM_ERROR(LlamaConfig::FromJson(v5, f),
                   "\"rope_parameters.factor\" must be a number, got \"two\"");
  EXPECT_SLM_ERROR(LlamaConfig::FromJson(with("rope_scaling", json{{"rope_type", "llama3"},
                                                                   {"factor", 8.0},
                                                                   {"low_freq_factor", 4.0},
                                                                   {"high_freq_factor", 4.0}}),
                                         f),
                   "rope scaling \"high_freq_factor\" (4) must exceed \"low_freq_factor\" (4)");
  EXPECT_SLM_ERROR(LlamaConfig::FromJson(json::array(), f), "a config must be a JSON object");
}

TEST(LlamaConfigTest, FromFileErrors) {
  testing::TempDir dir;
  EXPECT_SLM_ERROR(LlamaConfig::FromFile(dir.File("config.json")),
                   "missing model config: '" + dir.File("config.json") + "' does not exist");
  WriteText(dir.File("config.json"), "{\"model_type\": \"llama\",");
  EXPECT_SLM_ERROR(LlamaConfig::FromFile(dir.File("config.json")),
                   dir.File("config.json") + ": not valid JSON");
  WriteText(dir.File("config.json"), TinyLlamaStyleJson().dump());
  EXPECT_EQ(LlamaConfig::FromFile(dir.File("config.json")).num_hidden_layers, 22);
}

// ---------------------------------------------------------------------------------------------
// Rotary frequencies

TEST(LlamaRopeTest, InverseFrequenciesMatchTransformersFormulas) {
  LlamaConfig c = TinyConfig();
  c.hidden_size = 64;
  c.num_attention_heads = 2;  // head_dim 32: wavelengths 2*pi*10^(i/4), i = 0..15
  c.num_key_value_heads = 2;
  c.rope_theta = 10000.0;
  const int64_t dim = 32;
  std::vector<double> base(dim / 2);
  for (int64_t i = 0; i < dim / 2; ++i) base[i] = 1.0 / std::pow(10000.0, 2.0 * i / dim);

  auto expect_close = [](const torch::Tensor& got, const std::vector<double>& want,
                         const char* what) {
    ASSERT_EQ(got.scalar_type(), torch::kFloat);
    ASSERT_EQ(got.numel(), static_cast<int64_t>(want.size()));
    for (size_t i = 0; i < want.size(); ++i)
      EXPECT_NEAR(got[i].item<double>(), want[i], 2e-7 * want[i]) << what << " " << i;
  };
  expect_close(RopeInverseFrequencies(c), base, "default");

  c.rope_scaling.rope_type = "linear";
  c.rope_scaling.factor = 4.0;
  std::vector<double> linear = base;
  for (double& f : linear) f /= 4.0;
  expect_close(RopeInverseFrequencies(c), linear, "linear");

  // Llama 3.1 by hand: original 8192, low 1, high 4 -> wavelengths below 2048 kept, above 8192
  // divided by 8, in between interpolated with smooth = (8192 / wavelen - 1) / (4 - 1).
  c.rope_scaling.rope_type = "llama3";
  c.rope_scaling.factor = 8.0;
  c.rope_scaling.low_freq_factor = 1.0;
  c.rope_scaling.high_freq_factor = 4.0;
  c.rope_scaling.original_max_position_embeddings = 8192;
  std::vector<double> llama3(dim / 2);
  int kept = 0, scaled = 0, smoothed = 0;
  for (int64_t i = 0; i < dim / 2; ++i) {
    const double wavelen = 2 * M_PI / base[i];
    if (wavelen < 8192.0 / 4.0) {
      llama3[i] = base[i];
      ++kept;
    } else if (wavelen > 8192.0 / 1.0) {
      llama3[i] = base[i] / 8.0;
      ++scaled;
    } else {
      const double smooth = (8192.0 / wavelen - 1.0) / (4.0 - 1.0);
      llama3[i] = (1 - smooth) * base[i] / 8.0 + smooth * base[i];
      ++smoothed;
    }
  }
  EXPECT_EQ(kept, 11);  // every band is exercised
  EXPECT_EQ(smoothed, 2);
  EXPECT_EQ(scaled, 3);
  expect_close(RopeInverseFrequencies(c), llama3, "llama3");
}

}  // namespace
}  // namespace slm::text
