// Internal to http/server.cpp: one HTTP/1.1 connection (plain or TLS), answering its requests one
// at a time through an Exchange per request, and handing a WebSocket upgrade to WsSession.
#pragma once

#include <sys/socket.h>

#include <boost/asio/steady_timer.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <atomic>
#include <future>

#include "core/log.h"
#include "core/strings.h"
#include "http/errors.h"
#include "http/server_impl.h"
#include "http/ws_session.h"

namespace slm::http {

namespace bhttp = beast::http;

constexpr size_t kHeaderLimit = 16 * 1024;
constexpr double kLingerSeconds = 2.0;  // reading what a refused client still sends, before closing

template <class Stream>
constexpr bool kIsTls = !std::is_same_v<Stream, beast::tcp_stream>;

// The state of one request's answer, shared by its Exchange and the connection.
struct ExchangeState {
  std::atomic<bool> gone{false};      // the client left, a write failed, or the server stops
  std::atomic<bool> answered{false};  // Reply or BeginStream was called
  bool streaming = false;             // header of a chunked answer written (strand)
  bool done = false;                  // the answer is complete or abandoned (strand)
};

// The connection side of an Exchange; implemented by HttpSession<Stream>.
class ExchangeOps {
 public:
  virtual ~ExchangeOps() = default;
  virtual void Reply(const std::shared_ptr<ExchangeState>& state, Response response) = 0;
  virtual bool Begin(const std::shared_ptr<ExchangeState>& state, int status, const std::string& content_type,
                     const std::vector<std::pair<std::string, std::string>>& headers) = 0;
  virtual bool Chunk(const std::shared_ptr<ExchangeState>& state, std::string data) = 0;
  virtual void End(const std::shared_ptr<ExchangeState>& state) = 0;
};

class HttpExchange final : public Exchange {
 public:
  HttpExchange(std::shared_ptr<ExchangeOps> ops, std::shared_ptr<ExchangeState> state)
      : ops_(std::move(ops)), state_(std::move(state)) {}
  void Reply(Response response) override {
    if (state_->answered.exchange(true)) return;
    ops_->Reply(state_, std::move(response));
  }
  bool BeginStream(int status, const std::string& content_type,
                   const std::vector<std::pair<std::string, std::string>>& headers) override {
    if (state_->answered.exchange(true)) return false;
    return ops_->Begin(state_, status, content_type, headers);
  }
  bool Write(std::string_view data) override {
    if (t_io_thread) {
      log::Error("http: a streamed write from an I/O thread (it would block the thread it waits for)");
      return false;
    }
    return !state_->gone && ops_->Chunk(state_, std::string(data));
  }
  void EndStream() override { ops_->End(state_); }
  bool ClientGone() const override { return state_->gone.load(); }
  bool Answered() const override { return state_->answered.load(); }

 private:
  std::shared_ptr<ExchangeOps> ops_;
  std::shared_ptr<ExchangeState> state_;
};

template <class Stream>
class HttpSession final : public Connection, public ExchangeOps, public std::enable_shared_from_this<HttpSession<Stream>> {
 public:
  HttpSession(ServerImpl& server, Stream stream, std::shared_ptr<ConnectionToken> token, bool reject)
      : server_(server), stream_(std::move(stream)), token_(std::move(token)), reject_(reject) {}

  void Run() {
    net::dispatch(stream_.get_executor(), [self = this->shared_from_this()] {
      if constexpr (kIsTls<Stream>) {
        self->Tcp().expires_after(Seconds(self->server_.config.request_timeout_seconds));
        self->stream_.async_handshake(net::ssl::stream_base::server, [self](beast::error_code ec) {
          if (ec) return self->CloseNow();
          self->WaitForRequest();
        });
      } else {
        self->WaitForRequest();
      }
    });
  }

  void Shutdown() override {
    net::post(stream_.get_executor(), [self = this->shared_from_this()] { self->CloseNow(); });
  }
  void Drain() override {
    net::post(stream_.get_executor(), [self = this->shared_from_this()] {
      if (!self->current_ && !self->reading_request_) self->CloseNow();  // idle keep-alive: nothing to finish
    });
  }

  void Reply(const std::shared_ptr<ExchangeState>& state, Response response) override {
    net::post(stream_.get_executor(), [self = this->shared_from_this(), state, r = std::move(response)]() mutable {
      self->WriteResponse(state, std::move(r));
    });
  }

  bool Begin(const std::shared_ptr<ExchangeState>& state, int status, const std::string& content_type,
             const std::vector<std::pair<std::string, std::string>>& headers) override {
    return Wait([&](std::function<void(bool)> done) {
      if (!Current(state)) return done(false);
      auto res = std::make_shared<bhttp::response<bhttp::empty_body>>(static_cast<bhttp::status>(status), 11);
      Fields(*res, content_type, headers);
      res->chunked(true);
      res->keep_alive(KeepAlive());
      auto serializer = std::make_shared<bhttp::response_serializer<bhttp::empty_body>>(*res);
      state->streaming = true;
      Tcp().expires_after(Seconds(server_.config.write_timeout_seconds));
      bhttp::async_write_header(stream_, *serializer,
                                [self = this->shared_from_this(), res, serializer, done](beast::error_code ec, size_t) {
                                  if (ec) self->WriteFailed(ec);
                                  done(!ec);
                                });
    });
  }

  bool Chunk(const std::shared_ptr<ExchangeState>& state, std::string data) override {
    if (data.empty()) return !state->gone;  // an empty chunk would end the body
    auto buffer = std::make_shared<std::string>(std::move(data));
    return Wait([&](std::function<void(bool)> done) {
      if (!Current(state) || !state->streaming) return done(false);
      Tcp().expires_after(Seconds(server_.config.write_timeout_seconds));
      net::async_write(stream_, bhttp::make_chunk(net::buffer(*buffer)),
                       [self = this->shared_from_this(), buffer, done](beast::error_code ec, size_t) {
                         if (ec) self->WriteFailed(ec);
                         done(!ec);
                       });
    });
  }

  void End(const std::shared_ptr<ExchangeState>& state) override {
    net::post(stream_.get_executor(), [self = this->shared_from_this(), state] {
      if (!self->Current(state) || !state->streaming) return;
      state->done = true;
      self->Tcp().expires_after(Seconds(self->server_.config.write_timeout_seconds));
      net::async_write(self->stream_, bhttp::make_chunk_last(),
                       [self](beast::error_code ec, size_t) { self->AfterResponse(ec, !self->KeepAlive()); });
    });
  }

 private:
  beast::tcp_stream& Tcp() { return beast::get_lowest_layer(stream_); }

  bool Current(const std::shared_ptr<ExchangeState>& state) const { return current_ == state && !state->done && !closed_; }

  // Runs `start` on the strand and blocks until it calls done(ok).
  template <class Start>
  bool Wait(Start start) {
    if (t_io_thread) {
      log::Error("http: a blocking write from an I/O thread");
      return false;
    }
    auto promise = std::make_shared<std::promise<bool>>();
    std::future<bool> result = promise->get_future();
    auto done = [promise](bool ok) { promise->set_value(ok); };
    net::post(stream_.get_executor(), [self = this->shared_from_this(), start = std::move(start), done]() mutable {
      if (self->closed_) return done(false);
      start(std::function<void(bool)>(done));
    });
    try {
      return result.get();
    } catch (const std::future_error&) {  // the strand's work was dropped: the server stopped
      return false;
    }
  }

  bool KeepAlive() const { return keep_alive_ && !server_.router->Draining() && !closed_; }

  template <class Message>
  void Fields(Message& message, const std::string& content_type, const std::vector<std::pair<std::string, std::string>>& headers) {
    message.set(bhttp::field::server, "slm");
    if (!content_type.empty()) message.set(bhttp::field::content_type, content_type);
    for (const auto& [name, value] : headers) message.set(name, value);
  }

  // Waits for the first byte of the next request (an idle keep-alive connection), then reads it.
  void WaitForRequest() {
    if (closed_) return;
    if (buffer_.size() > 0) return ReadHeader();
    reading_request_ = false;
    Tcp().expires_after(Seconds(server_.config.idle_timeout_seconds));
    stream_.async_read_some(buffer_.prepare(4096), [self = this->shared_from_this()](beast::error_code ec, size_t n) {
      self->buffer_.commit(n);
      if (ec) {
        if (ec == beast::error::timeout) self->server_.metrics.Timeout("idle");
        return self->CloseNow();
      }
      self->ReadHeader();
    });
  }

  void ReadHeader() {
    reading_request_ = true;
    parser_.emplace();
    parser_->header_limit(kHeaderLimit);
    parser_->body_limit(static_cast<uint64_t>(server_.config.max_body_bytes));
    StartDeadline();
    bhttp::async_read_header(stream_, buffer_, *parser_,
                             [self = this->shared_from_this()](beast::error_code ec, size_t) { self->OnHeader(ec); });
  }

  // The request's deadline is a timer of its own, not the stream's expiry: beast::tcp_stream closes
  // the socket when its expiry fires, and the client is owed a 408 on that socket. On expiry the
  // timer cancels the pending read, which ReadFailed then answers with the 408.
  void StartDeadline() {
    Tcp().expires_never();
    timed_out_ = false;
    deadline_.expires_after(Seconds(server_.config.request_timeout_seconds));
    deadline_.async_wait([weak = this->weak_from_this()](beast::error_code ec) {
      const auto self = weak.lock();
      if (ec || !self || self->closed_ || self->moved_) return;
      self->timed_out_ = true;
      self->Tcp().cancel();
    });
  }
  void StopDeadline() { deadline_.cancel(); }

  // An error answered before the request was read whole: the connection closes after it.
  void Refuse(const ApiError& error) {
    StopDeadline();
    server_.metrics.CountError(error.status(), error.code());
    server_.metrics.CountRequest(path_, error.status(), 0);
    current_ = std::make_shared<ExchangeState>();
    current_->answered = true;
    linger_ = true;
    keep_alive_ = false;
    Response response = ErrorResponse(error);
    response.headers.emplace_back("Access-Control-Allow-Origin", "*");
    WriteResponse(current_, std::move(response));
  }

  bool ReadFailed(beast::error_code ec) {
    if (!ec) return false;
    if (timed_out_) ec = beast::error::timeout;  // the deadline cancelled the read
    if (ec == bhttp::error::end_of_stream || ec == net::error::eof || ec == net::error::connection_reset ||
        ec == net::error::operation_aborted || ec == bhttp::error::partial_message) {
      CloseNow();
    } else if (ec == beast::error::timeout) {
      server_.metrics.Timeout("read");
      Refuse(ApiError(408, Str("the request did not arrive within ", server_.config.request_timeout_seconds,
                               " s (http.request_timeout_seconds)"), "", "request_timeout"));
    } else if (ec == bhttp::error::header_limit) {
      Refuse(ApiError(431, Str("the request headers are over ", kHeaderLimit, " bytes"), "", "headers_too_large"));
    } else if (ec == bhttp::error::body_limit) {
      Refuse(ApiError(413, Str("the body is over this server's limit of ", server_.config.max_body_bytes,
                               " bytes (http.max_body_bytes)"), "", "request_too_large"));
    } else {
      Refuse(ApiError(400, "malformed HTTP request: " + ec.message(), "", "malformed_request"));
    }
    return true;
  }

  void OnHeader(beast::error_code ec) {
    if (ReadFailed(ec)) return;
    const auto& header = parser_->get();
    path_ = std::string(header.target().substr(0, header.target().find('?')));
    if (reject_) {
      server_.metrics.ConnectionRejected();
      return Refuse(ApiError(503, Str("too many connections (http.max_connections is ", server_.config.max_connections, ")"),
                             "", "too_many_connections"));
    }
    if (beast::websocket::is_upgrade(header)) return Upgrade();
    if (header.has_content_length() && parser_->content_length() &&
        *parser_->content_length() > static_cast<uint64_t>(server_.config.max_body_bytes))
      return Refuse(ApiError(413, Str("the body of ", *parser_->content_length(), " bytes is over this server's limit of ",
                                      server_.config.max_body_bytes, " bytes (http.max_body_bytes)"),
                             "", "request_too_large"));
    if (beast::iequals(header[bhttp::field::expect], "100-continue")) {
      static const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      return net::async_write(stream_, net::buffer(kContinue), [self = this->shared_from_this()](beast::error_code ec, size_t) {
        if (ec) return self->CloseNow();
        self->ReadBody();
      });
    }
    ReadBody();
  }

  void ReadBody() {
    bhttp::async_read(stream_, buffer_, *parser_, [self = this->shared_from_this()](beast::error_code ec, size_t) {
      if (self->ReadFailed(ec)) return;
      self->OnRequest();
    });
  }

  Request Convert(bhttp::request<bhttp::string_body>&& message) {
    Request request;
    request.method = std::string(message.method_string());
    const std::string target(message.target());
    const size_t question = target.find('?');
    request.path = target.substr(0, question);
    if (question != std::string::npos) request.query = target.substr(question + 1);
    for (const auto& field : message) request.headers[ToLower(std::string(field.name_string()))] = std::string(field.value());
    request.body = std::move(message.body());
    beast::error_code ec;
    const tcp::endpoint peer = Tcp().socket().remote_endpoint(ec);
    if (!ec) request.remote = peer.address().to_string() + ":" + std::to_string(peer.port());
    return request;
  }

  void OnRequest() {
    reading_request_ = false;
    StopDeadline();
    Tcp().expires_never();
    keep_alive_ = parser_->get().keep_alive();
    Request request = Convert(parser_->release());
    current_ = std::make_shared<ExchangeState>();
    WatchClient();
    server_.router->Handle(std::move(request), std::make_shared<HttpExchange>(this->shared_from_this(), current_));
  }

  // Notices a client that closes its connection while its answer is being computed.
  void WatchClient() {
    Tcp().socket().async_wait(tcp::socket::wait_read, [self = this->shared_from_this(), state = current_](beast::error_code ec) {
      if (ec || self->current_ != state || state->done) return;
      char byte;
      const ssize_t n = ::recv(self->Tcp().socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) state->gone = true;
    });
  }

  void WriteResponse(const std::shared_ptr<ExchangeState>& state, Response r) {
    if (!Current(state)) return;
    state->done = true;
    auto res = std::make_shared<bhttp::response<bhttp::string_body>>(static_cast<bhttp::status>(r.status), 11);
    Fields(*res, r.content_type, r.headers);
    res->body() = std::move(r.body);
    const bool close = !KeepAlive();
    res->keep_alive(!close);
    res->prepare_payload();
    Tcp().expires_after(Seconds(server_.config.write_timeout_seconds));
    bhttp::async_write(stream_, *res, [self = this->shared_from_this(), res, close](beast::error_code ec, size_t) {
      self->AfterResponse(ec, close);
    });
  }

  void WriteFailed(beast::error_code ec) {
    if (ec == beast::error::timeout) server_.metrics.Timeout("write");
    CloseNow();
  }

  void AfterResponse(beast::error_code ec, bool close) {
    if (ec) return WriteFailed(ec);
    if (current_) current_->done = true;
    current_.reset();
    beast::error_code ignored;
    Tcp().socket().cancel(ignored);  // the client watch
    if (close) return linger_ ? Linger() : CloseNow();
    WaitForRequest();
  }

  // Half-closes, then reads (and drops) what the client still sends for a while, so that a client
  // still sending its body reads the error instead of a connection reset.
  void Linger() {
    beast::error_code ec;
    if constexpr (!kIsTls<Stream>) Tcp().socket().shutdown(tcp::socket::shutdown_send, ec);
    Tcp().expires_after(Seconds(kLingerSeconds));
    Discard();
  }
  void Discard() {
    buffer_.clear();
    stream_.async_read_some(buffer_.prepare(64 * 1024), [self = this->shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return self->CloseNow();
      self->Discard();
    });
  }

  void Upgrade() {
    StopDeadline();
    ws_request_ = Convert(bhttp::request<bhttp::string_body>(parser_->get()));
    std::string protocol;
    if (std::optional<Response> refused = server_.router->AdmitRealtime(ws_request_, &protocol)) {
      current_ = std::make_shared<ExchangeState>();
      current_->answered = true;
      linger_ = true;
      keep_alive_ = false;
      return WriteResponse(current_, std::move(*refused));
    }
    Tcp().expires_never();
    auto ws = std::make_shared<WsSession<Stream>>(server_, std::move(stream_), std::move(token_));
    moved_ = true;
    closed_ = true;
    server_.Register(ws);
    ws->Run(parser_->release(), protocol);
  }

  void CloseNow() {
    if (current_) current_->gone = true;
    if (closed_) return;
    closed_ = true;
    StopDeadline();
    beast::error_code ec;
    Tcp().socket().shutdown(tcp::socket::shutdown_both, ec);
    Tcp().close();
  }

  ServerImpl& server_;
  Stream stream_;
  net::steady_timer deadline_{stream_.get_executor()};  // of the request being read
  std::shared_ptr<ConnectionToken> token_;
  const bool reject_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  std::shared_ptr<ExchangeState> current_;  // the request being answered
  Request ws_request_;
  std::string path_;
  bool keep_alive_ = true, linger_ = false, closed_ = false, moved_ = false, reading_request_ = false,
       timed_out_ = false;
};

}  // namespace slm::http
