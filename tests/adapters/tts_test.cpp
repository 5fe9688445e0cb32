// The TTS adapter on the committed starter backbone: unit tokens as new trainable vocabulary rows
// (model.speech_units), their training, saving and the checks on loading, generation restricted to
// units, and TtsPipeline (chunks, text splitting, every bad input).
#include "adapters/tts.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "audio/units.h"
#include "core/fs.h"
#include "tests/test_util.h"

namespace slm::adapters {
namespace {

const std::string kBackbone = std::string(SLM_SOURCE_DIR) + "/samples/models/backbone_tiny";
constexpr int64_t kUnits = 12;

// A unit tokenizer of kUnits random centroids (its hash identifies it) and a fresh decoder for it.
struct UnitFiles {
  slm::testing::TempDir dir;
  std::string units, other_units, decoder;
  std::string hash;
  UnitFiles() {
    torch::manual_seed(11);
    audio::UnitTokenizerInfo info;
    info.feature = "mel";
    const audio::UnitTokenizer tokenizer(torch::randn({kUnits, 80}), info);
    units = dir.File("units");
    tokenizer.Save(units);
    hash = tokenizer.Hash();
    other_units = dir.File("other_units");
    audio::UnitTokenizer(torch::randn({kUnits, 80}), info).Save(other_units);
    audio::UnitDecoderConfig d;
    d.k = kUnits;
    d.dim = 32;
    d.layers = 2;
    d.tokenizer_hash = hash;
    decoder = dir.File("decoder");
    audio::UnitDecoder(d)->Save(decoder);
  }
};

const UnitFiles& Files() {
  static const UnitFiles files;
  return files;
}

MultimodalConfig TtsConfig(bool lora = false) {
  MultimodalConfig c;
  c.backbone = kBackbone;
  c.speech_units = Files().units;
  c.lora_enabled = lora;
  c.lora.rank = 4;
  c.lora.target_modules = {"q_proj", "v_proj"};
  return c;
}

std::string UnitString(const std::vector<int64_t>& units) {
  std::string s;
  for (const int64_t u : units) s += text::SpeechUnitToken(u);
  return s;
}

TEST(TtsAdapter, UnitTokensAreNewTrainableRowsAfterTheBaseVocabulary) {
  MultimodalLM model(TtsConfig());
  const int64_t base = model->Backbone()->Config().vocab_size;
  EXPECT_EQ(model->SpeechUnits(), kUnits);
  EXPECT_EQ(model->SpeechUnitsHash(), Files().hash);
  EXPECT_EQ(model->UnitTokenId(0), base);
  EXPECT_EQ(model->UnitTokenId(kUnits - 1), base + kUnits - 1);
  EXPECT_EQ(model->UnitOfToken(base + 3), 3);
  EXPECT_EQ(model->UnitOfToken(5), -1);
  EXPECT_EQ(model->Tokenizer().Encode("<u3><u11>", false, false), (std::vector<int64_t>{base + 3, base + 11}));
  EXPECT_SLM_ERROR(model->UnitTokenId(kUnits), "speech unit 12 is outside the unit vocabulary [0, 12)");
  // Trainable: the embedding and head rows of the units only (the base vocabulary stays frozen).
  const std::vector<torch::Tensor> trainable = model->TrainableParameters();
  ASSERT_EQ(trainable.size(), 2u);
  const int64_t hidden = model->Backbone()->Config().hidden_size;
  EXPECT_EQ(trainable[0].numel() + trainable[1].numel(), 2 * kUnits * hidden);
  for (const auto& [name, p] : model->Backbone()->BaseParameters()) EXPECT_FALSE(p.requires_grad()) << name;
  bool listed = false;
  for (const ComponentSummary& c : model->Summary().components)
    listed |= c.name.find("unit_vocab") != std::string::npos && c.trainable == 2 * kUnits * hidden;
  EXPECT_TRUE(listed);
}

TEST(TtsAdapter, LearnsToSayUnitsSavesAndRejectsOtherUnits) {
  torch::manual_seed(17);  // LoRA and unit rows start from the same point whatever ran before
  MultimodalLM model(TtsConfig(/*lora=*/true));
  MultimodalExample example;
  example.prompt = "Say: a dog";
  example.target = UnitString({3, 7, 1, 9, 4, 6});
  const MultimodalBatch batch = model->Prepare({example}, text::PaddingSide::kRight);
  EXPECT_EQ(batch.target_tokens, 7);  // six units + EOS
  torch::optim::AdamW optimizer(model->TrainableParameters(), torch::optim::AdamWOptions(0.02));
  model->train();
  const double first = model->Loss(batch).item<double>();
  for (int step = 0; step < 200; ++step) {
    optimizer.zero_grad();
    // Prepared every step: the batch embeds the unit targets with the trainable rows.
    torch::Tensor loss = model->Loss(model->Prepare({example}, text::PaddingSide::kRight));
    loss.backward();
    optimizer.step();
  }
  model->eval();
  torch::NoGradGuard no_grad;
  const MultimodalBatch trained = model->Prepare({example}, text::PaddingSide::kRight);
  EXPECT_LT(model->Loss(trained).item<double>(), first / 4);
  text::GenerationOptions options;
  options.max_new_tokens = 10;
  for (int64_t u = 0; u < kUnits; ++u) options.allowed_token_ids.push_back(model->UnitTokenId(u));
  const text::GenerationResult said = model->Generate({example}, options);
  std::vector<int64_t> units;
  for (const int64_t t : said.tokens[0]) units.push_back(model->UnitOfToken(t));
  EXPECT_EQ(units, (std::vector<int64_t>{3, 7, 1, 9, 4, 6}));
  EXPECT_EQ(said.finish_reasons[0], "stop");

  slm::testing::TempDir dir;
  model->SaveAdapters(dir.path());
  const nlohmann::json specs = fs::ReadJson(dir.File("adapter_config.json"));
  EXPECT_EQ(specs["speech_units"]["hash"], Files().hash);
  MultimodalLM reloaded(TtsConfig(true));
  reloaded->LoadAdapters(dir.path());
  reloaded->eval();
  EXPECT_LT((reloaded->Loss(reloaded->Prepare({example}, text::PaddingSide::kRight)) - model->Loss(trained))
                .abs()
                .item<double>(),
            1e-6);

  MultimodalConfig other = TtsConfig(true);
  other.speech_units = Files().other_units;
  EXPECT_SLM_ERROR(MultimodalLM(other)->LoadAdapters(dir.path()), "the adapter was trained with other units");
  MultimodalConfig plain = TtsConfig(true);
  plain.speech_units.clear();
  EXPECT_SLM_ERROR(MultimodalLM(plain)->LoadAdapters(dir.path()),
                   "has \"speech_units\" but the model has none");
}

TEST(TtsAdapter, RestrictedGenerationOnlySaysUnits) {
  MultimodalLM model(TtsConfig());
  model->eval();
  MultimodalExample example;
  example.prompt = "Say: hello there";
  text::GenerationOptions options;
  options.max_new_tokens = 20;
  options.temperature = 1.0;
  options.seed = 3;
  for (int64_t u = 0; u < kUnits; ++u) options.allowed_token_ids.push_back(model->UnitTokenId(u));
  options.ignore_stop_tokens = true;  // untrained: EOS would come first
  const text::GenerationResult said = model->Generate({example}, options);
  ASSERT_EQ(said.tokens[0].size(), 20u);
  for (const int64_t t : said.tokens[0]) EXPECT_GE(model->UnitOfToken(t), 0) << t;
  options.allowed_token_ids = {1 << 20};
  EXPECT_SLM_ERROR(model->Generate({example}, options), "allowed token id 1048576 is outside the model's vocabulary");
}

// A model that has learned to say a few dozen units for "Say: ..." prompts (an untrained one
// ends at once: its fresh unit rows score below EOS), shared by the pipeline tests.
MultimodalLM SpeakingModel() {
  static MultimodalLM model = [] {
    torch::manual_seed(19);
    MultimodalLM m(TtsConfig());
    std::vector<int64_t> units;
    for (int64_t i = 0; i < 40; ++i) units.push_back((i * 5) % kUnits);
    MultimodalExample example;
    example.prompt = "Say: a dog barks";
    example.target = UnitString(units);
    torch::optim::AdamW optimizer(m->TrainableParameters(), torch::optim::AdamWOptions(0.02));
    m->train();
    for (int step = 0; step < 40; ++step) {
      optimizer.zero_grad();
      m->Loss(m->Prepare({example}, text::PaddingSide::kRight)).backward();
      optimizer.step();
    }
    m->eval();
    return m;
  }();
  return model;
}

TtsPipeline Pipeline() {
  MultimodalLM model = SpeakingModel();
  audio::UnitDecoder decoder(audio::UnitDecoderImpl::Load(Files().decoder, Files().hash));
  decoder->eval();
  audio::LogMelOptions mel;
  mel.normalization = audio::MelNormalization::kFixedFloor;
  return TtsPipeline(model, decoder, std::make_shared<audio::GriffinLimVocoder>(mel));
}

TEST(TtsPipeline, StreamsChunksWhoseConcatenationIsTheResult) {
  TtsPipeline tts = Pipeline();
  TtsOptions options;
  options.max_units = 40;
  options.stream_units = 8;
  options.temperature = 1.0;  // an untrained model: sampling avoids an immediate EOS
  options.seed = 5;
  std::vector<float> streamed;
  int64_t chunks = 0;
  const TtsResult result = tts.Synthesize("A dog barks. The cat sleeps.", options, [&](const std::vector<float>& c) {
    streamed.insert(streamed.end(), c.begin(), c.end());
    ++chunks;
  });
  EXPECT_EQ(result.sample_rate, 16000);
  EXPECT_GT(result.units, 0);
  EXPECT_EQ(result.pieces, 1);
  EXPECT_EQ(streamed, result.samples);
  EXPECT_EQ(chunks, result.chunks);
  EXPECT_GT(result.chunks, 1);
  // Every unit is one mel frame (upsample 1) = 160 samples.
  EXPECT_EQ(static_cast<int64_t>(result.samples.size()), result.units * 160);
  EXPECT_LE(result.first_chunk_seconds, result.seconds);
  for (const float s : result.samples) ASSERT_TRUE(std::isfinite(s));
}

// A word-cued piece longer than one context of the backbone holds is said whole: the LM goes on
// from a fresh prompt of the words not yet said instead of stopping at the last position.
TEST(TtsPipeline, AWordCuedPieceLongerThanOneContextIsSaidWhole) {
  TtsPipeline tts = Pipeline();
  TtsOptions options;
  options.prompt_template = "Say: {text} {words}";
  options.max_word_units = 40;
  options.temperature = 1.0;
  options.seed = 5;
  const std::string text = "a dog barks and the cat sleeps while the bird sings in the old tall tree by the house";
  const TtsResult said = tts.Synthesize(text, options);
  EXPECT_EQ(said.pieces, 1);
  EXPECT_GE(said.contexts, 1);
  // More units than the 256 positions of one context could hold next to the prompt and the cues.
  EXPECT_GT(said.units, 256);
  EXPECT_EQ(static_cast<int64_t>(said.samples.size()), said.units * 160);
  options.max_word_units = 0;
  EXPECT_SLM_ERROR(tts.Synthesize(text, options), "max_word_units must be >= 1");
}

TEST(TtsPipeline, SpeaksGivenUnitsWithoutTheLm) {
  TtsPipeline tts = Pipeline();
  const std::vector<float> a = tts.Speak({3, 3, 5, 7, 1});
  EXPECT_EQ(a.size(), 5u * 160);  // one mel frame per unit (upsample 1), 160 samples each
  EXPECT_EQ(tts.Speak({3, 3, 5, 7, 1}), a);
  EXPECT_NE(tts.Speak({3, 3, 5, 7, 2}), a);
  EXPECT_SLM_ERROR(tts.Speak({1, kUnits}), "unit 1 is 12, outside 0..11");
  EXPECT_SLM_ERROR(tts.Speak({}), "no units");
}

TEST(TtsPipeline, PhonemePromptsArePronouncedByEspeakNg) {
  TtsPipeline tts = Pipeline();
  TtsOptions options;
  options.prompt_template = "Say: {phonemes}";
  options.max_units = 6;
  options.temperature = 1.0;
  const TtsResult said = tts.Synthesize("A dog barks. The cat sleeps.", options);
  EXPECT_EQ(said.pieces, 1);
  EXPECT_GE(said.units, 0);
  // However many units are asked for, the prompt and the units fit the backbone's positions.
  options.max_units = 100000;
  options.max_characters = 100000;
  const TtsResult all = tts.Synthesize("A dog barks.", options);
  EXPECT_LE(all.units, 256);
  std::string long_text;
  while (long_text.size() < 2000) long_text += "The quick brown fox jumps over the lazy dog. ";
  EXPECT_SLM_ERROR(tts.Synthesize(long_text, options), "fills the backbone's 256 positions; lower max_characters");
  options.prompt_template = "Say:";
  EXPECT_SLM_ERROR(tts.Synthesize("hi", options), "has no {text}, {phonemes}, {words} or {word_phonemes}");
}

TEST(TtsPipeline, SplitsLongTextAndRejectsBadInput) {
  EXPECT_EQ(SplitText("  One two. Three four five six.  ", 12),
            (std::vector<std::string>{"One two.", "Three four", "five six."}));
  EXPECT_EQ(SplitText("abcdefghij", 4), (std::vector<std::string>{"abcd", "efgh", "ij"}));
  EXPECT_TRUE(SplitText(" \n\t ", 10).empty());

  TtsPipeline tts = Pipeline();
  TtsOptions options;
  options.max_units = 2;
  EXPECT_SLM_ERROR(tts.Synthesize("", options), "tts: the text is empty");
  EXPECT_SLM_ERROR(tts.Synthesize("   \n ", options), "tts: the text is empty");
  EXPECT_SLM_ERROR(tts.Synthesize("\xE2\x98\x83\xE2\x98\x83 \xE2\x98\x83", options),
                   "the tokenizer knows no character of");
  const std::string long_text = [] {
    std::string s;
    while (s.size() < 10000) s += "The quick brown fox jumps over the lazy dog. ";
    return s;
  }();
  options.max_text_characters = 5000;
  EXPECT_SLM_ERROR(tts.Synthesize(long_text, options), "the text has 10035 characters; the limit is 5000");
  options.max_text_characters = 20000;
  options.max_characters = 500;
  const TtsResult chunked = tts.Synthesize(long_text, options);
  EXPECT_EQ(chunked.pieces, 21);
  EXPECT_EQ(static_cast<int64_t>(chunked.finish_reasons.size()), 21);
  options.prompt_template = "Say:";
  EXPECT_SLM_ERROR(tts.Synthesize("hi", options), "has no {text}");
}

TEST(TtsPipeline, RefusesADecoderForOtherUnitsAndAModelWithoutUnits) {
  audio::UnitDecoderConfig d;
  d.k = kUnits;
  d.dim = 16;
  d.layers = 1;
  d.tokenizer_hash = "another";
  audio::LogMelOptions mel;
  mel.normalization = audio::MelNormalization::kFixedFloor;
  const auto vocoder = std::make_shared<audio::GriffinLimVocoder>(mel);
  EXPECT_SLM_ERROR(TtsPipeline(MultimodalLM(TtsConfig()), audio::UnitDecoder(d), vocoder),
                   "the unit decoder was trained for the unit tokenizer another");
  MultimodalConfig plain = TtsConfig();
  plain.speech_units.clear();
  d.tokenizer_hash = Files().hash;
  EXPECT_SLM_ERROR(TtsPipeline(MultimodalLM(plain), audio::UnitDecoder(d), vocoder), "the model has no speech units");
  MultimodalConfig missing = TtsConfig();
  missing.speech_units = "/nonexistent/units";
  EXPECT_THROW(MultimodalLM{missing}, Error);
}

}  // namespace
}  // namespace slm::adapters
