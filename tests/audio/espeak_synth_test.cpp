#include "audio/espeak_synth.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "core/strings.h"
#include "tests/test_util.h"

namespace slm::audio {
namespace {

double Rms(const std::vector<float>& x, size_t begin, size_t end) {
  double sum = 0;
  for (size_t i = begin; i < end; ++i) sum += double(x[i]) * x[i];
  return end > begin ? std::sqrt(sum / double(end - begin)) : 0.0;
}

size_t At(double seconds) { return static_cast<size_t>(std::lround(seconds * kSampleRate)); }

std::vector<std::string> Words(const SynthResult& r) {
  std::vector<std::string> words;
  for (const auto& w : r.words) words.push_back(w.word);
  return words;
}

void ExpectWellFormedTimes(const SynthResult& r) {
  const double duration = r.Seconds();
  for (size_t i = 0; i < r.words.size(); ++i) {
    const auto& w = r.words[i];
    EXPECT_GE(w.start, 0.0) << w.word;
    EXPECT_LT(w.start, w.end) << w.word;
    EXPECT_LE(w.end, duration) << w.word;
    if (i + 1 < r.words.size()) {
      EXPECT_LE(w.end, r.words[i + 1].start) << w.word;
    }
  }
}

const VoiceSpec kUs{"en-us", 175, 50, 50};

TEST(EspeakSynth, ProducesNonSilent16kHzSpeechOfPlausibleLength) {
  const std::string text = "the quick brown fox jumps over the lazy dog";
  const SynthResult r = EspeakSynthesizer::Instance().Synthesize(text, kUs);
  EXPECT_EQ(r.sample_rate, 16000);
  // 9 words at 175 wpm is ~3.1 s of speech; espeak's words are shorter, pauses longer.
  EXPECT_GT(r.Seconds(), 9 * 0.12);
  EXPECT_LT(r.Seconds(), 9 * 0.6 + 2 * EspeakSynthesizer::kSilenceMargin);
  EXPECT_EQ(r.samples.size() % 16, 0u) << "length is a whole number of milliseconds";
  EXPECT_GT(Rms(r.samples, 0, r.samples.size()), 0.02);
  const float peak = *std::max_element(r.samples.begin(), r.samples.end(),
                                       [](float a, float b) { return std::abs(a) < std::abs(b); });
  EXPECT_LE(std::abs(peak), 0.9f);
  // Leading/trailing silence is trimmed to ~0.1 s: the first and last words sit near the ends.
  // Exactly 0.1 s of silence frames the speech, whatever espeak's own edges were.
  EXPECT_NEAR(r.words.front().start, EspeakSynthesizer::kSilenceMargin, 0.006);
  EXPECT_NEAR(r.Seconds() - r.words.back().end, EspeakSynthesizer::kSilenceMargin, 0.006);
  EXPECT_LT(Rms(r.samples, 0, At(0.095)), 1e-3);
  EXPECT_LT(Rms(r.samples, r.samples.size() - At(0.095), r.samples.size()), 1e-3);
}

TEST(EspeakSynth, WordsFollowTheInputTokensAndTimesAreOrdered) {
  const std::string text =
      "Well-known artists don't paint \"$5.50\" pictures, (they said) in 1999 -- e-mail me!";
  const SynthResult r = EspeakSynthesizer::Instance().Synthesize(text, kUs);
  const std::vector<std::string> expected = {"Well-known", "artists",  "don't",  "paint",
                                             "$5.50",      "pictures", "they",   "said",
                                             "in",         "1999",     "e-mail", "me"};
  EXPECT_EQ(Words(r), expected);
  ExpectWellFormedTimes(r);
  // Every word span holds sound, and the comma's pause belongs to no word.
  for (const auto& w : r.words) EXPECT_GT(Rms(r.samples, At(w.start), At(w.end)), 0.01) << w.word;
  // Pauses after "10:30," and "Smith;" in a second sentence, whatever the next word's onset.
  const SynthResult p = EspeakSynthesizer::Instance().Synthesize(
      "We met at 10:30, and then Dr. Smith; \"really?\" he asked.", kUs);
  ASSERT_EQ(p.words.size(), 11u);
  for (size_t i : {3, 7}) {
    EXPECT_GT(p.words[i + 1].start - p.words[i].end, 0.05) << p.words[i].word;
    EXPECT_LT(Rms(p.samples, At(p.words[i].end) + 80, At(p.words[i + 1].start) - 80), 0.005);
  }
  const auto& pictures = r.words[5];
  const auto& they = r.words[6];
  EXPECT_GT(they.start - pictures.end, 0.05) << "pause after 'pictures,'";
  EXPECT_LT(Rms(r.samples, At(pictures.end) + 80, At(they.start) - 80), 0.005);
}

TEST(EspeakSynth, MultibyteTextIsAlignedByCodePoint) {
  const std::string text = "café naïve résumé about “quotes” here";
  const SynthResult r = EspeakSynthesizer::Instance().Synthesize(text, kUs);
  const std::vector<std::string> expected = {"café", "naïve", "résumé", "about", "quotes", "here"};
  EXPECT_EQ(Words(r), expected);
  ExpectWellFormedTimes(r);
}

TEST(EspeakSynth, SameSpecGivesBitwiseIdenticalAudioWhateverRanBefore) {
  const auto voices = AvailableEnglishVoices();
  const VoiceSpec a = VoiceForSeed(7, voices);
  const auto& synth = EspeakSynthesizer::Instance();
  const std::string text = "Seven silver swans swam silently seaward.";
  const SynthResult first = synth.Synthesize(text, a);
  synth.Synthesize("Something else entirely, to disturb any state.", VoiceForSeed(8, voices));
  const SynthResult second = synth.Synthesize(text, VoiceForSeed(7, voices));
  ASSERT_EQ(first.samples.size(), second.samples.size());
  EXPECT_EQ(0, std::memcmp(first.samples.data(), second.samples.data(),
                           first.samples.size() * sizeof(float)));
  ASSERT_EQ(first.words.size(), second.words.size());
  for (size_t i = 0; i < first.words.size(); ++i) {
    EXPECT_EQ(first.words[i].start, second.words[i].start);
    EXPECT_EQ(first.words[i].end, second.words[i].end);
  }
}

TEST(EspeakSynth, DifferentSeedsGiveDifferentSpeakers) {
  const auto voices = AvailableEnglishVoices();
  std::set<std::string> labels, names;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const VoiceSpec v = VoiceForSeed(seed, voices);
    labels.insert(v.Label());
    names.insert(v.name);
  }
  EXPECT_EQ(labels.size(), 20u);
  EXPECT_GE(names.size(), 15u);
  const auto& synth = EspeakSynthesizer::Instance();
  const std::string text = "The same words in another voice.";
  const SynthResult a = synth.Synthesize(text, VoiceForSeed(1, voices));
  const SynthResult b = synth.Synthesize(text, VoiceForSeed(2, voices));
  EXPECT_NE(a.samples, b.samples);
  EXPECT_EQ(Words(a), Words(b));
}

TEST(EspeakSynth, VoiceForSeedIsDeterministicAndInRange) {
  const std::vector<std::string> voices = {"en-us", "en+f2", "en-029+m1"};
  std::set<std::string> seen;
  for (uint64_t seed = 0; seed < 2000; ++seed) {
    const VoiceSpec v = VoiceForSeed(seed, voices);
    EXPECT_EQ(v.Label(), VoiceForSeed(seed, voices).Label());
    EXPECT_TRUE(v.rate_wpm >= 140 && v.rate_wpm <= 200) << v.Label();
    EXPECT_TRUE(v.pitch >= 30 && v.pitch <= 70) << v.Label();
    EXPECT_TRUE(v.range >= 30 && v.range <= 80) << v.Label();
    seen.insert(v.name);
  }
  EXPECT_EQ(seen.size(), voices.size());
  EXPECT_EQ((VoiceSpec{"en-us+f2", 165, 48, 52}.Label()), "en-us+f2/r165/p48/g52");
  EXPECT_SLM_ERROR(VoiceForSeed(1, {}), "empty");
}

TEST(EspeakSynth, ListsEnglishVoicesWithHumanVariants) {
  const auto voices = AvailableEnglishVoices();
  EXPECT_TRUE(std::is_sorted(voices.begin(), voices.end()));
  for (const char* name : {"en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us+f2",
                           "en-gb-x-rp+m7", "en-029+f4", "en-gb-scotland+m1", "en-us+klatt"})
    EXPECT_TRUE(std::binary_search(voices.begin(), voices.end(), name)) << name;
  for (const auto& v : voices) {
    EXPECT_TRUE(StartsWith(v, "en")) << v;
    EXPECT_EQ(v.find("whisper"), std::string::npos) << v;
    EXPECT_EQ(v.find("robo"), std::string::npos) << v;
  }
  EXPECT_GT(voices.size(), 100u);
}

TEST(EspeakSynth, NativeEventsCarrySampleAndCodePointPositions) {
  const NativeSpeech s = EspeakSynthesizer::Instance().SynthesizeNative("Hello brave world.", kUs);
  ASSERT_EQ(s.word_events.size(), 3u);
  EXPECT_EQ(s.word_events[0].text_position, 1);
  EXPECT_EQ(s.word_events[1].text_position, 7);
  EXPECT_EQ(s.word_events[2].text_position, 13);
  EXPECT_EQ(s.word_events[0].sample, 0);
  EXPECT_GT(s.word_events[1].sample, s.word_events[0].sample);
  EXPECT_GT(s.word_events[2].sample, s.word_events[1].sample);
  EXPECT_LT(s.word_events[2].sample, static_cast<int64_t>(s.pcm.size()));
  // ~0.3 s per word at 175 wpm.
  EXPECT_NEAR(double(s.word_events[1].sample) / kEspeakSampleRate, 0.35, 0.2);
}

TEST(EspeakSynth, WordTokensStripSilentPunctuationAndCountCodePoints) {
  const auto tokens = WordTokens("  (don't,  naïve \"$5\" -- x");
  ASSERT_EQ(tokens.size(), 5u);
  EXPECT_EQ(tokens[0].word, "don't");
  EXPECT_EQ(tokens[0].char_begin, 2);
  EXPECT_EQ(tokens[0].char_end, 9);
  EXPECT_EQ(tokens[1].word, "naïve");
  EXPECT_EQ(tokens[1].char_begin, 11);
  EXPECT_EQ(tokens[1].char_end, 16);
  EXPECT_EQ(tokens[1].byte_end - tokens[1].byte_begin, 6u);
  EXPECT_EQ(tokens[2].word, "$5");
  EXPECT_EQ(tokens[3].word, "");
  EXPECT_EQ(tokens[4].word, "x");
  EXPECT_SLM_ERROR(WordTokens("bad \xff byte"), "not valid UTF-8");
}

TEST(EspeakSynth, RejectsEmptyUnspeakableAndInvalidInput) {
  const auto& synth = EspeakSynthesizer::Instance();
  EXPECT_SLM_ERROR(synth.Synthesize("", kUs), "empty");
  EXPECT_SLM_ERROR(synth.Synthesize("  \t ", kUs), "empty");
  EXPECT_SLM_ERROR(synth.Synthesize("... -- !", kUs), "nothing to speak");
  EXPECT_SLM_ERROR(synth.SynthesizeNative("hello", VoiceSpec{"en-gb", 175, 50, 50}),
                   "did you mean 'en'");
  EXPECT_SLM_ERROR(CheckEnglishVoice("en-gb+f2"), "did you mean 'en+f2'");
  EXPECT_SLM_ERROR(synth.Synthesize("hello \xc3", kUs), "not valid UTF-8");
  EXPECT_SLM_ERROR(synth.Synthesize("hello", VoiceSpec{"xx-nowhere", 175, 50, 50}),
                   "unknown voice 'xx-nowhere'");
  EXPECT_SLM_ERROR(synth.Synthesize("hello", VoiceSpec{"en-us+f9", 175, 50, 50}),
                   "valid voices are");
  EXPECT_SLM_ERROR(synth.Synthesize("hello", VoiceSpec{"en-us", 20, 50, 50}), "rate 20");
  EXPECT_SLM_ERROR(synth.Synthesize("hello", VoiceSpec{"en-us", 175, 101, 50}), "pitch 101");
  EXPECT_SLM_ERROR(CheckEnglishVoice("en-us+f22"), "did you mean");
}

TEST(EspeakSynth, PhonemizesTextAsEspeakNgPronouncesIt) {
  const EspeakSynthesizer& synth = EspeakSynthesizer::Instance();
  const std::vector<std::string> p =
      synth.Phonemize({"An expedition.", "Yes, she said.", "", "...", "caf\xC3\xA9"}, "en-us");
  ASSERT_EQ(p.size(), 5u);
  // The same as `espeak-ng -v en-us -x --sep=' ' "An expedition."` on Debian 12's espeak-ng 1.51.
  EXPECT_EQ(p[0], "a# n ,E k s p @ d 'I S @ n");
  EXPECT_NE(p[1].find(" _ "), std::string::npos) << p[1];  // the comma's clause break
  EXPECT_EQ(p[1].find("  "), std::string::npos) << p[1];   // single separators
  EXPECT_EQ(p[2], "");
  EXPECT_EQ(p[3], "");
  EXPECT_FALSE(p[4].empty());
  // Pure: the same texts give the same phonemes, alone or in a batch.
  EXPECT_EQ(synth.Phonemize({"Yes, she said."}, "en-us")[0], p[1]);
  EXPECT_TRUE(synth.Phonemize({}, "en-us").empty());
  EXPECT_SLM_ERROR(synth.Phonemize({"hi"}, "klingon"), "klingon");
  EXPECT_SLM_ERROR(synth.Phonemize({"ok", "bad \xFF"}, "en-us"), "UTF-8");
}

TEST(EspeakSynth, MeasuresNativeRate) {
  const auto rate = EspeakSynthesizer::Instance().MeasureNativeRate(
      {"one short sentence.", "and another one here."}, [](int64_t) { return kUs; }, 3.0);
  EXPECT_GE(rate.audio_seconds, 3.0);
  EXPECT_GE(rate.utterances, 2);
  EXPECT_GT(rate.AudioSecondsPerSecond(), 20.0);
}

TEST(EspeakSynthSlow, EveryVoiceSpeaksEveryWord) {
  const auto& synth = EspeakSynthesizer::Instance();
  const std::string text = "Every voice reads this sentence, with seven words.";
  const std::vector<std::string> expected = {"Every",    "voice", "reads", "this",
                                             "sentence", "with",  "seven", "words"};
  for (const auto& name : AvailableEnglishVoices()) {
    for (int rate : {140, 200}) {
      const SynthResult r = synth.Synthesize(text, VoiceSpec{name, rate, 50, 50});
      EXPECT_EQ(Words(r), expected) << name;
      EXPECT_GT(Rms(r.samples, 0, r.samples.size()), 0.01) << name;
      EXPECT_GT(r.Seconds(), 1.0) << name;
      float peak = 0;
      for (float x : r.samples) peak = std::max(peak, std::abs(x));
      EXPECT_LE(peak, 0.9f) << name;
      EXPECT_GT(peak, 0.1f) << name;
      EXPECT_LT(r.Seconds(), 6.0) << name;
      ExpectWellFormedTimes(r);
    }
  }
}

}  // namespace
}  // namespace slm::audio
