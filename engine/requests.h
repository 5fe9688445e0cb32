// The engine's per-request state (engine/engine.h): Converse streams with their utterances,
// Generate, Synthesize and Transcribe jobs. Internal to engine/.
//
// Thread-safety: the fields are guarded by the engine's mutex unless a comment says otherwise;
// outboxes synchronise themselves; `closed` is atomic so that worker threads can test it without
// the lock (a cancelled request leaves at their next step).
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "engine/engine.h"
#include "engine/outbox.h"
#include "engine/served_model.h"
#include "engine/status.h"
#include "engine/transcriber.h"
#include "engine/types.h"

namespace slm::engine {

using Clock = std::chrono::steady_clock;

inline double Ms(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

// What every request shares: how it ends.
struct RequestBase {
  std::atomic<bool> closed{false};  // ended, failed or abandoned: the workers forget it
  Status status;                    // why it ended, when not OK (engine mutex)
  Clock::time_point arrived = Clock::now();
  virtual ~RequestBase() = default;
  virtual void CloseOutbox() = 0;
  virtual bool ClientCancelled() const = 0;
  // Ends the request with `why` (first end wins); queued events are still delivered. Engine mutex.
  void End(const Status& why) {
    if (closed.exchange(true)) return;
    status = why;
    CloseOutbox();
  }
  bool Gone() const { return closed.load() || ClientCancelled(); }
};

struct Utterance {
  int index = 0;
  std::vector<float> samples;
  double start_seconds = 0;  // stream time of samples[0]
  bool started = false;      // first audio arrived
  Clock::time_point first_audio, end_time;
  bool ended = false;
  EndReason reason = EndReason::kUnspecified;
  bool heard_speech = false;
  int64_t silence_samples = 0;
  int64_t interim_samples = 0;  // samples covered by the last interim job
  bool interim_inflight = false;
  std::string last_interim;
  double first_interim_ms = 0;
  bool final_scheduled = false;
  double final_ms = 0;
  // Incremental transcription (a block-causal encoder): samples handed to the encode thread so far
  // (engine mutex), and the state it advances (encode thread only).
  int64_t encoded_samples = 0;
  StreamTranscription transcription;
};

// The answer of one utterance (or one Generate job) as the decoder reports it. Written on the
// decode thread until on_finish/on_fail, read under the engine mutex after.
struct AnswerProgress {
  bool got_first = false;
  Clock::time_point first_token;
  int tokens = 0;
  int64_t prompt_positions = 0;
  std::string text;  // streamed so far
};

struct Engine::Stream : RequestBase {
  StreamSettings settings;
  AdapterRef adapter;  // answers (respond)
  int max_answer_tokens = 32;
  int endpointing_ms = 600;
  double max_utterance_seconds = 20;
  Outbox<StreamEvent> outbox;
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

struct Engine::GenerateJob : RequestBase {
  GenerateSettings settings;
  AdapterRef adapter;
  Outbox<GenerateEvent> outbox;
  void CloseOutbox() override { outbox.Close(); }
  bool ClientCancelled() const override { return settings.cancelled && settings.cancelled(); }
};

struct Engine::SynthesizeJob : RequestBase {
  SynthesizeSettings settings;
  Outbox<SynthesizeEvent> outbox;
  bool started = false;  // taken by the synthesis thread
  // A spoken answer of a Converse stream instead of a Synthesize call: the audio goes to the
  // stream, then the utterance summary with the answer's progress and reason.
  std::shared_ptr<Engine::Stream> stream;
  std::shared_ptr<AnswerProgress> answer;
  FinishReason reason = FinishReason::kUnspecified;
  void CloseOutbox() override { outbox.Close(); }
  bool ClientCancelled() const override {
    if (stream) return stream->Gone();
    return settings.cancelled && settings.cancelled();
  }
};

struct Engine::TranscribeJob {
  std::vector<float> samples;
  bool done = false;
  bool abandoned = false;
  Status status;
  TranscribeResult result;
};

}  // namespace slm::engine
