#include "train/image_encoder_pretrain.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <opencv2/core/utility.hpp>
#include <opencv2/imgproc.hpp>

#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include "core/device.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/manifest.h"
#include "datagen/data_prep.h"
#include "datagen/shapes.h"
#include "text/llama.h"
#include "text/tokenizer.h"
#include "vision/image.h"

namespace slm::train {
namespace {

namespace stdfs = std::filesystem;
using config::InRange;

struct ImageSet {
  torch::Tensor pixels;               // [N, 3, S, S] float32
  std::vector<std::string> captions;  // per image
  std::vector<std::string> scenes;    // per image: what the caption asserts, order-independent
  torch::Tensor text_features;        // [N, F] frozen backbone features of the captions
};

// "a red circle above a blue square" and "a blue square below a red circle" describe the same
// scene; retrieval counts either as a hit. From the manifest's shapes attributes when present
// (the caption text otherwise).
std::string SceneKey(const manifest::Entry& e) {
  const nlohmann::json* attributes = e.extra.contains("attributes") ? &e.extra["attributes"] : nullptr;
  if (attributes == nullptr || !attributes->contains("shapes") || !attributes->contains("relation"))
    return e.text;
  const auto& shapes = (*attributes)["shapes"];
  if (!shapes.is_array() || shapes.size() != 2) return e.text;
  auto describe = [&](size_t i) {
    return shapes[i].value("color", std::string()) + " " + shapes[i].value("shape", std::string());
  };
  const std::string relation = (*attributes)["relation"].get<std::string>();
  if (relation == "below") return describe(1) + " above " + describe(0);
  if (relation == "right of") return describe(1) + " left of " + describe(0);
  return describe(0) + " " + relation + " " + describe(1);
}

// Images [begin, end) of the shapes dataset GenerateShapes would write for (seed, size), drawn in
// memory: the same scenes and pixels (PNG is lossless), no files.
ImageSet RenderImages(uint64_t seed, int size, int64_t begin, int64_t end,
                      const vision::ClipPreprocessOptions& pre) {
  ImageSet set;
  const int64_t n = end - begin;
  std::vector<torch::Tensor> pixels(static_cast<size_t>(n));
  std::vector<manifest::Entry> entries(static_cast<size_t>(n));
  // The workers are LibTorch's; OpenCV's own pool inside each would multiply the threads.
  const int opencv_threads = cv::getNumThreads();
  cv::setNumThreads(1);
  at::parallel_for(0, n, 64, [&](int64_t from, int64_t to) {
    for (int64_t i = from; i < to; ++i) {
      const datagen::ShapeScene scene = datagen::SampleScene(datagen::SceneSeed(seed, begin + i), size);
      cv::Mat rgb;
      cv::cvtColor(datagen::RenderScene(scene, size), rgb, cv::COLOR_BGR2RGB);
      pixels[i] = vision::ClipPreprocess(rgb, pre);
      entries[i] = datagen::CaptionEntry(scene, begin + i);
    }
  });
  cv::setNumThreads(opencv_threads);
  for (const manifest::Entry& e : entries) {
    set.captions.push_back(e.text);
    set.scenes.push_back(SceneKey(e));
  }
  set.pixels = torch::stack(pixels);
  return set;
}

ImageSet LoadImages(const std::string& manifest_path, const vision::ClipPreprocessOptions& pre) {
  const manifest::Manifest m = manifest::Read(manifest_path);
  Check(!m.entries.empty(), manifest_path, ": no images");
  ImageSet set;
  std::vector<torch::Tensor> pixels;
  for (const manifest::Entry& e : m.entries) {
    Check(!e.image.empty() && !e.text.empty(), manifest_path, ": entry '", e.id,
          "' needs \"image\" and \"text\"");
    // LoadImage returns RGB already (converting again swapped red and blue until 2026-11-27).
    pixels.push_back(vision::ClipPreprocess(vision::LoadImage(fs::Resolve(m.base_dir, e.image)), pre));
    set.captions.push_back(e.text);
    set.scenes.push_back(SceneKey(e));
  }
  set.pixels = torch::stack(pixels);
  return set;
}

// A caption as the frozen backbone reads it: its last hidden states over the caption's tokens
// (BOS included) pooled by `pooling`: "mean", "last" (the causal LM's summary of the whole caption,
// which knows which colour goes with which shape) or "mean_last" (both, concatenated).
torch::Tensor CaptionFeatures(text::LlamaModel& lm, const text::Tokenizer& tokenizer,
                              const std::vector<std::string>& captions, const std::string& pooling,
                              const torch::Device& device) {
  torch::NoGradGuard no_grad;
  std::map<std::string, torch::Tensor> cache;  // captions repeat; compute each once
  std::vector<torch::Tensor> rows;
  for (const std::string& caption : captions) {
    auto found = cache.find(caption);
    if (found == cache.end()) {
      text::LlamaInput input;
      input.input_ids =
          torch::tensor(tokenizer.Encode(caption, true, false), torch::kLong).unsqueeze(0).to(device);
      input.logits_to_keep = 1;
      const torch::Tensor hidden = lm->forward(input).last_hidden_state[0].to(torch::kFloat);  // [T, H]
      const torch::Tensor mean = hidden.mean(0), last = hidden[-1];
      const torch::Tensor pooled = pooling == "mean"   ? mean
                                   : pooling == "last" ? last
                                                       : torch::cat({mean, last});
      found = cache.emplace(caption, pooled).first;
    }
    rows.push_back(found->second);
  }
  return torch::stack(rows);
}

struct Towers {
  vision::ClipVisionModel tower{nullptr};
  torch::nn::Linear visual_projection{nullptr}, text_projection{nullptr};
  torch::Tensor logit_scale;

  torch::Tensor ImageEmbeds(const torch::Tensor& pixels) {
    return torch::nn::functional::normalize(
        visual_projection(tower->forward(pixels).pooler_output),
        torch::nn::functional::NormalizeFuncOptions().dim(-1));
  }
  torch::Tensor TextEmbeds(const torch::Tensor& features) {
    return torch::nn::functional::normalize(
        text_projection(features), torch::nn::functional::NormalizeFuncOptions().dim(-1));
  }
};

constexpr int64_t kPoolSize = 64;

RetrievalScores Evaluate(Towers& t, const ImageSet& set, int64_t batch_size) {
  torch::NoGradGuard no_grad;
  t.tower->eval();
  std::vector<torch::Tensor> image_parts;
  for (int64_t start = 0; start < set.pixels.size(0); start += batch_size)
    image_parts.push_back(t.ImageEmbeds(set.pixels.slice(0, start, start + batch_size)));
  const torch::Tensor images = torch::cat(image_parts);  // [N, D]
  // Distinct captions, each with the feature of its first occurrence.
  std::vector<std::string> distinct;
  std::map<std::string, int64_t> index;
  std::vector<int64_t> first;
  for (size_t i = 0; i < set.captions.size(); ++i)
    if (index.emplace(set.captions[i], static_cast<int64_t>(distinct.size())).second) {
      distinct.push_back(set.captions[i]);
      first.push_back(static_cast<int64_t>(i));
    }
  const torch::Tensor texts =
      t.TextEmbeds(set.text_features.index_select(0, torch::tensor(first, torch::kLong).to(set.text_features.device())));
  const torch::Tensor similarity = images.matmul(texts.t());  // [N, C]
  const int64_t k = std::min<int64_t>(5, similarity.size(1));
  const torch::Tensor top = std::get<1>(similarity.topk(k, 1)).cpu();
  const torch::Tensor best_image = similarity.argmax(0).cpu();  // [C]
  RetrievalScores s;
  s.images = images.size(0);
  s.distinct_captions = static_cast<int64_t>(distinct.size());
  int64_t top1 = 0, top5 = 0;
  // A retrieved caption is right when it describes the image's scene (first occurrence's scene).
  auto scene_of_caption = [&](int64_t c) { return set.scenes[first[c]]; };
  for (int64_t i = 0; i < s.images; ++i) {
    if (scene_of_caption(top[i][0].item<int64_t>()) == set.scenes[i]) ++top1;
    for (int64_t j = 0; j < k; ++j)
      if (scene_of_caption(top[i][j].item<int64_t>()) == set.scenes[i]) {
        ++top5;
        break;
      }
  }
  int64_t text_hits = 0;
  for (int64_t c = 0; c < s.distinct_captions; ++c)
    if (set.scenes[best_image[c].item<int64_t>()] == scene_of_caption(c)) ++text_hits;
  // Chance: the expected share of captions that describe a given image's scene.
  std::map<std::string, int64_t> per_scene;
  for (int64_t c = 0; c < s.distinct_captions; ++c) ++per_scene[scene_of_caption(c)];
  double chance = 0;
  for (int64_t i = 0; i < s.images; ++i) chance += double(per_scene[set.scenes[i]]) / s.distinct_captions;
  s.chance_top1 = chance / s.images;
  // CLIP-style: image->text top-1 within consecutive pools of 64 images and their own captions.
  int64_t pool_hits = 0, pooled = 0;
  for (int64_t start = 0; start + 1 < s.images; start += kPoolSize) {
    const int64_t end = std::min(s.images, start + kPoolSize);
    const torch::Tensor pool_texts = t.TextEmbeds(set.text_features.slice(0, start, end));
    const torch::Tensor best = images.slice(0, start, end).matmul(pool_texts.t()).argmax(1).cpu();
    for (int64_t i = 0; i < end - start; ++i)
      pool_hits += set.scenes[start + best[i].item<int64_t>()] == set.scenes[start + i] ? 1 : 0;
    pooled += end - start;
  }
  s.pool_top1 = pooled > 0 ? double(pool_hits) / pooled : 0.0;
  s.image_to_text_top1 = double(top1) / s.images;
  s.image_to_text_top5 = double(top5) / s.images;
  s.text_to_image_top1 = double(text_hits) / s.distinct_captions;
  t.tower->train();
  return s;
}

}  // namespace

ImageEncoderPretrainConfig::ImageEncoderPretrainConfig() {
  output_dir = "runs/image_encoder_tiny";
  train.steps = 1000;
  train.batch_size = 64;
  train.lr = 1e-3;
  train.warmup_steps = 100;
  train.min_lr_ratio = 0.05;
  train.weight_decay = 0.1;
  train.beta2 = 0.98;
  model.hidden_size = 192;
  model.intermediate_size = 768;
  model.num_hidden_layers = 4;
  model.num_attention_heads = 4;
  model.image_size = 64;
  model.patch_size = 8;
}

void ImageEncoderPretrainConfig::Load(config::Node node) {
  auto d = node.Child("data");
  d.Read("source", data.source, config::OneOf<std::string>({"files", "render"}))
      .Read("shapes_dir", data.shapes_dir)
      .Read("count", data.count, InRange<int64_t>(20, int64_t{1} << 30))
      .Read("size", data.size, InRange(32, 512));
  node.Read("text_backbone", text_backbone)
      .Read("text_pooling", text_pooling, config::OneOf<std::string>({"mean", "last", "mean_last"}));
  auto m = node.Child("model");
  m.Read("hidden_size", model.hidden_size, InRange<int64_t>(4, 65536))
      .Read("intermediate_size", model.intermediate_size, InRange<int64_t>(1, 262144))
      .Read("num_hidden_layers", model.num_hidden_layers, InRange<int64_t>(1, 256))
      .Read("num_attention_heads", model.num_attention_heads, InRange<int64_t>(1, 512))
      .Read("image_size", model.image_size, InRange<int64_t>(8, 4096))
      .Read("patch_size", model.patch_size, InRange<int64_t>(1, 4096))
      .Read("hidden_act", model.hidden_act,
            config::OneOf<std::string>({"quick_gelu", "gelu", "gelu_new", "gelu_pytorch_tanh"}));
  if (model.hidden_size % model.num_attention_heads != 0)
    m.Fail("num_attention_heads", Str("must divide hidden_size (", model.hidden_size, ")"));
  if (model.image_size % model.patch_size != 0)
    m.Fail("patch_size", Str("must divide image_size (", model.image_size, ")"));
  node.Read("projection_dim", projection_dim, InRange<int64_t>(1, 65536));
  auto t = node.Child("train");
  train.Load(t);
  if (train.batch_size < 2) t.Fail("batch_size", "must be >= 2 (contrastive pairs need negatives)");
  auto e = node.Child("eval");
  e.Read("every", eval.every, InRange<int64_t>(1, int64_t{1} << 40))
      .Read("batch_size", eval.batch_size, InRange<int64_t>(1, 1 << 16));
  LoadJobKeys(node);
}

nlohmann::json RetrievalScores::ToJson() const {
  return {{"image_to_text_top1", image_to_text_top1}, {"image_to_text_top5", image_to_text_top5},
          {"text_to_image_top1", text_to_image_top1}, {"chance_top1", chance_top1},
          {"pool64_top1", pool_top1},
          {"images", images}, {"distinct_captions", distinct_captions}};
}

nlohmann::json ImageEncoderPretrainResult::ToJson() const {
  nlohmann::json j = JobResult::ToJson();
  j.update({{"train_images", train_images}, {"images_per_second", images_per_second}, {"valid", valid.ToJson()}});
  return j;
}

ImageEncoderPretrainResult PretrainImageEncoder(const ImageEncoderPretrainConfig& c,
                                                const std::string& effective_config_yaml,
                                                bool quiet) {
  const Job job(c.Options(effective_config_yaml));

  // 1. Data.
  vision::ClipPreprocessOptions pre;
  pre.shortest_edge = c.model.image_size;
  pre.crop_height = pre.crop_width = c.model.image_size;
  ImageSet train, valid;
  if (c.data.source == "render") {
    const int64_t valid_begin = c.data.count - datagen::ValidCount(c.data.count, datagen::ShapesOptions{}.valid_fraction);
    log::Info(Str("drawing ", c.data.count, " shapes images in memory"));
    train = RenderImages(c.seed, c.data.size, 0, valid_begin, pre);
    valid = RenderImages(c.seed, c.data.size, valid_begin, c.data.count, pre);
  } else {
    datagen::EnsureShapes(c.data.shapes_dir, c.data.count, c.seed, c.data.size, c.threads, !quiet);
    train = LoadImages(c.data.shapes_dir + "/caption_train.jsonl", pre);
    valid = LoadImages(c.data.shapes_dir + "/caption_valid.jsonl", pre);
  }
  Check(train.pixels.size(0) >= c.train.batch_size, "only ", train.pixels.size(0),
        " training images for train.batch_size ", c.train.batch_size);

  // 2. The frozen text side.
  const text::Tokenizer tokenizer = text::Tokenizer::Load(c.text_backbone);
  text::LlamaModel lm = text::LoadLlama(c.text_backbone);
  lm->Freeze();
  const torch::Device device = ParseDevice(c.device);
  lm->to(device);  // thousands of distinct captions: one small forward each
  train.text_features = CaptionFeatures(lm, tokenizer, train.captions, c.text_pooling, device);
  valid.text_features = CaptionFeatures(lm, tokenizer, valid.captions, c.text_pooling, device);
  const int64_t lm_hidden = train.text_features.size(1);
  log::Info(Str("images and caption features ready after ", job.Seconds(), " s"));
  for (ImageSet* set : {&train, &valid}) {
    set->pixels = set->pixels.to(device);
    set->text_features = set->text_features.to(device);
  }

  // 3. Towers.
  Towers t;
  t.tower = vision::ClipVisionModel(c.model);
  t.visual_projection = torch::nn::Linear(
      torch::nn::LinearOptions(c.model.hidden_size, c.projection_dim).bias(false));
  t.text_projection =
      torch::nn::Linear(torch::nn::LinearOptions(lm_hidden, c.projection_dim).bias(false));
  t.tower->to(device);
  t.visual_projection->to(device);
  t.text_projection->to(device);
  t.logit_scale = torch::full({}, std::log(1.0 / 0.07), torch::TensorOptions().device(device))
                      .set_requires_grad(true);
  t.tower->train();
  std::vector<torch::Tensor> trainable = t.tower->parameters();
  for (const auto& p : t.visual_projection->parameters()) trainable.push_back(p);
  for (const auto& p : t.text_projection->parameters()) trainable.push_back(p);
  trainable.push_back(t.logit_scale);
  const auto optimizer = MakeAdamW(trainable, c.train);

  ImageEncoderPretrainResult result;
  result.model_dir = c.output_dir;
  result.train_images = train.pixels.size(0);
  for (const auto& p : trainable) result.parameters += p.numel();
  lm = nullptr;  // the text side is no longer needed: free it before training
  log::Info(Str("contrastive pretraining of a ", result.parameters, "-parameter image tower on ",
                result.train_images, " images, text side: frozen ", c.text_backbone));

  // 4. Train.
  const Precision precision(c.train.precision, c.device);
  torch::Generator generator = at::detail::createCPUGenerator(c.seed);
  torch::Tensor order = torch::randperm(train.pixels.size(0), generator);
  int64_t cursor = 0;
  LoopHooks hooks;
  hooks.next = [&](TrainingState&, int64_t) -> std::optional<MicroBatch> {
    if (cursor + c.train.batch_size > order.size(0)) {
      order = torch::randperm(train.pixels.size(0), generator);
      cursor = 0;
    }
    const torch::Tensor rows = order.slice(0, cursor, cursor + c.train.batch_size).to(device);
    cursor += c.train.batch_size;
    const AutocastGuard scope = precision.Scope();
    const torch::Tensor images = t.ImageEmbeds(train.pixels.index_select(0, rows));
    const torch::Tensor texts = t.TextEmbeds(train.text_features.index_select(0, rows));
    // CLIP clamps the temperature at 100 so the logits cannot blow up.
    const torch::Tensor logits = t.logit_scale.clamp_max(std::log(100.0)).exp() * images.matmul(texts.t());
    const torch::Tensor labels = torch::arange(logits.size(0), torch::TensorOptions(torch::kLong).device(device));
    return MicroBatch{0.5 * (torch::nn::functional::cross_entropy(logits, labels) +
                             torch::nn::functional::cross_entropy(logits.t(), labels)),
                      rows.size(0), rows.size(0)};
  };
  hooks.log_fields = [&](const TrainingState&, double) {
    return nlohmann::json{{"temperature", 1.0 / t.logit_scale.exp().item<double>()}};
  };
  hooks.evaluate = [&](const TrainingState& state) {
    const RetrievalScores v = Evaluate(t, valid, c.eval.batch_size);
    log::Info(Str("step ", state.step, ": valid image->text top-1 ", v.image_to_text_top1, " (chance ",
                  v.chance_top1, ")"));
    return nlohmann::json{{"valid", v.ToJson()}};
  };
  LoopSettings settings{"image encoder", "loss", c.eval.every};
  settings.divergence_hint = "lower train.lr";
  settings.quiet = quiet;
  TrainingState state;
  TrainingLoop loop(c.train, settings, trainable, *optimizer, std::move(hooks));
  const LoopResult run = loop.Run(state, &job);
  result.training = run;
  result.images_per_second = run.examples / std::max(1e-9, run.seconds);
  result.valid = Evaluate(t, valid, c.eval.batch_size);
  result.seconds = job.Seconds();

  // 5. The model directory (saved from the CPU, the same bytes wherever it trained).
  t.tower->to(torch::kCPU);
  t.visual_projection->to(torch::kCPU);
  t.text_projection->to(torch::kCPU);
  t.logit_scale = t.logit_scale.detach().cpu();
  t.tower->SaveWeights(c.output_dir, {{"visual_projection.weight", t.visual_projection->weight},
                                      {"text_projection.weight", t.text_projection->weight},
                                      {"logit_scale", t.logit_scale}});
  fs::AtomicWriteString(c.output_dir + "/preprocessor_config.json", pre.ToJson().dump(2) + "\n");
  job.Finish(result.ToJson());
  return result;
}

}  // namespace slm::train
