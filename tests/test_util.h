// Helpers shared by the gtest suites.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>

#include "core/error.h"

namespace slm::testing {

// A fresh directory under the system temp dir, removed when the object goes out of scope.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "slm-test-XXXXXX").string();
    if (!mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// The message of the slm::Error that `action` throws, or "" if it throws none (for asserting on
// several parts of one message).
inline std::string ErrorOf(const std::function<void()>& action) {
  try {
    action();
  } catch (const slm::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace slm::testing

// Asserts that `statement` throws slm::Error whose message contains `substring`.
#define EXPECT_SLM_ERROR(statement, substring)                                         \
  do {                                                                                 \
    try {                                                                              \
      statement;                                                                       \
      ADD_FAILURE() << "expected slm::Error containing '" << (substring) << "'";       \
    } catch (const slm::Error& e) {                                                    \
      EXPECT_NE(std::string(e.what()).find(substring), std::string::npos)              \
          << "message was: " << e.what();                                              \
    }                                                                                  \
  } while (0)
