#include "http/server.h"

#include <boost/asio/ssl.hpp>
#include <boost/beast/ssl.hpp>

#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"
#include "http/http_session.h"
#include "http/server_impl.h"
#include "http/ws_session.h"

namespace slm::http {

thread_local bool t_io_thread = false;

ServerImpl::ServerImpl(const HttpConfig& c, const Security& s)
    : config(c), security(s), ioc(c.threads), acceptor(net::make_strand(ioc)) {
  router = std::make_unique<Router>(config, security, metrics, [this](std::function<void()> work) { Spawn(std::move(work)); });
  if (!security.tls_cert.empty()) {
    tls.emplace(net::ssl::context::tls_server);
    tls->set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 | net::ssl::context::no_sslv3 |
                     net::ssl::context::no_tlsv1 | net::ssl::context::no_tlsv1_1);
    const std::string cert = ReadTlsFile(security.tls_cert, "tls.cert"), key = ReadTlsFile(security.tls_key, "tls.key");
    try {
      tls->use_certificate_chain(net::buffer(cert));
      tls->use_private_key(net::buffer(key), net::ssl::context::pem);
    } catch (const boost::system::system_error& e) {
      throw Error(Str("tls.cert / tls.key: not a usable PEM certificate and key (", e.what(), ")"));
    }
  }
  const size_t colon = config.listen.rfind(':');
  host = config.listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  int wanted = -1;
  try {
    wanted = std::stoi(config.listen.substr(colon + 1));
  } catch (const std::exception&) {
  }
  Check(wanted >= 0 && wanted <= 65535, "http.listen: '", config.listen, "' has no valid port (host:port; 0 picks one)");
  beast::error_code ec;
  const net::ip::address address = net::ip::make_address(host.empty() ? "0.0.0.0" : host, ec);
  Check(!ec, "http.listen: '", config.listen, "': '", host, "' is not an IP address (", ec.message(), ")");
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(wanted));
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(net::socket_base::max_listen_connections, ec);
  Check(!ec, "http.listen: cannot listen on '", config.listen, "' (", ec.message(), "; port 0 picks a free one)");
  port = acceptor.local_endpoint().port();
}

void ServerImpl::Spawn(std::function<void()> work) {
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (stopping) return;
    ++workers;
  }
  std::thread([this, work = std::move(work)]() mutable {
    try {
      work();
    } catch (const std::exception& e) {
      log::Error(Str("http: a handler thread failed: ", e.what()));
    }
    work = nullptr;  // its captures (connections, sessions) go before the server may
    std::lock_guard<std::mutex> lock(mutex);
    if (--workers == 0) workers_done.notify_all();
  }).detach();
}

void ServerImpl::Register(const std::shared_ptr<Connection>& connection) {
  std::lock_guard<std::mutex> lock(mutex);
  if (stopping) connection->Shutdown();
  connections.remove_if([](const std::weak_ptr<Connection>& c) { return c.expired(); });
  connections.push_back(connection);
}

void ServerImpl::Accept() {
  acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted || !acceptor.is_open()) return;
    if (!ec) {
      beast::error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      const bool reject = metrics.OpenConnections() >= config.max_connections;
      auto token = reject ? nullptr : std::make_shared<ConnectionToken>(metrics);
      std::shared_ptr<Connection> session;
      if (tls) {
        using TlsStream = beast::ssl_stream<beast::tcp_stream>;
        auto s = std::make_shared<HttpSession<TlsStream>>(*this, TlsStream(beast::tcp_stream(std::move(socket)), *tls), token, reject);
        session = s;
        s->Run();
      } else {
        auto s = std::make_shared<HttpSession<beast::tcp_stream>>(*this, beast::tcp_stream(std::move(socket)), token, reject);
        session = s;
        s->Run();
      }
      Register(session);
    }
    Accept();
  });
}

Server::Server(const HttpConfig& config, const Security& security) : impl_(std::make_unique<ServerImpl>(config, security)) {
  impl_->Accept();
  for (int i = 0; i < config.threads; ++i)
    impl_->threads.emplace_back([this] {
      t_io_thread = true;
      impl_->ioc.run();
    });
}

Server::~Server() { Stop(); }

void Server::Attach(engine::Engine* engine) { impl_->router->Attach(engine); }

int Server::Port() const { return impl_->port; }

std::string Server::Address() const {
  const std::string& host = impl_->host;
  const bool wildcard = host.empty() || host == "0.0.0.0" || host == "::";
  const std::string shown = wildcard ? "127.0.0.1" : host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return shown + ":" + std::to_string(impl_->port);
}

bool Server::Tls() const { return impl_->tls.has_value(); }

Metrics& Server::GetMetrics() { return impl_->metrics; }

int Server::Active() const { return impl_->router->Active(); }

void Server::StartDrain() {
  impl_->router->StartDrain();
  std::lock_guard<std::mutex> lock(impl_->mutex);
  for (const std::weak_ptr<Connection>& c : impl_->connections)
    if (auto connection = c.lock()) connection->Drain();
}

void Server::Stop() {
  ServerImpl& s = *impl_;
  std::vector<std::shared_ptr<Connection>> open;
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    if (s.stopped) return;
    s.stopped = s.stopping = true;
    for (const std::weak_ptr<Connection>& c : s.connections)
      if (auto connection = c.lock()) open.push_back(connection);
  }
  s.router->StartDrain();
  net::post(s.acceptor.get_executor(), [&s] {
    beast::error_code ignored;
    s.acceptor.close(ignored);
  });
  for (const auto& connection : open) connection->Shutdown();
  open.clear();
  {
    std::unique_lock<std::mutex> lock(s.mutex);
    while (!s.workers_done.wait_for(lock, std::chrono::seconds(10), [&] { return s.workers == 0; }))
      log::Warn(Str("http: waiting for ", s.workers, " handler threads to end"));
  }
  s.ioc.stop();
  for (std::thread& t : s.threads) t.join();
}

}  // namespace slm::http
