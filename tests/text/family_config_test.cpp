// config.json of each backbone family (text/model_family.h): the published configs of the
// checkpoints the families cover parse to the traits transformers gives them (defaults of omitted
// keys included), write back as configs of the same family, and every unsupported option is an
// error naming the file and key.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/test_util.h"
#include "text/llama.h"

namespace slm::text {
namespace {

using nlohmann::json;

// config.json as published on the Hugging Face Hub (transformers 4.x layout).
const json kQwen25 = json::parse(R"({"architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0,
  "bos_token_id": 151643, "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 896,
  "initializer_range": 0.02, "intermediate_size": 4864, "max_position_embeddings": 32768,
  "max_window_layers": 21, "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24,
  "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768,
  "tie_word_embeddings": true, "torch_dtype": "bfloat16", "transformers_version": "4.43.1",
  "use_cache": true, "use_sliding_window": false, "vocab_size": 151936})");
const json kQwen3 = json::parse(R"({"architectures": ["Qwen3ForCausalLM"], "attention_bias": false,
  "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128,
  "hidden_act": "silu", "hidden_size": 1024, "initializer_range": 0.02, "intermediate_size": 3072,
  "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3",
  "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8, "rms_norm_eps": 1e-06,
  "rope_scaling": null, "rope_theta": 1000000, "sliding_window": null, "tie_word_embeddings": true,
  "torch_dtype": "bfloat16", "use_cache": true, "use_sliding_window": false, "vocab_size": 151936})");
const json kMistral = json::parse(R"({"architectures": ["MistralForCausalLM"], "bos_token_id": 1,
  "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
  "intermediate_size": 14336, "max_position_embeddings": 32768, "model_type": "mistral",
  "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0, "sliding_window": 4096, "tie_word_embeddings": false,
  "torch_dtype": "bfloat16", "use_cache": true, "vocab_size": 32000})");
const json kGemma2 = json::parse(R"({"architectures": ["Gemma2ForCausalLM"], "attention_bias": false,
  "attention_dropout": 0.0, "attn_logit_softcapping": 50.0, "bos_token_id": 2,
  "cache_implementation": "hybrid", "eos_token_id": 1, "final_logit_softcapping": 30.0,
  "head_dim": 256, "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh",
  "hidden_size": 2304, "initializer_range": 0.02, "intermediate_size": 9216,
  "max_position_embeddings": 8192, "model_type": "gemma2", "num_attention_heads": 8,
  "num_hidden_layers": 26, "num_key_value_heads": 4, "pad_token_id": 0, "query_pre_attn_scalar": 256,
  "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "sliding_window": 4096, "torch_dtype": "float32",
  "use_cache": true, "vocab_size": 256000})");
const json kSmolLM2 = json::parse(R"({"architectures": ["LlamaForCausalLM"], "bos_token_id": 0,
  "eos_token_id": 0, "hidden_act": "silu", "hidden_size": 960, "initializer_range": 0.02,
  "intermediate_size": 2560, "max_position_embeddings": 8192, "model_type": "llama",
  "num_attention_heads": 15, "num_hidden_layers": 32, "num_key_value_heads": 5, "pretraining_tp": 1,
  "rms_norm_eps": 1e-05, "rope_scaling": null, "rope_theta": 100000, "tie_word_embeddings": true,
  "torch_dtype": "bfloat16", "vocab_size": 49152})");

int64_t SlidingLayers(const LlamaConfig& c) {
  int64_t n = 0;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) n += c.LayerWindow(l) > 0;
  return n;
}

TEST(FamilyConfig, PublishedConfigsParseToTheirTraits) {
  const LlamaConfig qwen = LlamaConfig::FromJson(kQwen25, "qwen");
  EXPECT_EQ(qwen.model_type, "qwen2");
  EXPECT_TRUE(qwen.QkvBias());
  EXPECT_FALSE(qwen.attention_bias);  // no bias on o_proj
  EXPECT_EQ(qwen.HeadDim(), 64);
  EXPECT_EQ(SlidingLayers(qwen), 0);  // use_sliding_window false: sliding_window is inert
  EXPECT_EQ(qwen.bos_token_id, 151643);
  EXPECT_EQ(qwen.eos_token_ids, std::vector<int64_t>{151645});
  EXPECT_TRUE(qwen.tie_word_embeddings);

  json sliding = kQwen25;
  sliding["use_sliding_window"] = true;
  const LlamaConfig windowed = LlamaConfig::FromJson(sliding, "qwen");
  EXPECT_EQ(SlidingLayers(windowed), 3);  // layers 21, 22, 23 (from max_window_layers on)
  EXPECT_EQ(windowed.LayerWindow(20), 0);
  EXPECT_EQ(windowed.LayerWindow(21), 32768);

  const LlamaConfig qwen3 = LlamaConfig::FromJson(kQwen3, "qwen3");
  EXPECT_TRUE(qwen3.Family().qk_norm);
  EXPECT_FALSE(qwen3.QkvBias());
  EXPECT_EQ(qwen3.HeadDim(), 128);  // 16 x 128 != hidden 1024
  EXPECT_EQ(qwen3.rope_theta, 1000000.0);
  EXPECT_EQ(qwen3.bos_token_id, 151643);

  const LlamaConfig mistral = LlamaConfig::FromJson(kMistral, "mistral");
  EXPECT_EQ(SlidingLayers(mistral), 32);
  EXPECT_EQ(mistral.LayerWindow(5), 4096);
  json v03 = kMistral;
  v03["sliding_window"] = nullptr;  // Mistral 7B v0.3
  EXPECT_EQ(SlidingLayers(LlamaConfig::FromJson(v03, "mistral")), 0);
  json omitted = kMistral;
  omitted.erase("sliding_window");  // MistralConfig's default
  EXPECT_EQ(LlamaConfig::FromJson(omitted, "mistral").LayerWindow(0), 4096);

  const LlamaConfig gemma = LlamaConfig::FromJson(kGemma2, "gemma");
  EXPECT_TRUE(gemma.Family().gemma);
  EXPECT_TRUE(gemma.tie_word_embeddings);  // omitted: Gemma2Config's default
  EXPECT_EQ(gemma.hidden_act, "gelu_pytorch_tanh");
  EXPECT_EQ(gemma.attn_logit_softcapping, 50.0);
  EXPECT_EQ(gemma.final_logit_softcapping, 30.0);
  EXPECT_DOUBLE_EQ(gemma.AttentionScale(), 1.0 / 16.0);
  EXPECT_EQ(SlidingLayers(gemma), 13);  // even layers, from Gemma2Config's default layer_types
  EXPECT_EQ(gemma.LayerWindow(0), 4096);
  EXPECT_EQ(gemma.LayerWindow(1), 0);
  EXPECT_EQ(gemma.pad_token_id, 0);
  json uncapped = kGemma2;
  uncapped["final_logit_softcapping"] = nullptr;
  uncapped.erase("attn_logit_softcapping");
  const LlamaConfig u = LlamaConfig::FromJson(uncapped, "gemma");
  EXPECT_EQ(u.final_logit_softcapping, 0.0);  // null: off
  EXPECT_EQ(u.attn_logit_softcapping, 50.0);  // absent: the default

  const LlamaConfig smol = LlamaConfig::FromJson(kSmolLM2, "smollm");
  EXPECT_EQ(smol.model_type, "llama");
  EXPECT_EQ(smol.HeadDim(), 64);
  EXPECT_EQ(smol.num_key_value_heads, 5);
  EXPECT_EQ(smol.rope_theta, 100000.0);
}

TEST(FamilyConfig, ToJsonWritesTheFamilysOwnKeys) {
  for (const json& published : {kQwen25, kQwen3, kMistral, kGemma2, kSmolLM2}) {
    json source = published;
    if (source["model_type"] == "qwen2") source["use_sliding_window"] = true;
    const LlamaConfig a = LlamaConfig::FromJson(source, "a");
    const json written = a.ToJson();
    EXPECT_EQ(written["architectures"][0], a.Family().architecture);
    const LlamaConfig b = LlamaConfig::FromJson(written, "b");
    EXPECT_EQ(b.model_type, a.model_type);
    EXPECT_EQ(b.HeadDim(), a.HeadDim());
    EXPECT_EQ(b.QkvBias(), a.QkvBias());
    EXPECT_EQ(b.tie_word_embeddings, a.tie_word_embeddings);
    EXPECT_EQ(b.hidden_act, a.hidden_act);
    EXPECT_EQ(b.AttentionScale(), a.AttentionScale());
    EXPECT_EQ(b.attn_logit_softcapping, a.attn_logit_softcapping);
    EXPECT_EQ(b.final_logit_softcapping, a.final_logit_softcapping);
    for (int64_t l = 0; l < a.num_hidden_layers; ++l) EXPECT_EQ(b.LayerWindow(l), a.LayerWindow(l));
  }
  EXPECT_TRUE(LlamaConfig::FromJson(kGemma2, "g").ToJson().contains("hidden_activation"));
  EXPECT_FALSE(LlamaConfig::FromJson(kQwen25, "q").ToJson().contains("attention_bias"));
}

TEST(FamilyConfig, UnsupportedOptionsNameTheKeyAndTheSupportedValues) {
  const std::string f = "m/config.json";
  auto with = [](json config, const std::string& key, const json& value) {
    config[key] = value;
    return config;
  };
  EXPECT_SLM_ERROR(LlamaConfig::FromJson(with(kQwen25, "model_type", "qwen2_moe"), f),
                   "m/config.json: model_type \"qwen2_moe\" is not supported (supported: llama, qwen2, qwen3, "
                   "mistral, gemma2)");
  json by_class = kMistral;
  by_class.erase("model_type");
  EXPECT_EQ(LlamaConfig::FromJson(by_class, f).model_type, "mistral");
  by_class["architectures"] = {"PhiForCausalLM"};
  EXPECT_SLM_ERROR(LlamaConfig::FromJson(by_class, f),
                   "architectures [\"PhiForCausalLM\"] is not supported (supported: LlamaForCausalLM, "
                   "Qwen2ForCausalLM, Qwen3ForCausalLM, MistralForCausalLM, Gemma2ForCausalLM)");
  EXPECT_SLM_ERROR(LlamaConfig::FromJson(with(kQwen25, "architectures", json{"LlamaForCausalLM"}), f),
                   "is not supported for model_type \"qwen2\" (slm runs Qwen2ForCausalLM)");
  EXPECT_SLM_ERROR(
      LlamaConfig::FromJson(with(kQwen25, "rope_scaling", json{{"type", "yarn"}, {"factor", 4.0}}), f),
      "m/config.json: rope type \"yarn\" is not supported (supported: default, linear, llama3)");
  EXPECT_SLM_ERROR(LlamaConfig::FromJson(with(kGemma2, "hidden_activation", "gelu"), f),
                   "m/config.json: hidden_activation \"gelu\" is not supported (supported: silu, gelu_pytorch_tanh)");
  EXPECT_SLM_ERROR(LlamaConfig::FromJson(with(kGemma2, "use_bidirectional_attention", true), f),
                   "\"use_bidirectional_attention\": true is not supported");
  json types = with(kGemma2, "num_hidden_layers", 2);
  types["layer_types"] = {"sliding_attention", "chunked_attention"};
  EXPECT_SLM_ERROR(LlamaConfig::FromJson(types, f),
                   "m/config.json: layer type \"chunked_attention\" in \"layer_types\" is not supported (supported: "
                   "full_attention, sliding_attention)");
  json no_window = with(kQwen3, "num_hidden_layers", 2);
  no_window["layer_types"] = {"full_attention", "sliding_attention"};
  EXPECT_SLM_ERROR(LlamaConfig::FromJson(no_window, f),
                   "\"layer_types\" names sliding_attention layers but there is no window (\"use_sliding_window\" is false)");
  EXPECT_SLM_ERROR(LlamaConfig::FromJson(with(kMistral, "sliding_window", 0), f),
                   "\"sliding_window\" must be positive or null, got 0");
  EXPECT_SLM_ERROR(LlamaConfig::FromJson(with(kGemma2, "final_logit_softcapping", -1.0), f),
                   "\"final_logit_softcapping\" must be positive or null");
  EXPECT_SLM_ERROR(LlamaConfig::FromJson(with(kGemma2, "query_pre_attn_scalar", "256"), f),
                   "\"query_pre_attn_scalar\" must be a number");
}

}  // namespace
}  // namespace slm::text
