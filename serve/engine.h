// The server's engine: one scheduler thread runs every model computation of every request, in
// batches across requests.
//
// Streams (Converse): audio (already at the model's sample rate) is fed from the RPC's reader
// thread; Feed runs endpointing (10 ms frames louder than speech_threshold_dbfs are speech; after
// speech, endpointing_ms of trailing silence ends the utterance; leading silence is trimmed to
// 300 ms) and cuts utterances at max_utterance_seconds (end reason MAX_DURATION). The scheduler
// loop then, each iteration:
//   1. encoder batch: up to max_batch rows, each the whole audio so far of an utterance that is
//      due an interim transcript (interim_interval_ms of new audio) or has ended (final), plus
//      Transcribe requests; log-mel -> speech encoder (one padded batch) -> CTC head -> greedy
//      words (audio::CtcGreedyWords). Finals carry word times (frame * SecondsPerFrame from the
//      utterance start) and confidences. Interim stability = the share of the interim's
//      characters in the common prefix with the previous interim of the utterance.
//   2. prefill: answer rows that became ready (RESPOND finals, Generate requests) are prefilled
//      together per adapter (one left-padded batch through MultimodalLM::Prepare and the backbone).
//   3. one decode step for every running answer row (continuous batching): rows of one adapter
//      share one forward pass; each row keeps its own KV cache, so rows join and leave at any
//      step. Per row the caches are left-padded to the longest and concatenated for the step,
//      with an attention mask over the padding and explicit positions.
//   Each AnswerToken is pushed to its request as soon as its step ends; cancelled requests (the
//   `cancelled` callback, checked under the engine lock before every batch) leave before the
//   next step.
// Responses of a stream keep the proto's order: per utterance interims, one final, answer tokens,
// one summary; utterances in order (a later utterance's final waits for the earlier answer).
//
// Errors: bad requests are rejected before they reach the engine (service.cpp). A failure inside a
// batch fails the requests of that batch with INTERNAL (logged); the others go on.
//
// Thread-safety: all public methods are safe from any thread. The `cancelled` callbacks of streams
// and Generate jobs run on the scheduler thread under the engine lock (Transcribe's on the calling
// thread) and must be cheap and non-blocking; a request's callback is never called after Close()
// for it returned.
#pragma once

#include <grpcpp/support/status.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include "serve/model.h"
#include "serve/serve_config.h"
#include "slm/v1/speech.pb.h"

namespace slm::serve {

// FIFO from the scheduler to one RPC's writer. Thread-safe.
template <class T>
class Outbox {
 public:
  void Push(T message) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (closed_) return;
      queue_.push_back(std::move(message));
    }
    cv_.notify_all();
  }
  // Blocks for the next message; false once closed and drained.
  bool Pop(T* out) {
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [&] { return !queue_.empty() || closed_; });
    if (queue_.empty()) return false;
    *out = std::move(queue_.front());
    queue_.pop_front();
    return true;
  }
  // Later pushes are dropped; queued messages are still popped.
  void Close() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      closed_ = true;
    }
    cv_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<T> queue_;
  bool closed_ = false;
};

using Cancelled = std::function<bool()>;

struct StreamSettings {
  std::string request_id;
  bool respond = false;
  bool interim = false;
  int endpointing_ms = 600;  // < 0: no endpointing
  int max_answer_tokens = 32;
  const ServedAdapter* answer_adapter = nullptr;  // required for respond
  // respond: also speak the answer (AudioChunk messages after its tokens, before the summary).
  bool answer_audio = false;
  bool answer_audio_float32 = false;  // else LINEAR16
  int answer_audio_rate = 0;          // 0 = the synthesizer's
  Cancelled cancelled;                            // may be empty
};

struct GenerateSettings {
  std::string request_id;
  std::string prompt;             // with "<image>" markers for `images`
  std::vector<cv::Mat> images;    // 8-bit RGB
  const ServedAdapter* adapter = nullptr;  // nullptr = plain backbone
  int max_new_tokens = 32;
  double temperature = 0;
  int64_t top_k = 0;
  double top_p = 1.0;
  uint64_t seed = 0;
  std::vector<std::string> stop;
  Cancelled cancelled;
};

struct SynthesizeSettings {
  std::string request_id;
  std::string text;
  bool float32 = false;  // FLOAT32 samples; else LINEAR16
  int sample_rate = 0;   // 0 = the synthesizer's rate
  adapters::TtsOptions options;
  Cancelled cancelled;
};

struct TranscribeResult {
  slm::v1::FinalTranscript transcript;
  double audio_seconds = 0;
};

class Engine {
 public:
  struct Stream;
  struct GenerateJob;
  struct TranscribeJob;
  struct SynthesizeJob;

  // Starts the scheduler thread. `model` must outlive the engine.
  Engine(ServedModel& model, const ServeConfig& config);
  ~Engine();  // stops the scheduler; open requests end with UNAVAILABLE
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Converse.
  std::shared_ptr<Stream> Open(StreamSettings settings);
  void Feed(Stream& stream, const float* samples, size_t count);
  void EndUtterance(Stream& stream);
  void HalfClose(Stream& stream);
  // The stream's next response (blocks); false when it is complete or failed (see Status).
  bool Next(Stream& stream, slm::v1::ConverseResponse* out);
  // OK, or why the stream failed (INTERNAL, UNAVAILABLE at shutdown).
  grpc::Status Status(Stream& stream);
  // Whether the stream produced at least one utterance (audio arrived).
  bool HadAudio(Stream& stream);

  // Generate: the job's responses through NextGenerate.
  std::shared_ptr<GenerateJob> StartGenerate(GenerateSettings settings);
  bool NextGenerate(GenerateJob& job, slm::v1::GenerateResponse* out);
  grpc::Status Status(GenerateJob& job);

  // Synthesize: AudioChunk messages as the audio is made, then the summary, through
  // NextSynthesize. The whole synthesis runs on the scheduler thread between batches (other
  // requests wait meanwhile: about the real-time factor times the audio's length).
  std::shared_ptr<SynthesizeJob> StartSynthesize(SynthesizeSettings settings);
  bool NextSynthesize(SynthesizeJob& job, slm::v1::SynthesizeResponse* out);
  grpc::Status Status(SynthesizeJob& job);
  void Close(SynthesizeJob& job);

  // Transcribe (blocks until done or cancelled). Audio at the model's sample rate.
  grpc::Status Transcribe(std::vector<float> samples, const Cancelled& cancelled, TranscribeResult* result);

  // Forget a request (done, failed or abandoned): the scheduler drops it before its next batch and
  // never calls its callback again. Idempotent.
  void Close(Stream& stream);
  void Close(GenerateJob& job);

  // Requests currently known to the scheduler.
  int ActiveRequests();
  // Counters since start: encoder batches and rows, decode steps and rows, prefill batches, and
  // busy_seconds (scheduler time spent computing; busy / audio seconds = the compute RTF).
  nlohmann::json Stats();

 private:
  struct Request;
  struct Utterance;
  struct DecodeRow;
  struct EncodeJob;
  using Clock = std::chrono::steady_clock;

  void Loop();
  // Appends to the open utterance, running endpointing; lock held.
  void Append(Stream& stream, const float* samples, size_t count);
  void EndOpenUtterance(Stream& stream, slm::v1::UtteranceEnd reason);
  void MaybeComplete(Stream& stream);
  std::vector<EncodeJob> CollectEncodeJobs();
  void RunEncodeJobs(std::vector<EncodeJob>& jobs);
  void DeliverEncodeJobs(std::vector<EncodeJob>& jobs);
  // Rows grouped by adapter (one forward pass each, since the LoRA weights are per adapter), cut
  // into batches of at most max_batch; finished rows are left out.
  std::vector<std::vector<std::shared_ptr<DecodeRow>>> Batches(const std::vector<std::shared_ptr<DecodeRow>>& rows) const;
  void Prefill(std::vector<std::shared_ptr<DecodeRow>>& rows);
  void Step(std::vector<std::shared_ptr<DecodeRow>>& rows);
  // Appends a chosen token to a row, streams it, finishes the row when due; lock held.
  void Accept(DecodeRow& row, int64_t token);
  void Finish(DecodeRow& row, slm::v1::FinishReason reason);
  void FailRow(DecodeRow& row, const grpc::Status& status);
  // Ends `request` (status unchanged) and removes it from `list`; takes the lock.
  template <class T>
  void Forget(T& request, std::vector<std::shared_ptr<T>>& list);
  int64_t Choose(DecodeRow& row, const torch::Tensor& logits);
  void FinishUtteranceSummary(Stream& stream, DecodeRow* row, slm::v1::FinishReason reason);

  ServedModel& model_;
  const ServeConfig config_;
  std::mutex mutex_;
  std::condition_variable work_;
  bool stop_ = false;
  std::vector<std::shared_ptr<Stream>> streams_;
  std::vector<std::shared_ptr<GenerateJob>> generate_jobs_;
  std::vector<std::shared_ptr<SynthesizeJob>> synthesize_jobs_;  // queued, oldest first
  void RunSynthesis(SynthesizeJob& job);
  std::deque<std::shared_ptr<TranscribeJob>> transcribe_jobs_;
  std::vector<std::shared_ptr<DecodeRow>> pending_rows_;  // waiting for prefill
  std::vector<std::shared_ptr<DecodeRow>> running_rows_;
  size_t rotate_ = 0;  // round-robin start over streams for encoder batches
  struct Counters {
    int64_t encode_batches = 0, encode_rows = 0, prefill_batches = 0, prefill_rows = 0, decode_steps = 0,
            decode_rows = 0, max_decode_batch = 0;
    double busy_seconds = 0;  // scheduler time spent computing (encoder, prefill, decode)
  } counters_;
  std::thread thread_;
};

}  // namespace slm::serve
