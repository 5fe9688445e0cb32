#include "serve/engine.h"

#include "audio/audio_io.h"
#include "serve/client.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/log.h"
#include "serve/grpc_status.h"

namespace slm::serve {

namespace v1 = slm::v1;
using Clock = std::chrono::steady_clock;

namespace {

double Ms(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

// Bytes at the end of `s` that start a UTF-8 sequence not yet complete.
size_t IncompleteUtf8Tail(const std::string& s) {
  for (size_t back = 1; back <= std::min<size_t>(3, s.size()); ++back) {
    const unsigned char c = static_cast<unsigned char>(s[s.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: look further back
    size_t need = 1;
    if ((c & 0xE0) == 0xC0) need = 2;
    else if ((c & 0xF0) == 0xE0) need = 3;
    else if ((c & 0xF8) == 0xF0) need = 4;
    return need > back ? back : 0;
  }
  return 0;
}

float Stability(const std::string& previous, const std::string& current) {
  if (current.empty()) return 1.f;
  size_t common = 0;
  while (common < previous.size() && common < current.size() && previous[common] == current[common]) ++common;
  return static_cast<float>(common) / current.size();
}

}  // namespace

struct Engine::Utterance {
  int index = 0;
  std::vector<float> samples;
  double start_seconds = 0;  // stream time of samples[0]
  bool started = false;      // first audio arrived
  Clock::time_point first_audio, end_time;
  bool ended = false;
  v1::UtteranceEnd reason = v1::UTTERANCE_END_UNSPECIFIED;
  bool heard_speech = false;
  int64_t silence_samples = 0;
  int64_t interim_samples = 0;  // samples covered by the last interim job
  bool interim_inflight = false;
  std::string last_interim;
  double first_interim_ms = 0;
  bool final_scheduled = false;
  double final_ms = 0;
};

// What a Stream and a GenerateJob share: how the scheduler ends them.
struct Engine::Request {
  bool closed = false;  // Close()d, finished or failed: the scheduler forgets it
  grpc::Status status;  // why it ended, when not OK
  virtual ~Request() = default;
  virtual void CloseOutbox() = 0;
  virtual bool ClientCancelled() const = 0;
  // Ends the request with `why` (first end wins); queued responses are still delivered.
  void End(const grpc::Status& why) {
    if (closed) return;
    closed = true;
    status = why;
    CloseOutbox();
  }
};

struct Engine::Stream : Engine::Request {
  StreamSettings settings;
  Outbox<v1::ConverseResponse> outbox;
  std::deque<std::shared_ptr<Utterance>> utterances;  // front = oldest unfinished
  int next_index = 0;
  int64_t stream_samples = 0;  // samples fed so far (stream time)
  std::vector<float> frame;    // endpointing: the current partial 10 ms frame
  bool half_closed = false;
  bool busy = false;           // the front utterance is in its final/answer phase
  bool had_audio = false;
  void CloseOutbox() override { outbox.Close(); }
  bool ClientCancelled() const override { return settings.cancelled && settings.cancelled(); }
};

struct Engine::GenerateJob : Engine::Request {
  GenerateSettings settings;
  Outbox<v1::GenerateResponse> outbox;
  Clock::time_point arrived = Clock::now();
  void CloseOutbox() override { outbox.Close(); }
  bool ClientCancelled() const override { return settings.cancelled && settings.cancelled(); }
};

struct Engine::SynthesizeJob : Engine::Request {
  SynthesizeSettings settings;
  Outbox<v1::SynthesizeResponse> outbox;
  Clock::time_point arrived = Clock::now();
  bool started = false;  // taken by the scheduler
  // A spoken answer of a Converse stream (respond_with_audio) instead of a Synthesize call: the
  // audio goes to the stream, then the utterance summary with the answer's row and reason.
  std::shared_ptr<Stream> stream;
  std::shared_ptr<DecodeRow> answer;
  v1::FinishReason reason = v1::FINISH_REASON_UNSPECIFIED;
  void CloseOutbox() override { outbox.Close(); }
  bool ClientCancelled() const override {
    if (stream) return stream->closed || stream->ClientCancelled();
    return settings.cancelled && settings.cancelled();
  }
};

struct Engine::TranscribeJob {
  std::vector<float> samples;
  bool done = false;
  bool abandoned = false;
  grpc::Status status;
  TranscribeResult result;
};

struct Engine::DecodeRow {
  const ServedAdapter* adapter = nullptr;
  // Source: a stream's utterance or a Generate job.
  std::shared_ptr<Stream> stream;
  std::shared_ptr<Utterance> utterance;
  std::shared_ptr<GenerateJob> job;
  // Prompt (prefill input).
  adapters::MultimodalExample example;
  std::vector<int64_t> prompt_ids;  // plain backbone
  int64_t prompt_tokens = 0;
  // Decoding state.
  text::KVCache cache;
  int64_t length = 0;      // real positions in the cache
  int64_t next_token = -1; // chosen, not yet fed
  std::vector<int64_t> tokens;
  std::string sent;        // text already streamed
  int max_tokens = 32;
  double temperature = 0;
  int64_t top_k = 0;
  double top_p = 1;
  std::vector<std::string> stop;
  torch::Generator generator;
  bool finished = false;
  Clock::time_point first_token_time;
  bool got_first = false;

  Request& Owner() const { return stream ? static_cast<Request&>(*stream) : static_cast<Request&>(*job); }
  bool Cancelled() const { return Owner().closed || Owner().ClientCancelled(); }
};

struct Engine::EncodeJob {
  std::shared_ptr<Stream> stream;
  std::shared_ptr<Utterance> utterance;
  std::shared_ptr<TranscribeJob> transcribe;
  bool final = false;
  std::vector<float> samples;
  torch::Tensor features;  // [T, n_mels]
  audio::CtcTranscript result;
  bool failed = false;
};

Engine::Engine(ServedModel& model, const ServeConfig& config) : model_(model), config_(config) {
  thread_ = std::thread([this] { Loop(); });
}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  work_.notify_all();
  thread_.join();
  const grpc::Status gone(grpc::StatusCode::UNAVAILABLE, "the server is shutting down");
  for (auto& s : streams_) s->End(gone);
  for (auto& j : generate_jobs_) j->End(gone);
  for (auto& j : synthesize_jobs_) j->End(gone);
}

// ---------------------------------------------------------------------------------------------
// Streams

std::shared_ptr<Engine::Stream> Engine::Open(StreamSettings settings) {
  auto stream = std::make_shared<Stream>();
  stream->settings = std::move(settings);
  std::lock_guard<std::mutex> lock(mutex_);
  streams_.push_back(stream);
  return stream;
}

void Engine::Feed(Stream& stream, const float* samples, size_t count) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stream.closed) return;
    Append(stream, samples, count);
  }
  work_.notify_all();
}

void Engine::Append(Stream& stream, const float* samples, size_t count) {
  const int rate = model_.SampleRate();
  const size_t frame_size = static_cast<size_t>(rate / 100);  // 10 ms
  const int64_t max_samples = static_cast<int64_t>(
      std::min(config_.max_utterance_seconds, model_.MaxSpeechSeconds()) * rate);
  const int64_t keep_leading = static_cast<int64_t>(0.3 * rate);
  const double threshold = std::pow(10.0, config_.speech_threshold_dbfs / 10.0);
  const int endpoint_ms = stream.settings.endpointing_ms;
  size_t i = 0;
  while (i < count) {
    if (stream.utterances.empty() || stream.utterances.back()->ended) {
      auto u = std::make_shared<Utterance>();
      u->index = stream.next_index++;
      u->start_seconds = double(stream.stream_samples) / rate;
      stream.utterances.push_back(u);
    }
    Utterance& u = *stream.utterances.back();
    if (!u.started) {
      u.started = true;
      u.first_audio = Clock::now();
      stream.had_audio = true;
    }
    const size_t take = std::min(count - i, frame_size - stream.frame.size());
    u.samples.insert(u.samples.end(), samples + i, samples + i + take);
    stream.frame.insert(stream.frame.end(), samples + i, samples + i + take);
    stream.stream_samples += take;
    i += take;
    if (stream.frame.size() == frame_size) {
      double power = 0;
      for (float x : stream.frame) power += double(x) * x;
      power /= frame_size;
      stream.frame.clear();
      if (power > threshold) {
        u.heard_speech = true;
        u.silence_samples = 0;
      } else {
        u.silence_samples += frame_size;
      }
      if (!u.heard_speech && static_cast<int64_t>(u.samples.size()) > keep_leading) {
        // Silence before any speech: keep only its last 300 ms.
        const int64_t drop = static_cast<int64_t>(u.samples.size()) - keep_leading;
        u.samples.erase(u.samples.begin(), u.samples.begin() + drop);
        u.start_seconds += double(drop) / rate;
        u.first_audio = Clock::now();
        u.interim_samples = 0;
      }
      if (u.heard_speech && endpoint_ms >= 0 && u.silence_samples * 1000 >= int64_t{endpoint_ms} * rate) {
        EndOpenUtterance(stream, v1::ENDPOINT_DETECTED);
        continue;
      }
    }
    if (static_cast<int64_t>(u.samples.size()) >= max_samples) EndOpenUtterance(stream, v1::MAX_DURATION);
  }
}

void Engine::EndOpenUtterance(Stream& stream, v1::UtteranceEnd reason) {
  if (stream.utterances.empty() || stream.utterances.back()->ended) return;
  Utterance& u = *stream.utterances.back();
  u.ended = true;
  u.reason = reason;
  u.end_time = Clock::now();
}

void Engine::EndUtterance(Stream& stream) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    EndOpenUtterance(stream, v1::END_OF_UTTERANCE_MESSAGE);
  }
  work_.notify_all();
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
        EndOpenUtterance(stream, v1::CLIENT_HALF_CLOSE);
    }
    MaybeComplete(stream);
  }
  work_.notify_all();
}

void Engine::MaybeComplete(Stream& stream) {
  if (stream.half_closed && stream.utterances.empty()) stream.End(grpc::Status::OK);
}

bool Engine::Next(Stream& stream, v1::ConverseResponse* out) { return stream.outbox.Pop(out); }

grpc::Status Engine::Status(Stream& stream) {
  std::lock_guard<std::mutex> lock(mutex_);
  return stream.status;
}

bool Engine::HadAudio(Stream& stream) {
  std::lock_guard<std::mutex> lock(mutex_);
  return stream.had_audio;
}

void Engine::Close(Stream& stream) { Forget(stream, streams_); }

// ---------------------------------------------------------------------------------------------
// Generate and Transcribe

std::shared_ptr<Engine::GenerateJob> Engine::StartGenerate(GenerateSettings settings) {
  auto job = std::make_shared<GenerateJob>();
  job->settings = std::move(settings);
  auto row = std::make_shared<DecodeRow>();
  row->job = job;
  row->adapter = job->settings.adapter;
  row->max_tokens = job->settings.max_new_tokens;
  row->temperature = job->settings.temperature;
  row->top_k = job->settings.top_k;
  row->top_p = job->settings.top_p;
  row->stop = job->settings.stop;
  row->generator = at::detail::createCPUGenerator(job->settings.seed);
  if (row->adapter != nullptr) {
    row->example.prompt = job->settings.prompt;
    for (const cv::Mat& image : job->settings.images) row->example.images.push_back(row->adapter->model->ImagePixels(image));
  } else {
    row->prompt_ids = model_.Tokenizer().Encode(job->settings.prompt, /*add_bos=*/true, /*add_eos=*/false);
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    generate_jobs_.push_back(job);
    pending_rows_.push_back(row);
  }
  work_.notify_all();
  return job;
}

bool Engine::NextGenerate(GenerateJob& job, v1::GenerateResponse* out) { return job.outbox.Pop(out); }

std::shared_ptr<Engine::SynthesizeJob> Engine::StartSynthesize(SynthesizeSettings settings) {
  auto job = std::make_shared<SynthesizeJob>();
  job->settings = std::move(settings);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stop_) {
      job->End(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is shutting down"));
      return job;
    }
    synthesize_jobs_.push_back(job);
  }
  work_.notify_all();
  return job;
}

bool Engine::NextSynthesize(SynthesizeJob& job, v1::SynthesizeResponse* out) { return job.outbox.Pop(out); }

grpc::Status Engine::Status(SynthesizeJob& job) {
  std::lock_guard<std::mutex> lock(mutex_);
  return job.status;
}

void Engine::Close(SynthesizeJob& job) { Forget(job, synthesize_jobs_); }

namespace {
struct SynthesisCancelled {};
}  // namespace

void Engine::RunSynthesis(SynthesizeJob& job) {
  adapters::TtsPipeline* tts = model_.Synthesizer();
  const SynthesizeSettings& s = job.settings;
  const int native = tts->SampleRate();
  const int rate = s.sample_rate > 0 ? s.sample_rate : native;
  std::optional<audio::StreamResampler> resampler;
  if (rate != native) resampler.emplace(native, rate);
  double first_ms = -1;
  int64_t samples_out = 0;
  auto send = [&](const std::vector<float>& samples) {
    if (samples.empty()) return;
    if (first_ms < 0) first_ms = Ms(job.arrived, Clock::now());
    samples_out += static_cast<int64_t>(samples.size());
    v1::AudioChunk chunk;
    chunk.set_sample_rate_hz(rate);
    chunk.set_encoding(s.float32 ? v1::FLOAT32 : v1::LINEAR16);
    chunk.set_audio(EncodePcm(samples.data(), samples.size(), s.float32 ? v1::FLOAT32 : v1::LINEAR16));
    chunk.set_start_seconds(double(samples_out - static_cast<int64_t>(samples.size())) / rate);
    if (job.stream) {
      v1::ConverseResponse response;
      response.set_request_id(job.stream->settings.request_id);
      if (!job.stream->utterances.empty()) response.set_utterance_index(job.stream->utterances.front()->index);
      *response.mutable_answer_audio() = std::move(chunk);
      job.stream->outbox.Push(std::move(response));
      return;
    }
    v1::SynthesizeResponse response;
    response.set_request_id(s.request_id);
    *response.mutable_audio() = std::move(chunk);
    job.outbox.Push(std::move(response));
  };
  // A spoken answer ends with its utterance's summary, whatever happened to the audio.
  auto finish_answer = [&] {
    if (!job.stream) return;
    std::lock_guard<std::mutex> lock(mutex_);
    if (!job.stream->closed) FinishUtteranceSummary(*job.stream, job.answer.get(), job.reason);
  };
  try {
    model_.Activate(model_.SynthesizerAdapter());
    tts->Synthesize(s.text, s.options, [&](const std::vector<float>& chunk) {
      if (job.ClientCancelled()) throw SynthesisCancelled{};
      send(resampler ? resampler->Process(chunk.data(), chunk.size()) : chunk);
    });
    if (resampler) send(resampler->Flush());
    if (job.stream) {
      finish_answer();
      std::lock_guard<std::mutex> lock(mutex_);
      job.End(grpc::Status::OK);
      return;
    }
    v1::SynthesizeResponse last;
    last.set_request_id(s.request_id);
    v1::SynthesizeSummary* summary = last.mutable_summary();
    summary->set_audio_seconds(double(samples_out) / rate);
    summary->set_first_audio_ms(first_ms < 0 ? 0 : first_ms);
    summary->set_total_ms(Ms(job.arrived, Clock::now()));
    job.outbox.Push(std::move(last));
    std::lock_guard<std::mutex> lock(mutex_);
    job.End(grpc::Status::OK);
  } catch (const SynthesisCancelled&) {
    std::lock_guard<std::mutex> lock(mutex_);
    job.End(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client"));
  } catch (const Error& e) {
    // What the text asks for cannot be said (no known character, ...): the client's input; an
    // answer that cannot be spoken keeps its text and summary.
    if (job.stream) log::Warn(Str("the answer could not be spoken: ", e.what()));
    finish_answer();
    std::lock_guard<std::mutex> lock(mutex_);
    job.End(job.stream ? grpc::Status::OK : grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, e.what()));
  } catch (const std::exception& e) {
    log::Error(Str("synthesis failed: ", e.what()));
    std::lock_guard<std::mutex> lock(mutex_);
    if (job.stream) job.stream->End(grpc::Status(grpc::StatusCode::INTERNAL, "the server failed to speak the answer"));
    job.End(grpc::Status(grpc::StatusCode::INTERNAL, "the server failed to synthesize"));
  }
}

grpc::Status Engine::Status(GenerateJob& job) {
  std::lock_guard<std::mutex> lock(mutex_);
  return job.status;
}

void Engine::Close(GenerateJob& job) { Forget(job, generate_jobs_); }

template <class T>
void Engine::Forget(T& request, std::vector<std::shared_ptr<T>>& list) {
  std::lock_guard<std::mutex> lock(mutex_);
  request.End(request.status);
  list.erase(std::remove_if(list.begin(), list.end(), [&](const auto& r) { return r.get() == &request; }), list.end());
}

grpc::Status Engine::Transcribe(std::vector<float> samples, const Cancelled& cancelled, TranscribeResult* result) {
  auto job = std::make_shared<TranscribeJob>();
  job->samples = std::move(samples);
  std::unique_lock<std::mutex> lock(mutex_);
  transcribe_jobs_.push_back(job);
  work_.notify_all();
  // Wake up now and then to notice a cancelled client while the job waits or runs.
  while (!job->done) {
    work_.wait_for(lock, std::chrono::milliseconds(50));
    if (!job->done && cancelled && cancelled()) {
      job->abandoned = true;
      transcribe_jobs_.erase(std::remove(transcribe_jobs_.begin(), transcribe_jobs_.end(), job), transcribe_jobs_.end());
      return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client");
    }
    if (stop_ && !job->done) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is shutting down");
  }
  *result = std::move(job->result);
  return job->status;
}

int Engine::ActiveRequests() {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int>(streams_.size() + generate_jobs_.size() + transcribe_jobs_.size());
}

nlohmann::json Engine::Stats() {
  std::lock_guard<std::mutex> lock(mutex_);
  const Counters& c = counters_;
  return {{"encode_batches", c.encode_batches},
          {"encode_rows", c.encode_rows},
          {"mean_encode_batch", c.encode_batches ? double(c.encode_rows) / c.encode_batches : 0.0},
          {"prefill_batches", c.prefill_batches},
          {"prefill_rows", c.prefill_rows},
          {"decode_steps", c.decode_steps},
          {"decode_rows", c.decode_rows},
          {"mean_decode_batch", c.decode_steps ? double(c.decode_rows) / c.decode_steps : 0.0},
          {"max_decode_batch", c.max_decode_batch},
          {"busy_seconds", c.busy_seconds}};
}

// ---------------------------------------------------------------------------------------------
// The scheduler

void Engine::Loop() {
  torch::NoGradGuard no_grad;
  while (true) {
    std::vector<EncodeJob> jobs;
    std::vector<std::shared_ptr<DecodeRow>> prefill, step;
    std::shared_ptr<SynthesizeJob> synthesis;  // at most one per round, so other work interleaves
    {
      std::unique_lock<std::mutex> lock(mutex_);
      auto has_work = [&] {
        if (stop_ || !pending_rows_.empty() || !running_rows_.empty() || !transcribe_jobs_.empty()) return true;
        for (const auto& j : synthesize_jobs_)
          if (!j->closed && !j->started) return true;
        const int64_t interval = int64_t{config_.interim_interval_ms} * model_.SampleRate() / 1000;
        for (const auto& s : streams_) {
          if (s->closed || s->utterances.empty()) continue;
          const Utterance& front = *s->utterances.front();
          if (front.ended && !front.final_scheduled && !s->busy) return true;
          const Utterance& back = *s->utterances.back();
          if (s->settings.interim && !back.ended && back.heard_speech && !back.interim_inflight &&
              static_cast<int64_t>(back.samples.size()) - back.interim_samples >= interval)
            return true;
        }
        return false;
      };
      work_.wait(lock, has_work);
      if (stop_) return;
      // A short wait gathers requests that arrive together into one batch.
      if (config_.max_wait_ms > 0 && running_rows_.empty())
        work_.wait_for(lock, std::chrono::milliseconds(config_.max_wait_ms), [&] { return stop_; });
      if (stop_) return;
      // Drop cancelled or closed requests before any work on them.
      const grpc::Status cancelled(grpc::StatusCode::CANCELLED, "cancelled by the client");
      for (auto& s : streams_)
        if (!s->closed && s->ClientCancelled()) s->End(cancelled);
      jobs = CollectEncodeJobs();
      prefill.swap(pending_rows_);
      auto gone = [&](const std::shared_ptr<DecodeRow>& row) {
        if (!row->Cancelled()) return false;
        row->Owner().End(cancelled);
        return true;
      };
      prefill.erase(std::remove_if(prefill.begin(), prefill.end(), gone), prefill.end());
      running_rows_.erase(std::remove_if(running_rows_.begin(), running_rows_.end(), gone), running_rows_.end());
      step = running_rows_;
      // Spoken answers have no caller to Close() them: drop them once done.
      synthesize_jobs_.erase(std::remove_if(synthesize_jobs_.begin(), synthesize_jobs_.end(),
                                            [](const auto& j) { return j->stream && j->closed; }),
                             synthesize_jobs_.end());
      for (auto& j : synthesize_jobs_) {
        if (j->closed || j->started) continue;
        if (j->ClientCancelled()) {
          j->End(cancelled);
          continue;
        }
        j->started = true;
        synthesis = j;
        break;
      }
    }
    const Clock::time_point busy_start = Clock::now();
    if (!jobs.empty()) {
      RunEncodeJobs(jobs);
      std::lock_guard<std::mutex> lock(mutex_);
      DeliverEncodeJobs(jobs);
    }
    if (!step.empty()) Step(step);
    if (!prefill.empty()) Prefill(prefill);
    if (synthesis) RunSynthesis(*synthesis);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      counters_.busy_seconds += Ms(busy_start, Clock::now()) / 1000.0;
      running_rows_.erase(std::remove_if(running_rows_.begin(), running_rows_.end(),
                                         [](const auto& r) { return r->finished; }),
                          running_rows_.end());
      for (auto& row : prefill)
        if (!row->finished) running_rows_.push_back(row);
    }
    work_.notify_all();  // Transcribe waiters
  }
}

std::vector<Engine::EncodeJob> Engine::CollectEncodeJobs() {
  std::vector<EncodeJob> jobs;
  const size_t max_batch = static_cast<size_t>(config_.max_batch);
  while (!transcribe_jobs_.empty() && jobs.size() < max_batch) {
    EncodeJob job;
    job.transcribe = transcribe_jobs_.front();
    transcribe_jobs_.pop_front();
    job.final = true;
    job.samples = std::move(job.transcribe->samples);
    jobs.push_back(std::move(job));
  }
  const int64_t interval = int64_t{config_.interim_interval_ms} * model_.SampleRate() / 1000;
  const size_t n = streams_.size();
  // Finals first (they gate answers), then interims; round-robin so no stream starves.
  for (int pass = 0; pass < 2; ++pass)
    for (size_t k = 0; k < n && jobs.size() < max_batch; ++k) {
      const auto& s = streams_[(rotate_ + k) % n];
      if (s->closed || s->utterances.empty()) continue;
      if (pass == 0) {
        const auto& front = s->utterances.front();
        if (!front->ended || front->final_scheduled || s->busy) continue;
        front->final_scheduled = true;
        s->busy = true;
        EncodeJob job;
        job.stream = s;
        job.utterance = front;
        job.final = true;
        job.samples = front->samples;
        jobs.push_back(std::move(job));
      } else {
        const auto& back = s->utterances.back();
        if (!s->settings.interim || back->ended || !back->heard_speech || back->interim_inflight ||
            static_cast<int64_t>(back->samples.size()) - back->interim_samples < interval)
          continue;
        back->interim_inflight = true;
        back->interim_samples = static_cast<int64_t>(back->samples.size());
        EncodeJob job;
        job.stream = s;
        job.utterance = back;
        job.samples = back->samples;
        jobs.push_back(std::move(job));
      }
    }
  if (n > 0) rotate_ = (rotate_ + 1) % n;
  return jobs;
}

void Engine::RunEncodeJobs(std::vector<EncodeJob>& jobs) {
  try {
    const audio::LogMel& mel = model_.Mel();
    const size_t min_samples = static_cast<size_t>(mel.Options().MinSamples());
    int64_t longest = 0;
    for (EncodeJob& job : jobs) {
      std::vector<float> samples = job.samples;
      if (samples.size() < min_samples) samples.resize(min_samples, 0.f);
      job.features = mel.Compute(samples);  // [T, n_mels]
      longest = std::max<int64_t>(longest, job.features.size(0));
    }
    const int64_t batch = static_cast<int64_t>(jobs.size());
    const int64_t mels = jobs[0].features.size(1);
    torch::Tensor features = torch::zeros({batch, longest, mels});
    torch::Tensor lengths = torch::empty({batch}, torch::kLong);
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t t = jobs[b].features.size(0);
      features[b].narrow(0, 0, t).copy_(jobs[b].features);
      lengths[b] = t;
    }
    audio::WhisperEncoderInput input;
    input.features = features;
    input.lengths = lengths;
    const audio::WhisperEncoderOutput out = model_.SpeechEncoder()->forward(input);
    const torch::Tensor logits = model_.Ctc()->forward(out.last_hidden_state).to(torch::kCPU, torch::kFloat);
    const torch::Tensor out_lengths = out.lengths.to(torch::kCPU);
    for (int64_t b = 0; b < batch; ++b)
      jobs[b].result = audio::CtcGreedyWords(logits[b].narrow(0, 0, out_lengths[b].item<int64_t>()));
    std::lock_guard<std::mutex> lock(mutex_);
    counters_.encode_batches += 1;
    counters_.encode_rows += batch;
  } catch (const std::exception& e) {
    log::Error(Str("encoder batch of ", jobs.size(), " failed: ", e.what()));
    for (EncodeJob& job : jobs) job.failed = true;
  }
}

void Engine::DeliverEncodeJobs(std::vector<EncodeJob>& jobs) {
  const double spf = model_.SecondsPerFrame();
  const int rate = model_.SampleRate();
  const grpc::Status internal(grpc::StatusCode::INTERNAL, "the server failed to process the audio");
  for (EncodeJob& job : jobs) {
    if (job.transcribe) {
      TranscribeJob& t = *job.transcribe;
      t.done = true;
      if (t.abandoned) continue;
      if (job.failed) {
        t.status = internal;
        continue;
      }
      v1::FinalTranscript& f = t.result.transcript;
      f.set_text(job.result.text);
      f.set_is_final(true);
      f.set_confidence(job.result.confidence);
      for (const audio::CtcWord& w : job.result.words) {
        v1::WordInfo* info = f.add_words();
        info->set_word(w.text);
        info->set_start_seconds(w.start_frame * spf);
        info->set_end_seconds(w.end_frame * spf);
        info->set_confidence(w.confidence);
      }
      t.result.audio_seconds = double(job.samples.size()) / rate;
      f.set_start_seconds(0);
      f.set_end_seconds(t.result.audio_seconds);
      continue;
    }
    Stream& s = *job.stream;
    Utterance& u = *job.utterance;
    if (s.closed) continue;
    if (job.failed) {
      s.End(internal);
      continue;
    }
    v1::ConverseResponse response;
    response.set_request_id(s.settings.request_id);
    response.set_utterance_index(u.index);
    if (!job.final) {
      u.interim_inflight = false;
      if (u.final_scheduled || job.result.text.empty()) continue;  // the final is on its way
      v1::InterimTranscript* interim = response.mutable_interim_transcript();
      interim->set_text(job.result.text);
      interim->set_stability(Stability(u.last_interim, job.result.text));
      interim->set_is_final(false);
      interim->set_audio_end_seconds(u.start_seconds + double(job.samples.size()) / rate);
      u.last_interim = job.result.text;
      if (u.first_interim_ms == 0) u.first_interim_ms = std::max(1e-3, Ms(u.first_audio, Clock::now()));
      s.outbox.Push(std::move(response));
      continue;
    }
    v1::FinalTranscript* f = response.mutable_final_transcript();
    f->set_text(job.result.text);
    f->set_is_final(true);
    f->set_confidence(job.result.confidence);
    for (const audio::CtcWord& w : job.result.words) {
      v1::WordInfo* info = f->add_words();
      info->set_word(w.text);
      info->set_start_seconds(u.start_seconds + w.start_frame * spf);
      info->set_end_seconds(u.start_seconds + std::min(w.end_frame * spf, double(job.samples.size()) / rate));
      info->set_confidence(w.confidence);
    }
    f->set_start_seconds(u.start_seconds);
    f->set_end_seconds(u.start_seconds + double(job.samples.size()) / rate);
    f->set_end_reason(u.reason);
    u.final_ms = Ms(u.end_time, Clock::now());
    s.outbox.Push(std::move(response));
    if (!s.settings.respond) {
      FinishUtteranceSummary(s, nullptr, v1::FINISH_REASON_UNSPECIFIED);
      continue;
    }
    auto row = std::make_shared<DecodeRow>();
    row->stream = job.stream;
    row->utterance = job.utterance;
    row->adapter = s.settings.answer_adapter;
    row->example.prompt = row->adapter->tasks.at("sqa");
    row->example.speech = {job.features};
    row->max_tokens = s.settings.max_answer_tokens;
    row->generator = at::detail::createCPUGenerator(0);
    pending_rows_.push_back(row);
  }
}

void Engine::FinishUtteranceSummary(Stream& s, DecodeRow* row, v1::FinishReason reason) {
  if (s.utterances.empty()) return;
  const std::shared_ptr<Utterance> u = s.utterances.front();
  const Clock::time_point now = Clock::now();
  v1::ConverseResponse response;
  response.set_request_id(s.settings.request_id);
  response.set_utterance_index(u->index);
  v1::UtteranceSummary* summary = response.mutable_summary();
  summary->set_first_interim_ms(u->first_interim_ms);
  summary->set_final_after_end_of_audio_ms(u->final_ms);
  summary->set_total_ms(Ms(u->first_audio, now));
  summary->set_audio_seconds_processed(double(u->samples.size()) / model_.SampleRate());
  summary->set_model(model_.Name());
  if (row != nullptr) {
    summary->set_first_answer_token_ms(row->got_first ? Ms(u->end_time, row->first_token_time) : 0.0);
    summary->set_tokens_generated(static_cast<int>(row->tokens.size()));
    summary->set_adapter(row->adapter->name);
    summary->set_finish_reason(reason);
  }
  s.outbox.Push(std::move(response));
  s.utterances.pop_front();
  s.busy = false;
  MaybeComplete(s);
}

// ---------------------------------------------------------------------------------------------
// Decoding

std::vector<std::vector<std::shared_ptr<Engine::DecodeRow>>> Engine::Batches(
    const std::vector<std::shared_ptr<DecodeRow>>& rows) const {
  std::vector<const ServedAdapter*> adapters;
  for (const auto& row : rows)
    if (std::find(adapters.begin(), adapters.end(), row->adapter) == adapters.end()) adapters.push_back(row->adapter);
  std::vector<std::vector<std::shared_ptr<DecodeRow>>> batches;
  for (const ServedAdapter* adapter : adapters) {
    std::vector<std::shared_ptr<DecodeRow>> group;
    for (const auto& row : rows)
      if (row->adapter == adapter && !row->finished) group.push_back(row);
    for (size_t begin = 0; begin < group.size(); begin += config_.max_batch)
      batches.emplace_back(group.begin() + begin, group.begin() + std::min(group.size(), begin + config_.max_batch));
  }
  return batches;
}

void Engine::Prefill(std::vector<std::shared_ptr<DecodeRow>>& rows) {
  for (const auto& part : Batches(rows)) {
    const ServedAdapter* adapter = part[0]->adapter;
    try {
      torch::Tensor embeds, mask;
      std::vector<int64_t> lengths;
      if (adapter != nullptr) {
        std::vector<adapters::MultimodalExample> examples;
        for (const auto& row : part) examples.push_back(row->example);
        const adapters::MultimodalBatch batch = adapter->model->Prepare(examples, text::PaddingSide::kLeft);
        embeds = batch.inputs_embeds;
        mask = batch.attention_mask;
        lengths = batch.lengths;
      } else {
        int64_t longest = 0;
        for (const auto& row : part) longest = std::max<int64_t>(longest, row->prompt_ids.size());
        torch::Tensor ids = torch::zeros({static_cast<int64_t>(part.size()), longest}, torch::kLong);
        mask = torch::zeros_like(ids);
        for (size_t r = 0; r < part.size(); ++r) {
          const auto& p = part[r]->prompt_ids;
          const int64_t pad = longest - static_cast<int64_t>(p.size());
          ids[r].narrow(0, pad, p.size()).copy_(torch::tensor(p, torch::kLong));
          mask[r].narrow(0, pad, p.size()).fill_(1);
          lengths.push_back(static_cast<int64_t>(p.size()));
        }
        const torch::Device device = model_.Backbone()->parameters()[0].device();
        embeds = model_.Backbone()->EmbedTokens(ids.to(device));
        mask = mask.to(device);
      }
      const int64_t longest = embeds.size(1);
      for (size_t r = 0; r < part.size(); ++r) {
        part[r]->prompt_tokens = lengths[r];
        Check(lengths[r] + part[r]->max_tokens <= model_.ContextLength(), "the prompt (", lengths[r],
              " positions) plus ", part[r]->max_tokens, " new tokens exceed the model's context of ",
              model_.ContextLength());
      }
      model_.Activate(adapter);
      text::KVCache cache;
      text::LlamaInput input;
      input.inputs_embeds = embeds;
      input.attention_mask = mask;
      input.cache = &cache;
      input.logits_to_keep = 1;
      const torch::Tensor logits = model_.Backbone()->forward(input).logits.select(1, 0).to(torch::kCPU);
      std::lock_guard<std::mutex> lock(mutex_);
      counters_.prefill_batches += 1;
      counters_.prefill_rows += static_cast<int64_t>(part.size());
      for (size_t r = 0; r < part.size(); ++r) {
        DecodeRow& row = *part[r];
        const int64_t pad = longest - lengths[r];
        for (size_t l = 0; l < cache.keys.size(); ++l) {
          row.cache.keys.push_back(cache.keys[l].narrow(0, r, 1).narrow(2, pad, lengths[r]));
          row.cache.values.push_back(cache.values[l].narrow(0, r, 1).narrow(2, pad, lengths[r]));
        }
        row.length = lengths[r];
        Accept(row, Choose(row, logits[r]));
      }
    } catch (const Error& e) {
      std::lock_guard<std::mutex> lock(mutex_);
      for (auto& row : part) FailRow(*row, grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, e.what()));
    } catch (const std::exception& e) {
      log::Error(Str("prefill of ", part.size(), " rows failed: ", e.what()));
      std::lock_guard<std::mutex> lock(mutex_);
      for (auto& row : part) FailRow(*row, grpc::Status(grpc::StatusCode::INTERNAL, "the server failed to decode"));
    }
  }
}

void Engine::Step(std::vector<std::shared_ptr<DecodeRow>>& rows) {
  for (const auto& part : Batches(rows)) {
    const ServedAdapter* adapter = part[0]->adapter;
    try {
      const int64_t batch = static_cast<int64_t>(part.size());
      int64_t longest = 0;
      for (const auto& row : part) longest = std::max(longest, row->length);
      const size_t layers = part[0]->cache.keys.size();
      text::KVCache cache;
      for (size_t l = 0; l < layers; ++l) {
        std::vector<torch::Tensor> keys, values;
        for (const auto& row : part) {
          const int64_t pad = longest - row->length;
          keys.push_back(pad ? torch::constant_pad_nd(row->cache.keys[l], {0, 0, pad, 0}) : row->cache.keys[l]);
          values.push_back(pad ? torch::constant_pad_nd(row->cache.values[l], {0, 0, pad, 0}) : row->cache.values[l]);
        }
        cache.keys.push_back(batch == 1 ? keys[0] : torch::cat(keys, 0));
        cache.values.push_back(batch == 1 ? values[0] : torch::cat(values, 0));
      }
      const torch::Device device = cache.keys[0].device();
      torch::Tensor ids = torch::empty({batch, 1}, torch::kLong);
      torch::Tensor positions = torch::empty({batch, 1}, torch::kLong);
      torch::Tensor mask = torch::zeros({batch, longest + 1}, torch::kLong);
      for (int64_t r = 0; r < batch; ++r) {
        ids[r][0] = part[r]->next_token;
        positions[r][0] = part[r]->length;
        mask[r].narrow(0, longest - part[r]->length, part[r]->length + 1).fill_(1);
      }
      model_.Activate(adapter);
      text::LlamaInput input;
      input.input_ids = ids.to(device);
      input.position_ids = positions.to(device);
      input.attention_mask = mask.to(device);
      input.cache = &cache;
      const torch::Tensor logits = model_.Backbone()->forward(input).logits.select(1, 0).to(torch::kCPU);
      std::lock_guard<std::mutex> lock(mutex_);
      counters_.decode_steps += 1;
      counters_.decode_rows += batch;
      counters_.max_decode_batch = std::max(counters_.max_decode_batch, batch);
      for (int64_t r = 0; r < batch; ++r) {
        DecodeRow& row = *part[r];
        const int64_t pad = longest - row.length;
        for (size_t l = 0; l < layers; ++l) {
          row.cache.keys[l] = cache.keys[l].narrow(0, r, 1).narrow(2, pad, row.length + 1);
          row.cache.values[l] = cache.values[l].narrow(0, r, 1).narrow(2, pad, row.length + 1);
        }
        row.length += 1;
        if (row.Cancelled()) continue;  // dropped by the loop before the next step
        Accept(row, Choose(row, logits[r]));
      }
    } catch (const std::exception& e) {
      log::Error(Str("decode step of ", part.size(), " rows failed: ", e.what()));
      std::lock_guard<std::mutex> lock(mutex_);
      for (auto& row : part) FailRow(*row, grpc::Status(grpc::StatusCode::INTERNAL, "the server failed to decode"));
    }
  }
}

int64_t Engine::Choose(DecodeRow& row, const torch::Tensor& all_logits) {
  // Only ids the tokenizer can turn into text: a model's embedding table may be padded beyond its
  // tokenizer (a multiple of 64 is common), and an answer must never contain an undecodable id.
  const int64_t decodable = std::min(all_logits.size(0), model_.TextVocabulary());
  const torch::Tensor logits = all_logits.narrow(0, 0, decodable);
  if (row.temperature <= 0) return logits.argmax().item<int64_t>();
  const torch::Tensor filtered =
      text::ApplySamplingFilters(logits.unsqueeze(0).to(torch::kFloat), row.temperature, row.top_k, row.top_p);
  const torch::Tensor probs = torch::softmax(filtered, -1);
  return torch::multinomial(probs, 1, false, row.generator).item<int64_t>();
}

void Engine::Accept(DecodeRow& row, int64_t token) {
  if (row.finished) return;
  const std::vector<int64_t>& eos = model_.Tokenizer().EosIds();
  if (std::find(eos.begin(), eos.end(), token) != eos.end()) {
    Finish(row, v1::END_OF_SEQUENCE);
    return;
  }
  row.tokens.push_back(token);
  row.next_token = token;
  std::string full = model_.Tokenizer().Decode(row.tokens, /*skip_special_tokens=*/true);
  bool stopped = false;
  size_t cut = std::string::npos;
  for (const std::string& stop : row.stop) {
    const size_t at = full.find(stop);
    if (!stop.empty() && at != std::string::npos) cut = std::min(cut, at);
  }
  if (cut != std::string::npos) {
    full.resize(cut);
    stopped = true;
  }
  size_t safe = full.size();
  if (!stopped) {
    safe -= IncompleteUtf8Tail(full);
    // Hold back a tail that may become a stop string.
    for (const std::string& stop : row.stop)
      for (size_t k = std::min(stop.size() - 1, safe); k > 0; --k)
        if (full.compare(safe - k, k, stop, 0, k) == 0) {
          safe -= k;
          break;
        }
  }
  std::string delta;
  if (safe > row.sent.size() && full.compare(0, row.sent.size(), row.sent) == 0) {
    delta = full.substr(row.sent.size(), safe - row.sent.size());
    row.sent += delta;
  }
  const Clock::time_point now = Clock::now();
  if (!row.got_first) {
    row.got_first = true;
    row.first_token_time = now;
  }
  v1::AnswerToken token_message;
  token_message.set_text(delta);
  token_message.set_token_id(static_cast<int32_t>(token));
  token_message.set_index(static_cast<int32_t>(row.tokens.size() - 1));
  if (row.stream) {
    v1::ConverseResponse response;
    response.set_request_id(row.stream->settings.request_id);
    response.set_utterance_index(row.utterance->index);
    *response.mutable_answer_token() = token_message;
    row.stream->outbox.Push(std::move(response));
  } else {
    v1::GenerateResponse response;
    response.set_request_id(row.job->settings.request_id);
    *response.mutable_token() = token_message;
    row.job->outbox.Push(std::move(response));
  }
  if (stopped) Finish(row, v1::STOP_STRING);
  else if (static_cast<int>(row.tokens.size()) >= row.max_tokens) Finish(row, v1::MAX_TOKENS);
}

void Engine::Finish(DecodeRow& row, v1::FinishReason reason) {
  row.finished = true;
  row.cache.Clear();
  if (row.stream) {
    Stream& s = *row.stream;
    if (s.closed) return;
    if (s.settings.answer_audio && model_.Synthesizer() != nullptr) {
      // Speak the answer first; RunSynthesis sends the summary after the audio (the stream stays
      // busy, so the next utterance waits its turn).
      auto job = std::make_shared<SynthesizeJob>();
      job->stream = row.stream;
      job->answer = std::make_shared<DecodeRow>();
      job->answer->adapter = row.adapter;
      job->answer->got_first = row.got_first;
      job->answer->first_token_time = row.first_token_time;
      job->answer->tokens = row.tokens;
      job->reason = reason;
      job->settings.request_id = s.settings.request_id;
      job->settings.text = model_.Tokenizer().Decode(row.tokens, /*skip_special_tokens=*/true);
      job->settings.float32 = s.settings.answer_audio_float32;
      job->settings.sample_rate = s.settings.answer_audio_rate;
      job->settings.options = model_.SynthesisOptions();
      if (job->settings.text.find_first_not_of(" \t\r\n") != std::string::npos) {
        synthesize_jobs_.push_back(job);
        return;
      }
    }
    FinishUtteranceSummary(s, &row, reason);  // the front utterance is the one answered
    return;
  }
  GenerateJob& job = *row.job;
  if (job.closed) return;
  const Clock::time_point now = Clock::now();
  v1::GenerateResponse response;
  response.set_request_id(job.settings.request_id);
  v1::GenerateSummary* summary = response.mutable_summary();
  summary->set_first_token_ms(row.got_first ? Ms(job.arrived, row.first_token_time) : 0.0);
  summary->set_total_ms(Ms(job.arrived, now));
  summary->set_prompt_tokens(static_cast<int>(row.prompt_tokens));
  summary->set_tokens_generated(static_cast<int>(row.tokens.size()));
  summary->set_finish_reason(reason);
  summary->set_model(model_.Name());
  if (row.adapter != nullptr) summary->set_adapter(row.adapter->name);
  job.outbox.Push(std::move(response));
  job.End(grpc::Status::OK);
}

void Engine::FailRow(DecodeRow& row, const grpc::Status& status) {
  row.finished = true;
  row.cache.Clear();
  row.Owner().End(status);
}

}  // namespace slm::serve
