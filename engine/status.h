// How the serving engine reports the outcome of a request, independent of any transport: the
// gRPC front-end (serve/) maps a Code to its status code, an HTTP front-end to an HTTP status.
// The codes and their meaning are gRPC's canonical ones (the API contract documented in
// serve/proto/slm/v1/speech.proto), because that vocabulary is precise about who is at fault.
//
// Thread-safety: values; StatusError is immutable.
#pragma once

#include <string>

#include "core/error.h"

namespace slm::engine {

enum class Code {
  kOk = 0,
  kCancelled = 1,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kUnauthenticated = 16,
};

// "INVALID_ARGUMENT", "NOT_FOUND", ...
const char* CodeName(Code code);

struct Status {
  Code code = Code::kOk;
  std::string message;
  bool ok() const { return code == Code::kOk; }
  static Status Ok() { return {}; }
};

// An slm::Error carrying the code a request should end with. kOk is stored as kInternal (a
// failure must never read as success).
class StatusError : public slm::Error {
 public:
  StatusError(Code code, const std::string& message)
      : slm::Error(message), code_(code == Code::kOk ? Code::kInternal : code) {}
  Code code() const { return code_; }
  Status status() const { return {code_, what()}; }

 private:
  Code code_;
};

[[noreturn]] inline void Fail(Code code, const std::string& message) { throw StatusError(code, message); }

// The status an engine request ends with when `error` escaped: StatusError's own, another
// slm::Error -> kInvalidArgument (library code throws those for input a user can fix), anything
// else -> kInternal with a generic message (the real one is logged, never sent).
Status StatusOf(const std::exception& error);

}  // namespace slm::engine
