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
#include <limits>
#include <thread>

#include "audio/audio_io.h"
#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"
#include "serve/converse_session.h"
#include "serve/protocol.h"
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

grpc::Status CancelledByClient() { return grpc::Status(StatusCode::CANCELLED, "cancelled by the client"); }

// The one request message of a unary or server-streaming call (gRPC's ServerUnaryStreamer or
// ServerSplitStreamer), parsed as `request`; parse errors name `where`.
template <class Call>
void ReadRequest(Call* call, google::protobuf::Message* request, const std::string& where) {
  grpc::ByteBuffer raw;
  if (!call->Read(&raw)) Fail(StatusCode::INVALID_ARGUMENT, "no request");
  ParseRequest(raw, request, where);
}

// Writes the events of a started Generate or Synthesize job to `call`, each turned into its
// response by `respond`, until the job ends or a write fails (the client went); then closes the
// job and returns its status, CANCELLED when the client cancelled. If this throws, the job is
// still open and the caller closes it.
template <class Event, class Job, class Call, class Respond>
grpc::Status StreamJob(engine::Engine& engine, Job& job, grpc::ServerContext* context, Call* call,
                       const Respond& respond) {
  Event event;
  while (engine.Next(job, &event))
    if (!call->Write(respond(event))) break;
  grpc::Status status = ToGrpc(engine.Result(job));
  if (status.ok() && context->IsCancelled()) status = CancelledByClient();
  engine.Close(job);
  return status;
}

// Bytes of an encoded audio file -> mono samples at `rate`, decoded in memory.
std::vector<float> DecodeAudioFile(const std::string& bytes, int rate, double max_seconds) {
  audio::FileInfo info;
  try {
    info = audio::ProbeMemory(bytes, "the request's audio");
  } catch (const Error& e) {
    Fail(StatusCode::INVALID_ARGUMENT, Str("audio: not a readable audio file (", e.what(), ")"));
  }
  // A header that gives the length is checked before decoding; otherwise Read stops at the limit.
  if (info.frames != std::numeric_limits<int64_t>::max()) {
    const double seconds = double(info.frames) / info.sample_rate;
    if (seconds > max_seconds)
      Fail(StatusCode::RESOURCE_EXHAUSTED, Str("audio: ", seconds, " s is longer than this server's limit of ",
                                               max_seconds, " s per request"));
  }
  audio::ReadOptions options;
  options.target_rate = rate;
  options.max_seconds = max_seconds;
  try {
    return audio::ReadMemory(bytes, "the request's audio", options).samples;
  } catch (const Error& e) {
    Fail(StatusCode::INVALID_ARGUMENT, Str("audio: ", e.what()));
  }
}

}  // namespace

std::string Bytes(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  if (!buffer.Dump(&slices).ok()) Fail(StatusCode::INVALID_ARGUMENT, "an unreadable message");
  std::string bytes;
  for (const grpc::Slice& slice : slices) bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  return bytes;
}

void ParseRequest(const grpc::ByteBuffer& buffer, google::protobuf::Message* message, const std::string& where) {
  ParseRequest(Bytes(buffer), message, where);
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
                                           v1::LoadAdapterRequest request;
                                           ReadRequest(call, &request, "LoadAdapterRequest");
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
                                             v1::UnloadAdapterRequest request;
                                             ReadRequest(call, &request, "UnloadAdapterRequest");
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
  ConverseSession session(
      *engine_.load(), config_.max_chunk_bytes, [this](const std::string& id) { return RequestId(id); },
      [context] { return context->IsCancelled(); });
  grpc::ByteBuffer raw;
  try {
    if (!stream->Read(&raw)) Fail(StatusCode::INVALID_ARGUMENT, "empty stream: the first message must carry a StreamConfig");
    session.Receive(Bytes(raw));
  } catch (...) {
    return ToGrpcStatus(std::current_exception());
  }
  std::thread writer([&] {
    v1::ConverseResponse response;
    while (session.Next(&response))
      if (!stream->Write(response)) break;
  });
  grpc::Status result = grpc::Status::OK;
  try {
    while (stream->Read(&raw)) session.Receive(Bytes(raw));
    if (context->IsCancelled())
      result = CancelledByClient();
    else
      session.EndOfInput();
  } catch (...) {
    result = ToGrpcStatus(std::current_exception());
  }
  if (!result.ok()) session.Abort({static_cast<engine::Code>(result.error_code()), result.error_message()});
  writer.join();
  if (result.ok()) result = ToGrpc(session.Result());
  if (result.ok() && context->IsCancelled()) result = CancelledByClient();
  return result;
}

grpc::Status SpeechService::Transcribe(grpc::ServerContext* context,
                                       grpc::ServerUnaryStreamer<grpc::ByteBuffer, v1::TranscribeResponse>* call) {
  Counted counted(active_calls_);
  if (grpc::Status admitted = Admit(context); !admitted.ok()) return admitted;
  engine::Engine& engine = *engine_.load();
  const auto start = std::chrono::steady_clock::now();
  try {
    v1::TranscribeRequest request;
    ReadRequest(call, &request, "TranscribeRequest");
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
    v1::GenerateRequest request;
    ReadRequest(call, &request, "GenerateRequest");
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
    return StreamJob<engine::GenerateEvent>(engine, *job, context, call, [&](const engine::GenerateEvent& event) {
      return ToProto(event, request_id);
    });
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
    v1::SynthesizeRequest request;
    ReadRequest(call, &request, "SynthesizeRequest");
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
    return StreamJob<engine::SynthesizeEvent>(engine, *job, context, call, [&](const engine::SynthesizeEvent& event) {
      return ToProto(event, request_id, encoding);
    });
  } catch (...) {
    if (job) engine.Close(*job);
    return ToGrpcStatus(std::current_exception());
  }
}

}  // namespace slm::serve
