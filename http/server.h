// The HTTP/1.1 + WebSocket server of the OpenAI-compatible front-end, on Boost.Beast: accept loop,
// connections (keep-alive, chunked streaming, WebSocket upgrade of /v1/realtime), optional TLS
// (the same certificate and key as gRPC), limits and timeouts, graceful drain. What the requests
// mean is http/router.h's.
//
// Limits: a body (or WebSocket message) over http.max_body_bytes is answered 413 (at once when
// Content-Length says so); headers over 16 KiB 431; more than http.max_connections open
// connections: the next is answered 503 and closed. Timeouts: a request whose headers and body do
// not arrive within http.request_timeout_seconds of its first byte is answered 408 and closed (a
// client sending one byte a second holds a connection that long, never a thread); a keep-alive
// connection idle for http.idle_timeout_seconds is closed; a response or event the client does not
// take within http.write_timeout_seconds closes the connection and cancels its engine request.
//
// Lifecycle: the constructor binds and starts the I/O threads (every /v1 request is 503 "loading"
// until Attach). StartDrain(): /health turns 503, new requests 503, idle keep-alive connections
// close, realtime sessions finish the audio they have and close. Stop() closes every connection
// and waits for every handler thread, so the engine may be destroyed right after it returns.
//
// Thread-safety: Attach/StartDrain/Active/Port/Address from any thread; Stop from the owner.
#pragma once

#include <memory>
#include <string>

#include "engine/engine.h"
#include "http/config.h"
#include "http/metrics.h"

namespace slm::http {

struct ServerImpl;

class Server {
 public:
  // slm::Error naming http.listen or tls.* when the address cannot be bound or TLS files are bad.
  Server(const HttpConfig& config, const Security& security);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  void Attach(engine::Engine* engine);
  int Port() const;
  // "host:port" a client can dial (127.0.0.1 for a wildcard listen address).
  std::string Address() const;
  bool Tls() const;
  void StartDrain();
  // Requests in progress plus realtime sessions open.
  int Active() const;
  void Stop();
  Metrics& GetMetrics();

 private:
  std::unique_ptr<ServerImpl> impl_;
};

}  // namespace slm::http
