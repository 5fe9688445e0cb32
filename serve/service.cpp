#include "serve/service.h"

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
#include "serve/grpc_status.h"
#include "vision/image.h"

namespace slm::serve {

namespace v1 = slm::v1;
using grpc::StatusCode;

namespace {

constexpr int kMinStreamRate = 8000;
constexpr int kMaxStreamRate = 192000;

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

// One of `limit` stream slots, or none (ok() false) when all are taken.
class Slot {
 public:
  Slot(std::atomic<int>& used, int limit) : used_(used) { ok_ = used_.fetch_add(1) < limit; if (!ok_) used_.fetch_sub(1); }
  ~Slot() { if (ok_) used_.fetch_sub(1); }
  Slot(const Slot&) = delete;
  Slot& operator=(const Slot&) = delete;
  bool ok() const { return ok_; }

 private:
  std::atomic<int>& used_;
  bool ok_ = false;
};

[[noreturn]] void Fail(StatusCode code, const std::string& message) { throw StatusError(code, message); }

std::string AdapterNames(const ServedModel& model) {
  std::string names;
  for (const auto& a : model.Adapters()) names += (names.empty() ? "" : ", ") + a->name;
  return names.empty() ? "none" : names;
}

const ServedAdapter* LookUpAdapter(const ServedModel& model, const std::string& name, const std::string& field) {
  if (name.empty()) return nullptr;
  const ServedAdapter* adapter = model.Find(name);
  if (adapter == nullptr)
    Fail(StatusCode::NOT_FOUND, Str(field, ": unknown adapter '", name, "' (this server has: ", AdapterNames(model), ")"));
  return adapter;
}

void CheckModel(const ServedModel& model, const std::string& name, const std::string& field) {
  if (!name.empty() && name != model.Name())
    Fail(StatusCode::NOT_FOUND, Str(field, ": unknown model '", name, "' (this server has: ", model.Name(), ")"));
}

int ResolveTokens(int requested, const ServeConfig& config, const std::string& field) {
  if (requested < 0) Fail(StatusCode::INVALID_ARGUMENT, Str(field, " must be >= 0, got ", requested));
  if (requested == 0) return config.max_answer_tokens;
  return std::min(requested, config.max_answer_tokens_limit);
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

// The audio a response carries (Synthesize, respond_with_audio): a served voice, LINEAR16 or
// FLOAT32, a rate of 0 (native) or 8-192 kHz. INVALID_ARGUMENT naming the field (`prefix` +
// "encoding" / "sample_rate_hz").
void CheckOutputAudio(const ServedModel& model, const std::string& voice, v1::AudioEncoding encoding, int rate,
                      const std::string& prefix) {
  const std::vector<std::string> voices = model.Voices();
  if (!voice.empty() && std::find(voices.begin(), voices.end(), voice) == voices.end())
    Fail(StatusCode::INVALID_ARGUMENT, Str(prefix.empty() ? "" : "config.", "voice '", voice,
                                           "' is not served (voices: ", Join(voices), ")"));
  if (encoding != v1::AUDIO_ENCODING_UNSPECIFIED && encoding != v1::LINEAR16 && encoding != v1::FLOAT32)
    Fail(StatusCode::INVALID_ARGUMENT, Str(prefix, "encoding must be LINEAR16 or FLOAT32, got ", v1::AudioEncoding_Name(encoding)));
  if (rate != 0 && (rate < 8000 || rate > 192000))
    Fail(StatusCode::INVALID_ARGUMENT, Str(prefix, "sample_rate_hz must be 0 (native) or in [8000, 192000], got ", rate));
}

// Writes a job's responses as they come, then its status (CANCELLED when the client went away).
template <class Job, class Response>
grpc::Status Relay(Engine& engine, Job& job, bool (Engine::*next)(Job&, Response*), grpc::ServerContext* context,
                   grpc::ServerWriter<Response>* writer) {
  Response response;
  while ((engine.*next)(job, &response))
    if (!writer->Write(response)) break;
  grpc::Status status = engine.Status(job);
  if (status.ok() && context->IsCancelled()) status = grpc::Status(StatusCode::CANCELLED, "cancelled by the client");
  engine.Close(job);
  return status;
}

}  // namespace

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
    Fail(StatusCode::INVALID_ARGUMENT, Str(where, ": encoding must be LINEAR16 or FLOAT32, got ", v1::AudioEncoding_Name(encoding)));
  }
  return samples;
}

SpeechService::SpeechService(const ServeConfig& config) : config_(config) {}

void SpeechService::Attach(Engine* engine, ServedModel* model) {
  model_ = model;
  engine_.store(engine);
}

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

grpc::Status SpeechService::AdmitStream(grpc::ServerContext* context, bool got_slot) const {
  if (grpc::Status admitted = Admit(context); !admitted.ok()) return admitted;
  if (!got_slot)
    return grpc::Status(StatusCode::RESOURCE_EXHAUSTED, Str("the server already serves its limit of ", config_.max_streams,
                                                            " concurrent streams; retry later"));
  return grpc::Status::OK;
}

std::string SpeechService::RequestId(const std::string& given) const {
  if (!given.empty()) return given;
  char id[40];
  std::snprintf(id, sizeof(id), "req-%d-%llu", static_cast<int>(::getpid()),
                static_cast<unsigned long long>(next_id_.fetch_add(1)));
  return id;
}

grpc::Status SpeechService::Converse(grpc::ServerContext* context,
                                     grpc::ServerReaderWriter<v1::ConverseResponse, v1::ConverseRequest>* stream) {
  Counted call(active_calls_);
  Slot slot(active_streams_, config_.max_streams);
  if (grpc::Status admitted = AdmitStream(context, slot.ok()); !admitted.ok()) return admitted;
  Engine& engine = *engine_.load();
  std::shared_ptr<Engine::Stream> session;
  try {
    v1::ConverseRequest request;
    if (!stream->Read(&request))
      Fail(StatusCode::INVALID_ARGUMENT, "empty stream: the first message must carry a StreamConfig");
    if (!request.has_config())
      Fail(StatusCode::INVALID_ARGUMENT, request.has_audio() ? "audio before config: the first message must carry a StreamConfig"
                                                             : "the first message must carry a StreamConfig");
    const v1::StreamConfig& c = request.config();
    if (c.encoding() != v1::LINEAR16 && c.encoding() != v1::FLOAT32)
      Fail(StatusCode::INVALID_ARGUMENT, Str("config.encoding must be LINEAR16 or FLOAT32, got ",
                                             v1::AudioEncoding_Name(c.encoding()).empty() ? std::to_string(c.encoding())
                                                                                          : v1::AudioEncoding_Name(c.encoding())));
    if (c.sample_rate_hz() < kMinStreamRate || c.sample_rate_hz() > kMaxStreamRate)
      Fail(StatusCode::INVALID_ARGUMENT, Str("config.sample_rate_hz ", c.sample_rate_hz(), " is outside ", kMinStreamRate,
                                             "..", kMaxStreamRate, " Hz"));
    if (c.task() != v1::TASK_UNSPECIFIED && c.task() != v1::TRANSCRIBE && c.task() != v1::RESPOND)
      Fail(StatusCode::INVALID_ARGUMENT, Str("config.task ", c.task(), " is not TRANSCRIBE or RESPOND"));
    if (c.endpointing_silence_ms() > 60000)
      Fail(StatusCode::INVALID_ARGUMENT, Str("config.endpointing_silence_ms ", c.endpointing_silence_ms(), " is above 60000"));
    CheckModel(*model_, c.model(), "config.model");
    if (!model_->HasSpeech()) Fail(StatusCode::FAILED_PRECONDITION, "this server's model has no speech encoder");
    StreamSettings settings;
    settings.request_id = RequestId(c.request_id());
    settings.respond = c.task() == v1::RESPOND;
    settings.interim = c.interim_results();
    settings.endpointing_ms = c.endpointing_silence_ms() == 0 ? config_.endpointing_silence_ms : c.endpointing_silence_ms();
    settings.max_answer_tokens = ResolveTokens(c.max_answer_tokens(), config_, "config.max_answer_tokens");
    const ServedAdapter* adapter = LookUpAdapter(*model_, c.adapter(), "config.adapter");
    if (settings.respond) {
      if (adapter == nullptr) adapter = model_->DefaultFor("sqa");
      if (adapter == nullptr)
        Fail(StatusCode::FAILED_PRECONDITION, "task RESPOND needs an adapter trained for spoken QA (task sqa); this server has none");
      if (!adapter->HasTask("sqa"))
        Fail(StatusCode::FAILED_PRECONDITION, Str("config.adapter '", adapter->name, "' was not trained for spoken QA (sqa); ",
                                                  "task RESPOND needs one"));
      if (!adapter->model->HasSpeech())
        Fail(StatusCode::FAILED_PRECONDITION, Str("config.adapter '", adapter->name, "' has no speech input"));
    }
    settings.answer_adapter = adapter;
    if (c.respond_with_audio()) {
      if (model_->Voices().empty())
        Fail(StatusCode::FAILED_PRECONDITION, "respond_with_audio: this server has no speech synthesizer");
      if (!settings.respond) Fail(StatusCode::INVALID_ARGUMENT, "respond_with_audio needs task RESPOND");
      CheckOutputAudio(*model_, c.voice(), c.output_encoding(), c.output_sample_rate_hz(), "config.output_");
      settings.answer_audio = true;
      settings.answer_audio_float32 = c.output_encoding() == v1::FLOAT32;
      settings.answer_audio_rate = c.output_sample_rate_hz();
    }
    settings.cancelled = [context] { return context->IsCancelled(); };
    audio::StreamResampler resampler(c.sample_rate_hz(), model_->SampleRate());
    const v1::AudioEncoding encoding = c.encoding();

    session = engine.Open(settings);
    std::thread writer([&] {
      v1::ConverseResponse response;
      while (engine.Next(*session, &response))
        if (!stream->Write(response)) break;
    });
    grpc::Status result = grpc::Status::OK;
    try {
      int64_t index = 0;
      while (stream->Read(&request)) {
        ++index;
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
    if (!result.ok()) engine.Close(*session);  // ends the writer
    writer.join();
    if (result.ok()) result = engine.Status(*session);
    if (result.ok() && context->IsCancelled()) result = grpc::Status(StatusCode::CANCELLED, "cancelled by the client");
    engine.Close(*session);
    return result;
  } catch (...) {
    if (session) engine.Close(*session);
    return ToGrpcStatus(std::current_exception());
  }
}

grpc::Status SpeechService::Transcribe(grpc::ServerContext* context, const v1::TranscribeRequest* request,
                                       v1::TranscribeResponse* response) {
  Counted call(active_calls_);
  if (grpc::Status admitted = Admit(context); !admitted.ok()) return admitted;
  const auto start = std::chrono::steady_clock::now();
  try {
    CheckModel(*model_, request->model(), "model");
    const ServedAdapter* adapter = LookUpAdapter(*model_, request->adapter(), "adapter");
    if (!model_->HasSpeech()) Fail(StatusCode::FAILED_PRECONDITION, "this server's model has no speech encoder");
    if (request->audio().empty()) Fail(StatusCode::INVALID_ARGUMENT, "audio is empty");
    const double max_seconds = std::min(config_.max_file_seconds, model_->MaxSpeechSeconds());
    std::vector<float> samples;
    if (request->encoding() == v1::AUDIO_ENCODING_UNSPECIFIED) {
      samples = DecodeAudioFile(request->audio(), model_->SampleRate(), max_seconds);
    } else {
      const int rate = request->sample_rate_hz();
      if (rate < kMinStreamRate || rate > kMaxStreamRate)
        Fail(StatusCode::INVALID_ARGUMENT, Str("sample_rate_hz ", rate, " is outside ", kMinStreamRate, "..",
                                               kMaxStreamRate, " Hz"));
      samples = DecodePcm(request->audio(), request->encoding(), "audio");
      const double seconds = double(samples.size()) / rate;
      if (seconds > max_seconds)
        Fail(StatusCode::RESOURCE_EXHAUSTED, Str("audio: ", seconds, " s is longer than this server's limit of ",
                                                 max_seconds, " s per request"));
      samples = audio::Resample(samples, rate, model_->SampleRate());
    }
    TranscribeResult result;
    const Cancelled cancelled = [context] { return context->IsCancelled(); };
    grpc::Status status = engine_.load()->Transcribe(std::move(samples), cancelled, &result);
    if (!status.ok()) return status;
    response->set_request_id(RequestId(request->request_id()));
    *response->mutable_transcript() = result.transcript;
    response->mutable_transcript()->set_end_reason(v1::CLIENT_HALF_CLOSE);
    response->set_audio_seconds(result.audio_seconds);
    response->set_processing_ms(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
    response->set_model(model_->Name());
    if (adapter != nullptr) response->set_adapter(adapter->name);
    return grpc::Status::OK;
  } catch (...) {
    return ToGrpcStatus(std::current_exception());
  }
}

grpc::Status SpeechService::Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                                     grpc::ServerWriter<v1::GenerateResponse>* writer) {
  Counted call(active_calls_);
  Slot slot(active_streams_, config_.max_streams);
  if (grpc::Status admitted = AdmitStream(context, slot.ok()); !admitted.ok()) return admitted;
  Engine& engine = *engine_.load();
  std::shared_ptr<Engine::GenerateJob> job;
  try {
    CheckModel(*model_, request->model(), "model");
    GenerateSettings settings;
    settings.request_id = RequestId(request->request_id());
    settings.adapter = LookUpAdapter(*model_, request->adapter(), "adapter");
    if (request->prompt().empty() && request->images_size() == 0)
      Fail(StatusCode::INVALID_ARGUMENT, "prompt is empty and there are no images");
    settings.max_new_tokens = ResolveTokens(request->max_new_tokens(), config_, "max_new_tokens");
    if (!(request->temperature() >= 0) || !std::isfinite(request->temperature()))
      Fail(StatusCode::INVALID_ARGUMENT, Str("temperature must be >= 0, got ", request->temperature()));
    if (request->top_k() < 0) Fail(StatusCode::INVALID_ARGUMENT, Str("top_k must be >= 0, got ", request->top_k()));
    if (!(request->top_p() >= 0 && request->top_p() <= 1))
      Fail(StatusCode::INVALID_ARGUMENT, Str("top_p must be in [0, 1], got ", request->top_p()));
    settings.temperature = request->temperature();
    settings.top_k = request->top_k();
    settings.top_p = request->top_p() == 0 ? 1.0 : request->top_p();
    settings.seed = request->seed();
    for (const std::string& stop : request->stop())
      if (!stop.empty()) settings.stop.push_back(stop);
    std::string prompt = request->prompt();
    if (request->images_size() > 0) {
      if (settings.adapter == nullptr)
        for (const auto& a : model_->Adapters())
          if (a->model->HasImage()) {
            settings.adapter = a.get();
            break;
          }
      if (settings.adapter == nullptr || !settings.adapter->model->HasImage())
        Fail(StatusCode::FAILED_PRECONDITION, settings.adapter == nullptr
                                                  ? std::string("images: this server has no adapter with image input")
                                                  : Str("images: adapter '", settings.adapter->name, "' has no image input"));
      int markers = 0;
      for (size_t at = prompt.find("<image>"); at != std::string::npos; at = prompt.find("<image>", at + 1)) ++markers;
      if (markers > request->images_size())
        Fail(StatusCode::INVALID_ARGUMENT, Str("prompt has ", markers, " <image> markers but the request carries ",
                                               request->images_size(), " images"));
      std::string lead;
      for (int i = markers; i < request->images_size(); ++i) lead += "<image> ";
      prompt = lead + prompt;
      for (int i = 0; i < request->images_size(); ++i) {
        cv::Mat image;
        try {
          image = vision::DecodeImage(request->images(i).data(), Str("images[", i, "]"));
        } catch (const Error& e) {
          Fail(StatusCode::INVALID_ARGUMENT, e.what());
        }
        settings.images.push_back(image);
      }
    }
    settings.prompt = prompt;
    settings.cancelled = [context] { return context->IsCancelled(); };
    job = engine.StartGenerate(std::move(settings));
    return Relay(engine, *job, &Engine::NextGenerate, context, writer);
  } catch (...) {
    if (job) engine.Close(*job);
    return ToGrpcStatus(std::current_exception());
  }
}

grpc::Status SpeechService::ListModels(grpc::ServerContext* context, const v1::ListModelsRequest*,
                                       v1::ListModelsResponse* response) {
  Counted call(active_calls_);
  if (grpc::Status admitted = Admit(context); !admitted.ok()) return admitted;
  v1::ModelInfo* info = response->add_models();
  info->set_name(model_->Name());
  info->set_description(model_->Description());
  info->set_is_default(true);
  info->set_accepts_audio(model_->HasSpeech());
  info->set_accepts_images(model_->HasImages());
  info->set_context_length(static_cast<int32_t>(model_->ContextLength()));
  for (const std::string& voice : model_->Voices()) response->add_voices(voice);
  const ServedAdapter* default_sqa = model_->DefaultFor("sqa");
  for (const auto& a : model_->Adapters()) {
    v1::AdapterInfo* adapter = info->add_adapters();
    adapter->set_name(a->name);
    for (const auto& [task, prompt] : a->tasks) adapter->add_tasks(task);
    adapter->set_is_default(a.get() == default_sqa);
  }
  return grpc::Status::OK;
}

grpc::Status SpeechService::Synthesize(grpc::ServerContext* context, const v1::SynthesizeRequest* request,
                                       grpc::ServerWriter<v1::SynthesizeResponse>* writer) {
  Counted call(active_calls_);
  Slot slot(active_streams_, config_.max_streams);
  if (grpc::Status admitted = AdmitStream(context, slot.ok()); !admitted.ok()) return admitted;
  if (model_->Voices().empty())
    return grpc::Status(StatusCode::UNIMPLEMENTED, "this server has no speech synthesizer (Synthesize): no adapter "
                                                   "with task tts");
  Engine& engine = *engine_.load();
  std::shared_ptr<Engine::SynthesizeJob> job;
  try {
    SynthesizeSettings settings;
    settings.request_id = RequestId(request->request_id());
    const std::string& text = request->text();
    if (text.find_first_not_of(" \t\r\n") == std::string::npos) Fail(StatusCode::INVALID_ARGUMENT, "text is empty");
    if (static_cast<int64_t>(text.size()) > config_.max_synthesis_characters)
      Fail(StatusCode::INVALID_ARGUMENT, Str("text has ", text.size(), " characters; this server speaks at most ",
                                             config_.max_synthesis_characters, " per request (limits.max_synthesis_characters)"));
    CheckOutputAudio(*model_, request->voice(), request->encoding(), request->sample_rate_hz(), "");
    settings.float32 = request->encoding() == v1::FLOAT32;
    settings.sample_rate = request->sample_rate_hz();
    settings.text = text;
    settings.options = model_->SynthesisOptions();
    settings.cancelled = [context] { return context->IsCancelled(); };
    job = engine.StartSynthesize(std::move(settings));
    return Relay(engine, *job, &Engine::NextSynthesize, context, writer);
  } catch (...) {
    if (job) engine.Close(*job);
    return ToGrpcStatus(std::current_exception());
  }
}

}  // namespace slm::serve
