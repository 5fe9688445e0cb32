// Output of metrics-producing commands. Human-readable "key: value" lines go to stdout as they are
// added; with --json the same values are collected and printed as one JSON object, the last thing
// on stdout (the CLI contract), so scripts can parse `slm ... --json | tail -n 1`.
// Not thread-safe.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

namespace slm {

class Report {
 public:
  explicit Report(bool json) : json_(json) {}
  // Sets a (possibly nested, dotted) key; prints "key: value" immediately unless in JSON mode.
  void Set(const std::string& key, const nlohmann::json& value);
  // Prints a free-form line in human mode only (headings, tables).
  void Line(const std::string& text) const;
  // In JSON mode prints the collected object on one line. Call once, at the end.
  void Emit() const;
  const nlohmann::json& Data() const { return data_; }
  bool Json() const { return json_; }

 private:
  bool json_;
  nlohmann::json data_ = nlohmann::json::object();
};

}  // namespace slm
