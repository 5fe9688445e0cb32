// JSONL manifests (core/manifest.h) as train/ reads them. Invariant beyond "only slm::Error
// naming the file": every entry that reads is written back (ToJson, one line) to something that
// reads again to the same entry, as manifest::Write followed by manifest::Read does.
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>

#include "core/manifest.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = "data/fuzz.jsonl";
  slm::fuzz::ExpectCleanRejection(path, [&] {
    std::istringstream in(std::string(reinterpret_cast<const char*>(data), size));
    const slm::manifest::Manifest m = slm::manifest::Read(in, path);
    SLM_FUZZ_ASSERT(m.base_dir == "data", m.base_dir);
    for (const auto& entry : m.entries) {
      const nlohmann::json written = slm::manifest::ToJson(entry);
      const std::string line = written.dump();
      try {
        const auto again = slm::manifest::FromJson(nlohmann::json::parse(line), "rewritten");
        SLM_FUZZ_ASSERT(slm::manifest::ToJson(again) == written, "rewritten entry differs: " + line);
      } catch (const std::exception& e) {
        slm::fuzz::Finding(std::string("a rewritten entry does not read again (") + e.what() +
                           "): " + line);
      }
      (void)m.AudioPath(entry);
      (void)m.ImagePath(entry);
    }
  });
  return 0;
}
