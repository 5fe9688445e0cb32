// Parity of slm::text::Tokenizer with independent Python references
// (tests/parity/make_tokenizer_references.py, run first by ctest): models trained by the Python
// `sentencepiece` package must encode and decode identically here, added tokens must split text
// as transformers' sentencepiece tokenizer does, and a model trained here by TrainTokenizer is
// checked by Python afterwards (make_tokenizer_references.py --check-cpp).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/fs.h"
#include "text/tokenizer.h"

namespace slm {
namespace {

using nlohmann::json;

std::string TokenizerDir() {
  const char* dir = std::getenv("SLM_PARITY_DIR");
  return std::string(dir ? dir : SLM_BINARY_DIR "/parity") + "/tokenizer";
}

json References() { return json::parse(fs::ReadFile(TokenizerDir() + "/references.json")); }

std::vector<int64_t> Ids(const json& array) { return array.get<std::vector<int64_t>>(); }

TEST(ParityTokenizer, IdsAndTextMatchPythonSentencePiece) {
  const json references = References();
  int compared = 0;
  for (const auto& [name, reference] : references.at("models").items()) {
    const text::Tokenizer tokenizer = text::Tokenizer::Load(TokenizerDir() + "/" + name + ".model");
    EXPECT_EQ(tokenizer.SentencePieceVocabSize(), reference.at("vocab_size")) << name;
    EXPECT_EQ(tokenizer.BosId(), reference.at("bos_id")) << name;
    EXPECT_EQ(tokenizer.EosId(), reference.at("eos_id")) << name;
    EXPECT_EQ(tokenizer.UnkId(), reference.at("unk_id")) << name;
    EXPECT_EQ(tokenizer.PadId(), reference.at("pad_id")) << name;
    for (const auto& [marker, id] : reference.at("marker_ids").items()) {
      EXPECT_EQ(tokenizer.AddedTokenId(marker), id) << name << " " << marker;
    }
    // Markers trained into the model need no new ids.
    EXPECT_EQ(tokenizer.VocabSize(), tokenizer.SentencePieceVocabSize()) << name;
    for (const json& sentence : reference.at("sentences")) {
      const std::string text = sentence.at("text");
      const std::vector<int64_t> expected = Ids(sentence.at("ids"));
      const std::vector<int64_t> ids = tokenizer.Encode(text, false, false);
      EXPECT_EQ(ids, expected) << name << ": '" << text << "'";
      std::vector<std::string> pieces;
      for (const int64_t id : ids) pieces.push_back(tokenizer.IdToPiece(id));
      EXPECT_EQ(pieces, sentence.at("pieces").get<std::vector<std::string>>()) << name;
      EXPECT_EQ(tokenizer.Decode(expected, true), sentence.at("decoded").get<std::string>())
          << name << ": '" << text << "'";
      ++compared;
    }
  }
  std::printf(
      "parity tokenizer: ids, pieces and decoded text identical to Python sentencepiece "
      "on %d sentences (unigram + bpe)\n",
      compared);
  EXPECT_EQ(compared, 48);
}

TEST(ParityTokenizer, AddedTokensSplitTextAsTransformersDoes) {
  const json references = References();
  int compared = 0;
  for (const auto& [name, reference] : references.at("models").items()) {
    const json& added = reference.at("with_added_tokens");
    if (added.contains("skipped")) GTEST_SKIP() << added.at("skipped").get<std::string>();
    text::TokenizerOptions options;
    options.num_speech_units = added.at("num_speech_units");
    const text::Tokenizer tokenizer =
        text::Tokenizer::Load(TokenizerDir() + "/" + name + ".model", options);
    EXPECT_EQ(tokenizer.VocabSize(), added.at("vocab_size")) << name;
    for (const auto& [token, id] : added.at("token_ids").items()) {
      EXPECT_EQ(tokenizer.AddedTokenId(token), id) << name << " " << token;
    }
    for (const json& sentence : added.at("sentences")) {
      const std::string text = sentence.at("text");
      EXPECT_EQ(tokenizer.Encode(text, false, false), Ids(sentence.at("ids")))
          << name << ": '" << text << "'";
      ++compared;
    }
  }
  std::printf(
      "parity tokenizer: ids with markers and speech units identical to transformers' "
      "sentencepiece tokenizer on %d sentences (unigram + bpe)\n",
      compared);
  EXPECT_EQ(compared, 22);
}

TEST(ParityTokenizer, WritesATrainedModelForPython) {
  // Checked afterwards by `make_tokenizer_references.py --check-cpp` (ctest fixture order).
  const json references = References();
  text::TokenizerTrainOptions options;
  options.input = TokenizerDir() + "/corpus.txt";
  options.out_dir = TokenizerDir() + "/cpp";
  options.vocab_size = 700;
  options.hard_vocab_limit = false;
  const text::Tokenizer tokenizer = text::TrainTokenizer(options);
  json written = {{"marker_ids", json::object()}, {"sentences", json::array()}};
  for (const std::string& marker : text::DefaultMarkers()) {
    written["marker_ids"][marker] = tokenizer.AddedTokenId(marker);
  }
  for (const json& sentence : references.at("models").at("unigram").at("sentences")) {
    const std::string text = sentence.at("text");
    const std::vector<int64_t> ids = tokenizer.Encode(text, false, false);
    written["sentences"].push_back(
        {{"text", text}, {"ids", ids}, {"decoded", tokenizer.Decode(ids, true)}});
  }
  fs::AtomicWriteString(options.out_dir + "/cpp_ids.json", written.dump(1));
  EXPECT_EQ(written["sentences"].size(), 24u);
  EXPECT_EQ(written["marker_ids"]["<speech>"], 3);
}

}  // namespace
}  // namespace slm
