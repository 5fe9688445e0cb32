// A small blocking HTTP/1.1 and WebSocket client over plain TCP for the tests and `slm bench http`
// (the real clients of the HTTP front-end are OpenAI's libraries, curl and browsers). Every call
// has a deadline; a failure (connection, timeout, malformed response) throws slm::Error naming it.
//
// Thread-safety: one object per thread.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace slm::http {

struct ClientResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
};

class HttpClient {
 public:
  // `address`: "host:port". Connects lazily and keeps the connection alive between requests.
  explicit HttpClient(std::string address, double timeout_seconds = 60);
  ~HttpClient();

  ClientResponse Request(const std::string& method, const std::string& target, const std::string& body = "",
                         const std::vector<std::pair<std::string, std::string>>& headers = {});
  // The body as it arrives: `on_data` gets each piece (false from it stops reading and drops the
  // connection); the returned body is empty.
  ClientResponse Stream(const std::string& method, const std::string& target, const std::string& body,
                        const std::vector<std::pair<std::string, std::string>>& headers,
                        const std::function<bool(std::string_view)>& on_data);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A multipart/form-data body; returns the Content-Type header value to send with it.
struct FormField {
  std::string name, value, filename, content_type;  // filename non-empty: a file part
};
std::string MultipartBody(const std::vector<FormField>& fields, std::string* content_type);

// Splits server-sent events out of streamed text: feed pieces, get each complete `data:` payload.
class SseReader {
 public:
  std::vector<std::string> Feed(std::string_view piece);

 private:
  std::string pending_;
};

// One utterance over the realtime WebSocket, paced like a microphone, for `slm bench http`: the
// session is configured with `session` (session.update), the samples (16-bit, `sample_rate`) go
// out in `chunk_ms` pieces (at real time when `realtime`), then input_audio_buffer.commit; it ends
// at the transcript's completion (or response.done in a "realtime" session). Latencies are
// measured as serve/client.h measures gRPC's: an interim's arrival minus the send time of the
// chunk holding the end of the audio it covers (its audio_end_ms); the final's and the first
// answer token's arrival minus the send time of the last chunk.
struct RealtimeRequest {
  std::vector<float> samples;
  int sample_rate = 16000;
  double chunk_ms = 20;
  bool realtime = true;
  std::string session_json = "{}";  // the `session` object of session.update
  std::string protocols = "realtime";
  double timeout_seconds = 60;
};
struct RealtimeResult {
  bool ok = false;
  std::string error;  // the first `error` event's message or a transport failure
  std::vector<double> interim_latency_ms;
  double final_latency_ms = -1, first_token_latency_ms = -1;
  std::string transcript, answer;
  double audio_seconds = 0, wall_seconds = 0;
};
RealtimeResult StreamRealtime(const std::string& address, const RealtimeRequest& request);

class WebSocketClient {
 public:
  // Connects to ws://address/target (`protocols`: Sec-WebSocket-Protocol values, comma-separated).
  WebSocketClient(const std::string& address, const std::string& target, const std::string& protocols = "",
                  const std::vector<std::pair<std::string, std::string>>& headers = {}, double timeout_seconds = 60);
  ~WebSocketClient();
  void Send(const std::string& text);
  // The next text message; false when the server closed the connection.
  bool Read(std::string* text, double timeout_seconds = 60);
  void Close();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace slm::http
