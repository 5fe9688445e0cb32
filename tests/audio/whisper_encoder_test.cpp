// WhisperEncoder: config parsing, shapes for any length, padded batches, block-causal streaming
// invariance, checkpoint errors, Freeze. Parity with transformers lives in
// tests/parity/whisper_encoder_parity_test.cpp.
#include "audio/whisper_encoder.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "core/safetensors.h"
#include "tests/test_util.h"

namespace slm::audio {
namespace {

using nlohmann::json;
using slm::testing::TempDir;

json TinyJson() {
  return {{"model_type", "whisper"},
          {"architectures", {"WhisperForConditionalGeneration"}},
          {"d_model", 32},
          {"encoder_layers", 2},
          {"encoder_attention_heads", 4},
          {"encoder_ffn_dim", 48},
          {"num_mel_bins", 16},
          {"max_source_positions", 64},
          {"activation_function", "gelu"},
          {"init_std", 0.2},
          {"decoder_layers", 1},
          {"vocab_size", 100}};
}

WhisperEncoderConfig TinyConfig() { return WhisperEncoderConfig::FromJson(TinyJson(), "tiny"); }

WhisperEncoder TinyModel(uint64_t seed = 7) {
  torch::manual_seed(seed);
  WhisperEncoder model(TinyConfig());
  model->eval();
  return model;
}

double MaxAbsDiff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

// Writes config.json + model.safetensors in the hub layout ("model.encoder.*" plus a decoder
// tensor that must be ignored); `edit` may change the tensor list first.
void WriteCheckpoint(
    WhisperEncoder& model, const std::string& dir,
    const std::function<void(std::vector<std::pair<std::string, torch::Tensor>>&)>& edit = {}) {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& named : model->named_parameters())
    tensors.emplace_back(named.key(), named.value().detach().clone());
  tensors.emplace_back("model.decoder.layer_norm.weight", torch::ones({32}));
  tensors.emplace_back("proj_out.weight", torch::ones({100, 32}));
  if (edit) edit(tensors);
  safetensors::Save(dir + "/model.safetensors", tensors);
  std::ofstream(dir + "/config.json") << TinyJson().dump(2);
}

TEST(WhisperEncoderConfigTest, ParsesHuggingFaceConfig) {
  const WhisperEncoderConfig c = TinyConfig();
  EXPECT_EQ(c.d_model, 32);
  EXPECT_EQ(c.encoder_layers, 2);
  EXPECT_EQ(c.encoder_attention_heads, 4);
  EXPECT_EQ(c.encoder_ffn_dim, 48);
  EXPECT_EQ(c.num_mel_bins, 16);
  EXPECT_EQ(c.max_source_positions, 64);
  EXPECT_EQ(c.MaxInputFrames(), 128);
  EXPECT_EQ(c.HeadDim(), 8);
  EXPECT_EQ(c.attention_chunk_frames, 0);
  EXPECT_DOUBLE_EQ(c.init_std, 0.2);
}

TEST(WhisperEncoderConfigTest, ErrorsNameFileAndKey) {
  json j = TinyJson();
  j.erase("d_model");
  EXPECT_SLM_ERROR(WhisperEncoderConfig::FromJson(j, "cfg.json"),
                   "cfg.json: missing required key \"d_model\"");
  j = TinyJson();
  j["model_type"] = "llama";
  EXPECT_SLM_ERROR(WhisperEncoderConfig::FromJson(j, "cfg.json"), "model_type \"llama\"");
  j.erase("model_type");
  EXPECT_SLM_ERROR(WhisperEncoderConfig::FromJson(j, "cfg.json"), "\"model_type\"");
  j = TinyJson();
  j["activation_function"] = "relu";
  EXPECT_SLM_ERROR(WhisperEncoderConfig::FromJson(j, "cfg.json"), "activation_function \"relu\"");
  j = TinyJson();
  j["encoder_attention_heads"] = 5;
  EXPECT_SLM_ERROR(WhisperEncoderConfig::FromJson(j, "cfg.json"), "encoder_attention_heads");
  j = TinyJson();
  j["encoder_layers"] = "two";
  EXPECT_SLM_ERROR(WhisperEncoderConfig::FromJson(j, "cfg.json"),
                   "\"encoder_layers\" must be an integer");
  j = TinyJson();
  j["num_mel_bins"] = 0;
  EXPECT_SLM_ERROR(WhisperEncoderConfig::FromJson(j, "cfg.json"),
                   "\"num_mel_bins\" must be positive");
  TempDir tmp;
  EXPECT_SLM_ERROR(WhisperEncoderConfig::FromFile(tmp.File("config.json")), "does not exist");
  std::ofstream(tmp.File("bad.json")) << "{ nope";
  EXPECT_SLM_ERROR(WhisperEncoderConfig::FromFile(tmp.File("bad.json")), "not valid JSON");
}

TEST(WhisperEncoderTest, RegistersHuggingFaceNames) {
  WhisperEncoder model = TinyModel();
  std::vector<std::string> names;
  for (const auto& named : model->named_parameters()) names.push_back(named.key());
  for (const char* expected :
       {"model.encoder.conv1.weight", "model.encoder.conv2.bias",
        "model.encoder.embed_positions.weight", "model.encoder.layers.0.self_attn.q_proj.weight",
        "model.encoder.layers.1.self_attn.out_proj.bias", "model.encoder.layers.0.fc1.weight",
        "model.encoder.layers.0.self_attn_layer_norm.weight",
        "model.encoder.layers.1.final_layer_norm.bias", "model.encoder.layer_norm.weight"})
    EXPECT_NE(std::find(names.begin(), names.end(), expected), names.end()) << expected;
  EXPECT_EQ(std::find(names.begin(), names.end(), "model.encoder.layers.0.self_attn.k_proj.bias"),
            names.end());
  // 2 convs (w+b) + positions + final norm (2) + 2 layers x (q,k,v,out: 7; 2 norms: 4; fc: 4).
  EXPECT_EQ(names.size(), 4u + 1 + 2 + 2 * 15);
}

TEST(WhisperEncoderTest, OutputShapesForOddAndEvenLengths) {
  WhisperEncoder model = TinyModel();
  torch::NoGradGuard no_grad;
  for (int64_t steps : {1, 2, 7, 8, 33, 128}) {
    const torch::Tensor out = model->forward(torch::randn({2, steps, 16}));
    EXPECT_EQ(out.sizes().vec(), (std::vector<int64_t>{2, (steps + 1) / 2, 32})) << steps;
    EXPECT_TRUE(torch::isfinite(out).all().item<bool>());
  }
  EXPECT_SLM_ERROR(model->forward(torch::randn({1, 129, 16})), "exceed the maximum of 128");
  EXPECT_SLM_ERROR(model->forward(torch::randn({1, 10, 15})), "n_mels=16");
}

TEST(WhisperEncoderTest, PaddedBatchMatchesRowsAlone) {
  WhisperEncoder model = TinyModel();
  torch::NoGradGuard no_grad;
  const std::vector<int64_t> lengths = {37, 20, 41, 9};
  const int64_t steps = 41;
  torch::Tensor batch = torch::randn({4, steps, 16}) * 3;  // garbage in the padding too
  WhisperEncoderInput input;
  input.features = batch;
  input.lengths = torch::tensor(lengths);
  const WhisperEncoderOutput out = model->forward(input);
  EXPECT_EQ(out.lengths[1].item<int64_t>(), 10);
  EXPECT_EQ(out.mask.sum().item<int64_t>(), 19 + 10 + 21 + 5);
  for (size_t b = 0; b < lengths.size(); ++b) {
    const int64_t n = lengths[b];
    const torch::Tensor alone = model->forward(batch.slice(0, b, b + 1).slice(1, 0, n));
    const int64_t m = (n + 1) / 2;
    const double diff = MaxAbsDiff(out.last_hidden_state.slice(0, b, b + 1).slice(1, 0, m), alone);
    EXPECT_LE(diff, 1e-5) << "row " << b;
  }
  EXPECT_TRUE(torch::isfinite(out.last_hidden_state).all().item<bool>());

  // The same through a [B, T] mask.
  WhisperEncoderInput masked;
  masked.features = batch;
  masked.mask = torch::arange(steps).unsqueeze(0) < torch::tensor(lengths).unsqueeze(1);
  EXPECT_LE(MaxAbsDiff(model->forward(masked).last_hidden_state, out.last_hidden_state), 1e-6);
  masked.mask[0][3] = false;  // a hole: not a prefix
  EXPECT_SLM_ERROR(model->forward(masked), "prefix");
  input.lengths = torch::tensor(std::vector<int64_t>{37, 0, 41, 9});
  EXPECT_SLM_ERROR(model->forward(input), "lengths must be in [1, T=41]");
}

TEST(WhisperEncoderTest, NoGradPathEqualsTheAutogradPathBitwise) {
  // Without autograd the layers scale, activate and add residuals in place; the arithmetic must be
  // the autograd path's exactly (padded rows, every layer's hidden state, inputs left untouched).
  WhisperEncoder model = TinyModel();
  WhisperEncoderInput input;
  input.features = torch::randn({3, 41, 16});
  input.lengths = torch::tensor(std::vector<int64_t>{41, 20, 33});
  input.output_hidden_states = true;
  const torch::Tensor features = input.features.clone();
  const WhisperEncoderOutput with_grad = model->forward(input);
  ASSERT_TRUE(with_grad.last_hidden_state.requires_grad());
  WhisperEncoderOutput frozen;
  {
    torch::NoGradGuard no_grad;
    frozen = model->forward(input);
  }
  EXPECT_TRUE(torch::equal(input.features, features));
  EXPECT_TRUE(torch::equal(frozen.last_hidden_state, with_grad.last_hidden_state.detach()));
  ASSERT_EQ(frozen.hidden_states.size(), with_grad.hidden_states.size());
  for (size_t i = 0; i < frozen.hidden_states.size(); ++i)
    EXPECT_TRUE(torch::equal(frozen.hidden_states[i], with_grad.hidden_states[i].detach())) << "layer " << i;
}

TEST(WhisperEncoderTest, BlockCausalPrefixIsInvariantToAppendedAudio) {
  WhisperEncoder model = TinyModel();
  torch::NoGradGuard no_grad;
  const int64_t chunk = 4;  // output frames
  const torch::Tensor audio = torch::randn({1, 100, 16});
  WhisperEncoderInput input;
  input.attention_chunk_frames = chunk;
  std::vector<torch::Tensor> outputs;
  // K = 2, 3, ... complete chunks need 2*K*chunk + 1 input frames (one frame of conv look-ahead).
  for (int64_t k = 2; k <= 12; k += 2) {
    input.features = audio.slice(1, 0, 2 * k * chunk + 1);
    outputs.push_back(model->forward(input).last_hidden_state);
  }
  input.features = audio;
  const torch::Tensor all = model->forward(input).last_hidden_state;
  for (size_t i = 0; i < outputs.size(); ++i) {
    const int64_t frames = static_cast<int64_t>(2 * (i + 1)) * chunk;
    EXPECT_LE(MaxAbsDiff(outputs[i].slice(1, 0, frames), all.slice(1, 0, frames)), 1e-5)
        << frames << " frames";
  }
  // Full attention does depend on the future (so the check above is not vacuous).
  input.attention_chunk_frames = 0;
  input.features = audio.slice(1, 0, 33);
  const torch::Tensor full_prefix = model->forward(input).last_hidden_state.slice(1, 0, 16);
  input.features = audio;
  EXPECT_GT(MaxAbsDiff(full_prefix, model->forward(input).last_hidden_state.slice(1, 0, 16)), 1e-3);
  // A chunked padded batch still equals its rows alone.
  input.attention_chunk_frames = chunk;
  input.features = audio.expand({2, 100, 16}).contiguous();
  input.lengths = torch::tensor(std::vector<int64_t>{100, 45});
  const torch::Tensor batched = model->forward(input).last_hidden_state;
  WhisperEncoderInput alone;
  alone.attention_chunk_frames = chunk;
  alone.features = audio.slice(1, 0, 45);
  EXPECT_LE(
      MaxAbsDiff(batched.slice(0, 1, 2).slice(1, 0, 23), model->forward(alone).last_hidden_state),
      1e-5);
  EXPECT_LE(MaxAbsDiff(batched.slice(0, 0, 1), all), 1e-5);
}

TEST(WhisperEncoderTest, LoadsCheckpointAndIgnoresDecoder) {
  TempDir tmp;
  WhisperEncoder source = TinyModel(11);
  WriteCheckpoint(source, tmp.path());
  WhisperEncoder loaded = LoadWhisperEncoder(tmp.path());
  torch::NoGradGuard no_grad;
  const torch::Tensor x = torch::randn({1, 30, 16});
  EXPECT_EQ(MaxAbsDiff(loaded->forward(x), source->forward(x)), 0.0);
  WhisperEncoder as_double = LoadWhisperEncoder(tmp.path(), torch::kCPU, torch::kDouble);
  EXPECT_LE(MaxAbsDiff(as_double->forward(x.to(torch::kDouble)), source->forward(x)), 1e-4);
}

TEST(WhisperEncoderTest, LoadsShardedCheckpoint) {
  TempDir tmp;
  WhisperEncoder source = TinyModel(13);
  std::vector<std::pair<std::string, torch::Tensor>> shards[2];
  json weight_map;
  size_t i = 0;
  for (const auto& named : source->named_parameters()) {
    const size_t shard = i++ % 2;
    shards[shard].emplace_back(named.key(), named.value().detach().clone());
    weight_map[named.key()] = "model-0000" + std::to_string(shard + 1) + "-of-00002.safetensors";
  }
  shards[1].emplace_back("model.decoder.layer_norm.weight", torch::ones({32}));
  weight_map["model.decoder.layer_norm.weight"] = "model-00002-of-00002.safetensors";
  for (int shard = 0; shard < 2; ++shard)
    safetensors::Save(tmp.File("model-0000" + std::to_string(shard + 1) + "-of-00002.safetensors"),
                      shards[shard]);
  std::ofstream(tmp.File("model.safetensors.index.json"))
      << json{{"metadata", json::object()}, {"weight_map", weight_map}}.dump();
  std::ofstream(tmp.File("config.json")) << TinyJson().dump();
  WhisperEncoder loaded = LoadWhisperEncoder(tmp.path());
  torch::NoGradGuard no_grad;
  const torch::Tensor x = torch::randn({2, 17, 16});
  EXPECT_EQ(MaxAbsDiff(loaded->forward(x), source->forward(x)), 0.0);
}

TEST(WhisperEncoderTest, BadCheckpointsNameTheTensor) {
  WhisperEncoder source = TinyModel(11);
  {
    TempDir tmp;
    WriteCheckpoint(source, tmp.path(), [](auto& tensors) {
      tensors.erase(std::remove_if(tensors.begin(), tensors.end(),
                                   [](const auto& t) {
                                     return t.first == "model.encoder.layers.1.fc2.weight";
                                   }),
                    tensors.end());
    });
    EXPECT_SLM_ERROR(LoadWhisperEncoder(tmp.path()),
                     "missing Whisper encoder tensor 'model.encoder.layers.1.fc2.weight'");
  }
  {
    TempDir tmp;
    WriteCheckpoint(source, tmp.path(), [](auto& tensors) {
      for (auto& t : tensors)
        if (t.first == "model.encoder.conv1.weight") t.second = torch::zeros({32, 16, 5});
    });
    EXPECT_SLM_ERROR(
        LoadWhisperEncoder(tmp.path()),
        "tensor 'model.encoder.conv1.weight' has shape [32, 16, 5], expected [32, 16, 3]");
  }
  {
    TempDir tmp;
    EXPECT_SLM_ERROR(LoadWhisperEncoder(tmp.path()), "has no config.json");
    std::ofstream(tmp.File("config.json")) << TinyJson().dump();
    EXPECT_SLM_ERROR(LoadWhisperEncoder(tmp.path()), "no model.safetensors");
  }
  // A failed load leaves the model as it was.
  TempDir tmp;
  WriteCheckpoint(source, tmp.path(), [](auto& tensors) {
    for (auto& t : tensors)
      if (t.first == "model.encoder.layer_norm.bias") t.second = torch::zeros({31});
  });
  WhisperEncoder target = TinyModel(12);
  const torch::Tensor before = target->parameters()[0].clone();
  EXPECT_SLM_ERROR(target->LoadWeights(tmp.path()), "layer_norm.bias");
  EXPECT_TRUE(torch::equal(before, target->parameters()[0]));
}

TEST(WhisperEncoderTest, FreezeStopsParameterGradsButNotInputGrads) {
  WhisperEncoder model = TinyModel();
  model->train();
  EXPECT_FALSE(model->IsFrozen());
  model->Freeze();
  EXPECT_TRUE(model->IsFrozen());
  for (const auto& p : model->parameters()) EXPECT_FALSE(p.requires_grad());
  const torch::Tensor x = torch::randn({1, 12, 16}, torch::requires_grad());
  model->forward(x).sum().backward();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_GT(x.grad().abs().sum().item<double>(), 0.0);
  for (const auto& p : model->parameters()) EXPECT_FALSE(p.grad().defined());
  EXPECT_GT(model->ParameterCount(), 0);
}

TEST(WhisperEncoderTest, FreshModelHasSinusoidalPositions) {
  WhisperEncoder model = TinyModel();
  for (const auto& named : model->named_parameters()) {
    if (named.key() == "model.encoder.embed_positions.weight") {
      EXPECT_FALSE(named.value().requires_grad());
      EXPECT_TRUE(torch::equal(named.value(), WhisperSinusoids(64, 32)));
    }
  }
  const torch::Tensor table = WhisperSinusoids(3, 8);
  // Row 0: sin(0) = 0 for the first half, cos(0) = 1 for the second.
  EXPECT_TRUE(torch::equal(table[0], torch::tensor({0.f, 0.f, 0.f, 0.f, 1.f, 1.f, 1.f, 1.f})));
  EXPECT_NEAR(table[2][0].item<float>(), std::sin(2.0), 1e-6);
}

}  // namespace
}  // namespace slm::audio

namespace slm::audio {
namespace {

TEST(WhisperEncoderTest, SaveWeightsRoundTripsWithExtraTensorsAndFeatureOptions) {
  testing::TempDir tmp;
  WhisperEncoder model = TinyModel(3);
  model->SaveWeights(tmp.File("enc"), {{"ctc_head.weight", torch::ones({29, 32})}});
  WhisperEncoder loaded = LoadWhisperEncoder(tmp.File("enc"));
  EXPECT_EQ(loaded->Config().d_model, 32);
  const auto features = torch::randn({1, 21, 16});
  EXPECT_TRUE(torch::equal(loaded->forward(features), model->forward(features)));
  safetensors::Reader reader(tmp.File("enc") + "/model.safetensors");
  EXPECT_TRUE(reader.Has("model.encoder.conv1.weight"));
  EXPECT_TRUE(reader.Has("ctc_head.weight"));
  EXPECT_SLM_ERROR(model->SaveWeights(tmp.File("x"), {{"model.encoder.conv1.weight", torch::ones({1})}}),
                   "would collide");

  // Feature options: absent file = Whisper's; written options read back; bad values named.
  EXPECT_EQ(LoadEncoderFeatureOptions(tmp.File("enc")).normalization, MelNormalization::kWhisper);
  LogMelOptions mel;
  mel.normalization = MelNormalization::kFixedFloor;
  mel.floor_log10 = -6.5;
  SaveEncoderFeatureOptions(tmp.File("enc"), mel);
  const LogMelOptions back = LoadEncoderFeatureOptions(tmp.File("enc"));
  EXPECT_EQ(back.normalization, MelNormalization::kFixedFloor);
  EXPECT_DOUBLE_EQ(back.floor_log10, -6.5);
  EXPECT_EQ(back.n_mels, 80);
  std::ofstream(tmp.File("enc") + "/preprocessor_config.json") << R"({"slm_normalization": "loud"})";
  EXPECT_SLM_ERROR(LoadEncoderFeatureOptions(tmp.File("enc")), "\"slm_normalization\" must be");
  std::ofstream(tmp.File("enc") + "/preprocessor_config.json") << R"({"feature_size": 64})";
  EXPECT_SLM_ERROR(LoadEncoderFeatureOptions(tmp.File("enc")), "\"feature_size\" must be 80 or 128");
}

}  // namespace
}  // namespace slm::audio
