// The slm gRPC server: the slm.v1.Speech service (serve/service.h) plus grpc.health.v1 health
// (overall status "" and "slm.v1.Speech"), server reflection, optional TLS and the message-size
// limit, over one resident model and its engine (engine/engine.h). With `http.listen` set, the
// OpenAI-compatible HTTP/WebSocket front-end (http/server.h) serves the same engine on its own
// port, with the same token, TLS files and limits.
//
// Lifecycle: the constructor starts listening right away with health NOT_SERVING (so orchestrators
// can watch a slow load), Load() loads the model and starts the engine, then health is SERVING.
// Drain() turns health NOT_SERVING, answers new RPCs UNAVAILABLE (new HTTP requests 503), waits
// up to drain_seconds for running RPCs, HTTP requests and realtime sessions to finish, then shuts
// both down (cancelling what is left); `slm serve` calls it on SIGTERM/SIGINT. The destructor drains with no grace period if Drain() was not called.
//
// Thread-safety: Load and Drain from the owning thread; Port and the service's counters anywhere.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "engine/engine.h"
#include "engine/served_model.h"
#include "http/server.h"
#include "serve/serve_config.h"
#include "serve/service.h"

namespace slm::serve {

class Server {
 public:
  // slm::Error when the address cannot be bound or the TLS files cannot be read.
  explicit Server(const ServeConfig& config);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  void Load();
  // The bound port (the chosen one when listen asked for port 0).
  int Port() const { return port_; }
  // "host:port" clients can dial.
  std::string Address() const;
  void Drain(double grace_seconds);
  // The HTTP front-end's "host:port", or "" when http.listen is empty.
  std::string HttpAddress() const { return http_ ? http_->Address() : std::string(); }
  http::Server* Http() { return http_.get(); }
  SpeechService& Service() { return *service_; }
  engine::Engine* GetEngine() { return engine_.get(); }

 private:
  void SetServing(bool serving);

  ServeConfig config_;
  std::unique_ptr<SpeechService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<http::Server> http_;
  std::unique_ptr<engine::ServedModel> model_;
  std::unique_ptr<engine::Engine> engine_;
  int port_ = 0;
  bool drained_ = false;
};

}  // namespace slm::serve
