#include "http/multipart.h"

#include "core/error.h"
#include "core/strings.h"
#include "http/errors.h"

namespace slm::http {

namespace {

[[noreturn]] void Bad(const std::string& message) { Fail(400, "multipart body: " + message, "", "invalid_multipart"); }

// The value of parameter `key` in a header value like `form-data; name="file"; filename="a.wav"`
// (quoted or token; backslash escapes in quotes). `found` tells an empty value from an absent one.
std::string Parameter(std::string_view header, const std::string& key, bool* found) {
  *found = false;
  size_t at = 0;
  while (at < header.size()) {
    const size_t semi = header.find(';', at);
    if (semi == std::string_view::npos) break;
    at = semi + 1;
    while (at < header.size() && (header[at] == ' ' || header[at] == '\t')) ++at;
    const size_t eq = header.find('=', at);
    if (eq == std::string_view::npos) break;
    const std::string name = ToLower(Trim(header.substr(at, eq - at)));
    std::string value;
    size_t next = eq + 1;
    if (next < header.size() && header[next] == '"') {
      ++next;
      while (next < header.size() && header[next] != '"') {
        if (header[next] == '\\' && next + 1 < header.size()) ++next;
        value += header[next++];
      }
      ++next;  // closing quote
    } else {
      const size_t stop = header.find(';', next);
      value = Trim(header.substr(next, stop == std::string_view::npos ? std::string_view::npos : stop - next));
      next = stop == std::string_view::npos ? header.size() : stop;
    }
    if (name == key) {
      *found = true;
      return value;
    }
    at = next;
  }
  return "";
}

}  // namespace

std::vector<FormPart> ParseMultipart(const std::string& content_type, std::string_view body) {
  if (!StartsWith(ToLower(content_type), "multipart/form-data"))
    Fail(400, Str("expected a multipart/form-data body (an upload with a `file` field), got Content-Type '",
                  content_type.empty() ? std::string("none") : content_type, "'"),
         "", "invalid_content_type");
  bool found = false;
  const std::string boundary = Parameter(content_type, "boundary", &found);
  if (!found || boundary.empty() || boundary.size() > 200) Bad("Content-Type has no valid boundary parameter");
  const std::string delimiter = "--" + boundary;
  const std::string separator = "\r\n" + delimiter;

  size_t at = body.find(delimiter);
  if (at == std::string_view::npos) Bad(Str("the boundary '", boundary, "' does not occur in the body"));
  // Anything before the first delimiter is a preamble and ignored.
  at += delimiter.size();
  std::vector<FormPart> parts;
  while (true) {
    if (body.substr(at, 2) == "--") return parts;  // the closing delimiter
    // Transport padding, then CRLF.
    while (at < body.size() && (body[at] == ' ' || body[at] == '\t')) ++at;
    if (body.substr(at, 2) != "\r\n") Bad(Str("expected CRLF after the boundary at byte ", at));
    at += 2;
    const size_t headers_end = body.find("\r\n\r\n", at);
    // A part without headers starts with its empty line right away.
    const bool no_headers = body.substr(at, 2) == "\r\n";
    if (!no_headers && headers_end == std::string_view::npos) Bad(Str("part ", parts.size(), " at byte ", at, " has no end of headers"));
    FormPart part;
    std::string disposition;
    if (!no_headers) {
      for (const std::string& line : Split(body.substr(at, headers_end - at), "\r\n")) {
        const size_t colon = line.find(':');
        if (colon == std::string::npos) Bad(Str("part ", parts.size(), ": header line '", line, "' has no ':'"));
        const std::string name = ToLower(Trim(line.substr(0, colon)));
        const std::string value = Trim(line.substr(colon + 1));
        if (name == "content-disposition") disposition = value;
        if (name == "content-type") part.content_type = value;
      }
      at = headers_end + 4;
    } else {
      at += 2;
    }
    if (disposition.empty()) Bad(Str("part ", parts.size(), " has no Content-Disposition header"));
    part.name = Parameter(disposition, "name", &found);
    if (!found || part.name.empty()) Bad(Str("part ", parts.size(), " has no name in its Content-Disposition"));
    part.filename = Parameter(disposition, "filename", &found);
    const size_t end = body.find(separator, at);
    if (end == std::string_view::npos)
      Bad(Str("part '", part.name, "' (from byte ", at, ") is not closed by the boundary: the body is truncated"));
    part.data = body.substr(at, end - at);
    parts.push_back(std::move(part));
    at = end + separator.size();
  }
}

const FormPart* FindPart(const std::vector<FormPart>& parts, const std::string& name) {
  for (const FormPart& part : parts)
    if (part.name == name) return &part;
  return nullptr;
}

}  // namespace slm::http
