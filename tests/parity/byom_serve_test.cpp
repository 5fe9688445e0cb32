// Bring your own model, end to end: a speech adapter (projector + LoRA) is trained for 3 steps on a
// Qwen2-family backbone that is not the project's own (make_family_references.py's qwen2_chat: a
// transformers-made Qwen2 replica with a Qwen2-style tokenizer.json trained by `tokenizers`, no
// BOS, and a ChatML chat template), loads again from its run directory, and is served by the
// engine (engine/engine.h, no transport): the engine's answer equals MultimodalLM::Generate of the
// reloaded adapter token for token, and every prompt went through the ChatML layout.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <cmath>
#include <filesystem>

#include "audio/audio_io.h"
#include "core/config.h"
#include "core/manifest.h"
#include "engine/engine.h"
#include "tests/parity/parity_util.h"
#include "tests/test_util.h"
#include "tests/train/tiny_encoder.h"
#include "train/trainer.h"

namespace slm {
namespace {

namespace stdfs = std::filesystem;

std::vector<float> Noise(int samples, uint64_t seed) {
  torch::manual_seed(seed);
  const torch::Tensor noise = torch::randn({samples}) * 0.1;
  return std::vector<float>(noise.data_ptr<float>(), noise.data_ptr<float>() + samples);
}

std::vector<int64_t> ServedTokens(engine::Engine& engine, engine::GenerateSettings settings) {
  std::shared_ptr<engine::Engine::GenerateJob> job;
  const engine::Status started = engine.StartGenerate(settings, &job);
  EXPECT_TRUE(started.ok()) << started.message;
  std::vector<int64_t> tokens;
  if (!started.ok()) return tokens;
  engine::GenerateEvent event;
  while (engine.Next(*job, &event))
    if (event.kind == engine::GenerateEvent::Kind::kToken) tokens.push_back(event.token.id);
  const engine::Status result = engine.Result(*job);
  EXPECT_TRUE(result.ok()) << result.message;
  engine.Close(*job);
  return tokens;
}

TEST(BringYourOwnModel, AdapterOnAQwen2ReplicaTrainsReloadsAndServes) {
  const std::string backbone = parity::ParityDir() + "/qwen2_chat";
  testing::TempDir dir;
  torch::manual_seed(4);
  const std::string encoder = train::testing_support::SaveTinySpeechEncoder(dir.File("encoder"));
  const std::vector<std::string> texts = {"a red circle", "the dog", "blue square", "a cat sat",
                                          "green", "two stars", "a big tree", "the sun"};
  std::vector<manifest::Entry> entries;
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::string wav = dir.File("c" + std::to_string(i) + ".wav");
    audio::Write(wav, Noise(6000 + 1500 * static_cast<int>(i % 4), i), 16000);
    manifest::Entry e;
    e.id = "c" + std::to_string(i);
    e.task = "asr";
    e.audio = wav;
    e.text = texts[i];
    entries.push_back(e);
  }
  manifest::Write(dir.File("train.jsonl"), entries);
  manifest::Write(dir.File("valid.jsonl"), std::vector<manifest::Entry>(entries.begin(), entries.begin() + 2));
  const std::string run = dir.File("run");
  const std::string yaml =
      "model:\n  backbone: " + backbone + "\n  speech:\n    encoder: " + encoder +
      "\n    projector: {type: stack_mlp, stack: 2, hidden_dim: 64}\n"
      "  lora: {enabled: true, rank: 4, alpha: 8, target_modules: [q_proj, v_proj, down_proj]}\n"
      "data:\n  train:\n    - {manifest: " + dir.File("train.jsonl") + ", task: asr}\n"
      "  valid:\n    - {manifest: " + dir.File("valid.jsonl") + ", task: asr}\n"
      "train: {steps: 3, batch_size: 4, lr: 0.003, warmup_steps: 1, log_every: 1}\n"
      "eval: {max_new_tokens: 4}\ncheckpoint: {every: 3, keep: 1}\nthreads: 1\nseed: 3\noutput_dir: " + run + "\n";
  config::Document doc = config::Document::LoadString(yaml, "byom.yaml");
  train::TrainConfig config;
  config.Load(doc.Root());
  doc.CheckAllConsumed();
  const train::TrainResult trained = train::Train(config, doc.EffectiveYaml(), /*resume=*/false, /*quiet=*/true);
  EXPECT_EQ(trained.steps, 3);
  EXPECT_TRUE(std::isfinite(trained.final_loss));
  ASSERT_TRUE(stdfs::is_regular_file(run + "/adapters/adapters.safetensors"));
  ASSERT_TRUE(stdfs::is_regular_file(run + "/adapters/lora/adapter_model.safetensors"));

  // The adapter reloads; its prompts are ChatML turns without a BOS, its targets end with <|im_end|>.
  adapters::MultimodalLM reference(config.model);
  reference->LoadAdapters(run + "/adapters");
  reference->eval();
  const text::Tokenizer& tokenizer = reference->Tokenizer();
  EXPECT_EQ(reference->ChatFormat().name, "chatml");
  EXPECT_EQ(reference->ChatFormat().default_system, "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
  const std::vector<int64_t> prompt = reference->ChatFormat().EncodePrompt(tokenizer, "<speech> Transcribe:");
  EXPECT_EQ(prompt.front(), tokenizer.AddedTokenId("<|im_start|>"));
  EXPECT_EQ(tokenizer.Decode(prompt, false),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\n<speech> Transcribe:<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(reference->ChatFormat().EncodeAnswer(tokenizer, "the dog").back(), tokenizer.AddedTokenId("<|im_end|>"));
  adapters::MultimodalExample example;
  example.prompt = "<speech> Transcribe:";
  const std::vector<float> clip = Noise(9000, 99);
  example.speech.push_back(reference->SpeechFeatures(clip));
  EXPECT_EQ(reference->PromptPositions(example),
            static_cast<int64_t>(prompt.size()) - 1 + reference->SpeechPositions(example.speech[0].size(0)));
  text::GenerationOptions options;
  options.max_new_tokens = 8;
  options.ignore_stop_tokens = true;
  const std::vector<int64_t> expected = reference->Generate({example}, options).tokens[0];
  ASSERT_EQ(expected.size(), 8u);

  // Served from the run directory: the adapter's LoRA in the engine's bank, paged attention.
  engine::EngineConfig served_config;
  served_config.backbone = backbone;
  served_config.max_answer_tokens = 8;
  served_config.max_answer_tokens_limit = 16;
  served_config.max_wait_ms = 1;
  served_config.max_batch = 4;
  served_config.kv_block_size = 8;
  engine::AdapterEntry entry;
  entry.name = "asr";
  entry.config = run + "/config.yaml";
  entry.adapters = run + "/adapters";
  served_config.adapters.push_back(entry);
  engine::ServedModel served(served_config);
  engine::Engine engine(served, served_config);
  engine::GenerateSettings settings;
  settings.adapter = "asr";
  settings.prompt = "<speech> Transcribe:";
  settings.audio = {clip};
  settings.max_new_tokens = 8;
  settings.ignore_eos = true;
  EXPECT_EQ(ServedTokens(engine, settings), expected);
}

}  // namespace
}  // namespace slm
