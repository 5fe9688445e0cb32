#include "serve/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <torch/torch.h>

#include <chrono>
#include <thread>

#include "core/error.h"
#include "core/log.h"
#include "http/config.h"

namespace slm::serve {

Server::Server(const ServeConfig& config) : config_(config) {
  service_ = std::make_unique<SpeechService>(config_);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  std::shared_ptr<grpc::ServerCredentials> credentials;
  if (!config_.tls_cert.empty()) {
    grpc::SslServerCredentialsOptions options;
    options.pem_key_cert_pairs.push_back({http::ReadTlsFile(config_.tls_key, "tls.key"), http::ReadTlsFile(config_.tls_cert, "tls.cert")});
    credentials = grpc::SslServerCredentials(options);
  } else {
    credentials = grpc::InsecureServerCredentials();
  }
  grpc::ServerBuilder builder;
  builder.AddListeningPort(config_.listen, credentials, &port_);
  builder.RegisterService(service_.get());
  builder.SetMaxReceiveMessageSize(static_cast<int>(std::min<int64_t>(config_.max_message_bytes, INT32_MAX)));
  builder.SetMaxSendMessageSize(static_cast<int>(std::min<int64_t>(config_.max_message_bytes, INT32_MAX)));
  server_ = builder.BuildAndStart();
  Check(server_ != nullptr && port_ > 0, "listen: cannot listen on '", config_.listen,
        "' (address in use or invalid; port 0 picks a free one)");
  SetServing(false);
  if (config_.http.Enabled())
    http_ = std::make_unique<http::Server>(config_.http, http::Security{config_.auth_token, config_.tls_cert, config_.tls_key});
}

Server::~Server() {
  if (!drained_) Drain(0);
}

std::string Server::Address() const {
  const std::string host = config_.listen.substr(0, config_.listen.rfind(':'));
  return (host.empty() || host == "0.0.0.0" || host == "[::]" ? std::string("127.0.0.1") : host) + ":" +
         std::to_string(port_);
}

void Server::SetServing(bool serving) {
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus(serving);
  health->SetServingStatus("slm.v1.Speech", serving);
}

void Server::Load() {
  torch::set_num_threads(config_.threads);
  model_ = std::make_unique<engine::ServedModel>(config_);
  engine_ = std::make_unique<engine::Engine>(*model_, config_);
  service_->Attach(engine_.get());
  if (http_) http_->Attach(engine_.get());
  SetServing(true);
}

void Server::Drain(double grace_seconds) {
  if (drained_) return;
  drained_ = true;
  SetServing(false);
  service_->StartDrain();
  if (http_) http_->StartDrain();
  auto active = [&] { return service_->ActiveCalls() + (http_ ? http_->Active() : 0); };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(grace_seconds);
  while (active() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  if (active() > 0)
    log::Warn(Str("drain: ", active(), " calls / HTTP requests still running after ", grace_seconds, " s; cancelling them"));
  // The HTTP front-end's handler threads use the engine: all of them end before it goes.
  http_.reset();
  // Shutdown cancels what is left; the engine must outlive the handlers, which Shutdown waits for.
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
  server_->Wait();
  engine_.reset();
}

}  // namespace slm::serve
