// slm.v1.Speech over the engine (serve/engine.h): request validation, audio decoding and
// resampling, authentication, the bound on concurrent streams, draining. Errors follow the codes
// documented in serve/proto/slm/v1/speech.proto; every message names the field or message at fault.
//
// Threads: gRPC's synchronous server runs each RPC on its own thread. A Converse RPC uses its
// handler thread to read requests and one more thread to write responses as the engine produces
// them (gRPC allows one reader and one writer at a time on a stream).
//
// Lifecycle: Attach(engine, model) once the model is loaded (until then every RPC answers
// UNAVAILABLE "loading"); StartDrain() makes new RPCs answer UNAVAILABLE while running ones
// finish. Thread-safe.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <string>

#include "serve/engine.h"
#include "serve/model.h"
#include "serve/serve_config.h"
#include "slm/v1/speech.grpc.pb.h"

namespace slm::serve {

class SpeechService final : public slm::v1::Speech::Service {
 public:
  explicit SpeechService(const ServeConfig& config);

  void Attach(Engine* engine, ServedModel* model);
  void StartDrain() { draining_ = true; }
  // Converse and Generate RPCs in progress (what max_streams bounds).
  int ActiveStreams() const { return active_streams_.load(); }
  // RPCs of any kind in progress.
  int ActiveCalls() const { return active_calls_.load(); }

  grpc::Status Converse(grpc::ServerContext* context,
                        grpc::ServerReaderWriter<slm::v1::ConverseResponse, slm::v1::ConverseRequest>* stream) override;
  grpc::Status Transcribe(grpc::ServerContext* context, const slm::v1::TranscribeRequest* request,
                          slm::v1::TranscribeResponse* response) override;
  grpc::Status Generate(grpc::ServerContext* context, const slm::v1::GenerateRequest* request,
                        grpc::ServerWriter<slm::v1::GenerateResponse>* writer) override;
  grpc::Status ListModels(grpc::ServerContext* context, const slm::v1::ListModelsRequest* request,
                          slm::v1::ListModelsResponse* response) override;
  grpc::Status Synthesize(grpc::ServerContext* context, const slm::v1::SynthesizeRequest* request,
                          grpc::ServerWriter<slm::v1::SynthesizeResponse>* writer) override;

 private:
  // UNAUTHENTICATED / UNAVAILABLE checks every RPC starts with; OK when it may go on.
  grpc::Status Admit(grpc::ServerContext* context) const;
  // Admit, then RESOURCE_EXHAUSTED unless the call got one of the max_streams slots.
  grpc::Status AdmitStream(grpc::ServerContext* context, bool got_slot) const;
  std::string RequestId(const std::string& given) const;

  const ServeConfig config_;
  std::atomic<Engine*> engine_{nullptr};
  ServedModel* model_ = nullptr;
  std::atomic<bool> draining_{false};
  std::atomic<int> active_streams_{0};
  std::atomic<int> active_calls_{0};
  mutable std::atomic<uint64_t> next_id_{1};
};

// Raw audio bytes -> float samples in [-1, 1]. INVALID_ARGUMENT-worthy problems (a byte count
// that is not whole samples, NaN/Inf floats) throw StatusError naming `where`.
std::vector<float> DecodePcm(const std::string& bytes, slm::v1::AudioEncoding encoding, const std::string& where);

}  // namespace slm::serve
