#include "core/manifest.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "core/fs.h"
#include "core/registry.h"
#include "core/strings.h"
#include "tests/test_util.h"

namespace slm {
namespace {

TEST(Manifest, RoundTripKeepsUnknownFieldsAndResolvesPaths) {
  testing::TempDir dir;
  const std::string path = dir.File("train.jsonl");
  std::ofstream(path)
      << R"({"id":"u1","task":"asr","audio":"wav/u1.wav","text":"the cat","words":[{"word":"the","start":0.0,"end":0.11},{"word":"cat","start":0.12,"end":0.4}],"speaker":"en-us+f2"})"
      << "\n\n"
      << R"({"id":"i1","task":"caption","image":"/abs/i1.png","text":"a red circle"})" << "\n";
  const auto m = manifest::Read(path);
  ASSERT_EQ(m.entries.size(), 2u);
  const auto& u = m.entries[0];
  EXPECT_EQ(u.words.size(), 2u);
  EXPECT_DOUBLE_EQ(u.words[1].end, 0.4);
  EXPECT_EQ(u.extra["speaker"], "en-us+f2");
  EXPECT_EQ(m.AudioPath(u), dir.path() + "/wav/u1.wav");
  EXPECT_EQ(m.ImagePath(m.entries[1]), "/abs/i1.png");
  const std::string copy = dir.File("copy.jsonl");
  manifest::Write(copy, m.entries);
  const auto again = manifest::Read(copy);
  for (size_t i = 0; i < m.entries.size(); ++i)
    EXPECT_EQ(manifest::ToJson(again.entries[i]), manifest::ToJson(m.entries[i]));
}

TEST(Manifest, ErrorsNameFileAndLine) {
  testing::TempDir dir;
  const std::string path = dir.File("bad.jsonl");
  std::ofstream(path) << R"({"id":"a","task":"asr"})" << "\n" << "{not json\n";
  EXPECT_SLM_ERROR(manifest::Read(path), "bad.jsonl:2: invalid JSON");
  std::ofstream(path) << R"({"task":"asr"})" << "\n";
  EXPECT_SLM_ERROR(manifest::Read(path), "bad.jsonl:1: missing field 'id'");
  std::ofstream(path) << R"({"id":"a","task":"asr","words":[{"word":"x","start":0.5,"end":0.2}]})";
  EXPECT_SLM_ERROR(manifest::Read(path), "bad.jsonl:1: words[0] ('x') has times [0.5, 0.2]");
  std::ofstream(path) << R"({"id":"a","task":"asr","words":[{"word":"x","start":0.5,"end":0.6},{"word":"y","start":0.1,"end":0.2}]})";
  EXPECT_SLM_ERROR(manifest::Read(path), "words[1] ('y') starts at 0.1 s, before the previous word");
  std::ofstream(path) << R"({"id":"a","task":"asr","words":[{"word":"x"}]})";
  EXPECT_SLM_ERROR(manifest::Read(path), "needs numeric 'start' and 'end'");
  std::ofstream(path) << R"({"id":"a","task":3})";
  EXPECT_SLM_ERROR(manifest::Read(path), "field 'task' must be a string");
  EXPECT_SLM_ERROR(manifest::Read(dir.File("none.jsonl")), "cannot open manifest");
}

// Found by review, confirmed with the manifest fuzz target (fuzz/regressions/manifest/): a word
// time near 1e306 s read fine, but rounding it to milliseconds overflowed to infinity, which
// nlohmann::json writes as null, so a manifest written by Write did not read again.
TEST(Manifest, HugeWordTimesSurviveWriteAndRead) {
  testing::TempDir dir;
  std::istringstream in(R"({"id":"a","task":"asr","words":[{"word":"x","start":0.1234,"end":1e306}]})");
  const auto m = manifest::Read(in, "big.jsonl");
  manifest::Write(dir.File("again.jsonl"), m.entries);
  const auto again = manifest::Read(dir.File("again.jsonl"));
  ASSERT_EQ(again.entries.size(), 1u);
  EXPECT_DOUBLE_EQ(again.entries[0].words[0].start, 0.123);
  EXPECT_EQ(again.entries[0].words[0].end, 1e306);
}

TEST(Manifest, StreamReadNamesTheGivenPath) {
  std::istringstream in(R"({"id":"a","task":"asr","audio":"a.wav"})" "\n\n" R"({"id":"b"})" "\n");
  EXPECT_SLM_ERROR(manifest::Read(in, "data/x.jsonl"), "data/x.jsonl:3: missing field 'task'");
  std::istringstream good(R"({"id":"a","task":"asr","audio":"a.wav"})");
  const auto m = manifest::Read(good, "data/x.jsonl");
  ASSERT_EQ(m.entries.size(), 1u);
  EXPECT_EQ(m.AudioPath(m.entries[0]), "data/a.wav");
}

TEST(Strings, EditDistanceAndClosestMatch) {
  EXPECT_EQ(EditDistance("kitten", "sitting"), 3u);
  EXPECT_EQ(EditDistance("", "abc"), 3u);
  EXPECT_EQ(ClosestMatch("lenght", {"length", "width"}), "length");
  EXPECT_EQ(ClosestMatch("zzzzzz", {"length", "width"}), "");
  EXPECT_EQ(Split(" a,,b c ", " ,"), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(Trim("  x y \n"), "x y");
  EXPECT_EQ(FormatDuration(3725), "1h02m05s");
  EXPECT_EQ(FormatDuration(65), "1m05s");
}

TEST(Strings, FindInvalidUtf8) {
  EXPECT_EQ(FindInvalidUtf8(""), std::string_view::npos);
  EXPECT_EQ(FindInvalidUtf8("plain \xC3\xA9t\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 \xF4\x8F\xBF\xBF"),
            std::string_view::npos);
  EXPECT_EQ(FindInvalidUtf8("ab\x80"), 2u);              // stray continuation byte
  EXPECT_EQ(FindInvalidUtf8("a\xC3"), 1u);               // truncated
  EXPECT_EQ(FindInvalidUtf8("\xC0\xAF"), 0u);            // overlong '/'
  EXPECT_EQ(FindInvalidUtf8("x\xE0\x80\xAF"), 1u);       // overlong, 3 bytes
  EXPECT_EQ(FindInvalidUtf8("\xED\xA0\x80"), 0u);        // surrogate U+D800
  EXPECT_EQ(FindInvalidUtf8("\xF4\x90\x80\x80"), 0u);    // above U+10FFFF
  EXPECT_EQ(FindInvalidUtf8("\xE2\x82" "A"), 0u);        // bad second continuation
  EXPECT_EQ(FindInvalidUtf8("\xFF"), 0u);
}

TEST(Registry, UnknownNameListsValidNamesAndSuggests) {
  Registry<int> r("projector");
  r.Add("linear", 1);
  r.Add("mlp", 2);
  EXPECT_EQ(r.Get("mlp"), 2);
  EXPECT_SLM_ERROR(r.Get("lienar"), "unknown projector 'lienar' (valid: linear, mlp); did you mean 'linear'?");
  EXPECT_SLM_ERROR(r.Add("mlp", 3), "registered twice");
}

TEST(Fs, AtomicWriteReplacesWholeFileOrNothing) {
  testing::TempDir dir;
  const std::string path = dir.File("f.txt");
  fs::AtomicWriteString(path, "first");
  EXPECT_THROW(fs::AtomicWrite(path, [](std::FILE*) { throw Error("disk full"); }), Error);
  EXPECT_EQ(fs::ReadFile(path), "first");
  fs::AtomicWriteString(path, "second");
  EXPECT_EQ(fs::ReadFile(path), "second");
  // No temporary files are left behind.
  int files = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir.path())) ++files;
  EXPECT_EQ(files, 1);
  EXPECT_SLM_ERROR(fs::ReadFile(dir.File("missing")), "cannot open");
  EXPECT_EQ(fs::Resolve("/data", "wav/a.wav"), "/data/wav/a.wav");
  EXPECT_EQ(fs::Resolve("/data", "/x/a.wav"), "/x/a.wav");
}

}  // namespace
}  // namespace slm
