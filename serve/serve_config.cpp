#include "serve/serve_config.h"

#include <cstdlib>

namespace slm::serve {

using config::InRange;

void ServeConfig::Load(config::Node root) {
  root.Read("listen", listen).Read("drain_seconds", drain_seconds, InRange(0.0, 3600.0));
  if (listen.find(':') == std::string::npos) root.Fail("listen", "must be host:port, e.g. 127.0.0.1:50051");
  root.Child("limits")
      .Read("max_message_bytes", max_message_bytes, InRange<int64_t>(1024, int64_t{1} << 30))
      .Read("max_chunk_bytes", max_chunk_bytes, InRange<int64_t>(64, int64_t{1} << 30));
  engine::EngineConfig::Load(root);

  config::Node auth = root.Child("auth");
  std::string token_env;
  auth.Read("token", auth_token).Read("token_env", token_env);
  if (!token_env.empty()) {
    if (!auth_token.empty()) auth.Fail("token_env", "give token or token_env, not both");
    const char* value = std::getenv(token_env.c_str());
    if (value == nullptr || *value == '\0') auth.Fail("token_env", "environment variable " + token_env + " is not set");
    auth_token = value;
  }
  config::Node tls = root.Child("tls");
  tls.Read("cert", tls_cert).Read("key", tls_key);
  if (tls_cert.empty() != tls_key.empty()) tls.Fail(tls_cert.empty() ? "cert" : "key", "give both cert and key");
  http.Load(root.Child("http"));
}

}  // namespace slm::serve
