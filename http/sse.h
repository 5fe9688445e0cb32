// Server-sent events (text/event-stream) as OpenAI streams them: one `data: <json>` line per event,
// a blank line after each, and `data: [DONE]` last for chat completions.
// Thread-safety: pure functions.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

namespace slm::http {

// Invalid UTF-8 in strings is replaced, never thrown: an event is never lost to a bad byte.
inline std::string JsonText(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

inline std::string SseEvent(const nlohmann::json& data) { return "data: " + JsonText(data) + "\n\n"; }

inline std::string SseDone() { return "data: [DONE]\n\n"; }

}  // namespace slm::http
