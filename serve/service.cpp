#include "serve/service.h"

#include <google/protobuf/unknown_field_set.h>
#include <grpcpp/support/proto_buffer_reader.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "audio/audio_io.h"
#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"
#include "serve/client.h"
#include "serve/grpc_status.h"
#include "vision/image.h"

namespace slm::serve {

namespace v1 = slm::v1;
using grpc::StatusCode;

namespace {

constexpr int kMinStreamRate = 8000;
constexpr int kMaxStreamRate = 192000;
// Method indices in slm.v1.Speech (the order of the service's rpc declarations).
constexpr int kConverse = 0, kTranscribe = 1, kGenerate = 2, kSynthesize = 3, kLoadAdapter = 5, kUnloadAdapter = 6;

// Counts an RPC in `counter` for its lifetime.
class Counted {
 public:
  explicit Counted(std::atomic<int>& counter) : counter_(counter) { counter_.fetch_add(1); }
  ~Counted() { counter_.fetch_sub(1); }
  Counted(const Counted&) = delete;
  Counted& operator=(const Counted&) = delete;

 private:
  std::atomic<int>& counter_;
};

[[noreturn]] void Fail(StatusCode code, const std::string& message) { throw StatusError(code, message); }

grpc::Status ToGrpc(const engine::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<StatusCode>(status.code), TruncateStatusMessage(status.message));
}

void Require(const engine::Status& status) {
  if (!status.ok()) Fail(static_cast<StatusCode>(status.code), status.message);
}

void CheckModel(const engine::Engine& engine, const std::string& name, const std::string& field) {
  const std::string& served = const_cast<engine::Engine&>(engine).Model().Name();
  if (!name.empty() && name != served)
    Fail(StatusCode::NOT_FOUND, Str(field, ": unknown model '", name, "' (this server has: ", served, ")"));
}

// Well-formed UTF-8 as protobuf demands it: no overlong forms, no surrogates, nothing above
// U+10FFFF, no truncated sequence.
bool ValidUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t extra;
    uint32_t code;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      extra = 1, code = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      extra = 2, code = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      extra = 3, code = c & 0x07;
    } else {
      return false;
    }
    if (i + extra >= s.size()) return false;  // truncated
    for (size_t k = 1; k <= extra; ++k) {
      const unsigned char d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      code = (code << 6) | (d & 0x3F);
    }
    static const uint32_t kMinimum[] = {0, 0x80, 0x800, 0x10000};
    if (code < kMinimum[extra] || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return false;
    i += extra + 1;
  }
  return true;
}

// The path of the first string field of `descriptor` whose bytes in `wire` are not UTF-8, or "".
std::string BadUtf8Field(const google::protobuf::Descriptor* descriptor, const std::string& wire, const std::string& prefix) {
  google::protobuf::UnknownFieldSet fields;
  if (!fields.ParseFromString(wire)) return "";
  for (int i = 0; i < fields.field_count(); ++i) {
    const google::protobuf::UnknownField& f = fields.field(i);
    if (f.type() != google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED) continue;
    const google::protobuf::FieldDescriptor* field = descriptor->FindFieldByNumber(f.number());
    if (field == nullptr) continue;
    const std::string path = prefix + field->name();
    if (field->type() == google::protobuf::FieldDescriptor::TYPE_STRING && !ValidUtf8(f.length_delimited()))
      return path;
    if (field->type() == google::protobuf::FieldDescriptor::TYPE_MESSAGE) {
      const std::string inner = BadUtf8Field(field->message_type(), f.length_delimited(), path + ".");
      if (!inner.empty()) return inner;
    }
  }
  return "";
}

// Bytes of an encoded audio file -> mono samples at `rate`, through a private temporary file
// (libsndfile reads files).
std::vector<float> DecodeAudioFile(const std::string& bytes, int rate, double max_seconds) {
  std::string path = (std::filesystem::temp_directory_path() / "slm-transcribe-XXXXXX").string();
  const int fd = ::mkstemp(path.data());
  if (fd < 0) throw std::runtime_error("mkstemp failed");
  ::close(fd);
  struct Remove {
    std::string path;
    ~Remove() { std::remove(path.c_str()); }
  } remove{path};
  {
    std::ofstream out(path, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) throw std::runtime_error("cannot write " + path);
  }
  audio::FileInfo info;
  try {
    info = audio::Probe(path);
  } catch (const Error& e) {
    std::string message = e.what();
    const size_t at = message.find(path);  // the temporary name means nothing to the client
    if (at != std::string::npos) message.replace(at, path.size(), "the request's audio");
    Fail(StatusCode::INVALID_ARGUMENT, "audio: not a readable audio file (" + message + ")");
  }
  const double seconds = double(info.frames) / info.sample_rate;
  if (seconds > max_seconds)
    Fail(StatusCode::RESOURCE_EXHAUSTED, Str("audio: ", seconds, " s is longer than this server's limit of ",
                                             max_seconds, " s per request"));
  audio::ReadOptions options;
  options.target_rate = rate;
  return audio::Read(path, options).samples;
}

v1::AudioChunk ToProto(const engine::AudioOut& audio, v1::AudioEncoding encoding) {
  v1::AudioChunk chunk;
  chunk.set_sample_rate_hz(audio.sample_rate);
  chunk.set_encoding(encoding);
  chunk.set_audio(EncodePcm(audio.samples.data(), audio.samples.size(), encoding));
  chunk.set_start_seconds(audio.start_seconds);
  return chunk;
}

void ToProto(const engine::Transcript& t, v1::FinalTranscript* f) {
  f->set_text(t.text);
  f->set_is_final(true);
  f->set_confidence(t.confidence);
  for (const engine::Word& w : t.words) {
    v1::WordInfo* info = f->add_words();
    info->set_word(w.text);
    info->set_start_seconds(w.start_seconds);
    info->set_end_seconds(w.end_seconds);
    info->set_confidence(w.confidence);
  }
  f->set_start_seconds(t.start_seconds);
  f->set_end_seconds(t.end_seconds);
  f->set_end_reason(static_cast<v1::UtteranceEnd>(t.end_reason));
}

v1::AnswerToken ToProto(const engine::Token& token) {
  v1::AnswerToken out;
  out.set_text(token.text);
  out.set_token_id(static_cast<int32_t>(token.id));
  out.set_index(token.index);
  return out;
}

v1::ConverseResponse ToProto(const engine::StreamEvent& event, const std::string& request_id, v1::AudioEncoding audio) {
  v1::ConverseResponse response;
  response.set_request_id(request_id);
  response.set_utterance_index(event.utterance);
  switch (event.kind) {
    case engine::StreamEvent::Kind::kInterim: {
      v1::InterimTranscript* interim = response.mutable_interim_transcript();
      interim->set_text(event.interim.text);
      interim->set_stability(event.interim.stability);
      interim->set_is_final(false);
      interim->set_audio_end_seconds(event.interim.audio_end_seconds);
      break;
    }
    case engine::StreamEvent::Kind::kFinal:
      ToProto(event.final, response.mutable_final_transcript());
      break;
    case engine::StreamEvent::Kind::kToken:
      *response.mutable_answer_token() = ToProto(event.token);
      break;
    case engine::StreamEvent::Kind::kAudio:
      *response.mutable_answer_audio() = ToProto(event.audio, audio);
      break;
    case engine::StreamEvent::Kind::kSummary: {
      const engine::UtteranceSummary& s = event.summary;
      v1::UtteranceSummary* summary = response.mutable_summary();
      summary->set_first_interim_ms(s.first_interim_ms);
      summary->set_final_after_end_of_audio_ms(s.final_after_end_of_audio_ms);
      summary->set_first_answer_token_ms(s.first_answer_token_ms);
      summary->set_total_ms(s.total_ms);
      summary->set_audio_seconds_processed(s.audio_seconds);
      summary->set_tokens_generated(s.tokens);
      summary->set_finish_reason(static_cast<v1::FinishReason>(s.finish));
      summary->set_model(s.model);
      summary->set_adapter(s.adapter);
      break;
    }
  }
  return response;
}

v1::AudioEncoding OutputEncoding(v1::AudioEncoding requested, const std::string& field) {
  if (requested == v1::AUDIO_ENCODING_UNSPECIFIED) return v1::LINEAR16;
  if (requested != v1::LINEAR16 && requested != v1::FLOAT32)
    Fail(StatusCode::INVALID_ARGUMENT, Str(field, " must be LINEAR16 or FLOAT32, got ", requested));
  return requested;
}

}  // namespace

void ParseRequest(const std::string& bytes, google::protobuf::Message* message, const std::string& where) {
  if (message->ParseFromString(bytes)) return;
  const std::string field = BadUtf8Field(message->GetDescriptor(), bytes, "");
  if (!field.empty()) Fail(StatusCode::INVALID_ARGUMENT, Str(where, ": field '", field, "' is not valid UTF-8"));
  Fail(StatusCode::INVALID_ARGUMENT, Str(where, ": not a valid ", message->GetDescriptor()->full_name(),
                                         " (the bytes do not parse as protobuf)"));
}

void ParseRequest(const grpc::ByteBuffer& buffer, google::protobuf::Message* message, const std::string& where) {
  std::vector<grpc::Slice> slices;
  if (!buffer.Dump(&slices).ok()) Fail(StatusCode::INVALID_ARGUMENT, Str(where, ": unreadable message"));
  std::string bytes;
  for (const grpc::Slice& slice : slices) bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  ParseRequest(bytes, message, where);
}

std::vector<float> DecodePcm(const std::string& bytes, v1::AudioEncoding encoding, const std::string& where) {
  std::vector<float> samples;
  if (encoding == v1::LINEAR16) {
    if (bytes.size() % 2 != 0)
      Fail(StatusCode::INVALID_ARGUMENT, Str(where, ": ", bytes.size(), " bytes is not a whole number of LINEAR16 ",
                                             "samples (2 bytes each)"));
    samples.resize(bytes.size() / 2);
    for (size_t i = 0; i < samples.size(); ++i) {
      const auto lo = static_cast<uint8_t>(bytes[2 * i]), hi = static_cast<uint8_t>(bytes[2 * i + 1]);
      samples[i] = static_cast<int16_t>(static_cast<uint16_t>(lo | (hi << 8))) / 32768.0f;
    }
  } else if (encoding == v1::FLOAT32) {
    if (bytes.size() % 4 != 0)
      Fail(StatusCode::INVALID_ARGUMENT, Str(where, ": ", bytes.size(), " bytes is not a whole number of FLOAT32 ",
                                             "samples (4 bytes each)"));
    samples.resize(bytes.size() / 4);
    std::memcpy(samples.data(), bytes.data(), bytes.size());  // little-endian hosts only (x86-64, arm64)
    for (size_t i = 0; i < samples.size(); ++i)
      if (!std::isfinite(samples[i]))
        Fail(StatusCode::INVALID_ARGUMENT, Str(where, ": FLOAT32 sample ", i, " is ", std::isnan(samples[i]) ? "NaN" : "infinite"));
  } else {
    const std::string name = v1::AudioEncoding_Name(encoding);
    Fail(StatusCode::INVALID_ARGUMENT, Str(where, ": encoding must be LINEAR16 or FLOAT32, got ",
                                           name.empty() ? std::to_string(static_cast<int>(encoding)) : name));
  }
  return samples;
}

SpeechService::SpeechService(const ServeConfig& config) : config_(config) {
  MarkMethodStreamed(kConverse, new grpc::internal::BidiStreamingHandler<SpeechService, grpc::ByteBuffer, v1::ConverseResponse>(
                                    [](SpeechService* s, grpc::ServerContext* c, RawStream* stream) {
                                      return s->Converse(c, stream);
                                    },
                                    this));
  MarkMethodStreamed(kTranscribe, new grpc::internal::StreamedUnaryHandler<grpc::ByteBuffer, v1::TranscribeResponse>(
                                      [this](grpc::ServerContext* c, auto* call) { return Transcribe(c, call); }));
  MarkMethodStreamed(kGenerate, new grpc::internal::SplitServerStreamingHandler<grpc::ByteBuffer, v1::GenerateResponse>(
                                    [this](grpc::ServerContext* c, auto* call) { return Generate(c, call); }));
  MarkMethodStreamed(kSynthesize, new grpc::internal::SplitServerStreamingHandler<grpc::ByteBuffer, v1::SynthesizeResponse>(
                                      [this](grpc::ServerContext* c, auto* call) { return Synthesize(c, call); }));
  MarkMethodStreamed(kLoadAdapter, new grpc::internal::StreamedUnaryHandler<grpc::ByteBuffer, v1::LoadAdapterResponse>(
                                       [this](grpc::ServerContext* c, auto* call) -> grpc::Status {
                                         Counted counted(active_calls_);
                                         if (grpc::Status admitted = Admit(c); !admitted.ok()) return admitted;
                                         try {
                                           grpc::ByteBuffer raw;
                                           if (!call->Read(&raw)) Fail(StatusCode::INVALID_ARGUMENT, "no request");
                                           v1::LoadAdapterRequest request;
                                           ParseRequest(raw, &request, "LoadAdapterRequest");
                                           AdapterEntry entry;
                                           entry.name = request.name();
                                           entry.run = request.run();
                                           entry.config = request.config();
                                           entry.adapters = request.adapters();
                                           if (entry.name.empty()) Fail(StatusCode::INVALID_ARGUMENT, "name is empty");
                                           if (entry.run.empty() && (entry.config.empty() || entry.adapters.empty()))
                                             Fail(StatusCode::INVALID_ARGUMENT, "give run, or both config and adapters");
                                           if (!entry.run.empty()) {
                                             if (entry.config.empty()) entry.config = entry.run + "/config.yaml";
                                             if (entry.adapters.empty()) entry.adapters = entry.run + "/adapters";
                                           }
                                           Require(engine_.load()->LoadAdapter(entry));
                                           v1::LoadAdapterResponse response;
                                           const engine::AdapterRef loaded = engine_.load()->Model().Find(entry.name);
                                           response.mutable_adapter()->set_name(entry.name);
                                           if (loaded)
                                             for (const auto& [task, prompt] : loaded->tasks) response.mutable_adapter()->add_tasks(task);
                                           call->Write(response);
                                           return grpc::Status::OK;
                                         } catch (...) {
                                           return ToGrpcStatus(std::current_exception());
                                         }
                                       }));
  MarkMethodStreamed(kUnloadAdapter, new grpc::internal::StreamedUnaryHandler<grpc::ByteBuffer, v1::UnloadAdapterResponse>(
                                         [this](grpc::ServerContext* c, auto* call) -> grpc::Status {
                                           Counted counted(active_calls_);
                                           if (grpc::Status admitted = Admit(c); !admitted.ok()) return admitted;
                                           try {
                                             grpc::ByteBuffer raw;
                                             if (!call->Read(&raw)) Fail(StatusCode::INVALID_ARGUMENT, "no request");
                                             v1::UnloadAdapterRequest request;
                                             ParseRequest(raw, &request, "UnloadAdapterRequest");
                                             Require(engine_.load()->UnloadAdapter(request.name()));
                                             call->Write(v1::UnloadAdapterResponse());
                                             return grpc::Status::OK;
                                           } catch (...) {
                                             return ToGrpcStatus(std::current_exception());
                                           }
                                         }));
}

void SpeechService::Attach(engine::Engine* engine) { engine_.store(engine); }

grpc::Status SpeechService::Admit(grpc::ServerContext* context) const {
  if (!config_.auth_token.empty()) {
    const auto& metadata = context->client_metadata();
    const auto it = metadata.find("authorization");
    const std::string expected = "Bearer " + config_.auth_token;
    if (it == metadata.end())
      return grpc::Status(StatusCode::UNAUTHENTICATED, "missing 'authorization: Bearer <token>' metadata");
    if (std::string(it->second.data(), it->second.size()) != expected)
      return grpc::Status(StatusCode::UNAUTHENTICATED, "wrong bearer token");
  }
  if (engine_.load() == nullptr) return grpc::Status(StatusCode::UNAVAILABLE, "the server is still loading its model");
  if (draining_) return grpc::Status(StatusCode::UNAVAILABLE, "the server is draining (shutting down); retry elsewhere");
  return grpc::Status::OK;
}

std::string SpeechService::RequestId(const std::string& given) const {
  if (!given.empty()) return given;
  char id[40];
  std::snprintf(id, sizeof(id), "req-%d-%llu", static_cast<int>(::getpid()),
                static_cast<unsigned long long>(next_id_.fetch_add(1)));
  return id;
}

grpc::Status SpeechService::Converse(grpc::ServerContext* context, RawStream* stream) {
  Counted call(active_calls_), streaming(active_streams_);
  if (grpc::Status admitted = Admit(context); !admitted.ok()) return admitted;
  engine::Engine& engine = *engine_.load();
  std::shared_ptr<engine::Engine::Stream> session;
  try {
    grpc::ByteBuffer raw;
    v1::ConverseRequest request;
    if (!stream->Read(&raw)) Fail(StatusCode::INVALID_ARGUMENT, "empty stream: the first message must carry a StreamConfig");
    ParseRequest(raw, &request, "message 0");
    if (!request.has_config())
      Fail(StatusCode::INVALID_ARGUMENT, request.has_audio() ? "audio before config: the first message must carry a StreamConfig"
                                                             : "the first message must carry a StreamConfig");
    const v1::StreamConfig& c = request.config();
    if (c.encoding() != v1::LINEAR16 && c.encoding() != v1::FLOAT32) {
      const std::string name = v1::AudioEncoding_Name(c.encoding());
      Fail(StatusCode::INVALID_ARGUMENT, Str("config.encoding must be LINEAR16 or FLOAT32, got ",
                                             name.empty() ? std::to_string(static_cast<int>(c.encoding())) : name));
    }
    if (c.sample_rate_hz() < kMinStreamRate || c.sample_rate_hz() > kMaxStreamRate)
      Fail(StatusCode::INVALID_ARGUMENT, Str("config.sample_rate_hz ", c.sample_rate_hz(), " is outside ", kMinStreamRate,
                                             "..", kMaxStreamRate, " Hz"));
    if (c.task() != v1::TASK_UNSPECIFIED && c.task() != v1::TRANSCRIBE && c.task() != v1::RESPOND)
      Fail(StatusCode::INVALID_ARGUMENT, Str("config.task ", static_cast<int>(c.task()), " is not TRANSCRIBE or RESPOND"));
    CheckModel(engine, c.model(), "config.model");
    engine::StreamSettings settings;
    const std::string request_id = RequestId(c.request_id());
    settings.request_id = request_id;
    settings.respond = c.task() == v1::RESPOND;
    settings.interim = c.interim_results();
    settings.endpointing_ms = c.endpointing_silence_ms();
    settings.max_answer_tokens = c.max_answer_tokens();
    settings.adapter = c.adapter();
    v1::AudioEncoding answer_encoding = v1::LINEAR16;
    if (c.respond_with_audio()) {
      const std::vector<std::string> voices = engine.Model().Voices();
      if (!c.voice().empty() && std::find(voices.begin(), voices.end(), c.voice()) == voices.end())
        Fail(StatusCode::INVALID_ARGUMENT, Str("config.voice '", c.voice(), "' is not served (voices: ", Join(voices), ")"));
      answer_encoding = OutputEncoding(c.output_encoding(), "config.output_encoding");
      settings.answer_audio = true;
      settings.answer_audio_rate = c.output_sample_rate_hz();
    }
    settings.cancelled = [context] { return context->IsCancelled(); };
    audio::StreamResampler resampler(c.sample_rate_hz(), engine.Model().SampleRate());
    const v1::AudioEncoding encoding = c.encoding();
    Require(engine.Open(settings, &session));

    std::thread writer([&] {
      engine::StreamEvent event;
      while (engine.Next(*session, &event))
        if (!stream->Write(ToProto(event, request_id, answer_encoding))) break;
    });
    grpc::Status result = grpc::Status::OK;
    try {
      int64_t index = 0;
      while (stream->Read(&raw)) {
        ++index;
        request.Clear();
        ParseRequest(raw, &request, Str("message ", index));
        switch (request.request_case()) {
          case v1::ConverseRequest::kConfig:
            Fail(StatusCode::INVALID_ARGUMENT, Str("message ", index, ": a second StreamConfig (only the first message carries one)"));
          case v1::ConverseRequest::kAudio: {
            const std::string& bytes = request.audio();
            if (static_cast<int64_t>(bytes.size()) > config_.max_chunk_bytes)
              Fail(StatusCode::INVALID_ARGUMENT, Str("message ", index, ": audio chunk of ", bytes.size(),
                                                     " bytes is over this server's limit of ", config_.max_chunk_bytes,
                                                     " bytes per message"));
            const std::vector<float> samples = DecodePcm(bytes, encoding, Str("message ", index, " audio"));
            const std::vector<float> resampled = resampler.Process(samples.data(), samples.size());
            engine.Feed(*session, resampled.data(), resampled.size());
            break;
          }
          case v1::ConverseRequest::kEndOfUtterance: {
            const std::vector<float> tail = resampler.Flush();
            engine.Feed(*session, tail.data(), tail.size());
            engine.EndUtterance(*session);
            break;
          }
          default:
            Fail(StatusCode::INVALID_ARGUMENT, Str("message ", index, ": a ConverseRequest with nothing set"));
        }
      }
      if (context->IsCancelled()) {
        result = grpc::Status(StatusCode::CANCELLED, "cancelled by the client");
      } else {
        const std::vector<float> tail = resampler.Flush();
        engine.Feed(*session, tail.data(), tail.size());
        if (!engine.HadAudio(*session)) Fail(StatusCode::INVALID_ARGUMENT, "the stream ended without any audio");
        engine.HalfClose(*session);
      }
    } catch (...) {
      result = ToGrpcStatus(std::current_exception());
    }
    if (!result.ok()) engine.Abort(*session, {static_cast<engine::Code>(result.error_code()), result.error_message()});
    writer.join();
    if (result.ok()) result = ToGrpc(engine.Result(*session));
    if (result.ok() && context->IsCancelled()) result = grpc::Status(StatusCode::CANCELLED, "cancelled by the client");
    engine.Close(*session);
    return result;
  } catch (...) {
    if (session) engine.Close(*session);
    return ToGrpcStatus(std::current_exception());
  }
}

grpc::Status SpeechService::Transcribe(grpc::ServerContext* context,
                                       grpc::ServerUnaryStreamer<grpc::ByteBuffer, v1::TranscribeResponse>* call) {
  Counted counted(active_calls_);
  if (grpc::Status admitted = Admit(context); !admitted.ok()) return admitted;
  engine::Engine& engine = *engine_.load();
  const auto start = std::chrono::steady_clock::now();
  try {
    grpc::ByteBuffer raw;
    if (!call->Read(&raw)) Fail(StatusCode::INVALID_ARGUMENT, "no request");
    v1::TranscribeRequest request;
    ParseRequest(raw, &request, "TranscribeRequest");
    CheckModel(engine, request.model(), "model");
    if (!request.adapter().empty() && !engine.Model().Find(request.adapter()))
      Fail(StatusCode::NOT_FOUND, Str("adapter: unknown adapter '", request.adapter(), "'"));
    if (!engine.Model().HasSpeech()) Fail(StatusCode::FAILED_PRECONDITION, "this server's model has no speech encoder");
    if (request.audio().empty()) Fail(StatusCode::INVALID_ARGUMENT, "audio is empty");
    const double max_seconds = std::min(engine.Config().max_file_seconds, engine.Model().MaxSpeechSeconds());
    std::vector<float> samples;
    if (request.encoding() == v1::AUDIO_ENCODING_UNSPECIFIED) {
      samples = DecodeAudioFile(request.audio(), engine.Model().SampleRate(), max_seconds);
    } else {
      const int rate = request.sample_rate_hz();
      if (rate < kMinStreamRate || rate > kMaxStreamRate)
        Fail(StatusCode::INVALID_ARGUMENT, Str("sample_rate_hz ", rate, " is outside ", kMinStreamRate, "..",
                                               kMaxStreamRate, " Hz"));
      samples = DecodePcm(request.audio(), request.encoding(), "audio");
      const double seconds = double(samples.size()) / rate;
      if (seconds > max_seconds)
        Fail(StatusCode::RESOURCE_EXHAUSTED, Str("audio: ", seconds, " s is longer than this server's limit of ",
                                                 max_seconds, " s per request"));
      samples = audio::Resample(samples, rate, engine.Model().SampleRate());
    }
    engine::TranscribeResult result;
    Require(engine.Transcribe(std::move(samples), [context] { return context->IsCancelled(); }, &result));
    v1::TranscribeResponse response;
    response.set_request_id(RequestId(request.request_id()));
    ToProto(result.transcript, response.mutable_transcript());
    response.set_audio_seconds(result.audio_seconds);
    response.set_processing_ms(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
    response.set_model(engine.Model().Name());
    response.set_adapter(request.adapter());
    call->Write(response);
    return grpc::Status::OK;
  } catch (...) {
    return ToGrpcStatus(std::current_exception());
  }
}

grpc::Status SpeechService::Generate(grpc::ServerContext* context,
                                     grpc::ServerSplitStreamer<grpc::ByteBuffer, v1::GenerateResponse>* call) {
  Counted counted(active_calls_), streaming(active_streams_);
  if (grpc::Status admitted = Admit(context); !admitted.ok()) return admitted;
  engine::Engine& engine = *engine_.load();
  std::shared_ptr<engine::Engine::GenerateJob> job;
  try {
    grpc::ByteBuffer raw;
    if (!call->Read(&raw)) Fail(StatusCode::INVALID_ARGUMENT, "no request");
    v1::GenerateRequest request;
    ParseRequest(raw, &request, "GenerateRequest");
    CheckModel(engine, request.model(), "model");
    engine::GenerateSettings settings;
    const std::string request_id = RequestId(request.request_id());
    settings.request_id = request_id;
    settings.adapter = request.adapter();
    settings.prompt = request.prompt();
    settings.max_new_tokens = request.max_new_tokens();
    settings.sampling.temperature = request.temperature();
    settings.sampling.top_k = request.top_k();
    if (request.top_p() < 0 || request.top_p() > 1)
      Fail(StatusCode::INVALID_ARGUMENT, Str("top_p must be in [0, 1], got ", request.top_p()));
    settings.sampling.top_p = request.top_p() == 0 ? 1.0 : request.top_p();
    if (request.repetition_penalty() < 0)
      Fail(StatusCode::INVALID_ARGUMENT, Str("repetition_penalty must be >= 0, got ", request.repetition_penalty()));
    settings.sampling.repetition_penalty = request.repetition_penalty() == 0 ? 1.0 : request.repetition_penalty();
    settings.sampling.seed = request.seed();
    for (const std::string& stop : request.stop())
      if (!stop.empty()) settings.stop.push_back(stop);
    for (int i = 0; i < request.images_size(); ++i) {
      try {
        settings.images.push_back(vision::DecodeImage(request.images(i).data(), Str("images[", i, "]")));
      } catch (const StatusError&) {
        throw;
      } catch (const Error& e) {
        Fail(StatusCode::INVALID_ARGUMENT, e.what());
      }
    }
    settings.cancelled = [context] { return context->IsCancelled(); };
    Require(engine.StartGenerate(std::move(settings), &job));
    engine::GenerateEvent event;
    while (engine.Next(*job, &event)) {
      v1::GenerateResponse response;
      response.set_request_id(request_id);
      if (event.kind == engine::GenerateEvent::Kind::kToken) {
        *response.mutable_token() = ToProto(event.token);
      } else {
        const engine::GenerateSummary& s = event.summary;
        v1::GenerateSummary* summary = response.mutable_summary();
        summary->set_first_token_ms(s.first_token_ms);
        summary->set_total_ms(s.total_ms);
        summary->set_prompt_tokens(s.prompt_tokens);
        summary->set_tokens_generated(s.tokens);
        summary->set_finish_reason(static_cast<v1::FinishReason>(s.finish));
        summary->set_model(s.model);
        summary->set_adapter(s.adapter);
      }
      if (!call->Write(response)) break;
    }
    grpc::Status status = ToGrpc(engine.Result(*job));
    if (status.ok() && context->IsCancelled()) status = grpc::Status(StatusCode::CANCELLED, "cancelled by the client");
    engine.Close(*job);
    return status;
  } catch (...) {
    if (job) engine.Close(*job);
    return ToGrpcStatus(std::current_exception());
  }
}

grpc::Status SpeechService::ListModels(grpc::ServerContext* context, const v1::ListModelsRequest*,
                                       v1::ListModelsResponse* response) {
  Counted counted(active_calls_);
  if (grpc::Status admitted = Admit(context); !admitted.ok()) return admitted;
  engine::Engine& engine = *engine_.load();
  const engine::ModelInfo model = engine.Info();
  v1::ModelInfo* info = response->add_models();
  info->set_name(model.name);
  info->set_description(model.description);
  info->set_is_default(true);
  info->set_accepts_audio(model.accepts_audio);
  info->set_accepts_images(model.accepts_images);
  info->set_context_length(static_cast<int32_t>(model.context_length));
  info->set_max_respond_seconds(model.max_respond_seconds);
  for (const std::string& voice : model.voices) response->add_voices(voice);
  for (const engine::AdapterInfo& a : model.adapters) {
    v1::AdapterInfo* adapter = info->add_adapters();
    adapter->set_name(a.name);
    for (const std::string& task : a.tasks) adapter->add_tasks(task);
    adapter->set_is_default(a.is_default);
  }
  const nlohmann::json stats = engine.Stats();
  v1::ServerStats* s = response->mutable_stats();
  s->set_kv_blocks(stats["kv_blocks"].get<int64_t>());
  s->set_kv_used_blocks(stats["kv_used_blocks"].get<int64_t>());
  s->set_kv_block_size(stats["kv_block_size"].get<int32_t>());
  s->set_kv_bytes_per_token(stats["kv_bytes_per_token"].get<int64_t>());
  s->set_kv_utilisation(stats["kv_utilisation"].get<double>());
  s->set_streams(stats["streams"].get<int32_t>());
  s->set_generate_requests(stats["generate_requests"].get<int32_t>());
  s->set_transcribe_requests(stats["transcribe_requests"].get<int32_t>());
  s->set_synthesize_requests(stats["synthesize_requests"].get<int32_t>());
  s->set_preemptions(stats["preemptions"].get<int64_t>());
  return grpc::Status::OK;
}

grpc::Status SpeechService::Synthesize(grpc::ServerContext* context,
                                       grpc::ServerSplitStreamer<grpc::ByteBuffer, v1::SynthesizeResponse>* call) {
  Counted counted(active_calls_), streaming(active_streams_);
  if (grpc::Status admitted = Admit(context); !admitted.ok()) return admitted;
  engine::Engine& engine = *engine_.load();
  std::shared_ptr<engine::Engine::SynthesizeJob> job;
  try {
    grpc::ByteBuffer raw;
    if (!call->Read(&raw)) Fail(StatusCode::INVALID_ARGUMENT, "no request");
    v1::SynthesizeRequest request;
    ParseRequest(raw, &request, "SynthesizeRequest");
    if (engine.Model().Voices().empty())
      return grpc::Status(StatusCode::UNIMPLEMENTED, "this server has no speech synthesizer (Synthesize): no adapter "
                                                     "with task tts");
    const v1::AudioEncoding encoding = OutputEncoding(request.encoding(), "encoding");
    engine::SynthesizeSettings settings;
    const std::string request_id = RequestId(request.request_id());
    settings.request_id = request_id;
    settings.text = request.text();
    settings.voice = request.voice();
    settings.sample_rate = request.sample_rate_hz();
    settings.cancelled = [context] { return context->IsCancelled(); };
    Require(engine.StartSynthesize(std::move(settings), &job));
    engine::SynthesizeEvent event;
    while (engine.Next(*job, &event)) {
      v1::SynthesizeResponse response;
      response.set_request_id(request_id);
      if (event.kind == engine::SynthesizeEvent::Kind::kAudio) {
        *response.mutable_audio() = ToProto(event.audio, encoding);
      } else {
        v1::SynthesizeSummary* summary = response.mutable_summary();
        summary->set_audio_seconds(event.summary.audio_seconds);
        summary->set_first_audio_ms(event.summary.first_audio_ms);
        summary->set_total_ms(event.summary.total_ms);
      }
      if (!call->Write(response)) break;
    }
    grpc::Status status = ToGrpc(engine.Result(*job));
    if (status.ok() && context->IsCancelled()) status = grpc::Status(StatusCode::CANCELLED, "cancelled by the client");
    engine.Close(*job);
    return status;
  } catch (...) {
    if (job) engine.Close(*job);
    return ToGrpcStatus(std::current_exception());
  }
}

}  // namespace slm::serve
