#include "http/static_files.h"

namespace slm::http {

const WebAsset* FindWebAsset(const std::string& path) {
  const std::string wanted = path == "/" ? "/index.html" : path;
  for (const WebAsset& asset : WebAssets())
    if (asset.path == wanted) return &asset;
  return nullptr;
}

}  // namespace slm::http
