// One Converse call's protocol over the engine, without the transport: the first message must carry
// a StreamConfig (validated, then a stream is opened), every later one audio bytes or an
// EndOfUtterance; audio is decoded and resampled to the model's rate as it arrives; responses come
// from the engine's events in the API's order. The gRPC service (serve/service.h) drives it with a
// reader and a writer thread; the Converse fuzzer (fuzz/converse_fuzzer.cpp) drives it with
// arbitrary message sequences.
//
// Errors: Receive and EndOfInput throw engine::StatusError naming the message ("message 3: ...")
// for anything the protocol refuses: a message that does not parse, audio before the config, a
// second config, an empty message, bad encoding or sample rate, chunks over max_chunk_bytes or
// not whole samples, NaN/Inf samples, a stream with no audio; and what the engine refuses when the
// stream opens (NOT_FOUND, FAILED_PRECONDITION, RESOURCE_EXHAUSTED). The caller then Abort()s, so
// nothing after a bad message is processed and the stream never ends as if the client had
// half-closed.
//
// Thread-safety: Receive/EndOfInput/Abort from one thread (the reader), Next from another (the
// writer); Result after Next returned false.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "audio/audio_io.h"
#include "engine/engine.h"
#include "slm/v1/speech.pb.h"

namespace slm::serve {

class ConverseSession {
 public:
  // `request_id` turns a config's request_id (maybe empty) into the one responses carry.
  ConverseSession(engine::Engine& engine, int64_t max_chunk_bytes,
                  std::function<std::string(const std::string&)> request_id, engine::Cancelled cancelled);
  ~ConverseSession();  // forgets the engine stream
  ConverseSession(const ConverseSession&) = delete;
  ConverseSession& operator=(const ConverseSession&) = delete;

  // The next message of the call, as received (raw bytes).
  void Receive(const std::string& bytes);
  // The client half-closed: the open utterance ends. INVALID_ARGUMENT when the call carried no
  // config or no audio.
  void EndOfInput();
  // Ends the stream with `why`; no more events are produced.
  void Abort(const engine::Status& why);
  bool Opened() const { return stream_ != nullptr; }
  // The next response (blocks); false when the stream is complete or failed (false at once when it
  // never opened).
  bool Next(slm::v1::ConverseResponse* out);
  // OK, or why the stream failed.
  engine::Status Result();

 private:
  void Open(const slm::v1::StreamConfig& config);

  engine::Engine& engine_;
  const int64_t max_chunk_bytes_;
  std::function<std::string(const std::string&)> request_id_fn_;
  engine::Cancelled cancelled_;
  std::shared_ptr<engine::Engine::Stream> stream_;
  std::string request_id_;
  slm::v1::AudioEncoding encoding_ = slm::v1::LINEAR16;
  slm::v1::AudioEncoding answer_encoding_ = slm::v1::LINEAR16;
  std::optional<audio::StreamResampler> resampler_;
  int64_t index_ = 0;  // messages received
};

}  // namespace slm::serve
