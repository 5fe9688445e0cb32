// The engine's requests and their admission: Converse streams (their audio path is in
// engine/engine_streams.cpp), Generate, Synthesize (the synthesis thread is in
// engine/engine_synthesis.cpp), Transcribe, adapters and statistics.
#include "engine/engine.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"
#include "engine/requests.h"

namespace slm::engine {

namespace {

std::string AdapterNames(const ServedModel& model) {
  std::string names;
  for (const AdapterRef& a : model.Adapters()) names += (names.empty() ? "" : ", ") + a->name;
  return names.empty() ? "none" : names;
}

AdapterRef LookUp(const ServedModel& model, const std::string& name, const std::string& field) {
  if (name.empty()) return nullptr;
  AdapterRef adapter = model.Find(name);
  if (!adapter)
    Fail(Code::kNotFound, Str(field, ": unknown adapter '", name, "' (this server has: ", AdapterNames(model), ")"));
  return adapter;
}

int ResolveTokens(int requested, const EngineConfig& config, const std::string& field) {
  if (requested < 0) Fail(Code::kInvalidArgument, Str(field, " must be >= 0, got ", requested));
  if (requested == 0) return config.max_answer_tokens;
  return std::min(requested, config.max_answer_tokens_limit);
}

// A request slot of a limit: counted under the engine mutex.
Status OverLimit(int used, int limit, const char* what, const char* key) {
  if (used < limit) return Status::Ok();
  return {Code::kResourceExhausted,
          Str("the server already serves its limit of ", limit, " concurrent ", what, " (limits.", key, "); retry later")};
}

template <class T>
Status Guarded(T&& work) {
  try {
    return work();
  } catch (const std::exception& e) {
    return StatusOf(e);
  }
}

}  // namespace

Engine::Engine(ServedModel& model, const EngineConfig& config)
    : model_(model), config_(config), transcriber_(model) {
  decoder_ = std::make_unique<Decoder>(model_, config_);
  encode_thread_ = std::thread([this] { EncodeLoop(); });
  synthesis_thread_ = std::thread([this] { SynthesisLoop(); });
}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  encode_work_.notify_all();
  synthesis_work_.notify_all();
  transcribe_done_.notify_all();
  encode_thread_.join();
  synthesis_thread_.join();
  decoder_.reset();  // answers still running end (UNAVAILABLE) through their callbacks
  const Status gone{Code::kUnavailable, "the server is shutting down"};
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& s : streams_) s->End(gone);
  for (auto& j : generate_jobs_) j->End(gone);
  for (auto& j : synthesize_jobs_) j->End(gone);
}

// ---------------------------------------------------------------------------------------------
// Converse

Status Engine::Open(StreamSettings settings, std::shared_ptr<Stream>* out) {
  return Guarded([&] {
    if (!model_.HasSpeech()) Fail(Code::kFailedPrecondition, "this server's model has no speech encoder");
    if (settings.endpointing_ms > 60000)
      Fail(Code::kInvalidArgument, Str("config.endpointing_silence_ms ", settings.endpointing_ms, " is above 60000"));
    auto stream = std::make_shared<Stream>();
    stream->max_answer_tokens = ResolveTokens(settings.max_answer_tokens, config_, "config.max_answer_tokens");
    stream->endpointing_ms = settings.endpointing_ms == 0 ? config_.endpointing_silence_ms : settings.endpointing_ms;
    stream->max_utterance_seconds = std::min(config_.max_utterance_seconds, model_.MaxSpeechSeconds());
    AdapterRef adapter = LookUp(model_, settings.adapter, "config.adapter");
    if (settings.respond) {
      if (!adapter) adapter = model_.DefaultFor("sqa");
      if (!adapter)
        Fail(Code::kFailedPrecondition, "task RESPOND needs an adapter trained for spoken QA (task sqa); this server has none");
      if (!adapter->HasTask("sqa"))
        Fail(Code::kFailedPrecondition,
             Str("config.adapter '", adapter->name, "' was not trained for spoken QA (sqa); task RESPOND needs one"));
      const double question = adapter->RespondSeconds(stream->max_answer_tokens);
      if (question < kMinRespondSeconds)
        Fail(Code::kInvalidArgument,
             Str("config.max_answer_tokens ", stream->max_answer_tokens, " leaves ", question,
                 " s for a spoken question in the model's context of ", model_.ContextLength(), " positions; ask for at most ",
                 static_cast<int>(adapter->context - adapter->sqa_text_positions -
                                  kMinRespondSeconds * adapter->speech_positions_per_second)));
      stream->max_utterance_seconds = std::min(stream->max_utterance_seconds, question);
    }
    stream->adapter = adapter;
    if (settings.answer_audio) {
      if (model_.Voices().empty()) Fail(Code::kFailedPrecondition, "respond_with_audio: this server has no speech synthesizer");
      if (!settings.respond) Fail(Code::kInvalidArgument, "respond_with_audio needs task RESPOND");
      if (settings.answer_audio_rate != 0 && (settings.answer_audio_rate < 8000 || settings.answer_audio_rate > 192000))
        Fail(Code::kInvalidArgument, Str("config.output_sample_rate_hz must be 0 (native) or in [8000, 192000], got ",
                                         settings.answer_audio_rate));
    }
    stream->settings = std::move(settings);
    std::lock_guard<std::mutex> lock(mutex_);
    if (stop_) return Status{Code::kUnavailable, "the server is shutting down"};
    if (Status over = OverLimit(static_cast<int>(streams_.size()), config_.max_streams, "streams", "max_streams");
        !over.ok())
      return over;
    streams_.push_back(stream);
    *out = std::move(stream);
    return Status::Ok();
  });
}

void Engine::Feed(Stream& stream, const float* samples, size_t count) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stream.closed) return;
    Append(stream, samples, count);
  }
  encode_work_.notify_all();
}

void Engine::EndUtterance(Stream& stream) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    EndOpenUtterance(stream, EndReason::kEndOfUtteranceMessage);
  }
  encode_work_.notify_all();
}

void Engine::HalfClose(Stream& stream) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stream.half_closed = true;
    if (!stream.utterances.empty() && !stream.utterances.back()->ended) {
      const Utterance& open = *stream.utterances.back();
      // Trailing audio after an earlier utterance that never contained speech is not an utterance.
      if (!open.heard_speech && open.index > 0)
        stream.utterances.pop_back();
      else
        EndOpenUtterance(stream, EndReason::kHalfClose);
    }
    MaybeComplete(stream);
  }
  encode_work_.notify_all();
}

void Engine::Abort(Stream& stream, const Status& why) {
  std::lock_guard<std::mutex> lock(mutex_);
  stream.End(why);
}

bool Engine::Next(Stream& stream, StreamEvent* out) { return stream.outbox.Pop(out); }

Status Engine::Result(Stream& stream) {
  std::lock_guard<std::mutex> lock(mutex_);
  return stream.status;
}

bool Engine::HadAudio(Stream& stream) {
  std::lock_guard<std::mutex> lock(mutex_);
  return stream.had_audio;
}

void Engine::Close(Stream& stream) { Forget(stream, streams_); }

template <class T>
void Engine::Forget(T& request, std::vector<std::shared_ptr<T>>& list) {
  std::lock_guard<std::mutex> lock(mutex_);
  request.End(request.status);
  list.erase(std::remove_if(list.begin(), list.end(), [&](const auto& r) { return r.get() == &request; }), list.end());
}

// ---------------------------------------------------------------------------------------------
// Generate

Status Engine::StartGenerate(GenerateSettings settings, std::shared_ptr<GenerateJob>* out) {
  return Guarded([&] {
    auto job = std::make_shared<GenerateJob>();
    AdapterRef adapter = LookUp(model_, settings.adapter, "adapter");
    if (settings.prompt.empty() && settings.prompt_ids.empty() && settings.images.empty() && settings.audio.empty())
      Fail(Code::kInvalidArgument, "prompt is empty and there are no images or audio");
    if (!settings.prompt_ids.empty()) {
      if (!settings.prompt.empty() || !settings.images.empty() || !settings.audio.empty())
        Fail(Code::kInvalidArgument, "a prompt given as token ids takes no text, images or audio");
      const int64_t vocabulary = model_.TextVocabulary();
      for (size_t i = 0; i < settings.prompt_ids.size(); ++i)
        if (settings.prompt_ids[i] < 0 || settings.prompt_ids[i] >= vocabulary)
          Fail(Code::kInvalidArgument, Str("prompt token ", i, " is ", settings.prompt_ids[i], ", outside the vocabulary [0, ",
                                           vocabulary, ")"));
    }
    const int max_tokens = ResolveTokens(settings.max_new_tokens, config_, "max_new_tokens");
    const SamplingSettings& s = settings.sampling;
    if (!(s.temperature >= 0) || !std::isfinite(s.temperature))
      Fail(Code::kInvalidArgument, Str("temperature must be >= 0, got ", s.temperature));
    if (s.top_k < 0) Fail(Code::kInvalidArgument, Str("top_k must be >= 0, got ", s.top_k));
    if (!(s.top_p > 0 && s.top_p <= 1)) Fail(Code::kInvalidArgument, Str("top_p must be in (0, 1], got ", s.top_p));
    if (!(s.repetition_penalty > 0) || !std::isfinite(s.repetition_penalty))
      Fail(Code::kInvalidArgument, Str("repetition_penalty must be > 0, got ", s.repetition_penalty));
    std::string prompt = settings.prompt;
    auto count = [&](const std::string& marker) {
      int n = 0;
      for (size_t at = prompt.find(marker); at != std::string::npos; at = prompt.find(marker, at + 1)) ++n;
      return n;
    };
    const bool media = !settings.images.empty() || !settings.audio.empty();
    if (!settings.images.empty() && !adapter)
      for (const AdapterRef& a : model_.Adapters())
        if (a->model->HasImage()) {
          adapter = a;
          break;
        }
    if (!settings.images.empty() && (!adapter || !adapter->model->HasImage()))
      Fail(Code::kFailedPrecondition, !adapter ? std::string("images: this server has no adapter with image input")
                                               : Str("images: adapter '", adapter->name, "' has no image input"));
    if (!settings.audio.empty() && (!adapter || !adapter->model->HasSpeech()))
      Fail(Code::kFailedPrecondition, !adapter ? std::string("audio: name an adapter with speech input")
                                               : Str("audio: adapter '", adapter->name, "' has no speech input"));
    for (const auto& [marker, given] :
         {std::pair{std::string("<image>"), settings.images.size()}, std::pair{std::string("<speech>"), settings.audio.size()}}) {
      const int markers = count(marker);
      if (markers > static_cast<int>(given))
        Fail(Code::kInvalidArgument, Str("prompt has ", markers, " ", marker, " markers but the request carries ", given));
      std::string lead;
      for (size_t i = markers; i < given; ++i) lead += marker + " ";
      prompt = lead + prompt;
    }
    auto request = std::make_shared<AnswerRequest>();
    request->adapter = adapter;
    request->max_tokens = max_tokens;
    request->sampling = s;
    request->stop = settings.stop;
    request->ignore_eos = settings.ignore_eos;
    if (!settings.prompt_ids.empty()) {
      if (adapter)
        request->example.tokens = settings.prompt_ids;
      else
        request->prompt_ids = settings.prompt_ids;
    } else if (adapter) {
      request->example.prompt = prompt;
      for (const cv::Mat& image : settings.images) request->example.images.push_back(adapter->model->ImagePixels(image));
      for (const std::vector<float>& clip : settings.audio) {
        if (clip.empty()) Fail(Code::kInvalidArgument, "audio: a clip is empty");
        if (double(clip.size()) / model_.SampleRate() > adapter->model->MaxSpeechSeconds())
          Fail(Code::kInvalidArgument, Str("audio: a clip of ", double(clip.size()) / model_.SampleRate(),
                                           " s is longer than the speech encoder's ", adapter->model->MaxSpeechSeconds(), " s"));
        request->example.speech.push_back(adapter->model->SpeechFeatures(clip));
      }
    } else {
      if (media) Fail(Code::kFailedPrecondition, "media need an adapter");
      request->prompt_ids = model_.Tokenizer().Encode(prompt, /*add_bos=*/true, /*add_eos=*/false);
    }
    job->adapter = adapter;
    job->settings = std::move(settings);
    auto progress = std::make_shared<AnswerProgress>();
    std::weak_ptr<GenerateJob> weak = job;
    request->cancelled = [weak] {
      auto j = weak.lock();
      return !j || j->Gone();
    };
    request->on_token = [weak, progress](const Token& token) {
      if (!progress->got_first) {
        progress->got_first = true;
        progress->first_token = Clock::now();
      }
      if (auto j = weak.lock()) {
        GenerateEvent event;
        event.kind = GenerateEvent::Kind::kToken;
        event.token = token;
        j->outbox.Push(std::move(event));
      }
    };
    request->on_finish = [this, weak, progress](FinishReason reason, int64_t prompt_positions, int tokens) {
      auto j = weak.lock();
      if (!j) return;
      GenerateEvent event;
      event.kind = GenerateEvent::Kind::kSummary;
      GenerateSummary& summary = event.summary;
      summary.first_token_ms = progress->got_first ? Ms(j->arrived, progress->first_token) : 0.0;
      summary.total_ms = Ms(j->arrived, Clock::now());
      summary.prompt_tokens = static_cast<int>(prompt_positions);
      summary.tokens = tokens;
      summary.finish = reason;
      summary.model = model_.Name();
      if (j->adapter) summary.adapter = j->adapter->name;
      j->outbox.Push(std::move(event));
      std::lock_guard<std::mutex> lock(mutex_);
      j->End(Status::Ok());
    };
    request->on_fail = [this, weak](const Status& why) {
      if (auto j = weak.lock()) {
        std::lock_guard<std::mutex> lock(mutex_);
        j->End(why);
      }
    };
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stop_) return Status{Code::kUnavailable, "the server is shutting down"};
      if (Status over = OverLimit(static_cast<int>(generate_jobs_.size()), config_.max_generates, "Generate requests",
                                  "max_generates");
          !over.ok())
        return over;
      generate_jobs_.push_back(job);
    }
    if (Status submitted = decoder_->Submit(request); !submitted.ok()) {
      Forget(*job, generate_jobs_);
      return submitted;
    }
    *out = std::move(job);
    return Status::Ok();
  });
}

bool Engine::Next(GenerateJob& job, GenerateEvent* out) { return job.outbox.Pop(out); }

Status Engine::Result(GenerateJob& job) {
  std::lock_guard<std::mutex> lock(mutex_);
  return job.status;
}

void Engine::Close(GenerateJob& job) { Forget(job, generate_jobs_); }

// ---------------------------------------------------------------------------------------------
// Synthesize

Status Engine::StartSynthesize(SynthesizeSettings settings, std::shared_ptr<SynthesizeJob>* out) {
  return Guarded([&] {
    const std::vector<std::string> voices = model_.Voices();
    if (voices.empty())
      Fail(Code::kUnimplemented, "this server has no speech synthesizer (Synthesize): no adapter with task tts");
    if (!settings.voice.empty() && std::find(voices.begin(), voices.end(), settings.voice) == voices.end())
      Fail(Code::kInvalidArgument, Str("voice '", settings.voice, "' is not served (voices: ", Join(voices), ")"));
    const std::string& text = settings.text;
    if (text.find_first_not_of(" \t\r\n") == std::string::npos) Fail(Code::kInvalidArgument, "text is empty");
    if (static_cast<int64_t>(text.size()) > config_.max_synthesis_characters)
      Fail(Code::kInvalidArgument, Str("text has ", text.size(), " characters; this server speaks at most ",
                                       config_.max_synthesis_characters, " per request (limits.max_synthesis_characters)"));
    if (settings.sample_rate != 0 && (settings.sample_rate < 8000 || settings.sample_rate > 192000))
      Fail(Code::kInvalidArgument, Str("sample_rate_hz must be 0 (native) or in [8000, 192000], got ", settings.sample_rate));
    auto job = std::make_shared<SynthesizeJob>();
    job->settings = std::move(settings);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stop_) return Status{Code::kUnavailable, "the server is shutting down"};
      int calls = 0;
      for (const auto& j : synthesize_jobs_) calls += j->stream == nullptr;
      if (Status over = OverLimit(calls, config_.max_syntheses, "Synthesize requests", "max_syntheses"); !over.ok())
        return over;
      synthesize_jobs_.push_back(job);
    }
    synthesis_work_.notify_all();
    *out = std::move(job);
    return Status::Ok();
  });
}

bool Engine::Next(SynthesizeJob& job, SynthesizeEvent* out) { return job.outbox.Pop(out); }

Status Engine::Result(SynthesizeJob& job) {
  std::lock_guard<std::mutex> lock(mutex_);
  return job.status;
}

void Engine::Close(SynthesizeJob& job) { Forget(job, synthesize_jobs_); }

// ---------------------------------------------------------------------------------------------
// Transcribe

Status Engine::Transcribe(std::vector<float> samples, const Cancelled& cancelled, TranscribeResult* result) {
  if (!model_.HasSpeech()) return {Code::kFailedPrecondition, "this server's model has no speech encoder"};
  if (samples.empty()) return {Code::kInvalidArgument, "audio is empty"};
  const double seconds = double(samples.size()) / model_.SampleRate();
  const double limit = std::min(config_.max_file_seconds, model_.MaxSpeechSeconds());
  if (seconds > limit)
    return {Code::kResourceExhausted,
            Str("audio: ", seconds, " s is longer than this server's limit of ", limit, " s per request")};
  auto job = std::make_shared<TranscribeJob>();
  job->samples = std::move(samples);
  std::unique_lock<std::mutex> lock(mutex_);
  if (stop_) return {Code::kUnavailable, "the server is shutting down"};
  if (Status over = OverLimit(transcribes_, config_.max_transcribes, "Transcribe requests", "max_transcribes");
      !over.ok())
    return over;
  ++transcribes_;
  transcribe_jobs_.push_back(job);
  encode_work_.notify_all();
  // Wake up now and then to notice a cancelled client while the job waits or runs.
  Status status;
  while (true) {
    if (job->done) {
      *result = std::move(job->result);
      status = job->status;
      break;
    }
    if (cancelled && cancelled()) {
      job->abandoned = true;
      transcribe_jobs_.erase(std::remove(transcribe_jobs_.begin(), transcribe_jobs_.end(), job), transcribe_jobs_.end());
      status = {Code::kCancelled, "cancelled by the client"};
      break;
    }
    if (stop_) {
      status = {Code::kUnavailable, "the server is shutting down"};
      break;
    }
    transcribe_done_.wait_for(lock, std::chrono::milliseconds(50));
  }
  --transcribes_;
  return status;
}

// ---------------------------------------------------------------------------------------------
// Adapters and statistics

Status Engine::LoadAdapter(const AdapterEntry& entry) {
  return Guarded([&] {
    model_.LoadAdapter(entry);
    return Status::Ok();
  });
}

Status Engine::UnloadAdapter(const std::string& name) {
  return Guarded([&] {
    model_.UnloadAdapter(name);
    return Status::Ok();
  });
}

int Engine::ActiveRequests() {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int>(streams_.size() + generate_jobs_.size() + transcribe_jobs_.size() + synthesize_jobs_.size());
}

nlohmann::json Engine::Stats() {
  nlohmann::json stats = decoder_->Stats();
  std::lock_guard<std::mutex> lock(mutex_);
  const Counters& c = counters_;
  stats["encode_batches"] = c.encode_batches;
  stats["encode_rows"] = c.encode_rows;
  stats["mean_encode_batch"] = c.encode_batches ? double(c.encode_rows) / c.encode_batches : 0.0;
  stats["encode_busy_seconds"] = c.encode_busy_seconds;
  stats["syntheses"] = c.syntheses;
  stats["synthesis_busy_seconds"] = c.synthesis_busy_seconds;
  stats["busy_seconds"] = c.encode_busy_seconds + stats["decode_busy_seconds"].get<double>() + c.synthesis_busy_seconds;
  stats["streams"] = streams_.size();
  stats["generate_requests"] = generate_jobs_.size();
  stats["transcribe_requests"] = transcribes_;
  stats["synthesize_requests"] = synthesize_jobs_.size();
  return stats;
}

}  // namespace slm::engine
