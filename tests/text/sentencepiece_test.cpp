#include "text/sentencepiece.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "tests/test_util.h"

namespace slm::text {
namespace {

// A few hundred varied sentences (with some non-ASCII words), deterministic.
void WriteCorpus(const std::string& path, int sentences = 400) {
  const std::vector<std::string> subjects = {
      "the cat",     "a small dog",        "my neighbour", "the old farmer", "every student",
      "a quick fox", "the tired engineer", "her brother",  "the café owner", "a naïve tourist"};
  const std::vector<std::string> verbs = {"reads",   "watches", "builds",  "paints",  "finds",
                                          "carries", "cooks",   "repairs", "forgets", "answers"};
  const std::vector<std::string> objects = {
      "a red book",       "the blue house",   "seven apples", "an old bicycle",
      "the wooden table", "a strange letter", "bright lamps", "the broken radio",
      "a crème brûlée",   "twelve green cups"};
  const std::vector<std::string> tails = {
      "every morning.", "before dinner.", "in the garden.",  "near the river.",  "with great care.",
      "on sunday.",     "quietly.",       "at the station.", "again and again.", "without a word."};
  std::mt19937 random(12345);
  auto pick = [&](const std::vector<std::string>& words) { return words[random() % words.size()]; };
  std::ofstream out(path);
  for (int i = 0; i < sentences; ++i) {
    out << pick(subjects) << " " << pick(verbs) << " " << pick(objects) << " " << pick(tails)
        << "\n";
  }
}

SentencePieceTrainOptions SmallOptions(const std::string& corpus, const std::string& prefix) {
  SentencePieceTrainOptions options;
  options.input = corpus;
  options.model_prefix = prefix;
  options.vocab_size = 200;
  options.hard_vocab_limit = false;  // docs/HAZARDS.md hazard 4: the corpus supports fewer pieces
  return options;
}

// One trained unigram model shared by the tests that only read it.
class SentencePieceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new slm::testing::TempDir();
    WriteCorpus(dir_->File("corpus.txt"));
    SentencePiece::Train(SmallOptions(dir_->File("corpus.txt"), dir_->File("unigram")));
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static std::string Corpus() { return dir_->File("corpus.txt"); }
  static std::string ModelPath() { return dir_->File("unigram.model"); }

  static slm::testing::TempDir* dir_;
};
slm::testing::TempDir* SentencePieceTest::dir_ = nullptr;

TEST_F(SentencePieceTest, TrainWritesModelAndVocab) {
  EXPECT_TRUE(std::filesystem::is_regular_file(ModelPath()));
  EXPECT_TRUE(std::filesystem::is_regular_file(dir_->File("unigram.vocab")));
  const SentencePiece sp = SentencePiece::Load(ModelPath());
  EXPECT_GT(sp.VocabSize(), 30);
  EXPECT_LE(sp.VocabSize(), 200);
  EXPECT_EQ(sp.Source(), ModelPath());
}

TEST_F(SentencePieceTest, SpecialIdsFollowTheOptions) {
  const SentencePiece sp = SentencePiece::Load(ModelPath());
  EXPECT_EQ(sp.UnkId(), 0);
  EXPECT_EQ(sp.BosId(), 1);
  EXPECT_EQ(sp.EosId(), 2);
  EXPECT_EQ(sp.PadId(), -1);
  EXPECT_EQ(sp.IdToPiece(0), "<unk>");
  EXPECT_EQ(sp.IdToPiece(1), "<s>");
  EXPECT_EQ(sp.IdToPiece(2), "</s>");
  EXPECT_TRUE(sp.IsUnknown(0));
  EXPECT_TRUE(sp.IsControl(1));
  EXPECT_TRUE(sp.IsControl(2));
  EXPECT_FALSE(sp.IsControl(3));
  EXPECT_FALSE(sp.IsByte(3));
}

TEST_F(SentencePieceTest, EncodeDecodeRoundTrip) {
  const SentencePiece sp = SentencePiece::Load(ModelPath());
  for (const std::string text :
       {"the cat paints seven apples near the river.", "a naïve tourist cooks a crème brûlée.",
        "every student answers twelve green cups quietly.", ""}) {
    const std::vector<int> ids = sp.Encode(text);
    EXPECT_EQ(sp.Decode(ids), text);
    for (const int id : ids) {
      EXPECT_GE(id, 3) << "no special or unknown token expected in '" << text << "'";
      EXPECT_LT(id, sp.VocabSize());
    }
  }
  EXPECT_TRUE(sp.Encode("").empty());
}

TEST_F(SentencePieceTest, PiecesConcatenateToTheText) {
  const SentencePiece sp = SentencePiece::Load(ModelPath());
  const std::string text = "her brother repairs the broken radio.";
  const std::vector<std::string> pieces = sp.EncodePieces(text);
  const std::vector<int> ids = sp.Encode(text);
  ASSERT_EQ(pieces.size(), ids.size());
  std::string joined;
  for (size_t i = 0; i < pieces.size(); ++i) {
    EXPECT_EQ(sp.IdToPiece(ids[i]), pieces[i]);
    joined += pieces[i];
  }
  // sentencepiece marks word starts with U+2581 (three bytes) in place of spaces.
  std::string expected = "\xE2\x96\x81" + text;
  for (size_t at = 0; (at = expected.find(' ', at)) != std::string::npos;) {
    expected.replace(at, 1, "\xE2\x96\x81");
  }
  EXPECT_EQ(joined, expected);
}

TEST_F(SentencePieceTest, PieceToIdInvertsIdToPiece) {
  const SentencePiece sp = SentencePiece::Load(ModelPath());
  for (int id = 0; id < sp.VocabSize(); ++id) EXPECT_EQ(sp.PieceToId(sp.IdToPiece(id)), id);
  EXPECT_EQ(sp.PieceToId("no-such-piece-in-this-vocabulary"), sp.UnkId());
}

TEST_F(SentencePieceTest, UnseenCharactersBecomeUnknown) {
  const SentencePiece sp = SentencePiece::Load(ModelPath());
  const std::vector<int> ids = sp.Encode("日本");
  ASSERT_FALSE(ids.empty());
  EXPECT_TRUE(std::any_of(ids.begin(), ids.end(), [&](int id) { return id == sp.UnkId(); }));
  EXPECT_NE(sp.Decode(ids).find("\xE2\x81\x87"), std::string::npos);  // U+2047, unk's surface
}

TEST_F(SentencePieceTest, ControlTokensDecodeToNothing) {
  const SentencePiece sp = SentencePiece::Load(ModelPath());
  std::vector<int> ids = sp.Encode("the cat reads.");
  ids.insert(ids.begin(), sp.BosId());
  ids.push_back(sp.EosId());
  EXPECT_EQ(sp.Decode(ids), "the cat reads.");
}

TEST_F(SentencePieceTest, LoadFromSerializedBytesMatchesLoad) {
  const SentencePiece from_file = SentencePiece::Load(ModelPath());
  std::ifstream in(ModelPath(), std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const SentencePiece from_bytes = SentencePiece::LoadFromSerialized(bytes, "tokenizer bytes");
  EXPECT_EQ(from_bytes.Source(), "tokenizer bytes");
  EXPECT_EQ(from_bytes.VocabSize(), from_file.VocabSize());
  const std::string text = "a quick fox finds a strange letter on sunday.";
  EXPECT_EQ(from_bytes.Encode(text), from_file.Encode(text));
}

TEST_F(SentencePieceTest, ConcurrentEncodeDecodeMatchesSerial) {
  const SentencePiece sp = SentencePiece::Load(ModelPath());
  std::vector<std::string> lines;
  {
    std::ifstream in(Corpus());
    for (std::string line; std::getline(in, line) && lines.size() < 200;) lines.push_back(line);
  }
  std::vector<std::vector<int>> expected;
  expected.reserve(lines.size());
  for (const std::string& line : lines) expected.push_back(sp.Encode(line));

  constexpr int kThreads = 4;
  std::vector<int> mismatches(kThreads, 0);
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 5; ++round) {
        for (size_t i = 0; i < lines.size(); ++i) {
          const std::vector<int> ids = sp.Encode(lines[i]);
          if (ids != expected[i] || sp.Decode(ids) != lines[i]) ++mismatches[t];
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(mismatches[t], 0) << "thread " << t;
}

TEST_F(SentencePieceTest, MoveTransfersTheModel) {
  SentencePiece first = SentencePiece::Load(ModelPath());
  const std::vector<int> ids = first.Encode("the cat");
  SentencePiece second = std::move(first);
  EXPECT_EQ(second.Encode("the cat"), ids);
  // Using a moved-from object is exactly what this checks.
  // NOLINTNEXTLINE(bugprone-use-after-move,clang-analyzer-cplusplus.Move)
  EXPECT_SLM_ERROR(first.Encode("the cat"), "moved from");
  first = std::move(second);
  EXPECT_EQ(first.Encode("the cat"), ids);
}

TEST_F(SentencePieceTest, OutOfRangeIdsAreErrorsNamingTheModel) {
  const SentencePiece sp = SentencePiece::Load(ModelPath());
  const int vocab = sp.VocabSize();
  EXPECT_SLM_ERROR(sp.Decode({3, vocab}), "cannot decode id " + std::to_string(vocab));
  EXPECT_SLM_ERROR(sp.Decode({-1}), ModelPath());
  EXPECT_SLM_ERROR(sp.IdToPiece(vocab), "out of range");
  EXPECT_SLM_ERROR(sp.IdToPiece(-5), ModelPath());
  EXPECT_SLM_ERROR(sp.IsControl(vocab + 100), "out of range");
}

TEST_F(SentencePieceTest, MissingModelIsAnError) {
  slm::testing::TempDir dir;
  const std::string path = dir.File("absent.model");
  EXPECT_SLM_ERROR(SentencePiece::Load(path), path);
  EXPECT_SLM_ERROR(SentencePiece::Load(path), "not found");
  EXPECT_SLM_ERROR(SentencePiece::Load(dir.path()), "not a regular file");
}

TEST_F(SentencePieceTest, CorruptModelIsAnError) {
  slm::testing::TempDir dir;
  std::ifstream in(ModelPath(), std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());

  const std::string truncated = dir.File("truncated.model");
  std::ofstream(truncated, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  EXPECT_SLM_ERROR(SentencePiece::Load(truncated), "corrupt sentencepiece model '" + truncated);

  const std::string text = dir.File("tokenizer.json");
  std::ofstream(text) << "{\"model\": {\"type\": \"BPE\", \"vocab\": {}}}";
  EXPECT_SLM_ERROR(SentencePiece::Load(text), "corrupt sentencepiece model '" + text);

  const std::string empty = dir.File("empty.model");
  std::ofstream(empty).close();
  EXPECT_SLM_ERROR(SentencePiece::Load(empty), "corrupt sentencepiece model '" + empty);

  // Parses as a protobuf (field 1, varint 1) but has no vocabulary.
  EXPECT_SLM_ERROR(SentencePiece::LoadFromSerialized(std::string("\x08\x01", 2), "tiny"),
                   "corrupt sentencepiece model 'tiny'");
}

TEST(SentencePieceTrainTest, UserDefinedSymbolsAreSingleTokens) {
  slm::testing::TempDir dir;
  WriteCorpus(dir.File("corpus.txt"));
  SentencePieceTrainOptions options = SmallOptions(dir.File("corpus.txt"), dir.File("bpe"));
  options.model_type = "bpe";
  options.pad_id = 3;
  options.user_defined_symbols = {"<speech>", "<image>"};
  SentencePiece::Train(options);
  const SentencePiece sp = SentencePiece::Load(dir.File("bpe.model"));
  EXPECT_EQ(sp.PadId(), 3);
  EXPECT_EQ(sp.IdToPiece(3), "<pad>");
  EXPECT_EQ(sp.PieceToId("<speech>"), 4);  // right after the special tokens, in order
  EXPECT_EQ(sp.PieceToId("<image>"), 5);
  const std::vector<std::string> pieces = sp.EncodePieces("<speech> the cat<image>");
  EXPECT_EQ(std::count(pieces.begin(), pieces.end(), "<speech>"), 1);
  EXPECT_EQ(pieces.back(), "<image>");
  const std::string text = "<speech> the cat reads a red book.<image>";
  EXPECT_EQ(sp.Decode(sp.Encode(text)), text);
}

TEST(SentencePieceTrainTest, ByteFallbackRoundTripsUnseenCharacters) {
  slm::testing::TempDir dir;
  WriteCorpus(dir.File("corpus.txt"));
  SentencePieceTrainOptions options = SmallOptions(dir.File("corpus.txt"), dir.File("bytes"));
  options.vocab_size = 400;
  options.byte_fallback = true;
  SentencePiece::Train(options);
  const SentencePiece sp = SentencePiece::Load(dir.File("bytes.model"));
  const std::string text = "the cat likes 日本 and ☕.";
  const std::vector<int> ids = sp.Encode(text);
  EXPECT_TRUE(std::any_of(ids.begin(), ids.end(), [&](int id) { return sp.IsByte(id); }));
  EXPECT_TRUE(std::none_of(ids.begin(), ids.end(), [&](int id) { return id == sp.UnkId(); }));
  EXPECT_EQ(sp.Decode(ids), text);
}

TEST(SentencePieceTrainTest, TrainingIsDeterministic) {
  slm::testing::TempDir dir;
  WriteCorpus(dir.File("corpus.txt"));
  auto vocabulary = [&](const std::string& prefix, int threads) {
    SentencePieceTrainOptions options = SmallOptions(dir.File("corpus.txt"), dir.File(prefix));
    options.seed = 7;
    options.num_threads = threads;
    SentencePiece::Train(options);
    const SentencePiece sp = SentencePiece::Load(dir.File(prefix + ".model"));
    std::vector<std::string> pieces(sp.VocabSize());
    for (int id = 0; id < sp.VocabSize(); ++id) pieces[id] = sp.IdToPiece(id);
    return pieces;
  };
  const std::vector<std::string> first = vocabulary("a", 1);
  EXPECT_EQ(vocabulary("b", 1), first);
  EXPECT_EQ(vocabulary("c", 2), first);
}

TEST(SentencePieceTrainTest, TrainingErrorsSayWhatToDo) {
  slm::testing::TempDir dir;
  WriteCorpus(dir.File("corpus.txt"));
  SentencePieceTrainOptions options = SmallOptions(dir.File("corpus.txt"), dir.File("m"));

  SentencePieceTrainOptions too_large = options;
  too_large.vocab_size = 5000;
  too_large.hard_vocab_limit = true;
  EXPECT_SLM_ERROR(SentencePiece::Train(too_large), "Vocabulary size too high");
  EXPECT_SLM_ERROR(SentencePiece::Train(too_large), "hard_vocab_limit=false");
  EXPECT_SLM_ERROR(SentencePiece::Train(too_large), dir.File("corpus.txt"));

  SentencePieceTrainOptions too_small = options;
  too_small.vocab_size = 10;
  EXPECT_SLM_ERROR(SentencePiece::Train(too_small), "Increase vocab_size");

  const std::string blank = dir.File("blank.txt");
  std::ofstream(blank) << "\n  \n\t\n";
  SentencePieceTrainOptions empty = options;
  empty.input = blank;
  EXPECT_SLM_ERROR(SentencePiece::Train(empty), "'" + blank + "' is empty");

  SentencePieceTrainOptions missing = options;
  missing.input = dir.File("absent.txt");
  EXPECT_SLM_ERROR(SentencePiece::Train(missing), "does not exist");

  SentencePieceTrainOptions bad_type = options;
  bad_type.model_type = "wordpiece";
  EXPECT_SLM_ERROR(SentencePiece::Train(bad_type), "not one of: unigram, bpe");

  SentencePieceTrainOptions clash = options;
  clash.pad_id = 2;
  EXPECT_SLM_ERROR(SentencePiece::Train(clash), "must be distinct");

  SentencePieceTrainOptions spaced = options;
  spaced.user_defined_symbols = {"two words"};
  EXPECT_SLM_ERROR(SentencePiece::Train(spaced), "whitespace");

  SentencePieceTrainOptions no_dir = options;
  no_dir.model_prefix = dir.File("no/such/dir/m");
  EXPECT_SLM_ERROR(SentencePiece::Train(no_dir), "does not exist");

  SentencePieceTrainOptions coverage = options;
  coverage.character_coverage = 0.5;
  EXPECT_SLM_ERROR(SentencePiece::Train(coverage), "character_coverage");

  EXPECT_FALSE(std::filesystem::exists(dir.File("m.model")));
}

TEST(SentencePieceTrainTest, PathsWithSpacesWork) {
  slm::testing::TempDir dir;
  std::filesystem::create_directories(dir.File("with space"));
  WriteCorpus(dir.File("with space/my corpus.txt"));
  SentencePiece::Train(
      SmallOptions(dir.File("with space/my corpus.txt"), dir.File("with space/my model")));
  const SentencePiece sp = SentencePiece::Load(dir.File("with space/my model.model"));
  EXPECT_EQ(sp.Decode(sp.Encode("the cat reads.")), "the cat reads.");
}

}  // namespace
}  // namespace slm::text
