// The Llama backbone: config.json parsing, parameter layout, checkpoint loading and saving (and
// every way a checkpoint can be broken), the KV cache against full recomputation, gradients
// through the frozen model against finite differences, input validation and rotary frequencies.
// Numerical parity with transformers lives in tests/parity/llama_parity_test.cpp.
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

namespace slm::text {
namespace {

using nlohmann::json;

// A small model whose weights are large enough (initializer_range 0.2) that logits are O(1):
// tolerances then mean something.
LlamaConfig TinyConfig(bool tied = false) {
  LlamaConfig c;
  c.vocab_size = 97;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 64;
  c.rms_norm_eps = 1e-5;
  c.tie_word_embeddings = tied;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  c.initializer_range = 0.2;
  return c;
}

LlamaModel TinyModel(bool tied = false, uint64_t seed = 7) {
  torch::manual_seed(seed);
  LlamaModel model(TinyConfig(tied));
  model->eval();
  return model;
}

torch::Tensor Ids(std::vector<int64_t> ids, int64_t batch = 1) {
  const int64_t steps = static_cast<int64_t>(ids.size()) / batch;
  return torch::tensor(ids, torch::kLong).reshape({batch, steps});
}

double MaxAbsDiff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

LlamaOutput Forward(LlamaModel model, const torch::Tensor& ids, KVCache* cache = nullptr,
                    const torch::Tensor& mask = {}) {
  torch::NoGradGuard no_grad;
  LlamaInput input;
  input.input_ids = ids;
  input.attention_mask = mask;
  input.cache = cache;
  return model->forward(input);
}

std::vector<std::pair<std::string, torch::Tensor>> NamedTensors(LlamaModel& model) {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& named : model->named_parameters())
    tensors.emplace_back(named.key(), named.value().detach().clone());
  return tensors;
}

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

// A safetensors file from a raw header and data block, for files the writer would refuse.
void WriteRawSafetensors(const std::string& path, const std::string& header,
                         const std::string& data) {
  std::string bytes(8, '\0');
  uint64_t size = header.size();
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((size >> (8 * i)) & 0xff);
  WriteText(path, bytes + header + data);
}

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
