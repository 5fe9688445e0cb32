// The realtime WebSocket against a server in process: transcripts and answers equal a gRPC
// Converse stream of the same audio; protocol mistakes are error events and the session goes on.
#include "tests/http/http_fixture.h"

namespace slm::http::testing_http {
namespace {

struct Session {
  std::unique_ptr<WebSocketClient> ws;
  std::vector<json> events;
  // Reads until an event of `type` arrives (true) or the connection closes (false).
  bool ReadUntil(const std::string& type, double seconds = 60) {
    std::string text;
    while (ws->Read(&text, seconds)) {
      events.push_back(json::parse(text));
      if (events.back()["type"] == type) return true;
    }
    return false;
  }
  std::vector<json> Of(const std::string& type) const {
    std::vector<json> out;
    for (const json& e : events)
      if (e["type"] == type) out.push_back(e);
    return out;
  }
};

Session Open(serve::Server& server, const json& session) {
  Session s;
  s.ws = std::make_unique<WebSocketClient>(server.HttpAddress(), "/v1/realtime", "realtime");
  EXPECT_TRUE(s.ReadUntil("session.created"));
  s.ws->Send(json{{"type", "session.update"}, {"session", session}}.dump());
  EXPECT_TRUE(s.ReadUntil("session.updated"));
  return s;
}

void SendAudio(Session& s, const std::vector<float>& samples, size_t chunk = 320) {
  const std::string pcm = EncodePcm16(samples);
  for (size_t at = 0; at < pcm.size(); at += 2 * chunk)
    s.ws->Send(json{{"type", "input_audio_buffer.append"}, {"audio", Base64Encode(pcm.substr(at, 2 * chunk))}}.dump());
}

TEST_F(HttpTest, RealtimeTranscriptsEqualGrpcConverse) {
  StartHttp();
  const std::vector<float> speech = DecodePcm16(EncodePcm16(Speech("what is a dog")), "audio");
  const std::string expected = GrpcConverse(speech, v1::TRANSCRIBE, 0).first;
  ASSERT_FALSE(expected.empty());

  Session s = Open(*server_, {{"type", "transcription"}, {"audio", {{"input", {{"turn_detection", nullptr}}}}}});
  EXPECT_EQ(s.Of("session.updated")[0]["session"]["audio"]["input"]["turn_detection"], nullptr);
  SendAudio(s, speech);
  s.ws->Send(R"({"type": "input_audio_buffer.commit"})");
  ASSERT_TRUE(s.ReadUntil("conversation.item.input_audio_transcription.completed"));
  const json completed = s.Of("conversation.item.input_audio_transcription.completed")[0];
  EXPECT_EQ(completed["transcript"], expected);
  EXPECT_FALSE(completed["words"].empty());
  EXPECT_EQ(completed["end_reason"], "commit");
  // Deltas only append: their concatenation is a prefix of every later interim.
  std::string appended;
  for (const json& d : s.Of("conversation.item.input_audio_transcription.delta")) {
    appended += d["delta"].get<std::string>();
    EXPECT_EQ(d["item_id"], completed["item_id"]);
  }
  EXPECT_EQ(expected.rfind(appended, 0), 0u) << appended;
  ASSERT_TRUE(s.ReadUntil("transcription.done"));  // vLLM's name for the same
  EXPECT_EQ(s.Of("transcription.done")[0]["text"], expected);
  EXPECT_TRUE(s.Of("response.created").empty());  // transcription only
}

TEST_F(HttpTest, RealtimeAnswersEqualGrpcRespond) {
  StartHttp();
  const std::vector<float> speech = DecodePcm16(EncodePcm16(Speech("what is a dog")), "audio");
  const auto [transcript, answer] = GrpcConverse(speech, v1::RESPOND, 12);
  ASSERT_FALSE(answer.empty());

  Session s = Open(*server_, {{"type", "realtime"}, {"model", "sqa"}, {"max_output_tokens", 12}, {"turn_detection", nullptr}});
  EXPECT_EQ(s.Of("session.updated")[0]["session"]["type"], "realtime");
  SendAudio(s, speech, 1600);
  s.ws->Send(R"({"type": "input_audio_buffer.commit", "event_id": "c1"})");
  ASSERT_TRUE(s.ReadUntil("response.done"));
  EXPECT_EQ(s.Of("conversation.item.input_audio_transcription.completed")[0]["transcript"], transcript);
  std::string text;
  for (const json& d : s.Of("response.output_text.delta")) text += d["delta"].get<std::string>();
  EXPECT_EQ(text, answer);
  EXPECT_EQ(s.Of("response.output_text.done")[0]["text"], answer);
  const json done = s.Of("response.done")[0]["response"];
  EXPECT_GT(done["usage"]["output_tokens"].get<int>(), 0);
  EXPECT_GT(done["latency"]["first_answer_token_ms"].get<double>(), 0);
  EXPECT_EQ(done["adapter"], "sqa");
}

TEST_F(HttpTest, RealtimeProtocolMistakesAreErrorEvents) {
  StartHttp();
  Session s = Open(*server_, {{"type", "transcription"}});
  auto error_for = [&](const std::string& event) {
    s.ws->Send(event);
    EXPECT_TRUE(s.ReadUntil("error"));
    return s.events.back()["error"];
  };
  json e = error_for(R"({"type": "input_audio_buffer.dance", "event_id": "e7"})");
  EXPECT_EQ(e["code"], "unknown_event");
  EXPECT_EQ(e["event_id"], "e7");
  EXPECT_NE(e["message"].get<std::string>().find("unknown event type 'input_audio_buffer.dance'"), std::string::npos);
  EXPECT_EQ(error_for("{not json")["code"], "invalid_json");
  EXPECT_EQ(error_for(R"({"no": "type"})")["code"], "invalid_event");
  e = error_for(R"({"type": "input_audio_buffer.append", "audio": "@@@"})");
  EXPECT_EQ(e["code"], "invalid_base64");
  EXPECT_EQ(e["param"], "audio");
  EXPECT_EQ(error_for(R"({"type": "input_audio_buffer.append", "audio": "AA=="})")["code"], "invalid_audio");  // one byte
  EXPECT_EQ(error_for(R"({"type": "session.update", "session": {"type": "chat"}})")["param"], "session.type");
  EXPECT_EQ(error_for(R"({"type": "session.update", "session": {"model": "gpt-4o"}})")["code"], "model_not_found");
  EXPECT_EQ(error_for(R"({"type": "session.update", "session": {"audio": {"input": {"format": {"rate": 5}}}}})")["param"],
            "session.audio.input.format.rate");
  EXPECT_EQ(error_for(R"({"type": "input_audio_buffer.clear"})")["code"], "unsupported_event");
  EXPECT_EQ(error_for(R"({"type": "response.create"})")["code"], "invalid_value");  // a transcription session
  EXPECT_EQ(error_for(R"({"type": "session.update", "session": {"output_modalities": ["audio"]}})")["code"], "unsupported");

  // The session goes on: a 24 kHz stream after all that is transcribed.
  s.ws->Send(json{{"type", "session.update"}, {"session", {{"audio", {{"input", {{"format", {{"type", "audio/pcm"}, {"rate", 24000}}}}}}}}}}.dump());
  ASSERT_TRUE(s.ReadUntil("session.updated"));
  SendAudio(s, audio::Resample(Speech("what is a dog"), 16000, 24000), 480);
  s.ws->Send(R"({"type": "input_audio_buffer.commit"})");
  ASSERT_TRUE(s.ReadUntil("conversation.item.input_audio_transcription.completed"));
  EXPECT_FALSE(s.events.back()["transcript"].get<std::string>().empty());
}

TEST_F(HttpTest, RealtimeStreamsOverTheEngineLimitAreRefusedWithAnErrorEvent) {
  serve::ServeConfig config = HttpTestConfig();
  config.max_streams = 1;
  StartHttp(config);
  Session first = Open(*server_, {{"type", "transcription"}});
  SendAudio(first, Speech("a dog"));
  Session second = Open(*server_, {{"type", "transcription"}});
  SendAudio(second, Speech("a cat"));
  ASSERT_TRUE(second.ReadUntil("error"));
  EXPECT_EQ(second.events.back()["error"]["code"], "resource_exhausted");
  EXPECT_EQ(second.events.back()["error"]["type"], "rate_limit_error");
}

}  // namespace
}  // namespace slm::http::testing_http
