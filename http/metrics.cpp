#include "http/metrics.h"

#include <cstdio>
#include <set>
#include <sstream>

namespace slm::http {

namespace {

const std::vector<double> kBuckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};

// Engine statistics that only grow (exposed as counters with a _total suffix).
const std::set<std::string> kEngineCounters = {
    "decode_steps", "decode_rows", "prefill_chunks", "prefill_tokens", "preemptions", "queue_timeouts",
    "isolated_retries", "graph_replays", "graph_captures", "encode_batches", "encode_rows", "syntheses",
    "decode_busy_seconds", "encode_busy_seconds", "synthesis_busy_seconds", "busy_seconds", "decode_step_seconds",
    "prefill_seconds"};

std::string Number(double v) {
  char out[40];
  std::snprintf(out, sizeof(out), "%.9g", v);
  return out;
}

std::string Escape(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

}  // namespace

std::string Metrics::EndpointLabel(const std::string& path) {
  static const std::set<std::string> kKnown = {"/",      "/health", "/metrics", "/v1/models", "/v1/audio/transcriptions",
                                               "/v1/chat/completions", "/v1/audio/speech", "/v1/realtime"};
  if (kKnown.count(path)) return path;
  if (path.rfind("/v1/models/", 0) == 0) return "/v1/models/{id}";
  return "other";
}

void Metrics::Histogram::Observe(double value) {
  if (counts.empty()) counts.assign(kBuckets.size(), 0);
  for (size_t i = 0; i < kBuckets.size(); ++i)
    if (value <= kBuckets[i]) {
      counts[i] += 1;
      break;
    }
  sum += value;
  count += 1;
}

void Metrics::CountRequest(const std::string& path, int status, double seconds) {
  const std::string endpoint = EndpointLabel(path);
  std::lock_guard<std::mutex> lock(mutex_);
  requests_[{endpoint, status}] += 1;
  durations_[endpoint].Observe(seconds);
}

void Metrics::CountError(int status, const std::string& code) {
  std::lock_guard<std::mutex> lock(mutex_);
  errors_[{status, code}] += 1;
}

void Metrics::ObserveFirstToken(const std::string& path, double seconds) {
  const std::string endpoint = EndpointLabel(path);
  std::lock_guard<std::mutex> lock(mutex_);
  first_tokens_[endpoint].Observe(seconds);
}

void Metrics::ConnectionOpened() {
  std::lock_guard<std::mutex> lock(mutex_);
  connections_ += 1;
  connections_total_ += 1;
}

void Metrics::ConnectionClosed() {
  std::lock_guard<std::mutex> lock(mutex_);
  connections_ -= 1;
}

void Metrics::ConnectionRejected() {
  std::lock_guard<std::mutex> lock(mutex_);
  rejected_ += 1;
}

void Metrics::Timeout(const std::string& kind) {
  std::lock_guard<std::mutex> lock(mutex_);
  timeouts_[kind] += 1;
}

void Metrics::StreamOpened(const std::string& kind) {
  std::lock_guard<std::mutex> lock(mutex_);
  streams_open_[kind] += 1;
  streams_total_[kind] += 1;
}

void Metrics::StreamClosed(const std::string& kind) {
  std::lock_guard<std::mutex> lock(mutex_);
  streams_open_[kind] -= 1;
}

int Metrics::OpenConnections() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int>(connections_);
}

std::string Metrics::Render(const nlohmann::json& engine_stats) const {
  std::ostringstream out;
  auto histogram = [&](const std::string& name, const std::string& help, const std::map<std::string, Histogram>& all) {
    out << "# HELP " << name << " " << help << "\n# TYPE " << name << " histogram\n";
    for (const auto& [endpoint, h] : all) {
      double cumulative = 0;
      for (size_t i = 0; i < kBuckets.size(); ++i) {
        cumulative += h.counts.empty() ? 0 : h.counts[i];
        out << name << "_bucket{endpoint=\"" << Escape(endpoint) << "\",le=\"" << Number(kBuckets[i]) << "\"} "
            << Number(cumulative) << "\n";
      }
      out << name << "_bucket{endpoint=\"" << Escape(endpoint) << "\",le=\"+Inf\"} " << h.count << "\n";
      out << name << "_sum{endpoint=\"" << Escape(endpoint) << "\"} " << Number(h.sum) << "\n";
      out << name << "_count{endpoint=\"" << Escape(endpoint) << "\"} " << h.count << "\n";
    }
  };
  {
    std::lock_guard<std::mutex> lock(mutex_);
    out << "# HELP slm_http_requests_total HTTP requests answered, by endpoint and status.\n"
        << "# TYPE slm_http_requests_total counter\n";
    for (const auto& [key, n] : requests_)
      out << "slm_http_requests_total{endpoint=\"" << Escape(key.first) << "\",status=\"" << key.second << "\"} " << n << "\n";
    histogram("slm_http_request_duration_seconds", "From a request's arrival to the last byte of its answer.", durations_);
    histogram("slm_http_first_token_seconds", "From a request's arrival to its first answer token sent.", first_tokens_);
    out << "# HELP slm_http_errors_total Error answers, by status and OpenAI error code.\n"
        << "# TYPE slm_http_errors_total counter\n";
    for (const auto& [key, n] : errors_)
      out << "slm_http_errors_total{status=\"" << key.first << "\",code=\"" << Escape(key.second) << "\"} " << n << "\n";
    out << "# HELP slm_http_connections Open HTTP and WebSocket connections.\n# TYPE slm_http_connections gauge\n"
        << "slm_http_connections " << connections_ << "\n"
        << "# HELP slm_http_connections_total Connections accepted.\n# TYPE slm_http_connections_total counter\n"
        << "slm_http_connections_total " << connections_total_ << "\n"
        << "# HELP slm_http_connections_rejected_total Connections refused over http.max_connections.\n"
        << "# TYPE slm_http_connections_rejected_total counter\n"
        << "slm_http_connections_rejected_total " << rejected_ << "\n";
    out << "# HELP slm_http_timeouts_total Connections closed for a timeout, by kind.\n"
        << "# TYPE slm_http_timeouts_total counter\n";
    for (const auto& [kind, n] : timeouts_) out << "slm_http_timeouts_total{kind=\"" << kind << "\"} " << n << "\n";
    out << "# HELP slm_http_streams Open streamed answers (sse) and realtime sessions.\n# TYPE slm_http_streams gauge\n";
    for (const auto& [kind, n] : streams_open_) out << "slm_http_streams{kind=\"" << kind << "\"} " << n << "\n";
    out << "# HELP slm_http_streams_total Streamed answers and realtime sessions started.\n"
        << "# TYPE slm_http_streams_total counter\n";
    for (const auto& [kind, n] : streams_total_) out << "slm_http_streams_total{kind=\"" << kind << "\"} " << n << "\n";
  }
  for (const auto& [key, value] : engine_stats.items()) {
    if (!value.is_number()) continue;
    const bool counter = kEngineCounters.count(key) > 0;
    const std::string name = "slm_engine_" + key + (counter ? "_total" : "");
    out << "# TYPE " << name << (counter ? " counter\n" : " gauge\n") << name << " " << Number(value.get<double>()) << "\n";
  }
  return out.str();
}

}  // namespace slm::http
