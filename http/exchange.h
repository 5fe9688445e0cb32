// One HTTP request and the channel its answer goes back on, free of the transport (http/server.h
// implements Exchange over Boost.Beast), so the endpoint translations (http/openai_*.h) never see
// sockets and the transport never sees OpenAI's shapes.
//
// An Exchange is answered exactly once: Reply(), or BeginStream() + Write()... + EndStream()
// (chunked transfer encoding: server-sent events, streamed audio). Reply and EndStream return at
// once; BeginStream and Write block until the bytes are handed to the socket (back-pressure: a
// client that reads slowly slows its producer) and return false when the client is gone or did
// not take the data within http.write_timeout_seconds, after which the connection is closed.
// The blocking calls must not be made from an I/O thread (http/router.h runs every handler that
// streams or waits for the engine on a thread of its own).
//
// Thread-safety: an Exchange may be used from one handler thread at a time; ClientGone() from any
// thread (the engine's `cancelled` callbacks call it).
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace slm::http {

struct Request {
  std::string method;  // "GET", "POST", ...
  std::string path;    // the target without its query, e.g. "/v1/models"
  std::string query;   // after '?', undecoded
  std::map<std::string, std::string> headers;  // lower-case names; a repeated header keeps the last
  std::string body;
  std::string remote;  // peer address, for logs

  // The header's value, or "" when absent (`name` in lower case).
  const std::string& Header(const std::string& name) const;
  // The value of a query parameter (percent-decoded), or "".
  std::string QueryParam(const std::string& name) const;
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers
};

class Exchange {
 public:
  virtual ~Exchange() = default;
  virtual void Reply(Response response) = 0;
  virtual bool BeginStream(int status, const std::string& content_type,
                           const std::vector<std::pair<std::string, std::string>>& headers = {}) = 0;
  virtual bool Write(std::string_view data) = 0;
  virtual void EndStream() = 0;
  // Whether the client closed its connection or a write failed: work for it can stop.
  virtual bool ClientGone() const = 0;
  // Whether Reply or BeginStream was called.
  virtual bool Answered() const = 0;
};

// Percent-decoding of a query component ('+' is a space); malformed escapes are kept as they are.
std::string PercentDecode(std::string_view text);

}  // namespace slm::http
