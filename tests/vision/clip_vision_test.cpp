#include "vision/clip_vision.h"

#include <gtest/gtest.h>

#include <fstream>

#include "core/error.h"
#include "core/safetensors.h"
#include "tests/test_util.h"

namespace slm::vision {
namespace {

using slm::testing::ErrorOf;
using slm::testing::TempDir;

ClipVisionConfig Tiny() {
  ClipVisionConfig c;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.image_size = 64;
  c.patch_size = 16;
  return c;
}

nlohmann::json TinyJson() {
  return nlohmann::json{{"model_type", "clip_vision_model"},
                        {"hidden_size", 32},
                        {"intermediate_size", 64},
                        {"num_hidden_layers", 3},
                        {"num_attention_heads", 4},
                        {"image_size", 64},
                        {"patch_size", 16}};
}

// Writes config.json and model.safetensors; tensor names get `prefix` instead of "vision_model.".
void Save(ClipVisionModel& model, const std::string& dir, const std::string& prefix,
          const std::vector<std::pair<std::string, torch::Tensor>>& extra = {},
          const std::string& drop = "") {
  std::vector<std::pair<std::string, torch::Tensor>> tensors = extra;
  for (const auto& named : model->named_parameters()) {
    const std::string name = prefix + named.key().substr(std::string("vision_model.").size());
    if (name != drop) tensors.emplace_back(name, named.value().detach());
  }
  safetensors::Save(dir + "/model.safetensors", tensors);
  std::ofstream(dir + "/config.json") << TinyJson().dump();
}

TEST(ClipVision, ShapesAndHfNames) {
  ClipVisionModel model(Tiny());
  const auto names = model->named_parameters().keys();
  for (const char* name :
       {"vision_model.embeddings.patch_embedding.weight", "vision_model.embeddings.class_embedding",
        "vision_model.embeddings.position_embedding.weight", "vision_model.pre_layrnorm.weight",
        "vision_model.encoder.layers.2.self_attn.q_proj.bias",
        "vision_model.encoder.layers.0.mlp.fc2.weight", "vision_model.post_layernorm.bias"})
    EXPECT_NE(std::find(names.begin(), names.end(), name), names.end()) << name;
  EXPECT_EQ(model->named_parameters().find("vision_model.embeddings.patch_embedding.bias"),
            nullptr);
  torch::NoGradGuard no_grad;
  const torch::Tensor pixels = torch::randn({2, 3, 64, 64});
  const ClipVisionOutput out = model->forward(pixels, true);
  EXPECT_EQ(out.last_hidden_state.sizes(), (std::vector<int64_t>{2, 17, 32}));
  EXPECT_EQ(out.pooler_output.sizes(), (std::vector<int64_t>{2, 32}));
  ASSERT_EQ(out.hidden_states.size(), 4u);
  EXPECT_TRUE(out.hidden_states.back().equal(out.last_hidden_state));
  EXPECT_TRUE(model->forward(pixels).hidden_states.empty());
}

TEST(ClipVision, LayerSelection) {
  ClipVisionModel model(Tiny());
  torch::NoGradGuard no_grad;
  const torch::Tensor pixels = torch::randn({2, 3, 64, 64});
  const ClipVisionOutput out = model->forward(pixels, true);
  const torch::Tensor features = model->Features(pixels);  // penultimate, patches only
  EXPECT_EQ(features.sizes(), (std::vector<int64_t>{2, 16, 32}));
  EXPECT_TRUE(torch::allclose(features, out.hidden_states[2].slice(1, 1)));
  ClipFeatureOptions o;
  o.layer = -1;
  o.keep_class_token = true;
  EXPECT_TRUE(torch::allclose(model->Features(pixels, o), out.last_hidden_state));
  o.layer = 0;
  EXPECT_TRUE(torch::allclose(model->Features(pixels, o), out.hidden_states[0]));
  o.layer = 4;
  EXPECT_SLM_ERROR(model->Features(pixels, o), "feature layer 4 is out of range for 3 layers");
  o.layer = -5;
  EXPECT_SLM_ERROR(model->Features(pixels, o), "feature layer -5 is out of range");
  EXPECT_SLM_ERROR(model->forward(torch::randn({1, 3, 32, 32})),
                   "pixel_values must be [B, 3, 64, 64], got [1, 3, 32, 32]");
}

TEST(ClipVision, FreezeKeepsGradientsToPixels) {
  ClipVisionModel model(Tiny());
  model->Freeze();
  EXPECT_TRUE(model->IsFrozen());
  torch::Tensor pixels = torch::randn({1, 3, 64, 64}, torch::requires_grad());
  model->Features(pixels).sum().backward();
  ASSERT_TRUE(pixels.grad().defined());
  EXPECT_GT(pixels.grad().abs().sum().item<double>(), 0);
  for (const auto& p : model->parameters()) EXPECT_FALSE(p.grad().defined());
}

TEST(ClipVision, ConfigFromJson) {
  const ClipVisionConfig c = ClipVisionConfig::FromJson(TinyJson(), "c.json");
  EXPECT_EQ(c.NumPatches(), 16);
  EXPECT_EQ(c.hidden_act, "quick_gelu");
  // CLIPConfig / LLaVA: the tower's config under "vision_config".
  const nlohmann::json clip = {
      {"model_type", "clip"}, {"vision_config", TinyJson()}, {"text_config", {{"hidden_size", 7}}}};
  EXPECT_EQ(ClipVisionConfig::FromJson(clip, "c.json").hidden_size, 32);
  nlohmann::json bad = TinyJson();
  bad["patch_size"] = 15;
  EXPECT_SLM_ERROR(ClipVisionConfig::FromJson(bad, "c.json"),
                   "c.json: image_size 64 is not divisible by patch_size 15");
  bad = TinyJson();
  bad["num_attention_heads"] = 5;
  EXPECT_SLM_ERROR(ClipVisionConfig::FromJson(bad, "c.json"),
                   "not divisible by num_attention_heads");
  bad = TinyJson();
  bad["hidden_act"] = "relu";
  EXPECT_SLM_ERROR(ClipVisionConfig::FromJson(bad, "c.json"), "unsupported hidden_act \"relu\"");
  EXPECT_SLM_ERROR(ClipVisionConfig::FromJson({{"model_type", "llama"}}, "c.json"),
                   "has no \"vision_config\"");
  bad = TinyJson();
  bad["hidden_size"] = "big";
  EXPECT_SLM_ERROR(ClipVisionConfig::FromJson(bad, "c.json"), "\"hidden_size\" must be an integer");
}

TEST(ClipVision, LoadsHfCheckpointsWithAnyPrefix) {
  ClipVisionModel source(Tiny());
  torch::NoGradGuard no_grad;
  const torch::Tensor pixels = torch::randn({1, 3, 64, 64});
  const torch::Tensor expected = source->forward(pixels).pooler_output;
  for (const std::string prefix : {"vision_model.", "", "model.vision_tower.vision_model."}) {
    TempDir dir;
    // A CLIPModel file also holds the text tower and projections: ignored.
    Save(source, dir.path(), prefix,
         {{"text_model.embeddings.token_embedding.weight", torch::zeros({5, 4})},
          {"visual_projection.weight", torch::zeros({8, 32})},
          {"logit_scale", torch::zeros({})},
          {prefix + "embeddings.position_ids", torch::arange(17).unsqueeze(0)}});
    ClipVisionModel loaded = LoadClipVision(dir.path());
    EXPECT_TRUE(torch::allclose(loaded->forward(pixels).pooler_output, expected)) << prefix;
    ClipVisionModel half = LoadClipVision(dir.path(), torch::kCPU, torch::kBFloat16);
    EXPECT_EQ(half->forward(pixels).pooler_output.scalar_type(), torch::kBFloat16);
  }
}

TEST(ClipVision, BadCheckpointsNameTheProblem) {
  ClipVisionModel source(Tiny());
  TempDir dir;
  EXPECT_SLM_ERROR(LoadClipVision(dir.File("nope")), "model directory '");
  EXPECT_SLM_ERROR(LoadClipVision(dir.path()), "has no config.json");

  Save(source, dir.path(), "vision_model.", {},
       "vision_model.encoder.layers.1.self_attn.k_proj.weight");
  std::string e = ErrorOf([&] { LoadClipVision(dir.path()); });
  EXPECT_NE(e.find("missing tensor 'vision_model.encoder.layers.1.self_attn.k_proj.weight'"),
            std::string::npos)
      << e;

  Save(source, dir.path(), "vision_model.",
       {{"vision_model.encoder.layers.3.mlp.fc1.weight", torch::zeros({64, 32})}});
  EXPECT_SLM_ERROR(LoadClipVision(dir.path()),
                   "unexpected tensor 'vision_model.encoder.layers.3.mlp.fc1.weight' (not a "
                   "parameter of this 3-layer CLIP vision tower)");

  // Wrong shape: a checkpoint of a 16-wide model read with the 32-wide config.
  ClipVisionConfig narrow = Tiny();
  narrow.hidden_size = 16;
  narrow.intermediate_size = 16;
  ClipVisionModel other(narrow);
  Save(other, dir.path(), "vision_model.");
  EXPECT_SLM_ERROR(
      LoadClipVision(dir.path()),
      "tensor 'vision_model.embeddings.class_embedding' has shape [16], expected [32]");

  safetensors::Save(dir.File("model.safetensors"), {{"text_model.x", torch::zeros({2})}});
  EXPECT_SLM_ERROR(LoadClipVision(dir.path()), "no CLIP vision tower in this checkpoint");

  std::remove(dir.File("model.safetensors").c_str());
  EXPECT_SLM_ERROR(LoadClipVision(dir.path()), "no model.safetensors or model.safetensors.index.json in '");
}

}  // namespace
}  // namespace slm::vision

namespace slm::vision {
namespace {

TEST(ClipVision, SaveWeightsRoundTripsWithProjections) {
  testing::TempDir tmp;
  torch::manual_seed(2);
  ClipVisionModel model(Tiny());
  model->eval();
  model->SaveWeights(tmp.File("tower"), {{"visual_projection.weight", torch::ones({8, 32})}});
  ClipVisionModel loaded = LoadClipVision(tmp.File("tower"));
  const auto pixels = torch::randn({2, 3, 64, 64});
  EXPECT_TRUE(torch::equal(loaded->Features(pixels), model->Features(pixels)));
  EXPECT_EQ(loaded->ParameterCount(), model->ParameterCount());
  EXPECT_EQ(ClipVisionConfig::FromJson(Tiny().ToJson(), "t").patch_size, 16);
  EXPECT_SLM_ERROR(model->SaveWeights(tmp.File("x"), {{"vision_model.a", torch::ones({1})}}),
                   "would collide");
}

}  // namespace
}  // namespace slm::vision
