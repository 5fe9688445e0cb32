// The gRPC server's guards, end to end over loopback on the committed starter models: bad requests
// get their code while the server keeps serving, utterance ends, file and raw-sample transcription
// with bad audio, stream limits and cancellation, deadlines and message sizes, bearer tokens,
// draining, TLS and calls while the model loads. What the server answers is in server_test.cpp.
#include "tests/serve/server_fixture.h"

namespace slm::serve {
namespace {

using namespace testing_server;
namespace v1 = slm::v1;
using grpc::StatusCode;

TEST_F(ServerTest, BadRequestsGetTheirCodeAndTheServerKeepsServing) {
  Start();
  const std::vector<float> speech = Speech("what is a dog");
  const std::string pcm = Linear16(speech);
  struct Case {
    std::string name;
    std::vector<v1::ConverseRequest> requests;
    StatusCode code;
    std::string message;
  };
  auto with = [&](auto edit) {
    v1::ConverseRequest c = Config(v1::LINEAR16, 16000);
    edit(*c.mutable_config());
    return std::vector<v1::ConverseRequest>{c, Audio(pcm)};
  };
  v1::ConverseRequest eou;
  eou.mutable_end_of_utterance();
  std::vector<float> nan_samples(100, 0.1f), inf_samples(100, 0.1f);
  nan_samples[17] = std::numeric_limits<float>::quiet_NaN();
  inf_samples[3] = std::numeric_limits<float>::infinity();
  const std::vector<Case> cases = {
      {"audio before config", {Audio(pcm)}, StatusCode::INVALID_ARGUMENT, "audio before config"},
      {"two configs", {Config(v1::LINEAR16, 16000), Config(v1::LINEAR16, 16000)}, StatusCode::INVALID_ARGUMENT,
       "second StreamConfig"},
      {"no encoding", with([](v1::StreamConfig& c) { c.set_encoding(v1::AUDIO_ENCODING_UNSPECIFIED); }),
       StatusCode::INVALID_ARGUMENT, "config.encoding"},
      {"unknown encoding", with([](v1::StreamConfig& c) { c.set_encoding(static_cast<v1::AudioEncoding>(7)); }),
       StatusCode::INVALID_ARGUMENT, "config.encoding"},
      {"rate 0", with([](v1::StreamConfig& c) { c.set_sample_rate_hz(0); }), StatusCode::INVALID_ARGUMENT,
       "sample_rate_hz 0"},
      {"rate 1e9", with([](v1::StreamConfig& c) { c.set_sample_rate_hz(1000000000); }), StatusCode::INVALID_ARGUMENT,
       "sample_rate_hz 1000000000"},
      {"odd LINEAR16 bytes", {Config(v1::LINEAR16, 16000), Audio(pcm.substr(0, 301))}, StatusCode::INVALID_ARGUMENT,
       "301 bytes is not a whole number of LINEAR16"},
      {"NaN float", {Config(v1::FLOAT32, 16000), Audio(Float32(nan_samples))}, StatusCode::INVALID_ARGUMENT,
       "sample 17 is NaN"},
      {"Inf float", {Config(v1::FLOAT32, 16000), Audio(Float32(inf_samples))}, StatusCode::INVALID_ARGUMENT,
       "sample 3 is infinite"},
      {"chunk over the limit", {Config(v1::LINEAR16, 16000), Audio(std::string(64002, '\0'))},
       StatusCode::INVALID_ARGUMENT, "over this server's limit of 64000 bytes"},
      {"unknown adapter", with([](v1::StreamConfig& c) { c.set_adapter("nope"); }), StatusCode::NOT_FOUND,
       "unknown adapter 'nope' (this server has: sqa)"},
      {"unknown model", with([](v1::StreamConfig& c) { c.set_model("big"); }), StatusCode::NOT_FOUND,
       "unknown model 'big'"},
      {"empty stream", {}, StatusCode::INVALID_ARGUMENT, "empty stream"},
      {"config only", {Config(v1::LINEAR16, 16000)}, StatusCode::INVALID_ARGUMENT, "without any audio"},
      {"negative max tokens", with([](v1::StreamConfig& c) { c.set_max_answer_tokens(-1); }),
       StatusCode::INVALID_ARGUMENT, "max_answer_tokens must be >= 0"},
      {"audio answers", with([](v1::StreamConfig& c) { c.set_task(v1::RESPOND); c.set_respond_with_audio(true); }),
       StatusCode::FAILED_PRECONDITION, "no speech synthesizer"},
      {"empty message", {Config(v1::LINEAR16, 16000), v1::ConverseRequest()}, StatusCode::INVALID_ARGUMENT,
       "nothing set"},
  };
  for (const Case& c : cases) {
    const Call call = Send(c.requests);
    EXPECT_EQ(call.status.error_code(), c.code) << c.name << ": " << call.status.error_message();
    EXPECT_NE(call.status.error_message().find(c.message), std::string::npos)
        << c.name << ": " << call.status.error_message();
  }
  ExpectNormalStreamWorks();
  EXPECT_EQ(server_->Service().ActiveStreams(), 0);
}

TEST_F(ServerTest, UtterancesEndAtEndpointsExplicitEndsAndTheMaximumDuration) {
  Start();
  const std::vector<float> first = Speech("what is a dog"), second = Speech("what is water");
  std::vector<float> audio = first;
  audio.insert(audio.end(), 16000, 0.f);  // 1 s of silence: an endpoint at 500 ms
  audio.insert(audio.end(), second.begin(), second.end());
  v1::ConverseRequest config = Config(v1::LINEAR16, 16000);
  config.mutable_config()->set_endpointing_silence_ms(500);
  std::vector<v1::ConverseRequest> requests = Stream(config, Linear16(audio), 3200);
  v1::ConverseRequest eou;
  eou.mutable_end_of_utterance();
  requests.push_back(eou);
  const Call call = Send(requests);
  ASSERT_TRUE(call.status.ok()) << call.status.error_message();
  const auto finals = call.Finals();
  ASSERT_EQ(finals.size(), 2u);
  EXPECT_EQ(finals[0]->end_reason(), v1::ENDPOINT_DETECTED);
  EXPECT_EQ(finals[1]->end_reason(), v1::END_OF_UTTERANCE_MESSAGE);
  EXPECT_GT(finals[1]->start_seconds(), finals[0]->end_seconds());
  EXPECT_EQ(call.Count(v1::ConverseResponse::kSummary), 2);
  int last_index = 0;
  for (const auto& r : call.responses) {
    EXPECT_GE(r.utterance_index(), last_index);
    last_index = r.utterance_index();
  }
  EXPECT_EQ(last_index, 1);

  // 6 s of continuous speech-level noise with a 4 s limit: cut at 4 s (MAX_DURATION), then the rest.
  std::vector<float> long_audio(6 * 16000);
  for (size_t i = 0; i < long_audio.size(); ++i) long_audio[i] = 0.2f * std::sin(0.05f * i);
  const Call cut = Send(Stream(Config(v1::LINEAR16, 16000), Linear16(long_audio), 32000));
  ASSERT_TRUE(cut.status.ok()) << cut.status.error_message();
  ASSERT_EQ(cut.Finals().size(), 2u);
  EXPECT_EQ(cut.Finals()[0]->end_reason(), v1::MAX_DURATION);
  EXPECT_NEAR(cut.Finals()[0]->end_seconds(), 4.0, 0.011);
  EXPECT_EQ(cut.Finals()[1]->end_reason(), v1::CLIENT_HALF_CLOSE);
}

TEST_F(ServerTest, TranscribeTakesFilesAndRawSamplesAndRejectsBadAudio) {
  Start();
  const std::vector<float> speech = Speech("what is a dog");
  testing::TempDir dir;
  audio::Write(dir.File("q.wav"), audio::Resample(speech, 16000, 22050), 22050);
  std::ifstream in(dir.File("q.wav"), std::ios::binary);
  const std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto transcribe = [&](const v1::TranscribeRequest& request, v1::TranscribeResponse* response) {
    grpc::ClientContext context;
    return stub_->Transcribe(&context, request, response);
  };
  v1::TranscribeRequest request;
  request.set_audio(file);
  v1::TranscribeResponse response;
  ASSERT_TRUE(transcribe(request, &response).ok());
  EXPECT_NEAR(response.audio_seconds(), double(speech.size()) / 16000, 0.01);
  EXPECT_FALSE(response.transcript().text().empty());
  EXPECT_FALSE(response.request_id().empty());

  v1::TranscribeRequest raw;
  raw.set_audio(Float32(speech));
  raw.set_encoding(v1::FLOAT32);
  raw.set_sample_rate_hz(16000);
  ASSERT_TRUE(transcribe(raw, &response).ok());
  EXPECT_EQ(response.transcript().text(), OfflineCtcText(speech));

  v1::TranscribeRequest bad;
  bad.set_audio("this is not audio at all");
  grpc::Status status = transcribe(bad, &response);
  EXPECT_EQ(status.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("not a readable audio file"), std::string::npos) << status.error_message();
  EXPECT_EQ(status.error_message().find("slm-transcribe"), std::string::npos) << "leaks the temporary path";
  bad.set_audio("");
  EXPECT_EQ(transcribe(bad, &response).error_code(), StatusCode::INVALID_ARGUMENT);
  v1::TranscribeRequest too_long = raw;
  too_long.set_audio(Float32(std::vector<float>(5 * 16000, 0.f)));
  status = transcribe(too_long, &response);
  EXPECT_EQ(status.error_code(), StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(status.error_message().find("limit of 4 s"), std::string::npos) << status.error_message();
  raw.set_sample_rate_hz(0);
  EXPECT_EQ(transcribe(raw, &response).error_code(), StatusCode::INVALID_ARGUMENT);
}

TEST_F(ServerTest, StreamsOverTheLimitAreRejectedAtOnceAndCancellationFreesTheSlot) {
  Start();
  const std::string pcm = Linear16(Speech("what is a dog"));
  // Three streams hold their slots (config + audio, not closed).
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReaderWriter<v1::ConverseRequest, v1::ConverseResponse>>> streams;
  for (int i = 0; i < 3; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    streams.push_back(stub_->Converse(contexts.back().get()));
    ASSERT_TRUE(streams.back()->Write(Config(v1::LINEAR16, 16000)));
    ASSERT_TRUE(streams.back()->Write(Audio(pcm)));
  }
  auto wait_for = [&](int streams_open) {
    for (int i = 0; i < 200 && server_->Service().ActiveStreams() != streams_open; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return server_->Service().ActiveStreams();
  };
  ASSERT_EQ(wait_for(3), 3);
  const auto before = std::chrono::steady_clock::now();
  const Call rejected = Send({Config(v1::LINEAR16, 16000), Audio(pcm)});
  EXPECT_EQ(rejected.status.error_code(), StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(rejected.status.error_message().find("limit of 3 concurrent streams"), std::string::npos);
  EXPECT_LT(std::chrono::steady_clock::now() - before, std::chrono::seconds(5)) << "rejected at once";
  contexts[0]->TryCancel();
  EXPECT_EQ(streams[0]->Finish().error_code(), StatusCode::CANCELLED);
  EXPECT_EQ(wait_for(2), 2);
  ExpectNormalStreamWorks();
  for (size_t i = 1; i < streams.size(); ++i) {
    streams[i]->WritesDone();
    v1::ConverseResponse r;
    while (streams[i]->Read(&r)) {
    }
    EXPECT_TRUE(streams[i]->Finish().ok());
  }
}

TEST_F(ServerTest, CancelledGenerationLeavesTheBatchSoon) {
  ServeConfig config = TestConfig();
  config.max_answer_tokens_limit = 240;
  Start(config);
  grpc::ClientContext context;
  v1::GenerateRequest request;
  request.set_prompt("a dog is");
  request.set_max_new_tokens(240);
  // Near-uniform sampling over 4096 pieces, fixed seed: this row decodes far longer than the test
  // takes to cancel it (deterministically: the same tokens every run).
  request.set_temperature(20.0);
  request.set_seed(3);
  auto reader = stub_->Generate(&context, request);
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  context.TryCancel();
  while (reader->Read(&response)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), StatusCode::CANCELLED);
  // The engine drops a cancelled row before its next step (engine.cpp), but the cancel reaches the
  // server's context asynchronously: the client's Finish returns first, and on a fast CPU a few
  // decode steps of the test model can run meanwhile. So the bound is "soon", not "next step":
  // far fewer than the 240 the request asked for.
  engine::Engine& engine = *server_->GetEngine();
  const int64_t steps_at_cancel = engine.Stats()["decode_steps"].get<int64_t>();
  for (int i = 0; i < 500 && engine.ActiveRequests() > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  EXPECT_EQ(engine.ActiveRequests(), 0);
  EXPECT_LE(engine.Stats()["decode_steps"].get<int64_t>() - steps_at_cancel, 20);
  EXPECT_EQ(server_->Service().ActiveStreams(), 0);
}

TEST_F(ServerTest, DeadlinesEndLongGenerationsAndOversizeMessagesAreRefused) {
  ServeConfig config = TestConfig();
  config.max_answer_tokens_limit = 240;
  config.max_message_bytes = 100000;
  config.max_chunk_bytes = 1 << 20;
  Start(config);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(150));
  v1::GenerateRequest request;
  request.set_prompt("a dog is");
  request.set_max_new_tokens(240);
  request.set_temperature(20.0);  // as in the cancellation test: decodes far longer than 150 ms
  request.set_seed(3);
  auto reader = stub_->Generate(&context, request);
  v1::GenerateResponse response;
  int tokens = 0;
  while (reader->Read(&response)) tokens += response.has_token();
  EXPECT_EQ(reader->Finish().error_code(), StatusCode::DEADLINE_EXCEEDED);
  EXPECT_LT(tokens, 240);
  engine::Engine& engine = *server_->GetEngine();
  for (int i = 0; i < 500 && engine.ActiveRequests() > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  EXPECT_EQ(engine.ActiveRequests(), 0);
  // A message over limits.max_message_bytes is refused by gRPC itself.
  const Call big = Send({Config(v1::LINEAR16, 16000), Audio(std::string(200000, '\0'))});
  EXPECT_EQ(big.status.error_code(), StatusCode::RESOURCE_EXHAUSTED) << big.status.error_message();
  ExpectNormalStreamWorks();
}

TEST_F(ServerTest, BearerTokenIsRequiredWhenConfigured) {
  ServeConfig config = TestConfig();
  config.auth_token = "s3cret";
  Start(config);
  v1::ListModelsResponse models;
  {
    grpc::ClientContext context;
    const grpc::Status status = stub_->ListModels(&context, {}, &models);
    EXPECT_EQ(status.error_code(), StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer wrong");
    EXPECT_EQ(stub_->ListModels(&context, {}, &models).error_code(), StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext context;
    Authorize(context);
    ASSERT_TRUE(stub_->ListModels(&context, {}, &models).ok());
  }
  ASSERT_EQ(models.models_size(), 1);
  EXPECT_EQ(models.models(0).name(), "tiny");
  EXPECT_TRUE(models.models(0).accepts_audio());
  ASSERT_EQ(models.models(0).adapters_size(), 1);
  EXPECT_EQ(models.models(0).adapters(0).name(), "sqa");
  EXPECT_EQ(models.models(0).adapters(0).tasks(0), "sqa");
  EXPECT_EQ(models.models(0).context_length(), 256);
  const Call unauthenticated = [&] {
    ServeConfig none = config_;
    none.auth_token.clear();
    config_.auth_token.swap(none.auth_token);  // send without the token
    Call c = Send({Config(v1::LINEAR16, 16000)});
    config_.auth_token.swap(none.auth_token);
    return c;
  }();
  EXPECT_EQ(unauthenticated.status.error_code(), StatusCode::UNAUTHENTICATED);
  ExpectNormalStreamWorks();
}

TEST_F(ServerTest, DrainLetsRunningStreamsFinishAndTurnsNewOnesAway) {
  Start();
  const std::string pcm = Linear16(Speech("what is a dog"));
  grpc::ClientContext context;
  auto stream = stub_->Converse(&context);
  ASSERT_TRUE(stream->Write(Config(v1::LINEAR16, 16000, v1::RESPOND)));
  ASSERT_TRUE(stream->Write(Audio(pcm)));
  for (int i = 0; i < 200 && server_->Service().ActiveStreams() == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  std::thread drain([&] { server_->Drain(5.0); });
  for (int i = 0; i < 200; ++i) {  // until the drain has begun
    grpc::ClientContext probe;
    v1::ListModelsResponse models;
    if (stub_->ListModels(&probe, {}, &models).error_code() == StatusCode::UNAVAILABLE) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  {
    grpc::ClientContext probe;
    v1::ListModelsResponse models;
    const grpc::Status status = stub_->ListModels(&probe, {}, &models);
    EXPECT_EQ(status.error_code(), StatusCode::UNAVAILABLE);
    EXPECT_NE(status.error_message().find("draining"), std::string::npos) << status.error_message();
  }
  stream->WritesDone();
  v1::ConverseResponse response;
  int finals = 0, tokens = 0;
  while (stream->Read(&response)) {
    finals += response.has_final_transcript();
    tokens += response.has_answer_token();
  }
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(finals, 1);
  EXPECT_GE(tokens, 1);
  drain.join();
}

TEST_F(ServerTest, TlsServesEncryptedCallsOnly) {
  testing::TempDir dir;
  const std::string key = dir.File("key.pem"), cert = dir.File("cert.pem");
  const std::string command = "openssl req -x509 -newkey rsa:2048 -nodes -keyout " + key + " -out " + cert +
                              " -days 1 -subj /CN=localhost -addext subjectAltName=DNS:localhost >/dev/null 2>&1";
  if (std::system(command.c_str()) != 0) GTEST_SKIP() << "no openssl command to make a test certificate";
  ServeConfig config = TestConfig();
  config.tls_cert = cert;
  config.tls_key = key;
  Start(config);
  ChannelOptions options;
  options.server = "localhost:" + std::to_string(server_->Port());
  options.ca_file = cert;
  auto secure = v1::Speech::NewStub(MakeChannel(options));
  v1::ListModelsResponse models;
  {
    grpc::ClientContext context;
    const grpc::Status status = secure->ListModels(&context, {}, &models);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(models.models(0).name(), "tiny");
  }
  {
    grpc::ClientContext context;  // plaintext against the TLS port
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    EXPECT_FALSE(stub_->ListModels(&context, {}, &models).ok());
  }
  // Missing certificate files are named.
  ServeConfig bad = TestConfig();
  bad.tls_cert = dir.File("missing.pem");
  bad.tls_key = key;
  EXPECT_SLM_ERROR(Server{bad}, "tls.cert: cannot read");
}

TEST_F(ServerTest, CallsWhileTheModelLoadsAreUnavailable) {
  config_ = TestConfig();
  server_ = std::make_unique<Server>(config_);  // listening, model not loaded yet
  stub_ = v1::Speech::NewStub(grpc::CreateChannel(server_->Address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  v1::ListModelsResponse models;
  const grpc::Status status = stub_->ListModels(&context, {}, &models);
  EXPECT_EQ(status.error_code(), StatusCode::UNAVAILABLE);
  EXPECT_NE(status.error_message().find("loading"), std::string::npos) << status.error_message();
  const Call call = Send({Config(v1::LINEAR16, 16000)});
  EXPECT_EQ(call.status.error_code(), StatusCode::UNAVAILABLE);
  server_->Load();
  ExpectNormalStreamWorks();
}

}  // namespace
}  // namespace slm::serve
