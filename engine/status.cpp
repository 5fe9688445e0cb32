#include "engine/status.h"

#include "core/log.h"

namespace slm::engine {

const char* CodeName(Code code) {
  switch (code) {
    case Code::kOk: return "OK";
    case Code::kCancelled: return "CANCELLED";
    case Code::kInvalidArgument: return "INVALID_ARGUMENT";
    case Code::kDeadlineExceeded: return "DEADLINE_EXCEEDED";
    case Code::kNotFound: return "NOT_FOUND";
    case Code::kResourceExhausted: return "RESOURCE_EXHAUSTED";
    case Code::kFailedPrecondition: return "FAILED_PRECONDITION";
    case Code::kUnimplemented: return "UNIMPLEMENTED";
    case Code::kInternal: return "INTERNAL";
    case Code::kUnavailable: return "UNAVAILABLE";
    case Code::kUnauthenticated: return "UNAUTHENTICATED";
  }
  return "UNKNOWN";
}

Status StatusOf(const std::exception& error) {
  if (const auto* status = dynamic_cast<const StatusError*>(&error)) return status->status();
  if (dynamic_cast<const slm::Error*>(&error) != nullptr) return {Code::kInvalidArgument, error.what()};
  log::Error(std::string("request failed with an internal error: ") + error.what());
  return {Code::kInternal, "internal server error; the server log has the details"};
}

}  // namespace slm::engine
