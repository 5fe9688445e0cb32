// Typed reads of Hugging Face JSON configs (config.json, preprocessor_config.json): one reader for
// every model family, so that a wrong value gets the same message whichever model it is in:
//   <where>: missing required key "<key>"
//   <where>: "<key>" must be an integer, got <value as JSON>
// JSON null counts as absent, as transformers treats it ("rope_scaling": null, "pad_token_id":
// null). `where` names the file (and the section) for the user. Header-only so that the fuzz build,
// which compiles single sources, needs no extra one. Thread-safety: free functions without state.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"

namespace slm::hf_config {

// model_dir + "/config.json", after checking that both exist: every model loader names a wrong
// directory alike.
inline std::string ConfigPath(const std::string& model_dir) {
  Check(std::filesystem::is_directory(model_dir), "model directory '", model_dir, "' does not exist");
  const std::string path = model_dir + "/config.json";
  Check(std::filesystem::is_regular_file(path), "'", model_dir,
        "' has no config.json (not a Hugging Face model directory)");
  return path;
}

// The value of `key`, or nullptr when it is missing or null.
inline const nlohmann::json* Field(const nlohmann::json& object, const std::string& key) {
  auto it = object.find(key);
  return it == object.end() || it->is_null() ? nullptr : &*it;
}

inline int64_t AsInt(const nlohmann::json& value, const std::string& key,
                     const std::string& where) {
  if (!value.is_number_integer())
    throw Error(Str(where, ": \"", key, "\" must be an integer, got ", value.dump()));
  return value.get<int64_t>();
}

inline double AsNumber(const nlohmann::json& value, const std::string& key,
                       const std::string& where) {
  if (!value.is_number())
    throw Error(Str(where, ": \"", key, "\" must be a number, got ", value.dump()));
  return value.get<double>();
}

inline bool AsBool(const nlohmann::json& value, const std::string& key, const std::string& where) {
  if (!value.is_boolean())
    throw Error(Str(where, ": \"", key, "\" must be true or false, got ", value.dump()));
  return value.get<bool>();
}

inline std::string AsString(const nlohmann::json& value, const std::string& key,
                            const std::string& where) {
  if (!value.is_string())
    throw Error(Str(where, ": \"", key, "\" must be a string, got ", value.dump()));
  return value.get<std::string>();
}

// Every config's Validate refuses a size or a scale that is not above zero with this message.
template <class T>
inline void CheckPositive(T value, const std::string& key, const std::string& where) {
  Check(value > 0, where, ": \"", key, "\" must be positive, got ", value);
}

inline int64_t RequiredInt(const nlohmann::json& object, const std::string& key,
                           const std::string& where) {
  const nlohmann::json* value = Field(object, key);
  Check(value != nullptr, where, ": missing required key \"", key, "\"");
  return AsInt(*value, key, where);
}

// `prefix` names the enclosing dict in messages ("rope_parameters.").
inline int64_t OptionalInt(const nlohmann::json& object, const std::string& key,
                           const std::string& where, int64_t fallback,
                           const std::string& prefix = "") {
  const nlohmann::json* value = Field(object, key);
  return value ? AsInt(*value, prefix + key, where) : fallback;
}

inline double OptionalNumber(const nlohmann::json& object, const std::string& key,
                             const std::string& where, double fallback,
                             const std::string& prefix = "") {
  const nlohmann::json* value = Field(object, key);
  return value ? AsNumber(*value, prefix + key, where) : fallback;
}

inline bool OptionalBool(const nlohmann::json& object, const std::string& key,
                         const std::string& where, bool fallback) {
  const nlohmann::json* value = Field(object, key);
  return value ? AsBool(*value, key, where) : fallback;
}

inline std::string OptionalString(const nlohmann::json& object, const std::string& key,
                                  const std::string& where, const std::string& fallback) {
  const nlohmann::json* value = Field(object, key);
  return value ? AsString(*value, key, where) : fallback;
}

}  // namespace slm::hf_config
