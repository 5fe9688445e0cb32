// What the gRPC server tests share (tests/serve/*_test.cpp): the test configuration on the
// committed starter models, speech from espeak-ng, PCM encoders, the offline references and a
// fixture that starts a server in process and sends Converse streams over loopback.
#pragma once

#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <thread>

#include "audio/audio_io.h"
#include "audio/ctc.h"
#include "audio/espeak_synth.h"
#include "audio/unit_decoder.h"
#include "audio/units.h"
#include "core/config.h"
#include "core/fs.h"
#include "core/safetensors.h"
#include "core/strings.h"
#include "text/generate.h"
#include "text/llama.h"
#include "text/tokenizer.h"
#include "vision/image.h"

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include "serve/client.h"
#include "serve/server.h"
#include "tests/test_util.h"

namespace slm::serve::testing_server {

namespace v1 = slm::v1;
using grpc::StatusCode;

inline const std::string kRoot = SLM_SOURCE_DIR;

inline ServeConfig TestConfig() {
  ServeConfig c;
  c.listen = "127.0.0.1:0";
  c.backbone = kRoot + "/samples/models/backbone_tiny";
  c.speech_encoder = kRoot + "/samples/models/speech_encoder_tiny";
  AdapterEntry sqa;
  sqa.name = "sqa";
  sqa.config = kRoot + "/samples/configs/sqa_tiny.yaml";
  sqa.adapters = kRoot + "/samples/models/sqa_tiny_adapter";
  c.adapters.push_back(sqa);
  c.max_streams = 3;
  c.max_chunk_bytes = 64000;
  c.max_utterance_seconds = 4;
  c.max_file_seconds = 4;
  c.max_answer_tokens = 16;
  c.max_answer_tokens_limit = 64;
  c.max_wait_ms = 1;
  c.drain_seconds = 5;
  return c;
}

inline std::vector<float> Speech(const std::string& text, const std::string& voice = "en-us") {
  audio::VoiceSpec spec;
  spec.name = voice;
  return audio::EspeakSynthesizer::Instance().Synthesize(text, spec).samples;  // 16 kHz
}

inline std::string Linear16(const std::vector<float>& samples) {
  std::string bytes(samples.size() * 2, '\0');
  for (size_t i = 0; i < samples.size(); ++i) {
    const auto v = static_cast<int16_t>(std::lrint(std::clamp(samples[i], -1.f, 1.f) * 32767.f));
    bytes[2 * i] = static_cast<char>(v & 0xFF);
    bytes[2 * i + 1] = static_cast<char>((v >> 8) & 0xFF);
  }
  return bytes;
}

inline std::string Float32(const std::vector<float>& samples) {
  return std::string(reinterpret_cast<const char*>(samples.data()), samples.size() * 4);
}

// The independent reference: the offline CTC path (log-mel -> encoder, batch of one, no padding ->
// greedy CTC), outside the server's batching and streaming.
inline std::string OfflineCtcText(const std::vector<float>& samples) {
  static const audio::CtcTranscriber asr(kRoot + "/samples/models/speech_encoder_tiny");
  return asr.Transcribe(samples);
}

// The starter spoken-QA adapter as its own model, offline (the reference for served answers).
inline adapters::MultimodalLM StarterSqaModel() {
  adapters::MultimodalConfig config;
  config::Document doc = config::Document::LoadFile(kRoot + "/samples/configs/sqa_tiny.yaml");
  config.Load(doc.Root().Child("model"));
  adapters::MultimodalLM model(config);
  model->LoadAdapters(kRoot + "/samples/models/sqa_tiny_adapter");
  model->eval();
  return model;
}

// A TTS adapter (no LoRA, so it shares the backbone with the LoRA sqa adapter) over the starter
// backbone: 12 random mel units, a fresh decoder for them, and unit rows trained for a moment so
// that "Say: ..." prompts produce a few dozen units.
struct TtsAdapterFiles {
  slm::testing::TempDir dir;
  std::string config, adapters;
  TtsAdapterFiles() {
    torch::manual_seed(21);
    audio::UnitTokenizerInfo info;
    const audio::UnitTokenizer units(torch::randn({12, 80}), info);
    units.Save(dir.File("units"));
    audio::UnitDecoderConfig d;
    d.k = 12;
    d.dim = 32;
    d.layers = 2;
    d.tokenizer_hash = units.Hash();
    audio::UnitDecoder(d)->Save(dir.File("decoder"));
    config = dir.File("tts.yaml");
    fs::AtomicWriteString(config, "model:\n  backbone: samples/models/backbone_tiny\n  speech_units: " + dir.File("units") +
                                      "\n  unit_decoder: " + dir.File("decoder") + "\n");
    config::Document doc = config::Document::LoadFile(config);
    adapters::MultimodalConfig model_config;
    model_config.Load(doc.Root().Child("model"));
    adapters::MultimodalLM model(model_config);
    adapters::MultimodalExample example;
    example.prompt = "Say: a dog barks";
    for (int i = 0; i < 40; ++i) example.target += text::SpeechUnitToken((i * 5) % 12);
    torch::optim::AdamW optimizer(model->TrainableParameters(), torch::optim::AdamWOptions(0.02));
    model->train();
    for (int step = 0; step < 40; ++step) {
      optimizer.zero_grad();
      model->Loss(model->Prepare({example}, text::PaddingSide::kRight)).backward();
      optimizer.step();
    }
    adapters = dir.File("adapters");
    model->SaveAdapters(adapters);
    fs::AtomicWriteString(adapters + "/tasks.json", "{\"tasks\": {\"tts\": \"Say: {text}\"}}\n");
  }
  // The adapter as a server serves it, under the name "tts".
  AdapterEntry Entry() const {
    AdapterEntry entry;
    entry.name = "tts";
    entry.config = config;
    entry.adapters = adapters;
    return entry;
  }
};

struct Call {
  grpc::Status status;
  std::vector<v1::ConverseResponse> responses;
  std::vector<const v1::FinalTranscript*> Finals() const {
    std::vector<const v1::FinalTranscript*> out;
    for (const auto& r : responses)
      if (r.has_final_transcript()) out.push_back(&r.final_transcript());
    return out;
  }
  std::string Answer() const {
    std::string out;
    for (const auto& r : responses)
      if (r.has_answer_token()) out += r.answer_token().text();
    return out;
  }
  std::vector<int64_t> AnswerIds() const {
    std::vector<int64_t> out;
    for (const auto& r : responses)
      if (r.has_answer_token()) out.push_back(r.answer_token().token_id());
    return out;
  }
  int Count(v1::ConverseResponse::ResponseCase c) const {
    int n = 0;
    for (const auto& r : responses) n += r.response_case() == c;
    return n;
  }
};

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // sqa_tiny.yaml names the backbone and encoder relative to the repository root.
    ASSERT_EQ(::chdir(kRoot.c_str()), 0);
  }
  void Start(ServeConfig config = TestConfig()) {
    config_ = config;
    server_ = std::make_unique<Server>(config_);
    server_->Load();
    channel_ = grpc::CreateChannel(server_->Address(), grpc::InsecureChannelCredentials());
    stub_ = v1::Speech::NewStub(channel_);
  }
  void Authorize(grpc::ClientContext& context) {
    if (!config_.auth_token.empty()) context.AddMetadata("authorization", "Bearer " + config_.auth_token);
  }
  // Sends `requests` (`pause` apart, default as fast as possible), half-closes, collects everything.
  Call Send(const std::vector<v1::ConverseRequest>& requests,
            std::chrono::milliseconds pause = std::chrono::milliseconds(0)) {
    grpc::ClientContext context;
    Authorize(context);
    auto stream = stub_->Converse(&context);
    std::thread writer([&] {
      for (const auto& r : requests) {
        if (!stream->Write(r)) break;
        std::this_thread::sleep_for(pause);
      }
      stream->WritesDone();
    });
    Call call;
    v1::ConverseResponse response;
    while (stream->Read(&response)) call.responses.push_back(response);
    writer.join();
    call.status = stream->Finish();
    return call;
  }
  static v1::ConverseRequest Config(v1::AudioEncoding encoding, int rate, v1::Task task = v1::TRANSCRIBE) {
    v1::ConverseRequest r;
    r.mutable_config()->set_encoding(encoding);
    r.mutable_config()->set_sample_rate_hz(rate);
    r.mutable_config()->set_task(task);
    r.mutable_config()->set_endpointing_silence_ms(-1);
    r.mutable_config()->set_request_id("test-1");
    return r;
  }
  static v1::ConverseRequest Audio(const std::string& bytes) {
    v1::ConverseRequest r;
    r.set_audio(bytes);
    return r;
  }
  // Config + the audio in chunks of `chunk_samples` samples of `bytes_per_sample`.
  static std::vector<v1::ConverseRequest> Stream(const v1::ConverseRequest& config, const std::string& bytes,
                                                 size_t chunk_bytes) {
    std::vector<v1::ConverseRequest> out{config};
    for (size_t at = 0; at < bytes.size(); at += chunk_bytes) out.push_back(Audio(bytes.substr(at, chunk_bytes)));
    return out;
  }
  // A normal stream works (after bad ones).
  void ExpectNormalStreamWorks() {
    const std::vector<float> speech = Speech("what is a dog");
    const Call call = Send(Stream(Config(v1::LINEAR16, 16000), Linear16(speech), 5120));
    ASSERT_TRUE(call.status.ok()) << call.status.error_message();
    ASSERT_EQ(call.Finals().size(), 1u);
    EXPECT_FALSE(call.Finals()[0]->text().empty());
  }

  ServeConfig config_;
  std::unique_ptr<Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Speech::Stub> stub_;
};

}  // namespace slm::serve::testing_server
