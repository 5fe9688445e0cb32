// multipart/form-data (RFC 7578) as OpenAI's file uploads send it (POST /v1/audio/transcriptions:
// `file` plus text fields). Parts refer into the body they were parsed from (no copies of the
// upload): the body must outlive them.
//
// Errors: ApiError 400 naming the problem and the byte offset in the body (a missing boundary
// parameter, a part without Content-Disposition or name, a missing closing delimiter, ...).
// Thread-safety: a pure function.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace slm::http {

struct FormPart {
  std::string name;
  std::string filename;      // empty for a plain field
  std::string content_type;  // empty when the part has none
  std::string_view data;
};

// `content_type`: the request's Content-Type header (must be multipart/form-data with a boundary).
std::vector<FormPart> ParseMultipart(const std::string& content_type, std::string_view body);

// The first part called `name`, or nullptr.
const FormPart* FindPart(const std::vector<FormPart>& parts, const std::string& name);

}  // namespace slm::http
