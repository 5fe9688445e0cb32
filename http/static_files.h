// The web page served at `/` (http/web/: index.html, app.js, worklet.js), compiled into the
// library by http/embed_web.cmake, so nothing is read from disk while serving.
// Thread-safety: immutable data.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace slm::http {

struct WebAsset {
  std::string_view path;  // "/index.html"
  std::string_view content_type;
  std::string_view body;
};

const std::vector<WebAsset>& WebAssets();
// The asset served at `path` ("/" is "/index.html"), or nullptr.
const WebAsset* FindWebAsset(const std::string& path);

}  // namespace slm::http
