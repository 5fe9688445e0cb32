// Every third-party library of the system in one process: LibTorch, gRPC + protobuf (Debian's),
// sentencepiece (static, behind libslm_spm_shim.so), OpenCV and libsndfile. Two protobufs meeting
// in one process (docs/HAZARDS.md hazard 1) shows up here as a crash at start-up, an abort with
// "compiled against version ...", or descriptors that fail to register; header shadowing by
// LibTorch's bundled protobuf shows up as a compile error (the static_assert below).
#include <google/protobuf/stubs/common.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <memory>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <string>
#include <vector>

#include "audio/audio_io.h"
#include "slm/v1/speech.grpc.pb.h"
#include "slm/v1/speech.pb.h"
#include "tests/test_util.h"
#include "text/sentencepiece.h"

static_assert(GOOGLE_PROTOBUF_VERSION >= 3021000,
              "protobuf headers older than the protoc that generated speech.pb.h: LibTorch's "
              "bundled google/protobuf shadows Debian's (see serve/CMakeLists.txt)");

namespace slm {
namespace {

TEST(AllLibrariesTest, LibTorchAutogradComputesGradients) {
  torch::manual_seed(0);
  const torch::Tensor x =
      torch::tensor({1.0, 2.0, 3.0}, torch::dtype(torch::kDouble).requires_grad(true));
  // y = sum(x^2) + 3 * x0  =>  dy/dx = 2x + [3, 0, 0] = [5, 4, 6].
  const torch::Tensor y = (x * x).sum() + 3 * x[0];
  y.backward();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_TRUE(torch::allclose(x.grad(), torch::tensor({5.0, 4.0, 6.0}, torch::kDouble)));
  EXPECT_DOUBLE_EQ(y.item<double>(), 17.0);

  torch::nn::Linear linear(4, 2);
  const torch::Tensor input = torch::randn({8, 4});
  linear(input).pow(2).mean().backward();
  EXPECT_EQ(linear->weight.grad().sizes().vec(), (std::vector<int64_t>{2, 4}));
  EXPECT_GT(linear->weight.grad().abs().sum().item<float>(), 0.0f);
}

TEST(AllLibrariesTest, SentencePieceTrainsEncodesAndDecodes) {
  testing::TempDir dir;
  const std::vector<std::string> people = {"the pilot", "a child",  "our teacher", "the baker",
                                           "my aunt",   "a sailor", "the mayor",   "his friend"};
  const std::vector<std::string> actions = {"opens",  "sells",  "draws", "loses",
                                            "washes", "orders", "mends", "counts"};
  const std::vector<std::string> things = {
      "the heavy door", "fresh bread",   "a map of the coast", "nine coins",
      "a yellow kite",  "the torn sail", "two warm coats",     "the last train ticket"};
  const std::vector<std::string> when = {"at dawn.",      "after lunch.",     "in the rain.",
                                         "every winter.", "by the harbour.",  "late at night.",
                                         "twice a week.", "for the festival."};
  {
    std::ofstream corpus(dir.File("corpus.txt"));
    for (int i = 0; i < 300; ++i) {
      corpus << people[i % 8] << " " << actions[(i / 8) % 8] << " " << things[(i * 5 + 3) % 8]
             << " " << when[(i * 3 + i / 8) % 8] << "\n";
    }
  }
  text::SentencePieceTrainOptions options;
  options.input = dir.File("corpus.txt");
  options.model_prefix = dir.File("spm");
  options.vocab_size = 150;
  options.hard_vocab_limit = false;  // docs/HAZARDS.md hazard 4
  text::SentencePiece::Train(options);

  const text::SentencePiece sp = text::SentencePiece::Load(dir.File("spm.model"));
  EXPECT_GT(sp.VocabSize(), 30);
  EXPECT_LE(sp.VocabSize(), 150);
  const std::string sentence = "the baker counts nine coins by the harbour.";
  const std::vector<int> ids = sp.Encode(sentence);
  ASSERT_FALSE(ids.empty());
  EXPECT_LT(ids.size(), sentence.size());  // pieces longer than one character were learned
  EXPECT_EQ(sp.Decode(ids), sentence);
}

// --- gRPC -----------------------------------------------------------------------------------

// Test-local implementation: ListModels only; every other RPC keeps the generated
// UNIMPLEMENTED default.
class ListModelsOnlyService final : public v1::Speech::Service {
 public:
  grpc::Status ListModels(grpc::ServerContext*, const v1::ListModelsRequest*,
                          v1::ListModelsResponse* response) override {
    v1::ModelInfo* asr = response->add_models();
    asr->set_name("tiny-speech");
    asr->set_is_default(true);
    asr->set_accepts_audio(true);
    v1::AdapterInfo* adapter = asr->add_adapters();
    adapter->set_name("asr");
    adapter->add_tasks("asr");
    response->add_models()->set_name("tiny-vision");
    response->add_voices("en-us");
    return grpc::Status::OK;
  }
};

void* Tag(intptr_t n) { return reinterpret_cast<void*>(n); }

// Waits for the next completion, which must be `expected`; returns its ok flag.
bool Await(grpc::CompletionQueue* queue, void* expected) {
  void* tag = nullptr;
  bool ok = false;
  if (!queue->Next(&tag, &ok)) return false;
  EXPECT_EQ(tag, expected);
  return ok;
}

void Drain(grpc::CompletionQueue* queue) {
  queue->Shutdown();
  void* tag = nullptr;
  bool ok = false;
  while (queue->Next(&tag, &ok)) {
  }
}

grpc::ByteBuffer ToBuffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

std::string ToBytes(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(buffer.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& slice : slices) {
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return bytes;
}

std::chrono::system_clock::time_point Deadline() {
  return std::chrono::system_clock::now() + std::chrono::seconds(20);
}

class GrpcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
    grpc::ServerBuilder builder;
    // Loopback only, port 0: the OS picks a free port, so parallel test runs never collide.
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(port_),
                                   grpc::InsecureChannelCredentials());
  }
  void TearDown() override {
    if (server_) server_->Shutdown(Deadline());
  }

  ListModelsOnlyService service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(GrpcTest, ListModelsRoundTrip) {
  auto stub = v1::Speech::NewStub(channel_);
  grpc::ClientContext context;
  context.set_deadline(Deadline());
  v1::ListModelsResponse response;
  const grpc::Status status = stub->ListModels(&context, v1::ListModelsRequest(), &response);
  ASSERT_TRUE(status.ok()) << status.error_code() << ": " << status.error_message();
  ASSERT_EQ(response.models_size(), 2);
  EXPECT_EQ(response.models(0).name(), "tiny-speech");
  EXPECT_TRUE(response.models(0).is_default());
  ASSERT_EQ(response.models(0).adapters_size(), 1);
  EXPECT_EQ(response.models(0).adapters(0).name(), "asr");
  EXPECT_EQ(response.models(1).name(), "tiny-vision");
  EXPECT_FALSE(response.models(1).is_default());
  ASSERT_EQ(response.voices_size(), 1);
  EXPECT_EQ(response.voices(0), "en-us");
}

TEST_F(GrpcTest, UnimplementedRpcIsUnimplemented) {
  auto stub = v1::Speech::NewStub(channel_);
  grpc::ClientContext context;
  context.set_deadline(Deadline());
  v1::TranscribeRequest request;
  request.set_audio(std::string(320, '\0'));
  request.set_encoding(v1::LINEAR16);
  request.set_sample_rate_hz(16000);
  v1::TranscribeResponse response;
  EXPECT_EQ(stub->Transcribe(&context, request, &response).error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
}

TEST_F(GrpcTest, HealthCheckReportsServing) {
  // grpc.health.v1 messages are not generated here, so they travel as raw protobuf bytes:
  // HealthCheckRequest{service: ""} is empty; HealthCheckResponse{status: SERVING} is field 1,
  // varint 1 = 0x08 0x01.
  grpc::GenericStub stub(channel_);
  grpc::CompletionQueue queue;
  grpc::ClientContext context;
  context.set_deadline(Deadline());
  auto call = stub.PrepareUnaryCall(&context, "/grpc.health.v1.Health/Check", ToBuffer(""), &queue);
  call->StartCall();
  grpc::ByteBuffer response;
  grpc::Status status;
  call->Finish(&response, &status, Tag(1));
  EXPECT_TRUE(Await(&queue, Tag(1)));
  Drain(&queue);
  ASSERT_TRUE(status.ok()) << status.error_code() << ": " << status.error_message();
  EXPECT_EQ(ToBytes(response), std::string("\x08\x01", 2));
}

TEST_F(GrpcTest, ReflectionListsTheSpeechService) {
  // ServerReflectionRequest{list_services: ""} = field 7, length 0 = 0x3A 0x00. The response
  // lists service names as plain strings, which is all this checks: that the generated
  // descriptors registered in (Debian's) protobuf pool are visible to grpc++_reflection.
  grpc::GenericStub stub(channel_);
  grpc::CompletionQueue queue;
  grpc::ClientContext context;
  context.set_deadline(Deadline());
  auto call = stub.PrepareCall(
      &context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &queue);
  call->StartCall(Tag(1));
  ASSERT_TRUE(Await(&queue, Tag(1)));
  call->Write(ToBuffer(std::string("\x3A\x00", 2)), Tag(2));
  EXPECT_TRUE(Await(&queue, Tag(2)));
  call->WritesDone(Tag(3));
  EXPECT_TRUE(Await(&queue, Tag(3)));
  grpc::ByteBuffer response;
  call->Read(&response, Tag(4));
  const bool read = Await(&queue, Tag(4));
  grpc::Status status;
  call->Finish(&status, Tag(5));
  EXPECT_TRUE(Await(&queue, Tag(5)));
  Drain(&queue);
  ASSERT_TRUE(read);
  EXPECT_TRUE(status.ok()) << status.error_code() << ": " << status.error_message();
  EXPECT_NE(ToBytes(response).find("slm.v1.Speech"), std::string::npos);
}

TEST(AllLibrariesTest, ConverseRequestSerializesAndParses) {
  v1::ConverseRequest config_message;
  v1::StreamConfig* config = config_message.mutable_config();
  config->set_encoding(v1::FLOAT32);
  config->set_sample_rate_hz(48000);
  config->set_task(v1::RESPOND);
  config->set_interim_results(true);
  config->set_endpointing_silence_ms(600);
  config->set_max_answer_tokens(64);
  config->set_adapter("sqa");
  config->set_request_id("req-42");
  config->set_respond_with_audio(true);
  config->set_output_sample_rate_hz(22050);

  std::string wire;
  ASSERT_TRUE(config_message.SerializeToString(&wire));
  v1::ConverseRequest parsed;
  ASSERT_TRUE(parsed.ParseFromString(wire));
  ASSERT_EQ(parsed.request_case(), v1::ConverseRequest::kConfig);
  EXPECT_EQ(parsed.config().encoding(), v1::FLOAT32);
  EXPECT_EQ(parsed.config().sample_rate_hz(), 48000);
  EXPECT_EQ(parsed.config().task(), v1::RESPOND);
  EXPECT_TRUE(parsed.config().interim_results());
  EXPECT_EQ(parsed.config().endpointing_silence_ms(), 600);
  EXPECT_EQ(parsed.config().max_answer_tokens(), 64);
  EXPECT_EQ(parsed.config().adapter(), "sqa");
  EXPECT_EQ(parsed.config().request_id(), "req-42");
  EXPECT_TRUE(parsed.config().respond_with_audio());
  EXPECT_EQ(parsed.config().output_sample_rate_hz(), 22050);

  v1::ConverseRequest audio_message;
  const std::string samples("\x01\x02\x00\xff\x7f\x80", 6);  // three LINEAR16 samples
  audio_message.set_audio(samples);
  ASSERT_TRUE(parsed.ParseFromString(audio_message.SerializeAsString()));
  ASSERT_EQ(parsed.request_case(), v1::ConverseRequest::kAudio);
  EXPECT_EQ(parsed.audio(), samples);

  v1::ConverseRequest end_message;
  end_message.mutable_end_of_utterance();
  ASSERT_TRUE(parsed.ParseFromString(end_message.SerializeAsString()));
  EXPECT_EQ(parsed.request_case(), v1::ConverseRequest::kEndOfUtterance);

  EXPECT_FALSE(parsed.ParseFromString(std::string("\x0a\xff\xff", 3)));  // truncated field
}

TEST(AllLibrariesTest, OpenCvPngRoundTripInMemory) {
  cv::Mat image(48, 64, CV_8UC3, cv::Scalar(20, 40, 60));
  cv::circle(image, cv::Point(20, 24), 10, cv::Scalar(0, 0, 255), cv::FILLED);
  cv::rectangle(image, cv::Rect(40, 5, 15, 30), cv::Scalar(255, 128, 0), cv::FILLED);
  std::vector<uchar> png;
  ASSERT_TRUE(cv::imencode(".png", image, png));
  ASSERT_GT(png.size(), 8u);
  EXPECT_EQ(std::string(png.begin() + 1, png.begin() + 4), "PNG");
  const cv::Mat decoded = cv::imdecode(png, cv::IMREAD_COLOR);
  ASSERT_EQ(decoded.size(), image.size());
  ASSERT_EQ(decoded.type(), CV_8UC3);
  EXPECT_EQ(cv::norm(image, decoded, cv::NORM_INF), 0.0);  // PNG is lossless
  EXPECT_EQ(decoded.at<cv::Vec3b>(24, 20), cv::Vec3b(0, 0, 255));
  EXPECT_EQ(decoded.at<cv::Vec3b>(10, 45), cv::Vec3b(255, 128, 0));
  EXPECT_EQ(decoded.at<cv::Vec3b>(45, 2), cv::Vec3b(20, 40, 60));
}

TEST(AllLibrariesTest, SndfileWavRoundTrip) {
  testing::TempDir dir;
  constexpr int kRate = 16000;
  constexpr double kPi = 3.14159265358979323846;
  std::vector<float> sine(kRate / 2);
  for (size_t i = 0; i < sine.size(); ++i) {
    sine[i] = static_cast<float>(0.5 * std::sin(2.0 * kPi * 440.0 * double(i) / kRate));
  }
  const std::string path = dir.File("sine.wav");
  audio::Write(path, sine, kRate);
  audio::ReadOptions keep_rate;
  keep_rate.target_rate = 0;
  const audio::Waveform read = audio::Read(path, keep_rate);
  EXPECT_EQ(read.sample_rate, kRate);
  ASSERT_EQ(read.samples.size(), sine.size());
  EXPECT_NEAR(read.Seconds(), 0.5, 1e-9);
  float max_error = 0.0f;
  for (size_t i = 0; i < sine.size(); ++i) {
    max_error = std::max(max_error, std::abs(read.samples[i] - sine[i]));
  }
  EXPECT_LE(max_error, 1.0f / 32768.0f + 1e-6f);  // 16-bit PCM quantization
  // 440 Hz: 440 upward zero crossings per second.
  int crossings = 0;
  for (size_t i = 1; i < read.samples.size(); ++i) {
    crossings += read.samples[i - 1] < 0.0f && read.samples[i] >= 0.0f;
  }
  EXPECT_NEAR(crossings, 220, 1);
}

}  // namespace
}  // namespace slm
