// Misbehaving clients over raw sockets: a slow sender, a client that stops reading, too many
// connections. Each gets its status (or its connection closed) and the server keeps serving.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include "tests/http/http_fixture.h"

namespace slm::http::testing_http {
namespace {

serve::ServeConfig ShortTimeouts() {
  serve::ServeConfig c = HttpTestConfig();
  c.http.request_timeout_seconds = 1.0;
  c.http.write_timeout_seconds = 1.0;
  c.http.idle_timeout_seconds = 5.0;
  c.http.max_connections = 3;
  return c;
}

class RawSocket {
 public:
  explicit RawSocket(int port, int receive_buffer = 0) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (receive_buffer > 0) ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof(receive_buffer));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  }
  ~RawSocket() { ::close(fd_); }
  int fd() const { return fd_; }
  bool Send(const std::string& data) { return ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(data.size()); }
  // Everything until the peer closes or `seconds` pass.
  std::string ReadAll(double seconds) {
    std::string out;
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    char buffer[65536];
    while (std::chrono::steady_clock::now() < end) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      const ssize_t n = ::recv(fd_, buffer, sizeof(buffer), 0);
      if (n <= 0) break;
      out.append(buffer, static_cast<size_t>(n));
    }
    return out;
  }

 private:
  int fd_;
};

int HttpPort(serve::Server& server) { return std::stoi(server.HttpAddress().substr(server.HttpAddress().rfind(':') + 1)); }

TEST_F(HttpTest, SlowClientsTimeOutWith408) {
  StartHttp(ShortTimeouts());
  RawSocket slow(HttpPort(*server_));
  const std::string request = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n{\"model\": \"tiny\"}   ";
  // One byte every 100 ms: the whole request would take 9 s; the server gives it 1 s.
  for (char c : request) {
    if (!slow.Send(std::string(1, c))) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    pollfd p{slow.fd(), POLLIN, 0};
    if (::poll(&p, 1, 0) > 0) break;  // the answer came
  }
  const std::string answer = slow.ReadAll(5);
  EXPECT_EQ(answer.rfind("HTTP/1.1 408", 0), 0u) << answer;
  EXPECT_NE(answer.find("\"code\":\"request_timeout\""), std::string::npos) << answer;
  EXPECT_NE(answer.find("did not arrive within 1 s"), std::string::npos) << answer;
  EXPECT_EQ(Get("/health").status, 200);
  EXPECT_NE(Get("/metrics").body.find("slm_http_timeouts_total{kind=\"read\"} 1"), std::string::npos);
}

TEST_F(HttpTest, SlowAClientThatStopsReadingIsClosedAndOthersAreServed) {
  StartHttp(ShortTimeouts());
  RawSocket stuck(HttpPort(*server_), 4096);
  ::fcntl(stuck.fd(), F_SETFL, O_NONBLOCK);
  // Pipelined requests for the page (a few KiB each), never read: the server's writes back up.
  const std::string one = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  std::string many;
  for (int i = 0; i < 200; ++i) many += one;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  bool closed = false;
  while (std::chrono::steady_clock::now() < end && !closed) {
    const ssize_t n = ::send(stuck.fd(), many.data(), many.size(), MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) closed = true;
    if (Get("/metrics").body.find("slm_http_timeouts_total{kind=\"write\"}") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const std::string metrics = Get("/metrics").body;
  EXPECT_NE(metrics.find("slm_http_timeouts_total{kind=\"write\"} 1"), std::string::npos) << metrics;
  EXPECT_EQ(Get("/health").status, 200);
  const ClientResponse models = Get("/v1/models");
  EXPECT_EQ(models.status, 200);
}

TEST_F(HttpTest, ConnectionsOverTheLimitGet503) {
  StartHttp(ShortTimeouts());  // max_connections 3
  std::vector<std::unique_ptr<RawSocket>> idle;
  for (int i = 0; i < 3; ++i) idle.push_back(std::make_unique<RawSocket>(HttpPort(*server_)));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // accepted
  RawSocket extra(HttpPort(*server_));
  extra.Send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
  const std::string answer = extra.ReadAll(5);
  EXPECT_EQ(answer.rfind("HTTP/1.1 503", 0), 0u) << answer;
  EXPECT_NE(answer.find("too many connections (http.max_connections is 3)"), std::string::npos) << answer;
  idle.clear();
  // Once they are gone, connections are served again.
  int status = 0;
  for (int attempt = 0; attempt < 50 && status != 200; ++attempt) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    RawSocket next(HttpPort(*server_));
    next.Send("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    const std::string reply = next.ReadAll(5);
    if (reply.rfind("HTTP/1.1 200", 0) == 0) status = 200;
  }
  EXPECT_EQ(status, 200);
  EXPECT_NE(Get("/metrics").body.find("slm_http_connections_rejected_total 1"), std::string::npos);
}

TEST_F(HttpTest, MalformedHttpAndOversizedHeadersAreRefused) {
  StartHttp(ShortTimeouts());
  {
    RawSocket s(HttpPort(*server_));
    s.Send("THIS IS NOT HTTP\r\n\r\n");
    const std::string answer = s.ReadAll(5);
    EXPECT_EQ(answer.rfind("HTTP/1.1 400", 0), 0u) << answer;
    EXPECT_NE(answer.find("malformed HTTP request"), std::string::npos) << answer;
  }
  {
    RawSocket s(HttpPort(*server_));
    s.Send("GET /health HTTP/1.1\r\nX-Big: " + std::string(20000, 'a') + "\r\n\r\n");
    const std::string answer = s.ReadAll(5);
    EXPECT_EQ(answer.rfind("HTTP/1.1 431", 0), 0u) << answer;
  }
  EXPECT_EQ(Get("/health").status, 200);
}

}  // namespace
}  // namespace slm::http::testing_http
