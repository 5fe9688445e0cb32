// OpenAI's endpoints over the engine (engine/engine.h): each handler parses its request, calls the
// engine, and answers through the Exchange (http/exchange.h) in OpenAI's response shapes. Errors
// are thrown as ApiError (http/errors.h); http/router.h turns them into OpenAI's error JSON.
//
//   POST /v1/audio/transcriptions  Transcriptions  (multipart upload -> engine.Transcribe)
//   POST /v1/audio/speech          Speech          (JSON -> engine.StartSynthesize)
//   POST /v1/chat/completions      ChatCompletions (JSON messages -> engine.StartGenerate, and
//                                                   StartSynthesize for modalities ["text","audio"])
//   GET  /v1/models[/{id}]         ModelList / ModelCard
//
// Model names: the served model's name is the plain backbone (and the transcriber); each adapter's
// name is that adapter (what vLLM does with LoRA adapters). Handlers block (they wait for the
// engine) and must run on a thread of their own; they leave no engine request behind when they
// return, whatever happened.
// Thread-safety: handlers share nothing but the engine (thread-safe) and the metrics.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <string>

#include "engine/engine.h"
#include "http/config.h"
#include "http/exchange.h"
#include "http/metrics.h"

namespace slm::http {

struct Context {
  engine::Engine& engine;
  const HttpConfig& config;
  Metrics& metrics;
  std::chrono::steady_clock::time_point arrived;
  std::string request_id;  // "req-http-<pid>-<n>", also the base of response ids
};

void Transcriptions(const Context& context, const Request& request, Exchange& exchange);
void Speech(const Context& context, const Request& request, Exchange& exchange);
void ChatCompletions(const Context& context, const Request& request, Exchange& exchange);
nlohmann::json ModelList(engine::Engine& engine);
// One entry of ModelList; ApiError 404 for an unknown id.
nlohmann::json ModelCard(engine::Engine& engine, const std::string& id);

// The names requests may use in `model`, for error messages.
std::string ServedNames(engine::Engine& engine);
// Seconds since the epoch (OpenAI's `created`).
int64_t UnixTime();

}  // namespace slm::http
