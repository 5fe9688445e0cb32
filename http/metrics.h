// The HTTP front-end's counters for GET /metrics (Prometheus text exposition format 0.0.4):
//
//   slm_http_requests_total{endpoint,status}          requests answered
//   slm_http_request_duration_seconds{endpoint}       histogram, arrival -> last byte handed over
//   slm_http_first_token_seconds{endpoint}            histogram, arrival -> first answer token sent
//   slm_http_errors_total{status,code}                error answers by OpenAI error code
//   slm_http_connections / _connections_total / _connections_rejected_total
//   slm_http_timeouts_total{kind}                     read (408), write (client not reading), idle
//   slm_http_streams{kind} / slm_http_streams_total{kind}  open SSE responses and realtime sessions
//   slm_engine_*                                      the engine's statistics (engine.Stats(): KV
//                                                     pool, encoder and decoder batches, requests)
//
// `endpoint` is one of the served paths or "other", so a scan of random paths cannot grow the
// label set. Thread-safety: every method is safe from any thread.
#pragma once

#include <nlohmann/json.hpp>

#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace slm::http {

class Metrics {
 public:
  static std::string EndpointLabel(const std::string& path);

  void CountRequest(const std::string& path, int status, double seconds);
  void CountError(int status, const std::string& code);
  void ObserveFirstToken(const std::string& path, double seconds);
  void ConnectionOpened();
  void ConnectionClosed();
  void ConnectionRejected();
  void Timeout(const std::string& kind);
  void StreamOpened(const std::string& kind);
  void StreamClosed(const std::string& kind);
  int OpenConnections() const;

  std::string Render(const nlohmann::json& engine_stats) const;

 private:
  struct Histogram {
    std::vector<double> counts;  // per bucket of kBuckets, not cumulative
    double sum = 0;
    int64_t count = 0;
    void Observe(double value);
  };
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, int64_t> requests_;
  std::map<std::string, Histogram> durations_, first_tokens_;
  std::map<std::pair<int, std::string>, int64_t> errors_;
  std::map<std::string, int64_t> timeouts_, streams_open_, streams_total_;
  int64_t connections_ = 0, connections_total_ = 0, rejected_ = 0;
};

}  // namespace slm::http
