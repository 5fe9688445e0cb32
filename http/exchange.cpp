#include "http/exchange.h"

#include "core/strings.h"

namespace slm::http {

const std::string& Request::Header(const std::string& name) const {
  static const std::string kEmpty;
  const auto it = headers.find(name);
  return it == headers.end() ? kEmpty : it->second;
}

std::string Request::QueryParam(const std::string& name) const {
  for (const std::string& pair : Split(query, "&")) {
    const size_t eq = pair.find('=');
    if (PercentDecode(pair.substr(0, eq)) == name) return eq == std::string::npos ? "" : PercentDecode(pair.substr(eq + 1));
  }
  return "";
}

std::string PercentDecode(std::string_view text) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '+') {
      out += ' ';
    } else if (text[i] == '%' && i + 2 < text.size() && hex(text[i + 1]) >= 0 && hex(text[i + 2]) >= 0) {
      out += static_cast<char>(hex(text[i + 1]) * 16 + hex(text[i + 2]));
      i += 2;
    } else {
      out += text[i];
    }
  }
  return out;
}

}  // namespace slm::http
