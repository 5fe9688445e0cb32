#include "text/tokenizer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/fs.h"
#include "tests/test_util.h"

namespace slm::text {
namespace {

using Ids = std::vector<int64_t>;

// A few hundred varied sentences with some non-ASCII words, deterministic.
void WriteCorpus(const std::string& path) {
  const std::vector<std::string> subjects = {"the cat",         "a small dog",   "my neighbour",
                                             "the old farmer",  "every student", "the café owner",
                                             "a naïve tourist", "her brother"};
  const std::vector<std::string> verbs = {"reads", "watches", "builds", "paints",
                                          "finds", "carries", "cooks",  "repairs"};
  const std::vector<std::string> objects = {
      "a red book",       "the blue house",   "seven apples",   "12 old bikes",
      "the wooden table", "a strange letter", "a crème brûlée", "twelve green cups"};
  const std::vector<std::string> tails = {"every morning.",  "before dinner!",   "in the garden?",
                                          "near the river,", "with great care.", "on sunday."};
  std::mt19937 random(7);
  auto pick = [&](const std::vector<std::string>& words) { return words[random() % words.size()]; };
  std::ofstream out(path);
  for (int i = 0; i < 400; ++i) {
    out << pick(subjects) << " " << pick(verbs) << " " << pick(objects) << " " << pick(tails)
        << "\n";
  }
}

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

Ids ToIds(const std::vector<int>& ids) { return Ids(ids.begin(), ids.end()); }

// Two models shared by the tests: one trained by TrainTokenizer (markers inside the vocabulary,
// byte fallback) and a plain sentencepiece model without markers.
class TokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new slm::testing::TempDir();
    WriteCorpus(dir_->File("corpus.txt"));
    TokenizerTrainOptions options;
    options.input = dir_->File("corpus.txt");
    options.out_dir = dir_->File("trained");
    options.vocab_size = 400;
    options.hard_vocab_limit = false;
    TrainTokenizer(options);

    SentencePieceTrainOptions plain;
    plain.input = dir_->File("corpus.txt");
    plain.model_prefix = dir_->File("plain");
    plain.vocab_size = 150;
    plain.hard_vocab_limit = false;
    SentencePiece::Train(plain);
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static std::string Trained() { return dir_->File("trained"); }
  // A fresh directory holding a copy of the plain model as tokenizer.model.
  static std::string PlainDir(const slm::testing::TempDir& dir) {
    std::filesystem::copy_file(dir_->File("plain.model"), dir.File("tokenizer.model"));
    return dir.path();
  }

  static slm::testing::TempDir* dir_;
};
slm::testing::TempDir* TokenizerTest::dir_ = nullptr;

TEST_F(TokenizerTest, TrainTokenizerWritesALlamaStyleModelWithMarkersInside) {
  for (const char* name :
       {"tokenizer.model", "tokenizer.vocab", "added_tokens.json", "tokenizer_config.json"}) {
    EXPECT_TRUE(std::filesystem::is_regular_file(Trained() + "/" + name)) << name;
  }
  const Tokenizer tokenizer = Tokenizer::Load(Trained());
  EXPECT_EQ(tokenizer.UnkId(), 0);
  EXPECT_EQ(tokenizer.BosId(), 1);
  EXPECT_EQ(tokenizer.EosId(), 2);
  EXPECT_EQ(tokenizer.PadId(), -1);
  EXPECT_EQ(tokenizer.PaddingId(), 2);  // no PAD: EOS pads
  // user_defined_symbols take the ids right after the specials: no embedding rows to add.
  EXPECT_EQ(tokenizer.AddedTokenId("<speech>"), 3);
  EXPECT_EQ(tokenizer.AddedTokenId("<image>"), 4);
  EXPECT_EQ(tokenizer.AddedTokenId("<text>"), 5);
  EXPECT_EQ(tokenizer.VocabSize(), tokenizer.SentencePieceVocabSize());
  EXPECT_LE(tokenizer.VocabSize(), 400);
  EXPECT_TRUE(tokenizer.Model().IsByte(6));  // byte fallback pieces follow the markers
  EXPECT_EQ(tokenizer.IdToPiece(6), "<0x00>");
  // Nothing lies beyond the sentencepiece vocabulary.
  EXPECT_EQ(nlohmann::json::parse(fs::ReadFile(Trained() + "/added_tokens.json")),
            nlohmann::json::object());
}

TEST_F(TokenizerTest, TextWithoutAddedTokensEncodesExactlyAsSentencePiece) {
  const Tokenizer tokenizer = Tokenizer::Load(Trained());
  for (const std::string text : {"the cat reads a red book.", "  leading and trailing  ", "",
                                 "ünïcödé 東京 🙂 12345!?", "a < b > c <speech"}) {
    EXPECT_EQ(tokenizer.Encode(text, false, false), ToIds(tokenizer.Model().Encode(text))) << text;
  }
}

TEST_F(TokenizerTest, RoundTripsText) {
  const Tokenizer tokenizer = Tokenizer::Load(Trained());
  for (const std::string text :
       {"the cat reads a red book.", "every student paints 12 old bikes near the river, quietly!",
        "a crème brûlée for the café owner", "東京 and 🙂 are not in the corpus: bytes",
        "digits 0123456789 and punctuation ;:()[]{}"}) {
    const Ids ids = tokenizer.Encode(text, true, true);
    EXPECT_EQ(ids.front(), tokenizer.BosId());
    EXPECT_EQ(ids.back(), tokenizer.EosId());
    EXPECT_EQ(tokenizer.Decode(ids, true), text);
    // Rendered special tokens are followed by the word boundary of the text, as in transformers.
    EXPECT_EQ(tokenizer.Decode(ids, false), "<s> " + text + "</s>");
  }
  // Characters outside the corpus are byte pieces, not unk.
  for (const int64_t id : tokenizer.Encode("東京🙂", false, false)) {
    EXPECT_NE(id, tokenizer.UnkId());
  }
}

TEST_F(TokenizerTest, SplitsTextOnMarkersBeforeSentencePiece) {
  const Tokenizer tokenizer = Tokenizer::Load(Trained());
  const int64_t speech = tokenizer.AddedTokenId("<speech>");
  const int64_t image = tokenizer.AddedTokenId("<image>");
  Ids expected = {speech};
  for (const int id : tokenizer.Model().Encode(" Transcribe: the cat")) expected.push_back(id);
  const Ids ids = tokenizer.Encode("<speech> Transcribe: the cat", false, false);
  EXPECT_EQ(ids, expected);
  // sentencepiece on its own would emit a lone word boundary before the marker.
  EXPECT_NE(ToIds(tokenizer.Model().Encode("<speech> Transcribe: the cat")), ids);
  EXPECT_EQ(tokenizer.Decode(ids, false), "<speech> Transcribe: the cat");
  EXPECT_EQ(tokenizer.Decode(ids, true), "Transcribe: the cat");

  // Adjacent markers, and markers inside words.
  const Ids two = tokenizer.Encode("<image><speech>cat<text>", false, false);
  ASSERT_GE(two.size(), 4u);
  EXPECT_EQ(two[0], image);
  EXPECT_EQ(two[1], speech);
  EXPECT_EQ(two.back(), tokenizer.AddedTokenId("<text>"));
  EXPECT_EQ(tokenizer.Decode(two, false), "<image><speech> cat<text>");
  // Whitespace before a marker belongs to the segment before it, which sentencepiece trims.
  EXPECT_EQ(tokenizer.Encode("a <image>", false, false),
            tokenizer.Encode("a<image>", false, false));
  EXPECT_TRUE(tokenizer.IsSpecial(speech));
  EXPECT_TRUE(tokenizer.IsSpecial(tokenizer.BosId()));
  EXPECT_FALSE(tokenizer.IsSpecial(tokenizer.UnkId()));
  EXPECT_FALSE(tokenizer.IsSpecial(tokenizer.Encode("cat", false, false).back()));
}

TEST_F(TokenizerTest, AddsMarkersAndSpeechUnitsAfterAPlainVocabulary) {
  slm::testing::TempDir dir;
  TokenizerOptions options;
  options.num_speech_units = 4;
  const Tokenizer tokenizer = Tokenizer::Load(PlainDir(dir), options);
  const int64_t base = tokenizer.SentencePieceVocabSize();
  EXPECT_EQ(tokenizer.VocabSize(), base + 7);  // 3 markers + 4 units need new embedding rows
  EXPECT_EQ(tokenizer.AddedTokenId("<speech>"), base);
  EXPECT_EQ(tokenizer.AddedTokenId("<image>"), base + 1);
  EXPECT_EQ(tokenizer.AddedTokenId("<text>"), base + 2);
  EXPECT_EQ(tokenizer.NumSpeechUnits(), 4);
  EXPECT_EQ(tokenizer.SpeechUnitId(0), base + 3);
  EXPECT_EQ(tokenizer.SpeechUnitId(3), base + 6);
  EXPECT_EQ(tokenizer.IdToPiece(base + 6), "<u3>");
  EXPECT_EQ(tokenizer.PieceToId("<u2>"), base + 5);
  EXPECT_EQ(tokenizer.AddedTokens().size(), 7u);
  EXPECT_SLM_ERROR(tokenizer.SpeechUnitId(4), "reserves 4 units");
  EXPECT_SLM_ERROR(tokenizer.AddedTokenId("<video>"), "added tokens: <speech>, <image>, <text>");

  const Ids ids = tokenizer.Encode("<speech><u1><u3> the cat", false, false);
  ASSERT_GE(ids.size(), 4u);
  EXPECT_EQ((Ids{ids[0], ids[1], ids[2]}), (Ids{base, base + 4, base + 6}));
  EXPECT_EQ(tokenizer.Decode(ids, false), "<speech><u1><u3> the cat");
  EXPECT_EQ(tokenizer.Decode(ids, true), "the cat");
  // "<u10>" is not an added token (K = 4), so it is ordinary text.
  for (const int64_t id : tokenizer.Encode("<u10>", false, false)) EXPECT_LT(id, base);
  EXPECT_SLM_ERROR(tokenizer.Decode({base + 7}, true), "cannot decode id");
}

TEST_F(TokenizerTest, SaveAndLoadKeepIdsOfAddedTokens) {
  slm::testing::TempDir source;
  slm::testing::TempDir saved;
  TokenizerOptions options;
  options.num_speech_units = 3;
  const Tokenizer original = Tokenizer::Load(PlainDir(source), options);
  original.Save(saved.path());

  const nlohmann::json added = nlohmann::json::parse(fs::ReadFile(saved.File("added_tokens.json")));
  const int64_t base = original.SentencePieceVocabSize();
  EXPECT_EQ(added.at("<speech>"), base);
  EXPECT_EQ(added.at("<u2>"), base + 5);
  const nlohmann::json config =
      nlohmann::json::parse(fs::ReadFile(saved.File("tokenizer_config.json")));
  EXPECT_EQ(config.at("added_tokens_decoder").at(std::to_string(base + 3)).at("content"), "<u0>");
  EXPECT_EQ(config.at("eos_token"), "</s>");
  EXPECT_TRUE(config.at("pad_token").is_null());

  // Default options ask for no units: the saved ones come back all the same, with their ids.
  const Tokenizer reloaded = Tokenizer::Load(saved.path());
  EXPECT_EQ(reloaded.VocabSize(), original.VocabSize());
  EXPECT_EQ(reloaded.NumSpeechUnits(), 3);
  EXPECT_EQ(reloaded.SpeechUnitId(2), original.SpeechUnitId(2));
  const std::string text = "<image> the cat <u0> reads<u2>";
  EXPECT_EQ(reloaded.Encode(text, true, false), original.Encode(text, true, false));
  // Asking for more units appends them after the saved ones.
  TokenizerOptions more;
  more.num_speech_units = 5;
  const Tokenizer extended = Tokenizer::Load(saved.path(), more);
  EXPECT_EQ(extended.SpeechUnitId(4), base + 7);
  EXPECT_EQ(extended.VocabSize(), base + 8);
}

TEST_F(TokenizerTest, ReadsHuggingFaceAddedTokensDecoder) {
  slm::testing::TempDir dir;
  const std::string path = PlainDir(dir);
  const int64_t base = Tokenizer::Load(path, TokenizerOptions{{}, 0}).VocabSize();
  // Only tokenizer_config.json, with a non-special token and one inside the vocabulary.
  WriteText(dir.File("tokenizer_config.json"),
            nlohmann::json({{"added_tokens_decoder",
                             {{"1", {{"content", "<s>"}, {"special", true}}},
                              {std::to_string(base), {{"content", "<tool>"}, {"special", false}}},
                              {std::to_string(base + 1), {{"content", "<speech>"}}}}}})
                .dump());
  TokenizerOptions options;
  options.markers = {"<speech>", "<image>"};
  const Tokenizer tokenizer = Tokenizer::Load(path, options);
  EXPECT_EQ(tokenizer.AddedTokenId("<tool>"), base);
  EXPECT_EQ(tokenizer.AddedTokenId("<speech>"), base + 1);
  EXPECT_EQ(tokenizer.AddedTokenId("<image>"), base + 2);  // new: after the file's tokens
  EXPECT_EQ(tokenizer.VocabSize(), base + 3);
  // "<s>" listed in added_tokens_decoder is matched in text, as transformers does.
  EXPECT_EQ(tokenizer.Encode("<s><tool>", false, false), (Ids{1, base}));
  // Non-special added tokens survive skip_special_tokens.
  EXPECT_EQ(tokenizer.Decode({1, base, base + 1}, true), "<tool>");
  EXPECT_FALSE(tokenizer.IsSpecial(base));
}

TEST_F(TokenizerTest, RejectsInconsistentAddedTokenFiles) {
  slm::testing::TempDir dir;
  const std::string path = PlainDir(dir);
  const int64_t base = Tokenizer::Load(path, TokenizerOptions{{}, 0}).VocabSize();
  const std::string added = dir.File("added_tokens.json");
  const std::string config = dir.File("tokenizer_config.json");

  WriteText(added, nlohmann::json({{"<x>", base + 2}}).dump());
  EXPECT_SLM_ERROR(Tokenizer::Load(path),
                   "must be consecutive: the next free id is " + std::to_string(base));
  WriteText(added, nlohmann::json({{"<x>", base}}).dump());
  WriteText(config, nlohmann::json(
                        {{"added_tokens_decoder", {{std::to_string(base), {{"content", "<y>"}}}}}})
                        .dump());
  EXPECT_SLM_ERROR(Tokenizer::Load(path), "is '<x>' in '" + added + "' but '<y>' in '" + config);
  WriteText(config,
            nlohmann::json({{"added_tokens_decoder", {{"2", {{"content", "<x>"}}}}}}).dump());
  EXPECT_SLM_ERROR(Tokenizer::Load(path), "added token '<x>' has id");
  WriteText(config,
            nlohmann::json({{"added_tokens_decoder", {{"1", {{"content", "<b>"}}}}}}).dump());
  EXPECT_SLM_ERROR(Tokenizer::Load(path), "that id is the piece '<s>'");
  std::filesystem::remove(config);
  WriteText(added, "{\"<x>\": \"one\"}");
  EXPECT_SLM_ERROR(Tokenizer::Load(path), "the id of '<x>' must be an integer");
  WriteText(added, "{not json");
  EXPECT_SLM_ERROR(Tokenizer::Load(path), "cannot parse '" + added + "' as JSON");
}

TEST_F(TokenizerTest, SpecialIdsFollowTheModelDirectoryConfigs) {
  slm::testing::TempDir dir;
  const std::string path = PlainDir(dir);
  const Tokenizer plain = Tokenizer::Load(path);
  EXPECT_EQ(plain.EosIds(), (Ids{2}));

  WriteText(dir.File("config.json"),
            R"({"bos_token_id": 2, "eos_token_id": [5, 6], "pad_token_id": 0})");
  Tokenizer tokenizer = Tokenizer::Load(path);
  EXPECT_EQ(tokenizer.BosId(), 2);
  EXPECT_EQ(tokenizer.EosIds(), (Ids{5, 6}));
  EXPECT_EQ(tokenizer.EosId(), 5);
  EXPECT_EQ(tokenizer.PadId(), 0);
  EXPECT_EQ(tokenizer.PaddingId(), 0);
  EXPECT_EQ(tokenizer.Encode("cat", true, true).back(), 5);

  // generation_config.json overrides config.json; null overrides nothing.
  WriteText(dir.File("generation_config.json"), R"({"eos_token_id": 7, "bos_token_id": null})");
  tokenizer = Tokenizer::Load(path);
  EXPECT_EQ(tokenizer.BosId(), 2);
  EXPECT_EQ(tokenizer.EosIds(), (Ids{7}));

  // tokenizer_config.json's strings name the tokenizer's own tokens; its EOS goes first.
  WriteText(dir.File("tokenizer_config.json"),
            R"({"bos_token": {"content": "<s>", "special": true}, "eos_token": "</s>",
                "unk_token": "<unk>", "pad_token": null})");
  tokenizer = Tokenizer::Load(path);
  EXPECT_EQ(tokenizer.BosId(), 1);
  EXPECT_EQ(tokenizer.EosIds(), (Ids{2, 7}));
  EXPECT_EQ(tokenizer.PadId(), 0);
  EXPECT_TRUE(tokenizer.IsSpecial(7));  // an EOS is special even if it is an ordinary piece

  // Loading the model file instead of the directory reads the same side files.
  EXPECT_EQ(Tokenizer::Load(dir.File("tokenizer.model")).EosIds(), (Ids{2, 7}));
}

TEST_F(TokenizerTest, RejectsOutOfRangeOrMalformedConfigIds) {
  slm::testing::TempDir dir;
  const std::string path = PlainDir(dir);
  const int64_t vocab = Tokenizer::Load(path).VocabSize();
  const std::string config = dir.File("config.json");
  WriteText(config, nlohmann::json({{"eos_token_id", vocab}}).dump());
  EXPECT_SLM_ERROR(Tokenizer::Load(path), "'" + config + "': eos_token_id = " +
                                              std::to_string(vocab) + " is out of range");
  WriteText(config, R"({"eos_token_id": [2, -1]})");
  EXPECT_SLM_ERROR(Tokenizer::Load(path), "eos_token_id[1] = -1 is out of range");
  WriteText(config, R"({"pad_token_id": "zero"})");
  EXPECT_SLM_ERROR(Tokenizer::Load(path), "pad_token_id must be an integer token id or null");
  WriteText(config, "{}");
  WriteText(dir.File("tokenizer_config.json"), R"({"eos_token": "<|eot|>"})");
  EXPECT_SLM_ERROR(Tokenizer::Load(path),
                   "eos_token: token '<|eot|>' is neither a piece of the sentencepiece model");
}

TEST_F(TokenizerTest, ExplainsMissingAndCorruptModels) {
  slm::testing::TempDir dir;
  EXPECT_SLM_ERROR(Tokenizer::Load(dir.path()),
                   "missing '" + dir.File("tokenizer.model") +
                       "': a Llama-family checkpoint directory needs its sentencepiece "
                       "tokenizer.model");
  // A directory with only a tokenizer.json reads it (tests/text/hf_tokenizer_test.cpp).
  WriteText(dir.File("tokenizer.json"), "{}");
  EXPECT_SLM_ERROR(Tokenizer::Load(dir.path()), "'" + dir.File("tokenizer.json") + "': model: is missing");
  std::filesystem::remove(dir.File("tokenizer.json"));
  EXPECT_SLM_ERROR(Tokenizer::Load(dir.File("nowhere.model")), "not found");
  WriteText(dir.File("tokenizer.model"), "this is not a protobuf");
  EXPECT_SLM_ERROR(Tokenizer::Load(dir.path()),
                   "corrupt sentencepiece model '" + dir.File("tokenizer.model") + "'");
}

TEST_F(TokenizerTest, RejectsIdsOutOfRange) {
  const Tokenizer tokenizer = Tokenizer::Load(Trained());
  const int64_t vocab = tokenizer.VocabSize();
  EXPECT_SLM_ERROR(tokenizer.Decode({5, vocab}, true),
                   "cannot decode id " + std::to_string(vocab) + " at position 1");
  EXPECT_SLM_ERROR(tokenizer.Decode({-1}, true), "cannot decode id -1 at position 0");
  EXPECT_SLM_ERROR(tokenizer.IdToPiece(vocab),
                   "IdToPiece: id " + std::to_string(vocab) + " is out of range");
}

TEST_F(TokenizerTest, ErrorsWhenBosOrEosIsMissing) {
  slm::testing::TempDir dir;
  SentencePieceTrainOptions options;
  options.input = dir_->File("corpus.txt");
  options.model_prefix = dir.File("tokenizer");
  options.vocab_size = 120;
  options.hard_vocab_limit = false;
  options.bos_id = -1;
  options.eos_id = -1;
  SentencePiece::Train(options);
  const Tokenizer tokenizer = Tokenizer::Load(dir.path());
  EXPECT_EQ(tokenizer.BosId(), -1);
  EXPECT_EQ(tokenizer.EosId(), -1);
  EXPECT_EQ(tokenizer.PaddingId(), tokenizer.UnkId());
  EXPECT_SLM_ERROR(tokenizer.Encode("cat", true, false), "has no BOS token");
  EXPECT_SLM_ERROR(tokenizer.Encode("cat", false, true), "has no EOS token");
  EXPECT_FALSE(tokenizer.Encode("cat", false, false).empty());
}

TEST_F(TokenizerTest, BatchEncodePadsLeftOrRight) {
  const Tokenizer tokenizer = Tokenizer::Load(Trained());
  const std::vector<std::string> texts = {"the cat", "a small dog reads a red book", ""};
  std::vector<Ids> rows;
  for (const auto& text : texts) rows.push_back(tokenizer.Encode(text, true, false));
  const int64_t longest = static_cast<int64_t>(rows[1].size());

  for (const PaddingSide side : {PaddingSide::kLeft, PaddingSide::kRight}) {
    BatchEncodeOptions options;
    options.padding_side = side;
    const BatchEncoding batch = tokenizer.BatchEncode(texts, options);
    ASSERT_EQ(batch.input_ids.sizes(), (std::vector<int64_t>{3, longest}));
    ASSERT_EQ(batch.attention_mask.sizes(), (std::vector<int64_t>{3, longest}));
    EXPECT_EQ(batch.input_ids.scalar_type(), torch::kLong);
    EXPECT_EQ(batch.attention_mask.scalar_type(), torch::kLong);
    for (int64_t b = 0; b < 3; ++b) {
      const int64_t length = static_cast<int64_t>(rows[b].size());
      const int64_t offset = side == PaddingSide::kLeft ? longest - length : 0;
      EXPECT_EQ(batch.attention_mask[b].sum().item<int64_t>(), length);
      for (int64_t t = 0; t < longest; ++t) {
        const bool real = t >= offset && t < offset + length;
        EXPECT_EQ(batch.attention_mask[b][t].item<int64_t>(), real ? 1 : 0);
        EXPECT_EQ(batch.input_ids[b][t].item<int64_t>(),
                  real ? rows[b][t - offset] : tokenizer.PaddingId());
      }
    }
  }
  BatchEncodeOptions limited;
  limited.max_length = longest - 1;
  EXPECT_SLM_ERROR(tokenizer.BatchEncode(texts, limited),
                   "text 1 has " + std::to_string(longest) +
                       " tokens, more than max_length=" + std::to_string(longest - 1));
  limited.max_length = longest;
  EXPECT_EQ(tokenizer.BatchEncode(texts, limited).input_ids.size(1), longest);
  const BatchEncoding empty = tokenizer.BatchEncode({});
  EXPECT_EQ(empty.input_ids.sizes(), (std::vector<int64_t>{0, 0}));
}

TEST_F(TokenizerTest, TrainTokenizerExplainsItsLimits) {
  slm::testing::TempDir dir;
  TokenizerTrainOptions options;
  options.input = dir_->File("corpus.txt");
  options.out_dir = dir.File("out");
  options.vocab_size = 200;
  EXPECT_SLM_ERROR(TrainTokenizer(options), "vocab_size 200 is too small: byte fallback needs 256");
  options.vocab_size = 5000;  // far more than 400 short sentences support
  EXPECT_SLM_ERROR(TrainTokenizer(options), "hard_vocab_limit=false");
  options.input = dir.File("missing.txt");
  EXPECT_SLM_ERROR(TrainTokenizer(options), "does not exist");
}

TEST_F(TokenizerTest, TrainsBpeAndReplacesStaleSideFiles) {
  slm::testing::TempDir dir;
  // A previous tokenizer's files in the output directory must not leak into the new one.
  WriteText(dir.File("added_tokens.json"), R"({"<old>": 99999})");
  TokenizerTrainOptions options;
  options.input = dir_->File("corpus.txt");
  options.out_dir = dir.path();
  options.vocab_size = 350;
  options.model_type = "bpe";
  options.hard_vocab_limit = false;
  options.markers = {"<speech>"};
  const Tokenizer trained = TrainTokenizer(options);
  EXPECT_EQ(trained.AddedTokenId("<speech>"), 3);
  const Tokenizer loaded = Tokenizer::Load(dir.path(), TokenizerOptions{{"<speech>"}, 0});
  EXPECT_EQ(loaded.AddedTokens().size(), 1u);
  EXPECT_EQ(loaded.Decode(loaded.Encode("the café owner cooks", false, false), true),
            "the café owner cooks");
}

}  // namespace
}  // namespace slm::text
