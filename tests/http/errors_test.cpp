// Bad requests get OpenAI's error JSON with the right status and a message naming the problem;
// the server keeps serving.
#include "tests/http/http_fixture.h"

namespace slm::http::testing_http {
namespace {

TEST_F(HttpTest, BadUploadsAreRefusedWithOpenAiErrors) {
  StartHttp();
  const std::string wav = EncodeWav(Speech("what is a dog"), 16000);
  std::string type;
  const std::string good = MultipartBody({{"file", wav, "q.wav", "audio/wav"}}, &type);

  ExpectError(PostRaw("/v1/audio/transcriptions", good.substr(0, good.size() - 40), type), 400, "invalid_multipart",
              "is not closed by the boundary");
  ExpectError(PostRaw("/v1/audio/transcriptions", good, "multipart/form-data"), 400, "invalid_multipart", "no valid boundary");
  ExpectError(PostRaw("/v1/audio/transcriptions", "{}", "application/json"), 400, "invalid_content_type",
              "expected a multipart/form-data body");
  ExpectError(Upload("this is not audio at all, just some text in a file"), 400, "invalid_audio", "file: not a readable audio file");
  ExpectError(Upload(""), 400, "invalid_audio", "file: the audio is empty");
  std::string no_file_type;
  const std::string no_file = MultipartBody({{"model", "tiny", "", ""}}, &no_file_type);
  ExpectError(PostRaw("/v1/audio/transcriptions", no_file, no_file_type), 400, "missing_field", "file: missing");
  ExpectError(Upload(wav, {{"model", "whisper-1", "", ""}}), 404, "model_not_found", "unknown model 'whisper-1'");
  ExpectError(Upload(wav, {{"response_format", "xml", "", ""}}), 400, "invalid_request", "response_format 'xml'");
  ExpectError(Upload(wav, {{"stream", "maybe", "", ""}}), 400, "invalid_request", "stream: expected true or false");
  ExpectError(Upload(wav, {{"stream", "true", "", ""}, {"response_format", "srt", "", ""}}), 400, "invalid_request",
              "use response_format json or text");
  ExpectError(Upload(EncodeWav(std::vector<float>(16000 * 5, 0.01f), 16000)), 400, "audio_too_long",
              "longer than this server's limit of 4 s");
  // Over http.max_body_bytes (400000 in the test config): 413, read from Content-Length alone.
  ExpectError(Upload(std::string(500000, 'x')), 413, "request_too_large", "over this server's limit of 400000 bytes");

  const ClientResponse r = Upload(wav);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_FALSE(Body(r)["text"].get<std::string>().empty());
}

TEST_F(HttpTest, BadChatRequestsAreRefusedWithOpenAiErrors) {
  StartHttp();
  const json user = {{"role", "user"}, {"content", "a dog is"}};
  auto chat = [&](json body) { return PostJson("/v1/chat/completions", body); };
  ExpectError(PostRaw("/v1/chat/completions", "{\"model\": \"tiny\", ", "application/json"), 400, "invalid_json",
              "the body is not valid JSON");
  ExpectError(PostRaw("/v1/chat/completions", "[1, 2]", "application/json"), 400, "invalid_json", "must be a JSON object");
  ExpectError(PostRaw("/v1/chat/completions", "", "application/json"), 400, "invalid_json", "the body is empty");
  ExpectError(chat({{"messages", {user}}}), 400, "missing_field", "model: missing");
  ExpectError(chat({{"model", "gpt-4o"}, {"messages", {user}}}), 404, "model_not_found",
              "unknown model 'gpt-4o' (this server has: tiny, sqa)");
  ExpectError(chat({{"model", "tiny"}, {"messages", json::array()}}), 400, "invalid_request", "messages: expected a non-empty array");
  ExpectError(chat({{"model", "tiny"}, {"messages", {{{"role", "robot"}, {"content", "x"}}}}}), 400, "invalid_request",
              "messages[0].role: 'robot'");
  ExpectError(chat({{"model", "tiny"}, {"messages", {user}}, {"temperature", "hot"}}), 400, "invalid_request",
              "temperature: expected a number, got a string");
  ExpectError(chat({{"model", "tiny"}, {"messages", {user}}, {"temperature", 3}}), 400, "invalid_request",
              "temperature must be in [0, 2]");
  ExpectError(chat({{"model", "tiny"}, {"messages", {user}}, {"top_p", 0}}), 400, "invalid_request", "top_p must be in (0, 1]");
  ExpectError(chat({{"model", "tiny"}, {"messages", {user}}, {"max_tokens", 0}}), 400, "invalid_request", "at least 1");
  ExpectError(chat({{"model", "tiny"}, {"messages", {user}}, {"n", 2}}), 400, "invalid_request", "only 1 choice");
  ExpectError(chat({{"model", "tiny"}, {"messages", {user}}, {"stop", {1, 2}}}), 400, "invalid_request", "stop[0]");
  ExpectError(chat({{"model", "tiny"}, {"messages", {user}}, {"modalities", {"text", "audio"}}}), 400, "unsupported",
              "no speech synthesizer");
  auto audio_part = [](const std::string& data, const std::string& format) {
    return json{{"role", "user"},
                {"content", {{{"type", "input_audio"}, {"input_audio", {{"data", data}, {"format", format}}}}}}};
  };
  ExpectError(chat({{"model", "sqa"}, {"messages", {audio_part("UklGR%%%", "wav")}}}), 400, "invalid_base64",
              "messages[0].content[0].input_audio.data: not valid base64 ('%' at offset 5)");
  ExpectError(chat({{"model", "sqa"}, {"messages", {audio_part(Base64Encode("just text, no audio"), "wav")}}}), 400,
              "invalid_audio", "messages[0].content[0]: not a readable audio file");
  ExpectError(chat({{"model", "sqa"}, {"messages", {audio_part("AAAA", "aac")}}}), 400, "invalid_request",
              "input_audio.format: 'aac'");
  ExpectError(chat({{"model", "tiny"}, {"messages", {{{"role", "user"}, {"content", {{{"type", "video"}}}}}}}}), 400,
              "invalid_request", "messages[0].content[0].type: 'video' is not supported");
  ExpectError(chat({{"model", "tiny"}, {"messages", {{{"role", "user"}, {"content", {{{"type", "image_url"}, {"image_url", {{"url", "http://x/y.png"}}}}}}}}}}),
              400, "invalid_request", "only data: URLs");
  // Audio to the plain backbone: the engine says which adapter is needed.
  const std::string wav = EncodeWav(Speech("what is a dog"), 16000);
  ExpectError(chat({{"model", "tiny"}, {"messages", {audio_part(Base64Encode(wav), "wav")}}}), 400, "failed_precondition",
              "audio: name an adapter with speech input");

  const ClientResponse r = chat({{"model", "tiny"}, {"max_tokens", 3}, {"messages", {user}}});
  EXPECT_EQ(r.status, 200) << r.body;
  const ClientResponse metrics = Get("/metrics");
  EXPECT_NE(metrics.body.find("slm_http_errors_total{status=\"400\",code=\"invalid_base64\"} 1"), std::string::npos);
}

// Fields of the wrong JSON type, and bytes that are not UTF-8: 400 naming the field in `param`.
TEST_F(HttpTest, WrongFieldTypesAndNonUtf8AreRefusedNamingTheField) {
  StartHttp();
  const json user = {{"role", "user"}, {"content", "a dog is"}};
  auto chat = [&](json body) { return PostJson("/v1/chat/completions", body); };
  auto param = [](const ClientResponse& r) { return json::parse(r.body)["error"]["param"]; };

  ClientResponse r = chat({{"model", 5}, {"messages", {user}}});
  ExpectError(r, 400, "invalid_request", "model: expected a string, got an integer");
  EXPECT_EQ(param(r), "model");
  r = chat({{"model", "tiny"}, {"messages", "hello"}});
  ExpectError(r, 400, "invalid_request", "messages: expected a non-empty array");
  EXPECT_EQ(param(r), "messages");
  r = chat({{"model", "tiny"}, {"messages", {user}}, {"max_tokens", "ten"}});
  ExpectError(r, 400, "invalid_request", "max_tokens: expected an integer, got a string");
  EXPECT_EQ(param(r), "max_tokens");
  r = chat({{"model", "tiny"}, {"messages", {user}}, {"max_tokens", 2.5}});
  ExpectError(r, 400, "invalid_request", "max_tokens: expected an integer, got a number");
  r = chat({{"model", "tiny"}, {"messages", {user}}, {"stream", "yes"}});
  ExpectError(r, 400, "invalid_request", "stream: expected true or false, got a string");
  EXPECT_EQ(param(r), "stream");
  r = chat({{"model", "tiny"}, {"messages", {user}}, {"seed", json::object()}});
  ExpectError(r, 400, "invalid_request", "seed: expected an integer, got an object");
  r = chat({{"model", "tiny"}, {"messages", {{{"role", "user"}, {"content", 42}}}}});
  ExpectError(r, 400, "invalid_request", "messages[0].content");
  EXPECT_EQ(param(r), "messages[0].content");

  // A JSON string holding a byte that is not UTF-8 (\xff): the body is not valid JSON.
  r = PostRaw("/v1/chat/completions",
              std::string("{\"model\": \"tiny\", \"messages\": [{\"role\": \"user\", \"content\": \"caf\xff\"}]}"),
              "application/json");
  ExpectError(r, 400, "invalid_json", "the body is not valid JSON");
  EXPECT_NE(r.body.find("UTF-8"), std::string::npos) << r.body;
  // The error body itself stays valid JSON when it quotes bad bytes (a model name, here).
  r = PostRaw("/v1/chat/completions", std::string("{\"model\": \"tin\\u00ff\", \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}"),
              "application/json");
  ExpectError(r, 404, "model_not_found", "unknown model");
  // Speech input is a string; an array is named.
  r = PostJson("/v1/audio/speech", {{"model", "tiny"}, {"input", json::array({1})}, {"voice", "alloy"}});
  ExpectError(r, 400, "invalid_request", "input: expected a string, got an array");
  EXPECT_EQ(param(r), "input") << r.body;
  // Over the limit of body bytes on JSON endpoints too: 413.
  ExpectError(PostRaw("/v1/chat/completions", std::string(500000, ' '), "application/json"), 413, "request_too_large",
              "over this server's limit of 400000 bytes");
  EXPECT_EQ(chat({{"model", "tiny"}, {"max_tokens", 2}, {"messages", {user}}}).status, 200);
}

TEST_F(HttpTest, TheBearerTokenIsRequiredOnTheApiOnly) {
  serve::ServeConfig config = HttpTestConfig();
  config.auth_token = "sesame";
  StartHttp(config);
  HttpClient anonymous(server_->HttpAddress());
  ExpectError(anonymous.Request("GET", "/v1/models"), 401, "missing_api_key", "missing 'Authorization: Bearer <token>'");
  ExpectError(anonymous.Request("GET", "/v1/models", "", {{"Authorization", "Bearer open"}}), 401, "invalid_api_key",
              "wrong bearer token");
  EXPECT_EQ(anonymous.Request("GET", "/health").status, 200);
  EXPECT_EQ(anonymous.Request("GET", "/").status, 200);
  EXPECT_EQ(Get("/v1/models").status, 200);  // with the token
  EXPECT_THROW(WebSocketClient(server_->HttpAddress(), "/v1/realtime"), Error);
  WebSocketClient ws(server_->HttpAddress(), "/v1/realtime", "realtime, openai-insecure-api-key.sesame");
  std::string text;
  ASSERT_TRUE(ws.Read(&text, 10));
  EXPECT_EQ(json::parse(text)["type"], "session.created");
}

}  // namespace
}  // namespace slm::http::testing_http
