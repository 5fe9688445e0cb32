// Routes HTTP requests to the endpoints (http/endpoints.h) and WebSocket upgrades of /v1/realtime
// to realtime sessions (http/realtime.h), with what every request shares: the bearer token (the
// same as gRPC's: `Authorization: Bearer <token>`; a browser's WebSocket may carry it as the
// subprotocol `openai-insecure-api-key.<token>`, as OpenAI's Realtime API allows), loading and
// draining (503), OpenAI's error JSON for anything thrown, CORS, request ids and metrics.
//
//   GET  /, /app.js, /worklet.js        the web page (no token: it asks for one when needed)
//   GET  /health                        200 {"status":"ok"}; 503 while loading or draining
//   GET  /metrics                       Prometheus text (http/metrics.h)
//   GET  /v1/models, /v1/models/{id}
//   POST /v1/audio/transcriptions, /v1/audio/speech, /v1/chat/completions
//   GET  /v1/realtime                   WebSocket upgrade only
//
// Threads: Handle is called on an I/O thread. Requests that need no engine (the page, health,
// metrics, models, errors) are answered right there; the others run on a thread of their own
// (`spawn`), because they block on the engine and stream with back-pressure.
// Thread-safety: all methods are safe from any thread.
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <string>

#include "engine/engine.h"
#include "http/config.h"
#include "http/exchange.h"
#include "http/metrics.h"
#include "http/realtime.h"

namespace slm::http {

class Router {
 public:
  Router(const HttpConfig& config, const Security& security, Metrics& metrics, Spawn spawn);

  void Attach(engine::Engine* engine) { engine_.store(engine); }
  void StartDrain() { draining_ = true; }
  bool Draining() const { return draining_.load(); }

  void Handle(Request request, std::shared_ptr<Exchange> exchange);
  // For a WebSocket upgrade: nullopt when it may become a realtime session (`protocol`: the
  // subprotocol to answer with, or ""), else the error response to send instead.
  std::optional<Response> AdmitRealtime(const Request& upgrade, std::string* protocol);
  std::shared_ptr<RealtimeSession> NewRealtime(std::shared_ptr<MessageSink> sink);

  // Requests being handled plus realtime sessions open (draining waits for 0).
  int Active() const { return active_->load(); }

 private:
  // Throws ApiError 401 unless the request carries the token (or none is configured).
  void Authorize(const Request& request) const;
  std::string RequestId(const Request& request);
  void Dispatch(const Request& request, Exchange& exchange, std::chrono::steady_clock::time_point arrived);

  const HttpConfig config_;
  const Security security_;
  Metrics& metrics_;
  Spawn spawn_;
  std::atomic<engine::Engine*> engine_{nullptr};
  std::atomic<bool> draining_{false};
  std::shared_ptr<std::atomic<int>> active_ = std::make_shared<std::atomic<int>>(0);
  std::atomic<uint64_t> next_id_{1};
};

}  // namespace slm::http
