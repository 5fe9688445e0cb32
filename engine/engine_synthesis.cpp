// The synthesis thread: Synthesize requests and the spoken answers of RESPOND streams, one at a
// time in arrival order, on a thread of their own so that transcripts and answers go on.
#include <optional>

#include "audio/audio_io.h"
#include "core/log.h"
#include "core/strings.h"
#include "engine/engine.h"
#include "engine/requests.h"

namespace slm::engine {
namespace {
struct SynthesisCancelled {};
}  // namespace

void Engine::SynthesisLoop() {
  torch::NoGradGuard no_grad;
  while (true) {
    std::shared_ptr<SynthesizeJob> job;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      auto due = [&] {
        if (stop_) return true;
        for (const auto& j : synthesize_jobs_)
          if (!j->closed && !j->started) return true;
        return false;
      };
      synthesis_work_.wait(lock, due);
      if (stop_) return;
      // Spoken answers have no caller to Close() them: drop them once done.
      synthesize_jobs_.erase(std::remove_if(synthesize_jobs_.begin(), synthesize_jobs_.end(),
                                            [](const auto& j) { return j->stream && j->closed; }),
                             synthesize_jobs_.end());
      const Status cancelled{Code::kCancelled, "cancelled by the client"};
      for (auto& j : synthesize_jobs_) {
        if (j->closed || j->started) continue;
        if (j->ClientCancelled()) {
          j->End(cancelled);
          continue;
        }
        j->started = true;
        job = j;
        break;
      }
    }
    if (!job) continue;
    const Clock::time_point start = Clock::now();
    RunSynthesis(*job);
    std::lock_guard<std::mutex> lock(mutex_);
    counters_.syntheses += 1;
    counters_.synthesis_busy_seconds += Ms(start, Clock::now()) / 1000.0;
    if (job->stream) synthesize_jobs_.erase(std::remove(synthesize_jobs_.begin(), synthesize_jobs_.end(), job),
                                            synthesize_jobs_.end());
  }
}

void Engine::RunSynthesis(SynthesizeJob& job) {
  adapters::TtsPipeline* tts = model_.Synthesizer();
  const SynthesizeSettings& s = job.settings;
  const int native = tts->SampleRate();
  const int rate = s.sample_rate > 0 ? s.sample_rate : native;
  std::optional<audio::StreamResampler> resampler;
  if (rate != native) resampler.emplace(native, rate);
  double first_ms = -1;
  int64_t samples_out = 0;
  auto send = [&](std::vector<float> samples) {
    if (samples.empty()) return;
    if (first_ms < 0) first_ms = Ms(job.arrived, Clock::now());
    AudioOut audio;
    audio.sample_rate = rate;
    audio.start_seconds = double(samples_out) / rate;
    samples_out += static_cast<int64_t>(samples.size());
    audio.samples = std::move(samples);
    if (job.stream) {
      StreamEvent event;
      event.kind = StreamEvent::Kind::kAudio;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!job.stream->utterances.empty()) event.utterance = job.stream->utterances.front()->index;
      }
      event.audio = std::move(audio);
      job.stream->outbox.Push(std::move(event));
      return;
    }
    SynthesizeEvent event;
    event.kind = SynthesizeEvent::Kind::kAudio;
    event.audio = std::move(audio);
    job.outbox.Push(std::move(event));
  };
  // A spoken answer ends with its utterance's summary, whatever happened to the audio.
  auto finish_answer = [&] {
    if (!job.stream) return;
    std::lock_guard<std::mutex> lock(mutex_);
    if (!job.stream->closed) FinishUtterance(*job.stream, job.answer.get(), job.reason);
  };
  try {
    // The bank is read by the synthesizer's generation (its LoRA slot) for the whole synthesis.
    std::shared_lock<std::shared_mutex> bank(model_.BankLock());
    adapters::TtsOptions options = model_.SynthesisOptions();
    tts->Synthesize(s.text, options, [&](const std::vector<float>& chunk) {
      if (job.ClientCancelled()) throw SynthesisCancelled{};
      send(resampler ? resampler->Process(chunk.data(), chunk.size()) : chunk);
    });
    if (resampler) send(resampler->Flush());
    if (job.stream) {
      finish_answer();
      std::lock_guard<std::mutex> lock(mutex_);
      job.End(Status::Ok());
      return;
    }
    SynthesizeEvent last;
    last.kind = SynthesizeEvent::Kind::kSummary;
    last.summary.audio_seconds = double(samples_out) / rate;
    last.summary.first_audio_ms = first_ms < 0 ? 0 : first_ms;
    last.summary.total_ms = Ms(job.arrived, Clock::now());
    job.outbox.Push(std::move(last));
    std::lock_guard<std::mutex> lock(mutex_);
    job.End(Status::Ok());
  } catch (const SynthesisCancelled&) {
    std::lock_guard<std::mutex> lock(mutex_);
    job.End({Code::kCancelled, "cancelled by the client"});
  } catch (const Error& e) {
    // What the text asks for cannot be said (no known character, ...): the client's input; an
    // answer that cannot be spoken keeps its text and summary.
    if (job.stream) log::Warn(Str("the answer could not be spoken: ", e.what()));
    finish_answer();
    std::lock_guard<std::mutex> lock(mutex_);
    job.End(job.stream ? Status::Ok() : Status{Code::kInvalidArgument, e.what()});
  } catch (const std::exception& e) {
    log::Error(Str("synthesis failed: ", e.what()));
    std::lock_guard<std::mutex> lock(mutex_);
    if (job.stream) job.stream->End({Code::kInternal, "the server failed to speak the answer"});
    job.End({Code::kInternal, "the server failed to synthesize"});
  }
}

}  // namespace slm::engine
