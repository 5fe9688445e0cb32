// The Converse protocol (serve/converse_session.h) as a state machine under arbitrary message
// sequences, over a real engine serving the embedded default (the tiny backbone, the streaming
// speech encoder, the starter spoken-QA adapter). Each input is a program; its first byte of each
// step picks the message, the following bytes its contents:
//   0: raw bytes as one message (any protobuf, truncated or garbage);
//   1: a StreamConfig whose every field comes from the input (valid and invalid encodings, rates,
//      tasks, endpointing, answer lengths, adapter/model/voice names, request ids, answer audio);
//   2: audio in the configured encoding: a slice of a spoken question, or the input's own bytes
//      (odd lengths, NaN/Inf float samples, silence);
//   3: EndOfUtterance;  4: the client cancels;  5: the client half-closes (the program ends).
// The session is driven as the gRPC service drives it (serve/service.cpp): a refused message aborts
// the stream with its status; then every response is drained.
// Invariants beyond "no crash, no leak, no hang": Receive/EndOfInput throw nothing but
// engine::StatusError, with a message; a refused message leaves the stream failed (with its code,
// or with an earlier failure of the engine's: the first one wins);
// every response carries the stream's one request id and utterance indices never go back; a stream
// that completes OK has at most one final transcript per utterance.
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

#include "audio/espeak_synth.h"
#include "engine/engine.h"
#include "engine/served_model.h"
#include "serve/converse_session.h"

namespace {

namespace v1 = slm::v1;
using slm::engine::Code;
using slm::engine::StatusError;

constexpr int64_t kMaxChunkBytes = 8192;

struct Harness {
  slm::engine::EngineConfig config;
  std::unique_ptr<slm::engine::ServedModel> model;
  std::unique_ptr<slm::engine::Engine> engine;
  std::vector<float> question;  // 16 kHz

  Harness() {
    // The adapter's training config names the backbone relative to the repository, as
    // samples/configs/serve.yaml does: run from there.
    if (chdir(SLM_SOURCE_DIR) != 0) abort();
    const std::string root = ".";
    config.backbone = root + "/samples/models/backbone_tiny";
    config.speech_encoder = root + "/samples/models/speech_encoder_stream";
    slm::engine::AdapterEntry sqa;
    sqa.name = "sqa";
    sqa.config = root + "/samples/configs/sqa_tiny.yaml";
    sqa.adapters = root + "/samples/models/sqa_tiny_adapter";
    config.adapters.push_back(sqa);
    // Small bounds keep one program to milliseconds: short utterances, short answers.
    config.max_streams = 4;
    config.max_utterance_seconds = 1.5;
    config.max_answer_tokens = 3;
    config.max_answer_tokens_limit = 6;
    config.interim_interval_ms = 160;
    config.max_wait_ms = 0;
    config.queue_timeout_seconds = 5;
    torch::set_num_threads(1);
    model = std::make_unique<slm::engine::ServedModel>(config);
    engine = std::make_unique<slm::engine::Engine>(*model, config);
    slm::audio::VoiceSpec voice;
    voice.name = "en-us";
    question = slm::audio::EspeakSynthesizer::Instance().Synthesize("what is a dog", voice).samples;
  }
};

Harness& Get() {
  static Harness* harness = new Harness();  // never destroyed: the engine's threads outlive inputs
  return *harness;
}

class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool Done() const { return pos_ >= size_; }
  uint8_t Byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  std::string Bytes(size_t n) {
    n = std::min(n, size_ - pos_);
    std::string out(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return out;
  }

 private:
  const uint8_t* data_;
  size_t size_, pos_ = 0;
};

std::string ConfigMessage(Reader& in, v1::AudioEncoding* encoding) {
  static const int32_t kRates[] = {16000, 8000, 44100, 48000, 0, 7999, 192001, -16000};
  static const int32_t kSilence[] = {0, -1, 100, 600, 20, -500, 1 << 30, 10};
  static const int32_t kAnswer[] = {0, 1, 3, 1000, -1, 2};
  static const char* kAdapters[] = {"", "sqa", "missing", "SQA"};
  static const char* kModels[] = {"", "tiny", "other", "tiny "};
  static const char* kVoices[] = {"", "en-us", "nobody"};
  v1::ConverseRequest request;
  v1::StreamConfig& c = *request.mutable_config();
  const uint8_t a = in.Byte(), b = in.Byte(), d = in.Byte();
  c.set_encoding(static_cast<v1::AudioEncoding>(a % 4));  // 3 is not a declared value
  c.set_sample_rate_hz(kRates[(a >> 2) % 8]);
  c.set_task(static_cast<v1::Task>((a >> 5) % 4));
  c.set_interim_results(b & 1);
  c.set_endpointing_silence_ms(kSilence[(b >> 1) % 8]);
  c.set_max_answer_tokens(kAnswer[(b >> 4) % 6]);
  c.set_adapter(kAdapters[d % 4]);
  c.set_model(kModels[(d >> 2) % 4]);
  c.set_respond_with_audio((d >> 4) & 1);
  c.set_voice(kVoices[(d >> 5) % 3]);
  c.set_output_encoding(static_cast<v1::AudioEncoding>((d >> 6) % 3));
  c.set_request_id(in.Bytes(in.Byte() % 8));  // may not be UTF-8
  *encoding = c.encoding();
  return request.SerializeAsString();
}

std::string AudioMessage(Reader& in, v1::AudioEncoding encoding, const std::vector<float>& question) {
  const uint8_t how = in.Byte();
  std::string bytes;
  if (how & 1) {
    bytes = in.Bytes(in.Byte() * 4u);  // the input's own bytes: any length, any values
  } else {
    // A slice of the spoken question (or silence), 20-320 ms at 16 kHz.
    const size_t samples = 320u * (1 + (in.Byte() % 16));
    const size_t start = std::min(question.size(), static_cast<size_t>(in.Byte()) * 400u);
    const bool silence = how & 2;
    for (size_t i = 0; i < samples; ++i) {
      const size_t at = start + i;
      const float x = silence || at >= question.size() ? 0.f : question[at];
      if (encoding == v1::FLOAT32) {
        bytes.append(reinterpret_cast<const char*>(&x), 4);
      } else {
        const auto v = static_cast<int16_t>(std::lrint(std::clamp(x, -1.f, 1.f) * 32767.f));
        bytes.push_back(static_cast<char>(v & 0xFF));
        bytes.push_back(static_cast<char>((v >> 8) & 0xFF));
      }
    }
  }
  v1::ConverseRequest request;
  request.set_audio(bytes);
  return request.SerializeAsString();
}

[[noreturn]] void Broken(const char* what) {
  fprintf(stderr, "converse_fuzzer: invariant broken: %s\n", what);
  abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Harness& h = Get();
  Reader in(data, size);
  std::atomic<bool> cancelled{false};  // read by the engine's threads
  slm::serve::ConverseSession session(
      *h.engine, kMaxChunkBytes, [](const std::string& id) { return id.empty() ? std::string("fuzz") : id; },
      [&cancelled] { return cancelled.load(); });
  v1::AudioEncoding encoding = v1::LINEAR16;
  bool refused = false;
  try {
    bool half_closed = false;
    for (int steps = 0; !in.Done() && steps < 64 && !half_closed; ++steps) {
      switch (in.Byte() % 6) {
        case 0: session.Receive(in.Bytes(in.Byte())); break;
        case 1: session.Receive(ConfigMessage(in, &encoding)); break;
        case 2: session.Receive(AudioMessage(in, encoding, h.question)); break;
        case 3: {
          v1::ConverseRequest request;
          request.mutable_end_of_utterance();
          session.Receive(request.SerializeAsString());
          break;
        }
        case 4: cancelled = true; break;
        default: half_closed = true; break;
      }
    }
    if (cancelled)
      session.Abort({Code::kCancelled, "cancelled by the client"});
    else
      session.EndOfInput();
  } catch (const StatusError& e) {
    if (std::strlen(e.what()) == 0) Broken("a refusal without a message");
    refused = true;
    session.Abort(e.status());
  }
  std::string request_id;
  int32_t last_index = 0;
  std::map<int32_t, int> finals;
  v1::ConverseResponse response;
  while (session.Next(&response)) {
    if (request_id.empty()) request_id = response.request_id();
    if (response.request_id() != request_id || request_id.empty()) Broken("request ids differ or are empty");
    if (response.utterance_index() < last_index) Broken("utterance index went back");
    last_index = response.utterance_index();
    if (response.has_final_transcript()) ++finals[response.utterance_index()];
  }
  const slm::engine::Status result = session.Result();
  if (refused && result.ok()) Broken("a refused message left the stream OK");
  if (!result.ok() && result.message.empty()) Broken("a failed stream without a message");
  if (result.ok())
    for (const auto& entry : finals)
      if (entry.second > 1) Broken("two final transcripts for one utterance");
  return 0;
}
