// The serving engine without any transport (engine/engine.h), on the committed starter models:
// every answer equals MultimodalLM::Generate / text::Generate of that request alone, token for
// token, under a randomized schedule of joins, cancellations, preemptions for memory and rows of
// several adapters in one batch; the KV pool is empty again afterwards; a request that can never
// fit is refused alone while its neighbours are served; adapters load and unload while serving.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "audio/espeak_synth.h"
#include "core/config.h"
#include "core/fs.h"
#include "core/safetensors.h"
#include "engine/engine.h"
#include "tests/test_util.h"
#include "text/generate.h"

namespace slm::engine {
namespace {

namespace stdfs = std::filesystem;
const std::string kRoot = SLM_SOURCE_DIR;

std::vector<float> Speech(const std::string& text, const std::string& voice = "en-us") {
  audio::VoiceSpec spec;
  spec.name = voice;
  return audio::EspeakSynthesizer::Instance().Synthesize(text, spec).samples;  // 16 kHz
}

// A copy of the starter spoken-QA adapter whose LoRA is perturbed by `seed` (or removed): a
// different adapter over the same backbone.
std::string MakeAdapter(const testing::TempDir& dir, const std::string& name, uint64_t seed, bool lora) {
  const std::string out = dir.File(name);
  stdfs::copy(kRoot + "/samples/models/sqa_tiny_adapter", out, stdfs::copy_options::recursive);
  if (!lora) {
    stdfs::remove_all(out + "/lora");
    nlohmann::json specs = fs::ReadJson(out + "/adapter_config.json");
    specs["lora"] = false;
    fs::AtomicWriteString(out + "/adapter_config.json", specs.dump(2));
    return out;
  }
  const std::string weights = out + "/lora/adapter_model.safetensors";
  const safetensors::Reader reader(weights);
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  torch::manual_seed(seed);
  for (const std::string& tensor : reader.Names()) {
    torch::Tensor t = reader.Get(tensor).to(torch::kFloat);
    if (tensor.find("lora_B") != std::string::npos) t = t + torch::randn_like(t) * 0.02;
    tensors.emplace_back(tensor, t);
  }
  safetensors::Save(weights, tensors, {{"format", "pt"}});
  return out;
}

struct Fixture {
  testing::TempDir dir;
  EngineConfig config;
  std::map<std::string, std::string> adapter_dirs;  // name -> directory
  std::map<std::string, bool> has_lora;

  explicit Fixture(int64_t kv_tokens = 0) {
    config.backbone = kRoot + "/samples/models/backbone_tiny";
    config.speech_encoder = kRoot + "/samples/models/speech_encoder_tiny";
    config.max_answer_tokens = 16;
    config.max_answer_tokens_limit = 48;
    config.max_wait_ms = 1;
    config.max_batch = 8;
    config.prefill_chunk_tokens = 13;  // prompts span several chunks
    config.kv_block_size = 8;
    config.kv_tokens = kv_tokens;
    config.queue_timeout_seconds = 60;
    for (const auto& [name, seed, lora] : {std::tuple{"a", 1, true}, std::tuple{"b", 2, true}, std::tuple{"plain", 3, false}}) {
      AdapterEntry entry;
      entry.name = name;
      entry.config = kRoot + "/samples/configs/sqa_tiny.yaml";
      entry.adapters = MakeAdapter(dir, name, seed, lora);
      adapter_dirs[name] = entry.adapters;
      has_lora[name] = lora;
      config.adapters.push_back(entry);
    }
  }
};

// The reference of an adapter: its own MultimodalLM with its own backbone and LoRA.
adapters::MultimodalLM Reference(const std::string& adapter_dir, bool lora) {
  adapters::MultimodalConfig config;
  config::Document doc = config::Document::LoadFile(kRoot + "/samples/configs/sqa_tiny.yaml");
  config.Load(doc.Root().Child("model"));
  config.lora_enabled = lora;
  adapters::MultimodalLM model(config);
  model->LoadAdapters(adapter_dir);
  model->eval();
  return model;
}

struct Outcome {
  Status status;
  std::vector<int64_t> tokens;
  std::string text;
  FinishReason finish = FinishReason::kUnspecified;
};

Outcome Generate(Engine& engine, GenerateSettings settings, int cancel_after = -1) {
  Outcome out;
  std::atomic<bool> cancel{false};
  settings.cancelled = [&cancel] { return cancel.load(); };
  std::shared_ptr<Engine::GenerateJob> job;
  out.status = engine.StartGenerate(settings, &job);
  if (!out.status.ok()) return out;
  GenerateEvent event;
  while (engine.Next(*job, &event)) {
    if (event.kind == GenerateEvent::Kind::kToken) {
      out.tokens.push_back(event.token.id);
      out.text += event.token.text;
      if (static_cast<int>(out.tokens.size()) == cancel_after) cancel = true;
    } else {
      out.finish = event.summary.finish;
    }
  }
  out.status = engine.Result(*job);
  engine.Close(*job);
  return out;
}

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(::chdir(kRoot.c_str()), 0); }  // sqa_tiny.yaml's relative paths
};

TEST_F(EngineTest, RandomSchedulesOfMixedAdaptersEqualEachRequestAlone) {
  // A pool of 12 blocks of 8 positions: several answers do not fit at once, so rows wait and are
  // preempted and recomputed.
  Fixture fixture(96);
  ServedModel model(fixture.config);
  Engine engine(model, fixture.config);
  std::map<std::string, adapters::MultimodalLM> references;
  for (const auto& [name, dir] : fixture.adapter_dirs) references.emplace(name, Reference(dir, fixture.has_lora[name]));
  text::LlamaModel backbone = text::LoadLlama(fixture.config.backbone);
  backbone->Freeze();
  const text::Tokenizer tokenizer = text::Tokenizer::Load(fixture.config.backbone);

  const std::vector<std::vector<float>> clips = {Speech("what is a dog"), Speech("what is a lantern", "en-us+f3"),
                                                 Speech("what is music", "en+m3")};
  const std::vector<std::string> texts = {"a small domesticated", "the act of", "a person who", "an instrument for"};
  std::mt19937 rng(42);
  int compared = 0, cancelled = 0;
  for (int round = 0; round < 3; ++round) {
    struct Case {
      GenerateSettings settings;
      int cancel_after = -1;
      std::string adapter;
      Outcome outcome;
    };
    std::vector<Case> cases(9);
    for (Case& c : cases) {
      const int kind = rng() % 4;  // 0-2: an adapter with a spoken question, 3: the plain backbone
      if (kind < 3) {
        c.adapter = kind == 0 ? "a" : kind == 1 ? "b" : "plain";
        c.settings.adapter = c.adapter;
        c.settings.prompt = "<speech> Answer:";
        c.settings.audio = {clips[rng() % clips.size()]};
      } else {
        c.settings.prompt = texts[rng() % texts.size()];
      }
      c.settings.max_new_tokens = 4 + rng() % 20;
      if (rng() % 3 == 0) {
        c.settings.sampling.temperature = 0.8;
        c.settings.sampling.top_k = 20;
        c.settings.sampling.top_p = 0.9;
        c.settings.sampling.seed = rng();
      }
      if (rng() % 4 == 0) c.settings.sampling.repetition_penalty = 1.3;
      if (rng() % 6 == 0) c.cancel_after = 2;
    }
    std::vector<std::thread> threads;
    for (Case& c : cases)
      threads.emplace_back([&, delay = rng() % 40] {
        std::this_thread::sleep_for(std::chrono::milliseconds(delay));  // random joins
        c.outcome = Generate(engine, c.settings, c.cancel_after);
      });
    for (auto& t : threads) t.join();
    for (const Case& c : cases) {
      if (c.cancel_after >= 0) {
        ++cancelled;
        continue;
      }
      ASSERT_TRUE(c.outcome.status.ok()) << CodeName(c.outcome.status.code) << ": " << c.outcome.status.message;
      text::GenerationOptions options;
      options.max_new_tokens = c.settings.max_new_tokens;
      options.temperature = c.settings.sampling.temperature;
      options.top_k = c.settings.sampling.top_k;
      options.top_p = c.settings.sampling.top_p;
      options.seed = c.settings.sampling.seed;
      options.repetition_penalty = c.settings.sampling.repetition_penalty;
      std::vector<int64_t> expected;
      if (c.adapter.empty()) {
        expected = text::Generate(backbone, {tokenizer.Encode(c.settings.prompt, true, false)}, options).tokens[0];
      } else {
        adapters::MultimodalLM& reference = references.at(c.adapter);
        adapters::MultimodalExample example;
        example.prompt = c.settings.prompt;
        example.speech = {reference->SpeechFeatures(c.settings.audio[0])};
        expected = reference->Generate({example}, options).tokens[0];
      }
      EXPECT_EQ(c.outcome.tokens, expected) << "adapter '" << c.adapter << "', prompt '" << c.settings.prompt << "'";
      ++compared;
    }
  }
  EXPECT_GT(compared, 15);
  const nlohmann::json stats = engine.Stats();
  EXPECT_GT(stats["max_decode_batch"].get<int64_t>(), 1) << stats.dump();
  EXPECT_GT(stats["prefill_chunks"].get<int64_t>(), 0);
  // Pool accounting: after every request ended (completed or cancelled), every block is free.
  for (int i = 0; i < 200 && engine.ActiveRequests() > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(engine.Stats()["kv_used_blocks"].get<int64_t>(), 0) << engine.Stats().dump();
  std::cout << "compared " << compared << " answers, " << cancelled << " cancelled, stats " << stats.dump() << "\n";
}

TEST_F(EngineTest, OverLongRequestsAreRefusedAloneWhileTheirNeighboursAreServed) {
  Fixture fixture;
  ServedModel model(fixture.config);
  Engine engine(model, fixture.config);
  text::LlamaModel backbone = text::LoadLlama(fixture.config.backbone);
  backbone->Freeze();
  const text::Tokenizer tokenizer = text::Tokenizer::Load(fixture.config.backbone);
  std::string long_prompt;
  for (int i = 0; i < 260; ++i) long_prompt += "word ";
  std::vector<Outcome> good(4), bad(4);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      GenerateSettings s;
      s.prompt = "a small domesticated";
      s.max_new_tokens = 10 + i;
      good[i] = Generate(engine, s);
    });
    threads.emplace_back([&, i] {
      GenerateSettings s;
      s.prompt = long_prompt;
      s.max_new_tokens = 48;
      bad[i] = Generate(engine, s);
    });
  }
  for (auto& t : threads) t.join();
  text::GenerationOptions options;
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(good[i].status.ok()) << good[i].status.message;
    options.max_new_tokens = 10 + i;
    EXPECT_EQ(good[i].tokens, text::Generate(backbone, {tokenizer.Encode("a small domesticated", true, false)}, options).tokens[0]);
    EXPECT_EQ(bad[i].status.code, Code::kInvalidArgument);
    EXPECT_NE(bad[i].status.message.find("exceed the model's context of 256"), std::string::npos) << bad[i].status.message;
  }
}

TEST_F(EngineTest, LimitsAgreeWithTheModelAtStartAndStreamsCutQuestionsToFit) {
  Fixture fixture;
  fixture.config.max_answer_tokens = fixture.config.max_answer_tokens_limit = 250;  // no room for a question
  EXPECT_SLM_ERROR(ServedModel{fixture.config}, "lower limits.max_answer_tokens");
  fixture.config.max_answer_tokens = fixture.config.max_answer_tokens_limit = 48;
  ServedModel model(fixture.config);
  const ModelInfo info = model.Info();
  // (256 - prompt - 48) positions at 12.5 per second.
  EXPECT_GT(info.max_respond_seconds, 10.0);
  EXPECT_LT(info.max_respond_seconds, 16.5);
  Engine engine(model, fixture.config);
  std::shared_ptr<Engine::Stream> stream;
  StreamSettings settings;
  settings.respond = true;
  settings.adapter = "a";
  settings.endpointing_ms = -1;
  settings.max_answer_tokens = 250;  // above the limit: clamped to 48
  ASSERT_TRUE(engine.Open(settings, &stream).ok());
  // 20 s of speech-like noise: the utterance ends at max_respond_seconds and is still answered.
  std::vector<float> noise(16000 * 20);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.f, 0.1f);
  for (float& x : noise) x = normal(rng);
  engine.Feed(*stream, noise.data(), noise.size());
  engine.HalfClose(*stream);
  StreamEvent event;
  int finals = 0, summaries = 0;
  while (engine.Next(*stream, &event)) {
    if (event.kind == StreamEvent::Kind::kFinal) {
      if (finals++ == 0) {
        EXPECT_EQ(event.final.end_reason, EndReason::kMaxDuration);
        EXPECT_NEAR(event.final.end_seconds - event.final.start_seconds, info.max_respond_seconds, 0.02);
      }
    }
    summaries += event.kind == StreamEvent::Kind::kSummary;
  }
  EXPECT_TRUE(engine.Result(*stream).ok()) << engine.Result(*stream).message;
  EXPECT_GE(finals, 2);
  EXPECT_EQ(summaries, finals);
  engine.Close(*stream);
  // An answer length that leaves no room for a question is refused, naming the field.
  fixture.config.max_answer_tokens_limit = 250;
  ServedModel wide(fixture.config);
  Engine wide_engine(wide, fixture.config);
  settings.max_answer_tokens = 245;
  const Status refused = wide_engine.Open(settings, &stream);
  EXPECT_EQ(refused.code, Code::kInvalidArgument);
  EXPECT_NE(refused.message.find("config.max_answer_tokens 245 leaves"), std::string::npos) << refused.message;
}

TEST_F(EngineTest, AdaptersLoadAndUnloadWhileServing) {
  Fixture fixture;
  const AdapterEntry extra = fixture.config.adapters[1];
  fixture.config.adapters.resize(1);  // only "a" at start
  ServedModel model(fixture.config);
  Engine engine(model, fixture.config);
  GenerateSettings s;
  s.adapter = "b";
  s.prompt = "<speech> Answer:";
  s.audio = {Speech("what is a dog")};
  s.max_new_tokens = 6;
  EXPECT_EQ(Generate(engine, s).status.code, Code::kNotFound);
  ASSERT_TRUE(engine.LoadAdapter(extra).ok());
  EXPECT_EQ(engine.LoadAdapter(extra).code, Code::kFailedPrecondition);  // the name is taken
  const Outcome served = Generate(engine, s);
  ASSERT_TRUE(served.status.ok()) << served.status.message;
  adapters::MultimodalLM reference = Reference(fixture.adapter_dirs["b"], true);
  adapters::MultimodalExample example;
  example.prompt = s.prompt;
  example.speech = {reference->SpeechFeatures(s.audio[0])};
  text::GenerationOptions options;
  options.max_new_tokens = 6;
  EXPECT_EQ(served.tokens, reference->Generate({example}, options).tokens[0]);
  ASSERT_TRUE(engine.UnloadAdapter("b").ok());
  EXPECT_EQ(Generate(engine, s).status.code, Code::kNotFound);
  EXPECT_EQ(engine.UnloadAdapter("b").code, Code::kNotFound);
  AdapterEntry broken = extra;
  broken.name = "broken";
  broken.adapters = fixture.dir.File("missing");
  const Status status = engine.LoadAdapter(broken);
  EXPECT_EQ(status.code, Code::kInvalidArgument);
  EXPECT_NE(status.message.find("does not exist"), std::string::npos) << status.message;
  // The slot of an unloaded adapter is reused.
  ASSERT_TRUE(engine.LoadAdapter(extra).ok());
  EXPECT_TRUE(Generate(engine, s).status.ok());
}

TEST_F(EngineTest, RequestsOverTheLimitsAreRefusedAtOnce) {
  Fixture fixture;
  fixture.config.max_streams = 1;
  fixture.config.max_generates = 1;
  ServedModel model(fixture.config);
  Engine engine(model, fixture.config);
  std::shared_ptr<Engine::Stream> first, second;
  ASSERT_TRUE(engine.Open(StreamSettings(), &first).ok());
  const Status refused = engine.Open(StreamSettings(), &second);
  EXPECT_EQ(refused.code, Code::kResourceExhausted);
  EXPECT_NE(refused.message.find("limits.max_streams"), std::string::npos) << refused.message;
  engine.Close(*first);
  EXPECT_TRUE(engine.Open(StreamSettings(), &second).ok());
  engine.Close(*second);
  // A request needing more positions than the whole pool could ever hold.
  Fixture small(16);
  ServedModel small_model(small.config);
  Engine small_engine(small_model, small.config);
  GenerateSettings s;
  s.prompt = "a small domesticated animal that is kept";
  s.max_new_tokens = 20;
  const Outcome outcome = Generate(small_engine, s);
  EXPECT_EQ(outcome.status.code, Code::kResourceExhausted);
  EXPECT_NE(outcome.status.message.find("whole KV cache"), std::string::npos) << outcome.status.message;
}

}  // namespace
}  // namespace slm::engine

namespace slm::engine {
namespace {

// A prompt-only adapter whose sqa template holds "{transcript}": the spoken question is answered
// exactly as the same words typed (Generate with the filled template on the same adapter), and no
// speech reaches the backbone.
TEST_F(EngineTest, TranscriptTemplatesAnswerSpokenQuestionsAsTypedOnes) {
  Fixture fixture;
  AdapterEntry dictionary;
  dictionary.name = "dictionary";
  dictionary.tasks = {{"sqa", "{transcript}:"}};  // backbone_tiny ends "what is a dog?" at once
  ASSERT_TRUE(dictionary.PromptOnly());
  fixture.config.adapters.insert(fixture.config.adapters.begin(), dictionary);
  ServedModel model(fixture.config);
  const AdapterRef served = model.Find("dictionary");
  ASSERT_NE(served, nullptr);
  EXPECT_TRUE(served->answers_transcript);
  EXPECT_FALSE(served->has_lora);
  EXPECT_EQ(model.DefaultFor("sqa"), served);
  EXPECT_GT(model.Info().max_respond_seconds, 10.0);  // bounded by max_utterance_seconds, not speech positions
  Engine engine(model, fixture.config);

  std::shared_ptr<Engine::Stream> stream;
  StreamSettings settings;
  settings.respond = true;
  settings.endpointing_ms = -1;
  settings.max_answer_tokens = 12;
  ASSERT_TRUE(engine.Open(settings, &stream).ok());
  const std::vector<float> question = Speech("what is a dog");
  engine.Feed(*stream, question.data(), question.size());
  engine.HalfClose(*stream);
  StreamEvent event;
  std::string transcript, answer;
  std::vector<int64_t> answer_tokens;
  while (engine.Next(*stream, &event)) {
    if (event.kind == StreamEvent::Kind::kFinal) {
      EXPECT_TRUE(transcript.empty()) << "one utterance, one final";
      transcript = event.final.text;
    }
    if (event.kind == StreamEvent::Kind::kToken) {
      answer += event.token.text;
      answer_tokens.push_back(event.token.id);
    }
  }
  ASSERT_TRUE(engine.Result(*stream).ok()) << engine.Result(*stream).message;
  engine.Close(*stream);
  ASSERT_FALSE(transcript.empty());
  ASSERT_FALSE(answer_tokens.empty());

  GenerateSettings typed;
  typed.adapter = "dictionary";
  typed.prompt = FillTranscript("{transcript}:", transcript);
  typed.max_new_tokens = 12;
  const Outcome reference = Generate(engine, typed);
  ASSERT_TRUE(reference.status.ok()) << reference.status.message;
  EXPECT_EQ(answer_tokens, reference.tokens) << "transcript '" << transcript << "'";
  EXPECT_EQ(answer, reference.text);
}

TEST(EngineConfigTest, PromptOnlyAdaptersNeedTasksWithoutTrainedInputs) {
  auto load = [](const std::string& yaml) {
    config::Document doc = config::Document::LoadString(yaml, "serve.yaml");
    AdapterEntry entry;
    entry.Load(doc.Root());
    return entry;
  };
  EXPECT_TRUE(load("name: d\ntasks: {sqa: '{transcript}?'}\n").PromptOnly());
  EXPECT_SLM_ERROR(load("name: d\n"), "or `tasks` alone for the frozen backbone");
  EXPECT_SLM_ERROR(load("name: d\ntasks: {sqa: '<speech> Answer:'}\n"), "has no trained speech or image input");
  EXPECT_SLM_ERROR(load("name: d\nconfig: c.yaml\n"), "give `run` (a training run directory) or both");
  // A template that no spoken question could reach is refused when the model loads.
  EngineConfig config;
  config.backbone = kRoot + "/samples/models/backbone_tiny";
  config.speech_encoder = kRoot + "/samples/models/speech_encoder_tiny";
  AdapterEntry mute;
  mute.name = "mute";
  mute.tasks = {{"sqa", "Answer:"}};
  config.adapters = {mute};
  EXPECT_SLM_ERROR(ServedModel{config}, "has neither <speech> nor {transcript}");
}

TEST(EngineConfigTest, FillTranscriptReplacesEveryPlaceholder) {
  EXPECT_EQ(FillTranscript("{transcript}?", "what is a dog"), "what is a dog?");
  EXPECT_EQ(FillTranscript("Q: {transcript} / {transcript}", "x"), "Q: x / x");
  EXPECT_EQ(FillTranscript("no placeholder", "x"), "no placeholder");
  EXPECT_EQ(FillTranscript("{transcript}", "{transcript}"), "{transcript}");
}

}  // namespace
}  // namespace slm::engine
