#include "http/errors.h"

#include <nlohmann/json.hpp>

#include "core/log.h"
#include "core/strings.h"

namespace slm::http {

namespace {

std::string DefaultCode(int status) {
  switch (status) {
    case 400: return "invalid_request";
    case 401: return "invalid_api_key";
    case 404: return "not_found";
    case 405: return "method_not_allowed";
    case 408: return "request_timeout";
    case 413: return "request_too_large";
    case 429: return "rate_limit_exceeded";
    case 500: return "internal_error";
    case 503: return "unavailable";
    case 504: return "deadline_exceeded";
    default: return "error";
  }
}

}  // namespace

ApiError::ApiError(int status, const std::string& message, std::string param, std::string code)
    : slm::Error(message), status_(status), param_(std::move(param)), code_(code.empty() ? DefaultCode(status) : std::move(code)) {}

std::string ApiError::type() const {
  if (status_ == 401) return "authentication_error";
  if (status_ == 429) return "rate_limit_error";
  if (status_ >= 500) return "server_error";
  return "invalid_request_error";
}

void Fail(int status, const std::string& message, const std::string& param, const std::string& code) {
  throw ApiError(status, message, param, code);
}

int HttpStatusOf(engine::Code code) {
  switch (code) {
    case engine::Code::kOk: return 200;
    case engine::Code::kCancelled: return 499;
    case engine::Code::kInvalidArgument: return 400;
    case engine::Code::kDeadlineExceeded: return 504;
    case engine::Code::kNotFound: return 404;
    case engine::Code::kResourceExhausted: return 429;
    case engine::Code::kFailedPrecondition: return 400;
    case engine::Code::kUnimplemented: return 400;
    case engine::Code::kUnauthenticated: return 401;
    case engine::Code::kUnavailable: return 503;
    case engine::Code::kInternal: return 500;
  }
  return 500;
}

void Require(const engine::Status& status, const std::string& param) {
  if (status.ok()) return;
  throw ApiError(HttpStatusOf(status.code), status.message, param, ToLower(engine::CodeName(status.code)));
}

ApiError ApiErrorOf(const std::exception& error) {
  if (const auto* api = dynamic_cast<const ApiError*>(&error)) return *api;
  if (const auto* status = dynamic_cast<const engine::StatusError*>(&error))
    return ApiError(HttpStatusOf(status->code()), status->what(), "", ToLower(engine::CodeName(status->code())));
  if (dynamic_cast<const slm::Error*>(&error) != nullptr) return ApiError(400, error.what());
  log::Error(Str("http: internal error: ", error.what()));
  return ApiError(500, "internal server error (the server log has the details)");
}

ApiError ApiErrorOf(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return ApiErrorOf(e);
  } catch (...) {
    log::Error("http: internal error: an exception that is not a std::exception");
    return ApiError(500, "internal server error (the server log has the details)");
  }
}

std::string ErrorBody(const ApiError& error) {
  nlohmann::json body = {{"message", error.what()},
                         {"type", error.type()},
                         {"param", error.param().empty() ? nlohmann::json() : nlohmann::json(error.param())},
                         {"code", error.code()}};
  return nlohmann::json{{"error", body}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

Response ErrorResponse(const ApiError& error) {
  Response response;
  response.status = error.status();
  response.body = ErrorBody(error);
  if (error.status() == 503 || error.status() == 429) response.headers.emplace_back("Retry-After", "1");
  return response;
}

const char* ReasonPhrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 499: return "Client Closed Request";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "";
  }
}

}  // namespace slm::http
