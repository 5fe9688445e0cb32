// The serving engine: every model computation of every request, batched across requests, behind
// a transport-free API (engine/types.h in, engine/types.h out; engine/status.h for outcomes).
// The gRPC front-end (serve/) and any other front-end translate their messages to and from it,
// so they share one copy of the models, one scheduler and the same limits.
//
// Three worker threads, each with its own work, so that none waits for another:
//  - the encode thread: streams' interim and final transcripts and Transcribe requests, in
//    padded encoder batches (engine/transcriber.h); a final of a RESPOND stream becomes an
//    answer for the decoder;
//  - the decode thread (engine/decoder.h): answers (RESPOND, Generate) by continuous batching
//    over a paged KV cache, every adapter in one forward;
//  - the synthesis thread: Synthesize requests and spoken answers (adapters::TtsPipeline), so a
//    long synthesis never holds up transcripts or answers.
//
// Streams (Converse): audio at the model's sample rate is fed from the front-end's reader thread;
// Feed runs endpointing (engine/endpointing.cpp: 10 ms frames louder than speech_threshold_dbfs
// are speech; after speech, the stream's endpointing silence ends the utterance; leading silence
// is trimmed to 300 ms) and cuts utterances at the stream's longest utterance (end reason
// MAX_DURATION): max_utterance_seconds, and for RESPOND streams also the longest question whose
// answer of the stream's max_answer_tokens still fits the context (ServedAdapter::RespondSeconds;
// a stream asking for answers so long that less than a second of question fits is refused), so
// every question that is heard can be answered.
// Events of a stream keep the API's order: per utterance interims, one final, answer tokens and
// audio, one summary; utterances in order (a later utterance's final waits for the earlier
// answer).
//
// Admission: Open / StartGenerate / StartSynthesize / Transcribe refuse at once, with the status
// a client can act on, what they can never serve (unknown adapter: NOT_FOUND; a task the adapter
// was not trained for: FAILED_PRECONDITION; a prompt that cannot fit the context:
// INVALID_ARGUMENT) and what is over a limit (limits.max_streams, max_generates,
// max_transcribes, max_syntheses: RESOURCE_EXHAUSTED). Nothing a request does can fail another
// request (engine/decoder.h, "Isolation").
//
// Thread-safety: every public method is safe from any thread. `cancelled` callbacks run on the
// worker threads and must be cheap and non-blocking; none is called after Close() of its request
// returned.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/config.h"
#include "engine/decoder.h"
#include "engine/served_model.h"
#include "engine/status.h"
#include "engine/transcriber.h"
#include "engine/types.h"

namespace slm::engine {

struct Utterance;
struct AnswerProgress;

class Engine {
 public:
  struct Stream;
  struct GenerateJob;
  struct SynthesizeJob;
  struct TranscribeJob;

  // Starts the worker threads. `model` must outlive the engine.
  Engine(ServedModel& model, const EngineConfig& config);
  ~Engine();  // stops the workers; open requests end with UNAVAILABLE
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Converse. Open validates the settings against the model (adapter, task, synthesizer).
  Status Open(StreamSettings settings, std::shared_ptr<Stream>* stream);
  void Feed(Stream& stream, const float* samples, size_t count);
  void EndUtterance(Stream& stream);
  void HalfClose(Stream& stream);
  // Ends the stream with `why` (a front-end's protocol error): no further events are produced.
  void Abort(Stream& stream, const Status& why);
  // The stream's next event (blocks); false when it is complete or failed (see Result).
  bool Next(Stream& stream, StreamEvent* out);
  // OK, or why the stream failed.
  Status Result(Stream& stream);
  bool HadAudio(Stream& stream);  // whether any audio arrived

  // Generate: tokens, then the summary, through Next.
  Status StartGenerate(GenerateSettings settings, std::shared_ptr<GenerateJob>* job);
  bool Next(GenerateJob& job, GenerateEvent* out);
  Status Result(GenerateJob& job);

  // Synthesize: audio chunks as they are made, then the summary, through Next.
  Status StartSynthesize(SynthesizeSettings settings, std::shared_ptr<SynthesizeJob>* job);
  bool Next(SynthesizeJob& job, SynthesizeEvent* out);
  Status Result(SynthesizeJob& job);

  // Transcribe (blocks until done or cancelled). Audio at the model's sample rate, at most
  // limits.max_file_seconds (RESOURCE_EXHAUSTED beyond).
  Status Transcribe(std::vector<float> samples, const Cancelled& cancelled, TranscribeResult* result);

  // Forget a request (done, failed or abandoned): the workers drop it before their next batch
  // and never call its callback again. Idempotent.
  void Close(Stream& stream);
  void Close(GenerateJob& job);
  void Close(SynthesizeJob& job);

  // Adapters while serving (engine/served_model.h).
  Status LoadAdapter(const AdapterEntry& entry);
  Status UnloadAdapter(const std::string& name);

  ServedModel& Model() { return model_; }
  const EngineConfig& Config() const { return config_; }
  ModelInfo Info() const { return model_.Info(); }
  // Requests known to the engine now.
  int ActiveRequests();
  // Counters since start (encoder batches and rows, the decoder's steps, prefill chunks,
  // preemptions and KV pool use, syntheses) and busy_seconds per worker.
  nlohmann::json Stats();

 private:
  void EncodeLoop();
  bool EncodeWorkDue();  // lock held
  void SynthesisLoop();
  // Appends to the open utterance, running endpointing; lock held (engine/endpointing.cpp).
  void Append(Stream& stream, const float* samples, size_t count);
  void EndOpenUtterance(Stream& stream, EndReason reason);
  void MaybeComplete(Stream& stream);
  struct EncodeJob;
  std::vector<EncodeJob> CollectEncodeJobs();
  void RunEncodeJobs(std::vector<EncodeJob>& jobs);
  void DeliverEncodeJobs(std::vector<EncodeJob>& jobs);
  // Starts the answer to a finished utterance: its speech features and/or its final transcript go
  // into the adapter's sqa template (engine/served_model.h, "Answers from transcripts").
  void Answer(const std::shared_ptr<Stream>& stream, const std::shared_ptr<Utterance>& utterance,
              const torch::Tensor& features, const std::string& transcript);
  void FinishUtterance(Stream& stream, const AnswerProgress* answer, FinishReason reason);
  void RunSynthesis(SynthesizeJob& job);
  template <class T>
  void Forget(T& request, std::vector<std::shared_ptr<T>>& list);

  ServedModel& model_;
  const EngineConfig config_;
  Transcriber transcriber_;
  std::unique_ptr<Decoder> decoder_;

  std::mutex mutex_;
  std::condition_variable encode_work_, synthesis_work_, transcribe_done_;
  bool stop_ = false;
  std::vector<std::shared_ptr<Stream>> streams_;
  std::vector<std::shared_ptr<GenerateJob>> generate_jobs_;
  std::vector<std::shared_ptr<SynthesizeJob>> synthesize_jobs_;  // queued, oldest first
  std::deque<std::shared_ptr<TranscribeJob>> transcribe_jobs_;
  int transcribes_ = 0;  // running or queued Transcribe calls
  size_t rotate_ = 0;    // round-robin start over streams for encoder batches
  struct Counters {
    int64_t encode_batches = 0, encode_rows = 0, syntheses = 0;
    double encode_busy_seconds = 0, synthesis_busy_seconds = 0;
  } counters_;
  std::thread encode_thread_, synthesis_thread_;
};

}  // namespace slm::engine
