// The audio path of Converse streams: endpointing, the encode thread (interim and final
// transcripts, Transcribe requests) and the hand-off of spoken questions to the decoder.
#include <algorithm>
#include <cmath>

#include "core/log.h"
#include "core/strings.h"
#include "engine/engine.h"
#include "engine/requests.h"

namespace slm::engine {
namespace {

float Stability(const std::string& previous, const std::string& current) {
  if (current.empty()) return 1.f;
  size_t common = 0;
  while (common < previous.size() && common < current.size() && previous[common] == current[common]) ++common;
  return static_cast<float>(common) / current.size();
}

}  // namespace

struct Engine::EncodeJob {
  std::shared_ptr<Stream> stream;
  std::shared_ptr<Utterance> utterance;
  std::shared_ptr<TranscribeJob> transcribe;
  bool final = false;
  bool incremental = false;     // advances the utterance's StreamTranscription by `samples`
  std::vector<float> samples;   // the whole clip, or (incremental) what is new since the last step
  int64_t total_samples = 0;    // of the utterance (or clip) up to the end of `samples`
  std::vector<float> question;  // incremental RESPOND finals: the whole utterance, for the answer
  ClipTranscript result;
  bool failed = false;
};

// ---------------------------------------------------------------------------------------------
// Endpointing

void Engine::Append(Stream& stream, const float* samples, size_t count) {
  const int rate = model_.SampleRate();
  const size_t frame_size = static_cast<size_t>(rate / 100);  // 10 ms
  const int64_t max_samples = static_cast<int64_t>(stream.max_utterance_seconds * rate);
  const int64_t keep_leading = static_cast<int64_t>(0.3 * rate);
  const double threshold = std::pow(10.0, config_.speech_threshold_dbfs / 10.0);
  const int endpoint_ms = stream.endpointing_ms;
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
        EndOpenUtterance(stream, EndReason::kEndpoint);
        continue;
      }
    }
    if (static_cast<int64_t>(u.samples.size()) >= max_samples) EndOpenUtterance(stream, EndReason::kMaxDuration);
  }
}

void Engine::EndOpenUtterance(Stream& stream, EndReason reason) {
  if (stream.utterances.empty() || stream.utterances.back()->ended) return;
  Utterance& u = *stream.utterances.back();
  u.ended = true;
  u.reason = reason;
  u.end_time = Clock::now();
}

void Engine::MaybeComplete(Stream& stream) {
  if (stream.half_closed && stream.utterances.empty()) stream.End(Status::Ok());
}

// ---------------------------------------------------------------------------------------------
// The encode thread

bool Engine::EncodeWorkDue() {
  if (stop_ || !transcribe_jobs_.empty()) return true;
  // A block-causal encoder advances every stream as its audio arrives (interims or not), so a final
  // only encodes the utterance's last chunk.
  const bool incremental = transcriber_.Incremental();
  const int64_t interval = int64_t{config_.interim_interval_ms} * model_.SampleRate() / 1000;
  for (const auto& s : streams_) {
    if (s->closed || s->utterances.empty()) continue;
    const Utterance& front = *s->utterances.front();
    if (front.ended && !front.final_scheduled && !s->busy) return true;
    const Utterance& back = *s->utterances.back();
    if ((s->settings.interim || incremental) && !back.ended && back.heard_speech && !back.interim_inflight &&
        static_cast<int64_t>(back.samples.size()) - back.interim_samples >= interval)
      return true;
  }
  return false;
}

void Engine::EncodeLoop() {
  torch::NoGradGuard no_grad;
  while (true) {
    std::vector<EncodeJob> jobs;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      encode_work_.wait(lock, [&] { return EncodeWorkDue(); });
      if (stop_) return;
      // A short wait gathers audio that arrives together into one batch.
      if (config_.max_wait_ms > 0)
        encode_work_.wait_for(lock, std::chrono::milliseconds(config_.max_wait_ms), [&] { return stop_; });
      if (stop_) return;
      const Status cancelled{Code::kCancelled, "cancelled by the client"};
      for (auto& s : streams_)
        if (!s->closed && s->ClientCancelled()) s->End(cancelled);
      jobs = CollectEncodeJobs();
    }
    if (jobs.empty()) continue;
    const Clock::time_point start = Clock::now();
    RunEncodeJobs(jobs);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      DeliverEncodeJobs(jobs);
      counters_.encode_busy_seconds += Ms(start, Clock::now()) / 1000.0;
    }
    transcribe_done_.notify_all();
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
    job.total_samples = static_cast<int64_t>(job.samples.size());
    jobs.push_back(std::move(job));
  }
  const int64_t interval = int64_t{config_.interim_interval_ms} * model_.SampleRate() / 1000;
  const bool incremental = transcriber_.Incremental();
  const size_t n = streams_.size();
  // The samples a job of `u` hands to the encoder: the whole utterance so far, or (incremental)
  // what arrived since its last step.
  auto take = [&](EncodeJob& job, Utterance& u) {
    job.incremental = incremental;
    job.total_samples = static_cast<int64_t>(u.samples.size());
    if (!incremental) {
      job.samples = u.samples;
      return;
    }
    job.samples.assign(u.samples.begin() + u.encoded_samples, u.samples.end());
    u.encoded_samples = job.total_samples;
  };
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
        take(job, *front);
        if (incremental && s->settings.respond) job.question = front->samples;
        jobs.push_back(std::move(job));
      } else {
        const auto& back = s->utterances.back();
        if (!(s->settings.interim || incremental) || back->ended || !back->heard_speech || back->interim_inflight ||
            static_cast<int64_t>(back->samples.size()) - back->interim_samples < interval)
          continue;
        back->interim_inflight = true;
        back->interim_samples = static_cast<int64_t>(back->samples.size());
        EncodeJob job;
        job.stream = s;
        job.utterance = back;
        take(job, *back);
        jobs.push_back(std::move(job));
      }
    }
  if (n > 0) rotate_ = (rotate_ + 1) % n;
  return jobs;
}

void Engine::RunEncodeJobs(std::vector<EncodeJob>& jobs) {
  std::vector<EncodeJob*> whole, streamed;
  for (EncodeJob& job : jobs) (job.incremental ? streamed : whole).push_back(&job);
  if (!whole.empty()) {
    std::vector<const std::vector<float>*> clips;
    for (const EncodeJob* job : whole) clips.push_back(&job->samples);
    try {
      std::vector<ClipTranscript> results = transcriber_.Run(clips);
      for (size_t i = 0; i < whole.size(); ++i) whole[i]->result = std::move(results[i]);
    } catch (const std::exception& e) {
      // One clip's problem must not fail the others: again clip by clip.
      log::Warn(Str("encoder batch of ", whole.size(), " failed (", e.what(), "); retrying clip by clip"));
      for (EncodeJob* job : whole) {
        try {
          job->result = std::move(transcriber_.Run({&job->samples}).front());
        } catch (const std::exception& one) {
          log::Error(Str("encoding one clip failed: ", one.what()));
          job->failed = true;
        }
      }
    }
  }
  if (!streamed.empty()) {
    std::vector<StreamStep> steps(streamed.size());
    for (size_t i = 0; i < streamed.size(); ++i) {
      steps[i].stream = &streamed[i]->utterance->transcription;
      steps[i].samples = std::move(streamed[i]->samples);
      steps[i].finish = streamed[i]->final;
    }
    try {
      transcriber_.Advance(steps);
      for (size_t i = 0; i < streamed.size(); ++i) streamed[i]->result.transcript = std::move(steps[i].transcript);
    } catch (const std::exception& e) {
      // A failed batched step changes no encoder state, but the streams' front-ends took the audio:
      // those utterances cannot go on.
      log::Error(Str("incremental encoder step of ", streamed.size(), " streams failed: ", e.what()));
      for (EncodeJob* job : streamed) job->failed = true;
    }
    for (EncodeJob* job : streamed)
      if (job->final && !job->failed && !job->question.empty()) {
        try {
          job->result.features = model_.Mel().Compute(job->question);
        } catch (const std::exception& e) {
          log::Error(Str("features of a spoken question failed: ", e.what()));
          job->failed = true;
        }
      }
  }
  std::lock_guard<std::mutex> lock(mutex_);
  counters_.encode_batches += 1;
  counters_.encode_rows += static_cast<int64_t>(jobs.size());
}

void Engine::DeliverEncodeJobs(std::vector<EncodeJob>& jobs) {
  const double spf = model_.SecondsPerFrame();
  const int rate = model_.SampleRate();
  const Status internal{Code::kInternal, "the server failed to process the audio"};
  auto words = [&](const audio::CtcTranscript& t, double offset, double end) {
    std::vector<Word> out;
    for (const audio::CtcWord& w : t.words)
      out.push_back({w.text, offset + w.start_frame * spf, offset + std::min(w.end_frame * spf, end), w.confidence});
    return out;
  };
  for (EncodeJob& job : jobs) {
    const audio::CtcTranscript& ctc = job.result.transcript;
    const double seconds = double(job.total_samples) / rate;
    if (job.transcribe) {
      TranscribeJob& t = *job.transcribe;
      t.done = true;
      if (t.abandoned) continue;
      if (job.failed) {
        t.status = internal;
        continue;
      }
      Transcript& f = t.result.transcript;
      f.text = ctc.text;
      f.confidence = ctc.confidence;
      f.words = words(ctc, 0.0, seconds);
      f.start_seconds = 0;
      f.end_seconds = seconds;
      f.end_reason = EndReason::kHalfClose;
      t.result.audio_seconds = seconds;
      continue;
    }
    Stream& s = *job.stream;
    Utterance& u = *job.utterance;
    if (s.closed) continue;
    if (job.failed) {
      s.End(internal);
      continue;
    }
    StreamEvent event;
    event.utterance = u.index;
    if (!job.final) {
      u.interim_inflight = false;
      // The final is on its way, or the encoder only advanced (no interims asked for).
      if (u.final_scheduled || ctc.text.empty() || !s.settings.interim) continue;
      event.kind = StreamEvent::Kind::kInterim;
      event.interim.text = ctc.text;
      event.interim.stability = Stability(u.last_interim, ctc.text);
      event.interim.audio_end_seconds = u.start_seconds + seconds;
      u.last_interim = ctc.text;
      if (u.first_interim_ms == 0) u.first_interim_ms = std::max(1e-3, Ms(u.first_audio, Clock::now()));
      s.outbox.Push(std::move(event));
      continue;
    }
    event.kind = StreamEvent::Kind::kFinal;
    Transcript& f = event.final;
    f.text = ctc.text;
    f.confidence = ctc.confidence;
    f.words = words(ctc, u.start_seconds, seconds);
    f.start_seconds = u.start_seconds;
    f.end_seconds = u.start_seconds + seconds;
    f.end_reason = u.reason;
    u.final_ms = Ms(u.end_time, Clock::now());
    s.outbox.Push(std::move(event));
    if (!s.settings.respond) {
      FinishUtterance(s, nullptr, FinishReason::kUnspecified);
      continue;
    }
    Answer(job.stream, job.utterance, job.result.features, ctc.text);
  }
}

// ---------------------------------------------------------------------------------------------
// Spoken questions -> answers (lock held)

void Engine::Answer(const std::shared_ptr<Stream>& stream, const std::shared_ptr<Utterance>& utterance,
                    const torch::Tensor& features, const std::string& transcript) {
  auto request = std::make_shared<AnswerRequest>();
  request->adapter = stream->adapter;
  const std::string& sqa = stream->adapter->tasks.at("sqa");
  request->example.prompt = stream->adapter->answers_transcript ? FillTranscript(sqa, transcript) : sqa;
  if (sqa.find("<speech>") != std::string::npos) request->example.speech = {features};
  request->max_tokens = stream->max_answer_tokens;
  auto progress = std::make_shared<AnswerProgress>();
  std::weak_ptr<Stream> weak = stream;
  const int index = utterance->index;
  request->cancelled = [weak] {
    auto s = weak.lock();
    return !s || s->Gone();
  };
  request->on_token = [weak, progress, index](const Token& token) {
    if (!progress->got_first) {
      progress->got_first = true;
      progress->first_token = Clock::now();
    }
    progress->text += token.text;
    if (auto s = weak.lock()) {
      StreamEvent event;
      event.kind = StreamEvent::Kind::kToken;
      event.utterance = index;
      event.token = token;
      s->outbox.Push(std::move(event));
    }
  };
  request->on_finish = [this, weak, progress](FinishReason reason, int64_t prompt_positions, int tokens) {
    auto s = weak.lock();
    if (!s) return;
    progress->tokens = tokens;
    progress->prompt_positions = prompt_positions;
    std::lock_guard<std::mutex> lock(mutex_);
    if (s->closed) return;
    if (s->settings.answer_audio && model_.Synthesizer() != nullptr &&
        progress->text.find_first_not_of(" \t\r\n") != std::string::npos) {
      // Speak the answer first; the synthesis thread sends the summary after the audio (the
      // stream stays busy, so the next utterance waits its turn).
      auto job = std::make_shared<SynthesizeJob>();
      job->stream = s;
      job->answer = progress;
      job->reason = reason;
      job->settings.request_id = s->settings.request_id;
      job->settings.text = progress->text;
      job->settings.sample_rate = s->settings.answer_audio_rate;
      synthesize_jobs_.push_back(job);
      synthesis_work_.notify_all();
      return;
    }
    FinishUtterance(*s, progress.get(), reason);
  };
  request->on_fail = [this, weak](const Status& why) {
    if (auto s = weak.lock()) {
      std::lock_guard<std::mutex> lock(mutex_);
      s->End(why);
    }
  };
  if (Status submitted = decoder_->Submit(request); !submitted.ok()) stream->End(submitted);
}

void Engine::FinishUtterance(Stream& s, const AnswerProgress* answer, FinishReason reason) {
  if (s.utterances.empty()) return;
  const std::shared_ptr<Utterance> u = s.utterances.front();
  const Clock::time_point now = Clock::now();
  StreamEvent event;
  event.kind = StreamEvent::Kind::kSummary;
  event.utterance = u->index;
  UtteranceSummary& summary = event.summary;
  summary.first_interim_ms = u->first_interim_ms;
  summary.final_after_end_of_audio_ms = u->final_ms;
  summary.total_ms = Ms(u->first_audio, now);
  summary.audio_seconds = double(u->samples.size()) / model_.SampleRate();
  summary.model = model_.Name();
  if (answer != nullptr) {
    summary.first_answer_token_ms = answer->got_first ? Ms(u->end_time, answer->first_token) : 0.0;
    summary.tokens = answer->tokens;
    summary.adapter = s.adapter ? s.adapter->name : "";
    summary.finish = reason;
  }
  s.outbox.Push(std::move(event));
  s.utterances.pop_front();
  s.busy = false;
  MaybeComplete(s);
  encode_work_.notify_all();  // the next utterance's final may be due now
}

}  // namespace slm::engine
