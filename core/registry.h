// A name -> factory registry (adapters, encoders, tasks, benchmarks). Looking up an unknown name is
// an slm::Error that lists every valid name, so that config typos are explained, never guessed.
// Registration happens at static-initialisation time or start-up; lookups are then read-only and
// thread-safe.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/strings.h"

namespace slm {

template <typename Factory>
class Registry {
 public:
  explicit Registry(std::string kind) : kind_(std::move(kind)) {}

  void Add(const std::string& name, Factory factory, std::string description = "") {
    Check(entries_.find(name) == entries_.end(), kind_, " '", name, "' registered twice");
    entries_[name] = Entry{std::move(factory), std::move(description)};
  }
  const Factory& Get(const std::string& name) const {
    auto it = entries_.find(name);
    if (it == entries_.end()) {
      std::string message = Str("unknown ", kind_, " '", name, "' (valid: ", Join(Names()), ")");
      const std::string hint = ClosestMatch(name, Names());
      if (!hint.empty()) message += Str("; did you mean '", hint, "'?");
      throw Error(message);
    }
    return it->second.factory;
  }
  bool Has(const std::string& name) const { return entries_.count(name) != 0; }
  std::vector<std::string> Names() const {
    std::vector<std::string> names;
    for (const auto& kv : entries_) names.push_back(kv.first);
    return names;
  }
  const std::string& Description(const std::string& name) const {
    Get(name);
    return entries_.at(name).description;
  }

 private:
  struct Entry {
    Factory factory;
    std::string description;
  };
  std::string kind_;
  std::map<std::string, Entry> entries_;
};

}  // namespace slm
