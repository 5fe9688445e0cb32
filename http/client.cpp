#include "http/client.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include <cmath>
#include <deque>
#include <random>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/strings.h"
#include "http/base64.h"

namespace slm::http {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
namespace websocket = beast::websocket;
using tcp = net::ip::tcp;

namespace {

std::chrono::steady_clock::duration Duration(double seconds) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(seconds));
}

std::pair<std::string, std::string> HostPort(const std::string& address) {
  const size_t colon = address.rfind(':');
  Check(colon != std::string::npos, "http client: address '", address, "' is not host:port");
  return {address.substr(0, colon), address.substr(colon + 1)};
}

// Runs the private io_context until the started operation completed; throws on its error.
void Run(net::io_context& ioc, const beast::error_code& ec, const std::string& what) {
  ioc.restart();
  ioc.run();
  if (ec) throw Error(Str("http client: ", what, ": ", ec.message()));
}

}  // namespace

struct HttpClient::Impl {
  std::string address;
  double timeout;
  net::io_context ioc;
  std::optional<beast::tcp_stream> stream;
  beast::flat_buffer buffer;

  void Connect() {
    if (stream) return;
    const auto [host, port] = HostPort(address);
    tcp::resolver resolver(ioc);
    beast::error_code ec;
    const auto endpoints = resolver.resolve(host, port, ec);
    if (ec) throw Error(Str("http client: cannot resolve ", address, ": ", ec.message()));
    stream.emplace(ioc);
    stream->expires_after(Duration(timeout));
    stream->async_connect(endpoints, [&](beast::error_code e, const tcp::endpoint&) { ec = e; });
    try {
      Run(ioc, ec, "connect to " + address);
    } catch (...) {
      stream.reset();
      throw;
    }
    stream->socket().set_option(tcp::no_delay(true));
    buffer.clear();
  }

  void Send(const std::string& method, const std::string& target, const std::string& body,
            const std::vector<std::pair<std::string, std::string>>& headers) {
    Connect();
    bhttp::request<bhttp::string_body> request(bhttp::string_to_verb(method), target, 11);
    request.set(bhttp::field::host, address);
    for (const auto& [name, value] : headers) request.set(name, value);
    request.body() = body;
    request.prepare_payload();
    beast::error_code ec;
    stream->expires_after(Duration(timeout));
    bhttp::async_write(*stream, request, [&](beast::error_code e, size_t) { ec = e; });
    Run(ioc, ec, "send " + method + " " + target);
  }

  ClientResponse Finish(bhttp::response_parser<bhttp::string_body>& parser) {
    ClientResponse out;
    auto& message = parser.get();
    out.status = static_cast<int>(message.result_int());
    for (const auto& field : message) out.headers[ToLower(std::string(field.name_string()))] = std::string(field.value());
    out.body = std::move(message.body());
    if (!message.keep_alive()) stream.reset();
    return out;
  }
};

HttpClient::HttpClient(std::string address, double timeout_seconds) : impl_(std::make_unique<Impl>()) {
  impl_->address = std::move(address);
  impl_->timeout = timeout_seconds;
}

HttpClient::~HttpClient() = default;

ClientResponse HttpClient::Request(const std::string& method, const std::string& target, const std::string& body,
                                   const std::vector<std::pair<std::string, std::string>>& headers) {
  try {
    impl_->Send(method, target, body, headers);
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(boost::none);
    beast::error_code ec;
    impl_->stream->expires_after(Duration(impl_->timeout));
    bhttp::async_read(*impl_->stream, impl_->buffer, parser, [&](beast::error_code e, size_t) { ec = e; });
    Run(impl_->ioc, ec, "read the response to " + method + " " + target);
    return impl_->Finish(parser);
  } catch (...) {
    impl_->stream.reset();
    throw;
  }
}

ClientResponse HttpClient::Stream(const std::string& method, const std::string& target, const std::string& body,
                                  const std::vector<std::pair<std::string, std::string>>& headers,
                                  const std::function<bool(std::string_view)>& on_data) {
  try {
    impl_->Send(method, target, body, headers);
    bhttp::response_parser<bhttp::buffer_body> parser;
    parser.body_limit(boost::none);
    beast::error_code ec;
    impl_->stream->expires_after(Duration(impl_->timeout));
    bhttp::async_read_header(*impl_->stream, impl_->buffer, parser, [&](beast::error_code e, size_t) { ec = e; });
    Run(impl_->ioc, ec, "read the response header of " + method + " " + target);
    ClientResponse out;
    out.status = static_cast<int>(parser.get().result_int());
    for (const auto& field : parser.get()) out.headers[ToLower(std::string(field.name_string()))] = std::string(field.value());
    char piece[16384];
    while (!parser.is_done()) {
      parser.get().body().data = piece;
      parser.get().body().size = sizeof(piece);
      impl_->stream->expires_after(Duration(impl_->timeout));
      bhttp::async_read_some(*impl_->stream, impl_->buffer, parser, [&](beast::error_code e, size_t) { ec = e; });
      impl_->ioc.restart();
      impl_->ioc.run();
      if (ec == bhttp::error::need_buffer) ec = {};
      if (ec) throw Error(Str("http client: read the body of ", method, " ", target, ": ", ec.message()));
      const size_t got = sizeof(piece) - parser.get().body().size;
      if (got > 0 && !on_data(std::string_view(piece, got))) {
        impl_->stream.reset();
        return out;
      }
    }
    if (!parser.get().keep_alive()) impl_->stream.reset();
    return out;
  } catch (...) {
    impl_->stream.reset();
    throw;
  }
}

std::string MultipartBody(const std::vector<FormField>& fields, std::string* content_type) {
  static std::mt19937_64 random(std::random_device{}());
  const std::string boundary = Str("slm-boundary-", std::hex, random());
  *content_type = "multipart/form-data; boundary=" + boundary;
  std::string body;
  for (const FormField& f : fields) {
    body += "--" + boundary + "\r\nContent-Disposition: form-data; name=\"" + f.name + "\"";
    if (!f.filename.empty()) body += "; filename=\"" + f.filename + "\"";
    body += "\r\n";
    if (!f.content_type.empty()) body += "Content-Type: " + f.content_type + "\r\n";
    body += "\r\n" + f.value + "\r\n";
  }
  body += "--" + boundary + "--\r\n";
  return body;
}

std::vector<std::string> SseReader::Feed(std::string_view piece) {
  pending_.append(piece);
  std::vector<std::string> events;
  size_t end;
  while ((end = pending_.find("\n\n")) != std::string::npos) {
    const std::string block = pending_.substr(0, end);
    pending_.erase(0, end + 2);
    std::string data;
    for (const std::string& line : Split(block, "\n"))
      if (StartsWith(line, "data:")) data += (data.empty() ? "" : "\n") + Trim(line.substr(5));
    if (!data.empty()) events.push_back(data);
  }
  return events;
}

struct WebSocketClient::Impl {
  net::io_context ioc;
  websocket::stream<beast::tcp_stream> ws{ioc};
  beast::flat_buffer buffer;
  bool open = false;
};

WebSocketClient::WebSocketClient(const std::string& address, const std::string& target, const std::string& protocols,
                                 const std::vector<std::pair<std::string, std::string>>& headers, double timeout_seconds)
    : impl_(std::make_unique<Impl>()) {
  const auto [host, port] = HostPort(address);
  tcp::resolver resolver(impl_->ioc);
  beast::error_code ec;
  const auto endpoints = resolver.resolve(host, port, ec);
  if (ec) throw Error(Str("websocket client: cannot resolve ", address, ": ", ec.message()));
  auto& tcp_layer = beast::get_lowest_layer(impl_->ws);
  tcp_layer.expires_after(Duration(timeout_seconds));
  tcp_layer.async_connect(endpoints, [&](beast::error_code e, const tcp::endpoint&) { ec = e; });
  Run(impl_->ioc, ec, "websocket connect to " + address);
  tcp_layer.socket().set_option(tcp::no_delay(true));
  impl_->ws.set_option(websocket::stream_base::decorator([protocols, headers](websocket::request_type& request) {
    if (!protocols.empty()) request.set(bhttp::field::sec_websocket_protocol, protocols);
    for (const auto& [name, value] : headers) request.set(name, value);
  }));
  websocket::response_type response;
  impl_->ws.async_handshake(response, address, target, [&](beast::error_code e) { ec = e; });
  impl_->ioc.restart();
  impl_->ioc.run();
  if (ec)
    throw Error(Str("websocket client: handshake with ", address, target, " failed: ", ec.message(), " (HTTP ",
                    response.result_int(), ": ", response.body(), ")"));
  tcp_layer.expires_never();
  impl_->open = true;
}

WebSocketClient::~WebSocketClient() {
  try {
    Close();
  } catch (...) {
  }
}

void WebSocketClient::Send(const std::string& text) {
  beast::error_code ec;
  impl_->ws.text(true);
  impl_->ws.async_write(net::buffer(text), [&](beast::error_code e, size_t) { ec = e; });
  Run(impl_->ioc, ec, "websocket send");
}

bool WebSocketClient::Read(std::string* text, double timeout_seconds) {
  beast::error_code ec;
  bool timed_out = false;
  net::steady_timer timer(impl_->ioc, Duration(timeout_seconds));
  timer.async_wait([&](beast::error_code e) {
    if (e) return;
    timed_out = true;
    beast::get_lowest_layer(impl_->ws).cancel();
  });
  impl_->buffer.clear();
  impl_->ws.async_read(impl_->buffer, [&](beast::error_code e, size_t) {
    ec = e;
    timer.cancel();
  });
  impl_->ioc.restart();
  impl_->ioc.run();
  if (timed_out) throw Error(Str("websocket client: no message within ", timeout_seconds, " s"));
  if (ec == websocket::error::closed || ec == net::error::eof || ec == net::error::connection_reset) {
    impl_->open = false;
    return false;
  }
  if (ec) throw Error("websocket client: read: " + ec.message());
  *text = beast::buffers_to_string(impl_->buffer.data());
  return true;
}

void WebSocketClient::Close() {
  if (!impl_->open) return;
  impl_->open = false;
  beast::error_code ec;
  beast::get_lowest_layer(impl_->ws).expires_after(std::chrono::seconds(5));
  impl_->ws.async_close(websocket::close_code::normal, [&](beast::error_code e) { ec = e; });
  impl_->ioc.restart();
  impl_->ioc.run();
}

}  // namespace slm::http

namespace slm::http {

namespace {

// The realtime utterance as one io_context's work: a timer-paced write chain and a read loop.
class RealtimeRun {
 public:
  RealtimeRun(const std::string& address, const RealtimeRequest& request) : address_(address), request_(request) {}

  RealtimeResult Run() {
    try {
      const auto [host, port] = HostPort(address_);
      tcp::resolver resolver(ioc_);
      const auto endpoints = resolver.resolve(host, port);
      auto& tcp_layer = beast::get_lowest_layer(ws_);
      tcp_layer.expires_after(Duration(request_.timeout_seconds));
      tcp_layer.connect(endpoints);
      tcp_layer.socket().set_option(tcp::no_delay(true));
      const std::string protocols = request_.protocols;
      ws_.set_option(websocket::stream_base::decorator([protocols](websocket::request_type& r) {
        if (!protocols.empty()) r.set(bhttp::field::sec_websocket_protocol, protocols);
      }));
      ws_.handshake(address_, "/v1/realtime");
      tcp_layer.expires_never();
      // session.created, then our update and its acknowledgement.
      ReadUntil("session.created");
      ws_.write(net::buffer(Str("{\"type\":\"session.update\",\"session\":", request_.session_json, "}")));
      ReadUntil("session.updated");
    } catch (const std::exception& e) {
      result_.error = e.what();
      return result_;
    }
    const size_t chunk = std::max<size_t>(1, static_cast<size_t>(request_.chunk_ms * request_.sample_rate / 1000));
    for (size_t at = 0; at < request_.samples.size(); at += chunk) {
      const std::vector<float> piece(request_.samples.begin() + at,
                                     request_.samples.begin() + std::min(request_.samples.size(), at + chunk));
      std::string pcm(piece.size() * 2, '\0');
      for (size_t i = 0; i < piece.size(); ++i) {
        const auto v = static_cast<int16_t>(std::lrint(std::clamp(piece[i], -1.0f, 1.0f) * 32767.0f));
        pcm[2 * i] = static_cast<char>(v & 0xFF);
        pcm[2 * i + 1] = static_cast<char>((v >> 8) & 0xFF);
      }
      chunks_.push_back("{\"type\":\"input_audio_buffer.append\",\"audio\":\"" + Base64Encode(pcm) + "\"}");
    }
    result_.audio_seconds = double(request_.samples.size()) / request_.sample_rate;
    sent_.assign(chunks_.size(), Clock::time_point());
    respond_ = request_.session_json.find("\"realtime\"") != std::string::npos;
    start_ = Clock::now();
    deadline_.expires_after(Duration(request_.timeout_seconds + result_.audio_seconds));
    deadline_.async_wait([this](beast::error_code ec) {
      if (ec || done_) return;
      Finish("no completion within the timeout");
    });
    Read();
    ScheduleNext();
    ioc_.run();
    result_.wall_seconds = std::chrono::duration<double>(Clock::now() - start_).count();
    return result_;
  }

 private:
  using Clock = std::chrono::steady_clock;

  void ReadUntil(const std::string& type) {
    for (int i = 0; i < 16; ++i) {
      buffer_.clear();
      ws_.read(buffer_);
      const nlohmann::json e = nlohmann::json::parse(beast::buffers_to_string(buffer_.data()));
      if (e.value("type", "") == type) return;
      if (e.value("type", "") == "error") throw Error(e["error"].value("message", "error"));
    }
    throw Error("no " + type + " event");
  }

  void ScheduleNext() {
    if (next_ >= chunks_.size()) {
      Write("{\"type\":\"input_audio_buffer.commit\"}");
      return;
    }
    const auto due = start_ + Duration(request_.realtime ? next_ * request_.chunk_ms / 1000.0 : 0.0);
    pacer_.expires_at(due);
    pacer_.async_wait([this](beast::error_code ec) {
      if (ec || done_) return;
      sent_[next_] = Clock::now();
      last_sent_ = sent_[next_];
      Write(chunks_[next_]);
      ++next_;
      ScheduleNext();
    });
  }

  void Write(std::string text) {
    outbox_.push_back(std::move(text));
    if (!writing_) WriteFront();
  }
  void WriteFront() {
    writing_ = true;
    ws_.text(true);
    ws_.async_write(net::buffer(outbox_.front()), [this](beast::error_code ec, size_t) {
      outbox_.pop_front();
      writing_ = false;
      if (ec) return Finish("write: " + ec.message());
      if (!outbox_.empty()) WriteFront();
    });
  }

  void Read() {
    buffer_.clear();
    ws_.async_read(buffer_, [this](beast::error_code ec, size_t) {
      if (ec) return Finish(done_ ? "" : "read: " + ec.message());
      OnEvent(nlohmann::json::parse(beast::buffers_to_string(buffer_.data()), nullptr, false));
      if (!done_) Read();
    });
  }

  double SinceMs(Clock::time_point t) const { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

  void OnEvent(const nlohmann::json& e) {
    if (!e.is_object()) return;
    const std::string type = e.value("type", "");
    if (type == "conversation.item.input_audio_transcription.delta") {
      const double end_ms = e.value("audio_end_ms", 0.0);
      const size_t index = static_cast<size_t>(std::max(0.0, std::ceil(end_ms / request_.chunk_ms - 1e-9) - 1));
      if (index < sent_.size() && sent_[index] != Clock::time_point()) result_.interim_latency_ms.push_back(SinceMs(sent_[index]));
    } else if (type == "conversation.item.input_audio_transcription.completed") {
      result_.transcript = e.value("transcript", "");
      if (last_sent_ != Clock::time_point()) result_.final_latency_ms = SinceMs(last_sent_);
      if (!respond_) Finish("");
    } else if (type == "response.output_text.delta") {
      if (result_.first_token_latency_ms < 0) result_.first_token_latency_ms = SinceMs(last_sent_);
      result_.answer += e.value("delta", "");
    } else if (type == "response.done") {
      Finish("");
    } else if (type == "error") {
      Finish("error event: " + e["error"].value("message", ""));
    }
  }

  void Finish(const std::string& error) {
    if (done_) return;
    done_ = true;
    result_.ok = error.empty();
    result_.error = error;
    pacer_.cancel();
    deadline_.cancel();
    beast::error_code ignored;
    beast::get_lowest_layer(ws_).socket().shutdown(tcp::socket::shutdown_both, ignored);
    beast::get_lowest_layer(ws_).close();
  }

  const std::string address_;
  const RealtimeRequest& request_;
  net::io_context ioc_;
  websocket::stream<beast::tcp_stream> ws_{ioc_};
  net::steady_timer pacer_{ioc_}, deadline_{ioc_};
  beast::flat_buffer buffer_;
  std::vector<std::string> chunks_;
  std::vector<Clock::time_point> sent_;
  Clock::time_point start_, last_sent_;
  std::deque<std::string> outbox_;
  size_t next_ = 0;
  bool writing_ = false, done_ = false, respond_ = false;
  RealtimeResult result_;
};

}  // namespace

RealtimeResult StreamRealtime(const std::string& address, const RealtimeRequest& request) {
  RealtimeRun run(address, request);
  return run.Run();
}

}  // namespace slm::http
