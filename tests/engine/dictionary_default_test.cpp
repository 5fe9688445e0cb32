// The embedded default as a newcomer meets it (samples/configs/serve.yaml: the spoken dictionary):
// spoken questions about dictionary words, by a voice every model trained on and by the held-out
// `+f5` voice, are transcribed right and answered with WordNet's gloss through a RESPOND stream.
// A regression test of the committed models (backbone_dict, speech_encoder_dict, word_lm) and of
// the transcript-conditioned answer path, not a benchmark (docs/BENCHMARKS.md has the rates).
#include <gtest/gtest.h>
#include <unistd.h>

#include "audio/espeak_synth.h"
#include "core/config.h"
#include "engine/engine.h"
#include "tests/test_util.h"
#include "text/dictionary.h"

namespace slm::engine {
namespace {

const std::string kRoot = SLM_SOURCE_DIR;

struct Heard {
  std::string transcript, answer;
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
  EXPECT_TRUE(engine.Open(settings, &stream).ok());
  engine.Feed(*stream, speech.data(), speech.size());
  engine.HalfClose(*stream);
  Heard heard;
  StreamEvent event;
  while (engine.Next(*stream, &event)) {
    if (event.kind == StreamEvent::Kind::kFinal) heard.transcript = event.final.text;
    if (event.kind == StreamEvent::Kind::kToken) heard.answer += event.token.text;
  }
  EXPECT_TRUE(engine.Result(*stream).ok()) << engine.Result(*stream).message;
  engine.Close(*stream);
  return heard;
}

TEST(DictionaryDefault, SpokenQuestionsAreHeardAndAnsweredWithTheGloss) {
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
    }
}

}  // namespace
}  // namespace slm::engine
