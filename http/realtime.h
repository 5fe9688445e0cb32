// The realtime WebSocket (/v1/realtime): OpenAI Realtime API events (and vLLM's names for
// transcripts) over one engine stream per session (engine/engine.h: Open / Feed / EndUtterance /
// HalfClose / Next), so a browser or any Realtime client gets interim transcripts, the final
// transcript, the streamed answer and the spoken answer with the server's endpointing.
//
// Client events: session.update, input_audio_buffer.append {audio: base64 PCM16 mono at the
// session's input rate, 16000 Hz unless session.audio.input.format.rate says otherwise},
// input_audio_buffer.commit (ends the utterance; vLLM's {final: true} also ends the audio),
// response.create (answers are automatic in a realtime session: accepted, no effect).
// Anything else (input_audio_buffer.clear, response.cancel, conversation.item.create, unknown
// types, bad JSON, bad base64) gets an `error` event naming the problem; the session goes on.
//
// Server events, per utterance in order: input_audio_buffer.speech_started;
// conversation.item.input_audio_transcription.delta {delta, transcript: the whole interim,
// stability, audio_end_ms} and transcription.delta {delta} (vLLM) per interim;
// input_audio_buffer.speech_stopped, input_audio_buffer.committed,
// conversation.item.input_audio_transcription.completed {transcript, words, confidence} and
// transcription.done {text} at the final; in a realtime session then response.created,
// response.output_text.delta per token, response.output_audio.delta {delta: base64 PCM16,
// sample_rate} per piece of speech when the output modalities include audio,
// response.output_text.done, response.output_audio.done and response.done {response: {usage,
// latency}}. Deltas only ever append: an interim that revises earlier text sends delta "" with
// the new whole `transcript`; the completed event has the final text.
//
// Sessions: type "transcription" (the default: transcripts only) or "realtime" (each utterance is
// answered by the adapter named in `model`, else the default spoken-QA adapter). An update while
// audio is streaming ends that engine stream (its utterances still finish) and applies to the next
// append. turn_detection {type: server_vad, silence_duration_ms} is the engine's endpointing
// (0: the server's default); null leaves utterances to input_audio_buffer.commit.
//
// Threads: OnText/OnBinary/OnClose/OnDrain come from the connection's I/O strand, in order, and
// never block (engine.Feed only appends). One writer thread per session (started through `spawn`,
// which the server waits for when it stops) turns engine events into server events with the
// blocking MessageSink::Send, so a client that stops reading holds back only its own session.
#pragma once

#include <nlohmann/json.hpp>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "audio/audio_io.h"
#include "engine/engine.h"
#include "http/metrics.h"

namespace slm::http {

// Where a realtime session's messages go (the WebSocket connection; thread-safe).
class MessageSink {
 public:
  virtual ~MessageSink() = default;
  // Queues a text message and returns at once (any thread, the I/O strand included).
  virtual void Post(std::string text) = 0;
  // Sends and waits until it is written; false when the connection is closed, failed or the
  // client did not take it within http.write_timeout_seconds. Never from the I/O strand.
  virtual bool Send(std::string text) = 0;
  // Closes the connection (normal closure) after the queued messages.
  virtual void Close() = 0;
};

// Runs a function on a thread of its own that the server waits for when it stops.
using Spawn = std::function<void(std::function<void()>)>;

class RealtimeSession : public std::enable_shared_from_this<RealtimeSession> {
 public:
  RealtimeSession(engine::Engine& engine, std::shared_ptr<MessageSink> sink, Spawn spawn, Metrics& metrics, std::string id);
  ~RealtimeSession();

  void Start();  // sends session.created
  void OnText(const std::string& text);
  void OnBinary();
  void OnClose();
  void OnDrain();

 private:
  struct Settings {
    bool respond = false;
    std::string model;    // as the client named it ("" = default)
    std::string adapter;  // for the engine ("" = the default sqa adapter)
    int input_rate = audio::kSampleRate;
    int endpointing_ms = 0;  // 0 = server default, < 0 = off
    bool audio_out = false;
    int output_rate = 24000;
    std::string voice;
    int max_answer_tokens = 0;
  };
  struct Queued {
    std::shared_ptr<engine::Engine::Stream> stream;
    Settings settings;
  };

  void Handle(const nlohmann::json& event);
  void Update(const nlohmann::json& event);
  void Append(const nlohmann::json& event);
  void Commit(const nlohmann::json& event);
  bool OpenStream();  // lock held
  void EndStream();   // lock held: half-closes the open stream (its events still come)
  void WriterLoop();
  void Drain(const Queued& queued);
  nlohmann::json SessionJson() const;  // lock held
  std::string NextEventId();
  void PostError(const std::string& code, const std::string& message, const std::string& param,
                 const std::string& event_id);

  engine::Engine& engine_;
  std::shared_ptr<MessageSink> sink_;
  Spawn spawn_;
  Metrics& metrics_;
  const std::string id_;
  std::atomic<int64_t> next_event_{1};
  // The client is gone; shared with the streams' `cancelled` callbacks, which may outlive the session.
  std::shared_ptr<std::atomic<bool>> gone_ = std::make_shared<std::atomic<bool>>(false);

  std::mutex mutex_;
  std::condition_variable work_;
  Settings settings_;
  std::shared_ptr<engine::Engine::Stream> stream_;  // receiving audio
  std::unique_ptr<audio::StreamResampler> resampler_;
  bool open_failed_ = false;
  int64_t pending_samples_ = 0;  // appended since the last commit
  std::deque<Queued> queue_;     // streams for the writer, oldest first
  bool writer_started_ = false, writer_done_ = false;
  bool ended_ = false;  // no more streams (drain or close)
};

}  // namespace slm::http
