// The server's configuration (`slm serve --config samples/configs/serve.yaml`), validated strictly
// like every slm config (a misspelt key is an error naming file and line). Every key is documented
// in docs/CONFIG.md ("serve"). The engine's keys (model, limits, streaming, batching, kv_cache,
// adapters, threads) are engine::EngineConfig's (engine/config.h); this adds the transport's:
//
//   listen: 127.0.0.1:50051          # host:port; port 0 picks a free one (printed at start)
//   limits: {max_message_bytes, max_chunk_bytes, ...engine limits}
//   auth: {token: "..."}             # or token_env: NAME (the token from an environment variable)
//   tls: {cert: FILE, key: FILE}
//   drain_seconds: 10
//   http: {listen, max_body_bytes, ...}  # the OpenAI-compatible HTTP front-end (http/config.h)
//
// Thread-safety: a plain value.
#pragma once

#include <cstdint>
#include <string>

#include "core/config.h"
#include "engine/config.h"
#include "http/config.h"

namespace slm::serve {

using engine::AdapterEntry;

struct ServeConfig : engine::EngineConfig {
  std::string listen = "127.0.0.1:50051";
  int64_t max_message_bytes = 4 << 20;  // any request message
  int64_t max_chunk_bytes = 1 << 20;    // one audio message of a stream
  std::string auth_token;               // empty = no authentication
  std::string tls_cert, tls_key;        // both or neither
  double drain_seconds = 10.0;          // SIGTERM: time given to open streams
  http::HttpConfig http;                // listen empty = no HTTP front-end

  // Strict load of the whole document root (see the header comment).
  void Load(config::Node root);
};

}  // namespace slm::serve
