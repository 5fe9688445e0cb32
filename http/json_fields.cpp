#include "http/json_fields.h"

#include <cmath>

#include "core/error.h"
#include "core/strings.h"
#include "http/errors.h"

namespace slm::http {

std::string TypeName(const nlohmann::json& value) {
  switch (value.type()) {
    case nlohmann::json::value_t::null: return "null";
    case nlohmann::json::value_t::object: return "an object";
    case nlohmann::json::value_t::array: return "an array";
    case nlohmann::json::value_t::string: return "a string";
    case nlohmann::json::value_t::boolean: return "a boolean";
    case nlohmann::json::value_t::number_float: return "a number";
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned: return "an integer";
    default: return "an unsupported value";
  }
}

nlohmann::json ParseJsonObject(const std::string& body) {
  if (Trim(body).empty()) Fail(400, "the body is empty; expected a JSON object", "", "invalid_json");
  nlohmann::json value;
  try {
    value = nlohmann::json::parse(body);
  } catch (const nlohmann::json::parse_error& e) {
    std::string what = e.what();
    const size_t cut = what.find("] ");  // drop nlohmann's "[json.exception.parse_error.101] " prefix
    if (cut != std::string::npos) what = what.substr(cut + 2);
    Fail(400, Str("the body is not valid JSON (", what, ")"), "", "invalid_json");
  }
  if (!value.is_object()) Fail(400, Str("the body must be a JSON object, got ", TypeName(value)), "", "invalid_json");
  return value;
}

namespace {

const nlohmann::json* Field(const nlohmann::json& object, const std::string& key) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

[[noreturn]] void WrongType(const std::string& path, const char* expected, const nlohmann::json& got) {
  Fail(400, Str(path, ": expected ", expected, ", got ", TypeName(got)), path);
}

}  // namespace

std::optional<std::string> OptString(const nlohmann::json& object, const std::string& key, const std::string& path) {
  const nlohmann::json* v = Field(object, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_string()) WrongType(path, "a string", *v);
  return v->get<std::string>();
}

std::optional<bool> OptBool(const nlohmann::json& object, const std::string& key, const std::string& path) {
  const nlohmann::json* v = Field(object, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_boolean()) WrongType(path, "true or false", *v);
  return v->get<bool>();
}

std::optional<double> OptNumber(const nlohmann::json& object, const std::string& key, const std::string& path) {
  const nlohmann::json* v = Field(object, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number()) WrongType(path, "a number", *v);
  return v->get<double>();
}

std::optional<int64_t> OptInteger(const nlohmann::json& object, const std::string& key, const std::string& path) {
  const nlohmann::json* v = Field(object, key);
  if (v == nullptr) return std::nullopt;
  if (v->is_number_integer() || v->is_number_unsigned()) {
    if (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(INT64_MAX)) Fail(400, Str(path, ": too large"), path);
    return v->get<int64_t>();
  }
  if (v->is_number_float()) {
    const double d = v->get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) return static_cast<int64_t>(d);
  }
  WrongType(path, "an integer", *v);
}

std::string ReqString(const nlohmann::json& object, const std::string& key, const std::string& path) {
  std::optional<std::string> value = OptString(object, key, path);
  if (!value) Fail(400, Str(path, ": missing (a string is required)"), path, "missing_field");
  return *value;
}

}  // namespace slm::http
