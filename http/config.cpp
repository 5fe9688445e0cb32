#include "http/config.h"

#include <fstream>
#include <sstream>

#include "core/error.h"

namespace slm::http {

using config::InRange;

void HttpConfig::Load(config::Node node) {
  node.Read("listen", listen)
      .Read("max_body_bytes", max_body_bytes, InRange<int64_t>(1024, int64_t{1} << 32))
      .Read("max_connections", max_connections, InRange(1, 100000))
      .Read("idle_timeout_seconds", idle_timeout_seconds, InRange(0.1, 86400.0))
      .Read("request_timeout_seconds", request_timeout_seconds, InRange(0.1, 3600.0))
      .Read("write_timeout_seconds", write_timeout_seconds, InRange(0.1, 3600.0))
      .Read("threads", threads, InRange(1, 256));
  if (!listen.empty() && listen.find(':') == std::string::npos)
    node.Fail("listen", "must be host:port, e.g. 127.0.0.1:8080 (empty = no HTTP front-end)");
}

std::string ReadTlsFile(const std::string& path, const std::string& key) {
  std::ifstream in(path, std::ios::binary);
  Check(in.good(), key, ": cannot read '", path, "'");
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

}  // namespace slm::http
