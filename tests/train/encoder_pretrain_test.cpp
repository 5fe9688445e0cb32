// The embedded default encoders' pretraining: config validation (fast) and a miniature end-to-end
// run of each (Slow: synthesis / image generation + a few steps), checking the written model
// directories load back and the reported metrics are coherent.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "audio/whisper_encoder.h"
#include "core/fs.h"
#include "core/safetensors.h"
#include "tests/test_util.h"
#include "train/image_encoder_pretrain.h"
#include "train/speech_encoder_pretrain.h"
#include "vision/clip_vision.h"

namespace slm::train {
namespace {

TEST(SpeechEncoderPretrainConfig, ValidatesKeysAndLimits) {
  auto doc = config::Document::LoadString(
      "model: {d_model: 30, encoder_attention_heads: 4}\n", "s.yaml");
  SpeechEncoderPretrainConfig c;
  EXPECT_SLM_ERROR(c.Load(doc.Root()), "must divide d_model (30)");
  auto longer = config::Document::LoadString(
      "data: {max_seconds: 20}\nmodel: {max_source_positions: 500}\n", "l.yaml");
  SpeechEncoderPretrainConfig l;
  EXPECT_SLM_ERROR(l.Load(longer.Root()), "data.max_seconds");
  auto typo = config::Document::LoadString("train: {stepz: 3}\n", "t.yaml");
  SpeechEncoderPretrainConfig t;
  t.Load(typo.Root());
  EXPECT_SLM_ERROR(typo.CheckAllConsumed(), "unknown key 'train.stepz' (did you mean 'train.steps'?)");
  // The sample config is valid as committed.
  auto sample = config::Document::LoadFile(std::string(SLM_SOURCE_DIR) +
                                           "/samples/configs/speech_encoder_tiny.yaml");
  SpeechEncoderPretrainConfig s;
  s.Load(sample.Root());
  sample.CheckAllConsumed();
  EXPECT_EQ(s.features.normalization, audio::MelNormalization::kFixedFloor);
  // The round-trip ASR's config: the same recipe with the corruptions on.
  auto robust = config::Document::LoadFile(std::string(SLM_SOURCE_DIR) + "/samples/configs/speech_encoder_robust.yaml");
  SpeechEncoderPretrainConfig r;
  r.Load(robust.Root());
  robust.CheckAllConsumed();
  EXPECT_DOUBLE_EQ(r.train.blur_prob, 0.5);
  EXPECT_DOUBLE_EQ(r.train.noise_std, 0.15);
  // The streaming encoder's config: block-causal with a bounded left context.
  auto stream = config::Document::LoadFile(std::string(SLM_SOURCE_DIR) +
                                           "/samples/configs/speech_encoder_stream.yaml");
  SpeechEncoderPretrainConfig st;
  st.Load(stream.Root());
  stream.CheckAllConsumed();
  EXPECT_EQ(st.model.attention_chunk_frames, 8);
  EXPECT_EQ(st.model.attention_left_chunks, 12);
  auto unchunked = config::Document::LoadString("model: {attention_left_chunks: 4}\n", "u.yaml");
  SpeechEncoderPretrainConfig u;
  EXPECT_SLM_ERROR(u.Load(unchunked.Root()), "model.attention_left_chunks");
  auto bad = config::Document::LoadString("train: {blur_prob: 1.5}\n", "b.yaml");
  SpeechEncoderPretrainConfig b;
  EXPECT_SLM_ERROR(b.Load(bad.Root()), "blur_prob");
}

TEST(ImageEncoderPretrainConfig, ValidatesKeys) {
  auto doc = config::Document::LoadString("model: {image_size: 60, patch_size: 8}\n", "i.yaml");
  ImageEncoderPretrainConfig c;
  EXPECT_SLM_ERROR(c.Load(doc.Root()), "must divide image_size (60)");
  auto sample = config::Document::LoadFile(std::string(SLM_SOURCE_DIR) +
                                           "/samples/configs/image_encoder_tiny.yaml");
  ImageEncoderPretrainConfig s;
  s.Load(sample.Root());
  sample.CheckAllConsumed();
  EXPECT_EQ(s.model.image_size, 64);
  EXPECT_EQ(s.data.source, "files");
  auto source = config::Document::LoadString("data: {source: disk}\n", "i.yaml");
  ImageEncoderPretrainConfig bad_source;
  EXPECT_SLM_ERROR(bad_source.Load(source.Root()), "source");
  auto device = config::Document::LoadString("device: tpu\n", "i.yaml");
  ImageEncoderPretrainConfig bad_device;
  EXPECT_SLM_ERROR(bad_device.Load(device.Root()), "device");
}

TEST(EncoderPretrainSlow, SpeechEncoderMiniatureRun) {
  testing::TempDir tmp;
  const std::string sentences = tmp.File("corpus/sentences");
  std::filesystem::create_directories(sentences);
  fs::AtomicWriteString(sentences + "/train.txt",
                        "The cat sat on the mat.\nA dog ran home.\nRed circles are round.\n"
                        "She reads a book.\nWe walk to school.\nBirds can fly high.\n"
                        "The sun is warm.\nFish swim in water.\n");
  fs::AtomicWriteString(sentences + "/valid.txt", "A bird sings.\nThe tree is tall.\n");
  fs::AtomicWriteString(sentences + "/test.txt", "Snow is cold.\nHe drinks tea.\n");
  auto doc = config::Document::LoadString(
      "data: {corpus_dir: " + tmp.File("corpus") + ", speech_dir: " + tmp.File("speech") +
          ", train_utterances: 8, valid_utterances: 2, test_utterances: 2}\n"
          "model: {d_model: 32, encoder_layers: 1, encoder_attention_heads: 2, encoder_ffn_dim: 64, "
          "attention_chunk_frames: 4, attention_left_chunks: 2}\n"
          "train: {steps: 6, batch_size: 4, warmup_steps: 2, log_every: 2}\n"
          "eval: {every: 3}\nthreads: 1\noutput_dir: " + tmp.File("run") + "\n",
      "mini.yaml");
  SpeechEncoderPretrainConfig c;
  c.Load(doc.Root());
  doc.CheckAllConsumed();
  const SpeechEncoderPretrainResult r = PretrainSpeechEncoder(c, doc.EffectiveYaml(), true);
  EXPECT_EQ(r.training.steps, 6);
  EXPECT_EQ(r.train_utterances, 8);
  EXPECT_EQ(r.test_utterances, 2);
  EXPECT_GE(r.test_cer, 0.0);
  EXPECT_GT(r.audio_seconds_per_second, 0.0);
  // The directory is a loadable encoder with its features and CTC head.
  audio::WhisperEncoder encoder = audio::LoadWhisperEncoder(tmp.File("run"));
  EXPECT_EQ(encoder->Config().d_model, 32);
  EXPECT_EQ(encoder->Config().attention_chunk_frames, 4);  // trained block-causal, saved as such
  EXPECT_EQ(encoder->Config().attention_left_chunks, 2);
  EXPECT_EQ(audio::LoadEncoderFeatureOptions(tmp.File("run")).normalization,
            audio::MelNormalization::kFixedFloor);
  safetensors::Reader weights(tmp.File("run") + "/model.safetensors");
  EXPECT_EQ(weights.Info("ctc_head.weight").shape, (std::vector<int64_t>{29, 32}));
  const auto result = fs::ReadJson(tmp.File("run") + "/result.json");
  EXPECT_EQ(result["steps"], 6);
  EXPECT_TRUE(std::filesystem::exists(tmp.File("run") + "/samples.txt"));
  EXPECT_TRUE(std::filesystem::exists(tmp.File("speech") + "/valid/manifest.jsonl"));

  // Continued from that directory with more training speech (the valid split's manifest stands in
  // for spoken questions) and leading frames cropped: shape and features come from the checkpoint,
  // and the extra utterances are trained on.
  auto more = config::Document::LoadString(
      "init_from: " + tmp.File("run") + "\ndata: {corpus_dir: " + tmp.File("corpus") + ", speech_dir: " +
          tmp.File("speech") + ", train_utterances: 8, valid_utterances: 2, test_utterances: 2, "
          "extra_train_manifests: [" + tmp.File("speech") + "/valid/manifest.jsonl]}\n"
          "train: {steps: 3, batch_size: 4, warmup_steps: 1, lead_crop_frames: 10}\nthreads: 1\noutput_dir: " +
          tmp.File("more") + "\n",
      "more.yaml");
  SpeechEncoderPretrainConfig m;
  m.Load(more.Root());
  more.CheckAllConsumed();
  EXPECT_EQ(m.model.d_model, 32);
  EXPECT_EQ(m.model.attention_chunk_frames, 4);
  const SpeechEncoderPretrainResult continued = PretrainSpeechEncoder(m, more.EffectiveYaml(), true);
  EXPECT_EQ(continued.train_utterances, 10);
  EXPECT_EQ(audio::LoadWhisperEncoder(tmp.File("more"))->Config().attention_left_chunks, 2);
  auto shaped = config::Document::LoadString("init_from: " + tmp.File("run") + "\nmodel: {d_model: 64}\n", "s.yaml");
  SpeechEncoderPretrainConfig bad;
  EXPECT_SLM_ERROR(bad.Load(shaped.Root()), "cannot be given with init_from");
  auto missing = config::Document::LoadString("init_from: " + tmp.File("nothing") + "\n", "s.yaml");
  SpeechEncoderPretrainConfig none;
  EXPECT_SLM_ERROR(none.Load(missing.Root()), "is not a speech encoder directory");
}

TEST(EncoderPretrainSlow, ImageEncoderMiniatureRun) {
  testing::TempDir tmp;
  // A miniature run reading `source` scenes, its shapes and its model under tmp/<name>.
  auto run = [&](const std::string& source, const std::string& name) {
    auto doc = config::Document::LoadString(
        "data: {source: " + source + ", shapes_dir: " + tmp.File(name + "_shapes") + ", count: 120}\n"
            "text_backbone: " + std::string(SLM_SOURCE_DIR) + "/samples/models/backbone_tiny\n"
            "model: {hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, "
            "num_attention_heads: 2, image_size: 64, patch_size: 16}\n"
            "projection_dim: 16\ntrain: {steps: 5, batch_size: 16, warmup_steps: 1}\n"
            "eval: {every: 3}\nthreads: 1\noutput_dir: " + tmp.File(name) + "\n",
        name + ".yaml");
    ImageEncoderPretrainConfig c;
    c.Load(doc.Root());
    doc.CheckAllConsumed();
    return PretrainImageEncoder(c, doc.EffectiveYaml(), true);
  };
  const ImageEncoderPretrainResult r = run("files", "run");
  EXPECT_EQ(r.training.steps, 5);
  EXPECT_EQ(r.valid.images, 12);
  EXPECT_GT(r.valid.chance_top1, 0.0);
  EXPECT_LE(r.valid.image_to_text_top1, r.valid.image_to_text_top5);
  vision::ClipVisionModel tower = vision::LoadClipVision(tmp.File("run"));
  EXPECT_EQ(tower->Config().patch_size, 16);
  safetensors::Reader weights(tmp.File("run") + "/model.safetensors");
  EXPECT_EQ(weights.Info("text_projection.weight").shape, (std::vector<int64_t>{16, 512}));
  EXPECT_TRUE(std::filesystem::exists(tmp.File("run") + "/preprocessor_config.json"));

  // The same scenes drawn in memory instead of read from the PNGs: the same pixels, so on the CPU
  // with a fixed seed the same training, bit for bit.
  const ImageEncoderPretrainResult rr = run("render", "run_render");
  EXPECT_FALSE(std::filesystem::exists(tmp.File("run_render_shapes")));
  EXPECT_EQ(rr.train_images, r.train_images);
  EXPECT_EQ(rr.valid.images, r.valid.images);
  EXPECT_EQ(rr.training.final_loss, r.training.final_loss);
  EXPECT_EQ(rr.valid.image_to_text_top5, r.valid.image_to_text_top5);
  EXPECT_TRUE(fs::ReadFile(tmp.File("run_render") + "/model.safetensors") ==
              fs::ReadFile(tmp.File("run") + "/model.safetensors"))
      << "the rendered run's weights differ from the file run's";
}

}  // namespace
}  // namespace slm::train
