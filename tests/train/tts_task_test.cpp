// The tts task: targets are a manifest entry's unit tokens (as `slm audio units encode --manifest`
// writes them), and the dataset checks them against the model's unit tokenizer.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>

#include "adapters/multimodal.h"
#include "adapters/tts.h"
#include "audio/espeak_synth.h"
#include "audio/units.h"
#include "core/config.h"
#include "core/manifest.h"
#include "tests/test_util.h"
#include "train/dataset.h"
#include "train/tasks.h"
#include "train/trainer.h"

namespace slm::train {
namespace {

constexpr int64_t kUnits = 12;
const std::string kHash = "5ca1ab1e";

// A tts entry with three units and no tokenizer hash.
manifest::Entry DogBarks() {
  manifest::Entry e;
  e.id = "s1";
  e.task = "tts";
  e.text = "a dog barks";
  e.extra["units"] = "<u3><u3><u11>";
  return e;
}

TEST(TtsTask, TargetsAreTheEntrysUnitsWithTheirTokenizerChecked) {
  manifest::Entry e = DogBarks();
  e.extra["unit_tokenizer"] = kHash;
  const TaskExample x = BuildTaskExample("tts", "Say: {text}", e, "/data", "m.jsonl: entry 's1'");
  EXPECT_EQ(x.prompt, "Say: a dog barks");
  EXPECT_EQ(x.target, "<u3><u3><u11>");
  EXPECT_EQ(x.max_unit, 11);
  EXPECT_EQ(x.unit_tokenizer, kHash);
  EXPECT_EQ(DefaultPromptTemplate("tts"), "Say: {text}");
  e.extra["units"] = nlohmann::json::array({4, 0, 2});
  EXPECT_EQ(BuildTaskExample("tts", "Say: {text}", e, "/data", "w").target, "<u4><u0><u2>");

  auto error = [&](const nlohmann::json& units) {
    manifest::Entry bad = e;
    bad.extra["units"] = units;
    return BuildTaskExample("tts", "Say: {text}", bad, "/data", "m.jsonl: entry 's1'");
  };
  EXPECT_SLM_ERROR(error("<u3>u4"), "m.jsonl: entry 's1': \"units\" is not a sequence of unit tokens <uN> at character 4");
  EXPECT_SLM_ERROR(error("<u3><ux>"), "malformed unit token '<ux>'");
  EXPECT_SLM_ERROR(error(""), "needs a non-empty \"units\"");
  EXPECT_SLM_ERROR(error(nlohmann::json::array({1, -2})), "must hold unit ids >= 0");
  manifest::Entry no_units = e;
  no_units.extra.erase("units");
  EXPECT_SLM_ERROR(BuildTaskExample("tts", "Say: {text}", no_units, "/d", "w"), "needs \"units\"");
  manifest::Entry no_text = e;
  no_text.text.clear();
  EXPECT_SLM_ERROR(BuildTaskExample("tts", "Say: {text}", no_text, "/d", "w"), "needs a non-empty \"text\"");
  EXPECT_SLM_ERROR(CheckPromptTemplate("tts", "<speech> Say: {text}"), "the task needs 0 and 0");

  // The dataset checks the units against the model's tokenizer.
  slm::testing::TempDir dir;
  std::vector<manifest::Entry> entries = {e};
  entries.push_back(e);
  entries[1].id = "s2";
  entries[1].extra["units"] = "<u12>";
  manifest::Write(dir.File("m.jsonl"), {entries[0]});
  DataSourceConfig source;
  source.manifest = dir.File("m.jsonl");
  source.task = "tts";
  const Dataset ok({source}, 0.0, 0.0, "data.train");
  ok.CheckSpeechUnits(kUnits, kHash);
  EXPECT_SLM_ERROR(ok.CheckSpeechUnits(kUnits, "f00d"), "entry 's1': its units come from the unit tokenizer");
  EXPECT_SLM_ERROR(ok.CheckSpeechUnits(0, ""), "a tts example needs a model with model.speech_units");
  manifest::Write(dir.File("m.jsonl"), {entries[1]});
  const Dataset beyond({source}, 0.0, 0.0, "data.train");
  EXPECT_SLM_ERROR(beyond.CheckSpeechUnits(kUnits, kHash), "entry 's2': unit 12 is outside the model's 12 units");

  // max_units leaves long entries out (counted as too long); skip/limit cut one manifest in two.
  std::vector<manifest::Entry> four;
  for (int i = 0; i < 4; ++i) {
    manifest::Entry x = e;
    x.id = "t" + std::to_string(i);
    x.extra["units"] = nlohmann::json(std::vector<int64_t>(i == 1 ? 9 : 3, 1));
    four.push_back(x);
  }
  manifest::Write(dir.File("four.jsonl"), four);
  DataSourceConfig capped;
  capped.manifest = dir.File("four.jsonl");
  capped.task = "tts";
  capped.max_units = 5;
  capped.limit = 2;
  const Dataset head({capped}, 0.0, 0.0, "data.train");
  ASSERT_EQ(head.Size(), 2u);
  EXPECT_EQ(head.Item(0).id, "t0");
  EXPECT_EQ(head.Item(1).id, "t2");
  EXPECT_EQ(head.Stats()[0].too_long, 1);
  capped.limit = 0;
  capped.skip = 2;
  const Dataset tail({capped}, 0.0, 0.0, "data.valid");
  ASSERT_EQ(tail.Size(), 1u);
  EXPECT_EQ(tail.Item(0).id, "t3");
  capped.skip = 3;
  EXPECT_SLM_ERROR(Dataset({capped}, 0.0, 0.0, "data.valid"), "no usable entry");
  config::Document bad = config::Document::LoadString("manifest: m.jsonl\ntask: asr\nmax_units: 5\n", "c.yaml");
  DataSourceConfig wrong;
  EXPECT_SLM_ERROR(wrong.Load(bad.Root()), "max_units' applies to tasks tts and interleaved only");
}

TEST(TtsTask, PhonemePromptsComeFromTheEntryOrFromEspeakNg) {
  manifest::Entry e = DogBarks();
  e.extra["phonemes"] = "x y z";
  EXPECT_EQ(BuildTaskExample("tts", "Say: {phonemes}", e, "/d", "w").prompt, "Say: x y z");
  EXPECT_EQ(BuildTaskExample("tts", "{text} = {phonemes}", e, "/d", "w").prompt, "a dog barks = x y z");
  manifest::Entry none = e;
  none.extra.erase("phonemes");
  EXPECT_SLM_ERROR(BuildTaskExample("tts", "Say: {phonemes}", none, "/d", "m.jsonl: entry 's1'"),
                   "m.jsonl: entry 's1': the prompt template uses {phonemes} but the entry has no \"phonemes\"");
  EXPECT_SLM_ERROR(CheckPromptTemplate("asr", "<speech> {phonemes}"), "uses {phonemes}, which only task tts has");

  // The dataset pronounces the entries that carry no phonemes of their own.
  slm::testing::TempDir dir;
  manifest::Write(dir.File("m.jsonl"), {none, e});
  DataSourceConfig source;
  source.manifest = dir.File("m.jsonl");
  source.task = "tts";
  source.prompt = "Say: {phonemes}";
  const Dataset data({source}, 0.0, 0.0, "data.train");
  ASSERT_EQ(data.Size(), 2u);
  const std::string espeak = audio::EspeakSynthesizer::Instance().Phonemize({"a dog barks"}, "en-us")[0];
  ASSERT_FALSE(espeak.empty());
  EXPECT_EQ(data.Item(0).example.prompt, "Say: " + espeak);
  EXPECT_EQ(data.Item(1).example.prompt, "Say: x y z");
}

TEST(TtsTask, ExamplesLongerThanTheBackboneAreLeftOut) {
  slm::testing::TempDir dir;
  audio::UnitTokenizerInfo info;
  info.feature = "mel";
  torch::manual_seed(2);
  const audio::UnitTokenizer tokenizer(torch::randn({kUnits, 80}), info);
  tokenizer.Save(dir.File("units"));
  adapters::MultimodalConfig c;
  c.backbone = std::string(SLM_SOURCE_DIR) + "/samples/models/backbone_tiny";
  c.speech_units = dir.File("units");
  adapters::MultimodalLM model(c);
  const int64_t positions = model->Backbone()->Config().max_position_embeddings;
  // Around the limit, one unit at a time: BOS + "Say: a dog barks" + units + EOS.
  std::vector<manifest::Entry> entries;
  for (int64_t n = positions - 16; n <= positions; ++n) {
    manifest::Entry e;
    e.id = std::to_string(n);
    e.task = "tts";
    e.text = "a dog barks";
    e.extra["units"] = nlohmann::json(std::vector<int64_t>(n, 1));
    entries.push_back(e);
  }
  manifest::Write(dir.File("m.jsonl"), entries);
  DataSourceConfig source;
  source.manifest = dir.File("m.jsonl");
  source.task = "tts";
  const Dataset data({source}, 0.0, 0.0, "data.train", true, model.get());
  std::set<std::string> kept;
  for (size_t i = 0; i < data.Size(); ++i) kept.insert(data.Item(i).id);
  EXPECT_GT(kept.size(), 0u);
  EXPECT_LT(kept.size(), entries.size());
  EXPECT_EQ(data.Stats()[0].too_long, static_cast<int64_t>(entries.size() - kept.size()));
  // Kept exactly when the model can take the row (else the trainer would stop at that batch).
  for (const manifest::Entry& e : entries) {
    const TaskExample x = BuildTaskExample("tts", "Say: {text}", e, "/d", e.id);
    adapters::MultimodalExample row;
    row.prompt = x.prompt;
    row.target = x.target;
    bool fits = true;
    try {
      model->Prepare({row}, text::PaddingSide::kRight);
    } catch (const Error&) {
      fits = false;
    }
    EXPECT_EQ(fits, kept.count(e.id) == 1) << e.id << " units";
  }
}

TEST(TtsTask, WordCuedTemplatesNeedWordTimesAndSitAtTheEnd) {
  manifest::Entry e = DogBarks();
  const TaskExample x = BuildTaskExample("tts", "Say: {text} {words}", e, "/d", "w");
  EXPECT_EQ(x.prompt, "Say: a dog barks");
  EXPECT_TRUE(x.word_cued);
  EXPECT_FALSE(BuildTaskExample("tts", "Say: {text}", e, "/d", "w").word_cued);
  EXPECT_SLM_ERROR(CheckPromptTemplate("tts", "{words} Say: {text}"), "has {words} before its end");
  EXPECT_SLM_ERROR(CheckPromptTemplate("tts", "Say: {word_phonemes} now"), "has {word_phonemes} before its end");
  EXPECT_SLM_ERROR(CheckPromptTemplate("tts", "Say:"), "has no {text}, {phonemes}, {words} or {word_phonemes}");
  const TaskExample cued = BuildTaskExample("tts", "Say: {word_phonemes}", e, "/d", "w");
  EXPECT_EQ(cued.prompt, "Say:");
  EXPECT_TRUE(cued.word_cued);
  EXPECT_SLM_ERROR(CheckPromptTemplate("asr", "<speech> {words}"), "uses {words}, which only task tts has");
}

// One utterance "a dog barks" at the unit tokenizer's frame rate: each word has its own units.
struct WordCuedFixture {
  slm::testing::TempDir dir;
  adapters::MultimodalLM model{nullptr};
  std::string hash;
  std::vector<int64_t> units;
  manifest::Entry entry;
  WordCuedFixture() {
    audio::UnitTokenizerInfo info;
    info.feature = "mel";
    torch::manual_seed(2);
    const audio::UnitTokenizer tokenizer(torch::randn({kUnits, 80}), info);
    tokenizer.Save(dir.File("units"));
    hash = tokenizer.Hash();
    adapters::MultimodalConfig c;
    c.backbone = std::string(SLM_SOURCE_DIR) + "/samples/models/backbone_tiny";
    c.speech_units = dir.File("units");
    c.lora_enabled = true;
    c.lora.rank = 8;
    torch::manual_seed(5);
    model = adapters::MultimodalLM(c);
    const double rate = model->SpeechUnitsFrameRate();
    // Word times in seconds; the pause before "barks" is said with "dog"; 12 frames at 100 Hz, one
    // unit each (all different, so that what follows each unit is learnable from one example).
    entry.id = "u1";
    entry.task = "tts";
    entry.text = "A dog barks.";
    entry.words = {{"A", 0.015, 0.035}, {"dog", 0.045, 0.07}, {"barks", 0.085, 0.105}};
    const int64_t frames = static_cast<int64_t>(std::lround(0.12 * rate));
    for (int64_t f = 0; f < frames; ++f) units.push_back(f % kUnits);
    entry.extra["units"] = nlohmann::json(units);
    entry.extra["unit_tokenizer"] = hash;
    manifest::Write(dir.File("m.jsonl"), {entry});
  }
};

TEST(TtsTask, WordCuedExamplesAreSaidWordByWordAndTheTrainedAdapterSaysThemBack) {
  WordCuedFixture f;
  const text::Tokenizer& tok = f.model->Tokenizer();
  DataSourceConfig source;
  source.manifest = f.dir.File("m.jsonl");
  source.task = "tts";
  source.prompt = "Say: {text} {words}";
  const Dataset data({source}, 0.0, 0.0, "data.train", true, f.model.get());
  ASSERT_EQ(data.Size(), 1u);
  FeatureCache cache;
  const std::vector<adapters::MultimodalExample> rows = data.Materialize({0}, *f.model, cache, 0);
  ASSERT_EQ(rows.size(), 1u);
  const adapters::MultimodalExample& row = rows[0];
  // BOS "Say: A dog barks." then, per word, <text> word <speech> and its units, then EOS.
  std::vector<int64_t> expected = tok.Encode("Say: A dog barks.", true, false);
  EXPECT_EQ(row.score_from, static_cast<int64_t>(expected.size()));
  const int64_t text = tok.AddedTokenId(text::kTextMarker), speech = tok.AddedTokenId(text::kSpeechMarker);
  const double rate = f.model->SpeechUnitsFrameRate();
  const int64_t dog = static_cast<int64_t>(std::floor(0.045 * rate)), barks = static_cast<int64_t>(std::floor(0.085 * rate));
  size_t next = 0;
  for (const auto& [word, end] : std::vector<std::pair<std::string, int64_t>>{
           {"A", dog}, {"dog", barks}, {"barks", static_cast<int64_t>(f.units.size())}}) {
    expected.push_back(text);
    for (const int64_t id : tok.Encode(word, false, false)) expected.push_back(id);
    expected.push_back(speech);
    for (; static_cast<int64_t>(next) < end; ++next) expected.push_back(f.model->UnitTokenId(f.units[next]));
  }
  expected.push_back(tok.EosId());
  EXPECT_EQ(row.tokens, expected);

  // {word_phonemes}: the cue is the word's pronunciation.
  DataSourceConfig phonemes = source;
  phonemes.prompt = "Say: {text} {word_phonemes}";
  const Dataset said_data({phonemes}, 0.0, 0.0, "data.train", true, f.model.get());
  const std::vector<adapters::MultimodalExample> said_rows = said_data.Materialize({0}, *f.model, cache, 0);
  const std::string dog_said = audio::EspeakSynthesizer::Instance().Phonemize({"dog"}, "en-us")[0];
  std::vector<int64_t> dog_cue = {text};
  for (const int64_t id : tok.Encode(dog_said, false, false)) dog_cue.push_back(id);
  dog_cue.push_back(speech);
  EXPECT_NE(std::search(said_rows[0].tokens.begin(), said_rows[0].tokens.end(), dog_cue.begin(), dog_cue.end()),
            said_rows[0].tokens.end())
      << "no cue '" << dog_said << "'";

  // Trained on that one row, the pipeline (word by word, greedy) says exactly its units.
  torch::optim::AdamW optimizer(f.model->TrainableParameters(), torch::optim::AdamWOptions(0.01));
  f.model->train();
  double first = 0, last = 0;
  for (int step = 0; step < 100; ++step) {
    optimizer.zero_grad();
    torch::Tensor loss = f.model->Loss(f.model->Prepare(data.Materialize({0}, *f.model, cache, 0), text::PaddingSide::kRight));
    (step == 0 ? first : last) = loss.item<double>();
    loss.backward();
    optimizer.step();
  }
  EXPECT_LT(last, first / 4);
  f.model->eval();
  audio::UnitDecoderConfig d;
  d.k = kUnits;
  d.dim = 16;
  d.layers = 1;
  d.tokenizer_hash = f.hash;
  audio::LogMelOptions mel;
  mel.normalization = audio::MelNormalization::kFixedFloor;
  adapters::TtsPipeline tts(f.model, audio::UnitDecoder(d), std::make_shared<audio::GriffinLimVocoder>(mel));
  adapters::TtsOptions options;
  options.prompt_template = source.prompt;
  const adapters::TtsResult said = tts.Synthesize("A dog barks.", options);
  EXPECT_EQ(said.unit_ids, f.units);
  EXPECT_EQ(said.units, static_cast<int64_t>(f.units.size()));
  EXPECT_EQ(said.finish_reasons, (std::vector<std::string>{"stop"}));
  EXPECT_SLM_ERROR(tts.Synthesize("... !", options), "has no words to say");
}


// A tts run whose model.unit_decoder does not exist stops before it trains, naming the path,
// not at the round-trip evaluation after the training.
TEST(TtsTask, AMissingUnitDecoderIsFoundBeforeTraining) {
  WordCuedFixture f;
  const std::string yaml =
      "model:\n  backbone: " + std::string(SLM_SOURCE_DIR) + "/samples/models/backbone_tiny\n  speech_units: " +
      f.dir.File("units") + "\n  unit_decoder: " + f.dir.File("no_decoder") +
      "\ndata:\n  train:\n    - {manifest: " + f.dir.File("m.jsonl") + ", task: tts}\n  valid:\n    - {manifest: " +
      f.dir.File("m.jsonl") + ", task: tts}\ntrain: {steps: 2, batch_size: 1}\neval: {asr_encoder: enc}\n"
      "threads: 1\noutput_dir: " + f.dir.File("run") + "\n";
  auto doc = config::Document::LoadString(yaml, "tts.yaml");
  TrainConfig c;
  c.Load(doc.Root());
  EXPECT_SLM_ERROR(Train(c, yaml, false, true), "model.unit_decoder '" + f.dir.File("no_decoder") + "': no decoder.json");
  EXPECT_FALSE(std::filesystem::exists(f.dir.File("run/adapters")));
}

}  // namespace
}  // namespace slm::train
