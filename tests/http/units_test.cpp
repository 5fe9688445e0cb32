// The HTTP front-end's parts that need no server: multipart, base64, transcript formats, SSE,
// metrics, error mapping, the embedded page.
#include <gtest/gtest.h>

#include "http/base64.h"
#include "http/client.h"
#include "http/errors.h"
#include "http/metrics.h"
#include "http/multipart.h"
#include "http/static_files.h"
#include "http/transcript_format.h"
#include "tests/test_util.h"

namespace slm::http {
namespace {

std::string ErrorMessage(const std::function<void()>& action, int* status = nullptr) {
  try {
    action();
  } catch (const ApiError& e) {
    if (status) *status = e.status();
    return e.what();
  }
  return "";
}

TEST(HttpUnits, Base64RoundTripsAndNamesTheBadCharacter) {
  for (const std::string& s : {std::string(""), std::string("a"), std::string("ab"), std::string("abc"), std::string("\0\xff\x10 x", 5)})
    EXPECT_EQ(Base64Decode(Base64Encode(s), "data"), s);
  EXPECT_EQ(Base64Encode("hello"), "aGVsbG8=");
  EXPECT_EQ(Base64Decode("aGVsbG8", "data"), "hello");  // padding may be left out
  int status = 0;
  EXPECT_EQ(ErrorMessage([] { Base64Decode("aGV*bG8=", "messages[0].content[0].input_audio.data"); }, &status),
            "messages[0].content[0].input_audio.data: not valid base64 ('*' at offset 3)");
  EXPECT_EQ(status, 400);
  EXPECT_NE(ErrorMessage([] { Base64Decode("aGVsb", "audio"); }).find("4n+1"), std::string::npos);
  EXPECT_NE(ErrorMessage([] { Base64Decode("aGVsbG8==", "audio"); }).find("multiple of 4"), std::string::npos);
}

TEST(HttpUnits, MultipartFindsFieldsAndFilesAndRefusesBrokenBodies) {
  std::string type;
  const std::string body = MultipartBody({{"file", std::string("RIFF\r\n--x\0bytes", 15), "q.wav", "audio/wav"}, {"model", "tiny", "", ""}}, &type);
  const std::vector<FormPart> parts = ParseMultipart(type, body);
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_EQ(parts[0].name, "file");
  EXPECT_EQ(parts[0].filename, "q.wav");
  EXPECT_EQ(parts[0].content_type, "audio/wav");
  EXPECT_EQ(std::string(parts[0].data), std::string("RIFF\r\n--x\0bytes", 15));
  EXPECT_EQ(std::string(FindPart(parts, "model")->data), "tiny");
  EXPECT_EQ(FindPart(parts, "nope"), nullptr);

  EXPECT_NE(ErrorMessage([&] { ParseMultipart("application/json", body); }).find("expected a multipart/form-data body"),
            std::string::npos);
  EXPECT_NE(ErrorMessage([&] { ParseMultipart("multipart/form-data", body); }).find("no valid boundary"), std::string::npos);
  EXPECT_NE(ErrorMessage([&] { ParseMultipart(type, body.substr(0, body.size() / 2)); }).find("is not closed by the boundary"),
            std::string::npos);
  EXPECT_NE(ErrorMessage([&] { ParseMultipart("multipart/form-data; boundary=zzz", body); }).find("does not occur"),
            std::string::npos);
  const std::string no_name = "--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--\r\n";
  EXPECT_NE(ErrorMessage([&] { ParseMultipart("multipart/form-data; boundary=b", no_name); }).find("has no name"),
            std::string::npos);
  const std::string quoted = "--b b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--b b--\r\n";
  EXPECT_EQ(ParseMultipart("multipart/form-data; boundary=\"b b\"", quoted).size(), 1u);
}

engine::TranscribeResult TwoPhrases() {
  engine::TranscribeResult r;
  r.audio_seconds = 5.2;
  r.transcript.text = "what is a dog it barks";
  const std::vector<std::tuple<std::string, double, double>> words = {
      {"what", 0.1, 0.3}, {"is", 0.32, 0.4}, {"a", 0.42, 0.45}, {"dog", 0.5, 0.8}, {"it", 3.0, 3.1}, {"barks", 3.12, 3.5}};
  for (const auto& [text, start, end] : words) r.transcript.words.push_back({text, start, end, 0.9f});
  return r;
}

TEST(HttpUnits, TranscriptFormatsFollowOpenAi) {
  const engine::TranscribeResult r = TwoPhrases();
  std::string type;
  EXPECT_EQ(nlohmann::json::parse(FormatTranscript(r, ParseTranscriptFormat("json"), &type))["text"], r.transcript.text);
  EXPECT_EQ(type, "application/json");
  EXPECT_EQ(FormatTranscript(r, TranscriptFormat::kText, &type), r.transcript.text + "\n");
  const nlohmann::json verbose = nlohmann::json::parse(FormatTranscript(r, TranscriptFormat::kVerboseJson, &type));
  EXPECT_EQ(verbose["duration"], 5.2);
  ASSERT_EQ(verbose["words"].size(), 6u);
  EXPECT_EQ(verbose["words"][3]["word"], "dog");
  ASSERT_EQ(verbose["segments"].size(), 2u);  // split at the pause
  EXPECT_EQ(verbose["segments"][1]["text"], "it barks");
  EXPECT_EQ(FormatTranscript(r, TranscriptFormat::kSrt, &type),
            "1\n00:00:00,100 --> 00:00:00,800\nwhat is a dog\n\n2\n00:00:03,000 --> 00:00:03,500\nit barks\n\n");
  EXPECT_EQ(FormatTranscript(r, TranscriptFormat::kVtt, &type),
            "WEBVTT\n\n00:00:00.100 --> 00:00:00.800\nwhat is a dog\n\n00:00:03.000 --> 00:00:03.500\nit barks\n\n");
  EXPECT_EQ(SubtitleTime(3723.4567, ','), "01:02:03,457");
  EXPECT_NE(ErrorMessage([] { ParseTranscriptFormat("xml"); }).find("response_format 'xml'"), std::string::npos);
}

TEST(HttpUnits, SseReaderSplitsEventsAcrossPieces) {
  SseReader reader;
  EXPECT_TRUE(reader.Feed("data: {\"a\"").empty());
  EXPECT_EQ(reader.Feed(":1}\n\ndata: [DONE]\n\n"), (std::vector<std::string>{"{\"a\":1}", "[DONE]"}));
}

TEST(HttpUnits, ErrorsCarryOpenAiShapeAndStatus) {
  EXPECT_EQ(HttpStatusOf(engine::Code::kNotFound), 404);
  EXPECT_EQ(HttpStatusOf(engine::Code::kResourceExhausted), 429);
  EXPECT_EQ(HttpStatusOf(engine::Code::kUnavailable), 503);
  EXPECT_EQ(HttpStatusOf(engine::Code::kUnimplemented), 400);  // not 501: clients retry 5xx
  const ApiError error = ApiErrorOf(engine::StatusError(engine::Code::kResourceExhausted, "too many streams"));
  EXPECT_EQ(error.status(), 429);
  const nlohmann::json body = nlohmann::json::parse(ErrorBody(error));
  EXPECT_EQ(body["error"]["message"], "too many streams");
  EXPECT_EQ(body["error"]["type"], "rate_limit_error");
  EXPECT_EQ(body["error"]["code"], "resource_exhausted");
  EXPECT_TRUE(body["error"]["param"].is_null());
  EXPECT_EQ(ApiErrorOf(std::runtime_error("secret internals")).status(), 500);
  EXPECT_EQ(std::string(ApiErrorOf(std::runtime_error("secret internals")).what()).find("secret"), std::string::npos);
  EXPECT_EQ(ApiErrorOf(Error("bad wav")).status(), 400);
}

TEST(HttpUnits, MetricsRenderPrometheusText) {
  Metrics metrics;
  metrics.CountRequest("/v1/chat/completions", 200, 0.03);
  metrics.CountRequest("/random/path", 404, 0.001);
  metrics.CountError(404, "not_found");
  metrics.Timeout("read");
  const std::string text = metrics.Render({{"kv_blocks", 64}, {"decode_steps", 10}, {"name", "x"}});
  EXPECT_NE(text.find("slm_http_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("slm_http_requests_total{endpoint=\"other\",status=\"404\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("slm_http_request_duration_seconds_bucket{endpoint=\"/v1/chat/completions\",le=\"0.05\"} 1"),
            std::string::npos) << text;
  EXPECT_NE(text.find("slm_http_request_duration_seconds_bucket{endpoint=\"/v1/chat/completions\",le=\"0.025\"} 0"),
            std::string::npos) << text;
  EXPECT_NE(text.find("slm_http_errors_total{status=\"404\",code=\"not_found\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("slm_http_timeouts_total{kind=\"read\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("slm_engine_kv_blocks 64"), std::string::npos) << text;
  EXPECT_NE(text.find("slm_engine_decode_steps_total 10"), std::string::npos) << text;
  EXPECT_EQ(text.find("slm_engine_name"), std::string::npos) << text;
}

TEST(HttpUnits, ThePageIsEmbedded) {
  const WebAsset* index = FindWebAsset("/");
  ASSERT_NE(index, nullptr);
  EXPECT_EQ(index->content_type, "text/html; charset=utf-8");
  EXPECT_NE(index->body.find("app.js"), std::string_view::npos);
  ASSERT_NE(FindWebAsset("/app.js"), nullptr);
  EXPECT_NE(FindWebAsset("/app.js")->body.find("/v1/realtime"), std::string_view::npos);
  ASSERT_NE(FindWebAsset("/worklet.js"), nullptr);
  EXPECT_EQ(FindWebAsset("/etc/passwd"), nullptr);
  EXPECT_EQ(FindWebAsset("/../index.html"), nullptr);
}

}  // namespace
}  // namespace slm::http
