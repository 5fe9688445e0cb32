// The HTTP front-end's keys of a serve config: the `http:` section (docs/CONFIG.md, "serve").
// The bearer token, TLS files and drain time are the server's (serve/serve_config.h) and shared
// with gRPC; they come to http::Server as Security.
//
//   http:
//     listen: 127.0.0.1:8080       # host:port; port 0 picks a free one; empty = no HTTP front-end
//     max_body_bytes: 26214400     # a request body or one WebSocket message (413 beyond)
//     max_connections: 256         # open TCP connections; more are answered 503 and closed
//     idle_timeout_seconds: 60     # a keep-alive connection waiting for its next request
//     request_timeout_seconds: 30  # headers + body of one request, from its first byte (408)
//     write_timeout_seconds: 30    # a response (or event) the client does not take
//     threads: 2                   # I/O threads (engine work runs on threads of its own)
//
// Units: as the names say. Thread-safety: plain values.
#pragma once

#include <cstdint>
#include <string>

#include "core/config.h"

namespace slm::http {

struct HttpConfig {
  std::string listen;
  int64_t max_body_bytes = int64_t{25} << 20;
  int max_connections = 256;
  double idle_timeout_seconds = 60;
  double request_timeout_seconds = 30;
  double write_timeout_seconds = 30;
  int threads = 2;

  bool Enabled() const { return !listen.empty(); }
  // Strict load of the `http` section (an absent section keeps every default: HTTP off).
  void Load(config::Node node);
};

// What the HTTP front-end shares with the gRPC one.
struct Security {
  std::string auth_token;         // empty = no authentication
  std::string tls_cert, tls_key;  // PEM files; both or neither
};

// The bytes of a TLS file, read the same way by both front-ends (this one and serve/'s gRPC):
// slm::Error "<key>: cannot read '<path>'" naming the config key (tls.cert, tls.key) it came from.
std::string ReadTlsFile(const std::string& path, const std::string& key);

}  // namespace slm::http
