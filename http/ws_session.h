// Internal to http/server.cpp: one WebSocket connection (plain or TLS) carrying a realtime session
// (http/realtime.h). Messages go out one at a time from a queue; each write has its own deadline
// (http.write_timeout_seconds), so a client that stops reading is closed, not waited for.
#pragma once

#include <boost/asio/steady_timer.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include <deque>
#include <future>

#include "core/log.h"
#include "http/realtime.h"
#include "http/server_impl.h"

namespace slm::http {

namespace ws = beast::websocket;

// Events queued for a client that does not read them: beyond this the connection is closed.
constexpr size_t kMaxQueuedMessages = 4096;

template <class Stream>
class WsSession final : public Connection, public MessageSink, public std::enable_shared_from_this<WsSession<Stream>> {
 public:
  WsSession(ServerImpl& server, Stream&& stream, std::shared_ptr<ConnectionToken> token)
      : server_(server), ws_(std::move(stream)), timer_(ws_.get_executor()), token_(std::move(token)) {}

  template <class Upgrade>
  void Run(Upgrade request, const std::string& protocol) {
    ws::stream_base::timeout timeout;
    timeout.handshake_timeout = Seconds(server_.config.request_timeout_seconds);
    timeout.idle_timeout = Seconds(server_.config.idle_timeout_seconds);
    timeout.keep_alive_pings = true;
    ws_.set_option(timeout);
    ws_.set_option(ws::stream_base::decorator([protocol](ws::response_type& response) {
      response.set(beast::http::field::server, "slm");
      if (!protocol.empty()) response.set(beast::http::field::sec_websocket_protocol, protocol);
    }));
    ws_.read_message_max(static_cast<size_t>(server_.config.max_body_bytes));
    auto shared = std::make_shared<Upgrade>(std::move(request));
    ws_.async_accept(*shared, [self = this->shared_from_this(), shared](beast::error_code ec) { self->OnAccept(ec); });
  }

  void Shutdown() override {
    net::post(ws_.get_executor(), [self = this->shared_from_this()] { self->CloseNow(); });
  }
  void Drain() override {
    net::post(ws_.get_executor(), [self = this->shared_from_this()] {
      if (self->realtime_) self->realtime_->OnDrain();
    });
  }

  void Post(std::string text) override {
    net::post(ws_.get_executor(),
              [self = this->shared_from_this(), text = std::move(text)]() mutable { self->Enqueue(std::move(text), nullptr); });
  }

  bool Send(std::string text) override {
    if (closed_) return false;
    if (t_io_thread) {
      log::Error("http: a blocking WebSocket send from an I/O thread");
      return false;
    }
    auto done = std::make_shared<std::promise<bool>>();
    std::future<bool> result = done->get_future();
    net::post(ws_.get_executor(), [self = this->shared_from_this(), text = std::move(text), done]() mutable {
      self->Enqueue(std::move(text), done);
    });
    try {
      return result.get();
    } catch (const std::future_error&) {
      return false;
    }
  }

  void Close() override {
    net::post(ws_.get_executor(), [self = this->shared_from_this()] {
      self->close_requested_ = true;
      self->MaybeClose();
    });
  }

 private:
  struct Out {
    std::string text;
    std::shared_ptr<std::promise<bool>> done;
  };

  void OnAccept(beast::error_code ec) {
    if (ec) return CloseNow();
    realtime_ = server_.router->NewRealtime(this->shared_from_this());
    if (!realtime_) return CloseNow();
    realtime_->Start();
    DoRead();
  }

  void DoRead() {
    ws_.async_read(buffer_, [self = this->shared_from_this()](beast::error_code ec, size_t) { self->OnRead(ec); });
  }

  void OnRead(beast::error_code ec) {
    if (ec) {
      if (ec == beast::error::timeout) server_.metrics.Timeout("idle");
      return CloseNow();
    }
    if (realtime_) {
      if (ws_.got_text()) realtime_->OnText(beast::buffers_to_string(buffer_.data()));
      else realtime_->OnBinary();
    }
    buffer_.consume(buffer_.size());
    if (!closed_) DoRead();
  }

  void Enqueue(std::string text, std::shared_ptr<std::promise<bool>> done) {
    if (closed_ || closing_) {
      if (done) done->set_value(false);
      return;
    }
    if (queue_.size() >= kMaxQueuedMessages) {
      server_.metrics.Timeout("write");
      if (done) done->set_value(false);
      return CloseNow();
    }
    queue_.push_back({std::move(text), std::move(done)});
    if (!writing_) WriteNext();
  }

  void WriteNext() {
    writing_ = true;
    timer_.expires_after(Seconds(server_.config.write_timeout_seconds));
    timer_.async_wait([self = this->shared_from_this()](beast::error_code ec) {
      if (ec || self->closed_ || !self->writing_) return;
      self->server_.metrics.Timeout("write");
      self->CloseNow();
    });
    ws_.text(true);
    ws_.async_write(net::buffer(queue_.front().text), [self = this->shared_from_this()](beast::error_code ec, size_t) {
      self->OnWrite(ec);
    });
  }

  void OnWrite(beast::error_code ec) {
    timer_.cancel();
    Out front = std::move(queue_.front());
    queue_.pop_front();
    writing_ = false;
    if (front.done) front.done->set_value(!ec);
    if (ec) return CloseNow();
    if (!queue_.empty()) return WriteNext();
    MaybeClose();
  }

  void MaybeClose() {
    if (!close_requested_ || writing_ || closing_ || closed_) return;
    closing_ = true;
    ws_.async_close(ws::close_code::normal, [self = this->shared_from_this()](beast::error_code) { self->CloseNow(); });
  }

  void CloseNow() {
    if (closed_) return;
    closed_ = true;
    // The message being written completes (with an error) through its handler; the rest fail now.
    for (size_t i = writing_ ? 1 : 0; i < queue_.size(); ++i)
      if (queue_[i].done) queue_[i].done->set_value(false);
    if (!queue_.empty()) queue_.erase(queue_.begin() + (writing_ ? 1 : 0), queue_.end());
    timer_.cancel();
    beast::error_code ignored;
    beast::get_lowest_layer(ws_).socket().shutdown(tcp::socket::shutdown_both, ignored);
    beast::get_lowest_layer(ws_).close();
    // The session holds this connection as its sink: releasing it here breaks the cycle.
    if (auto realtime = std::move(realtime_)) realtime->OnClose();
  }

  ServerImpl& server_;
  ws::stream<Stream> ws_;
  net::steady_timer timer_;
  std::shared_ptr<ConnectionToken> token_;
  beast::flat_buffer buffer_;
  std::shared_ptr<RealtimeSession> realtime_;
  std::deque<Out> queue_;
  bool writing_ = false, close_requested_ = false, closing_ = false;
  std::atomic<bool> closed_{false};
};

}  // namespace slm::http
