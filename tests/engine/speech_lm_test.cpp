// The served recognizer with a word LM (model.speech_lm): the serve config's keys and their errors,
// a ServedModel that loads the LM (or names the key and file when it cannot), and transcripts by
// the lexicon + LM beam search on both engine paths (whole clips and incremental streams), which
// agree with each other and emit lexicon words only.
#include <gtest/gtest.h>

#include "audio/espeak_synth.h"
#include "audio/word_lm.h"
#include "core/config.h"
#include "core/fs.h"
#include "engine/served_model.h"
#include "engine/transcriber.h"
#include "tests/test_util.h"

namespace slm::engine {
namespace {

const std::string kRoot = SLM_SOURCE_DIR;

std::vector<float> Speech(const std::string& text) {
  audio::VoiceSpec spec;
  spec.name = "en-us";
  return audio::EspeakSynthesizer::Instance().Synthesize(text, spec).samples;  // 16 kHz
}

EngineConfig Parse(const std::string& yaml) {
  config::Document doc = config::Document::LoadString(yaml, "serve.yaml");
  EngineConfig config;
  config.Load(doc.Root());
  doc.CheckAllConsumed();
  return config;
}

struct LmFixture {
  testing::TempDir dir;
  std::string lm;
  LmFixture() {
    lm = dir.File("lm.arpa");
    audio::WordLm::Build({"what is a dog", "what is a cat", "a dog is an animal", "the cat sat on the mat",
                          "what is an apple", "a bird can fly"},
                         {3, 1, 0})
        .Save(lm);
  }
  std::string Yaml(const std::string& speech_lm) const {
    return "model:\n  backbone: " + kRoot + "/samples/models/backbone_tiny\n  speech_encoder: " + kRoot +
           "/samples/models/speech_encoder_stream\n" + speech_lm;
  }
};

TEST(SpeechLmTest, ConfigKeysAndTheirErrors) {
  LmFixture f;
  EngineConfig config = Parse(f.Yaml("  speech_lm: {path: " + f.lm + ", beam: 4, lm_weight: 0.8, word_bonus: 2, interim: false}\n"));
  EXPECT_EQ(config.speech_lm.path, f.lm);
  EXPECT_EQ(config.speech_lm.beam, 4);
  EXPECT_DOUBLE_EQ(config.speech_lm.lm_weight, 0.8);
  EXPECT_DOUBLE_EQ(config.speech_lm.word_bonus, 2);
  EXPECT_FALSE(config.speech_lm.interim);
  EXPECT_TRUE(Parse(f.Yaml("")).speech_lm.path.empty());  // no key: greedy as before
  EXPECT_SLM_ERROR(Parse(f.Yaml("  speech_lm: {path: /nonexistent/lm.arpa}\n")),
                   "serve.yaml:4: key 'model.speech_lm.path' word LM '/nonexistent/lm.arpa' does not exist");
  EXPECT_SLM_ERROR(Parse(f.Yaml("  speech_lm: {beam: 4}\n")), "model.speech_lm.path");
  EXPECT_SLM_ERROR(Parse(f.Yaml("  speech_lm: {path: " + f.lm + ", beam: 0}\n")), "model.speech_lm.beam");
  EXPECT_SLM_ERROR(Parse(f.Yaml("  speech_lm: {path: " + f.lm + ", lm_wieght: 1}\n")), "lm_wieght");
  EXPECT_SLM_ERROR(Parse("model:\n  backbone: x\n  speech_lm: {path: " + f.lm + "}\n"),
                   "needs model.speech_encoder");
}

TEST(SpeechLmTest, ABadLmFileNamesTheKeyAndTheFile) {
  LmFixture f;
  fs::AtomicWriteString(f.lm, "\\data\\\nngram 1=2\n\n\\1-grams:\n-1\t<s>\n");
  EngineConfig config = Parse(f.Yaml("  speech_lm: {path: " + f.lm + "}\n"));
  EXPECT_SLM_ERROR(ServedModel{config}, "model.speech_lm.path: " + f.lm + ":6: truncated");
}

TEST(SpeechLmTest, TranscriptsAreLexiconWordsOnBothPaths) {
  LmFixture f;
  EngineConfig config = Parse(f.Yaml("  speech_lm: {path: " + f.lm + ", beam: 8, lm_weight: 1.0, word_bonus: 1.0}\n"));
  ServedModel model(config);
  ASSERT_NE(model.SpeechDecoder(), nullptr);
  Transcriber transcriber(model);
  ASSERT_TRUE(transcriber.Incremental());
  const std::vector<float> clip = Speech("what is a dog");
  const std::vector<ClipTranscript> offline = transcriber.Run({&clip});
  ASSERT_EQ(offline.size(), 1u);
  const audio::CtcTranscript& t = offline[0].transcript;
  EXPECT_FALSE(t.words.empty());
  const audio::WordLm* lm = model.SpeechDecoder()->Lm();
  for (const audio::CtcWord& w : t.words) {
    EXPECT_GE(lm->Id(w.text), audio::WordLm::kEos + 1) << w.text << " is not a lexicon word";
    EXPECT_LT(w.start_frame, w.end_frame);
  }
  // The stream, 160 ms at a time with interims: its final transcript is the offline one.
  StreamTranscription stream;
  const size_t piece = 2560;
  audio::CtcTranscript last;
  for (size_t at = 0; at < clip.size(); at += piece) {
    std::vector<StreamStep> steps(1);
    steps[0].stream = &stream;
    steps[0].samples.assign(clip.begin() + at, clip.begin() + std::min(clip.size(), at + piece));
    steps[0].finish = at + piece >= clip.size();
    transcriber.Advance(steps);
    last = steps[0].transcript;
  }
  ASSERT_NE(stream.beam, nullptr);
  EXPECT_EQ(last.text, t.text);
  ASSERT_EQ(last.words.size(), t.words.size());
  for (size_t i = 0; i < t.words.size(); ++i) {
    EXPECT_EQ(last.words[i].start_frame, t.words[i].start_frame);
    EXPECT_EQ(last.words[i].end_frame, t.words[i].end_frame);
  }
}

}  // namespace
}  // namespace slm::engine
