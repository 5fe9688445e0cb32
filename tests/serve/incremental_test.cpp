// Streams transcribed incrementally by the block-causal embedded encoder
// (samples/models/speech_encoder_stream): each step encodes only the audio that arrived since the
// last one, and the final transcript equals the offline encoding of the whole utterance by the
// same model; interims arrive while the audio streams; spoken questions are still answered.
#include "tests/serve/server_fixture.h"

namespace slm::serve {
namespace {

using namespace testing_server;
namespace v1 = slm::v1;

ServeConfig IncrementalConfig() {
  ServeConfig c = TestConfig();
  c.speech_encoder = kRoot + "/samples/models/speech_encoder_stream";
  c.max_utterance_seconds = 10;
  return c;
}

TEST_F(ServerTest, IncrementalStreamsGiveTheOfflineTranscriptOfTheSameModel) {
  Start(IncrementalConfig());
  const audio::CtcTranscriber offline(kRoot + "/samples/models/speech_encoder_stream");
  for (const auto& [text, voice] : {std::pair{"what is a lantern", "en-us"}, std::pair{"a small domesticated animal", "en+f3"},
                                    std::pair{"music", "en-us+m3"}}) {
    const std::vector<float> speech = Speech(text, voice);
    v1::ConverseRequest config = Config(v1::LINEAR16, 16000);
    config.mutable_config()->set_interim_results(true);
    // 100 ms messages paced a little, so the encoder steps while the audio arrives.
    const Call call = Send(Stream(config, Linear16(speech), 3200), std::chrono::milliseconds(5));
    ASSERT_TRUE(call.status.ok()) << call.status.error_message();
    ASSERT_EQ(call.Finals().size(), 1u);
    EXPECT_EQ(call.Finals()[0]->text(), offline.Transcribe(speech)) << text;
    const auto& words = call.Finals()[0]->words();
    for (int i = 1; i < words.size(); ++i) EXPECT_LE(words[i - 1].end_seconds(), words[i].start_seconds() + 1e-9);
    if (speech.size() > 16000) EXPECT_GT(call.Count(v1::ConverseResponse::kInterimTranscript), 0) << text;
  }
  // Without interims the encoder still advances while audio arrives (the final encodes the rest).
  const std::vector<float> speech = Speech("what is a dog");
  const Call quiet = Send(Stream(Config(v1::LINEAR16, 16000), Linear16(speech), 3200), std::chrono::milliseconds(5));
  ASSERT_TRUE(quiet.status.ok());
  EXPECT_EQ(quiet.Count(v1::ConverseResponse::kInterimTranscript), 0);
  EXPECT_EQ(quiet.Finals()[0]->text(), offline.Transcribe(speech));
  // Spoken questions are answered as the adapter's own model answers them (it reads the audio with
  // its own encoder; the transcript comes from the served one).
  const Call answer = Send(Stream(Config(v1::LINEAR16, 16000, v1::RESPOND), Linear16(speech), 3200));
  ASSERT_TRUE(answer.status.ok()) << answer.status.error_message();
  adapters::MultimodalLM answerer = StarterSqaModel();
  adapters::MultimodalExample example;
  example.prompt = "<speech> Answer:";
  example.speech = {answerer->SpeechFeatures(speech)};
  text::GenerationOptions options;
  options.max_new_tokens = 16;
  EXPECT_EQ(answer.AnswerIds(), answerer->Generate({example}, options).tokens[0]);
}

}  // namespace
}  // namespace slm::serve
