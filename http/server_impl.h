// Internal to http/server.cpp and the connection templates it instantiates (http/http_session.h,
// http/ws_session.h): the server's shared state. Not part of the library's interface.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>

#include <condition_variable>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "http/config.h"
#include "http/metrics.h"
#include "http/router.h"

namespace slm::http {

namespace net = boost::asio;
namespace beast = boost::beast;
using tcp = net::ip::tcp;

// True on the server's I/O threads, where nothing may block.
extern thread_local bool t_io_thread;

// What the server can ask of any open connection (posted to the connection's strand).
class Connection {
 public:
  virtual ~Connection() = default;
  virtual void Shutdown() = 0;  // close now
  virtual void Drain() = 0;     // finish what is in progress, take nothing new
};

// Counts an open connection for its lifetime (moved from the HTTP session to the WebSocket one).
class ConnectionToken {
 public:
  explicit ConnectionToken(Metrics& metrics) : metrics_(metrics) { metrics_.ConnectionOpened(); }
  ~ConnectionToken() { metrics_.ConnectionClosed(); }
  ConnectionToken(const ConnectionToken&) = delete;
  ConnectionToken& operator=(const ConnectionToken&) = delete;

 private:
  Metrics& metrics_;
};

inline std::chrono::steady_clock::duration Seconds(double s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(s));
}

struct ServerImpl {
  ServerImpl(const HttpConfig& c, const Security& s);

  // Runs `work` on a new thread that Stop waits for; refused (not run) once Stop began.
  void Spawn(std::function<void()> work);
  void Register(const std::shared_ptr<Connection>& connection);
  void Accept();

  // Members are destroyed bottom-up: the io_context (and with it every pending handler and the
  // connections they hold) goes before the metrics and router those connections use.
  const HttpConfig config;
  const Security security;
  Metrics metrics;
  std::unique_ptr<Router> router;
  std::mutex mutex;
  std::condition_variable workers_done;
  int workers = 0;
  bool stopping = false, stopped = false;
  std::list<std::weak_ptr<Connection>> connections;
  std::optional<net::ssl::context> tls;
  int port = 0;
  std::string host;
  net::io_context ioc;
  tcp::acceptor acceptor;
  std::vector<std::thread> threads;
};

}  // namespace slm::http
