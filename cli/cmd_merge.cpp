// slm merge --config FILE [--set k=v ...]: merges trained adapter directories (adapters/merge.h).
#include "adapters/merge.h"
#include "cli/command.h"

namespace slm::cli {
namespace {

Registrar registrar([](CLI::App& app, Common& common) {
  AddConfigJob<adapters::MergeConfig>(&app, "merge", "merge trained adapters (linear, TIES) into one",
                                      "samples/configs/merge_tiny.yaml", common,
                                      [](const adapters::MergeConfig& config, const std::string&, bool) {
                                        return adapters::MergeAdapters(config);
                                      });
});

}  // namespace
}  // namespace slm::cli
