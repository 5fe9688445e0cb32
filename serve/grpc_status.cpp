#include "serve/grpc_status.h"

#include "core/log.h"
#include "engine/status.h"

namespace slm::serve {
namespace {

constexpr char kInternalMessage[] = "internal server error; the server log has the details";

}  // namespace

StatusError::StatusError(grpc::StatusCode code, const std::string& message)
    : slm::Error(message), code_(code == grpc::StatusCode::OK ? grpc::StatusCode::UNKNOWN : code) {}

std::string TruncateStatusMessage(const std::string& message, size_t max_bytes) {
  if (message.size() <= max_bytes) return message;
  constexpr char kEllipsis[] = "...";
  const size_t ellipsis = sizeof(kEllipsis) - 1;
  if (max_bytes <= ellipsis) return std::string(kEllipsis, max_bytes);
  size_t cut = max_bytes - ellipsis;
  // Step back over UTF-8 continuation bytes (10xxxxxx) so that the cut lands before the lead
  // byte of a character, never inside it.
  while (cut > 0 && (static_cast<unsigned char>(message[cut]) & 0xC0) == 0x80) --cut;
  return message.substr(0, cut) + kEllipsis;
}

grpc::Status ToGrpcStatus(const std::exception& error) {
  if (const auto* status_error = dynamic_cast<const StatusError*>(&error)) {
    return grpc::Status(status_error->code(), TruncateStatusMessage(status_error->what()));
  }
  if (const auto* engine_error = dynamic_cast<const engine::StatusError*>(&error)) {
    return grpc::Status(static_cast<grpc::StatusCode>(engine_error->code()), TruncateStatusMessage(engine_error->what()));
  }
  if (dynamic_cast<const slm::Error*>(&error) != nullptr) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, TruncateStatusMessage(error.what()));
  }
  log::Error(std::string("RPC failed with an internal error: ") + error.what());
  return grpc::Status(grpc::StatusCode::INTERNAL, kInternalMessage);
}

grpc::Status ToGrpcStatus(const std::exception_ptr& error) {
  if (!error) return grpc::Status::OK;
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return ToGrpcStatus(e);
  } catch (...) {
    log::Error("RPC failed with an exception that is not a std::exception");
    return grpc::Status(grpc::StatusCode::INTERNAL, kInternalMessage);
  }
}

std::string StatusCodeName(grpc::StatusCode code) {
  static const char* const kNames[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
                                       "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
                                       "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  const int index = static_cast<int>(code);
  return index >= 0 && index < 17 ? kNames[index] : "CODE_" + std::to_string(index);
}

}  // namespace slm::serve
