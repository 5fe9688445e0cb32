// The serve config a server benchmark starts from: a YAML file (`--config`, e.g.
// samples/configs/serve.yaml) with `--set key=value` overrides, read strictly (unknown keys are
// errors naming the file and line). Each benchmark then adapts ports and limits to its load.
#pragma once

#include <string>
#include <vector>

#include "core/config.h"
#include "serve/serve_config.h"

namespace slm::bench {

inline serve::ServeConfig LoadServeConfig(const std::string& path, const std::vector<std::string>& overrides) {
  config::Document doc = config::Document::LoadFile(path);
  doc.ApplyOverrides(overrides);
  serve::ServeConfig config;
  config.Load(doc.Root());
  doc.CheckAllConsumed();
  return config;
}

}  // namespace slm::bench
