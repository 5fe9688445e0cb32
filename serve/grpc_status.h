// The server's edge between slm's exceptions and gRPC status codes (libraries throw, the
// edges convert). Every RPC handler catches what escapes from the library and finishes
// with ToGrpcStatus(...), so that clients see a code they can act on and a message that names
// their mistake, while server internals never leak.
//
// Mapping:
//  * StatusError         -> its own code and message (the server's way to say NOT_FOUND,
//                           RESOURCE_EXHAUSTED, UNAUTHENTICATED, FAILED_PRECONDITION, ...);
//  * other slm::Error    -> INVALID_ARGUMENT with the message: library code throws slm::Error for
//                           input a user can fix (bad audio, bad config, unknown names);
//  * anything else       -> INTERNAL with a generic message. std::bad_alloc, LibTorch's c10::Error
//                           and the like describe the server, not the request; their text (paths,
//                           tensor shapes, stack traces) goes to the server log only.
// Messages are cut to kMaxStatusMessageBytes at a UTF-8 character boundary: gRPC carries them in
// a trailer, and a trailer over the peer's metadata limit (8 KiB by default) would replace the
// real status with an unrelated error.
//
// Thread-safety: free functions without shared state; StatusError is an immutable value.
#pragma once

#include <grpcpp/support/status.h>

#include <cstddef>
#include <exception>
#include <string>

#include "core/error.h"

namespace slm::serve {

constexpr size_t kMaxStatusMessageBytes = 2048;

// An slm::Error that carries the gRPC code it should end the RPC with.
class StatusError : public slm::Error {
 public:
  // `code` must not be OK (a failure that reports success would be lost); OK is stored as UNKNOWN.
  StatusError(grpc::StatusCode code, const std::string& message);
  grpc::StatusCode code() const { return code_; }

 private:
  grpc::StatusCode code_;
};

// The status an RPC ends with when `error` escaped from its handler. Logs INTERNAL errors with
// their real message (slm::log::Error); client-caused errors are not logged.
grpc::Status ToGrpcStatus(const std::exception& error);
// For catch (...) blocks: also covers exceptions that are not std::exception (INTERNAL).
// A null pointer gives OK.
grpc::Status ToGrpcStatus(const std::exception_ptr& error);

// "INVALID_ARGUMENT", "NOT_FOUND", ... (the canonical upper-case name of a gRPC code).
std::string StatusCodeName(grpc::StatusCode code);

// `message` cut to at most `max_bytes` bytes without splitting a UTF-8 sequence, with "..."
// appended when it was cut.
std::string TruncateStatusMessage(const std::string& message,
                                  size_t max_bytes = kMaxStatusMessageBytes);

}  // namespace slm::serve
