// slm.v1.Speech over the engine (engine/engine.h): the gRPC front-end. It parses requests itself,
// authenticates, decodes and resamples audio, translates the engine's events and statuses to the
// proto's messages and codes (serve/proto/slm/v1/speech.proto), and drains; everything about
// models, batching and limits is the engine's.
//
// Requests are parsed from raw bytes (every method is registered with a grpc::ByteBuffer request
// type), because gRPC's own parsing hides failures: a message that does not parse in the middle
// of a Converse stream would read as the client's half-close (the rest of its audio lost, the
// stream ended OK), and a unary request with a string field that is not UTF-8 would end with
// INTERNAL and no message. Here both are INVALID_ARGUMENT naming the message and the field.
//
// Threads: gRPC's synchronous server runs each RPC on its own thread. A Converse RPC uses its
// handler thread to read requests and one more thread to write responses as the engine produces
// them (gRPC allows one reader and one writer at a time on a stream).
//
// Lifecycle: Attach(engine) once the model is loaded (until then every RPC answers UNAVAILABLE
// "loading"); StartDrain() makes new RPCs answer UNAVAILABLE while running ones finish.
// Thread-safe.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <string>

#include "engine/engine.h"
#include "serve/protocol.h"
#include "serve/serve_config.h"
#include "slm/v1/speech.grpc.pb.h"

namespace slm::serve {

class SpeechService final : public slm::v1::Speech::Service {
 public:
  explicit SpeechService(const ServeConfig& config);

  void Attach(engine::Engine* engine);
  void StartDrain() { draining_ = true; }
  // RPCs of any kind in progress.
  int ActiveCalls() const { return active_calls_.load(); }
  // Converse, Generate and Synthesize RPCs in progress (admitted or not).
  int ActiveStreams() const { return active_streams_.load(); }

  grpc::Status ListModels(grpc::ServerContext* context, const slm::v1::ListModelsRequest* request,
                          slm::v1::ListModelsResponse* response) override;

 private:
  using RawStream = grpc::ServerReaderWriter<slm::v1::ConverseResponse, grpc::ByteBuffer>;
  grpc::Status Converse(grpc::ServerContext* context, RawStream* stream);
  grpc::Status Transcribe(grpc::ServerContext* context, grpc::ServerUnaryStreamer<grpc::ByteBuffer, slm::v1::TranscribeResponse>* call);
  grpc::Status Generate(grpc::ServerContext* context, grpc::ServerSplitStreamer<grpc::ByteBuffer, slm::v1::GenerateResponse>* call);
  grpc::Status Synthesize(grpc::ServerContext* context,
                          grpc::ServerSplitStreamer<grpc::ByteBuffer, slm::v1::SynthesizeResponse>* call);
  // UNAUTHENTICATED / UNAVAILABLE checks every RPC starts with; OK when it may go on.
  grpc::Status Admit(grpc::ServerContext* context) const;
  std::string RequestId(const std::string& given) const;

  const ServeConfig config_;
  std::atomic<engine::Engine*> engine_{nullptr};
  std::atomic<bool> draining_{false};
  std::atomic<int> active_calls_{0};
  std::atomic<int> active_streams_{0};
  mutable std::atomic<uint64_t> next_id_{1};
};

// A gRPC message's bytes (INVALID_ARGUMENT when they cannot be read).
std::string Bytes(const grpc::ByteBuffer& buffer);
// ParseRequest (serve/protocol.h) of a gRPC message.
void ParseRequest(const grpc::ByteBuffer& bytes, google::protobuf::Message* message, const std::string& where);

}  // namespace slm::serve
