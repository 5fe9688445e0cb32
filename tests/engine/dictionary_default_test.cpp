// The embedded default as a newcomer meets it (samples/configs/serve.yaml: the spoken dictionary):
// spoken questions about dictionary words, by a voice every model trained on and by the held-out
// `+f5` voice, are transcribed right and answered with WordNet's gloss through a RESPOND stream.
// The answer is also spoken (the embedded voice: tts_dict_adapter, unit_decoder_voice) and heard
// back by the same server's recognizer. A regression test of the committed models (backbone_dict,
// speech_encoder_dict, word_lm, the voice) and of the transcript-conditioned answer path, not a
// benchmark (docs/BENCHMARKS.md has the rates).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cctype>
#include <set>

#include "audio/espeak_synth.h"
#include "core/config.h"
#include "engine/engine.h"
#include "tests/test_util.h"
#include "text/qa_text.h"

namespace slm::engine {
namespace {

const std::string kRoot = SLM_SOURCE_DIR;

std::vector<std::string> Words(const std::string& text) {
  std::vector<std::string> words;
  std::string word;
  for (const char ch : text + " ") {
    if (std::isalpha(static_cast<unsigned char>(ch)) || ch == '\'') {
      word += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    } else if (!word.empty()) {
      words.push_back(word);
      word.clear();
    }
  }
  return words;
}

// The share of the reference's words that the hypothesis has too (in any order).
double WordsHeard(const std::string& reference, const std::string& hypothesis) {
  const std::vector<std::string> r = Words(reference), h = Words(hypothesis);
  std::multiset<std::string> left(h.begin(), h.end());
  int64_t found = 0;
  for (const std::string& w : r) {
    const auto it = left.find(w);
    if (it != left.end()) {
      ++found;
      left.erase(it);
    }
  }
  return r.empty() ? 1.0 : double(found) / double(r.size());
}

struct Heard {
  std::string transcript, answer;
  std::vector<float> spoken;  // the answer's audio (respond_with_audio)
  int spoken_rate = 0;
};

Heard Ask(Engine& engine, const std::string& question, const std::string& voice) {
  audio::VoiceSpec spec;
  spec.name = voice;
  const std::vector<float> speech = audio::EspeakSynthesizer::Instance().Synthesize(question, spec).samples;
  std::shared_ptr<Engine::Stream> stream;
  StreamSettings settings;
  settings.respond = true;
  settings.endpointing_ms = -1;
  settings.max_answer_tokens = 48;
  settings.answer_audio = true;
  EXPECT_TRUE(engine.Open(settings, &stream).ok());
  engine.Feed(*stream, speech.data(), speech.size());
  engine.HalfClose(*stream);
  Heard heard;
  StreamEvent event;
  while (engine.Next(*stream, &event)) {
    if (event.kind == StreamEvent::Kind::kFinal) heard.transcript = event.final.text;
    if (event.kind == StreamEvent::Kind::kToken) heard.answer += event.token.text;
    if (event.kind == StreamEvent::Kind::kAudio) {
      heard.spoken.insert(heard.spoken.end(), event.audio.samples.begin(), event.audio.samples.end());
      heard.spoken_rate = event.audio.sample_rate;
    }
  }
  EXPECT_TRUE(engine.Result(*stream).ok()) << engine.Result(*stream).message;
  engine.Close(*stream);
  return heard;
}

TEST(DictionaryDefault, SlowSpokenQuestionsAreHeardAnsweredWithTheGlossAndSpoken) {
  ASSERT_EQ(::chdir(kRoot.c_str()), 0);  // serve.yaml's paths are relative to the repository
  config::Document doc = config::Document::LoadFile(kRoot + "/samples/configs/serve.yaml");
  EngineConfig config;
  config.Load(doc.Root());  // the transport keys (listen, http, ...) are serve/'s, not read here
  ServedModel model(config);
  Engine engine(model, config);
  const struct {
    const char* question;
    const char* gloss;
  } cases[] = {{"what is a lantern", "light in a transparent protective case"},
               {"what is a dog", "a member of the genus Canis (probably descended from the common wolf) that has "
                                 "been domesticated by man since prehistoric times; occurs in many breeds"}};
  for (const auto& c : cases)
    for (const char* voice : {"en-us", "en-us+f5"}) {
      const Heard heard = Ask(engine, c.question, voice);
      EXPECT_EQ(heard.transcript, c.question) << voice;
      EXPECT_EQ(text::NormalizeAnswer(heard.answer), text::NormalizeAnswer(c.gloss)) << voice << ": " << heard.answer;
      // The spoken answer lasts about as long as the gloss takes to say and is heard as it.
      ASSERT_EQ(heard.spoken_rate, model.SampleRate()) << voice;
      const double seconds = double(heard.spoken.size()) / heard.spoken_rate;
      const double words = double(Words(c.gloss).size());
      EXPECT_GT(seconds, 0.2 * words) << voice;
      EXPECT_LT(seconds, 0.8 * words) << voice;
      TranscribeResult back;
      ASSERT_TRUE(engine.Transcribe(heard.spoken, nullptr, &back).ok());
      EXPECT_GE(WordsHeard(c.gloss, back.transcript.text), 0.6) << voice << ": heard \"" << back.transcript.text << "\"";
    }
}

}  // namespace
}  // namespace slm::engine
