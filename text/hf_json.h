// Reading Hugging Face tokenizer.json files: every error names the file and the JSON path of the
// offending value ("'dir/tokenizer.json': pre_tokenizer.pretokenizers[1].type: ...").
//
// Thread-safety: JsonContext is immutable; its methods only read.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>

namespace slm::text::hf {

using nlohmann::json;

// "a.b", "a[3]": JSON paths for messages.
std::string Child(const std::string& path, const std::string& key);
std::string Item(const std::string& path, size_t index);

class JsonContext {
 public:
  explicit JsonContext(std::string file) : file_(std::move(file)) {}
  const std::string& File() const { return file_; }

  // slm::Error "'<file>': <path>: <message>".
  [[noreturn]] void Fail(const std::string& path, const std::string& message) const;
  // slm::Error naming an unsupported "type" value and the supported ones.
  [[noreturn]] void Unsupported(const std::string& path, const std::string& value,
                                const std::string& supported) const;

  // object[key], which must exist and not be null; `path` is the object's.
  const json& Required(const json& object, const std::string& path, const char* key) const;
  // object[key], or nullptr when it is absent or null.
  const json* Optional(const json& object, const char* key) const;
  // The object's "type" string.
  std::string Type(const json& object, const std::string& path) const;
  std::string String(const json& node, const std::string& path) const;
  bool Bool(const json& object, const std::string& path, const char* key, bool fallback) const;
  int64_t Int(const json& node, const std::string& path) const;
  const json& Array(const json& object, const std::string& path, const char* key) const;
  void RequireObject(const json& node, const std::string& path) const;

 private:
  std::string file_;
};

}  // namespace slm::text::hf
