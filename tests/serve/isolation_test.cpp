// One client must never break another (issue "request isolation"): malformed messages anywhere
// in a stream, strings that are not UTF-8, unknown enum values, requests over the concurrency
// bounds, answers that cannot fit the context, and a randomized mix of good and bad requests
// arriving together, against the server in process. Every good request must get exactly what it
// gets alone.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/impl/client_unary_call.h>
#include <grpcpp/support/sync_stream.h>

#include <random>

#include "tests/serve/server_fixture.h"

namespace slm::serve {
namespace {

using namespace testing_server;
namespace v1 = slm::v1;
using grpc::StatusCode;

grpc::ByteBuffer Bytes(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

// A Converse call whose messages are raw bytes: what a hostile or broken client can send.
struct RawCall {
  grpc::Status status;
  std::vector<v1::ConverseResponse> responses;
};

class IsolationTest : public ServerTest {
 protected:
  RawCall SendRaw(const std::vector<std::string>& messages) {
    grpc::ClientContext context;
    const grpc::internal::RpcMethod method("/slm.v1.Speech/Converse", grpc::internal::RpcMethod::BIDI_STREAMING,
                                           channel_);
    std::unique_ptr<grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>> stream(
        grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer, grpc::ByteBuffer>::Create(channel_.get(), method,
                                                                                             &context));
    for (const std::string& m : messages)
      if (!stream->Write(Bytes(m))) break;
    stream->WritesDone();
    RawCall call;
    grpc::ByteBuffer buffer;
    while (stream->Read(&buffer)) {
      std::vector<grpc::Slice> slices;
      EXPECT_TRUE(buffer.Dump(&slices).ok());
      std::string bytes;
      for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
      call.responses.emplace_back().ParseFromString(bytes);
    }
    call.status = stream->Finish();
    return call;
  }
  // A unary call with raw request bytes.
  grpc::Status UnaryRaw(const std::string& path, const std::string& request) {
    grpc::ClientContext context;
    const grpc::internal::RpcMethod method(path.c_str(), grpc::internal::RpcMethod::NORMAL_RPC, channel_);
    grpc::ByteBuffer response;
    return grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(channel_.get(), method, &context,
                                                                               Bytes(request), &response);
  }
  // Generate with raw request bytes (a server-streaming call).
  grpc::Status GenerateRaw(const std::string& request) {
    grpc::ClientContext context;
    const grpc::internal::RpcMethod method("/slm.v1.Speech/Generate", grpc::internal::RpcMethod::SERVER_STREAMING,
                                           channel_);
    std::unique_ptr<grpc::ClientReader<grpc::ByteBuffer>> reader(
        grpc::internal::ClientReaderFactory<grpc::ByteBuffer>::Create(channel_.get(), method, &context, Bytes(request)));
    grpc::ByteBuffer ignored;
    while (reader->Read(&ignored)) {
    }
    return reader->Finish();
  }
};

TEST_F(IsolationTest, AMalformedMessageAnywhereInAStreamFailsItAndNothingIsDropped) {
  Start();
  const std::string pcm = Linear16(Speech("what is a dog"));
  const std::string config = Config(v1::LINEAR16, 16000).SerializeAsString();
  const std::string audio = Audio(pcm.substr(0, 16000)).SerializeAsString();
  const std::string garbage = "\x0a\xff\xff\xff\xff\x0f";  // a length that runs past the message
  for (size_t at : {0u, 1u, 2u}) {
    std::vector<std::string> messages = {config, audio, audio};
    messages.insert(messages.begin() + at, garbage);
    const RawCall call = SendRaw(messages);
    EXPECT_EQ(call.status.error_code(), StatusCode::INVALID_ARGUMENT) << "at " << at;
    EXPECT_NE(call.status.error_message().find(Str("message ", at, ": not a valid slm.v1.ConverseRequest")),
              std::string::npos)
        << call.status.error_message();
    for (const auto& r : call.responses) EXPECT_FALSE(r.has_final_transcript()) << "at " << at;
  }
  ExpectNormalStreamWorks();
}

TEST_F(IsolationTest, StringsThatAreNotUtf8AreInvalidArgumentNamingTheField) {
  Start();
  const std::string bad = "caf\xc3";  // a truncated two-byte sequence
  v1::ConverseRequest config = Config(v1::LINEAR16, 16000);
  config.mutable_config()->set_request_id(bad);
  const RawCall stream = SendRaw({config.SerializeAsString()});
  EXPECT_EQ(stream.status.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(stream.status.error_message().find("message 0: field 'config.request_id' is not valid UTF-8"),
            std::string::npos)
      << stream.status.error_message();

  v1::GenerateRequest generate;
  generate.set_prompt("a dog \xed\xa0\x80");  // an encoded surrogate
  grpc::Status status = GenerateRaw(generate.SerializeAsString());
  EXPECT_EQ(status.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("field 'prompt' is not valid UTF-8"), std::string::npos) << status.error_message();
  generate.set_prompt("a dog");
  generate.add_stop(bad);
  status = GenerateRaw(generate.SerializeAsString());
  EXPECT_NE(status.error_message().find("field 'stop' is not valid UTF-8"), std::string::npos) << status.error_message();

  v1::TranscribeRequest transcribe;
  transcribe.set_audio(Linear16(Speech("a dog")));
  transcribe.set_encoding(v1::LINEAR16);
  transcribe.set_sample_rate_hz(16000);
  transcribe.set_adapter("\xff");
  status = UnaryRaw("/slm.v1.Speech/Transcribe", transcribe.SerializeAsString());
  EXPECT_EQ(status.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("TranscribeRequest: field 'adapter' is not valid UTF-8"), std::string::npos)
      << status.error_message();
  status = UnaryRaw("/slm.v1.Speech/Transcribe", "\xff\xff\xff");
  EXPECT_EQ(status.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("not a valid slm.v1.TranscribeRequest"), std::string::npos) << status.error_message();

  v1::UnloadAdapterRequest unload;
  unload.set_name(bad);
  status = UnaryRaw("/slm.v1.Speech/UnloadAdapter", unload.SerializeAsString());
  EXPECT_NE(status.error_message().find("field 'name' is not valid UTF-8"), std::string::npos) << status.error_message();
  ExpectNormalStreamWorks();
}

TEST_F(IsolationTest, UnknownEnumValuesAreNamedByNumber) {
  Start();
  const Call call = Send({[] {
                            v1::ConverseRequest r = Config(v1::LINEAR16, 16000);
                            r.mutable_config()->set_encoding(static_cast<v1::AudioEncoding>(7));
                            return r;
                          }(),
                          Audio(Linear16(Speech("a dog")))});
  EXPECT_EQ(call.status.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(call.status.error_message().find("config.encoding must be LINEAR16 or FLOAT32, got 7"), std::string::npos)
      << call.status.error_message();
  grpc::ClientContext context;
  v1::TranscribeRequest request;
  request.set_audio(std::string(3200, '\0'));
  request.set_encoding(static_cast<v1::AudioEncoding>(9));
  request.set_sample_rate_hz(16000);
  v1::TranscribeResponse response;
  const grpc::Status status = stub_->Transcribe(&context, request, &response);
  EXPECT_NE(status.error_message().find("got 9"), std::string::npos) << status.error_message();
}

TEST_F(IsolationTest, TranscribeAndGenerateHaveConcurrencyBounds) {
  ServeConfig config = TestConfig();
  config.max_transcribes = 1;
  config.max_generates = 1;
  Start(config);
  const std::string pcm = Linear16(Speech("what is a dog, what is a cat, what is a lantern"));
  std::atomic<int> ok{0}, exhausted{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&] {
      grpc::ClientContext context;
      v1::TranscribeRequest request;
      request.set_audio(pcm);
      request.set_encoding(v1::LINEAR16);
      request.set_sample_rate_hz(16000);
      v1::TranscribeResponse response;
      const grpc::Status status = stub_->Transcribe(&context, request, &response);
      if (status.ok()) ++ok;
      if (status.error_code() == StatusCode::RESOURCE_EXHAUSTED) {
        ++exhausted;
        EXPECT_NE(status.error_message().find("limits.max_transcribes"), std::string::npos) << status.error_message();
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_GE(ok.load(), 1);
  EXPECT_GE(exhausted.load(), 1);
  EXPECT_EQ(ok + exhausted, 8);

  // A Generate that holds the one slot; a second one is refused at once.
  grpc::ClientContext holder;
  v1::GenerateRequest request;
  request.set_prompt("a dog is");
  request.set_max_new_tokens(64);
  request.set_temperature(20.0);
  request.set_seed(3);
  auto reader = stub_->Generate(&holder, request);
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  grpc::ClientContext second;
  auto refused = stub_->Generate(&second, request);
  while (refused->Read(&response)) {
  }
  const grpc::Status status = refused->Finish();
  EXPECT_EQ(status.error_code(), StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(status.error_message().find("limits.max_generates"), std::string::npos) << status.error_message();
  holder.TryCancel();
  while (reader->Read(&response)) {
  }
  reader->Finish();
}

TEST_F(IsolationTest, GoodRequestsSucceedNextToBadOnesInRandomSchedules) {
  ServeConfig config = TestConfig();
  config.max_streams = 32;
  config.max_generates = 32;
  config.max_answer_tokens_limit = 48;
  Start(config);
  // The offline references of the good requests.
  const std::vector<std::vector<float>> questions = {Speech("what is a dog"), Speech("what is a lantern", "en-us+f3")};
  adapters::MultimodalLM answerer = StarterSqaModel();
  text::GenerationOptions options;
  options.max_new_tokens = 16;
  std::vector<std::vector<int64_t>> answers;
  for (const auto& q : questions) {
    adapters::MultimodalExample example;
    example.prompt = "<speech> Answer:";
    example.speech = {answerer->SpeechFeatures(q)};
    answers.push_back(answerer->Generate({example}, options).tokens[0]);
  }
  text::LlamaModel backbone = text::LoadLlama(config.backbone);
  backbone->Freeze();
  const text::Tokenizer tokenizer = text::Tokenizer::Load(config.backbone);
  options.max_new_tokens = 12;
  const std::vector<int64_t> generated =
      text::Generate(backbone, {tokenizer.Encode("a small domesticated", true, false)}, options).tokens[0];
  std::string long_prompt;
  for (int i = 0; i < 300; ++i) long_prompt += "word ";

  std::mt19937 rng(7);
  int good = 0;
  for (int round = 0; round < 4; ++round) {
    std::vector<std::thread> threads;
    std::mutex mutex;
    std::vector<std::string> failures;
    for (int k = 0; k < 10; ++k) {
      const int kind = rng() % 5;
      const int delay = rng() % 30;
      threads.emplace_back([&, kind, delay, k] {
        std::this_thread::sleep_for(std::chrono::milliseconds(delay));
        auto fail = [&](const std::string& what) {
          std::lock_guard<std::mutex> lock(mutex);
          failures.push_back(what);
        };
        if (kind <= 1) {  // good: a spoken question
          const Call call = Send(Stream(Config(v1::LINEAR16, 16000, v1::RESPOND), Linear16(questions[kind]), 6400));
          if (!call.status.ok()) return fail("respond: " + call.status.error_message());
          if (call.AnswerIds() != answers[kind]) fail("respond: another answer than alone");
          std::lock_guard<std::mutex> lock(mutex);
          ++good;
        } else if (kind == 2) {  // good: Generate
          grpc::ClientContext context;
          v1::GenerateRequest request;
          request.set_prompt("a small domesticated");
          request.set_max_new_tokens(12);
          auto reader = stub_->Generate(&context, request);
          v1::GenerateResponse response;
          std::vector<int64_t> ids;
          while (reader->Read(&response))
            if (response.has_token()) ids.push_back(response.token().token_id());
          const grpc::Status status = reader->Finish();
          if (!status.ok()) return fail("generate: " + status.error_message());
          if (ids != generated) fail("generate: other tokens than alone");
          std::lock_guard<std::mutex> lock(mutex);
          ++good;
        } else if (kind == 3) {  // bad: a prompt that cannot fit the context
          grpc::ClientContext context;
          v1::GenerateRequest request;
          request.set_prompt(long_prompt);
          request.set_max_new_tokens(32);
          auto reader = stub_->Generate(&context, request);
          v1::GenerateResponse response;
          while (reader->Read(&response)) {
          }
          if (reader->Finish().error_code() != StatusCode::INVALID_ARGUMENT) fail("over-long: not INVALID_ARGUMENT");
        } else {  // bad: a stream that turns malformed half way
          const RawCall call = SendRaw({Config(v1::LINEAR16, 16000, v1::RESPOND).SerializeAsString(),
                                        Audio(Linear16(questions[k % 2]).substr(0, 9600)).SerializeAsString(),
                                        std::string("\x12\x80", 2)});
          if (call.status.error_code() != StatusCode::INVALID_ARGUMENT) fail("malformed: not INVALID_ARGUMENT");
        }
      });
    }
    for (auto& t : threads) t.join();
    for (const std::string& f : failures) ADD_FAILURE() << "round " << round << ": " << f;
  }
  EXPECT_GT(good, 10);
}

TEST_F(IsolationTest, AdaptersLoadAndUnloadOverTheApiAndListModelsReportsTheCache) {
  Start();
  grpc::ClientContext c1;
  v1::LoadAdapterRequest load;
  load.set_name("sqa2");
  load.set_config(kRoot + "/samples/configs/sqa_tiny.yaml");
  load.set_adapters(kRoot + "/samples/models/sqa_tiny_adapter");
  v1::LoadAdapterResponse loaded;
  ASSERT_TRUE(stub_->LoadAdapter(&c1, load, &loaded).ok());
  EXPECT_EQ(loaded.adapter().name(), "sqa2");
  ASSERT_EQ(loaded.adapter().tasks_size(), 1);
  v1::ConverseRequest config = Config(v1::LINEAR16, 16000, v1::RESPOND);
  config.mutable_config()->set_adapter("sqa2");
  const std::string pcm = Linear16(Speech("what is a dog"));
  const Call with_second = Send(Stream(config, pcm, 6400));
  ASSERT_TRUE(with_second.status.ok()) << with_second.status.error_message();
  const Call with_first = Send(Stream(Config(v1::LINEAR16, 16000, v1::RESPOND), pcm, 6400));
  EXPECT_EQ(with_second.AnswerIds(), with_first.AnswerIds());  // the same weights under two names
  grpc::ClientContext c2;
  v1::ListModelsResponse models;
  ASSERT_TRUE(stub_->ListModels(&c2, v1::ListModelsRequest(), &models).ok());
  EXPECT_EQ(models.models(0).adapters_size(), 2);
  EXPECT_GT(models.models(0).max_respond_seconds(), 1.0);
  EXPECT_GT(models.stats().kv_blocks(), 0);
  EXPECT_EQ(models.stats().kv_used_blocks(), 0);
  EXPECT_GT(models.stats().kv_bytes_per_token(), 0);
  grpc::ClientContext c3;
  v1::UnloadAdapterRequest unload;
  unload.set_name("sqa2");
  v1::UnloadAdapterResponse unloaded;
  ASSERT_TRUE(stub_->UnloadAdapter(&c3, unload, &unloaded).ok());
  const Call gone = Send(Stream(config, pcm, 6400));
  EXPECT_EQ(gone.status.error_code(), StatusCode::NOT_FOUND);
  grpc::ClientContext c4;
  load.set_adapters(kRoot + "/samples/models/no-such-adapter");
  const grpc::Status bad = stub_->LoadAdapter(&c4, load, &loaded);
  EXPECT_EQ(bad.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(bad.error_message().find("does not exist"), std::string::npos) << bad.error_message();
}

}  // namespace
}  // namespace slm::serve
