// What the HTTP front-end tests share (tests/http/*_test.cpp): a whole server in process (gRPC and
// HTTP on one engine, tests/serve/server_fixture.h's models and configuration), a client of each,
// request builders and the gRPC references the HTTP answers must equal.
#pragma once

#include <nlohmann/json.hpp>

#include "http/audio_codec.h"
#include "http/base64.h"
#include "http/client.h"
#include "tests/serve/server_fixture.h"

namespace slm::http::testing_http {

using namespace slm::serve::testing_server;
using nlohmann::json;
namespace v1 = slm::v1;

inline serve::ServeConfig HttpTestConfig() {
  serve::ServeConfig c = TestConfig();
  c.http.listen = "127.0.0.1:0";
  c.http.max_body_bytes = 400000;
  c.http.threads = 2;
  return c;
}

class HttpTest : public ServerTest {
 protected:
  void StartHttp(serve::ServeConfig config = HttpTestConfig()) {
    Start(config);
    client_ = std::make_unique<HttpClient>(server_->HttpAddress(), 60);
  }
  std::vector<std::pair<std::string, std::string>> Auth(std::vector<std::pair<std::string, std::string>> headers = {}) {
    if (!config_.auth_token.empty()) headers.emplace_back("Authorization", "Bearer " + config_.auth_token);
    return headers;
  }
  ClientResponse Get(const std::string& path) { return client_->Request("GET", path, "", Auth()); }
  ClientResponse PostJson(const std::string& path, const json& body) {
    return client_->Request("POST", path, body.dump(), Auth({{"Content-Type", "application/json"}}));
  }
  ClientResponse PostRaw(const std::string& path, const std::string& body, const std::string& content_type) {
    return client_->Request("POST", path, body, Auth({{"Content-Type", content_type}}));
  }
  ClientResponse Upload(const std::string& file, std::vector<FormField> fields = {}, const std::string& filename = "q.wav") {
    fields.insert(fields.begin(), FormField{"file", file, filename, "audio/wav"});
    std::string content_type;
    const std::string body = MultipartBody(fields, &content_type);
    return PostRaw("/v1/audio/transcriptions", body, content_type);
  }
  // Server-sent events of a streamed POST, as parsed JSON ("[DONE]" as the string).
  std::vector<json> Events(const std::string& path, const std::string& body, const std::string& content_type, int* status) {
    std::vector<json> events;
    SseReader reader;
    const ClientResponse r = client_->Stream("POST", path, body, Auth({{"Content-Type", content_type}}), [&](std::string_view piece) {
      for (const std::string& data : reader.Feed(piece)) events.push_back(data == "[DONE]" ? json("[DONE]") : json::parse(data));
      return true;
    });
    *status = r.status;
    return events;
  }
  static json Body(const ClientResponse& r) { return json::parse(r.body); }
  // OpenAI's error shape, with the status and the words the message must contain.
  static void ExpectError(const ClientResponse& r, int status, const std::string& code, const std::string& words) {
    EXPECT_EQ(r.status, status) << r.body;
    json body;
    try {
      body = json::parse(r.body);
    } catch (const std::exception&) {
      ADD_FAILURE() << "not JSON: " << r.body;
      return;
    }
    ASSERT_TRUE(body.contains("error")) << r.body;
    EXPECT_EQ(body["error"]["code"], code) << r.body;
    EXPECT_TRUE(body["error"]["type"].is_string()) << r.body;
    EXPECT_NE(body["error"]["message"].get<std::string>().find(words), std::string::npos) << r.body;
  }
  static std::string AudioMessage(const std::string& wav, const std::string& model, int max_tokens) {
    json part = {{"type", "input_audio"}, {"input_audio", {{"data", Base64Encode(wav)}, {"format", "wav"}}}};
    return json{{"model", model}, {"max_tokens", max_tokens}, {"messages", json::array({{{"role", "user"}, {"content", json::array({part})}}})}}
        .dump();
  }
  // gRPC references on the same server.
  std::string GrpcTranscript(const std::string& file) {
    grpc::ClientContext context;
    Authorize(context);
    v1::TranscribeRequest request;
    request.set_audio(file);
    v1::TranscribeResponse response;
    const grpc::Status status = stub_->Transcribe(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.transcript().text();
  }
  // Converse of `samples` (16 kHz) as one utterance: {final transcript, answer}.
  std::pair<std::string, std::string> GrpcConverse(const std::vector<float>& samples, v1::Task task, int max_answer_tokens,
                                                   int endpointing_ms = -1) {
    v1::ConverseRequest config = Config(v1::FLOAT32, 16000, task);
    config.mutable_config()->set_max_answer_tokens(max_answer_tokens);
    config.mutable_config()->set_endpointing_silence_ms(endpointing_ms);
    const Call call = Send(Stream(config, Float32(samples), 6400));
    EXPECT_TRUE(call.status.ok()) << call.status.error_message();
    std::string finals;
    for (const v1::FinalTranscript* f : call.Finals()) finals += (finals.empty() ? "" : " | ") + f->text();
    return {finals, call.Answer()};
  }

  std::unique_ptr<HttpClient> client_;
};

}  // namespace slm::http::testing_http
