#include "serve/converse_session.h"

#include <algorithm>

#include "core/strings.h"
#include "serve/protocol.h"

namespace slm::serve {

namespace v1 = slm::v1;
using engine::Code;
using engine::Fail;

namespace {
constexpr int kMinStreamRate = 8000;
constexpr int kMaxStreamRate = 192000;
}  // namespace

ConverseSession::ConverseSession(engine::Engine& engine, int64_t max_chunk_bytes,
                                 std::function<std::string(const std::string&)> request_id, engine::Cancelled cancelled)
    : engine_(engine), max_chunk_bytes_(max_chunk_bytes), request_id_fn_(std::move(request_id)),
      cancelled_(std::move(cancelled)) {}

ConverseSession::~ConverseSession() {
  if (stream_) engine_.Close(*stream_);
}

void ConverseSession::Open(const v1::StreamConfig& c) {
  if (c.encoding() != v1::LINEAR16 && c.encoding() != v1::FLOAT32) {
    const std::string name = v1::AudioEncoding_Name(c.encoding());
    Fail(Code::kInvalidArgument, Str("config.encoding must be LINEAR16 or FLOAT32, got ",
                                     name.empty() ? std::to_string(static_cast<int>(c.encoding())) : name));
  }
  if (c.sample_rate_hz() < kMinStreamRate || c.sample_rate_hz() > kMaxStreamRate)
    Fail(Code::kInvalidArgument, Str("config.sample_rate_hz ", c.sample_rate_hz(), " is outside ", kMinStreamRate, "..",
                                     kMaxStreamRate, " Hz"));
  if (c.task() != v1::TASK_UNSPECIFIED && c.task() != v1::TRANSCRIBE && c.task() != v1::RESPOND)
    Fail(Code::kInvalidArgument, Str("config.task ", static_cast<int>(c.task()), " is not TRANSCRIBE or RESPOND"));
  CheckModel(engine_, c.model(), "config.model");
  engine::StreamSettings settings;
  request_id_ = request_id_fn_(c.request_id());
  settings.request_id = request_id_;
  settings.respond = c.task() == v1::RESPOND;
  settings.interim = c.interim_results();
  settings.endpointing_ms = c.endpointing_silence_ms();
  settings.max_answer_tokens = c.max_answer_tokens();
  settings.adapter = c.adapter();
  if (c.respond_with_audio()) {
    const std::vector<std::string> voices = engine_.Model().Voices();
    if (!c.voice().empty() && std::find(voices.begin(), voices.end(), c.voice()) == voices.end())
      Fail(Code::kInvalidArgument, Str("config.voice '", c.voice(), "' is not served (voices: ", Join(voices), ")"));
    answer_encoding_ = OutputEncoding(c.output_encoding(), "config.output_encoding");
    settings.answer_audio = true;
    settings.answer_audio_rate = c.output_sample_rate_hz();
  }
  settings.cancelled = cancelled_;
  encoding_ = c.encoding();
  resampler_.emplace(c.sample_rate_hz(), engine_.Model().SampleRate());
  std::shared_ptr<engine::Engine::Stream> stream;
  if (engine::Status status = engine_.Open(settings, &stream); !status.ok()) Fail(status.code, status.message);
  stream_ = std::move(stream);
}

void ConverseSession::Receive(const std::string& bytes) {
  const int64_t index = index_++;
  const std::string where = Str("message ", index);
  v1::ConverseRequest request;
  ParseRequest(bytes, &request, where);
  if (index == 0) {
    if (!request.has_config())
      Fail(Code::kInvalidArgument, request.has_audio() ? "audio before config: the first message must carry a StreamConfig"
                                                       : "the first message must carry a StreamConfig");
    Open(request.config());
    return;
  }
  switch (request.request_case()) {
    case v1::ConverseRequest::kConfig:
      Fail(Code::kInvalidArgument, Str(where, ": a second StreamConfig (only the first message carries one)"));
    case v1::ConverseRequest::kAudio: {
      const std::string& audio = request.audio();
      if (static_cast<int64_t>(audio.size()) > max_chunk_bytes_)
        Fail(Code::kInvalidArgument, Str(where, ": audio chunk of ", audio.size(), " bytes is over this server's limit of ",
                                         max_chunk_bytes_, " bytes per message"));
      const std::vector<float> samples = DecodePcm(audio, encoding_, where + " audio");
      const std::vector<float> resampled = resampler_->Process(samples.data(), samples.size());
      engine_.Feed(*stream_, resampled.data(), resampled.size());
      return;
    }
    case v1::ConverseRequest::kEndOfUtterance: {
      const std::vector<float> tail = resampler_->Flush();
      engine_.Feed(*stream_, tail.data(), tail.size());
      engine_.EndUtterance(*stream_);
      return;
    }
    default:
      Fail(Code::kInvalidArgument, Str(where, ": a ConverseRequest with nothing set"));
  }
}

void ConverseSession::EndOfInput() {
  if (!stream_) Fail(Code::kInvalidArgument, "empty stream: the first message must carry a StreamConfig");
  const std::vector<float> tail = resampler_->Flush();
  engine_.Feed(*stream_, tail.data(), tail.size());
  if (!engine_.HadAudio(*stream_)) Fail(Code::kInvalidArgument, "the stream ended without any audio");
  engine_.HalfClose(*stream_);
}

void ConverseSession::Abort(const engine::Status& why) {
  if (stream_) engine_.Abort(*stream_, why);
}

bool ConverseSession::Next(v1::ConverseResponse* out) {
  if (!stream_) return false;
  engine::StreamEvent event;
  if (!engine_.Next(*stream_, &event)) return false;
  *out = ToProto(event, request_id_, answer_encoding_);
  return true;
}

engine::Status ConverseSession::Result() {
  if (!stream_) return {Code::kInvalidArgument, "the stream never opened"};
  return engine_.Result(*stream_);
}

}  // namespace slm::serve
