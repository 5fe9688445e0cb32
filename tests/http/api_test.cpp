// The OpenAI-compatible endpoints against a server in process: every answer equals the gRPC API's
// for the same audio and settings on the same engine.
#include <sndfile.h>

#include "http/router.h"
#include "tests/http/http_fixture.h"

namespace slm::http::testing_http {
namespace {

const std::string kQuestion = "what is a dog";

// The samples the server reads back from a 16-bit WAV of `samples`.
std::vector<float> Quantized(const std::vector<float>& samples) { return DecodePcm16(EncodePcm16(samples), "audio"); }

TEST_F(HttpTest, HealthModelsMetricsAndThePage) {
  StartHttp();
  ClientResponse r = Get("/health");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(Body(r)["status"], "ok");
  r = Get("/v1/models");
  ASSERT_EQ(r.status, 200) << r.body;
  const json models = Body(r);
  EXPECT_EQ(models["object"], "list");
  ASSERT_EQ(models["data"].size(), 2u);
  EXPECT_EQ(models["data"][0]["id"], "tiny");
  EXPECT_EQ(models["data"][1]["id"], "sqa");
  EXPECT_EQ(models["data"][1]["tasks"], json::array({"sqa"}));
  EXPECT_EQ(Body(Get("/v1/models/sqa"))["id"], "sqa");
  ExpectError(Get("/v1/models/whisper-1"), 404, "model_not_found", "unknown model 'whisper-1' (this server has: tiny, sqa)");
  ExpectError(Get("/v1/nothing"), 404, "not_found", "no such path: GET /v1/nothing");
  ExpectError(Get("/v1/chat/completions"), 405, "method_not_allowed", "this path takes POST");
  ExpectError(Get("/v1/realtime"), 400, "websocket_required", "WebSocket endpoint");
  r = Get("/");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.headers.at("content-type"), "text/html; charset=utf-8");
  EXPECT_NE(r.body.find("Hold to talk"), std::string::npos);
  r = client_->Request("OPTIONS", "/v1/chat/completions");
  EXPECT_EQ(r.status, 204);
  EXPECT_EQ(r.headers.at("access-control-allow-origin"), "*");
  r = Get("/metrics");
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.body.find("slm_http_requests_total{endpoint=\"/v1/models\",status=\"200\"} 1"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("slm_http_errors_total{status=\"404\",code=\"model_not_found\"} 1"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("slm_engine_kv_blocks "), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("slm_http_connections 1"), std::string::npos) << r.body;
}

TEST_F(HttpTest, TranscriptionsEqualGrpcInEveryFormat) {
  StartHttp();
  const std::string wav = EncodeWav(Speech(kQuestion), 16000);
  const std::string expected = GrpcTranscript(wav);
  ASSERT_FALSE(expected.empty());

  ClientResponse r = Upload(wav, {{"model", "tiny", "", ""}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Body(r)["text"], expected);
  EXPECT_EQ(Body(r)["usage"]["type"], "duration");

  r = Upload(wav, {{"response_format", "text", "", ""}});
  EXPECT_EQ(r.body, expected + "\n");
  EXPECT_EQ(r.headers.at("content-type"), "text/plain; charset=utf-8");

  r = Upload(wav, {{"response_format", "verbose_json", "", ""}, {"timestamp_granularities[]", "word", "", ""}});
  const json verbose = Body(r);
  EXPECT_EQ(verbose["text"], expected);
  EXPECT_NEAR(verbose["duration"].get<double>(), Speech(kQuestion).size() / 16000.0, 1e-3);
  ASSERT_FALSE(verbose["words"].empty());
  double previous = -1;
  std::string joined;
  for (const json& w : verbose["words"]) {
    EXPECT_GE(w["start"].get<double>(), previous);
    EXPECT_GE(w["end"].get<double>(), w["start"].get<double>());
    previous = w["end"].get<double>();
    joined += (joined.empty() ? "" : " ") + w["word"].get<std::string>();
  }
  EXPECT_EQ(joined, expected);
  EXPECT_FALSE(verbose["segments"].empty());

  r = Upload(wav, {{"response_format", "srt", "", ""}});
  EXPECT_EQ(r.body.rfind("1\n00:00:0", 0), 0u) << r.body;
  EXPECT_NE(r.body.find(" --> "), std::string::npos);
  r = Upload(wav, {{"response_format", "vtt", "", ""}});
  EXPECT_EQ(r.body.rfind("WEBVTT\n\n00:00:0", 0), 0u) << r.body;

  std::string type;
  const std::string body = MultipartBody({{"file", wav, "q.wav", "audio/wav"}, {"stream", "true", "", ""}}, &type);
  int status = 0;
  const std::vector<json> events = Events("/v1/audio/transcriptions", body, type, &status);
  EXPECT_EQ(status, 200);
  ASSERT_GE(events.size(), 2u);
  std::string streamed;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    EXPECT_EQ(events[i]["type"], "transcript.text.delta");
    streamed += events[i]["delta"].get<std::string>();
  }
  EXPECT_EQ(events.back()["type"], "transcript.text.done");
  EXPECT_EQ(events.back()["text"], expected);
  EXPECT_EQ(streamed, expected);
}

// MP3, as OpenAI's input_audio documents it: libsndfile decodes it like WAV.
std::string Mp3(const std::vector<float>& samples) {
  slm::testing::TempDir dir;
  const std::string path = dir.File("q.mp3");
  SF_INFO info{};
  info.samplerate = 16000;
  info.channels = 1;
  info.format = SF_FORMAT_MPEG | SF_FORMAT_MPEG_LAYER_III;
  SNDFILE* file = sf_open(path.c_str(), SFM_WRITE, &info);
  if (file == nullptr) return "";
  sf_write_float(file, samples.data(), static_cast<sf_count_t>(samples.size()));
  sf_close(file);
  return fs::ReadFile(path);
}

TEST_F(HttpTest, ChatCompletionsWithAudioEqualAGrpcRespondStream) {
  StartHttp();
  const std::vector<float> speech = Speech(kQuestion);
  const std::string wav = EncodeWav(speech, 16000);
  const std::string expected = GrpcConverse(Quantized(speech), v1::RESPOND, 12).second;
  ASSERT_FALSE(expected.empty());

  ClientResponse r = PostRaw("/v1/chat/completions", AudioMessage(wav, "sqa", 12), "application/json");
  ASSERT_EQ(r.status, 200) << r.body;
  const json answer = Body(r);
  EXPECT_EQ(answer["object"], "chat.completion");
  EXPECT_EQ(answer["model"], "sqa");
  EXPECT_EQ(answer["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(answer["choices"][0]["message"]["content"], expected);
  EXPECT_TRUE(answer["choices"][0]["finish_reason"] == "stop" || answer["choices"][0]["finish_reason"] == "length");
  EXPECT_GT(answer["usage"]["prompt_tokens"].get<int>(), 0);
  EXPECT_GT(answer["usage"]["completion_tokens"].get<int>(), 0);

  json streamed_request = json::parse(AudioMessage(wav, "sqa", 12));
  streamed_request["stream"] = true;
  streamed_request["stream_options"] = {{"include_usage", true}};
  int status = 0;
  const std::vector<json> events = Events("/v1/chat/completions", streamed_request.dump(), "application/json", &status);
  EXPECT_EQ(status, 200);
  ASSERT_GE(events.size(), 4u);
  EXPECT_EQ(events.front()["choices"][0]["delta"]["role"], "assistant");
  std::string text;
  json finish, usage;
  for (const json& e : events) {
    if (e == "[DONE]") continue;
    EXPECT_EQ(e["object"], "chat.completion.chunk");
    if (e.contains("usage")) usage = e["usage"];
    if (e["choices"].empty()) continue;
    const json& choice = e["choices"][0];
    if (choice["delta"].contains("content")) text += choice["delta"]["content"].get<std::string>();
    if (!choice["finish_reason"].is_null()) finish = choice["finish_reason"];
  }
  EXPECT_EQ(events.back(), "[DONE]");
  EXPECT_EQ(text, expected);
  EXPECT_EQ(finish, answer["choices"][0]["finish_reason"]);
  EXPECT_EQ(usage["completion_tokens"], answer["usage"]["completion_tokens"]);

  // MP3 input is decoded and answered too.
  const std::string mp3 = Mp3(speech);
  ASSERT_FALSE(mp3.empty());
  json part = {{"type", "input_audio"}, {"input_audio", {{"data", Base64Encode(mp3)}, {"format", "mp3"}}}};
  r = PostJson("/v1/chat/completions", {{"model", "sqa"}, {"max_tokens", 4}, {"messages", {{{"role", "user"}, {"content", {part}}}}}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_FALSE(Body(r)["choices"][0]["message"]["content"].get<std::string>().empty());
  r = Upload(mp3, {}, "q.mp3");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_FALSE(Body(r)["text"].get<std::string>().empty());
}

// A client whose connection is already closed: the exchange the router answers on.
class GoneClient : public Exchange {
 public:
  void Reply(Response r) override {
    response = std::move(r);
    answered = true;
  }
  bool BeginStream(int, const std::string&, const std::vector<std::pair<std::string, std::string>>&) override {
    answered = true;
    return false;
  }
  bool Write(std::string_view) override { return false; }
  void EndStream() override {}
  bool ClientGone() const override { return true; }
  bool Answered() const override { return answered; }
  Response response;
  bool answered = false;
};

// A prompt-only adapter whose sqa template holds "{transcript}": the chat transcribes the audio
// first and answers the filled template. That transcription is cancelled with the client: for a
// client already gone the request ends there (the error names "messages", the transcription's
// parameter), before any generation starts.
TEST_F(HttpTest, ChatCompletionsOnATranscriptAdapterTranscribeUntilTheClientIsGone) {
  serve::ServeConfig config = HttpTestConfig();
  engine::AdapterEntry dictionary;
  dictionary.name = "dictionary";
  dictionary.tasks = {{"sqa", "{transcript}:"}};
  config.adapters.push_back(dictionary);
  StartHttp(config);
  const std::string body = AudioMessage(EncodeWav(Speech(kQuestion), 16000), "dictionary", 12);
  const ClientResponse answered = PostRaw("/v1/chat/completions", body, "application/json");
  ASSERT_EQ(answered.status, 200) << answered.body;
  EXPECT_EQ(Body(answered)["model"], "dictionary");
  EXPECT_EQ(Body(answered)["choices"][0]["message"]["role"], "assistant");

  Metrics metrics;
  Router router(config_.http, Security{}, metrics, [](std::function<void()> work) { work(); });
  router.Attach(server_->GetEngine());
  Request request;
  request.method = "POST";
  request.path = "/v1/chat/completions";
  request.headers["content-type"] = "application/json";
  request.body = body;
  auto client = std::make_shared<GoneClient>();
  router.Handle(std::move(request), client);
  ASSERT_TRUE(client->answered);
  EXPECT_EQ(client->response.status, 499) << client->response.body;
  const json error = json::parse(client->response.body)["error"];
  EXPECT_EQ(error["param"], "messages") << client->response.body;
  EXPECT_NE(error["message"].get<std::string>().find("cancelled by the client"), std::string::npos) << client->response.body;
  EXPECT_EQ(router.Active(), 0);
}

TEST_F(HttpTest, ChatCompletionsOfTextEqualGrpcGenerateWithSamplingAndStops) {
  StartHttp();
  auto grpc_generate = [&](const std::string& prompt, double temperature, uint64_t seed, const std::string& stop) {
    grpc::ClientContext context;
    v1::GenerateRequest request;
    request.set_prompt(prompt);
    request.set_max_new_tokens(10);
    request.set_temperature(static_cast<float>(temperature));
    request.set_seed(seed);
    if (!stop.empty()) request.add_stop(stop);
    auto reader = stub_->Generate(&context, request);
    v1::GenerateResponse response;
    std::string text;
    while (reader->Read(&response))
      if (response.has_token()) text += response.token().text();
    EXPECT_TRUE(reader->Finish().ok());
    return text;
  };
  auto http_generate = [&](const std::string& prompt, double temperature, uint64_t seed, const std::string& stop) {
    json request = {{"model", "tiny"}, {"max_tokens", 10}, {"temperature", temperature}, {"seed", seed},
                    {"messages", {{{"role", "user"}, {"content", prompt}}}}};
    if (!stop.empty()) request["stop"] = stop;
    const ClientResponse r = PostJson("/v1/chat/completions", request);
    EXPECT_EQ(r.status, 200) << r.body;
    return Body(r)["choices"][0]["message"]["content"].get<std::string>();
  };
  const std::string greedy = grpc_generate("a dog is", 0, 0, "");
  ASSERT_FALSE(greedy.empty());
  EXPECT_EQ(http_generate("a dog is", 0, 0, ""), greedy);
  // temperature is float in the proto: 0.75 is exact in both.
  EXPECT_EQ(http_generate("a dog is", 0.75, 7, ""), grpc_generate("a dog is", 0.75, 7, ""));
  const std::string stop = greedy.substr(greedy.size() / 2, 2);
  EXPECT_EQ(http_generate("a dog is", 0, 0, stop), grpc_generate("a dog is", 0, 0, stop));
  // A system message and a user message are two lines of one prompt.
  const ClientResponse r = PostJson("/v1/chat/completions", {{"model", "tiny"}, {"max_tokens", 10},
                                                             {"messages", {{{"role", "system"}, {"content", "a dog"}},
                                                                           {{"role", "user"}, {"content", "is"}}}}});
  EXPECT_EQ(Body(r)["choices"][0]["message"]["content"], grpc_generate("a dog\nis", 0, 0, ""));
}

TEST_F(HttpTest, SlowSpeechAndSpokenAnswersWithATtsAdapter) {
  const TtsAdapterFiles tts;
  serve::ServeConfig config = HttpTestConfig();
  config.adapters.push_back(tts.Entry());
  StartHttp(config);

  ClientResponse r = PostJson("/v1/audio/speech", {{"model", "tts"}, {"input", "a dog barks"}, {"voice", "default"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.headers.at("content-type"), "audio/wav");
  ASSERT_GT(r.body.size(), 44u);
  EXPECT_EQ(r.body.substr(0, 4), "RIFF");
  std::vector<float> wav_samples = DecodeAudioFile(r.body, "speech", 16000, 60);
  EXPECT_GT(wav_samples.size(), 1000u);

  // pcm: 16-bit at 24 kHz, streamed as it is made.
  size_t pieces = 0, bytes = 0;
  const ClientResponse pcm = client_->Stream("POST", "/v1/audio/speech",
                                             json{{"model", "tiny"}, {"input", "a dog barks"}, {"response_format", "pcm"}}.dump(),
                                             {{"Content-Type", "application/json"}}, [&](std::string_view piece) {
                                               ++pieces;
                                               bytes += piece.size();
                                               return true;
                                             });
  EXPECT_EQ(pcm.status, 200);
  EXPECT_EQ(pcm.headers.at("content-type"), "audio/pcm");
  EXPECT_EQ(bytes % 2, 0u);
  EXPECT_GT(bytes, 1000u);

  int status = 0;
  const std::vector<json> events = Events(
      "/v1/audio/speech", json{{"model", "tts"}, {"input", "a dog barks"}, {"stream_format", "sse"}}.dump(), "application/json", &status);
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events.front()["type"], "speech.audio.delta");
  EXPECT_EQ(events.back()["type"], "speech.audio.done");

  ExpectError(PostJson("/v1/audio/speech", {{"model", "tts"}, {"input", "x"}, {"voice", "alloy"}}), 400, "invalid_argument",
              "voice 'alloy' is not served");
  ExpectError(PostJson("/v1/audio/speech", {{"model", "tts"}, {"input", "x"}, {"response_format", "mp3"}}), 400,
              "invalid_request", "response_format 'mp3'");
  ExpectError(PostJson("/v1/audio/speech", {{"model", "tts"}, {"input", "x"}, {"speed", 2}}), 400, "invalid_request",
              "only 1.0");
  ExpectError(PostJson("/v1/audio/speech", {{"model", "sqa"}, {"input", "x"}}), 404, "model_not_found", "unknown model 'sqa'");
  ExpectError(PostJson("/v1/audio/speech", {{"model", "tts"}, {"input", " "}}), 400, "invalid_argument", "text is empty");

  // A spoken answer: the text, then the audio of the same text.
  const std::string question = EncodeWav(Speech(kQuestion), 16000);
  json request = json::parse(AudioMessage(question, "sqa", 8));
  request["modalities"] = {"text", "audio"};
  request["audio"] = {{"voice", "default"}, {"format", "wav"}};
  r = PostJson("/v1/chat/completions", request);
  ASSERT_EQ(r.status, 200) << r.body;
  const json message = Body(r)["choices"][0]["message"];
  EXPECT_TRUE(message["content"].is_null());
  EXPECT_FALSE(message["audio"]["transcript"].get<std::string>().empty());
  EXPECT_EQ(Base64Decode(message["audio"]["data"].get<std::string>(), "data").substr(0, 4), "RIFF");
  request["stream"] = true;
  ExpectError(PostJson("/v1/chat/completions", request), 400, "invalid_request", "pcm16 when stream is true");
  request["audio"]["format"] = "pcm16";
  const std::vector<json> chunks = Events("/v1/chat/completions", request.dump(), "application/json", &status);
  std::string transcript;
  size_t audio_chunks = 0;
  for (const json& e : chunks) {
    if (e == "[DONE]" || e["choices"].empty()) continue;
    const json& delta = e["choices"][0]["delta"];
    if (delta.contains("audio") && delta["audio"].contains("transcript")) transcript += delta["audio"]["transcript"].get<std::string>();
    if (delta.contains("audio") && delta["audio"].contains("data")) ++audio_chunks;
  }
  EXPECT_EQ(transcript, message["audio"]["transcript"]);
  EXPECT_GT(audio_chunks, 0u);
}

TEST_F(HttpTest, DrainingAnswers503AndTheHealthSaysSo) {
  StartHttp();
  server_->Http()->StartDrain();
  HttpClient fresh(server_->HttpAddress());
  const ClientResponse health = fresh.Request("GET", "/health");
  EXPECT_EQ(health.status, 503);
  EXPECT_EQ(Body(health)["status"], "draining");
  HttpClient other(server_->HttpAddress());
  ExpectError(other.Request("GET", "/v1/models"), 503, "draining", "draining");
}

}  // namespace
}  // namespace slm::http::testing_http
