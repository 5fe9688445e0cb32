// Interleaved speech-text data (train/interleave.h): span selection, sequence layout, stream
// shares, packing, the checks on alignments, the dataset that builds each epoch's packed rows, and
// the likelihood-pair evaluation.
#include "train/interleave.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <numeric>
#include <sstream>

#include "audio/audio_io.h"
#include "audio/units.h"
#include "tests/test_util.h"
#include "train/dataset.h"
#include "train/trainer.h"

namespace slm::train {
namespace {

// Spans of consecutive speech words: (start, length).
std::vector<std::pair<int64_t, int64_t>> Spans(const std::vector<bool>& speech) {
  std::vector<std::pair<int64_t, int64_t>> spans;
  for (size_t i = 0; i < speech.size();) {
    if (!speech[i]) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < speech.size() && speech[j]) ++j;
    spans.emplace_back(i, j - i);
    i = j;
  }
  return spans;
}

TEST(Interleave, PoissonSpansCoverEtaOfTheWordsWithMeanLengthLambda) {
  InterleaveOptions o;  // poisson, lambda 10, eta 0.3
  std::mt19937_64 rng(InterleaveSeed(1, 0, "a"));
  const std::vector<bool> speech = SelectSpeechWords(2000, o, rng);
  const int64_t spoken = std::count(speech.begin(), speech.end(), true);
  EXPECT_EQ(spoken, 600);
  const auto spans = Spans(speech);
  const double mean = double(spoken) / double(spans.size());
  EXPECT_GT(mean, 8.5);  // Poisson(10) clipped at >= 1, the last span cut to what is left
  EXPECT_LT(mean, 11.5);
  // Same seed, same spans; another epoch, other spans.
  std::mt19937_64 again(InterleaveSeed(1, 0, "a")), other(InterleaveSeed(1, 1, "a"));
  EXPECT_EQ(SelectSpeechWords(2000, o, again), speech);
  EXPECT_NE(SelectSpeechWords(2000, o, other), speech);
}

TEST(Interleave, ShortSentencesKeepBothModalitiesAndSpansNeverTouch) {
  InterleaveOptions o;
  for (int64_t n : {2, 3, 5, 10, 12}) {
    for (uint64_t seed = 1; seed <= 50; ++seed) {
      std::mt19937_64 rng(seed);
      const std::vector<bool> speech = SelectSpeechWords(n, o, rng);
      const int64_t spoken = std::count(speech.begin(), speech.end(), true);
      EXPECT_EQ(spoken, std::clamp<int64_t>(std::llround(0.3 * n), 1, n - 1)) << n;
    }
  }
  std::mt19937_64 one(3);
  EXPECT_EQ(SelectSpeechWords(1, o, one), std::vector<bool>{true});
  // Fixed-length spans: never adjacent, so separated by at least one written word.
  o.selection = "span";
  o.span = 5;
  std::mt19937_64 rng(7);
  const auto spans = Spans(SelectSpeechWords(100, o, rng));
  ASSERT_EQ(spans.size(), 6u);
  for (const auto& [start, length] : spans) EXPECT_EQ(length, 5);
}

TEST(Interleave, RandomSelectionSpeaksEachWordWithProbabilityP) {
  InterleaveOptions o;
  o.selection = "random";
  o.p = 0.25;
  std::mt19937_64 rng(5);
  const std::vector<bool> speech = SelectSpeechWords(20000, o, rng);
  EXPECT_NEAR(std::count(speech.begin(), speech.end(), true) / 20000.0, 0.25, 0.015);
}

// Three words at 10 unit frames per second: "a" [0.0, 0.2], "big" [0.2, 0.55], "dog" [0.6, 0.9].
InterleaveIds TestIds() {
  InterleaveIds ids;
  ids.bos = 1;
  ids.eos = 2;
  ids.speech_marker = 3;
  ids.text_marker = 4;
  ids.unit = [](int64_t u) { return 1000 + u; };
  return ids;
}

std::vector<manifest::Word> ThreeWords() {
  return {{"a", 0.0, 0.2}, {"big", 0.2, 0.55}, {"dog", 0.6, 0.9}};
}

std::vector<int64_t> FakeTokens(const std::string& word) {  // one token per letter, 100 + letter
  std::vector<int64_t> ids;
  for (char c : word) ids.push_back(100 + (c - 'a'));
  return ids;
}

TEST(Interleave, SequencesSwitchModalityWithAMarkerAndTakeTheUnitsOfTheSpokenWords) {
  const std::vector<int64_t> units = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  const AlignedUtterance u = AlignUtterance("x", ThreeWords(), units, {}, 10.0, 1.0, FakeTokens, "m: entry 'x'");
  ASSERT_EQ(u.Words(), 3);
  EXPECT_EQ(u.word_frames[1], (std::pair<int64_t, int64_t>{2, 6}));  // [floor(2.0), ceil(5.5))
  const InterleaveIds ids = TestIds();
  SequenceStats stats;
  const std::vector<int64_t> mixed = BuildSequence(u, {false, true, false}, ids, &stats);
  EXPECT_EQ(mixed, (std::vector<int64_t>{1, 4, 100, 3, 1002, 1003, 1004, 1005, 4, 103, 114, 106, 2}));
  EXPECT_EQ(stats.switches, 2);
  EXPECT_EQ(stats.speech_words, 1);
  EXPECT_EQ(stats.unit_tokens, 4);
  EXPECT_EQ(stats.text_tokens, 4);
  EXPECT_EQ(stats.marker_tokens, 3);
  // Speech only: the units from the first word's start to the last word's end.
  EXPECT_EQ(BuildSequence(u, {true, true, true}, ids),
            (std::vector<int64_t>{1, 3, 1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 2}));
  EXPECT_EQ(BuildSequence(u, {false, false, false}, ids),
            (std::vector<int64_t>{1, 4, 100, 101, 108, 106, 103, 114, 106, 2}));

  // Deduplicated units: runs with durations; a span takes the runs that start inside it.
  const AlignedUtterance runs =
      AlignUtterance("y", ThreeWords(), {7, 8, 9}, {3, 4, 3}, 10.0, -1, FakeTokens, "m: entry 'y'");
  EXPECT_EQ(runs.unit_start, (std::vector<int64_t>{0, 3, 7}));
  std::vector<int64_t> out;
  AppendSpan(runs, 1, 3, true, ids, out);  // frames [2, 9): the runs starting at 3 and 7
  EXPECT_EQ(out, (std::vector<int64_t>{1008, 1009}));
}

TEST(Interleave, BadAlignmentsAreClearErrors) {
  const std::vector<int64_t> units(10, 1);
  auto align = [&](std::vector<manifest::Word> words, std::vector<int64_t> u, std::vector<int64_t> d, double audio) {
    return slm::testing::ErrorOf([&] { AlignUtterance("x", words, u, d, 10.0, audio, FakeTokens, "m.jsonl: entry 'x'"); });
  };
  EXPECT_NE(align({}, units, {}, -1).find("m.jsonl: entry 'x': no \"words\""), std::string::npos);
  EXPECT_NE(align({{"a", 0.0, 0.5}, {"b", 0.3, 0.6}}, units, {}, -1).find("overlaps words[1] 'b'"), std::string::npos);
  EXPECT_NE(align(ThreeWords(), units, {}, 0.7).find("after the end of the audio (0.7 s)"), std::string::npos);
  EXPECT_NE(align(ThreeWords(), {1, 2, 3, 4, 5}, {}, -1).find("the unit sequence is shorter than the alignment implies"),
            std::string::npos);
  EXPECT_NE(align(ThreeWords(), {1, 2}, {5}, -1).find("1 unit_durations for 2 units"), std::string::npos);
  EXPECT_NE(align({{"", 0.0, 0.1}}, units, {}, -1).find("words[0] has no text"), std::string::npos);
  EXPECT_NE(align(ThreeWords(), {}, {}, -1).find("no \"units\""), std::string::npos);
  // Times within the 10 ms slack of aligners' rounding are accepted.
  EXPECT_EQ(align({{"a", 0.0, 0.305}, {"b", 0.3, 0.6}}, units, {}, 0.605), "");
}

TEST(Interleave, StreamProbabilitiesGiveTheTokenShares) {
  InterleaveOptions o;  // 0.20 / 0.54 / 0.25
  const double mean[3] = {12, 60, 150};
  const std::vector<double> q = StreamProbabilities(o, mean);
  EXPECT_NEAR(q[0] + q[1] + q[2], 1.0, 1e-12);
  const double tokens[3] = {q[0] * mean[0], q[1] * mean[1], q[2] * mean[2]};
  const double total = tokens[0] + tokens[1] + tokens[2];
  EXPECT_NEAR(tokens[0] / total, 0.20 / 0.99, 1e-9);
  EXPECT_NEAR(tokens[1] / total, 0.54 / 0.99, 1e-9);
  EXPECT_NEAR(tokens[2] / total, 0.25 / 0.99, 1e-9);
  o.text_share = o.interleaved_share = 0;  // speech only
  EXPECT_EQ(StreamProbabilities(o, mean), (std::vector<double>{0, 0, 1}));
}

TEST(Interleave, PackingIsFirstFitAndGivesOverlongSequencesARowOfTheirOwn) {
  const auto rows = PackByLength({6, 3, 4, 1, 9, 2}, 8);
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[0], (std::vector<size_t>{0, 3}));
  EXPECT_EQ(rows[1], (std::vector<size_t>{1, 2}));
  EXPECT_EQ(rows[2], (std::vector<size_t>{4}));  // 9 > 8: alone, and nothing joins it
  EXPECT_EQ(rows[3], (std::vector<size_t>{5}));  // 2 fits no earlier row
  EXPECT_EQ(PackByLength({6, 3, 4, 1, 9, 2}, 9)[0], (std::vector<size_t>{0, 1}));
  EXPECT_SLM_ERROR(PackByLength({1}, 0), "context length 0");
}

// The dataset over a model with units: packed rows, per-epoch sequences, statistics and the pair
// evaluation, on the committed starter backbone with 12 mel units.
const std::string kBackbone = std::string(SLM_SOURCE_DIR) + "/samples/models/backbone_tiny";

struct InterleavedData {
  slm::testing::TempDir dir;
  std::string units, manifest;
  InterleavedData() {
    torch::manual_seed(3);
    audio::UnitTokenizerInfo info;  // mel units: 100 frames per second
    audio::UnitTokenizer(torch::randn({12, 80}), info).Save(dir.File("units"));
    units = dir.File("units");
    std::vector<manifest::Entry> entries;
    const char* sentences[] = {"the cat sat on the mat", "a dog ran to the park today", "birds sing in the tall trees",
                               "we walk home after school", "rain falls on the old roof", "my friend reads a long book"};
    for (int s = 0; s < 6; ++s) {
      manifest::Entry e;
      e.id = "u" + std::to_string(s);
      e.task = "interleaved";
      e.text = sentences[s];
      std::istringstream words(e.text);
      std::string w;
      double t = 0.05;
      while (words >> w) {
        e.words.push_back({w, t, t + 0.08 * double(w.size())});
        t += 0.08 * double(w.size()) + 0.02;
      }
      nlohmann::json ids = nlohmann::json::array();
      for (int f = 0; f < int(t * 100) + 2; ++f) ids.push_back((f / 3 + s) % 12);
      e.extra["units"] = ids;
      entries.push_back(e);
    }
    manifest::Entry bad = entries[0];  // the alignment runs past its units
    bad.id = "bad";
    bad.extra["units"] = nlohmann::json::array({1, 2, 3});
    entries.push_back(bad);
    manifest = dir.File("m.jsonl");
    manifest::Write(manifest, entries);
  }
  adapters::MultimodalConfig UnitModel() const {  // the starter backbone reading these units
    adapters::MultimodalConfig mc;
    mc.backbone = kBackbone;
    mc.speech_units = units;
    return mc;
  }
  DataSourceConfig Source() const {
    DataSourceConfig source;
    source.manifest = manifest;
    source.task = "interleaved";
    return source;
  }
};

TEST(InterleavedDataset, EpochsPackTheirOwnSequencesAndBadAlignmentsAreSkippedWithACount) {
  const InterleavedData data;
  adapters::MultimodalLM model(data.UnitModel());
  DataSourceConfig source = data.Source();
  source.interleave.seed = 5;
  source.interleave.context_length = 200;
  const Dataset d({source}, 0.0, 0.0, "data.train", true, model.get());
  ASSERT_EQ(d.Size(), 6u);
  EXPECT_EQ(d.Stats()[0].bad_alignment, 1);
  EXPECT_EQ(d.StreamProbabilitiesOf(0).size(), 3u);

  FeatureCache cache;
  std::vector<int64_t> all(6);
  std::iota(all.begin(), all.end(), 0);
  const auto epoch0 = d.Materialize(all, *model, cache, 0);
  const auto again = d.Materialize(all, *model, cache, 0);
  const auto epoch1 = d.Materialize(all, *model, cache, 1);
  ASSERT_FALSE(epoch0.empty());
  EXPECT_LT(epoch0.size(), 6u);  // packed: several sequences per row
  int64_t tokens0 = 0, tokens1 = 0;
  for (size_t r = 0; r < epoch0.size(); ++r) {
    EXPECT_EQ(epoch0[r].tokens, again[r].tokens);
    EXPECT_LE(epoch0[r].tokens.size(), 200u);
    tokens0 += static_cast<int64_t>(epoch0[r].tokens.size());
  }
  for (const auto& e : epoch1) tokens1 += static_cast<int64_t>(e.tokens.size());
  bool differs = tokens0 != tokens1 || epoch0.size() != epoch1.size();
  for (size_t r = 0; !differs && r < epoch0.size(); ++r) differs = epoch0[r].tokens != epoch1[r].tokens;
  EXPECT_TRUE(differs) << "epoch 1 should draw other streams or spans";

  // Labels: every token after a BOS position; the BOS of each packed sequence is not predicted.
  const adapters::MultimodalBatch batch = model->Prepare(epoch0, text::PaddingSide::kRight);
  int64_t bos = 0, total = 0;
  for (const auto& e : epoch0) {
    total += static_cast<int64_t>(e.tokens.size());
    bos += std::count(e.tokens.begin(), e.tokens.end(), model->Tokenizer().BosId());
  }
  EXPECT_EQ(bos, 6);
  EXPECT_EQ(batch.target_tokens, total - bos);
  EXPECT_TRUE(std::isfinite(model->Loss(batch).item<double>()));

  // Batches by tokens: at most batch_size rows' worth of tokens per batch; every item once.
  const auto batches = d.EpochBatches(9, 0, /*batch_size=*/1);
  size_t items = 0;
  for (const auto& b : batches) {
    items += b.size();
    int64_t tokens = 0;
    for (const auto& e : d.Materialize(b, *model, cache, 0)) tokens += static_cast<int64_t>(e.tokens.size());
    if (b.size() > 1) EXPECT_LE(tokens, 200);
  }
  EXPECT_EQ(items, 6u);
  DataSourceConfig speech_only = source;  // every sequence fills a 200-token row: one item per batch
  speech_only.interleave.text_share = speech_only.interleave.interleaved_share = 0;
  const Dataset s({speech_only}, 0.0, 0.0, "data.train", true, model.get());
  EXPECT_EQ(s.EpochBatches(9, 0, 1).size(), 6u);
  EXPECT_EQ(s.EpochBatches(9, 0, 3).size(), 2u);

  const SequenceStats stats = d.InterleaveStats(*model, 0);
  EXPECT_EQ(stats.sequences[0] + stats.sequences[1] + stats.sequences[2], 6);
  EXPECT_EQ(stats.tokens[0] + stats.tokens[1] + stats.tokens[2], tokens0);
  const nlohmann::json j = stats.ToJson();
  EXPECT_TRUE(j.contains("token_share") && j.contains("mean_span_words") && j.contains("switches_per_sequence"));

  // A model without units cannot read interleaved data.
  adapters::MultimodalConfig plain;
  plain.backbone = kBackbone;
  adapters::MultimodalLM no_units(plain);
  EXPECT_SLM_ERROR(Dataset({source}, 0.0, 0.0, "data.train", true, no_units.get()), "needs a model with model.speech_units");
  EXPECT_SLM_ERROR(Dataset({source}, 0.0, 0.0, "data.train"), "needs the model's tokenizer");
}

TEST(InterleavedDataset, PairEvaluationReportsTheFourSettingsAndTheUntouchedBackbone) {
  const InterleavedData data;
  adapters::MultimodalLM model(data.UnitModel());
  const DataSourceConfig source = data.Source();
  const Dataset valid({source}, 0.0, 0.0, "data.valid", true, model.get());
  FeatureCache cache;
  EvalOptions eval;
  const nlohmann::json r = Evaluate(*model, valid, eval, cache).begin().value();
  EXPECT_EQ(r["task"], "interleaved");
  EXPECT_EQ(r["pairs"], 6);
  for (const char* key : {"S->S", "S->T", "T->S", "T->T", "Orig T->T"}) {
    ASSERT_TRUE(r.contains(key)) << key;
    EXPECT_GE(r[key].get<double>(), 0.0);
    EXPECT_LE(r[key].get<double>(), 1.0);
    EXPECT_EQ(r[std::string(key) + " pairs"], 6);
  }
  // "Orig" is the untouched backbone: its scores ignore what the unit rows learn. Make the unit
  // rows' head dominate the softmax: the adapted model's T->T NLLs change, Orig's do not.
  const nlohmann::json before = r;
  {
    torch::NoGradGuard no_grad;
    model->Backbone()->ExtraVocabularyParameters()[1].normal_(0.0, 3.0);
  }
  const nlohmann::json after = Evaluate(*model, valid, eval, cache).begin().value();
  EXPECT_EQ(after["Orig T->T"], before["Orig T->T"]);
  EXPECT_NE(after["loss"], before["loss"]);
  // The switch behind it: logits over the base vocabulary only, restored afterwards.
  EXPECT_TRUE(model->Backbone()->PredictsExtraVocabulary());
  const auto vocab = model->Backbone()->Config().vocab_size;
  text::LlamaInput input;
  input.input_ids = torch::tensor({{1, 5, 9}}, torch::kLong);
  torch::NoGradGuard no_grad;
  model->Backbone()->SetPredictsExtraVocabulary(false);
  EXPECT_EQ(model->Backbone()->forward(input).logits.size(-1), vocab);
  model->Backbone()->SetPredictsExtraVocabulary(true);
  EXPECT_EQ(model->Backbone()->forward(input).logits.size(-1), vocab + model->Backbone()->ExtraVocabulary());
}

// Frames mode: speech spans are the speech encoder's projected frames of the span's audio,
// spliced after each <speech> marker; no units needed.
TEST(InterleavedDataset, FramesModeSplicesTheAudioOfEachSpokenSpan) {
  InterleavedData data;
  // Recordings for the entries: 1.2 s of a varying tone each, longer than every alignment.
  const manifest::Manifest m = manifest::Read(data.manifest);
  std::vector<manifest::Entry> entries;
  for (manifest::Entry e : m.entries) {
    if (e.id == "bad") continue;
    std::vector<float> samples(16000 * 3);
    for (size_t i = 0; i < samples.size(); ++i) samples[i] = 0.3f * std::sin(0.05f * i + 0.00001f * i * i);
    audio::Write(data.dir.File(e.id + ".wav"), samples, 16000);
    e.audio = e.id + ".wav";
    e.extra.erase("units");
    entries.push_back(e);
  }
  manifest::Entry past_end = entries[0];  // a word after the end of its recording: skipped, counted
  past_end.id = "past_end";
  past_end.words.back().end = 3.5;
  entries.push_back(past_end);
  manifest::Write(data.manifest, entries);

  adapters::MultimodalConfig mc;
  mc.backbone = kBackbone;
  mc.speech.encoder = std::string(SLM_SOURCE_DIR) + "/samples/models/speech_encoder_tiny";
  mc.speech.projector.type = "stack_mlp";
  mc.speech.projector.stack = 4;
  adapters::MultimodalLM model(mc);
  DataSourceConfig source = data.Source();
  source.interleave.speech = "frames";
  source.interleave.seed = 2;
  source.interleave.text_share = 0.1;  // mostly spans of speech, so that clips appear
  const Dataset d({source}, 0.0, 0.0, "data.train", true, model.get());
  ASSERT_EQ(d.Size(), 6u);
  EXPECT_EQ(d.Stats()[0].bad_alignment, 1);
  FeatureCache cache;
  std::vector<int64_t> all(6);
  std::iota(all.begin(), all.end(), 0);
  int64_t clips = 0;
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    const auto rows = d.Materialize(all, *model, cache, epoch);
    for (const auto& row : rows) {
      const int64_t markers = std::count(row.tokens.begin(), row.tokens.end(), model->Tokenizer().AddedTokenId("<speech>"));
      EXPECT_EQ(markers, static_cast<int64_t>(row.speech.size()));
      clips += markers;
      for (const auto& clip : row.speech) EXPECT_GE(clip.size(0), 2);
    }
    const adapters::MultimodalBatch batch = model->Prepare(rows, text::PaddingSide::kRight);
    int64_t tokens = 0;
    for (const auto& row : rows) tokens += static_cast<int64_t>(row.tokens.size());
    EXPECT_GT(batch.inputs_embeds.size(1), 0);
    EXPECT_EQ(batch.target_tokens, tokens - 6);  // every id but the 6 BOS; spliced frames unlabelled
    for (size_t r = 0; r < rows.size(); ++r) EXPECT_LE(batch.lengths[r], 256);
  }
  EXPECT_GT(clips, 0);
  // Evaluation: spoken endings cannot be scored in frames mode.
  EvalOptions eval;
  const nlohmann::json r = Evaluate(*model, d, eval, cache).begin().value();
  EXPECT_TRUE(r["S->S"].is_null());
  EXPECT_TRUE(r["T->S"].is_null());
  EXPECT_EQ(r["S->T pairs"], 6);
  EXPECT_EQ(r["T->T"], r["Orig T->T"]);
  // A model without a speech encoder cannot read frames.
  adapters::MultimodalConfig text_only;
  text_only.backbone = kBackbone;
  adapters::MultimodalLM no_speech(text_only);
  EXPECT_SLM_ERROR(Dataset({source}, 0.0, 0.0, "data.train", true, no_speech.get()), "needs a model with a speech encoder");
}

TEST(InterleavedDataset, TheSampleConfigLoadsWithDataLevelOptionsAndTheRunSeed) {
  auto doc = config::Document::LoadFile(std::string(SLM_SOURCE_DIR) + "/samples/configs/interleaved_tiny.yaml");
  doc.ApplyOverrides({"seed=7", "data.interleave.shares.text=0"});
  TrainConfig c;
  c.Load(doc.Root());
  doc.CheckAllConsumed();
  ASSERT_EQ(c.data.train.size(), 2u);
  for (const auto* sources : {&c.data.train, &c.data.valid})
    for (const DataSourceConfig& s : *sources) {
      EXPECT_EQ(s.task, "interleaved");
      EXPECT_EQ(s.interleave.seed, 7u);                // the run's seed
      EXPECT_EQ(s.interleave.text_share, 0.0);         // data.interleave reaches every source
      EXPECT_DOUBLE_EQ(s.interleave.interleaved_share, 0.54);
      EXPECT_EQ(s.interleave.context_length, 256);
    }
}

TEST(InterleavedDataset, ConfigKeysAreCheckedWhereTheyAre) {
  auto load = [](const std::string& yaml) {
    return slm::testing::ErrorOf([&] {
      config::Document doc = config::Document::LoadString(yaml, "c.yaml");
      DataSourceConfig s;
      s.Load(doc.Root());
    });
  };
  EXPECT_EQ(load("{manifest: m.jsonl, task: interleaved, interleave: {selection: span, span: 3}}"), "");
  EXPECT_NE(load("{manifest: m.jsonl, task: asr, interleave: {eta: 0.3}}").find("applies to task interleaved only"),
            std::string::npos);
  EXPECT_NE(load("{manifest: m.jsonl, task: interleaved, interleave: {selection: zipf}}").find("zipf"), std::string::npos);
  EXPECT_NE(load("{manifest: m.jsonl, task: interleaved, interleave: {eta: 1.5}}").find("eta"), std::string::npos);
  EXPECT_NE(load("{manifest: m.jsonl, task: interleaved, interleave: {shares: {text: 0, interleaved: 0, speech: 0}}}")
                .find("must not all be 0"),
            std::string::npos);
}

}  // namespace
}  // namespace slm::train
