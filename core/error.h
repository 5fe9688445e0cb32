// slm::Error: the one exception type library code throws for anything a user can act on
// (bad files, configs, requests, checkpoints). Edges convert it: the CLI prints what() and exits
// non-zero; the server maps it to a grpc::Status. Library code never exits or aborts on user input.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace slm {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Concatenates streamable values into a string: Str("read ", n, " frames from ", path).
template <typename... Args>
std::string Str(Args&&... args) {
  std::ostringstream out;
  (out << ... << std::forward<Args>(args));
  return out.str();
}

// Throws slm::Error with the concatenated message when `condition` is false.
template <typename... Args>
void Check(bool condition, Args&&... message) {
  if (!condition) throw Error(Str(std::forward<Args>(message)...));
}

}  // namespace slm
