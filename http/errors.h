// The HTTP front-end's edge between errors and OpenAI's error shape:
//
//   HTTP/1.1 404
//   {"error": {"message": "model: unknown model 'x' (this server has: tiny, sqa)",
//              "type": "invalid_request_error", "param": "model", "code": "model_not_found"}}
//
// Statuses: 400 a request the client can fix, 401 a missing or wrong bearer token, 404 an unknown
// model / path, 405 a known path with another method, 408 a request that did not arrive in time,
// 413 a body over http.max_body_bytes, 429 a concurrency limit of the engine (limits.max_*),
// 500 a server fault (its message is logged, never sent), 503 loading / draining / too many
// connections, 504 a deadline. The engine's codes (engine/status.h) map as HttpStatusOf says.
// Features a model lacks are 400, not 501: OpenAI's clients retry every 5xx.
//
// Thread-safety: pure functions; ApiError is an immutable value.
#pragma once

#include <exception>
#include <string>

#include "core/error.h"
#include "engine/status.h"
#include "http/exchange.h"

namespace slm::http {

class ApiError : public slm::Error {
 public:
  // `code`: a short machine-readable name ("model_not_found"); empty = derived from the status.
  ApiError(int status, const std::string& message, std::string param = "", std::string code = "");
  int status() const { return status_; }
  const std::string& param() const { return param_; }
  const std::string& code() const { return code_; }
  // "invalid_request_error", "authentication_error", "rate_limit_error", "server_error".
  std::string type() const;

 private:
  int status_;
  std::string param_, code_;
};

[[noreturn]] void Fail(int status, const std::string& message, const std::string& param = "", const std::string& code = "");
// Throws the ApiError of a failed engine status (nothing when OK).
void Require(const engine::Status& status, const std::string& param = "");

int HttpStatusOf(engine::Code code);
// What an escaped exception becomes: ApiError as it is; engine::StatusError by its code; another
// slm::Error 400 (library code throws it for input a user can fix); anything else 500 with a
// generic message (the real one goes to the log).
ApiError ApiErrorOf(const std::exception& error);
ApiError ApiErrorOf(const std::exception_ptr& error);

// {"error": {...}} as text, and as a whole Response.
std::string ErrorBody(const ApiError& error);
Response ErrorResponse(const ApiError& error);

// The reason phrase of a status ("Not Found").
const char* ReasonPhrase(int status);

}  // namespace slm::http
