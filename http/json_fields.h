// Reading OpenAI's JSON request bodies strictly: every wrong type or value is ApiError 400 naming
// the field's path ("messages[0].content[1].input_audio.data") and what was expected. Fields this
// server does not know are ignored (clients send many optional ones); fields it knows but cannot
// honour are refused by the endpoint.
// Thread-safety: pure functions.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace slm::http {

// The body as a JSON object; 400 invalid_json with the parser's byte offset otherwise.
nlohmann::json ParseJsonObject(const std::string& body);

// Optional fields (absent or null -> nullopt). `path` names the field in errors.
std::optional<std::string> OptString(const nlohmann::json& object, const std::string& key, const std::string& path);
std::optional<bool> OptBool(const nlohmann::json& object, const std::string& key, const std::string& path);
std::optional<double> OptNumber(const nlohmann::json& object, const std::string& key, const std::string& path);
std::optional<int64_t> OptInteger(const nlohmann::json& object, const std::string& key, const std::string& path);
// Required string (400 "missing" when absent).
std::string ReqString(const nlohmann::json& object, const std::string& key, const std::string& path);

// "a JSON object", "a string", ... for messages.
std::string TypeName(const nlohmann::json& value);

}  // namespace slm::http
