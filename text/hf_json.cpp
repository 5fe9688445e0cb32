#include "text/hf_json.h"

#include "core/error.h"

namespace slm::text::hf {
namespace {

// A JSON value for a message, cut short: a whole vocabulary must not end up in one.
std::string Short(const json& value) {
  std::string text = value.dump();
  if (text.size() > 80) text = text.substr(0, 77) + "...";
  return text;
}

}  // namespace

std::string Child(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}

std::string Item(const std::string& path, size_t index) {
  return path + "[" + std::to_string(index) + "]";
}

void JsonContext::Fail(const std::string& path, const std::string& message) const {
  throw Error(
      Str("'", file_, "': ", path.empty() ? std::string("top level") : path, ": ", message));
}

void JsonContext::Unsupported(const std::string& path, const std::string& value,
                              const std::string& supported) const {
  Fail(path, Str("'", value, "' is not supported (supported: ", supported, ")"));
}

void JsonContext::RequireObject(const json& node, const std::string& path) const {
  if (!node.is_object()) Fail(path, Str("must be a JSON object, got ", Short(node)));
}

const json& JsonContext::Required(const json& object, const std::string& path,
                                  const char* key) const {
  RequireObject(object, path);
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) Fail(Child(path, key), "is missing");
  return *it;
}

const json* JsonContext::Optional(const json& object, const char* key) const {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

std::string JsonContext::Type(const json& object, const std::string& path) const {
  return String(Required(object, path, "type"), Child(path, "type"));
}

std::string JsonContext::String(const json& node, const std::string& path) const {
  if (!node.is_string()) Fail(path, Str("must be a string, got ", Short(node)));
  return node.get<std::string>();
}

bool JsonContext::Bool(const json& object, const std::string& path, const char* key,
                       bool fallback) const {
  const json* value = Optional(object, key);
  if (value == nullptr) return fallback;
  if (!value->is_boolean())
    Fail(Child(path, key), Str("must be true or false, got ", Short(*value)));
  return value->get<bool>();
}

int64_t JsonContext::Int(const json& node, const std::string& path) const {
  if (!node.is_number_integer()) Fail(path, Str("must be an integer, got ", Short(node)));
  return node.get<int64_t>();
}

const json& JsonContext::Array(const json& object, const std::string& path, const char* key) const {
  const json& value = Required(object, path, key);
  if (!value.is_array()) Fail(Child(path, key), Str("must be a list, got ", Short(value)));
  return value;
}

}  // namespace slm::text::hf
