#include "core/json_report.h"

#include <iostream>

#include "core/strings.h"

namespace slm {

void Report::Set(const std::string& key, const nlohmann::json& value) {
  nlohmann::json* node = &data_;
  const auto parts = Split(key, ".");
  for (size_t i = 0; i + 1 < parts.size(); ++i) node = &(*node)[parts[i]];
  (*node)[parts.back()] = value;
  if (!json_) std::cout << key << ": " << (value.is_string() ? value.get<std::string>() : value.dump())
                        << "\n";
}

void Report::Line(const std::string& text) const {
  if (!json_) std::cout << text << "\n";
}

void Report::Emit() const {
  if (json_) std::cout << data_.dump() << std::endl;
  else std::cout.flush();
}

}  // namespace slm
