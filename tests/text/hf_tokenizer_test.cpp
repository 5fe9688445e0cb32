// Tokenizer on Hugging Face tokenizer.json files: hand-made files whose expected ids were taken
// from the `tokenizers` package (0.23), file-format selection, persistence, special ids, and the
// errors for bad files. The large-corpus parity lives in tests/parity/hf_tokenizer_parity_test.cpp.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/fs.h"
#include "tests/test_util.h"
#include "text/tokenizer.h"

namespace slm::text {
namespace {

using nlohmann::json;
using Ids = std::vector<int64_t>;

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// A tokenizer.json with everything null but the model.
json Skeleton(json model) {
  return {{"version", "1.0"},          {"truncation", nullptr},
          {"padding", nullptr},        {"added_tokens", json::array()},
          {"normalizer", nullptr},     {"pre_tokenizer", nullptr},
          {"post_processor", nullptr}, {"decoder", nullptr},
          {"model", std::move(model)}};
}

json CharBpe() {
  return {{"type", "BPE"},
          {"dropout", nullptr},
          {"unk_token", "<unk>"},
          {"fuse_unk", false},
          {"byte_fallback", false},
          {"vocab",
           {{"<unk>", 0},
            {"a", 1},
            {"b", 2},
            {"c", 3},
            {"ab", 4},
            {"bc", 5},
            {"abc", 6},
            {"<0x78>", 7},
            {" ", 8},
            {"d", 9}}},
          {"merges", {"a b", "b c", "ab c"}}};
}

// Writes `tokenizer` as dir/tokenizer.json and loads the directory without markers.
Tokenizer LoadJson(const slm::testing::TempDir& dir, const json& tokenizer,
                   TokenizerOptions options = TokenizerOptions{{}, 0}) {
  WriteText(dir.File("tokenizer.json"), tokenizer.dump());
  return Tokenizer::Load(dir.path(), options);
}

TEST(HfTokenizerTest, BpeMergesByRankAndHandlesUnknownCharactersLikeTokenizers) {
  struct Case {
    json options;
    std::vector<Ids> expected;  // "abc", "bcab", "aaa", "xyab", "yyzab", "x"
  };
  const std::vector<std::string> texts = {"abc", "bcab", "aaa", "xyab", "yyzab", "x"};
  const std::vector<Case> cases = {
      {json::object(), {{6}, {5, 4}, {1, 1, 1}, {0, 0, 4}, {0, 0, 0, 4}, {0}}},
      {{{"fuse_unk", true}}, {{6}, {5, 4}, {1, 1, 1}, {0, 4}, {0, 4}, {0}}},
      {{{"byte_fallback", true}}, {{6}, {5, 4}, {1, 1, 1}, {7, 0, 4}, {0, 0, 0, 4}, {7}}},
      {{{"byte_fallback", true}, {"fuse_unk", true}},
       {{6}, {5, 4}, {1, 1, 1}, {7, 0, 4}, {0, 4}, {7}}},
      {{{"unk_token", nullptr}}, {{6}, {5, 4}, {1, 1, 1}, {4}, {4}, {}}},
  };
  for (const Case& c : cases) {
    slm::testing::TempDir dir;
    json model = CharBpe();
    model.update(c.options);
    const Tokenizer tokenizer = LoadJson(dir, Skeleton(model));
    EXPECT_STREQ(tokenizer.Format(), "tokenizer.json");
    EXPECT_EQ(tokenizer.VocabSize(), 10);
    for (size_t i = 0; i < texts.size(); ++i) {
      EXPECT_EQ(tokenizer.Encode(texts[i], false, false), c.expected[i])
          << texts[i] << " with " << c.options.dump();
    }
  }
}

TEST(HfTokenizerTest, BpeAppliesSubwordPrefixAndWordSuffix) {
  slm::testing::TempDir prefix_dir;
  const Tokenizer prefix = LoadJson(
      prefix_dir,
      Skeleton({{"type", "BPE"},
                {"vocab", {{"a", 0}, {"##b", 1}, {"##c", 2}, {"ab", 3}, {"abc", 4}, {"c", 5}}},
                {"merges", json::array({json::array({"a", "##b"}), json::array({"ab", "##c"})})},
                {"continuing_subword_prefix", "##"}}));
  EXPECT_EQ(prefix.Encode("abc", false, false), (Ids{4}));
  EXPECT_EQ(prefix.Encode("cab", false, false), (Ids{5, 1}));

  slm::testing::TempDir suffix_dir;
  const Tokenizer suffix =
      LoadJson(suffix_dir,
               Skeleton({{"type", "BPE"},
                         {"vocab", {{"a", 0}, {"b</w>", 1}, {"ab</w>", 2}, {"b", 3}, {"a</w>", 4}}},
                         {"merges", json::array({json::array({"a", "b</w>"})})},
                         {"end_of_word_suffix", "</w>"}}));
  EXPECT_EQ(suffix.Encode("ab", false, false), (Ids{2}));
  EXPECT_EQ(suffix.Encode("ba", false, false), (Ids{3, 4}));
  EXPECT_EQ(suffix.Encode("bab", false, false), (Ids{3, 2}));
}

TEST(HfTokenizerTest, AddedTokensKeepTheirMatchingFlags) {
  slm::testing::TempDir dir;
  json tokenizer = Skeleton(
      {{"type", "BPE"},
       {"vocab", {{"<unk>", 0}, {"a", 1}, {"b", 2}, {"c", 3}, {"d", 4}, {"e", 5}, {"r", 6}}},
       {"merges", json::array()},
       {"unk_token", "<unk>"}});
  tokenizer["pre_tokenizer"] = {{"type", "WhitespaceSplit"}};
  auto added = [](int id, const char* content, bool single_word, bool lstrip, bool rstrip,
                  bool normalized, bool special) {
    return json{{"id", id},          {"content", content}, {"single_word", single_word},
                {"lstrip", lstrip},  {"rstrip", rstrip},   {"normalized", normalized},
                {"special", special}};
  };
  tokenizer["added_tokens"] = {added(7, "<m>", false, true, false, false, true),
                               added(8, "[T]", false, false, true, false, false),
                               added(9, "dear", true, false, false, true, false)};
  const Tokenizer t = LoadJson(dir, tokenizer);
  EXPECT_EQ(t.Encode("a <m> b", false, false), (Ids{1, 7, 2}));  // lstrip takes " "
  EXPECT_EQ(t.Encode("[T]   c", false, false), (Ids{8, 3}));     // rstrip takes "   "
  EXPECT_EQ(t.Encode("dear d", false, false), (Ids{9, 4}));
  EXPECT_EQ(t.Encode("adear d", false, false), (Ids{1, 4, 5, 1, 6, 4}));  // not a single word
  EXPECT_EQ(t.Encode("d dear!", false, false), (Ids{4, 9, 0}));
  EXPECT_EQ(t.Encode("x <m>[T] e", false, false), (Ids{0, 7, 8, 5}));
  // Without a decoder tokenizers joins the tokens with spaces; <m> is special, [T] is not.
  EXPECT_EQ(t.Decode({0, 7, 8, 5}, false), "<unk> <m> [T] e");
  EXPECT_EQ(t.Decode({0, 7, 8, 5}, true), "<unk> [T] e");
  EXPECT_TRUE(t.IsSpecial(7));
  EXPECT_FALSE(t.IsSpecial(8));
  EXPECT_EQ(t.UnkId(), 0);
}

// A Llama-2-style conversion: Prepend/Replace normalizer, byte fallback, the sentencepiece decoder
// chain and a <s> $A </s> template.
json SentencePieceStyle() {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab[name] = 3 + b;
  }
  int64_t next = 259;
  for (const char* piece : {"\xE2\x96\x81", "h", "i", "\xE2\x96\x81h", "\xE2\x96\x81hi"}) {
    vocab[piece] = next++;
  }
  json tokenizer = Skeleton({{"type", "BPE"},
                             {"unk_token", "<unk>"},
                             {"fuse_unk", true},
                             {"byte_fallback", true},
                             {"vocab", vocab},
                             {"merges", {"\xE2\x96\x81 h", "\xE2\x96\x81h i"}}});
  tokenizer["normalizer"] = {
      {"type", "Sequence"},
      {"normalizers",
       {{{"type", "Prepend"}, {"prepend", "\xE2\x96\x81"}},
        {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xE2\x96\x81"}}}}};
  tokenizer["decoder"] = {
      {"type", "Sequence"},
      {"decoders",
       {{{"type", "Replace"}, {"pattern", {{"String", "\xE2\x96\x81"}}}, {"content", " "}},
        {{"type", "ByteFallback"}},
        {{"type", "Fuse"}},
        {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  tokenizer["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single",
       {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
        {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
        {{"SpecialToken", {{"id", "</s>"}, {"type_id", 0}}}}}},
      {"special_tokens",
       {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}},
        {"</s>", {{"id", "</s>"}, {"ids", {2}}, {"tokens", {"</s>"}}}}}}};
  auto special = [](int id, const char* content) {
    return json{{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
                {"rstrip", false}, {"normalized", false}, {"special", true}};
  };
  tokenizer["added_tokens"] = {special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")};
  return tokenizer;
}

TEST(HfTokenizerTest, SentencePieceStyleFilesEncodeAndDecodeWithBytesAndTemplate) {
  slm::testing::TempDir dir;
  const Tokenizer t = LoadJson(dir, SentencePieceStyle(), TokenizerOptions{{"<speech>"}, 2});
  // The template names BOS and EOS; no config file overrides them here.
  EXPECT_EQ(t.BosId(), 1);
  EXPECT_EQ(t.EosId(), 2);
  EXPECT_EQ(t.UnkId(), 0);
  const int64_t hi = 263;  // "▁hi"
  EXPECT_EQ(t.Encode("hi hi", false, false), (Ids{hi, hi}));
  EXPECT_EQ(t.EncodeWithSpecialTokens("hi hi"), (Ids{1, hi, hi, 2}));
  // "é" is not a piece: its two UTF-8 bytes.
  EXPECT_EQ(t.Encode("é", false, false), (Ids{259, 3 + 0xC3, 3 + 0xA9}));
  // Markers and units come after the vocabulary; the text after one gets its own "▁".
  const int64_t speech = t.AddedTokenId("<speech>");
  EXPECT_EQ(speech, 264);
  EXPECT_EQ(t.SpeechUnitId(1), 266);
  EXPECT_EQ(t.Encode("<speech>hi", false, false), (Ids{speech, hi}));
  EXPECT_EQ(t.Decode({1, hi, hi, 2}, true), "hi hi");
  EXPECT_EQ(t.Decode({1, hi, hi, 2}, false), "<s> hi hi</s>");
  EXPECT_EQ(t.Decode({speech, hi}, false), "<speech> hi");
  // A lone continuation byte is no text: U+FFFD per byte.
  EXPECT_EQ(t.Decode({hi, 3 + 0xA9, 3 + 0xA9}, false), "hi\xEF\xBF\xBD\xEF\xBF\xBD");
  // Invalid UTF-8 input is read as U+FFFD (bytes EF BF BD), as Python's "replace" does.
  EXPECT_EQ(t.Encode("h\xFFi", false, false), t.Encode("h\xEF\xBF\xBDi", false, false));
}

TEST(HfTokenizerTest, SaveKeepsTheFileAndTheMarkers) {
  slm::testing::TempDir source;
  TokenizerOptions options{{"<speech>", "<image>"}, 3};
  // An added token of the file beyond the vocabulary (Llama 3's <|eot_id|> kind) comes first.
  json file = SentencePieceStyle();
  file["added_tokens"].push_back({{"id", 264},
                                  {"content", "<|eot|>"},
                                  {"special", true},
                                  {"normalized", false},
                                  {"rstrip", true}});
  const Tokenizer original = LoadJson(source, file, options);
  EXPECT_EQ(original.AddedTokenId("<|eot|>"), 264);
  slm::testing::TempDir saved;
  WriteText(saved.File("tokenizer.model"), "a stale sentencepiece model");
  original.Save(saved.path());
  EXPECT_EQ(fs::ReadFile(saved.File("tokenizer.json")),
            fs::ReadFile(source.File("tokenizer.json")));
  EXPECT_FALSE(std::filesystem::exists(saved.File("tokenizer.model")));
  const json config = json::parse(fs::ReadFile(saved.File("tokenizer_config.json")));
  EXPECT_EQ(config.at("tokenizer_class"), "PreTrainedTokenizerFast");
  EXPECT_EQ(config.at("added_tokens_decoder").at("264").at("rstrip"), true);
  EXPECT_EQ(config.at("added_tokens_decoder").at("265").at("content"), "<speech>");
  EXPECT_EQ(json::parse(fs::ReadFile(saved.File("added_tokens.json"))).at("<|eot|>"), 264);
  EXPECT_EQ(config.at("bos_token"), "<s>");

  const Tokenizer reloaded = Tokenizer::Load(saved.path(), TokenizerOptions{{}, 0});
  EXPECT_EQ(reloaded.VocabSize(), original.VocabSize());
  EXPECT_EQ(reloaded.NumSpeechUnits(), 3);
  EXPECT_EQ(reloaded.AddedTokenId("<image>"), original.AddedTokenId("<image>"));
  EXPECT_EQ(reloaded.AddedTokenId("<|eot|>"), 264);
  const std::string text = "<image>hi <u2>hi<|eot|>  hi";
  EXPECT_EQ(reloaded.Encode(text, true, true), original.Encode(text, true, true));
  EXPECT_EQ(reloaded.BosId(), 1);
}

TEST(HfTokenizerTest, ConfigFilesOverrideTheTemplateSpecialIds) {
  slm::testing::TempDir dir;
  WriteText(dir.File("tokenizer_config.json"),
            R"({"eos_token": "<unk>", "pad_token": {"content": "</s>"}})");
  WriteText(dir.File("generation_config.json"), R"({"eos_token_id": [2, 1]})");
  const Tokenizer t = LoadJson(dir, SentencePieceStyle());
  EXPECT_EQ(t.EosIds(), (Ids{0, 2, 1}));
  EXPECT_EQ(t.PadId(), 2);
  EXPECT_EQ(t.PaddingId(), 2);
  // The template still decides what encode-with-special-tokens adds.
  EXPECT_EQ(t.EncodeWithSpecialTokens("hi"), (Ids{1, 263, 2}));
  EXPECT_SLM_ERROR(t.Model(), "is a tokenizer.json tokenizer, not a sentencepiece model");
}

TEST(HfTokenizerTest, PreTokenizersAndDecodersFollowTokenizers) {
  // Digits (contiguous), then Metaspace with prepend_scheme "first", and its decoder.
  slm::testing::TempDir dir;
  json vocab = {{"<unk>", 0},
                {"\xE2\x96\x81", 1},
                {"a", 2},
                {"1", 3},
                {"2", 4},
                {"12", 5},
                {"\xE2\x96\x81"
                 "a",
                 6},
                {"<x>", 7}};
  json tokenizer = Skeleton({{"type", "BPE"},
                             {"unk_token", "<unk>"},
                             {"vocab", vocab},
                             {"merges", {"1 2", "\xE2\x96\x81 a"}}});
  tokenizer["pre_tokenizer"] = {{"type", "Sequence"},
                                {"pretokenizers",
                                 {{{"type", "Digits"}, {"individual_digits", false}},
                                  {{"type", "Metaspace"},
                                   {"replacement", "\xE2\x96\x81"},
                                   {"prepend_scheme", "first"},
                                   {"split", true}}}}};
  tokenizer["decoder"] = {{"type", "Metaspace"},
                          {"replacement", "\xE2\x96\x81"},
                          {"prepend_scheme", "first"},
                          {"split", true}};
  tokenizer["added_tokens"] = {
      {{"id", 7}, {"content", "<x>"}, {"special", true}, {"normalized", false}}};
  const Tokenizer t = LoadJson(dir, tokenizer);
  // "12a a": digits "12" first (prefixed: it starts the text), then "a", " a".
  EXPECT_EQ(t.Encode("12a a", false, false), (Ids{1, 5, 2, 6}));
  // After an added token the text does not start the string: no "▁" prepended.
  EXPECT_EQ(t.Encode("<x>a a", false, false), (Ids{7, 2, 6}));
  EXPECT_EQ(t.Decode({1, 5, 2, 6}, false), "12a a");
  EXPECT_EQ(t.Decode({6, 6}, false), "a a");
}

TEST(HfTokenizerTest, SplitRegexUsesUnicodeWhiteSpaceAsOniguruma) {
  // GPT-2's ByteLevel pre-tokenizer. U+180E is no whitespace for Oniguruma (PCRE2's own \s says
  // it is), so " \u180E" is one run of a space and a non-letter, which the merge "Ġ á" joins;
  // as whitespace it would be " " and "\u180E" apart.
  slm::testing::TempDir dir;
  json vocab = json::object();
  int64_t next = 0;
  for (char c = '!'; c <= '~'; ++c) vocab[std::string(1, c)] = next++;
  // Byte-level characters of 0xE1, 0xA0, 0x8E (the UTF-8 of U+180E), 0x20, and "Ġá".
  for (const char* piece : {"\xC3\xA1", "\xC5\x82", "\xC4\xB0", "\xC4\xA0", "\xC4\xA0\xC3\xA1"}) {
    vocab[piece] = next++;
  }
  json tokenizer = Skeleton({{"type", "BPE"}, {"vocab", vocab}, {"merges", {"\xC4\xA0 \xC3\xA1"}}});
  tokenizer["pre_tokenizer"] = {
      {"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  tokenizer["decoder"] = {{"type", "ByteLevel"}};
  const Tokenizer t = LoadJson(dir, tokenizer);
  const std::string text = "x \xE1\xA0\x8Ey";
  EXPECT_EQ(t.Encode(text, false, false), (Ids{87, 98, 95, 96, 88}));
  EXPECT_EQ(t.Decode({87, 98, 95, 96, 88}, false), text);
  // Bytes that are no whole character decode to U+FFFD per maximal ill-formed subpart, as
  // String::from_utf8_lossy does: two lone continuation bytes, one truncated sequence.
  EXPECT_EQ(t.Decode({95, 96}, false), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(t.Decode({94, 95}, false), "\xEF\xBF\xBD");
}

TEST(HfTokenizerTest, EncodesConcurrentlyFromManyThreads) {
  slm::testing::TempDir dir;
  const Tokenizer t = LoadJson(dir, SentencePieceStyle(), TokenizerOptions{{"<speech>"}, 0});
  std::vector<std::string> texts;
  for (int i = 0; i < 200; ++i) {
    texts.push_back(std::string(static_cast<size_t>(i % 7), 'h') + " hi<speech>i é " +
                    std::to_string(i));
  }
  std::vector<Ids> expected;
  for (const std::string& text : texts) expected.push_back(t.Encode(text, false, false));
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      for (int round = 0; round < 5; ++round) {
        for (size_t i = 0; i < texts.size(); ++i) {
          mismatches[k] += t.Encode(texts[i], false, false) != expected[i];
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(mismatches, (std::vector<int>{0, 0, 0, 0}));
}

TEST(HfTokenizerTest, PicksTheFormatOfADirectory) {
  slm::testing::TempDir dir;
  // A sentencepiece model next to a tokenizer.json: sentencepiece, unless asked otherwise.
  SentencePieceTrainOptions train;
  train.input = dir.File("corpus.txt");
  WriteText(train.input, "hi hi hello\nthe cat reads\nhello hi\n");
  train.model_prefix = dir.File("tokenizer");
  train.vocab_size = 40;
  train.hard_vocab_limit = false;
  SentencePiece::Train(train);
  WriteText(dir.File("tokenizer.json"), SentencePieceStyle().dump());
  EXPECT_STREQ(Tokenizer::Load(dir.path()).Format(), "sentencepiece");
  TokenizerOptions json_format;
  json_format.format = TokenizerFormat::kTokenizerJson;
  EXPECT_STREQ(Tokenizer::Load(dir.path(), json_format).Format(), "tokenizer.json");
  EXPECT_STREQ(Tokenizer::Load(dir.File("tokenizer.json")).Format(), "tokenizer.json");

  // A tiktoken tokenizer.model (Llama 3's original/ file): the tokenizer.json is read instead,
  // and alone it is refused naming the format.
  WriteText(dir.File("tokenizer.model"), "IQ== 0\nIg== 1\nIw== 2\n");
  EXPECT_STREQ(Tokenizer::Load(dir.path()).Format(), "tokenizer.json");
  std::filesystem::remove(dir.File("tokenizer.json"));
  EXPECT_SLM_ERROR(Tokenizer::Load(dir.path()),
                   "'" + dir.File("tokenizer.model") + "' is a tiktoken BPE file");
  EXPECT_SLM_ERROR(Tokenizer::Load(dir.File("tokenizer.model")), "is a tiktoken BPE file");
  EXPECT_SLM_ERROR(Tokenizer::Load(dir.path(), json_format),
                   "missing '" + dir.File("tokenizer.json") + "'");
}

TEST(HfTokenizerTest, ExplainsBadFilesByJsonPath) {
  slm::testing::TempDir dir;
  const std::string path = dir.File("tokenizer.json");
  auto error_of = [&](const json& tokenizer, const std::string& expected) {
    WriteText(path, tokenizer.dump());
    EXPECT_SLM_ERROR(Tokenizer::Load(dir.path()), "'" + path + "': " + expected);
  };
  WriteText(path, "{\"model\": {\"type\": \"BPE\",");
  EXPECT_SLM_ERROR(Tokenizer::Load(dir.path()), "cannot parse '" + path + "' as JSON");

  json model = CharBpe();
  model.erase("merges");
  error_of(Skeleton(model), "model.merges: is missing: a BPE model needs its merges");
  model = CharBpe();
  model["merges"] = {"a b", "q c"};
  error_of(Skeleton(model), "model.merges[1]: the token 'q' is not in model.vocab");
  model["merges"] = {"c a"};
  error_of(Skeleton(model), "model.merges[0]: the merged token 'ca' is not in model.vocab");
  model["merges"] = {"a b c"};
  error_of(Skeleton(model), "model.merges[0]: must be two tokens separated by one space");
  model = CharBpe();
  model["dropout"] = 0.1;
  error_of(Skeleton(model), "model.dropout: must be null");
  model = CharBpe();
  model["vocab"]["again"] = 3;
  error_of(Skeleton(model), "model.vocab: id 3 is given to both");
  model = CharBpe();
  model["type"] = "Unigram";
  error_of(Skeleton(model), "model.type: 'Unigram' is not supported (supported: BPE)");

  json tokenizer = Skeleton(CharBpe());
  tokenizer["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers", {{{"type", "WhitespaceSplit"}}, {{"type", "BertPreTokenizer"}}}}};
  error_of(tokenizer,
           "pre_tokenizer.pretokenizers[1].type: 'BertPreTokenizer' is not supported (supported: "
           "ByteLevel, Split, Metaspace, Digits, WhitespaceSplit, Sequence)");
  tokenizer = Skeleton(CharBpe());
  tokenizer["normalizer"] = {{"type", "Lowercase"}};
  error_of(tokenizer,
           "normalizer.type: 'Lowercase' is not supported (supported: NFC, NFD, NFKC, "
           "NFKD, Replace, Prepend, Strip, ByteLevel, Sequence)");
  tokenizer = Skeleton(CharBpe());
  tokenizer["decoder"] = {{"type", "WordPiece"}};
  error_of(tokenizer,
           "decoder.type: 'WordPiece' is not supported (supported: ByteLevel, "
           "Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence)");
  tokenizer = Skeleton(CharBpe());
  tokenizer["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", {{{"SpecialToken", {{"id", "<s>"}}}}, {{"Sequence", {{"id", "A"}}}}}},
      {"special_tokens", json::object()}};
  error_of(tokenizer,
           "post_processor.special_tokens: has no entry for the template's special "
           "token '<s>'");
  tokenizer = Skeleton(CharBpe());
  tokenizer["pre_tokenizer"] = {
      {"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  error_of(tokenizer,
           "pre_tokenizer.pattern.Regex: cannot compile the regular expression "
           "'(unclosed'");
  tokenizer["pre_tokenizer"]["pattern"] = {{"Regex", "a"}};
  tokenizer["pre_tokenizer"]["behavior"] = "Sideways";
  error_of(tokenizer,
           "pre_tokenizer.behavior: 'Sideways' is not supported (supported: Removed, "
           "Isolated, MergedWithPrevious, MergedWithNext, Contiguous)");
  tokenizer = Skeleton(CharBpe());
  tokenizer["added_tokens"] = {{{"id", 12}, {"content", "<late>"}}};
  WriteText(path, tokenizer.dump());
  EXPECT_SLM_ERROR(Tokenizer::Load(dir.path()),
                   "added token '<late>' has id 12, but ids after the model's vocabulary must be "
                   "consecutive: the next free id is 10");
}

}  // namespace
}  // namespace slm::text
