// Strict YAML configuration.
//
// A component declares a typed config struct and fills it from a Node:
//
//   struct MelConfig { int n_mels = 80; double floor_db = 8.0;
//     void Load(config::Node n) { n.Read("n_mels", n_mels, config::OneOf<int>({80, 128}));
//                                 n.Read("floor_db", floor_db, config::InRange(0.0, 100.0)); } };
//
// Precedence: struct defaults < YAML file < `--set a.b=c` overrides (ApplyOverride). Every error
// names the key path, the file and the line (or the --set assignment it came from):
//   "config error: run.yaml:12: key 'optimizer.lr': expected a number, got 'fast'"
// Keys present in the document but never read are errors too (Document::CheckAllConsumed, with a
// "did you mean" hint), so a misspelt key can never be silently ignored. Duplicate keys in a map
// are rejected at load time. Document::Effective() is the config actually used, defaults included,
// for saving next to every run.
//
// Thread-safety: a Document and its Nodes are not thread-safe; load configs on one thread.
#pragma once

#include <yaml-cpp/yaml.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"

namespace slm::config {

// Returns "" when the value is acceptable, else a description of what is expected.
template <typename T>
using Validator = std::function<std::string(const T&)>;

template <typename T>
Validator<T> InRange(T low, T high) {
  return [low, high](const T& v) {
    return (v >= low && v <= high) ? std::string() : Str("must be in [", low, ", ", high, "]");
  };
}

template <typename T>
Validator<T> OneOf(std::vector<T> allowed) {
  return [allowed](const T& v) {
    for (const auto& a : allowed)
      if (a == v) return std::string();
    std::string list;
    for (size_t i = 0; i < allowed.size(); ++i) list += (i ? ", " : "") + Str(allowed[i]);
    return Str("must be one of: ", list);
  };
}

namespace detail {
struct State;
}

class Node {
 public:
  // Reads an optional key into `value` (left at its default when absent) and records the value
  // used in the effective config. Throws slm::Error on a wrong type or a failed validator.
  // Supported T: bool, int, int64_t, uint64_t, double, float, std::string, std::vector of those.
  template <typename T>
  Node& Read(const std::string& key, T& value, Validator<T> validate = nullptr);

  // Like Read, but the key must be present.
  template <typename T>
  Node& Require(const std::string& key, T& value, Validator<T> validate = nullptr);

  bool Has(const std::string& key) const;
  // A nested map (an absent key gives an empty map, so every default applies).
  Node Child(const std::string& key);
  // A sequence of maps, e.g. `stages:`; an absent key gives an empty list.
  std::vector<Node> List(const std::string& key);
  // Keys of this map in document order (for maps keyed by user-chosen names).
  std::vector<std::string> Keys() const;

  // The YAML under this node, shared, not copied (a config assembled from parts of another, e.g. a
  // stage of a multi-stage run, keeps the original file's line numbers in its messages).
  YAML::Node Raw() const { return node_; }

  // Dotted path of this node ("" for the root) and "file:line" of a key, for messages.
  const std::string& Path() const { return path_; }
  std::string Where(const std::string& key) const;
  // Throws slm::Error "config error: <where>: key '<path>': <message>".
  [[noreturn]] void Fail(const std::string& key, const std::string& message) const;

 private:
  friend class Document;
  Node(std::shared_ptr<detail::State> state, YAML::Node node, std::string path)
      : state_(std::move(state)), node_(std::move(node)), path_(std::move(path)) {}
  std::string Join(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }
  YAML::Node Get(const std::string& key) const;
  void Record(const std::string& key, const YAML::Node& value);

  std::shared_ptr<detail::State> state_;
  YAML::Node node_;
  std::string path_;
};

class Document {
 public:
  static Document LoadFile(const std::string& path);
  static Document LoadString(const std::string& text, const std::string& source_name);
  static Document Empty(const std::string& source_name = "<defaults>");
  // A document over an assembled YAML tree (see Node::Raw); messages name `source_name`.
  static Document FromNode(YAML::Node root, const std::string& source_name);

  // Applies one "a.b.c=value" assignment; value is parsed as YAML ("3", "[1, 2]", "true").
  void ApplyOverride(const std::string& assignment);
  void ApplyOverrides(const std::vector<std::string>& assignments);

  Node Root();
  // Throws slm::Error for the first key that no Read/Child/List call looked at.
  void CheckAllConsumed() const;
  // The same, only for keys under the section `path` ("model", "a.b"); a command that reads one
  // section of a larger config (e.g. `slm model summary` of a training config) checks just that.
  void CheckAllConsumed(const std::string& path) const;
  // The configuration actually used: every value read, defaults included.
  YAML::Node Effective() const;
  std::string EffectiveYaml() const;
  const std::string& Source() const;

 private:
  explicit Document(std::shared_ptr<detail::State> state) : state_(std::move(state)) {}
  std::shared_ptr<detail::State> state_;
};

// --- implementation details of the templates ---
namespace detail {
struct State {
  std::string source;
  YAML::Node root;
  std::set<std::string> consumed;                 // dotted paths looked at
  std::map<std::string, std::string> overrides;   // dotted path -> "--set a=b"
  YAML::Node effective = YAML::Node(YAML::NodeType::Map);
};
std::string Describe(const YAML::Node& node);
template <typename T>
struct TypeName;
template <> struct TypeName<bool> { static constexpr const char* value = "a boolean (true/false)"; };
template <> struct TypeName<int> { static constexpr const char* value = "an integer"; };
template <> struct TypeName<int64_t> { static constexpr const char* value = "an integer"; };
template <> struct TypeName<uint64_t> { static constexpr const char* value = "a non-negative integer"; };
template <> struct TypeName<double> { static constexpr const char* value = "a number"; };
template <> struct TypeName<float> { static constexpr const char* value = "a number"; };
template <> struct TypeName<std::string> { static constexpr const char* value = "a string"; };
template <typename T>
struct TypeName<std::vector<T>> { static constexpr const char* value = "a list"; };

template <typename T>
bool Convert(const YAML::Node& node, T& out) {
  if (!node.IsScalar()) return false;
  try {
    out = node.as<T>();
    return true;
  } catch (const YAML::Exception&) {
    return false;
  }
}
template <typename T>
bool Convert(const YAML::Node& node, std::vector<T>& out) {
  if (!node.IsSequence()) return false;
  std::vector<T> values;
  for (const auto& item : node) {
    T v;
    if (!Convert(item, v)) return false;
    values.push_back(v);
  }
  out = std::move(values);
  return true;
}
}  // namespace detail

template <typename T>
Node& Node::Read(const std::string& key, T& value, Validator<T> validate) {
  YAML::Node raw = Get(key);
  if (raw && !raw.IsNull()) {
    T parsed{};
    if (!detail::Convert(raw, parsed))
      Fail(key, Str("expected ", detail::TypeName<T>::value, ", got ", detail::Describe(raw)));
    if (validate) {
      const std::string problem = validate(parsed);
      if (!problem.empty()) Fail(key, Str(problem, " (got ", detail::Describe(raw), ")"));
    }
    value = std::move(parsed);
  } else if (validate) {
    const std::string problem = validate(value);
    if (!problem.empty()) Fail(key, "default value is invalid: " + problem);
  }
  Record(key, YAML::Node(value));
  return *this;
}

template <typename T>
Node& Node::Require(const std::string& key, T& value, Validator<T> validate) {
  if (!Has(key)) Fail(key, "is required but missing");
  return Read(key, value, std::move(validate));
}

}  // namespace slm::config
