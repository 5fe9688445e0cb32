// Parity of slm::text::Tokenizer on Hugging Face tokenizer.json files with the `tokenizers`
// package (tests/parity/make_hf_tokenizer_references.py, run first by ctest): for each family
// (GPT-2, Llama 3 and Qwen2 regexes, two sentencepiece-style conversions) the ids of every corpus
// line without and with special tokens, and the decoded text with and without skipping special
// tokens, must be identical. slm's markers and speech units are added on both sides.
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

std::string ReferenceDir() {
  const char* dir = std::getenv("SLM_PARITY_DIR");
  return std::string(dir ? dir : SLM_BINARY_DIR "/parity") + "/hf_tokenizer";
}

std::string Quote(const std::string& text) { return json(text).dump(); }

std::string Show(const std::vector<int64_t>& ids) { return json(ids).dump(); }

TEST(ParityHfTokenizer, IdsAndTextMatchTokenizersOnEveryFamily) {
  const std::vector<std::string> families = {"gpt2", "llama3", "qwen2", "llama2", "metaspace"};
  int64_t total_mismatches = 0;
  for (const std::string& family : families) {
    const std::string dir = ReferenceDir() + "/" + family;
    const json reference = json::parse(fs::ReadFile(dir + "/references.json"));
    text::TokenizerOptions options;
    options.num_speech_units = 8;
    const text::Tokenizer tokenizer = text::Tokenizer::Load(dir, options);
    ASSERT_STREQ(tokenizer.Format(), "tokenizer.json") << family;
    EXPECT_EQ(tokenizer.VocabSize(), reference.at("vocab_size").get<int64_t>()) << family;
    for (const auto& [token, id] : reference.at("slm_token_ids").items()) {
      EXPECT_EQ(tokenizer.AddedTokenId(token), id.get<int64_t>()) << family << " " << token;
    }

    const json& lines = reference.at("lines");
    int64_t ids_mismatches = 0, special_mismatches = 0, decode_mismatches = 0;
    int64_t decode_skip_mismatches = 0, random_mismatches = 0;
    int reported = 0;
    auto report = [&](const std::string& what, const std::string& detail) {
      if (reported++ < 8) ADD_FAILURE() << family << " " << what << ": " << detail;
    };
    for (size_t i = 0; i < lines.size(); ++i) {
      const std::string line = lines[i];
      const auto expected = reference.at("ids")[i].get<std::vector<int64_t>>();
      const std::vector<int64_t> ids = tokenizer.Encode(line, false, false);
      if (ids != expected) {
        ++ids_mismatches;
        report("ids", Quote(line) + " -> " + Show(ids) + ", tokenizers " + Show(expected));
      }
      const auto expected_special = reference.at("ids_special")[i].get<std::vector<int64_t>>();
      const std::vector<int64_t> special = tokenizer.EncodeWithSpecialTokens(line);
      if (special != expected_special) {
        ++special_mismatches;
        report("ids with special tokens",
               Quote(line) + " -> " + Show(special) + ", tokenizers " + Show(expected_special));
      }
      const std::string decoded = tokenizer.Decode(expected_special, false);
      if (decoded != reference.at("decoded")[i].get<std::string>()) {
        ++decode_mismatches;
        report("decode", Show(expected_special) + " -> " + Quote(decoded) + ", tokenizers " +
                             reference.at("decoded")[i].dump());
      }
      const std::string skipped = tokenizer.Decode(expected_special, true);
      if (skipped != reference.at("decoded_skip")[i].get<std::string>()) {
        ++decode_skip_mismatches;
        report("decode skipping special tokens", Show(expected_special) + " -> " + Quote(skipped) +
                                                     ", tokenizers " +
                                                     reference.at("decoded_skip")[i].dump());
      }
    }
    const json& random_ids = reference.at("random_ids");
    for (size_t i = 0; i < random_ids.size(); ++i) {
      const auto ids = random_ids[i].get<std::vector<int64_t>>();
      const std::string decoded = tokenizer.Decode(ids, false);
      const std::string skipped = tokenizer.Decode(ids, true);
      if (decoded != reference.at("random_decoded")[i].get<std::string>() ||
          skipped != reference.at("random_decoded_skip")[i].get<std::string>()) {
        ++random_mismatches;
        report("decode of random ids", Show(ids) + " -> " + Quote(decoded) + " / " +
                                           Quote(skipped) + ", tokenizers " +
                                           reference.at("random_decoded")[i].dump() + " / " +
                                           reference.at("random_decoded_skip")[i].dump());
      }
    }
    EXPECT_GE(lines.size(), 10000u) << family;
    std::printf(
        "parity tokenizer.json %-9s (tokenizers %s): %zu lines, mismatching lines: ids %lld, "
        "ids with special tokens %lld, decode %lld, decode skipping special %lld; random id "
        "lists %zu, mismatching %lld\n",
        family.c_str(), reference.at("tokenizers_version").get<std::string>().c_str(), lines.size(),
        static_cast<long long>(ids_mismatches), static_cast<long long>(special_mismatches),
        static_cast<long long>(decode_mismatches), static_cast<long long>(decode_skip_mismatches),
        random_ids.size(), static_cast<long long>(random_mismatches));
    total_mismatches += ids_mismatches + special_mismatches + decode_mismatches +
                        decode_skip_mismatches + random_mismatches;
  }
  EXPECT_EQ(total_mismatches, 0);
}

}  // namespace
}  // namespace slm
