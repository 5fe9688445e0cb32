// CTC-guided decoding (text/ctc_guide.h) on hand-made tokenizer.json vocabularies, one with
// sentencepiece-style "▁" word starts (Metaspace) and one with byte-level "Ġ" ones, a tiny random
// Llama and a stand-in acoustic scorer that hears one transcript for certain.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "tests/test_util.h"
#include "tests/text/tiny_llama.h"
#include "text/ctc_guide.h"
#include "text/generate.h"
#include "text/tokenizer.h"

namespace slm::text {
namespace {

using nlohmann::json;

const std::string kSpace = "\xE2\x96\x81";     // "▁"
const std::string kByteSpace = "\xC4\xA0";     // "Ġ"
const std::string kByteNewline = "\xC4\x8A";   // "Ċ"

json Special(int64_t id, const std::string& content) {
  return {{"id", id}, {"content", content}, {"special", true}, {"single_word", false},
          {"lstrip", false}, {"rstrip", false}, {"normalized", false}};
}

// A BPE tokenizer.json over `pieces` (ids in order, no merges: every character is its own piece
// when encoding) with `pre_tokenizer` and `decoder`, and pieces[0..specials) as special tokens.
std::shared_ptr<const Tokenizer> Load(const slm::testing::TempDir& dir, const std::vector<std::string>& pieces,
                                      int64_t specials, const json& pre_tokenizer, const json& decoder) {
  json vocab = json::object();
  json added = json::array();
  for (size_t i = 0; i < pieces.size(); ++i) {
    vocab[pieces[i]] = i;
    if (static_cast<int64_t>(i) < specials) added.push_back(Special(static_cast<int64_t>(i), pieces[i]));
  }
  const json tokenizer = {{"version", "1.0"},
                          {"truncation", nullptr},
                          {"padding", nullptr},
                          {"added_tokens", added},
                          {"normalizer", nullptr},
                          {"pre_tokenizer", pre_tokenizer},
                          {"post_processor", nullptr},
                          {"decoder", decoder},
                          {"model", {{"type", "BPE"}, {"unk_token", nullptr}, {"vocab", vocab}, {"merges", json::array()}}}};
  std::ofstream(dir.File("tokenizer.json"), std::ios::binary) << tokenizer.dump();
  return std::make_shared<const Tokenizer>(Tokenizer::Load(dir.path(), TokenizerOptions{{}, 0}));
}

std::vector<std::string> Letters() {
  std::vector<std::string> out;
  for (char c = 'a'; c <= 'z'; ++c) out.emplace_back(1, c);
  return out;
}

// Sentencepiece-style: "▁" starts a word; stop token "</s>" = 2.
std::shared_ptr<const Tokenizer> MetaspaceTokenizer(const slm::testing::TempDir& dir) {
  std::vector<std::string> pieces = {"<unk>", "<s>", "</s>", kSpace};
  for (const std::string& l : Letters()) pieces.push_back(l);
  for (const std::string& p : {std::string("'"), std::string(","), kSpace + "the", kSpace + "Cat", kSpace + "sat",
                               std::string("at"), std::string("'s"), std::string("<0x61>"), kSpace + "a,", kSpace + "a"})
    pieces.push_back(p);
  const json metaspace = {{"type", "Metaspace"}, {"replacement", kSpace}, {"prepend_scheme", "first"}, {"split", true}};
  return Load(dir, pieces, 3, metaspace, metaspace);
}

// GPT-2 style byte-level BPE: "Ġ" starts a word; stop token "<|endoftext|>" = 0.
std::shared_ptr<const Tokenizer> ByteLevelTokenizer(const slm::testing::TempDir& dir) {
  std::vector<std::string> pieces = {"<|endoftext|>"};
  for (const std::string& l : Letters()) pieces.push_back(l);
  for (const std::string& p : {kByteSpace, std::string("'"), std::string(","), kByteSpace + "the", kByteSpace + "Cat",
                               kByteSpace + "sat", std::string("at"), std::string("'s"), kByteNewline, kByteSpace + "a"})
    pieces.push_back(p);
  return Load(dir, pieces, 1, {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}},
              {{"type", "ByteLevel"}});
}

int64_t Id(const Tokenizer& t, const std::string& piece) {
  const int64_t id = t.PieceToId(piece);
  EXPECT_EQ(t.IdToPiece(id), piece);
  return id;
}

// An acoustic model certain of `transcript`: every hypothesis it does not begin with (or, in
// full, equal) costs the same large amount.
class CertainScorer : public SpokenScorer {
 public:
  explicit CertainScorer(std::string transcript) : transcript_(std::move(transcript)) {}
  double Prefix(const std::string& spoken) override { return transcript_.rfind(spoken, 0) == 0 ? 0.0 : -10.0; }
  double Full(const std::string& spoken) override { return spoken == transcript_ ? 0.0 : -10.0; }
  const std::string& Transcript() const override { return transcript_; }

 private:
  std::string transcript_;
};

TEST(CtcGuide, SpokenFormKeepsLettersAndApostrophes) {
  EXPECT_EQ(SpokenForm("  Didn't the CAT -- sit, 42 times?"), "didn't the cat sit times");
  EXPECT_EQ(SpokenForm("he didn'"), "he didn'");
  EXPECT_EQ(SpokenForm("caf\xC3\xA9 au lait"), "caf au lait");
  EXPECT_EQ(SpokenForm("?!"), "");
}

TEST(CtcGuide, WordStartsComeFromTheTokenizer) {
  slm::testing::TempDir meta_dir, byte_dir;
  const auto meta = MetaspaceTokenizer(meta_dir);
  const auto byte = ByteLevelTokenizer(byte_dir);
  EXPECT_EQ(WordStartMarker(*meta), kSpace);
  EXPECT_EQ(WordStartMarker(*byte), kByteSpace);

  const SpokenVocabulary m(*meta);
  EXPECT_EQ(m.Marker(), kSpace);
  EXPECT_EQ(m.Spelling(Id(*meta, kSpace + "Cat")), " cat");
  EXPECT_EQ(m.Spelling(Id(*meta, kSpace)), " ");
  EXPECT_EQ(m.Spelling(Id(*meta, "at")), "at");
  EXPECT_EQ(m.Spelling(Id(*meta, "'s")), "'s");
  EXPECT_EQ(m.Spelling(Id(*meta, ",")), "");
  EXPECT_EQ(m.Spelling(Id(*meta, kSpace + "a,")), "");
  EXPECT_EQ(m.Spelling(Id(*meta, "<0x61>")), "");  // a byte, not a spelling
  EXPECT_EQ(m.Spelling(2), "");                    // "</s>": special
  for (const SpokenVocabulary::Entry& e : m.Entries()) EXPECT_FALSE(e.spelling.empty()) << e.id;

  const SpokenVocabulary b(*byte);
  EXPECT_EQ(b.Marker(), kByteSpace);
  EXPECT_EQ(b.Spelling(Id(*byte, kByteSpace + "Cat")), " cat");
  EXPECT_EQ(b.Spelling(Id(*byte, kByteSpace)), " ");
  EXPECT_EQ(b.Spelling(Id(*byte, "at")), "at");
  EXPECT_EQ(b.Spelling(Id(*byte, kByteNewline)), "");
  EXPECT_EQ(b.Spelling(0), "");
}

TEST(CtcGuide, WeightZeroIsGreedyAndACertainScorerForcesItsTranscript) {
  for (const bool byte_level : {false, true}) {
    SCOPED_TRACE(byte_level ? "byte-level" : "metaspace");
    slm::testing::TempDir dir;
    const auto tokenizer = byte_level ? ByteLevelTokenizer(dir) : MetaspaceTokenizer(dir);
    const auto vocabulary = std::make_shared<const SpokenVocabulary>(*tokenizer);
    const std::vector<int64_t> stops = {byte_level ? 0 : 2};
    LlamaModel model = slm::testing::TinyLlama(slm::testing::TinyLlamaConfig(tokenizer->VocabSize()));
    const std::vector<std::vector<int64_t>> prompts = {{5, 9, 12}, {7}};
    GenerationOptions o;
    o.max_new_tokens = 16;
    o.stop_token_ids = stops;
    const GenerationResult plain = Generate(model, prompts, o);

    auto rows = [] {
      return std::vector<std::shared_ptr<SpokenScorer>>{std::make_shared<CertainScorer>("the cat sat"),
                                                        std::make_shared<CertainScorer>("the cat's at")};
    };
    GenerationOptions off = o;
    off.logits_processor = CtcGuidedDecoding(tokenizer, vocabulary, rows(), stops, {0.0, 4});
    EXPECT_EQ(Generate(model, prompts, off).tokens, plain.tokens);

    GenerationOptions guided = o;
    guided.logits_processor = CtcGuidedDecoding(tokenizer, vocabulary, rows(), stops, {100.0, 2});
    const GenerationResult heard = Generate(model, prompts, guided);
    EXPECT_EQ(SpokenForm(tokenizer->Decode(heard.tokens[0], true)), "the cat sat");
    EXPECT_EQ(SpokenForm(tokenizer->Decode(heard.tokens[1], true)), "the cat's at");
    EXPECT_NE(SpokenForm(tokenizer->Decode(plain.tokens[0], true)), "the cat sat");
  }
}

TEST(CtcGuide, RefusesBadOptionsAndBatches) {
  slm::testing::TempDir dir;
  const auto tokenizer = MetaspaceTokenizer(dir);
  const auto vocabulary = std::make_shared<const SpokenVocabulary>(*tokenizer);
  EXPECT_SLM_ERROR(CtcGuidedDecoding(tokenizer, vocabulary, {}, {2}, {1.0, 0}), "candidates must be >= 1, got 0");
  EXPECT_SLM_ERROR(CtcGuidedDecoding(tokenizer, vocabulary, {nullptr}, {2}, {1.0, 4}), "row 0 has no scorer");
  const LogitsProcessor one = CtcGuidedDecoding(tokenizer, vocabulary, {std::make_shared<CertainScorer>("a")}, {2}, {1.0, 4});
  torch::Tensor logits = torch::zeros({2, tokenizer->VocabSize()});
  EXPECT_SLM_ERROR(one(logits, {{}, {}}), "2 rows of logits for 1 scored utterances");
}

}  // namespace
}  // namespace slm::text
