// The strict config loader (core/config.h) on the server's schema (serve/serve_config.h), as
// `slm serve --config FILE --set k=v ...` runs it (cli/command.h, ConfigArgs::Load). Input:
// leading lines "--set key=value" are the overrides, the rest is the YAML document. Invariant
// beyond "only slm::Error": a config that loads gives an effective YAML that loads again to the
// same values (it is saved next to every run to be reused).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/config.h"
#include "fuzz/fuzz_util.h"
#include "serve/serve_config.h"

namespace {

slm::serve::ServeConfig LoadConfig(slm::config::Document& doc) {
  slm::serve::ServeConfig config;
  config.Load(doc.Root());
  doc.CheckAllConsumed();
  return config;
}

bool SameValues(const slm::serve::ServeConfig& a, const slm::serve::ServeConfig& b) {
  if (a.adapters.size() != b.adapters.size()) return false;
  for (size_t i = 0; i < a.adapters.size(); ++i) {
    const auto &x = a.adapters[i], &y = b.adapters[i];
    if (x.name != y.name || x.run != y.run || x.config != y.config || x.adapters != y.adapters ||
        x.tasks != y.tasks)
      return false;
  }
  return a.listen == b.listen && a.model_name == b.model_name && a.backbone == b.backbone &&
         a.speech_encoder == b.speech_encoder && a.dtype == b.dtype &&
         a.max_streams == b.max_streams && a.max_message_bytes == b.max_message_bytes &&
         a.max_utterance_seconds == b.max_utterance_seconds && a.max_batch == b.max_batch &&
         a.auth_token == b.auth_token && a.tls_cert == b.tls_cert && a.drain_seconds == b.drain_seconds;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> overrides;
  size_t start = 0;
  while (input.compare(start, 6, "--set ") == 0) {
    const size_t end = input.find('\n', start);
    overrides.push_back(input.substr(start + 6, end == std::string::npos ? end : end - start - 6));
    start = end == std::string::npos ? input.size() : end + 1;
  }
  const std::string yaml = input.substr(start);
  slm::fuzz::ExpectCleanRejection("config error: ", [&] {
    auto doc = slm::config::Document::LoadString(yaml, "fuzz.yaml");
    doc.ApplyOverrides(overrides);
    const slm::serve::ServeConfig config = LoadConfig(doc);
    const std::string effective = doc.EffectiveYaml();
    try {
      auto again = slm::config::Document::LoadString(effective, "effective.yaml");
      SLM_FUZZ_ASSERT(SameValues(LoadConfig(again), config),
                      "the effective config loads to other values:\n" + effective);
    } catch (const slm::Error& e) {
      slm::fuzz::Finding(std::string("the effective config does not load again: ") + e.what() +
                         "\n" + effective);
    }
  });
  return 0;
}
