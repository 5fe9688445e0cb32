#include "datagen/speech_corpus.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>

#include "audio/audio_io.h"
#include "core/fs.h"
#include "core/manifest.h"
#include "core/strings.h"
#include "tests/test_util.h"

namespace slm::datagen {
namespace {

using namespace audio;  // the corpus is made of espeak-ng speech: voices, word tokens, wav reading

const char* const kSentences[] = {
    "The cat sat on the mat.",
    "A quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore, every day.",
    "Don't count your chickens before they hatch.",
    "We met at 10:30 and talked for 45 minutes.",
};

// Five sentences with blank lines, a CRLF line ending and surrounding spaces in between.
std::string WriteTextFile(const testing::TempDir& dir) {
  const std::string path = dir.File("sentences.txt");
  std::ofstream out(path, std::ios::binary);
  out << "\n"
      << kSentences[0] << "\r\n\n   " << kSentences[1] << "  \n"
      << kSentences[2] << "\n\n"
      << kSentences[3] << "\n"
      << kSentences[4];
  return path;
}

SpeechCorpusOptions Options(const std::string& text, const std::string& out) {
  SpeechCorpusOptions options;
  options.text_path = text;
  options.out_dir = out;
  options.seed = 3;
  options.quiet = true;
  return options;
}

TEST(SpeechCorpus, WritesReadableWavsAndARoundTrippingManifest) {
  testing::TempDir dir;
  const std::string out = dir.File("corpus");
  const SpeechCorpusStats stats = SynthesizeCorpus(Options(WriteTextFile(dir), out));
  EXPECT_EQ(stats.lines, 5);
  EXPECT_EQ(stats.utterances, 5);
  EXPECT_TRUE(stats.skipped.empty());
  EXPECT_EQ(stats.manifest_path, out + "/manifest.jsonl");
  EXPECT_GT(stats.audio_seconds, 5 * 1.0);
  EXPECT_GT(stats.wall_seconds, 0.0);
  int64_t per_voice_total = 0;
  for (const auto& [voice, count] : stats.per_voice) per_voice_total += count;
  EXPECT_EQ(per_voice_total, 5);

  const manifest::Manifest m = manifest::Read(stats.manifest_path);
  ASSERT_EQ(m.entries.size(), 5u);
  double total = 0;
  const std::regex speaker(R"(en[a-z0-9-]*(\+[A-Za-z0-9]+)?/r\d+/p\d+/g\d+)");
  for (size_t i = 0; i < 5; ++i) {
    const manifest::Entry& e = m.entries[i];
    EXPECT_EQ(e.id, Str("u00000", i + 1));
    EXPECT_EQ(e.task, "asr");
    EXPECT_EQ(e.audio, Str("wav/u00000", i + 1, ".wav"));
    EXPECT_EQ(e.text, kSentences[i]);
    EXPECT_TRUE(std::regex_match(e.extra["speaker"].get<std::string>(), speaker))
        << e.extra["speaker"];
    std::vector<std::string> words;
    for (const auto& w : e.words) words.push_back(w.word);
    std::vector<std::string> expected;
    for (const auto& t : WordTokens(e.text)) expected.push_back(t.word);
    EXPECT_EQ(words, expected);

    EXPECT_EQ(Probe(m.AudioPath(e)).format, "WAV");
    EXPECT_EQ(Probe(m.AudioPath(e)).channels, 1);
    const Waveform wav = Read(m.AudioPath(e), ReadOptions{0});
    EXPECT_EQ(wav.sample_rate, 16000);
    const double duration = e.extra["duration"].get<double>();
    EXPECT_DOUBLE_EQ(wav.Seconds(), duration);
    EXPECT_LE(e.words.back().end, duration);
    total += duration;
  }
  EXPECT_NEAR(total, stats.audio_seconds, 1e-9);

  // Reading and re-writing the manifest reproduces it byte for byte.
  const std::string copy = dir.File("copy.jsonl");
  manifest::Write(copy, m.entries);
  EXPECT_EQ(fs::ReadFile(copy), fs::ReadFile(stats.manifest_path));
}

TEST(SpeechCorpus, SameSeedIsBitwiseReproducibleAndLimitTakesTheFirstLines) {
  testing::TempDir dir;
  const std::string text = WriteTextFile(dir);
  auto options = Options(text, dir.File("a"));
  options.limit = 3;
  const auto a = SynthesizeCorpus(options);
  options.out_dir = dir.File("b");
  const auto b = SynthesizeCorpus(options);
  EXPECT_EQ(a.utterances, 3);
  EXPECT_EQ(fs::ReadFile(a.manifest_path), fs::ReadFile(b.manifest_path));
  for (const char* id : {"u000001", "u000002", "u000003"})
    EXPECT_EQ(fs::ReadFile(dir.File(Str("a/wav/", id, ".wav"))),
              fs::ReadFile(dir.File(Str("b/wav/", id, ".wav"))));
  EXPECT_FALSE(std::filesystem::exists(dir.File("a/wav/u000004.wav")));

  options.out_dir = dir.File("c");
  options.seed = 4;
  const auto c = SynthesizeCorpus(options);
  const auto ma = manifest::Read(a.manifest_path), mc = manifest::Read(c.manifest_path);
  int different = 0;
  for (size_t i = 0; i < 3; ++i)
    different += ma.entries[i].extra["speaker"] != mc.entries[i].extra["speaker"];
  EXPECT_EQ(different, 3);
}

TEST(SpeechCorpus, VoicesRestrictTheSpeakers) {
  testing::TempDir dir;
  auto options = Options(WriteTextFile(dir), dir.File("out"));
  options.voices = {"en-us+f2", "en-gb-x-rp+m3"};
  const auto stats = SynthesizeCorpus(options);
  for (const auto& [voice, count] : stats.per_voice)
    EXPECT_TRUE(voice == "en-us+f2" || voice == "en-gb-x-rp+m3") << voice;
  for (const auto& e : manifest::Read(stats.manifest_path).entries) {
    const std::string speaker = e.extra["speaker"];
    EXPECT_TRUE(StartsWith(speaker, "en-us+f2/") || StartsWith(speaker, "en-gb-x-rp+m3/"))
        << speaker;
  }
}

TEST(SpeechCorpus, FixedProsodyGivesOneSteadyVoice) {
  testing::TempDir dir;
  auto options = Options(WriteTextFile(dir), dir.File("out"));
  options.voices = {"en-us"};
  options.fixed_prosody = true;
  const auto stats = SynthesizeCorpus(options);
  const VoiceSpec defaults;
  const std::string label = Str("en-us/r", defaults.rate_wpm, "/p", defaults.pitch, "/g", defaults.range);
  int64_t entries = 0;
  for (const auto& e : manifest::Read(stats.manifest_path).entries) {
    EXPECT_EQ(e.extra["speaker"].get<std::string>(), label);
    ++entries;
  }
  EXPECT_GE(entries, 2);
  options.fixed_prosody = false;
  options.out_dir = dir.File("varied");
  std::set<std::string> speakers;
  for (const auto& e : manifest::Read(SynthesizeCorpus(options).manifest_path).entries)
    speakers.insert(e.extra["speaker"].get<std::string>());
  EXPECT_GT(speakers.size(), 1u);  // random prosody per utterance otherwise
}

TEST(SpeechCorpus, SelectVoicesExpandsVariantsAndHoldsSpeakersOut) {
  const std::vector<std::string> all = AvailableEnglishVoices();
  const std::vector<std::string> f5 = SelectVoices({"+f5"}, {});
  ASSERT_GE(f5.size(), 2u);  // the variant on several accents
  for (const std::string& v : f5) EXPECT_TRUE(EndsWith(v, "+f5")) << v;
  EXPECT_TRUE(std::find(f5.begin(), f5.end(), "en-us+f5") != f5.end());
  const std::vector<std::string> rest = SelectVoices({}, {"+f5", "en-us"});
  EXPECT_EQ(rest.size(), all.size() - f5.size() - 1);
  for (const std::string& v : rest) EXPECT_FALSE(EndsWith(v, "+f5") || v == "en-us") << v;
  EXPECT_EQ(SelectVoices({"en-us+f2", "+f5"}, {"+f5"}), std::vector<std::string>{"en-us+f2"});
  EXPECT_SLM_ERROR(SelectVoices({}, {"+nosuchvariant"}), "unknown voice '+nosuchvariant'");
  EXPECT_SLM_ERROR(SelectVoices({"en-us"}, {"klingon"}), "unknown voice 'klingon'");
  EXPECT_SLM_ERROR(SelectVoices({"+f5"}, {"+f5"}), "no voice left");

  testing::TempDir dir;
  auto options = Options(WriteTextFile(dir), dir.File("out"));
  options.exclude_voices = {"+f5"};
  options.voices = {"+f5", "en-us+m3"};
  for (const auto& e : manifest::Read(SynthesizeCorpus(options).manifest_path).entries)
    EXPECT_TRUE(StartsWith(e.extra["speaker"].get<std::string>(), "en-us+m3/")) << e.extra["speaker"];
}

TEST(SpeechCorpus, UnspeakableLinesAreSkippedWithTheirLineNumber) {
  testing::TempDir dir;
  const std::string text = dir.File("mixed.txt");
  std::ofstream(text) << "first good line\n...\nbad \xff utf8\nlast good line\n";
  const auto stats = SynthesizeCorpus(Options(text, dir.File("out")));
  EXPECT_EQ(stats.lines, 4);
  EXPECT_EQ(stats.utterances, 2);
  ASSERT_EQ(stats.skipped.size(), 2u);
  EXPECT_EQ(stats.skipped[0].line, 2);
  EXPECT_NE(stats.skipped[0].reason.find("nothing to speak"), std::string::npos);
  EXPECT_EQ(stats.skipped[1].line, 3);
  EXPECT_NE(stats.skipped[1].reason.find("UTF-8"), std::string::npos);
  const auto m = manifest::Read(stats.manifest_path);
  ASSERT_EQ(m.entries.size(), 2u);
  EXPECT_EQ(m.entries[0].id, "u000001");
  EXPECT_EQ(m.entries[1].id, "u000004");  // ids number the lines, so gaps stay visible
}

TEST(SpeechCorpus, ReportsBadInputAsErrors) {
  testing::TempDir dir;
  EXPECT_SLM_ERROR(SynthesizeCorpus(Options(dir.File("missing.txt"), dir.File("o"))),
                   "missing.txt");
  const std::string empty = dir.File("empty.txt");
  std::ofstream(empty) << "\n  \n\n";
  EXPECT_SLM_ERROR(SynthesizeCorpus(Options(empty, dir.File("o"))), "has no sentences");
  auto options = Options(WriteTextFile(dir), dir.File("o"));
  options.voices = {"en-us", "klingon"};
  EXPECT_SLM_ERROR(SynthesizeCorpus(options), "unknown voice 'klingon'");
  EXPECT_SLM_ERROR(SynthesizeCorpus(options), "en-gb-x-rp");  // the valid ones are listed
  const std::string unspeakable = dir.File("punct.txt");
  std::ofstream(unspeakable) << "...\n-- !\n";
  EXPECT_SLM_ERROR(SynthesizeCorpus(Options(unspeakable, dir.File("o"))),
                   "none of the 2 sentences");
  EXPECT_FALSE(std::filesystem::exists(dir.File("o/manifest.jsonl")));
}

}  // namespace
}  // namespace slm::datagen
